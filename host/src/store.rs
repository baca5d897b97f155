//! Embedded storage: the one place sled is opened.
//!
//! - [`open`] opens (creating) the database at a path; tests pass a temp dir.
//! - Tree names are the consts in [`trees`]; each user of the store owns its
//!   trees and documents its keys there.
//! - Values are [`encode`]d as one version byte followed by JSON, so a
//!   later format can be told apart and migrated; [`decode`] refuses
//!   versions it does not know.
//! - [`data_dir`] resolves the data directory: `--data-dir`, else
//!   `TOKENWATCH_DATA_DIR`, else `./tokenwatch-data` (clap's `env` handles
//!   the first two for commands; this is the same rule for library users).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Environment variable naming the data directory.
pub const DATA_DIR_ENV: &str = "TOKENWATCH_DATA_DIR";
/// Data directory used when none is given.
pub const DEFAULT_DATA_DIR: &str = "./tokenwatch-data";
/// sled's page cache. Its default (1 GiB) would let an agent's memory grow
/// far past what a DaemonSet should use; the trail's recent records and
/// indexes fit in far less.
pub const CACHE_BYTES: u64 = 32 * 1024 * 1024;
/// Version byte written in front of every value.
pub const ENCODING_VERSION: u8 = 1;

/// Tree names.
pub mod trees {
    /// RBAC snapshots. Key: [`super::time_key`] of the import time (unique:
    /// a colliding key is bumped by one nanosecond). Value: an encoded
    /// `rbac::snapshot_store::StoredSnapshot`.
    pub const RBAC_SNAPSHOTS: &str = "rbac/snapshots/v1";
    /// The audit trail (`crate::trail`): records, indexes and chain metadata
    /// in one tree, so that appending a batch and a retention pass are each
    /// one atomic sled batch. Keys: `r` + seq (u64 BE) for records, `i` +
    /// index kind + value for indexes, `m` + name for metadata; the layout
    /// is documented in `trail::index`.
    pub const TRAIL: &str = "trail/v1";
    /// The agent's learned baseline (`correlate::baseline`). Key: namespace,
    /// a NUL byte, workload. Value: an encoded
    /// `correlate::baseline::StoredWorkload`.
    pub const BASELINE: &str = "baseline/v1";
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled could not open the database.
    #[error("cannot open the data store at {path}")]
    OpenDatabase {
        /// Directory of the database.
        path: PathBuf,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// Another process (a running agent, or another command) holds the
    /// database's exclusive lock. sled's own error (an `Io` error about a
    /// failed flock) is deliberately not kept as the source: it adds nothing
    /// a user can act on.
    #[error(
        "data directory {path} is in use by another tokenwatch process (a running agent?); stop it or use another --data-dir"
    )]
    LockDatabase {
        /// Directory of the database.
        path: PathBuf,
    },
    /// A tree could not be opened.
    #[error("cannot open tree {tree}")]
    OpenTree {
        /// Tree name.
        tree: &'static str,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// Reading a record failed.
    #[error("cannot read from tree {tree}")]
    ReadRecord {
        /// Tree name.
        tree: &'static str,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// Writing a record failed.
    #[error("cannot write to tree {tree}")]
    WriteRecord {
        /// Tree name.
        tree: &'static str,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// A value could not be serialised.
    #[error("cannot encode a value")]
    EncodeValue {
        /// serde's error.
        #[source]
        source: serde_json::Error,
    },
    /// A stored value could not be deserialised.
    #[error("cannot decode a stored value")]
    DecodeValue {
        /// serde's error.
        #[source]
        source: serde_json::Error,
    },
    /// A stored value has an encoding version this build does not know.
    #[error(
        "stored value has encoding version {found}, this build reads version {ENCODING_VERSION}"
    )]
    DecodeVersion {
        /// The version byte found (0 for an empty value).
        found: u8,
    },
}

/// Opens (creating if needed) the database in directory `path`.
///
/// # Errors
/// [`StoreError::LockDatabase`] when another process holds the database's
/// lock (after waiting up to [`LOCK_WAIT`] for it), [`StoreError::OpenDatabase`]
/// when sled cannot open it otherwise.
pub fn open(path: &Path) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    let mut pause = Duration::from_millis(5);
    loop {
        match sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .open()
        {
            Ok(db) => return Ok(db),
            // sled reports a held flock as an `Io` error with this message.
            Err(sled::Error::Io(e)) if e.to_string().starts_with("could not acquire lock") => {
                if std::time::Instant::now() >= deadline {
                    return Err(StoreError::LockDatabase {
                        path: path.to_owned(),
                    });
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            Err(source) => {
                return Err(StoreError::OpenDatabase {
                    path: path.to_owned(),
                    source,
                });
            }
        }
    }
}

/// How long [`open`] waits for a held lock. sled releases its lock lazily
/// after the last handle is dropped (its I/O threads let go of the file a
/// moment later, spacejam/sled#1234), so a reopen right after a close, or
/// after a killed process, may briefly find it held.
pub const LOCK_WAIT: Duration = Duration::from_millis(500);

/// Opens a named tree.
///
/// # Errors
/// [`StoreError::OpenTree`].
pub fn tree(db: &sled::Db, name: &'static str) -> Result<sled::Tree, StoreError> {
    db.open_tree(name)
        .map_err(|source| StoreError::OpenTree { tree: name, source })
}

/// Encodes a value: version byte, then JSON.
///
/// # Errors
/// [`StoreError::EncodeValue`].
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![ENCODING_VERSION];
    serde_json::to_writer(&mut out, value).map_err(|source| StoreError::EncodeValue { source })?;
    Ok(out)
}

/// Decodes a value written by [`encode`].
///
/// # Errors
/// [`StoreError::DecodeVersion`] for an unknown version byte,
/// [`StoreError::DecodeValue`] for bad JSON.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&ENCODING_VERSION, rest)) => {
            serde_json::from_slice(rest).map_err(|source| StoreError::DecodeValue { source })
        }
        Some((&found, _)) => Err(StoreError::DecodeVersion { found }),
        None => Err(StoreError::DecodeVersion { found: 0 }),
    }
}

/// Nanoseconds since the Unix epoch (0 before it, `u64::MAX` past 2554):
/// how the store and the trail write wall-clock times.
#[must_use]
pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Big-endian nanoseconds since the Unix epoch: keys that sort by time.
#[must_use]
pub fn time_key(t: SystemTime) -> [u8; 8] {
    unix_nanos(t).to_be_bytes()
}

/// The time a [`time_key`] stands for.
#[must_use]
pub fn key_time(key: &[u8]) -> Option<SystemTime> {
    let bytes: [u8; 8] = key.try_into().ok()?;
    Some(UNIX_EPOCH + Duration::from_nanos(u64::from_be_bytes(bytes)))
}

/// The data directory: `explicit`, else `$TOKENWATCH_DATA_DIR`, else
/// `./tokenwatch-data`.
#[must_use]
pub fn data_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_owned();
    }
    match std::env::var_os(DATA_DIR_ENV) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(DEFAULT_DATA_DIR),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_versioned() {
        let bytes = encode(&vec!["a", "b"]).unwrap();
        assert_eq!(bytes[0], ENCODING_VERSION);
        let back: Vec<String> = decode(&bytes).unwrap();
        assert_eq!(back, ["a", "b"]);
        let mut future = bytes.clone();
        future[0] = 9;
        assert!(matches!(
            decode::<Vec<String>>(&future),
            Err(StoreError::DecodeVersion { found: 9 })
        ));
        assert!(matches!(
            decode::<Vec<String>>(&[]),
            Err(StoreError::DecodeVersion { found: 0 })
        ));
    }

    #[test]
    fn time_keys_round_trip_and_sort() {
        let t1 = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let t2 = t1 + Duration::from_nanos(1);
        assert_eq!(key_time(&time_key(t1)), Some(t1));
        assert!(time_key(t1) < time_key(t2));
    }

    #[test]
    fn open_creates_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let db = open(&path).unwrap();
            tree(&db, trees::RBAC_SNAPSHOTS)
                .unwrap()
                .insert(b"k", encode(&1).unwrap())
                .unwrap();
            db.flush().unwrap();
        }
        let db = open(&path).unwrap();
        let v = tree(&db, trees::RBAC_SNAPSHOTS)
            .unwrap()
            .get(b"k")
            .unwrap()
            .unwrap();
        assert_eq!(decode::<i32>(&v).unwrap(), 1);
    }

    #[test]
    fn second_open_reports_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let _held = open(dir.path()).unwrap();
        let err = open(dir.path()).unwrap_err();
        assert!(
            matches!(&err, StoreError::LockDatabase { path } if path == dir.path()),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("in use by another tokenwatch process")
        );
    }

    #[test]
    fn explicit_data_dir_wins() {
        assert_eq!(data_dir(Some(Path::new("/x"))), PathBuf::from("/x"));
    }
}
