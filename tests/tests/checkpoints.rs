//! Signed trail checkpoints on a simulated node (issue 17, "done when"):
//! the real agent runs with its stdout sink collected, pods read their
//! tokens (real eBPF/fanotify, real signed tokens), the agent ships signed
//! checkpoints every second and at shutdown. The untouched trail passes
//! `trail verify --checkpoints`; a copy of the data dir cut back by 20
//! records (blocks, units and chain head rewritten, so the chain alone
//! still verifies) fails, naming the checkpoint it cannot match.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokenwatch_host::store;
use tokenwatch_host::trail::{ChainPoint, record};
use tokenwatch_tests::{
    require_root, scaled,
    sim::{self, IN_POD_TOKEN, PodCgroup},
};

const POD: &str = "5a1c0e6e-7777-4a00-8000-00000000000c";
const CONTAINER: &str = "cccc000000000000000000000000000000000000000000000000000000000017";

/// The agent with its stdout (the stdout sink) going to a file, as a log
/// pipeline would collect it.
struct Collected {
    child: Child,
    listen: String,
    stderr_log: PathBuf,
}

impl Collected {
    fn start(bin: &Path, args: &[String], stdout: &Path, log: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new(bin)
            .args(["--log", "info", "agent", "--stdout", "--listen", &listen])
            .args(args)
            .stdout(std::fs::File::create(stdout).unwrap())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("start the agent");
        let mut agent = Self {
            child,
            listen,
            stderr_log: log.to_owned(),
        };
        let deadline = Instant::now() + scaled(Duration::from_secs(30));
        while !agent.ready() {
            if let Some(status) = agent.child.try_wait().unwrap() {
                panic!("the agent exited with {status}:\n{}", agent.log());
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not become ready:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        agent
    }

    fn ready(&self) -> bool {
        let Ok(mut s) = std::net::TcpStream::connect(&self.listen) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        if write!(
            s,
            "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .is_err()
        {
            return false;
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.starts_with("HTTP/1.1 200")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// SIGTERM and a clean exit (which ships the last checkpoint).
    fn stop(mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + scaled(Duration::from_secs(20));
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "agent exit {status}:\n{}", self.log());
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no exit on SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Collected {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The checkpoint lines in collected stdout.
fn checkpoints(stdout: &Path) -> Vec<Value> {
    std::fs::read_to_string(stdout)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == "checkpoint")
        .collect()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Cuts the trail in `data_dir` back by `n` records the way root on the
/// node could: the later records go from their block (rewritten plain, as
/// earlier builds wrote blocks), later blocks and units go, and the chain
/// head names the new last record. Returns the new last seq.
fn cut_back(data_dir: &Path, n: u64) -> u64 {
    let db = store::open(data_dir).unwrap();
    let tree = store::tree(&db, store::trees::TRAIL).unwrap();
    let key = |p: u8, s: u64| {
        let mut k = vec![p];
        k.extend_from_slice(&s.to_be_bytes());
        k
    };
    let block = |tree: &sled::Tree, seq: u64| {
        let (k, v) = tree
            .range(key(b'b', 0)..=key(b'b', seq))
            .next_back()
            .expect("a block")
            .unwrap();
        let first = u64::from_be_bytes(k[1..].try_into().unwrap());
        let body = record::block_body(first, &v).unwrap().into_owned();
        (k, first, body)
    };
    let (_, first, body) = block(&tree, u64::MAX);
    let last = first + record::lines(&body).count() as u64 - 1;
    let keep = last - n;
    let (k, first, body) = block(&tree, keep);
    let lines: Vec<&[u8]> = record::lines(&body)
        .take(usize::try_from(keep - first + 1).unwrap())
        .collect();
    let hash = record::decode_line(keep, lines.last().unwrap())
        .unwrap()
        .record
        .hash;
    let mut plain = vec![1u8];
    plain.extend_from_slice(&lines.join(&b'\n'));
    tree.insert(k, plain).unwrap();
    for prefix in [b'b', b'u'] {
        let later: Vec<_> = tree
            .range(key(prefix, keep + 1)..=key(prefix, u64::MAX))
            .map(|kv| kv.unwrap().0)
            .collect();
        for k in later {
            tree.remove(k).unwrap();
        }
    }
    let head = ChainPoint {
        seq: keep,
        hash,
        appended_bytes: 0,
    };
    tree.insert(b"mhead", store::encode(&head).unwrap())
        .unwrap();
    db.flush().unwrap();
    keep
}

#[test]
fn shipped_checkpoints_catch_a_trail_cut_back_by_20_records() {
    if !require_root("shipped_checkpoints_catch_a_trail_cut_back_by_20_records") {
        return;
    }
    let bin = tokenwatch_tests::tokenwatch_binary();
    assert!(
        bin.exists(),
        "{} is missing: run `cargo xtask test`",
        bin.display()
    );
    let work = tempfile::tempdir().unwrap();
    let kubelet = work.path().join("kubelet");
    let data = work.path().join("data");
    let stdout = work.path().join("agent-stdout.jsonl");
    let cgroup_root = tokenwatch_host::node::find_cgroup2_mount().expect("a cgroup v2 hierarchy");
    let vol = sim::volume(
        &kubelet,
        POD,
        "kubernetes.io~projected",
        "kube-api-access-c7k2p",
        &sim::bound_token("shop", "web", "web-0", POD, "jti-cp-1"),
    );
    let cg = PodCgroup::create(&cgroup_root, POD, CONTAINER);
    let args: Vec<String> = [
        "--data-dir",
        &data.display().to_string(),
        "--kubelet-root",
        &kubelet.display().to_string(),
        "--cgroup-root",
        &cgroup_root.display().to_string(),
        "--node-name",
        "sim-node",
        "--flush-interval",
        "100ms",
        "--checkpoint-interval",
        "1s",
    ]
    .map(str::to_owned)
    .to_vec();
    let agent = Collected::start(&bin, &args, &stdout, &work.path().join("agent.log"));

    // Pod processes read the token until a checkpoint vouches for 45 records.
    let deadline = Instant::now() + scaled(Duration::from_secs(90));
    let mut rounds = 0;
    while checkpoints(&stdout)
        .iter()
        .all(|c| c["seq"].as_u64().unwrap_or(0) < 45)
    {
        assert!(
            Instant::now() < deadline && rounds < 200,
            "no checkpoint of 45 records after {rounds} rounds:\n{}",
            agent.log()
        );
        for _ in 0..5 {
            sim::run_in_pod(&vol, &cg, &["cat", IN_POD_TOKEN]);
        }
        rounds += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    // While the agent holds the data dir, `trail verify --checkpoints` asks it.
    let o = Command::new(&bin)
        .args(["trail", "verify", "--data-dir"])
        .arg(&data)
        .arg("--checkpoints")
        .arg(&stdout)
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("asked the running agent"), "{out}");
    assert!(out.contains("vouched for up to record"), "{out}");
    agent.stop();

    let shipped = checkpoints(&stdout);
    let trail = sim::export_trail(&bin, &data);
    let last = trail.last().unwrap()["seq"].as_u64().unwrap();
    // One at start (before any pod read), some every second, one at shutdown of everything.
    assert!(shipped.len() >= 3, "{shipped:?}");
    assert_eq!(shipped.last().unwrap()["seq"].as_u64(), Some(last));
    assert!(shipped[0]["seq"].as_u64().unwrap() < 45);
    let note = shipped[0]["note"].as_str().unwrap();
    assert!(
        note.contains("\nnode sim-node\n") && note.contains("\n\n\u{2014} tokenwatch/sim-node "),
        "{note}"
    );
    // The raw token never leaves in a checkpoint either.
    let token = std::fs::read_to_string(vol.token_path()).unwrap();
    assert!(
        !std::fs::read_to_string(&stdout)
            .unwrap()
            .contains(token.trim())
    );

    // The key, pinned from outside the node.
    let o = Command::new(&bin)
        .args(["trail", "key", "-o", "json", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let key: Value = serde_json::from_slice(&o.stdout).unwrap();
    let key = key["verifier_key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("tokenwatch/sim-node+"), "{key}");
    let verify = |dir: &Path| {
        Command::new(&bin)
            .args(["trail", "verify", "--key", &key, "--data-dir"])
            .arg(dir)
            .arg("--checkpoints")
            .arg(&stdout)
            .output()
            .unwrap()
    };

    // The untouched trail passes, vouched for to its end.
    let o = verify(&data);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains(&format!("vouched for up to record {last} ")),
        "{out}"
    );

    // A copy cut back by 20 records fails, naming the checkpoint.
    let cut = work.path().join("cut");
    copy_dir(&data, &cut);
    let keep = cut_back(&cut, 20);
    assert_eq!(keep, last - 20);
    let chain_only = Command::new(&bin)
        .args(["trail", "verify", "--data-dir"])
        .arg(&cut)
        .output()
        .unwrap();
    assert_eq!(
        chain_only.status.code(),
        Some(0),
        "the cut is consistent: {}",
        text(&chain_only)
    );
    let o = verify(&cut);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let first_lost = shipped
        .iter()
        .map(|c| c["seq"].as_u64().unwrap())
        .filter(|&s| s > keep)
        .min()
        .unwrap();
    assert!(
        out.contains(&format!("FAILED checkpoint of record {first_lost} ")),
        "{out}"
    );
    assert!(
        out.contains(&format!("the trail ends at record {keep}")),
        "{out}"
    );
    assert!(out.contains("agent-stdout.jsonl:"), "{out}");
    drop(cg);
}
