//! Queries: filters on subject, pod, namespace, JTI, finding kind and time.
//!
//! A query picks the most selective index among the filters it has (it
//! counts, up to [`PROBE`] seqs, how many records each candidate index
//! holds for its value and takes the smallest; a time range counts the
//! records of the units it overlaps), reads the seqs from it, and then
//! checks every filter on each record, so the result never depends on which
//! index was used. Without any filter it scans the blocks in order.
//! Results come in ascending seq order.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::index::{self, IndexKind};
use super::record::{self, Record};
use super::{Trail, TrailError};
use crate::correlate::{FindingKind, TrailEntry};
use crate::store;

/// How many index keys are counted per candidate when choosing an index.
pub const PROBE: usize = 4096;

/// What to select. Empty filters select everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Token subject (`system:serviceaccount:NS:NAME`), exactly.
    pub subject: Option<String>,
    /// Reader pod: `namespace/name`, a pod UID, or a bare name together
    /// with [`Query::namespace`].
    pub pod: Option<String>,
    /// Namespace of the reader pod or of the token.
    pub namespace: Option<String>,
    /// Token JTI.
    pub jti: Option<String>,
    /// Has a finding of this kind.
    pub finding: Option<FindingKind>,
    /// Appended at or after this time.
    pub since: Option<SystemTime>,
    /// Appended at or before this time.
    pub until: Option<SystemTime>,
    /// At most this many records.
    pub limit: Option<usize>,
}

/// Parses a time bound: RFC 3339, `now`, or a duration before `now`
/// (`90s`, `15m`, `1h`, `7d`, `1h30m`).
///
/// # Errors
/// [`TrailError::ParseTime`].
pub fn parse_time(input: &str, now: SystemTime) -> Result<SystemTime, TrailError> {
    if input == "now" {
        return Ok(now);
    }
    match humantime::parse_rfc3339_weak(input) {
        Ok(t) => Ok(t),
        Err(source) => match humantime::parse_duration(input) {
            Ok(ago) => Ok(now.checked_sub(ago).unwrap_or(UNIX_EPOCH)),
            Err(_) => Err(TrailError::ParseTime {
                input: input.to_owned(),
                source,
            }),
        },
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos()
        .try_into()
        .unwrap_or(u64::MAX)
}

impl Query {
    /// The pod filter as an index key: (`p`, `ns/name`) or (`u`, uid).
    fn pod_index(&self) -> Option<(IndexKind, String)> {
        let pod = self.pod.as_deref()?;
        Some(if pod.contains('/') {
            (IndexKind::Pod, pod.to_owned())
        } else if let Some(ns) = &self.namespace {
            (IndexKind::Pod, format!("{ns}/{pod}"))
        } else {
            (IndexKind::PodUid, pod.to_owned())
        })
    }

    /// Whether a record passes every filter.
    #[must_use]
    pub fn matches(&self, r: &Record) -> bool {
        let e = &r.entry;
        self.subject
            .as_deref()
            .is_none_or(|s| e.subject() == Some(s))
            && self
                .pod_index()
                .is_none_or(|(kind, v)| pod_matches(e, kind, &v))
            && self
                .namespace
                .as_deref()
                .is_none_or(|ns| e.namespaces().contains(&ns))
            && self.jti.as_deref().is_none_or(|j| e.jti() == Some(j))
            && self
                .finding
                .is_none_or(|k| e.findings.iter().any(|f| f.kind == k))
            && self.since.is_none_or(|t| r.time_unix_nanos >= nanos(t))
            && self.until.is_none_or(|t| r.time_unix_nanos <= nanos(t))
    }

    /// Whether any filter other than the limit is set.
    #[must_use]
    pub fn is_unfiltered(&self) -> bool {
        Self {
            limit: None,
            ..self.clone()
        } == Self::default()
    }
}

fn pod_matches(e: &TrailEntry, kind: IndexKind, value: &str) -> bool {
    let Some(pod) = e.reader.as_ref().and_then(|r| r.pod.as_ref()) else {
        return false;
    };
    match kind {
        IndexKind::PodUid => pod.uid == value,
        _ => match (&pod.namespace, &pod.name) {
            (Some(ns), Some(name)) => {
                value
                    .strip_prefix(ns.as_str())
                    .and_then(|rest| rest.strip_prefix('/'))
                    == Some(name.as_str())
            }
            _ => false,
        },
    }
}

/// Where the candidates of a query come from.
enum Source {
    /// Seqs read from one index, ascending.
    Seqs(std::vec::IntoIter<u64>),
    /// Every block, in order.
    Scan(Box<sled::Iter>),
}

/// A block being read: its first seq, its lines, and where each line is.
struct OpenBlock {
    first: u64,
    body: BlockBody,
    lines: Vec<std::ops::Range<usize>>,
    /// Next line to read when scanning.
    next: usize,
}

/// A block's lines: inside the stored value (plain), or decompressed.
enum BlockBody {
    Stored(sled::IVec),
    Decompressed(Vec<u8>),
}

impl BlockBody {
    fn bytes(&self) -> &[u8] {
        match self {
            // The version byte, then the lines (checked by `block_body`).
            Self::Stored(value) => value.get(1..).unwrap_or_default(),
            Self::Decompressed(body) => body,
        }
    }
}

impl OpenBlock {
    fn new(first: u64, value: sled::IVec) -> Result<Self, TrailError> {
        let body = match record::block_body(first, &value)? {
            std::borrow::Cow::Borrowed(_) => BlockBody::Stored(value),
            std::borrow::Cow::Owned(lines) => BlockBody::Decompressed(lines),
        };
        let bytes = body.bytes();
        let mut lines = Vec::new();
        let mut start = 0;
        for (i, b) in bytes.iter().enumerate() {
            if *b == b'\n' {
                lines.push(start..i);
                start = i + 1;
            }
        }
        lines.push(start..bytes.len());
        Ok(Self {
            first,
            body,
            lines,
            next: 0,
        })
    }

    /// Line `i` and its seq.
    fn line(&self, i: usize) -> Option<(u64, &[u8])> {
        let r = self.lines.get(i)?.clone();
        let seq = self.first.saturating_add(u64::try_from(i).ok()?);
        Some((seq, self.body.bytes().get(r)?))
    }

    /// The line of `seq`, if this block holds it.
    fn find(&self, seq: u64) -> Option<&[u8]> {
        let i = usize::try_from(seq.checked_sub(self.first)?).ok()?;
        self.line(i).map(|(_, l)| l)
    }
}

/// Finds the block that holds `seq`: the last block starting at or before it.
pub(crate) fn block_of(
    tree: &sled::Tree,
    seq: u64,
) -> Result<Option<(u64, sled::IVec)>, TrailError> {
    let lo = index::seq_key(index::BLOCK_PREFIX, 0);
    let hi = index::seq_key(index::BLOCK_PREFIX, seq);
    let found = tree
        .range(lo..=hi)
        .next_back()
        .transpose()
        .map_err(|source| TrailError::ReadTrail { source })?;
    Ok(found.and_then(|(k, v)| Some((index::key_seq(index::BLOCK_PREFIX, &k)?, v))))
}

/// Records matching a query, ascending by seq, with their stored lines.
pub struct QueryIter {
    tree: sled::Tree,
    query: Query,
    source: Source,
    block: Option<OpenBlock>,
    left: usize,
}

impl std::fmt::Debug for QueryIter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryIter")
            .field("query", &self.query)
            .field("left", &self.left)
            .finish_non_exhaustive()
    }
}

impl QueryIter {
    /// The next candidate: its seq and line.
    fn next_candidate(&mut self) -> Option<Result<(u64, Vec<u8>), TrailError>> {
        loop {
            match &mut self.source {
                Source::Seqs(seqs) => {
                    let seq = seqs.next()?;
                    if let Some(line) = self.block.as_ref().and_then(|b| b.find(seq)) {
                        return Some(Ok((seq, line.to_vec())));
                    }
                    match block_of(&self.tree, seq) {
                        Ok(Some((first, value))) => match OpenBlock::new(first, value) {
                            Ok(b) => self.block = Some(b),
                            Err(e) => return Some(Err(e)),
                        },
                        // Pruned since the index was read.
                        Ok(None) => continue,
                        Err(e) => return Some(Err(e)),
                    }
                    if let Some(line) = self.block.as_ref().and_then(|b| b.find(seq)) {
                        return Some(Ok((seq, line.to_vec())));
                    }
                }
                Source::Scan(iter) => {
                    if let Some(b) = &mut self.block
                        && let Some((seq, line)) = b.line(b.next).map(|(s, l)| (s, l.to_vec()))
                    {
                        b.next += 1;
                        return Some(Ok((seq, line)));
                    }
                    let (k, v) = match iter.next()? {
                        Ok(kv) => kv,
                        Err(source) => return Some(Err(TrailError::ReadTrail { source })),
                    };
                    let first = index::key_seq(index::BLOCK_PREFIX, &k).unwrap_or(0);
                    match OpenBlock::new(first, v) {
                        Ok(b) => self.block = Some(b),
                        Err(e) => return Some(Err(e)),
                    }
                }
            }
        }
    }

    /// The next matching record and its stored line.
    ///
    /// # Errors
    /// Reading the tree fails, or a record does not decode.
    pub fn next_raw(&mut self) -> Option<Result<(Record, Vec<u8>), TrailError>> {
        while self.left > 0 {
            let (seq, line) = match self.next_candidate()? {
                Ok(c) => c,
                Err(e) => return Some(Err(e)),
            };
            let record = match record::decode_line(seq, &line) {
                Ok(d) => d.record,
                Err(e) => return Some(Err(e.into())),
            };
            if self.query.matches(&record) {
                self.left -= 1;
                return Some(Ok((record, line)));
            }
        }
        None
    }
}

impl Iterator for QueryIter {
    type Item = Result<Record, TrailError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_raw().map(|r| r.map(|(record, _)| record))
    }
}

/// Reads the candidate seqs of one index, or counts them up to `cap`.
fn candidate_seqs(tree: &sled::Tree, c: &Candidate, cap: usize) -> Result<Vec<u64>, TrailError> {
    let read = |source| TrailError::ReadTrail { source };
    let mut out = Vec::new();
    match c {
        Candidate::Prefix(p) => {
            for kv in tree.scan_prefix(p) {
                let (_, v) = kv.map_err(read)?;
                out.extend(index::posting_seqs(&v));
                if out.len() >= cap {
                    break;
                }
            }
        }
        Candidate::Time(since, until) => {
            for kv in tree.scan_prefix([index::UNIT_PREFIX]) {
                let (_, v) = kv.map_err(read)?;
                let unit: index::Unit =
                    store::decode(&v).map_err(|source| TrailError::DecodeMeta {
                        name: "unit",
                        source,
                    })?;
                if unit.max_time >= *since && unit.min_time <= *until {
                    out.extend(unit.first_seq..=unit.last_seq);
                    if out.len() >= cap {
                        break;
                    }
                }
            }
        }
    }
    Ok(out)
}

/// A candidate index: a posting-list prefix, or the time range (ns).
enum Candidate {
    Prefix(Vec<u8>),
    Time(u64, u64),
}

impl Trail {
    /// Record `seq`, if it is in the tree.
    ///
    /// # Errors
    /// Reading the tree fails, or the record does not decode.
    pub fn get(&self, seq: u64) -> Result<Option<Record>, TrailError> {
        let Some((first, value)) = block_of(self.tree(), seq)? else {
            return Ok(None);
        };
        let block = OpenBlock::new(first, value)?;
        block
            .find(seq)
            .map(|line| record::decode_line(seq, line).map(|d| d.record))
            .transpose()
            .map_err(TrailError::from)
    }

    /// Records matching `q`, ascending by seq.
    ///
    /// # Errors
    /// Reading an index fails. Errors reading or decoding a record come
    /// from the iterator, naming the seq.
    pub fn query(&self, q: &Query) -> Result<QueryIter, TrailError> {
        let tree = self.tree().clone();
        let left = q.limit.unwrap_or(usize::MAX);
        let mut candidates = Vec::new();
        if let Some(j) = &q.jti {
            candidates.push(Candidate::Prefix(index::value_prefix(IndexKind::Jti, j)));
        }
        if let Some((kind, v)) = q.pod_index() {
            candidates.push(Candidate::Prefix(index::value_prefix(kind, &v)));
        }
        if let Some(s) = &q.subject {
            candidates.push(Candidate::Prefix(index::value_prefix(
                IndexKind::Subject,
                s,
            )));
        }
        if let Some(f) = q.finding {
            candidates.push(Candidate::Prefix(index::value_prefix(
                IndexKind::Finding,
                f.as_str(),
            )));
        }
        if let Some(ns) = &q.namespace {
            candidates.push(Candidate::Prefix(index::value_prefix(
                IndexKind::Namespace,
                ns,
            )));
        }
        if q.since.is_some() || q.until.is_some() {
            candidates.push(Candidate::Time(
                q.since.map_or(0, nanos),
                q.until.map_or(u64::MAX, nanos),
            ));
        }
        let mut best: Option<(usize, &Candidate)> = None;
        for c in &candidates {
            let n = candidate_seqs(&tree, c, PROBE)?.len();
            if best.is_none_or(|(m, _)| n < m) {
                best = Some((n, c));
            }
        }
        let source = match best {
            None => Source::Scan(Box::new(tree.scan_prefix([index::BLOCK_PREFIX]))),
            Some((_, c)) => {
                let mut seqs = candidate_seqs(&tree, c, usize::MAX)?;
                seqs.sort_unstable();
                seqs.dedup();
                Source::Seqs(seqs.into_iter())
            }
        };
        Ok(QueryIter {
            tree,
            query: q.clone(),
            source,
            block: None,
            left,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_absolute_relative_and_now() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(parse_time("now", now).unwrap(), now);
        assert_eq!(
            parse_time("1h", now).unwrap(),
            now - Duration::from_secs(3600)
        );
        assert_eq!(
            parse_time("1h30m", now).unwrap(),
            now - Duration::from_secs(5400)
        );
        assert_eq!(
            parse_time("2026-01-01T00:00:00Z", now).unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_767_225_600)
        );
        let err = parse_time("yesterday", now).unwrap_err();
        assert!(err.to_string().contains("\"yesterday\""), "{err}");
    }

    #[test]
    fn pod_filter_forms() {
        let q = |pod: &str, ns: Option<&str>| Query {
            pod: Some(pod.into()),
            namespace: ns.map(Into::into),
            ..Query::default()
        };
        assert_eq!(
            q("shop/web-0", None).pod_index(),
            Some((IndexKind::Pod, "shop/web-0".into()))
        );
        assert_eq!(
            q("web-0", Some("shop")).pod_index(),
            Some((IndexKind::Pod, "shop/web-0".into()))
        );
        assert_eq!(
            q("1f2e", None).pod_index(),
            Some((IndexKind::PodUid, "1f2e".into()))
        );
        assert!(Query::default().is_unfiltered());
        assert!(
            Query {
                limit: Some(3),
                ..Query::default()
            }
            .is_unfiltered()
        );
        assert!(!q("x", None).is_unfiltered());
    }
}
