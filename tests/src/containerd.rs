//! A containerd of the container test's own: its own root, state, socket
//! and configuration (the CRI plugin, runc, the CNI plugins of
//! containernetworking-plugins with a bridge network of our own), started
//! inside a network namespace the test creates, so the bridge, the pods'
//! veths and their addresses exist only there. Images come from local OCI
//! archives (`ctr images import`); nothing is pulled.

use std::{
    os::fd::AsRawFd as _,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The test's network namespace, removed on drop.
#[derive(Debug)]
pub struct NetNs {
    /// `ip netns` name.
    pub name: String,
}

impl NetNs {
    /// Creates `name` with its loopback up.
    ///
    /// # Panics
    /// When `ip netns add` fails.
    #[must_use]
    pub fn create(name: &str) -> Self {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        run(Command::new("ip").args(["netns", "add", name]));
        run(Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]));
        Self {
            name: name.to_owned(),
        }
    }

    /// Its bind-mounted namespace file.
    #[must_use]
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(cmd: &mut Command) {
    let shown = format!("{cmd:?}");
    let out = cmd.output().unwrap_or_else(|err| panic!("{shown}: {err}"));
    assert!(
        out.status.success(),
        "{shown} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The subnet of the test's bridge network (inside [`NetNs`] only).
pub const POD_SUBNET: &str = "10.213.0.0/24";

/// A running containerd.
#[derive(Debug)]
pub struct Containerd {
    child: Option<Child>,
    /// Everything of this instance lives here.
    pub dir: PathBuf,
    /// Its gRPC socket (CRI and containerd's own API).
    pub socket: PathBuf,
    /// The network namespace it runs in.
    pub netns: NetNs,
}

impl Containerd {
    /// Writes the configuration and starts containerd in a new network
    /// namespace; `sandbox_image` is the pause image (imported later).
    ///
    /// # Panics
    /// When containerd does not start or its socket does not appear.
    #[must_use]
    pub fn start(dir: &Path, socket: &Path, sandbox_image: &str) -> Self {
        let netns = NetNs::create(&format!("tw-cri-{}", std::process::id()));
        let cni = dir.join("cni");
        std::fs::create_dir_all(&cni).unwrap();
        std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
        let conflist = serde_json::json!({
            "cniVersion": "0.4.0",
            "name": "tokenwatch-test",
            "plugins": [{
                "type": "bridge",
                "bridge": "twcri0",
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_SUBNET}]],
                    "dataDir": dir.join("ipam").display().to_string(),
                },
            }],
        });
        std::fs::write(
            cni.join("10-tokenwatch-test.conflist"),
            serde_json::to_vec_pretty(&conflist).unwrap(),
        )
        .unwrap();
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # Keeps containers' oom_score_adj no lower than containerd's own: some
  # machines (CI sandboxes) refuse a negative one even to root.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{runc}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
    max_conf_num = 1
"#,
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            socket = socket.display(),
            opt = dir.join("opt").display(),
            cni = cni.display(),
            // A wrapper (e.g. one adding `--debug`) when diagnosing runc.
            runc = std::env::var("TOKENWATCH_CRI_RUNC").unwrap_or_else(|_| "runc".to_owned()),
        );
        let config_path = dir.join("containerd.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let ns = std::fs::File::open(netns.path()).expect("the test's network namespace");
        let ns_fd = ns.as_raw_fd();
        let mut cmd = Command::new("containerd");
        cmd.arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: setns is async-signal-safe; the fd stays open until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .expect("starting containerd (Debian package containerd)");
        drop(ns);
        let mut this = Self {
            child: Some(child),
            dir: dir.to_owned(),
            socket: socket.to_owned(),
            netns,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            if let Some(status) = this
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("containerd exited with {status}:\n{}", this.log());
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not create {} in 30 s:\n{}",
                socket.display(),
                this.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        this
    }

    /// containerd's log so far (its last 200 lines).
    #[must_use]
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(200)..].join("\n")
    }

    /// Imports an OCI archive into the `k8s.io` namespace the CRI uses,
    /// unpacked for its snapshotter.
    ///
    /// # Panics
    /// When `ctr` fails.
    pub fn import(&self, archive: &Path) {
        run(Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args([
                "--namespace",
                "k8s.io",
                "images",
                "import",
                "--snapshotter",
                "overlayfs",
            ])
            .arg(archive));
    }
}

impl Containerd {
    /// Stops containerd (SIGTERM, then SIGKILL after 10 s) and removes its
    /// socket directory; the shims of pods still running are left to the
    /// caller (stop and remove the pods first).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = self.socket.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
    }
}
