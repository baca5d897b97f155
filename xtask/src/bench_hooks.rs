//! The `hooks` watcher of `bench sensor`: programs that return at once,
//! attached where the sensor attaches its own (the `sched_process_exec` and
//! `sched_process_exit` tracepoints, the `inet_sock_set_state` raw
//! tracepoint). What it costs is the kernel's dispatch to a program on each
//! hook, which any eBPF sensor on those hooks pays before its first
//! instruction: the least the sensor's eBPF side can cost, measured in the
//! same run as the sensor itself.
//!
//! The `cgroup-hooks` watcher is the alternative for connects: programs that
//! allow at once on `cgroup/connect4` and `cgroup/connect6` of the cgroup v2
//! root, which run once per `connect(2)` (the tracepoint runs on every TCP
//! state change, twice for a refused connect) with the destination in their
//! context. It is there to show what moving connects to that hook would
//! save (docs/performance.md: nothing on this machine).
//!
//! Loaded with the `bpf(2)` and `perf_event_open(2)` system calls directly
//! (two instructions per program need no loader), held until SIGINT.

use std::ffi::CString;
use std::os::fd::{FromRawFd as _, OwnedFd};

use anyhow::{Context as _, bail};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
const BPF_CGROUP_INET4_CONNECT: u32 = 10;
const BPF_CGROUP_INET6_CONNECT: u32 = 11;
const BPF_PROG_TYPE_TRACEPOINT: u32 = 5;
const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
const PERF_TYPE_TRACEPOINT: u32 = 2;
/// `_IOW('$', 8, __u32)`.
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;
/// `perf_event_open(2)`'s flag for a close-on-exec fd.
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
/// `_IO('$', 0)`.
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;

/// The head of `union bpf_attr` for `BPF_PROG_LOAD`, zero-padded (the
/// kernel reads at most the size it is given).
#[repr(C)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    rest: [u8; 64],
}

/// `union bpf_attr` for `BPF_LINK_CREATE` (no extra fields).
#[repr(C)]
struct LinkCreate {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    rest: [u8; 32],
}

/// `union bpf_attr` for `BPF_RAW_TRACEPOINT_OPEN`.
#[repr(C)]
struct RawTracepointOpen {
    name: u64,
    prog_fd: u32,
    pad: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<OwnedFd> {
    // SAFETY: `attr` is a live, initialised bpf_attr prefix of its size.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), size_of::<T>()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(std::io::Error::other)?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A program of `prog_type` that returns `ret` at once.
fn load_empty(prog_type: u32, expected_attach_type: u32, ret: u8) -> anyhow::Result<OwnedFd> {
    // r0 = ret; exit
    let insns: [u64; 2] = [u64::from(ret) << 32 | 0xb7, 0x95];
    let license = c"GPL";
    let mut attr = ProgLoad {
        prog_type,
        insn_cnt: 2,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name: [0; 16],
        prog_ifindex: 0,
        expected_attach_type,
        rest: [0; 64],
    };
    bpf(BPF_PROG_LOAD, &mut attr)
        .with_context(|| format!("loading an empty program of type {prog_type}"))
}

/// An empty program on the classic tracepoint `category:name`, attached
/// through a perf event as the sensor's lineage programs are.
fn attach_tracepoint(category: &str, name: &str) -> anyhow::Result<(OwnedFd, OwnedFd)> {
    let prog = load_empty(BPF_PROG_TYPE_TRACEPOINT, 0, 0)?;
    let id_path = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .map(|root| format!("{root}/events/{category}/{name}/id"))
        .find(|p| std::path::Path::new(p).exists())
        .with_context(|| format!("no tracefs id for {category}:{name} (is tracefs mounted?)"))?;
    let id: u64 = std::fs::read_to_string(&id_path)?
        .trim()
        .parse()
        .with_context(|| format!("reading {id_path}"))?;
    // struct perf_event_attr: type, size, config, sample_period, ...
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&PERF_TYPE_TRACEPOINT.to_ne_bytes());
    attr[4..8].copy_from_slice(&128u32.to_ne_bytes());
    attr[8..16].copy_from_slice(&id.to_ne_bytes());
    attr[16..24].copy_from_slice(&1u64.to_ne_bytes());
    // wakeup_events
    attr[48..52].copy_from_slice(&1u32.to_ne_bytes());
    // SAFETY: a perf_event_attr of the size it states; pid -1, CPU 0.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            -1,
            0,
            -1,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        bail!(
            "perf_event_open for {category}:{name}: {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: a new fd of ours.
    let event = unsafe { OwnedFd::from_raw_fd(i32::try_from(fd)?) };
    use std::os::fd::AsRawFd as _;
    // SAFETY: ioctls on our own perf event fd.
    unsafe {
        if libc::ioctl(event.as_raw_fd(), PERF_EVENT_IOC_SET_BPF, prog.as_raw_fd()) != 0 {
            bail!(
                "attaching to {category}:{name}: {}",
                std::io::Error::last_os_error()
            );
        }
        if libc::ioctl(event.as_raw_fd(), PERF_EVENT_IOC_ENABLE, 0) != 0 {
            bail!(
                "enabling {category}:{name}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok((prog, event))
}

/// An empty program on the raw tracepoint `name`.
fn attach_raw_tracepoint(name: &str) -> anyhow::Result<(OwnedFd, OwnedFd)> {
    use std::os::fd::AsRawFd as _;
    let prog = load_empty(BPF_PROG_TYPE_RAW_TRACEPOINT, 0, 0)?;
    let cname = CString::new(name)?;
    let mut attr = RawTracepointOpen {
        name: cname.as_ptr() as u64,
        prog_fd: u32::try_from(prog.as_raw_fd())?,
        pad: 0,
    };
    let link = bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr)
        .with_context(|| format!("attaching to the raw tracepoint {name}"))?;
    Ok((prog, link))
}

/// An allow-all program on `attach_type` of the cgroup at `cgroup`.
fn attach_cgroup(cgroup: &OwnedFd, attach_type: u32) -> anyhow::Result<(OwnedFd, OwnedFd)> {
    use std::os::fd::AsRawFd as _;
    let prog = load_empty(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, attach_type, 1)?;
    let mut attr = LinkCreate {
        prog_fd: u32::try_from(prog.as_raw_fd())?,
        target_fd: u32::try_from(cgroup.as_raw_fd())?,
        attach_type,
        flags: 0,
        rest: [0; 32],
    };
    let link = bpf(BPF_LINK_CREATE, &mut attr)
        .with_context(|| format!("attaching to the cgroup root (attach type {attach_type})"))?;
    Ok((prog, link))
}

/// Attaches the empty programs (`cgroup`: on the cgroup connect hooks
/// instead of the sensor's), says so on stderr, and holds them until a
/// signal ends the process (closing the fds detaches them).
pub fn hold_hooks(cgroup: bool) -> anyhow::Result<()> {
    let held = if cgroup {
        let root = crate::bench_agent::cgroup2_mount()?;
        let dir =
            std::fs::File::open(&root).with_context(|| format!("opening {}", root.display()))?;
        let dir = OwnedFd::from(dir);
        vec![
            attach_cgroup(&dir, BPF_CGROUP_INET4_CONNECT)?,
            attach_cgroup(&dir, BPF_CGROUP_INET6_CONNECT)?,
        ]
    } else {
        vec![
            attach_tracepoint("sched", "sched_process_exec")?,
            attach_tracepoint("sched", "sched_process_exit")?,
            attach_raw_tracepoint("inet_sock_set_state")?,
        ]
    };
    eprintln!("hooks: attached");
    // SAFETY: pause(2) has no arguments; it returns when a signal is caught
    // (SIGINT's default action ends the process before that).
    unsafe { libc::pause() };
    drop(held);
    Ok(())
}
