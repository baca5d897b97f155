//! cgroup path -> pod attribution: a table across both cgroup drivers and
//! every runtime, and the resolver over a fake hierarchy in a temp dir
//! (cgroup id = directory inode) plus the real one on this machine.

use std::os::unix::fs::MetadataExt as _;

use tokenwatch_host::node::{Attribution, CgroupResolver, QosClass, Runtime, parse_cgroup_path};

const UID: &str = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0";
const UID_: &str = "0b1c2d3e_4f50_6172_8394_a5b6c7d8e9f0";
const ID: &str = "8f3bd5c1a2e4f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f";

fn pod(container: Option<&str>, runtime: Option<Runtime>, qos: QosClass) -> Attribution {
    Attribution::Pod {
        pod_uid: UID.to_owned(),
        container_id: container.map(str::to_owned),
        runtime,
        qos,
    }
}

#[test]
fn table_of_cgroup_paths() {
    use QosClass::{BestEffort, Burstable, Guaranteed};
    let c = Some(ID);
    let cases: Vec<(String, Attribution)> = vec![
        // systemd driver
        (
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"
            ),
            pod(c, Some(Runtime::Containerd), Burstable),
        ),
        (
            format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{ID}.scope"
            ),
            pod(c, Some(Runtime::Crio), BestEffort),
        ),
        (
            format!("/kubepods.slice/kubepods-pod{UID_}.slice/docker-{ID}.scope"),
            pod(c, Some(Runtime::Docker), Guaranteed),
        ),
        (
            format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope"),
            pod(c, Some(Runtime::Containerd), Guaranteed),
        ),
        (
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-conmon-{ID}.scope"
            ),
            pod(None, Some(Runtime::Crio), Burstable),
        ),
        (
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"),
            pod(None, None, Burstable),
        ),
        // nested cgroups inside the container belong to it
        (
            format!("/kubepods.slice/kubepods-pod{UID_}.slice/crio-{ID}.scope/init.scope"),
            pod(c, Some(Runtime::Crio), Guaranteed),
        ),
        // a kind node: kubelet inside a docker container, systemd driver
        (
            format!(
                "/system.slice/docker-{ID}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"
            ),
            pod(c, Some(Runtime::Containerd), BestEffort),
        ),
        // cgroupfs driver
        (
            format!("/kubepods/burstable/pod{UID}/{ID}"),
            pod(c, None, Burstable),
        ),
        (
            format!("/kubepods/besteffort/pod{UID}/{ID}"),
            pod(c, None, BestEffort),
        ),
        (format!("/kubepods/pod{UID}/{ID}"), pod(c, None, Guaranteed)),
        (
            format!("/kubepods/burstable/pod{UID}/crio-{ID}"),
            pod(c, Some(Runtime::Crio), Burstable),
        ),
        (format!("/kubepods/pod{UID}"), pod(None, None, Guaranteed)),
        // static pod: 32-hex UID
        (
            "/kubepods/burstable/pod5f3c2a1b9d8e7f60a1b2c3d4e5f60718/".to_owned() + ID,
            Attribution::Pod {
                pod_uid: "5f3c2a1b9d8e7f60a1b2c3d4e5f60718".into(),
                container_id: Some(ID.into()),
                runtime: None,
                qos: Burstable,
            },
        ),
        // host
        ("/".to_owned(), Attribution::Host),
        (
            "/system.slice/containerd.service".to_owned(),
            Attribution::Host,
        ),
        (
            "/user.slice/user-1000.slice/session-3.scope".to_owned(),
            Attribution::Host,
        ),
        ("/kubepods.slice".to_owned(), Attribution::Host),
        (
            "/kubepods.slice/kubepods-burstable.slice".to_owned(),
            Attribution::Host,
        ),
        (
            format!("/system.slice/docker-{ID}.scope"),
            Attribution::Host,
        ),
        // malformed pod names are not pods
        (
            "/kubepods/burstable/podnot-a-uid/abc".to_owned(),
            Attribution::Host,
        ),
        (
            format!("/kubepods.slice/kubepods-pod{UID_}x.slice/cri-containerd-{ID}.scope"),
            Attribution::Host,
        ),
        (format!("/notkubepods/pod{UID}/{ID}"), Attribution::Host),
        // a pod whose child is not a container id
        (
            format!("/kubepods/pod{UID}/not-hex"),
            pod(None, None, Guaranteed),
        ),
    ];
    for (path, want) in cases {
        assert_eq!(parse_cgroup_path(&path), want, "{path}");
    }
}

#[test]
fn resolver_finds_cgroups_by_inode_and_forgets_removed_ones() {
    let root = tempfile::tempdir().expect("tmp");
    let container = root
        .path()
        .join("kubepods.slice/kubepods-burstable.slice")
        .join(format!("kubepods-burstable-pod{UID_}.slice"))
        .join(format!("cri-containerd-{ID}.scope"));
    std::fs::create_dir_all(&container).expect("mkdir");
    let host = root.path().join("system.slice/ssh.service");
    std::fs::create_dir_all(&host).expect("mkdir");
    let ino = |p: &std::path::Path| std::fs::metadata(p).expect("stat").ino();

    let resolver = CgroupResolver::new(Some(root.path().to_owned())).expect("resolver");
    assert_eq!(
        resolver.resolve(ino(&container)),
        pod(Some(ID), Some(Runtime::Containerd), QosClass::Burstable)
    );
    assert_eq!(resolver.resolve(ino(&host)), Attribution::Host);
    assert_eq!(resolver.resolve(ino(root.path())), Attribution::Host);
    assert_eq!(resolver.cached(), 3);

    // A container that appears later is found by a fresh walk.
    std::thread::sleep(std::time::Duration::from_millis(120));
    let late = container.with_file_name(format!("cri-containerd-{}.scope", "a".repeat(64)));
    std::fs::create_dir(&late).expect("mkdir");
    match resolver.resolve(ino(&late)) {
        Attribution::Pod { container_id, .. } => {
            assert_eq!(container_id.as_deref(), Some(&*"a".repeat(64)));
        }
        Attribution::Host => panic!("late container not found"),
    }

    // Removed cgroups are forgotten.
    let gone = ino(&container);
    std::fs::remove_dir(&container).expect("rmdir");
    assert_eq!(resolver.forget_removed(), 1);
    assert_eq!(resolver.path_of(gone), None);
}

#[test]
fn resolver_finds_this_machines_v2_mount() {
    let Ok(resolver) = CgroupResolver::new(None) else {
        // A machine without cgroup v2 would say so with FindCgroup2; the CI
        // machines have it (hybrid: /sys/fs/cgroup/unified).
        panic!("no cgroup v2 hierarchy found in /proc/self/mountinfo");
    };
    let root_ino = std::fs::metadata(resolver.root()).expect("stat").ino();
    assert_eq!(resolver.path_of(root_ino).as_deref(), Some("/"));
    assert_eq!(resolver.resolve(root_ino), Attribution::Host);
}
