//! Retention: deleting the oldest records, by age and by size.
//!
//! Records are only ever deleted from the front, and a whole unit (what one
//! write batch stored: up to [`super::chain::BATCH_RECORDS`] records) at a
//! time, so what remains is still one unbroken chain. Each unit goes in one
//! atomic batch (blocks, posting lists, unit key) that also moves the
//! anchor (`m anchor`: seq and hash of the last deleted record, and the
//! running totals of records and bytes deleted), from which `verify` starts.
//!
//! - By age: units whose newest record was appended before `now - max_age`
//!   go. The walk stops at the first unit with a newer record, so a record
//!   is never deleted while an older one (by seq) is kept.
//! - By size: while the retained units take more than `max_bytes` (blocks,
//!   posting lists and unit keys, as `stats` reports `logical_bytes`), the
//!   oldest go. sled gives the space back to the file system over time, not
//!   at once.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::chain::{self, Anchor};
use super::index::{self, ANCHOR_KEY};
use super::record;
use super::{Trail, TrailError};
use crate::store;

/// What a retention pass did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    /// Records this pass deleted.
    pub pruned_records: u64,
    /// Bytes this pass deleted.
    pub pruned_bytes: u64,
    /// The anchor after the pass (unchanged when nothing was deleted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anchor: Option<Anchor>,
}

/// Parses a size: bytes, or a number with `K`, `M`, `G`, `T` (powers of
/// 1000) or `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024).
///
/// # Errors
/// [`TrailError::ParseSize`].
pub fn parse_size(input: &str) -> Result<u64, TrailError> {
    let s = input.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let unit_factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" => 1_000,
        "M" | "MB" => 1_000_000,
        "G" | "GB" => 1_000_000_000,
        "T" | "TB" => 1_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => 0,
    };
    digits
        .parse::<u64>()
        .ok()
        .filter(|_| unit_factor > 0)
        .and_then(|n| n.checked_mul(unit_factor))
        .ok_or_else(|| TrailError::ParseSize {
            input: input.to_owned(),
        })
}

impl Trail {
    /// Deletes the oldest records: those older than `max_age`, then more
    /// until the rest take at most `max_bytes`. `None` disables a limit.
    ///
    /// # Errors
    /// Reading or writing the tree fails, or a record to delete does not
    /// decode (its index keys cannot be found then); the error names it.
    pub fn apply_retention(
        &self,
        max_age: Option<Duration>,
        max_bytes: Option<u64>,
    ) -> Result<RetentionReport, TrailError> {
        self.apply_retention_at(SystemTime::now(), max_age, max_bytes)
    }

    /// [`Trail::apply_retention`] as if the time were `now`.
    ///
    /// # Errors
    /// As [`Trail::apply_retention`].
    pub fn apply_retention_at(
        &self,
        now: SystemTime,
        max_age: Option<Duration>,
        max_bytes: Option<u64>,
    ) -> Result<RetentionReport, TrailError> {
        let _maintenance = self.maintenance();
        let cutoff = max_age.map(|age| now.checked_sub(age).map_or(0, store::unix_nanos));
        let tree = self.tree();
        let start = self.anchor()?;
        let mut anchor = start.clone().unwrap_or_default();
        let appended = self.applied().point().appended_bytes;
        let mut live = appended.saturating_sub(anchor.pruned_bytes);
        let mut report = RetentionReport {
            pruned_records: 0,
            pruned_bytes: 0,
            anchor: start,
        };
        let read = |source| TrailError::ReadTrail { source };
        loop {
            let Some(kv) = tree.scan_prefix([index::UNIT_PREFIX]).next() else {
                break;
            };
            let (unit_key, v) = kv.map_err(read)?;
            let unit: index::Unit = store::decode(&v).map_err(|source| TrailError::DecodeMeta {
                name: "unit",
                source,
            })?;
            let too_old = cutoff.is_some_and(|c| unit.max_time < c);
            let too_big = max_bytes.is_some_and(|m| live > m);
            if !(too_old || too_big) {
                break;
            }
            let mut batch = sled::Batch::default();
            let mut postings = std::collections::BTreeSet::new();
            let mut last: Option<(u64, String)> = None;
            let lo = index::seq_key(index::BLOCK_PREFIX, unit.first_seq);
            let hi = index::seq_key(index::BLOCK_PREFIX, unit.last_seq);
            for kv in tree.range(lo..=hi) {
                let (k, v) = kv.map_err(read)?;
                let first = index::key_seq(index::BLOCK_PREFIX, &k).unwrap_or(0);
                for (i, line) in record::lines(&record::block_body(first, &v)?).enumerate() {
                    let seq = first.saturating_add(i as u64);
                    let d = record::decode_line(seq, line)?;
                    index::for_each_value(&d.record.entry, |kind, value| {
                        let mut key = index::value_prefix(kind, value);
                        key.extend_from_slice(&unit.first_seq.to_be_bytes());
                        postings.insert(key);
                    });
                    last = Some((d.record.seq, d.record.hash));
                }
                batch.remove(k);
            }
            for key in postings {
                batch.remove(key);
            }
            batch.remove(unit_key);
            let (seq, hash) = last.unwrap_or((unit.last_seq, anchor.hash.clone()));
            anchor.seq = seq;
            anchor.hash = hash;
            let records = unit.last_seq.saturating_sub(unit.first_seq) + 1;
            anchor.pruned_records += records;
            anchor.pruned_bytes = anchor.pruned_bytes.saturating_add(unit.bytes);
            live = live.saturating_sub(unit.bytes);
            report.pruned_records += records;
            report.pruned_bytes = report.pruned_bytes.saturating_add(unit.bytes);
            batch.insert(ANCHOR_KEY, chain::encode_meta(&anchor)?);
            tree.apply_batch(batch)
                .map_err(|source| TrailError::WriteTrail { source })?;
            report.anchor = Some(anchor.clone());
        }
        if report.pruned_records > 0 {
            tracing::info!(
                records = report.pruned_records,
                bytes = report.pruned_bytes,
                anchor = anchor.seq,
                "trail retention"
            );
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("10M").unwrap(), 10_000_000);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("2 KiB").unwrap(), 2048);
        for bad in ["", "MiB", "1.5G", "-1", "1X", "99999999999999999999"] {
            assert!(
                matches!(parse_size(bad), Err(TrailError::ParseSize { .. })),
                "{bad}"
            );
        }
    }
}
