//! The file side of the sensor: one fanotify notification group with marks
//! on the token volumes, drained by a thread into a bounded queue of ours.
//!
//! ```text
//! fanotify_init(FAN_CLASS_NOTIF [| FAN_REPORT_PIDFD])       one group
//!   mark FAN_MARK_FILESYSTEM  on a volume that is its own superblock (the
//!                             kubelet's tmpfs): every container's bind
//!                             mount and every `..data` swap, no re-marking
//!   mark FAN_MARK_INODE       on a token file otherwise, and for --watch-file
//!   mask FAN_OPEN | FAN_ACCESS | FAN_CLOSE_NOWRITE
//! reader thread: poll -> read -> per event: fstat + readlink(/proc/self/fd/N)
//!   -> filter (the volume's other files out) -> name the reader (pidfd, /proc)
//!   -> bounded queue (full: counted as lost) -> Sensor::next_batch
//! ```
//!
//! fanotify reports the access however it was made: `read`, `pread64`,
//! `readv`, `sendfile`, `splice`, `copy_file_range`, io_uring, compat
//! (`int $0x80`) syscalls, an fd inherited or `dup2`'d; `mmap` shows as its
//! open. It gives neither the syscall nor a byte count, and not the
//! reader's fd number: events say which of open, access and close were seen.
//!
//! Losses are counted, never hidden: `FAN_Q_OVERFLOW` (the kernel's queue,
//! 16384 events, was full; it does not say how many were lost), events
//! whose fd the kernel could not open for us, and events our own queue had
//! no room for.

use std::{
    collections::{HashMap, HashSet},
    ffi::{CString, OsStr, OsString},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
};

use tokio::sync::mpsc;

pub use super::event::{Access, MarkKind, ProcFacts, ReaderSource};

/// Events a mark asks for: the open, every read-type access, the close of
/// a file opened for reading.
pub const MARK_MASK: u64 = libc::FAN_OPEN | libc::FAN_ACCESS | libc::FAN_CLOSE_NOWRITE;

/// Errors setting up the fanotify group or its marks.
#[derive(Debug, thiserror::Error)]
pub enum FanotifyError {
    /// `fanotify_init` failed.
    #[error(
        "creating the fanotify group (fanotify_init) failed: it needs CAP_SYS_ADMIN and a kernel built with CONFIG_FANOTIFY"
    )]
    CreateGroup(#[source] std::io::Error),
    /// A mark could not be added.
    #[error("adding a fanotify {kind} mark on {path}")]
    AddMark {
        /// `filesystem` or `inode`.
        kind: &'static str,
        /// What was marked.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A path to mark could not be examined.
    #[error("cannot stat {path} to mark it")]
    StatPath {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A path has a NUL byte.
    #[error("path {0} has a NUL byte")]
    EncodePath(PathBuf),
    /// The reader thread could not start.
    #[error("starting the fanotify reader thread")]
    SpawnReader(#[source] std::io::Error),
}

/// What the running kernel offers, detected when the group is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// `FAN_REPORT_PIDFD` (Linux 5.15): a pidfd of the reader with each event.
    pub pidfd: bool,
}

/// Loss and failure counters, shared with the reader thread.
#[derive(Debug, Default)]
pub struct Counters {
    /// `FAN_Q_OVERFLOW` events: the kernel's queue was full (count unknown).
    pub overflows: AtomicU64,
    /// Events whose fd the kernel could not open for us (or read errors).
    pub fd_failures: AtomicU64,
    /// Events dropped because our own queue was full.
    pub queue_lost: AtomicU64,
    /// Token access events delivered to the queue.
    pub delivered: AtomicU64,
    /// Accesses in the queue now (its bound is counted in accesses, the
    /// reader hands them over a read buffer at a time).
    pub queued: std::sync::atomic::AtomicUsize,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Losses {
    /// `FAN_Q_OVERFLOW` events seen.
    pub overflows: u64,
    /// Events without a usable fd.
    pub fd_failures: u64,
    /// Events our queue had no room for.
    pub queue_lost: u64,
}

impl Counters {
    /// The loss counters now.
    #[must_use]
    pub fn losses(&self) -> Losses {
        Losses {
            overflows: self.overflows.load(Relaxed),
            fd_failures: self.fd_failures.load(Relaxed),
            queue_lost: self.queue_lost.load(Relaxed),
        }
    }
}

#[derive(Debug, Default)]
struct FsMark {
    /// The path the mark was placed through (to remove it).
    path: PathBuf,
    /// Token file names on this superblock, with how many token files use each.
    names: HashMap<OsString, usize>,
    /// Token inodes on this superblock.
    inodes: HashSet<u64>,
}

/// The marks in place and the filter they imply.
#[derive(Debug, Default)]
struct Marks {
    /// Filesystem marks by `st_dev`.
    filesystems: HashMap<u64, FsMark>,
    /// Files reported as they are: inode marks, `(dev, ino)`.
    inodes: HashSet<(u64, u64)>,
    /// Token files by `(dev, ino)` and how they are marked.
    files: HashMap<(u64, u64), (MarkKind, OsString)>,
}

impl Marks {
    /// Whether an event on `(dev, ino)` named `name` is about a token file.
    fn matches(&self, dev: u64, ino: u64, name: Option<&OsStr>) -> Option<MarkKind> {
        if self.inodes.contains(&(dev, ino)) {
            return Some(MarkKind::Inode);
        }
        let fs = self.filesystems.get(&dev)?;
        if fs.inodes.contains(&ino) || name.is_some_and(|n| fs.names.contains_key(n)) {
            return Some(MarkKind::Filesystem);
        }
        None
    }
}

/// The group and its marks; cheap to share (the reader thread holds one).
#[derive(Debug)]
pub struct Group {
    fd: OwnedFd,
    features: Features,
    marks: Mutex<Marks>,
    counters: Arc<Counters>,
    /// While set, the reader thread leaves events in the kernel's queue.
    held: AtomicBool,
}

fn cstring(path: &Path) -> Result<CString, FanotifyError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| FanotifyError::EncodePath(path.into()))
}

fn stat(path: &Path) -> Result<libc::stat, FanotifyError> {
    let c = cstring(path)?;
    // SAFETY: an all-zero stat is a valid out value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a valid out pointer.
    if unsafe { libc::stat(c.as_ptr(), &raw mut st) } != 0 {
        return Err(FanotifyError::StatPath {
            path: path.to_owned(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(st)
}

/// Whether `dir` is the root of a file system of its own (a different
/// `st_dev` than its parent's): the kubelet's tmpfs for a token volume.
///
/// # Errors
/// When `dir` or its parent cannot be examined.
pub fn is_own_superblock(dir: &Path) -> Result<bool, FanotifyError> {
    let here = stat(dir)?;
    let parent = stat(&dir.join(".."))?;
    Ok(here.st_dev != parent.st_dev)
}

impl Group {
    /// Creates the group, with `FAN_REPORT_PIDFD` when the kernel has it.
    ///
    /// # Errors
    /// [`FanotifyError::CreateGroup`] without CAP_SYS_ADMIN or fanotify.
    pub fn new() -> Result<Self, FanotifyError> {
        let base = libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK;
        let event_flags = (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as libc::c_uint;
        // SAFETY: plain syscall with flag arguments.
        let fd = unsafe { libc::fanotify_init(base | libc::FAN_REPORT_PIDFD, event_flags) };
        let (fd, pidfd) = if fd >= 0 {
            (fd, true)
        } else {
            let first = std::io::Error::last_os_error();
            if first.raw_os_error() != Some(libc::EINVAL) {
                return Err(FanotifyError::CreateGroup(first));
            }
            // SAFETY: as above.
            let fd = unsafe { libc::fanotify_init(base, event_flags) };
            if fd < 0 {
                return Err(FanotifyError::CreateGroup(std::io::Error::last_os_error()));
            }
            (fd, false)
        };
        if pidfd {
            tracing::info!(
                "fanotify: FAN_REPORT_PIDFD available; readers are named from their pidfd"
            );
        } else {
            tracing::warn!(
                "fanotify: no FAN_REPORT_PIDFD (kernel before 5.15); readers are named from /proc and the eBPF lineage, and a pid reused meanwhile is marked uncertain"
            );
        }
        Ok(Self {
            // SAFETY: fanotify_init returned a new fd that nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            features: Features { pidfd },
            marks: Mutex::new(Marks::default()),
            counters: Arc::new(Counters::default()),
            held: AtomicBool::new(false),
        })
    }

    /// What the kernel offers.
    #[must_use]
    pub fn features(&self) -> Features {
        self.features
    }

    /// The loss counters.
    #[must_use]
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    fn marks(&self) -> std::sync::MutexGuard<'_, Marks> {
        self.marks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn mark(
        &self,
        flags: libc::c_uint,
        path: &Path,
        kind: &'static str,
    ) -> Result<(), FanotifyError> {
        let c = cstring(path)?;
        // SAFETY: a valid group fd and a NUL-terminated path.
        let rc = unsafe {
            libc::fanotify_mark(
                self.fd.as_raw_fd(),
                flags,
                MARK_MASK,
                libc::AT_FDCWD,
                c.as_ptr(),
            )
        };
        if rc != 0 {
            return Err(FanotifyError::AddMark {
                kind,
                path: path.to_owned(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Marks one file by inode (symlinks followed): every access to it is reported.
    ///
    /// # Errors
    /// The file cannot be examined or marked.
    pub fn watch_file(&self, path: &Path) -> Result<(u64, u64), FanotifyError> {
        let st = stat(path)?;
        self.mark(libc::FAN_MARK_ADD, path, "inode")?;
        let id = (st.st_dev, st.st_ino);
        let mut marks = self.marks();
        marks.inodes.insert(id);
        marks
            .files
            .insert(id, (MarkKind::Inode, file_name(path).to_owned()));
        Ok(id)
    }

    /// Watches the token file `file` of the volume `volume_dir`: with a
    /// filesystem mark when the volume is a superblock of its own (then
    /// accesses to files of the same name, the next rotation's too, are
    /// reported, and the volume's other files are not), else an inode mark.
    ///
    /// # Errors
    /// The paths cannot be examined or marked.
    pub fn watch_volume_file(
        &self,
        volume_dir: &Path,
        file: &Path,
    ) -> Result<((u64, u64), MarkKind), FanotifyError> {
        let st = stat(file)?;
        let id = (st.st_dev, st.st_ino);
        if !is_own_superblock(volume_dir)? {
            self.watch_file(file)?;
            return Ok((id, MarkKind::Inode));
        }
        let name = file_name(file).to_owned();
        let mut marks = self.marks();
        if let Some((kind, _)) = marks.files.get(&id) {
            return Ok((id, *kind));
        }
        let fs = match marks.filesystems.entry(st.st_dev) {
            std::collections::hash_map::Entry::Occupied(fs) => fs.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => {
                self.mark(
                    libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
                    volume_dir,
                    "filesystem",
                )?;
                slot.insert(FsMark {
                    path: volume_dir.to_owned(),
                    ..FsMark::default()
                })
            }
        };
        *fs.names.entry(name.clone()).or_default() += 1;
        fs.inodes.insert(st.st_ino);
        marks.files.insert(id, (MarkKind::Filesystem, name));
        Ok((id, MarkKind::Filesystem))
    }

    /// Stops reporting a token file. An inode mark goes with the inode when
    /// the file is deleted; a filesystem mark is removed with the last
    /// token file of its superblock (or with the superblock).
    pub fn unwatch(&self, dev: u64, ino: u64) {
        let mut marks = self.marks();
        let Some((kind, name)) = marks.files.remove(&(dev, ino)) else {
            return;
        };
        match kind {
            MarkKind::Inode => {
                marks.inodes.remove(&(dev, ino));
            }
            MarkKind::Filesystem => {
                let Some(fs) = marks.filesystems.get_mut(&dev) else {
                    return;
                };
                fs.inodes.remove(&ino);
                if let Some(count) = fs.names.get_mut(&name) {
                    *count -= 1;
                    if *count == 0 {
                        fs.names.remove(&name);
                    }
                }
                if fs.names.is_empty()
                    && let Some(fs) = marks.filesystems.remove(&dev)
                    && let Ok(c) = cstring(&fs.path)
                {
                    // SAFETY: a valid group fd and a NUL-terminated path; a
                    // failure (the volume is already unmounted) is harmless.
                    let _ = unsafe {
                        libc::fanotify_mark(
                            self.fd.as_raw_fd(),
                            libc::FAN_MARK_REMOVE | libc::FAN_MARK_FILESYSTEM,
                            MARK_MASK,
                            libc::AT_FDCWD,
                            c.as_ptr(),
                        )
                    };
                }
            }
        }
    }

    /// Leaves events in the kernel's queue while `hold` is set, as a busy
    /// agent would (tests use it to have a reader exit before its event is
    /// read).
    pub fn hold(&self, hold: bool) {
        self.held.store(hold, Relaxed);
    }

    /// Number of token files watched.
    #[must_use]
    pub fn watched(&self) -> usize {
        self.marks().files.len()
    }
}

fn file_name(path: &Path) -> &OsStr {
    path.file_name().unwrap_or(path.as_os_str())
}

/// The reader thread's handle: stops the thread when dropped.
#[derive(Debug)]
pub struct Reader {
    stop: Arc<AtomicBool>,
    wake: OwnedFd,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        let one: u64 = 1;
        // SAFETY: writing 8 bytes to our eventfd.
        let _ = unsafe { libc::write(self.wake.as_raw_fd(), (&raw const one).cast(), 8) };
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts the thread that drains the group into a queue of `capacity`
/// accesses; events of `self_pid` are left out (0: none are).
///
/// # Errors
/// The thread or its wake-up eventfd cannot be created.
pub fn spawn_reader(
    group: Arc<Group>,
    capacity: usize,
    self_pid: u32,
) -> Result<(Reader, mpsc::UnboundedReceiver<Vec<Access>>), FanotifyError> {
    // Bounded by `Counters::queued` in accesses; a batch per read buffer
    // wakes the receiver once, not once per access.
    let (tx, rx) = mpsc::unbounded_channel();
    let capacity = capacity.max(1);
    // SAFETY: plain syscall.
    let wake = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if wake < 0 {
        return Err(FanotifyError::SpawnReader(std::io::Error::last_os_error()));
    }
    // SAFETY: a new fd nothing else owns.
    let wake = unsafe { OwnedFd::from_raw_fd(wake) };
    let wake_fd = wake.as_raw_fd();
    let stop = Arc::new(AtomicBool::new(false));
    let thread_stop = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("fanotify".into())
        .spawn(move || read_loop(&group, &tx, capacity, &thread_stop, wake_fd, self_pid))
        .map_err(FanotifyError::SpawnReader)?;
    Ok((
        Reader {
            stop,
            wake,
            thread: Some(thread),
        },
        rx,
    ))
}

/// How long the reader lets events gather after the first one arrives:
/// far below what anyone reading the trail notices, long enough for a
/// busy node's events to come in a few reads.
const GATHER: std::time::Duration = std::time::Duration::from_millis(2);

/// Bytes read per `read(2)`: ~170 events without pidfds.
const READ_BUFFER: usize = 16 * 1024;

fn read_loop(
    group: &Group,
    tx: &mpsc::UnboundedSender<Vec<Access>>,
    capacity: usize,
    stop: &AtomicBool,
    wake_fd: RawFd,
    self_pid: u32,
) {
    let mut buf = vec![0u8; READ_BUFFER];
    let fan = group.fd.as_raw_fd();
    let cgroup_root = crate::node::find_cgroup2_mount().ok();
    let mut procs = ProcCache::default();
    while !stop.load(Relaxed) {
        if group.held.load(Relaxed) {
            std::thread::sleep(std::time::Duration::from_millis(5));
            continue;
        }
        let mut fds = [
            libc::pollfd {
                fd: fan,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: wake_fd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, 1000) };
        if n <= 0 || fds[0].revents & libc::POLLIN == 0 {
            continue;
        }
        // Let a burst gather: one wake-up and one read for many events, and
        // the kernel merges a process's repeated events on one file while
        // they wait in its queue (issue 13: this took the agent under a
        // 50,000 accesses/s loop from ~37% of a core to a fraction of it).
        std::thread::sleep(GATHER);
        loop {
            // SAFETY: reading into our buffer of its length.
            let len = unsafe { libc::read(fan, buf.as_mut_ptr().cast(), buf.len()) };
            if len < 0 {
                let err = std::io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EAGAIN | libc::EINTR) => break,
                    _ => {
                        // The kernel could not open an fd for an event
                        // (EMFILE, ENFILE, EACCES...): that event is lost.
                        group.counters.fd_failures.fetch_add(1, Relaxed);
                        tracing::debug!(error = %err, "fanotify read");
                        continue;
                    }
                }
            }
            let len = usize::try_from(len).unwrap_or(0);
            if len == 0 {
                break;
            }
            let read_ns = super::event::monotonic_now_ns();
            let accesses = parse_buffer(
                group,
                &buf[..len],
                self_pid,
                read_ns,
                cgroup_root.as_deref(),
                &mut procs,
            );
            if accesses.is_empty() {
                continue;
            }
            let n = accesses.len();
            let c = &group.counters;
            if c.queued.load(Relaxed) + n > capacity {
                c.queue_lost.fetch_add(n as u64, Relaxed);
                continue;
            }
            c.queued.fetch_add(n, Relaxed);
            if tx.send(accesses).is_err() {
                return;
            }
            c.delivered.fetch_add(n as u64, Relaxed);
        }
    }
}

/// One event's fixed part, decoded from the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawEvent {
    /// `FAN_*` bits.
    pub mask: u64,
    /// The fd the kernel opened for us (negative: none).
    pub fd: i32,
    /// The pid.
    pub pid: i32,
    /// The pidfd from the info record, when there is one.
    pub pidfd: Option<i32>,
}

/// Why a buffer from the kernel could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// An event's header or length does not fit the buffer.
    #[error("fanotify event at byte {offset} is cut short or its length {len} is invalid")]
    MeasureEvent {
        /// Where it starts.
        offset: usize,
        /// Its stated length.
        len: usize,
    },
    /// An unexpected metadata version.
    #[error("fanotify event at byte {offset} has metadata version {version}, expected {expected}")]
    CheckVersion {
        /// Where it starts.
        offset: usize,
        /// Its version.
        version: u8,
        /// What this build reads.
        expected: u8,
    },
}

const METADATA_LEN: usize = 24;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Decodes the events in a buffer read from a fanotify group. Pure: the
/// fds in it are not touched (the caller owns them). Stops at the first
/// malformed event, returning what came before and the error.
#[must_use]
pub fn parse_events(buf: &[u8]) -> (Vec<RawEvent>, Option<ParseError>) {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < buf.len() {
        let rest = &buf[offset..];
        let Some(event_len) = u32_at(rest, 0).map(|l| l as usize) else {
            return (out, Some(ParseError::MeasureEvent { offset, len: 0 }));
        };
        let meta_len = u16_at(rest, 6).map_or(0, usize::from);
        if event_len < METADATA_LEN
            || event_len > rest.len()
            || meta_len < METADATA_LEN
            || meta_len > event_len
        {
            return (
                out,
                Some(ParseError::MeasureEvent {
                    offset,
                    len: event_len,
                }),
            );
        }
        let version = rest[4];
        if version != libc::FANOTIFY_METADATA_VERSION {
            return (
                out,
                Some(ParseError::CheckVersion {
                    offset,
                    version,
                    expected: libc::FANOTIFY_METADATA_VERSION,
                }),
            );
        }
        let event = &rest[..event_len];
        let mask = u64_at(event, 8).unwrap_or(0);
        let fd = u32_at(event, 16).unwrap_or(u32::MAX) as i32;
        let pid = u32_at(event, 20).unwrap_or(0) as i32;
        // Info records follow the metadata: {u8 type, u8 pad, u16 len, ...}.
        let mut pidfd = None;
        let mut at = meta_len;
        while at + 4 <= event_len {
            let info_type = event[at];
            let info_len = u16_at(event, at + 2).map_or(0, usize::from);
            if info_len < 4 || at + info_len > event_len {
                break;
            }
            if info_type == libc::FAN_EVENT_INFO_TYPE_PIDFD && info_len >= 8 {
                pidfd = u32_at(event, at + 4).map(|v| v as i32);
            }
            at += info_len;
        }
        out.push(RawEvent {
            mask,
            fd,
            pid,
            pidfd,
        });
        offset += event_len;
    }
    (out, None)
}

fn owned(fd: i32) -> Option<OwnedFd> {
    // SAFETY: the kernel gave us this fd in the event; we are its only owner.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

fn parse_buffer(
    group: &Group,
    buf: &[u8],
    self_pid: u32,
    read_ns: u64,
    cgroup_root: Option<&Path>,
    procs: &mut ProcCache,
) -> Vec<Access> {
    let (events, err) = parse_events(buf);
    if let Some(err) = err {
        tracing::warn!(error = %err, "skipped the rest of a fanotify buffer");
    }
    let mut out: Vec<Access> = Vec::new();
    for raw in events {
        // Own every fd first, so each is closed whatever happens below.
        let file = owned(raw.fd);
        let pidfd = raw.pidfd.and_then(owned);
        if raw.mask & libc::FAN_Q_OVERFLOW != 0 {
            group.counters.overflows.fetch_add(1, Relaxed);
            continue;
        }
        let Some(file) = file else {
            group.counters.fd_failures.fetch_add(1, Relaxed);
            continue;
        };
        let pid = u32::try_from(raw.pid).unwrap_or(0);
        if self_pid != 0 && pid == self_pid {
            continue;
        }
        // SAFETY: an all-zero stat is a valid out value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a valid fd and out pointer.
        if unsafe { libc::fstat(file.as_raw_fd(), &raw mut st) } != 0 {
            group.counters.fd_failures.fetch_add(1, Relaxed);
            continue;
        }
        let link = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok();
        let name = link.as_deref().and_then(Path::file_name);
        let Some(mark) = group.marks().matches(st.st_dev, st.st_ino, name) else {
            continue;
        };
        drop(file);
        let mask = raw.mask & (libc::FAN_OPEN | libc::FAN_ACCESS | libc::FAN_CLOSE_NOWRITE);
        // The kernel merges queued events for the same file and process;
        // do the same for what one read returned.
        if let Some(last) = out.last_mut()
            && last.pid == pid
            && last.dev == st.st_dev
            && last.ino == st.st_ino
        {
            last.mask |= mask;
            continue;
        }
        let (facts, source) = name_reader(
            pid,
            pidfd.as_ref(),
            group.features.pidfd,
            cgroup_root,
            procs,
        );
        out.push(Access {
            mask,
            pid,
            dev: st.st_dev,
            ino: st.st_ino,
            path: link.map(|p| super::event::escape_bytes(p.as_os_str().as_bytes())),
            mark,
            facts,
            source,
            read_ns,
        });
    }
    out
}

/// Whether the process behind a pidfd still runs (not yet exited).
fn pidfd_alive(pidfd: &OwnedFd) -> bool {
    // SAFETY: signal 0 only checks; a valid pidfd.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    // EPERM means it exists but we may not signal it.
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn name_reader(
    pid: u32,
    pidfd: Option<&OwnedFd>,
    have_pidfd: bool,
    cgroup_root: Option<&Path>,
    procs: &mut ProcCache,
) -> (Option<ProcFacts>, ReaderSource) {
    if have_pidfd {
        let Some(pidfd) = pidfd else {
            // FAN_NOPIDFD: it had exited before the event was read.
            return (None, ReaderSource::Gone);
        };
        let facts = procs.facts(pid, cgroup_root);
        // Checked after reading: alive now means /proc/<pid> was still it.
        if facts.is_some() && pidfd_alive(pidfd) {
            return (facts, ReaderSource::Pidfd);
        }
        return (None, ReaderSource::Gone);
    }
    match procs.facts(pid, cgroup_root) {
        Some(facts) => (Some(facts), ReaderSource::Proc),
        None => (None, ReaderSource::Gone),
    }
}

/// Processes named recently, so that a process reading a token in a loop
/// costs one read of `/proc/<pid>/stat` per event instead of six files.
/// A process is the same while its pid, start time and comm are: an exec
/// changes the comm (to the new program's name), and a reused pid has
/// another start time. What it does not see: a setuid or a cgroup move of
/// a process that keeps its comm (its first access was named right).
#[derive(Debug, Default)]
pub struct ProcCache {
    known: HashMap<u32, (u64, String, ProcFacts)>,
}

/// Processes the cache remembers at most (then it starts over).
const PROC_CACHE: usize = 4096;

impl ProcCache {
    /// The facts of `pid` now: from the cache when `/proc/<pid>/stat` says
    /// it is the process named before, else read in full.
    pub fn facts(&mut self, pid: u32, cgroup_root: Option<&Path>) -> Option<ProcFacts> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (comm, rest) = split_stat(&stat)?;
        let mut fields = rest.split_whitespace();
        // Field 3 (state) is the first after the comm; ppid is field 4.
        if fields.next()? == "Z" {
            return None;
        }
        let ppid = fields.next()?.parse().unwrap_or(0);
        let start = parse_start_ticks(&stat)?;
        if let Some((known_start, known_comm, facts)) = self.known.get(&pid)
            && *known_start == start
            && known_comm == comm
        {
            return Some(ProcFacts {
                ppid,
                ..facts.clone()
            });
        }
        let mut facts = read_proc_but_start(pid, cgroup_root)?;
        facts.start_ns = ticks_to_ns(start);
        // An exiting reader's exe cannot be read: never remember that.
        if facts.exe.is_some() {
            if self.known.len() >= PROC_CACHE {
                self.known.clear();
            }
            self.known
                .insert(pid, (start, comm.to_owned(), facts.clone()));
        }
        Some(facts)
    }
}

/// `(comm, what follows it)` of a `/proc/<pid>/stat` line: the comm is
/// between the first `(` and the last `)` (it may hold either).
#[must_use]
pub fn split_stat(stat: &str) -> Option<(&str, &str)> {
    let (head, rest) = stat.rsplit_once(')')?;
    let (_, comm) = head.split_once('(')?;
    Some((comm, rest))
}

/// Reads what `/proc/<pid>` says about a process; `None` when it is gone
/// (or a zombie, whose exe cannot be read).
#[must_use]
pub fn read_proc(pid: u32, cgroup_root: Option<&Path>) -> Option<ProcFacts> {
    let mut facts = read_proc_but_start(pid, cgroup_root)?;
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        facts.start_ns = parse_start_ticks(&stat).map_or(0, ticks_to_ns);
    }
    Some(facts)
}

/// [`read_proc`] without the start time (for a caller that has just read
/// `/proc/<pid>/stat` itself).
fn read_proc_but_start(pid: u32, cgroup_root: Option<&Path>) -> Option<ProcFacts> {
    if pid == 0 {
        return None;
    }
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    let mut facts = ProcFacts::default();
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("PPid:") {
            facts.ppid = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("Uid:") {
            facts.uid = v.split_whitespace().next()?.parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("Gid:") {
            facts.gid = v.split_whitespace().next()?.parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("State:")
            && v.trim_start().starts_with('Z')
        {
            return None;
        }
    }
    facts.comm = std::fs::read(dir.join("comm"))
        .map(|b| super::event::escape_bytes(b.strip_suffix(b"\n").unwrap_or(&b)))
        .unwrap_or_default();
    facts.exe = std::fs::read_link(dir.join("exe"))
        .ok()
        .map(|p| super::event::escape_bytes(p.as_os_str().as_bytes()));
    facts.mnt_ns = std::fs::metadata(dir.join("ns/mnt"))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m) as u32)
        .unwrap_or(0);
    if let (Some(root), Ok(cgroup)) = (cgroup_root, std::fs::read_to_string(dir.join("cgroup")))
        && let Some(rel) = cgroup.lines().find_map(|l| l.strip_prefix("0::"))
    {
        let path = root.join(rel.trim_start_matches('/'));
        facts.cgroup_id = std::fs::metadata(path)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap_or(0);
    }
    Some(facts)
}

/// Field 22 (`starttime`, clock ticks since boot) of `/proc/<pid>/stat`;
/// the comm (field 2) may hold spaces and parentheses, so fields are
/// counted after its last `)`.
#[must_use]
pub fn parse_start_ticks(stat: &str) -> Option<u64> {
    let (_, after) = stat.rsplit_once(')')?;
    // After the comm: field 3 (state) is the first; starttime is field 22.
    after.split_whitespace().nth(19)?.parse().ok()
}

fn ticks_to_ns(ticks: u64) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .ok()
        .filter(|&h| h > 0)
        .unwrap_or(100);
    ticks.saturating_mul(1_000_000_000 / hz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_split_at_the_comm_whatever_it_holds() {
        let stat = "4242 (a) (b) ) S 1 4242 4242 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 777 0 0";
        let (comm, rest) = split_stat(stat).unwrap();
        assert_eq!(comm, "a) (b) ");
        assert!(rest.trim_start().starts_with("S 1 "));
        assert_eq!(parse_start_ticks(stat), Some(777));
        assert_eq!(split_stat("no parentheses"), None);
    }

    #[test]
    fn a_process_named_twice_is_read_in_full_once() {
        let mut cache = ProcCache::default();
        let me = std::process::id();
        let first = cache.facts(me, None).expect("this process");
        assert!(first.exe.is_some());
        assert_eq!(cache.known.len(), 1);
        let again = cache.facts(me, None).expect("this process");
        assert_eq!(again, first);
        assert_eq!(cache.facts(0, None), None);
    }

    fn event(mask: u64, fd: i32, pid: i32, pidfd: Option<i32>) -> Vec<u8> {
        let len = if pidfd.is_some() { 32 } else { 24 };
        let mut b = Vec::new();
        b.extend_from_slice(&(len as u32).to_ne_bytes());
        b.push(libc::FANOTIFY_METADATA_VERSION);
        b.push(0);
        b.extend_from_slice(&24u16.to_ne_bytes());
        b.extend_from_slice(&mask.to_ne_bytes());
        b.extend_from_slice(&fd.to_ne_bytes());
        b.extend_from_slice(&pid.to_ne_bytes());
        if let Some(p) = pidfd {
            b.push(libc::FAN_EVENT_INFO_TYPE_PIDFD);
            b.push(0);
            b.extend_from_slice(&8u16.to_ne_bytes());
            b.extend_from_slice(&p.to_ne_bytes());
        }
        b
    }

    #[test]
    fn events_with_and_without_pidfd_decode() {
        let mut buf = event(libc::FAN_OPEN, 7, 42, Some(9));
        buf.extend(event(
            libc::FAN_ACCESS | libc::FAN_CLOSE_NOWRITE,
            8,
            43,
            None,
        ));
        let (events, err) = parse_events(&buf);
        assert_eq!(err, None);
        assert_eq!(
            events,
            vec![
                RawEvent {
                    mask: libc::FAN_OPEN,
                    fd: 7,
                    pid: 42,
                    pidfd: Some(9)
                },
                RawEvent {
                    mask: libc::FAN_ACCESS | libc::FAN_CLOSE_NOWRITE,
                    fd: 8,
                    pid: 43,
                    pidfd: None
                }
            ]
        );
    }

    #[test]
    fn a_cut_short_event_is_an_error_naming_where() {
        let mut buf = event(libc::FAN_OPEN, 7, 42, None);
        let second = event(libc::FAN_OPEN, 8, 42, Some(3));
        buf.extend_from_slice(&second[..20]);
        let (events, err) = parse_events(&buf);
        assert_eq!(events.len(), 1);
        assert_eq!(
            err,
            Some(ParseError::MeasureEvent {
                offset: 24,
                len: 32
            })
        );
        let mut bad = event(libc::FAN_OPEN, 7, 42, None);
        bad[4] = 99;
        assert_eq!(
            parse_events(&bad).1,
            Some(ParseError::CheckVersion {
                offset: 0,
                version: 99,
                expected: libc::FANOTIFY_METADATA_VERSION
            })
        );
        assert_eq!(
            parse_events(&[1, 2]).1,
            Some(ParseError::MeasureEvent { offset: 0, len: 0 })
        );
    }

    #[test]
    fn start_time_survives_a_comm_with_parens_and_spaces() {
        let stat =
            "1234 (a) b (c) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 200";
        assert_eq!(parse_start_ticks(stat), Some(98765));
        assert_eq!(parse_start_ticks("1234 (x"), None);
        assert_eq!(parse_start_ticks("1 (é)) S 1"), None);
    }

    #[test]
    fn a_filesystem_mark_matches_token_names_and_known_inodes_only() {
        let mut marks = Marks::default();
        let mut fs = FsMark::default();
        fs.names.insert("token".into(), 1);
        fs.inodes.insert(77);
        marks.filesystems.insert(5, fs);
        marks.inodes.insert((9, 3));
        assert_eq!(
            marks.matches(5, 1, Some(OsStr::new("token"))),
            Some(MarkKind::Filesystem)
        );
        assert_eq!(
            marks.matches(5, 77, Some(OsStr::new("renamed"))),
            Some(MarkKind::Filesystem)
        );
        assert_eq!(marks.matches(5, 2, Some(OsStr::new("ca.crt"))), None);
        assert_eq!(marks.matches(5, 2, None), None);
        assert_eq!(marks.matches(9, 3, None), Some(MarkKind::Inode));
        assert_eq!(marks.matches(6, 1, Some(OsStr::new("token"))), None);
    }
}
