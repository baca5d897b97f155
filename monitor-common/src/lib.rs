//! Wire types shared by the tokenwatch kernel programs (`monitor-ebpf`) and
//! the agent (`monitor`).
//!
//! Everything here is `#[repr(C)]`, `Copy`, made only of fixed-width
//! integers and byte arrays, with explicit padding and a size assertion
//! beside each type, so both sides agree on the layout byte for byte. Kinds
//! are `u32` constants, never Rust enums: userspace turns them into enums
//! with `TryFrom<u32>` and rejects unknown values.
//!
//! With the `user` feature the types implement `aya::Pod` so the agent can
//! put them in maps and globals.

#![no_std]

use core::mem::size_of;

/// Bytes of the opened file's own name compared with a pattern's last component.
pub const NAME_LEN: usize = 32;
/// Length of `comm` (the kernel's `TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;
/// Bytes of path carried in an event (including the terminating NUL).
pub const PATH_LEN: usize = 256;
/// Longest part of a path pattern (either side of its `*`).
pub const PATTERN_PART_LEN: usize = 64;
/// Number of path-suffix patterns the kernel checks.
pub const MAX_PATTERNS: u32 = 8;
/// Words of the endpoint-port bitmap (`ENDPOINT_PORTS`): one bit per TCP port.
pub const PORT_WORDS: u32 = 65536 / 64;

/// `(word, bit)` of `port` in the endpoint-port bitmap.
#[must_use]
#[inline(always)]
pub const fn port_bit(port: u16) -> (u32, u64) {
    ((port >> 6) as u32, 1 << (port & 63))
}

/// Slashes the kernel locates from the end of a path: a `*` pattern's tail
/// may have at most `MAX_SLASHES - 1` of them.
pub const MAX_SLASHES: usize = 8;

/// A token file was opened (`openat`, `openat2`, `open`).
pub const KIND_TOKEN_OPEN: u32 = 1;
/// A tracked token fd was read (`read`, `pread64`, `readv`).
pub const KIND_TOKEN_READ: u32 = 2;
/// A tracked token fd was closed; tracking ends.
pub const KIND_TOKEN_CLOSE: u32 = 3;
/// A TCP connect to an API-server endpoint (CLOSE -> SYN_SENT, caller's context).
pub const KIND_CONNECT: u32 = 4;
/// The outcome of such a connect: SYN_SENT -> ESTABLISHED, or -> CLOSE (refused, reset, timed out).
pub const KIND_CONNECT_RESULT: u32 = 5;
/// A process called `execve` (lineage).
pub const KIND_EXEC: u32 = 6;
/// A process (thread-group leader) exited (lineage).
pub const KIND_EXIT: u32 = 7;

/// `matched` bit: the file's (dev, ino) is in the watched-inode map.
pub const MATCH_INODE: u32 = 1;
/// `matched` bit: the caller's path matched a configured suffix pattern.
pub const MATCH_SUFFIX: u32 = 2;

/// `syscall` values of file events.
pub const SYSCALL_OPENAT: u32 = 1;
/// `openat2(2)`.
pub const SYSCALL_OPENAT2: u32 = 2;
/// `open(2)`.
pub const SYSCALL_OPEN: u32 = 3;
/// `read(2)`.
pub const SYSCALL_READ: u32 = 4;
/// `pread64(2)`.
pub const SYSCALL_PREAD64: u32 = 5;
/// `readv(2)`.
pub const SYSCALL_READV: u32 = 6;
/// `close(2)`.
pub const SYSCALL_CLOSE: u32 = 7;

/// `AF_INET`.
pub const AF_INET: u16 = 2;
/// `AF_INET6`.
pub const AF_INET6: u16 = 10;
/// TCP state numbers as the `inet_sock_set_state` tracepoint gives them.
pub const TCP_ESTABLISHED: i32 = 1;
/// `TCP_SYN_SENT`.
pub const TCP_SYN_SENT: i32 = 2;
/// `TCP_CLOSE`.
pub const TCP_CLOSE: i32 = 7;
/// `IPPROTO_TCP`.
pub const IPPROTO_TCP: u16 = 6;

/// One record in the ring buffer. Which fields mean something depends on
/// `kind`; the rest are zero.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Event {
    /// One of the `KIND_*` constants.
    pub kind: u32,
    /// Thread-group id (the process id as userspace sees it, in the init pid namespace).
    pub tgid: u32,
    /// Thread id.
    pub pid: u32,
    /// Parent's thread-group id (`task->real_parent->tgid`).
    pub ppid: u32,
    /// Real user id.
    pub uid: u32,
    /// Real group id.
    pub gid: u32,
    /// Mount-namespace inode number (`task->nsproxy->mnt_ns->ns.inum`).
    pub mnt_ns: u32,
    /// For file events, one of the `SYSCALL_*` constants.
    pub syscall: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub ktime_ns: u64,
    /// cgroup v2 id of the task (`bpf_get_current_cgroup_id()`).
    pub cgroup_id: u64,
    /// Task start time (CLOCK_MONOTONIC ns), from `task->start_time`.
    pub start_ns: u64,
    /// Task `comm`, NUL-padded.
    pub comm: [u8; COMM_LEN],
    /// File events: inode number.
    pub ino: u64,
    /// File events: device of the inode's superblock, kernel encoding (`major << 20 | minor`).
    pub dev: u32,
    /// File events: the file descriptor.
    pub fd: i32,
    /// Open events: the open flags; exit events: the exit code.
    pub flags: u32,
    /// Open events: `MATCH_*` bits saying why the file is a token.
    pub matched: u32,
    /// Read events: bytes read (negative errno on failure). Connect results: the new TCP state.
    pub ret: i64,
    /// Connect events: `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// Connect events: source port (host byte order; 0 before the kernel picked one).
    pub sport: u16,
    /// Connect events: destination port (host byte order).
    pub dport: u16,
    /// Explicit padding.
    pub _pad0: u16,
    /// Connect events: kernel socket address, to pair an attempt with its result.
    pub sock_id: u64,
    /// Connect events: source address (IPv4 in the first four bytes).
    pub saddr: [u8; 16],
    /// Connect events: destination address (IPv4 in the first four bytes).
    pub daddr: [u8; 16],
    /// Open events: the path as the caller passed it; exec events: the executable path.
    /// NUL-terminated unless it filled the buffer (then it was cut short).
    pub path: [u8; PATH_LEN],
}
const _: () = assert!(size_of::<Event>() == 408);

impl Event {
    /// An all-zero event (the kernel side fills one in place in the ring buffer).
    #[must_use]
    pub const fn zeroed() -> Self {
        Self {
            kind: 0,
            tgid: 0,
            pid: 0,
            ppid: 0,
            uid: 0,
            gid: 0,
            mnt_ns: 0,
            syscall: 0,
            ktime_ns: 0,
            cgroup_id: 0,
            start_ns: 0,
            comm: [0; COMM_LEN],
            ino: 0,
            dev: 0,
            fd: 0,
            flags: 0,
            matched: 0,
            ret: 0,
            family: 0,
            sport: 0,
            dport: 0,
            _pad0: 0,
            sock_id: 0,
            saddr: [0; 16],
            daddr: [0; 16],
            path: [0; PATH_LEN],
        }
    }
}

/// Per-CPU scratch space for matching the caller's path: the path itself
/// (too big for the 512-byte stack) and the positions of its last slashes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PathScratch {
    /// The path, NUL-terminated.
    pub path: [u8; PATH_LEN],
    /// `slashes[j]` is the index of the `j`-th `/` counting from the end.
    pub slashes: [u32; MAX_SLASHES],
    /// How many entries of `slashes` are valid.
    pub slash_count: u32,
    /// The path's length without its NUL.
    pub len: u32,
}
const _: () = assert!(size_of::<PathScratch>() == 296);

/// Key of the watched-inode map and value of the tracked-fd map: a file's identity.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InodeKey {
    /// Device, kernel encoding (`major << 20 | minor`).
    pub dev: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// Inode number.
    pub ino: u64,
}
const _: () = assert!(size_of::<InodeKey>() == 16);

/// Key of the tracked-fd map: one open token fd of one process.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FdKey {
    /// Thread-group id owning the fd table.
    pub tgid: u32,
    /// The file descriptor.
    pub fd: u32,
}
const _: () = assert!(size_of::<FdKey>() == 8);

/// Key of the API-server endpoint map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// Destination port, host byte order.
    pub port: u16,
    /// Explicit padding.
    pub _pad: u32,
    /// Address; IPv4 in the first four bytes, the rest zero.
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<EndpointKey>() == 24);

/// One path-suffix pattern: `head` `*` `tail` when `has_star` is 1, else
/// just `tail`. The `*` stands for exactly one non-empty path component.
/// A pattern with `tail_len == 0` is unused.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PathPattern {
    /// Bytes used in `head` (before the `*`).
    pub head_len: u32,
    /// Bytes used in `tail` (after the `*`, or the whole suffix).
    pub tail_len: u32,
    /// 1 when the pattern has a `*` between `head` and `tail`.
    pub has_star: u32,
    /// Number of `/` in `tail` (the `*` component ends at the slash with
    /// this index, counting from the end of the path from 0).
    pub tail_slashes: u32,
    /// Length of the last component of `tail` (the file name the opened
    /// file itself must have; checked first, as a cheap prefilter).
    pub name_len: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// The part before the `*`; it must end with `/`.
    pub head: [u8; PATTERN_PART_LEN],
    /// The part after the `*` (it starts with `/`), or the whole suffix.
    pub tail: [u8; PATTERN_PART_LEN],
}
const _: () = assert!(size_of::<PathPattern>() == 152);

/// Byte offsets of the kernel struct fields the programs walk, read from
/// BTF in userspace and handed to the programs as a global at load time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `task_struct.real_parent`
    pub task_real_parent: u32,
    /// `task_struct.tgid`
    pub task_tgid: u32,
    /// `task_struct.files`
    pub task_files: u32,
    /// `task_struct.nsproxy`
    pub task_nsproxy: u32,
    /// `task_struct.start_time`
    pub task_start_time: u32,
    /// `task_struct.exit_code`
    pub task_exit_code: u32,
    /// `files_struct.fdt`
    pub files_fdt: u32,
    /// `fdtable.max_fds`
    pub fdtable_max_fds: u32,
    /// `fdtable.fd`
    pub fdtable_fd: u32,
    /// `file.f_inode`
    pub file_inode: u32,
    /// `inode.i_ino`
    pub inode_ino: u32,
    /// `inode.i_sb`
    pub inode_sb: u32,
    /// `super_block.s_dev`
    pub sb_dev: u32,
    /// `nsproxy.mnt_ns`
    pub nsproxy_mnt_ns: u32,
    /// `mnt_namespace.ns.inum` (the nested offset)
    pub mnt_ns_inum: u32,
    /// 1 once userspace filled this in; the programs do nothing while it is 0.
    pub ready: u32,
}
const _: () = assert!(size_of::<KernelOffsets>() == 64);

/// Byte offsets of the tracepoint fields the programs read, taken from each
/// tracepoint's `format` file in tracefs at load time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracepointOffsets {
    /// `sched_process_exec.filename` (a `__data_loc`: low 16 bits offset, high 16 length)
    pub exec_filename: u32,
}
const _: () = assert!(size_of::<TracepointOffsets>() == 4);

/// Byte offsets in `struct sock` of the fields the connect program reads,
/// from BTF (the raw tracepoint `inet_sock_set_state` hands it the socket,
/// not a record). The `skc_*` fields are in `sock.__sk_common`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockOffsets {
    /// `sock.sk_protocol` (a `u16`, Linux 5.6+)
    pub protocol: u32,
    /// `sock.__sk_common.skc_family` (a `u16`)
    pub family: u32,
    /// `sock.__sk_common.skc_dport` (a `u16`, network byte order)
    pub dport: u32,
    /// `sock.__sk_common.skc_num` (a `u16`, the local port in host byte order)
    pub num: u32,
    /// `sock.__sk_common.skc_daddr` (IPv4, network byte order)
    pub daddr: u32,
    /// `sock.__sk_common.skc_rcv_saddr` (IPv4, network byte order)
    pub rcv_saddr: u32,
    /// `sock.__sk_common.skc_v6_daddr`
    pub v6_daddr: u32,
    /// `sock.__sk_common.skc_v6_rcv_saddr`
    pub v6_rcv_saddr: u32,
    /// 1 once userspace filled this in; the connect program does nothing while it is 0.
    pub ready: u32,
}
const _: () = assert!(size_of::<SockOffsets>() == 36);

/// A syscall number the architecture does not have (e.g. `open` on arm64).
pub const NO_SYSCALL: u64 = u64::MAX;

/// How syscalls look at `raw_syscalls:sys_exit` on this architecture: the
/// numbers of the syscalls watched, and where in `struct pt_regs` (read
/// from BTF) the number and the first three arguments are.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallAbi {
    /// `__NR_read`
    pub nr_read: u64,
    /// `__NR_pread64`
    pub nr_pread64: u64,
    /// `__NR_readv`
    pub nr_readv: u64,
    /// `__NR_close`
    pub nr_close: u64,
    /// `__NR_open`, or [`NO_SYSCALL`]
    pub nr_open: u64,
    /// `__NR_openat`
    pub nr_openat: u64,
    /// `__NR_openat2`
    pub nr_openat2: u64,
    /// Offset of the syscall number in `pt_regs` (x86_64: `orig_ax`).
    pub regs_nr: u32,
    /// Offset of argument 0 (x86_64: `di`).
    pub regs_arg0: u32,
    /// Offset of argument 1 (x86_64: `si`).
    pub regs_arg1: u32,
    /// Offset of argument 2 (x86_64: `dx`).
    pub regs_arg2: u32,
    /// Offset of `dentry` in `struct file`'s `f_path` (`file.f_path.dentry`).
    pub file_dentry: u32,
    /// Offset of the name pointer in `struct dentry` (`dentry.d_name.name`).
    pub dentry_name: u32,
}
const _: () = assert!(size_of::<SyscallAbi>() == 80);

/// What the kernel remembers about a connect to an API-server endpoint
/// until it is established or fails (keyed by the socket address).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PendingConnect {
    /// The caller's thread-group id.
    pub tgid: u32,
    /// The caller's thread id.
    pub pid: u32,
    /// The caller's parent's thread-group id.
    pub ppid: u32,
    /// The caller's uid.
    pub uid: u32,
    /// The caller's gid.
    pub gid: u32,
    /// The caller's mount namespace.
    pub mnt_ns: u32,
    /// The caller's cgroup id.
    pub cgroup_id: u64,
    /// The caller's start time.
    pub start_ns: u64,
    /// The caller's comm.
    pub comm: [u8; COMM_LEN],
}
const _: () = assert!(size_of::<PendingConnect>() == 56);

#[cfg(feature = "user")]
mod user {
    // SAFETY (all impls): plain `#[repr(C)]` structs of integers and byte
    // arrays with explicit padding (sizes asserted above): every bit pattern
    // is valid and there are no uninitialised bytes.
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::InodeKey {}
    unsafe impl aya::Pod for super::FdKey {}
    unsafe impl aya::Pod for super::EndpointKey {}
    unsafe impl aya::Pod for super::PathPattern {}
    unsafe impl aya::Pod for super::PathScratch {}
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::TracepointOffsets {}
    unsafe impl aya::Pod for super::SockOffsets {}
    unsafe impl aya::Pod for super::SyscallAbi {}
    unsafe impl aya::Pod for super::PendingConnect {}
}
