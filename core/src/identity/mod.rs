//! Token identity: who a ServiceAccount token says it is, and whether to
//! believe it.
//!
//! A raw token (a compact JWS) goes in as a [`secrecy::SecretString`]; an
//! [`Identity`] comes out: the header (`alg`, `kid`), the claims, the kind
//! ([`TokenKind::Legacy`], [`TokenKind::Bound`] or [`TokenKind::Other`]), the
//! Kubernetes user the API server would build from it ([`UserInfo`]), the
//! signature result when keys are given ([`SignatureCheck`]), a SHA-256
//! fingerprint and the JTI. Validity depends on the clock, so it is computed
//! on demand ([`Identity::validity_at`]) with the API server's one-minute
//! leeway.
//!
//! The token itself is never kept, printed or logged: only the claims, the
//! fingerprint and the JTI survive parsing, and no error carries more of the
//! token than the name of the segment that failed.
//!
//! Submodules, in the order a token passes through them:
//! - `input`: a token file, stdin, or a `Secret` manifest -> the token;
//! - `jwt`: the compact serialization -> header, claims, signing input;
//! - `claims`: claims -> kind and [`ClaimsSummary`];
//! - `user`: claims -> [`UserInfo`], as the API server builds it;
//! - `keys` and `verify`: PEM keys, JWKS, OIDC discovery -> [`SignatureCheck`];
//! - `validity`: the time checks;
//! - `cache`: [`IdentityCache`], one parse per (dev, ino, mtime);
//! - `report`: what `tokenwatch decode` prints.

use std::path::PathBuf;

mod cache;
mod claims;
mod input;
mod jwt;
mod keys;
mod report;
mod user;
mod validity;
mod verify;

pub use cache::{FileId, IdentityCache};
pub use claims::{ClaimsSummary, ObjectRef, TokenKind};
pub use input::{MAX_INPUT_BYTES, read_token_input, token_from_input};
pub use jwt::{Header, MAX_TOKEN_BYTES, Segment};
pub use keys::{KeySet, PublicKey};
pub use report::{Report, Warning, WarningKind};
pub use user::UserInfo;
pub use validity::{LEEWAY_SECS, Validity, ValidityState, describe_duration};
pub use verify::SignatureCheck;

use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};

/// Everything that can go wrong while reading, parsing or verifying a
/// token, or while loading the keys to verify it with.
///
/// No variant holds the token or a piece of it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading a token file (or a `Secret` manifest) failed.
    #[error("cannot read token file {}", path.display())]
    ReadTokenFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Reading the token from standard input failed.
    #[error("cannot read the token from standard input")]
    ReadStdin {
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `stat` on a token file failed (the cache needs dev, ino and mtime).
    #[error("cannot stat token file {}", path.display())]
    StatTokenFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The input is larger than any ServiceAccount token or Secret manifest.
    #[error("input is {len} bytes or more, larger than the {max} accepted")]
    CheckInputSize {
        /// Bytes seen (a lower bound when reading stopped early).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The input is not UTF-8 text.
    #[error("input is not UTF-8 text (invalid byte at offset {offset})")]
    DecodeUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// The input is empty or only whitespace.
    #[error("input is empty: expected a JWT or a Secret manifest")]
    FindToken,
    /// The input looked like a manifest but is not valid YAML or JSON. Only
    /// the position is reported: the parser's own message could quote the
    /// token.
    #[error(
        "input is neither a JWT nor a valid YAML/JSON Secret manifest (parse error at line {line}, column {column})"
    )]
    DecodeManifest {
        /// 1-based line of the parse error (0 when unknown).
        line: usize,
        /// 1-based column of the parse error (0 when unknown).
        column: usize,
    },
    /// The manifest is valid YAML/JSON but not a Secret with a token.
    #[error("manifest is not a Secret with a token: {reason}")]
    ReadSecretToken {
        /// What is missing, e.g. "no data.token".
        reason: &'static str,
    },
    /// `data.token` of a Secret is not valid standard base64.
    #[error("data.token of the Secret is not valid base64")]
    DecodeSecretData {
        /// The base64 error (offsets only).
        #[source]
        source: base64::DecodeError,
    },
    /// The token does not have the three dot-separated segments of a JWS.
    #[error(
        "a JWT has 3 dot-separated segments (header.claims.signature), this one has {found}{hint}"
    )]
    SplitSegments {
        /// Segments found.
        found: usize,
        /// Extra explanation, e.g. that 5 segments is an encrypted JWE.
        hint: &'static str,
    },
    /// A segment is not unpadded base64url.
    #[error("the {segment} segment is not base64url")]
    DecodeBase64 {
        /// Which segment.
        segment: Segment,
        /// The base64 error (symbol and offset only).
        #[source]
        source: base64::DecodeError,
    },
    /// The header segment is not a JSON object with a string `alg`.
    #[error("the header is not a valid JWS header")]
    DecodeHeader {
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The claims segment is not a JSON object of the expected shape.
    #[error("the claims segment is not valid JWT claims")]
    DecodeClaims {
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The header names an algorithm that is refused (`none`) or unknown.
    #[error("algorithm {alg:?} is not accepted: {reason}")]
    CheckAlgorithm {
        /// The `alg` header value (at most 32 characters of it).
        alg: String,
        /// Why.
        reason: &'static str,
    },
    /// A ServiceAccount token lacks a claim the API server requires.
    #[error("ServiceAccount token lacks the {claim} claim")]
    FindClaim {
        /// The claim's path, e.g. `kubernetes.io.serviceaccount.name`.
        claim: &'static str,
    },
    /// Reading a key file, JWKS file or CA bundle failed.
    #[error("cannot read {}", path.display())]
    ReadKeyFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file could not be parsed.
    #[error("{} is not valid PEM", path.display())]
    DecodePem {
        /// The file.
        path: PathBuf,
        /// The PEM error.
        #[source]
        source: pem::PemError,
    },
    /// A PEM block holds a key that could not be decoded.
    #[error("{}: cannot decode the {label} block", path.display())]
    DecodeKey {
        /// The file.
        path: PathBuf,
        /// The PEM label, e.g. `PUBLIC KEY`.
        label: String,
        /// Why.
        #[source]
        source: KeyDecodeError,
    },
    /// A key file holds no RSA or ECDSA key.
    #[error("{} holds no RSA or ECDSA public or private key", path.display())]
    FindKey {
        /// The file.
        path: PathBuf,
    },
    /// A JWKS document is not a JSON object with a `keys` array.
    #[error("{source_name} is not a JWKS document")]
    DecodeJwks {
        /// Where the document came from (a path or URL).
        source_name: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A CA bundle holds no certificate or a broken one.
    #[error("{} is not a PEM CA bundle", path.display())]
    DecodeCaBundle {
        /// The file.
        path: PathBuf,
        /// Why, when the parser said.
        #[source]
        source: Option<ureq::Error>,
    },
    /// An HTTP request of the OIDC discovery failed.
    #[error("cannot fetch {url}")]
    FetchDiscovery {
        /// The URL.
        url: String,
        /// The HTTP error.
        #[source]
        source: Box<ureq::Error>,
    },
    /// The discovery document is not valid JSON with `issuer` and `jwks_uri`.
    #[error("{url} is not an OpenID discovery document")]
    DecodeDiscovery {
        /// The URL.
        url: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The discovery document names another issuer than the one asked for.
    #[error("discovery document at {url} is for issuer {found:?}, not {expected:?}")]
    CheckDiscoveryIssuer {
        /// The URL.
        url: String,
        /// The issuer asked for.
        expected: String,
        /// The issuer in the document.
        found: String,
    },
}

/// Why a key could not be decoded (the crypto crates' errors, unified).
#[derive(Debug, thiserror::Error)]
pub enum KeyDecodeError {
    /// PKCS#1 DER.
    #[error(transparent)]
    Pkcs1(#[from] rsa::pkcs1::Error),
    /// PKCS#8 / SEC1 private key DER.
    #[error(transparent)]
    Pkcs8(#[from] rsa::pkcs8::Error),
    /// SubjectPublicKeyInfo DER.
    #[error(transparent)]
    Spki(#[from] rsa::pkcs8::spki::Error),
    /// An elliptic-curve point or scalar.
    #[error("invalid elliptic-curve key")]
    Curve,
    /// A JWK's fields.
    #[error(transparent)]
    Jwk(#[from] jsonwebtoken::errors::Error),
    /// A key type or curve the API server does not sign with.
    #[error("unsupported key: {0}")]
    Unsupported(String),
}

/// What a token is, who it says it is, and whether its signature checks out.
///
/// Built once per token by [`Identity::from_token`]; holds no part of the
/// token but its decoded header and claims.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Identity {
    /// Legacy, bound or other.
    pub kind: TokenKind,
    /// The JOSE header.
    pub header: Header,
    /// The claims, summarised and typed.
    pub summary: ClaimsSummary,
    /// The whole claims object, as decoded (what jwt.io shows).
    pub claims: serde_json::Value,
    /// The user the API server would authenticate; `None` for other JWTs.
    pub user: Option<UserInfo>,
    /// The signature result.
    pub signature: SignatureCheck,
    /// `sha256:<hex>` of the token's bytes.
    pub fingerprint: String,
}

impl Identity {
    /// Parses, classifies and (when `keys` holds any) verifies a token.
    ///
    /// # Errors
    /// Any [`Error`] of the parsing family: size, segments, base64, JSON,
    /// algorithm, missing claim. Signature failures are not errors: they are
    /// reported in [`Identity::signature`].
    pub fn from_token(token: &SecretString, keys: &KeySet) -> Result<Self, Error> {
        let raw = token.expose_secret().trim();
        let parsed = jwt::parse(raw)?;
        let (kind, summary) = claims::classify(&parsed.claims)?;
        let user = user::UserInfo::from_summary(kind, &summary);
        let signature = verify::check(&parsed, keys);
        let fingerprint = fingerprint(raw);
        Ok(Self {
            kind,
            header: parsed.header,
            summary,
            claims: parsed.claims,
            user,
            signature,
            fingerprint,
        })
    }

    /// The JWT ID (`jti`), the key that joins with API-server audit logs.
    #[must_use]
    pub fn jti(&self) -> Option<&str> {
        self.summary.jti.as_deref()
    }

    /// The time checks at `now` (Unix seconds), with the API server's
    /// one-minute leeway.
    #[must_use]
    pub fn validity_at(&self, now: i64) -> Validity {
        Validity::check(self.kind, &self.summary, now)
    }

    /// The time checks on the real clock.
    #[must_use]
    pub fn validity_now(&self) -> Validity {
        self.validity_at(unix_now())
    }
}

/// `sha256:<hex>` of a token, after trimming surrounding whitespace (a
/// token file may end with a newline; the API server trims it too).
#[must_use]
pub fn fingerprint(token: &str) -> String {
    let digest = Sha256::digest(token.trim().as_bytes());
    format!("sha256:{}", hex::encode(digest))
}

/// The real clock in Unix seconds.
#[must_use]
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
