//! Keeping the sensor's watched-inode map in step with the kubelet.
//!
//! [`TokenWatcher::spawn`] scans the kubelet root, reports every token
//! file as [`WatchChange::Add`], then watches the pod and volume
//! directories with inotify (driven by tokio through `AsyncFd`). Any event
//! there (a pod directory created or removed, a new timestamp directory,
//! `..data` renamed, an old timestamp directory deleted) triggers a rescan
//! after a short debounce (50 ms by default), and the difference with the
//! previous scan goes out on the channel: `Add` for each new file, `Remove`
//! for each file that no longer exists. A periodic rescan (30 s by
//! default) covers lost events (queue overflow).
//!
//! An old token file stays in the set, and so stays watched, for as long
//! as it exists on disk: the kubelet swaps `..data` first and deletes the
//! old timestamp directory after, so `Add(new)` always comes before
//! `Remove(old)`. Once the file is deleted nobody can open it anew; reads
//! through descriptors opened earlier are the sensor's to follow by fd.
//!
//! The channel is the interface: `tokio::sync::mpsc::Sender<WatchChange>`.
//! The sender blocks (awaits) when the channel is full, so no change is
//! dropped; the watcher stops when the receiver is dropped.

use std::collections::{BTreeMap, HashMap};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use inotify::{Inotify, WatchMask};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::kubelet::{PodMeta, TokenFile, pods_from_tokens, scan};
use super::{Error, FileId};
use crate::identity::IdentityCache;

/// A change to the set of token files to watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchChange {
    /// A token file appeared: watch this inode.
    Add(FileId),
    /// A token file is gone from disk: stop watching this inode.
    Remove(FileId),
}

/// A watched file: a [`TokenFile`] by another name, for the sensor side.
pub type WatchedFile = TokenFile;

#[derive(Debug, Default)]
struct State {
    files: HashMap<FileId, TokenFile>,
    pods: BTreeMap<String, PodMeta>,
}

/// Watches the kubelet's token volumes.
#[derive(Debug)]
pub struct TokenWatcher {
    root: PathBuf,
    cache: Arc<IdentityCache>,
    debounce: Duration,
    resync: Duration,
}

/// A running watcher: its current view, and the task.
#[derive(Debug)]
pub struct WatchHandle {
    state: Arc<RwLock<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl WatchHandle {
    /// The token files watched now (current and older ones still on disk).
    #[must_use]
    pub fn files(&self) -> Vec<TokenFile> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let mut files: Vec<TokenFile> = state.files.values().cloned().collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files
    }

    /// The token file with this id, if watched.
    #[must_use]
    pub fn file(&self, id: FileId) -> Option<TokenFile> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        state.files.get(&id).cloned()
    }

    /// Pod names and namespaces, from the pods' bound tokens, by pod UID.
    #[must_use]
    pub fn pods(&self) -> BTreeMap<String, PodMeta> {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .pods
            .clone()
    }

    /// Whether the task has ended (receiver dropped, or inotify failed).
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the watcher.
    pub fn abort(&self) {
        self.task.abort();
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const DIR_EVENTS: WatchMask = WatchMask::CREATE
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::ONLYDIR);

impl TokenWatcher {
    /// A watcher of `kubelet_root`, loading identities through `cache`.
    #[must_use]
    pub fn new(kubelet_root: impl Into<PathBuf>, cache: Arc<IdentityCache>) -> Self {
        Self {
            root: kubelet_root.into(),
            cache,
            debounce: Duration::from_millis(50),
            resync: Duration::from_secs(30),
        }
    }

    /// Sets the period of the full rescan that covers lost events.
    #[must_use]
    pub fn with_resync(mut self, every: Duration) -> Self {
        self.resync = every;
        self
    }

    /// Scans once, then watches in a tokio task, sending changes on `tx`:
    /// first an `Add` for every file found, then the changes as they come.
    /// Must be called inside a tokio runtime with I/O enabled.
    ///
    /// # Errors
    /// [`Error::InitInotify`], [`Error::AddWatch`] when the kubelet root
    /// cannot be watched, [`Error::ReadKubeletDir`] from the first scan.
    pub fn spawn(self, tx: mpsc::Sender<WatchChange>) -> Result<WatchHandle, Error> {
        let inotify = Inotify::init().map_err(|source| Error::InitInotify { source })?;
        add_watches(&inotify, &self.root)?;
        let first = scan(&self.root, &self.cache)?;
        let state = Arc::new(RwLock::new(State::default()));
        let initial = apply(&state, &self.cache, first);
        // SAFETY: `Inotify` owns its descriptor, closes it only on drop and
        // always returns the same one from `as_raw_fd`; the `AsyncFd` owns the
        // `Inotify` for its whole life.
        let fd = unsafe { AsyncFd::register(inotify) }.map_err(|e| Error::InitInotify {
            source: e.into_parts().1,
        })?;
        let task_state = Arc::clone(&state);
        let task = tokio::spawn(async move {
            if !send_all(&tx, initial).await {
                return;
            }
            self.run(fd, task_state, tx).await;
        });
        Ok(WatchHandle { state, task })
    }

    async fn run(
        self,
        mut fd: AsyncFd<Inotify>,
        state: Arc<RwLock<State>>,
        tx: mpsc::Sender<WatchChange>,
    ) {
        let mut buffer = [0_u8; 8192];
        loop {
            tokio::select! {
                () = tx.closed() => return,
                ready = fd.readable_mut() => {
                    let mut guard = match ready {
                        Ok(guard) => guard,
                        Err(err) => {
                            tracing::error!(error = %err, "inotify failed; token watcher stops");
                            return;
                        }
                    };
                    match guard.get_inner_mut().read_events(&mut buffer) {
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            guard.clear_ready();
                            continue;
                        }
                        Err(err) => {
                            tracing::error!(error = %err, "reading inotify events failed; token watcher stops");
                            return;
                        }
                    }
                }
                () = tokio::time::sleep(self.resync) => {}
            }
            // Let the writer finish its burst (mkdir, write, symlink, rename,
            // delete) and read what it queued meanwhile.
            tokio::time::sleep(self.debounce).await;
            drain(&mut fd, &mut buffer);
            if let Err(err) = add_watches(fd.get_ref(), &self.root) {
                tracing::warn!(error = %crate::error::error_chain(&err), "cannot watch the kubelet root");
            }
            let found = match scan(&self.root, &self.cache) {
                Ok(found) => found,
                Err(err) => {
                    tracing::warn!(error = %crate::error::error_chain(&err), "kubelet rescan failed");
                    continue;
                }
            };
            let changes = apply(&state, &self.cache, found);
            if !send_all(&tx, changes).await {
                return;
            }
        }
    }
}

/// Reads and discards every queued event (the rescan looks at the tree
/// itself), leaving the fd ready to wait again.
fn drain(fd: &mut AsyncFd<Inotify>, buffer: &mut [u8]) {
    loop {
        match fd.get_mut().read_events(buffer) {
            Ok(mut events) => {
                if events.next().is_none() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

async fn send_all(tx: &mpsc::Sender<WatchChange>, changes: Vec<WatchChange>) -> bool {
    for change in changes {
        tracing::debug!(?change, "token file set changed");
        if tx.send(change).await.is_err() {
            return false;
        }
    }
    true
}

/// Replaces the state with a new scan; returns the adds, then the removes.
fn apply(state: &RwLock<State>, cache: &IdentityCache, found: Vec<TokenFile>) -> Vec<WatchChange> {
    let pods = pods_from_tokens(&found);
    let new: HashMap<FileId, TokenFile> = found.into_iter().map(|t| (t.file, t)).collect();
    let mut state = state.write().unwrap_or_else(PoisonError::into_inner);
    let mut changes: Vec<WatchChange> = new
        .keys()
        .filter(|id| !state.files.contains_key(id))
        .map(|&id| WatchChange::Add(id))
        .collect();
    for &id in state.files.keys() {
        if !new.contains_key(&id) {
            cache.forget(id);
            changes.push(WatchChange::Remove(id));
        }
    }
    changes.sort_by_key(|c| match *c {
        WatchChange::Add(id) => (0, id),
        WatchChange::Remove(id) => (1, id),
    });
    state.files = new;
    // Keep what we knew of pods whose tokens are between rotations.
    for (uid, meta) in pods {
        state.pods.insert(uid, meta);
    }
    let live: std::collections::HashSet<String> =
        state.files.values().map(|t| t.pod_uid.clone()).collect();
    state.pods.retain(|uid, _| live.contains(uid));
    changes
}

/// Watches the kubelet root (or its `pods` dir) and every directory on the
/// way down to the token volumes. Adding an existing watch is a no-op.
fn add_watches(inotify: &Inotify, root: &Path) -> Result<(), Error> {
    let add = |path: &Path| inotify.watches().add(path, DIR_EVENTS);
    let pods = root.join("pods");
    if let Err(source) = add(&pods) {
        if source.kind() != ErrorKind::NotFound {
            return Err(Error::AddWatch { path: pods, source });
        }
        // No pods dir yet: watch the root for its creation.
        return add(root).map(drop).map_err(|source| Error::AddWatch {
            path: root.to_owned(),
            source,
        });
    }
    // The root too, so that a recreated `pods` dir is noticed.
    let _ = add(root);
    for pod in subdirs(&pods) {
        let _ = add(&pod);
        let volumes = pod.join("volumes");
        let _ = add(&volumes);
        for plugin in ["kubernetes.io~projected", "kubernetes.io~secret"] {
            let plugin_dir = volumes.join(plugin);
            if add(&plugin_dir).is_ok() {
                for volume in subdirs(&plugin_dir) {
                    let _ = add(&volume);
                }
            }
        }
    }
    Ok(())
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}
