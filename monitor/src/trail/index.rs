//! Key layout of the trail tree, and the index keys of an entry.
//!
//! Everything lives in the one tree [`crate::store::trees::TRAIL`], so that
//! a batch of records with their index keys, or a retention pass, is one
//! atomic sled batch:
//!
//! | key | value |
//! | --- | --- |
//! | `r` seq (u64 BE) | the record ([`super::record`]) |
//! | `i` kind len (u32 BE) value seq (u64 BE) | empty: an index entry |
//! | `i` `t` time (u64 BE ns) seq (u64 BE) | empty: the time index |
//! | `m` `head` | [`super::chain::ChainPoint`]: last record written |
//! | `m` `anchor` | [`super::chain::Anchor`]: predecessor of the first retained record |
//!
//! Index kinds: `s` subject, `p` reader pod `namespace/name`, `u` reader
//! pod UID, `n` namespace (reader pod's and token's), `j` JTI, `f` finding
//! kind. The value is length-prefixed, so a prefix scan for one value never
//! matches another.

use crate::correlate::TrailEntry;

/// Prefix of record keys.
pub(crate) const RECORD_PREFIX: u8 = b'r';
/// Prefix of index keys.
pub(crate) const INDEX_PREFIX: u8 = b'i';
/// Key of the chain head.
pub(crate) const HEAD_KEY: &[u8] = b"mhead";
/// Key of the retention anchor.
pub(crate) const ANCHOR_KEY: &[u8] = b"manchor";

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
    /// Record time.
    Time,
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
            Self::Time => b't',
        }
    }
}

/// Key of record `seq`.
#[must_use]
pub(crate) fn record_key(seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = RECORD_PREFIX;
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The seq of a record key, if it is one.
#[must_use]
pub(crate) fn key_seq(key: &[u8]) -> Option<u64> {
    match key.split_first() {
        Some((&RECORD_PREFIX, rest)) => Some(u64::from_be_bytes(rest.try_into().ok()?)),
        _ => None,
    }
}

/// The prefix of every index key for `value` in index `kind`.
#[must_use]
pub(crate) fn value_prefix(kind: IndexKind, value: &str) -> Vec<u8> {
    let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
    let mut k = Vec::with_capacity(2 + 4 + value.len() + 8);
    k.push(INDEX_PREFIX);
    k.push(kind.byte());
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(value.as_bytes());
    k
}

/// Time index key.
#[must_use]
pub(crate) fn time_key(time_unix_nanos: u64, seq: u64) -> [u8; 18] {
    let mut k = [0u8; 18];
    k[0] = INDEX_PREFIX;
    k[1] = IndexKind::Time.byte();
    k[2..10].copy_from_slice(&time_unix_nanos.to_be_bytes());
    k[10..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The seq at the end of an index key.
#[must_use]
pub(crate) fn index_key_seq(key: &[u8]) -> Option<u64> {
    let tail = key.len().checked_sub(8).and_then(|at| key.get(at..))?;
    Some(u64::from_be_bytes(tail.try_into().ok()?))
}

/// Every index key of an entry stored as record `seq` (time index included).
#[must_use]
pub(crate) fn entry_keys(entry: &TrailEntry, seq: u64, time_unix_nanos: u64) -> Vec<Vec<u8>> {
    let mut keys = Vec::with_capacity(8);
    let mut push = |kind: IndexKind, value: &str| {
        let mut k = value_prefix(kind, value);
        k.extend_from_slice(&seq.to_be_bytes());
        if !keys.contains(&k) {
            keys.push(k);
        }
    };
    if let Some(s) = entry.subject() {
        push(IndexKind::Subject, s);
    }
    if let Some(pod) = entry.reader.as_ref().and_then(|r| r.pod.as_ref()) {
        if let (Some(ns), Some(name)) = (&pod.namespace, &pod.name) {
            push(IndexKind::Pod, &format!("{ns}/{name}"));
        }
        if !pod.uid.is_empty() {
            push(IndexKind::PodUid, &pod.uid);
        }
    }
    for ns in entry.namespaces() {
        push(IndexKind::Namespace, ns);
    }
    if let Some(j) = entry.jti() {
        push(IndexKind::Jti, j);
    }
    for f in &entry.findings {
        push(IndexKind::Finding, f.kind.as_str());
    }
    keys.push(time_key(time_unix_nanos, seq).to_vec());
    keys
}

/// Bytes a record takes in the tree: its key, value and index keys. The
/// same figure is added on append and subtracted on retention.
#[must_use]
pub(crate) fn footprint(value_len: usize, index_keys: &[Vec<u8>]) -> u64 {
    let idx: usize = index_keys.iter().map(Vec::len).sum();
    u64::try_from(9 + value_len + idx).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_and_parse() {
        assert!(record_key(1) < record_key(2));
        assert!(record_key(255) < record_key(256));
        assert_eq!(key_seq(&record_key(42)), Some(42));
        assert_eq!(key_seq(b"mhead"), None);
        assert_eq!(key_seq(b"r123"), None);
        assert!(time_key(5, 9) < time_key(6, 1));
        assert_eq!(index_key_seq(&time_key(5, 9)), Some(9));
        let mut k = value_prefix(IndexKind::Finding, "host-reader");
        k.extend_from_slice(&7u64.to_be_bytes());
        assert_eq!(index_key_seq(&k), Some(7));
        assert!(k.starts_with(&value_prefix(IndexKind::Finding, "host-reader")));
        // Length prefix: "a" never matches the prefix of "ab".
        assert!(
            !value_prefix(IndexKind::Subject, "ab")
                .starts_with(&value_prefix(IndexKind::Subject, "a"))
        );
    }
}
