//! The `trail` commands while another process holds the store: they ask
//! that process over the socket in the data directory
//! (`tokenwatch_host::trail::live`), which is how they reach a running agent.
//! Here the holder is this test process, serving exactly what the agent
//! serves; the commands are the real binary.

#[path = "../../host/tests/trail_common/mod.rs"]
mod trail_common;

use std::io::{BufRead as _, Write as _};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use tokenwatch_host::trail::{Trail, live};
use trail_common::{entry, subject};

fn trail_cmd(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
        .env_remove("TOKENWATCH_DATA_DIR")
        .arg("trail")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .expect("binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A trail with `n` records, held open by this process and served on its socket.
fn held(n: usize) -> (tempfile::TempDir, Trail, tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let trail = Trail::open(dir.path()).unwrap();
    for i in 0..n {
        trail.append(&entry(i)).unwrap();
    }
    trail.flush().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let socket = live::bind(dir.path()).unwrap();
    rt.spawn(live::serve(socket, trail.clone()));
    (dir, trail, rt)
}

#[test]
fn query_export_stats_and_verify_ask_the_holder() {
    let (dir, trail, _rt) = held(40);
    let o = trail_cmd(dir.path(), &["query", "-o", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let records: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(records.len(), 40);
    assert_eq!(records[39]["seq"], 40);

    let who = subject(3);
    let o = trail_cmd(dir.path(), &["query", "--subject", &who]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let table = text(&o.stdout);
    let expected = (0..40).filter(|&i| subject(i) == who).count();
    assert!(expected > 0 && expected < 40);
    assert_eq!(
        table.lines().filter(|l| l.contains(&who)).count(),
        expected,
        "{table}"
    );

    // What was appended since is there the next time.
    for i in 40..45 {
        trail.append(&entry(i)).unwrap();
    }
    trail.flush().unwrap();
    let o = trail_cmd(dir.path(), &["export"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(o.stdout.lines().count(), 45);
    // The export is the exact stored form: it verifies on its own.
    let mut verify = Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
        .args(["trail", "verify", "--file", "-", "-o", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    verify.stdin.take().unwrap().write_all(&o.stdout).unwrap();
    let v = verify.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(report["intact"], true, "{report}");
    assert_eq!(report["checked"], 45);

    let o = trail_cmd(dir.path(), &["stats", "-o", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let stats: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(stats["records"], 45);
    assert_eq!(stats["last"]["seq"], 45);

    let o = trail_cmd(dir.path(), &["verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    assert!(
        text(&o.stdout).contains("(asked the running agent): intact, 45 records checked"),
        "{}",
        text(&o.stdout)
    );

    // Retention belongs to the holder: prune still says who holds the store.
    let o = trail_cmd(dir.path(), &["prune", "--max-bytes", "1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("is in use by another tokenwatch process"));
}

#[test]
fn bad_filters_and_requests_get_the_holders_error() {
    let (dir, _trail, _rt) = held(3);
    // A filter the CLI itself refuses never reaches the socket.
    let o = trail_cmd(dir.path(), &["query", "--finding", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("unknown finding kind \"nope\""));

    // A request that is not the protocol, sent by hand.
    let mut stream =
        std::os::unix::net::UnixStream::connect(live::socket_path(dir.path())).unwrap();
    stream.write_all(b"{\"op\":\"drop-everything\"}\n").unwrap();
    let mut status = String::new();
    std::io::BufReader::new(&stream)
        .read_line(&mut status)
        .unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["ok"], false);
    assert!(
        status["error"].as_str().unwrap().contains("not a request"),
        "{status}"
    );

    // A finding kind that the holder does not know, through the client.
    let err = live::Client::send(
        dir.path(),
        &live::Request::Export {
            query: live::WireQuery {
                finding: Some("nope".into()),
                ..live::WireQuery::default()
            },
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("unknown finding kind"), "{err}");
}

#[test]
fn the_socket_is_private_and_a_stale_one_is_replaced() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = live::socket_path(dir.path());
    std::fs::write(&path, b"left by an agent that died").unwrap();
    let _listener = live::bind(dir.path()).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()));
}
