//! Token minting for tests: fixture paths, real key generation (RSA,
//! P-256, P-384, P-521) and tokens in both ServiceAccount layouts, signed
//! with keys made in the test or with Kubernetes' own test keys.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
use secrecy::SecretString;
use serde_json::{Value, json};

/// `tests/fixtures/tokens/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/tokens"
    ))
    .join(rel)
}

/// Kubernetes' own SA test key file.
pub fn k8s_key(name: &str) -> PathBuf {
    fixture(&format!("kubernetes-serviceaccount-test-keys/{name}"))
}

/// A key pair made for a test: PKCS#8 private PEM (for jsonwebtoken),
/// SPKI public PEM (for tokenwatch).
pub struct KeyPair {
    pub private_pem: String,
    pub public_pem: String,
}

impl KeyPair {
    pub fn encoding_key(&self, alg: Algorithm) -> EncodingKey {
        match alg {
            Algorithm::ES256 | Algorithm::ES384 => {
                EncodingKey::from_ec_pem(self.private_pem.as_bytes())
            }
            _ => EncodingKey::from_rsa_pem(self.private_pem.as_bytes()),
        }
        .expect("encoding key")
    }

    /// Writes the public key to `dir/name` and returns the path.
    pub fn write_public(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.public_pem).expect("write public key");
        path
    }
}

pub fn rsa_pair(bits: usize) -> KeyPair {
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits).expect("rsa key");
    KeyPair {
        private_pem: key.to_pkcs8_pem(LineEnding::LF).expect("pkcs8").to_string(),
        public_pem: key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("spki"),
    }
}

pub fn p256_pair() -> KeyPair {
    let key = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    KeyPair {
        private_pem: key.to_pkcs8_pem(LineEnding::LF).expect("pkcs8").to_string(),
        public_pem: key
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("spki"),
    }
}

pub fn p384_pair() -> KeyPair {
    let key = p384::SecretKey::random(&mut p384::elliptic_curve::rand_core::OsRng);
    KeyPair {
        private_pem: key.to_pkcs8_pem(LineEnding::LF).expect("pkcs8").to_string(),
        public_pem: key
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("spki"),
    }
}

/// Bound (projected) claims as kube-apiserver issues them.
pub fn bound_claims(iat: i64, ttl: i64) -> Value {
    json!({
        "aud": ["https://kubernetes.default.svc.cluster.local"],
        "exp": iat + ttl, "iat": iat, "nbf": iat,
        "iss": "https://kubernetes.default.svc.cluster.local",
        "jti": "2b76b98d-e185-4970-918e-6fa3f30606ab",
        "sub": "system:serviceaccount:unguard:unguard-proxy",
        "kubernetes.io": {
            "namespace": "unguard",
            "node": {"name": "kind-worker2", "uid": "52c81fbd-d2e9-4c7a-b45f-89df2615076b"},
            "pod": {"name": "unguard-proxy-service-5b84d8dd85-xz2rr", "uid": "adbcb431-1ba9-4022-b222-a5ba02534005"},
            "serviceaccount": {"name": "unguard-proxy", "uid": "e56b64e1-4415-4ee8-9cdf-78026924a7e5"},
            "warnafter": iat + 3607
        }
    })
}

/// Legacy claims as the token controller wrote them (upstream's test SA).
pub fn legacy_claims(secret: &str) -> Value {
    json!({
        "iss": "kubernetes/serviceaccount",
        "kubernetes.io/serviceaccount/namespace": "test",
        "kubernetes.io/serviceaccount/secret.name": secret,
        "kubernetes.io/serviceaccount/service-account.name": "my-service-account",
        "kubernetes.io/serviceaccount/service-account.uid": "12345",
        "sub": "system:serviceaccount:test:my-service-account"
    })
}

/// Signs `claims` with jsonwebtoken (no `typ`, like the API server).
pub fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    header.typ = None;
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

pub fn secret(token: &str) -> SecretString {
    SecretString::from(token.to_owned())
}

/// A compact JWS from raw header/claims JSON and signature bytes.
pub fn raw_token(header: &str, claims: &str, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// The RSA fixture private key as an EncodingKey (PKCS#1 PEM).
pub fn k8s_rsa_signing_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&std::fs::read(k8s_key("rsa-private.pem")).expect("read"))
        .expect("rsa")
}

/// The ECDSA fixture private key (SEC1 PEM) as an EncodingKey.
pub fn k8s_ec_signing_key() -> EncodingKey {
    let sec1 = std::fs::read_to_string(k8s_key("ecdsa-p256-private.pem")).expect("read");
    let pkcs8 = p256::SecretKey::from_sec1_pem(&sec1)
        .expect("sec1")
        .to_pkcs8_pem(LineEnding::LF)
        .expect("pkcs8");
    EncodingKey::from_ec_pem(pkcs8.as_bytes()).expect("ec")
}

pub const K8S_RSA_KID: &str = "JHJehTTTZlsspKHT-GaJxK7Kd1NQgZJu3fyK6K_QDYU";
pub const K8S_EC_KID: &str = "SoABiieYuNx4UdqYvZRVeuC6SihxgLrhLy9peHMHpTc";

/// Signs claims as a kube-apiserver with Kubernetes' own test RSA key
/// would: RS256, its `kid`, no `typ`.
#[must_use]
pub fn sign_as_apiserver(claims: &Value) -> String {
    sign(
        Algorithm::RS256,
        &k8s_rsa_signing_key(),
        Some(K8S_RSA_KID),
        claims,
    )
}

/// The claims of a bound (projected) token of ServiceAccount `sa` for the
/// pod `pod_name` (`pod_uid`) on node `node`, issued `iat` (Unix seconds)
/// for `ttl` seconds, with JTI `jti`.
#[must_use]
pub fn pod_bound_claims(
    namespace: &str,
    sa: &str,
    pod: (&str, &str),
    node: &str,
    jti: &str,
    iat: i64,
    ttl: i64,
) -> Value {
    let (pod_name, pod_uid) = pod;
    json!({
        "aud": ["https://kubernetes.default.svc.cluster.local"],
        "exp": iat + ttl, "iat": iat, "nbf": iat,
        "iss": "https://kubernetes.default.svc.cluster.local",
        "jti": jti,
        "sub": format!("system:serviceaccount:{namespace}:{sa}"),
        "kubernetes.io": {
            "namespace": namespace,
            "node": {"name": node, "uid": "6c8b2e1a-0000-4000-8000-00000000000e"},
            "pod": {"name": pod_name, "uid": pod_uid},
            "serviceaccount": {"name": sa, "uid": format!("{sa}-uid")},
            "warnafter": iat + ttl * 8 / 10
        }
    })
}

/// The claims of a legacy (Secret-based) token of ServiceAccount `sa`.
#[must_use]
pub fn legacy_secret_claims(namespace: &str, sa: &str) -> Value {
    json!({
        "iss": "kubernetes/serviceaccount",
        "kubernetes.io/serviceaccount/namespace": namespace,
        "kubernetes.io/serviceaccount/secret.name": format!("{sa}-token-q8x2m"),
        "kubernetes.io/serviceaccount/service-account.name": sa,
        "kubernetes.io/serviceaccount/service-account.uid": format!("{sa}-uid"),
        "sub": format!("system:serviceaccount:{namespace}:{sa}")
    })
}
