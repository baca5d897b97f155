//! Typed sensor events, decoded from the kernel's wire records, and the
//! process table that names a process (exe, parent) even after it exited.

use std::{
    collections::{HashMap, VecDeque},
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use monitor_common::{
    AF_INET, AF_INET6, COMM_LEN, Event, KIND_CONNECT, KIND_CONNECT_RESULT, KIND_EXEC, KIND_EXIT,
    KIND_TOKEN_CLOSE, KIND_TOKEN_OPEN, KIND_TOKEN_READ, MATCH_INODE, MATCH_SUFFIX, SYSCALL_CLOSE,
    SYSCALL_OPEN, SYSCALL_OPENAT, SYSCALL_OPENAT2, SYSCALL_PREAD64, SYSCALL_READ, SYSCALL_READV,
    TCP_ESTABLISHED,
};
use serde::Serialize;

/// Version of the JSON event schema printed by `tokenwatch watch`.
/// Version 2 added `token_access` (fanotify), `detail.seen`, `process.named_by`
/// and `process.uncertain`.
pub const EVENT_SCHEMA_VERSION: u32 = 2;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A token file was opened, read or closed (fanotify: whatever syscall
    /// did it; `detail.seen` says which of open, access and close).
    TokenAccess,
    /// A token file was opened (syscall path-match mode only).
    TokenOpen,
    /// A token fd was read.
    TokenRead,
    /// A token fd was closed.
    TokenClose,
    /// A TCP connect to an API-server endpoint began.
    Connect,
    /// Such a connect was established or failed.
    ConnectResult,
    /// A process executed a program.
    Exec,
    /// A process exited.
    Exit,
}

/// A wire record carried a kind this build does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown event kind {0} from the kernel programs")]
pub struct UnknownKind(pub u32);

impl TryFrom<u32> for EventKind {
    type Error = UnknownKind;

    fn try_from(kind: u32) -> Result<Self, UnknownKind> {
        Ok(match kind {
            KIND_TOKEN_OPEN => Self::TokenOpen,
            KIND_TOKEN_READ => Self::TokenRead,
            KIND_TOKEN_CLOSE => Self::TokenClose,
            KIND_CONNECT => Self::Connect,
            KIND_CONNECT_RESULT => Self::ConnectResult,
            KIND_EXEC => Self::Exec,
            KIND_EXIT => Self::Exit,
            other => return Err(UnknownKind(other)),
        })
    }
}

/// The process that caused an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Process {
    /// Process id (thread-group id).
    pub tgid: u32,
    /// Thread id.
    pub pid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// Real uid.
    pub uid: u32,
    /// Real gid.
    pub gid: u32,
    /// `comm` (at most 15 bytes).
    pub comm: String,
    /// Executable path, from the exec event or `/proc/<pid>/exe`; `None` when unknown.
    pub exe: Option<String>,
    /// The parent's executable, when known.
    pub parent_exe: Option<String>,
    /// cgroup v2 id (the inode number of the cgroup directory).
    pub cgroup_id: u64,
    /// Mount-namespace inode number.
    pub mnt_ns: u32,
    /// Start time, CLOCK_MONOTONIC nanoseconds.
    pub start_ns: u64,
    /// Where these facts come from: `event` (the eBPF program, in the
    /// process's own context), `pidfd` (`/proc` checked against the
    /// event's pidfd), `proc` (`/proc` without a pidfd, kernel < 5.15),
    /// `lineage` (the eBPF exec/exit record of an exited process), or
    /// `unknown`.
    pub named_by: &'static str,
    /// The pid may have been reused between the access and its naming:
    /// the facts may describe another process.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub uncertain: bool,
}

/// Which syscall a file event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Syscall {
    /// `openat(2)`
    Openat,
    /// `openat2(2)`
    Openat2,
    /// `open(2)`
    Open,
    /// `read(2)`
    Read,
    /// `pread64(2)`
    Pread64,
    /// `readv(2)`
    Readv,
    /// `close(2)`
    Close,
}

impl Syscall {
    fn from_wire(value: u32) -> Option<Self> {
        Some(match value {
            SYSCALL_OPENAT => Self::Openat,
            SYSCALL_OPENAT2 => Self::Openat2,
            SYSCALL_OPEN => Self::Open,
            SYSCALL_READ => Self::Read,
            SYSCALL_PREAD64 => Self::Pread64,
            SYSCALL_READV => Self::Readv,
            SYSCALL_CLOSE => Self::Close,
            _ => return None,
        })
    }
}

/// A token file event's details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileDetail {
    /// The syscall.
    pub syscall: Option<Syscall>,
    /// Device as `stat` reports it (`st_dev`).
    pub dev: u64,
    /// Device as `major:minor`.
    pub dev_name: String,
    /// Inode number.
    pub ino: u64,
    /// File descriptor.
    pub fd: i32,
    /// The path as the caller passed it (opens), or as it was opened (reads
    /// and closes of an fd whose open was seen). Bytes that are not UTF-8
    /// are written `\xNN`.
    pub path: Option<String>,
    /// The path filled the kernel's buffer and was cut short.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub path_truncated: bool,
    /// Open flags (`O_*`), for opens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flags: Option<u32>,
    /// Why the file counts as a token: `inode`, `suffix`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub matched: Vec<&'static str>,
    /// Bytes read (reads only); negative is `-errno`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<i64>,
    /// Token accesses: which of `open`, `access`, `close` were seen.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<&'static str>,
}

/// A connect's details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectDetail {
    /// `ipv4` or `ipv6`.
    pub family: &'static str,
    /// Source address.
    pub saddr: IpAddr,
    /// Source port (0 before the kernel picked one).
    pub sport: u16,
    /// Destination address.
    pub daddr: IpAddr,
    /// Destination port.
    pub dport: u16,
    /// For results: whether the connection reached ESTABLISHED.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub established: Option<bool>,
    /// Kernel socket id pairing an attempt with its result.
    pub sock_id: u64,
}

/// An exec's or exit's details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessDetail {
    /// The new program (exec).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// Exit status as the kernel keeps it (exit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<u32>,
}

/// Kind-specific details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Detail {
    /// Token opens, reads and closes.
    File(FileDetail),
    /// Connects and their results.
    Connect(ConnectDetail),
    /// Execs and exits.
    Process(ProcessDetail),
}

/// One typed event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SensorEvent {
    /// Schema version ([`EVENT_SCHEMA_VERSION`]).
    pub schema: u32,
    /// What happened.
    pub kind: EventKind,
    /// CLOCK_MONOTONIC nanoseconds (kernel time).
    pub monotonic_ns: u64,
    /// Wall-clock time (RFC 3339, UTC).
    pub time: String,
    /// Who did it.
    pub process: Process,
    /// Kind-specific fields.
    pub detail: Detail,
}

/// How a token file came to be reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkKind {
    /// A filesystem mark on the volume's own superblock.
    Filesystem,
    /// An inode mark on the file.
    Inode,
}

impl MarkKind {
    /// The name used in events and docs.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Filesystem => "filesystem",
            Self::Inode => "inode",
        }
    }
}

/// Facts about a live process, read from `/proc/<pid>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcFacts {
    /// Parent's pid.
    pub ppid: u32,
    /// Real uid.
    pub uid: u32,
    /// Real gid.
    pub gid: u32,
    /// `comm`.
    pub comm: String,
    /// `/proc/<pid>/exe`.
    pub exe: Option<String>,
    /// cgroup v2 id (inode of the cgroup directory), 0 when unknown.
    pub cgroup_id: u64,
    /// Mount-namespace inode, 0 when unknown.
    pub mnt_ns: u32,
    /// Start time since boot in ns (clock-tick precision), 0 when unknown.
    pub start_ns: u64,
}

/// How the reader of an access was named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReaderSource {
    /// `/proc/<pid>` checked against the event's pidfd: certainly the reader.
    Pidfd,
    /// `/proc/<pid>` without a pidfd (kernel < 5.15): the pid may have been
    /// reused between the access and our read.
    Proc,
    /// The process was gone: to be named from the eBPF lineage.
    Gone,
}

/// One token access as the sensor's fanotify reader saw it (built in
/// `tokenwatch-host`'s `sensor::fanotify`, named here by [`ProcessTable::access_event`]).
#[derive(Debug, Clone)]
pub struct Access {
    /// `FAN_*` bits seen (merged events OR their masks).
    pub mask: u64,
    /// The reader's pid (thread-group id).
    pub pid: u32,
    /// `st_dev` of the file.
    pub dev: u64,
    /// `st_ino` of the file.
    pub ino: u64,
    /// The file's path in the agent's mount namespace.
    pub path: Option<String>,
    /// Which mark reported it.
    pub mark: MarkKind,
    /// The reader, when it could be read from `/proc`.
    pub facts: Option<ProcFacts>,
    /// How `facts` was obtained.
    pub source: ReaderSource,
    /// CLOCK_MONOTONIC ns when the event was read from the kernel.
    pub read_ns: u64,
}

/// Kernel `dev_t` (`major << 20 | minor`) to the userspace `st_dev` encoding.
#[must_use]
pub fn user_dev(kernel_dev: u32) -> u64 {
    libc::makedev(kernel_dev >> 20, kernel_dev & 0xf_ffff)
}

/// Userspace `st_dev` to the kernel's `dev_t` encoding.
#[must_use]
pub fn kernel_dev(st_dev: u64) -> u32 {
    (libc::major(st_dev) << 20) | (libc::minor(st_dev) & 0xf_ffff)
}

/// Bytes up to the first NUL, with non-UTF-8 bytes written `\xNN`.
#[must_use]
pub fn escape_bytes(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let mut out = String::with_capacity(end);
    for chunk in bytes[..end].utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// Converts kernel monotonic time to wall-clock time, with the offset
/// between the two clocks measured when created.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Wall-clock nanoseconds minus monotonic nanoseconds.
    offset_ns: i128,
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// CLOCK_MONOTONIC now, in nanoseconds (the kernel's `bpf_ktime_get_ns` clock).
#[must_use]
pub fn monotonic_now_ns() -> u64 {
    u64::try_from(clock_ns(libc::CLOCK_MONOTONIC)).unwrap_or(0)
}

impl Clock {
    /// Measures the offset now.
    #[must_use]
    pub fn new() -> Self {
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        let real = clock_ns(libc::CLOCK_REALTIME);
        Self {
            offset_ns: real - mono,
        }
    }

    /// Wall-clock time of a monotonic timestamp.
    #[must_use]
    pub fn wall(&self, monotonic_ns: u64) -> SystemTime {
        let ns = i128::from(monotonic_ns) + self.offset_ns;
        let ns = u64::try_from(ns.max(0)).unwrap_or(u64::MAX);
        UNIX_EPOCH + Duration::from_nanos(ns)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone, Default)]
struct ProcEntry {
    exe: Option<String>,
    ppid: u32,
    /// The latest lineage record (exec) of this pid, when one was seen.
    lineage: Option<Lineage>,
    /// Distinct processes (start times) seen with this pid.
    generations: u32,
    /// An exit of this pid was seen after its latest exec.
    exited: bool,
}

/// One clock tick of `/proc`'s start times (`USER_HZ`, 100 on every
/// architecture we run on): the precision to which a process's start time
/// from `/proc` and from the kernel agree.
pub const PROC_TICK_NS: u64 = 10_000_000;

/// Whether two start times name the same process: the kernel's in ns and
/// `/proc`'s in clock ticks converted to ns.
/// `value` unless it is 0 (unknown), then `fallback` (0 when there is none).
fn nonzero_or<T: Default + PartialEq + Copy>(value: T, fallback: Option<T>) -> T {
    if value == T::default() {
        fallback.unwrap_or_default()
    } else {
        value
    }
}

fn same_start(kernel_ns: u64, proc_ns: u64) -> bool {
    kernel_ns != 0 && proc_ns != 0 && kernel_ns.abs_diff(proc_ns) < PROC_TICK_NS
}

/// What the eBPF exec record said about a process.
#[derive(Debug, Clone)]
struct Lineage {
    ppid: u32,
    uid: u32,
    gid: u32,
    comm: String,
    cgroup_id: u64,
    mnt_ns: u32,
    start_ns: u64,
}

/// What userspace remembers of processes: exe and parent by tgid, from exec
/// events or `/proc`, and a bounded memory of exited ones.
#[derive(Debug)]
pub struct ProcessTable {
    live: HashMap<u32, ProcEntry>,
    exited: VecDeque<u32>,
    keep_exited: usize,
    /// Path of each open token fd, by (tgid, fd), to name reads and closes.
    fd_paths: HashMap<(u32, i32), (String, bool)>,
}

impl ProcessTable {
    /// A table that remembers up to `keep_exited` exited processes.
    #[must_use]
    pub fn new(keep_exited: usize) -> Self {
        Self {
            live: HashMap::new(),
            exited: VecDeque::new(),
            keep_exited,
            fd_paths: HashMap::new(),
        }
    }

    fn entry(&mut self, tgid: u32, ppid: u32) -> &ProcEntry {
        self.live.entry(tgid).or_insert_with(|| ProcEntry {
            exe: std::fs::read_link(format!("/proc/{tgid}/exe"))
                .ok()
                .map(|p| escape_bytes(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()))),
            ppid,
            ..ProcEntry::default()
        })
    }

    fn exe_of(&mut self, tgid: u32) -> Option<String> {
        if tgid == 0 {
            return None;
        }
        self.entry(tgid, 0).exe.clone()
    }

    fn forget_exited(&mut self, tgid: u32) {
        if let Some(entry) = self.live.get_mut(&tgid) {
            if entry.exited {
                // A second exit without an exec between: a process the
                // lineage never saw exec (a fork) had this pid.
                entry.generations += 1;
            }
            entry.exited = true;
        }
        self.exited.push_back(tgid);
        while self.exited.len() > self.keep_exited {
            if let Some(old) = self.exited.pop_front() {
                // Only if it did not come back (a reused pid) meanwhile.
                if self.live.get(&old).is_some_and(|e| e.exited) {
                    self.live.remove(&old);
                }
                self.fd_paths.retain(|(t, _), _| *t != old);
            }
        }
    }

    /// Names the reader of a fanotify access and builds its event: from
    /// `/proc` (checked with the pidfd) while the process lived, else from
    /// its latest eBPF lineage record, marked uncertain when the pid may
    /// have been reused.
    pub fn access_event(&mut self, access: Access, clock: &Clock) -> SensorEvent {
        let pid = access.pid;
        let record = self.live.get(&pid).cloned();
        let process = match (&access.facts, access.source) {
            (Some(f), ReaderSource::Pidfd | ReaderSource::Proc) => {
                // Without a pidfd, /proc may show a newer process with the
                // same pid: uncertain when the lineage saw that pid exit, or
                // saw more than one process with it.
                let uncertain = access.source == ReaderSource::Proc
                    && record
                        .as_ref()
                        .is_some_and(|r| r.exited || r.generations > 1);
                // A reader that is exiting has released its memory map (so
                // no `/proc/<pid>/exe`), then its namespaces and cgroup,
                // while its pidfd still answers: what `/proc` no longer
                // gave comes from its exec record, when that record is of
                // this same process.
                let exec = record.as_ref().filter(|r| {
                    r.lineage
                        .as_ref()
                        .is_some_and(|l| same_start(l.start_ns, f.start_ns))
                });
                let lineage = exec.and_then(|r| r.lineage.as_ref());
                Process {
                    tgid: pid,
                    pid,
                    ppid: f.ppid,
                    uid: f.uid,
                    gid: f.gid,
                    comm: f.comm.clone(),
                    exe: f.exe.clone().or_else(|| exec.and_then(|r| r.exe.clone())),
                    parent_exe: self.exe_of(f.ppid),
                    cgroup_id: nonzero_or(f.cgroup_id, lineage.map(|l| l.cgroup_id)),
                    mnt_ns: nonzero_or(f.mnt_ns, lineage.map(|l| l.mnt_ns)),
                    start_ns: f.start_ns,
                    named_by: if access.source == ReaderSource::Pidfd {
                        "pidfd"
                    } else {
                        "proc"
                    },
                    uncertain,
                }
            }
            _ => match record
                .as_ref()
                .and_then(|r| r.lineage.clone().map(|l| (r, l)))
            {
                Some((r, l)) => Process {
                    tgid: pid,
                    pid,
                    ppid: l.ppid,
                    uid: l.uid,
                    gid: l.gid,
                    comm: l.comm,
                    exe: r.exe.clone(),
                    parent_exe: self.exe_of(l.ppid),
                    cgroup_id: l.cgroup_id,
                    mnt_ns: l.mnt_ns,
                    start_ns: l.start_ns,
                    named_by: "lineage",
                    // Another process had this pid since the sensor
                    // started, or the one recorded has not exited (so the
                    // reader was one the lineage never saw exec).
                    uncertain: r.generations > 1 || !r.exited,
                },
                None => Process {
                    tgid: pid,
                    pid,
                    ppid: 0,
                    uid: 0,
                    gid: 0,
                    comm: String::new(),
                    exe: None,
                    parent_exe: None,
                    cgroup_id: 0,
                    mnt_ns: 0,
                    start_ns: 0,
                    named_by: "unknown",
                    uncertain: true,
                },
            },
        };
        let mut seen = Vec::new();
        if access.mask & libc::FAN_OPEN != 0 {
            seen.push("open");
        }
        if access.mask & libc::FAN_ACCESS != 0 {
            seen.push("access");
        }
        if access.mask & libc::FAN_CLOSE_NOWRITE != 0 {
            seen.push("close");
        }
        let dev32 = kernel_dev(access.dev);
        SensorEvent {
            schema: EVENT_SCHEMA_VERSION,
            kind: EventKind::TokenAccess,
            monotonic_ns: access.read_ns,
            time: humantime::format_rfc3339_nanos(clock.wall(access.read_ns)).to_string(),
            process,
            detail: Detail::File(FileDetail {
                syscall: None,
                dev: access.dev,
                dev_name: format!("{}:{}", dev32 >> 20, dev32 & 0xf_ffff),
                ino: access.ino,
                fd: -1,
                path: access.path,
                path_truncated: false,
                flags: None,
                matched: vec![access.mark.name()],
                bytes: None,
                seen,
            }),
        }
    }

    /// Number of processes remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether nothing is remembered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Decodes one wire record, updating the table.
    ///
    /// # Errors
    /// [`UnknownKind`] when the record's kind is not one this build knows.
    pub fn decode(&mut self, raw: &Event, clock: &Clock) -> Result<SensorEvent, UnknownKind> {
        let kind = EventKind::try_from(raw.kind)?;
        let comm_end = raw.comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        let ppid = self.note_process(kind, raw);
        let exe = self.exe_of(raw.tgid);
        let parent_exe = self.exe_of(ppid);
        let process = Process {
            tgid: raw.tgid,
            pid: raw.pid,
            ppid,
            uid: raw.uid,
            gid: raw.gid,
            comm: escape_bytes(&raw.comm[..comm_end]),
            exe,
            parent_exe,
            cgroup_id: raw.cgroup_id,
            mnt_ns: raw.mnt_ns,
            start_ns: raw.start_ns,
            named_by: "event",
            uncertain: false,
        };
        let detail = match kind {
            // TokenAccess never comes from the wire (see `access_event`).
            EventKind::TokenAccess
            | EventKind::TokenOpen
            | EventKind::TokenRead
            | EventKind::TokenClose => Detail::File(self.file_detail(kind, raw)),
            EventKind::Connect | EventKind::ConnectResult => {
                Detail::Connect(connect_detail(kind, raw))
            }
            EventKind::Exec => Detail::Process(ProcessDetail {
                filename: Some(escape_bytes(&raw.path)),
                exit_code: None,
            }),
            EventKind::Exit => {
                self.forget_exited(raw.tgid);
                Detail::Process(ProcessDetail {
                    filename: None,
                    exit_code: Some(raw.flags),
                })
            }
        };
        Ok(SensorEvent {
            schema: EVENT_SCHEMA_VERSION,
            kind,
            monotonic_ns: raw.ktime_ns,
            time: humantime::format_rfc3339_nanos(clock.wall(raw.ktime_ns)).to_string(),
            process,
            detail,
        })
    }

    /// Updates the table from one wire record exactly as [`Self::decode`]
    /// does, without building the event: for a consumer that does not
    /// look at exec and exit events (`tokenwatch watch` without
    /// `--lineage`) but still needs the lineage to name a reader that
    /// exited. Returns the record's kind.
    ///
    /// # Errors
    /// [`UnknownKind`] when the record's kind is not one this build knows.
    pub fn note(&mut self, raw: &Event) -> Result<EventKind, UnknownKind> {
        let kind = EventKind::try_from(raw.kind)?;
        let ppid = self.note_process(kind, raw);
        // `decode` looks up both executables (reading `/proc/<pid>/exe`
        // the first time a pid is seen): the same here, so that the
        // table holds what it would hold after `decode`.
        if raw.tgid != 0 {
            self.entry(raw.tgid, 0);
        }
        if ppid != 0 {
            self.entry(ppid, 0);
        }
        match kind {
            EventKind::Exit => self.forget_exited(raw.tgid),
            EventKind::TokenOpen | EventKind::TokenRead | EventKind::TokenClose => {
                self.file_detail(kind, raw);
            }
            _ => {}
        }
        Ok(kind)
    }

    /// The table's part of an exec record (a new lineage entry), for
    /// either path; returns the record's parent pid (from the table when
    /// the record has none).
    fn note_process(&mut self, kind: EventKind, raw: &Event) -> u32 {
        if kind == EventKind::Exec {
            let comm_end = raw.comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
            let filename = escape_bytes(&raw.path);
            let entry = self.live.entry(raw.tgid).or_default();
            let same = entry
                .lineage
                .as_ref()
                .is_some_and(|l| l.start_ns == raw.start_ns);
            if !same {
                entry.generations += 1;
            }
            entry.exe = Some(filename);
            entry.ppid = raw.ppid;
            entry.exited = false;
            entry.lineage = Some(Lineage {
                ppid: raw.ppid,
                uid: raw.uid,
                gid: raw.gid,
                comm: escape_bytes(&raw.comm[..comm_end]),
                cgroup_id: raw.cgroup_id,
                mnt_ns: raw.mnt_ns,
                start_ns: raw.start_ns,
            });
        }
        if raw.ppid != 0 {
            raw.ppid
        } else {
            self.entry(raw.tgid, 0).ppid
        }
    }

    fn file_detail(&mut self, kind: EventKind, raw: &Event) -> FileDetail {
        let dev = user_dev(raw.dev);
        let key = (raw.tgid, raw.fd);
        let (path, path_truncated) = match kind {
            EventKind::TokenOpen => {
                let truncated = !raw.path.contains(&0);
                let path = escape_bytes(&raw.path);
                self.fd_paths.insert(key, (path.clone(), truncated));
                (Some(path), truncated)
            }
            EventKind::TokenClose => self
                .fd_paths
                .remove(&key)
                .map_or((None, false), |(p, t)| (Some(p), t)),
            _ => self
                .fd_paths
                .get(&key)
                .map_or((None, false), |(p, t)| (Some(p.clone()), *t)),
        };
        let mut matched = Vec::new();
        if raw.matched & MATCH_INODE != 0 {
            matched.push("inode");
        }
        if raw.matched & MATCH_SUFFIX != 0 {
            matched.push("suffix");
        }
        FileDetail {
            syscall: Syscall::from_wire(raw.syscall),
            dev,
            dev_name: format!("{}:{}", raw.dev >> 20, raw.dev & 0xf_ffff),
            ino: raw.ino,
            fd: raw.fd,
            path,
            path_truncated,
            flags: (kind == EventKind::TokenOpen).then_some(raw.flags),
            matched,
            bytes: (kind == EventKind::TokenRead).then_some(raw.ret),
            seen: Vec::new(),
        }
    }
}

fn ip(family: u16, bytes: [u8; 16]) -> IpAddr {
    if family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(bytes))
    }
}

fn connect_detail(kind: EventKind, raw: &Event) -> ConnectDetail {
    ConnectDetail {
        family: if raw.family == AF_INET6 {
            "ipv6"
        } else {
            "ipv4"
        },
        saddr: ip(raw.family, raw.saddr),
        sport: raw.sport,
        daddr: ip(raw.family, raw.daddr),
        dport: raw.dport,
        established: (kind == EventKind::ConnectResult)
            .then_some(raw.ret == i64::from(TCP_ESTABLISHED)),
        sock_id: raw.sock_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(kind: u32) -> Event {
        let mut e = Event::zeroed();
        e.kind = kind;
        e.tgid = 4242;
        e.pid = 4243;
        e.ppid = 1;
        e.comm[..3].copy_from_slice(b"cat");
        e
    }

    #[test]
    fn unknown_kind_is_an_error_not_ub() {
        let mut table = ProcessTable::new(8);
        let err = table.decode(&raw(99), &Clock::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown event kind 99 from the kernel programs"
        );
    }

    #[test]
    fn exec_names_the_process_after_it_exits() {
        let mut table = ProcessTable::new(8);
        let clock = Clock::new();
        let mut exec = raw(KIND_EXEC);
        exec.path[..8].copy_from_slice(b"/bin/ca\xff");
        table.decode(&exec, &clock).unwrap();
        let mut open = raw(KIND_TOKEN_OPEN);
        open.fd = 3;
        open.matched = MATCH_INODE | MATCH_SUFFIX;
        open.path[..5].copy_from_slice(b"token");
        table.decode(&open, &clock).unwrap();
        table.decode(&raw(KIND_EXIT), &clock).unwrap();
        let mut read = raw(KIND_TOKEN_READ);
        read.fd = 3;
        read.ret = 812;
        let event = table.decode(&read, &clock).unwrap();
        assert_eq!(event.process.exe.as_deref(), Some("/bin/ca\\xff"));
        assert_eq!(event.process.comm, "cat");
        let Detail::File(file) = event.detail else {
            panic!("not a file event")
        };
        assert_eq!(file.bytes, Some(812));
        assert_eq!(file.path.as_deref(), Some("token"));
    }

    fn access(pid: u32, facts: Option<ProcFacts>, source: ReaderSource) -> Access {
        Access {
            mask: libc::FAN_OPEN | libc::FAN_ACCESS,
            pid,
            dev: 7,
            ino: 3,
            path: Some("/v/token".into()),
            mark: MarkKind::Filesystem,
            facts,
            source,
            read_ns: 0,
        }
    }

    #[test]
    fn an_exiting_reader_takes_what_proc_no_longer_shows_from_its_exec_record() {
        let mut table = ProcessTable::new(8);
        let clock = Clock::new();
        let mut exec = raw(KIND_EXEC);
        exec.start_ns = 5_123_456_789;
        exec.cgroup_id = 77;
        exec.mnt_ns = 4_026_531_841;
        exec.path[..8].copy_from_slice(b"/bin/cat");
        table.decode(&exec, &clock).unwrap();
        // /proc read while it exited: status and comm, no exe, namespace or
        // cgroup; start in ticks.
        let facts = ProcFacts {
            ppid: 1,
            comm: "cat".into(),
            start_ns: 5_120_000_000,
            ..ProcFacts::default()
        };
        let event = table.access_event(
            access(4242, Some(facts.clone()), ReaderSource::Pidfd),
            &clock,
        );
        assert_eq!(event.process.exe.as_deref(), Some("/bin/cat"));
        assert_eq!(event.process.cgroup_id, 77);
        assert_eq!(event.process.mnt_ns, 4_026_531_841);
        assert_eq!(event.process.named_by, "pidfd");
        // What /proc did show wins over the record.
        let shown = ProcFacts {
            cgroup_id: 78,
            mnt_ns: 9,
            ..facts.clone()
        };
        let event = table.access_event(access(4242, Some(shown), ReaderSource::Pidfd), &clock);
        assert_eq!((event.process.cgroup_id, event.process.mnt_ns), (78, 9));
        // Another process that had the pid (another start) lends nothing.
        let other = ProcFacts {
            start_ns: 9_000_000_000,
            ..facts
        };
        let event = table.access_event(access(4242, Some(other), ReaderSource::Pidfd), &clock);
        assert_eq!(event.process.exe, None);
        assert_eq!((event.process.cgroup_id, event.process.mnt_ns), (0, 0));
    }

    #[test]
    fn exited_processes_are_forgotten_beyond_the_bound() {
        let mut table = ProcessTable::new(2);
        let clock = Clock::new();
        for tgid in 1_000_000..1_000_005 {
            let mut exec = raw(KIND_EXEC);
            exec.tgid = tgid;
            table.decode(&exec, &clock).unwrap();
            let mut exit = raw(KIND_EXIT);
            exit.tgid = tgid;
            table.decode(&exit, &clock).unwrap();
        }
        assert!(table.len() <= 3, "table kept {} entries", table.len());
    }

    #[test]
    fn noting_lineage_names_an_exited_reader_as_decoding_does() {
        let clock = Clock::new();
        let mut exec = raw(KIND_EXEC);
        exec.path[..8].copy_from_slice(b"/bin/cat");
        exec.start_ns = 5_000_000_000;
        let exit = raw(KIND_EXIT);
        let mut decoded = ProcessTable::new(8);
        decoded.decode(&exec, &clock).unwrap();
        decoded.decode(&exit, &clock).unwrap();
        let mut noted = ProcessTable::new(8);
        assert_eq!(noted.note(&exec).unwrap(), EventKind::Exec);
        assert_eq!(noted.note(&exit).unwrap(), EventKind::Exit);
        assert!(noted.note(&raw(99)).is_err());
        assert_eq!(noted.len(), decoded.len());
        let by_note = noted.access_event(access(4242, None, ReaderSource::Gone), &clock);
        let by_decode = decoded.access_event(access(4242, None, ReaderSource::Gone), &clock);
        assert_eq!(by_note.process, by_decode.process);
        assert_eq!(by_note.process.named_by, "lineage");
        assert_eq!(by_note.process.exe.as_deref(), Some("/bin/cat"));
        assert!(!by_note.process.uncertain);
    }

    #[test]
    fn dev_encodings_round_trip() {
        let st_dev = libc::makedev(259, 3);
        assert_eq!(user_dev(kernel_dev(st_dev)), st_dev);
        assert_eq!(kernel_dev(st_dev), (259 << 20) | 3);
    }

    #[test]
    fn connect_result_reports_established() {
        let mut table = ProcessTable::new(2);
        let mut e = raw(KIND_CONNECT_RESULT);
        e.family = AF_INET;
        e.daddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        e.dport = 6443;
        e.ret = i64::from(TCP_ESTABLISHED);
        let event = table.decode(&e, &Clock::new()).unwrap();
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["kind"], "connect_result");
        assert_eq!(json["detail"]["daddr"], "127.0.0.1");
        assert_eq!(json["detail"]["established"], true);
    }
}
