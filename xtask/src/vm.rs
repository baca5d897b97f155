//! `cargo xtask vm-test`: the root-only kernel tests on the kernels nodes
//! run (5.10, 6.1, 6.12), each in a qemu VM.
//!
//! 1. Kernels: Debian's cloud kernel packages (`linux-image-*-cloud-amd64`
//!    from bullseye, bookworm and bookworm-backports), resolved through an
//!    apt configuration of our own under `target/vm/apt` (its own sources
//!    list and lists directory, on the Debian mirror `/etc/apt` already
//!    uses), fetched with `apt-get download` and unpacked with `dpkg-deb -x`
//!    under `target/vm/kernels` (kept: a second run downloads nothing new).
//!    Each package's `boot/config-*` is checked for the options the sensor
//!    and the VM need, and a missing one is named. A kernel that cannot be
//!    had fails the run, naming it: the matrix never shrinks silently.
//! 2. The initramfs (`target/vm/initramfs.cpio`, newc, written by
//!    [`crate::cpio`]): the kernel test binaries (`cargo test -p
//!    tokenwatch-tests --no-run`, stripped), the `tokenwatch`
//!    binary, their shared libraries (from `ldd`), Debian's Python with its
//!    standard library (the simulated node's API server and workloads are
//!    Python), the host's `cat`, `cp`, `sleep`, `sh`, `unshare`, `mount` and `setpriv` (the programs
//!    the tests run), busybox-static for the init's own needs (its applets
//!    as hard links), the test fixtures at the path the tests were built
//!    with, and our `/init`.
//! 3. `/init` mounts proc, sys, dev, tmp, tracefs, bpffs, securityfs and
//!    cgroup2, brings loopback up, runs each test binary, prints a marker
//!    line per binary and a final one on the serial console, and powers off.
//! 4. The host runs qemu (TCG by default: KVM hangs in nested
//!    virtualisation here), echoes the console with a `[vm <kernel>]`
//!    prefix, keeps it in `target/vm/logs/<kernel>.log`, kills the VM on a
//!    kernel panic or a timeout, and fails naming the kernel and the
//!    failing tests.

use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{cpio, run};

/// A kernel series of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelArg {
    /// Linux 5.10 (Debian bullseye; Amazon Linux 2).
    #[value(name = "5.10")]
    V5_10,
    /// Linux 6.1 (Debian bookworm; Amazon Linux 2023).
    #[value(name = "6.1")]
    V6_1,
    /// Linux 6.12 (Debian bookworm-backports).
    #[value(name = "6.12")]
    V6_12,
    /// All three.
    All,
}

/// How qemu runs the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// Emulation: slow, works everywhere.
    Tcg,
    /// Hardware virtualisation (`/dev/kvm`); hangs in early boot under
    /// nested virtualisation.
    Kvm,
}

impl Accel {
    fn as_str(self) -> &'static str {
        match self {
            Self::Tcg => "tcg",
            Self::Kvm => "kvm",
        }
    }
}

/// Options of `cargo xtask vm-test`.
#[derive(Clone, Debug, clap::Args)]
pub struct VmArgs {
    /// Which kernel to test on.
    #[arg(long, value_enum, default_value = "all")]
    pub kernel: KernelArg,
    /// qemu's accelerator.
    #[arg(long, value_enum, default_value = "tcg")]
    pub accel: Accel,
    /// qemu's CPU model. Without `cx16` by default: qemu 7.2's TCG (Debian
    /// bookworm's) can leave garbage in EFLAGS after a `cmpxchg16b` with a
    /// segment prefix, which 6.12's slab allocator executes; the guest then
    /// dies of a double fault, at boot or later (seen in 2 of 3 boots here).
    #[arg(long, default_value = "max,-cx16")]
    pub cpu: String,
    /// How many times longer than on the host the tests' bounded waits may
    /// be in the VM (`TOKENWATCH_TIMEOUT_SCALE`): TCG emulates every
    /// instruction, and loading the sensor took 10 s instead of 1 on the
    /// busy 2-core machine.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub timeout_scale: u32,
    /// Seconds one VM may run before it is killed and fails.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// Virtual CPUs per VM.
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// Memory per VM, MiB.
    #[arg(long, default_value_t = 1536)]
    pub memory: u32,
    /// VMs running at once.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
}

/// One kernel series and where Debian has it.
#[derive(Debug)]
struct Series {
    /// `5.10`, `6.1`, `6.12`.
    name: &'static str,
    /// The suite that carries it.
    suite: &'static str,
}

const SERIES: [Series; 3] = [
    Series {
        name: "5.10",
        suite: "bullseye",
    },
    Series {
        name: "6.1",
        suite: "bookworm",
    },
    Series {
        name: "6.12",
        suite: "bookworm-backports",
    },
];

/// Kernel options the sensor and the VM need built in (`=y`: the
/// initramfs carries no modules), with why.
const REQUIRED_OPTIONS: [(&str, &str); 16] = [
    ("CONFIG_BPF_SYSCALL", "the bpf() syscall"),
    ("CONFIG_BPF_EVENTS", "BPF programs on tracepoints"),
    (
        "CONFIG_DEBUG_INFO_BTF",
        "BTF, where the sensor reads struct offsets",
    ),
    ("CONFIG_TRACEPOINTS", "the sched/sock/syscalls tracepoints"),
    ("CONFIG_FTRACE", "tracefs (tracepoint ids and formats)"),
    ("CONFIG_FANOTIFY", "fanotify"),
    (
        "CONFIG_FANOTIFY_ACCESS_PERMISSIONS",
        "fanotify permission events",
    ),
    (
        "CONFIG_IA32_EMULATION",
        "32-bit syscalls, a route to the token",
    ),
    ("CONFIG_CGROUPS", "cgroup v2, the pod of a process"),
    ("CONFIG_SECURITYFS", "securityfs (the active LSMs)"),
    (
        "CONFIG_NAMESPACES",
        "mount namespaces of the simulated pods",
    ),
    ("CONFIG_BLK_DEV_INITRD", "booting the initramfs"),
    ("CONFIG_DEVTMPFS", "/dev in the VM"),
    ("CONFIG_TMPFS", "/tmp and the token volumes in the VM"),
    (
        "CONFIG_SERIAL_8250_CONSOLE",
        "the serial console the results come on",
    ),
    ("CONFIG_INET", "loopback TCP (the API server)"),
];

/// Markers `/init` prints; the host parses them.
const MARK_BOOTED: &str = "TOKENWATCH-VM-BOOTED";
const MARK_BINARY: &str = "TOKENWATCH-VM-BINARY";
const MARK_RESULT: &str = "TOKENWATCH-VM-RESULT";
const MARK_END: &str = "TOKENWATCH-VM-END";

fn vm_dir() -> PathBuf {
    crate::target_dir().join("vm")
}

/// The Debian archive `/etc/apt` already uses: the first `deb` source with
/// a release suite (no `-security`, `-updates`), e.g. `bookworm`.
fn debian_mirror() -> anyhow::Result<String> {
    if let Ok(mirror) = std::env::var("TOKENWATCH_VM_MIRROR") {
        return Ok(mirror);
    }
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        let name = file.to_string_lossy();
        let found = if name.ends_with(".sources") {
            mirror_in_deb822(&text)
        } else if name.ends_with(".list") {
            mirror_in_one_line(&text)
        } else {
            None
        };
        if let Some(uri) = found {
            return Ok(uri);
        }
    }
    bail!(
        "no Debian archive (a `deb` source with a release suite such as bookworm) in /etc/apt/sources.list \
         or /etc/apt/sources.list.d/; set TOKENWATCH_VM_MIRROR to a Debian mirror's URL"
    )
}

fn is_release_suite(suite: &str) -> bool {
    !suite.is_empty()
        && suite.chars().all(|c| c.is_ascii_lowercase())
        && !["stable", "testing", "unstable", "sid", "experimental"].contains(&suite)
}

/// `deb [options] URI suite components...` lines.
fn mirror_in_one_line(text: &str) -> Option<String> {
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("deb") {
            continue;
        }
        let mut rest: Vec<&str> = words.collect();
        if rest.first().is_some_and(|w| w.starts_with('[')) {
            let close = rest.iter().position(|w| w.ends_with(']'))?;
            rest.drain(..=close);
        }
        if let [uri, suite, ..] = rest.as_slice()
            && is_release_suite(suite)
            && uri.contains("://")
        {
            return Some((*uri).to_owned());
        }
    }
    None
}

/// deb822 stanzas: `Types:`, `URIs:`, `Suites:`.
fn mirror_in_deb822(text: &str) -> Option<String> {
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (key, value) = l.split_once(':')?;
                key.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
        };
        let (Some(types), Some(uris), Some(suites)) =
            (field("Types"), field("URIs"), field("Suites"))
        else {
            continue;
        };
        if field("Enabled").is_some_and(|e| e.eq_ignore_ascii_case("no")) {
            continue;
        }
        if types.split_whitespace().any(|t| t == "deb")
            && suites.split_whitespace().any(is_release_suite)
            && let Some(uri) = uris.split_whitespace().next()
        {
            return Some(uri.to_owned());
        }
    }
    None
}

/// apt-get/apt-cache with our own sources list, lists and cache.
fn apt(tool: &str) -> Command {
    let apt_dir = vm_dir().join("apt");
    let mut cmd = Command::new(tool);
    for (key, value) in [
        ("Dir::Etc::sourcelist", apt_dir.join("sources.list")),
        ("Dir::Etc::sourceparts", PathBuf::from("-")),
        ("Dir::State::Lists", apt_dir.join("lists")),
        ("Dir::Cache", apt_dir.join("cache")),
    ] {
        cmd.arg("-o").arg(format!("{key}={}", value.display()));
    }
    cmd.args(["-o", "APT::Sandbox::User=root", "-q"]);
    cmd
}

/// Writes our sources list and runs `apt-get update` on it.
fn apt_update(mirror: &str) -> anyhow::Result<()> {
    let apt_dir = vm_dir().join("apt");
    for dir in ["lists/partial", "cache/archives/partial"] {
        std::fs::create_dir_all(apt_dir.join(dir))?;
    }
    let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
    let sources: String = SERIES
        .iter()
        .map(|s| format!("deb [signed-by={keyring}] {mirror} {} main\n", s.suite))
        .collect();
    std::fs::write(apt_dir.join("sources.list"), sources)?;
    let out = apt("apt-get")
        .args(["update"])
        .output()
        .context("starting apt-get update")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // apt-get update exits 0 even when a suite is missing; its `W:`/`E:` lines say so.
    if !out.status.success() || stderr.lines().any(|l| l.starts_with("E:")) {
        bail!("apt-get update on {mirror} failed: {}", stderr.trim());
    }
    for line in stderr.lines().filter(|l| l.starts_with("W:")) {
        eprintln!("xtask: apt: {line}");
    }
    Ok(())
}

/// Digit runs of a package name, for "newest" (`5.10.0-32` > `5.10.0-30`,
/// `6.12.90+deb12.1` > `6.12.90+deb12`).
fn version_key(name: &str) -> Vec<u64> {
    let name = name.strip_prefix("linux-image-").unwrap_or(name);
    let name = name.strip_suffix("-cloud-amd64").unwrap_or(name);
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(u64::MAX))
        .collect()
}

/// The newest `linux-image-<series>.*-cloud-amd64` among `names`.
fn newest_package<'a>(series: &str, names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let prefix = format!("linux-image-{series}.");
    names
        .filter(|n| n.starts_with(&prefix) && n.ends_with("-cloud-amd64"))
        .max_by_key(|n| version_key(n))
}

/// A kernel ready to boot.
#[derive(Debug, Clone)]
struct Kernel {
    series: &'static str,
    package: String,
    vmlinuz: PathBuf,
}

fn unpacked_kernel(series: &'static str, package: &str) -> Option<Kernel> {
    let boot = vm_dir().join("kernels").join(package).join("boot");
    let vmlinuz = std::fs::read_dir(&boot)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })?;
    Some(Kernel {
        series,
        package: package.to_owned(),
        vmlinuz,
    })
}

/// An unpacked kernel of `series` from an earlier run (newest first).
fn cached_kernel(series: &'static str) -> Option<Kernel> {
    let names: Vec<String> = std::fs::read_dir(vm_dir().join("kernels"))
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let package = newest_package(series, names.iter().map(String::as_str))?;
    unpacked_kernel(series, package)
}

/// Options of `config` missing or not built in, with why they are needed.
fn missing_options(config: &str) -> Vec<String> {
    REQUIRED_OPTIONS
        .iter()
        .filter(|(option, _)| !config.lines().any(|l| l == format!("{option}=y")))
        .map(|(option, why)| format!("{option} ({why})"))
        .collect()
}

fn check_config(kernel: &Kernel) -> anyhow::Result<()> {
    let boot = kernel.vmlinuz.parent().unwrap_or(Path::new("."));
    let config_path = std::fs::read_dir(boot)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("config-"))
        })
        .with_context(|| format!("{} has no boot/config-*", kernel.package))?;
    let config = std::fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let missing = missing_options(&config);
    if !missing.is_empty() {
        bail!(
            "kernel {} ({}) lacks what the tests need: {}",
            kernel.series,
            kernel.package,
            missing.join(", ")
        );
    }
    Ok(())
}

/// Downloads (or finds cached) the newest cloud kernel of each series.
fn fetch_kernels(series: &[&'static Series]) -> anyhow::Result<Vec<Kernel>> {
    let mirror = debian_mirror()?;
    if let Err(err) = apt_update(&mirror) {
        // Offline: an earlier run's kernels still do, and say so.
        let cached: Vec<Kernel> = series
            .iter()
            .filter_map(|s| cached_kernel(s.name))
            .collect();
        if cached.len() == series.len() {
            eprintln!("xtask: {err:#}\nxtask: using the kernels fetched earlier");
            return Ok(cached);
        }
        let missing: Vec<&str> = series
            .iter()
            .filter(|s| cached_kernel(s.name).is_none())
            .map(|s| s.name)
            .collect();
        return Err(err.context(format!(
            "kernel(s) {} cannot be fetched and none is cached",
            missing.join(", ")
        )));
    }
    let out = apt("apt-cache")
        .args(["search", "--names-only", "^linux-image-.*-cloud-amd64$"])
        .output()
        .context("starting apt-cache search")?;
    if !out.status.success() {
        bail!(
            "apt-cache search failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let listing = String::from_utf8_lossy(&out.stdout);
    let names: BTreeSet<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut kernels = Vec::new();
    let mut unavailable = Vec::new();
    for s in series {
        let Some(package) = newest_package(s.name, names.iter().copied()) else {
            unavailable.push(format!(
                "{} (no linux-image-{}.*-cloud-amd64 in {} on {mirror})",
                s.name, s.name, s.suite
            ));
            continue;
        };
        if let Some(kernel) = unpacked_kernel(s.name, package) {
            kernels.push(kernel);
            continue;
        }
        match download_kernel(s.name, package) {
            Ok(kernel) => kernels.push(kernel),
            Err(err) => unavailable.push(format!("{} ({package}: {err:#})", s.name)),
        }
    }
    if !unavailable.is_empty() {
        bail!(
            "kernel(s) unavailable, the matrix cannot run: {}",
            unavailable.join("; ")
        );
    }
    Ok(kernels)
}

fn download_kernel(series: &'static str, package: &str) -> anyhow::Result<Kernel> {
    let debs = vm_dir().join("debs");
    std::fs::create_dir_all(&debs)?;
    eprintln!("xtask: downloading {package}");
    run(apt("apt-get")
        .current_dir(&debs)
        .args(["download", package]))?;
    let deb = std::fs::read_dir(&debs)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
        })
        .with_context(|| format!("apt-get download left no {package}_*.deb"))?;
    let dest = vm_dir().join("kernels").join(package);
    let partial = dest.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)?;
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
    // Only the kernel and its config are kept (the modules are not used).
    let _ = std::fs::remove_dir_all(partial.join("lib"));
    let _ = std::fs::remove_dir_all(partial.join("usr"));
    std::fs::rename(&partial, &dest)?;
    std::fs::remove_file(&deb)?;
    unpacked_kernel(series, package).with_context(|| format!("{package} holds no boot/vmlinuz-*"))
}

/// Kernel test binaries that run on the host only: the container test
/// drives containerd through its CRI socket, which the guest has not got;
/// what it checks of the kernel (fanotify under the manifest's
/// capabilities) the `capabilities` test runs in every VM.
const HOST_ONLY_TESTS: [&str; 1] = ["container"];

/// The kernel test binaries and the `tokenwatch` binary, built.
struct Binaries {
    tests: Vec<(String, PathBuf)>,
    tokenwatch: PathBuf,
}

fn build_binaries() -> anyhow::Result<Binaries> {
    let tokenwatch = crate::build(false)?;
    let out = crate::cargo()
        .args([
            "test",
            "--package",
            "tokenwatch-tests",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("starting cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the kernel tests failed");
    }
    let mut tests = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_test_target = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"));
        if msg["reason"] == "compiler-artifact"
            && is_test_target
            && let (Some(name), Some(exe)) =
                (msg["target"]["name"].as_str(), msg["executable"].as_str())
        {
            if HOST_ONLY_TESTS.contains(&name) {
                eprintln!(
                    "xtask: vm-test: {name} runs on the host only (it starts containerd and runc, which the guest does not have)"
                );
                continue;
            }
            tests.push((name.to_owned(), PathBuf::from(exe)));
        }
    }
    if tests.is_empty() {
        bail!("cargo built no test binary for tokenwatch-tests");
    }
    tests.sort();
    Ok(Binaries { tests, tokenwatch })
}

/// The shared libraries (and the loader) `binary` needs, from `ldd`.
fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("starting ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // A static binary: nothing to add.
        let stderr = String::from_utf8_lossy(&out.stderr);
        if text.contains("not a dynamic executable") || stderr.contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        bail!(
            "ldd {} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        if line.contains("not found") {
            bail!(
                "{}: a library is missing: {}",
                binary.display(),
                line.trim()
            );
        }
        let path = line
            .split_once("=>")
            .map_or(line, |(_, right)| right)
            .split_whitespace()
            .next()
            .unwrap_or("");
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// The guest's `/init`.
fn init_script(tests: &[(String, PathBuf)], timeout_scale: u32) -> String {
    let mut script = String::from(
        r#"#!/bin/busybox sh
# tokenwatch's VM init (written by `cargo xtask vm-test`): mount what the
# sensor needs, run each kernel test binary, report on the serial console.
bb=/bin/busybox
$bb mkdir -p /usr/bin /usr/sbin
# Applets as hard links (the host's tools installed before stay).
$bb --install /usr/bin 2>/dev/null
export PATH=/usr/bin:/usr/sbin:/bin:/sbin HOME=/root TMPDIR=/tmp
export TOKENWATCH_REQUIRE_EBPF=1 TOKENWATCH_BIN=/usr/bin/tokenwatch
export TOKENWATCH_TIMEOUT_SCALE={scale} TOKENWATCH_C_HELPERS=/helpers
$bb mkdir -p /proc /sys /dev /tmp /run /root
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs devtmpfs /dev
# A checkout under /tmp has its fixtures at /tmp/... in the initramfs: carry
# them into the tmpfs that takes /tmp's place instead of hiding them.
$bb mv /tmp /.initramfs-tmp
$bb mkdir /tmp
$bb mount -t tmpfs tmpfs /tmp
$bb cp -a /.initramfs-tmp/. /tmp/
$bb rm -rf /.initramfs-tmp
$bb mount -t tmpfs tmpfs /run
$bb mount -t tracefs tracefs /sys/kernel/tracing
$bb mount -t debugfs debugfs /sys/kernel/debug
$bb mount -t bpf bpffs /sys/fs/bpf
$bb mount -t securityfs securityfs /sys/kernel/security
$bb mount -t cgroup2 cgroup2 /sys/fs/cgroup
$bb ip link set lo up
$bb hostname tokenwatch-vm
echo "TOKENWATCH-VM-BOOTED kernel=$(uname -r) cpus=$(nproc) lsm=$(cat /sys/kernel/security/lsm)"
failed=0
cd /tmp
"#,
    )
    .replace("{scale}", &timeout_scale.to_string());
    for (name, _) in tests {
        script.push_str(&format!(
            "echo \"{MARK_BINARY} {name}\"\n\
             /tests/{name} --test-threads 2 --show-output 2>&1\n\
             rc=$?\n\
             echo \"{MARK_RESULT} {name} $rc\"\n\
             [ $rc -eq 0 ] || failed=$((failed + 1))\n"
        ));
    }
    script.push_str(&format!(
        "echo \"{MARK_END} failed=$failed\"\n$bb sync\n$bb poweroff -f\n"
    ));
    script
}

/// The flags a C helper is built with: its first line, `// cflags: ...`.
fn helper_cflags(source: &str) -> Vec<String> {
    source
        .lines()
        .next()
        .and_then(|l| l.trim().strip_prefix("// cflags:"))
        .map(|f| f.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The tests' C helpers (`tests/helpers/*.c`), built on the host with `cc`
/// (the guest has no compiler); returns `(name, binary)` pairs.
fn build_c_helpers(stage: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let dir = crate::workspace_root().join("tests").join("helpers");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut sources: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "c"))
        .collect();
    sources.sort();
    let out_dir = stage.join("helpers");
    std::fs::create_dir_all(&out_dir)?;
    let mut built = Vec::new();
    for source in sources {
        let name = source
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .with_context(|| format!("{} has no name", source.display()))?;
        let text = std::fs::read_to_string(&source)
            .with_context(|| format!("reading {}", source.display()))?;
        let binary = out_dir.join(&name);
        run(Command::new("cc")
            .arg("-O1")
            .arg("-o")
            .arg(&binary)
            .arg(&source)
            .args(helper_cflags(&text)))
        .with_context(|| format!("building the C helper {}", source.display()))?;
        built.push((name, binary));
    }
    Ok(built)
}

/// Programs the tests run by name, taken from the host.
const HOST_TOOLS: [&str; 8] = [
    "cat", "sh", "unshare", "mount", "umount", "cp", "sleep", "setpriv",
];

/// Directories of Python's standard library the tests never import.
const PYTHON_SKIP: [&str; 11] = [
    "test",
    "tests",
    "idlelib",
    "tkinter",
    "turtledemo",
    "lib2to3",
    "ensurepip",
    "pydoc_data",
    "site-packages",
    "dist-packages",
    "config-3.11-x86_64-linux-gnu",
];

/// Debian's Python: its executable and its standard library directory.
fn python() -> anyhow::Result<(PathBuf, PathBuf)> {
    let exe = PathBuf::from("/usr/bin/python3");
    let out = Command::new(&exe)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('stdlib'))",
        ])
        .output()
        .with_context(|| format!("starting {}: install Debian's python3", exe.display()))?;
    if !out.status.success() {
        bail!("{} does not run", exe.display());
    }
    let stdlib = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    Ok((exe, stdlib))
}

/// Writes the initramfs; returns its path.
fn build_initramfs(bins: &Binaries, timeout_scale: u32) -> anyhow::Result<PathBuf> {
    let dir = vm_dir();
    let stage = dir.join("stage");
    std::fs::create_dir_all(&stage)?;
    let path = dir.join("initramfs.cpio");
    let mut w = cpio::Writer::create(&path)?;
    let mut elves: Vec<PathBuf> = Vec::new();

    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        bail!("/bin/busybox is missing: install busybox-static");
    }
    // A static busybox at /bin/busybox, whatever /bin is on the host.
    w.dir(Path::new("/bin"))?;
    w.file_from(busybox, busybox)?;
    // Static in busybox-static; a dynamic busybox brings its libraries.
    elves.push(busybox.to_owned());
    w.bytes(
        Path::new("/init"),
        init_script(&bins.tests, timeout_scale).as_bytes(),
        0o755,
    )?;
    w.bytes(
        Path::new("/etc/passwd"),
        b"root:x:0:0:root:/root:/bin/sh\n",
        0o644,
    )?;
    w.bytes(Path::new("/etc/group"), b"root:x:0:\n", 0o644)?;
    w.bytes(Path::new("/etc/hostname"), b"tokenwatch-vm\n", 0o644)?;
    // As on Debian: a pod's token is at /var/run/secrets/..., /run's tmpfs.
    w.symlink(Path::new("/var/run"), Path::new("../run"))?;
    w.bytes(
        Path::new("/etc/hosts"),
        b"127.0.0.1 localhost\n::1 localhost\n",
        0o644,
    )?;
    for sub in ["proc", "sys", "dev", "tmp", "run", "root"] {
        w.dir(&Path::new("/").join(sub))?;
    }

    // The binaries without symbols or debug info (a sixth of the size; the
    // guest prints no backtraces).
    for (name, exe) in &bins.tests {
        let stripped = stage.join(name);
        let stripped_ok = Command::new("objcopy")
            .arg("--strip-all")
            .arg(exe)
            .arg(&stripped)
            .status()
            .is_ok_and(|s| s.success());
        let src = if stripped_ok {
            stripped.as_path()
        } else {
            exe.as_path()
        };
        w.file_from(&Path::new("/tests").join(name), src)?;
        elves.push(exe.clone());
    }
    let stripped = stage.join("tokenwatch");
    let stripped_ok = Command::new("objcopy")
        .arg("--strip-all")
        .arg(&bins.tokenwatch)
        .arg(&stripped)
        .status()
        .is_ok_and(|s| s.success());
    let src = if stripped_ok {
        &stripped
    } else {
        &bins.tokenwatch
    };
    w.file_from(Path::new("/usr/bin/tokenwatch"), src)?;
    elves.push(bins.tokenwatch.clone());

    // The host's tools the tests run (coreutils' cat, cp and sleep, dash,
    // util-linux's unshare, mount and setpriv), so the guest differs from the host by its kernel
    // only: busybox's cat, for one, reads with sendfile.
    for tool in HOST_TOOLS {
        let path = ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
            .iter()
            .map(|dir| Path::new(dir).join(tool))
            .find(|p| p.exists())
            .with_context(|| format!("`{tool}` is not installed on this machine"))?;
        w.host_path(&path)?;
        elves.push(path);
    }

    // The C helpers, prebuilt (`TOKENWATCH_C_HELPERS=/helpers` in /init).
    for (name, binary) in build_c_helpers(&stage)? {
        w.file_from(&Path::new("/helpers").join(&name), &binary)?;
        elves.push(binary);
    }

    // Python: the simulated node's API server and workloads.
    let (python, stdlib) = python()?;
    w.host_path(&python)?;
    w.host_tree(&stdlib, &PYTHON_SKIP)?;
    elves.push(python);
    let dynload = stdlib.join("lib-dynload");
    if let Ok(entries) = std::fs::read_dir(&dynload) {
        elves.extend(
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "so")),
        );
    }

    let mut libs = BTreeSet::new();
    for elf in &elves {
        libs.extend(shared_libraries(elf)?);
    }
    for lib in &libs {
        w.host_path(lib)?;
    }

    // The fixtures and the deployment manifests (the capabilities test reads
    // the DaemonSet's), where the tests were built to find them.
    let root = crate::workspace_root();
    w.host_tree(&root.join("tests").join("fixtures"), &[])?;
    w.host_tree(&root.join("deploy"), &[])?;
    // Every crate's directory, so a `CARGO_MANIFEST_DIR/../tests/fixtures`
    // path (test-support's) resolves in the guest.
    for entry in std::fs::read_dir(&root)?.flatten() {
        let name = entry.file_name();
        if entry.path().join("Cargo.toml").exists() && name != "target" {
            w.dir(&entry.path())?;
        }
    }
    let bytes = w.data_bytes;
    w.finish()?;
    eprintln!(
        "xtask: initramfs {} ({} MiB of files)",
        path.display(),
        bytes / (1024 * 1024)
    );
    Ok(path)
}

/// What one VM run showed.
#[derive(Debug, Default)]
struct Outcome {
    /// Tests that passed (`binary::test`).
    passed: Vec<String>,
    /// Tests that failed.
    failed: Vec<String>,
    /// Lines of tests that skipped (they say why).
    skipped: Vec<String>,
    /// Binaries that exited non-zero, with the code.
    binaries_failed: Vec<String>,
    /// Binaries whose result line came.
    binaries_done: Vec<String>,
    /// Whether the end marker came.
    finished: bool,
    /// A panic or timeout, if one ended the run.
    aborted: Option<String>,
    /// Seconds from starting qemu to the init's first line.
    boot_seconds: Option<f64>,
    seconds: f64,
}

impl Outcome {
    /// One console line.
    fn take(&mut self, current: Option<&str>, line: &str) {
        let binary = current.unwrap_or("?");
        if let Some(rest) = line.strip_prefix("test ")
            && let Some((name, result)) = rest.rsplit_once(" ... ")
        {
            let full = format!("{binary}::{name}");
            match result.trim() {
                "ok" => self.passed.push(full),
                "FAILED" => self.failed.push(full),
                _ => {}
            }
        } else if line.contains("SKIPPED") {
            self.skipped.push(format!("{binary}: {}", line.trim()));
        } else if let Some(rest) = line.strip_prefix(MARK_RESULT) {
            let mut words = rest.split_whitespace();
            if let (Some(name), Some(code)) = (words.next(), words.next()) {
                self.binaries_done.push(name.to_owned());
                if code != "0" {
                    self.binaries_failed.push(format!("{name} (exit {code})"));
                }
            }
        } else if line.starts_with(MARK_END) {
            self.finished = true;
        }
    }

    fn ok(&self, expected_binaries: usize) -> bool {
        self.finished
            && self.aborted.is_none()
            && self.failed.is_empty()
            && self.binaries_failed.is_empty()
            && self.binaries_done.len() == expected_binaries
    }
}

/// Boots `kernel` with `initramfs` and follows its console.
fn run_vm(
    kernel: &Kernel,
    initramfs: &Path,
    args: &VmArgs,
    expected: usize,
) -> anyhow::Result<Outcome> {
    let logs = vm_dir().join("logs");
    std::fs::create_dir_all(&logs)?;
    let log_path = logs.join(format!("{}.log", kernel.series));
    let mut log = std::io::BufWriter::new(std::fs::File::create(&log_path)?);
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", args.accel.as_str(), "-cpu", &args.cpu])
        .args([
            "-m",
            &args.memory.to_string(),
            "-smp",
            &args.cpus.to_string(),
        ])
        .args([
            "-nodefaults",
            "-no-reboot",
            "-display",
            "none",
            "-nic",
            "none",
        ])
        .args(["-serial", "stdio", "-monitor", "none"])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 panic=-1 loglevel=4 rdinit=/init"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .context("starting qemu-system-x86_64 (Debian package qemu-system-x86)")?;
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().context("qemu's stdout")?;
    let stderr = child.stderr.take().context("qemu's stderr")?;
    let tx_err = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
            let line = String::from_utf8_lossy(&line)
                .trim_end_matches('\r')
                .to_owned();
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx_err.send(format!("qemu: {line}")).is_err() {
                break;
            }
        }
    });
    let deadline = started + Duration::from_secs(args.timeout);
    let mut outcome = Outcome::default();
    let mut current: Option<String> = None;
    let mut kill_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if let Some(at) = kill_at
            && now >= at
        {
            break;
        }
        if now >= deadline {
            outcome.aborted = Some(format!("timed out after {} s", args.timeout));
            break;
        }
        let wait = kill_at.unwrap_or(deadline).min(deadline) - now;
        match rx.recv_timeout(wait.min(Duration::from_secs(5))) {
            Ok(line) => {
                println!("[vm {}] {line}", kernel.series);
                use std::io::Write as _;
                let _ = writeln!(log, "{line}");
                if let Some(rest) = line.strip_prefix(MARK_BINARY) {
                    current = Some(rest.trim().to_owned());
                }
                if line.starts_with(MARK_BOOTED) && outcome.boot_seconds.is_none() {
                    outcome.boot_seconds = Some(started.elapsed().as_secs_f64());
                }
                outcome.take(current.as_deref(), &line);
                if line.contains("Kernel panic") && outcome.aborted.is_none() {
                    outcome.aborted = Some(format!("kernel panic: {}", line.trim()));
                    kill_at = Some(Instant::now() + Duration::from_secs(3));
                }
                if outcome.finished && kill_at.is_none() {
                    // poweroff follows; give it a moment, then make sure.
                    kill_at = Some(Instant::now() + Duration::from_secs(30));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if child.try_wait()?.is_some() {
                    // Drain what is left, then stop.
                    while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                        println!("[vm {}] {line}", kernel.series);
                        if let Some(rest) = line.strip_prefix(MARK_BINARY) {
                            current = Some(rest.trim().to_owned());
                        }
                        outcome.take(current.as_deref(), &line);
                    }
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if child.try_wait()?.is_none() {
        let _ = child.kill();
    }
    let status = child.wait()?;
    outcome.seconds = started.elapsed().as_secs_f64();
    if !outcome.finished && outcome.aborted.is_none() {
        outcome.aborted = Some(format!(
            "the VM stopped ({status}) before the tests finished"
        ));
    }
    if outcome.binaries_done.len() != expected && outcome.aborted.is_none() {
        outcome.aborted = Some(format!(
            "{} of {expected} test binaries reported",
            outcome.binaries_done.len()
        ));
    }
    Ok(outcome)
}

fn selected(kernel: KernelArg) -> Vec<&'static Series> {
    let name = match kernel {
        KernelArg::All => return SERIES.iter().collect(),
        KernelArg::V5_10 => "5.10",
        KernelArg::V6_1 => "6.1",
        KernelArg::V6_12 => "6.12",
    };
    SERIES.iter().filter(|s| s.name == name).collect()
}

/// `cargo xtask vm-test`.
pub fn vm_test(args: &VmArgs) -> anyhow::Result<()> {
    crate::bootstrap::ensure_vm_tools()?;
    let kernels = fetch_kernels(&selected(args.kernel))?;
    let mut config_errors = Vec::new();
    for kernel in &kernels {
        if let Err(err) = check_config(kernel) {
            config_errors.push(format!("{err:#}"));
        }
    }
    if !config_errors.is_empty() {
        bail!("{}", config_errors.join("\n"));
    }
    let bins = build_binaries()?;
    let initramfs = build_initramfs(&bins, args.timeout_scale)?;
    let expected = bins.tests.len();

    let queue = std::sync::Mutex::new(kernels.iter());
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..args.jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().map(|mut q| q.next());
                    let Ok(Some(kernel)) = next else { break };
                    eprintln!("xtask: booting {} ({})", kernel.series, kernel.package);
                    let outcome = run_vm(kernel, &initramfs, args, expected);
                    if let Ok(mut r) = results.lock() {
                        r.push((kernel.clone(), outcome));
                    }
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|(k, _)| version_key(k.series));

    let mut failures = Vec::new();
    eprintln!("\nxtask: VM test matrix");
    for (kernel, outcome) in &results {
        let outcome = match outcome {
            Ok(o) => o,
            Err(err) => {
                eprintln!("  {}: could not run: {err:#}", kernel.series);
                failures.push(format!("{}: could not run: {err:#}", kernel.series));
                continue;
            }
        };
        let verdict = if outcome.ok(expected) { "PASS" } else { "FAIL" };
        eprintln!(
            "  {} {verdict} ({}; {} passed, {} failed; booted in {:.1} s, {:.0} s in all; console in {})",
            kernel.series,
            kernel.package,
            outcome.passed.len(),
            outcome.failed.len(),
            outcome.boot_seconds.unwrap_or(f64::NAN),
            outcome.seconds,
            vm_dir()
                .join("logs")
                .join(format!("{}.log", kernel.series))
                .display()
        );
        for skip in &outcome.skipped {
            eprintln!("      {skip}");
        }
        if !outcome.ok(expected) {
            let mut what = outcome.failed.clone();
            what.extend(outcome.binaries_failed.iter().cloned());
            if let Some(reason) = &outcome.aborted {
                what.push(reason.clone());
            }
            failures.push(format!("kernel {}: {}", kernel.series, what.join(", ")));
        }
    }
    if !failures.is_empty() {
        bail!(
            "the kernel tests failed in the VMs:\n  {}",
            failures.join("\n  ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mirror_is_found_in_deb822_and_one_line_sources() {
        let deb822 = "Types: deb\n# http://snapshot.example/archive\nURIs: http://mirror.example/debian\n\
                      Suites: bookworm bookworm-updates\nComponents: main\n\n\
                      Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n";
        assert_eq!(
            mirror_in_deb822(deb822).as_deref(),
            Some("http://mirror.example/debian")
        );
        let security_only =
            "Types: deb\nURIs: http://x.example/debian-security\nSuites: bookworm-security\n";
        assert_eq!(mirror_in_deb822(security_only), None);
        let one_line = "# comment\ndeb-src http://src.example/debian bookworm main\n\
                        deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n";
        assert_eq!(
            mirror_in_one_line(one_line).as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(
            mirror_in_one_line("deb [broken http://x bookworm main"),
            None
        );
    }

    #[test]
    fn the_newest_cloud_kernel_of_a_series_is_chosen() {
        let names = [
            "linux-image-5.10.0-30-cloud-amd64",
            "linux-image-5.10.0-32-cloud-amd64",
            "linux-image-5.10.0-32-cloud-amd64-dbg",
            "linux-image-5.10.0-33-amd64",
            "linux-image-6.1.0-50-cloud-amd64",
            "linux-image-6.12.90+deb12-cloud-amd64",
            "linux-image-6.12.90+deb12.1-cloud-amd64",
            "linux-image-6.12.9+deb12-cloud-amd64",
        ];
        assert_eq!(
            newest_package("5.10", names.iter().copied()),
            Some("linux-image-5.10.0-32-cloud-amd64")
        );
        assert_eq!(
            newest_package("6.1", names.iter().copied()),
            Some("linux-image-6.1.0-50-cloud-amd64")
        );
        assert_eq!(
            newest_package("6.12", names.iter().copied()),
            Some("linux-image-6.12.90+deb12.1-cloud-amd64")
        );
        assert_eq!(newest_package("6.6", names.iter().copied()), None);
    }

    #[test]
    fn a_missing_or_modular_option_is_named() {
        let mut config: String = REQUIRED_OPTIONS
            .iter()
            .map(|(o, _)| format!("{o}=y\n"))
            .collect();
        assert!(missing_options(&config).is_empty());
        config = config.replace(
            "CONFIG_DEBUG_INFO_BTF=y",
            "# CONFIG_DEBUG_INFO_BTF is not set",
        );
        config = config.replace("CONFIG_FANOTIFY_ACCESS_PERMISSIONS=y", "");
        config = config.replace("CONFIG_TMPFS=y", "CONFIG_TMPFS=m");
        let missing = missing_options(&config);
        assert_eq!(missing.len(), 3, "{missing:?}");
        assert!(missing[0].starts_with("CONFIG_DEBUG_INFO_BTF ("));
        assert!(missing[1].starts_with("CONFIG_FANOTIFY_ACCESS_PERMISSIONS ("));
        assert!(missing[2].starts_with("CONFIG_TMPFS ("));
    }

    #[test]
    fn console_lines_give_per_test_results() {
        let mut o = Outcome::default();
        let lines = [
            "TOKENWATCH-VM-BINARY sensor",
            "test connects_are_reported ... ok",
            "test lineage ... FAILED",
            "[   12.3] random: crng init done",
            "SKIPPED pidfd_reporting: FAN_REPORT_PIDFD needs Linux 5.15 (docs/requirements.md)",
            "TOKENWATCH-VM-RESULT sensor 101",
            "TOKENWATCH-VM-BINARY watch_command",
            "test watch_prints ... ok",
            "TOKENWATCH-VM-RESULT watch_command 0",
            "TOKENWATCH-VM-END failed=1",
        ];
        let mut current = None;
        for line in lines {
            if let Some(rest) = line.strip_prefix(MARK_BINARY) {
                current = Some(rest.trim().to_owned());
            }
            o.take(current.as_deref(), line);
        }
        assert_eq!(
            o.passed,
            [
                "sensor::connects_are_reported",
                "watch_command::watch_prints"
            ]
        );
        assert_eq!(o.failed, ["sensor::lineage"]);
        assert_eq!(o.binaries_failed, ["sensor (exit 101)"]);
        assert_eq!(o.skipped.len(), 1);
        assert!(o.finished);
        assert!(!o.ok(2));
        let clean = Outcome {
            finished: true,
            binaries_done: vec!["a".into(), "b".into()],
            ..Outcome::default()
        };
        assert!(clean.ok(2));
        assert!(!clean.ok(3), "a binary that never reported fails the run");
    }

    #[test]
    fn a_helper_s_flags_come_from_its_first_line() {
        assert_eq!(
            helper_cflags("// cflags: -no-pie -fno-pie\nint main(void) { return 0; }\n"),
            ["-no-pie", "-fno-pie"]
        );
        assert!(helper_cflags("#include <stdio.h>\n// cflags: -luring\n").is_empty());
        assert!(helper_cflags("").is_empty());
    }

    #[test]
    fn the_init_runs_every_binary_and_powers_off() {
        let script = init_script(
            &[
                ("sensor".to_owned(), PathBuf::from("/t/sensor-1")),
                ("watch_command".to_owned(), PathBuf::from("/t/watch-2")),
            ],
            6,
        );
        assert!(script.starts_with("#!/bin/busybox sh\n"));
        assert!(script.contains(&format!("echo \"{MARK_BOOTED} kernel=")));
        assert!(
            script.contains("export TOKENWATCH_TIMEOUT_SCALE=6 TOKENWATCH_C_HELPERS=/helpers\n")
        );
        assert!(script.contains("/tests/sensor --test-threads 2"));
        assert!(script.contains("TOKENWATCH-VM-RESULT watch_command $rc"));
        for fs in [
            "tracefs",
            "bpf",
            "securityfs",
            "cgroup2",
            "proc",
            "sysfs",
            "devtmpfs",
        ] {
            assert!(script.contains(&format!("$bb mount -t {fs} ")), "{fs}");
        }
        assert!(script.trim_end().ends_with("$bb poweroff -f"));
    }
}
