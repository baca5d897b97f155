//! `tokenwatch watch` end to end: the real binary prints a token access
//! (fanotify inode mark from `--watch-file`) as a JSON line, no lineage
//! lines without `--lineage`, and never the token itself.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use tokenwatch_tests::{EVENT_TIMEOUT, TokenVolume, require_root, scaled};

#[test]
fn watch_prints_a_token_read_as_json_without_the_token() {
    if !require_root("watch_prints_a_token_read_as_json") {
        return;
    }
    let secret = b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGVmYXVsdDp4In0.c2lnLW5vdC1yZWFs";
    let volume = TokenVolume::new(secret);
    let bin = tokenwatch_tests::tokenwatch_binary();
    assert!(
        bin.exists(),
        "{} is missing: run `cargo xtask test`, which builds it",
        bin.display()
    );
    let mut child = Command::new(&bin)
        .arg("watch")
        .arg("--duration")
        .arg(format!("{}s", scaled(Duration::from_secs(20)).as_secs()))
        .arg("--watch-file")
        .arg(&volume.real_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tokenwatch watch");
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains("sensor attached") {
                let _ = ready_tx.send(());
            }
        }
    });
    ready_rx
        .recv_timeout(scaled(EVENT_TIMEOUT))
        .expect("tokenwatch watch did not attach");

    let status = Command::new("cat")
        .arg(volume.token_path())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());

    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (line_tx, line_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + scaled(EVENT_TIMEOUT);
    let mut lines = Vec::new();
    let read = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = line_rx
            .recv_timeout(left.max(Duration::from_millis(1)))
            .unwrap_or_else(|_| {
                panic!(
                    "no token_access line with an access; saw:\n{}",
                    lines.join("\n")
                )
            });
        let event: serde_json::Value = serde_json::from_str(&line).expect("each line is JSON");
        lines.push(line.clone());
        // Without --lineage, exec and exit lines are not printed.
        assert!(
            event["kind"] != "exec" && event["kind"] != "exit",
            "a lineage line without --lineage: {line}"
        );
        if event["kind"] == "token_access"
            && event["process"]["comm"] == "cat"
            && event["detail"]["seen"]
                .as_array()
                .is_some_and(|s| s.iter().any(|x| x == "access"))
        {
            break event;
        }
    };
    assert_eq!(read["schema"], 2);
    assert_eq!(read["detail"]["matched"][0], "inode");
    // The file as the sensor sees it (symlinks resolved).
    assert_eq!(
        read["detail"]["path"],
        volume.real_file.display().to_string()
    );
    assert!(read["process"]["exe"].as_str().unwrap().ends_with("/cat"));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "tokenwatch watch exited with {status} on SIGINT"
    );
    let secret_text = String::from_utf8_lossy(secret);
    for line in line_rx.try_iter().chain(lines) {
        assert!(
            !line.contains(secret_text.as_ref()),
            "the token leaked into the output: {line}"
        );
    }
}
