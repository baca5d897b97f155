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

    /// Waits up to [`EVENT_TIMEOUT`] for an event matching `pred` that
    /// comes after the one the previous call returned (so successive waits
    /// follow the order of events).
    ///
    /// # Panics
    /// On timeout, listing what was seen.
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&SensorEvent) -> bool) -> SensorEvent {
        if let Some(found) = self.find_from(self.cursor, &pred) {
            return found;
        }
        let deadline = Instant::now() + EVENT_TIMEOUT;
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
