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
use std::time::SystemTime;

use super::checkpoint::{
    self, Checkpoint, CheckpointLine, CheckpointSigner, SignedCheckpoint, TrailFacts,
};
use super::chain::{self, encode_meta};
use super::index::{self, CHECKPOINT_KEYS_KEY, ORIGIN_KEY};
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
        Ok(chain::read_meta(self.tree(), CHECKPOINT_KEYS_KEY, "checkpoint keys")?.unwrap_or_default())
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

/// The facts of an exported trail (JSON lines, as `trail export` writes
/// them): its last record and the hashes of the `needed` ones. The origin
/// is not in an export: it is left `None`. The first line's `prev_hash`
/// stands for the anchor when the export starts after record 1.
///
/// # Errors
/// [`TrailError::ReadExport`]; a record that does not decode.
pub fn facts_from_lines<R: BufRead>(
    mut input: R,
    needed: &BTreeSet<u64>,
) -> Result<TrailFacts, TrailError> {
    let mut facts = TrailFacts::default();
    let mut line = Vec::new();
    let mut n = 0u64;
    loop {
        line.clear();
        let read = input
            .read_until(b'\n', &mut line)
            .map_err(|source| TrailError::ReadExport { source })?;
        if read == 0 {
            break;
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        if text.is_empty() {
            continue;
        }
        n += 1;
        let d = record::decode_line(n, text)?;
        let r = d.record;
        if n == 1 && r.seq > 1 {
            facts.anchor = Some((r.seq - 1, r.prev_hash.clone()));
        }
        if needed.contains(&r.seq) {
            facts.hashes.insert(r.seq, r.hash);
        }
        facts.last_seq = facts.last_seq.max(r.seq);
    }
    Ok(facts)
}
