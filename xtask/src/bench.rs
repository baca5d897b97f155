//! `cargo xtask bench sensor`: what the sensor costs the rest of the node.
//!
//! Four loops that the sensor must *not* report, each run in a fresh child
//! process (so a peer that only affects tasks created after it starts, like
//! the audit subsystem, is measured fairly):
//!
//! - `open`: `open` + `close` of an unrelated file;
//! - `read`: `pread` of one byte from an unrelated fd;
//! - `connect`: a TCP connect to an unregistered, closed loopback port;
//! - `exec`: `fork` + `exec` of `/bin/true` (what the lineage programs see).
//!
//! Watchers: `floor` (a bare fanotify inode mark on the token, held by a
//! child of ours: the least any fanotify-based sensor can cost), `agent`
//! (`tokenwatch agent` as the DaemonSet runs it, its token volume a tmpfs
//! with a filesystem mark), `watch` (`tokenwatch watch --watch-file`), and
//! the peers auditd (a watch rule on the token) and bpftrace (a path filter
//! on the open syscalls). For each watcher the loops run in pairs, detached
//! and attached, alternating which goes first; the figure is the median over
//! the pairs of attached / detached. Everything is measured in one run, side
//! by side, and the run ends with the verdict against the target: every loop
//! of `agent` and `watch` at most 0.02 above the floor, and below auditd and
//! bpftrace.

use std::{
    ffi::CString,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// Which benchmark.
#[derive(clap::Subcommand)]
pub enum Which {
    /// Overhead of the attached sensor (and of two peers) on unrelated syscalls.
    Sensor {
        /// Detached/attached pairs per watcher (at least 5).
        #[arg(long, default_value_t = 7)]
        pairs: usize,
        /// Iterations of each loop per measurement.
        #[arg(long, default_value_t = 200_000)]
        iterations: u64,
        /// Watchers to measure (default: all five).
        #[arg(long, value_delimiter = ',', default_values_t = ["floor".to_owned(), "agent".to_owned(), "watch".to_owned(), "auditd".to_owned(), "bpftrace".to_owned()])]
        watchers: Vec<String>,
    },
    /// Audit-log replay throughput against jq, and peak RSS as input grows.
    Replay(crate::bench_replay::Args),
    /// The agent under a sustained token-read load, and idle on a node with many pods.
    Agent(crate::bench_agent::Args),
    /// The token-read generator (used by `bench agent`, in a child process).
    #[command(hide = true)]
    Generate {
        /// Reads per second.
        rate: u64,
        /// Seconds.
        seconds: u64,
        /// The token file.
        path: PathBuf,
    },
    /// A pod's own client re-reading its token (used by `bench agent`, in
    /// a child process placed in the pod's cgroup).
    #[command(hide = true)]
    PodReader {
        /// Milliseconds between reads.
        every_ms: u64,
        /// Seconds.
        seconds: u64,
        /// The token file.
        path: PathBuf,
    },
    /// Holds a bare fanotify inode mark on a file until SIGINT (the
    /// benchmark's floor; used by `bench sensor`, in a child process).
    #[command(hide = true)]
    HoldMark {
        /// The file to mark.
        path: PathBuf,
    },
    /// One measurement loop (used by `bench sensor`, in a child process).
    #[command(hide = true)]
    Loop {
        /// `open`, `read`, `connect` or `exec`.
        kind: String,
        /// Iterations.
        iterations: u64,
        /// The unrelated file.
        path: PathBuf,
        /// The closed loopback port.
        port: u16,
    },
}

const LOOPS: [&str; 4] = ["open", "read", "connect", "exec"];

/// `fork` + `exec` is about a thousand times slower than the other loops.
const EXEC_DIVISOR: u64 = 500;

/// Runs a benchmark.
pub fn run(which: Which) -> anyhow::Result<()> {
    match which {
        Which::Sensor {
            pairs,
            iterations,
            watchers,
        } => sensor(pairs.max(5), iterations, &watchers),
        Which::Replay(args) => crate::bench_replay::run(&args),
        Which::Agent(args) => crate::bench_agent::run(&args),
        Which::Generate {
            rate,
            seconds,
            path,
        } => {
            println!("{}", crate::bench_agent::generate(&path, rate, seconds)?);
            Ok(())
        }
        Which::PodReader {
            every_ms,
            seconds,
            path,
        } => {
            println!(
                "{}",
                crate::bench_agent::pod_reader(&path, every_ms, seconds)?
            );
            Ok(())
        }
        Which::HoldMark { path } => hold_mark(&path),
        Which::Loop {
            kind,
            iterations,
            path,
            port,
        } => {
            let ns = run_loop(&kind, iterations, &path, port)?;
            println!("{ns:.1}");
            Ok(())
        }
    }
}

/// A fanotify group with one inode mark (`FAN_OPEN | FAN_ACCESS |
/// FAN_CLOSE_NOWRITE`) on `path`, its events drained, until SIGINT.
fn hold_mark(path: &Path) -> anyhow::Result<()> {
    let cpath = CString::new(path.as_os_str().as_encoded_bytes()).context("path has a NUL")?;
    // SAFETY: plain syscalls on our own fd; the buffer is ours.
    unsafe {
        let fd = libc::fanotify_init(
            libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC,
            (libc::O_RDONLY | libc::O_CLOEXEC) as u32,
        );
        if fd < 0 {
            bail!("fanotify_init: {}", std::io::Error::last_os_error());
        }
        let mask = libc::FAN_OPEN | libc::FAN_ACCESS | libc::FAN_CLOSE_NOWRITE;
        if libc::fanotify_mark(fd, libc::FAN_MARK_ADD, mask, libc::AT_FDCWD, cpath.as_ptr()) != 0 {
            bail!("fanotify_mark: {}", std::io::Error::last_os_error());
        }
        eprintln!("floor: marked");
        let mut buf = [0u8; 4096];
        loop {
            // Blocks until an event (none come from the loops) or a signal.
            let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            if n < 0 {
                return Ok(());
            }
            // Close the event fds the kernel opened for us.
            let mut off = 0usize;
            while off + 24 <= n as usize {
                let len = u32::from_ne_bytes(buf[off..off + 4].try_into()?) as usize;
                let efd = i32::from_ne_bytes(buf[off + 16..off + 20].try_into()?);
                if efd >= 0 {
                    libc::close(efd);
                }
                if len == 0 {
                    break;
                }
                off += len;
            }
        }
    }
}

/// The loop itself; prints nanoseconds per iteration.
fn run_loop(kind: &str, iterations: u64, path: &Path, port: u16) -> anyhow::Result<f64> {
    let cpath = CString::new(path.as_os_str().as_encoded_bytes()).context("path has a NUL")?;
    let warmup = iterations / 10;
    let body: Box<dyn Fn()> = match kind {
        "open" => Box::new(move || {
            // SAFETY: a valid C string; the fd is closed right away.
            unsafe {
                let fd = libc::open(cpath.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                libc::close(fd);
            }
        }),
        "read" => {
            // SAFETY: as above; this fd stays open for the loop.
            let fd = unsafe { libc::open(cpath.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
            if fd < 0 {
                bail!("cannot open {}", path.display());
            }
            Box::new(move || {
                let mut byte = 0u8;
                // SAFETY: fd is open; a one-byte buffer.
                unsafe { libc::pread(fd, (&raw mut byte).cast(), 1, 0) };
            })
        }
        "connect" => {
            let addr = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: port.to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
                },
                sin_zero: [0; 8],
            };
            Box::new(move || {
                // SAFETY: a fresh socket, a valid sockaddr_in, closed right away.
                unsafe {
                    let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
                    libc::connect(
                        fd,
                        (&raw const addr).cast(),
                        size_of::<libc::sockaddr_in>() as u32,
                    );
                    libc::close(fd);
                }
            })
        }
        "exec" => Box::new(|| {
            let _ = Command::new("/bin/true").status();
        }),
        other => bail!("unknown loop {other}"),
    };
    for _ in 0..warmup {
        body();
    }
    let start = Instant::now();
    for _ in 0..iterations {
        body();
    }
    Ok(start.elapsed().as_nanos() as f64 / iterations as f64)
}

struct Setup {
    _dir: tempfile_dir::TempDir,
    /// The kubelet root of the `agent` watcher (its volume is a tmpfs).
    kubelet: PathBuf,
    /// The agent's data dir.
    data: PathBuf,
    token: PathBuf,
    unrelated: PathBuf,
    closed_port: u16,
    registered_port: u16,
    binary: PathBuf,
}

mod tempfile_dir {
    //! A minimal temp dir (xtask avoids extra dependencies).
    use std::path::{Path, PathBuf};

    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new() -> std::io::Result<Self> {
            // Short: bpftrace 0.17 refuses string literals over 64 bytes,
            // and its filter must hold the whole token path.
            let dir = std::env::temp_dir().join(format!("twb-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            Ok(Self(dir))
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            // The agent's token volume is a tmpfs under it.
            let _ = std::process::Command::new("umount")
                .arg("-R")
                .arg(&self.0)
                .stderr(std::process::Stdio::null())
                .status();
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A running watcher; stopping it detaches.
enum Attached {
    Process(Child),
    Audit(PathBuf),
}

impl Attached {
    fn stop(self) -> anyhow::Result<()> {
        match self {
            Self::Process(mut child) => {
                // SIGINT: tokenwatch and bpftrace both detach and exit on it.
                // SAFETY: signalling our own child.
                unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
                let deadline = Instant::now() + Duration::from_secs(10);
                while child.try_wait()?.is_none() {
                    if Instant::now() > deadline {
                        child.kill()?;
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.wait();
                Ok(())
            }
            Self::Audit(token) => {
                crate::run(Command::new("auditctl").arg("-W").arg(&token).args([
                    "-p",
                    "r",
                    "-k",
                    "tokenwatch-bench",
                ]))?;
                crate::run(
                    Command::new("auditctl")
                        .args(["-e", "0"])
                        .stdout(Stdio::null()),
                )
            }
        }
    }
}

/// Starts `cmd` and waits until a line of its stderr (or stdout) contains `ready`.
fn start_until(mut cmd: Command, ready: &str, from_stdout: bool) -> anyhow::Result<Child> {
    let shown = format!("{cmd:?}");
    let mut child = if from_stdout {
        cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()
    } else {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn()
    }
    .with_context(|| format!("starting {shown}"))?;
    let stream: Box<dyn std::io::Read + Send> = if from_stdout {
        Box::new(child.stdout.take().context("no stdout")?)
    } else {
        Box::new(child.stderr.take().context("no stderr")?)
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let ready = ready.to_owned();
    std::thread::spawn(move || {
        let mut found = false;
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if !found && line.contains(&ready) {
                found = true;
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = child.kill();
        bail!("{shown} did not report that it was ready");
    }
    Ok(child)
}

fn attach(watcher: &str, setup: &Setup) -> anyhow::Result<Attached> {
    match watcher {
        "floor" => {
            let mut cmd = Command::new(std::env::current_exe()?);
            cmd.args(["bench", "hold-mark"]).arg(&setup.token);
            Ok(Attached::Process(start_until(cmd, "floor: marked", false)?))
        }
        "agent" => {
            let _ = std::fs::remove_dir_all(&setup.data);
            let mut cmd = Command::new(&setup.binary);
            cmd.args(["--log", "info", "agent", "--kubelet-root"])
                .arg(&setup.kubelet)
                .arg("--data-dir")
                .arg(&setup.data)
                .args(["--node-name", "bench", "--listen", "127.0.0.1:0"])
                .arg("--apiserver")
                .arg(format!("127.0.0.1:{}", setup.registered_port));
            Ok(Attached::Process(start_until(cmd, "agent running", false)?))
        }
        "watch" => {
            let mut cmd = Command::new(&setup.binary);
            cmd.arg("watch")
                .arg("--watch-file")
                .arg(&setup.token)
                .arg("--apiserver")
                .arg(format!("127.0.0.1:{}", setup.registered_port));
            Ok(Attached::Process(start_until(
                cmd,
                "sensor attached",
                false,
            )?))
        }
        "bpftrace" => {
            let token = setup.token.display();
            let script = format!(
                "tracepoint:syscalls:sys_enter_openat /str(args->filename) == \"{token}\"/ {{ printf(\"%d %s\\n\", pid, comm); }}\n\
                 tracepoint:syscalls:sys_enter_openat2 /str(args->filename) == \"{token}\"/ {{ printf(\"%d %s\\n\", pid, comm); }}\n\
                 tracepoint:syscalls:sys_enter_open /str(args->filename) == \"{token}\"/ {{ printf(\"%d %s\\n\", pid, comm); }}"
            );
            let mut cmd = Command::new("bpftrace");
            // Line-buffered, so "Attaching N probes..." arrives through the pipe.
            cmd.args(["-B", "line", "-e"]).arg(script);
            // bpftrace says "Attaching N probes..." on stdout once attached.
            Ok(Attached::Process(start_until(cmd, "Attaching", true)?))
        }
        "auditd" => {
            crate::run(
                Command::new("auditctl")
                    .args(["-e", "1"])
                    .stdout(Stdio::null()),
            )?;
            crate::run(Command::new("auditctl").arg("-w").arg(&setup.token).args([
                "-p",
                "r",
                "-k",
                "tokenwatch-bench",
            ]))?;
            Ok(Attached::Audit(setup.token.clone()))
        }
        other => bail!("unknown watcher {other}"),
    }
}

/// Makes sure a peer's tools are installed (Debian packages) and running.
fn prepare_peer(watcher: &str) -> anyhow::Result<()> {
    let (tool, package) = match watcher {
        "auditd" => ("auditctl", "auditd"),
        "bpftrace" => ("bpftrace", "bpftrace"),
        _ => return Ok(()),
    };
    let present = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()?
        .status
        .success();
    if !present {
        eprintln!("xtask: installing {package} (a peer for the benchmark)");
        crate::run(Command::new("apt-get").arg("update").arg("-qq"))?;
        crate::run(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", package])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    if watcher == "auditd" {
        let running = Command::new("auditctl").arg("-s").output()?;
        let status = String::from_utf8_lossy(&running.stdout);
        if status.lines().any(|l| l.trim() == "pid 0") {
            // auditd daemonizes itself.
            crate::run(&mut Command::new("auditd"))?;
            std::thread::sleep(Duration::from_millis(500));
        }
        crate::run(
            Command::new("auditctl")
                .args(["-e", "0"])
                .stdout(Stdio::null()),
        )?;
    }
    Ok(())
}

fn measure(setup: &Setup, kind: &str, iterations: u64) -> anyhow::Result<f64> {
    let iterations = if kind == "exec" {
        (iterations / EXEC_DIVISOR).max(50)
    } else {
        iterations
    };
    let out = Command::new(std::env::current_exe()?)
        .args(["bench", "loop", kind, &iterations.to_string()])
        .arg(&setup.unrelated)
        .arg(setup.closed_port.to_string())
        .output()?;
    if !out.status.success() {
        bail!(
            "the {kind} loop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("loop output")
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        f64::midpoint(values[mid - 1], values[mid])
    }
}

/// Figures for one watcher: per loop, the ratios and the ns/op seen.
struct Figures {
    ratios: Vec<Vec<f64>>,
    detached: Vec<Vec<f64>>,
    attached: Vec<Vec<f64>>,
}

fn sensor(pairs: usize, iterations: u64, watchers: &[String]) -> anyhow::Result<()> {
    if !crate::is_root() {
        bail!("the sensor benchmark loads eBPF programs and changes audit rules: run it as root");
    }
    let binary = crate::build(true)?;
    let dir = tempfile_dir::TempDir::new()?;
    let volume = dir.path().join("p/volumes/kubernetes.io~projected/v");
    std::fs::create_dir_all(&volume)?;
    let token = volume.join("token");
    std::fs::write(&token, b"header.payload.signature")?;
    let unrelated = dir.path().join("unrelated.txt");
    std::fs::write(&unrelated, b"0123456789")?;
    // The agent's node: one pod whose token volume is a tmpfs of its own,
    // as the kubelet mounts it.
    let kubelet = dir.path().join("k");
    let agent_volume = kubelet.join(
        "pods/0a1b2c3d-0000-4000-8000-000000000001/volumes/kubernetes.io~projected/kube-api-access-b",
    );
    std::fs::create_dir_all(&agent_volume)?;
    crate::run(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "twb"])
            .arg(&agent_volume),
    )?;
    std::fs::create_dir(agent_volume.join("..2026_01_01_00_00_00.1"))?;
    std::fs::write(
        agent_volume.join("..2026_01_01_00_00_00.1/token"),
        b"header.payload.signature",
    )?;
    std::os::unix::fs::symlink("..2026_01_01_00_00_00.1", agent_volume.join("..data"))?;
    std::os::unix::fs::symlink("..data/token", agent_volume.join("token"))?;
    let setup = Setup {
        kubelet,
        data: dir.path().join("data"),
        token,
        unrelated,
        closed_port: free_port()?,
        registered_port: free_port()?,
        binary,
        _dir: dir,
    };
    let mut results = Vec::new();
    for watcher in watchers {
        // A peer that cannot run here is reported as such; the others still are.
        let measured = (|| -> anyhow::Result<Figures> {
            prepare_peer(watcher)?;
            let mut figures = Figures {
                ratios: vec![Vec::new(); LOOPS.len()],
                detached: vec![Vec::new(); LOOPS.len()],
                attached: vec![Vec::new(); LOOPS.len()],
            };
            for pair in 0..pairs {
                eprintln!("xtask: {watcher}: pair {}/{pairs}", pair + 1);
                let mut detached = [0.0; LOOPS.len()];
                let mut attached = [0.0; LOOPS.len()];
                for half in 0..2 {
                    let with_watcher = (pair + half) % 2 == 1;
                    let running = if with_watcher {
                        Some(attach(watcher, &setup)?)
                    } else {
                        None
                    };
                    for (i, kind) in LOOPS.iter().enumerate() {
                        let ns = measure(&setup, kind, iterations)?;
                        if with_watcher {
                            attached[i] = ns;
                        } else {
                            detached[i] = ns;
                        }
                    }
                    if let Some(running) = running {
                        running.stop()?;
                    }
                }
                for i in 0..LOOPS.len() {
                    figures.ratios[i].push(attached[i] / detached[i]);
                    figures.detached[i].push(detached[i]);
                    figures.attached[i].push(attached[i]);
                }
            }
            Ok(figures)
        })();
        match measured {
            Ok(mut figures) => {
                let summary: Vec<String> = LOOPS
                    .iter()
                    .enumerate()
                    .map(|(i, kind)| format!("{kind} {:.3}x", median(&mut figures.ratios[i])))
                    .collect();
                eprintln!("xtask: {watcher}: {}", summary.join(", "));
                results.push((watcher.clone(), figures));
            }
            Err(err) => eprintln!("xtask: {watcher}: unavailable here: {err:#}"),
        }
    }

    println!(
        "\nsensor overhead: median of {pairs} attached/detached pairs, {iterations} iterations per loop"
    );
    print!("{:<10}", "loop");
    for (watcher, _) in &results {
        print!(" | {watcher:>24}");
    }
    println!();
    let mut json = serde_json::Map::new();
    for (i, kind) in LOOPS.iter().enumerate() {
        print!("{kind:<10}");
        let mut row = serde_json::Map::new();
        for (watcher, figures) in &mut results {
            let ratio = median(&mut figures.ratios[i]);
            let base = median(&mut figures.detached[i]);
            let with = median(&mut figures.attached[i]);
            print!(" | {ratio:>6.3}x ({base:>6.0}->{with:>6.0} ns)");
            row.insert(
                watcher.clone(),
                serde_json::json!({"ratio": ratio, "detached_ns": base, "attached_ns": with}),
            );
        }
        println!();
        json.insert((*kind).to_owned(), row.into());
    }
    println!("{}", serde_json::Value::from(json));
    verdict(&mut results);
    Ok(())
}

/// Prints, per loop, whether `agent` and `watch` meet the target: at most
/// 0.02 above the floor, and below auditd and bpftrace.
fn verdict(results: &mut [(String, Figures)]) {
    let mut ratio_of = |watcher: &str, i: usize| {
        results
            .iter_mut()
            .find(|(w, _)| w == watcher)
            .map(|(_, f)| median(&mut f.ratios[i]))
    };
    let mut all_met = true;
    for (i, kind) in LOOPS.iter().enumerate() {
        let floor = ratio_of("floor", i);
        let peers: Vec<f64> = ["auditd", "bpftrace"]
            .iter()
            .filter_map(|p| ratio_of(p, i))
            .collect();
        for ours in ["agent", "watch"] {
            let Some(r) = ratio_of(ours, i) else { continue };
            let near_floor = floor.is_none_or(|f| r <= f + 0.02);
            let below_peers = peers.iter().all(|&p| r < p);
            all_met &= near_floor && below_peers;
            println!(
                "target {kind:<8} {ours:<6} {r:.3}x: floor {} -> {}; peers {:?} -> {}",
                floor.map_or_else(|| "not measured".to_owned(), |f| format!("{f:.3}x")),
                if near_floor { "met" } else { "MISSED" },
                peers.iter().map(|p| format!("{p:.3}x")).collect::<Vec<_>>(),
                if below_peers { "met" } else { "MISSED" },
            );
        }
    }
    println!(
        "target: {}",
        if all_met { "met" } else { "MISSED (see above)" }
    );
}
