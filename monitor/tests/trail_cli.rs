//! `tokenwatch trail query|export|verify|stats|prune` through the real
//! binary: outputs, exit codes, tampering, a data dir held by another
//! process, and the independent verifier documented in docs/trail.md.

#[path = "../../host/tests/trail_common/mod.rs"]
mod trail_common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tokenwatch_host::trail::Trail;
use trail_common::{edit_line, entry};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tokenwatch"));
    c.env_remove("TOKENWATCH_DATA_DIR");
    c
}

fn run(dir: &Path, args: &[&str]) -> Output {
    bin()
        .arg("trail")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .expect("binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A data dir with `n` entries, flushed every 5 (so retention, which
/// deletes whole write units, has units to delete), closed again.
fn filled(n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let trail = Trail::open(dir.path()).unwrap();
    for i in 0..n {
        trail.append(&entry(i)).unwrap();
        if i % 5 == 4 {
            trail.flush().unwrap();
        }
    }
    trail.flush().unwrap();
    dir
}

#[test]
fn query_table_and_json() {
    let dir = filled(60);
    let o = run(
        dir.path(),
        &[
            "query",
            "--namespace",
            "payments",
            "--finding",
            "foreign-token",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let header = out.lines().next().unwrap();
    for col in [
        "SEQ", "TIME", "KIND", "COUNT", "SUBJECT", "POD", "PROCESS", "FINDINGS",
    ] {
        assert!(header.contains(col), "{header}");
    }
    // i % 3 == 1 && i.is_multiple_of(4) for i < 60: 4, 16, 28, 40, 52 -> seqs 5, 17, ...
    let mut rows: Vec<&str> = out.lines().skip(1).collect();
    let total = rows.pop().unwrap();
    assert!(total.starts_with("5 record(s); "), "{out}");
    assert_eq!(rows.len(), 5, "{out}");
    assert!(rows[0].trim_start().starts_with("5 "), "{out}");
    assert!(rows[0].contains("payments/web-4"), "{out}");
    assert!(rows[0].contains("foreign-token"), "{out}");

    let o = run(
        dir.path(),
        &["query", "--jti", "jti-0002", "-o", "json", "--limit", "3"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 3);
    let seqs: Vec<u64> = arr.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [21, 22, 23]);
    assert_eq!(arr[0]["entry"]["token"]["jti"], "jti-0002");
    assert_eq!(arr[0]["trail_schema"], 1);

    let o = run(dir.path(), &["query", "--subject", "nobody", "-o", "json"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stdout(&o)).unwrap(),
        serde_json::json!([])
    );
    let o = run(dir.path(), &["query", "--subject", "nobody"]);
    assert_eq!(stdout(&o).trim(), "no record matches");
    let o = run(dir.path(), &["query", "--since", "1h", "-o", "json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stdout(&o))
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        60
    );
}

#[test]
fn bad_arguments_exit_2_with_one_line() {
    let dir = filled(3);
    let o = run(dir.path(), &["query", "--finding", "bogus"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("unknown finding kind \"bogus\""), "{err}");
    assert!(err.contains("foreign-token"), "{err}");
    let o = run(dir.path(), &["query", "--since", "last tuesday"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("invalid time \"last tuesday\""),
        "{}",
        stderr(&o)
    );
    let missing = dir.path().join("missing");
    let o = run(&missing, &["stats"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    assert!(!missing.exists(), "a read-only command creates nothing");
}

#[test]
fn a_data_dir_in_use_is_one_clear_line() {
    let dir = filled(3);
    // This process holds the lock, as a running agent would.
    let _held = Trail::open(dir.path()).unwrap();
    for cmd in [
        &["stats"][..],
        &["query"],
        &["verify"],
        &["export"],
        &["prune", "--max-bytes", "0"],
    ] {
        let o = run(dir.path(), cmd);
        assert_eq!(o.status.code(), Some(2), "{cmd:?}");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{cmd:?}: {err}");
        assert!(
            err.contains("is in use by another tokenwatch process"),
            "{cmd:?}: {err}"
        );
        assert!(!err.contains("could not acquire lock"), "{err}");
    }
}

#[test]
fn export_and_verify() {
    let dir = filled(40);
    let o = run(dir.path(), &["export"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert_eq!(text.lines().count(), 40);
    for (i, line) in text.lines().enumerate() {
        assert!(
            line.starts_with(&format!("{{\"trail_schema\":1,\"seq\":{},", i + 1)),
            "{line}"
        );
    }
    let file = dir.path().join("export.jsonl");
    let o = run(
        dir.path(),
        &[
            "export",
            "--finding",
            "host-reader",
            "-f",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 4);

    let o = run(dir.path(), &["verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("intact, 40 records checked (records 1 to 40)"),
        "{}",
        stdout(&o)
    );
    let o = run(dir.path(), &["verify", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["intact"], true);
    assert_eq!(v["checked"], 40);

    // The export verifies from a file and from stdin.
    let full = dir.path().join("full.jsonl");
    std::fs::write(&full, &text).unwrap();
    let o = run(dir.path(), &["verify", "--file", full.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let bad = text.replacen("\"comm\":\"python3\"", "\"comm\":\"python4\"", 2);
    let mut child = bin()
        .args(["trail", "verify", "--file", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(bad.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    // Entry 0 is a host process (`cat`): the first python3 is record 2.
    assert!(
        stdout(&o).contains("BROKEN at record 2 (hash)"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn verify_names_a_tampered_record_and_exits_1() {
    let dir = filled(25);
    {
        let trail = Trail::open(dir.path()).unwrap();
        edit_line(trail.db(), 13, |l| {
            l.replacen("\"uid\":1000", "\"uid\":0", 1)
        });
        trail.db().flush().unwrap();
    }
    let o = run(dir.path(), &["verify"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("BROKEN at record 13 (hash)"), "{out}");
    assert!(out.contains("12 records before it matched"), "{out}");
    let o = run(dir.path(), &["verify", "-o", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["intact"], false);
    assert_eq!(v["failure"]["seq"], 13);
    assert_eq!(v["failure"]["problem"], "hash");
}

#[test]
fn stats_and_prune() {
    let dir = filled(50);
    let o = run(dir.path(), &["stats", "-o", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["records"], 50);
    assert_eq!(v["first"]["seq"], 1);
    assert_eq!(v["last"]["seq"], 50);
    assert_eq!(v["pruned_records"], 0);
    // i.is_multiple_of(11) for i < 50: 0, 11, 22, 33, 44.
    assert_eq!(v["findings"]["host-reader"], 5);
    let logical = v["logical_bytes"].as_u64().unwrap();
    // Blocks are compressed, but each record keeps its own 32-byte hash
    // (64 hex digits, at least 32 bytes after compression).
    assert!(logical > 50 * 32, "{logical}");

    let o = run(dir.path(), &["stats"]);
    let out = stdout(&o);
    assert!(out.contains("records") && out.contains("50"), "{out}");
    assert!(out.contains("finding host-reader"), "{out}");

    let half = (logical / 2).to_string();
    let o = run(dir.path(), &["prune", "--max-bytes", &half]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("pruned "), "{}", stdout(&o));
    let o = run(dir.path(), &["stats", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let pruned = v["pruned_records"].as_u64().unwrap();
    assert!(pruned > 15 && pruned < 35, "{v}");
    assert_eq!(v["records"].as_u64().unwrap(), 50 - pruned);
    assert!(v["logical_bytes"].as_u64().unwrap() <= logical / 2);
    let o = run(dir.path(), &["verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).contains(&format!("starts after record {pruned}")),
        "{}",
        stdout(&o)
    );
    let o = run(dir.path(), &["prune", "--max-bytes", "lots"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("invalid size \"lots\""),
        "{}",
        stderr(&o)
    );
}

/// The Python verifier in docs/trail.md, run on a real export.
#[test]
fn documented_python_verifier_works() {
    let doc = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/trail.md");
    let doc = std::fs::read_to_string(doc).unwrap();
    let start = doc
        .find("```python\n")
        .expect("docs/trail.md has a python block")
        + 10;
    let script = &doc[start..start + doc[start..].find("```").unwrap()];
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("python3 not installed: documented verifier not run");
        return;
    }
    let dir = filled(30);
    let export = stdout(&run(dir.path(), &["export"]));
    let script_path = dir.path().join("verify.py");
    std::fs::write(&script_path, script).unwrap();
    let check = |input: &str| {
        let mut child = Command::new("python3")
            .arg(&script_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let o = check(&export);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("30 records"), "{}", stdout(&o));
    let tampered: String = export
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let l = if i == 7 {
                l.replacen("\"gid\":1000", "\"gid\":0", 1)
            } else {
                l.to_owned()
            };
            l + "\n"
        })
        .collect();
    assert_ne!(tampered, export);
    let o = check(&tampered);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        format!("{}{}", stdout(&o), stderr(&o)).contains("record 8"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
}

/// `trail export | head -1`: the reader goes away early; the export stops
/// quietly with exit 0, like a tool killed by SIGPIPE.
#[test]
fn export_into_a_closed_pipe_is_quiet() {
    use std::io::BufRead as _;
    let dir = filled(3000);
    let mut child = bin()
        .args(["trail", "export", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(
        first.starts_with("{\"trail_schema\":1,\"seq\":1,"),
        "{first}"
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
}

#[test]
fn query_shows_a_folded_records_count_and_span() {
    let dir = tempfile::tempdir().unwrap();
    let trail = Trail::open(dir.path()).unwrap();
    let mut first = entry(0);
    first.kind = tokenwatch_core::correlate::EntryKind::TokenRead;
    let mut folded = first.clone();
    folded.repeated = Some(tokenwatch_core::correlate::Repeated {
        count: 4999,
        first: "2026-05-17T10:00:01Z".into(),
        last: "2026-05-17T10:01:00Z".into(),
    });
    trail.append(&first).unwrap();
    trail.append(&folded).unwrap();
    trail.flush().unwrap();
    drop(trail);
    let o = run(dir.path(), &["query"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("4999 (2026-05-17T10:00:01Z .. 2026-05-17T10:01:00Z)"),
        "{out}"
    );
    assert!(
        out.lines()
            .last()
            .is_some_and(|l| l.starts_with("2 record(s); 5000 token access(es)")),
        "{out}"
    );
    let o = run(dir.path(), &["verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}
