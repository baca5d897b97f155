//! The agent's enrichment stage without root: a fake kubelet tree (token
//! volumes written as the kubelet's atomic writer does, tokens signed with
//! Kubernetes' test key) and a fake cgroup v2 hierarchy (cgroup id =
//! directory inode). A pod's process reading its own token gets its pod,
//! container, runtime and the token's identity; a host process gets no
//! pod; the API server's view of the pod adds the image and workload; a
//! token file outside the volumes is read through the reader's view.

use std::{
    collections::{BTreeMap, HashMap},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokenwatch_core::{
    event::{Detail, EventKind, FileDetail, Process, SensorEvent},
    identity::{IdentityCache, KeySet},
};
use tokenwatch_host::{
    agent::enrich::Enricher,
    kubesync::PodInfo,
    node::{CgroupResolver, TokenWatcher},
};
use tokenwatch_test_support::tokens::{k8s_key, pod_bound_claims, sign_as_apiserver};

const POD_A: &str = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0";
const POD_A_: &str = "0b1c2d3e_4f50_6172_8394_a5b6c7d8e9f0";
const CONTAINER: &str = "8f3bd5c1a2e4f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f";
/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600;

/// A projected token volume as the kubelet writes it; returns the token path.
fn volume(root: &Path, pod_uid: &str, token: &str) -> PathBuf {
    let vol = root
        .join("pods")
        .join(pod_uid)
        .join("volumes/kubernetes.io~projected/kube-api-access-7q2xk");
    let stamp = vol.join("..2026_01_01_00_00_00.1");
    std::fs::create_dir_all(&stamp).unwrap();
    std::fs::write(stamp.join("token"), token).unwrap();
    std::os::unix::fs::symlink("..2026_01_01_00_00_00.1", vol.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/token", vol.join("token")).unwrap();
    vol.join("token")
}

fn access(tgid: u32, cgroup_id: u64, path: &Path) -> SensorEvent {
    let meta = std::fs::metadata(path).unwrap();
    SensorEvent {
        schema: 2,
        kind: EventKind::TokenAccess,
        monotonic_ns: 1,
        time: "2026-01-01T00:00:01Z".into(),
        process: Process {
            tgid,
            pid: tgid,
            ppid: 1,
            uid: 0,
            gid: 0,
            comm: "python3".into(),
            exe: Some("/usr/bin/python3".into()),
            parent_exe: None,
            cgroup_id,
            mnt_ns: 0,
            start_ns: 0,
            named_by: "pidfd",
            uncertain: false,
        },
        detail: Detail::File(FileDetail {
            syscall: None,
            dev: meta.dev(),
            dev_name: String::new(),
            ino: meta.ino(),
            fd: -1,
            path: Some(path.display().to_string()),
            path_truncated: false,
            flags: None,
            matched: vec!["filesystem"],
            bytes: None,
            seen: vec!["open", "access"],
        }),
    }
}

fn ino(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

#[tokio::test]
async fn events_get_their_pod_and_token_without_privilege() {
    let kubelet = tempfile::tempdir().unwrap();
    let token = sign_as_apiserver(&pod_bound_claims(
        "shop",
        "web",
        ("web-7d9f8b6c5d-x2x9q", POD_A),
        "node-1",
        "jti-a-1",
        T0,
        3607,
    ));
    let token_path = volume(kubelet.path(), POD_A, &token);

    let cgroups = tempfile::tempdir().unwrap();
    let container = cgroups
        .path()
        .join("kubepods.slice/kubepods-burstable.slice")
        .join(format!("kubepods-burstable-pod{POD_A_}.slice"))
        .join(format!("cri-containerd-{CONTAINER}.scope"));
    std::fs::create_dir_all(&container).unwrap();
    let host = cgroups.path().join("system.slice/ssh.service");
    std::fs::create_dir_all(&host).unwrap();

    let mut keys = KeySet::new();
    keys.add_pem_file(&k8s_key("rsa-public.pem")).unwrap();
    let identities = Arc::new(IdentityCache::new(keys));
    let (tx, _rx) = tokio::sync::mpsc::channel(64);
    let watch = TokenWatcher::new(kubelet.path(), Arc::clone(&identities))
        .spawn(tx)
        .expect("watch the fake kubelet tree");
    let resolver = CgroupResolver::new(Some(cgroups.path().to_owned())).unwrap();
    let mut enricher = Enricher::new(resolver, identities, Some(watch));
    // The watcher discovers the volume in its first scan.
    for _ in 0..50 {
        enricher.refresh_pods();
        if enricher.pods.contains_key(POD_A) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A process in pod A's container reading pod A's token.
    let e = enricher.enrich(access(100, ino(&container), &token_path));
    let pod = e.pod.as_ref().expect("a pod process");
    assert_eq!(pod.uid, POD_A);
    assert_eq!(pod.container_id.as_deref(), Some(CONTAINER));
    assert_eq!(pod.runtime.as_deref(), Some("containerd"));
    assert_eq!(pod.name.as_deref(), Some("web-7d9f8b6c5d-x2x9q"));
    assert_eq!(pod.namespace.as_deref(), Some("shop"));
    assert_eq!(pod.service_account.as_deref(), Some("web"));
    let identity = e.identity.as_ref().expect("the token's identity");
    assert_eq!(
        identity.user.as_ref().map(|u| u.username.as_str()),
        Some("system:serviceaccount:shop:web")
    );
    assert!(identity.signature.is_verified());
    assert_eq!(e.volume_pod_uid.as_deref(), Some(POD_A));

    // A host process: no pod; the same token file, the same identity.
    let e = enricher.enrich(access(200, ino(&host), &token_path));
    assert!(e.pod.is_none());
    assert_eq!(e.volume_pod_uid.as_deref(), Some(POD_A));
    assert!(e.identity.is_some());

    // The API server's view of the pod: image by (shortened) container id,
    // workload, labels.
    let mut api = HashMap::new();
    api.insert(
        POD_A.to_owned(),
        PodInfo {
            uid: POD_A.into(),
            name: "web-7d9f8b6c5d-x2x9q".into(),
            namespace: "shop".into(),
            workload: Some("Deployment/web".into()),
            labels: BTreeMap::from([("app".to_owned(), "web".to_owned())]),
            service_account: Some("web".into()),
            container_images: BTreeMap::from([(
                CONTAINER.to_owned(),
                "registry.example/shop/web:2.1".to_owned(),
            )]),
            ..PodInfo::default()
        },
    );
    enricher.api_pods = Arc::new(api);
    let e = enricher.enrich(access(100, ino(&container), &token_path));
    let pod = e.pod.unwrap();
    assert_eq!(pod.image.as_deref(), Some("registry.example/shop/web:2.1"));
    assert_eq!(pod.workload.as_deref(), Some("Deployment/web"));
    assert_eq!(pod.labels.get("app").map(String::as_str), Some("web"));

    // A token file outside every volume (a copy): read through its path,
    // remembered by (dev, ino); a file that is no token has no identity.
    let elsewhere = tempfile::tempdir().unwrap();
    let copy = elsewhere.path().join("stolen");
    std::fs::write(&copy, format!("{token}\n")).unwrap();
    let e = enricher.enrich(access(300, ino(&host), &copy));
    assert!(e.identity.is_some(), "a trailing newline is still a token");
    assert_eq!(e.volume_pod_uid, None);
    let junk = elsewhere.path().join("junk");
    std::fs::write(&junk, "not a token ¿ñ").unwrap();
    let e = enricher.enrich(access(300, ino(&host), &junk));
    assert!(e.identity.is_none());
    assert_eq!(enricher.by_file.len(), 2);
}
