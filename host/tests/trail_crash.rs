//! Crash safety: a writer process is killed with SIGKILL while appending;
//! every record it was told is durable is there afterwards, the chain
//! verifies, and appends continue it.
//!
//! The writer is this test binary again, running the ignored test
//! `crash_writer_child` with `TRAIL_CRASH_CHILD_DIR` set. It appends, then
//! flushes and prints `flushed <seq> <hash>` after every flush, and keeps
//! going until it is killed (or gives up after a bounded number of rounds).

mod trail_common;

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokenwatch_host::trail::{Query, Record, Trail};

const CHILD_ENV: &str = "TRAIL_CRASH_CHILD_DIR";
/// Rounds the child runs at most (a round: some appends, one flush).
const CHILD_ROUNDS: usize = 2000;

#[test]
#[ignore = "the writer process of crash_keeps_every_flushed_record; runs only when spawned by it"]
fn crash_writer_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        panic!("run by crash_keeps_every_flushed_record with {CHILD_ENV} set");
    };
    let trail = Trail::open(Path::new(&dir)).expect("child opens the trail");
    let mut i = 0usize;
    for round in 0..CHILD_ROUNDS {
        // Vary the batch: some rounds cross the internal batch size.
        for _ in 0..(50 + (round * 37) % 1500) {
            trail.append(&trail_common::entry(i)).expect("append");
            i += 1;
        }
        let durable = trail.flush().expect("flush");
        let hash = trail
            .get(durable)
            .expect("read back")
            .map(|r| r.hash)
            .unwrap_or_default();
        // Unbuffered: the parent reads this line before it kills us.
        println!("flushed {durable} {hash}");
        // Keep appending without a flush, so the kill lands mid-write.
        for _ in 0..200 {
            trail.append(&trail_common::entry(i)).expect("append");
            i += 1;
        }
    }
}

/// Spawns the writer, waits for `flushes` flush lines, kills it with
/// SIGKILL and returns the last (seq, hash) it reported durable.
fn run_and_kill(dir: &Path, flushes: usize) -> (u64, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_writer_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    let mut seen = 0;
    for line in stdout.lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("flushed ") {
            let (seq, hash) = rest.split_once(' ').unwrap();
            last = Some((seq.parse::<u64>().unwrap(), hash.to_owned()));
            seen += 1;
            if seen >= flushes || Instant::now() > deadline {
                break;
            }
        }
    }
    // Child::kill sends SIGKILL on Unix.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the writer was killed, not finished");
    last.expect("the writer reported at least one flush")
}

fn records(trail: &Trail) -> Vec<Record> {
    trail
        .query(&Query::default())
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

#[test]
fn crash_keeps_every_flushed_record() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut before = 0u64;
    for (round, flushes) in [3usize, 1, 5].into_iter().enumerate() {
        let (durable, durable_hash) = run_and_kill(dir.path(), flushes);
        assert!(durable > before, "round {round}: the writer made progress");
        let trail = Trail::open(dir.path()).unwrap();
        let all = records(&trail);
        // Every flushed record is there, with the hash the writer reported.
        assert!(all.len() as u64 >= durable, "round {round}");
        assert_eq!(
            all.iter()
                .map(|r| r.seq)
                .take(durable as usize)
                .collect::<Vec<_>>(),
            (1..=durable).collect::<Vec<_>>()
        );
        assert_eq!(
            all[durable as usize - 1].hash,
            durable_hash,
            "round {round}"
        );
        let report = trail.verify().unwrap();
        assert!(report.intact, "round {round}: {report:?}");
        // Appends continue the chain from the last record recovered.
        let last = all.last().unwrap().clone();
        let seq = trail.append(&trail_common::entry(0)).unwrap();
        assert_eq!(seq, last.seq + 1);
        trail.flush().unwrap();
        let next = records(&trail).pop().unwrap();
        assert_eq!(next.prev_hash, last.hash);
        assert!(trail.verify().unwrap().intact);
        before = seq;
        assert!(started.elapsed() < Duration::from_secs(240));
    }
}
