//! Shared harness for tokenwatch's end-to-end tests on the real kernel.
//!
//! These tests load the real eBPF programs, so they need root. Without root
//! they skip with a message, unless `TOKENWATCH_REQUIRE_EBPF=1` (set by CI)
//! turns the skip into a failure. Every wait is bounded: a test triggers
//! something real, then waits with a timeout for the expected event and
//! panics with what it saw instead.

pub mod containerd;
pub mod cri;
pub mod kubelet;
pub mod sim;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use tokenwatch_host::sensor::{Sensor, SensorConfig, SensorEvent, event::Detail};

/// How long a test waits for an expected event.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// How many times longer than on the host a bounded wait may take:
/// `TOKENWATCH_TIMEOUT_SCALE` (a whole number; `cargo xtask vm-test` sets
/// it in its VMs, where TCG emulation runs everything several times
/// slower), 1 when unset.
///
/// # Panics
/// When the variable is set but not a whole number from 1 to 100.
#[must_use]
pub fn timeout_scale() -> u32 {
    match std::env::var("TOKENWATCH_TIMEOUT_SCALE") {
        Err(_) => 1,
        Ok(value) => value
            .parse()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .unwrap_or_else(|| {
                panic!("TOKENWATCH_TIMEOUT_SCALE={value:?}: expected a whole number from 1 to 100")
            }),
    }
}

/// `base` times [`timeout_scale`]: the bound for a wait that takes `base`
/// at most on the host.
#[must_use]
pub fn scaled(base: Duration) -> Duration {
    base * timeout_scale()
}

/// Whether this process may load BPF programs; when not, either skips
/// (returns false, with a message) or panics when skipping is forbidden.
#[must_use]
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var("TOKENWATCH_REQUIRE_EBPF").as_deref() != Ok("1"),
        "{test}: needs root to load eBPF programs, and TOKENWATCH_REQUIRE_EBPF=1 forbids skipping"
    );
    eprintln!("SKIPPED {test}: needs root to load eBPF programs (run `sudo -E cargo xtask test`)");
    false
}

/// A kernel feature that a kernel of the VM matrix (`cargo xtask vm-test`:
/// 5.10, 6.1, 6.12) lacks. Each is listed in `docs/requirements.md` with
/// the first release that has it, and a test may skip only for one of
/// these, only on a kernel older than that release (see [`kernel_has`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFeature {
    /// fanotify's `FAN_REPORT_PIDFD`: a pidfd for the reader in each event.
    FanReportPidfd,
    /// An access event for a read by `splice(2)` (older kernels raise
    /// none for splice).
    SpliceAccessEvent,
    /// The opt-in syscall path-match program (`raw_syscalls:sys_exit`,
    /// `--syscall-path-match`) passes the verifier: it hands the tracepoint
    /// context to a non-inlined function, which verifiers before 6.8 refuse.
    SyscallPathMatch,
}

impl KernelFeature {
    /// Every feature, for the check against the doc.
    pub const ALL: [Self; 3] = [
        Self::FanReportPidfd,
        Self::SpliceAccessEvent,
        Self::SyscallPathMatch,
    ];

    /// Its name, as `docs/requirements.md` spells it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::FanReportPidfd => "FAN_REPORT_PIDFD",
            Self::SpliceAccessEvent => "FAN_ACCESS for splice",
            Self::SyscallPathMatch => "opt-in syscall path-match program",
        }
    }

    /// The first Linux release `(major, minor)` that has it.
    #[must_use]
    pub fn since(self) -> (u32, u32) {
        match self {
            Self::FanReportPidfd => (5, 15),
            Self::SpliceAccessEvent => (6, 5),
            Self::SyscallPathMatch => (6, 8),
        }
    }
}

/// `(major, minor)` of a release string such as `6.1.0-50-cloud-amd64`.
#[must_use]
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(str::parse::<u32>);
    match (numbers.next(), numbers.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => Some((major, minor)),
        _ => None,
    }
}

/// `(major, minor)` of the running kernel.
///
/// # Panics
/// When uname(2) fails or its release is not `major.minor...`.
#[must_use]
pub fn kernel_version() -> (u32, u32) {
    // SAFETY: utsname is plain old data; uname fills it.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a utsname.
    assert_eq!(unsafe { libc::uname(&raw mut uts) }, 0, "uname failed");
    // SAFETY: the kernel NUL-terminates the release.
    let release = unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) }.to_string_lossy();
    parse_release(&release).unwrap_or_else(|| panic!("unexpected kernel release {release:?}"))
}

/// Whether the running kernel has `feature`. When it does not, prints a
/// `SKIPPED` line naming the test, the kernel and the feature (the VM
/// runner lists these per kernel) and returns false: the test skips what
/// needs the feature and still checks the documented fallback.
#[must_use]
pub fn kernel_has(test: &str, feature: KernelFeature) -> bool {
    let running = kernel_version();
    if running >= feature.since() {
        return true;
    }
    let (major, minor) = feature.since();
    eprintln!(
        "SKIPPED {test} (in part) on Linux {}.{}: {} needs {major}.{minor} (docs/requirements.md)",
        running.0,
        running.1,
        feature.name()
    );
    false
}

/// The capabilities of `caps` (names as a manifest spells them:
/// `SYS_ADMIN`) that this process's bounding set holds, so that a child
/// can be given them; `bit` maps a name to its bit. Each one left out is
/// named on stderr: a machine whose own bounding set lacks it (this
/// project's CI host runs without `CAP_SYS_RESOURCE`) cannot grant it, and
/// the test then checks the others exactly. The VMs hold every capability.
///
/// # Panics
/// When `/proc/self/status` has no readable `CapBnd:` line.
#[must_use]
pub fn grantable_capabilities(
    test: &str,
    caps: Vec<String>,
    bit: impl Fn(&str) -> u32,
) -> Vec<String> {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .expect("a CapBnd: line in /proc/self/status");
    caps.into_iter()
        .filter(|cap| {
            let held = bounding & (1u64 << bit(cap)) != 0;
            if !held {
                eprintln!(
                    "NOTE {test}: CAP_{cap} is not in this machine's bounding set, so it cannot be granted here; checked without it (the capabilities test checks it in the VMs, which hold every capability)"
                );
            }
            held
        })
        .collect()
}

/// A loaded sensor plus the events seen so far.
pub struct Harness {
    runtime: tokio::runtime::Runtime,
    sensor: Sensor,
    /// Every event received, in order.
    pub seen: Vec<SensorEvent>,
    /// Where the next [`Harness::wait_for`] starts looking.
    cursor: usize,
}

impl Harness {
    /// Loads the sensor with `config` (this process's own opens reported),
    /// or returns `None` when the test must skip.
    ///
    /// # Panics
    /// When loading fails: that is the failure under test.
    #[must_use]
    pub fn start(test: &str, mut config: SensorConfig) -> Option<Self> {
        if !require_root(test) {
            return None;
        }
        config.report_self = true;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let sensor = runtime
            .block_on(async { Sensor::load(&config) })
            .unwrap_or_else(|err| panic!("{test}: loading the sensor failed: {}", chain(&err)));
        Some(Self {
            runtime,
            sensor,
            seen: Vec::new(),
            cursor: 0,
        })
    }

    /// The sensor, to change its filters.
    #[must_use]
    pub fn sensor(&self) -> &Sensor {
        &self.sensor
    }

    /// Waits up to [`EVENT_TIMEOUT`] ([`scaled`]) for an event matching `pred` that
    /// comes after the one the previous call returned (so successive waits
    /// follow the order of events).
    ///
    /// # Panics
    /// On timeout, listing what was seen.
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&SensorEvent) -> bool) -> SensorEvent {
        if let Some(found) = self.find_from(self.cursor, &pred) {
            return found;
        }
        let deadline = Instant::now() + scaled(EVENT_TIMEOUT);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}; saw:\n{}",
                self.describe()
            );
            let batch = self
                .runtime
                .block_on(async { tokio::time::timeout(left, self.sensor.next_batch()).await });
            let Ok(batch) = batch else { continue };
            let batch = batch.unwrap_or_else(|err| panic!("reading events: {}", chain(&err)));
            let start = self.seen.len();
            self.seen.extend(batch);
            if let Some(found) = self.find_from(start, &pred) {
                return found;
            }
        }
    }

    fn find_from(
        &mut self,
        start: usize,
        pred: &impl Fn(&SensorEvent) -> bool,
    ) -> Option<SensorEvent> {
        let index = start + self.seen.get(start..)?.iter().position(pred)?;
        self.cursor = index + 1;
        Some(self.seen[index].clone())
    }

    /// Non-lineage events seen so far, one JSON line each, for failure messages.
    #[must_use]
    pub fn describe(&self) -> String {
        self.seen
            .iter()
            .filter(|e| matches!(e.detail, Detail::File(_) | Detail::Connect(_)))
            .map(|e| serde_json::to_string(e).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Records the kernel could not reserve.
    #[must_use]
    pub fn kernel_drops(&self) -> u64 {
        self.sensor.kernel_drops()
    }
}

/// An error and its sources, joined.
#[must_use]
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    tokenwatch_core::error::error_chain(err)
}

/// Mounts a fresh tmpfs on `dir` (as the kubelet does for a projected or
/// secret volume: an emptyDir with medium Memory).
///
/// # Panics
/// When mounting fails.
pub fn mount_tmpfs(dir: &Path) {
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m,mode=0755", "tokenwatch-test"])
        .arg(dir)
        .status()
        .expect("run mount");
    assert!(
        status.success(),
        "mount -t tmpfs on {} failed",
        dir.display()
    );
}

/// Unmounts (lazily) every mount at or under `root`, deepest first.
pub fn unmount_under(root: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(root))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        let c = cpath(&point);
        // SAFETY: a NUL-terminated path; failure is harmless here.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Compiles a small C program with `cc` into a temp dir (once per test
/// process and name) and returns its path.
///
/// # Panics
/// When `cc` fails (the message has its output).
#[must_use]
pub fn c_helper(name: &str, source: &str, flags: &[&str]) -> PathBuf {
    // In `cargo xtask vm-test`'s VMs (no compiler): built on the host from
    // `tests/helpers/<name>.c`, whose first line gives the same flags.
    if let Some(dir) = std::env::var_os("TOKENWATCH_C_HELPERS") {
        let bin = Path::new(&dir).join(name);
        assert!(
            bin.exists(),
            "{} is missing: `cargo xtask vm-test` builds tests/helpers/{name}.c for the VM",
            bin.display()
        );
        return bin;
    }
    let dir = std::env::temp_dir().join(format!("tokenwatch-helpers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("helper dir");
    let bin = dir.join(name);
    if bin.exists() {
        return bin;
    }
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).expect("write helper source");
    let out = std::process::Command::new("cc")
        .arg("-O1")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .args(flags)
        .output()
        .expect("run cc (installed by `cargo xtask bootstrap`)");
    assert!(
        out.status.success(),
        "cc {name}.c failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// A projected-volume directory laid out like the kubelet's atomic writer:
/// `..2026_01_01_00_00_00.1/token`, `..data -> ..2026_01_01_00_00_00.1`,
/// `token -> ..data/token`, under
/// `<root>/pods/<uid>/volumes/kubernetes.io~projected/<volume>/`.
pub struct TokenVolume {
    /// Keeps the temp dir alive.
    pub root: tempfile::TempDir,
    /// The volume directory.
    pub dir: PathBuf,
    /// The file behind the symlinks.
    pub real_file: PathBuf,
    /// The token's content.
    pub content: Vec<u8>,
    /// Whether `dir` is a tmpfs mounted for this volume.
    pub on_tmpfs: bool,
    generation: u32,
}

impl Drop for TokenVolume {
    fn drop(&mut self) {
        if self.on_tmpfs {
            unmount_under(&self.dir);
        }
    }
}

impl TokenVolume {
    /// Creates the layout with `content` as the token.
    ///
    /// # Panics
    /// When the temp dir cannot be written.
    #[must_use]
    pub fn new(content: &[u8]) -> Self {
        Self::create(content, false)
    }

    /// The same layout on a tmpfs of its own, as the kubelet mounts a
    /// projected volume, with `ca.crt` and `namespace` beside the token.
    ///
    /// # Panics
    /// When the tmpfs cannot be mounted or written.
    #[must_use]
    pub fn on_tmpfs(content: &[u8]) -> Self {
        Self::create(content, true)
    }

    fn create(content: &[u8], on_tmpfs: bool) -> Self {
        let root = tempfile::tempdir().expect("temp dir");
        let dir = root
            .path()
            .join("pods/0a1b2c3d-0000-4000-8000-000000000001/volumes/kubernetes.io~projected/kube-api-access-7q2xk");
        std::fs::create_dir_all(&dir).expect("volume dir");
        if on_tmpfs {
            mount_tmpfs(&dir);
        }
        let mut volume = Self {
            root,
            real_file: dir.clone(),
            dir,
            content: Vec::new(),
            on_tmpfs,
            generation: 0,
        };
        volume.rotate(content);
        for name in ["token", "ca.crt", "namespace"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), volume.dir.join(name))
                .expect("volume link");
        }
        volume
    }

    /// Writes a new token the way the kubelet's atomic writer does: a new
    /// timestamped directory, then `..data` swapped to it with a rename.
    ///
    /// # Panics
    /// On I/O errors.
    pub fn rotate(&mut self, content: &[u8]) {
        self.generation += 1;
        let stamp = format!(
            "..2026_01_01_00_00_{:02}.{}",
            self.generation,
            1000 + self.generation
        );
        let ts = self.dir.join(&stamp);
        std::fs::create_dir_all(&ts).expect("timestamp dir");
        std::fs::write(ts.join("token"), content).expect("token file");
        std::fs::write(ts.join("ca.crt"), b"-----BEGIN CERTIFICATE-----\n").expect("ca.crt");
        std::fs::write(ts.join("namespace"), b"default").expect("namespace");
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&stamp, &tmp).expect("..data_tmp link");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("swap ..data");
        self.real_file = ts.join("token");
        self.content = content.to_vec();
    }

    /// The path a pod's process would use on the host: `<volume>/token`.
    #[must_use]
    pub fn token_path(&self) -> PathBuf {
        self.dir.join("token")
    }

    /// `(st_dev, st_ino)` of the real file.
    ///
    /// # Panics
    /// When the file cannot be examined.
    #[must_use]
    pub fn file_id(&self) -> (u64, u64) {
        tokenwatch_host::sensor::file_id(&self.real_file).expect("stat token")
    }
}

/// The file detail of an event, if it is a file event.
#[must_use]
pub fn file(event: &SensorEvent) -> Option<&tokenwatch_host::sensor::event::FileDetail> {
    match &event.detail {
        Detail::File(f) => Some(f),
        _ => None,
    }
}

/// The connect detail of an event, if it is a connect event.
#[must_use]
pub fn connect(event: &SensorEvent) -> Option<&tokenwatch_host::sensor::event::ConnectDetail> {
    match &event.detail {
        Detail::Connect(c) => Some(c),
        _ => None,
    }
}

/// The `tokenwatch` binary `cargo xtask test` built (`TOKENWATCH_BIN`), or
/// the workspace's debug build.
#[must_use]
pub fn tokenwatch_binary() -> PathBuf {
    std::env::var_os("TOKENWATCH_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/tokenwatch"),
        PathBuf::from,
    )
}

/// A path as a C string for libc calls.
///
/// # Panics
/// On a path with a NUL byte.
#[must_use]
pub fn cpath(path: &Path) -> std::ffi::CString {
    std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
        .expect("no NUL")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse_to_major_and_minor() {
        assert_eq!(parse_release("6.1.0-50-cloud-amd64"), Some((6, 1)));
        assert_eq!(parse_release("5.10.0-32-cloud-amd64"), Some((5, 10)));
        assert_eq!(parse_release("6.12.95+deb12-cloud-amd64"), Some((6, 12)));
        assert_eq!(parse_release("6.18.0"), Some((6, 18)));
        assert_eq!(parse_release("é6"), None);
        assert_eq!(parse_release(""), None);
        assert!(kernel_version() >= (3, 0));
    }

    /// A test may skip only for a feature the doc lists as missing: each
    /// feature here has a row `| \`NAME\` | MAJOR.MINOR | ...` in
    /// docs/requirements.md with the same release.
    #[test]
    fn every_feature_a_test_may_skip_for_is_in_the_requirements_doc() {
        let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/requirements.md");
        let doc = std::fs::read_to_string(&doc_path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", doc_path.display()));
        for feature in KernelFeature::ALL {
            let (major, minor) = feature.since();
            let row = format!("| `{}` | {major}.{minor} |", feature.name());
            assert!(
                doc.lines().any(|l| l.starts_with(&row)),
                "docs/requirements.md has no row starting {row:?}"
            );
        }
    }
}
