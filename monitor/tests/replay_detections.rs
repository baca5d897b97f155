//! Crafted incident logs, one per signal and default detection: stolen-token
//! signals from `sourceIPs` alone, legacy and stale tokens, who minted each
//! JTI, the default detections with their thresholds, and hostile input
//! (non-ASCII URIs, huge fields, deep nesting) that must not stop a replay.
//! The binary is run for `-o json` (stable names) and `request-info`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use tokenwatch_core::replay::decide::Policy;
use tokenwatch_core::replay::detect::DetectConfig;
use tokenwatch_core::replay::report::{EventRecord, Report};
use tokenwatch_core::replay::{Options, replay};

const WEB_SA: &str = "system:serviceaccount:shop:web";
const RAW_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6c2hvcDp3ZWIifQ.c2lnbmF0dXJlLW5ldmVyLWNvcGllZA";

fn time(second: u32) -> String {
    format!(
        "2025-06-01T10:{:02}:{:02}.000000Z",
        second / 60,
        second % 60
    )
}

/// One audit event with the fields a real v1.32 API server writes.
#[expect(clippy::too_many_arguments, reason = "a test event's fields")]
fn event(
    second: u32,
    user: Value,
    verb: &str,
    uri: &str,
    object_ref: Option<Value>,
    source_ips: &[&str],
    code: u16,
    annotations: Value,
) -> Value {
    let mut ev = json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": format!("audit-{second}-{verb}"),
        "stage": "ResponseComplete",
        "requestURI": uri,
        "verb": verb,
        "user": user,
        "sourceIPs": source_ips,
        "userAgent": "curl/8.5.0",
        "responseStatus": {"metadata": {}, "code": code},
        "requestReceivedTimestamp": time(second),
        "stageTimestamp": time(second),
        "annotations": annotations,
    });
    if let Some(o) = object_ref {
        ev["objectRef"] = o;
    }
    ev
}

fn allow() -> Value {
    json!({"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": "RBAC: allowed by test"})
}

fn bound_user(sa: &str, jti: &str, pod: &str, pod_uid: &str) -> Value {
    let ns = sa.split(':').nth(2).unwrap_or("");
    json!({
        "username": sa,
        "uid": "sa-uid",
        "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"],
        "extra": {
            "authentication.kubernetes.io/credential-id": [format!("JTI={jti}")],
            "authentication.kubernetes.io/node-name": ["node-1"],
            "authentication.kubernetes.io/node-uid": ["node-uid-1"],
            "authentication.kubernetes.io/pod-name": [pod],
            "authentication.kubernetes.io/pod-uid": [pod_uid],
        }
    })
}

fn plain_user(name: &str) -> Value {
    json!({"username": name, "groups": ["system:authenticated"]})
}

fn get_pods(second: u32, user: Value, ips: &[&str]) -> Value {
    event(
        second,
        user,
        "list",
        "/api/v1/namespaces/shop/pods?limit=500",
        Some(json!({"resource": "pods", "namespace": "shop", "apiVersion": "v1"})),
        ips,
        200,
        allow(),
    )
}

fn write_log(dir: &Path, name: &str, events: &[Value]) -> PathBuf {
    let path = dir.join(name);
    let text: String = events.iter().map(|e| format!("{e}\n")).collect();
    std::fs::write(&path, text).unwrap();
    path
}

fn run_with(files: &[PathBuf], detect: DetectConfig) -> (Report, Vec<EventRecord>) {
    // Detections need no RBAC: decisions are not evaluated (no drift listed).
    let mut policy = Policy::None;
    let options = Options {
        audits: files.to_vec(),
        detect,
        ..Options::default()
    };
    let mut events = Vec::new();
    let report =
        replay(&options, &mut policy, &mut |e| events.push(e.to_record())).expect("replay");
    (report, events)
}

fn run(files: &[PathBuf]) -> (Report, Vec<EventRecord>) {
    run_with(files, DetectConfig::default())
}

fn token<'r>(
    report: &'r Report,
    jti: &str,
) -> &'r tokenwatch_core::replay::timeline::TokenTimeline {
    report
        .tokens
        .iter()
        .find(|t| t.jti.as_deref() == Some(jti))
        .unwrap_or_else(|| panic!("no timeline for {jti}"))
}

fn finding_kinds(t: &tokenwatch_core::replay::timeline::TokenTimeline) -> Vec<(&str, &str)> {
    t.findings.iter().map(|f| (f.kind, f.severity)).collect()
}

fn detections<'r>(
    report: &'r Report,
    kind: &str,
) -> Vec<&'r tokenwatch_core::replay::detect::Detection> {
    report
        .detections
        .iter()
        .filter(|d| d.kind == kind)
        .collect()
}

#[test]
fn second_connection_address_is_high_and_a_new_claim_medium() {
    let dir = tempfile::tempdir().unwrap();
    let user = || bound_user(WEB_SA, "jti-web", "web-0", "uid-web-0");
    // Two calls from the pod, then one through a proxy that set
    // X-Forwarded-For: the connection address (last) differs, and the
    // claimed one is new.
    let log = write_log(
        dir.path(),
        "audit.log",
        &[
            get_pods(1, user(), &["10.244.1.5"]),
            get_pods(2, user(), &["10.244.1.5"]),
            get_pods(3, user(), &["198.51.100.7", "10.0.0.99"]),
        ],
    );
    let (report, events) = run(&[log]);
    let t = token(&report, "jti-web");
    let kinds = finding_kinds(t);
    assert!(
        kinds.contains(&("multiple-source-addresses", "high")),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("claimed-source-address", "medium")),
        "{kinds:?}"
    );
    let multi = t
        .findings
        .iter()
        .find(|f| f.kind == "multiple-source-addresses")
        .unwrap();
    assert!(
        multi.message.contains("10.244.1.5 (2 calls")
            && multi.message.contains("10.0.0.99 (1 calls"),
        "{}",
        multi.message
    );
    assert_eq!(t.claimed_new.len(), 1);
    assert_eq!(t.claimed_new[0].address, "198.51.100.7");
    assert_eq!(t.claimed_new[0].via.as_deref(), Some("10.0.0.99"));
    // The third call is listed, flagged.
    let third = events
        .iter()
        .find(|e| e.audit_id == "audit-3-list")
        .expect("third call listed");
    assert!(
        third.flags.contains(&"claimed-address"),
        "{:?}",
        third.flags
    );
}

#[test]
fn claims_alone_are_never_high() {
    let dir = tempfile::tempdir().unwrap();
    let user = || bound_user(WEB_SA, "jti-claim", "web-0", "uid-web-0");
    let log = write_log(
        dir.path(),
        "audit.log",
        &[
            get_pods(1, user(), &["10.244.1.5"]),
            // Same connection, a claimed address never seen before.
            get_pods(2, user(), &["198.51.100.7", "10.244.1.5"]),
            // The same claim again: not new any more.
            get_pods(3, user(), &["198.51.100.7", "10.244.1.5"]),
        ],
    );
    let (report, _) = run(&[log]);
    let t = token(&report, "jti-claim");
    assert_eq!(
        finding_kinds(t),
        [("claimed-source-address", "medium")],
        "{:?}",
        t.findings
    );
    assert!(t.findings[0].message.contains("198.51.100.7"));
    assert_eq!(t.claimed_new.len(), 1);

    // One address throughout: nothing at all.
    let log = write_log(
        dir.path(),
        "quiet.log",
        &[
            get_pods(
                1,
                bound_user(WEB_SA, "jti-q", "web-0", "u"),
                &["10.244.1.5"],
            ),
            get_pods(
                2,
                bound_user(WEB_SA, "jti-q", "web-0", "u"),
                &["10.244.1.5"],
            ),
        ],
    );
    let (report, events) = run(&[log]);
    assert!(token(&report, "jti-q").findings.is_empty());
    assert!(events.is_empty());
}

#[test]
fn legacy_token_names_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let sa = "system:serviceaccount:ci:deployer";
    let user = json!({"username": sa, "uid": "u", "groups": ["system:serviceaccounts", "system:serviceaccounts:ci", "system:authenticated"]});
    let mut manual = allow();
    manual["authentication.k8s.io/legacy-token"] = json!(sa);
    manual["authentication.k8s.io/legacy-token-manual-secret"] = json!("deployer-token");
    let mut auto = allow();
    auto["authentication.k8s.io/legacy-token"] = json!(sa);
    auto["authentication.k8s.io/legacy-token-autogenerated-secret"] = json!("deployer-token-x7k2p");
    let pods = Some(json!({"resource": "pods", "namespace": "ci", "apiVersion": "v1"}));
    let log = write_log(
        dir.path(),
        "audit.log",
        &[
            event(
                1,
                user.clone(),
                "list",
                "/api/v1/namespaces/ci/pods",
                pods.clone(),
                &["10.0.0.5"],
                200,
                manual.clone(),
            ),
            event(
                2,
                user.clone(),
                "list",
                "/api/v1/namespaces/ci/pods",
                pods.clone(),
                &["10.0.0.5"],
                200,
                manual,
            ),
            event(
                3,
                user.clone(),
                "list",
                "/api/v1/namespaces/ci/pods",
                pods.clone(),
                &["10.0.0.5"],
                200,
                auto,
            ),
            // Not annotated: a bound token, nothing to say.
            event(
                4,
                user,
                "list",
                "/api/v1/namespaces/ci/pods",
                pods,
                &["10.0.0.5"],
                200,
                allow(),
            ),
        ],
    );
    let (report, events) = run(&[log]);
    let found = detections(&report, "legacy-token-used");
    assert_eq!(found.len(), 2, "{found:?}");
    let manual = found
        .iter()
        .find(|d| d.message.contains("ci/deployer-token,"))
        .unwrap();
    assert_eq!(
        (manual.severity, manual.count, manual.subject.as_str()),
        ("medium", 2, sa)
    );
    assert!(manual.message.contains("made by hand"));
    assert!(
        found
            .iter()
            .any(|d| d.message.contains("ci/deployer-token-x7k2p")
                && d.message.contains("auto-generated"))
    );
    assert_eq!(events.len(), 3, "the three annotated calls are listed");
}

#[test]
fn stale_token_after_pod_delete() {
    let dir = tempfile::tempdir().unwrap();
    let user = || bound_user(WEB_SA, "jti-stale", "web-0", "uid-web-0");
    let delete = event(
        10,
        json!({"username": "system:serviceaccount:kube-system:replicaset-controller", "groups": ["system:serviceaccounts"]}),
        "delete",
        "/api/v1/namespaces/shop/pods/web-0",
        Some(json!({"resource": "pods", "namespace": "shop", "name": "web-0", "apiVersion": "v1"})),
        &["10.0.0.2"],
        200,
        allow(),
    );
    // Failed authentication: no user, stage ResponseStarted, 401.
    let failed = |second: u32, ip: &str| {
        json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
            "auditID": format!("401-{second}"), "stage": "ResponseStarted",
            "requestURI": "/api/v1/namespaces/shop/secrets", "verb": "list", "user": {},
            "sourceIPs": [ip], "userAgent": "python-requests/2.31.0",
            "responseStatus": {"metadata": {}, "status": "Failure", "message": "Unauthorized", "reason": "Unauthorized", "code": 401},
            "requestReceivedTimestamp": time(second), "stageTimestamp": time(second),
        })
    };
    let mut stale = allow();
    stale["authentication.k8s.io/stale-token"] =
        json!("subject: system:serviceaccount:shop:web, seconds after warning threshold: 3601");
    let log = write_log(
        dir.path(),
        "audit.log",
        &[
            get_pods(1, user(), &["10.244.1.5"]),
            failed(5, "10.244.1.5"), // before the delete: not stale
            delete,
            failed(20, "10.244.1.5"),
            failed(21, "10.244.1.5"),
            failed(22, "192.0.2.1"), // another address: nothing known
            event(
                30,
                user(),
                "list",
                "/api/v1/namespaces/shop/pods",
                Some(json!({"resource": "pods", "namespace": "shop"})),
                &["10.244.1.5"],
                200,
                stale,
            ),
        ],
    );
    let (report, _) = run(&[log]);
    let found = detections(&report, "stale-token");
    assert_eq!(found.len(), 2, "{found:?}");
    let after_delete = found
        .iter()
        .find(|d| d.message.contains("after pod shop/web-0 was deleted"))
        .unwrap();
    assert_eq!(after_delete.count, 2, "the two 401s after the delete");
    assert_eq!(after_delete.first_time, time(20));
    assert!(after_delete.message.contains("10.244.1.5"));
    let annotated = found
        .iter()
        .find(|d| d.message.contains("JTI=jti-stale"))
        .unwrap();
    assert_eq!(annotated.subject, WEB_SA);
    assert!(
        annotated
            .message
            .contains("seconds after warning threshold")
    );
}

fn token_request(second: u32, by: Value, jti: &str, level: &str, with_body: bool) -> Value {
    let mut ev = event(
        second,
        by,
        "create",
        "/api/v1/namespaces/shop/serviceaccounts/web/token",
        Some(
            json!({"resource": "serviceaccounts", "namespace": "shop", "name": "web", "apiVersion": "v1", "subresource": "token"}),
        ),
        &["10.0.0.3"],
        201,
        {
            let mut a = allow();
            a["authentication.kubernetes.io/issued-credential-id"] = json!(format!("JTI={jti}"));
            a
        },
    );
    ev["level"] = json!(level);
    if with_body {
        ev["requestObject"] = json!({
            "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3607,
                     "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web-0", "uid": "uid-web-0"}},
            "status": {"token": "", "expirationTimestamp": null}
        });
    }
    if level == "RequestResponse" {
        ev["responseObject"] = json!({
            "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3607},
            "status": {"token": RAW_TOKEN, "expirationTimestamp": "2025-06-01T11:00:07Z"}
        });
    }
    ev
}

#[test]
fn every_jti_timeline_starts_at_its_minting() {
    let dir = tempfile::tempdir().unwrap();
    let kubelet = json!({"username": "system:node:node-1", "groups": ["system:nodes", "system:authenticated"]});
    let alice = plain_user("alice@example.com");
    let pod_sa = bound_user(
        "system:serviceaccount:shop:builder",
        "jti-builder",
        "builder-0",
        "uid-b",
    );
    let log = write_log(
        dir.path(),
        "audit.log",
        &[
            token_request(1, kubelet, "jti-kubelet", "Request", true),
            token_request(2, alice, "jti-alice", "RequestResponse", true),
            token_request(3, pod_sa, "jti-by-pod", "Metadata", false),
            get_pods(
                4,
                bound_user(WEB_SA, "jti-kubelet", "web-0", "uid-web-0"),
                &["10.244.1.5"],
            ),
            get_pods(
                5,
                bound_user(WEB_SA, "jti-alice", "web-0", "uid-web-0"),
                &["192.0.2.44"],
            ),
        ],
    );
    let (report, _) = run(std::slice::from_ref(&log));
    let k = token(&report, "jti-kubelet");
    let m = k.minted.as_ref().expect("minted");
    assert_eq!(m.by, "system:node:node-1");
    assert!(m.expected_minter);
    assert_eq!(m.service_account, "shop/web");
    assert_eq!(
        m.bound_to.as_deref(),
        Some("Pod shop/web-0 (uid uid-web-0)")
    );
    assert_eq!(m.audiences, ["https://kubernetes.default.svc"]);
    assert_eq!(m.expiration_seconds, Some(3607));
    assert!(k.findings.is_empty(), "{:?}", k.findings);
    assert_eq!(k.calls_total, 1);
    let rows = tokenwatch_core::replay::report::timeline_rows(k);
    assert_eq!(rows[0].what, "mint", "the timeline starts at the minting");

    let a = token(&report, "jti-alice");
    assert_eq!(finding_kinds(a), [("minted-outside-kubelet", "medium")]);
    assert!(a.findings[0].message.contains("alice@example.com"));
    let p = token(&report, "jti-by-pod");
    assert_eq!(
        finding_kinds(p),
        [("minted-outside-kubelet", "high")],
        "a pod minting tokens"
    );
    let pm = p.minted.as_ref().unwrap();
    assert_eq!(
        (pm.bound_to.as_ref(), pm.expiration_seconds),
        (None, None),
        "level Metadata: no body"
    );
    assert_eq!(p.subject.as_deref(), Some(WEB_SA));

    // The allowlist is configurable.
    let (report, _) = run_with(
        std::slice::from_ref(&log),
        DetectConfig {
            mint_allow: vec!["alice@example.com".into()],
            ..DetectConfig::default()
        },
    );
    assert!(token(&report, "jti-alice").findings.is_empty());

    // The token in status.token is never copied: not in JSON, table or HTML.
    for format in ["json", "table", "html"] {
        let out = Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
            .args(["replay", "--no-progress", "-o", format, "--audit"])
            .arg(&log)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !text.contains(RAW_TOKEN),
            "{format} output holds the raw token"
        );
        assert!(
            !text.contains("c2lnbmF0dXJl"),
            "{format} output holds part of the token"
        );
        if format == "json" {
            let minted: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .filter(|v| v["type"] == "token" && v["minted"].is_object())
                .collect();
            assert_eq!(minted.len(), 3);
            assert!(
                minted
                    .iter()
                    .any(|v| v["minted"]["by"] == "alice@example.com"
                        && v["findings"][0]["kind"] == "minted-outside-kubelet")
            );
        }
    }
}

fn sa_user(sa: &str) -> Value {
    let ns = sa.split(':').nth(2).unwrap_or("");
    json!({"username": sa, "uid": "u", "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"]})
}

#[test]
fn default_detections_each_fire_on_their_crafted_log() {
    let dir = tempfile::tempdir().unwrap();
    let attacker = "system:serviceaccount:shop:web";
    let ssar = event(
        1,
        sa_user(attacker),
        "create",
        "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
        Some(
            json!({"resource": "selfsubjectrulesreviews", "apiGroup": "authorization.k8s.io", "apiVersion": "v1"}),
        ),
        &["10.244.1.5"],
        201,
        allow(),
    );
    let binding = event(
        2,
        sa_user(attacker),
        "create",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        Some(
            json!({"resource": "clusterrolebindings", "apiGroup": "rbac.authorization.k8s.io", "name": "pwn", "apiVersion": "v1"}),
        ),
        &["10.244.1.5"],
        201,
        allow(),
    );
    let denied_role = event(
        3,
        sa_user(attacker),
        "update",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/roles/web",
        Some(
            json!({"resource": "roles", "apiGroup": "rbac.authorization.k8s.io", "namespace": "shop", "name": "web"}),
        ),
        &["10.244.1.5"],
        403,
        json!({"authorization.k8s.io/decision": "forbid", "authorization.k8s.io/reason": ""}),
    );
    // exec over WebSocket is logged as `get`.
    let exec = event(
        4,
        sa_user(attacker),
        "get",
        "/api/v1/namespaces/shop/pods/db-0/exec?command=sh&stdin=true&stdout=true&tty=true",
        Some(
            json!({"resource": "pods", "namespace": "shop", "name": "db-0", "subresource": "exec", "apiVersion": "v1"}),
        ),
        &["10.244.1.5"],
        101,
        allow(),
    );
    let mut impersonate = get_pods(5, sa_user(attacker), &["10.244.1.5"]);
    impersonate["impersonatedUser"] = json!({"username": "admin", "groups": ["system:masters"]});
    let anonymous = |second: u32, uri: &str| {
        event(
            second,
            json!({"username": "system:anonymous", "groups": ["system:unauthenticated"]}),
            "get",
            uri,
            None,
            &["198.51.100.9"],
            200,
            allow(),
        )
    };
    let mut events = vec![
        ssar,
        binding,
        denied_role,
        exec,
        impersonate,
        anonymous(6, "/api/v1/namespaces/kube-system/secrets"),
        anonymous(7, "/healthz"),
        anonymous(8, "/readyz?verbose"),
        anonymous(9, "/version"),
        anonymous(10, "/livez/ping"),
    ];
    // Ten distinct secrets in 30 s by the thief; nine by a controller.
    for i in 0..10u32 {
        events.push(event(
            20 + 3 * i,
            sa_user(attacker),
            "get",
            &format!("/api/v1/namespaces/shop/secrets/s-{i}"),
            Some(json!({"resource": "secrets", "namespace": "shop", "name": format!("s-{i}"), "apiVersion": "v1"})),
            &["10.244.1.5"],
            200,
            allow(),
        ));
    }
    for i in 0..9u32 {
        events.push(event(
            20 + 3 * i,
            sa_user("system:serviceaccount:kube-system:cert-manager"),
            "get",
            &format!("/api/v1/namespaces/shop/secrets/c-{i}"),
            Some(json!({"resource": "secrets", "namespace": "shop", "name": format!("c-{i}"), "apiVersion": "v1"})),
            &["10.244.2.2"],
            200,
            allow(),
        ));
    }
    events.sort_by_key(|e| e["requestReceivedTimestamp"].as_str().unwrap().to_owned());
    let log = write_log(dir.path(), "audit.log", &events);
    let (report, listed) = run(std::slice::from_ref(&log));
    let got: Vec<(&str, &str, &str)> = report
        .detections
        .iter()
        .map(|d| (d.kind, d.severity, d.subject.as_str()))
        .collect();
    let mut want = vec![
        ("permission-discovery", "medium", attacker),
        ("rbac-write-by-service-account", "high", attacker),
        ("rbac-write-by-service-account", "medium", attacker),
        ("exec-by-service-account", "high", attacker),
        ("impersonation-by-service-account", "high", attacker),
        ("anonymous-allowed", "high", "system:anonymous"),
        ("secrets-burst", "high", attacker),
    ];
    let mut got_sorted = got.clone();
    got_sorted.sort_unstable();
    want.sort_unstable();
    assert_eq!(got_sorted, want);
    let burst = detections(&report, "secrets-burst")[0];
    assert_eq!(burst.first_time, time(47), "the tenth distinct secret");
    assert!(burst.message.contains("10 distinct secrets within 60 s"));
    let anon = detections(&report, "anonymous-allowed")[0];
    assert_eq!(
        anon.count, 1,
        "health and version endpoints are not counted"
    );
    // Every detection's event is listed with the kind as a flag.
    for kind in [
        "permission-discovery",
        "exec-by-service-account",
        "secrets-burst",
    ] {
        assert!(listed.iter().any(|e| e.flags.contains(&kind)), "{kind}");
    }
    // Most severe first.
    assert_eq!(report.detections[0].severity, "high");

    // Thresholds are settings: 9 in 60 s is a burst at 9.
    let (report, _) = run_with(
        std::slice::from_ref(&log),
        DetectConfig {
            secrets_burst: 9,
            ..DetectConfig::default()
        },
    );
    assert_eq!(detections(&report, "secrets-burst").len(), 2);
    // ... and 10 spread over 27 s is none in a 20 s window.
    let (report, _) = run_with(
        std::slice::from_ref(&log),
        DetectConfig {
            secrets_window_secs: 20,
            ..DetectConfig::default()
        },
    );
    assert!(detections(&report, "secrets-burst").is_empty());

    // Stable names in -o json.
    let out = Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
        .args([
            "replay",
            "--no-progress",
            "-o",
            "json",
            "--secrets-burst",
            "10",
            "--secrets-window",
            "60",
            "--audit",
        ])
        .arg(&log)
        .output()
        .unwrap();
    assert!(out.status.success());
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: std::collections::BTreeSet<&str> = lines
        .iter()
        .filter(|v| v["type"] == "detection")
        .map(|v| {
            assert!(v["location"]["line"].as_u64().unwrap() >= 1);
            assert!(v["firstTime"].is_string() && v["count"].is_u64());
            v["kind"].as_str().unwrap()
        })
        .collect();
    assert_eq!(kinds.len(), 6);
    let stats = lines.iter().find(|v| v["type"] == "stats").unwrap();
    assert_eq!(stats["detections"], 7);
}

#[test]
fn benign_fixture_events_raise_only_documented_detections() {
    // The real logs of tests/fixtures: every detection is one docs/replay.md
    // lists (file:line) with the reason.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/audit-logs");
    let mut files = vec![
        root.join("liggitt-audit2rbac/demo.log"),
        root.join("panther-labs-panther-analysis/derived-events.jsonl"),
    ];
    for e in std::fs::read_dir(root.join("falcosecurity-falco-k8s_audit")).unwrap() {
        files.push(e.unwrap().path());
    }
    files.sort();
    let (report, _) = run(&files);
    let mut got: Vec<String> = report
        .detections
        .iter()
        .map(|d| {
            let file = Path::new(&*d.location.file)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            format!("{} {}:{}", d.kind, file, d.location.line)
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "anonymous-allowed anonymous_creates_namespace_foo.json:1",
            "anonymous-allowed derived-events.jsonl:1",
            "exec-by-service-account derived-events.jsonl:168",
            "exec-by-service-account derived-events.jsonl:169",
            "exec-by-service-account derived-events.jsonl:67",
            "rbac-write-by-service-account derived-events.jsonl:186",
        ]
    );
}

#[test]
fn hostile_events_never_stop_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    let user = || sa_user(WEB_SA);
    let mut lines: Vec<String> = Vec::new();
    // The issue's event: a non-ASCII field selector and no objectRef.
    lines.push(
        event(
            1,
            user(),
            "list",
            "/api/v1/pods?fieldSelector=é",
            None,
            &["10.0.0.1"],
            200,
            allow(),
        )
        .to_string(),
    );
    for uri in [
        "/api/v1/pods?fieldSelector=%C3%A9=%E6%97%A5",
        "/api/v1/namespaces/é/pods/ü?fieldSelector=metadata.name=日本",
        "/apis/日本/v1/🦀?labelSelector=é+in+(ü)",
        "/api/v1/pods?fieldSelector=\\é",
        "/api/v1/pods/%FF%FE%C3",
        "/api/v1/pods/a%é",
        "https://é:6443/api/v1/pods",
        "/healthz/é",
    ] {
        lines.push(
            event(
                2,
                user(),
                "get",
                uri,
                None,
                &["10.0.0.1", "é"],
                200,
                allow(),
            )
            .to_string(),
        );
    }
    // Non-ASCII in every string field, annotations included.
    let mut odd = event(
        3,
        json!({"username": "system:serviceaccount:日本:é", "groups": ["ü"], "extra": {"authentication.kubernetes.io/credential-id": ["JTI=é"], "authentication.kubernetes.io/pod-name": ["ß"]}}),
        "créate",
        "/é",
        Some(json!({"resource": "secrets", "namespace": "é", "name": "🦀"})),
        &["é", "ü"],
        200,
        json!({"authentication.k8s.io/legacy-token": "é", "authentication.k8s.io/legacy-token-manual-secret": "ü", "authentication.k8s.io/stale-token": "日本".repeat(500), "authentication.kubernetes.io/issued-credential-id": "JTI=ß"}),
    );
    odd["requestObject"] = json!({"spec": {"audiences": "not a list", "expirationSeconds": "é"}});
    lines.push(odd.to_string());
    // Huge fields.
    lines.push(
        event(
            4,
            user(),
            "get",
            &format!("/api/v1/namespaces/{}/pods", "é".repeat(200_000)),
            None,
            &["10.0.0.1"],
            200,
            allow(),
        )
        .to_string(),
    );
    // Deep nesting in a skipped field, and in the request body.
    let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    lines.push(format!(
        r#"{{"kind":"Event","verb":"get","requestURI":"/api/v1/pods","responseObject":{deep},"requestReceivedTimestamp":"{}"}}"#,
        time(5)
    ));
    lines.push(format!(
        r#"{{"kind":"Event","verb":"create","requestURI":"/api/v1/namespaces/a/serviceaccounts/b/token","requestObject":{deep},"annotations":{{"authentication.kubernetes.io/issued-credential-id":"JTI=deep"}},"requestReceivedTimestamp":"{}"}}"#,
        time(6)
    ));
    lines.push(
        event(
            7,
            user(),
            "list",
            "/api/v1/pods",
            None,
            &["10.0.0.1"],
            200,
            allow(),
        )
        .to_string(),
    );
    let path = dir.path().join("hostile.log");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let (report, _) = run(std::slice::from_ref(&path));
    // Deep nesting beyond serde_json's limit is a located malformed record;
    // everything else is an event.
    assert_eq!(
        report.stats.events + report.problems.count,
        lines.len() as u64
    );
    assert!(report.stats.events >= 12, "{:?}", report.stats);

    // The binary: exit 0, no panic, on the same log; request-info too.
    let out = Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
        .args(["replay", "--no-progress", "-o", "json", "--audit"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
        .args(["request-info", "GET", "/api/v1/pods?fieldSelector=é"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (info["verb"].as_str(), info["resource"].as_str()),
        (Some("list"), Some("pods"))
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
        .args(["request-info", "GET", "/apis/apps/v1"])
        .output()
        .unwrap();
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            info["apiPrefix"].as_str(),
            info["isResourceRequest"].as_bool()
        ),
        (Some("apis"), Some(false))
    );
}
