//! OIDC discovery against a loopback HTTPS server whose CA is made here
//! with rcgen: discovery document -> `jwks_uri` -> JWKS (Kubernetes' own
//! test keyset), trusting only the given CA bundle.

use tokenwatch_test_support::tokens as identity_common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use identity_common::*;
use tokenwatch_core::identity::{Error, Identity, KeySet};

struct Server {
    issuer: String,
    ca_pem: String,
    thread: std::thread::JoinHandle<()>,
}

/// Serves `connections` HTTPS requests on 127.0.0.1 then stops.
/// `advertised_issuer` is what the discovery document claims.
fn serve(connections: usize, advertised_issuer: Option<&str>) -> Server {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca");
    let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("leaf params")
        .signed_by(&leaf_key, &ca)
        .expect("leaf");

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .expect("server config");
    let config = Arc::new(config);

    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let issuer = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let discovery = serde_json::json!({
        "issuer": advertised_issuer.unwrap_or(&issuer),
        "jwks_uri": format!("{issuer}/openid/v1/jwks"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256", "RS256"]
    })
    .to_string();
    let jwks = std::fs::read_to_string(k8s_key("jwks.json")).expect("jwks");
    let thread = std::thread::spawn(move || {
        for _ in 0..connections {
            let Ok((tcp, _)) = listener.accept() else {
                return;
            };
            tcp.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let conn = rustls::ServerConnection::new(Arc::clone(&config)).expect("tls");
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut reader = BufReader::new(&mut tls);
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue; // e.g. the client refused our certificate
            }
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_owned();
            let (status, body) = match path.as_str() {
                "/.well-known/openid-configuration" => ("200 OK", discovery.clone()),
                "/openid/v1/jwks" => ("200 OK", jwks.clone()),
                _ => ("404 Not Found", String::new()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(response.as_bytes());
            let _ = tls.flush();
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    Server {
        issuer,
        ca_pem: ca.pem(),
        thread,
    }
}

#[test]
fn discovery_then_jwks_over_tls_with_a_private_ca() {
    let server = serve(2, None);
    let dir = tempfile::tempdir().expect("tmp");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &server.ca_pem).expect("write ca");
    let mut keys = KeySet::new();
    let added = keys
        .add_oidc_issuer(&server.issuer, Some(&ca))
        .expect("discovery");
    assert_eq!(added, 2);
    server.thread.join().expect("server thread");

    let token = sign(
        jsonwebtoken::Algorithm::ES256,
        &k8s_ec_signing_key(),
        Some(K8S_EC_KID),
        &bound_claims(1_800_000_000, 3600),
    );
    let identity = Identity::from_token(&secret(&token), &keys).expect("parses");
    assert!(identity.signature.is_verified(), "{:?}", identity.signature);
}

#[test]
fn an_untrusted_certificate_is_refused() {
    let server = serve(1, None);
    let mut keys = KeySet::new();
    // No CA bundle: the public roots do not know our CA.
    let err = keys
        .add_oidc_issuer(&server.issuer, None)
        .expect_err("untrusted");
    assert!(matches!(err, Error::FetchDiscovery { .. }), "{err:?}");
    server.thread.join().expect("server thread");
}

#[test]
fn a_discovery_document_for_another_issuer_is_refused() {
    let server = serve(1, Some("https://evil.example"));
    let dir = tempfile::tempdir().expect("tmp");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &server.ca_pem).expect("write ca");
    let mut keys = KeySet::new();
    let err = keys
        .add_oidc_issuer(&server.issuer, Some(&ca))
        .expect_err("mismatch");
    assert!(matches!(err, Error::CheckDiscoveryIssuer { .. }), "{err:?}");
    server.thread.join().expect("server thread");
}
