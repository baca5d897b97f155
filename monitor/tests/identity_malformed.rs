//! A corpus of malformed tokens: each gets its own clear error, none panics,
//! and no message quotes the token. The same corpus through the real
//! `tokenwatch decode` binary exits 2 with the message on stderr.

use tokenwatch_test_support::tokens as identity_common;

use std::io::Write as _;
use std::process::{Command, Stdio};

use identity_common::*;
use tokenwatch_core::identity::{
    Error, Identity, KeySet, MAX_INPUT_BYTES, Segment, token_from_input,
};

const SIG: &[u8] = b"0123456789abcdef0123456789abcdef";

struct Case {
    name: &'static str,
    input: Vec<u8>,
    check: fn(&Error) -> bool,
    message: &'static str,
}

fn corpus() -> Vec<Case> {
    let good_header = r#"{"alg":"RS256","kid":"k"}"#;
    let good_claims = bound_claims(1_800_000_000, 3600).to_string();
    let good = raw_token(good_header, &good_claims, SIG);
    let parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    vec![
        Case {
            name: "two segments",
            input: format!("{}.{}", parts[0], parts[1]).into_bytes(),
            check: |e| matches!(e, Error::SplitSegments { found: 2, .. }),
            message: "this one has 2",
        },
        Case {
            name: "encrypted JWE (five segments)",
            input: format!("{good}.AAAA.BBBB").into_bytes(),
            check: |e| matches!(e, Error::SplitSegments { found: 5, .. }),
            message: "encrypted JWE",
        },
        Case {
            name: "bad base64 in the header",
            input: format!("{}!.{}.{}", parts[0], parts[1], parts[2]).into_bytes(),
            check: |e| {
                matches!(
                    e,
                    Error::DecodeBase64 {
                        segment: Segment::Header,
                        ..
                    }
                )
            },
            message: "the header (first) segment is not base64url",
        },
        Case {
            name: "bad base64 in the claims",
            input: format!("{}.{}$$.{}", parts[0], parts[1], parts[2]).into_bytes(),
            check: |e| {
                matches!(
                    e,
                    Error::DecodeBase64 {
                        segment: Segment::Claims,
                        ..
                    }
                )
            },
            message: "the claims (second) segment is not base64url",
        },
        Case {
            name: "bad base64 in the signature",
            input: format!("{}.{}.{}=", parts[0], parts[1], parts[2]).into_bytes(),
            check: |e| {
                matches!(
                    e,
                    Error::DecodeBase64 {
                        segment: Segment::Signature,
                        ..
                    }
                )
            },
            message: "the signature (third) segment is not base64url",
        },
        Case {
            name: "claims not JSON",
            input: raw_token(good_header, "this is not json", SIG).into_bytes(),
            check: |e| matches!(e, Error::DecodeClaims { .. }),
            message: "the claims segment is not valid JWT claims",
        },
        Case {
            name: "claims a JSON array",
            input: raw_token(good_header, "[1,2]", SIG).into_bytes(),
            check: |e| matches!(e, Error::DecodeClaims { .. }),
            message: "not an object",
        },
        Case {
            name: "header not JSON",
            input: raw_token("{alg:RS256", &good_claims, SIG).into_bytes(),
            check: |e| matches!(e, Error::DecodeHeader { .. }),
            message: "the header is not a valid JWS header",
        },
        Case {
            name: "header without alg",
            input: raw_token(r#"{"kid":"k"}"#, &good_claims, SIG).into_bytes(),
            check: |e| matches!(e, Error::DecodeHeader { .. }),
            message: "missing field `alg`",
        },
        Case {
            name: "alg none",
            input: format!("{}.{}.", base64_url(r#"{"alg":"none"}"#), parts[1]).into_bytes(),
            check: |e| matches!(e, Error::CheckAlgorithm { .. }),
            message: "algorithm \"none\" is not accepted",
        },
        Case {
            name: "alg none with a signature",
            input: raw_token(r#"{"alg":"none"}"#, &good_claims, SIG).into_bytes(),
            check: |e| matches!(e, Error::CheckAlgorithm { .. }),
            message: "algorithm \"none\" is not accepted",
        },
        Case {
            name: "unknown alg",
            input: raw_token(r#"{"alg":"RS1024"}"#, &good_claims, SIG).into_bytes(),
            check: |e| matches!(e, Error::CheckAlgorithm { .. }),
            message: "not a JWS signature algorithm",
        },
        Case {
            name: "empty signature",
            input: format!("{}.{}.", parts[0], parts[1]).into_bytes(),
            check: |e| matches!(e, Error::SplitSegments { .. }),
            message: "signature segment is empty",
        },
        Case {
            name: "bound token without the ServiceAccount name",
            input: raw_token(
                good_header,
                r#"{"kubernetes.io":{"namespace":"ns","serviceaccount":{"uid":"u"}}}"#,
                SIG,
            )
            .into_bytes(),
            check: |e| {
                matches!(
                    e,
                    Error::FindClaim {
                        claim: "kubernetes.io.serviceaccount.name"
                    }
                )
            },
            message: "lacks the kubernetes.io.serviceaccount.name claim",
        },
        Case {
            name: "legacy issuer without its claims",
            input: raw_token(
                good_header,
                r#"{"iss":"kubernetes/serviceaccount","sub":"system:serviceaccount:a:b"}"#,
                SIG,
            )
            .into_bytes(),
            check: |e| matches!(e, Error::FindClaim { .. }),
            message: "lacks the kubernetes.io/serviceaccount/namespace claim",
        },
        Case {
            name: "exp not a number",
            input: raw_token(good_header, r#"{"sub":"x","exp":"tomorrow"}"#, SIG).into_bytes(),
            check: |e| matches!(e, Error::DecodeClaims { .. }),
            message: "the claims segment is not valid JWT claims",
        },
        Case {
            name: "huge input",
            input: vec![b'A'; MAX_INPUT_BYTES + 10],
            check: |e| matches!(e, Error::CheckInputSize { .. }),
            message: "larger than the",
        },
        Case {
            name: "huge token",
            input: raw_token(
                good_header,
                &format!(r#"{{"pad":"{}"}}"#, "x".repeat(70_000)),
                SIG,
            )
            .into_bytes(),
            check: |e| matches!(e, Error::CheckInputSize { .. }),
            message: "larger than the 65536 accepted",
        },
        Case {
            name: "non-UTF-8",
            input: [good.as_bytes(), &[0xff, 0xfe]].concat(),
            check: |e| matches!(e, Error::DecodeUtf8 { .. }),
            message: "not UTF-8",
        },
        Case {
            name: "empty",
            input: b"\n".to_vec(),
            check: |e| matches!(e, Error::FindToken),
            message: "input is empty",
        },
        Case {
            name: "not a token at all",
            input: b"hello world".to_vec(),
            check: |e| {
                matches!(
                    e,
                    Error::ReadSecretToken { .. } | Error::DecodeManifest { .. }
                )
            },
            message: "neither a JWT nor",
        },
    ]
}

fn base64_url(s: &str) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, s)
}

fn decode(input: Vec<u8>) -> Result<Identity, Error> {
    token_from_input(input).and_then(|t| Identity::from_token(&t, &KeySet::new()))
}

#[test]
fn each_malformed_token_gets_its_clear_error() {
    for case in corpus() {
        let quoted: Vec<String> = String::from_utf8_lossy(&case.input)
            .split('.')
            .filter(|p| p.len() > 16)
            .map(|p| p[..16].to_owned())
            .collect();
        let err = match decode(case.input) {
            Ok(identity) => panic!("{}: parsed as {:?}", case.name, identity.kind),
            Err(err) => err,
        };
        assert!((case.check)(&err), "{}: wrong error {err:?}", case.name);
        let text = tokenwatch_core::error::error_chain(&err);
        assert!(
            text.contains(case.message),
            "{}: {text:?} lacks {:?}",
            case.name,
            case.message
        );
        for piece in quoted {
            assert!(
                !text.contains(&piece),
                "{}: message quotes the token: {text}",
                case.name
            );
        }
    }
}

#[test]
fn a_wrong_kid_is_reported_not_an_error() {
    let token = sign(
        jsonwebtoken::Algorithm::RS256,
        &k8s_rsa_signing_key(),
        Some("wrong-kid"),
        &bound_claims(1_800_000_000, 3600),
    );
    let mut keys = KeySet::new();
    keys.add_pem_file(&k8s_key("rsa-public.pem")).expect("pem");
    let identity = Identity::from_token(&secret(&token), &keys).expect("parses");
    assert_eq!(
        identity.signature,
        tokenwatch_core::identity::SignatureCheck::UnknownKeyId {
            kid: "wrong-kid".to_owned()
        }
    );
}

#[test]
fn the_binary_exits_2_with_the_message_for_each_case() {
    for case in corpus() {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
            .args(["decode", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tokenwatch");
        let mut stdin = child.stdin.take().expect("stdin");
        // The binary may stop reading a huge input early: ignore EPIPE.
        let _ = stdin.write_all(&case.input);
        drop(stdin);
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", case.name);
        assert!(stderr.contains(case.message), "{}: {stderr}", case.name);
        assert!(out.stdout.is_empty(), "{}: printed a report", case.name);
        assert!(!stderr.contains("panicked"), "{}: {stderr}", case.name);
    }
}
