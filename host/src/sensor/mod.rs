//! The kernel sensor: token-file accesses from fanotify marks ([`fanotify`]),
//! API-server connects (a raw tracepoint) and exec/exit lineage (tracepoints)
//! from eBPF, yielded as typed events.
//!
//! ```text
//! Sensor::load(config) -> Sensor
//!   .control()            SensorControl: mark token volumes/files, add/remove
//!                         API-server endpoints, while running
//!   .next_batch().await   typed SensorEvents: the ring buffer (tokio AsyncFd)
//!                         and the fanotify queue, lineage first
//!   .kernel_drops()       records the kernel could not reserve (all CPUs)
//!   .losses()             fanotify overflows, fd failures, queue losses
//! drop(sensor)            detaches every program, closes the fanotify group
//! ```
//!
//! The `raw_syscalls:sys_exit` program (path-suffix matching on `open*`,
//! reads on `read`/`pread64`/`readv`) is attached only in the opt-in
//! syscall path-match mode ([`SensorConfig::syscall_path_match`]): it runs
//! on every syscall of the node (docs/sensor.md).
//!
//! Struct offsets (tasks, files, sockets) come from BTF ([`btf`]), the exec
//! tracepoint's field offset from tracefs ([`tracefs`], mounted when
//! missing); neither is hard-coded.

pub mod btf;
pub use tokenwatch_core::event;
pub mod fanotify;
pub mod pattern;
pub mod tracefs;

use std::{
    net::{IpAddr, SocketAddr, ToSocketAddrs as _},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::{RawTracePoint, TracePoint},
};
use monitor_common::{
    AF_INET, AF_INET6, EndpointKey, Event, InodeKey, KIND_EXEC, KIND_EXIT, MAX_PATTERNS,
    PATTERN_PART_LEN, PathPattern, port_bit,
};
use tokio::io::unix::AsyncFd;

pub use event::{Clock, ProcessTable, SensorEvent};

/// The API-server endpoints to watch when none are given: the in-cluster
/// service address from the environment, and the usual local port.
#[must_use]
pub fn default_apiservers() -> Vec<String> {
    let mut endpoints = Vec::new();
    if let (Ok(host), Ok(port)) = (
        std::env::var("KUBERNETES_SERVICE_HOST"),
        std::env::var("KUBERNETES_SERVICE_PORT"),
    ) {
        if host.contains(':') && !host.starts_with('[') {
            endpoints.push(format!("[{host}]:{port}"));
        } else {
            endpoints.push(format!("{host}:{port}"));
        }
    }
    endpoints.push("127.0.0.1:6443".to_owned());
    endpoints
}

/// The compiled kernel programs, embedded at build time by `build.rs`.
#[cfg(not(tokenwatch_no_ebpf))]
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor"));
#[cfg(tokenwatch_no_ebpf)]
static EBPF_OBJECT: &[u8] = &[];

/// Tracepoint programs and where they attach, lineage first (attached
/// before the raw tracepoints), so a reader's exec is seen before its reads.
const TRACEPOINTS: [(&str, &str, &str); 2] = [
    ("sched_process_exec", "sched", "sched_process_exec"),
    ("sched_process_exit", "sched", "sched_process_exit"),
];

/// Raw tracepoint programs (program, category for messages, tracepoint):
/// every TCP state change, for connects to API-server endpoints (a raw
/// tracepoint, so that the kernel builds no record for the state changes
/// the program drops at once; see `monitor-ebpf/src/net.rs`).
const RAW_TRACEPOINTS: [(&str, &str, &str); 1] =
    [("inet_sock_set_state", "sock", "inet_sock_set_state")];

/// Raw tracepoint programs of the syscall path-match mode: every syscall's
/// exit, for token opens, reads and closes (see `monitor-ebpf/src/files.rs`
/// for why not `syscalls:*`).
const SYSCALL_RAW_TRACEPOINTS: [(&str, &str, &str); 1] = [("sys_exit", "raw_syscalls", "sys_exit")];

/// Errors loading, attaching or driving the sensor.
#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    /// The process lacks CAP_SYS_ADMIN.
    #[error(
        "the sensor needs CAP_SYS_ADMIN in its effective set (fanotify marks on token volumes; the kernel also accepts it for the eBPF programs), and uid {uid} does not have it (effective capabilities {cap_eff:#x})"
    )]
    CheckPrivileges {
        /// The effective uid.
        uid: u32,
        /// The effective capability set.
        cap_eff: u64,
    },
    /// The fanotify group or a mark could not be set up.
    #[error("setting up fanotify")]
    SetUpFanotify(#[source] fanotify::FanotifyError),
    /// This binary was built with `AYA_BUILD_SKIP=1`, without kernel programs.
    #[error(
        "this tokenwatch was built without its eBPF programs (AYA_BUILD_SKIP); rebuild with `cargo xtask build`"
    )]
    FindEbpfObject,
    /// BTF is missing or lacks a field.
    #[error("reading kernel struct offsets from BTF")]
    ReadKernelOffsets(#[source] btf::BtfError),
    /// tracefs is missing or lacks a tracepoint.
    #[error("reading tracepoint formats")]
    ReadTracepoints(#[source] tracefs::TracefsError),
    /// The kernel refused the object (maps or BTF).
    #[error("loading the eBPF object")]
    LoadObject(#[source] aya::EbpfError),
    /// A program is missing from the object.
    #[error("the eBPF object has no program {0}")]
    FindProgram(&'static str),
    /// The verifier or kernel refused a program.
    #[error("loading program {name}")]
    LoadProgram {
        /// Program name.
        name: &'static str,
        /// Why (the verifier log is in the source).
        #[source]
        source: aya::programs::ProgramError,
    },
    /// Attaching a program to its tracepoint failed.
    #[error("attaching to tracepoint {category}:{tracepoint}")]
    AttachTracepoint {
        /// Tracepoint category.
        category: &'static str,
        /// Tracepoint name.
        tracepoint: &'static str,
        /// Why.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A map is missing from the object.
    #[error("the eBPF object has no map {0}")]
    FindMap(&'static str),
    /// A map has an unexpected type or layout.
    #[error("opening map {name}")]
    OpenMap {
        /// Map name.
        name: &'static str,
        /// Why.
        #[source]
        source: aya::maps::MapError,
    },
    /// Updating a filter map failed (for example, it is full).
    #[error("updating map {name}")]
    UpdateMap {
        /// Map name.
        name: &'static str,
        /// Why.
        #[source]
        source: aya::maps::MapError,
    },
    /// A file to watch could not be examined.
    #[error("cannot stat {path} to watch its inode")]
    StatWatchFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A path pattern is invalid.
    #[error("invalid path pattern")]
    CompilePattern(#[source] pattern::PatternError),
    /// An endpoint could not be resolved to addresses.
    #[error("cannot resolve API-server endpoint {endpoint}")]
    ResolveEndpoint {
        /// As given.
        endpoint: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Registering the ring buffer with tokio failed.
    #[error("polling the ring buffer")]
    PollRingBuffer(#[source] std::io::Error),
}

/// What to load and watch.
#[derive(Debug, Clone)]
pub struct SensorConfig {
    /// Path-suffix patterns (see [`pattern`]).
    pub path_suffixes: Vec<String>,
    /// Files marked by inode from the start (fanotify; also the inode map
    /// in the syscall path-match mode).
    pub watch_files: Vec<PathBuf>,
    /// Attach the `raw_syscalls:sys_exit` program that matches the path
    /// of every `open*` against `path_suffixes` and reports reads by
    /// syscall. Off by default: it costs every syscall on the node
    /// (about 1.4x on an open+close loop; docs/performance.md).
    pub syscall_path_match: bool,
    /// Token accesses our queue holds between the fanotify reader thread
    /// and [`Sensor::next_batch`]; more are counted as lost.
    pub access_queue: usize,
    /// API-server endpoints.
    pub endpoints: Vec<SocketAddr>,
    /// Ring buffer size in bytes (a power of two, a multiple of the page size).
    pub ring_buffer_bytes: u32,
    /// BTF file to read offsets from.
    pub btf_path: PathBuf,
    /// Exited processes remembered for naming late events.
    pub keep_exited: usize,
    /// Also report this process's own opens (tests); the agent leaves its
    /// own token reads out.
    pub report_self: bool,
    /// Return exec and exit records from [`Sensor::next_batch`] as events.
    /// When off they still update the lineage (readers that exited are
    /// named from it) but no event is built for them: `tokenwatch watch`
    /// without `--lineage`, which would only throw them away.
    pub lineage_events: bool,
}

impl Default for SensorConfig {
    fn default() -> Self {
        Self {
            path_suffixes: pattern::DEFAULT_SUFFIXES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            watch_files: Vec::new(),
            syscall_path_match: false,
            access_queue: 65_536,
            endpoints: Vec::new(),
            // 8 MiB holds ~20,000 records: a second of a 20k reads/s burst.
            ring_buffer_bytes: 8 * 1024 * 1024,
            btf_path: PathBuf::from(btf::VMLINUX_BTF),
            // Enough to name every reader of a busy node's last few seconds.
            keep_exited: 4096,
            report_self: false,
            lineage_events: true,
        }
    }
}

/// Resolves `HOST:PORT` (names, IPv4, `[IPv6]`) to socket addresses.
///
/// # Errors
/// [`SensorError::ResolveEndpoint`] when it does not resolve.
pub fn resolve_endpoint(endpoint: &str) -> Result<Vec<SocketAddr>, SensorError> {
    endpoint
        .to_socket_addrs()
        .map(Iterator::collect)
        .map_err(|source| SensorError::ResolveEndpoint {
            endpoint: endpoint.to_owned(),
            source,
        })
}

fn endpoint_key(addr: SocketAddr) -> EndpointKey {
    let mut key = EndpointKey {
        family: AF_INET,
        port: addr.port(),
        _pad: 0,
        addr: [0; 16],
    };
    // `::ffff:a.b.c.d` is the IPv4 endpoint (the kernel side matches a
    // mapped destination against the IPv4 key).
    match addr.ip().to_canonical() {
        IpAddr::V4(v4) => key.addr[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => {
            key.family = AF_INET6;
            key.addr = v6.octets();
        }
    }
    key
}

/// `(dev, ino)` of a file as `stat` (following symlinks) reports it.
///
/// # Errors
/// [`SensorError::StatWatchFile`] when the file cannot be examined.
pub fn file_id(path: &Path) -> Result<(u64, u64), SensorError> {
    let meta = std::fs::metadata(path).map_err(|source| SensorError::StatWatchFile {
        path: path.to_owned(),
        source,
    })?;
    Ok((meta.dev(), meta.ino()))
}

fn inode_key(dev: u64, ino: u64) -> InodeKey {
    InodeKey {
        dev: event::kernel_dev(dev),
        _pad: 0,
        ino,
    }
}

struct Maps {
    watched: BpfHashMap<MapData, InodeKey, u8>,
    endpoints: BpfHashMap<MapData, EndpointKey, u8>,
    endpoint_ports: Array<MapData, u64>,
    patterns: Array<MapData, PathPattern>,
}

impl Maps {
    /// Sets or clears `port`'s bit in `ENDPOINT_PORTS`.
    fn set_port(&mut self, port: u16, on: bool) -> Result<(), SensorError> {
        let update = |source| SensorError::UpdateMap {
            name: "ENDPOINT_PORTS",
            source,
        };
        let (word, bit) = port_bit(port);
        let old = self.endpoint_ports.get(&word, 0).map_err(update)?;
        let new = if on { old | bit } else { old & !bit };
        if new != old {
            self.endpoint_ports.set(word, new, 0).map_err(update)?;
        }
        Ok(())
    }
}

/// A handle to change what the running sensor watches; cheap to clone and
/// usable from any task.
#[derive(Clone)]
pub struct SensorControl {
    maps: Arc<Mutex<Maps>>,
    group: Arc<fanotify::Group>,
}

impl std::fmt::Debug for SensorControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SensorControl").finish_non_exhaustive()
    }
}

impl SensorControl {
    fn maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        // A panic while holding the lock leaves the maps themselves intact.
        self.maps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Watches a file by its `st_dev`/`st_ino`.
    ///
    /// # Errors
    /// [`SensorError::UpdateMap`] when the map is full.
    pub fn watch_inode(&self, dev: u64, ino: u64) -> Result<(), SensorError> {
        self.maps()
            .watched
            .insert(inode_key(dev, ino), 1, 0)
            .map_err(|source| SensorError::UpdateMap {
                name: "WATCHED_INODES",
                source,
            })
    }

    /// Stops watching a file; a no-op when it was not watched.
    ///
    /// # Errors
    /// [`SensorError::UpdateMap`] on a kernel error other than "not there".
    pub fn unwatch_inode(&self, dev: u64, ino: u64) -> Result<(), SensorError> {
        absent_is_removed(
            self.maps().watched.remove(&inode_key(dev, ino)),
            "WATCHED_INODES",
        )
    }

    /// Watches the file at `path` (symlinks followed): a fanotify inode
    /// mark, and the inode map of the syscall path-match mode.
    ///
    /// # Errors
    /// The file cannot be examined or marked, or the map is full.
    pub fn watch_file(&self, path: &Path) -> Result<(u64, u64), SensorError> {
        let (dev, ino) = self
            .group
            .watch_file(path)
            .map_err(SensorError::SetUpFanotify)?;
        self.watch_inode(dev, ino)?;
        Ok((dev, ino))
    }

    /// Watches the token file `file` of the volume directory `volume_dir`:
    /// a filesystem mark when the volume is its own superblock (the
    /// kubelet's tmpfs), else an inode mark (see [`fanotify::Group::watch_volume_file`]).
    ///
    /// # Errors
    /// The paths cannot be examined or marked, or the map is full.
    pub fn watch_volume_file(
        &self,
        volume_dir: &Path,
        file: &Path,
    ) -> Result<fanotify::MarkKind, SensorError> {
        let ((dev, ino), kind) = self
            .group
            .watch_volume_file(volume_dir, file)
            .map_err(SensorError::SetUpFanotify)?;
        self.watch_inode(dev, ino)?;
        Ok(kind)
    }

    /// Stops watching a token file (fanotify and the inode map).
    ///
    /// # Errors
    /// [`SensorError::UpdateMap`] on a kernel error other than "not there".
    pub fn unwatch_file(&self, dev: u64, ino: u64) -> Result<(), SensorError> {
        self.group.unwatch(dev, ino);
        self.unwatch_inode(dev, ino)
    }

    /// Leaves file events in the kernel's fanotify queue while `hold` is
    /// set, as a busy agent would: a reader may exit before its access is
    /// read (tests use it).
    pub fn hold_file_events(&self, hold: bool) {
        self.group.hold(hold);
    }

    /// Token files watched through fanotify.
    #[must_use]
    pub fn watched_files(&self) -> usize {
        self.group.watched()
    }

    /// Replaces the path-suffix patterns.
    ///
    /// # Errors
    /// An invalid pattern (nothing is changed then), or a map error.
    pub fn set_patterns<S: AsRef<str>>(&self, patterns: &[S]) -> Result<(), SensorError> {
        let compiled = pattern::compile_all(patterns).map_err(SensorError::CompilePattern)?;
        let unused = PathPattern {
            head_len: 0,
            tail_len: 0,
            has_star: 0,
            tail_slashes: 0,
            name_len: 0,
            _pad: 0,
            head: [0; PATTERN_PART_LEN],
            tail: [0; PATTERN_PART_LEN],
        };
        let mut maps = self.maps();
        for index in 0..MAX_PATTERNS {
            let value = compiled.get(index as usize).copied().unwrap_or(unused);
            maps.patterns
                .set(index, value, 0)
                .map_err(|source| SensorError::UpdateMap {
                    name: "PATTERNS",
                    source,
                })?;
        }
        Ok(())
    }

    /// Reports connects to `addr`.
    ///
    /// # Errors
    /// [`SensorError::UpdateMap`] when the map is full.
    pub fn add_endpoint(&self, addr: SocketAddr) -> Result<(), SensorError> {
        let mut maps = self.maps();
        maps.endpoints
            .insert(endpoint_key(addr), 1, 0)
            .map_err(|source| SensorError::UpdateMap {
                name: "ENDPOINTS",
                source,
            })?;
        // After the endpoint: the kernel reads the address only once the
        // port's bit is set.
        maps.set_port(addr.port(), true)
    }

    /// Stops reporting connects to `addr`.
    ///
    /// # Errors
    /// [`SensorError::UpdateMap`] on a kernel error other than "not there".
    pub fn remove_endpoint(&self, addr: SocketAddr) -> Result<(), SensorError> {
        let mut maps = self.maps();
        absent_is_removed(maps.endpoints.remove(&endpoint_key(addr)), "ENDPOINTS")?;
        // The port stays while another endpoint has it.
        let port = addr.port();
        let shared = maps
            .endpoints
            .keys()
            .any(|key| key.is_ok_and(|key| key.port == port));
        if shared {
            Ok(())
        } else {
            maps.set_port(port, false)
        }
    }
}

/// A map delete's result, where a key that was not there (the kernel's
/// ENOENT) counts as removed.
fn absent_is_removed(
    result: Result<(), aya::maps::MapError>,
    name: &'static str,
) -> Result<(), SensorError> {
    match result {
        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        Err(source) => Err(SensorError::UpdateMap { name, source }),
    }
}

/// Bit of CAP_SYS_ADMIN in the capability sets.
const CAP_SYS_ADMIN: u32 = 21;

/// The effective capability set of this process.
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Whether the effective capability set allows loading the sensor:
/// fanotify needs CAP_SYS_ADMIN (uid 0 alone is not enough), which the
/// kernel also accepts in place of CAP_BPF and CAP_PERFMON.
fn check_privileges() -> Result<(), SensorError> {
    let cap_eff = effective_caps();
    if cap_eff & (1 << CAP_SYS_ADMIN) != 0 {
        return Ok(());
    }
    Err(SensorError::CheckPrivileges {
        // SAFETY: geteuid has no preconditions.
        uid: unsafe { libc::geteuid() },
        cap_eff,
    })
}

/// The loaded, attached sensor.
pub struct Sensor {
    /// Stops the fanotify reader thread when dropped (before the group).
    _reader: fanotify::Reader,
    accesses: tokio::sync::mpsc::UnboundedReceiver<Vec<fanotify::Access>>,
    group: Arc<fanotify::Group>,
    /// Owns the programs and their links: dropping it detaches them.
    _ebpf: Ebpf,
    ring: AsyncFd<RingBuf<MapData>>,
    drops: PerCpuArray<MapData, u64>,
    control: SensorControl,
    table: ProcessTable,
    clock: Clock,
    /// Drains the ring buffer every [`LINEAGE_DRAIN`]: lineage records do
    /// not wake us.
    lineage_tick: tokio::time::Interval,
    /// [`SensorConfig::lineage_events`].
    lineage_events: bool,
}

/// How often the ring buffer is drained without a wake-up. The kernel
/// programs submit exec and exit records without waking userspace (a
/// node's process churn would otherwise cost two context switches per
/// process: docs/performance.md); they are read on this tick, before the
/// accesses of every batch, on any other record, and at once when the ring
/// is a quarter full.
pub const LINEAGE_DRAIN: std::time::Duration = std::time::Duration::from_millis(100);

impl std::fmt::Debug for Sensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sensor").finish_non_exhaustive()
    }
}

/// Copies every available record out of the ring buffer.
fn drain(ring: &mut RingBuf<MapData>, into: &mut Vec<Event>) {
    while let Some(item) = ring.next() {
        if item.len() >= std::mem::size_of::<Event>() {
            // SAFETY: the record holds at least one `Event`, which is plain
            // old data; read_unaligned copes with any alignment.
            into.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) });
        }
    }
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, SensorError> {
    ebpf.take_map(name).ok_or(SensorError::FindMap(name))
}

impl Sensor {
    /// Loads and attaches every program and fills the maps from `config`.
    /// Must run inside a tokio runtime (the ring buffer is polled by it).
    ///
    /// # Errors
    /// The first thing that fails, named: privileges, BTF, tracefs, the
    /// verifier, attaching, the filter configuration.
    pub fn load(config: &SensorConfig) -> Result<Self, SensorError> {
        if EBPF_OBJECT.is_empty() {
            return Err(SensorError::FindEbpfObject);
        }
        check_privileges()?;
        // Validate user input before touching the kernel.
        pattern::compile_all(&config.path_suffixes).map_err(SensorError::CompilePattern)?;
        for path in &config.watch_files {
            file_id(path)?;
        }
        let group = Arc::new(fanotify::Group::new().map_err(SensorError::SetUpFanotify)?);

        let btf = btf::Btf::from_file(&config.btf_path).map_err(SensorError::ReadKernelOffsets)?;
        let kernel_offsets = btf
            .kernel_offsets()
            .map_err(SensorError::ReadKernelOffsets)?;
        let sock_offsets = btf.sock_offsets().map_err(SensorError::ReadKernelOffsets)?;
        let syscall_abi = btf.syscall_abi().map_err(SensorError::ReadKernelOffsets)?;
        let tracefs_root = tracefs::ensure_mounted().map_err(SensorError::ReadTracepoints)?;
        let tp_offsets =
            tracefs::tracepoint_offsets(&tracefs_root).map_err(SensorError::ReadTracepoints)?;
        // tgid 0 (the idle task) never opens files: it disables the filter.
        let self_tgid = if config.report_self {
            0
        } else {
            std::process::id()
        };

        let mut ebpf = EbpfLoader::new()
            .override_global("KERNEL_OFFSETS", &kernel_offsets, true)
            .override_global("TP_OFFSETS", &tp_offsets, true)
            .override_global("SOCK_OFFSETS", &sock_offsets, true)
            .override_global("SOCK_DPORT", &sock_offsets.dport, true)
            .override_global("SYSCALL_ABI", &syscall_abi, true)
            .override_global("SELF_TGID", &self_tgid, true)
            .map_max_entries("EVENTS", config.ring_buffer_bytes)
            .load(EBPF_OBJECT)
            .map_err(SensorError::LoadObject)?;

        let open = |name: &'static str| move |source| SensorError::OpenMap { name, source };
        let maps = Maps {
            watched: BpfHashMap::try_from(take_map(&mut ebpf, "WATCHED_INODES")?)
                .map_err(open("WATCHED_INODES"))?,
            endpoints: BpfHashMap::try_from(take_map(&mut ebpf, "ENDPOINTS")?)
                .map_err(open("ENDPOINTS"))?,
            endpoint_ports: Array::try_from(take_map(&mut ebpf, "ENDPOINT_PORTS")?)
                .map_err(open("ENDPOINT_PORTS"))?,
            patterns: Array::try_from(take_map(&mut ebpf, "PATTERNS")?)
                .map_err(open("PATTERNS"))?,
        };
        let control = SensorControl {
            maps: Arc::new(Mutex::new(maps)),
            group: Arc::clone(&group),
        };
        control.set_patterns(&config.path_suffixes)?;
        for path in &config.watch_files {
            control.watch_file(path)?;
        }
        for addr in &config.endpoints {
            control.add_endpoint(*addr)?;
        }
        let ring = RingBuf::try_from(take_map(&mut ebpf, "EVENTS")?).map_err(open("EVENTS"))?;
        // SAFETY: the ring buffer owns its map fd, which stays open and
        // unchanged for as long as the AsyncFd holds the ring buffer.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|err| SensorError::PollRingBuffer(err.into_parts().1))?;
        let drops = PerCpuArray::try_from(take_map(&mut ebpf, "DROPS")?).map_err(open("DROPS"))?;

        for (name, category, tracepoint) in TRACEPOINTS {
            let program: &mut TracePoint = ebpf
                .program_mut(name)
                .ok_or(SensorError::FindProgram(name))?
                .try_into()
                .map_err(|source| SensorError::LoadProgram { name, source })?;
            program
                .load()
                .map_err(|source| SensorError::LoadProgram { name, source })?;
            program.attach(category, tracepoint).map_err(|source| {
                SensorError::AttachTracepoint {
                    category,
                    tracepoint,
                    source,
                }
            })?;
        }
        let syscall_raw_tracepoints: &[(&'static str, &'static str, &'static str)] =
            if config.syscall_path_match {
                &SYSCALL_RAW_TRACEPOINTS
            } else {
                &[]
            };
        for &(name, category, tracepoint) in RAW_TRACEPOINTS.iter().chain(syscall_raw_tracepoints) {
            let program: &mut RawTracePoint = ebpf
                .program_mut(name)
                .ok_or(SensorError::FindProgram(name))?
                .try_into()
                .map_err(|source| SensorError::LoadProgram { name, source })?;
            program
                .load()
                .map_err(|source| SensorError::LoadProgram { name, source })?;
            program
                .attach(tracepoint)
                .map_err(|source| SensorError::AttachTracepoint {
                    category,
                    tracepoint,
                    source,
                })?;
        }
        let (reader, accesses) =
            fanotify::spawn_reader(Arc::clone(&group), config.access_queue, self_tgid)
                .map_err(SensorError::SetUpFanotify)?;
        tracing::info!(
            programs = TRACEPOINTS.len() + RAW_TRACEPOINTS.len() + syscall_raw_tracepoints.len(),
            syscall_path_match = config.syscall_path_match,
            pidfd = group.features().pidfd,
            "sensor attached"
        );
        Ok(Self {
            _reader: reader,
            accesses,
            group,
            _ebpf: ebpf,
            ring,
            drops,
            control,
            table: ProcessTable::new(config.keep_exited),
            clock: Clock::new(),
            lineage_tick: {
                let mut tick = tokio::time::interval(LINEAGE_DRAIN);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick
            },
            lineage_events: config.lineage_events,
        })
    }

    /// A handle to change the filters while the sensor runs.
    #[must_use]
    pub fn control(&self) -> SensorControl {
        self.control.clone()
    }

    /// Records the kernel could not reserve in the ring buffer, summed over CPUs.
    #[must_use]
    pub fn kernel_drops(&self) -> u64 {
        self.drops
            .get(&0, 0)
            .map(|values| values.iter().sum())
            .unwrap_or(0)
    }

    /// fanotify losses so far: overflows, fd failures, our queue's losses.
    #[must_use]
    pub fn losses(&self) -> fanotify::Losses {
        self.group.counters().losses()
    }

    /// What the kernel's fanotify offers (detected at load).
    #[must_use]
    pub fn features(&self) -> fanotify::Features {
        self.group.features()
    }

    /// Waits until the ring buffer or the fanotify queue has something (or,
    /// for lineage, which does not wake us, the next [`LINEAGE_DRAIN`] tick),
    /// then returns everything available, decoded: ring-buffer records
    /// (lineage, connects) first, so that a reader that exited before its
    /// access was handled is named from its exec record.
    ///
    /// # Errors
    /// [`SensorError::PollRingBuffer`] if polling fails. A record of unknown
    /// kind is skipped with a warning; the rest of the batch is kept.
    pub async fn next_batch(&mut self) -> Result<Vec<SensorEvent>, SensorError> {
        /// Accesses taken per batch (the rest wait for the next call).
        const MAX_ACCESSES: usize = 4096;
        loop {
            let mut raws = Vec::new();
            let mut accesses = Vec::new();
            {
                let ring = &mut self.ring;
                let queue = &mut self.accesses;
                let tick = &mut self.lineage_tick;
                tokio::select! {
                    guard = ring.readable_mut() => {
                        let mut guard = guard.map_err(SensorError::PollRingBuffer)?;
                        drain(guard.get_inner_mut(), &mut raws);
                        guard.clear_ready();
                    }
                    // Lineage records that did not wake us (drained below).
                    _ = tick.tick() => {}
                    batch = queue.recv() => {
                        match batch {
                            Some(batch) => accesses.extend(batch),
                            // The reader thread ended: only the ring is left.
                            None => std::future::pending::<()>().await,
                        }
                    }
                }
            }
            while accesses.len() < MAX_ACCESSES {
                match self.accesses.try_recv() {
                    Ok(batch) => accesses.extend(batch),
                    Err(_) => break,
                }
            }
            self.group
                .counters()
                .queued
                .fetch_sub(accesses.len(), std::sync::atomic::Ordering::Relaxed);
            // The kernel wakes a reader only when it submits into an empty
            // ring: records that arrived after a drain but before
            // `clear_ready` would never wake us again. Drain once more; this
            // also brings in the exits of readers whose accesses were taken
            // above.
            drain(self.ring.get_mut(), &mut raws);
            if raws.is_empty() && accesses.is_empty() {
                continue;
            }
            let mut events = Vec::with_capacity(raws.len() + accesses.len());
            let mut unknown = None;
            for raw in &raws {
                if !self.lineage_events && matches!(raw.kind, KIND_EXEC | KIND_EXIT) {
                    // The lineage only: the caller does not want the event.
                    if let Err(err) = self.table.note(raw) {
                        unknown = Some(err);
                    }
                    continue;
                }
                match self.table.decode(raw, &self.clock) {
                    Ok(event) => events.push(event),
                    Err(err) => unknown = Some(err),
                }
            }
            if let Some(err) = unknown {
                tracing::warn!(error = %err, "skipped a kernel record");
            }
            for access in accesses {
                events.push(self.table.access_event(access, &self.clock));
            }
            if events.is_empty() {
                // Only lineage records, kept in the table (lineage_events off).
                continue;
            }
            return Ok(events);
        }
    }
}
