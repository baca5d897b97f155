//! `IdentityCache`: a token read a thousand times is parsed once; a changed
//! mtime or a new inode is parsed again; forgotten files are dropped.

use tokenwatch_test_support::tokens as identity_common;

use std::sync::Arc;

use identity_common::*;
use tokenwatch_core::identity::{IdentityCache, KeySet};

fn token(jti: &str) -> String {
    let mut claims = bound_claims(1_800_000_000, 3600);
    claims["jti"] = jti.into();
    sign(
        jsonwebtoken::Algorithm::RS256,
        &k8s_rsa_signing_key(),
        Some(K8S_RSA_KID),
        &claims,
    )
}

#[test]
fn a_thousand_reads_one_parse() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("token");
    std::fs::write(&path, token("one")).expect("write");
    let mut keys = KeySet::new();
    keys.add_pem_file(&k8s_key("rsa-public.pem")).expect("pem");
    let cache = IdentityCache::new(keys);

    let (file, first) = cache.load(&path).expect("load");
    assert!(first.signature.is_verified());
    for _ in 0..1000 {
        let (again, identity) = cache.load(&path).expect("load");
        assert_eq!(again, file);
        assert!(Arc::ptr_eq(&identity, &first));
        assert!(Arc::ptr_eq(&cache.get(file).expect("cached"), &first));
    }
    assert_eq!(cache.parse_count(), 1);

    // Rewritten in place with a new mtime: parsed again.
    std::fs::write(&path, token("two")).expect("rewrite");
    let mtime = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(mtime))
        .expect("set mtime");
    let (_, second) = cache.load(&path).expect("load");
    assert_eq!(second.jti(), Some("two"));
    assert_eq!(cache.parse_count(), 2);

    // A rotation: a new file (new inode) is a new entry.
    let rotated = dir.path().join("token.new");
    std::fs::write(&rotated, token("three")).expect("write");
    std::fs::rename(&rotated, &path).expect("rename");
    let (new_file, third) = cache.load(&path).expect("load");
    assert_ne!(new_file, file);
    assert_eq!(third.jti(), Some("three"));
    assert_eq!(cache.len(), 2);
    assert!(cache.forget(file));
    assert!(cache.get(file).is_none());
    assert_eq!(cache.len(), 1);
}

#[test]
fn files_that_are_not_tokens_are_errors_and_not_cached() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("token");
    std::fs::write(&path, "ca.crt is not a token").expect("write");
    let cache = IdentityCache::new(KeySet::new());
    assert!(cache.load(&path).is_err());
    assert!(cache.is_empty());
    assert!(cache.load(&dir.path().join("missing")).is_err());
}
