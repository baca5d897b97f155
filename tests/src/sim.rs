//! A simulated node on this machine, believable enough for the agent:
//!
//! - a kubelet-style tree (`pods/<uid>/volumes/kubernetes.io~projected/<vol>/`
//!   with the atomic writer's `..<timestamp>` dirs, `..data` and `token`
//!   links; legacy `kubernetes.io~secret` volumes) holding real tokens
//!   signed with Kubernetes' test RSA key, bound to the pod UIDs;
//! - "pods": processes in their own mount namespace, with the volume
//!   bind-mounted at `/var/run/secrets/kubernetes.io/serviceaccount` (over a
//!   private tmpfs on `/run`), placed in kubepods cgroups named the way the
//!   systemd cgroup driver names them;
//! - an "API server": a TLS listener on loopback (Python's `ssl`, with a
//!   certificate made by rcgen), registered as the agent's endpoint;
//! - the real `tokenwatch agent` binary.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use tokenwatch_test_support::tokens;

/// Where the fixtures are (`tests/fixtures`, in the repository).
#[must_use]
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

/// Signs claims with Kubernetes' own test RSA key (RS256), as the API server would.
#[must_use]
pub fn sign(claims: &Value) -> String {
    tokens::sign_as_apiserver(claims)
}

/// A bound (projected) token for a pod, valid for an hour from now.
#[must_use]
pub fn bound_token(namespace: &str, sa: &str, pod_name: &str, pod_uid: &str, jti: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs().cast_signed());
    sign(&tokens::pod_bound_claims(
        namespace,
        sa,
        (pod_name, pod_uid),
        "sim-node",
        jti,
        now - 10,
        3600,
    ))
}

/// A legacy Secret-based token.
#[must_use]
pub fn legacy_token(namespace: &str, sa: &str) -> String {
    sign(&tokens::legacy_secret_claims(namespace, sa))
}

/// One pod's token volume in the kubelet tree.
#[derive(Debug, Clone)]
pub struct Volume {
    /// The volume directory (what gets bind-mounted into the pod).
    pub dir: PathBuf,
    /// Timestamped dirs written so far.
    pub generation: u32,
}

impl Volume {
    /// The host path a process would use: `<volume>/token`.
    #[must_use]
    pub fn token_path(&self) -> PathBuf {
        self.dir.join("token")
    }

    /// Writes `token` the way the kubelet's atomic writer does: a new
    /// timestamped dir, then `..data` swapped to it with a rename.
    ///
    /// # Panics
    /// On I/O errors.
    pub fn write(&mut self, token: &str) {
        self.generation += 1;
        let stamp = format!(
            "..2026_01_01_00_00_{:02}.{}",
            self.generation,
            1000 + self.generation
        );
        std::fs::create_dir_all(self.dir.join(&stamp)).unwrap();
        std::fs::write(self.dir.join(&stamp).join("token"), token).unwrap();
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&stamp, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        if !self.dir.join("token").exists() {
            std::os::unix::fs::symlink("..data/token", self.dir.join("token")).unwrap();
        }
    }
}

/// Creates a volume for `pod_uid` under `kubelet_root`, a tmpfs of its own
/// as the kubelet mounts projected and secret volumes, and writes `token`.
/// Unmount with [`crate::unmount_under`] (or a [`Mounts`] guard).
#[must_use]
pub fn volume(kubelet_root: &Path, pod_uid: &str, kind: &str, name: &str, token: &str) -> Volume {
    let dir = kubelet_root
        .join("pods")
        .join(pod_uid)
        .join("volumes")
        .join(kind)
        .join(name);
    std::fs::create_dir_all(&dir).unwrap();
    crate::mount_tmpfs(&dir);
    let mut v = Volume { dir, generation: 0 };
    v.write(token);
    v
}

/// Unmounts every mount under a directory when dropped (the volumes' tmpfs).
#[derive(Debug)]
pub struct Mounts(pub PathBuf);

impl Drop for Mounts {
    fn drop(&mut self) {
        crate::unmount_under(&self.0);
    }
}

/// A kubepods cgroup for one container, named as the systemd driver does.
#[derive(Debug)]
pub struct PodCgroup {
    /// The container's cgroup directory.
    pub dir: PathBuf,
    dirs: Vec<PathBuf>,
}

impl PodCgroup {
    /// Creates `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice/cri-containerd-<id>.scope`.
    ///
    /// # Panics
    /// When the cgroup v2 hierarchy cannot be written.
    #[must_use]
    pub fn create(cgroup_root: &Path, pod_uid: &str, container_id: &str) -> Self {
        let underscored = pod_uid.replace('-', "_");
        let parts = [
            "kubepods.slice".to_owned(),
            "kubepods-besteffort.slice".to_owned(),
            format!("kubepods-besteffort-pod{underscored}.slice"),
            format!("cri-containerd-{container_id}.scope"),
        ];
        let mut dir = cgroup_root.to_owned();
        let mut dirs = Vec::new();
        for part in parts {
            dir.push(part);
            if !dir.exists() {
                std::fs::create_dir(&dir)
                    .unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                dirs.push(dir.clone());
            }
        }
        Self { dir, dirs }
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        // Only empty cgroups can go; the pods' processes are killed first.
        for dir in self.dirs.iter().rev() {
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Runs `program args...` as a process of a pod: own mount namespace, the
/// volume at the in-container token path, in the pod's cgroup.
///
/// # Panics
/// When the process cannot start.
#[must_use]
pub fn in_pod(volume: &Volume, cgroup: &PodCgroup, program: &[&str]) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "set -e; mount -t tmpfs sim-run /run; \
             mkdir -p /run/secrets/kubernetes.io/serviceaccount; \
             mount --bind \"$1\" /run/secrets/kubernetes.io/serviceaccount; \
             echo $$ > \"$2/cgroup.procs\"; shift 2; exec \"$@\"",
        )
        .arg("pod-init")
        .arg(&volume.dir)
        .arg(&cgroup.dir)
        .args(program);
    cmd
}

/// Runs a pod process to completion and checks it succeeded.
///
/// # Panics
/// When it fails.
pub fn run_in_pod(volume: &Volume, cgroup: &PodCgroup, program: &[&str]) {
    let out = in_pod(volume, cgroup, program)
        .output()
        .expect("start pod process");
    assert!(
        out.status.success(),
        "{program:?} in pod failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The in-container token path.
pub const IN_POD_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// A loopback TLS "API server" (Python's ssl module with an rcgen certificate).
pub struct ApiServer {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The CA (self-signed server certificate) clients trust.
    pub ca: PathBuf,
}

impl ApiServer {
    /// Starts it in `dir`.
    ///
    /// # Panics
    /// When it does not start within ten seconds.
    #[must_use]
    pub fn start(dir: &Path) -> Self {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
        let cert_path = dir.join("apiserver.crt");
        let key_path = dir.join("apiserver.key");
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let script = r#"
import socket, ssl, sys, threading
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv = socket.create_server(("127.0.0.1", int(sys.argv[3])))
print("listening", flush=True)
def serve(conn):
    try:
        with ctx.wrap_socket(conn, server_side=True) as t:
            t.recv(65536)
            t.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
    except Exception:
        pass
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&cert_path)
            .arg(&key_path)
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "listening");
        Self {
            child,
            port,
            ca: cert_path,
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The client a workload runs: reads its token, then calls the API server
/// over TLS with it, like a client library does.
pub const CLIENT_PY: &str = r#"
import socket, ssl, sys
tok = open(sys.argv[1]).read().strip()
ctx = ssl.create_default_context(cafile=sys.argv[3])
with socket.create_connection(("127.0.0.1", int(sys.argv[2]))) as s:
    with ctx.wrap_socket(s, server_hostname="localhost") as t:
        t.sendall(b"GET /api HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer " + tok.encode() + b"\r\n\r\n")
        t.recv(100)
"#;

/// The running agent.
pub struct Agent {
    child: Child,
    /// Its metrics/health address.
    pub listen: String,
    stderr_log: PathBuf,
}

impl Agent {
    /// Starts `tokenwatch agent` with `args` and waits until `/readyz` says ready.
    ///
    /// # Panics
    /// When it does not become ready in time.
    #[must_use]
    pub fn start(binary: &Path, args: &[String], log_dir: &Path) -> Self {
        Self::start_wrapped(&[], binary, args, log_dir)
    }

    /// Like [`Agent::start`], run through `wrapper` (e.g. `setpriv` with a
    /// restricted capability bounding set).
    ///
    /// # Panics
    /// When it does not become ready in time.
    #[must_use]
    pub fn start_wrapped(
        wrapper: &[String],
        binary: &Path,
        args: &[String],
        log_dir: &Path,
    ) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let stderr_log = log_dir.join(format!("agent-{port}.log"));
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(binary);
                cmd
            }
            None => Command::new(binary),
        };
        let child = cmd
            .arg("--log")
            .arg("info")
            .arg("agent")
            .arg("--listen")
            .arg(&listen)
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_log).unwrap())
            .spawn()
            .expect("start the agent");
        let mut agent = Self {
            child,
            listen,
            stderr_log,
        };
        let deadline = Instant::now() + crate::scaled(Duration::from_secs(30));
        loop {
            if let Some(status) = agent.child.try_wait().unwrap() {
                panic!("the agent exited with {status}:\n{}", agent.log());
            }
            if agent
                .get("/readyz")
                .is_some_and(|r| r.starts_with("HTTP/1.1 200"))
            {
                return agent;
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not become ready:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A GET on the agent's HTTP endpoint; the whole response.
    #[must_use]
    pub fn get(&self, path: &str) -> Option<String> {
        let mut stream = std::net::TcpStream::connect(&self.listen).ok()?;
        stream
            .set_read_timeout(Some(crate::scaled(Duration::from_secs(5))))
            .ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut out = String::new();
        stream.read_to_string(&mut out).ok()?;
        Some(out)
    }

    /// The agent's process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The agent's log so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// SIGTERM, and wait for a clean exit.
    ///
    /// # Panics
    /// When it does not exit 0 within 20 seconds.
    pub fn stop(mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + crate::scaled(Duration::from_secs(20));
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "the agent exited with {status} on SIGTERM:\n{}",
                    self.log()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not stop on SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: a crash.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every entry in the trail, via `tokenwatch trail export`.
///
/// # Panics
/// When the export fails or a line is not JSON.
#[must_use]
pub fn export_trail(binary: &Path, data_dir: &Path) -> Vec<Value> {
    let out = Command::new(binary)
        .args(["trail", "export", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("trail export");
    assert!(
        out.status.success(),
        "trail export failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).expect("export line is JSON"))
        .collect()
}
