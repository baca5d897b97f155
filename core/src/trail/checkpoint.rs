//! Signed checkpoints: "this trail had its record `seq` with this hash at
//! this time", signed by the node's Ed25519 key and shipped off the node, so
//! that a trail cut short or rolled back cannot pass as intact.
//!
//! The text is a C2SP `tlog-checkpoint` wrapped in a C2SP `signed-note`
//! (the format of Certificate Transparency's successors: the Go checksum
//! database, Sigstore's Rekor):
//!
//! ```text
//! tokenwatch/trail/6f1c…          <- origin: the trail's random id, made when it was created
//! 1234                            <- tree size: the seq of the last record vouched for
//! QUvN…=                          <- root hash: base64 of that record's chain hash (not a Merkle root)
//! node worker-1                   <- extension lines
//! time 2026-05-17T10:00:00.123456789Z
//!
//! — tokenwatch/worker-1 q2bN…     <- signature: base64(4-byte key id || Ed25519 signature)
//! ```
//!
//! The key id is the first 4 bytes of SHA-256(key name || `\n` || 0x01 ||
//! public key); a verifier key is written `name+<key id hex>+<base64(0x01
//! || public key)>`, as Go's `golang.org/x/mod/sumdb/note` writes them.
//!
//! Our "root hash" is the hash chain's head at `seq`, not a Merkle tree
//! root: a checkpoint proves the trail's content up to `seq` (every record
//! chains into that hash) but there are no inclusion or consistency proofs.
//!
//! This module is pure: the note format, signing, parsing collected sink
//! output, and judging checkpoints against facts read from a trail
//! ([`TrailFacts`]). Keys on disk are the host crate's (`tokenwatch_host::trail::checkpoint_key`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Version of the checkpoint JSON line (the `schema` member).
pub const CHECKPOINT_SCHEMA_VERSION: u32 = 1;

/// `kind` of a checkpoint JSON line (trail entries have other kinds).
pub const CHECKPOINT_KIND: &str = "checkpoint";

/// Every trail origin starts with this, then the trail's random id in hex.
pub const ORIGIN_PREFIX: &str = "tokenwatch/trail/";

/// The signed-note signature type of Ed25519.
const ALG_ED25519: u8 = 0x01;

/// The dash (U+2014) and space that start a signature line.
const SIG_PREFIX: &str = "\u{2014} ";

/// Signatures read from one note at most (the C2SP limit).
const MAX_SIGNATURES: usize = 100;

/// Errors of the checkpoint format and keys.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A key name is empty, or has a space or `+`.
    #[error("invalid key name {name:?}: it must be non-empty, without spaces or '+'")]
    CheckKeyName {
        /// The name.
        name: String,
    },
    /// A verifier key is not `name+hex id+base64 key`.
    #[error("invalid verifier key {input:?}: {what}")]
    ParseVerifierKey {
        /// What was given (a public key: safe to show).
        input: String,
        /// What is wrong.
        what: &'static str,
    },
    /// A private key is not in a form we read (what is wrong is named, the
    /// key itself never is).
    #[error("invalid checkpoint signing key: {what}")]
    ParseSigningKey {
        /// What is wrong.
        what: String,
    },
    /// The OS's random source failed.
    #[error("cannot read random bytes from the OS: {detail}")]
    ReadRandom {
        /// getrandom's error.
        detail: String,
    },
    /// A note is not a signed note.
    #[error("not a signed note: {what}")]
    ParseNote {
        /// What is wrong.
        what: String,
    },
    /// A note's text is not a tokenwatch checkpoint.
    #[error("not a tokenwatch checkpoint: {what}")]
    ParseCheckpoint {
        /// What is wrong.
        what: String,
    },
    /// A checkpoint cannot be written as a note (a field has a newline, …).
    #[error("cannot write the checkpoint: {what}")]
    EncodeCheckpoint {
        /// What is wrong.
        what: String,
    },
}

fn note_error(what: impl Into<String>) -> CheckpointError {
    CheckpointError::ParseNote { what: what.into() }
}

fn checkpoint_error(what: impl Into<String>) -> CheckpointError {
    CheckpointError::ParseCheckpoint { what: what.into() }
}

/// A key name may not be empty, nor hold whitespace or `+`.
fn check_key_name(name: &str) -> Result<(), CheckpointError> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+') {
        return Err(CheckpointError::CheckKeyName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// The 4-byte key id of an Ed25519 key under `name`.
#[must_use]
pub fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ALG_ED25519]);
    h.update(public);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// Random bytes from the OS.
///
/// # Errors
/// [`CheckpointError::ReadRandom`].
pub fn random_bytes<const N: usize>() -> Result<[u8; N], CheckpointError> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| CheckpointError::ReadRandom {
        detail: e.to_string(),
    })?;
    Ok(out)
}

/// A new trail origin: [`ORIGIN_PREFIX`] and 16 random bytes in hex.
///
/// # Errors
/// [`CheckpointError::ReadRandom`].
pub fn new_origin() -> Result<String, CheckpointError> {
    Ok(format!(
        "{ORIGIN_PREFIX}{}",
        hex::encode(random_bytes::<16>()?)
    ))
}

/// A public key that checkpoints are checked with.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifierKey({self})")
    }
}

impl fmt::Display for VerifierKey {
    /// `name+<key id hex>+<base64(0x01 || public key)>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = Vec::with_capacity(33);
        raw.push(ALG_ED25519);
        raw.extend_from_slice(self.key.as_bytes());
        write!(
            f,
            "{}+{}+{}",
            self.name,
            hex::encode(self.id),
            B64.encode(raw)
        )
    }
}

impl VerifierKey {
    /// Parses `name+<key id hex>+<base64(0x01 || public key)>`.
    ///
    /// # Errors
    /// [`CheckpointError::ParseVerifierKey`] naming what is wrong.
    pub fn parse(input: &str) -> Result<Self, CheckpointError> {
        let input = input.trim();
        let bad = |what| CheckpointError::ParseVerifierKey {
            input: input.to_owned(),
            what,
        };
        let mut parts = input.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected name+keyid+key"));
        };
        check_key_name(name).map_err(|_| bad("the name is empty or has a space or '+'"))?;
        let id: [u8; 4] = hex::decode(id)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| bad("the key id is not 8 hex digits"))?;
        let raw = B64.decode(key).map_err(|_| bad("the key is not base64"))?;
        let Some((&ALG_ED25519, public)) = raw.split_first() else {
            return Err(bad("not an Ed25519 key (type byte 0x01)"));
        };
        let public: [u8; 32] = public
            .try_into()
            .map_err(|_| bad("an Ed25519 key has 32 bytes"))?;
        let key =
            VerifyingKey::from_bytes(&public).map_err(|_| bad("not a valid Ed25519 point"))?;
        if key_id(name, &public) != id {
            return Err(bad("the key id does not match the name and key"));
        }
        Ok(Self {
            name: name.to_owned(),
            id,
            key,
        })
    }

    /// The key's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key id.
    #[must_use]
    pub fn id(&self) -> [u8; 4] {
        self.id
    }

    /// The key id in hex (as in the verifier key).
    #[must_use]
    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }

    /// `sha256:<hex>` of the raw 32-byte public key.
    #[must_use]
    pub fn fingerprint(&self) -> String {
        format!(
            "sha256:{}",
            hex::encode(Sha256::digest(self.key.as_bytes()))
        )
    }

    /// The raw public key, base64.
    #[must_use]
    pub fn public_base64(&self) -> String {
        B64.encode(self.key.as_bytes())
    }

    /// Whether `sig` is this key's signature of `text`.
    fn verifies(&self, text: &str, sig: &[u8]) -> bool {
        let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else {
            return false;
        };
        self.key.verify_strict(text.as_bytes(), &sig).is_ok()
    }
}

/// The node's signing key and its name.
pub struct CheckpointSigner {
    name: String,
    key: SigningKey,
    verifier: VerifierKey,
}

impl fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the private key.
        write!(f, "CheckpointSigner({})", self.verifier)
    }
}

/// First words of a private key in the signed-note text form.
const PRIVATE_PREFIX: &str = "PRIVATE+KEY+";

impl CheckpointSigner {
    /// A signer for `key` under `name`.
    ///
    /// # Errors
    /// [`CheckpointError::CheckKeyName`].
    pub fn new(name: &str, key: SigningKey) -> Result<Self, CheckpointError> {
        check_key_name(name)?;
        let public = key.verifying_key();
        let verifier = VerifierKey {
            name: name.to_owned(),
            id: key_id(name, public.as_bytes()),
            key: public,
        };
        Ok(Self {
            name: name.to_owned(),
            key,
            verifier,
        })
    }

    /// A new key from the OS's random source.
    ///
    /// # Errors
    /// [`CheckpointError::CheckKeyName`], [`CheckpointError::ReadRandom`].
    pub fn generate(name: &str) -> Result<Self, CheckpointError> {
        let seed = zeroize::Zeroizing::new(random_bytes::<32>()?);
        Self::new(name, SigningKey::from_bytes(&seed))
    }

    /// Parses a key file: the signed-note private key form
    /// (`PRIVATE+KEY+name+<key id hex>+<base64(0x01 || seed)>`, what
    /// tokenwatch writes), or a PKCS#8 PEM Ed25519 key (`openssl genpkey
    /// -algorithm ed25519`), which gets `pem_name`.
    ///
    /// # Errors
    /// [`CheckpointError::ParseSigningKey`] naming what is wrong (never the key).
    pub fn parse(text: &str, pem_name: &str) -> Result<Self, CheckpointError> {
        let bad = |what: &str| CheckpointError::ParseSigningKey {
            what: what.to_owned(),
        };
        let text = text.trim();
        if text.starts_with("-----BEGIN") {
            use ed25519_dalek::pkcs8::DecodePrivateKey as _;
            let key = SigningKey::from_pkcs8_pem(text)
                .map_err(|_| bad("a PEM block that is not a PKCS#8 Ed25519 private key"))?;
            return Self::new(pem_name, key);
        }
        let Some(rest) = text.strip_prefix(PRIVATE_PREFIX) else {
            return Err(bad(
                "expected PRIVATE+KEY+name+keyid+key or a PKCS#8 PEM Ed25519 key",
            ));
        };
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected PRIVATE+KEY+name+keyid+key"));
        };
        check_key_name(name).map_err(|_| bad("the key name is empty or has a space or '+'"))?;
        let raw =
            zeroize::Zeroizing::new(B64.decode(key).map_err(|_| bad("the key is not base64"))?);
        let Some((&ALG_ED25519, seed)) = raw.split_first() else {
            return Err(bad("not an Ed25519 key (type byte 0x01)"));
        };
        let seed: &[u8; 32] = seed
            .try_into()
            .map_err(|_| bad("an Ed25519 private key has 32 bytes"))?;
        let signer = Self::new(name, SigningKey::from_bytes(seed))?;
        if hex::decode(id).ok().as_deref() != Some(&signer.verifier.id[..]) {
            return Err(bad("the key id does not match the name and key"));
        }
        Ok(signer)
    }

    /// The key file form (`PRIVATE+KEY+…`): a secret.
    #[must_use]
    pub fn private_text(&self) -> zeroize::Zeroizing<String> {
        let mut raw = zeroize::Zeroizing::new(Vec::with_capacity(33));
        raw.push(ALG_ED25519);
        raw.extend_from_slice(self.key.as_bytes());
        zeroize::Zeroizing::new(format!(
            "{PRIVATE_PREFIX}{}+{}+{}\n",
            self.name,
            hex::encode(self.verifier.id),
            B64.encode(raw.as_slice())
        ))
    }

    /// The public half.
    #[must_use]
    pub fn verifier(&self) -> &VerifierKey {
        &self.verifier
    }

    /// Signs a checkpoint.
    ///
    /// # Errors
    /// [`CheckpointError::EncodeCheckpoint`] when a field cannot be written.
    pub fn sign(&self, checkpoint: &Checkpoint) -> Result<SignedCheckpoint, CheckpointError> {
        let text = checkpoint.body()?;
        let sig = self.key.sign(text.as_bytes());
        let mut blob = Vec::with_capacity(68);
        blob.extend_from_slice(&self.verifier.id);
        blob.extend_from_slice(&sig.to_bytes());
        let note = format!("{text}\n{SIG_PREFIX}{} {}\n", self.name, B64.encode(blob));
        Ok(SignedCheckpoint {
            checkpoint: checkpoint.clone(),
            note,
            key: self.verifier.to_string(),
        })
    }
}

/// What a checkpoint says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The trail's origin ([`ORIGIN_PREFIX`] and its random id).
    pub origin: String,
    /// The last record vouched for (0: an empty trail).
    pub seq: u64,
    /// Its hash (lowercase hex), or 64 zeros for seq 0.
    pub hash: String,
    /// The node that signed it.
    pub node: String,
    /// When it was made, RFC 3339.
    pub time: String,
}

fn one_line(what: &str, value: &str) -> Result<(), CheckpointError> {
    if value.is_empty() || value.chars().any(char::is_control) {
        return Err(CheckpointError::EncodeCheckpoint {
            what: format!("the {what} {value:?} is empty or has a control character"),
        });
    }
    Ok(())
}

impl Checkpoint {
    /// The note text (checkpoint body), ending with a newline.
    ///
    /// # Errors
    /// [`CheckpointError::EncodeCheckpoint`]: a field is empty, has a
    /// control character or a space where none may be, or the hash is not
    /// 32 bytes of hex.
    pub fn body(&self) -> Result<String, CheckpointError> {
        one_line("origin", &self.origin)?;
        one_line("node", &self.node)?;
        one_line("time", &self.time)?;
        if self.origin.chars().any(|c| c.is_whitespace() || c == '+') {
            return Err(CheckpointError::EncodeCheckpoint {
                what: format!("the origin {:?} has a space or '+'", self.origin),
            });
        }
        let hash: [u8; 32] = hex::decode(&self.hash)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| CheckpointError::EncodeCheckpoint {
                what: format!("the hash {:?} is not 64 hex digits", self.hash),
            })?;
        Ok(format!(
            "{}\n{}\n{}\nnode {}\ntime {}\n",
            self.origin,
            self.seq,
            B64.encode(hash),
            self.node,
            self.time
        ))
    }

    /// Parses a checkpoint body (the note's text).
    ///
    /// # Errors
    /// [`CheckpointError::ParseCheckpoint`] naming the line that is wrong.
    pub fn parse_body(text: &str) -> Result<Self, CheckpointError> {
        let Some(text) = text.strip_suffix('\n') else {
            return Err(checkpoint_error("the text does not end with a newline"));
        };
        let mut lines = text.split('\n');
        let origin = lines.next().unwrap_or_default();
        if origin.is_empty() {
            return Err(checkpoint_error("line 1 (origin) is empty"));
        }
        let size = lines
            .next()
            .ok_or_else(|| checkpoint_error("line 2 (tree size) is missing"))?;
        let canonical = !size.is_empty()
            && size.bytes().all(|b| b.is_ascii_digit())
            && (size == "0" || !size.starts_with('0'));
        let seq: u64 = size.parse().ok().filter(|_| canonical).ok_or_else(|| {
            checkpoint_error(format!(
                "line 2 (tree size) {size:?} is not a decimal number"
            ))
        })?;
        let hash = lines
            .next()
            .ok_or_else(|| checkpoint_error("line 3 (root hash) is missing"))?;
        let hash: [u8; 32] = B64
            .decode(hash)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| {
                checkpoint_error(format!(
                    "line 3 (root hash) {hash:?} is not 32 bytes of base64"
                ))
            })?;
        let mut node = None;
        let mut time = None;
        for (i, line) in lines.enumerate() {
            if line.is_empty() {
                return Err(checkpoint_error(format!("line {} is empty", i + 4)));
            }
            if let Some(v) = line.strip_prefix("node ") {
                node.get_or_insert_with(|| v.to_owned());
            } else if let Some(v) = line.strip_prefix("time ") {
                time.get_or_insert_with(|| v.to_owned());
            }
            // Other extension lines are allowed and ignored.
        }
        Ok(Self {
            origin: origin.to_owned(),
            seq,
            hash: hex::encode(hash),
            node: node.ok_or_else(|| checkpoint_error("no `node` extension line"))?,
            time: time.ok_or_else(|| checkpoint_error("no `time` extension line"))?,
        })
    }
}

/// A checkpoint with its signed note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// What it says.
    pub checkpoint: Checkpoint,
    /// The signed note: body, blank line, signature line.
    pub note: String,
    /// The signer's verifier key.
    pub key: String,
}

/// A checkpoint as a sink writes it: one JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointLine {
    /// [`CHECKPOINT_SCHEMA_VERSION`].
    pub schema: u32,
    /// Always [`CHECKPOINT_KIND`].
    pub kind: String,
    /// The trail's origin.
    pub origin: String,
    /// The node.
    pub node: String,
    /// Last record vouched for.
    pub seq: u64,
    /// Its hash, hex.
    pub hash: String,
    /// When the checkpoint was made.
    pub time: String,
    /// The signer's verifier key (`name+id+key`); trust comes from a key
    /// pinned by the verifier, never from this member.
    pub key: String,
    /// The signed note: what a verifier checks (the members above are
    /// copies for log pipelines to route and search on).
    pub note: String,
}

impl SignedCheckpoint {
    /// The JSON line form.
    #[must_use]
    pub fn to_line(&self) -> CheckpointLine {
        let c = &self.checkpoint;
        CheckpointLine {
            schema: CHECKPOINT_SCHEMA_VERSION,
            kind: CHECKPOINT_KIND.to_owned(),
            origin: c.origin.clone(),
            node: c.node.clone(),
            seq: c.seq,
            hash: c.hash.clone(),
            time: c.time.clone(),
            key: self.key.clone(),
            note: self.note.clone(),
        }
    }

    /// The JSON line, without a newline.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.to_line()).unwrap_or_default()
    }
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// Key name.
    pub name: String,
    /// Key id.
    pub id: [u8; 4],
    /// The signature bytes after the key id.
    pub sig: Vec<u8>,
}

/// A signed note split into its text and signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote {
    /// The text, ending with a newline.
    pub text: String,
    /// Its signatures.
    pub signatures: Vec<NoteSignature>,
}

/// Parses a signed note: text, a blank line, signature lines.
///
/// # Errors
/// [`CheckpointError::ParseNote`] naming what is wrong.
pub fn parse_note(note: &str) -> Result<SignedNote, CheckpointError> {
    if note.chars().any(|c| c.is_control() && c != '\n') {
        return Err(note_error("it has a control character other than newline"));
    }
    let Some(split) = note.rfind("\n\n") else {
        return Err(note_error("no blank line before the signatures"));
    };
    let (text, sigs) = note.split_at(split + 1);
    let sigs = &sigs[1..];
    if !sigs.ends_with('\n') {
        return Err(note_error(
            "the last signature line does not end with a newline",
        ));
    }
    let mut signatures = Vec::new();
    for line in sigs[..sigs.len() - 1].split('\n') {
        let Some(rest) = line.strip_prefix(SIG_PREFIX) else {
            return Err(note_error(format!(
                "signature line {line:?} does not start with \"\u{2014} \""
            )));
        };
        let Some((name, blob)) = rest.split_once(' ') else {
            return Err(note_error(format!(
                "signature line {line:?} has no signature"
            )));
        };
        check_key_name(name)
            .map_err(|_| note_error(format!("signature line {line:?}: bad key name")))?;
        let blob = B64
            .decode(blob)
            .map_err(|_| note_error(format!("signature line {line:?}: not base64")))?;
        let Some((id, sig)) = blob.split_first_chunk::<4>() else {
            return Err(note_error(format!(
                "signature line {line:?}: shorter than a key id"
            )));
        };
        if signatures.len() == MAX_SIGNATURES {
            return Err(note_error("more than 100 signatures"));
        }
        signatures.push(NoteSignature {
            name: name.to_owned(),
            id: *id,
            sig: sig.to_vec(),
        });
    }
    if signatures.is_empty() {
        return Err(note_error("no signature"));
    }
    Ok(SignedNote {
        text: text.to_owned(),
        signatures,
    })
}

/// A checkpoint read from collected output, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collected {
    /// `file:line`.
    pub source: String,
    /// The note.
    pub note: SignedNote,
    /// What its text says.
    pub checkpoint: Checkpoint,
}

/// Something that looked like a checkpoint but did not parse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unreadable {
    /// `file:line`.
    pub source: String,
    /// Why.
    pub error: String,
}

/// Checkpoints found in collected output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectedSet {
    /// The checkpoints, in the order read.
    pub checkpoints: Vec<Collected>,
    /// Lines that claimed to be checkpoints and were not.
    pub unreadable: Vec<Unreadable>,
}

fn parse_signed(note: &str) -> Result<(SignedNote, Checkpoint), CheckpointError> {
    let note = parse_note(note)?;
    let checkpoint = Checkpoint::parse_body(&note.text)?;
    Ok((note, checkpoint))
}

/// The note of a JSON line: a checkpoint line, or a log pipeline's wrapper
/// (`log`, `message` or `body` holding the line as a string), one level deep.
fn json_note(value: &serde_json::Value, depth: u8) -> Option<Result<String, String>> {
    let obj = value.as_object()?;
    if obj.get("kind").and_then(|k| k.as_str()) == Some(CHECKPOINT_KIND) {
        return Some(
            obj.get("note")
                .and_then(|n| n.as_str())
                .map(str::to_owned)
                .ok_or_else(|| "a checkpoint line without a `note` string".to_owned()),
        );
    }
    if depth > 0 {
        return None;
    }
    ["log", "message", "body"].iter().find_map(|k| {
        let inner = obj.get(*k)?.as_str()?.trim();
        if !inner.starts_with('{') {
            return None;
        }
        json_note(&serde_json::from_str(inner).ok()?, depth + 1)
    })
}

impl CollectedSet {
    /// Reads one file of collected output (`name` says where in messages):
    /// JSON lines (checkpoint lines among trail entries and other lines,
    /// or wrapped by a log pipeline) and signed notes in text. Other lines
    /// are skipped.
    pub fn read(&mut self, name: &str, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        let lines: Vec<&str> = text.split('\n').collect();
        let mut i = 0;
        while i < lines.len() {
            let line = lines[i].strip_suffix('\r').unwrap_or(lines[i]);
            let source = format!("{name}:{}", i + 1);
            let trimmed = line.trim();
            if trimmed.starts_with('{') {
                if let Ok(value) = serde_json::from_str::<serde_json::Value>(trimmed)
                    && let Some(note) = json_note(&value, 0)
                {
                    match note
                        .map_err(|e| e.clone())
                        .and_then(|n| parse_signed(&n).map_err(|e| e.to_string()))
                    {
                        Ok((note, checkpoint)) => self.checkpoints.push(Collected {
                            source,
                            note,
                            checkpoint,
                        }),
                        Err(error) => self.unreadable.push(Unreadable { source, error }),
                    }
                }
                i += 1;
                continue;
            }
            if trimmed.is_empty() {
                i += 1;
                continue;
            }
            // A text note: lines up to a blank line, then signature lines.
            let start = i;
            let mut j = i;
            while j < lines.len() && !lines[j].is_empty() && !lines[j].trim_start().starts_with('{')
            {
                j += 1;
            }
            if j + 1 < lines.len() && lines[j].is_empty() && lines[j + 1].starts_with(SIG_PREFIX) {
                let mut k = j + 1;
                while k < lines.len() && lines[k].starts_with(SIG_PREFIX) {
                    k += 1;
                }
                let mut note = lines[start..k].join("\n");
                note.push('\n');
                match parse_signed(&note) {
                    Ok((note, checkpoint)) => self.checkpoints.push(Collected {
                        source,
                        note,
                        checkpoint,
                    }),
                    Err(e) => self.unreadable.push(Unreadable {
                        source,
                        error: e.to_string(),
                    }),
                }
                i = k;
            } else {
                i = j.max(i + 1);
            }
        }
    }
}

/// Why a checkpoint is not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotTrustedReason {
    /// Signed by a trusted key, for another trail (another node, or an
    /// earlier trail of this one).
    OtherOrigin,
    /// No signature by a trusted key.
    UnknownKey,
    /// A signature names a trusted key but does not verify: forged or damaged.
    BadSignature,
}

impl NotTrustedReason {
    /// Kebab-case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OtherOrigin => "other-origin",
            Self::UnknownKey => "unknown-key",
            Self::BadSignature => "bad-signature",
        }
    }
}

/// Which key vouches for a note, if any.
enum KeyCheck {
    Signed,
    Unknown,
    Bad,
}

fn check_keys(note: &SignedNote, keys: &[VerifierKey]) -> KeyCheck {
    let mut bad = false;
    for sig in &note.signatures {
        for key in keys.iter().filter(|k| k.name == sig.name && k.id == sig.id) {
            if key.verifies(&note.text, &sig.sig) {
                return KeyCheck::Signed;
            }
            bad = true;
        }
    }
    if bad {
        KeyCheck::Bad
    } else {
        KeyCheck::Unknown
    }
}

/// What a verifier knows about the trail it checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrailFacts {
    /// The trail's origin, when known (a data dir); `None` for an export,
    /// where it is inferred from the checkpoints that match.
    pub origin: Option<String>,
    /// Last record in the trail (0: none).
    pub last_seq: u64,
    /// Seq and hash of the last record retention deleted.
    pub anchor: Option<(u64, String)>,
    /// Hashes of the records asked for by [`needed_seqs`] that the trail has.
    pub hashes: BTreeMap<u64, String>,
}

/// The seqs whose hashes the judgement needs: those of checkpoints signed by
/// a trusted key (and of `origin`, when known).
#[must_use]
pub fn needed_seqs(
    set: &CollectedSet,
    keys: &[VerifierKey],
    origin: Option<&str>,
) -> BTreeSet<u64> {
    set.checkpoints
        .iter()
        .filter(|c| origin.is_none_or(|o| c.checkpoint.origin == o))
        .filter(|c| matches!(check_keys(&c.note, keys), KeyCheck::Signed))
        .map(|c| c.checkpoint.seq)
        .collect()
}

/// A checkpoint, named in a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRef {
    /// Last record it vouches for.
    pub seq: u64,
    /// That record's hash, as the checkpoint says.
    pub hash: String,
    /// When it was made.
    pub time: String,
    /// The node that signed it.
    pub node: String,
    /// Its origin.
    pub origin: String,
    /// Where it was read (`file:line`).
    pub source: String,
}

impl fmt::Display for CheckpointRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "checkpoint of record {} at {} (node {}, {})",
            self.seq, self.time, self.node, self.source
        )
    }
}

impl From<&Collected> for CheckpointRef {
    fn from(c: &Collected) -> Self {
        let k = &c.checkpoint;
        Self {
            seq: k.seq,
            hash: k.hash.clone(),
            time: k.time.clone(),
            node: k.node.clone(),
            origin: k.origin.clone(),
            source: c.source.clone(),
        }
    }
}

/// How a trusted checkpoint fails to match the trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckpointProblem {
    /// The trail ends before the checkpoint's record: cut short, or rolled
    /// back to an older copy.
    Truncated,
    /// The trail has the record with another hash: rewritten or forked.
    Forked,
}

impl CheckpointProblem {
    /// Kebab-case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::Forked => "forked",
        }
    }
}

/// A trusted checkpoint the trail cannot match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointFailure {
    /// The checkpoint.
    pub checkpoint: CheckpointRef,
    /// How it fails.
    pub problem: CheckpointProblem,
    /// In words.
    pub detail: String,
}

/// Checkpoints not used, grouped by origin, node and reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotTrusted {
    /// Their origin.
    pub origin: String,
    /// Their node.
    pub node: String,
    /// Why they are not used.
    pub reason: NotTrustedReason,
    /// How many.
    pub count: usize,
    /// The key names that signed them.
    pub keys: Vec<String>,
    /// Where the first was read.
    pub first_source: String,
}

/// The judgement of collected checkpoints against one trail.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointReport {
    /// The trail's origin (known or inferred).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The keys trusted (verifier key form).
    pub trusted_keys: Vec<String>,
    /// Distinct checkpoints read.
    pub read: usize,
    /// Trusted checkpoints of this trail that match it.
    pub matched: usize,
    /// Trusted checkpoints of records retention has deleted (not checkable).
    pub pruned: usize,
    /// The highest matching checkpoint below any failure: the trail is
    /// vouched for up to its record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vouched: Option<CheckpointRef>,
    /// Last record of the trail.
    pub last_seq: u64,
    /// Records after the vouched one: appended after the last checkpoint
    /// that reached the verifier (after a `kill -9`, or not collected yet).
    /// Not evidence of tampering, but nothing outside the node vouches for them.
    pub unvouched_records: u64,
    /// Trusted checkpoints the trail cannot match, lowest seq first.
    pub failures: Vec<CheckpointFailure>,
    /// Checkpoints not used.
    pub not_trusted: Vec<NotTrusted>,
    /// Lines that claimed to be checkpoints and did not parse.
    pub unreadable: Vec<Unreadable>,
}

impl CheckpointReport {
    /// No trusted checkpoint fails.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The origin of an export: the one origin among trusted checkpoints that
/// has at least one match in `facts.hashes`. `None` when there is none, or
/// more than one (the caller asks for `--origin`).
#[must_use]
pub fn infer_origin(set: &CollectedSet, keys: &[VerifierKey], facts: &TrailFacts) -> Vec<String> {
    let mut origins = BTreeSet::new();
    for c in &set.checkpoints {
        let k = &c.checkpoint;
        if facts.hashes.get(&k.seq) == Some(&k.hash)
            && matches!(check_keys(&c.note, keys), KeyCheck::Signed)
        {
            origins.insert(k.origin.clone());
        }
    }
    origins.into_iter().collect()
}

/// Judges collected checkpoints against a trail: each one signed by a
/// trusted key for `facts.origin` must name a record the trail has, with
/// the same hash (records before the retention anchor cannot be checked).
#[must_use]
pub fn judge(set: &CollectedSet, keys: &[VerifierKey], facts: &TrailFacts) -> CheckpointReport {
    let mut seen = BTreeSet::new();
    let mut report = CheckpointReport {
        origin: facts.origin.clone(),
        trusted_keys: keys.iter().map(ToString::to_string).collect(),
        last_seq: facts.last_seq,
        unreadable: set.unreadable.clone(),
        ..CheckpointReport::default()
    };
    let mut matched: Vec<CheckpointRef> = Vec::new();
    let mut not_trusted: BTreeMap<(String, String, NotTrustedReason), NotTrusted> = BTreeMap::new();
    for c in &set.checkpoints {
        let k = &c.checkpoint;
        // The stdout and file sinks both collected: one checkpoint, twice.
        if !seen.insert((k.origin.clone(), k.seq, k.hash.clone(), k.time.clone())) {
            continue;
        }
        report.read += 1;
        let reason = match check_keys(&c.note, keys) {
            KeyCheck::Signed if Some(&k.origin) == facts.origin.as_ref() => None,
            KeyCheck::Signed => Some(NotTrustedReason::OtherOrigin),
            KeyCheck::Unknown => Some(NotTrustedReason::UnknownKey),
            KeyCheck::Bad => Some(NotTrustedReason::BadSignature),
        };
        if let Some(reason) = reason {
            let entry = not_trusted
                .entry((k.origin.clone(), k.node.clone(), reason))
                .or_insert_with(|| NotTrusted {
                    origin: k.origin.clone(),
                    node: k.node.clone(),
                    reason,
                    count: 0,
                    keys: Vec::new(),
                    first_source: c.source.clone(),
                });
            entry.count += 1;
            for s in &c.note.signatures {
                if !entry.keys.contains(&s.name) {
                    entry.keys.push(s.name.clone());
                }
            }
            continue;
        }
        let r = CheckpointRef::from(c);
        if let Some((anchor_seq, anchor_hash)) = &facts.anchor
            && k.seq <= *anchor_seq
        {
            if k.seq == *anchor_seq && *anchor_hash != k.hash {
                report.failures.push(CheckpointFailure {
                    detail: format!(
                        "the retention anchor (record {}) has hash {anchor_hash}, the checkpoint says {}",
                        k.seq, k.hash
                    ),
                    checkpoint: r,
                    problem: CheckpointProblem::Forked,
                });
            } else {
                report.pruned += 1;
            }
            continue;
        }
        if k.seq == 0 {
            // The empty trail: every trail starts there.
            matched.push(r);
            continue;
        }
        match facts.hashes.get(&k.seq) {
            Some(h) if *h == k.hash => matched.push(r),
            Some(h) => report.failures.push(CheckpointFailure {
                detail: format!(
                    "record {} hashes to {h} in the trail, the checkpoint says {}: the trail was rewritten or rolled back and continued (forked)",
                    k.seq, k.hash
                ),
                checkpoint: r,
                problem: CheckpointProblem::Forked,
            }),
            None if k.seq > facts.last_seq => report.failures.push(CheckpointFailure {
                detail: format!(
                    "the trail ends at record {}, but this checkpoint vouches for records up to {}: {} records were cut off or the trail was rolled back",
                    facts.last_seq,
                    k.seq,
                    k.seq - facts.last_seq
                ),
                checkpoint: r,
                problem: CheckpointProblem::Truncated,
            }),
            None => report.failures.push(CheckpointFailure {
                detail: format!(
                    "record {} is not in the trail (it ends at record {})",
                    k.seq, facts.last_seq
                ),
                checkpoint: r,
                problem: CheckpointProblem::Truncated,
            }),
        }
    }
    report.failures.sort_by_key(|f| f.checkpoint.seq);
    let limit = report
        .failures
        .first()
        .map_or(u64::MAX, |f| f.checkpoint.seq);
    report.matched = matched.len();
    report.vouched = matched
        .into_iter()
        .filter(|r| r.seq < limit)
        .max_by(|a, b| a.seq.cmp(&b.seq).then_with(|| a.time.cmp(&b.time)));
    let vouched_seq = report
        .vouched
        .as_ref()
        .map_or_else(|| facts.anchor.as_ref().map_or(0, |a| a.0), |v| v.seq);
    report.unvouched_records = facts.last_seq.saturating_sub(vouched_seq);
    report.not_trusted = not_trusted.into_values().collect();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(seq: u64, hash_byte: u8) -> Checkpoint {
        Checkpoint {
            origin: format!("{ORIGIN_PREFIX}00112233445566778899aabbccddeeff"),
            seq,
            hash: hex::encode([hash_byte; 32]),
            node: "node-ä".to_owned(),
            time: "2026-05-17T10:00:00.123456789Z".to_owned(),
        }
    }

    #[test]
    fn note_round_trip_and_key_forms() {
        let signer = CheckpointSigner::generate("tokenwatch/node-a").unwrap();
        let signed = signer.sign(&cp(42, 7)).unwrap();
        let note = parse_note(&signed.note).unwrap();
        assert_eq!(Checkpoint::parse_body(&note.text).unwrap(), cp(42, 7));
        assert_eq!(note.signatures.len(), 1);
        assert_eq!(note.signatures[0].sig.len(), 64);
        let v = VerifierKey::parse(&signer.verifier().to_string()).unwrap();
        assert_eq!(&v, signer.verifier());
        assert!(matches!(
            check_keys(&note, std::slice::from_ref(&v)),
            KeyCheck::Signed
        ));
        let again = CheckpointSigner::parse(&signer.private_text(), "x").unwrap();
        assert_eq!(again.verifier(), signer.verifier());
        // The text changed by one byte no longer verifies.
        let mut forged = note.clone();
        forged.text = forged.text.replace("\n42\n", "\n43\n");
        assert!(matches!(check_keys(&forged, &[v]), KeyCheck::Bad));
        // Debug never shows the private key.
        assert!(!format!("{signer:?}").contains(&signer.private_text()[12..]));
    }

    #[test]
    fn key_id_is_the_c2sp_one() {
        // SHA-256("name" || 0x0A || 0x01 || key)[..4], computed here by hand.
        let public = [9u8; 32];
        let mut input = b"k\n\x01".to_vec();
        input.extend_from_slice(&public);
        assert_eq!(key_id("k", &public), Sha256::digest(&input)[..4]);
    }

    #[test]
    fn bad_input_is_named_not_a_panic() {
        for (text, want) in [
            ("", "no blank line"),
            ("a\n\n\u{2014} k\n", "no signature"),
            ("a\n\n\u{2014} k AAAA\n", "shorter than a key id"),
            ("a\n\nxx k AAAAAA==\n", "does not start"),
            ("a\u{7}\n\n\u{2014} k AAAAAA==\n", "control character"),
            ("a\n\n\u{2014} k AAAAAA==", "does not end with a newline"),
        ] {
            let err = parse_note(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        for (body, want) in [
            ("o\n01\nAAAA\n", "line 2"),
            ("o\n1\nAAAA\n", "line 3"),
            ("o\n1\n", "line 3"),
            ("\n", "line 1"),
            ("o\n1", "newline"),
            (
                "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\ntime x\n",
                "node",
            ),
        ] {
            let err = Checkpoint::parse_body(body).unwrap_err().to_string();
            assert!(err.contains(want), "{body:?}: {err}");
        }
        for key in ["", "a+b", "a+zz+AQ==", "é+00000000+AQ=="] {
            assert!(VerifierKey::parse(key).is_err(), "{key}");
        }
        assert!(CheckpointSigner::parse("PRIVATE+KEY+a+00+AQ==", "x").is_err());
        let err = CheckpointSigner::parse("hunter2", "x")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn collected_json_wrapped_and_text_notes() {
        let signer = CheckpointSigner::generate("k").unwrap();
        let a = signer.sign(&cp(1, 1)).unwrap();
        let b = signer.sign(&cp(2, 2)).unwrap();
        let wrapped = serde_json::json!({"log": a.to_json(), "stream": "stdout"}).to_string();
        let text = format!(
            "{{\"schema\":1,\"kind\":\"token-read\"}}\n{}\n{wrapped}\nnot json\n\n{}{{\"kind\":\"checkpoint\",\"note\":\"garbage\"}}\n",
            a.to_json(),
            b.note
        );
        let mut set = CollectedSet::default();
        set.read("out.jsonl", text.as_bytes());
        let seqs: Vec<u64> = set.checkpoints.iter().map(|c| c.checkpoint.seq).collect();
        assert_eq!(seqs, [1, 1, 2]);
        assert_eq!(set.checkpoints[2].source, "out.jsonl:6");
        assert_eq!(set.unreadable.len(), 1);
        assert_eq!(set.unreadable[0].source, "out.jsonl:13");
    }

    #[test]
    fn judgement() {
        let signer = CheckpointSigner::generate("k").unwrap();
        let other = CheckpointSigner::generate("k").unwrap();
        let keys = [signer.verifier().clone()];
        let mut set = CollectedSet::default();
        let mut text = String::new();
        for (s, seq, byte) in [(&signer, 5, 5), (&signer, 10, 10), (&other, 99, 1)] {
            text.push_str(&s.sign(&cp(seq, byte)).unwrap().to_json());
            text.push('\n');
        }
        let mut foreign = cp(7, 7);
        foreign.origin = format!("{ORIGIN_PREFIX}ff");
        text.push_str(&signer.sign(&foreign).unwrap().to_json());
        set.read("c", text.as_bytes());
        let mut facts = TrailFacts {
            origin: Some(cp(0, 0).origin),
            last_seq: 12,
            anchor: None,
            hashes: BTreeMap::new(),
        };
        for seq in needed_seqs(&set, &keys, facts.origin.as_deref()) {
            facts
                .hashes
                .insert(seq, hex::encode([u8::try_from(seq).unwrap(); 32]));
        }
        let r = judge(&set, &keys, &facts);
        assert!(r.passed(), "{r:?}");
        assert_eq!(r.vouched.as_ref().map(|v| v.seq), Some(10));
        assert_eq!(r.unvouched_records, 2);
        assert_eq!(r.not_trusted.len(), 2);
        // Cut back to record 8: the checkpoint of record 10 is named.
        facts.last_seq = 8;
        facts.hashes.remove(&10);
        let r = judge(&set, &keys, &facts);
        assert_eq!(r.failures.len(), 1);
        assert_eq!(r.failures[0].problem, CheckpointProblem::Truncated);
        assert_eq!(r.failures[0].checkpoint.seq, 10);
        assert_eq!(r.vouched.as_ref().map(|v| v.seq), Some(5));
        // Record 5 rewritten.
        facts.hashes.insert(5, hex::encode([0u8; 32]));
        let r = judge(&set, &keys, &facts);
        assert_eq!(r.failures[0].problem, CheckpointProblem::Forked);
        assert_eq!(r.vouched, None);
        assert_eq!(infer_origin(&set, &keys, &facts), Vec::<String>::new());
    }
}

#[cfg(test)]
mod seeds {
    use super::*;

    /// The fuzz target's seeds (non-ASCII key name and node) are real,
    /// verifying checkpoints in every collected form.
    #[test]
    fn fuzz_seeds_are_signed_checkpoints() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/trail_checkpoint");
        let key = VerifierKey::parse(&std::fs::read_to_string(dir.join("verifier_key")).unwrap())
            .unwrap();
        assert_eq!(key.name(), "tokenwatch/nœud-ä");
        for seed in ["json_line", "note", "wrapped"] {
            let mut set = CollectedSet::default();
            set.read(seed, &std::fs::read(dir.join(seed)).unwrap());
            assert_eq!(set.checkpoints.len(), 1, "{seed}");
            let c = &set.checkpoints[0];
            assert_eq!(c.checkpoint.node, "nœud-ä-日本");
            assert!(matches!(
                check_keys(&c.note, std::slice::from_ref(&key)),
                KeyCheck::Signed
            ));
        }
    }
}
