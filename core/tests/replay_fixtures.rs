//! Replay on the real audit-log fixtures (`tests/fixtures/audit-logs`)
//! against Kubernetes' default RBAC policy: every event parses (the one
//! deliberately malformed file is reported with file and line), stages are
//! counted, and every drift is computed and explained.

use std::path::PathBuf;

use tokenwatch_core::replay::decide::{DriftDirection, Outcome, Policy};
use tokenwatch_core::replay::report::{EventRecord, Report};
use tokenwatch_core::replay::{Options, replay};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// The consistent default policy (see `rbac_fixtures.rs`).
fn default_policy() -> Policy {
    let dir = fixtures().join("k8s-bootstrap-rbac");
    let files: Vec<PathBuf> = [
        "cluster-roles.yaml",
        "cluster-role-bindings.yaml",
        "namespace-roles.yaml",
        "namespace-role-bindings.yaml",
        "controller-roles-featuregates.yaml",
        "controller-role-bindings.yaml",
    ]
    .iter()
    .map(|f| dir.join(f))
    .collect();
    Policy::from_files(&files, "default").expect("default policy imports")
}

fn audit_files() -> Vec<PathBuf> {
    let base = fixtures().join("audit-logs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(base.join("falcosecurity-falco-k8s_audit"))
        .expect("falco fixtures")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files.push(base.join("liggitt-audit2rbac/demo.log"));
    files.push(base.join("panther-labs-panther-analysis/derived-events.jsonl"));
    files
}

fn run(files: Vec<PathBuf>) -> (Report, Vec<EventRecord>) {
    let mut policy = default_policy();
    let options = Options {
        audits: files,
        ..Options::default()
    };
    let mut events = Vec::new();
    let report =
        replay(&options, &mut policy, &mut |e| events.push(e.to_record())).expect("replay");
    (report, events)
}

#[test]
fn every_real_event_parses_and_the_malformed_one_is_located() {
    let (report, _) = run(audit_files());
    let s = &report.stats;
    // SOURCES.md: 276 events, and fal_01_003.json (`{"kind": 0}`), which is not one.
    assert_eq!(s.events, 276, "{s:#?}");
    assert_eq!(report.problems.count, 1, "{:#?}", report.problems);
    let bad = &report.problems.kept[0];
    assert!(bad.location.file.ends_with("fal_01_003.json"), "{bad:?}");
    assert_eq!(bad.location.line, 1);
    assert!(bad.error.contains("invalid type"), "{}", bad.error);
    // Exec/attach requests log ResponseStarted as well: counted, not evaluated.
    assert_eq!(s.other_stages.get("ResponseStarted"), Some(&5), "{s:#?}");
    assert_eq!(s.deciding, s.events - 5);
    // Every deciding event was classified one way or another.
    let outside: u64 = s.outside_rbac.values().sum();
    assert_eq!(
        s.agree + s.drift + outside + s.unrecorded + s.undetermined,
        s.deciding,
        "{s:#?}"
    );
    assert!(s.forbidden >= 48, "{s:#?}");
}

#[test]
fn drift_against_the_default_policy_is_computed_and_explained() {
    let (report, events) = run(audit_files());
    let s = &report.stats;
    assert!(s.drift > 0 && s.agree > 0, "{s:#?}");
    let drift: Vec<&EventRecord> = events
        .iter()
        .filter(|e| matches!(e.outcome, Outcome::Drift { .. }))
        .collect();
    assert_eq!(drift.len() as u64, s.drift);
    for e in &drift {
        let rec = e
            .recorded
            .as_ref()
            .expect("drift needs a recorded decision");
        let rep = e.replayed.as_ref().expect("and a replayed one");
        assert_ne!(rec.allowed, rep.allowed, "{e:#?}");
        assert!(e.explanation.contains("snapshot"), "{e:#?}");
        if rec.allowed {
            assert!(
                e.explanation.starts_with("the cluster allowed it"),
                "{e:#?}"
            );
        } else {
            assert!(e.explanation.starts_with("the cluster denied it"), "{e:#?}");
            // The snapshot's allow names the binding, as the API server would.
            assert!(rep.reason.starts_with("RBAC: allowed by "), "{e:#?}");
        }
    }
    // audit2rbac demo: bob was granted `list pods` in default by a Role the
    // default policy does not have: allowed live, denied by the snapshot.
    let bob = drift
        .iter()
        .find(|e| e.user == "bob" && e.time == "2017-09-11T19:58:37Z")
        .expect("bob's first allowed list");
    assert_eq!(
        bob.outcome,
        Outcome::Drift {
            direction: DriftDirection::AllowedLiveDeniedSnapshot
        }
    );
    assert_eq!(bob.impersonated_by.as_deref(), Some("system:admin"));
    assert!(
        bob.explanation.contains("no RBAC rule allows it"),
        "{bob:#?}"
    );
    // His 403s agree with the snapshot.
    assert!(
        events
            .iter()
            .any(|e| e.user == "bob" && e.code == Some(403) && e.outcome == Outcome::Agree)
    );
}

#[test]
fn users_outside_rbac_are_labelled_not_drift() {
    let (report, _) = run(audit_files());
    // minikube's anonymous user in system:masters (Falco fixtures).
    let masters = report
        .stats
        .outside_rbac
        .get("system:masters")
        .copied()
        .unwrap_or(0);
    assert!(masters > 0, "{:#?}", report.stats);
    let anon = report
        .subjects
        .iter()
        .find(|s| s.user == "system:anonymous")
        .expect("anonymous subject");
    assert!(anon.outside_rbac > 0);
}

#[test]
fn attributes_come_from_object_ref_or_the_request_uri() {
    let base = fixtures().join("audit-logs");
    // Falco's exec capture holds only the ResponseStarted stage: counted, not decided.
    let (report, _) = run(vec![
        base.join("falcosecurity-falco-k8s_audit/exec_pod.json"),
    ]);
    assert_eq!(report.stats.other_stages.get("ResponseStarted"), Some(&1));
    assert!(report.subjects.is_empty());
    // The demo's discovery calls (`/api`, `/apis`) have no objectRef: parsed
    // from requestURI as non-resource requests.
    let (report, _) = run(vec![base.join("liggitt-audit2rbac/demo.log")]);
    let bob = report
        .subjects
        .iter()
        .find(|s| s.user == "bob")
        .expect("bob");
    assert!(bob.by_verb_resource.contains_key("get /api"), "{bob:#?}");
    assert!(bob.by_verb_resource.contains_key("list pods"), "{bob:#?}");
    // Panther's EKS events: subresources from objectRef.
    let (report, _) = run(vec![
        base.join("panther-labs-panther-analysis/derived-events.jsonl"),
    ]);
    let keys: Vec<&String> = report
        .subjects
        .iter()
        .flat_map(|s| s.by_verb_resource.keys())
        .collect();
    assert!(keys.iter().any(|k| k.ends_with("pods/exec")), "{keys:?}");
    assert!(
        keys.iter().any(|k| k.ends_with("serviceaccounts/token")),
        "{keys:?}"
    );
}

/// The hand-written event reader gives what the serde derive gives, on
/// every record of the real logs, the fuzz seeds and hostile lines: the
/// same event, or an error from both.
#[test]
fn the_event_reader_agrees_with_serde_on_every_real_record() {
    use tokenwatch_core::replay::event::{AuditEvent, EventTimes};
    use tokenwatch_core::replay::input::{Problems, RecordSource};

    let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut files = audit_files();
    let seeds = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/replay_engine");
    files.extend(
        std::fs::read_dir(seeds)
            .expect("seeds")
            .map(|e| e.expect("entry").path()),
    );
    for file in files {
        let name = file.display().to_string();
        let data = std::fs::read(&file).expect("read fixture");
        let mut problems = Problems::default();
        let mut source = RecordSource::new(&name, Box::new(std::io::Cursor::new(data)));
        while source.advance(&mut problems) {
            let (location, bytes) = source.record();
            inputs.push((location.to_string(), bytes.to_vec()));
        }
    }
    assert!(inputs.len() > 280, "{} records", inputs.len());
    let hostile: [&[u8]; 12] = [
        br#"{"kind":"Event","user":{"username":"\u00e9\ud83c\udf89","groups":["a","b","c","d","e"]}}"#,
        br#"{"requestURI":"/api/v1/pods?fieldSelector=\u00e9","verb":"get","kind":"Event"}"#,
        "{\"requestURI\":\"/api/v1/pods?fieldSelector=é\",\"verb\":\"get\"}".as_bytes(),
        br#"{"kind":"Event","kind":"Event"}"#,
        br#"{"kind":null,"user":null,"responseStatus":{"code":null}}"#,
        br#"{"responseStatus":{"code":200.5}}"#,
        br#"{"responseStatus":{"code":-0}}"#,
        br#"{"user":{"extra":{"authentication.kubernetes.io/credential-id":"JTI=bare"}}}"#,
        br#"{"user":{"extra":{"authentication.kubernetes.io/pod-name":[]}}}"#,
        br#"{"requestObject":{"spec":{"audiences":["x"]}},"x":[[[[{}]]]]}"#,
        b"{\"k\\u0069nd\":\"Event\",\"a\":\"\xff\"}",
        br#"{"annotations":{"authorization.k8s.io/reason":"a \"quoted\" \u00e9 reason"}} x"#,
    ];
    inputs.extend(
        hostile
            .iter()
            .enumerate()
            .map(|(i, h)| (format!("hostile {i}"), h.to_vec())),
    );
    for (location, bytes) in &inputs {
        let fast = AuditEvent::parse(bytes);
        let reference = AuditEvent::parse_reference(bytes);
        match (&fast, &reference) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{location}"),
            (Err(_), Err(_)) => {}
            _ => panic!("{location}: reader {fast:?}, serde {reference:?}"),
        }
        let times = EventTimes::parse(bytes).ok();
        let reference_times = serde_json::from_slice::<EventTimes<'_>>(bytes).ok();
        assert_eq!(times, reference_times, "{location}");
    }
}
