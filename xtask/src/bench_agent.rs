//! `cargo xtask bench agent`: the agent under load, and idle on a busy node.
//!
//! 1. **Load**: a kubelet-like tree with one pod's projected token; the real
//!    agent (release build) watches it; a generator process opens, reads and
//!    closes the token at a sustained rate (default 50,000 reads/s) for a
//!    while (default 30 s). Reported: reads achieved, kernel and userspace
//!    drops (from the agent's `/metrics`), trail records appended per second,
//!    the agent's CPU (user + system, from `/proc/<pid>/stat`) and peak RSS
//!    (`VmHWM`).
//! 2. **Idle**: 110 pods' token volumes (the kubelet's default pod limit per
//!    node), agent started, left idle; reported: its RSS.

use std::{
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// Options of `bench agent`.
#[derive(clap::Args)]
pub struct Args {
    /// Token reads per second the generator sustains.
    #[arg(long, default_value_t = 50_000)]
    pub rate: u64,
    /// How long the load lasts, in seconds.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Pods on the idle node.
    #[arg(long, default_value_t = 110)]
    pub pods: usize,
}

fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A bound-token-shaped JWT (signature not checked: the agent has no keys here).
fn token(pod_uid: &str, pod_name: &str, jti: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let header = br#"{"alg":"RS256","kid":"bench"}"#;
    let claims = serde_json::json!({
        "aud": ["https://kubernetes.default.svc.cluster.local"], "exp": now + 3600, "iat": now, "nbf": now,
        "iss": "https://kubernetes.default.svc.cluster.local", "jti": jti,
        "sub": "system:serviceaccount:bench:app",
        "kubernetes.io": {"namespace": "bench", "pod": {"name": pod_name, "uid": pod_uid},
            "serviceaccount": {"name": "app", "uid": "sa-uid"}, "node": {"name": "bench-node", "uid": "n"}, "warnafter": now + 3000}
    });
    format!(
        "{}.{}.{}",
        b64url(header),
        b64url(claims.to_string().as_bytes()),
        b64url(&[7u8; 256])
    )
}

fn pod_volume(root: &Path, i: usize) -> anyhow::Result<PathBuf> {
    let uid = format!("b3c4d5e6-0000-4000-8000-{i:012}");
    let dir = root
        .join("pods")
        .join(&uid)
        .join("volumes/kubernetes.io~projected/kube-api-access-bench");
    let stamp = dir.join("..2026_01_01_00_00_00.1");
    std::fs::create_dir_all(&stamp)?;
    std::fs::write(
        stamp.join("token"),
        token(&uid, &format!("app-{i}"), &format!("jti-{i}")),
    )?;
    std::os::unix::fs::symlink("..2026_01_01_00_00_00.1", dir.join("..data"))?;
    std::os::unix::fs::symlink("..data/token", dir.join("token"))?;
    Ok(dir.join("token"))
}

struct AgentProc {
    child: Child,
    listen: String,
}

impl AgentProc {
    fn start(binary: &Path, kubelet: &Path, data: &Path) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new(binary)
            .args(["agent", "--listen", &listen, "--kubelet-root"])
            .arg(kubelet)
            .arg("--data-dir")
            .arg(data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the agent")?;
        let agent = Self { child, listen };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !agent
            .get("/readyz")
            .is_some_and(|r| r.starts_with("HTTP/1.1 200"))
        {
            if Instant::now() > deadline {
                bail!("the agent did not become ready");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(agent)
    }

    fn get(&self, path: &str) -> Option<String> {
        let mut stream = std::net::TcpStream::connect(&self.listen).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
        let mut out = String::new();
        stream.read_to_string(&mut out).ok()?;
        Some(out)
    }

    fn metric(&self, name: &str) -> f64 {
        self.get("/metrics")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    /// (user + system CPU seconds, VmRSS KiB, VmHWM KiB).
    fn usage(&self) -> anyhow::Result<(f64, u64, u64)> {
        let pid = self.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .context("stat")?
            .1
            .split_whitespace()
            .collect();
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let cpu = (fields[11].parse::<f64>()? + fields[12].parse::<f64>()?) / ticks;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        Ok((cpu, kib("VmRSS:"), kib("VmHWM:")))
    }

    fn stop(mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// The generator: open + read + close of `path`, paced to `rate` per second.
pub fn generate(path: &Path, rate: u64, seconds: u64) -> anyhow::Result<u64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    let mut buf = vec![0u8; 4096];
    let start = Instant::now();
    let total = rate * seconds;
    let mut done = 0;
    while done < total {
        // Pace in slices of 1 ms worth of reads.
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        if done >= due {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        for _ in 0..(due - done).min(rate / 1000 + 1) {
            // SAFETY: a valid path and buffer; the fd is closed right away.
            unsafe {
                let fd = libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
                libc::close(fd);
            }
            done += 1;
        }
        if start.elapsed() > Duration::from_secs(seconds * 2) {
            break;
        }
    }
    Ok(done)
}

/// Runs both parts and prints the figures.
pub fn run(args: &Args) -> anyhow::Result<()> {
    if !crate::is_root() {
        bail!("the agent benchmark loads eBPF programs: run it as root");
    }
    let binary = crate::build(true)?;
    let work = std::env::temp_dir().join(format!("tokenwatch-bench-agent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);

    // 1. Load.
    let kubelet = work.join("kubelet-load");
    let token = pod_volume(&kubelet, 0)?;
    let agent = AgentProc::start(&binary, &kubelet, &work.join("data-load"))?;
    let (cpu0, _, _) = agent.usage()?;
    let appended0 = agent.metric("tokenwatch_trail_records_appended_total");
    eprintln!(
        "xtask: generating {} reads/s for {} s",
        args.rate, args.seconds
    );
    let started = Instant::now();
    let generator = Command::new(std::env::current_exe()?)
        .args([
            "bench",
            "generate",
            &args.rate.to_string(),
            &args.seconds.to_string(),
        ])
        .arg(&token)
        .output()?;
    let elapsed = started.elapsed().as_secs_f64();
    if !generator.status.success() {
        bail!(
            "the generator failed: {}",
            String::from_utf8_lossy(&generator.stderr)
        );
    }
    let reads: u64 = String::from_utf8_lossy(&generator.stdout)
        .trim()
        .parse()
        .context("generator output")?;
    // Let the agent drain what is queued: until it has seen every read, or
    // has seen nothing more for a second (the rest were dropped), or 30 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = -1.0;
    let mut still = 0;
    loop {
        let now = agent.metric("tokenwatch_events_total{kind=\"token_access\"}");
        still = if now == last { still + 1 } else { 0 };
        if now >= reads as f64 || still >= 2 || Instant::now() > deadline {
            break;
        }
        last = now;
        std::thread::sleep(Duration::from_millis(500));
    }
    let drain = started.elapsed().as_secs_f64();
    let (cpu1, _, hwm) = agent.usage()?;
    let seen = agent.metric("tokenwatch_events_total{kind=\"token_access\"}");
    // fanotify losses count with the ring buffer's: each is a lost access.
    let kernel_drops = agent.metric("tokenwatch_kernel_drops_total")
        + agent.metric("tokenwatch_fanotify_overflows_total")
        + agent.metric("tokenwatch_fanotify_fd_failures_total")
        + agent.metric("tokenwatch_fanotify_queue_lost_total");
    let text = agent.get("/metrics").unwrap_or_default();
    let user_drops: f64 = text
        .lines()
        .filter(|l| l.starts_with("tokenwatch_userspace_drops_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let appended = agent.metric("tokenwatch_trail_records_appended_total") - appended0;
    agent.stop();

    // 2. Idle with many pods.
    let kubelet_idle = work.join("kubelet-idle");
    for i in 0..args.pods {
        pod_volume(&kubelet_idle, i)?;
    }
    let idle = AgentProc::start(&binary, &kubelet_idle, &work.join("data-idle"))?;
    std::thread::sleep(Duration::from_secs(5));
    let watched = idle.metric("tokenwatch_watched_inodes");
    let (_, idle_rss, idle_hwm) = idle.usage()?;
    idle.stop();
    let _ = std::fs::remove_dir_all(&work);

    let cpu = cpu1 - cpu0;
    println!(
        "\nagent under load ({} s at {} reads/s requested)",
        args.seconds, args.rate
    );
    println!(
        "  reads generated          {reads} ({:.0}/s achieved)",
        reads as f64 / elapsed
    );
    println!(
        "  token accesses seen      {seen:.0} (fanotify merges queued accesses of one process to one file; kernel + fanotify losses {kernel_drops:.0}, userspace drops {user_drops:.0})"
    );
    println!(
        "  trail records appended   {appended:.0} ({:.0}/s)",
        appended / elapsed
    );
    println!(
        "  agent CPU                {cpu:.1} s over {drain:.1} s = {:.0}% of one core",
        100.0 * cpu / drain
    );
    println!("  agent peak RSS           {:.1} MiB", hwm as f64 / 1024.0);
    println!(
        "agent idle with {} pods ({watched:.0} token inodes watched)",
        args.pods
    );
    println!(
        "  RSS                      {:.1} MiB (peak {:.1} MiB; target <= 64 MiB)",
        idle_rss as f64 / 1024.0,
        idle_hwm as f64 / 1024.0
    );
    println!(
        "{}",
        serde_json::json!({
            "load": {"reads": reads, "seconds": elapsed, "seen": seen, "kernel_drops": kernel_drops,
                     "userspace_drops": user_drops, "appended": appended, "cpu_seconds": cpu, "peak_rss_kib": hwm},
            "idle": {"pods": args.pods, "watched_inodes": watched, "rss_kib": idle_rss, "peak_rss_kib": idle_hwm}
        })
    );
    Ok(())
}
