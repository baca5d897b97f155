//! What the kubelet does between a pod spec and the container runtime,
//! for the container test: the DaemonSet's own pod template
//! (`deploy/kustomize/base/daemonset.yaml`, read as `k8s-openapi` objects)
//! becomes the CRI `PodSandboxConfig` and `ContainerConfig`s the kubelet
//! would send, so the test runs what the manifest says and the two cannot
//! drift. A field of the pod spec this mapping does not know is an error,
//! not something silently left out.
//!
//! Volumes are the caller's: it gives each volume's directory on this
//! machine (hostPath volumes remapped into the test's own directories,
//! configMap and projected volumes written the way the kubelet writes them).

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::{ConfigMap, Container, PodSpec},
};

use crate::cri::v1;

/// The repository's root.
#[must_use]
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_owned()
}

/// The DaemonSet in `deploy/kustomize/base`.
///
/// # Panics
/// When the manifest does not parse: the manifest is what is under test.
#[must_use]
pub fn daemonset() -> DaemonSet {
    let path = repo_root().join("deploy/kustomize/base/daemonset.yaml");
    let text = std::fs::read_to_string(&path).expect("reading the DaemonSet manifest");
    serde_yaml_ng::from_str(&text)
        .unwrap_or_else(|err| panic!("{} is not a DaemonSet: {err}", path.display()))
}

/// The ConfigMap in `deploy/kustomize/base` (the agent's `agent.toml`).
///
/// # Panics
/// When the manifest does not parse.
#[must_use]
pub fn configmap() -> ConfigMap {
    let path = repo_root().join("deploy/kustomize/base/configmap.yaml");
    let text = std::fs::read_to_string(&path).expect("reading the ConfigMap manifest");
    serde_yaml_ng::from_str(&text)
        .unwrap_or_else(|err| panic!("{} is not a ConfigMap: {err}", path.display()))
}

/// Who the pod is.
#[derive(Debug, Clone)]
pub struct PodIdentity {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `spec.nodeName`.
    pub node_name: String,
}

/// A pod as the kubelet hands it to the runtime.
#[derive(Debug, Clone)]
pub struct CriPod {
    /// For `RunPodSandbox`.
    pub sandbox: v1::PodSandboxConfig,
    /// For `CreateContainer`, one per container, in the spec's order.
    pub containers: Vec<v1::ContainerConfig>,
}

/// The kubelet's default masked paths (`procMount: Default`).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];
/// The kubelet's default read-only paths (`procMount: Default`).
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// CPU in millicores: `100m`, `1`, `0.5`.
fn millicores(q: &str) -> Result<i64, String> {
    if let Some(m) = q.strip_suffix('m') {
        return m.parse().map_err(|_| format!("bad CPU quantity {q:?}"));
    }
    let cores: f64 = q.parse().map_err(|_| format!("bad CPU quantity {q:?}"))?;
    #[expect(
        clippy::cast_possible_truncation,
        reason = "a CPU quantity in millicores fits"
    )]
    Ok((cores * 1000.0).round() as i64)
}

/// Memory in bytes: `128Mi`, `1Gi`, `1000`.
fn bytes(q: &str) -> Result<i64, String> {
    let units = [
        ("Ki", 1i64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (suffix, factor) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            let n: i64 = n
                .parse()
                .map_err(|_| format!("bad memory quantity {q:?}"))?;
            return Ok(n * factor);
        }
    }
    q.parse().map_err(|_| format!("bad memory quantity {q:?}"))
}

fn quantity<'a>(
    map: Option<&'a BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    key: &str,
) -> Option<&'a str> {
    map.and_then(|m| m.get(key)).map(|q| q.0.as_str())
}

/// The pod's QoS class directory name under `kubepods` (cgroupfs driver).
fn qos_dir(spec: &PodSpec) -> &'static str {
    let mut guaranteed = true;
    let mut any = false;
    for c in &spec.containers {
        let r = c.resources.as_ref();
        let (req, lim) = (
            r.and_then(|r| r.requests.as_ref()),
            r.and_then(|r| r.limits.as_ref()),
        );
        any |= req.is_some_and(|m| !m.is_empty()) || lim.is_some_and(|m| !m.is_empty());
        for key in ["cpu", "memory"] {
            let l = quantity(lim, key);
            let q = quantity(req, key).or(l);
            if l.is_none() || q != l {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "besteffort",
        (true, true) => "",
        (true, false) => "burstable",
    }
}

/// The cgroup parent the kubelet (cgroupfs driver) gives the pod.
#[must_use]
pub fn cgroup_parent(spec: &PodSpec, uid: &str) -> String {
    match qos_dir(spec) {
        "" => format!("/kubepods/pod{uid}"),
        qos => format!("/kubepods/{qos}/pod{uid}"),
    }
}

fn namespaces(spec: &PodSpec) -> Result<v1::NamespaceOption, String> {
    if spec.host_network == Some(true) || spec.host_ipc == Some(true) {
        return Err("hostNetwork/hostIPC are not mapped by this test".into());
    }
    let node = v1::NamespaceMode::Node as i32;
    let pod = v1::NamespaceMode::Pod as i32;
    Ok(v1::NamespaceOption {
        network: pod,
        pid: if spec.host_pid == Some(true) {
            node
        } else if spec.share_process_namespace == Some(true) {
            pod
        } else {
            v1::NamespaceMode::Container as i32
        },
        ipc: pod,
        ..Default::default()
    })
}

/// The sandbox config for `spec`.
///
/// # Errors
/// A pod-level setting this mapping does not know.
pub fn sandbox_config(
    spec: &PodSpec,
    id: &PodIdentity,
    log_directory: &Path,
) -> Result<v1::PodSandboxConfig, String> {
    let mut ns = namespaces(spec)?;
    if ns.pid == v1::NamespaceMode::Container as i32 {
        ns.pid = v1::NamespaceMode::Pod as i32;
    }
    if spec
        .security_context
        .as_ref()
        .is_some_and(|sc| sc.seccomp_profile.is_some() || sc.run_as_user.is_some())
    {
        return Err("a pod-level securityContext is not mapped by this test".into());
    }
    let mut port_mappings = Vec::new();
    for c in &spec.containers {
        for p in c.ports.iter().flatten() {
            port_mappings.push(v1::PortMapping {
                protocol: v1::Protocol::Tcp as i32,
                container_port: p.container_port,
                ..Default::default()
            });
        }
    }
    Ok(v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: id.name.clone(),
            uid: id.uid.clone(),
            namespace: id.namespace.clone(),
            attempt: 0,
        }),
        hostname: id.name.clone(),
        log_directory: log_directory.display().to_string(),
        port_mappings,
        labels: HashMap::from([
            ("io.kubernetes.pod.name".into(), id.name.clone()),
            ("io.kubernetes.pod.namespace".into(), id.namespace.clone()),
            ("io.kubernetes.pod.uid".into(), id.uid.clone()),
        ]),
        linux: Some(v1::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent(spec, &id.uid),
            security_context: Some(v1::LinuxSandboxSecurityContext {
                namespace_options: Some(ns),
                // No pod-level seccompProfile: the kubelet asks for none.
                seccomp: Some(v1::SecurityProfile {
                    profile_type: v1::security_profile::ProfileType::Unconfined as i32,
                    localhost_ref: String::new(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn env(c: &Container, id: &PodIdentity) -> Result<Vec<v1::KeyValue>, String> {
    let mut envs = Vec::new();
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), None) => v.clone(),
            (None, Some(from)) => {
                let field = from
                    .field_ref
                    .as_ref()
                    .ok_or_else(|| format!("env {}: only fieldRef is mapped", e.name))?;
                match field.field_path.as_str() {
                    "spec.nodeName" => id.node_name.clone(),
                    "metadata.name" => id.name.clone(),
                    "metadata.namespace" => id.namespace.clone(),
                    "metadata.uid" => id.uid.clone(),
                    other => return Err(format!("env {}: fieldRef {other} not mapped", e.name)),
                }
            }
            (None, None) => String::new(),
            (Some(_), Some(_)) => return Err(format!("env {}: value and valueFrom", e.name)),
        };
        envs.push(v1::KeyValue {
            key: e.name.clone(),
            value,
        });
    }
    Ok(envs)
}

fn mounts(
    c: &Container,
    spec: &PodSpec,
    volumes: &HashMap<String, PathBuf>,
) -> Result<Vec<v1::Mount>, String> {
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let volume = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == m.name)
            .ok_or_else(|| format!("volumeMount {} names no volume", m.name))?;
        let dir = volumes
            .get(&m.name)
            .ok_or_else(|| format!("no directory given for volume {}", m.name))?;
        if let Some(host) = &volume.host_path {
            match host.type_.as_deref() {
                Some("DirectoryOrCreate") => std::fs::create_dir_all(dir)
                    .map_err(|err| format!("creating {}: {err}", dir.display()))?,
                Some("Directory") if !dir.is_dir() => {
                    return Err(format!(
                        "hostPath {} ({}) is not a directory",
                        host.path,
                        dir.display()
                    ));
                }
                Some("Directory") | None => {}
                Some(other) => return Err(format!("hostPath type {other} not mapped")),
            }
        } else if volume.config_map.is_none() && volume.projected.is_none() {
            return Err(format!(
                "volume {}: only hostPath, configMap and projected are mapped",
                m.name
            ));
        }
        let host_path = match m.sub_path.as_deref() {
            Some(sub) if !sub.is_empty() => dir.join(sub),
            _ => dir.clone(),
        };
        let propagation = match m.mount_propagation.as_deref() {
            None | Some("None") => v1::MountPropagation::PropagationPrivate,
            Some("HostToContainer") => v1::MountPropagation::PropagationHostToContainer,
            Some("Bidirectional") => v1::MountPropagation::PropagationBidirectional,
            Some(other) => return Err(format!("mountPropagation {other} unknown")),
        };
        out.push(v1::Mount {
            container_path: m.mount_path.clone(),
            host_path: host_path.display().to_string(),
            readonly: m.read_only == Some(true),
            propagation: propagation as i32,
            ..Default::default()
        });
    }
    Ok(out)
}

fn resources(c: &Container, critical: bool) -> Result<v1::LinuxContainerResources, String> {
    let r = c.resources.as_ref();
    let (req, lim) = (
        r.and_then(|r| r.requests.as_ref()),
        r.and_then(|r| r.limits.as_ref()),
    );
    let mut out = v1::LinuxContainerResources {
        // The kubelet's oom_score_adj for critical pods, else burstable's default range.
        oom_score_adj: if critical { -997 } else { 1000 },
        ..Default::default()
    };
    if let Some(cpu) = quantity(req, "cpu").or(quantity(lim, "cpu")) {
        out.cpu_shares = (millicores(cpu)? * 1024 / 1000).max(2);
    } else {
        out.cpu_shares = 2;
    }
    if let Some(cpu) = quantity(lim, "cpu") {
        out.cpu_period = 100_000;
        out.cpu_quota = millicores(cpu)? * 100;
    }
    if let Some(memory) = quantity(lim, "memory") {
        out.memory_limit_in_bytes = bytes(memory)?;
    }
    Ok(out)
}

fn security(c: &Container, spec: &PodSpec) -> Result<v1::LinuxContainerSecurityContext, String> {
    let sc = c.security_context.clone().unwrap_or_default();
    if sc.proc_mount.as_deref().is_some_and(|p| p != "Default") {
        return Err("procMount other than Default is not mapped".into());
    }
    let seccomp = match sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()) {
        Some("RuntimeDefault") => v1::security_profile::ProfileType::RuntimeDefault,
        Some("Unconfined") | None => v1::security_profile::ProfileType::Unconfined,
        Some(other) => return Err(format!("seccompProfile {other} not mapped")),
    };
    let caps = sc.capabilities.clone().unwrap_or_default();
    Ok(v1::LinuxContainerSecurityContext {
        capabilities: Some(v1::Capability {
            add_capabilities: caps.add.unwrap_or_default(),
            drop_capabilities: caps.drop.unwrap_or_default(),
            ..Default::default()
        }),
        privileged: sc.privileged == Some(true),
        namespace_options: Some(namespaces(spec)?),
        run_as_user: sc.run_as_user.map(|value| v1::Int64Value { value }),
        run_as_group: sc.run_as_group.map(|value| v1::Int64Value { value }),
        readonly_rootfs: sc.read_only_root_filesystem == Some(true),
        // The kubelet sets no_new_privs unless privilege escalation is allowed.
        no_new_privs: sc.allow_privilege_escalation == Some(false),
        masked_paths: if sc.privileged == Some(true) {
            Vec::new()
        } else {
            MASKED_PATHS.iter().map(|p| (*p).to_owned()).collect()
        },
        readonly_paths: if sc.privileged == Some(true) {
            Vec::new()
        } else {
            READONLY_PATHS.iter().map(|p| (*p).to_owned()).collect()
        },
        seccomp: Some(v1::SecurityProfile {
            profile_type: seccomp as i32,
            localhost_ref: String::new(),
        }),
        ..Default::default()
    })
}

/// One container's config, as the kubelet builds it.
///
/// # Errors
/// A setting this mapping does not know, or a volume without a directory.
pub fn container_config(
    c: &Container,
    spec: &PodSpec,
    id: &PodIdentity,
    volumes: &HashMap<String, PathBuf>,
) -> Result<v1::ContainerConfig, String> {
    let image = c
        .image
        .clone()
        .ok_or_else(|| format!("container {} has no image", c.name))?;
    let critical = spec
        .priority_class_name
        .as_deref()
        .is_some_and(|p| p.starts_with("system-"));
    Ok(v1::ContainerConfig {
        metadata: Some(v1::ContainerMetadata {
            name: c.name.clone(),
            attempt: 0,
        }),
        image: Some(v1::ImageSpec {
            image,
            ..Default::default()
        }),
        command: c.command.clone().unwrap_or_default(),
        args: c.args.clone().unwrap_or_default(),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: env(c, id)?,
        mounts: mounts(c, spec, volumes)?,
        labels: HashMap::from([
            ("io.kubernetes.container.name".into(), c.name.clone()),
            ("io.kubernetes.pod.uid".into(), id.uid.clone()),
        ]),
        log_path: format!("{}/0.log", c.name),
        linux: Some(v1::LinuxContainerConfig {
            resources: Some(resources(c, critical)?),
            security_context: Some(security(c, spec)?),
        }),
        ..Default::default()
    })
}

/// The whole pod.
///
/// # Errors
/// What [`sandbox_config`] and [`container_config`] refuse; init containers.
pub fn cri_pod(
    spec: &PodSpec,
    id: &PodIdentity,
    log_directory: &Path,
    volumes: &HashMap<String, PathBuf>,
) -> Result<CriPod, String> {
    if spec.init_containers.as_ref().is_some_and(|i| !i.is_empty()) {
        return Err("init containers are not mapped by this test".into());
    }
    Ok(CriPod {
        sandbox: sandbox_config(spec, id, log_directory)?,
        containers: spec
            .containers
            .iter()
            .map(|c| container_config(c, spec, id, volumes))
            .collect::<Result<_, _>>()?,
    })
}

/// A file the kubelet's atomic writer puts in a volume.
#[derive(Debug, Clone)]
pub struct VolumeFile {
    /// Its name in the volume.
    pub name: String,
    /// Its content.
    pub content: Vec<u8>,
    /// Its mode (`defaultMode`, or 0600 for a token of a `runAsUser` pod).
    pub mode: u32,
    /// Its owner uid (the pod's `runAsUser` for such a token, else 0).
    pub uid: u32,
}

/// Writes `files` into `dir` the way the kubelet's atomic writer does:
/// a `..<timestamp>` directory holding them, a `..data` link swapped to it
/// with a rename, and one `<name> -> ..data/<name>` link per file.
///
/// # Panics
/// On I/O errors.
pub fn write_atomic(dir: &Path, generation: u32, files: &[VolumeFile]) {
    use std::os::unix::fs::PermissionsExt as _;
    let stamp = format!("..2026_12_02_00_00_{generation:02}.{}", 100 + generation);
    let ts = dir.join(&stamp);
    std::fs::create_dir_all(&ts).unwrap();
    for f in files {
        let path = ts.join(&f.name);
        std::fs::write(&path, &f.content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode)).unwrap();
        std::os::unix::fs::chown(&path, Some(f.uid), None).unwrap();
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for f in files {
        let link = dir.join(&f.name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{}", f.name), &link).unwrap();
        }
    }
}

/// Mounts a tmpfs on `dir` (created first), as the kubelet does for every
/// projected and secret volume, so that the token is never on disk.
///
/// # Panics
/// When the mount fails.
pub fn mount_tmpfs(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let target = crate::cpath(dir);
    let fstype = std::ffi::CString::new("tmpfs").unwrap();
    let data = std::ffi::CString::new("size=1m,mode=0755").unwrap();
    // SAFETY: valid NUL-terminated strings.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    };
    assert_eq!(
        rc,
        0,
        "mounting a tmpfs on {}: {}",
        dir.display(),
        std::io::Error::last_os_error()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(millicores("100m").unwrap(), 100);
        assert_eq!(millicores("1").unwrap(), 1000);
        assert_eq!(millicores("0.5").unwrap(), 500);
        assert_eq!(bytes("128Mi").unwrap(), 128 << 20);
        assert!(bytes("12ü").is_err());
    }

    #[test]
    fn the_daemonset_maps() {
        let ds = daemonset();
        let spec = ds.spec.unwrap().template.spec.unwrap();
        let volumes: HashMap<String, PathBuf> = spec
            .volumes
            .iter()
            .flatten()
            .map(|v| (v.name.clone(), std::env::temp_dir()))
            .collect();
        let id = PodIdentity {
            name: "tokenwatch-x".into(),
            namespace: "tokenwatch".into(),
            uid: "u".into(),
            node_name: "n".into(),
        };
        let pod = cri_pod(&spec, &id, Path::new("/tmp/logs"), &volumes).unwrap();
        let linux = pod.containers[0].linux.as_ref().unwrap();
        let sc = linux.security_context.as_ref().unwrap();
        assert!(sc.readonly_rootfs && sc.no_new_privs && !sc.privileged);
        assert_eq!(
            sc.namespace_options.as_ref().unwrap().pid,
            v1::NamespaceMode::Node as i32
        );
        assert_eq!(
            sc.seccomp.as_ref().unwrap().profile_type,
            v1::security_profile::ProfileType::RuntimeDefault as i32
        );
        assert_eq!(sc.capabilities.as_ref().unwrap().drop_capabilities, ["ALL"]);
        let kubelet = pod.containers[0]
            .mounts
            .iter()
            .find(|m| m.container_path == "/var/lib/kubelet/pods")
            .unwrap();
        assert!(kubelet.readonly);
        assert_eq!(
            kubelet.propagation,
            v1::MountPropagation::PropagationHostToContainer as i32
        );
        let node = pod.containers[0]
            .envs
            .iter()
            .find(|e| e.key == "NODE_NAME")
            .unwrap();
        assert_eq!(node.value, "n");
        assert_eq!(
            pod.sandbox.linux.unwrap().cgroup_parent,
            "/kubepods/burstable/podu"
        );
    }
}
