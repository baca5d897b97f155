//! The writing side: sequence numbers, the hash chain, batching, flushing,
//! and picking the chain up again after a restart.
//!
//! [`Trail::append`] hashes the record and adds it, with its index keys, to
//! an in-memory sled batch; every [`BATCH_RECORDS`] records the batch is
//! applied to the tree (in memory, not yet durable). [`Trail::flush`]
//! applies the rest and fsyncs. Each applied batch also rewrites the chain
//! head (`m head`), so head and records always agree on disk.

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
    /// Records and index keys not yet applied to the tree.
    pending: sled::Batch,
    /// Number of records in `pending`.
    pending_records: usize,
    /// The last record applied to the tree.
    applied: ChainPoint,
}

impl Writer {
    /// The writer continuing after `last` (seq 0 with [`GENESIS_HASH`] for a
    /// new trail).
    pub(crate) fn after(last: ChainPoint) -> Self {
        Self {
            next_seq: last.seq + 1,
            last_hash: last.hash.clone(),
            appended_bytes: last.appended_bytes,
            pending: sled::Batch::default(),
            pending_records: 0,
            applied: last,
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
        .scan_prefix([index::RECORD_PREFIX])
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
        let seq = index::key_seq(&key).unwrap_or(0);
        let d = record::decode_value(seq, &value)?;
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
        let mut w = self.writer();
        let now = SystemTime::now();
        let seq = w.next_seq;
        let nanos = unix_nanos(now);
        let time = humantime::format_rfc3339_nanos(now).to_string();
        let hash = record::compute_hash(seq, nanos, &time, &w.last_hash, &entry_json);
        let value = record::encode_value(seq, &time, nanos, &w.last_hash, &hash, &entry_json);
        let keys = index::entry_keys(entry, seq, nanos);
        let bytes = index::footprint(value.len(), &keys);
        w.pending.insert(index::record_key(seq).as_slice(), value);
        for k in keys {
            w.pending.insert(k, sled::IVec::default());
        }
        w.pending_records += 1;
        w.next_seq = seq + 1;
        w.last_hash = hash;
        w.appended_bytes = w.appended_bytes.saturating_add(bytes);
        if w.pending_records >= BATCH_RECORDS {
            self.apply(&mut w)?;
        }
        Ok(seq)
    }

    /// Applies the pending batch (and the new head) to the tree.
    fn apply(&self, w: &mut Writer) -> Result<(), TrailError> {
        if w.pending_records == 0 {
            return Ok(());
        }
        let head = ChainPoint {
            seq: w.next_seq - 1,
            hash: w.last_hash.clone(),
            appended_bytes: w.appended_bytes,
        };
        let mut batch = std::mem::take(&mut w.pending);
        w.pending_records = 0;
        let encoded = store::encode(&head).map_err(|source| TrailError::EncodeMeta { source })?;
        batch.insert(HEAD_KEY, encoded);
        if let Err(source) = self.inner.tree.apply_batch(batch) {
            // Drop the lost records from the chain so it stays contiguous.
            w.next_seq = w.applied.seq + 1;
            w.last_hash.clone_from(&w.applied.hash);
            w.appended_bytes = w.applied.appended_bytes;
            return Err(TrailError::WriteTrail { source });
        }
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
