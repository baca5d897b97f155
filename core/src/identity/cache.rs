//! One parse per token file: [`IdentityCache`] keys results by the file's
//! (dev, ino) and remembers the mtime it parsed.
//!
//! The kubelet's atomic writer never rewrites a token file in place: a
//! rotation writes a new file (a new inode) in a new timestamp directory.
//! So the hot path, [`IdentityCache::get`] by [`FileId`] (what a sensor
//! event carries), does no I/O at all. [`IdentityCache::load`] by path
//! stats the open file and re-parses only when (dev, ino, mtime) changed,
//! which also covers files edited in place by anything else.

use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use rustc_hash::FxHashMap;
use secrecy::SecretString;

use super::jwt::MAX_TOKEN_BYTES;
use super::{Error, Identity, KeySet};

/// A file's modification time, to the nanosecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mtime {
    /// Seconds since the epoch.
    pub secs: i64,
    /// Nanoseconds within the second.
    pub nanos: i64,
}

impl Mtime {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            secs: meta.mtime(),
            nanos: meta.mtime_nsec(),
        }
    }
}

struct Entry {
    mtime: Mtime,
    identity: Arc<Identity>,
}

/// Parsed identities of token files, keyed by (dev, ino, mtime).
pub struct IdentityCache {
    keys: Arc<KeySet>,
    entries: RwLock<FxHashMap<FileId, Entry>>,
    parses: AtomicU64,
}

impl std::fmt::Debug for IdentityCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityCache")
            .field("keys", &self.keys.len())
            .field("entries", &self.len())
            .field("parses", &self.parse_count())
            .finish()
    }
}

impl IdentityCache {
    /// An empty cache verifying with `keys` (empty: signatures not checked).
    #[must_use]
    pub fn new(keys: KeySet) -> Self {
        Self {
            keys: Arc::new(keys),
            entries: RwLock::new(FxHashMap::default()),
            parses: AtomicU64::new(0),
        }
    }

    /// The verification keys.
    #[must_use]
    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// The identity last parsed for `file`, without any I/O.
    #[must_use]
    pub fn get(&self, file: FileId) -> Option<Arc<Identity>> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries.get(&file).map(|e| Arc::clone(&e.identity))
    }

    /// The identity of the token file at `path` (symlinks followed), parsed
    /// only if its (dev, ino, mtime) is not cached yet. Returns the file's
    /// id with it.
    ///
    /// # Errors
    /// [`Error::ReadTokenFile`], [`Error::StatTokenFile`], and the parse
    /// errors of [`Identity::from_token`] (not cached: a file that is not a
    /// token is read again next time).
    pub fn load(&self, path: &Path) -> Result<(FileId, Arc<Identity>), Error> {
        let read_err = |source| Error::ReadTokenFile {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let meta = file.metadata().map_err(|source| Error::StatTokenFile {
            path: path.to_owned(),
            source,
        })?;
        let id = FileId::of(&meta);
        let mtime = Mtime::of(&meta);
        {
            let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = entries.get(&id).filter(|e| e.mtime == mtime) {
                return Ok((id, Arc::clone(&entry.identity)));
            }
        }
        let limit = u64::try_from(MAX_TOKEN_BYTES).unwrap_or(u64::MAX) + 1;
        let mut text = String::new();
        file.take(limit)
            .read_to_string(&mut text)
            .map_err(|source| {
                if source.kind() == std::io::ErrorKind::InvalidData {
                    Error::DecodeUtf8 { offset: text.len() }
                } else {
                    read_err(source)
                }
            })?;
        let token = SecretString::from(text);
        let identity = Arc::new(Identity::from_token(&token, &self.keys)?);
        self.parses.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        entries.insert(
            id,
            Entry {
                mtime,
                identity: Arc::clone(&identity),
            },
        );
        Ok((id, identity))
    }

    /// Drops the entry of a file that is gone. Returns whether there was one.
    pub fn forget(&self, file: FileId) -> bool {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        entries.remove(&file).is_some()
    }

    /// Number of cached files.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether nothing is cached.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many tokens were parsed since the cache was made (cache misses).
    #[must_use]
    pub fn parse_count(&self) -> u64 {
        self.parses.load(Ordering::Relaxed)
    }
}

/// A file's identity as userspace `stat` gives it: `st_dev` and `st_ino`.
///
/// The sensor converts `dev` to the kernel's encoding itself (userspace
/// `st_dev` is `new_encode_dev`'d; the kernel's `s_dev` is not).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct FileId {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

impl FileId {
    /// The id of a file from its metadata.
    #[must_use]
    pub fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

impl std::fmt::Display for FileId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.dev, self.ino)
    }
}
