//! Key layout of the trail tree, and the index values of an entry.
//!
//! Everything lives in the one tree [`crate::store::trees::TRAIL`]. Records
//! are written in *units*: what one apply of the append buffer writes (up to
//! [`super::chain::BATCH_RECORDS`] records, or what a flush found
//! buffered), as one atomic sled batch. A unit's records are packed into
//! blocks of consecutive records (about [`BLOCK_BYTES`] of lines each,
//! LZ4-compressed: sled writes a few large values many times faster than
//! many small ones), and its index entries are posting lists, one key per
//! indexed value per unit.
//!
//! | key | value |
//! | --- | --- |
//! | `b` first seq (u64 BE) | a block: version byte, then record lines ([`super::record`]) joined by `\n`, LZ4-compressed (version 2) or plain (version 1) |
//! | `u` first seq (u64 BE) | a unit ([`Unit`]): last seq, record count, time range, bytes |
//! | `i` kind len (u32 BE) value, first seq of the unit (u64 BE) | posting list: the unit's seqs with that value, u64 BE each |
//! | `m` `head` | [`super::chain::ChainPoint`]: last record written |
//! | `m` `anchor` | [`super::chain::Anchor`]: predecessor of the first retained record |
//! | `m` `origin` | the trail's origin (`tokenwatch/trail/<random hex>`), made once |
//! | `m` `ckeys` | verifier keys the agent signed checkpoints with (list of strings) |
//! | `c` seq (u64 BE) | the newest checkpoint of that seq ([`super::checkpoint::CheckpointLine`]); those at or before the anchor are deleted |
//!
//! Index kinds: `s` subject, `p` reader pod `namespace/name`, `u` reader
//! pod UID, `n` namespace (reader pod's and token's), `j` JTI, `f` finding
//! kind. The value is length-prefixed, so a prefix scan for one value never
//! matches another. The unit keys are the time index (each carries its
//! time range).

use serde::{Deserialize, Serialize};

use crate::correlate::TrailEntry;

/// Prefix of block keys.
pub(crate) const BLOCK_PREFIX: u8 = b'b';
/// Prefix of unit keys.
pub(crate) const UNIT_PREFIX: u8 = b'u';
/// Prefix of index keys.
pub(crate) const INDEX_PREFIX: u8 = b'i';
/// Key of the chain head.
pub(crate) const HEAD_KEY: &[u8] = b"mhead";
/// Key of the retention anchor.
pub(crate) const ANCHOR_KEY: &[u8] = b"manchor";
/// Key of the trail's origin (its random id, made when it was created).
pub(crate) const ORIGIN_KEY: &[u8] = b"morigin";
/// Key of the verifier keys the node's checkpoints were signed with.
pub(crate) const CHECKPOINT_KEYS_KEY: &[u8] = b"mckeys";
/// Prefix of the node's own copy of its checkpoints (by seq).
pub(crate) const CHECKPOINT_PREFIX: u8 = b'c';
/// A block is closed once its record lines (uncompressed) would pass this
/// many bytes. Compressed, it takes a few KiB, so a sled leaf (16 entries)
/// of blocks stays below the 128 KiB above which sled writes a node as a
/// separate blob file.
pub const BLOCK_BYTES: usize = 32 * 1024;

/// One unit: the records one atomic batch wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unit {
    /// First seq (also in the key).
    pub first_seq: u64,
    /// Last seq.
    pub last_seq: u64,
    /// Earliest append time in the unit, ns since the epoch.
    pub min_time: u64,
    /// Latest append time in the unit.
    pub max_time: u64,
    /// Bytes the unit takes: block, posting and unit keys and values.
    pub bytes: u64,
}

/// The indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IndexKind {
    /// Token subject.
    Subject,
    /// Reader pod as `namespace/name`.
    Pod,
    /// Reader pod UID.
    PodUid,
    /// Namespace of the reader pod or of the token.
    Namespace,
    /// Token JTI.
    Jti,
    /// Finding kind.
    Finding,
}

impl IndexKind {
    const fn byte(self) -> u8 {
        match self {
            Self::Subject => b's',
            Self::Pod => b'p',
            Self::PodUid => b'u',
            Self::Namespace => b'n',
            Self::Jti => b'j',
            Self::Finding => b'f',
        }
    }
}

/// A 9-byte key: prefix, then a seq.
#[must_use]
pub(crate) fn seq_key(prefix: u8, seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = prefix;
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The seq of a 9-byte key with `prefix`.
#[must_use]
pub(crate) fn key_seq(prefix: u8, key: &[u8]) -> Option<u64> {
    match key.split_first() {
        Some((&p, rest)) if p == prefix => Some(u64::from_be_bytes(rest.try_into().ok()?)),
        _ => None,
    }
}

/// Writes the prefix of every posting key for `value` in index `kind` into `out`.
pub(crate) fn write_value_prefix(out: &mut Vec<u8>, kind: IndexKind, value: &str) {
    let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
    out.clear();
    out.push(INDEX_PREFIX);
    out.push(kind.byte());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value.as_bytes());
}

/// The prefix of every posting key for `value` in index `kind`.
#[must_use]
pub(crate) fn value_prefix(kind: IndexKind, value: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + 4 + value.len() + 8);
    write_value_prefix(&mut k, kind, value);
    k
}

/// The seqs of a posting list.
pub(crate) fn posting_seqs(value: &[u8]) -> impl Iterator<Item = u64> + '_ {
    value
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default()))
}

/// Calls `f` with every (index, value) pair of an entry, each once.
pub(crate) fn for_each_value(entry: &TrailEntry, mut f: impl FnMut(IndexKind, &str)) {
    if let Some(s) = entry.subject() {
        f(IndexKind::Subject, s);
    }
    if let Some(pod) = entry.reader.as_ref().and_then(|r| r.pod.as_ref()) {
        if let (Some(ns), Some(name)) = (&pod.namespace, &pod.name) {
            f(IndexKind::Pod, &format!("{ns}/{name}"));
        }
        if !pod.uid.is_empty() {
            f(IndexKind::PodUid, &pod.uid);
        }
    }
    for ns in entry.namespaces() {
        f(IndexKind::Namespace, ns);
    }
    if let Some(j) = entry.jti() {
        f(IndexKind::Jti, j);
    }
    let mut seen: [bool; crate::correlate::FindingKind::ALL.len()] = Default::default();
    for finding in &entry.findings {
        if let Some(i) = crate::correlate::FindingKind::ALL
            .iter()
            .position(|k| *k == finding.kind)
            && !seen[i]
        {
            seen[i] = true;
            f(IndexKind::Finding, finding.kind.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_and_parse() {
        assert!(seq_key(BLOCK_PREFIX, 1) < seq_key(BLOCK_PREFIX, 2));
        assert!(seq_key(BLOCK_PREFIX, 255) < seq_key(BLOCK_PREFIX, 256));
        assert_eq!(key_seq(BLOCK_PREFIX, &seq_key(BLOCK_PREFIX, 42)), Some(42));
        assert_eq!(key_seq(BLOCK_PREFIX, &seq_key(UNIT_PREFIX, 42)), None);
        assert_eq!(key_seq(BLOCK_PREFIX, b"mhead"), None);
        assert_eq!(key_seq(BLOCK_PREFIX, b"b123"), None);
        let mut seqs = Vec::new();
        for s in [3u64, 9, 300] {
            seqs.extend_from_slice(&s.to_be_bytes());
        }
        assert_eq!(posting_seqs(&seqs).collect::<Vec<_>>(), [3, 9, 300]);
        // Length prefix: "a" never matches the prefix of "ab".
        assert!(
            !value_prefix(IndexKind::Subject, "ab")
                .starts_with(&value_prefix(IndexKind::Subject, "a"))
        );
    }
}
