//! Replay from a data directory: the trail read through the trail module's
//! query, and the stored RBAC snapshots chosen per event by time (the
//! newest imported at or before the event), `--at` overriding.

use tokenwatch_test_support::incident as replay_common;

use std::time::{Duration, UNIX_EPOCH};

use replay_common::*;
use tokenwatch_core::correlate::TrailEntry;
use tokenwatch_core::rbac::import;
use tokenwatch_core::replay::decide::Outcome;
use tokenwatch_core::replay::report::EventRecord;
use tokenwatch_core::replay::{Options, replay};
use tokenwatch_host::snapshot_store;
use tokenwatch_host::trail::Trail;

const WRITER_GRANT: &str = "
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: config-writer, namespace: shop}
rules:
- apiGroups: ['']
  resources: [configmaps]
  verbs: [update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: config-writers, namespace: shop}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: config-writer}
subjects:
- {kind: ServiceAccount, name: web, namespace: shop}
";

/// A data dir with the incident's trail and two snapshots: without the
/// writer grant at T0 - 1 h, with it from T0 + 100 s.
fn data_dir(dir: &std::path::Path, inc: &Incident) {
    {
        let trail = Trail::open(dir).expect("trail");
        for line in &inc.trail_lines {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let entry: TrailEntry = serde_json::from_value(v["entry"].clone()).unwrap();
            trail.append(&entry).expect("append");
        }
        trail.flush().expect("flush");
        let db = trail.db();
        let t0 = UNIX_EPOCH + Duration::from_secs(u64::try_from(T0).unwrap());
        let before = import::import_str("before.yaml", POLICY).unwrap();
        snapshot_store::save(
            db,
            t0 - Duration::from_secs(3600),
            vec!["before.yaml".into()],
            &before,
        )
        .unwrap();
        let after = import::import_str("after.yaml", &format!("{POLICY}{WRITER_GRANT}")).unwrap();
        snapshot_store::save(
            db,
            t0 + Duration::from_secs(100),
            vec!["after.yaml".into()],
            &after,
        )
        .unwrap();
        db.flush().unwrap();
    }
}

fn run(
    dir: &std::path::Path,
    at: Option<std::time::SystemTime>,
) -> (tokenwatch_core::replay::report::Report, Vec<EventRecord>) {
    std::fs::write(dir.join("audit.log"), incident().audit_lines.join("\n")).unwrap();
    let data = dir.join("data");
    let (mut policy, db) =
        tokenwatch_host::snapshot_store::replay_policy(&data, at).expect("stored snapshots");
    let options = Options {
        trails: vec![data.clone()],
        trail_dirs: Some(std::sync::Arc::new(
            tokenwatch_host::trail::DataDirTrails::sharing(&data, db),
        )),
        audits: vec![dir.join("audit.log")],
        ..Options::default()
    };
    let mut events = Vec::new();
    let report =
        replay(&options, &mut policy, &mut |e| events.push(e.to_record())).expect("replay");
    (report, events)
}

#[test]
fn trail_and_snapshots_from_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let inc = incident();
    data_dir(&dir.path().join("data"), &inc);
    let (report, events) = run(dir.path(), None);
    assert_eq!(report.stats.trail_entries, 6);
    let web = report
        .tokens
        .iter()
        .find(|t| t.jti.as_deref() == Some(WEB_JTI))
        .unwrap();
    assert!(
        web.reads
            .iter()
            .any(|r| r.comm == "python3" && r.pod.as_deref() == Some("shop/web-0"))
    );
    assert_eq!(web.foreign_calls, 5);
    // The update at T0+120 s is decided by the snapshot imported at T0+100 s: no drift.
    assert_eq!(report.stats.drift, 0, "{:#?}", report.stats);
    assert_eq!(report.snapshots.len(), 2, "{:?}", report.snapshots);
    assert!(
        events
            .iter()
            .all(|e| !matches!(e.outcome, Outcome::Drift { .. }))
    );

    // `--at` before the grant: one snapshot for every event, and the update drifts.
    let at = UNIX_EPOCH + Duration::from_secs(u64::try_from(T0).unwrap());
    let (report, events) = run(dir.path(), Some(at));
    assert_eq!(report.stats.drift, 1);
    let drift = events
        .iter()
        .find(|e| matches!(e.outcome, Outcome::Drift { .. }))
        .unwrap();
    assert!(
        drift
            .replayed
            .as_ref()
            .unwrap()
            .snapshot
            .starts_with("snapshot 2025-06-01T09:00:00"),
        "{drift:#?}"
    );
}
