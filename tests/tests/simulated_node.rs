//! The agent end to end on a simulated node (see `tokenwatch_tests::sim`):
//! real eBPF, real mount namespaces and cgroups, real signed tokens, a real
//! TLS endpoint, the real binary; every scenario checked in the trail.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokenwatch_tests::{
    require_root, scaled,
    sim::{self, Agent, ApiServer, CLIENT_PY, IN_POD_TOKEN, PodCgroup},
};

const POD_A: &str = "5a1c0e6e-1111-4a00-8000-00000000000a";
const POD_B: &str = "5a1c0e6e-2222-4b00-8000-00000000000b";
const POD_C: &str = "5a1c0e6e-3333-4c00-8000-00000000000c";
const CONTAINER_A: &str = "aaaa000000000000000000000000000000000000000000000000000000000001";
const CONTAINER_B: &str = "bbbb000000000000000000000000000000000000000000000000000000000002";
const CONTAINER_C: &str = "cccc000000000000000000000000000000000000000000000000000000000003";

use tokenwatch_test_support::policy::SHOP as POLICY;

/// A 64-bit program reading argv[1] through `int $0x80` (compat syscalls;
/// non-PIE so its static buffers have 32-bit addresses).
const INT80_READER: &str = include_str!("../helpers/int80_pod_reader.c");

fn entries(trail: &[Value]) -> Vec<&Value> {
    trail.iter().map(|r| &r["entry"]).collect()
}

fn findings(entry: &Value) -> Vec<String> {
    entry["findings"].as_array().map_or_else(Vec::new, |f| {
        f.iter()
            .map(|x| x["kind"].as_str().unwrap_or("").to_owned())
            .collect()
    })
}

fn metric(agent: &Agent, name: &str) -> f64 {
    let text = agent.get("/metrics").unwrap_or_default();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0)
}

/// Waits (bounded) until the agent has recorded at least `n` token reads.
fn wait_reads(agent: &Agent, n: f64) {
    let deadline = Instant::now() + scaled(Duration::from_secs(15));
    while metric(agent, "tokenwatch_entries_total{kind=\"token-read\"}") < n {
        assert!(
            Instant::now() < deadline,
            "the agent recorded fewer than {n} token reads:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario after another, each checked in the same trail"
)]
fn the_agent_on_a_simulated_node() {
    if !require_root("the_agent_on_a_simulated_node") {
        return;
    }
    let bin = tokenwatch_tests::tokenwatch_binary();
    assert!(
        bin.exists(),
        "{} is missing: run `cargo xtask test`, which builds it",
        bin.display()
    );
    let work = tempfile::tempdir().unwrap();
    let kubelet = work.path().join("kubelet");
    let data = work.path().join("data");
    let rbac = work.path().join("rbac.yaml");
    std::fs::write(&rbac, POLICY).unwrap();
    let cgroup_root = tokenwatch_host::node::find_cgroup2_mount().expect("a cgroup v2 hierarchy");
    std::fs::create_dir_all(&kubelet).unwrap();
    // The volumes are tmpfs mounts (as the kubelet makes them): unmounted at the end.
    let _mounts = sim::Mounts(kubelet.clone());

    // Pods: A (web, bound token), B (batch, bound token), C (legacy Secret token).
    let mut vol_a = sim::volume(
        &kubelet,
        POD_A,
        "kubernetes.io~projected",
        "kube-api-access-a1b2c",
        &sim::bound_token("shop", "web", "web-7d9f8b6c5d-x2x9q", POD_A, "jti-a-1"),
    );
    let vol_b = sim::volume(
        &kubelet,
        POD_B,
        "kubernetes.io~projected",
        "kube-api-access-d4e5f",
        &sim::bound_token("shop", "batch", "batch-0", POD_B, "jti-b-1"),
    );
    let vol_c = sim::volume(
        &kubelet,
        POD_C,
        "kubernetes.io~secret",
        "legacy-token-q8x2m",
        &sim::legacy_token("shop", "legacy"),
    );
    let cg_a = PodCgroup::create(&cgroup_root, POD_A, CONTAINER_A);
    let cg_b = PodCgroup::create(&cgroup_root, POD_B, CONTAINER_B);
    let cg_c = PodCgroup::create(&cgroup_root, POD_C, CONTAINER_C);
    let api = ApiServer::start(work.path());

    let key = sim::fixture("tokens/kubernetes-serviceaccount-test-keys/rsa-public.pem");
    let args: Vec<String> = vec![
        "--data-dir".into(),
        data.display().to_string(),
        "--kubelet-root".into(),
        kubelet.display().to_string(),
        "--cgroup-root".into(),
        cgroup_root.display().to_string(),
        "--rbac".into(),
        rbac.display().to_string(),
        "--key".into(),
        key.display().to_string(),
        "--apiserver".into(),
        format!("127.0.0.1:{}", api.port),
        "--node-name".into(),
        "sim-node".into(),
        "--learning-period".into(),
        "1h".into(),
        "--flush-interval".into(),
        "100ms".into(),
    ];
    let agent = Agent::start(&bin, &args, work.path());
    let port = api.port.to_string();
    let ca = api.ca.display().to_string();
    // The workload: python reads its token and calls the API server over TLS.
    let app: Vec<String> = ["python3", "-c", CLIENT_PY, IN_POD_TOKEN, &port, &ca]
        .map(str::to_owned)
        .to_vec();
    let run = |vol: &sim::Volume, cg: &PodCgroup, program: &[String]| {
        let refs: Vec<&str> = program.iter().map(String::as_str).collect();
        sim::run_in_pod(vol, cg, &refs);
    };

    // 1. The app in pod A reads its own token and calls the API server.
    run(&vol_a, &cg_a, &app);
    // 2. A shell in pod A cats the token.
    run(
        &vol_a,
        &cg_a,
        &[
            "sh".into(),
            "-c".into(),
            format!("cat {IN_POD_TOKEN} > /dev/null"),
        ],
    );
    // 3. A process in pod B reads pod A's token through the host path.
    run(
        &vol_b,
        &cg_b,
        &["cat".into(), vol_a.token_path().display().to_string()],
    );
    // 3b. A process in pod B uses pod A's token: reads it and calls the API server.
    let stolen_use: Vec<String> = [
        "python3".to_owned(),
        "-c".to_owned(),
        CLIENT_PY.to_owned(),
        vol_a.token_path().display().to_string(),
        port.clone(),
        ca.clone(),
    ]
    .to_vec();
    run(&vol_b, &cg_b, &stolen_use);
    // 4e. A host process uses pod A's token.
    let status = std::process::Command::new("python3")
        .args(["-c", CLIENT_PY])
        .arg(vol_a.token_path())
        .args([&port, &ca])
        .status()
        .unwrap();
    assert!(status.success());
    // 4. A host process reads pod A's token.
    let status = std::process::Command::new("cat")
        .arg(vol_a.token_path())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    // 4b. A host `cp` of pod A's token (copy_file_range: no read(2) at all).
    let copy = work.path().join("stolen-token");
    let status = std::process::Command::new("cp")
        .arg(vol_a.token_path())
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    // 4c. A host program reading pod A's token through `int $0x80`.
    let int80 =
        tokenwatch_tests::c_helper("int80_pod_reader", INT80_READER, &["-no-pie", "-fno-pie"]);
    let out = std::process::Command::new(&int80)
        .arg(vol_a.token_path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // 4d. Pod C `sendfile`s pod A's token (host path) to a file of its own.
    run(
        &vol_c,
        &cg_c,
        &[
            "python3".into(),
            "-c".into(),
            "import os,sys\nfd=os.open(sys.argv[1],os.O_RDONLY)\nout=os.open('/run/stolen',os.O_WRONLY|os.O_CREAT,0o600)\nassert os.sendfile(out,fd,0,65536)>0".into(),
            vol_a.token_path().display().to_string(),
        ],
    );
    // 6. Pod C reads its legacy token and calls the API server.
    run(&vol_c, &cg_c, &app);
    wait_reads(&agent, 10.0);

    // 5. The kubelet rotates pod A's token mid-run; the app reads the new one, twice.
    vol_a.write(&sim::bound_token(
        "shop",
        "web",
        "web-7d9f8b6c5d-x2x9q",
        POD_A,
        "jti-a-2",
    ));
    // The agent watches the new token file (a fourth inode) before the app
    // reads it: waited for, not slept on (emulated kernels are slower).
    let deadline = Instant::now() + scaled(Duration::from_secs(5));
    while metric(&agent, "tokenwatch_watched_inodes") < 4.0 {
        assert!(
            Instant::now() < deadline,
            "the agent never watched pod A's rotated token:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    run(&vol_a, &cg_a, &app);
    run(&vol_a, &cg_a, &app);
    wait_reads(&agent, 12.0);
    assert_eq!(metric(&agent, "tokenwatch_kernel_drops_total"), 0.0);
    for lost in [
        "tokenwatch_fanotify_overflows_total",
        "tokenwatch_fanotify_fd_failures_total",
        "tokenwatch_fanotify_queue_lost_total",
    ] {
        assert_eq!(metric(&agent, lost), 0.0, "{lost}");
    }
    // Token files watched: three volumes, plus pod A's rotated token (the
    // old one is still on disk), all through one filesystem mark per volume.
    assert_eq!(metric(&agent, "tokenwatch_watched_inodes"), 4.0);

    // While the agent runs (and holds the store), `trail query` asks it.
    let deadline = std::time::Instant::now() + scaled(Duration::from_secs(10));
    let live_hits = loop {
        let out = std::process::Command::new(&bin)
            .args([
                "trail",
                "query",
                "--finding",
                "host-reader",
                "-o",
                "json",
                "--data-dir",
            ])
            .arg(&data)
            .output()
            .expect("trail query runs");
        assert!(
            out.status.success(),
            "trail query while the agent runs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let hits: Vec<Value> = serde_json::from_slice(&out.stdout).expect("a JSON array");
        // Records show once the agent has flushed them (every second).
        if !hits.is_empty() || std::time::Instant::now() > deadline {
            break hits;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        !live_hits.is_empty(),
        "the running agent answered no host-reader record"
    );
    agent.stop();

    let trail = sim::export_trail(&bin, &data);
    let all = entries(&trail);
    let reads: Vec<&&Value> = all.iter().filter(|e| e["kind"] == "token-read").collect();
    let describe = || serde_json::to_string_pretty(&all).unwrap();

    // 1: a plain read and a token use, right pod, subject and RBAC summary.
    let app_read = reads
        .iter()
        .find(|e| {
            e["reader"]["pod"]["uid"] == POD_A
                && e["token"]["jti"] == "jti-a-1"
                && e["reader"]["comm"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("python")
        })
        .unwrap_or_else(|| panic!("no read by pod A's app:\n{}", describe()));
    assert!(findings(app_read).is_empty(), "{app_read}");
    assert_eq!(app_read["reader"]["pod"]["name"], "web-7d9f8b6c5d-x2x9q");
    assert_eq!(app_read["reader"]["pod"]["namespace"], "shop");
    assert_eq!(app_read["reader"]["pod"]["container_id"], CONTAINER_A);
    assert_eq!(
        app_read["token"]["subject"],
        "system:serviceaccount:shop:web"
    );
    assert_eq!(app_read["token"]["signature"], "verified");
    assert_eq!(app_read["rbac"]["can_read_secrets"], false);
    let token_use = all
        .iter()
        .find(|e| e["kind"] == "token-use" && e["token"]["jti"] == "jti-a-1")
        .unwrap_or_else(|| panic!("no token use by pod A:\n{}", describe()));
    assert_eq!(token_use["reader"]["pod"]["uid"], POD_A);
    assert_eq!(token_use["connection"]["dport"], api.port);
    assert_eq!(token_use["connection"]["established"], true);
    assert!(findings(token_use).is_empty());

    // 2: the shell's cat is an unexpected reader.
    let cat_a = reads
        .iter()
        .find(|e| e["reader"]["pod"]["uid"] == POD_A && e["reader"]["comm"] == "cat")
        .unwrap_or_else(|| panic!("no cat in pod A:\n{}", describe()));
    assert_eq!(findings(cat_a), vec!["unexpected-reader"]);
    assert!(
        cat_a["reader"]["ancestry"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap_or("").ends_with("sh")),
        "{cat_a}"
    );

    // 3: pod B reading pod A's token is a foreign token.
    let foreign = reads
        .iter()
        .find(|e| e["reader"]["pod"]["uid"] == POD_B)
        .unwrap_or_else(|| panic!("no read from pod B:\n{}", describe()));
    assert!(
        findings(foreign).contains(&"foreign-token".to_owned()),
        "{foreign}"
    );
    assert_eq!(
        foreign["token"]["subject"],
        "system:serviceaccount:shop:web"
    );

    // 3b and 4e: the use of a stolen token is flagged at the use too.
    let uses_of_a = |pod_uid: Option<&str>| -> Vec<&Value> {
        entries(&trail)
            .into_iter()
            .filter(|e| {
                e["kind"] == "token-use"
                    && e["token"]["jti"] == "jti-a-1"
                    && match pod_uid {
                        Some(uid) => e["reader"]["pod"]["uid"] == uid,
                        None => e["reader"]["pod"].is_null(),
                    }
            })
            .collect()
    };
    let foreign_use = uses_of_a(Some(POD_B));
    assert!(
        foreign_use
            .first()
            .is_some_and(|e| findings(e).contains(&"foreign-token".to_owned())),
        "pod B's use of pod A's token:\n{}",
        describe()
    );
    let host_use = uses_of_a(None);
    assert!(
        host_use
            .first()
            .is_some_and(|e| findings(e) == ["host-reader"]),
        "a host process's use of pod A's token:\n{}",
        describe()
    );

    // 4: the host process.
    let host = reads
        .iter()
        .find(|e| e["reader"]["pod"].is_null() && e["reader"]["comm"] == "cat")
        .unwrap_or_else(|| panic!("no host read:\n{}", describe()));
    assert_eq!(findings(host), vec!["host-reader"]);
    // 4b-4d: accesses no read(2) shows: cp, int $0x80, a pod's sendfile.
    for (comm, what) in [
        ("cp", "host cp"),
        (
            "int80_pod_reade",
            "host int $0x80 reader (comm: 15 bytes of int80_pod_reader)",
        ),
    ] {
        let entry = reads
            .iter()
            .find(|e| e["reader"]["pod"].is_null() && e["reader"]["comm"] == comm)
            .unwrap_or_else(|| panic!("no {what}:\n{}", describe()));
        assert_eq!(findings(entry), vec!["host-reader"], "{entry}");
        assert_eq!(entry["token"]["jti"], "jti-a-1", "{entry}");
        assert!(
            entry["token"]["file"]["seen"]
                .as_array()
                .is_some_and(|s| s.iter().any(|x| x == "access" || x == "open")),
            "{entry}"
        );
    }
    let sendfile = reads
        .iter()
        .find(|e| e["reader"]["pod"]["uid"] == POD_C && e["token"]["jti"] == "jti-a-1")
        .unwrap_or_else(|| panic!("no sendfile by pod C of pod A's token:\n{}", describe()));
    assert!(
        findings(sendfile).contains(&"foreign-token".to_owned()),
        "{sendfile}"
    );
    assert_eq!(sendfile["schema"], 3);

    // 5: both reads of the rotated token were seen, with the new JTI. (The
    // test process writing the new token, as the kubelet does, may also
    // show: fanotify's FAN_OPEN fires for opens for writing too.)
    // Two processes: two records at once (a process's repeats are folded
    // into records of their own, with `repeated`).
    let rotated = reads
        .iter()
        .filter(|e| {
            e["token"]["jti"] == "jti-a-2"
                && e["reader"]["pod"]["uid"] == POD_A
                && e["repeated"].is_null()
        })
        .count();
    assert_eq!(rotated, 2, "reads of the rotated token:\n{}", describe());

    // Every token access the sensor reported is counted once in the trail:
    // the first record of a combination stands for one, a folded one for
    // its count.
    let recorded: u64 = reads
        .iter()
        .map(|e| e["repeated"]["count"].as_u64().unwrap_or(1))
        .sum();
    let stopped = all
        .iter()
        .rev()
        .find_map(|e| {
            e["message"]
                .as_str()
                .and_then(|m| m.strip_prefix("agent stopped; the sensor reported "))
        })
        .unwrap_or_else(|| panic!("no stop entry:\n{}", describe()));
    let reported: u64 = stopped
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {stopped:?}"));
    assert_eq!(recorded, reported, "{stopped}\n{}", describe());

    // 6: the legacy token of a secret reader.
    let legacy = reads
        .iter()
        .find(|e| e["reader"]["pod"]["uid"] == POD_C && e["token"]["kind"] == "legacy")
        .unwrap_or_else(|| panic!("no read from pod C:\n{}", describe()));
    let legacy_findings = findings(legacy);
    assert!(
        legacy_findings.contains(&"legacy-token".to_owned()),
        "{legacy}"
    );
    assert!(
        legacy_findings.contains(&"privileged-subject".to_owned()),
        "{legacy}"
    );
    assert_eq!(legacy["rbac"]["can_read_secrets"], true);

    // The token itself never reaches the trail.
    let raw = std::fs::read_to_string(vol_a.token_path()).unwrap();
    let exported = serde_json::to_string(&trail).unwrap();
    assert!(
        !exported.contains(raw.trim()),
        "a raw token is in the trail"
    );

    // 7. A crash: kill -9 after a flush, restart, the chain verifies and continues.
    let agent = Agent::start(&bin, &args, work.path());
    run(&vol_b, &cg_b, &app);
    wait_reads(&agent, 1.0);
    let appended_before = trail.len() as f64;
    let deadline = Instant::now() + scaled(Duration::from_secs(10));
    while metric(&agent, "tokenwatch_trail_durable_seq") < appended_before + 2.0 {
        assert!(
            Instant::now() < deadline,
            "nothing became durable:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let durable = metric(&agent, "tokenwatch_trail_durable_seq") as u64;
    agent.kill();
    let verify = std::process::Command::new(&bin)
        .args(["trail", "verify", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "trail verify after kill -9: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let after_crash = sim::export_trail(&bin, &data);
    let last_seq = after_crash.last().unwrap()["seq"].as_u64().unwrap();
    assert!(
        last_seq >= durable,
        "durable seq {durable} but the trail ends at {last_seq}"
    );
    let agent = Agent::start(&bin, &args, work.path());
    run(&vol_b, &cg_b, &app);
    wait_reads(&agent, 1.0);
    agent.stop();
    let final_trail = sim::export_trail(&bin, &data);
    let seqs: Vec<u64> = final_trail
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "seqs are not contiguous: {seqs:?}"
    );
    assert!(*seqs.last().unwrap() > last_seq);
    let verify = std::process::Command::new(&bin)
        .args(["trail", "verify", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "trail verify after restart: {}",
        String::from_utf8_lossy(&verify.stdout)
    );
    drop((cg_a, cg_b, cg_c));
}
