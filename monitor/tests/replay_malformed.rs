//! Malformed, truncated and gzip-corrupted inputs: bad records are counted
//! and reported with file and line, and the replay goes on; EventLists
//! (one line or pretty-printed), JSON arrays and several files merged by
//! time.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use flate2::Compression;
use flate2::write::GzEncoder;
use tokenwatch_core::replay::decide::Policy;
use tokenwatch_core::replay::report::{EventRecord, Report};
use tokenwatch_core::replay::{Options, replay};

fn event(second: u32, user: &str, verb: &str) -> String {
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"id-{second}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/default/pods","verb":"{verb}","user":{{"username":"{user}","groups":["system:authenticated"]}},"sourceIPs":["10.0.0.1"],"objectRef":{{"resource":"pods","namespace":"default","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"code":403}},"requestReceivedTimestamp":"2025-01-01T00:00:{second:02}.000000Z","stageTimestamp":"2025-01-01T00:00:{second:02}.100000Z","annotations":{{"authorization.k8s.io/decision":"forbid","authorization.k8s.io/reason":""}}}}"#
    )
}

fn run(files: &[PathBuf]) -> (Report, Vec<EventRecord>) {
    let mut policy = Policy::fixed(
        tokenwatch_core::rbac::Snapshot::build(tokenwatch_core::rbac::RbacObjects::default()),
        "empty".into(),
    );
    let options = Options {
        audits: files.to_vec(),
        ..Options::default()
    };
    let mut events = Vec::new();
    let report =
        replay(&options, &mut policy, &mut |e| events.push(e.to_record())).expect("replay");
    (report, events)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[test]
fn malformed_lines_are_located_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let text = [
        event(1, "a", "list"),
        "{not json".to_owned(),
        String::new(),
        r#"{"kind":"Event","verb":7}"#.to_owned(),
        r#"{"kind":"Pod","metadata":{}}"#.to_owned(),
        event(2, "b", "list"),
        // Truncated last line, no newline.
        event(3, "c", "list")[..120].to_owned(),
    ]
    .join("\n");
    let f = write(dir.path(), "audit.log", &text);
    let (report, events) = run(&[f]);
    assert_eq!(report.stats.events, 2);
    assert_eq!(events.len(), 2, "both are 403s");
    assert_eq!(report.problems.count, 4, "{:#?}", report.problems);
    let lines: Vec<u64> = report
        .problems
        .kept
        .iter()
        .map(|m| m.location.line)
        .collect();
    assert_eq!(lines, [2, 4, 5, 7]);
    assert!(report.problems.kept[0].location.file.ends_with("audit.log"));
    assert!(report.problems.kept[1].error.contains("invalid type"));
    assert!(
        report.problems.kept[2]
            .error
            .contains("\"Pod\" is not an audit.k8s.io Event")
    );
    assert!(
        report.problems.kept[3].error.contains("EOF"),
        "{:?}",
        report.problems.kept[3]
    );
}

#[test]
fn event_lists_and_arrays() {
    let dir = tempfile::tempdir().unwrap();
    // One line.
    let one = format!(
        r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{{}},"items":[{},{}]}}"#,
        event(1, "a", "list"),
        event(2, "b", "get")
    );
    let f1 = write(dir.path(), "one.json", &(one + "\n"));
    // Pretty-printed, with a bad element and a scalar in the middle.
    let pretty = format!(
        "{{\n  \"kind\": \"EventList\",\n  \"apiVersion\": \"audit.k8s.io/v1\",\n  \"items\": [\n    {},\n    {{\"kind\": \"Event\", \"verb\": [1]}},\n    42,\n    {}\n  ],\n  \"metadata\": {{}}\n}}\n",
        event(3, "c", "list"),
        event(4, "d", "list")
    );
    let f2 = write(dir.path(), "pretty.json", &pretty);
    // A JSON array.
    let array = format!(
        "[\n{},\n{}\n]\n",
        event(5, "e", "list"),
        event(6, "f", "list")
    );
    let f3 = write(dir.path(), "array.json", &array);
    let (report, events) = run(&[f1, f2, f3]);
    assert_eq!(report.stats.events, 6, "{:#?}", report.problems);
    assert_eq!(report.problems.count, 2, "{:#?}", report.problems);
    let bad = &report.problems.kept;
    assert!(bad[0].location.file.ends_with("pretty.json"));
    assert_eq!((bad[0].location.line, bad[0].location.item), (6, Some(1)));
    assert_eq!((bad[1].location.line, bad[1].location.item), (7, Some(2)));
    // Merged by requestReceivedTimestamp across the three files.
    let users: Vec<&str> = events.iter().map(|e| e.user.as_str()).collect();
    assert_eq!(users, ["a", "b", "c", "d", "e", "f"]);
    let c = events.iter().find(|e| e.user == "c").unwrap();
    assert_eq!((c.location.line, c.location.item), (5, Some(0)));
}

#[test]
fn several_files_merge_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        dir.path(),
        "a.log",
        &[
            event(1, "a1", "list"),
            event(4, "a4", "list"),
            event(5, "a5", "list"),
        ]
        .join("\n"),
    );
    let b = write(
        dir.path(),
        "b.log",
        &[
            event(2, "b2", "list"),
            event(3, "b3", "list"),
            event(6, "b6", "list"),
        ]
        .join("\n"),
    );
    let (_, events) = run(&[a, b]);
    let users: Vec<&str> = events.iter().map(|e| e.user.as_str()).collect();
    assert_eq!(users, ["a1", "b2", "b3", "a4", "a5", "b6"]);
}

#[test]
fn truncated_pretty_document() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{{\"kind\":\"EventList\",\"items\":[\n{},\n{}",
        event(1, "a", "list"),
        &event(2, "b", "list")[..200]
    );
    let f = write(dir.path(), "cut.json", &text);
    let (report, _) = run(&[f]);
    assert_eq!(report.stats.events, 1);
    assert_eq!(report.problems.count, 1);
    assert!(
        report.problems.kept[0].error.starts_with("truncated"),
        "{:?}",
        report.problems
    );
    assert_eq!(report.problems.kept[0].location.line, 3);
}

#[test]
fn gzip_plain_truncated_and_corrupted() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..2000)
        .map(|i| event(i % 60, &format!("u{i}"), "list"))
        .collect();
    let text = lines.join("\n") + "\n";
    let gz = gzip(text.as_bytes());
    let good = dir.path().join("audit.log.gz");
    std::fs::write(&good, &gz).unwrap();
    let (report, _) = run(std::slice::from_ref(&good));
    assert_eq!(report.stats.events, 2000);
    assert_eq!(report.problems.count, 0);

    // Truncated: what was decoded is replayed, the cut is reported, no panic.
    let cut = dir.path().join("cut.log.gz");
    std::fs::write(&cut, &gz[..gz.len() / 2]).unwrap();
    let (report, _) = run(std::slice::from_ref(&cut));
    assert!(
        report.stats.events > 0 && report.stats.events < 2000,
        "{}",
        report.stats.events
    );
    let last = report.problems.kept.last().expect("a problem");
    assert!(last.location.file.ends_with("cut.log.gz"));
    assert!(last.error.starts_with("read failed"), "{last:?}");

    // Corrupted in the middle: reported; the other file still replays.
    let mut bad = gz.clone();
    let mid = bad.len() / 2;
    for b in &mut bad[mid..mid + 64] {
        *b ^= 0x5a;
    }
    let corrupt = dir.path().join("corrupt.log.gz");
    std::fs::write(&corrupt, &bad).unwrap();
    let other = write(dir.path(), "other.log", &event(59, "zz", "list"));
    let (report, events) = run(&[corrupt, other]);
    assert!(report.problems.count >= 1, "{:#?}", report.problems);
    assert!(
        report
            .problems
            .kept
            .iter()
            .any(|m| m.location.file.ends_with("corrupt.log.gz")),
        "{:#?}",
        report.problems
    );
    assert!(events.iter().any(|e| e.user == "zz"));
}

#[test]
fn command_line_reports_malformed_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "audit.log",
        &[
            event(1, "a", "list"),
            "garbage".to_owned(),
            event(2, "b", "list"),
        ]
        .join("\n"),
    );
    let rbac = write(
        dir.path(),
        "rbac.yaml",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: x}\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
        .arg("replay")
        .arg("--audit")
        .arg(&f)
        .arg("--rbac")
        .arg(&rbac)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{}:2", f.display())), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("MALFORMED INPUT (1 records skipped)"),
        "{stdout}"
    );
    assert!(stdout.contains("Replayed 2 audit events"), "{stdout}");
}

/// Hostile records: non-ASCII in every field the replay reads (the issue's
/// `fieldSelector=é` without `objectRef` first), a huge URI, deep nesting in
/// skipped and in decoded fields. Events or located problems, never a panic,
/// and the binary exits 0.
#[test]
fn hostile_records_never_stop_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    let uris = [
        "/api/v1/pods?fieldSelector=é",
        "/api/v1/pods?fieldSelector=%C3%A9=%E6%97%A5,\\é",
        "/api/v1/namespaces/é/pods/ü?fieldSelector=metadata.name=日本&labelSelector=é+in+(ü)",
        "/apis/日本/v1/🦀",
        "/api/v1/pods/%FF%FE%C3",
        "https://é:6443/api/v1/pods",
    ];
    let mut lines: Vec<String> = uris
        .iter()
        .enumerate()
        .map(|(i, uri)| {
            serde_json::json!({
                "kind": "Event", "stage": "ResponseComplete", "verb": "list", "requestURI": uri,
                "user": {"username": "système:ü", "groups": ["é"], "extra": {"authentication.kubernetes.io/credential-id": ["JTI=é"]}},
                "sourceIPs": ["é", "ü"], "responseStatus": {"code": 200},
                "annotations": {"authorization.k8s.io/decision": "allow", "authentication.k8s.io/legacy-token": "é", "authentication.kubernetes.io/issued-credential-id": "JTI=ü"},
                "requestReceivedTimestamp": format!("2025-01-01T00:00:0{i}.000000Z"),
            })
            .to_string()
        })
        .collect();
    lines.push(format!(
        r#"{{"kind":"Event","verb":"get","requestURI":"/api/v1/namespaces/{}/pods"}}"#,
        "é".repeat(300_000)
    ));
    let deep = format!("{}0{}", "[".repeat(10_000), "]".repeat(10_000));
    lines.push(format!(
        r#"{{"kind":"Event","verb":"get","requestURI":"/","responseObject":{deep}}}"#
    ));
    lines.push(format!(
        r#"{{"kind":"Event","verb":"create","requestURI":"/","requestObject":{deep}}}"#
    ));
    lines.push(format!(
        r#"{{"kind":"Event","verb":"get","user":{{"extra":{deep}}}}}"#
    ));
    let path = write(dir.path(), "hostile.log", &(lines.join("\n") + "\n"));
    let (report, _) = run(std::slice::from_ref(&path));
    assert_eq!(
        report.stats.events + report.problems.count,
        lines.len() as u64
    );
    assert!(
        report.stats.events > uris.len() as u64,
        "{:?}",
        report.stats
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
        .args(["replay", "--no-progress", "--audit"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
