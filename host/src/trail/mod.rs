//! The audit trail: append-only, hash-chained, indexed records of what the
//! agent observed, in sled under the data directory.
//!
//! Each [`Record`] wraps one [`TrailEntry`] with a sequence number, the
//! wall-clock time of the append, the previous record's hash and its own
//! hash (SHA-256 over a canonical encoding, see [`record`]). The format,
//! the chain, retention and query semantics are documented for users in
//! `docs/trail.md`; the key layout is in [`index`].
//!
//! # API the agent uses
//!
//! ```no_run
//! # fn main() -> Result<(), tokenwatch_host::trail::TrailError> {
//! # let entry: tokenwatch_core::correlate::TrailEntry = unimplemented!();
//! use std::time::Duration;
//! use tokenwatch_host::trail::{Query, Trail};
//!
//! let trail = Trail::open(std::path::Path::new("/var/lib/tokenwatch"))?;
//! let seq = trail.append(&entry)?;          // cheap: hash + buffer
//! let durable = trail.flush()?;             // fsync; every seq <= durable survives a crash
//! assert!(durable >= seq);
//! for record in trail.query(&Query { subject: Some("system:serviceaccount:shop:web".into()), ..Query::default() })? {
//!     let record = record?;
//! }
//! let report = trail.verify()?;             // report.failure names the first bad record
//! trail.apply_retention(Some(Duration::from_secs(30 * 86_400)), Some(1 << 30))?;
//! trail.export(std::io::stdout().lock(), &Query::default())?;
//! # Ok(()) }
//! ```
//!
//! - [`Trail::open`] opens (creating) the store in a data dir;
//!   [`Trail::with_db`] shares a database the process already opened (sled
//!   locks the directory: one open per process).
//! - [`Trail::append`] returns the record's seq. Records are buffered and
//!   written to the tree by the trail's applier thread as one unit every [`chain::BATCH_RECORDS`]
//!   (packed into blocks, indexed by posting lists; see [`index`]); they are durable
//!   once [`Trail::flush`] (which fsyncs; call it from a blocking task, on
//!   a timer and at shutdown) has returned a seq at least as high.
//! - After a restart (or `kill -9`), appends continue the chain from the
//!   last record on disk.
//! - [`Trail::query`] and [`Trail::export`] see every record written to the
//!   tree; [`Trail::verify`] walks the chain; [`Trail::stats`];
//!   [`Trail::apply_retention`] deletes the oldest records by age and size,
//!   keeping an anchor so the rest still verifies.
//! - `Trail` is `Send + Sync` and cheap to clone (an `Arc`): one task
//!   appends, others may query, verify or prune concurrently.

pub mod chain;
pub use tokenwatch_core::trail::checkpoint;
pub mod checkpoint_key;
pub mod export;
pub mod index;
pub mod live;
pub mod query;
pub use tokenwatch_core::trail::record;
pub mod retention;
pub mod verify;
pub mod vouch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

pub use self::chain::{Anchor, BATCH_RECORDS, ChainPoint, QUEUE_UNITS};
pub use self::export::DataDirTrails;
pub use self::query::{Query, parse_time};
pub use self::record::{GENESIS_HASH, Record, TRAIL_SCHEMA_VERSION};
pub use self::retention::{RetentionReport, parse_size};
pub use self::verify::{Mismatch, Problem, VerifyReport};
use crate::correlate::{FindingKind, TrailEntry};
use crate::store::{self, StoreError, trees};

/// Errors of the trail.
#[derive(Debug, thiserror::Error)]
pub enum TrailError {
    /// The store could not be opened (or is locked by another process).
    #[error("cannot open the trail")]
    OpenStore {
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// A read-only command was pointed at a data directory that does not exist.
    #[error("no trail in {path}: the directory does not exist")]
    FindDataDir {
        /// The data directory given.
        path: PathBuf,
    },
    /// Reading the trail tree failed.
    #[error("cannot read the trail")]
    ReadTrail {
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// Writing to the trail tree failed.
    #[error("cannot write to the trail")]
    WriteTrail {
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// Flushing the trail to disk failed.
    #[error("cannot flush the trail to disk")]
    FlushTrail {
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// Measuring the store's size on disk failed.
    #[error("cannot measure the store's size on disk")]
    MeasureStore {
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// A stored record could not be read back.
    #[error(transparent)]
    Record(#[from] tokenwatch_core::trail::RecordError),
    /// The applier thread could not be started.
    #[error("cannot start the trail's writer thread")]
    StartWriter {
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The applier thread has stopped (it panicked): nothing more can be written.
    #[error("the trail's writer thread has stopped")]
    StoppedWriter,
    /// Trail metadata (head or anchor) could not be decoded.
    #[error("trail metadata {name:?} cannot be decoded")]
    DecodeMeta {
        /// Which metadata.
        name: &'static str,
        /// The decoding error.
        #[source]
        source: StoreError,
    },
    /// Trail metadata could not be encoded.
    #[error("cannot encode trail metadata")]
    EncodeMeta {
        /// The encoding error.
        #[source]
        source: StoreError,
    },
    /// An entry could not be serialised.
    #[error("cannot encode a trail entry")]
    EncodeEntry {
        /// serde's error.
        #[source]
        source: serde_json::Error,
    },
    /// Writing exported records failed.
    #[error("cannot write the export")]
    WriteExport {
        /// The writer's error.
        #[source]
        source: std::io::Error,
    },
    /// Reading an exported trail failed.
    #[error("cannot read the exported trail")]
    ReadExport {
        /// The reader's error.
        #[source]
        source: std::io::Error,
    },
    /// A time is neither RFC 3339, `now`, nor a duration.
    #[error(transparent)]
    ParseTime(#[from] crate::time::ParseTimeError),
    /// A size is not a number of bytes with an optional unit.
    #[error(
        "invalid size {input:?}: expected bytes, optionally with K, M, G, T, KiB, MiB, GiB or TiB"
    )]
    ParseSize {
        /// What was given.
        input: String,
    },
    /// The trail's origin could not be made.
    #[error("cannot make the trail's origin")]
    CreateOrigin(#[source] checkpoint::CheckpointError),
    /// A checkpoint could not be signed.
    #[error("cannot sign a checkpoint")]
    SignCheckpoint(#[source] checkpoint::CheckpointError),
    /// A finding kind that does not exist.
    #[error("unknown finding kind {input:?} (known: {known})")]
    ParseFinding {
        /// What was given.
        input: String,
        /// The kinds there are, comma-separated.
        known: String,
    },
}

impl From<StoreError> for TrailError {
    fn from(source: StoreError) -> Self {
        Self::OpenStore { source }
    }
}

/// The trail. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Trail {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    tree: sled::Tree,
    writer: Mutex<chain::Writer>,
    /// What the applier thread has written.
    applied: Arc<Mutex<chain::Applied>>,
    /// The applier thread, joined on drop so that the database is closed
    /// (and its lock released) when the last handle goes.
    applier: Option<std::thread::JoinHandle<()>>,
    /// Highest seq known durable.
    durable: AtomicU64,
    /// Something other than the trail wrote to the database since the last
    /// flush began ([`Trail::note_db_write`]).
    other_writes: std::sync::atomic::AtomicBool,
    /// Serialises retention with verify and other retention passes.
    maintenance: Mutex<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Sealed units are written first (they are not durable: only a
        // flush makes records durable, as the docs say).
        self.writer
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .stop();
        if let Some(thread) = self.applier.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for Trail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trail")
            .field("durable_seq", &self.durable_seq())
            .finish_non_exhaustive()
    }
}

/// What `trail stats` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrailStats {
    /// Records in the trail now.
    pub records: u64,
    /// First retained record: seq and time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first: Option<Bound>,
    /// Last record: seq and time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<Bound>,
    /// Records deleted by retention so far.
    pub pruned_records: u64,
    /// Bytes deleted by retention so far.
    pub pruned_bytes: u64,
    /// Bytes of the retained units (blocks, posting lists, unit keys, with
    /// their keys): what `max_bytes` retention compares.
    pub logical_bytes: u64,
    /// Bytes sled uses on disk (the whole database; space freed by
    /// retention is reclaimed by sled over time).
    pub disk_bytes: u64,
    /// Records with each finding kind (kinds with none are left out).
    pub findings: BTreeMap<String, u64>,
    /// The trail's origin (signed checkpoints name it), once an agent made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Verifier keys the agent signed this trail's checkpoints with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checkpoint_keys: Vec<String>,
}

/// A record's seq and time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bound {
    /// Sequence number.
    pub seq: u64,
    /// Append time, RFC 3339.
    pub time: String,
    /// Its hash.
    pub hash: String,
}

impl Trail {
    /// Opens (creating) the trail in `data_dir`.
    ///
    /// # Errors
    /// [`TrailError::OpenStore`] (including another process holding the
    /// directory), or reading the chain's tail fails.
    pub fn open(data_dir: &Path) -> Result<Self, TrailError> {
        Self::with_db(store::open(data_dir)?)
    }

    /// Opens the trail in `data_dir`, which must exist (read-only commands
    /// should not create an empty store where the user mistyped a path).
    ///
    /// # Errors
    /// [`TrailError::FindDataDir`], then as [`Trail::open`].
    pub fn open_existing(data_dir: &Path) -> Result<Self, TrailError> {
        if !data_dir.is_dir() {
            return Err(TrailError::FindDataDir {
                path: data_dir.to_owned(),
            });
        }
        Self::open(data_dir)
    }

    /// The trail in a database this process already opened.
    ///
    /// # Errors
    /// Opening the tree or reading the chain's tail fails.
    pub fn with_db(db: sled::Db) -> Result<Self, TrailError> {
        let tree = store::tree(&db, trees::TRAIL)?;
        let tail = chain::load_tail(&tree)?;
        let durable = AtomicU64::new(tail.seq);
        let chain::Started {
            writer,
            applied,
            thread,
        } = chain::Writer::start(tail, tree.clone())?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                tree,
                writer: Mutex::new(writer),
                applied,
                applier: Some(thread),
                durable,
                other_writes: std::sync::atomic::AtomicBool::new(false),
                maintenance: Mutex::new(()),
            }),
        })
    }

    /// The database, to share with other users of the store.
    #[must_use]
    pub fn db(&self) -> &sled::Db {
        &self.inner.db
    }

    pub(crate) fn tree(&self) -> &sled::Tree {
        &self.inner.tree
    }

    pub(crate) fn maintenance(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner
            .maintenance
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The retention anchor, if retention has deleted anything.
    ///
    /// # Errors
    /// Reading or decoding it fails.
    pub fn anchor(&self) -> Result<Option<Anchor>, TrailError> {
        chain::read_meta(self.tree(), index::ANCHOR_KEY, "anchor")
    }

    /// Counts and sizes.
    ///
    /// # Errors
    /// Reading the tree fails, or its first or last record does not decode.
    pub fn stats(&self) -> Result<TrailStats, TrailError> {
        let anchor = self.anchor()?.unwrap_or_default();
        let applied_bytes = self.applied().point().appended_bytes;
        let tree = self.tree();
        let read = |source| TrailError::ReadTrail { source };
        let mut records = 0u64;
        for kv in tree.scan_prefix([index::UNIT_PREFIX]) {
            let (_, v) = kv.map_err(read)?;
            let unit: index::Unit = store::decode(&v).map_err(|source| TrailError::DecodeMeta {
                name: "unit",
                source,
            })?;
            records += unit.last_seq.saturating_sub(unit.first_seq) + 1;
        }
        let bound = |kv: Option<Result<(sled::IVec, sled::IVec), sled::Error>>, last: bool| {
            kv.transpose().map_err(read)?.map_or(Ok(None), |(k, v)| {
                let first = index::key_seq(index::BLOCK_PREFIX, &k).unwrap_or(0);
                let body = record::block_body(first, &v)?;
                let n = record::lines(&body).count();
                let (seq, line) = if last {
                    let at = first.saturating_add(u64::try_from(n).unwrap_or(1).saturating_sub(1));
                    (at, record::lines(&body).last().unwrap_or_default())
                } else {
                    (first, record::lines(&body).next().unwrap_or_default())
                };
                let d = record::decode_line(seq, line)?;
                Ok::<_, TrailError>(Some(Bound {
                    seq: d.record.seq,
                    time: d.record.time,
                    hash: d.record.hash,
                }))
            })
        };
        let first = bound(tree.scan_prefix([index::BLOCK_PREFIX]).next(), false)?;
        let last = bound(tree.scan_prefix([index::BLOCK_PREFIX]).next_back(), true)?;
        let mut findings = BTreeMap::new();
        for kind in FindingKind::ALL {
            let prefix = index::value_prefix(index::IndexKind::Finding, kind.as_str());
            let mut n = 0u64;
            for kv in tree.scan_prefix(prefix) {
                let (_, v) = kv.map_err(read)?;
                n += index::posting_seqs(&v).count() as u64;
            }
            if n > 0 {
                findings.insert(kind.as_str().to_owned(), n);
            }
        }
        Ok(TrailStats {
            records,
            first,
            last,
            pruned_records: anchor.pruned_records,
            pruned_bytes: anchor.pruned_bytes,
            logical_bytes: applied_bytes.saturating_sub(anchor.pruned_bytes),
            disk_bytes: self
                .inner
                .db
                .size_on_disk()
                .map_err(|source| TrailError::MeasureStore { source })?,
            findings,
            origin: self.origin()?,
            checkpoint_keys: self.checkpoint_keys()?,
        })
    }
}

/// Parses a finding kind given on the command line.
///
/// # Errors
/// [`TrailError::ParseFinding`] listing the known kinds.
pub fn parse_finding(input: &str) -> Result<FindingKind, TrailError> {
    FindingKind::parse(input).ok_or_else(|| TrailError::ParseFinding {
        input: input.to_owned(),
        known: FindingKind::ALL.map(FindingKind::as_str).join(", "),
    })
}

/// The finding kinds of an entry, comma-separated, each once.
#[must_use]
pub fn finding_names(entry: &TrailEntry) -> String {
    let mut names: Vec<&str> = entry.findings.iter().map(|f| f.kind.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names.join(",")
}
