//! The correlator on sensor events built as the sensor emits them, with
//! tokens signed by Kubernetes' own test key and an RBAC snapshot imported
//! from YAML: which reads are plain, which are findings, and how connects
//! become token uses.

use tokenwatch_test_support::tokens as identity_common;

use std::{net::IpAddr, sync::Arc, time::Duration};

use identity_common::{K8S_RSA_KID, k8s_rsa_signing_key, secret, sign};
use jsonwebtoken::Algorithm;
use serde_json::json;
use tokenwatch_core::{
    correlate::{
        CorrelateConfig, Correlator, Enriched, EntryKind, FindingKind, PodRef, RbacContext,
        TrailEntry, baseline::BaselineConfig, engine::CONTACT_GRACE,
    },
    event::{
        ConnectDetail, Detail, EventKind, FileDetail, Process, ProcessDetail, SensorEvent, Syscall,
    },
    identity::{Identity, KeySet},
    rbac::{Snapshot, import},
};

const POD_A: &str = "0a1b2c3d-0000-4000-8000-00000000000a";
const POD_B: &str = "0a1b2c3d-0000-4000-8000-00000000000b";
const SECOND: u64 = 1_000_000_000;
/// 2026-01-01T00:00:00Z, and every event a little after it.
const T0: i64 = 1_767_225_600;

fn bound_token(pod_name: &str, pod_uid: &str, sa: &str, jti: &str) -> Arc<Identity> {
    let claims = json!({
        "aud": ["https://kubernetes.default.svc.cluster.local"],
        "exp": T0 + 3600, "iat": T0 - 60, "nbf": T0 - 60,
        "iss": "https://kubernetes.default.svc.cluster.local",
        "jti": jti,
        "sub": format!("system:serviceaccount:shop:{sa}"),
        "kubernetes.io": {
            "namespace": "shop",
            "node": {"name": "node-1", "uid": "n-1"},
            "pod": {"name": pod_name, "uid": pod_uid},
            "serviceaccount": {"name": sa, "uid": format!("uid-{sa}")},
            "warnafter": T0 + 3000
        }
    });
    let token = sign(
        Algorithm::RS256,
        &k8s_rsa_signing_key(),
        Some(K8S_RSA_KID),
        &claims,
    );
    Arc::new(Identity::from_token(&secret(&token), &KeySet::new()).expect("parse"))
}

fn legacy_token(sa: &str) -> Arc<Identity> {
    let claims = json!({
        "iss": "kubernetes/serviceaccount",
        "kubernetes.io/serviceaccount/namespace": "shop",
        "kubernetes.io/serviceaccount/secret.name": format!("{sa}-token-x7k2p"),
        "kubernetes.io/serviceaccount/service-account.name": sa,
        "kubernetes.io/serviceaccount/service-account.uid": "12345",
        "sub": format!("system:serviceaccount:shop:{sa}")
    });
    let token = sign(
        Algorithm::RS256,
        &k8s_rsa_signing_key(),
        Some(K8S_RSA_KID),
        &claims,
    );
    Arc::new(Identity::from_token(&secret(&token), &KeySet::new()).expect("parse"))
}

fn snapshot() -> RbacContext {
    let yaml = tokenwatch_test_support::policy::SHOP;
    let report = import::import_str("policy.yaml", yaml).expect("import");
    RbacContext::new(Arc::new(Snapshot::build(report.objects)), "test-policy")
}

fn correlator() -> Correlator {
    let mut c = Correlator::new(CorrelateConfig {
        node_name: "node-1".into(),
        baseline: BaselineConfig {
            learning_period: Duration::from_secs(60),
            ..BaselineConfig::default()
        },
        ..CorrelateConfig::default()
    });
    c.set_rbac(snapshot());
    c
}

fn pod(uid: &str, name: &str) -> Option<PodRef> {
    Some(PodRef {
        uid: uid.into(),
        name: Some(name.into()),
        namespace: Some("shop".into()),
        container_id: Some(format!("c-{name}")),
        runtime: Some("containerd".into()),
        ..PodRef::default()
    })
}

fn process(tgid: u32, exe: &str, cgroup_id: u64) -> Process {
    Process {
        tgid,
        pid: tgid,
        ppid: 1,
        uid: 1000,
        gid: 1000,
        comm: exe.rsplit('/').next().unwrap().chars().take(15).collect(),
        exe: Some(exe.into()),
        parent_exe: Some("/usr/bin/containerd-shim-runc-v2".into()),
        cgroup_id,
        mnt_ns: 4_026_532_000,
        start_ns: 0,
        named_by: "event",
        uncertain: false,
    }
}

fn time_of(at_ns: u64) -> String {
    humantime::format_rfc3339_nanos(
        std::time::UNIX_EPOCH + Duration::from_secs(T0 as u64) + Duration::from_nanos(at_ns),
    )
    .to_string()
}

fn file_event(
    kind: EventKind,
    at_ns: u64,
    proc_: &Process,
    fd: i32,
    bytes: Option<i64>,
) -> SensorEvent {
    SensorEvent {
        schema: 1,
        kind,
        monotonic_ns: at_ns,
        time: time_of(at_ns),
        process: proc_.clone(),
        detail: Detail::File(FileDetail {
            syscall: Some(match kind {
                EventKind::TokenOpen => Syscall::Openat,
                EventKind::TokenClose => Syscall::Close,
                _ => Syscall::Read,
            }),
            dev: 42,
            dev_name: "0:42".into(),
            ino: 7,
            fd,
            path: Some("/var/run/secrets/kubernetes.io/serviceaccount/token".into()),
            path_truncated: false,
            flags: None,
            matched: vec!["inode"],
            bytes,
            seen: Vec::new(),
        }),
    }
}

/// open + read + read(0) + close of a token; returns what the correlator recorded.
fn read_token(
    c: &mut Correlator,
    at_ns: u64,
    proc_: &Process,
    reader_pod: Option<PodRef>,
    identity: &Arc<Identity>,
    volume_pod: &str,
) -> Vec<TrailEntry> {
    let enrich = |event| Enriched {
        event,
        pod: reader_pod.clone(),
        identity: Some(Arc::clone(identity)),
        volume_pod_uid: Some(volume_pod.to_owned()),
    };
    let mut out = Vec::new();
    out.extend(c.observe(enrich(file_event(
        EventKind::TokenOpen,
        at_ns,
        proc_,
        3,
        None,
    ))));
    out.extend(c.observe(enrich(file_event(
        EventKind::TokenRead,
        at_ns + 1,
        proc_,
        3,
        Some(900),
    ))));
    out.extend(c.observe(enrich(file_event(
        EventKind::TokenRead,
        at_ns + 2,
        proc_,
        3,
        Some(0),
    ))));
    out.extend(c.observe(enrich(file_event(
        EventKind::TokenClose,
        at_ns + 3,
        proc_,
        3,
        None,
    ))));
    out
}

fn connect(
    c: &mut Correlator,
    at_ns: u64,
    proc_: &Process,
    reader_pod: Option<PodRef>,
    sock: u64,
) -> Vec<TrailEntry> {
    let detail = |sport, established| {
        Detail::Connect(ConnectDetail {
            family: "ipv4",
            saddr: "10.0.0.5".parse::<IpAddr>().unwrap(),
            sport,
            daddr: "10.96.0.1".parse::<IpAddr>().unwrap(),
            dport: 443,
            established,
            sock_id: sock,
        })
    };
    let event = |kind, at, d| Enriched {
        event: SensorEvent {
            schema: 1,
            kind,
            monotonic_ns: at,
            time: time_of(at),
            process: proc_.clone(),
            detail: d,
        },
        pod: reader_pod.clone(),
        identity: None,
        volume_pod_uid: None,
    };
    let mut out = c.observe(event(EventKind::Connect, at_ns, detail(0, None)));
    out.extend(c.observe(event(
        EventKind::ConnectResult,
        at_ns + 1000,
        detail(40_000, Some(true)),
    )));
    // The agent's timer: a connect without a read is decided after the grace.
    out.extend(c.tick(at_ns + 1000 + GRACE));
    out
}

const GRACE: u64 = CONTACT_GRACE.as_nanos() as u64;

fn kinds(entry: &TrailEntry) -> Vec<FindingKind> {
    entry.findings.iter().map(|f| f.kind).collect()
}

#[test]
fn an_app_reading_its_own_token_and_connecting_is_a_plain_token_use() {
    let mut c = correlator();
    let web = bound_token("web-7d9f8b6c5d-x2x9q", POD_A, "web", "jti-web-1");
    let app = process(100, "/app/server", 11);
    let entries = read_token(
        &mut c,
        SECOND,
        &app,
        pod(POD_A, "web-7d9f8b6c5d-x2x9q"),
        &web,
        POD_A,
    );
    assert_eq!(
        entries.len(),
        1,
        "read + read(0) + close is one observation: {entries:#?}"
    );
    let read = &entries[0];
    assert_eq!(read.kind, EntryKind::TokenRead);
    assert!(read.findings.is_empty(), "{:?}", read.findings);
    assert_eq!(read.subject(), Some("system:serviceaccount:shop:web"));
    assert_eq!(read.jti(), Some("jti-web-1"));
    assert!(
        read.token
            .as_ref()
            .unwrap()
            .fingerprint
            .starts_with("sha256:")
    );
    let rbac = read.rbac.as_ref().unwrap();
    assert!(!rbac.can_read_secrets && !rbac.can_create_pods && !rbac.can_exec);
    assert_eq!(rbac.snapshot, "test-policy");

    let uses = connect(
        &mut c,
        2 * SECOND,
        &app,
        pod(POD_A, "web-7d9f8b6c5d-x2x9q"),
        1,
    );
    assert_eq!(uses.len(), 1);
    let used = &uses[0];
    assert_eq!(used.kind, EntryKind::TokenUse);
    assert!(used.findings.is_empty());
    assert_eq!(used.jti(), Some("jti-web-1"));
    let conn = used.connection.as_ref().unwrap();
    assert_eq!(
        (
            conn.daddr.as_str(),
            conn.dport,
            conn.sport,
            conn.established
        ),
        ("10.96.0.1", 443, 40_000, Some(true))
    );
    assert_eq!(used.pod_key().as_deref(), Some("shop/web-7d9f8b6c5d-x2x9q"));

    // The same program re-reading every minute after learning (a new
    // process each time: one process's repeats are folded) stays plain.
    for minute in 1..5 {
        let again = read_token(
            &mut c,
            minute * 60 * SECOND,
            &process(100 + minute as u32, "/app/server", 11),
            pod(POD_A, "web-7d9f8b6c5d-x2x9q"),
            &web,
            POD_A,
        );
        assert!(
            again[0].findings.is_empty(),
            "minute {minute}: {:?}",
            again[0].findings
        );
    }
}

#[test]
fn a_shell_in_the_pod_is_an_unexpected_reader() {
    let mut c = correlator();
    let web = bound_token("web-7d9f8b6c5d-x2x9q", POD_A, "web", "jti-web-1");
    read_token(
        &mut c,
        SECOND,
        &process(100, "/app/server", 11),
        pod(POD_A, "web-7d9f8b6c5d-x2x9q"),
        &web,
        POD_A,
    );
    let cat = process(200, "/usr/bin/cat", 11);
    let entries = read_token(
        &mut c,
        5 * SECOND,
        &cat,
        pod(POD_A, "web-7d9f8b6c5d-x2x9q"),
        &web,
        POD_A,
    );
    assert_eq!(kinds(&entries[0]), vec![FindingKind::UnexpectedReader]);
    assert!(
        entries[0].findings[0].reason.contains("/usr/bin/cat"),
        "{}",
        entries[0].findings[0].reason
    );
    // After learning, a new program is unexpected too.
    let helper = process(300, "/app/helper", 11);
    let late = read_token(
        &mut c,
        120 * SECOND,
        &helper,
        pod(POD_A, "web-7d9f8b6c5d-x2x9q"),
        &web,
        POD_A,
    );
    assert_eq!(kinds(&late[0]), vec![FindingKind::UnexpectedReader]);
}

/// With live sync, the baseline is per workload and container image: a
/// program learned in the app's container is unexpected in its sidecar.
#[test]
fn the_baseline_is_per_container_image() {
    let mut c = correlator();
    let web = bound_token("web-7d9f8b6c5d-x2x9q", POD_A, "web", "jti-web-1");
    let in_image = |image: &str| {
        pod(POD_A, "web-7d9f8b6c5d-x2x9q").map(|p| PodRef {
            workload: Some("Deployment/web".into()),
            image: Some(image.into()),
            ..p
        })
    };
    let server = process(100, "/app/server", 11);
    let first = read_token(
        &mut c,
        SECOND,
        &server,
        in_image("shop/web:2.1"),
        &web,
        POD_A,
    );
    assert!(first[0].findings.is_empty(), "{:?}", first[0].findings);
    assert_eq!(
        first[0]
            .reader
            .as_ref()
            .unwrap()
            .pod
            .as_ref()
            .unwrap()
            .image
            .as_deref(),
        Some("shop/web:2.1"),
        "the image is recorded with the reader's pod"
    );
    let envoy = process(101, "/usr/local/bin/envoy", 12);
    read_token(
        &mut c,
        2 * SECOND,
        &envoy,
        in_image("envoyproxy/envoy:v1.31"),
        &web,
        POD_A,
    );
    // After learning: each program is known in its own image only.
    let again = read_token(
        &mut c,
        120 * SECOND,
        &process(103, "/app/server", 11),
        in_image("shop/web:2.1"),
        &web,
        POD_A,
    );
    assert!(again[0].findings.is_empty(), "{:?}", again[0].findings);
    let swapped = read_token(
        &mut c,
        121 * SECOND,
        &process(102, "/app/server", 12),
        in_image("envoyproxy/envoy:v1.31"),
        &web,
        POD_A,
    );
    assert_eq!(kinds(&swapped[0]), vec![FindingKind::UnexpectedReader]);
}

#[test]
fn another_pods_reader_is_a_foreign_token_and_a_host_reader_is_flagged() {
    let mut c = correlator();
    let web = bound_token("web-7d9f8b6c5d-x2x9q", POD_A, "web", "jti-web-1");
    let thief = process(400, "/usr/bin/python3", 22);
    let entries = read_token(&mut c, SECOND, &thief, pod(POD_B, "batch-0"), &web, POD_A);
    assert_eq!(kinds(&entries[0]), vec![FindingKind::ForeignToken]);
    assert!(
        entries[0].findings[0]
            .reason
            .contains("shop/web-7d9f8b6c5d-x2x9q")
    );

    let host = process(500, "/usr/bin/cat", 1);
    let entries = read_token(&mut c, 2 * SECOND, &host, None, &web, POD_A);
    assert_eq!(kinds(&entries[0]), vec![FindingKind::HostReader]);
    assert!(entries[0].reader.as_ref().unwrap().pod.is_none());

    let kubelet = process(600, "/usr/bin/kubelet", 1);
    let entries = read_token(&mut c, 3 * SECOND, &kubelet, None, &web, POD_A);
    assert!(
        entries[0].findings.is_empty(),
        "the kubelet writes tokens: {:?}",
        entries[0].findings
    );
}

#[test]
fn a_stolen_tokens_use_is_flagged_at_the_use() {
    let mut c = correlator();
    let web = bound_token("web-7d9f8b6c5d-x2x9q", POD_A, "web", "jti-web-1");
    // Pod B's process reads pod A's token and connects within a millisecond.
    let thief = process(400, "/usr/bin/python3", 22);
    read_token(&mut c, SECOND, &thief, pod(POD_B, "batch-0"), &web, POD_A);
    let uses = connect(
        &mut c,
        SECOND + 1_000_000,
        &thief,
        pod(POD_B, "batch-0"),
        31,
    );
    assert_eq!(uses.len(), 1);
    assert_eq!(uses[0].kind, EntryKind::TokenUse);
    assert_eq!(uses[0].jti(), Some("jti-web-1"));
    assert_eq!(kinds(&uses[0]), vec![FindingKind::ForeignToken]);
    let reason = &uses[0].findings[0].reason;
    assert!(
        reason.contains("in pod shop/batch-0") && reason.contains("shop/web-7d9f8b6c5d-x2x9q"),
        "{reason}"
    );

    // A host process that uses a pod's token.
    let host = process(500, "/usr/bin/curl", 1);
    read_token(&mut c, 2 * SECOND, &host, None, &web, POD_A);
    let uses = connect(&mut c, 2 * SECOND + 1_000_000, &host, None, 32);
    assert_eq!(uses[0].kind, EntryKind::TokenUse);
    assert_eq!(kinds(&uses[0]), vec![FindingKind::HostReader]);

    // The pod's own process using its own token: no finding.
    let app = process(100, "/app/server", 11);
    read_token(
        &mut c,
        3 * SECOND,
        &app,
        pod(POD_A, "web-7d9f8b6c5d-x2x9q"),
        &web,
        POD_A,
    );
    let uses = connect(
        &mut c,
        3 * SECOND + 1_000_000,
        &app,
        pod(POD_A, "web-7d9f8b6c5d-x2x9q"),
        33,
    );
    assert_eq!(uses[0].kind, EntryKind::TokenUse);
    assert!(uses[0].findings.is_empty(), "{:?}", uses[0].findings);
}

#[test]
fn a_legacy_token_of_a_secret_reader_is_legacy_and_privileged_once_per_interval() {
    let mut c = correlator();
    let legacy = legacy_token("legacy");
    let app = process(700, "/app/worker", 33);
    let entries = read_token(
        &mut c,
        SECOND,
        &app,
        pod("0a1b2c3d-0000-4000-8000-00000000000c", "worker-0"),
        &legacy,
        "0a1b2c3d-0000-4000-8000-00000000000c",
    );
    let found = kinds(&entries[0]);
    assert!(found.contains(&FindingKind::LegacyToken), "{found:?}");
    assert!(found.contains(&FindingKind::PrivilegedSubject), "{found:?}");
    let rbac = entries[0].rbac.as_ref().unwrap();
    assert!(rbac.can_read_secrets);
    assert!(rbac.risks.iter().any(|r| r.check == "read-secrets"
        && r.scope == "cluster-wide"
        && r.binding.ends_with("legacy-reads-secrets")));
    // The same program a minute later: recorded, without repeating the findings.
    let again = read_token(
        &mut c,
        61 * SECOND,
        &process(701, "/app/worker", 33),
        pod("0a1b2c3d-0000-4000-8000-00000000000c", "worker-0"),
        &legacy,
        "0a1b2c3d-0000-4000-8000-00000000000c",
    );
    assert_eq!(again.len(), 1);
    assert!(again[0].findings.is_empty(), "{:?}", again[0].findings);
}

#[test]
fn an_expired_token_is_flagged() {
    let mut c = correlator();
    let web = bound_token("web-7d9f8b6c5d-x2x9q", POD_A, "web", "jti-web-1");
    // Two hours after T0: past exp (T0 + 1h) and its leeway.
    let app = process(100, "/app/server", 11);
    let entries = read_token(
        &mut c,
        7200 * SECOND,
        &app,
        pod(POD_A, "web-7d9f8b6c5d-x2x9q"),
        &web,
        POD_A,
    );
    assert_eq!(kinds(&entries[0]), vec![FindingKind::ExpiredToken]);
    assert_eq!(entries[0].token.as_ref().unwrap().validity, "expired");
}

#[test]
fn contacting_the_api_server_without_a_token_is_flagged_except_for_node_components() {
    let mut c = correlator();
    let sneaky = process(800, "/tmp/x", 44);
    let entries = connect(&mut c, SECOND, &sneaky, pod(POD_B, "batch-0"), 9);
    assert_eq!(entries[0].kind, EntryKind::ApiContact);
    assert_eq!(
        kinds(&entries[0]),
        vec![FindingKind::ApiContactWithoutToken]
    );

    let kubelet = process(600, "/usr/bin/kubelet", 1);
    let entries = connect(&mut c, 2 * SECOND, &kubelet, None, 10);
    assert_eq!(entries[0].kind, EntryKind::ApiContact);
    assert!(entries[0].findings.is_empty());

    // The same container's token counts for a sibling process within the window.
    let web = bound_token("batch-0", POD_B, "batch", "jti-batch");
    read_token(
        &mut c,
        3 * SECOND,
        &process(801, "/app/batch", 44),
        pod(POD_B, "batch-0"),
        &web,
        POD_B,
    );
    let entries = connect(
        &mut c,
        4 * SECOND,
        &process(802, "/app/uploader", 44),
        pod(POD_B, "batch-0"),
        11,
    );
    assert_eq!(entries[0].kind, EntryKind::TokenUse);
    assert_eq!(entries[0].jti(), Some("jti-batch"));
    // Outside the window, it does not.
    let entries = connect(
        &mut c,
        4 * SECOND + 601 * SECOND,
        &process(803, "/app/uploader", 44),
        pod(POD_B, "batch-0"),
        12,
    );
    assert_eq!(entries[0].kind, EntryKind::ApiContact);
}

#[test]
fn lineage_names_the_parent_chain() {
    let mut c = correlator();
    let exec = |tgid, ppid, exe: &str| Enriched {
        event: SensorEvent {
            schema: 1,
            kind: EventKind::Exec,
            monotonic_ns: 1,
            time: time_of(1),
            process: Process {
                ppid,
                ..process(tgid, exe, 11)
            },
            detail: Detail::Process(ProcessDetail {
                filename: Some(exe.into()),
                exit_code: None,
            }),
        },
        pod: None,
        identity: None,
        volume_pod_uid: None,
    };
    c.observe(exec(10, 1, "/usr/bin/runc"));
    c.observe(exec(11, 10, "/bin/sh"));
    c.observe(exec(12, 11, "/usr/bin/cat"));
    let web = bound_token("web-7d9f8b6c5d-x2x9q", POD_A, "web", "jti-web-1");
    let cat = Process {
        ppid: 11,
        parent_exe: Some("/bin/sh".into()),
        ..process(12, "/usr/bin/cat", 11)
    };
    let entries = read_token(
        &mut c,
        SECOND,
        &cat,
        pod(POD_A, "web-7d9f8b6c5d-x2x9q"),
        &web,
        POD_A,
    );
    assert_eq!(
        entries[0].reader.as_ref().unwrap().ancestry,
        vec!["/bin/sh".to_owned(), "/usr/bin/runc".to_owned()]
    );
}

/// One fanotify access (open, access and close merged) by `proc_` of the
/// token file `ino`, as the agent enriches it.
fn access(
    at_ns: u64,
    proc_: &Process,
    reader_pod: Option<PodRef>,
    identity: &Arc<Identity>,
    volume_pod: &str,
) -> Enriched {
    let mut event = file_event(EventKind::TokenAccess, at_ns, proc_, -1, None);
    if let Detail::File(f) = &mut event.detail {
        f.syscall = None;
        f.matched = vec!["filesystem"];
        f.seen = vec!["open", "access", "close"];
    }
    Enriched {
        event,
        pod: reader_pod,
        identity: Some(Arc::clone(identity)),
        volume_pod_uid: Some(volume_pod.to_owned()),
    }
}

fn started(tgid: u32, exe: &str, cgroup_id: u64, start_ns: u64) -> Process {
    Process {
        start_ns,
        ..process(tgid, exe, cgroup_id)
    }
}

#[test]
fn a_process_reading_in_a_loop_is_folded_with_exact_counts() {
    let mut c = correlator();
    let web = bound_token("web-7d9f8b6c5d-x2x9q", POD_A, "web", "jti-web-1");
    let host = started(500, "/usr/bin/cat", 1, 3 * SECOND);
    let mut trail = Vec::new();
    let mut next_tick = SECOND;
    // 10,000 accesses, one every 15 ms: 150 s.
    for i in 0..10_000u64 {
        let at = SECOND + i * 15_000_000;
        let out = c.observe(access(at, &host, None, &web, POD_A));
        if i == 0 {
            assert_eq!(out.len(), 1, "the first access is recorded at once");
            assert_eq!(kinds(&out[0]), vec![FindingKind::HostReader]);
            assert!(out[0].repeated.is_none());
        }
        trail.extend(out);
        while next_tick <= at {
            trail.extend(c.tick(next_tick));
            next_tick += SECOND;
        }
    }
    trail.extend(c.drain());
    let total: u64 = trail.iter().map(TrailEntry::accesses).sum();
    assert_eq!(total, 10_000, "every access counted once: {trail:#?}");
    assert!(trail.len() <= 5, "{} records for one loop", trail.len());
    for folded in trail.iter().skip(1) {
        let r = folded.repeated.as_ref().expect("a folded record");
        let span = humantime::parse_rfc3339(&r.last)
            .unwrap()
            .duration_since(humantime::parse_rfc3339(&r.first).unwrap())
            .unwrap();
        assert!(span <= Duration::from_secs(60), "{span:?}");
        assert_eq!(kinds(folded), vec![FindingKind::HostReader]);
        assert_eq!(folded.time, r.last);
    }
}

#[test]
fn two_processes_of_one_program_in_one_pod_are_never_folded_together() {
    let mut c = correlator();
    let web = bound_token("web-7d9f8b6c5d-x2x9q", POD_A, "web", "jti-web-1");
    let a = started(100, "/app/server", 11, 5 * SECOND);
    let b = started(101, "/app/server", 11, 6 * SECOND);
    let mut trail = Vec::new();
    for i in 0..10u64 {
        let at = 10 * SECOND + i * SECOND;
        trail.extend(c.observe(access(at, &a, pod(POD_A, "web-0"), &web, POD_A)));
        trail.extend(c.observe(access(at + 1, &b, pod(POD_A, "web-0"), &web, POD_A)));
    }
    let firsts: Vec<u32> = trail
        .iter()
        .map(|e| e.reader.as_ref().unwrap().tgid)
        .collect();
    assert_eq!(firsts, vec![100, 101], "one record at once per process");
    trail.extend(c.drain());
    for tgid in [100, 101] {
        let n: u64 = trail
            .iter()
            .filter(|e| e.reader.as_ref().unwrap().tgid == tgid)
            .map(TrailEntry::accesses)
            .sum();
        assert_eq!(n, 10, "tgid {tgid}");
    }
    assert_eq!(trail.len(), 4);
}

#[test]
fn a_new_readers_findings_are_never_delayed_by_folding() {
    let mut c = correlator();
    let web = bound_token("web-7d9f8b6c5d-x2x9q", POD_A, "web", "jti-web-1");
    let host = started(500, "/usr/bin/cat", 1, SECOND);
    let thief = started(400, "/usr/bin/python3", 22, 2 * SECOND);
    for i in 0..100u64 {
        c.observe(access(SECOND + i * 1_000_000, &host, None, &web, POD_A));
    }
    let out = c.observe(access(
        SECOND + 50_000_000,
        &thief,
        pod(POD_B, "batch-0"),
        &web,
        POD_A,
    ));
    assert_eq!(out.len(), 1);
    assert_eq!(kinds(&out[0]), vec![FindingKind::ForeignToken]);
}

#[test]
fn a_read_that_reaches_us_after_its_connect_is_a_token_use() {
    let mut c = correlator();
    let web = bound_token("web-7d9f8b6c5d-x2x9q", POD_A, "web", "jti-web-1");
    let thief = started(400, "/usr/bin/python3", 22, 2 * SECOND);
    // The connect's records (eBPF) come in before the read's (fanotify),
    // which happened a millisecond earlier.
    let detail = Detail::Connect(ConnectDetail {
        family: "ipv4",
        saddr: "10.0.0.5".parse::<IpAddr>().unwrap(),
        sport: 40_000,
        daddr: "10.96.0.1".parse::<IpAddr>().unwrap(),
        dport: 443,
        established: Some(true),
        sock_id: 77,
    });
    let result = Enriched {
        event: SensorEvent {
            schema: 1,
            kind: EventKind::ConnectResult,
            monotonic_ns: 10 * SECOND,
            time: time_of(10 * SECOND),
            process: thief.clone(),
            detail,
        },
        pod: pod(POD_B, "batch-0"),
        identity: None,
        volume_pod_uid: None,
    };
    assert!(c.observe(result).is_empty(), "held for the grace");
    // The fanotify reader hands the access over 2 ms later.
    let out = c.observe(access(
        10 * SECOND + 2_000_000,
        &thief,
        pod(POD_B, "batch-0"),
        &web,
        POD_A,
    ));
    let used: Vec<&TrailEntry> = out
        .iter()
        .filter(|e| e.kind == EntryKind::TokenUse)
        .collect();
    assert_eq!(used.len(), 1, "{out:#?}");
    assert_eq!(kinds(used[0]), vec![FindingKind::ForeignToken]);
    assert!(c.tick(20 * SECOND).is_empty(), "no api-contact afterwards");
}
