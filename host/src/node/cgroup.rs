//! Process -> pod: from the cgroup id of an event to the pod UID and
//! container ID, through the cgroup v2 file system.
//!
//! The cgroup id (`bpf_get_current_cgroup_id`) is the inode number of the
//! cgroup's directory in the v2 hierarchy (the unified one, in a hybrid
//! v1/v2 layout). [`CgroupResolver`] finds that directory by walking the
//! hierarchy once and indexing it by inode, re-walking when an unknown id
//! comes (at most every 100 ms), and caches each id's [`Attribution`];
//! a re-walk also forgets cgroups that have been removed.
//!
//! [`parse_cgroup_path`] reads the kubelet's naming, for both drivers:
//!
//! ```text
//! systemd:  /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope
//!           /kubepods.slice/kubepods-pod<uid>.slice/crio-<id>.scope          (guaranteed: no QoS level)
//!           .../docker-<id>.scope, .../crio-conmon-<id>.scope (CRI-O's monitor, no container)
//! cgroupfs: /kubepods/burstable/pod<uid>/<id>, /kubepods/pod<uid>/<id>, .../crio-<id>
//! ```
//!
//! Prefixes are allowed (a kind node's `/system.slice/docker-<node>.scope/kubelet.slice/kubelet-kubepods.slice/...`),
//! and so are cgroups nested under the container's (systemd inside a
//! container): they belong to that container. Static pods' UIDs are 32 hex
//! digits without dashes and are accepted as well. Anything that does not
//! parse as a pod is the host.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use serde::Serialize;

use super::Error;

/// Where cgroup mounts are listed.
const MOUNTINFO: &str = "/proc/self/mountinfo";
/// The shortest interval between two walks triggered by unknown ids.
const MIN_REWALK: Duration = Duration::from_millis(100);

/// The container runtime, from the cgroup name's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// `cri-containerd-<id>`.
    Containerd,
    /// `crio-<id>`.
    Crio,
    /// `docker-<id>` (dockershim, cri-dockerd).
    Docker,
}

/// The pod's QoS class, from its parent cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QosClass {
    /// Directly under `kubepods`.
    Guaranteed,
    /// Under `burstable`.
    Burstable,
    /// Under `besteffort`.
    BestEffort,
}

/// Who a process is, by its cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Attribution {
    /// Outside every pod.
    Host,
    /// In a pod.
    Pod {
        /// The pod's UID, with dashes.
        pod_uid: String,
        /// The container's ID; `None` for the pod-level cgroup itself or a
        /// runtime helper (CRI-O's conmon).
        container_id: Option<String>,
        /// The runtime, when the name says (the cgroupfs driver with
        /// containerd or docker uses the bare ID).
        runtime: Option<Runtime>,
        /// The QoS class.
        qos: QosClass,
    },
}

impl Attribution {
    /// The pod UID, for a pod.
    #[must_use]
    pub fn pod_uid(&self) -> Option<&str> {
        match self {
            Self::Host => None,
            Self::Pod { pod_uid, .. } => Some(pod_uid),
        }
    }
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A pod UID: a dashed UUID, or 32 hex digits (static pods).
fn parse_uid(raw: &str) -> Option<String> {
    let uid = raw.replace('_', "-").to_ascii_lowercase();
    let groups: Vec<&str> = uid.split('-').collect();
    let dashed = groups.len() == 5
        && groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| is_hex(g));
    (dashed || (uid.len() == 32 && is_hex(&uid))).then_some(uid)
}

/// A container ID: hex, at least 12 digits (runtimes use 64).
fn parse_container_id(raw: &str) -> Option<String> {
    (raw.len() >= 12 && raw.len() <= 128 && is_hex(raw)).then(|| raw.to_ascii_lowercase())
}

/// A pod cgroup name: `kubepods[-qos]-pod<uid>.slice` (systemd, also with a
/// `kubelet-` prefix) or `pod<uid>` (cgroupfs). Returns the UID and, for
/// systemd, the QoS the name carries.
fn parse_pod_component(name: &str, parent: Option<&str>) -> Option<(String, QosClass)> {
    let qos_of = |word: &str| match word {
        "burstable" | "burstable.slice" => Some(QosClass::Burstable),
        "besteffort" | "besteffort.slice" => Some(QosClass::BestEffort),
        _ => None,
    };
    if let Some(stem) = name.strip_suffix(".slice") {
        let words: Vec<&str> = stem.split('-').collect();
        let (last, rest) = words.split_last()?;
        if !rest.contains(&"kubepods") {
            return None;
        }
        let uid = parse_uid(last.strip_prefix("pod")?)?;
        let qos = rest
            .iter()
            .find_map(|w| qos_of(w))
            .unwrap_or(QosClass::Guaranteed);
        return Some((uid, qos));
    }
    let uid = parse_uid(name.strip_prefix("pod")?)?;
    let qos = parent.and_then(qos_of).unwrap_or(QosClass::Guaranteed);
    Some((uid, qos))
}

/// A container cgroup name under a pod's.
fn parse_container_component(name: &str) -> (Option<String>, Option<Runtime>) {
    let stem = name.strip_suffix(".scope").unwrap_or(name);
    if stem.starts_with("crio-conmon-") {
        return (None, Some(Runtime::Crio));
    }
    for (prefix, runtime) in [
        ("cri-containerd-", Runtime::Containerd),
        ("crio-", Runtime::Crio),
        ("docker-", Runtime::Docker),
    ] {
        if let Some(id) = stem.strip_prefix(prefix) {
            return match parse_container_id(id) {
                Some(id) => (Some(id), Some(runtime)),
                None => (None, None),
            };
        }
    }
    (parse_container_id(stem), None)
}

/// Reads a cgroup path (relative to the v2 root, e.g. from
/// `/proc/<pid>/cgroup` or the resolver's index) as the kubelet names it.
#[must_use]
pub fn parse_cgroup_path(path: &str) -> Attribution {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let Some(kubepods) = components.iter().position(|c| {
        let stem = c.strip_suffix(".slice").unwrap_or(c);
        stem.split('-').any(|w| w == "kubepods")
    }) else {
        return Attribution::Host;
    };
    for i in kubepods + 1..components.len() {
        let parent = components.get(i - 1).copied();
        let Some((pod_uid, qos)) = parse_pod_component(components[i], parent) else {
            continue;
        };
        let (container_id, runtime) = components
            .get(i + 1)
            .map_or((None, None), |c| parse_container_component(c));
        return Attribution::Pod {
            pod_uid,
            container_id,
            runtime,
            qos,
        };
    }
    Attribution::Host
}

/// The cgroup2 mount point in mountinfo text: the first `cgroup2` mount of
/// the hierarchy's root, else the first `cgroup2` mount.
#[must_use]
pub fn parse_mountinfo_cgroup2(text: &str) -> Option<PathBuf> {
    let mut fallback = None;
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split_whitespace().next() != Some("cgroup2") {
            continue;
        }
        let fields: Vec<&str> = left.split_whitespace().collect();
        let (Some(root), Some(mount_point)) = (fields.get(3), fields.get(4)) else {
            continue;
        };
        let path = PathBuf::from(unescape_mountinfo(mount_point));
        if *root == "/" {
            return Some(path);
        }
        fallback.get_or_insert(path);
    }
    fallback
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(oct) = field.get(i + 1..i + 4)
            && let Ok(value) = u8::from_str_radix(oct, 8)
        {
            out.push(value);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// This machine's cgroup2 mount point, from `/proc/self/mountinfo`.
///
/// # Errors
/// [`Error::ReadMountinfo`], or [`Error::FindCgroup2`] when none is mounted.
pub fn find_cgroup2_mount() -> Result<PathBuf, Error> {
    let text = std::fs::read_to_string(MOUNTINFO).map_err(|source| Error::ReadMountinfo {
        path: MOUNTINFO.into(),
        source,
    })?;
    parse_mountinfo_cgroup2(&text).ok_or_else(|| Error::FindCgroup2 {
        path: MOUNTINFO.into(),
    })
}

/// `cgroup2`'s `f_type` (`statfs(2)`).
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

fn is_cgroup2(path: &Path) -> bool {
    let Ok(c_path) =
        std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
    else {
        return false;
    };
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: a valid NUL-terminated path and a buffer of the right type.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return false;
    }
    // SAFETY: statfs filled the buffer when it returned 0.
    let f_type = unsafe { st.assume_init() }.f_type;
    #[allow(
        clippy::useless_conversion,
        reason = "f_type is i64 on x86_64 and narrower on other targets"
    )]
    let f_type = i64::from(f_type);
    f_type == CGROUP2_SUPER_MAGIC
}

/// The v2 hierarchy at or under `root`: `root` when it is a cgroup2 mount,
/// else `root/unified` when that is one. The DaemonSet mounts the host's
/// whole `/sys/fs/cgroup`; on a v1/v2 hybrid host that is a tmpfs holding
/// every v1 hierarchy and the v2 one at `unified/`, and walking all of them
/// would index inodes of different file systems (which collide) as if
/// they were cgroup ids (seen in the container test).
fn unified_under(root: PathBuf) -> PathBuf {
    if is_cgroup2(&root) {
        return root;
    }
    let unified = root.join("unified");
    if is_cgroup2(&unified) { unified } else { root }
}

struct Index {
    by_ino: FxHashMap<u64, String>,
    walked_at: Option<Instant>,
}

/// cgroup id -> [`Attribution`], cached.
pub struct CgroupResolver {
    root: PathBuf,
    cache: Mutex<FxHashMap<u64, Attribution>>,
    index: Mutex<Index>,
}

impl std::fmt::Debug for CgroupResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CgroupResolver")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl CgroupResolver {
    /// A resolver over the v2 hierarchy mounted at `cgroup_v2_root`, or,
    /// when `None`, the one found in `/proc/self/mountinfo` (for example
    /// `/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` in a hybrid layout).
    ///
    /// # Errors
    /// The errors of [`find_cgroup2_mount`]; [`Error::ReadCgroupDir`] when
    /// the root cannot be read.
    pub fn new(cgroup_v2_root: Option<PathBuf>) -> Result<Self, Error> {
        let root = match cgroup_v2_root {
            Some(root) => unified_under(root),
            None => find_cgroup2_mount()?,
        };
        std::fs::read_dir(&root).map_err(|source| Error::ReadCgroupDir {
            path: root.clone(),
            source,
        })?;
        Ok(Self {
            root,
            cache: Mutex::new(FxHashMap::default()),
            index: Mutex::new(Index {
                by_ino: FxHashMap::default(),
                walked_at: None,
            }),
        })
    }

    /// The v2 hierarchy's mount point.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Who a process with this cgroup id is. An id not found in the
    /// hierarchy (even after a fresh walk) is reported as the host and not
    /// cached, so a later call looks again.
    #[must_use]
    pub fn resolve(&self, cgroup_id: u64) -> Attribution {
        if let Some(hit) = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&cgroup_id)
        {
            return hit.clone();
        }
        let Some(path) = self.path_of(cgroup_id) else {
            tracing::debug!(cgroup_id, "cgroup id not found in the v2 hierarchy");
            return Attribution::Host;
        };
        let attribution = parse_cgroup_path(&path);
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(cgroup_id, attribution.clone());
        attribution
    }

    /// The cgroup's path relative to the root (`/` for the root), walking
    /// the hierarchy again if the id is unknown and the last walk is older
    /// than 100 ms.
    #[must_use]
    pub fn path_of(&self, cgroup_id: u64) -> Option<String> {
        let mut index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(path) = index.by_ino.get(&cgroup_id) {
            return Some(path.clone());
        }
        if index.walked_at.is_some_and(|t| t.elapsed() < MIN_REWALK) {
            return None;
        }
        self.rewalk(&mut index);
        index.by_ino.get(&cgroup_id).cloned()
    }

    /// Walks the hierarchy now and forgets cached cgroups that no longer
    /// exist. Returns how many were forgotten.
    pub fn forget_removed(&self) -> usize {
        let mut index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
        self.rewalk(&mut index)
    }

    /// Number of cached attributions.
    #[must_use]
    pub fn cached(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn rewalk(&self, index: &mut Index) -> usize {
        let mut by_ino = FxHashMap::default();
        walk(&self.root, String::new(), &mut by_ino);
        index.by_ino = by_ino;
        index.walked_at = Some(Instant::now());
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let before = cache.len();
        cache.retain(|id, _| index.by_ino.contains_key(id));
        before - cache.len()
    }
}

fn walk(dir: &Path, relative: String, by_ino: &mut FxHashMap<u64, String>) {
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return;
    };
    let name = if relative.is_empty() {
        "/".to_owned()
    } else {
        relative.clone()
    };
    by_ino.insert(meta.ino(), name);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Some(child) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        walk(&entry.path(), format!("{relative}/{child}"), by_ino);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hybrid_root_resolves_to_its_unified_hierarchy() {
        // Whatever this machine's layout, the resolver ends on a cgroup2 mount.
        let Ok(found) = find_cgroup2_mount() else {
            return;
        };
        let resolver = CgroupResolver::new(Some(PathBuf::from("/sys/fs/cgroup"))).unwrap();
        if found == Path::new("/sys/fs/cgroup") || found == Path::new("/sys/fs/cgroup/unified") {
            assert_eq!(resolver.root(), found);
        }
        assert!(!is_cgroup2(Path::new("/proc")));
        assert_eq!(unified_under(PathBuf::from("/proc")), Path::new("/proc"));
    }

    #[test]
    fn mountinfo_hybrid_and_unified() {
        let hybrid = "\
25 30 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:25 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
";
        assert_eq!(
            parse_mountinfo_cgroup2(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "35 24 0:30 / /sys/fs/cgroup rw shared:9 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_mountinfo_cgroup2(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        let escaped = "35 24 0:30 / /mnt/cg\\040v2 rw - cgroup2 none rw\n";
        assert_eq!(
            parse_mountinfo_cgroup2(escaped),
            Some(PathBuf::from("/mnt/cg v2"))
        );
        assert_eq!(
            parse_mountinfo_cgroup2("1 2 0:1 / / rw - ext4 /dev/sda rw\n"),
            None
        );
    }
}
