//! Public keys to verify tokens with, from the three places a cluster
//! publishes them:
//!
//! - PEM files, as given to kube-apiserver's `--service-account-key-file`:
//!   `PUBLIC KEY` (SPKI), `RSA PUBLIC KEY` (PKCS#1), and private keys
//!   (`RSA PRIVATE KEY`, `EC PRIVATE KEY`, `PRIVATE KEY`) whose public half
//!   is used; other blocks (`EC PARAMETERS`, certificates) are skipped. Each
//!   key's ID is computed as the API server computes it:
//!   base64url(SHA-256(DER SubjectPublicKeyInfo)).
//! - A JWKS document (`/openid/v1/jwks`, or a cloud provider's); keys of
//!   other types (`oct`, `OKP`) are skipped.
//! - OIDC discovery: `<issuer>/.well-known/openid-configuration` ->
//!   `jwks_uri` -> JWKS, over HTTPS trusting a given CA bundle.
//!
//! RSA, P-256, P-384 and P-521 keys are supported: every key type the API
//! server signs with.
//!
//! Each key's verification material is built here, once, at load time
//! ([`Material`]): RSA keys `ring` takes (2048 bits and more) and P-256/P-384
//! are verified with `ring`; smaller RSA keys with `jsonwebtoken`'s pure-Rust
//! backend; P-521, which `ring` lacks, with the `p521` crate.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{DecodingKey, DecodingKeyKind};
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, RsaPublicKeyComponents, UnparsedPublicKey,
};
use rsa::pkcs1::{DecodeRsaPrivateKey as _, DecodeRsaPublicKey as _};
use rsa::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePublicKey as _};
use rsa::traits::PublicKeyParts as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::{Error, KeyDecodeError};

/// Largest discovery document or JWKS accepted over HTTP.
const MAX_HTTP_BODY: u64 = 1 << 20;
/// Timeout of each discovery request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// RSA modulus sizes `ring` verifies with, in bits (`RSA_*_2048_8192_*`).
const RING_RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;
/// Largest RSA public exponent `ring` takes: 2^33 - 1.
const RING_RSA_MAX_EXPONENT: u64 = (1 << 33) - 1;

/// The key's type, which decides the algorithms it can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// RSA: RS256/384/512, PS256/384/512.
    Rsa,
    /// ECDSA P-256: ES256.
    P256,
    /// ECDSA P-384: ES384.
    P384,
    /// ECDSA P-521: ES512.
    P521,
}

impl KeyType {
    /// Whether a key of this type can have made a signature with `alg`.
    #[must_use]
    pub fn fits(self, alg: &str) -> bool {
        match self {
            Self::Rsa => matches!(
                alg,
                "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512"
            ),
            Self::P256 => alg == "ES256",
            Self::P384 => alg == "ES384",
            Self::P521 => alg == "ES512",
        }
    }
}

/// Verification material, built once when the key is loaded.
#[derive(Clone)]
pub(crate) enum Material {
    /// An RSA key `ring` takes: a modulus of 2048 to 8192 bits, odd, and an
    /// odd exponent from 3 to 2^33 - 1, both without leading zeros. The
    /// token's `alg` picks the padding and hash at verification time.
    Rsa(RsaPublicKeyComponents<Box<[u8]>>),
    /// An RSA key `ring` refuses, in practice one under 2048 bits. The API
    /// server's Go crypto verifies with such keys (from 1,024 bits since Go
    /// 1.24, any size before), so they keep `jsonwebtoken`'s pure-Rust
    /// backend.
    RsaLegacy(DecodingKey),
    /// P-256 (ES256) or P-384 (ES384): the uncompressed SEC1 point, with
    /// `ring`'s algorithm for JWS's fixed-width `r || s` signatures.
    Ec(UnparsedPublicKey<Box<[u8]>>),
    /// P-521 (ES512), which `ring` does not implement.
    P521(Box<p521::ecdsa::VerifyingKey>),
}

/// One public key.
#[derive(Clone)]
pub struct PublicKey {
    /// The key ID: the JWK's `kid`, or the API server's derivation for PEM
    /// keys.
    pub kid: Option<String>,
    /// The key type.
    pub key_type: KeyType,
    /// Where it came from (a path or URL), for messages.
    pub origin: String,
    pub(crate) material: Material,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("kid", &self.kid)
            .field("key_type", &self.key_type)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// The keys a token may be verified with. Empty means "not checked".
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<PublicKey>,
}

/// base64url(SHA-256(SPKI DER)), kube-apiserver's key ID.
#[must_use]
pub fn key_id_from_spki(spki_der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(spki_der))
}

impl KeySet {
    /// No keys: every token's signature is "not checked".
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether there is no key.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Number of keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The keys.
    #[must_use]
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// Adds every RSA/ECDSA key of a PEM file; returns how many.
    ///
    /// # Errors
    /// [`Error::ReadKeyFile`], [`Error::DecodePem`], [`Error::DecodeKey`],
    /// or [`Error::FindKey`] when the file holds no key at all.
    pub fn add_pem_file(&mut self, path: &Path) -> Result<usize, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::ReadKeyFile {
            path: path.to_owned(),
            source,
        })?;
        self.add_pem(&bytes, path)
    }

    /// Adds every RSA/ECDSA key of PEM text; `path` names it in messages.
    ///
    /// # Errors
    /// As [`KeySet::add_pem_file`].
    pub fn add_pem(&mut self, bytes: &[u8], path: &Path) -> Result<usize, Error> {
        let blocks = pem::parse_many(bytes).map_err(|source| Error::DecodePem {
            path: path.to_owned(),
            source,
        })?;
        let mut added = 0;
        for block in &blocks {
            let decoded = decode_pem_block(block.tag(), block.contents()).map_err(|source| {
                Error::DecodeKey {
                    path: path.to_owned(),
                    label: block.tag().to_owned(),
                    source,
                }
            })?;
            if let Some((key_type, spki, material)) = decoded {
                self.keys.push(PublicKey {
                    kid: Some(key_id_from_spki(&spki)),
                    key_type,
                    origin: path.display().to_string(),
                    material,
                });
                added += 1;
            }
        }
        if added == 0 {
            return Err(Error::FindKey {
                path: path.to_owned(),
            });
        }
        Ok(added)
    }

    /// Adds the keys of a JWKS file; returns how many were usable.
    ///
    /// # Errors
    /// [`Error::ReadKeyFile`], [`Error::DecodeJwks`], [`Error::DecodeKey`].
    pub fn add_jwks_file(&mut self, path: &Path) -> Result<usize, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::ReadKeyFile {
            path: path.to_owned(),
            source,
        })?;
        self.add_jwks(&bytes, &path.display().to_string())
    }

    /// Adds the keys of a JWKS document; `origin` names it in messages.
    /// Keys of types the API server never signs with are skipped.
    ///
    /// # Errors
    /// [`Error::DecodeJwks`] for a document that is not a JWKS,
    /// [`Error::DecodeKey`] for an RSA/EC key whose fields are broken.
    pub fn add_jwks(&mut self, bytes: &[u8], origin: &str) -> Result<usize, Error> {
        #[derive(Deserialize)]
        struct Jwks {
            keys: Vec<serde_json::Value>,
        }
        let jwks: Jwks = serde_json::from_slice(bytes).map_err(|source| Error::DecodeJwks {
            source_name: origin.to_owned(),
            source,
        })?;
        let mut added = 0;
        for value in jwks.keys {
            let kty = value
                .get("kty")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("");
            if kty != "RSA" && kty != "EC" {
                tracing::debug!(
                    origin,
                    kty,
                    "skipping a JWKS key the API server never signs with"
                );
                continue;
            }
            let kid = value
                .get("kid")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned);
            let label = format!("JWK {}", kid.as_deref().unwrap_or("without kid"));
            let key = decode_jwk(value).map_err(|source| Error::DecodeKey {
                path: origin.into(),
                label,
                source,
            })?;
            let (key_type, material) = key;
            self.keys.push(PublicKey {
                kid,
                key_type,
                origin: origin.to_owned(),
                material,
            });
            added += 1;
        }
        Ok(added)
    }

    /// Fetches the issuer's OIDC discovery document, then its `jwks_uri`,
    /// trusting only the CA bundle when one is given (else the Mozilla
    /// roots), and adds the keys. Returns how many.
    ///
    /// # Errors
    /// [`Error::ReadKeyFile`]/[`Error::DecodeCaBundle`] for the CA bundle,
    /// [`Error::FetchDiscovery`] for HTTP, [`Error::DecodeDiscovery`],
    /// [`Error::CheckDiscoveryIssuer`] when the document names another
    /// issuer, and the JWKS errors.
    pub fn add_oidc_issuer(
        &mut self,
        issuer: &str,
        ca_bundle: Option<&Path>,
    ) -> Result<usize, Error> {
        #[derive(Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let agent = http_agent(ca_bundle)?;
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let body = fetch(&agent, &url)?;
        let discovery: Discovery =
            serde_json::from_slice(&body).map_err(|source| Error::DecodeDiscovery {
                url: url.clone(),
                source,
            })?;
        if discovery.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
            return Err(Error::CheckDiscoveryIssuer {
                url,
                expected: issuer.to_owned(),
                found: discovery.issuer,
            });
        }
        let jwks = fetch(&agent, &discovery.jwks_uri)?;
        self.add_jwks(&jwks, &discovery.jwks_uri)
    }
}

fn http_agent(ca_bundle: Option<&Path>) -> Result<ureq::Agent, Error> {
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(path) = ca_bundle {
        let bytes = std::fs::read(path).map_err(|source| Error::ReadKeyFile {
            path: path.to_owned(),
            source,
        })?;
        let mut certs = Vec::new();
        for item in ureq::tls::parse_pem(&bytes) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(cert)) => certs.push(cert),
                Ok(_) => {}
                Err(source) => {
                    return Err(Error::DecodeCaBundle {
                        path: path.to_owned(),
                        source: Some(source),
                    });
                }
            }
        }
        if certs.is_empty() {
            return Err(Error::DecodeCaBundle {
                path: path.to_owned(),
                source: None,
            });
        }
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
    }
    let config = ureq::Agent::config_builder()
        .tls_config(tls.build())
        .timeout_global(Some(HTTP_TIMEOUT))
        .https_only(false)
        .build();
    Ok(config.into())
}

fn fetch(agent: &ureq::Agent, url: &str) -> Result<Vec<u8>, Error> {
    let map = |source| Error::FetchDiscovery {
        url: url.to_owned(),
        source: Box::new(source),
    };
    let mut response = agent.get(url).call().map_err(map)?;
    response
        .body_mut()
        .with_config()
        .limit(MAX_HTTP_BODY)
        .read_to_vec()
        .map_err(map)
}

type Decoded = (KeyType, Vec<u8>, Material);

/// Decodes one PEM block into (type, SPKI DER, material); `None` for
/// blocks that hold no key (parameters, certificates).
fn decode_pem_block(tag: &str, der: &[u8]) -> Result<Option<Decoded>, KeyDecodeError> {
    Ok(Some(match tag {
        "PUBLIC KEY" => from_spki(der)?,
        "RSA PUBLIC KEY" => rsa_public(&rsa::RsaPublicKey::from_pkcs1_der(der)?)?,
        "RSA PRIVATE KEY" => rsa_public(&rsa::RsaPrivateKey::from_pkcs1_der(der)?.to_public_key())?,
        "EC PRIVATE KEY" => {
            if let Ok(k) = p256::SecretKey::from_sec1_der(der) {
                p256_public(&k.public_key())?
            } else if let Ok(k) = p384::SecretKey::from_sec1_der(der) {
                p384_public(&k.public_key())?
            } else if let Ok(k) = p521::SecretKey::from_sec1_der(der) {
                p521_public(&k.public_key())?
            } else {
                return Err(KeyDecodeError::Curve);
            }
        }
        "PRIVATE KEY" => {
            if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_der(der) {
                rsa_public(&k.to_public_key())?
            } else if let Ok(k) = p256::SecretKey::from_pkcs8_der(der) {
                p256_public(&k.public_key())?
            } else if let Ok(k) = p384::SecretKey::from_pkcs8_der(der) {
                p384_public(&k.public_key())?
            } else {
                p521_public(&p521::SecretKey::from_pkcs8_der(der)?.public_key())?
            }
        }
        _ => return Ok(None),
    }))
}

fn from_spki(der: &[u8]) -> Result<Decoded, KeyDecodeError> {
    if let Ok(k) = rsa::RsaPublicKey::from_public_key_der(der) {
        return rsa_public(&k);
    }
    if let Ok(k) = p256::PublicKey::from_public_key_der(der) {
        return p256_public(&k);
    }
    if let Ok(k) = p384::PublicKey::from_public_key_der(der) {
        return p384_public(&k);
    }
    match p521::PublicKey::from_public_key_der(der) {
        Ok(k) => p521_public(&k),
        Err(e) => Err(KeyDecodeError::Spki(e)),
    }
}

fn rsa_public(key: &rsa::RsaPublicKey) -> Result<Decoded, KeyDecodeError> {
    let spki = key.to_public_key_der()?.into_vec();
    let material = rsa_material(&key.n().to_bytes_be(), &key.e().to_bytes_be());
    Ok((KeyType::Rsa, spki, material))
}

/// RSA material from big-endian `n` and `e`: `ring`'s when it takes the key,
/// the pure-Rust backend's otherwise.
fn rsa_material(n: &[u8], e: &[u8]) -> Material {
    let (n, e) = (strip_leading_zeros(n), strip_leading_zeros(e));
    if ring_takes_rsa(n, e) {
        Material::Rsa(RsaPublicKeyComponents {
            n: n.into(),
            e: e.into(),
        })
    } else {
        Material::RsaLegacy(DecodingKey::from_rsa_raw_components(n, e))
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// Whether `ring`'s RSA verification takes the key (the checks of its
/// `rsa::PublicKey::from_modulus_and_exponent`, with the modulus size
/// counted in exact bits). `n` and `e` have no leading zeros.
fn ring_takes_rsa(n: &[u8], e: &[u8]) -> bool {
    let (Some(&n_first), Some(&n_last)) = (n.first(), n.last()) else {
        return false;
    };
    let n_bits = n.len() * 8 - n_first.leading_zeros() as usize;
    let exponent = (e.len() <= 5).then(|| {
        e.iter()
            .fold(0_u64, |value, &byte| value << 8 | u64::from(byte))
    });
    RING_RSA_BITS.contains(&n_bits)
        && n_last & 1 == 1
        && exponent.is_some_and(|e| (3..=RING_RSA_MAX_EXPONENT).contains(&e) && e & 1 == 1)
}

fn p256_public(key: &p256::PublicKey) -> Result<Decoded, KeyDecodeError> {
    let spki = key.to_public_key_der()?.into_vec();
    Ok((KeyType::P256, spki, p256_material(key)))
}

fn p256_material(key: &p256::PublicKey) -> Material {
    use p256::elliptic_curve::sec1::ToEncodedPoint as _;
    let point = key.to_encoded_point(false);
    Material::Ec(UnparsedPublicKey::new(
        &ECDSA_P256_SHA256_FIXED,
        point.as_bytes().into(),
    ))
}

fn p384_public(key: &p384::PublicKey) -> Result<Decoded, KeyDecodeError> {
    let spki = key.to_public_key_der()?.into_vec();
    Ok((KeyType::P384, spki, p384_material(key)))
}

fn p384_material(key: &p384::PublicKey) -> Material {
    use p384::elliptic_curve::sec1::ToEncodedPoint as _;
    let point = key.to_encoded_point(false);
    Material::Ec(UnparsedPublicKey::new(
        &ECDSA_P384_SHA384_FIXED,
        point.as_bytes().into(),
    ))
}

fn p521_public(key: &p521::PublicKey) -> Result<Decoded, KeyDecodeError> {
    use p521::elliptic_curve::sec1::ToEncodedPoint as _;
    let spki = key.to_public_key_der()?.into_vec();
    let verifying = p521::ecdsa::VerifyingKey::from_encoded_point(&key.to_encoded_point(false))
        .map_err(|_| KeyDecodeError::Curve)?;
    Ok((KeyType::P521, spki, Material::P521(Box::new(verifying))))
}

fn decode_jwk(value: serde_json::Value) -> Result<(KeyType, Material), KeyDecodeError> {
    // P-521 first: jsonwebtoken's Jwk knows the curve but cannot verify with it.
    if value.get("crv").and_then(serde_json::Value::as_str) == Some("P-521") {
        let coordinate = |name: &str| -> Result<Vec<u8>, KeyDecodeError> {
            let text = value
                .get(name)
                .and_then(serde_json::Value::as_str)
                .ok_or(KeyDecodeError::Curve)?;
            URL_SAFE_NO_PAD
                .decode(text)
                .map_err(|_| KeyDecodeError::Curve)
        };
        let mut point = vec![0x04];
        point.extend(coordinate("x")?);
        point.extend(coordinate("y")?);
        let key = p521::ecdsa::VerifyingKey::from_sec1_bytes(&point)
            .map_err(|_| KeyDecodeError::Curve)?;
        return Ok((KeyType::P521, Material::P521(Box::new(key))));
    }
    let jwk: Jwk = serde_json::from_value(value).map_err(|e| {
        KeyDecodeError::Jwk(jsonwebtoken::errors::ErrorKind::Json(std::sync::Arc::new(e)).into())
    })?;
    let key_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyType::Rsa,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => KeyType::P256,
            EllipticCurve::P384 => KeyType::P384,
            ref other => return Err(KeyDecodeError::Unsupported(format!("curve {other:?}"))),
        },
        _ => return Err(KeyDecodeError::Unsupported("key type".to_owned())),
    };
    let key = DecodingKey::from_jwk(&jwk)?;
    // EC points that are not on the curve are refused now, not at verify time.
    let material = match (key_type, key.kind()) {
        (KeyType::Rsa, DecodingKeyKind::RsaModulusExponent { n, e }) => rsa_material(n, e),
        (KeyType::P256, DecodingKeyKind::SecretOrDer(point)) => p256_material(
            &p256::PublicKey::from_sec1_bytes(point).map_err(|_| KeyDecodeError::Curve)?,
        ),
        (KeyType::P384, DecodingKeyKind::SecretOrDer(point)) => p384_material(
            &p384::PublicKey::from_sec1_bytes(point).map_err(|_| KeyDecodeError::Curve)?,
        ),
        _ => return Err(KeyDecodeError::Unsupported("key encoding".to_owned())),
    };
    Ok((key_type, material))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/tokens/kubernetes-serviceaccount-test-keys"
    );

    fn load(name: &str) -> KeySet {
        let mut set = KeySet::new();
        set.add_pem_file(&Path::new(KEYS).join(name)).expect(name);
        set
    }

    #[test]
    fn pem_key_ids_match_the_api_server() {
        let rsa_kid = "JHJehTTTZlsspKHT-GaJxK7Kd1NQgZJu3fyK6K_QDYU";
        let ec_kid = "SoABiieYuNx4UdqYvZRVeuC6SihxgLrhLy9peHMHpTc";
        for (file, kid, key_type) in [
            ("rsa-public.pem", rsa_kid, KeyType::Rsa),
            ("rsa-private.pem", rsa_kid, KeyType::Rsa),
            ("ecdsa-p256-public.pem", ec_kid, KeyType::P256),
            ("ecdsa-p256-private.pem", ec_kid, KeyType::P256),
            (
                "other-rsa-public.pem",
                "yEooMTEt7THsoVd-yf2m_0tmtgtZWGhAPFm296R5q18",
                KeyType::Rsa,
            ),
        ] {
            let set = load(file);
            assert_eq!(set.len(), 1, "{file}");
            assert_eq!(set.keys()[0].kid.as_deref(), Some(kid), "{file}");
            assert_eq!(set.keys()[0].key_type, key_type, "{file}");
        }
    }

    #[test]
    fn pem_with_ec_parameters_block_loads_its_key() {
        // `ecdsaPrivateKeyWithParams` is another key than `ecdsaPrivateKey`.
        let set = load("ecdsa-p256-private-with-params.pem");
        assert_eq!(set.len(), 1);
        assert_eq!(set.keys()[0].key_type, KeyType::P256);
        assert_ne!(
            set.keys()[0].kid.as_deref(),
            Some("SoABiieYuNx4UdqYvZRVeuC6SihxgLrhLy9peHMHpTc")
        );
    }

    #[test]
    fn jwks_fixtures_load() {
        let mut set = KeySet::new();
        let jwks = Path::new(KEYS).join("jwks.json");
        assert_eq!(set.add_jwks_file(&jwks).expect("k8s jwks"), 2);
        let eks = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/tokens/portswigger-tim-nats-k8s-oidc-callout/jwks.json"
        );
        assert_eq!(set.add_jwks_file(Path::new(eks)).expect("eks jwks"), 13);
        let kops = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/tokens/kubernetes-kops-oidc-discovery/jwks.json"
        );
        assert_eq!(set.add_jwks_file(Path::new(kops)).expect("kops jwks"), 2);
    }

    #[test]
    fn material_is_built_once_for_the_verifier() {
        assert!(matches!(
            load("rsa-public.pem").keys()[0].material,
            Material::Rsa(_)
        ));
        assert!(matches!(
            load("ecdsa-p256-public.pem").keys()[0].material,
            Material::Ec(_)
        ));
        // A JWK may carry a leading zero; ring wants none.
        let n: Vec<u8> = std::iter::once(0).chain([0xC3; 256]).collect();
        match rsa_material(&n, &[0, 1, 0, 1]) {
            Material::Rsa(components) => {
                assert_eq!(components.n.len(), 256);
                assert_eq!(&*components.e, &[1, 0, 1]);
            }
            _ => panic!("a 2048-bit key goes to ring"),
        }
        // 1024 bits: ring refuses it, the pure-Rust backend takes it.
        assert!(matches!(
            rsa_material(&n[..129], &[1, 0, 1]),
            Material::RsaLegacy(_)
        ));
        let mut set = KeySet::new();
        let jwks = Path::new(KEYS).join("jwks.json");
        set.add_jwks_file(&jwks).expect("k8s jwks");
        for key in set.keys() {
            let ring = matches!(key.material, Material::Rsa(_) | Material::Ec(_));
            assert!(ring, "{:?}", key.kid);
        }
    }

    #[test]
    fn ring_rsa_limits() {
        let n2048 = [0xC3; 256];
        let e65537 = [1, 0, 1];
        assert!(ring_takes_rsa(&n2048, &e65537));
        let n2047: Vec<u8> = std::iter::once(0x43).chain([0xC3; 255]).collect();
        assert!(!ring_takes_rsa(&n2047, &e65537));
        let even: Vec<u8> = [0xC3; 255].into_iter().chain([0xC2]).collect();
        assert!(!ring_takes_rsa(&even, &e65537));
        assert!(ring_takes_rsa(&[0xC3; 1024], &e65537));
        let n8193: Vec<u8> = std::iter::once(1).chain([0xC3; 1024]).collect();
        assert!(!ring_takes_rsa(&n8193, &e65537));
        assert!(!ring_takes_rsa(&[], &e65537));
        for (e, takes) in [
            (&[3][..], true),
            (&[1], false),
            (&[2], false),
            (&[1, 0, 0, 0, 0], false),
            (&[1, 0xFF, 0xFF, 0xFF, 0xFF], true),
            (&[2, 0, 0, 0, 1], false),
            (&[1, 0, 0, 0, 0, 1], false),
            (&[], false),
        ] {
            assert_eq!(ring_takes_rsa(&n2048, e), takes, "e = {e:?}");
        }
    }

    #[test]
    fn pem_without_keys_is_an_error() {
        let mut set = KeySet::new();
        let err = set
            .add_pem(
                b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n",
                Path::new("p.pem"),
            )
            .expect_err("no key");
        assert!(matches!(err, Error::FindKey { .. }), "{err:?}");
        let err = set
            .add_pem(b"garbage", Path::new("g.pem"))
            .expect_err("no pem");
        assert!(
            matches!(err, Error::FindKey { .. } | Error::DecodePem { .. }),
            "{err:?}"
        );
    }
}
