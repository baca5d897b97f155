//! Walking the chain: every record must decode, sit in its own place (its
//! block's key plus its line number), follow its predecessor with no gap, name the predecessor's hash as
//! `prev_hash`, and hash to its `hash`. The walk starts at the retention
//! anchor (or the genesis hash) and ends at the head written with the last
//! batch, so records deleted from the middle, the front or the tail are
//! found. It stops at the first record that does not match and names it.
//!
//! [`verify_lines`] does the same for an exported trail (JSON lines), which
//! carries no anchor or head: its first line is trusted as the start.

use std::io::BufRead;

use serde::{Deserialize, Serialize};

use super::chain::{self, Anchor, ChainPoint};
use super::index::{self, HEAD_KEY};
use super::record::{self, Decoded, GENESIS_HASH};
use super::{Trail, TrailError};

/// What is wrong with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Problem {
    /// The record is not there: the chain jumps over it.
    Missing,
    /// The record cannot be decoded, or is not in canonical form.
    Undecodable,
    /// The record is stored under another record's seq (reordered), or a
    /// seq repeats or goes backwards.
    Misplaced,
    /// `prev_hash` is not the previous record's hash.
    PrevHash,
    /// The record's content does not hash to its `hash`.
    Hash,
}

impl Problem {
    /// Kebab-case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Undecodable => "undecodable",
            Self::Misplaced => "misplaced",
            Self::PrevHash => "prev-hash",
            Self::Hash => "hash",
        }
    }
}

/// The first record that does not match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mismatch {
    /// Its seq (for [`Problem::Missing`], the first missing seq).
    pub seq: u64,
    /// What kind of problem.
    pub problem: Problem,
    /// What differs, in words.
    pub detail: String,
}

/// The outcome of a walk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// No record failed.
    pub intact: bool,
    /// Records checked (up to the failure).
    pub checked: u64,
    /// First record checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_seq: Option<u64>,
    /// Last record that matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
    /// Hash of the last record that matched: pin it elsewhere to detect a
    /// later rewrite of everything before it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_hash: Option<String>,
    /// Where the walk started: the retention anchor, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anchor: Option<Anchor>,
    /// The first record that does not match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Mismatch>,
}

/// An error and its sources, joined with `: `.
fn error_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The walk's state.
struct Walker {
    /// Seq and hash the next record must have / name; `None` before the
    /// first line of a file.
    expect: Option<(u64, String)>,
    checked: u64,
    first_seq: Option<u64>,
}

impl Walker {
    /// Checks one record. `place` is the seq its position in the store
    /// stands for (None in a file); `later` lists the seqs of the records
    /// after it in the same block, to tell a reordering from a gap.
    fn step(
        &mut self,
        place: Option<u64>,
        d: Result<Decoded<'_>, TrailError>,
        later: &dyn Fn() -> Vec<u64>,
    ) -> Result<(), Mismatch> {
        let at = place.unwrap_or_else(|| self.expect.as_ref().map_or(0, |e| e.0));
        let d = d.map_err(|e| Mismatch {
            seq: at,
            problem: Problem::Undecodable,
            detail: error_text(&e),
        })?;
        let r = &d.record;
        if let Some((seq, prev)) = &self.expect {
            let seq = *seq;
            if r.seq > seq && later().contains(&seq) {
                return Err(Mismatch {
                    seq,
                    problem: Problem::Misplaced,
                    detail: format!(
                        "record {} is stored where record {seq} belongs, and record {seq} after it: reordered",
                        r.seq
                    ),
                });
            }
            if r.seq > seq {
                return Err(Mismatch {
                    seq,
                    problem: Problem::Missing,
                    detail: if r.seq == seq + 1 {
                        format!(
                            "record {seq} is missing: the chain goes on with record {}",
                            r.seq
                        )
                    } else {
                        format!(
                            "records {seq} to {} are missing: the chain goes on with record {}",
                            r.seq - 1,
                            r.seq
                        )
                    },
                });
            }
            if r.seq < seq {
                return Err(Mismatch {
                    seq: r.seq,
                    problem: Problem::Misplaced,
                    detail: format!("record {} comes where record {seq} was expected", r.seq),
                });
            }
            if r.prev_hash != *prev {
                return Err(Mismatch {
                    seq: r.seq,
                    problem: Problem::PrevHash,
                    detail: format!(
                        "prev_hash is {} but the record before hashes to {prev}",
                        r.prev_hash
                    ),
                });
            }
        }
        if let Some(k) = place
            && k != r.seq
        {
            return Err(Mismatch {
                seq: r.seq,
                problem: Problem::Misplaced,
                detail: format!("record {} is stored in the place of record {k}", r.seq),
            });
        }
        let computed = d.recompute_hash();
        if computed != r.hash {
            return Err(Mismatch {
                seq: r.seq,
                problem: Problem::Hash,
                detail: format!(
                    "content hashes to {computed} but the record says {}: it was changed after it was written",
                    r.hash
                ),
            });
        }
        self.first_seq.get_or_insert(r.seq);
        self.checked += 1;
        self.expect = Some((r.seq + 1, r.hash.clone()));
        Ok(())
    }

    fn report(self, anchor: Option<Anchor>, failure: Option<Mismatch>) -> VerifyReport {
        let last = self.first_seq.and(self.expect);
        VerifyReport {
            intact: failure.is_none(),
            checked: self.checked,
            first_seq: self.first_seq,
            last_seq: last.as_ref().map(|(next, _)| next - 1),
            last_hash: last.map(|(_, h)| h),
            anchor,
            failure,
        }
    }
}

impl Trail {
    /// Walks the whole chain.
    ///
    /// # Errors
    /// Reading the tree fails, or the anchor or head does not decode.
    /// Problems with records are not errors: they are the report's
    /// `failure`.
    pub fn verify(&self) -> Result<VerifyReport, TrailError> {
        let _maintenance = self.maintenance();
        let tree = self.tree();
        let anchor = self.anchor()?;
        let head: Option<ChainPoint> = chain::read_meta(tree, HEAD_KEY, "head")?;
        let mut w = Walker {
            expect: Some(anchor.as_ref().map_or_else(
                || (1, GENESIS_HASH.to_owned()),
                |a| (a.seq + 1, a.hash.clone()),
            )),
            checked: 0,
            first_seq: None,
        };
        for kv in tree.scan_prefix([index::BLOCK_PREFIX]) {
            let (k, v) = kv.map_err(|source| TrailError::ReadTrail { source })?;
            let expected = w.expect.as_ref().map_or(0, |e| e.0);
            let Some(first) = index::key_seq(index::BLOCK_PREFIX, &k) else {
                let failure = Mismatch {
                    seq: expected,
                    problem: Problem::Undecodable,
                    detail: format!("a block key of {} bytes instead of 9", k.len()),
                };
                return Ok(w.report(anchor, Some(failure)));
            };
            let body = match record::block_body(first, &v) {
                Ok(b) => b,
                Err(e) => {
                    let failure = Mismatch {
                        seq: first,
                        problem: Problem::Undecodable,
                        detail: error_text(&e),
                    };
                    return Ok(w.report(anchor, Some(failure)));
                }
            };
            let lines: Vec<&[u8]> = record::lines(&body).collect();
            for (i, line) in lines.iter().enumerate() {
                let place = first.saturating_add(i as u64);
                let later = || {
                    lines[i + 1..]
                        .iter()
                        .filter_map(|l| record::decode_line(0, l).ok().map(|d| d.record.seq))
                        .collect()
                };
                if let Err(failure) = w.step(
                    Some(place),
                    record::decode_line(place, line).map_err(TrailError::from),
                    &later,
                ) {
                    return Ok(w.report(anchor, Some(failure)));
                }
            }
        }
        // The tail: every record up to the head must be there.
        let failure = head.and_then(|h| {
            let (next, last_hash) = w.expect.clone()?;
            if h.seq >= next {
                Some(Mismatch {
                    seq: next,
                    problem: Problem::Missing,
                    detail: format!(
                        "records {next} to {} are missing: the last write recorded record {} as the newest",
                        h.seq, h.seq
                    ),
                })
            } else if h.seq == next - 1 && h.hash != last_hash && h.seq > 0 {
                Some(Mismatch {
                    seq: h.seq,
                    problem: Problem::Hash,
                    detail: format!(
                        "the last write recorded hash {} for record {} but it hashes to {last_hash}",
                        h.hash, h.seq
                    ),
                })
            } else {
                None
            }
        });
        Ok(w.report(anchor, failure))
    }
}

/// Walks an exported trail (JSON lines, as `trail export` writes them).
/// Line numbers stand in for seqs in decoding errors until a record has
/// been read.
///
/// # Errors
/// [`TrailError::ReadExport`] when reading fails.
pub fn verify_lines<R: BufRead>(mut input: R) -> Result<VerifyReport, TrailError> {
    let mut w = Walker {
        expect: None,
        checked: 0,
        first_seq: None,
    };
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .map_err(|source| TrailError::ReadExport { source })?;
        if n == 0 {
            break;
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        if text.is_empty() {
            continue;
        }
        let at = w.expect.as_ref().map_or(0, |e| e.0);
        if let Err(failure) = w.step(
            None,
            record::decode_line(at, text).map_err(TrailError::from),
            &Vec::new,
        ) {
            return Ok(w.report(None, Some(failure)));
        }
    }
    Ok(w.report(None, None))
}
