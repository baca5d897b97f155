//! One trail record: its JSON form (stored and exported alike), its hash,
//! and decoding a stored value back, checking that it is in canonical form.
//!
//! A record is one line of JSON with its members in this order, the entry
//! always last:
//!
//! ```text
//! {"trail_schema":1,"seq":N,"time":"RFC 3339","time_unix_nanos":N,"prev_hash":"hex","hash":"hex","entry":{...}}
//! ```
//!
//! In the store, lines are kept in blocks (see [`block_body`]): a version
//! byte, then either the lines joined by `\n` (version 1, what earlier
//! builds wrote) or those bytes compressed with LZ4 (version 2, what
//! the trail's writer stores). `hash` is the lowercase hex SHA-256
//! of [`hash_input`]: a domain line, then `seq`, `time_unix_nanos`, `time`
//! and `prev_hash` each on a line, then the exact bytes of the entry's JSON.
//! Because the entry is hashed as the bytes that are stored and exported,
//! a verifier never re-serialises JSON: it slices the entry out of the line.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::RecordError as TrailError;
use crate::correlate::TrailEntry;

/// Version of the record JSON (the `trail_schema` member).
pub const TRAIL_SCHEMA_VERSION: u32 = 1;

/// `prev_hash` of the first record ever written: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// First line of every hash input; changes with [`TRAIL_SCHEMA_VERSION`].
pub const HASH_DOMAIN: &str = "tokenwatch-trail/v1";

/// A record as read back: the chain fields and the entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Record schema version ([`TRAIL_SCHEMA_VERSION`]).
    pub trail_schema: u32,
    /// Sequence number: 1 for the first record, then one more each time.
    pub seq: u64,
    /// Wall-clock time of the append, RFC 3339 in UTC with nanoseconds.
    pub time: String,
    /// The same time as nanoseconds since the Unix epoch.
    pub time_unix_nanos: u64,
    /// `hash` of the record before (or [`GENESIS_HASH`]).
    pub prev_hash: String,
    /// SHA-256 of this record's [`hash_input`], lowercase hex.
    pub hash: String,
    /// What was observed.
    pub entry: TrailEntry,
}

/// The bytes that are hashed: five lines, then the entry's JSON bytes.
#[must_use]
pub fn hash_input(
    seq: u64,
    time_unix_nanos: u64,
    time: &str,
    prev_hash: &str,
    entry_json: &[u8],
) -> Vec<u8> {
    let mut out = hash_head(seq, time_unix_nanos, time, prev_hash).into_bytes();
    out.extend_from_slice(entry_json);
    out
}

fn hash_head(seq: u64, time_unix_nanos: u64, time: &str, prev_hash: &str) -> String {
    format!("{HASH_DOMAIN}\n{seq}\n{time_unix_nanos}\n{time}\n{prev_hash}\n")
}

/// The record hash, lowercase hex.
#[must_use]
pub fn compute_hash(
    seq: u64,
    time_unix_nanos: u64,
    time: &str,
    prev_hash: &str,
    entry_json: &[u8],
) -> String {
    // The bytes of `hash_input`, fed piece by piece.
    let (mut seq_digits, mut nanos_digits) = (itoa::Buffer::new(), itoa::Buffer::new());
    let mut h = Sha256::new();
    for piece in [
        HASH_DOMAIN.as_bytes(),
        b"\n",
        seq_digits.format(seq).as_bytes(),
        b"\n",
        nanos_digits.format(time_unix_nanos).as_bytes(),
        b"\n",
        time.as_bytes(),
        b"\n",
        prev_hash.as_bytes(),
        b"\n",
        entry_json,
    ] {
        h.update(piece);
    }
    hex::encode(h.finalize())
}

/// The chain fields of a record line: everything before its entry.
#[derive(Debug, Clone, Copy)]
pub struct LineHead<'a> {
    /// The record's seq.
    pub seq: u64,
    /// Its time, RFC 3339.
    pub time: &'a str,
    /// The same time, Unix ns.
    pub time_unix_nanos: u64,
    /// The previous record's hash.
    pub prev_hash: &'a str,
    /// This record's hash.
    pub hash: &'a str,
}

const _: () = assert!(
    TRAIL_SCHEMA_VERSION == 1,
    "the line head below spells out trail_schema 1"
);

impl LineHead<'_> {
    /// Calls `f` with each piece of the line up to and including `"entry":`.
    fn pieces(&self, mut f: impl FnMut(&[u8])) {
        let (mut seq, mut nanos) = (itoa::Buffer::new(), itoa::Buffer::new());
        let (seq, nanos) = (seq.format(self.seq), nanos.format(self.time_unix_nanos));
        // `time` is humantime's RFC 3339 and the hashes are hex: nothing to escape.
        for piece in [
            b"{\"trail_schema\":1,\"seq\":".as_slice(),
            seq.as_bytes(),
            b",\"time\":\"",
            self.time.as_bytes(),
            b"\",\"time_unix_nanos\":",
            nanos.as_bytes(),
            b",\"prev_hash\":\"",
            self.prev_hash.as_bytes(),
            b"\",\"hash\":\"",
            self.hash.as_bytes(),
            b"\",\"entry\":",
        ] {
            f(piece);
        }
    }

    /// The length of the whole line with an entry of `entry_len` bytes.
    pub fn line_len(&self, entry_len: usize) -> usize {
        let mut n = 0;
        self.pieces(|p| n += p.len());
        n + entry_len + 1
    }

    /// Appends the whole line (what is stored in a block and exported) to `out`.
    pub fn write_line(&self, out: &mut Vec<u8>, entry_json: &[u8]) {
        self.pieces(|p| out.extend_from_slice(p));
        out.extend_from_slice(entry_json);
        out.push(b'}');
    }

    /// The line up to and including `"entry":`.
    fn text(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.pieces(|p| out.extend_from_slice(p));
        out
    }
}

/// The record line (what is stored in a block and exported).
#[cfg(test)]
#[must_use]
pub fn encode_line(
    seq: u64,
    time: &str,
    time_unix_nanos: u64,
    prev_hash: &str,
    hash: &str,
    entry_json: &[u8],
) -> Vec<u8> {
    let head = LineHead {
        seq,
        time,
        time_unix_nanos,
        prev_hash,
        hash,
    };
    let mut out = Vec::with_capacity(head.line_len(entry_json.len()));
    head.write_line(&mut out, entry_json);
    out
}

/// A decoded record together with the exact bytes of its entry.
#[derive(Debug, Clone)]
pub struct Decoded<'a> {
    /// The record.
    pub record: Record,
    /// The entry's JSON exactly as stored (what the hash covers).
    pub entry_json: &'a [u8],
}

impl Decoded<'_> {
    /// Recomputes the hash from the stored fields and entry bytes.
    #[must_use]
    pub fn recompute_hash(&self) -> String {
        let r = &self.record;
        compute_hash(
            r.seq,
            r.time_unix_nanos,
            &r.time,
            &r.prev_hash,
            self.entry_json,
        )
    }
}

/// Version byte of a block whose lines are stored as they are.
pub const BLOCK_PLAIN: u8 = 1;
/// Version byte of a block whose lines are LZ4-compressed: the byte, the
/// length of the lines (u32 little-endian), then one LZ4 block.
pub const BLOCK_LZ4: u8 = 2;
/// The largest decompressed block accepted: far above what the writer
/// makes (the trail store's block size plus one record), and small enough
/// that a corrupted length cannot make a reader allocate gigabytes.
pub const MAX_BLOCK_BODY: usize = 16 * 1024 * 1024;

/// The stored value of a block of record lines (joined by `\n`).
#[must_use]
pub fn encode_block(lines: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + lz4_flex::block::get_maximum_output_size(lines.len()));
    out.push(BLOCK_LZ4);
    out.extend_from_slice(&lz4_flex::compress_prepend_size(lines));
    out
}

/// The body of a stored block: its record lines joined by `\n`, borrowed
/// from a plain block or decompressed from an LZ4 one. `first_seq` is the
/// block's key, used only to name it in errors. Split it with [`lines`].
///
/// # Errors
/// [`TrailError::DecodeRecord`] for an unknown version byte,
/// [`TrailError::DecompressBlock`] for a compressed body that does not
/// decompress to the length it declares (at most [`MAX_BLOCK_BODY`]).
pub fn block_body(first_seq: u64, value: &[u8]) -> Result<Cow<'_, [u8]>, TrailError> {
    match value.split_first() {
        Some((&BLOCK_PLAIN, body)) => Ok(Cow::Borrowed(body)),
        Some((&BLOCK_LZ4, packed)) => decompress(first_seq, packed).map(Cow::Owned),
        Some((&found, _)) => Err(TrailError::DecodeVersion {
            seq: first_seq,
            found,
        }),
        None => Err(TrailError::DecodeVersion {
            seq: first_seq,
            found: 0,
        }),
    }
}

fn decompress(first_seq: u64, packed: &[u8]) -> Result<Vec<u8>, TrailError> {
    let fail = |detail: String| TrailError::DecompressBlock {
        seq: first_seq,
        detail,
    };
    let (len, compressed) = packed
        .split_first_chunk::<4>()
        .ok_or_else(|| fail(format!("{} bytes, too short for its length", packed.len())))?;
    let len = usize::try_from(u32::from_le_bytes(*len)).unwrap_or(usize::MAX);
    if len > MAX_BLOCK_BODY {
        return Err(fail(format!(
            "declares {len} bytes of records, more than the {MAX_BLOCK_BODY} a block can hold"
        )));
    }
    let mut body = vec![0; len];
    let written = lz4_flex::block::decompress_into(compressed, &mut body)
        .map_err(|e| fail(format!("LZ4: {e}")))?;
    if written != len {
        return Err(fail(format!(
            "declares {len} bytes of records but holds {written}"
        )));
    }
    Ok(body)
}

/// The lines of a block body.
pub fn lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    body.split(|&b| b == b'\n')
}

/// Decodes every record of a stored block (what the fuzz target drives).
///
/// # Errors
/// As [`block_body`] and [`decode_line`]; the error names the seq.
pub fn decode_block(first_seq: u64, value: &[u8]) -> Result<Vec<Record>, TrailError> {
    let mut out = Vec::new();
    for (i, line) in lines(&block_body(first_seq, value)?).enumerate() {
        let seq = first_seq.saturating_add(u64::try_from(i).unwrap_or(u64::MAX));
        out.push(decode_line(seq, line)?.record);
    }
    Ok(out)
}

/// Decodes one record line (stored in a block, or exported; without its
/// newline). `seq` names the record in errors.
///
/// # Errors
/// [`TrailError::DecodeRecord`] for bad JSON, [`TrailError::CheckRecordForm`]
/// when the JSON is not the canonical line this build writes.
pub fn decode_line(seq: u64, line: &[u8]) -> Result<Decoded<'_>, TrailError> {
    let record: Record =
        serde_json::from_slice(line).map_err(|source| TrailError::DecodeRecord { seq, source })?;
    let form = |what: &'static str| TrailError::CheckRecordForm { seq, what };
    if record.trail_schema != TRAIL_SCHEMA_VERSION {
        return Err(form("unknown trail_schema"));
    }
    let head = LineHead {
        seq: record.seq,
        time: &record.time,
        time_unix_nanos: record.time_unix_nanos,
        prev_hash: &record.prev_hash,
        hash: &record.hash,
    }
    .text();
    let entry_json = line
        .strip_prefix(head.as_slice())
        .and_then(|rest| rest.strip_suffix(b"}"))
        .ok_or_else(|| form("members are not in canonical order and spacing"))?;
    if entry_json.first() != Some(&b'{') {
        return Err(form("entry is not a JSON object"));
    }
    Ok(Decoded { record, entry_json })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::{ENTRY_SCHEMA_VERSION, EntryKind};

    fn entry() -> TrailEntry {
        TrailEntry {
            schema: ENTRY_SCHEMA_VERSION,
            kind: EntryKind::Agent,
            time: "2026-01-01T00:00:00Z".into(),
            node: "n\u{1}\"é\n".into(),
            reader: None,
            token: None,
            rbac: None,
            connection: None,
            findings: Vec::new(),
            message: Some("started".into()),
            repeated: None,
        }
    }

    #[test]
    fn encode_decode_round_trip_and_hash() {
        let json = serde_json::to_vec(&entry()).unwrap();
        assert!(
            !json.contains(&b'\n'),
            "JSON escapes newlines: lines stay lines"
        );
        let time = "2026-01-01T00:00:00.000000001Z";
        let nanos = 1_767_225_600_000_000_001;
        let hash = compute_hash(7, nanos, time, GENESIS_HASH, &json);
        assert_eq!(
            hash,
            hex::encode(Sha256::digest(hash_input(
                7,
                nanos,
                time,
                GENESIS_HASH,
                &json
            )))
        );
        let line = encode_line(7, time, nanos, GENESIS_HASH, &hash, &json);
        let head = LineHead {
            seq: 7,
            time,
            time_unix_nanos: nanos,
            prev_hash: GENESIS_HASH,
            hash: &hash,
        };
        assert_eq!(line.len(), head.line_len(json.len()));
        let d = decode_line(7, &line).unwrap();
        assert_eq!(d.entry_json, json.as_slice());
        assert_eq!(d.record.entry, entry());
        assert_eq!(d.record.seq, 7);
        assert_eq!(d.recompute_hash(), hash);
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["hash"], hash.as_str());
        let mut block = vec![BLOCK_PLAIN];
        block.extend_from_slice(&line);
        block.push(b'\n');
        block.extend_from_slice(&encode_line(8, time, nanos, &hash, "h", &json));
        let records = decode_block(7, &block).unwrap();
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [7, 8]);
    }

    #[test]
    fn compressed_blocks_round_trip_and_corruption_is_named() {
        let json = serde_json::to_vec(&entry()).unwrap();
        let mut lines = Vec::new();
        for seq in 10..40 {
            if !lines.is_empty() {
                lines.push(b'\n');
            }
            lines.extend_from_slice(&encode_line(seq, "t", 1, GENESIS_HASH, "h", &json));
        }
        let block = encode_block(&lines);
        assert_eq!(block[0], BLOCK_LZ4);
        assert!(
            block.len() * 4 < lines.len(),
            "30 similar records compress well: {} -> {}",
            lines.len(),
            block.len()
        );
        assert_eq!(&*block_body(10, &block).unwrap(), lines.as_slice());
        let records = decode_block(10, &block).unwrap();
        assert_eq!(records.len(), 30);
        assert_eq!(records[29].seq, 39);

        // A length beyond what a block can hold is refused before allocating.
        let mut huge = block.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = block_body(10, &huge).unwrap_err();
        assert!(
            matches!(err, TrailError::DecompressBlock { seq: 10, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("more than"), "{err}");
        // A length that does not match the data, truncated data, no length.
        let mut short = block.clone();
        let declared = u32::try_from(lines.len() + 1).unwrap();
        short[1..5].copy_from_slice(&declared.to_le_bytes());
        for bad in [short, block[..block.len() / 2].to_vec(), vec![BLOCK_LZ4, 1]] {
            let err = block_body(12, &bad).unwrap_err();
            assert!(
                matches!(err, TrailError::DecompressBlock { seq: 12, .. }),
                "{err}"
            );
            assert!(err.to_string().contains("record 12"), "{err}");
        }
    }

    #[test]
    fn non_canonical_and_bad_values_are_errors_naming_the_seq() {
        let json = serde_json::to_vec(&entry()).unwrap();
        let line = String::from_utf8(encode_line(3, "t", 1, GENESIS_HASH, "h", &json)).unwrap();
        let spaced = line.replacen("\"seq\":3", "\"seq\": 3", 1);
        let err = decode_line(3, spaced.as_bytes()).unwrap_err();
        assert!(
            matches!(err, TrailError::CheckRecordForm { seq: 3, .. }),
            "{err}"
        );
        let err = decode_block(4, b"\x03{}").unwrap_err();
        assert!(
            matches!(err, TrailError::DecodeVersion { seq: 4, found: 3 }),
            "{err}"
        );
        let err = decode_block(5, b"").unwrap_err();
        assert!(
            matches!(err, TrailError::DecodeVersion { seq: 5, found: 0 }),
            "{err}"
        );
        let mut block = b"\x01".to_vec();
        block.extend_from_slice(line.as_bytes());
        block.extend_from_slice(b"\n{\"seq\":");
        let err = decode_block(3, &block).unwrap_err();
        assert!(err.to_string().contains("record 4"), "{err}");
        let future = line.replacen("\"trail_schema\":1", "\"trail_schema\":2", 1);
        let err = decode_line(3, future.as_bytes()).unwrap_err();
        assert!(
            matches!(err, TrailError::CheckRecordForm { seq: 3, .. }),
            "{err}"
        );
    }
}
