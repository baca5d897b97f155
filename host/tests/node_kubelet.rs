//! A fake kubelet tree in a temp dir, written the way the kubelet's atomic
//! writer writes: discovery, rotation by swapping `..data` (the new inode
//! is added within a second, the old one removed only once its file is
//! gone), pod arrival and removal.

use tokenwatch_test_support::tokens as identity_common;

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use identity_common::*;
use tokenwatch_core::identity::{IdentityCache, KeySet};
use tokenwatch_host::node::{FileId, TokenWatcher, VolumeKind, WatchChange, discover};
use tokio::sync::mpsc;

const POD_A: &str = "adbcb431-1ba9-4022-b222-a5ba02534005";
const POD_B: &str = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0";

fn bound_token(pod_uid: &str, pod_name: &str, jti: &str) -> String {
    let mut claims = bound_claims(1_800_000_000, 3607);
    claims["kubernetes.io"]["pod"] = serde_json::json!({"name": pod_name, "uid": pod_uid});
    claims["jti"] = jti.into();
    sign(
        jsonwebtoken::Algorithm::RS256,
        &k8s_rsa_signing_key(),
        Some(K8S_RSA_KID),
        &claims,
    )
}

/// Writes `files` the way the kubelet's atomic writer does; returns the
/// new timestamp directory and, if any, the old one (not yet deleted).
fn atomic_write(volume: &Path, stamp: &str, token: &str) -> (PathBuf, Option<PathBuf>) {
    std::fs::create_dir_all(volume).expect("mkdir volume");
    let ts = volume.join(format!("..{stamp}"));
    std::fs::create_dir(&ts).expect("mkdir ts");
    std::fs::write(ts.join("token"), token).expect("write token");
    std::fs::write(ts.join("namespace"), "unguard").expect("write namespace");
    let old = std::fs::read_link(volume.join("..data"))
        .ok()
        .map(|t| volume.join(t));
    let tmp = volume.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{stamp}"), &tmp).expect("symlink");
    std::fs::rename(&tmp, volume.join("..data")).expect("swap ..data");
    for name in ["token", "namespace"] {
        let link = volume.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).expect("symlink file");
        }
    }
    (ts, old)
}

fn projected(root: &Path, pod: &str, vol: &str) -> PathBuf {
    root.join("pods")
        .join(pod)
        .join("volumes/kubernetes.io~projected")
        .join(vol)
}

fn id(path: &Path) -> FileId {
    let meta = std::fs::metadata(path).expect("stat");
    FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    }
}

fn cache() -> Arc<IdentityCache> {
    let mut keys = KeySet::new();
    keys.add_pem_file(&k8s_key("rsa-public.pem")).expect("pem");
    Arc::new(IdentityCache::new(keys))
}

#[test]
fn discovery_reports_current_files_with_identity() {
    let root = tempfile::tempdir().expect("tmp");
    let vol = projected(root.path(), POD_A, "kube-api-access-x7k2p");
    atomic_write(
        &vol,
        "2025_11_24_07_37_58.100",
        &bound_token(POD_A, "proxy-0", "j1"),
    );
    let secret_vol = root
        .path()
        .join("pods")
        .join(POD_B)
        .join("volumes/kubernetes.io~secret/default-token-abcde");
    let legacy = sign(
        jsonwebtoken::Algorithm::RS256,
        &k8s_rsa_signing_key(),
        Some(K8S_RSA_KID),
        &legacy_claims("default-token-abcde"),
    );
    atomic_write(&secret_vol, "2020_01_01_00_00_00.1", &legacy);
    // A projected volume without a token (configmap only) is skipped.
    std::fs::create_dir_all(projected(root.path(), POD_A, "config")).expect("mkdir");

    let cache = cache();
    let found = discover(root.path(), &cache).expect("discover");
    assert_eq!(found.len(), 2, "{found:?}");
    let a = found.iter().find(|t| t.pod_uid == POD_A).expect("pod A");
    assert_eq!(a.volume, "kube-api-access-x7k2p");
    assert_eq!(a.kind, VolumeKind::Projected);
    assert_eq!(a.file, id(&vol.join("token")));
    assert!(a.current);
    let identity = a.identity.as_ref().expect("identity");
    assert!(identity.signature.is_verified());
    assert_eq!(identity.jti(), Some("j1"));
    let b = found.iter().find(|t| t.pod_uid == POD_B).expect("pod B");
    assert_eq!(b.kind, VolumeKind::Secret);
    assert_eq!(
        b.identity.as_ref().map(|i| i.kind),
        Some(tokenwatch_core::identity::TokenKind::Legacy)
    );

    let pods = tokenwatch_host::node::pods_from_tokens(&found);
    assert_eq!(pods.len(), 1, "only bound tokens name their pod");
    assert_eq!(pods[POD_A].name, "proxy-0");
    assert_eq!(pods[POD_A].namespace, "unguard");

    assert!(
        discover(&root.path().join("nothing-here"), &cache)
            .expect("empty")
            .is_empty()
    );
}

async fn next(rx: &mut mpsc::Receiver<WatchChange>, within: Duration) -> Option<WatchChange> {
    tokio::time::timeout(within, rx.recv()).await.ok().flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_and_pod_lifecycle_reach_the_channel() {
    let root = tempfile::tempdir().expect("tmp");
    let vol = projected(root.path(), POD_A, "kube-api-access-x7k2p");
    atomic_write(
        &vol,
        "2025_11_24_07_37_58.100",
        &bound_token(POD_A, "proxy-0", "j1"),
    );
    let first = id(&vol.join("token"));

    let (tx, mut rx) = mpsc::channel(64);
    let handle = TokenWatcher::new(root.path(), cache())
        .spawn(tx)
        .expect("spawn watcher");
    assert_eq!(
        next(&mut rx, Duration::from_secs(1)).await,
        Some(WatchChange::Add(first))
    );
    assert_eq!(handle.pods()[POD_A].name, "proxy-0");

    // Rotation: new timestamp dir, `..data` swapped; the old dir stays.
    let (_, old_dir) = atomic_write(
        &vol,
        "2025_11_24_08_25_58.200",
        &bound_token(POD_A, "proxy-0", "j2"),
    );
    let second = id(&vol.join("token"));
    assert_ne!(second, first);
    assert_eq!(
        next(&mut rx, Duration::from_secs(1)).await,
        Some(WatchChange::Add(second)),
        "new inode within 1 s"
    );
    // The old file still exists: it stays watched.
    assert_eq!(
        next(&mut rx, Duration::from_millis(400)).await,
        None,
        "old inode removed too early"
    );
    let watched: Vec<FileId> = handle.files().iter().map(|t| t.file).collect();
    assert!(
        watched.contains(&first) && watched.contains(&second),
        "{watched:?}"
    );
    assert_eq!(handle.file(second).map(|t| t.current), Some(true));
    assert_eq!(handle.file(first).map(|t| t.current), Some(false));

    // The writer deletes the old timestamp dir: now the old inode goes.
    std::fs::remove_dir_all(old_dir.expect("old dir")).expect("rm old");
    assert_eq!(
        next(&mut rx, Duration::from_secs(1)).await,
        Some(WatchChange::Remove(first))
    );

    // A new pod arrives (directories created step by step).
    let vol_b = projected(root.path(), POD_B, "kube-api-access-q9z8w");
    atomic_write(
        &vol_b,
        "2025_11_24_09_00_00.300",
        &bound_token(POD_B, "worker-1", "j3"),
    );
    let third = id(&vol_b.join("token"));
    assert_eq!(
        next(&mut rx, Duration::from_secs(1)).await,
        Some(WatchChange::Add(third))
    );
    assert_eq!(handle.pods()[POD_B].name, "worker-1");

    // Pod A goes away.
    std::fs::remove_dir_all(root.path().join("pods").join(POD_A)).expect("rm pod");
    assert_eq!(
        next(&mut rx, Duration::from_secs(1)).await,
        Some(WatchChange::Remove(second))
    );
    assert!(!handle.pods().contains_key(POD_A));
    assert_eq!(
        next(&mut rx, Duration::from_millis(300)).await,
        None,
        "no spurious change"
    );

    // Dropping the receiver stops the watcher.
    drop(rx);
    std::fs::remove_dir_all(root.path().join("pods").join(POD_B)).expect("rm pod");
    tokio::time::timeout(Duration::from_secs(2), async {
        while !handle.is_finished() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("watcher stops when the receiver is gone");
}

#[tokio::test]
async fn a_kubelet_root_without_pods_dir_is_watched_until_it_appears() {
    let root = tempfile::tempdir().expect("tmp");
    let (tx, mut rx) = mpsc::channel(8);
    let _handle = TokenWatcher::new(root.path(), cache())
        .spawn(tx)
        .expect("spawn watcher");
    assert_eq!(next(&mut rx, Duration::from_millis(200)).await, None);
    let vol = projected(root.path(), POD_A, "kube-api-access-x7k2p");
    atomic_write(
        &vol,
        "2025_11_24_07_37_58.100",
        &bound_token(POD_A, "proxy-0", "j1"),
    );
    let file = id(&vol.join("token"));
    // The pods dir appears; the watcher then descends and finds the file
    // (at the latest through the rescan its next event triggers).
    let mut got = next(&mut rx, Duration::from_secs(1)).await;
    if got.is_none() {
        std::fs::write(vol.join("..touch"), "").expect("touch");
        got = next(&mut rx, Duration::from_secs(1)).await;
    }
    assert_eq!(got, Some(WatchChange::Add(file)));
}
