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

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
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

/// Verification material: `jsonwebtoken`'s for what it supports, `p521`'s
/// for ES512.
#[derive(Clone)]
pub(crate) enum Material {
    /// RSA or P-256/P-384, verified by `jsonwebtoken`.
    Jwt(DecodingKey),
    /// P-521.
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
    let material = Material::Jwt(DecodingKey::from_rsa_raw_components(
        &key.n().to_bytes_be(),
        &key.e().to_bytes_be(),
    ));
    Ok((KeyType::Rsa, spki, material))
}

fn p256_public(key: &p256::PublicKey) -> Result<Decoded, KeyDecodeError> {
    use p256::elliptic_curve::sec1::ToEncodedPoint as _;
    let spki = key.to_public_key_der()?.into_vec();
    let point = key.to_encoded_point(false);
    Ok((
        KeyType::P256,
        spki,
        Material::Jwt(DecodingKey::from_ec_der(point.as_bytes())),
    ))
}

fn p384_public(key: &p384::PublicKey) -> Result<Decoded, KeyDecodeError> {
    use p384::elliptic_curve::sec1::ToEncodedPoint as _;
    let spki = key.to_public_key_der()?.into_vec();
    let point = key.to_encoded_point(false);
    Ok((
        KeyType::P384,
        spki,
        Material::Jwt(DecodingKey::from_ec_der(point.as_bytes())),
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
    // Reject EC points that are not on the curve now, not at verify time.
    if let (KeyType::P256 | KeyType::P384, Ok(bytes)) = (key_type, key.try_get_as_bytes()) {
        let ok = if key_type == KeyType::P256 {
            p256::PublicKey::from_sec1_bytes(bytes).is_ok()
        } else {
            p384::PublicKey::from_sec1_bytes(bytes).is_ok()
        };
        if !ok {
            return Err(KeyDecodeError::Curve);
        }
    }
    Ok((key_type, Material::Jwt(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/tokens/kubernetes-serviceaccount-test-keys"
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
            "/../../shared/fixtures/tokens/portswigger-tim-nats-k8s-oidc-callout/jwks.json"
        );
        assert_eq!(set.add_jwks_file(Path::new(eks)).expect("eks jwks"), 13);
        let kops = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/fixtures/tokens/kubernetes-kops-oidc-discovery/jwks.json"
        );
        assert_eq!(set.add_jwks_file(Path::new(kops)).expect("kops jwks"), 2);
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
