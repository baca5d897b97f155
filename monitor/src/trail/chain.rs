//! The writing side: sequence numbers, the hash chain, batching, flushing,
//! and picking the chain up again after a restart.
//!
//! [`Trail::append`] hashes the record, adds its line to the open block and
//! its seq to the unit's posting lists, all in memory; every
//! [`BATCH_RECORDS`] records the unit is applied to the tree as one atomic
//! batch (blocks, posting lists, unit, chain head), in memory and not yet
//! durable. [`Trail::flush`] applies the rest and fsyncs. Head and records
//! therefore always agree on disk.

use std::sync::{MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::index::{self, ANCHOR_KEY, HEAD_KEY};
use super::record::{self, GENESIS_HASH};
use super::{Trail, TrailError};
use crate::correlate::TrailEntry;
use crate::store;

/// Records buffered by `append` before the batch is applied to the tree.
pub const BATCH_RECORDS: usize = 1024;

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

/// State of the single writer.
#[derive(Debug)]
pub(crate) struct Writer {
    /// Seq the next append gets.
    next_seq: u64,
    /// Hash of the last appended record (the next `prev_hash`).
    last_hash: String,
    /// Bytes appended so far (cumulative).
    appended_bytes: u64,
    /// The unit being built.
    unit: PendingUnit,
    /// The last record applied to the tree.
    applied: ChainPoint,
    /// Scratch buffer for posting keys.
    scratch: Vec<u8>,
}

/// Records appended but not yet applied.
#[derive(Debug, Default)]
struct PendingUnit {
    /// Records in the unit.
    records: usize,
    first_seq: u64,
    min_time: u64,
    max_time: u64,
    /// Closed blocks: first seq and value.
    blocks: Vec<(u64, Vec<u8>)>,
    /// The open block's lines, uncompressed, and its first seq.
    block: Vec<u8>,
    block_first: u64,
    /// Posting lists: value prefix -> seqs (u64 BE each).
    postings: rustc_hash::FxHashMap<Vec<u8>, Vec<u8>>,
}

impl Writer {
    /// The writer continuing after `last` (seq 0 with [`GENESIS_HASH`] for a
    /// new trail).
    pub(crate) fn after(last: ChainPoint) -> Self {
        Self {
            next_seq: last.seq + 1,
            last_hash: last.hash.clone(),
            appended_bytes: last.appended_bytes,
            unit: PendingUnit::default(),
            applied: last,
            scratch: Vec::new(),
        }
    }

    /// The last record applied to the tree.
    pub(crate) fn applied(&self) -> &ChainPoint {
        &self.applied
    }
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

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
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

    /// Appends an entry and returns its seq.
    ///
    /// Cheap: serialises and hashes the entry and adds it to a buffer; every
    /// [`BATCH_RECORDS`] records the buffer is written to the tree (still not
    /// durable). The record is durable once [`Trail::flush`] has returned a
    /// seq at least as high.
    ///
    /// # Errors
    /// [`TrailError::EncodeEntry`]; [`TrailError::WriteTrail`] when writing a
    /// full buffer fails (the records of that buffer are dropped and the
    /// chain continues from the last record written).
    pub fn append(&self, entry: &TrailEntry) -> Result<u64, TrailError> {
        let entry_json =
            serde_json::to_vec(entry).map_err(|source| TrailError::EncodeEntry { source })?;
        let mut guard = self.writer();
        let w = &mut *guard;
        let now = SystemTime::now();
        let seq = w.next_seq;
        let nanos = unix_nanos(now);
        let time = humantime::format_rfc3339_nanos(now).to_string();
        let hash = record::compute_hash(seq, nanos, &time, &w.last_hash, &entry_json);
        let line = record::encode_line(seq, &time, nanos, &w.last_hash, &hash, &entry_json);
        let u = &mut w.unit;
        if u.records == 0 {
            u.first_seq = seq;
            u.min_time = nanos;
            u.max_time = nanos;
        }
        u.min_time = u.min_time.min(nanos);
        u.max_time = u.max_time.max(nanos);
        if !u.block.is_empty() && u.block.len() + 1 + line.len() > index::BLOCK_BYTES {
            u.blocks
                .push((u.block_first, record::encode_block(&u.block)));
            u.block.clear();
        }
        if u.block.is_empty() {
            u.block.reserve(index::BLOCK_BYTES + line.len());
            u.block_first = seq;
        } else {
            u.block.push(b'\n');
        }
        u.block.extend_from_slice(&line);
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
        if u.records >= BATCH_RECORDS {
            self.apply(w)?;
        }
        Ok(seq)
    }

    /// Applies the pending unit (and the new head) to the tree as one batch.
    fn apply(&self, w: &mut Writer) -> Result<(), TrailError> {
        if w.unit.records == 0 {
            return Ok(());
        }
        let mut u = std::mem::take(&mut w.unit);
        if !u.block.is_empty() {
            u.blocks
                .push((u.block_first, record::encode_block(&u.block)));
        }
        let mut batch = sled::Batch::default();
        let mut bytes = 0usize;
        for (first, value) in u.blocks {
            bytes += 9 + value.len();
            batch.insert(index::seq_key(index::BLOCK_PREFIX, first).as_slice(), value);
        }
        let unit_suffix = u.first_seq.to_be_bytes();
        for (mut key, seqs) in u.postings {
            key.extend_from_slice(&unit_suffix);
            bytes += key.len() + seqs.len();
            batch.insert(key, seqs);
        }
        let last_seq = w.next_seq - 1;
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
        let unit_value = encode_meta(&unit)?;
        batch.insert(
            index::seq_key(index::UNIT_PREFIX, u.first_seq).as_slice(),
            unit_value,
        );
        let appended = w.appended_bytes.saturating_add(unit.bytes);
        let head = ChainPoint {
            seq: last_seq,
            hash: w.last_hash.clone(),
            appended_bytes: appended,
        };
        batch.insert(HEAD_KEY, encode_meta(&head)?);
        if let Err(source) = self.inner.tree.apply_batch(batch) {
            // Drop the lost records from the chain so it stays contiguous.
            w.next_seq = w.applied.seq + 1;
            w.last_hash.clone_from(&w.applied.hash);
            return Err(TrailError::WriteTrail { source });
        }
        w.appended_bytes = appended;
        w.applied = head;
        Ok(())
    }

    /// Writes buffered records and fsyncs; returns the highest durable seq
    /// (0 when there is none yet).
    ///
    /// Blocks for the fsync: call it from a blocking task, not the event
    /// loop. Appends may continue meanwhile.
    ///
    /// # Errors
    /// [`TrailError::WriteTrail`], [`TrailError::FlushTrail`].
    pub fn flush(&self) -> Result<u64, TrailError> {
        let applied = {
            let mut w = self.writer();
            self.apply(&mut w)?;
            w.applied.seq
        };
        self.inner
            .db
            .flush()
            .map_err(|source| TrailError::FlushTrail { source })?;
        self.inner
            .durable
            .fetch_max(applied, std::sync::atomic::Ordering::AcqRel);
        Ok(self.durable_seq())
    }

    /// The highest seq made durable by a [`Trail::flush`] of this handle.
    #[must_use]
    pub fn durable_seq(&self) -> u64 {
        self.inner
            .durable
            .load(std::sync::atomic::Ordering::Acquire)
    }
}
