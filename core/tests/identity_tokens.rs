//! Real tokens, real keys: the EKS bound token and its JWKS, the published
//! legacy token, tokens minted with Kubernetes' own test keys, and tokens
//! signed with keys generated here, in both layouts and every algorithm
//! family the API server signs with.

use tokenwatch_test_support::tokens as identity_common;

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use identity_common::*;
use jsonwebtoken::Algorithm;
use secrecy::SecretString;
use tokenwatch_core::identity::{
    Identity, KeySet, Report, SignatureCheck, TokenKind, ValidityState, WarningKind, fingerprint,
};

const EKS_IAT: i64 = 1_763_969_878;

/// The token with one bit of its signature flipped.
fn tamper_signature(token: &str) -> String {
    let (signed, signature) = token.rsplit_once('.').expect("signature");
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).expect("base64url");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(bytes))
}

fn eks_token() -> SecretString {
    let text = std::fs::read_to_string(fixture("portswigger-tim-nats-k8s-oidc-callout/token.jwt"))
        .expect("token");
    SecretString::from(text)
}

fn eks_keys() -> KeySet {
    let mut keys = KeySet::new();
    keys.add_jwks_file(&fixture("portswigger-tim-nats-k8s-oidc-callout/jwks.json"))
        .expect("jwks");
    keys
}

#[test]
fn eks_bound_token_verifies_and_expires() {
    let identity = Identity::from_token(&eks_token(), &eks_keys()).expect("parses");
    assert_eq!(identity.kind, TokenKind::Bound);
    assert_eq!(identity.header.alg, "RS256");
    assert_eq!(
        identity.header.kid.as_deref(),
        Some("e3b1d185e0d794058a6346c32b2575ac0efb622e")
    );
    match &identity.signature {
        SignatureCheck::Verified { kid, .. } => {
            assert_eq!(
                kid.as_deref(),
                Some("e3b1d185e0d794058a6346c32b2575ac0efb622e")
            );
        }
        other => panic!("not verified: {other:?}"),
    }
    // Pinned clock: one hour after issue it is valid, 23 h left.
    let pinned = identity.validity_at(EKS_IAT + 3600);
    assert_eq!(pinned.state, ValidityState::Valid);
    assert_eq!(pinned.description, "expires in 23h");
    // The real clock: it expired on 2025-11-25.
    let now = identity.validity_now();
    assert_eq!(now.state, ValidityState::Expired, "{now:?}");
    assert!(
        now.description.starts_with("expired "),
        "{}",
        now.description
    );

    let user = identity.user.as_ref().expect("user");
    assert_eq!(
        user.username,
        "system:serviceaccount:hakawai:hakawai-litellm-proxy"
    );
    assert_eq!(
        user.groups,
        [
            "system:serviceaccounts",
            "system:serviceaccounts:hakawai",
            "system:authenticated"
        ]
    );
    assert_eq!(
        user.uid.as_deref(),
        Some("8180de1d-6687-4024-8c6c-bb5d4700897a")
    );
    assert_eq!(
        user.credential_id(),
        Some("JTI=1b20f55e-e39a-4010-96e3-5bba8e300ae7")
    );
    assert_eq!(
        user.extra["authentication.kubernetes.io/pod-name"],
        ["hakawai-litellm-proxy-57456bb9cb-bwzxh"]
    );
    assert_eq!(
        user.extra["authentication.kubernetes.io/node-name"],
        ["ip-10-15-179-190.eu-west-1.compute.internal"]
    );
    assert_eq!(user.extra.len(), 5);
    assert_eq!(identity.jti(), Some("1b20f55e-e39a-4010-96e3-5bba8e300ae7"));

    // The IRSA token's audience is AWS STS, not the API server.
    let report = Report::new(&identity, EKS_IAT + 3600, &[]);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.kind == WarningKind::Audience)
    );
    let report = Report::new(&identity, EKS_IAT + 3600, &["sts.amazonaws.com".to_owned()]);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
}

#[test]
fn eks_token_with_tampered_claims_fails() {
    use secrecy::ExposeSecret as _;
    let token = eks_token();
    let parts: Vec<&str> = token.expose_secret().trim().split('.').collect();
    let mut claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, parts[1])
            .expect("b64"),
    )
    .expect("json");
    claims["kubernetes.io"]["namespace"] = "kube-system".into();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            claims.to_string()
        ),
        parts[2]
    );
    let identity = Identity::from_token(&secret(&forged), &eks_keys()).expect("parses");
    assert_eq!(
        identity.signature,
        SignatureCheck::InvalidSignature { tried: 1 }
    );
    assert!(identity.signature.is_failure());
}

#[test]
fn published_legacy_token_is_never_verified() {
    let text =
        std::fs::read_to_string(fixture("published-legacy-token/sa-example.jwt")).expect("token");
    let token = SecretString::from(text.clone());
    let identity = Identity::from_token(&token, &KeySet::new()).expect("parses");
    assert_eq!(identity.kind, TokenKind::Legacy);
    let user = identity.user.as_ref().expect("user");
    assert_eq!(user.username, "system:serviceaccount:default:sa-example");
    assert_eq!(
        user.uid.as_deref(),
        Some("5c67e9c7-0b12-44ae-a97e-f2ee4cd061b0")
    );
    assert!(user.extra.is_empty(), "legacy tokens carry no extras");
    assert_eq!(identity.signature, SignatureCheck::NotChecked);
    assert_eq!(identity.validity_now().state, ValidityState::NeverExpires);
    assert_eq!(identity.fingerprint, fingerprint(&text));
    assert!(identity.jti().is_none());
    let report = Report::new(&identity, 0, &[]);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.kind == WarningKind::LegacyToken)
    );

    // With keys that are not its cluster's: unknown key id, not verified.
    let mut keys = KeySet::new();
    keys.add_jwks_file(&k8s_key("jwks.json")).expect("jwks");
    keys.add_pem_file(&k8s_key("rsa-public.pem")).expect("pem");
    let identity = Identity::from_token(&token, &keys).expect("parses");
    assert_eq!(
        identity.signature,
        SignatureCheck::UnknownKeyId {
            kid: "zJ3j5Yx6oZpCIrN3VUN0R5316njkt-VDBSjlnG-cquE".to_owned()
        }
    );
}

#[test]
fn legacy_tokens_minted_with_kubernetes_test_keys_verify() {
    let cases = [
        (
            Algorithm::RS256,
            k8s_rsa_signing_key(),
            K8S_RSA_KID,
            "rsa-public.pem",
            "my-rsa-secret",
        ),
        (
            Algorithm::ES256,
            k8s_ec_signing_key(),
            K8S_EC_KID,
            "ecdsa-p256-public.pem",
            "my-ecdsa-secret",
        ),
    ];
    for (alg, key, kid, public, secret_name) in cases {
        let token = sign(alg, &key, Some(kid), &legacy_claims(secret_name));
        for keys in [
            {
                let mut k = KeySet::new();
                k.add_pem_file(&k8s_key(public)).expect("pem");
                k
            },
            {
                let mut k = KeySet::new();
                k.add_jwks_file(&k8s_key("jwks.json")).expect("jwks");
                k
            },
        ] {
            let identity = Identity::from_token(&secret(&token), &keys).expect("parses");
            assert_eq!(identity.kind, TokenKind::Legacy, "{alg:?}");
            assert!(
                identity.signature.is_verified(),
                "{alg:?}: {:?}",
                identity.signature
            );
            let user = identity.user.as_ref().expect("user");
            assert_eq!(
                user.username,
                "system:serviceaccount:test:my-service-account"
            );
            assert_eq!(
                identity.summary.secret.as_ref().map(|s| s.name.as_str()),
                Some(secret_name)
            );
        }
        // The other key of the pair set: the kid does not match.
        let mut other = KeySet::new();
        other
            .add_pem_file(&k8s_key("other-rsa-public.pem"))
            .expect("pem");
        let identity = Identity::from_token(&secret(&token), &other).expect("parses");
        assert!(
            matches!(identity.signature, SignatureCheck::UnknownKeyId { .. }),
            "{alg:?}"
        );
    }
}

#[test]
fn bound_tokens_with_generated_keys_in_every_family() {
    let dir = tempfile::tempdir().expect("tmp");
    let iat = 1_800_000_000;
    let claims = bound_claims(iat, 3607);
    let rsa = rsa_pair(2048);
    let ec256 = p256_pair();
    let ec384 = p384_pair();
    let (wrong_rsa, wrong256, wrong384) = (rsa_pair(2048), p256_pair(), p384_pair());
    let cases = [
        (Algorithm::RS256, &rsa),
        (Algorithm::RS384, &rsa),
        (Algorithm::RS512, &rsa),
        (Algorithm::PS256, &rsa),
        (Algorithm::PS384, &rsa),
        (Algorithm::PS512, &rsa),
        (Algorithm::ES256, &ec256),
        (Algorithm::ES384, &ec384),
    ];
    for (i, (alg, pair)) in cases.into_iter().enumerate() {
        let public = pair.write_public(dir.path(), &format!("key-{i}.pem"));
        let mut keys = KeySet::new();
        keys.add_pem_file(&public).expect("public key");
        let kid = keys.keys()[0].kid.clone();
        // With the API server's kid, without a kid (every key is tried), and
        // with a kid no key has.
        for (token_kid, expect_verified) in
            [(kid.as_deref(), true), (None, true), (Some("nope"), false)]
        {
            let token = sign(alg, &pair.encoding_key(alg), token_kid, &claims);
            let identity = Identity::from_token(&secret(&token), &keys).expect("parses");
            assert_eq!(identity.kind, TokenKind::Bound);
            assert_eq!(
                identity.signature.is_verified(),
                expect_verified,
                "{alg:?} {token_kid:?}: {:?}",
                identity.signature
            );
        }
        // The right key, a signature with one bit flipped.
        let token = sign(alg, &pair.encoding_key(alg), kid.as_deref(), &claims);
        let identity =
            Identity::from_token(&secret(&tamper_signature(&token)), &keys).expect("parses");
        assert_eq!(
            identity.signature,
            SignatureCheck::InvalidSignature { tried: 1 },
            "{alg:?} tampered"
        );
        // Wrong key of the same family.
        let wrong = match alg {
            Algorithm::ES256 => &wrong256,
            Algorithm::ES384 => &wrong384,
            _ => &wrong_rsa,
        };
        let mut wrong_keys = KeySet::new();
        wrong_keys
            .add_pem_file(&wrong.write_public(dir.path(), "wrong.pem"))
            .expect("pem");
        let token = sign(alg, &pair.encoding_key(alg), None, &claims);
        let identity = Identity::from_token(&secret(&token), &wrong_keys).expect("parses");
        assert_eq!(
            identity.signature,
            SignatureCheck::InvalidSignature { tried: 1 },
            "{alg:?}"
        );
    }
    // Time checks on the minted token: leeway and warnafter.
    let token = sign(
        Algorithm::RS256,
        &rsa.encoding_key(Algorithm::RS256),
        None,
        &claims,
    );
    let identity = Identity::from_token(&secret(&token), &KeySet::new()).expect("parses");
    assert_eq!(identity.validity_at(iat - 60).state, ValidityState::Valid);
    assert_eq!(
        identity.validity_at(iat - 61).state,
        ValidityState::NotYetValid
    );
    assert_eq!(
        identity.validity_at(iat + 3607 + 60).state,
        ValidityState::Stale
    );
    assert_eq!(
        identity.validity_at(iat + 3607 + 61).state,
        ValidityState::Expired
    );
    assert_eq!(identity.validity_at(iat + 7).description, "expires in 1h");
    assert_eq!(identity.validity_at(iat + 600).state, ValidityState::Valid);
}

#[test]
fn es512_is_verified_with_p521() {
    use p521::ecdsa::signature::Signer as _;
    let secret_key = p521::SecretKey::random(&mut p521::elliptic_curve::rand_core::OsRng);
    let signing = p521::ecdsa::SigningKey::from_bytes(&secret_key.to_bytes()).expect("signing key");
    let public = secret_key.public_key();
    let pem = rsa::pkcs8::EncodePublicKey::to_public_key_pem(&public, rsa::pkcs8::LineEnding::LF)
        .expect("pem");
    let mut keys = KeySet::new();
    keys.add_pem(pem.as_bytes(), std::path::Path::new("p521.pem"))
        .expect("p521 key");
    let header = r#"{"alg":"ES512"}"#;
    let claims = bound_claims(1_800_000_000, 3600).to_string();
    let unsigned = raw_token(header, &claims, b"x");
    let signing_input = &unsigned[..unsigned.rfind('.').expect("dot")];
    let signature: p521::ecdsa::Signature = signing.sign(signing_input.as_bytes());
    let token = raw_token(header, &claims, &signature.to_bytes());
    let identity = Identity::from_token(&secret(&token), &keys).expect("parses");
    assert!(identity.signature.is_verified(), "{:?}", identity.signature);
    let identity = Identity::from_token(&secret(&tamper_signature(&token)), &keys).expect("parses");
    assert_eq!(
        identity.signature,
        SignatureCheck::InvalidSignature { tried: 1 }
    );
    let mut other = KeySet::new();
    other
        .add_pem_file(&k8s_key("ecdsa-p256-public.pem"))
        .expect("pem");
    let identity = Identity::from_token(&secret(&token), &other).expect("parses");
    assert_eq!(
        identity.signature,
        SignatureCheck::InvalidSignature { tried: 1 }
    );
}

#[test]
fn rsa_keys_under_2048_bits_verify_on_the_pure_rust_path() {
    // ring refuses them; the API server's Go crypto verifies with them.
    let claims = bound_claims(1_800_000_000, 3607);
    let pair = rsa_pair(1024);
    let mut keys = KeySet::new();
    keys.add_pem(pair.public_pem.as_bytes(), Path::new("rsa-1024.pem"))
        .expect("pem");
    // No PS512: its padding needs a modulus of at least 1,040 bits.
    for alg in [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
    ] {
        let token = sign(alg, &pair.encoding_key(alg), None, &claims);
        let identity = Identity::from_token(&secret(&token), &keys).expect("parses");
        assert!(
            identity.signature.is_verified(),
            "{alg:?}: {:?}",
            identity.signature
        );
        let identity =
            Identity::from_token(&secret(&tamper_signature(&token)), &keys).expect("parses");
        assert_eq!(
            identity.signature,
            SignatureCheck::InvalidSignature { tried: 1 },
            "{alg:?} tampered"
        );
    }
}

#[test]
fn jwks_modulus_with_a_leading_zero_verifies() {
    use rsa::pkcs8::DecodePublicKey as _;
    use rsa::traits::PublicKeyParts as _;
    let pair = rsa_pair(2048);
    let public = rsa::RsaPublicKey::from_public_key_pem(&pair.public_pem).expect("spki");
    let n: Vec<u8> = std::iter::once(0).chain(public.n().to_bytes_be()).collect();
    let jwks = serde_json::json!({"keys": [{
        "kty": "RSA", "kid": "padded", "use": "sig",
        "n": URL_SAFE_NO_PAD.encode(n),
        "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
    }]});
    let mut keys = KeySet::new();
    let added = keys
        .add_jwks(jwks.to_string().as_bytes(), "padded.json")
        .expect("jwks");
    assert_eq!(added, 1);
    let claims = bound_claims(1_800_000_000, 3607);
    for alg in [Algorithm::RS256, Algorithm::PS256] {
        let token = sign(alg, &pair.encoding_key(alg), Some("padded"), &claims);
        let identity = Identity::from_token(&secret(&token), &keys).expect("parses");
        assert!(
            identity.signature.is_verified(),
            "{alg:?}: {:?}",
            identity.signature
        );
    }
}

#[test]
fn hmac_tokens_never_verify() {
    let claims = bound_claims(1_800_000_000, 3600);
    let token = sign(
        Algorithm::HS256,
        &jsonwebtoken::EncodingKey::from_secret(b"shared"),
        None,
        &claims,
    );
    let mut keys = KeySet::new();
    keys.add_pem_file(&k8s_key("rsa-public.pem")).expect("pem");
    let identity = Identity::from_token(&secret(&token), &keys).expect("parses");
    assert_eq!(
        identity.signature,
        SignatureCheck::AlgorithmNotAccepted {
            alg: "HS256".to_owned()
        }
    );
    let report = Report::new(&identity, 1_800_000_000, &[]);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.kind == WarningKind::Algorithm)
    );
}

#[test]
fn other_jwts_are_reported_as_such() {
    let claims = serde_json::json!({"iss": "https://accounts.example", "sub": "alice", "aud": "app", "exp": 1_800_000_000});
    let token = sign(Algorithm::RS256, &k8s_rsa_signing_key(), None, &claims);
    let identity = Identity::from_token(&secret(&token), &KeySet::new()).expect("parses");
    assert_eq!(identity.kind, TokenKind::Other);
    assert!(identity.user.is_none());
    let report = Report::new(&identity, 1_700_000_000, &[]);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.kind == WarningKind::NotServiceAccount)
    );
}

#[test]
fn nothing_of_the_token_is_kept() {
    let token = sign(
        Algorithm::RS256,
        &k8s_rsa_signing_key(),
        Some(K8S_RSA_KID),
        &bound_claims(1_800_000_000, 3600),
    );
    let signature = token.rsplit('.').next().expect("signature");
    let identity = Identity::from_token(&secret(&token), &KeySet::new()).expect("parses");
    let report = Report::new(&identity, 1_800_000_000, &[]);
    for text in [
        format!("{identity:?}"),
        serde_json::to_string(&identity).expect("json"),
        serde_json::to_string(&report).expect("json"),
        report.to_table().to_string(),
    ] {
        assert!(!text.contains(signature), "signature leaked");
        assert!(!text.contains(&token[..40]), "token leaked");
    }
}
