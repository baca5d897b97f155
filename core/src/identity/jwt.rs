//! The compact JWS serialization: `base64url(header).base64url(claims).base64url(signature)`.
//!
//! Splitting and decoding are done here, segment by segment, so that every
//! failure says which segment is wrong without quoting it. The algorithm
//! name is mapped onto [`jsonwebtoken::Algorithm`], which the verifier uses.

use std::fmt;
use std::str::FromStr as _;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::Error;

/// The largest token accepted, in bytes. Real ServiceAccount tokens are
/// 1–2 KiB; the API server itself has no smaller limit, but nothing
/// legitimate comes near this.
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// One of the three segments of a JWS, to say which one failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    /// The first: the JOSE header.
    Header,
    /// The second: the claims (payload).
    Claims,
    /// The third: the signature.
    Signature,
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Header => "header (first)",
            Self::Claims => "claims (second)",
            Self::Signature => "signature (third)",
        })
    }
}

/// The JOSE header fields that matter here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Signature algorithm, e.g. `RS256`.
    pub alg: String,
    /// Key ID, when the signer set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Type, usually `JWT` (the API server does not set it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
}

impl Header {
    /// The algorithm as `jsonwebtoken` knows it; `None` for names it does
    /// not know (ES512 among them, which the verifier handles itself).
    #[must_use]
    pub fn algorithm(&self) -> Option<jsonwebtoken::Algorithm> {
        jsonwebtoken::Algorithm::from_str(&self.alg).ok()
    }
}

/// A split and decoded token. Holds the signing input and the signature
/// only for as long as verification needs them; they are dropped with it.
pub(crate) struct ParsedJwt<'a> {
    /// The decoded header.
    pub header: Header,
    /// The decoded claims object.
    pub claims: serde_json::Value,
    /// `header.claims`, the bytes the signature covers.
    pub signing_input: &'a str,
    /// The signature segment, still base64url.
    pub signature_b64: &'a str,
    /// The decoded signature.
    pub signature: Vec<u8>,
}

impl fmt::Debug for ParsedJwt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the signing input or the signature: they are the token.
        f.debug_struct("ParsedJwt")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

/// Algorithms names that are valid JWS but are never accepted.
const REFUSED_ALGS: &[&str] = &["none", "None", "NONE", ""];

/// Splits and decodes a compact JWS. `token` must already be trimmed.
pub(crate) fn parse(token: &str) -> Result<ParsedJwt<'_>, Error> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Error::CheckInputSize {
            len: token.len(),
            max: MAX_TOKEN_BYTES,
        });
    }
    let found = token.split('.').count();
    let mut parts = token.splitn(3, '.');
    let (Some(header_b64), Some(claims_b64), Some(signature_b64), 3) =
        (parts.next(), parts.next(), parts.next(), found)
    else {
        let hint = match found {
            5 => " (5 segments is an encrypted JWE, which Kubernetes never issues)",
            2 => " (the signature segment is missing)",
            _ => "",
        };
        return Err(Error::SplitSegments { found, hint });
    };
    let header_bytes = decode_segment(header_b64, Segment::Header)?;
    let claims_bytes = decode_segment(claims_b64, Segment::Claims)?;
    let signature = decode_segment(signature_b64, Segment::Signature)?;

    let header: Header =
        serde_json::from_slice(&header_bytes).map_err(|source| Error::DecodeHeader { source })?;
    if REFUSED_ALGS.contains(&header.alg.as_str()) {
        return Err(Error::CheckAlgorithm {
            alg: header.alg,
            reason: "an unsigned token proves nothing, and the API server refuses it",
        });
    }
    if header.algorithm().is_none() && header.alg != "ES512" {
        return Err(Error::CheckAlgorithm {
            alg: header.alg.chars().take(32).collect(),
            reason: "not a JWS signature algorithm",
        });
    }
    let claims: serde_json::Value =
        serde_json::from_slice(&claims_bytes).map_err(|source| Error::DecodeClaims { source })?;
    if !claims.is_object() {
        return Err(Error::DecodeClaims {
            source: <serde_json::Error as serde::de::Error>::custom(
                "the claims are valid JSON but not an object",
            ),
        });
    }
    if signature.is_empty() {
        return Err(Error::SplitSegments {
            found: 2,
            hint: " (the signature segment is empty)",
        });
    }
    let signing_input = &token[..header_b64.len() + 1 + claims_b64.len()];
    Ok(ParsedJwt {
        header,
        claims,
        signing_input,
        signature_b64,
        signature,
    })
}

fn decode_segment(segment: &str, which: Segment) -> Result<Vec<u8>, Error> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|source| Error::DecodeBase64 {
            segment: which,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn splits_a_well_formed_token() {
        let token = format!(
            "{}.{}.{}",
            b64(r#"{"alg":"RS256","kid":"k1"}"#),
            b64(r#"{"sub":"x"}"#),
            b64("sig")
        );
        let parsed = parse(&token).expect("parses");
        assert_eq!(parsed.header.alg, "RS256");
        assert_eq!(parsed.header.kid.as_deref(), Some("k1"));
        assert_eq!(parsed.claims["sub"], "x");
        assert_eq!(parsed.signature, b"sig");
        assert!(token.starts_with(parsed.signing_input));
        assert_eq!(parsed.signing_input.matches('.').count(), 1);
    }

    #[test]
    fn names_the_failing_segment() {
        let token = format!(
            "{}.{}.{}",
            b64(r#"{"alg":"RS256"}"#),
            "not*base64",
            b64("sig")
        );
        let err = parse(&token).expect_err("bad base64");
        assert!(
            matches!(
                err,
                Error::DecodeBase64 {
                    segment: Segment::Claims,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(!err.to_string().contains("not*base64"));
    }

    #[test]
    fn refuses_none_and_unknown_algorithms() {
        for alg in ["none", "HS999"] {
            let token = format!(
                "{}.{}.{}",
                b64(&format!(r#"{{"alg":"{alg}"}}"#)),
                b64("{}"),
                b64("s")
            );
            assert!(
                matches!(parse(&token), Err(Error::CheckAlgorithm { .. })),
                "{alg}"
            );
        }
    }

    #[test]
    fn counts_segments() {
        for (token, found) in [("a.b", 2), ("a", 1), ("a.b.c.d.e", 5), ("a.b.c.d", 4)] {
            match parse(token) {
                Err(Error::SplitSegments { found: f, .. }) => assert_eq!(f, found, "{token}"),
                other => panic!("{token}: {other:?}"),
            }
        }
    }
}
