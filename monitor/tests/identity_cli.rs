//! `tokenwatch decode` through the real binary: inputs (file, stdin,
//! Secret manifest), formats, exit codes, `--at`, and no token echo.

use tokenwatch_test_support::tokens as identity_common;

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use identity_common::*;

fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tokenwatch");
    let mut pipe = child.stdin.take().expect("stdin");
    if let Some(input) = stdin {
        // The binary may exit before reading (bad keys): a broken pipe is fine.
        if let Err(err) = pipe.write_all(input) {
            assert_eq!(
                err.kind(),
                std::io::ErrorKind::BrokenPipe,
                "write stdin: {err}"
            );
        }
    }
    drop(pipe);
    child.wait_with_output().expect("wait")
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn eks_token_verified_with_pinned_clock_in_json() {
    let token = fixture("portswigger-tim-nats-k8s-oidc-callout/token.jwt");
    let jwks = fixture("portswigger-tim-nats-k8s-oidc-callout/jwks.json");
    let out = run(
        &[
            "decode",
            path(&token),
            "--jwks",
            path(&jwks),
            "--at",
            "2025-11-24T08:37:58Z",
            "-o",
            "json",
        ],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(report["kind"], "bound");
    assert_eq!(report["signature"]["result"], "verified");
    assert_eq!(report["validity"]["state"], "valid");
    assert_eq!(report["validity"]["description"], "expires in 23h");
    assert_eq!(
        report["user"]["username"],
        "system:serviceaccount:hakawai:hakawai-litellm-proxy"
    );
    assert_eq!(
        report["user"]["extra"]["authentication.kubernetes.io/credential-id"][0],
        "JTI=1b20f55e-e39a-4010-96e3-5bba8e300ae7"
    );
    assert_eq!(report["jti"], "1b20f55e-e39a-4010-96e3-5bba8e300ae7");
    assert!(
        report["fingerprint"]
            .as_str()
            .is_some_and(|f| f.starts_with("sha256:") && f.len() == 71)
    );

    // Real clock: expired, still exit 0 (it parsed and verified).
    let out = run(
        &["decode", path(&token), "--jwks", path(&jwks), "-o", "yaml"],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    let report: serde_yaml_ng::Value = serde_yaml_ng::from_slice(&out.stdout).expect("yaml report");
    assert_eq!(report["validity"]["state"].as_str(), Some("expired"));
}

#[test]
fn table_output_for_people() {
    let token = fixture("published-legacy-token/sa-example.jwt");
    let out = run(&["decode", path(&token)], None);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "legacy",
        "system:serviceaccount:default:sa-example",
        "system:serviceaccounts:default",
        "system:authenticated",
        "never expires",
        "not checked",
        "legacy Secret-based token",
    ] {
        assert!(text.contains(needle), "table lacks {needle:?}:\n{text}");
    }
}

#[test]
fn failed_verification_exits_1_and_names_the_reason() {
    let token = fixture("published-legacy-token/sa-example.jwt");
    let out = run(
        &[
            "decode",
            path(&token),
            "--key",
            path(&k8s_key("rsa-public.pem")),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown key id"));

    let forged = sign(
        jsonwebtoken::Algorithm::RS256,
        &jsonwebtoken::EncodingKey::from_rsa_pem(rsa_pair(2048).private_pem.as_bytes())
            .expect("key"),
        Some(K8S_RSA_KID),
        &bound_claims(1_800_000_000, 3600),
    );
    let out = run(
        &[
            "decode",
            "-",
            "--key",
            path(&k8s_key("rsa-private.pem")),
            "-o",
            "json",
        ],
        Some(forged.as_bytes()),
    );
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["signature"]["result"], "invalid-signature");
}

#[test]
fn secret_manifest_on_stdin() {
    let token = sign(
        jsonwebtoken::Algorithm::ES256,
        &k8s_ec_signing_key(),
        Some(K8S_EC_KID),
        &legacy_claims("my-ecdsa-secret"),
    );
    let data = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &token);
    let manifest = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: my-ecdsa-secret\n  namespace: test\n  annotations:\n    kubernetes.io/service-account.name: my-service-account\ntype: kubernetes.io/service-account-token\ndata:\n  ca.crt: AAAA\n  namespace: dGVzdA==\n  token: {data}\n"
    );
    let out = run(
        &[
            "decode",
            "--jwks",
            path(&k8s_key("jwks.json")),
            "-o",
            "json",
        ],
        Some(manifest.as_bytes()),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["kind"], "legacy");
    assert_eq!(report["signature"]["result"], "verified");
    assert_eq!(report["signature"]["kid"], K8S_EC_KID);
    let printed = String::from_utf8_lossy(&out.stdout);
    let signature = token.rsplit('.').next().expect("sig");
    assert!(!printed.contains(signature), "the token was echoed");
}

#[test]
fn audience_flag_and_bad_keys() {
    let token = sign(
        jsonwebtoken::Algorithm::RS256,
        &k8s_rsa_signing_key(),
        Some(K8S_RSA_KID),
        &bound_claims(1_800_000_000, 3600),
    );
    let out = run(
        &[
            "decode",
            "--audience",
            "https://other.example",
            "--at",
            "1800000100",
            "-o",
            "json",
        ],
        Some(token.as_bytes()),
    );
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let kinds: Vec<&str> = report["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .filter_map(|w| w["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["audience"]);

    let dir = tempfile::tempdir().expect("tmp");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a key").expect("write");
    let out = run(&["decode", "--key", path(&junk)], Some(token.as_bytes()));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no RSA or ECDSA"));
    let out = run(&["decode", path(&dir.path().join("missing"))], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read token file"));
}
