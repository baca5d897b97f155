//! The agent under exactly the DaemonSet's capabilities: its bounding set
//! restricted (with `setpriv`) to what `deploy/kustomize/base/daemonset.yaml`
//! adds, it attaches and records a token read; without CAP_SYS_ADMIN it
//! names it in one line, stays up and `/readyz` answers 503.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use tokenwatch_tests::{
    require_root, scaled,
    sim::{self, Agent},
};

const POD: &str = "5a1c0e6e-4444-4d00-8000-00000000000d";

/// The capabilities the DaemonSet adds (`SYS_ADMIN`, ...), from the manifest.
fn manifest_capabilities() -> Vec<String> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kustomize/base/daemonset.yaml");
    let text = std::fs::read_to_string(&path).expect("read the DaemonSet");
    let line = text
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("add: ["))
        .expect("an `add: [...]` capability list in the DaemonSet");
    let caps: Vec<String> = line
        .trim_end_matches(']')
        .split(',')
        .map(|c| c.trim().trim_matches('"').to_owned())
        .filter(|c| !c.is_empty())
        .collect();
    assert!(!caps.is_empty());
    caps
}

/// `setpriv` keeping only `caps` in the bounding set: uid 0 then gets
/// exactly those as its permitted and effective sets after exec.
fn restricted(caps: &[String]) -> Vec<String> {
    let mut bounding = String::from("-all");
    for cap in caps {
        bounding.push_str(",+");
        bounding.push_str(&cap.to_lowercase());
    }
    vec![
        "setpriv".into(),
        format!("--bounding-set={bounding}"),
        "--inh-caps=-all".into(),
        "--".into(),
    ]
}

/// Capability bit numbers by name (the ones the manifest may name).
fn cap_bit(name: &str) -> u32 {
    match name {
        "DAC_READ_SEARCH" => 2,
        "SYS_PTRACE" => 19,
        "SYS_ADMIN" => 21,
        "SYS_RESOURCE" => 24,
        "PERFMON" => 38,
        "BPF" => 39,
        other => panic!("add CAP_{other} to this test's table"),
    }
}

fn agent_args(work: &Path, kubelet: &Path) -> Vec<String> {
    vec![
        "--data-dir".into(),
        work.join("data").display().to_string(),
        "--kubelet-root".into(),
        kubelet.display().to_string(),
        "--node-name".into(),
        "caps-node".into(),
        "--apiserver".into(),
        "127.0.0.1:6443".into(),
        "--flush-interval".into(),
        "100ms".into(),
    ]
}

#[test]
fn the_agent_attaches_and_records_with_exactly_the_manifests_capabilities() {
    if !require_root("capabilities") {
        return;
    }
    let bin = tokenwatch_tests::tokenwatch_binary();
    assert!(
        bin.exists(),
        "{} is missing: run `cargo xtask test`",
        bin.display()
    );
    let caps = tokenwatch_tests::grantable_capabilities(
        "capabilities_exact",
        manifest_capabilities(),
        cap_bit,
    );
    assert!(caps.iter().any(|c| c == "SYS_ADMIN"), "{caps:?}");
    let work = tempfile::tempdir().unwrap();
    let kubelet: PathBuf = work.path().join("kubelet");
    std::fs::create_dir_all(&kubelet).unwrap();
    let _mounts = sim::Mounts(kubelet.clone());
    let volume = sim::volume(
        &kubelet,
        POD,
        "kubernetes.io~projected",
        "kube-api-access-c4p5s",
        &sim::bound_token("shop", "web", "web-0", POD, "jti-caps-1"),
    );

    let agent = Agent::start_wrapped(
        &restricted(&caps),
        &bin,
        &agent_args(work.path(), &kubelet),
        work.path(),
    );
    // The agent really runs with exactly these capabilities.
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    let expected = caps.iter().fold(0u64, |m, c| m | (1 << cap_bit(c)));
    assert_eq!(cap_eff, expected, "effective capabilities of the agent");

    let status = Command::new("cat")
        .arg(volume.token_path())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + scaled(Duration::from_secs(15));
    loop {
        let metrics = agent.get("/metrics").unwrap_or_default();
        if metrics.contains("tokenwatch_entries_total{kind=\"token-read\"} 1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no token read recorded:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    agent.stop();
    let trail = sim::export_trail(&bin, &work.path().join("data"));
    let read = trail
        .iter()
        .map(|r| &r["entry"])
        .find(|e| e["kind"] == "token-read")
        .expect("a token-read entry");
    assert_eq!(read["reader"]["comm"], "cat");
    assert_eq!(read["token"]["jti"], "jti-caps-1");
    assert_eq!(read["findings"][0]["kind"], "host-reader", "{read}");
}

#[test]
fn without_cap_sys_admin_the_agent_names_it_once_and_stays_unready() {
    if !require_root("capabilities_missing") {
        return;
    }
    let bin = tokenwatch_tests::tokenwatch_binary();
    let caps: Vec<String> = tokenwatch_tests::grantable_capabilities(
        "capabilities_missing",
        manifest_capabilities(),
        cap_bit,
    )
    .into_iter()
    .filter(|c| c != "SYS_ADMIN")
    .collect();
    let work = tempfile::tempdir().unwrap();
    let kubelet = work.path().join("kubelet");
    std::fs::create_dir_all(&kubelet).unwrap();
    let wrapper = restricted(&caps);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let log = work.path().join("agent.log");
    let mut child = Command::new(&wrapper[0])
        .args(&wrapper[1..])
        .arg(&bin)
        .arg("agent")
        .arg("--listen")
        .arg(&listen)
        .args(agent_args(work.path(), &kubelet))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("run the agent");
    let readyz = || {
        use std::io::{Read as _, Write as _};
        let mut stream = std::net::TcpStream::connect(&listen).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            stream,
            "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut out = String::new();
        stream.read_to_string(&mut out).ok()?;
        Some(out)
    };
    // Unready, saying why, and still so a while later: it does not exit.
    let deadline = Instant::now() + scaled(Duration::from_secs(30));
    let reply = loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the agent exited with {status}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if let Some(reply) = readyz().filter(|r| r.contains("missing CAP_SYS_ADMIN")) {
            break reply;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never named CAP_SYS_ADMIN:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(child.try_wait().unwrap().is_none(), "the agent exited");
    assert!(readyz().is_some_and(|r| r.starts_with("HTTP/1.1 503")));
    let stderr = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("CAP_SYS_ADMIN"))
        .collect();
    assert_eq!(lines.len(), 1, "one line naming the capability:\n{stderr}");
    assert!(
        lines[0].contains("not ready: CAP_SYS_ADMIN is missing"),
        "{stderr}"
    );
    // SIGTERM: a clean stop.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + scaled(Duration::from_secs(20));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}:\n{stderr}");
}
