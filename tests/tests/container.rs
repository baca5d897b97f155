//! The DaemonSet's pod, run for real: the agent image `cargo xtask image`
//! writes (no daemon, no pull), started through containerd's CRI the way
//! the kubelet starts it, with the pod spec read from
//! `deploy/kustomize/base/daemonset.yaml` itself (capabilities, the
//! runtime's default seccomp profile, no privilege escalation, read-only
//! root, host PID, the host mounts and their propagation).
//!
//! - `/readyz` answers 200 from the pod's network namespace;
//! - a process in a second pod (its own image, its token on a tmpfs made
//!   like the kubelet's, mounted after the agent started: HostToContainer
//!   propagation) and a host process read a token; both reads are in the
//!   trail with the right findings;
//! - StopContainer sends SIGTERM; the agent exits 0 and the trail verifies;
//! - each added capability dropped in turn: a required one keeps `/readyz`
//!   at 503 and names itself in one log line; any other degrades the agent,
//!   which stays ready and shows it in `/metrics` (docs/capabilities.md
//!   says which is which, and the test reads it from there).
//!
//! Root only; `cargo xtask test` builds the three images and passes their
//! directory in `TOKENWATCH_CRI_IMAGES`.

use std::{
    collections::HashMap,
    io::{Read as _, Write as _},
    net::TcpStream,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::PodSpec;
use serde_json::Value;
use tokenwatch_tests::{
    containerd::Containerd,
    cri::{self, ImageServiceClient, RuntimeServiceClient, v1},
    kubelet::{self, PodIdentity, VolumeFile},
    require_root, sim, tokenwatch_binary,
};
use tonic::transport::Channel;

const PAUSE_IMAGE: &str = "localhost/tokenwatch-test/pause:1";
const READER_IMAGE: &str = "localhost/tokenwatch-test/reader:1";
const IN_POD_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
const WORKLOAD_UID: &str = "3f6c2a1e-5b7d-4c8e-9a0f-1e2d3c4b5a69";
const READER_UID: u32 = 1000;

/// Where `cargo xtask test` put the images; `None` (skip) without it,
/// unless skipping is forbidden.
fn images_dir(test: &str) -> Option<PathBuf> {
    match std::env::var_os("TOKENWATCH_CRI_IMAGES") {
        Some(dir) => Some(PathBuf::from(dir)),
        None => {
            assert!(
                std::env::var("TOKENWATCH_REQUIRE_EBPF").as_deref() != Ok("1"),
                "{test}: TOKENWATCH_CRI_IMAGES is not set (run `cargo xtask test`, which builds the images) and TOKENWATCH_REQUIRE_EBPF=1 forbids skipping"
            );
            eprintln!("SKIPPED {test}: TOKENWATCH_CRI_IMAGES is not set; run `cargo xtask test`");
            None
        }
    }
}

/// The CRI clients and a runtime to drive them from plain `#[test]` code.
struct Cri {
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

impl Cri {
    fn connect(socket: &Path) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let channel = rt
            .block_on(cri::connect(socket))
            .unwrap_or_else(|err| panic!("{err}"));
        Self {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            rt,
        }
    }

    fn run_pod(&mut self, config: v1::PodSandboxConfig) -> Result<String, cri::CriError> {
        let reply = self
            .rt
            .block_on(self.runtime.run_pod_sandbox(v1::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            }));
        reply
            .map(|r| r.into_inner().pod_sandbox_id)
            .map_err(|s| cri::CriError::Call("RunPodSandbox", s))
    }

    fn create_and_start(
        &mut self,
        pod_id: &str,
        config: v1::ContainerConfig,
        sandbox: &v1::PodSandboxConfig,
    ) -> Result<String, cri::CriError> {
        let id = self
            .rt
            .block_on(self.runtime.create_container(v1::CreateContainerRequest {
                pod_sandbox_id: pod_id.to_owned(),
                config: Some(config),
                sandbox_config: Some(sandbox.clone()),
            }))
            .map_err(|s| cri::CriError::Call("CreateContainer", s))?
            .into_inner()
            .container_id;
        self.rt
            .block_on(self.runtime.start_container(v1::StartContainerRequest {
                container_id: id.clone(),
            }))
            .map_err(|s| cri::CriError::Call("StartContainer", s))?;
        Ok(id)
    }

    /// The sandbox's pause pid and IP.
    fn sandbox_pid_ip(&mut self, pod_id: &str) -> (i32, String) {
        let status = self
            .rt
            .block_on(
                self.runtime
                    .pod_sandbox_status(v1::PodSandboxStatusRequest {
                        pod_sandbox_id: pod_id.to_owned(),
                        verbose: true,
                    }),
            )
            .unwrap_or_else(|s| panic!("PodSandboxStatus: {s}"))
            .into_inner();
        let info: Value = serde_json::from_str(status.info.get("info").expect("verbose info"))
            .expect("verbose info is JSON");
        let pid = info["pid"].as_i64().expect("the sandbox's pid") as i32;
        let ip = status
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default();
        (pid, ip)
    }

    fn container_status(&mut self, id: &str) -> v1::ContainerStatus {
        self.rt
            .block_on(self.runtime.container_status(v1::ContainerStatusRequest {
                container_id: id.to_owned(),
                verbose: false,
            }))
            .unwrap_or_else(|s| panic!("ContainerStatus: {s}"))
            .into_inner()
            .status
            .expect("a status")
    }

    /// The container's main process, as the runtime reports it.
    fn container_pid(&mut self, id: &str) -> i32 {
        let reply = self
            .rt
            .block_on(self.runtime.container_status(v1::ContainerStatusRequest {
                container_id: id.to_owned(),
                verbose: true,
            }))
            .unwrap_or_else(|s| panic!("ContainerStatus: {s}"))
            .into_inner();
        let info: Value = serde_json::from_str(reply.info.get("info").expect("verbose info"))
            .expect("verbose info is JSON");
        i32::try_from(info["pid"].as_i64().expect("the container's pid")).expect("a pid")
    }

    fn stop_container(&mut self, id: &str, timeout: i64) {
        self.rt
            .block_on(self.runtime.stop_container(v1::StopContainerRequest {
                container_id: id.to_owned(),
                timeout,
            }))
            .unwrap_or_else(|s| panic!("StopContainer: {s}"));
    }

    fn remove_pod(&mut self, pod_id: &str) {
        let _ = self
            .rt
            .block_on(self.runtime.stop_pod_sandbox(v1::StopPodSandboxRequest {
                pod_sandbox_id: pod_id.to_owned(),
            }));
        let _ = self.rt.block_on(
            self.runtime
                .remove_pod_sandbox(v1::RemovePodSandboxRequest {
                    pod_sandbox_id: pod_id.to_owned(),
                }),
        );
    }

    fn remove_all_pods(&mut self) {
        let pods = self
            .rt
            .block_on(
                self.runtime
                    .list_pod_sandbox(v1::ListPodSandboxRequest { filter: None }),
            )
            .map(|r| r.into_inner().items)
            .unwrap_or_default();
        for pod in pods {
            self.remove_pod(&pod.id);
        }
    }

    fn has_image(&mut self, image: &str) -> bool {
        self.rt
            .block_on(self.images.image_status(v1::ImageStatusRequest {
                image: Some(v1::ImageSpec {
                    image: image.to_owned(),
                    ..Default::default()
                }),
                verbose: false,
            }))
            .is_ok_and(|r| r.into_inner().image.is_some())
    }
}

/// One HTTP GET to `addr` from inside the network namespace of `pid`.
fn get_in_netns(pid: i32, addr: &str, path: &str) -> Option<(u16, String)> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).ok()?;
    let addr = addr.to_owned();
    let path = path.to_owned();
    std::thread::spawn(move || {
        // SAFETY: moves only this (short-lived) thread into the pod's namespace.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return None;
        }
        let sock: std::net::SocketAddr = addr.parse().ok()?;
        let mut stream = TcpStream::connect_timeout(&sock, Duration::from_secs(2)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(stream, "GET {path} HTTP/1.1\r\nHost: agent\r\n\r\n").ok()?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply).ok()?;
        let code = reply.split_whitespace().nth(1)?.parse().ok()?;
        let body = reply.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
        Some((code, body))
    })
    .join()
    .ok()
    .flatten()
}

/// Test directories, mounts and the containerd; torn down on drop.
struct Node {
    dir: PathBuf,
    kubelet_root: PathBuf,
    tmpfs: Vec<PathBuf>,
    cri: Cri,
    containerd: Containerd,
}

impl Node {
    fn start(images: &Path) -> Self {
        let dir = PathBuf::from(format!("/var/tmp/tokenwatch-cri-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // The kubelet root: a shared mount, as on a node, so that volumes
        // mounted later propagate into the agent's HostToContainer mount.
        let kubelet_root = dir.join("kubelet");
        std::fs::create_dir_all(kubelet_root.join("pods")).unwrap();
        let target = tokenwatch_tests::cpath(&kubelet_root);
        // SAFETY: valid paths; a bind mount of a directory onto itself.
        unsafe {
            assert_eq!(
                libc::mount(
                    target.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null()
                ),
                0,
                "bind-mounting the kubelet root: {}",
                std::io::Error::last_os_error()
            );
            assert_eq!(
                libc::mount(
                    std::ptr::null(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_SHARED,
                    std::ptr::null()
                ),
                0,
                "making the kubelet root shared: {}",
                std::io::Error::last_os_error()
            );
        }
        ensure_tracefs();
        let socket = PathBuf::from(format!(
            "/run/tokenwatch-cri-{}/cri.sock",
            std::process::id()
        ));
        let containerd = Containerd::start(&dir.join("containerd"), &socket, PAUSE_IMAGE);
        for archive in ["pause.oci.tar", "reader.oci.tar", "agent.oci.tar"] {
            containerd.import(&images.join(archive));
        }
        let mut cri = Cri::connect(&socket);
        for image in [PAUSE_IMAGE, READER_IMAGE, "tokenwatch:0.1.0"] {
            assert!(
                cri.has_image(image),
                "the CRI does not see {image} after the import:\n{}",
                containerd.log()
            );
        }
        Self {
            dir,
            kubelet_root,
            tmpfs: Vec::new(),
            cri,
            containerd,
        }
    }

    fn pod_dir(&self, uid: &str) -> PathBuf {
        self.kubelet_root.join("pods").join(uid)
    }

    /// A projected volume on its own tmpfs, written like the kubelet.
    fn projected(&mut self, uid: &str, name: &str, files: &[VolumeFile]) -> PathBuf {
        let dir = self
            .pod_dir(uid)
            .join("volumes/kubernetes.io~projected")
            .join(name);
        kubelet::mount_tmpfs(&dir);
        self.tmpfs.push(dir.clone());
        kubelet::write_atomic(&dir, 1, files);
        dir
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.cri.remove_all_pods();
        self.containerd.stop();
        for dir in self.tmpfs.iter().rev() {
            let path = tokenwatch_tests::cpath(dir);
            // SAFETY: valid path.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
        let root = tokenwatch_tests::cpath(&self.kubelet_root);
        // SAFETY: valid path.
        unsafe { libc::umount2(root.as_ptr(), libc::MNT_DETACH) };
        if std::env::var_os("TOKENWATCH_KEEP_CRI").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("kept {}", self.dir.display());
        }
    }
}

/// Mounts tracefs where systemd mounts it on a node, when nothing has.
fn ensure_tracefs() {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some("/sys/kernel/tracing"))
    {
        return;
    }
    let target = tokenwatch_tests::cpath(Path::new("/sys/kernel/tracing"));
    let fstype = std::ffi::CString::new("tracefs").unwrap();
    // SAFETY: valid strings.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    assert_eq!(
        rc,
        0,
        "mounting tracefs: {}",
        std::io::Error::last_os_error()
    );
}

/// The agent's pod, set up as the kubelet would from the manifests.
struct AgentPod {
    pod_id: String,
    container_id: String,
    pid: i32,
    ip: String,
    data: PathBuf,
    log: PathBuf,
}

/// Runs the DaemonSet's pod with its capability list edited by `edit`.
fn run_agent_pod(node: &mut Node, name: &str, edit: impl FnOnce(&mut Vec<String>)) -> AgentPod {
    let ds = kubelet::daemonset();
    let template = ds.spec.expect("DaemonSet spec").template;
    let mut spec = template.spec.expect("pod spec");
    let agent = &mut spec.containers[0];
    let caps = agent
        .security_context
        .as_mut()
        .and_then(|sc| sc.capabilities.as_mut())
        .expect("the agent container lists capabilities");
    let mut add = tokenwatch_tests::grantable_capabilities(
        name,
        caps.add.clone().unwrap_or_default(),
        cap_bit,
    );
    edit(&mut add);
    caps.add = Some(add);

    let uid = format!(
        "7a1c9e2b-{:04x}-4d3f-8b6a-{:012x}",
        std::process::id() % 0xffff,
        name.len() as u64 * 7919 + name.bytes().map(u64::from).sum::<u64>()
    );
    let id = PodIdentity {
        name: name.to_owned(),
        namespace: "tokenwatch".into(),
        uid: uid.clone(),
        node_name: "cri-node".into(),
    };
    // Volumes: hostPaths remapped into the test's directories; the
    // ConfigMap and the projected token written like the kubelet writes them.
    let data = node.dir.join(format!("data-{name}"));
    let mut volumes = HashMap::new();
    for v in spec.volumes.iter().flatten() {
        let dir = if let Some(host) = &v.host_path {
            match host.path.as_str() {
                "/var/lib/tokenwatch" => data.clone(),
                "/var/lib/kubelet/pods" => node.kubelet_root.join("pods"),
                // The kernel's interfaces are the host's own.
                other => PathBuf::from(other),
            }
        } else if v.config_map.is_some() {
            let cm = kubelet::configmap();
            let dir = node
                .pod_dir(&uid)
                .join("volumes/kubernetes.io~configmap")
                .join(&v.name);
            std::fs::create_dir_all(&dir).unwrap();
            let files: Vec<VolumeFile> = cm
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, content)| VolumeFile {
                    name: k,
                    content: content.into_bytes(),
                    mode: 0o644,
                    uid: 0,
                })
                .collect();
            kubelet::write_atomic(&dir, 1, &files);
            dir
        } else if v.projected.is_some() {
            let token = sim::bound_token("tokenwatch", "tokenwatch", name, &uid, "jti-agent");
            node.projected(
                &uid,
                &v.name,
                &[
                    VolumeFile {
                        name: "token".into(),
                        content: token.into_bytes(),
                        mode: 0o444,
                        uid: 0,
                    },
                    VolumeFile {
                        name: "ca.crt".into(),
                        content: b"-----BEGIN CERTIFICATE-----\n".to_vec(),
                        mode: 0o444,
                        uid: 0,
                    },
                    VolumeFile {
                        name: "namespace".into(),
                        content: b"tokenwatch".to_vec(),
                        mode: 0o444,
                        uid: 0,
                    },
                ],
            )
        } else {
            panic!("volume {} has a source this test does not make", v.name);
        };
        volumes.insert(v.name.clone(), dir);
    }
    let logs = node.dir.join("logs").join(name);
    std::fs::create_dir_all(&logs).unwrap();
    let pod = kubelet::cri_pod(&spec, &id, &logs, &volumes)
        .unwrap_or_else(|err| panic!("the DaemonSet's pod spec does not map to the CRI: {err}"));
    let pod_id = node
        .cri
        .run_pod(pod.sandbox.clone())
        .unwrap_or_else(|err| panic!("{err}\n{}", node.containerd.log()));
    let container_id = node
        .cri
        .create_and_start(&pod_id, pod.containers[0].clone(), &pod.sandbox)
        .unwrap_or_else(|err| panic!("{err}\n{}", node.containerd.log()));
    let (pid, ip) = node.cri.sandbox_pid_ip(&pod_id);
    AgentPod {
        pod_id,
        container_id,
        pid,
        ip,
        data,
        log: logs.join("agent/0.log"),
    }
}

impl AgentPod {
    fn get(&self, path: &str) -> Option<(u16, String)> {
        get_in_netns(self.pid, &format!("{}:9464", self.ip), path)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/readyz` answers `code`, panicking with the agent's log.
    fn wait_readyz(&self, code: u16, within: Duration) -> String {
        let deadline = Instant::now() + within;
        let mut last = None;
        while Instant::now() < deadline {
            last = self.get("/readyz");
            if let Some((c, body)) = &last
                && *c == code
            {
                return body.clone();
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "/readyz did not answer {code} within {within:?} (last: {last:?}); agent log:\n{}",
            self.log()
        );
    }

    fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics")?;
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
    }
}

fn findings(entry: &Value) -> Vec<String> {
    entry["findings"].as_array().map_or_else(Vec::new, |f| {
        f.iter()
            .map(|x| x["kind"].as_str().unwrap_or("").to_owned())
            .collect()
    })
}

/// The workload pod's spec, mapped by the same code as the DaemonSet's.
fn workload_spec() -> PodSpec {
    serde_json::from_value(serde_json::json!({
        "containers": [{
            "name": "reader",
            "image": READER_IMAGE,
            "args": [IN_POD_TOKEN],
            "volumeMounts": [{
                "name": "kube-api-access-test",
                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                "readOnly": true,
            }],
            "securityContext": {
                "runAsUser": READER_UID,
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
        }],
        "volumes": [{"name": "kube-api-access-test", "projected": {"sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}
        ]}}],
    }))
    .expect("a pod spec")
}

#[test]
fn daemonset_pod_through_cri() {
    const TEST: &str = "daemonset_pod_through_cri";
    if !require_root(TEST) {
        return;
    }
    let Some(images) = images_dir(TEST) else {
        return;
    };
    let mut node = Node::start(&images);
    let agent = run_agent_pod(&mut node, "tokenwatch-cri", |_| {});
    let body = agent.wait_readyz(200, Duration::from_secs(90));
    assert_eq!(body, "ready\n");

    // What the kernel says the agent runs with: exactly the manifest's
    // capabilities, the runtime's default seccomp filter, no_new_privs,
    // uid 0, the host's PID namespace, a read-only root.
    let pid = node.cri.container_pid(&agent.container_id);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
            .to_owned()
    };
    let added =
        tokenwatch_tests::grantable_capabilities("container", manifest_capabilities(), cap_bit);
    let expected: u64 = added.iter().map(|c| 1u64 << cap_bit(c)).sum();
    assert_eq!(
        u64::from_str_radix(&field("CapEff:"), 16).unwrap(),
        expected,
        "exactly the manifest's capabilities {added:?}"
    );
    assert_eq!(
        field("CapBnd:"),
        field("CapEff:"),
        "the bounding set is the same"
    );
    assert_eq!(field("Seccomp:"), "2", "a seccomp filter (RuntimeDefault)");
    assert_eq!(field("NoNewPrivs:"), "1", "allowPrivilegeEscalation: false");
    assert!(field("Uid:").starts_with("0\t"), "runAsUser: 0");
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap(),
        std::fs::read_link("/proc/self/ns/pid").unwrap(),
        "hostPID"
    );
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root = mountinfo
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .expect("a root mount");
    assert!(
        root.split_whitespace()
            .nth(5)
            .unwrap()
            .split(',')
            .any(|o| o == "ro"),
        "readOnlyRootFilesystem: {root}"
    );

    // The workload pod: its token volume is mounted after the agent started.
    let workload = PodIdentity {
        name: "web-5d9c7f-abcde".into(),
        namespace: "shop".into(),
        uid: WORKLOAD_UID.into(),
        node_name: "cri-node".into(),
    };
    let token = sim::bound_token("shop", "web", &workload.name, WORKLOAD_UID, "jti-web-1");
    // A runAsUser pod's projected token: 0600, owned by that user.
    let volume = node.projected(
        WORKLOAD_UID,
        "kube-api-access-test",
        &[VolumeFile {
            name: "token".into(),
            content: token.into_bytes(),
            mode: 0o600,
            uid: READER_UID,
        }],
    );
    let spec = workload_spec();
    let logs = node.dir.join("logs/workload");
    std::fs::create_dir_all(&logs).unwrap();
    let volumes = HashMap::from([("kube-api-access-test".to_owned(), volume.clone())]);
    let pod = kubelet::cri_pod(&spec, &workload, &logs, &volumes).unwrap();
    let workload_pod = node
        .cri
        .run_pod(pod.sandbox.clone())
        .unwrap_or_else(|err| panic!("{err}\n{}", node.containerd.log()));
    // Give the agent a moment to see the new volume before the read.
    std::thread::sleep(Duration::from_secs(2));
    let reader_id = node
        .cri
        .create_and_start(&workload_pod, pod.containers[0].clone(), &pod.sandbox)
        .unwrap_or_else(|err| panic!("{err}\n{}", node.containerd.log()));
    let reader_log = logs.join("reader/0.log");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&reader_log)
        .unwrap_or_default()
        .contains("read ")
    {
        assert!(
            Instant::now() < deadline,
            "the reader did not read its token: {}\n{}",
            std::fs::read_to_string(&reader_log).unwrap_or_default(),
            node.containerd.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The volume mounted after the agent started reached it (HostToContainer).
    let agent_mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let in_agent = format!(
        "/var/lib/kubelet/pods/{WORKLOAD_UID}/volumes/kubernetes.io~projected/kube-api-access-test"
    );
    assert!(
        agent_mounts
            .lines()
            .any(|l| l.split_whitespace().nth(4) == Some(in_agent.as_str())),
        "the workload's token tmpfs did not propagate into the agent's container:\n{agent_mounts}"
    );
    // A host process reads the same token through the kubelet's path.
    let status = std::process::Command::new("cat")
        .arg(volume.join("token"))
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent
        .metric("tokenwatch_entries_total{kind=\"token-read\"}")
        .unwrap_or(0.0)
        < 2.0
    {
        assert!(
            Instant::now() < deadline,
            "the agent recorded fewer than 2 token reads; metrics:\n{}\nlog:\n{}",
            agent.get("/metrics").map(|m| m.1).unwrap_or_default(),
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // StopContainer: SIGTERM, then the agent flushes the trail and exits 0.
    node.cri.stop_container(&agent.container_id, 30);
    let status = node.cri.container_status(&agent.container_id);
    assert_eq!(
        status.state,
        v1::ContainerState::ContainerExited as i32,
        "{status:?}"
    );
    assert_eq!(status.exit_code, 0, "agent log:\n{}", agent.log());
    assert!(agent.log().contains("agent stopped"), "{}", agent.log());

    let bin = tokenwatch_binary();
    let verify = std::process::Command::new(&bin)
        .args(["trail", "verify", "--data-dir"])
        .arg(&agent.data)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "trail verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let records = sim::export_trail(&bin, &agent.data);
    let trail: Vec<&Value> = records.iter().map(|r| &r["entry"]).collect();
    let describe = || serde_json::to_string_pretty(&trail).unwrap();
    let reads: Vec<&Value> = trail
        .iter()
        .copied()
        .filter(|e| e["kind"] == "token-read")
        .collect();
    let in_pod = reads
        .iter()
        .find(|e| e["reader"]["pod"]["uid"] == WORKLOAD_UID)
        .unwrap_or_else(|| panic!("no read from the workload pod:\n{}", describe()));
    assert_eq!(in_pod["token"]["jti"], "jti-web-1", "{in_pod}");
    assert_eq!(in_pod["token"]["subject"], "system:serviceaccount:shop:web");
    assert_eq!(in_pod["reader"]["pod"]["container_id"], reader_id.as_str());
    assert_eq!(findings(in_pod), Vec::<String>::new(), "{in_pod}");
    let host = reads
        .iter()
        .find(|e| e["reader"]["pod"].is_null() && e["reader"]["comm"] == "cat")
        .unwrap_or_else(|| panic!("no host read:\n{}", describe()));
    assert_eq!(host["token"]["jti"], "jti-web-1");
    assert_eq!(findings(host), vec!["host-reader"]);
    assert!(
        trail.iter().any(|e| e["kind"] == "agent"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("agent stopped"))),
        "{}",
        describe()
    );
    node.cri.remove_pod(&agent.pod_id);
    node.cri.remove_pod(&workload_pod);

    // Each added capability, dropped in turn.
    let required = required_capabilities();
    for cap in added {
        let full = format!("CAP_{cap}");
        let pod = run_agent_pod(
            &mut node,
            &format!("no-{}", cap.to_lowercase().replace('_', "-")),
            |add| {
                add.retain(|c| *c != cap);
            },
        );
        if required.contains(&full) {
            let body = pod.wait_readyz(503, Duration::from_secs(60));
            assert!(body.contains(&full), "{full}: /readyz said {body:?}");
            // Still 503 a while later: not a slow start.
            std::thread::sleep(Duration::from_secs(3));
            assert_eq!(pod.get("/readyz").map(|r| r.0), Some(503), "{full}");
            let log = pod.log();
            let line = log
                .lines()
                .find(|l| l.contains(&format!("{full} is missing")))
                .unwrap_or_else(|| panic!("no log line names {full}:\n{log}"));
            assert!(line.contains("not ready"), "{line}");
        } else {
            pod.wait_readyz(200, Duration::from_secs(90));
            let metric = format!(
                "tokenwatch_capability_missing{{capability=\"{full}\",required=\"false\"}}"
            );
            assert_eq!(pod.metric(&metric), Some(1.0), "{full}: {metric}");
            let log = pod.log();
            let line = log
                .lines()
                .find(|l| l.contains(&format!("{full} is missing")))
                .unwrap_or_else(|| panic!("no log line names {full}:\n{log}"));
            assert!(line.contains("degraded"), "{line}");
        }
        node.cri.stop_container(&pod.container_id, 30);
        assert_eq!(
            node.cri.container_status(&pod.container_id).exit_code,
            0,
            "{full}: the agent did not stop cleanly:\n{}",
            pod.log()
        );
        node.cri.remove_pod(&pod.pod_id);
    }
}

/// The capabilities the DaemonSet adds (`SYS_ADMIN`, ...).
fn manifest_capabilities() -> Vec<String> {
    kubelet::daemonset()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers[0]
        .security_context
        .clone()
        .and_then(|sc| sc.capabilities)
        .and_then(|c| c.add)
        .unwrap_or_default()
}

/// A capability's bit (capabilities(7)).
fn cap_bit(name: &str) -> u32 {
    match name {
        "DAC_READ_SEARCH" => 2,
        "SYS_PTRACE" => 19,
        "SYS_ADMIN" => 21,
        "SYS_RESOURCE" => 24,
        "PERFMON" => 38,
        "BPF" => 39,
        other => panic!("add CAP_{other} to this test's table"),
    }
}

/// The capabilities docs/capabilities.md says the sensor cannot work
/// without: their row's "without it" column says `/readyz` stays 503.
fn required_capabilities() -> Vec<String> {
    let text = std::fs::read_to_string(kubelet::repo_root().join("docs/capabilities.md")).unwrap();
    text.lines()
        .filter(|l| l.starts_with("| `CAP_"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells.get(1)?.trim_matches('`');
            let without = cells.get(3)?;
            without
                .contains("`/readyz` stays 503")
                .then(|| name.to_owned())
        })
        .collect()
}

/// The runtime stage of `deploy/Dockerfile`: files copied in, USER,
/// ENTRYPOINT, CMD.
#[derive(Debug, Default, PartialEq)]
struct ImageDescription {
    files: std::collections::BTreeSet<String>,
    user: Option<String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
}

fn parse_dockerfile(text: &str) -> ImageDescription {
    let mut stages: Vec<(String, ImageDescription)> = Vec::new();
    // Joins continuation lines; comments dropped.
    let joined = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    for line in joined.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (instr, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        match instr.to_ascii_uppercase().as_str() {
            "FROM" => stages.push((rest.to_owned(), ImageDescription::default())),
            "COPY" => {
                let stage = &mut stages.last_mut().expect("COPY before FROM").1;
                let words: Vec<&str> = rest
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let dest = words.last().expect("COPY has a destination");
                for src in &words[..words.len() - 1] {
                    let file = if dest.ends_with('/') {
                        let name = Path::new(src)
                            .file_name()
                            .unwrap_or_else(|| panic!("COPY {src} into a directory"));
                        format!("{dest}{}", name.to_string_lossy())
                    } else {
                        (*dest).to_owned()
                    };
                    stage.files.insert(file);
                }
            }
            "USER" => stages.last_mut().expect("USER before FROM").1.user = Some(rest.to_owned()),
            "ENTRYPOINT" => {
                stages
                    .last_mut()
                    .expect("ENTRYPOINT before FROM")
                    .1
                    .entrypoint =
                    serde_json::from_str(rest).expect("ENTRYPOINT in exec (JSON) form");
            }
            "CMD" => {
                stages.last_mut().expect("CMD before FROM").1.cmd =
                    serde_json::from_str(rest).expect("CMD in exec (JSON) form");
            }
            _ => {}
        }
    }
    let (from, runtime) = stages.pop().expect("a stage");
    assert!(
        from.starts_with("scratch"),
        "the runtime stage must be FROM scratch (the xtask image has no base), not {from}"
    );
    runtime
}

fn read_archive(path: &Path) -> ImageDescription {
    let mut blobs = HashMap::new();
    let mut archive =
        tar::Archive::new(std::fs::File::open(path).expect("the agent image archive"));
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        blobs.insert(name, bytes);
    }
    let blob = |digest: &Value| {
        let hex = digest.as_str().unwrap().trim_start_matches("sha256:");
        blobs[&format!("blobs/sha256/{hex}")].clone()
    };
    let index: Value = serde_json::from_slice(&blobs["index.json"]).unwrap();
    let manifest: Value = serde_json::from_slice(&blob(&index["manifests"][0]["digest"])).unwrap();
    let config: Value = serde_json::from_slice(&blob(&manifest["config"]["digest"])).unwrap();
    let layer = blob(&manifest["layers"][0]["digest"]);
    let mut files = std::collections::BTreeSet::new();
    for entry in tar::Archive::new(layer.as_slice()).entries().unwrap() {
        let entry = entry.unwrap();
        if entry.header().entry_type().is_file() {
            files.insert(format!("/{}", entry.path().unwrap().display()));
        }
    }
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    };
    ImageDescription {
        files,
        user: config["config"]["User"].as_str().map(str::to_owned),
        entrypoint: strings(&config["config"]["Entrypoint"]),
        cmd: strings(&config["config"]["Cmd"]),
    }
}

#[test]
fn dockerfile_describes_the_xtask_image() {
    let Some(images) = images_dir("dockerfile_describes_the_xtask_image") else {
        return;
    };
    let dockerfile =
        std::fs::read_to_string(kubelet::repo_root().join("deploy/Dockerfile")).unwrap();
    let described = parse_dockerfile(&dockerfile);
    let built = read_archive(&images.join("agent.oci.tar"));
    assert_eq!(
        described, built,
        "deploy/Dockerfile's runtime stage and `cargo xtask image` describe different images"
    );
}
