//! The generated incident (see `replay_common`): a trail and an audit log
//! produced together, tokens signed with a real key. The timeline must name
//! the reading process, the pod and every call, and flag the stolen token's
//! foreign use, the calls after the flagged read and the probing.

use tokenwatch_test_support::incident as replay_common;

use std::process::Command;

use replay_common::*;
use serde_json::Value;
use tokenwatch_core::replay::decide::{Outcome, Policy};
use tokenwatch_core::replay::report::EventRecord;
use tokenwatch_core::replay::{Filters, Only, Options, replay};

fn run_lib(
    dir: &std::path::Path,
    only: Option<Only>,
    filters: Filters,
) -> (tokenwatch_core::replay::report::Report, Vec<EventRecord>) {
    let mut policy = Policy::from_files(&[dir.join("rbac.yaml")], "default").expect("policy");
    let options = Options {
        trails: vec![dir.join("trail.jsonl")],
        audits: vec![dir.join("audit.log")],
        filters,
        only,
        progress: false,
        ..Options::default()
    };
    let mut events = Vec::new();
    let report =
        replay(&options, &mut policy, &mut |e| events.push(e.to_record())).expect("replay");
    (report, events)
}

#[test]
fn timeline_names_reader_pod_and_every_call_and_flags_the_foreign_use() {
    let dir = tempfile::tempdir().unwrap();
    write_incident(dir.path());
    let (report, events) = run_lib(dir.path(), None, Filters::default());
    assert_eq!(report.problems.count, 0, "{:?}", report.problems);
    assert_eq!(report.stats.trail_entries, 6);
    assert_eq!(report.stats.trail_tokens, 2);
    assert_eq!(report.stats.events, 10);
    assert_eq!(report.stats.other_stages.get("RequestReceived"), Some(&1));

    let web = report
        .tokens
        .iter()
        .find(|t| t.jti.as_deref() == Some(WEB_JTI))
        .expect("web token timeline");
    assert!(web.in_trail);
    assert_eq!(web.subject.as_deref(), Some(WEB_SA));
    assert_eq!(web.bound_pod.as_ref().unwrap().uid, WEB_POD_UID);
    // The reading process and its pod.
    let python = web
        .reads
        .iter()
        .find(|r| r.comm == "python3")
        .expect("python3 read");
    assert_eq!(python.pod.as_deref(), Some("shop/web-0"));
    assert_eq!(python.tgid, 4242);
    assert_eq!(python.node, "node-a");
    assert_eq!(python.count, 2, "two reads folded");
    let cat = web
        .reads
        .iter()
        .find(|r| r.comm == "cat")
        .expect("cat read");
    assert_eq!(cat.pod.as_deref(), Some("shop/debug-7"));
    assert_eq!(cat.findings, ["foreign-token"]);
    assert_eq!(web.pod_ips.iter().collect::<Vec<_>>(), [POD_IP]);
    // Every call (the RequestReceived stage is not a call of its own).
    assert_eq!(web.calls_total, 8);
    assert_eq!(web.calls.len(), 8);
    let targets: Vec<&str> = web.calls.iter().map(|c| c.target.as_str()).collect();
    assert_eq!(
        targets,
        [
            "configmaps shop/app-config",
            "configmaps shop",
            "configmaps shop/app-config",
            "secrets",
            "secrets kube-system/admin-token",
            "pods/exec shop/web-0",
            "nodes",
            "rbac.authorization.k8s.io/clusterrolebindings",
        ]
    );
    // The stolen use.
    assert_eq!(web.foreign_calls, 5);
    assert_eq!(web.after_flag_calls, 5);
    assert_eq!(web.forbidden, 3);
    for c in &web.calls {
        let stolen = c.source_ip.as_deref() == Some(THIEF_IP);
        assert_eq!(c.flags.contains(&"foreign-ip"), stolen, "{c:?}");
        assert_eq!(c.flags.contains(&"after-flagged-read"), stolen, "{c:?}");
    }
    let kinds: Vec<&str> = web.findings.iter().map(|f| f.kind).collect();
    assert_eq!(
        kinds,
        [
            "foreign-source-ip",
            "use-after-flagged-read",
            // The thief's address is a second connection address.
            "multiple-source-addresses",
            "permission-probing"
        ]
    );
    assert!(web.findings[0].message.contains(THIEF_IP) && web.findings[0].message.contains(POD_IP));
    assert!(
        web.findings[1]
            .message
            .contains("cat (pid 6666) in pod shop/debug-7 on node node-a")
    );
    // Flagged tokens come first.
    assert_eq!(report.tokens[0].jti.as_deref(), Some(WEB_JTI));

    // The worker's token has no JTI: joined by subject + bound pod + time.
    let worker = report
        .tokens
        .iter()
        .find(|t| t.subject.as_deref() == Some(WORKER_SA))
        .expect("worker timeline");
    assert_eq!(worker.jti, None);
    assert_eq!(worker.calls_total, 1);
    assert_eq!(worker.calls[0].source_ip.as_deref(), Some(WORKER_IP));
    assert!(worker.findings.is_empty());

    // Listed events: the drift, the three 403s, and the flagged calls.
    let drift: Vec<&EventRecord> = events
        .iter()
        .filter(|e| matches!(e.outcome, Outcome::Drift { .. }))
        .collect();
    assert_eq!(drift.len(), 1);
    assert_eq!(drift[0].verb, "update");
    assert!(
        drift[0].explanation.contains("config-writers/shop"),
        "{}",
        drift[0].explanation
    );
    assert_eq!(events.iter().filter(|e| e.code == Some(403)).count(), 3);
    assert_eq!(
        events
            .iter()
            .filter(|e| e.flags.contains(&"foreign-ip"))
            .count(),
        5
    );
    assert!(events.iter().all(|e| e.token.is_none() || e.token.as_deref() == Some(&format!("JTI={WEB_JTI}")[..])));

    // Subjects: used vs held.
    let web_sub = report.subjects.iter().find(|s| s.user == WEB_SA).unwrap();
    assert_eq!(web_sub.calls, 8);
    assert_eq!(web_sub.denied, 3);
    assert_eq!(web_sub.used.get("read-secrets"), Some(&2));
    let worker_sub = report
        .subjects
        .iter()
        .find(|s| s.user == WORKER_SA)
        .unwrap();
    assert!(worker_sub.used.is_empty());
    assert!(
        worker_sub.hints.iter().any(|h| h
            .starts_with("holds read-secrets cluster-wide through ClusterRoleBinding/web-secrets")),
        "{worker_sub:#?}"
    );
    assert!(
        web_sub.hints.iter().all(|h| !h.contains("read-secrets")),
        "{web_sub:#?}"
    );
}

#[test]
fn filters_and_only() {
    let dir = tempfile::tempdir().unwrap();
    write_incident(dir.path());
    let (_, events) = run_lib(dir.path(), Some(Only::Drift), Filters::default());
    assert_eq!(events.len(), 1);
    let (_, events) = run_lib(dir.path(), Some(Only::Forbidden), Filters::default());
    assert_eq!(events.len(), 3);
    let (report, events) = run_lib(
        dir.path(),
        Some(Only::Findings),
        Filters {
            subject: Some(WORKER_SA.into()),
            ..Filters::default()
        },
    );
    assert!(events.is_empty());
    assert_eq!(report.tokens.len(), 1);
    let since = tokenwatch_core::replay::time::parse_nanos("2025-06-01T10:14:00Z");
    let (report, events) = run_lib(
        dir.path(),
        None,
        Filters {
            since,
            ..Filters::default()
        },
    );
    assert_eq!(report.stats.filtered_out, 4);
    assert_eq!(events.len(), 5);
    let (report, _) = run_lib(
        dir.path(),
        None,
        Filters {
            jti: Some(WEB_JTI.into()),
            ..Filters::default()
        },
    );
    assert_eq!(report.tokens.len(), 1);
    assert_eq!(report.subjects.len(), 1);
}

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
}

#[test]
fn command_line_json_and_table() {
    let dir = tempfile::tempdir().unwrap();
    let inc = write_incident(dir.path());
    let out = binary()
        .arg("replay")
        .arg("--trail")
        .arg(dir.path().join("trail.jsonl"))
        .arg("--audit")
        .arg(dir.path().join("audit.log"))
        .arg("--rbac")
        .arg(dir.path().join("rbac.yaml"))
        .args(["-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let of = |t: &str| lines.iter().filter(|l| l["type"] == t).count();
    assert_eq!(of("event"), 6, "{stdout}");
    assert_eq!(of("token"), 2);
    assert_eq!(of("subject"), 2);
    assert_eq!(of("stats"), 1);
    assert_eq!(lines.last().unwrap()["type"], "stats");
    assert_eq!(lines.last().unwrap()["drift"], 1);
    let token = lines.iter().find(|l| l["type"] == "token").unwrap();
    assert_eq!(token["jti"], WEB_JTI);
    assert_eq!(token["findings"][0]["kind"], "foreign-source-ip");
    // Tokens are never printed; their fingerprints are.
    for raw in &inc.raw_tokens {
        assert!(!stdout.contains(raw.as_str()));
        let signature = raw.rsplit('.').next().unwrap();
        assert!(!stdout.contains(signature));
    }
    assert!(stdout.contains(&inc.fingerprints[0]));

    let out = binary()
        .arg("replay")
        .arg("--trail")
        .arg(dir.path().join("trail.jsonl"))
        .arg("--audit")
        .arg(dir.path().join("audit.log"))
        .arg("--rbac")
        .arg(dir.path().join("rbac.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    for want in [
        "TOKEN TIMELINES",
        &format!("Token JTI={WEB_JTI}"),
        "[high] foreign-source-ip",
        "python3 (pid 4242, uid 1000) in pod shop/web-0 on node-a",
        "cat (pid 6666, uid 1000) in pod shop/debug-7 on node-a",
        "list secrets -> 200",
        "foreign-ip, after-flagged-read",
        "SUBJECTS",
        "1 drift",
    ] {
        assert!(table.contains(want), "missing {want:?} in\n{table}");
    }
}

#[test]
fn command_line_errors() {
    let out = binary()
        .arg("replay")
        .arg("--rbac")
        .arg("/nonexistent/rbac")
        .arg("--audit")
        .arg("x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = binary()
        .args([
            "replay",
            "--audit",
            "/nonexistent/audit.log",
            "--no-progress",
        ])
        .env_remove("TOKENWATCH_DATA_DIR")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/audit.log"), "{stderr}");
    let out = binary()
        .args(["replay", "--audit", "x", "--since", "yesterday"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since"));
}
