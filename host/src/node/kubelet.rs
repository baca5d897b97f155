//! Token files under the kubelet root.
//!
//! The kubelet mounts a pod's token through a volume directory:
//!
//! ```text
//! <root>/pods/<pod-uid>/volumes/kubernetes.io~projected/<vol>/   projected (bound tokens)
//! <root>/pods/<pod-uid>/volumes/kubernetes.io~secret/<vol>/      Secret (legacy tokens)
//!     ..2025_11_24_07_37_58.123456789/token    the data, one dir per write
//!     ..data -> ..2025_11_24_07_37_58.123456789
//!     token  -> ..data/token
//! ```
//!
//! A rotation (the atomic writer) creates a new timestamp directory, swaps
//! `..data` to it with a rename, then deletes the old directory. The
//! *current* file is the one `<vol>/token` resolves to; a scan also
//! reports files still present in older timestamp directories
//! (`current: false`), because a process may have opened them before the
//! swap. Only files named `token` are considered.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::{Error, FileId};
use crate::identity::{Identity, IdentityCache, TokenKind};

/// The kubelet's default root directory (`--root-dir`).
pub const DEFAULT_KUBELET_ROOT: &str = "/var/lib/kubelet";

/// The volume plugins whose volumes can hold a token.
const PLUGINS: [(&str, VolumeKind); 2] = [
    ("kubernetes.io~projected", VolumeKind::Projected),
    ("kubernetes.io~secret", VolumeKind::Secret),
];

/// The kind of volume a token file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeKind {
    /// A projected volume (`serviceAccountToken` source): bound tokens.
    Projected,
    /// A Secret volume: legacy tokens (or any Secret with a `token` key).
    Secret,
}

/// One token file on the node.
#[derive(Debug, Clone, Serialize)]
pub struct TokenFile {
    /// The pod's UID (its directory name).
    pub pod_uid: String,
    /// The volume's name.
    pub volume: String,
    /// Projected or Secret.
    pub kind: VolumeKind,
    /// The file's real path (inside its timestamp directory, when the
    /// volume uses the atomic writer).
    pub path: PathBuf,
    /// The file's (dev, ino).
    pub file: FileId,
    /// Whether `<vol>/token` resolves to this file now.
    pub current: bool,
    /// Its identity, when it parses as a JWT (`None` otherwise; the reason
    /// is logged at debug level). Not serialized: see its fingerprint.
    #[serde(skip)]
    pub identity: Option<Arc<Identity>>,
}

/// A pod's name and namespace, from its own bound token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodMeta {
    /// The pod's UID.
    pub uid: String,
    /// The pod's name.
    pub name: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's ServiceAccount.
    pub service_account: String,
}

/// The current token file of every token volume under `root` (the kubelet
/// root), with its identity from `cache`.
///
/// # Errors
/// [`Error::ReadKubeletDir`] when `root/pods` exists but cannot be listed.
/// A missing `pods` directory is an empty node.
pub fn discover(root: &Path, cache: &IdentityCache) -> Result<Vec<TokenFile>, Error> {
    Ok(scan(root, cache)?
        .into_iter()
        .filter(|t| t.current)
        .collect())
}

/// Pod names and namespaces from the bound tokens among `tokens`, keyed by
/// pod UID. A token counts only if its `kubernetes.io.pod.uid` is the UID
/// of the pod directory it was found in.
#[must_use]
pub fn pods_from_tokens(tokens: &[TokenFile]) -> BTreeMap<String, PodMeta> {
    let mut pods = BTreeMap::new();
    for token in tokens {
        let Some(identity) = &token.identity else {
            continue;
        };
        if identity.kind != TokenKind::Bound {
            continue;
        }
        let s = &identity.summary;
        let (Some(pod), Some(namespace), Some(sa)) = (&s.pod, &s.namespace, &s.service_account)
        else {
            continue;
        };
        if pod.uid.as_deref() != Some(token.pod_uid.as_str()) {
            continue;
        }
        pods.entry(token.pod_uid.clone())
            .or_insert_with(|| PodMeta {
                uid: token.pod_uid.clone(),
                name: pod.name.clone(),
                namespace: namespace.clone(),
                service_account: sa.name.clone(),
            });
    }
    pods
}

/// Every token file under `root`: the current ones and those still in
/// older timestamp directories.
pub(crate) fn scan(root: &Path, cache: &IdentityCache) -> Result<Vec<TokenFile>, Error> {
    let pods_dir = root.join("pods");
    let mut found = Vec::new();
    for pod in list_dirs(&pods_dir)? {
        let Some(pod_uid) = pod.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        for (plugin, kind) in PLUGINS {
            let plugin_dir = pod.join("volumes").join(plugin);
            for volume_dir in list_dirs(&plugin_dir).unwrap_or_default() {
                let Some(volume) = volume_dir
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(str::to_owned)
                else {
                    continue;
                };
                scan_volume(&volume_dir, &pod_uid, &volume, kind, cache, &mut found);
            }
        }
    }
    Ok(found)
}

fn scan_volume(
    dir: &Path,
    pod_uid: &str,
    volume: &str,
    kind: VolumeKind,
    cache: &IdentityCache,
    found: &mut Vec<TokenFile>,
) {
    let push = |path: PathBuf, current: bool, found: &mut Vec<TokenFile>| {
        let Ok(meta) = std::fs::metadata(&path) else {
            return;
        };
        if !meta.is_file() {
            return;
        }
        let file = FileId::of(&meta);
        if let Some(existing) = found.iter_mut().find(|t| t.file == file) {
            existing.current |= current;
            return;
        }
        let identity = match cache.load(&path) {
            Ok((_, identity)) => Some(identity),
            Err(err) => {
                tracing::debug!(path = %path.display(), error = %crate::error::error_chain(&err), "token file does not parse");
                None
            }
        };
        let real = std::fs::canonicalize(&path).unwrap_or(path);
        found.push(TokenFile {
            pod_uid: pod_uid.to_owned(),
            volume: volume.to_owned(),
            kind,
            path: real,
            file,
            current,
            identity,
        });
    };
    push(dir.join("token"), true, found);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        // Timestamp directories are `..<timestamp>`; `..data` and
        // `..data_tmp` are the symlinks the writer swaps.
        if !name.starts_with("..") || name.starts_with("..data") {
            continue;
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            push(entry.path().join("token"), false, found);
        }
    }
}

/// The subdirectories of `dir`; empty when it does not exist.
fn list_dirs(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::ReadKubeletDir {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    Ok(dirs)
}
