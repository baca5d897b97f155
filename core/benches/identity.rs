//! Identity benchmarks: cached lookup by (dev, ino), cold parse, and parse
//! plus RS256 / ES256 verification, on bound tokens signed with Kubernetes'
//! own test keys (`tests/fixtures/tokens/kubernetes-serviceaccount-test-keys`).
//!
//! `cargo bench -p tokenwatch --bench identity`; figures in
//! `docs/performance.md`.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::{EncodePrivateKey as _, LineEnding};
use secrecy::SecretString;
use tokenwatch_core::identity::{Identity, IdentityCache, KeySet};

const KEYS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/tokens/kubernetes-serviceaccount-test-keys"
);

fn read(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(KEYS).join(name)).expect("fixture key")
}

fn claims() -> serde_json::Value {
    serde_json::json!({
        "aud": ["https://kubernetes.default.svc.cluster.local"],
        "exp": 4_102_444_800_i64, "iat": 1_700_000_000, "nbf": 1_700_000_000,
        "iss": "https://kubernetes.default.svc.cluster.local",
        "jti": "0d211b4a-65c2-4812-b0b1-4e3cb6729dc3",
        "sub": "system:serviceaccount:team-a:builder",
        "kubernetes.io": {
            "namespace": "team-a",
            "node": {"name": "worker-1", "uid": "52c81fbd-d2e9-4c7a-b45f-89df2615076b"},
            "pod": {"name": "builder-7d9f", "uid": "adbcb431-1ba9-4022-b222-a5ba02534005"},
            "serviceaccount": {"name": "builder", "uid": "e56b64e1-4415-4ee8-9cdf-78026924a7e5"},
            "warnafter": 1_700_003_607
        }
    })
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: &str) -> SecretString {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    header.typ = None;
    SecretString::from(jsonwebtoken::encode(&header, &claims(), key).expect("sign"))
}

fn keys(pem: &str) -> KeySet {
    let mut keys = KeySet::new();
    keys.add_pem(&read(pem), Path::new(pem))
        .expect("public key");
    keys
}

fn bench(c: &mut Criterion) {
    let rsa_key = EncodingKey::from_rsa_pem(&read("rsa-private.pem")).expect("rsa key");
    let rsa_token = sign(
        Algorithm::RS256,
        &rsa_key,
        "JHJehTTTZlsspKHT-GaJxK7Kd1NQgZJu3fyK6K_QDYU",
    );
    let ec_pkcs8 = p256::SecretKey::from_sec1_pem(
        std::str::from_utf8(&read("ecdsa-p256-private.pem")).expect("utf-8"),
    )
    .expect("ec key")
    .to_pkcs8_pem(LineEnding::LF)
    .expect("pkcs8");
    let ec_key = EncodingKey::from_ec_pem(ec_pkcs8.as_bytes()).expect("ec key");
    let ec_token = sign(
        Algorithm::ES256,
        &ec_key,
        "SoABiieYuNx4UdqYvZRVeuC6SihxgLrhLy9peHMHpTc",
    );
    let rsa_keys = keys("rsa-public.pem");
    let ec_keys = keys("ecdsa-p256-public.pem");
    let none = KeySet::new();

    let mut group = c.benchmark_group("identity");
    group.throughput(Throughput::Elements(1));

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("token");
    std::fs::write(&path, secrecy::ExposeSecret::expose_secret(&rsa_token)).expect("write token");
    let cache = IdentityCache::new(rsa_keys.clone());
    let (file, identity) = cache.load(&path).expect("load");
    assert!(identity.signature.is_verified());
    group.bench_function("cached_lookup", |b| {
        b.iter(|| black_box(cache.get(black_box(file))));
    });
    group.bench_function("cached_lookup_by_path_with_stat", |b| {
        b.iter(|| black_box(cache.load(black_box(&path)).expect("cached")));
    });
    group.bench_function("cold_parse", |b| {
        b.iter(|| black_box(Identity::from_token(black_box(&rsa_token), &none).expect("parse")));
    });
    group.bench_function("parse_verify_rs256", |b| {
        b.iter(|| {
            let identity = Identity::from_token(black_box(&rsa_token), &rsa_keys).expect("parse");
            assert!(identity.signature.is_verified());
            black_box(identity)
        });
    });
    group.bench_function("parse_verify_es256", |b| {
        b.iter(|| {
            let identity = Identity::from_token(black_box(&ec_token), &ec_keys).expect("parse");
            assert!(identity.signature.is_verified());
            black_box(identity)
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
