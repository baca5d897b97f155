//! The trail's side of signed checkpoints: its origin (a random id made
//! once, kept across restarts), the keys its checkpoints were signed with,
//! making one ([`Trail::checkpoint`]: flush, then sign the durable head),
//! the node's own copy of them, and the facts a verifier needs
//! ([`TrailFacts`]) from a store or from an exported trail.
//!
//! The node's own copy proves nothing (whoever rewrites the trail rewrites
//! it too); verifiers use checkpoints collected off the node.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::chain::{self, encode_meta};
use super::checkpoint::{
    self, Checkpoint, CheckpointLine, CheckpointReport, CheckpointSigner, CollectedSet,
    SignedCheckpoint, TrailFacts, VerifierKey, needed_seqs,
};
use super::index::{self, CHECKPOINT_KEYS_KEY, ORIGIN_KEY};
use super::live::{self, LiveError};
use super::{Query, VerifyReport, verify};
use super::{Trail, TrailError, record};
use crate::store;

impl Trail {
    /// The trail's origin, if an agent has made one.
    ///
    /// # Errors
    /// Reading or decoding it fails.
    pub fn origin(&self) -> Result<Option<String>, TrailError> {
        chain::read_meta(self.tree(), ORIGIN_KEY, "origin")
    }

    /// The trail's origin, made (and stored) when there is none yet.
    ///
    /// # Errors
    /// Reading or writing the tree fails; the OS gives no random bytes.
    pub fn ensure_origin(&self) -> Result<String, TrailError> {
        if let Some(origin) = self.origin()? {
            return Ok(origin);
        }
        let origin = checkpoint::new_origin().map_err(TrailError::CreateOrigin)?;
        let value = encode_meta(&origin)?;
        // Two handles racing: the first origin stored wins.
        match self
            .tree()
            .compare_and_swap(ORIGIN_KEY, None as Option<&[u8]>, Some(value))
            .map_err(|source| TrailError::WriteTrail { source })?
        {
            Ok(()) => Ok(origin),
            Err(_) => self.origin().map(Option::unwrap_or_default),
        }
    }

    /// Verifier keys the agent signed this trail's checkpoints with.
    ///
    /// # Errors
    /// Reading or decoding them fails.
    pub fn checkpoint_keys(&self) -> Result<Vec<String>, TrailError> {
        Ok(
            chain::read_meta(self.tree(), CHECKPOINT_KEYS_KEY, "checkpoint keys")?
                .unwrap_or_default(),
        )
    }

    /// Records that `key` (verifier key form) signs this trail's checkpoints.
    ///
    /// # Errors
    /// Reading or writing the tree fails.
    pub fn add_checkpoint_key(&self, key: &str) -> Result<(), TrailError> {
        let mut keys = self.checkpoint_keys()?;
        if keys.iter().any(|k| k == key) {
            return Ok(());
        }
        keys.push(key.to_owned());
        self.tree()
            .insert(CHECKPOINT_KEYS_KEY, encode_meta(&keys)?)
            .map_err(|source| TrailError::WriteTrail { source })?;
        Ok(())
    }

    /// Makes everything appended durable, then signs a checkpoint of the
    /// last record written (which is durable, so a crash afterwards cannot
    /// leave the trail short of it) and keeps a copy in the tree (durable
    /// with the next flush).
    ///
    /// Blocks for the flush: call it from a blocking task.
    ///
    /// # Errors
    /// Flushing, signing or storing fails.
    pub fn checkpoint(
        &self,
        signer: &CheckpointSigner,
        node: &str,
    ) -> Result<SignedCheckpoint, TrailError> {
        let origin = self.ensure_origin()?;
        let point = self.flush_point()?;
        let checkpoint = Checkpoint {
            origin,
            seq: point.seq,
            hash: point.hash,
            node: node.to_owned(),
            time: humantime::format_rfc3339_nanos(SystemTime::now()).to_string(),
        };
        let signed = signer
            .sign(&checkpoint)
            .map_err(TrailError::SignCheckpoint)?;
        self.store_checkpoint(&signed.to_line())?;
        Ok(signed)
    }

    /// Keeps a checkpoint (the newest per seq), and deletes those of
    /// records retention has deleted.
    fn store_checkpoint(&self, line: &CheckpointLine) -> Result<(), TrailError> {
        let tree = self.tree();
        let write = |source| TrailError::WriteTrail { source };
        tree.insert(
            index::seq_key(index::CHECKPOINT_PREFIX, line.seq).as_slice(),
            store::encode(line).map_err(|source| TrailError::EncodeMeta { source })?,
        )
        .map_err(write)?;
        if let Some(anchor) = self.anchor()? {
            let lo = index::seq_key(index::CHECKPOINT_PREFIX, 0);
            let hi = index::seq_key(index::CHECKPOINT_PREFIX, anchor.seq);
            for kv in tree.range(lo.as_slice()..=hi.as_slice()) {
                let (k, _) = kv.map_err(|source| TrailError::ReadTrail { source })?;
                tree.remove(k).map_err(write)?;
            }
        }
        Ok(())
    }

    /// The node's own copy of its checkpoints, by seq (proves nothing on
    /// its own: see the module docs).
    ///
    /// # Errors
    /// Reading or decoding fails.
    pub fn stored_checkpoints(&self) -> Result<Vec<CheckpointLine>, TrailError> {
        self.tree()
            .scan_prefix([index::CHECKPOINT_PREFIX])
            .map(|kv| {
                let (_, v) = kv.map_err(|source| TrailError::ReadTrail { source })?;
                store::decode(&v).map_err(|source| TrailError::DecodeMeta {
                    name: "checkpoint",
                    source,
                })
            })
            .collect()
    }

    /// What a verifier needs: origin, last record, anchor, and the hashes
    /// of the `needed` records the trail has.
    ///
    /// # Errors
    /// Reading or decoding the tree fails.
    pub fn checkpoint_facts(&self, needed: &BTreeSet<u64>) -> Result<TrailFacts, TrailError> {
        let mut facts = TrailFacts {
            origin: self.origin()?,
            last_seq: self.last_stored_seq()?,
            anchor: self.anchor()?.map(|a| (a.seq, a.hash)),
            ..TrailFacts::default()
        };
        for &seq in needed {
            if let Some(r) = self.get(seq)? {
                facts.hashes.insert(seq, r.hash);
            }
        }
        Ok(facts)
    }

    /// The seq of the last record stored (0: none).
    fn last_stored_seq(&self) -> Result<u64, TrailError> {
        let Some((k, v)) = self
            .tree()
            .scan_prefix([index::BLOCK_PREFIX])
            .next_back()
            .transpose()
            .map_err(|source| TrailError::ReadTrail { source })?
        else {
            return Ok(self.anchor()?.map_or(0, |a| a.seq));
        };
        let first = index::key_seq(index::BLOCK_PREFIX, &k).unwrap_or(0);
        let body = record::block_body(first, &v)?;
        let line = record::lines(&body).last().unwrap_or_default();
        Ok(record::decode_line(first, line)?.record.seq)
    }
}

/// Collects [`TrailFacts`] from exported record lines, one at a time.
#[derive(Debug)]
pub struct FactsBuilder<'a> {
    facts: TrailFacts,
    needed: &'a BTreeSet<u64>,
    lines: u64,
}

impl<'a> FactsBuilder<'a> {
    /// Collects the hashes of `needed` records.
    #[must_use]
    pub fn new(needed: &'a BTreeSet<u64>) -> Self {
        Self {
            facts: TrailFacts::default(),
            needed,
            lines: 0,
        }
    }

    /// One record line (without its newline); empty lines are skipped.
    ///
    /// # Errors
    /// The record does not decode.
    pub fn push(&mut self, line: &[u8]) -> Result<(), TrailError> {
        if line.is_empty() {
            return Ok(());
        }
        self.lines += 1;
        let r = record::decode_line(self.lines, line)?.record;
        if self.lines == 1 && r.seq > 1 {
            // An export of a pruned trail starts after the anchor.
            self.facts.anchor = Some((r.seq - 1, r.prev_hash.clone()));
        }
        if self.needed.contains(&r.seq) {
            self.facts.hashes.insert(r.seq, r.hash);
        }
        self.facts.last_seq = self.facts.last_seq.max(r.seq);
        Ok(())
    }

    /// The facts (origin `None`: an export does not carry it).
    #[must_use]
    pub fn finish(self) -> TrailFacts {
        self.facts
    }
}

/// The facts of an exported trail (JSON lines, as `trail export` writes
/// them): its last record and the hashes of the `needed` ones.
///
/// # Errors
/// [`TrailError::ReadExport`]; a record that does not decode.
pub fn facts_from_lines<R: BufRead>(
    mut input: R,
    needed: &BTreeSet<u64>,
) -> Result<TrailFacts, TrailError> {
    let mut builder = FactsBuilder::new(needed);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = input
            .read_until(b'\n', &mut line)
            .map_err(|source| TrailError::ReadExport { source })?;
        if read == 0 {
            break;
        }
        builder.push(line.strip_suffix(b"\n").unwrap_or(&line))?;
    }
    Ok(builder.finish())
}

/// Errors checking a trail against collected checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum VouchError {
    /// The trail could not be read.
    #[error(transparent)]
    ReadTrail(#[from] TrailError),
    /// The running agent holding the trail could not be asked.
    #[error(transparent)]
    AskAgent(#[from] LiveError),
    /// The trail file could not be opened.
    #[error(transparent)]
    OpenTrailFile(#[from] crate::replay::input::InputError),
    /// A collected-checkpoints file could not be read.
    #[error("cannot read the checkpoints file {path}")]
    ReadCheckpoints {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A `--key` is neither a verifier key nor a file of them.
    #[error("--key {input:?}")]
    ParseKey {
        /// What was given.
        input: String,
        /// Why.
        #[source]
        source: checkpoint::CheckpointError,
    },
    /// No key to trust.
    #[error(
        "no trusted checkpoint key for {what}: pass --key (`tokenwatch trail key` on the node prints it)"
    )]
    FindKey {
        /// The trail.
        what: String,
    },
    /// The origin of an export cannot be told from the checkpoints.
    #[error("{what}: {detail}; pass --origin (`tokenwatch trail stats` on the node shows it)")]
    FindOrigin {
        /// The trail.
        what: String,
        /// Why.
        detail: String,
    },
}

/// Reads collected sink output (JSON lines or signed notes, several nodes
/// mixed) from files.
///
/// # Errors
/// [`VouchError::ReadCheckpoints`].
pub fn read_collected(paths: &[PathBuf]) -> Result<CollectedSet, VouchError> {
    let mut set = CollectedSet::default();
    for path in paths {
        let bytes = std::fs::read(path).map_err(|source| VouchError::ReadCheckpoints {
            path: path.clone(),
            source,
        })?;
        set.read(&path.display().to_string(), &bytes);
    }
    Ok(set)
}

/// Parses `--key` values: a verifier key, or a file with one per line.
///
/// # Errors
/// [`VouchError::ParseKey`].
pub fn parse_keys(inputs: &[String]) -> Result<Vec<VerifierKey>, VouchError> {
    let mut keys = Vec::new();
    for input in inputs {
        let parse = |k: &str| {
            VerifierKey::parse(k).map_err(|source| VouchError::ParseKey {
                input: input.clone(),
                source,
            })
        };
        let path = Path::new(input);
        if !input.contains('+') && path.is_file() {
            let text =
                std::fs::read_to_string(path).map_err(|source| VouchError::ReadCheckpoints {
                    path: path.to_owned(),
                    source,
                })?;
            for line in text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
            {
                keys.push(parse(line)?);
            }
        } else {
            keys.push(parse(input)?);
        }
    }
    Ok(keys)
}

/// Where the trail to check is.
#[derive(Debug, Clone, Copy)]
pub enum TrailSource<'a> {
    /// A data directory (asking its agent when one holds it).
    Dir(&'a Path),
    /// An export (JSON lines, plain or gzip; `-` is standard input).
    File(&'a Path),
}

/// A trail's chain walk and its checkpoint judgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vouching {
    /// What was checked, in words.
    pub what: String,
    /// The hash chain.
    pub chain: VerifyReport,
    /// The checkpoints.
    pub checkpoints: CheckpointReport,
}

impl Vouching {
    /// The chain is intact and no trusted checkpoint fails.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.chain.intact && self.checkpoints.passed()
    }
}

/// Walks a trail's chain and judges the collected checkpoints against it.
/// Trusted keys: `keys`, else those the trail recorded (a data dir only).
/// Origin: `origin`, else the data dir's, else (an export) the one origin
/// whose trusted checkpoints match records of the export.
///
/// # Errors
/// [`VouchError`].
pub fn vouch(
    source: TrailSource<'_>,
    set: &CollectedSet,
    keys: &[VerifierKey],
    origin: Option<&str>,
) -> Result<Vouching, VouchError> {
    let mut keys = keys.to_vec();
    let mut add_recorded = |recorded: Vec<String>| -> Result<(), VouchError> {
        if keys.is_empty() {
            keys = recorded
                .iter()
                .map(|k| {
                    VerifierKey::parse(k).map_err(|source| VouchError::ParseKey {
                        input: k.clone(),
                        source,
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        Ok(())
    };
    let (what, chain, facts) = match source {
        TrailSource::Dir(dir) => match Trail::open_existing(dir) {
            Ok(trail) => {
                add_recorded(trail.checkpoint_keys()?)?;
                let origin = origin.map(str::to_owned).or(trail.origin()?);
                let needed = needed_seqs(set, &keys, origin.as_deref());
                let mut facts = trail.checkpoint_facts(&needed)?;
                facts.origin = origin;
                (
                    format!("trail in {}", dir.display()),
                    trail.verify()?,
                    facts,
                )
            }
            Err(TrailError::OpenStore {
                source: store::StoreError::LockDatabase { .. },
            }) if live::socket_path(dir).exists() => {
                let stats = live::stats(dir)?;
                add_recorded(stats.checkpoint_keys)?;
                let origin = origin.map(str::to_owned).or(stats.origin);
                let needed = needed_seqs(set, &keys, origin.as_deref());
                let chain = live::verify(dir)?;
                let mut client = live::Client::send(
                    dir,
                    &live::Request::Export {
                        query: (&Query::default()).into(),
                    },
                )?;
                let mut builder = FactsBuilder::new(&needed);
                while let Some(line) = client.next_line()? {
                    builder.push(&line)?;
                }
                let mut facts = builder.finish();
                facts.origin = origin;
                facts.anchor = chain.anchor.as_ref().map(|a| (a.seq, a.hash.clone()));
                (
                    format!("trail in {} (asked the running agent)", dir.display()),
                    chain,
                    facts,
                )
            }
            Err(e) => return Err(e.into()),
        },
        TrailSource::File(path) => {
            let what = format!("exported trail {}", path.display());
            let needed = needed_seqs(set, &keys, origin);
            let (chain, facts) = if path == Path::new("-") {
                // Standard input is read once: keep it.
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(
                    &mut crate::replay::input::open(path)?.reader,
                    &mut bytes,
                )
                .map_err(|source| TrailError::ReadExport { source })?;
                (
                    verify::verify_lines(bytes.as_slice())?,
                    facts_from_lines(bytes.as_slice(), &needed)?,
                )
            } else {
                (
                    verify::verify_lines(crate::replay::input::open(path)?.reader)?,
                    facts_from_lines(crate::replay::input::open(path)?.reader, &needed)?,
                )
            };
            let mut facts = facts;
            facts.origin = match origin {
                Some(o) => Some(o.to_owned()),
                None => {
                    let found = checkpoint::infer_origin(set, &keys, &facts);
                    match found.as_slice() {
                        [one] => Some(one.clone()),
                        [] => {
                            return Err(VouchError::FindOrigin {
                                what,
                                detail: "no trusted checkpoint matches a record of it, so its origin is unknown".into(),
                            });
                        }
                        many => {
                            return Err(VouchError::FindOrigin {
                                what,
                                detail: format!(
                                    "trusted checkpoints of {} origins match it ({})",
                                    many.len(),
                                    many.join(", ")
                                ),
                            });
                        }
                    }
                }
            };
            (what, chain, facts)
        }
    };
    if keys.is_empty() {
        return Err(VouchError::FindKey { what });
    }
    if facts.origin.is_none() {
        return Err(VouchError::FindOrigin {
            what,
            detail: "the trail has no origin: no agent has signed a checkpoint of it".into(),
        });
    }
    let checkpoints = checkpoint::judge(set, &keys, &facts);
    Ok(Vouching {
        what,
        chain,
        checkpoints,
    })
}
