//! The writing side: sequence numbers, the hash chain, batching, flushing,
//! and picking the chain up again after a restart.
//!
//! [`Trail::append`] serialises and hashes the record and adds its line to
//! the open block and its seq to the unit's posting lists, all in memory.
//! Every [`BATCH_RECORDS`] records the unit is *sealed* and handed to the
//! trail's applier thread, which compresses its blocks and applies it to
//! the tree as one atomic batch (blocks, posting lists, unit, chain head),
//! in memory and not yet durable. At most [`QUEUE_UNITS`] sealed units
//! wait for the applier; beyond that `append` waits for it, so memory stays
//! bounded. [`Trail::flush`] seals the rest, waits until the applier has
//! applied everything sealed before it, and fsyncs. Head and records
//! therefore always agree on disk.
//!
//! When the applier cannot write a unit, that unit and every unit sealed
//! after it (they chain off its records) are dropped, and the next
//! `append` or `flush` returns the error and continues the chain from the
//! last record written, so the chain on disk never has a hole.

use std::fmt::Write as _;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::index::{self, ANCHOR_KEY, HEAD_KEY};
use super::record::{self, GENESIS_HASH};
use super::{Trail, TrailError};
use crate::correlate::TrailEntry;
use crate::store;

/// Records buffered by `append` before the unit is sealed and applied.
pub const BATCH_RECORDS: usize = 1024;

/// Sealed units that may wait for the applier before `append` waits too
/// (each is about `BATCH_RECORDS` records of uncompressed lines).
pub const QUEUE_UNITS: usize = 8;

/// A point in the chain: a record's seq and hash, and the bytes written up
/// to and including it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainPoint {
    /// Sequence number.
    pub seq: u64,
    /// That record's hash.
    pub hash: String,
    /// Bytes (keys, values, index keys) appended since the trail began.
    pub appended_bytes: u64,
}

/// Where the retained chain starts: the last record retention deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// Seq of the last deleted record (the first retained one is `seq + 1`).
    pub seq: u64,
    /// Its hash: the first retained record's `prev_hash`.
    pub hash: String,
    /// Records deleted by retention so far.
    pub pruned_records: u64,
    /// Bytes deleted by retention so far.
    pub pruned_bytes: u64,
}

/// State of the single writer (behind the trail's writer lock).
#[derive(Debug)]
pub(crate) struct Writer {
    /// Seq the next append gets.
    next_seq: u64,
    /// Hash of the last appended record (the next `prev_hash`).
    last_hash: String,
    /// The unit being built.
    unit: PendingUnit,
    /// Bumped each time a failed write rewinds the chain; units sealed
    /// before carry the old value and are dropped by the applier.
    generation: u64,
    /// Hands sealed units to the applier thread.
    jobs: SyncSender<Job>,
    /// Scratch: the entry's JSON, the append time, posting keys.
    json: Vec<u8>,
    time: String,
    scratch: Vec<u8>,
}

/// Records appended but not yet sealed.
#[derive(Debug, Default)]
struct PendingUnit {
    /// Records in the unit.
    records: usize,
    first_seq: u64,
    min_time: u64,
    max_time: u64,
    /// Closed blocks: first seq and lines (compressed by the applier).
    blocks: Vec<(u64, Vec<u8>)>,
    /// The open block's lines, uncompressed, and its first seq.
    block: Vec<u8>,
    block_first: u64,
    /// Posting lists: value prefix -> seqs (u64 BE each).
    postings: rustc_hash::FxHashMap<Vec<u8>, Vec<u8>>,
}

/// A unit ready to be applied.
#[derive(Debug)]
struct Sealed {
    generation: u64,
    unit: PendingUnit,
    last_seq: u64,
    last_hash: String,
}

/// Work for the applier thread, done in order.
#[derive(Debug)]
enum Job {
    Apply(Sealed),
    /// Answered once every job sent before it is done.
    Barrier(SyncSender<()>),
    /// The last job: the trail is being dropped.
    Stop,
}

/// What the applier has written, shared with the trail's handles.
#[derive(Debug)]
pub(crate) struct Applied {
    /// The last record applied to the tree.
    point: ChainPoint,
    /// A write that failed, not yet reported by `append` or `flush`.
    failure: Option<TrailError>,
    /// Units of lower generations chain off lost records: dropped.
    accept_from: u64,
}

impl Applied {
    /// The last record applied to the tree.
    pub(crate) fn point(&self) -> &ChainPoint {
        &self.point
    }
}

impl Writer {
    /// The writer continuing after `last` (seq 0 with [`GENESIS_HASH`] for a
    /// new trail), with its applier thread writing to `tree`.
    pub(crate) fn start(last: ChainPoint, tree: sled::Tree) -> Result<Started, TrailError> {
        let (jobs, queue) = sync_channel(QUEUE_UNITS);
        let applied = Arc::new(Mutex::new(Applied {
            point: last.clone(),
            failure: None,
            accept_from: 0,
        }));
        let shared = Arc::clone(&applied);
        let thread = std::thread::Builder::new()
            .name("trail-apply".into())
            .spawn(move || run_applier(&tree, &queue, &shared))
            .map_err(|source| TrailError::StartWriter { source })?;
        Ok(Started {
            writer: Self {
                next_seq: last.seq + 1,
                last_hash: last.hash,
                unit: PendingUnit::default(),
                generation: 0,
                jobs,
                json: Vec::new(),
                time: String::new(),
                scratch: Vec::new(),
            },
            applied,
            thread,
        })
    }

    /// Stops the applier after the jobs already sent.
    pub(crate) fn stop(&self) {
        let _ = self.jobs.send(Job::Stop);
    }
}

/// A writer and its applier thread.
pub(crate) struct Started {
    pub(crate) writer: Writer,
    pub(crate) applied: Arc<Mutex<Applied>>,
    pub(crate) thread: std::thread::JoinHandle<()>,
}

fn lock_applied(applied: &Mutex<Applied>) -> MutexGuard<'_, Applied> {
    // Every update of `Applied` is a plain assignment: consistent even
    // behind a poisoned lock.
    applied.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The applier thread: applies sealed units in order until every handle
/// of the trail is gone.
fn run_applier(tree: &sled::Tree, queue: &Receiver<Job>, applied: &Mutex<Applied>) {
    for job in queue {
        match job {
            Job::Barrier(done) => {
                let _ = done.send(());
            }
            Job::Stop => return,
            Job::Apply(sealed) => {
                let appended = {
                    let state = lock_applied(applied);
                    if sealed.generation < state.accept_from {
                        continue;
                    }
                    state.point.appended_bytes
                };
                let generation = sealed.generation;
                let result = apply_unit(tree, sealed, appended);
                let mut state = lock_applied(applied);
                match result {
                    Ok(head) => state.point = head,
                    Err(err) => {
                        state.failure = Some(err);
                        state.accept_from = generation + 1;
                    }
                }
            }
        }
    }
}

/// Compresses a sealed unit's blocks and applies it (and the new head) to
/// the tree as one batch; returns the new head.
fn apply_unit(tree: &sled::Tree, sealed: Sealed, appended: u64) -> Result<ChainPoint, TrailError> {
    let Sealed {
        unit: u,
        last_seq,
        last_hash,
        ..
    } = sealed;
    let mut batch = sled::Batch::default();
    let mut bytes = 0usize;
    for (first, lines) in &u.blocks {
        let value = record::encode_block(lines);
        bytes += 9 + value.len();
        batch.insert(
            index::seq_key(index::BLOCK_PREFIX, *first).as_slice(),
            value,
        );
    }
    let unit_suffix = u.first_seq.to_be_bytes();
    for (mut key, seqs) in u.postings {
        key.extend_from_slice(&unit_suffix);
        bytes += key.len() + seqs.len();
        batch.insert(key, seqs);
    }
    let mut unit = index::Unit {
        first_seq: u.first_seq,
        last_seq,
        min_time: u.min_time,
        max_time: u.max_time,
        bytes: 0,
    };
    // The unit's own key and value count too (the value's length does
    // not depend on the figure much; 128 bytes stands for it).
    unit.bytes = u64::try_from(bytes + 9 + 128).unwrap_or(u64::MAX);
    let head = ChainPoint {
        seq: last_seq,
        hash: last_hash,
        appended_bytes: appended.saturating_add(unit.bytes),
    };
    batch.insert(
        index::seq_key(index::UNIT_PREFIX, u.first_seq).as_slice(),
        encode_meta(&unit)?,
    );
    batch.insert(HEAD_KEY, encode_meta(&head)?);
    tree.apply_batch(batch)
        .map_err(|source| TrailError::WriteTrail { source })?;
    Ok(head)
}

/// Reads a metadata value.
pub(crate) fn read_meta<T: serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    key: &'static [u8],
    name: &'static str,
) -> Result<Option<T>, TrailError> {
    let Some(v) = tree
        .get(key)
        .map_err(|source| TrailError::ReadTrail { source })?
    else {
        return Ok(None);
    };
    store::decode(&v)
        .map(Some)
        .map_err(|source| TrailError::DecodeMeta { name, source })
}

/// Where appends continue after opening: the highest of the last record,
/// the head and the anchor. The head wins over a lower last record, so
/// records deleted from the tail stay visible to `verify` as missing.
pub(crate) fn load_tail(tree: &sled::Tree) -> Result<ChainPoint, TrailError> {
    let head: Option<ChainPoint> = read_meta(tree, HEAD_KEY, "head")?;
    let anchor: Option<Anchor> = read_meta(tree, ANCHOR_KEY, "anchor")?;
    let last = tree
        .scan_prefix([index::BLOCK_PREFIX])
        .next_back()
        .transpose()
        .map_err(|source| TrailError::ReadTrail { source })?;
    let bytes = head.as_ref().map_or(0, |h| h.appended_bytes);
    let mut best = ChainPoint {
        seq: 0,
        hash: GENESIS_HASH.to_owned(),
        appended_bytes: bytes,
    };
    if let Some(a) = anchor
        && a.seq > best.seq
    {
        best.seq = a.seq;
        best.hash = a.hash;
    }
    if let Some((key, value)) = last {
        let first = index::key_seq(index::BLOCK_PREFIX, &key).unwrap_or(0);
        let body = record::block_body(first, &value)?;
        let n = record::lines(&body).count();
        let line = record::lines(&body).last().unwrap_or_default();
        let seq = first.saturating_add(u64::try_from(n).unwrap_or(1).saturating_sub(1));
        let d = record::decode_line(seq, line)?;
        if d.record.seq >= best.seq {
            best.seq = d.record.seq;
            best.hash = d.record.hash;
        }
    }
    if let Some(h) = head
        && h.seq > best.seq
    {
        tracing::warn!(
            head = h.seq,
            last = best.seq,
            "trail: records after the last one found are missing; continuing after the head"
        );
        best.seq = h.seq;
        best.hash = h.hash;
    }
    Ok(best)
}

/// Encodes trail metadata with the store's versioned encoding.
pub(crate) fn encode_meta<T: Serialize>(value: &T) -> Result<Vec<u8>, TrailError> {
    store::encode(value).map_err(|source| TrailError::EncodeMeta { source })
}

impl Trail {
    pub(crate) fn writer(&self) -> MutexGuard<'_, Writer> {
        // Append mutates the writer only after everything that can fail or
        // panic, so the state behind a poisoned lock is still consistent.
        self.inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// What the applier has written.
    pub(crate) fn applied(&self) -> MutexGuard<'_, Applied> {
        lock_applied(&self.inner.applied)
    }

    /// Reports a write the applier could not do, once: rewinds the chain
    /// to the last record written and drops the unit being built (it
    /// chains off lost records).
    fn take_failure(&self, w: &mut Writer) -> Result<(), TrailError> {
        let mut state = self.applied();
        let Some(failure) = state.failure.take() else {
            return Ok(());
        };
        w.next_seq = state.point.seq + 1;
        w.last_hash.clone_from(&state.point.hash);
        w.unit = PendingUnit::default();
        w.generation = state.accept_from;
        Err(failure)
    }

    /// Hands the unit being built to the applier.
    fn seal(w: &mut Writer) -> Result<(), TrailError> {
        if w.unit.records == 0 {
            return Ok(());
        }
        let mut unit = std::mem::take(&mut w.unit);
        if !unit.block.is_empty() {
            unit.blocks
                .push((unit.block_first, std::mem::take(&mut unit.block)));
        }
        let sealed = Sealed {
            generation: w.generation,
            unit,
            last_seq: w.next_seq - 1,
            last_hash: w.last_hash.clone(),
        };
        w.jobs
            .send(Job::Apply(sealed))
            .map_err(|_| TrailError::StoppedWriter)
    }

    /// Appends an entry and returns its seq.
    ///
    /// Cheap: serialises and hashes the entry and adds it to a buffer; every
    /// [`BATCH_RECORDS`] records the buffer is handed to the applier thread,
    /// which writes it to the tree (still not durable). When
    /// [`QUEUE_UNITS`] buffers are already waiting for it, this waits. The
    /// record is durable once [`Trail::flush`] has returned a seq at least
    /// as high.
    ///
    /// # Errors
    /// [`TrailError::EncodeEntry`]; [`TrailError::WriteTrail`] when writing
    /// earlier records failed (those records are dropped, the chain
    /// continues from the last record written, and this entry is not
    /// appended); [`TrailError::StoppedWriter`].
    pub fn append(&self, entry: &TrailEntry) -> Result<u64, TrailError> {
        let mut guard = self.writer();
        let w = &mut *guard;
        self.take_failure(w)?;
        w.json.clear();
        serde_json::to_writer(&mut w.json, entry)
            .map_err(|source| TrailError::EncodeEntry { source })?;
        let now = SystemTime::now();
        let seq = w.next_seq;
        let nanos = store::unix_nanos(now);
        let time = humantime::format_rfc3339_nanos(now);
        w.time.clear();
        let _ = write!(w.time, "{time}");
        let hash = record::compute_hash(seq, nanos, &w.time, &w.last_hash, &w.json);
        let u = &mut w.unit;
        if u.records == 0 {
            u.first_seq = seq;
            u.min_time = nanos;
            u.max_time = nanos;
        }
        u.min_time = u.min_time.min(nanos);
        u.max_time = u.max_time.max(nanos);
        let head = record::LineHead {
            seq,
            time: &w.time,
            time_unix_nanos: nanos,
            prev_hash: &w.last_hash,
            hash: &hash,
        };
        let line_len = head.line_len(w.json.len());
        if !u.block.is_empty() && u.block.len() + 1 + line_len > index::BLOCK_BYTES {
            let lines = std::mem::replace(&mut u.block, Vec::with_capacity(index::BLOCK_BYTES));
            u.blocks.push((u.block_first, lines));
        }
        if u.block.is_empty() {
            u.block.reserve(index::BLOCK_BYTES + line_len);
            u.block_first = seq;
        } else {
            u.block.push(b'\n');
        }
        head.write_line(&mut u.block, &w.json);
        let scratch = &mut w.scratch;
        index::for_each_value(entry, |kind, value| {
            index::write_value_prefix(scratch, kind, value);
            match u.postings.get_mut(scratch.as_slice()) {
                Some(seqs) => seqs.extend_from_slice(&seq.to_be_bytes()),
                None => {
                    u.postings
                        .insert(scratch.clone(), seq.to_be_bytes().to_vec());
                }
            }
        });
        u.records += 1;
        w.next_seq = seq + 1;
        w.last_hash = hash;
        if w.unit.records >= BATCH_RECORDS {
            Self::seal(w)?;
        }
        Ok(seq)
    }

    /// Writes buffered records and fsyncs; returns the highest durable seq
    /// (0 when there is none yet).
    ///
    /// Blocks until the applier has written everything appended before
    /// the call, and for the fsync: call it from a blocking task, not the
    /// event loop. Appends may continue meanwhile.
    ///
    /// # Errors
    /// [`TrailError::WriteTrail`], [`TrailError::FlushTrail`],
    /// [`TrailError::StoppedWriter`].
    pub fn flush(&self) -> Result<u64, TrailError> {
        self.flush_point().map(|_| self.durable_seq())
    }

    /// As [`Trail::flush`], returning the last record written (seq and
    /// hash; seq 0 and [`GENESIS_HASH`] for an empty trail), which is now
    /// durable: what a checkpoint may vouch for.
    ///
    /// # Errors
    /// As [`Trail::flush`].
    pub fn flush_point(&self) -> Result<ChainPoint, TrailError> {
        // Cleared first: a write after this point is flushed next time.
        self.inner
            .other_writes
            .store(false, std::sync::atomic::Ordering::Release);
        let (done, applied) = sync_channel(1);
        {
            let mut w = self.writer();
            self.take_failure(&mut w)?;
            Self::seal(&mut w)?;
            w.jobs
                .send(Job::Barrier(done))
                .map_err(|_| TrailError::StoppedWriter)?;
        }
        applied.recv().map_err(|_| TrailError::StoppedWriter)?;
        let written = {
            let mut w = self.writer();
            self.take_failure(&mut w)?;
            self.applied().point.clone()
        };
        self.inner
            .db
            .flush()
            .map_err(|source| TrailError::FlushTrail { source })?;
        self.inner
            .durable
            .fetch_max(written.seq, std::sync::atomic::Ordering::AcqRel);
        Ok(written)
    }

    /// Whether a [`Trail::flush`] now would make anything durable: records
    /// appended since the last flush, or another write to the database
    /// ([`Trail::note_db_write`]). A periodic flush skips the fsync, and
    /// the wake-ups of the threads it goes through, when it would not.
    #[must_use]
    pub fn unflushed(&self) -> bool {
        let last = self.writer().next_seq.saturating_sub(1);
        last > self.durable_seq()
            || self
                .inner
                .other_writes
                .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Says that something other than the trail (the agent's learned
    /// baseline) wrote to the trail's database, so that the next periodic
    /// flush makes it durable too.
    pub fn note_db_write(&self) {
        self.inner
            .other_writes
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// The highest seq made durable by a [`Trail::flush`] of this handle.
    #[must_use]
    pub fn durable_seq(&self) -> u64 {
        self.inner
            .durable
            .load(std::sync::atomic::Ordering::Acquire)
    }
}
