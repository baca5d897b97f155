//! `cargo xtask bench replay`: audit-log replay throughput against jq, and
//! peak memory as the input grows.
//!
//! - Generates (streaming, never held in memory) a kube-apiserver audit log
//!   of `--events` realistic `audit.k8s.io/v1` events: ServiceAccounts with
//!   bound-token extras (credential id, pod, node), kubelets, controllers
//!   and people; gets, lists, watches, creates, 403s; 5 % `RequestReceived`
//!   stages. And a matching RBAC snapshot (a Role and RoleBinding per
//!   ServiceAccount, ClusterRoles and ClusterRoleBindings for groups).
//!   Files are cached under `target/xtask/bench-replay/`.
//! - Builds the release binary, then alternates, `--runs` times, pinned to
//!   one core with `taskset`:
//!   `tokenwatch replay --audit LOG --rbac SNAPSHOT -o json`, the full
//!   replay (parse + attributes + decision + timeline + stolen-token signals +
//!   detections + summaries for every event, every listed event written)
//!   and the peer `jq -c 'select(.user.username | startswith("system:serviceaccount:"))' LOG`
//!   (parse only). Both write to /dev/null; wall time, CPU time and peak
//!   RSS come from `wait4`'s rusage. jq is installed with apt-get if missing.
//! - Runs tokenwatch once more on a `--large`-event log to show that peak
//!   RSS stays flat as the input grows.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};

/// Arguments of `bench replay`.
#[derive(clap::Args)]
pub struct Args {
    /// Events in the measured log.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Events in the larger log used for the memory comparison (0 skips it).
    #[arg(long, default_value_t = 4_000_000)]
    large: u64,
    /// Runs of each tool (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// Bumped when the generated data changes (cached files are named after it).
const GENERATOR_VERSION: u32 = 2;
const NAMESPACES: u64 = 50;
const SA_PER_NAMESPACE: u64 = 10;
const NODES: u64 = 40;

/// A small deterministic generator (xorshift64*), so every run sees the same log.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn uuid(seed: u64) -> String {
    let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let a = r.next();
    let b = r.next();
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

fn timestamp(nanos_since: u64) -> String {
    // 2025-06-01T00:00:00Z plus an offset.
    let t = std::time::UNIX_EPOCH
        + std::time::Duration::from_secs(1_748_736_000)
        + std::time::Duration::from_nanos(nanos_since);
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let micros = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_micros());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Days since 1970 -> civil date (H. Hinnant).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Writes the RBAC snapshot: per ServiceAccount a Role + RoleBinding, plus
/// cluster-wide roles for groups, users and a few ServiceAccounts.
fn write_snapshot(path: &Path) -> anyhow::Result<usize> {
    let mut out = BufWriter::new(File::create(path)?);
    let mut objects = 0;
    for ns in 0..NAMESPACES {
        for sa in 0..SA_PER_NAMESPACE {
            writeln!(
                out,
                "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: sa-{sa}-role, namespace: ns-{ns}}}\nrules:\n- apiGroups: ['']\n  resources: [configmaps, pods, services, endpoints]\n  verbs: [get, list, watch]\n- apiGroups: ['']\n  resources: [events]\n  verbs: [create, patch]\n- apiGroups: [apps]\n  resources: [deployments]\n  verbs: [get, list]\n  resourceNames: [app-{sa}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: sa-{sa}-binding, namespace: ns-{ns}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: sa-{sa}-role}}\nsubjects:\n- {{kind: ServiceAccount, name: sa-{sa}, namespace: ns-{ns}}}"
            )?;
            objects += 2;
        }
    }
    for i in 0..150 {
        writeln!(
            out,
            "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: team-{i}-view}}\nrules:\n- apiGroups: ['', apps, batch]\n  resources: [pods, deployments, jobs, services, configmaps]\n  verbs: [get, list, watch]\n- nonResourceURLs: ['/metrics', '/healthz*']\n  verbs: [get]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: team-{i}-view}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: team-{i}-view}}\nsubjects:\n- {{kind: Group, name: team-{i}}}\n- {{kind: User, name: user-{i}@example.com}}"
        )?;
        objects += 2;
    }
    // The controllers and kubelets of the log.
    writeln!(
        out,
        "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: controller}}\nrules:\n- apiGroups: ['*']\n  resources: ['*']\n  verbs: [get, list, watch, update, patch]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: controller}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: controller}}\nsubjects:\n- {{kind: User, name: system:kube-controller-manager}}\n- {{kind: User, name: system:kube-scheduler}}"
    )?;
    objects += 2;
    out.flush()?;
    Ok(objects)
}

/// Writes `events` audit events as JSON lines, streaming.
fn write_log(path: &Path, events: u64) -> anyhow::Result<u64> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let mut t: u64 = 0;
    for i in 0..events {
        t += 200_000 + rng.below(1_800_000); // ~1,000 requests/s
        let kind = rng.below(100);
        let stage = if rng.below(100) < 5 {
            "RequestReceived"
        } else {
            "ResponseComplete"
        };
        let audit_id = uuid(i);
        let received = timestamp(t);
        let done = timestamp(t + 1_500_000);
        if kind < 80 {
            // A ServiceAccount with a bound token.
            let ns = rng.below(NAMESPACES);
            let sa = rng.below(SA_PER_NAMESPACE);
            let node = (ns * SA_PER_NAMESPACE + sa) % NODES;
            // Two live tokens per ServiceAccount (rotation overlap); the same
            // population in every log, so memory compares across sizes.
            let token = (ns * SA_PER_NAMESPACE + sa) * 2 + (i / 7) % 2;
            let pod_uid = uuid(1_000_000_000 + ns * 100 + sa);
            let r = rng.below(100);
            let (verb, resource, name, allowed) = match r {
                0..=29 => ("get", "configmaps", format!("cm-{}", rng.below(20)), true),
                30..=49 => ("list", "pods", String::new(), true),
                50..=59 => ("watch", "services", String::new(), true),
                60..=69 => ("get", "deployments", format!("app-{}", rng.below(12)), true),
                70..=84 => ("create", "events", String::new(), true),
                85..=94 => ("get", "secrets", format!("s-{}", rng.below(5)), false),
                _ => (
                    "update",
                    "configmaps",
                    format!("cm-{}", rng.below(20)),
                    false,
                ),
            };
            // resourceNames only allows app-<sa>.
            let allowed = allowed && !(resource == "deployments" && name != format!("app-{sa}"));
            let group = if resource == "deployments" {
                "apps"
            } else {
                ""
            };
            let prefix = if group.is_empty() {
                "/api/v1".to_owned()
            } else {
                format!("/apis/{group}/v1")
            };
            let watch = if verb == "watch" { "?watch=true" } else { "" };
            let uri = if name.is_empty() {
                format!("{prefix}/namespaces/ns-{ns}/{resource}{watch}")
            } else {
                format!("{prefix}/namespaces/ns-{ns}/{resource}/{name}")
            };
            let name_field = if name.is_empty() {
                String::new()
            } else {
                format!(",\"name\":\"{name}\"")
            };
            let group_field = if group.is_empty() {
                String::new()
            } else {
                format!(",\"apiGroup\":\"{group}\"")
            };
            let (code, decision, reason) = if allowed {
                (
                    if verb == "create" { 201 } else { 200 },
                    "allow",
                    format!(
                        "RBAC: allowed by RoleBinding \\\"sa-{sa}-binding/ns-{ns}\\\" of Role \\\"sa-{sa}-role\\\" to ServiceAccount \\\"sa-{sa}/ns-{ns}\\\""
                    ),
                )
            } else {
                (403, "forbid", String::new())
            };
            let status = if code == 403 {
                format!(
                    "{{\"metadata\":{{}},\"status\":\"Failure\",\"message\":\"{resource} is forbidden: User \\\"system:serviceaccount:ns-{ns}:sa-{sa}\\\" cannot {verb} resource \\\"{resource}\\\" in API group \\\"{group}\\\" in the namespace \\\"ns-{ns}\\\"\",\"reason\":\"Forbidden\",\"details\":{{\"kind\":\"{resource}\"}},\"code\":403}}"
                )
            } else {
                format!("{{\"metadata\":{{}},\"code\":{code}}}")
            };
            writeln!(
                out,
                "{{\"kind\":\"Event\",\"apiVersion\":\"audit.k8s.io/v1\",\"level\":\"Metadata\",\"auditID\":\"{audit_id}\",\"stage\":\"{stage}\",\"requestURI\":\"{uri}\",\"verb\":\"{verb}\",\"user\":{{\"username\":\"system:serviceaccount:ns-{ns}:sa-{sa}\",\"uid\":\"{sa_uid}\",\"groups\":[\"system:serviceaccounts\",\"system:serviceaccounts:ns-{ns}\",\"system:authenticated\"],\"extra\":{{\"authentication.kubernetes.io/credential-id\":[\"JTI={jti}\"],\"authentication.kubernetes.io/node-name\":[\"node-{node}\"],\"authentication.kubernetes.io/node-uid\":[\"{node_uid}\"],\"authentication.kubernetes.io/pod-name\":[\"sa-{sa}-7d9f8c6b5-x{sa}k{ns}\"],\"authentication.kubernetes.io/pod-uid\":[\"{pod_uid}\"]}}}},\"sourceIPs\":[\"10.244.{node}.{ip}\"],\"userAgent\":\"app-{sa}/v1.4.2 (linux/amd64) kubernetes/4c9411e\",\"objectRef\":{{\"resource\":\"{resource}\",\"namespace\":\"ns-{ns}\"{name_field}{group_field},\"apiVersion\":\"v1\"}},\"responseStatus\":{status},\"requestReceivedTimestamp\":\"{received}\",\"stageTimestamp\":\"{done}\",\"annotations\":{{\"authorization.k8s.io/decision\":\"{decision}\",\"authorization.k8s.io/reason\":\"{reason}\"}}}}",
                sa_uid = uuid(2_000_000_000 + ns * 100 + sa),
                jti = uuid(3_000_000_000 + token),
                node_uid = uuid(4_000_000_000 + node),
                ip = 2 + sa * 7 + ns % 5,
            )?;
        } else if kind < 90 {
            // A kubelet (the Node authorizer decides; RBAC alone would deny some).
            let node = rng.below(NODES);
            let ns = rng.below(NAMESPACES);
            writeln!(
                out,
                "{{\"kind\":\"Event\",\"apiVersion\":\"audit.k8s.io/v1\",\"level\":\"Metadata\",\"auditID\":\"{audit_id}\",\"stage\":\"{stage}\",\"requestURI\":\"/api/v1/namespaces/ns-{ns}/pods?fieldSelector=spec.nodeName%3Dnode-{node}&limit=500&resourceVersion=0\",\"verb\":\"list\",\"user\":{{\"username\":\"system:node:node-{node}\",\"groups\":[\"system:nodes\",\"system:authenticated\"]}},\"sourceIPs\":[\"192.168.10.{node}\"],\"userAgent\":\"kubelet/v1.32.2 (linux/amd64) kubernetes/67a30c0\",\"objectRef\":{{\"resource\":\"pods\",\"namespace\":\"ns-{ns}\",\"apiVersion\":\"v1\"}},\"responseStatus\":{{\"metadata\":{{}},\"code\":200}},\"requestReceivedTimestamp\":\"{received}\",\"stageTimestamp\":\"{done}\",\"annotations\":{{\"authorization.k8s.io/decision\":\"allow\",\"authorization.k8s.io/reason\":\"\"}}}}"
            )?;
        } else if kind < 95 {
            // The controller manager.
            let ns = rng.below(NAMESPACES);
            writeln!(
                out,
                "{{\"kind\":\"Event\",\"apiVersion\":\"audit.k8s.io/v1\",\"level\":\"Metadata\",\"auditID\":\"{audit_id}\",\"stage\":\"{stage}\",\"requestURI\":\"/apis/apps/v1/namespaces/ns-{ns}/deployments/app-{d}/status\",\"verb\":\"update\",\"user\":{{\"username\":\"system:kube-controller-manager\",\"groups\":[\"system:authenticated\"]}},\"sourceIPs\":[\"192.168.10.1\"],\"userAgent\":\"kube-controller-manager/v1.32.2 (linux/amd64) kubernetes/67a30c0/system:serviceaccount:kube-system:deployment-controller\",\"objectRef\":{{\"resource\":\"deployments\",\"namespace\":\"ns-{ns}\",\"name\":\"app-{d}\",\"apiGroup\":\"apps\",\"apiVersion\":\"v1\",\"subresource\":\"status\"}},\"responseStatus\":{{\"metadata\":{{}},\"code\":200}},\"requestReceivedTimestamp\":\"{received}\",\"stageTimestamp\":\"{done}\",\"annotations\":{{\"authorization.k8s.io/decision\":\"allow\",\"authorization.k8s.io/reason\":\"RBAC: allowed by ClusterRoleBinding \\\"controller\\\" of ClusterRole \\\"controller\\\" to User \\\"system:kube-controller-manager\\\"\"}}}}",
                d = rng.below(12)
            )?;
        } else {
            // A person through kubectl.
            let team = rng.below(150);
            let ns = rng.below(NAMESPACES);
            writeln!(
                out,
                "{{\"kind\":\"Event\",\"apiVersion\":\"audit.k8s.io/v1\",\"level\":\"Metadata\",\"auditID\":\"{audit_id}\",\"stage\":\"{stage}\",\"requestURI\":\"/api/v1/namespaces/ns-{ns}/pods?limit=500\",\"verb\":\"list\",\"user\":{{\"username\":\"user-{team}@example.com\",\"groups\":[\"team-{team}\",\"system:authenticated\"],\"extra\":{{\"iam.example.com/session\":[\"s-{team}\"]}}}},\"sourceIPs\":[\"198.51.100.{team}\"],\"userAgent\":\"kubectl/v1.32.2 (linux/amd64) kubernetes/67a30c0\",\"objectRef\":{{\"resource\":\"pods\",\"namespace\":\"ns-{ns}\",\"apiVersion\":\"v1\"}},\"responseStatus\":{{\"metadata\":{{}},\"code\":200}},\"requestReceivedTimestamp\":\"{received}\",\"stageTimestamp\":\"{done}\",\"annotations\":{{\"authorization.k8s.io/decision\":\"allow\",\"authorization.k8s.io/reason\":\"RBAC: allowed by ClusterRoleBinding \\\"team-{team}-view\\\" of ClusterRole \\\"team-{team}-view\\\" to Group \\\"team-{team}\\\"\"}}}}"
            )?;
        }
    }
    out.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

/// One measured run.
#[derive(Clone, Copy)]
struct Measure {
    wall: f64,
    cpu: f64,
    max_rss_kib: i64,
}

/// Runs `cmd` with stdout to /dev/null; wall time and its rusage.
fn measure(mut cmd: Command) -> anyhow::Result<Measure> {
    let shown = format!("{cmd:?}");
    cmd.stdout(File::create("/dev/null")?)
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {shown}"))?;
    let stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
        }
        s
    });
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = i32::try_from(child.id())?;
    // SAFETY: waiting for our own child with valid out-pointers.
    let r = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
    let wall = start.elapsed().as_secs_f64();
    let err = reader.join().unwrap_or_default();
    if r != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{shown} failed (status {status}): {err}");
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Measure {
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        max_rss_kib: usage.ru_maxrss,
    })
}

fn ensure_jq() -> anyhow::Result<()> {
    let present = Command::new("sh")
        .args(["-c", "command -v jq"])
        .output()?
        .status
        .success();
    if !present {
        eprintln!("xtask: installing jq (the peer of the replay benchmark)");
        crate::run(Command::new("apt-get").args(["update", "-qq"]))?;
        crate::run(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "jq"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    Ok(())
}

/// `taskset -c CPU` when taskset exists (one core, as the target says).
fn pinned(program: &Path) -> Command {
    let has_taskset = Command::new("sh")
        .args(["-c", "command -v taskset"])
        .output()
        .is_ok_and(|o| o.status.success());
    if has_taskset {
        let mut c = Command::new("taskset");
        c.args(["-c", "1"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn tokenwatch_cmd(binary: &Path, log: &Path, snapshot: &Path) -> Command {
    let mut c = pinned(binary);
    c.arg("replay")
        .arg("--audit")
        .arg(log)
        .arg("--rbac")
        .arg(snapshot)
        // The full replay: every event listed that is drift, forbidden, or
        // flagged by a signal or detection (no `--only` filter).
        .args(["-o", "json", "--no-progress"]);
    c
}

fn jq_cmd(log: &Path) -> Command {
    let mut c = pinned(Path::new("jq"));
    c.arg("-c")
        .arg(r#"select(.user.username | startswith("system:serviceaccount:"))"#)
        .arg(log);
    c
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    }
}

fn cached_log(dir: &Path, events: u64) -> anyhow::Result<(PathBuf, u64)> {
    let path = dir.join(format!("audit-v{GENERATOR_VERSION}-{events}.log"));
    if let Ok(m) = std::fs::metadata(&path)
        && m.len() > 0
    {
        return Ok((path, m.len()));
    }
    eprintln!(
        "xtask: generating {events} audit events into {}",
        path.display()
    );
    let tmp = path.with_extension("partial");
    let size = match write_log(&tmp, events) {
        Ok(size) => size,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, &path)?;
    Ok((path, size))
}

/// Runs the benchmark.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let runs = args.runs.max(1);
    let binary = crate::build(true)?;
    ensure_jq()?;
    let dir = crate::target_dir().join("xtask").join("bench-replay");
    std::fs::create_dir_all(&dir)?;
    let snapshot = dir.join(format!("rbac-v{GENERATOR_VERSION}.yaml"));
    let objects = write_snapshot(&snapshot)?;
    let (log, size) = cached_log(&dir, args.events)?;

    let mut tw = Vec::new();
    let mut jq = Vec::new();
    for i in 0..runs {
        eprintln!("xtask: run {}/{runs}", i + 1);
        // Alternate which goes first (page cache, CPU frequency).
        if i % 2 == 0 {
            tw.push(measure(tokenwatch_cmd(&binary, &log, &snapshot))?);
            jq.push(measure(jq_cmd(&log))?);
        } else {
            jq.push(measure(jq_cmd(&log))?);
            tw.push(measure(tokenwatch_cmd(&binary, &log, &snapshot))?);
        }
    }
    let events = args.events as f64;
    let tw_wall = median(tw.iter().map(|m| m.wall).collect());
    let jq_wall = median(jq.iter().map(|m| m.wall).collect());
    let tw_cpu = median(tw.iter().map(|m| m.cpu).collect());
    let jq_cpu = median(jq.iter().map(|m| m.cpu).collect());
    let tw_rss = tw.iter().map(|m| m.max_rss_kib).max().unwrap_or(0);
    let jq_rss = jq.iter().map(|m| m.max_rss_kib).max().unwrap_or(0);

    let mib = |kib: i64| kib as f64 / 1024.0;
    println!(
        "\nreplay: {} events ({:.2} GB, {:.0} bytes/event), RBAC snapshot of {objects} objects; median of {runs} runs, pinned to one core",
        args.events,
        size as f64 / 1e9,
        size as f64 / events
    );
    println!(
        "{:<12} {:>9} {:>13} {:>9} {:>14} {:>11}",
        "tool", "wall s", "events/s", "cpu s", "events/cpu-s", "peak RSS"
    );
    println!(
        "{:<12} {:>9.2} {:>13.0} {:>9.2} {:>14.0} {:>8.1} MiB",
        "tokenwatch",
        tw_wall,
        events / tw_wall,
        tw_cpu,
        events / tw_cpu,
        mib(tw_rss)
    );
    println!(
        "{:<12} {:>9.2} {:>13.0} {:>9.2} {:>14.0} {:>8.1} MiB",
        "jq",
        jq_wall,
        events / jq_wall,
        jq_cpu,
        events / jq_cpu,
        mib(jq_rss)
    );
    println!("tokenwatch / jq throughput: {:.2}x", jq_wall / tw_wall);
    println!(
        "tokenwatch / jq events per CPU-second: {:.2}x (target: 15x)",
        jq_cpu / tw_cpu
    );
    let large = if args.large > 0 {
        let (large_log, _) = cached_log(&dir, args.large)?;
        let m = measure(tokenwatch_cmd(&binary, &large_log, &snapshot))?;
        Some((args.large, m))
    } else {
        None
    };

    if let Some((n, m)) = &large {
        println!(
            "peak RSS: {:.1} MiB at {} events, {:.1} MiB at {n} events ({:.0} events/s)",
            mib(tw_rss),
            args.events,
            mib(m.max_rss_kib),
            *n as f64 / m.wall
        );
    }
    let json = serde_json::json!({
        "events": args.events,
        "bytes": size,
        "rbacObjects": objects,
        "runs": runs,
        "tokenwatch": {"wallSecs": tw_wall, "cpuSecs": tw_cpu, "eventsPerSec": events / tw_wall, "maxRssKiB": tw_rss},
        "jq": {"wallSecs": jq_wall, "cpuSecs": jq_cpu, "eventsPerSec": events / jq_wall, "maxRssKiB": jq_rss},
        "large": large.map(|(n, m)| serde_json::json!({"events": n, "wallSecs": m.wall, "maxRssKiB": m.max_rss_kib})),
    });
    println!("{json}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(timestamp(0), "2025-06-01T00:00:00.000000Z");
        assert_eq!(
            timestamp(86_400_000_000_000 * 31 + 1_500_000),
            "2025-07-02T00:00:00.001500Z"
        );
    }

    #[test]
    fn generated_events_are_json() {
        let dir = std::env::temp_dir().join(format!("tw-bench-replay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("a.log");
        write_log(&log, 500).unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text.lines().count(), 500);
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["kind"], "Event");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
