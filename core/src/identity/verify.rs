//! Signature verification, with the API server's key selection: a token
//! with a `kid` is checked against the keys with that ID only; a token
//! without one against every key. Only the algorithms the API server
//! accepts for ServiceAccount tokens count: RS256/384/512, PS256/384/512,
//! ES256/384/512. HMAC and EdDSA never verify, whatever the keys.
//!
//! The cryptography is `ring`'s for RSA keys of 2048 bits and more and for
//! P-256/P-384, on material built when the keys were loaded (`keys::Material`);
//! smaller RSA keys and P-521 use pure-Rust crates.

use ring::signature::RsaParameters;
use serde::Serialize;

use super::jwt::ParsedJwt;
use super::keys::{KeySet, Material};

/// The signature result of one token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum SignatureCheck {
    /// A key verified the signature.
    Verified {
        /// The key's ID.
        kid: Option<String>,
        /// Where the key came from.
        origin: String,
    },
    /// Keys matched the token's `kid` (or it had none), none verified.
    InvalidSignature {
        /// How many keys were tried.
        tried: usize,
    },
    /// No key has the token's `kid`.
    UnknownKeyId {
        /// The token's `kid`.
        kid: String,
    },
    /// The algorithm is one the API server never accepts for ServiceAccount
    /// tokens (HMAC, EdDSA).
    AlgorithmNotAccepted {
        /// The `alg` header.
        alg: String,
    },
    /// No keys were given.
    NotChecked,
}

impl SignatureCheck {
    /// Whether verification was attempted and failed (`decode` exits 1).
    #[must_use]
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Self::InvalidSignature { .. }
                | Self::UnknownKeyId { .. }
                | Self::AlgorithmNotAccepted { .. }
        )
    }

    /// Whether a key verified the signature.
    #[must_use]
    pub fn is_verified(&self) -> bool {
        matches!(self, Self::Verified { .. })
    }

    /// The result in plain words.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::Verified {
                kid: Some(kid),
                origin,
            } => format!("verified (key {kid} from {origin})"),
            Self::Verified { kid: None, origin } => format!("verified (key from {origin})"),
            Self::InvalidSignature { tried } => {
                format!("invalid signature ({tried} candidate key(s) tried)")
            }
            Self::UnknownKeyId { kid } => format!("unknown key id {kid}"),
            Self::AlgorithmNotAccepted { alg } => {
                format!("not verified: the API server never accepts {alg} signatures")
            }
            Self::NotChecked => "not checked (no keys given)".to_owned(),
        }
    }
}

/// The algorithms kube-apiserver accepts on ServiceAccount tokens.
pub const ACCEPTED_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
];

/// Verifies a parsed token against `keys`.
pub(crate) fn check(parsed: &ParsedJwt<'_>, keys: &KeySet) -> SignatureCheck {
    if keys.is_empty() {
        return SignatureCheck::NotChecked;
    }
    let alg = parsed.header.alg.as_str();
    if !ACCEPTED_ALGORITHMS.contains(&alg) {
        return SignatureCheck::AlgorithmNotAccepted {
            alg: alg.to_owned(),
        };
    }
    let kid = parsed.header.kid.as_deref().filter(|k| !k.is_empty());
    let candidates: Vec<_> = keys
        .keys()
        .iter()
        .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
        .collect();
    if let (Some(kid), true) = (kid, candidates.is_empty()) {
        return SignatureCheck::UnknownKeyId {
            kid: kid.to_owned(),
        };
    }
    let message = parsed.signing_input.as_bytes();
    for key in &candidates {
        if !key.key_type.fits(alg) {
            continue;
        }
        let ok = match &key.material {
            Material::Rsa(components) => rsa_parameters(alg).is_some_and(|parameters| {
                components
                    .verify(parameters, message, &parsed.signature)
                    .is_ok()
            }),
            Material::RsaLegacy(decoding) => parsed.header.algorithm().is_some_and(|algorithm| {
                jsonwebtoken::crypto::verify(parsed.signature_b64, message, decoding, algorithm)
                    .unwrap_or(false)
            }),
            Material::Ec(public) => public.verify(message, &parsed.signature).is_ok(),
            Material::P521(verifying) => {
                use p521::ecdsa::signature::Verifier as _;
                p521::ecdsa::Signature::from_slice(&parsed.signature)
                    .is_ok_and(|sig| verifying.verify(message, &sig).is_ok())
            }
        };
        if ok {
            return SignatureCheck::Verified {
                kid: key.kid.clone(),
                origin: key.origin.clone(),
            };
        }
    }
    SignatureCheck::InvalidSignature {
        tried: candidates.len(),
    }
}

/// `ring`'s parameters for an RSA algorithm name; `None` for the others.
fn rsa_parameters(alg: &str) -> Option<&'static RsaParameters> {
    use ring::signature as s;
    Some(match alg {
        "RS256" => &s::RSA_PKCS1_2048_8192_SHA256,
        "RS384" => &s::RSA_PKCS1_2048_8192_SHA384,
        "RS512" => &s::RSA_PKCS1_2048_8192_SHA512,
        "PS256" => &s::RSA_PSS_2048_8192_SHA256,
        "PS384" => &s::RSA_PSS_2048_8192_SHA384,
        "PS512" => &s::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}
