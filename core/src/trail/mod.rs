//! The trail's model, without a store: one [`record`]'s canonical JSON
//! line, its hash and the hash chain it extends, and the blocks records are
//! stored in. The sled store that keeps them, its indexes, queries,
//! retention and verification of a whole trail are the host crate's
//! (`tokenwatch_host::trail`); this is what a verifier of an exported
//! trail needs, and what both sides agree on.

pub mod checkpoint;
pub mod record;

/// A stored or exported record that cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The block's version byte is not one this build knows.
    #[error("record {seq} has an unknown encoding version {found}")]
    DecodeVersion {
        /// The record's seq (the block's first).
        seq: u64,
        /// The version byte found.
        found: u8,
    },
    /// A record line is not JSON of a record.
    #[error("record {seq} cannot be decoded")]
    DecodeRecord {
        /// The record's seq (from its key, or its line number in a file).
        seq: u64,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A compressed block does not decompress.
    #[error("block starting at record {seq} cannot be decompressed: {detail}")]
    DecompressBlock {
        /// The block's first seq.
        seq: u64,
        /// What is wrong with it.
        detail: String,
    },
    /// A stored record is JSON but not the canonical line this build writes.
    #[error("record {seq} is not in canonical form: {what}")]
    CheckRecordForm {
        /// The record's seq.
        seq: u64,
        /// What is wrong.
        what: &'static str,
    },
}

impl RecordError {
    /// The seq of the record (or block) that cannot be read.
    #[must_use]
    pub fn seq(&self) -> u64 {
        match self {
            Self::DecodeVersion { seq, .. }
            | Self::DecodeRecord { seq, .. }
            | Self::DecompressBlock { seq, .. }
            | Self::CheckRecordForm { seq, .. } => *seq,
        }
    }
}
