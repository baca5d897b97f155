//! Token file hooks: opens, reads of token fds, closes.
//!
//! An open is reported when, at syscall exit, the new fd's (dev, ino) is in
//! `WATCHED_INODES`, or the path the caller passed matches a suffix pattern.
//! Such an fd goes into `TRACKED_FDS`; `read`/`pread64`/`readv` are reported
//! only for tracked fds (with the bytes actually read) and `close` ends the
//! tracking. Every other open costs an entry/exit map round trip, the fd
//! walk and one lookup; every other read one lookup at entry and one at exit.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated::bpf_probe_read_user_str},
    macros::tracepoint,
    programs::TracePointContext,
};
use monitor_common::{
    FdKey, KIND_TOKEN_CLOSE, KIND_TOKEN_OPEN, KIND_TOKEN_READ, MATCH_INODE, MATCH_SUFFIX, PATH_LEN,
    PendingSyscall, SYSCALL_CLOSE, SYSCALL_OPEN, SYSCALL_OPENAT, SYSCALL_OPENAT2, SYSCALL_PREAD64,
    SYSCALL_READ, SYSCALL_READV,
};

use crate::{
    maps::{PATH_SCRATCH, PENDING, SELF_TGID, TP_OFFSETS, TRACKED_FDS, WATCHED_INODES},
    pattern::matches_any,
    task::{current_facts, current_task, inode_of_fd, offsets, read_at, reserve},
};

/// Reads a syscall tracepoint argument at `offset` of the context.
#[inline(always)]
fn arg(ctx: &TracePointContext, offset: u32) -> Result<u64, i64> {
    read_at(ctx.as_ptr_u64(), offset)
}

trait CtxAddr {
    fn as_ptr_u64(&self) -> u64;
}

impl CtxAddr for TracePointContext {
    #[inline(always)]
    fn as_ptr_u64(&self) -> u64 {
        use aya_ebpf::EbpfContext as _;
        self.as_ptr() as u64
    }
}

#[inline(always)]
fn is_self(pid_tgid: u64) -> bool {
    (pid_tgid >> 32) as u32 == SELF_TGID.load()
}

/// Remembers an open's path pointer and flags until its exit.
#[inline(always)]
fn enter_open(filename: u64, flags: u32, syscall: u32) -> Result<u32, i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if is_self(pid_tgid) {
        return Ok(0);
    }
    let pending = PendingSyscall {
        filename,
        arg: flags,
        syscall,
    };
    PENDING.insert(pid_tgid, pending, 0)?;
    Ok(0)
}

/// `openat(dfd, filename, flags, mode)` entry.
#[tracepoint(category = "syscalls", name = "sys_enter_openat")]
pub fn sys_enter_openat(ctx: TracePointContext) -> u32 {
    let tp = TP_OFFSETS.load();
    let run = || -> Result<u32, i64> {
        enter_open(
            arg(&ctx, tp.openat_filename)?,
            arg(&ctx, tp.openat_flags)? as u32,
            SYSCALL_OPENAT,
        )
    };
    run().unwrap_or(0)
}

/// `openat2(dfd, filename, how, size)` entry; the flags are `how->flags`.
#[tracepoint(category = "syscalls", name = "sys_enter_openat2")]
pub fn sys_enter_openat2(ctx: TracePointContext) -> u32 {
    let tp = TP_OFFSETS.load();
    let run = || -> Result<u32, i64> {
        let how = arg(&ctx, tp.openat2_how)?;
        // SAFETY: a user pointer read through the checked helper.
        let flags: u64 = unsafe { bpf_probe_read_user(how as *const u64) }.unwrap_or(0);
        enter_open(
            arg(&ctx, tp.openat2_filename)?,
            flags as u32,
            SYSCALL_OPENAT2,
        )
    };
    run().unwrap_or(0)
}

/// `open(filename, flags, mode)` entry.
#[tracepoint(category = "syscalls", name = "sys_enter_open")]
pub fn sys_enter_open(ctx: TracePointContext) -> u32 {
    let tp = TP_OFFSETS.load();
    let run = || -> Result<u32, i64> {
        enter_open(
            arg(&ctx, tp.open_filename)?,
            arg(&ctx, tp.open_flags)? as u32,
            SYSCALL_OPEN,
        )
    };
    run().unwrap_or(0)
}

/// `openat` exit: see [`exit_open`].
#[tracepoint(category = "syscalls", name = "sys_exit_openat")]
pub fn sys_exit_openat(ctx: TracePointContext) -> u32 {
    exit_open(&ctx).unwrap_or(0)
}

/// `openat2` exit: see [`exit_open`].
#[tracepoint(category = "syscalls", name = "sys_exit_openat2")]
pub fn sys_exit_openat2(ctx: TracePointContext) -> u32 {
    exit_open(&ctx).unwrap_or(0)
}

/// `open` exit: see [`exit_open`].
#[tracepoint(category = "syscalls", name = "sys_exit_open")]
pub fn sys_exit_open(ctx: TracePointContext) -> u32 {
    exit_open(&ctx).unwrap_or(0)
}

/// At an open's exit: resolve the new fd to (dev, ino); report and track it
/// when the inode is watched or the caller's path matches a pattern.
#[inline(always)]
fn exit_open(ctx: &TracePointContext) -> Result<u32, i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(pending) = (unsafe { PENDING.get(&pid_tgid) }).copied() else {
        return Ok(0);
    };
    let _ = PENDING.remove(&pid_tgid);
    if !matches!(
        pending.syscall,
        SYSCALL_OPENAT | SYSCALL_OPENAT2 | SYSCALL_OPEN
    ) {
        return Ok(0);
    }
    let tp = TP_OFFSETS.load();
    let fd: i64 = read_at(ctx.as_ptr_u64(), tp.exit_ret)?;
    if fd < 0 {
        return Ok(0);
    }
    let Some(o) = offsets() else { return Ok(0) };
    let task = current_task();
    let inode = inode_of_fd(task, fd as u32, &o)?;

    let mut matched = 0;
    // SAFETY: only the presence of the key is used.
    if unsafe { WATCHED_INODES.get(&inode) }.is_some() {
        matched |= MATCH_INODE;
    }
    let Some(scratch) = PATH_SCRATCH.get_ptr_mut(0) else {
        return Ok(0);
    };
    // SAFETY: `scratch` is this CPU's slot; the helper writes at most
    // PATH_LEN bytes into `path` and NUL-terminates.
    let copied = unsafe {
        bpf_probe_read_user_str(
            (*scratch).path.as_mut_ptr().cast(),
            PATH_LEN as u32,
            pending.filename as *const _,
        )
    };
    // SAFETY: as above.
    unsafe { (*scratch).len = if copied > 0 { (copied - 1) as u32 } else { 0 } };
    if copied > 0 && matches_any(scratch) {
        matched |= MATCH_SUFFIX;
    }
    if matched == 0 {
        return Ok(0);
    }

    let facts = current_facts(task, &o);
    let key = FdKey {
        tgid: facts.tgid,
        fd: fd as u32,
    };
    TRACKED_FDS.insert(key, inode, 0)?;
    let Some(mut entry) = reserve(KIND_TOKEN_OPEN, &facts) else {
        return Ok(0);
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` is the reserved, zeroed record.
    unsafe {
        (*event).syscall = pending.syscall;
        (*event).dev = inode.dev;
        (*event).ino = inode.ino;
        (*event).fd = fd as i32;
        (*event).flags = pending.arg;
        (*event).matched = matched;
        if copied > 0 {
            let src = (*scratch).path.as_ptr().cast::<u64>();
            let dst = (*event).path.as_mut_ptr().cast::<u64>();
            let mut i = 0;
            while i < PATH_LEN / 8 {
                *dst.add(i) = *src.add(i);
                i += 1;
            }
        }
    }
    entry.submit(0);
    Ok(0)
}

/// At a read's entry: remember the fd when it is a tracked token fd.
#[inline(always)]
fn enter_read(ctx: &TracePointContext, syscall: u32) -> Result<u32, i64> {
    let fd = arg(ctx, TP_OFFSETS.load().fd_arg)? as u32;
    let pid_tgid = bpf_get_current_pid_tgid();
    let key = FdKey {
        tgid: (pid_tgid >> 32) as u32,
        fd,
    };
    // SAFETY: only the presence of the key is used.
    if unsafe { TRACKED_FDS.get(&key) }.is_none() {
        return Ok(0);
    }
    PENDING.insert(
        pid_tgid,
        PendingSyscall {
            filename: 0,
            arg: fd,
            syscall,
        },
        0,
    )?;
    Ok(0)
}

/// At a read's exit: report the bytes read from a tracked fd.
#[inline(always)]
fn exit_read(ctx: &TracePointContext) -> Result<u32, i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(pending) = (unsafe { PENDING.get(&pid_tgid) }).copied() else {
        return Ok(0);
    };
    let _ = PENDING.remove(&pid_tgid);
    if !matches!(
        pending.syscall,
        SYSCALL_READ | SYSCALL_PREAD64 | SYSCALL_READV
    ) {
        return Ok(0);
    }
    let bytes: i64 = read_at(ctx.as_ptr_u64(), TP_OFFSETS.load().exit_ret)?;
    let key = FdKey {
        tgid: (pid_tgid >> 32) as u32,
        fd: pending.arg,
    };
    // SAFETY: the value is copied out.
    let Some(inode) = (unsafe { TRACKED_FDS.get(&key) }).copied() else {
        return Ok(0);
    };
    let Some(o) = offsets() else { return Ok(0) };
    let facts = current_facts(current_task(), &o);
    let Some(mut entry) = reserve(KIND_TOKEN_READ, &facts) else {
        return Ok(0);
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` is the reserved, zeroed record.
    unsafe {
        (*event).syscall = pending.syscall;
        (*event).dev = inode.dev;
        (*event).ino = inode.ino;
        (*event).fd = pending.arg as i32;
        (*event).ret = bytes;
    }
    entry.submit(0);
    Ok(0)
}

/// `read(fd, buf, count)` entry.
#[tracepoint(category = "syscalls", name = "sys_enter_read")]
pub fn sys_enter_read(ctx: TracePointContext) -> u32 {
    enter_read(&ctx, SYSCALL_READ).unwrap_or(0)
}

/// `pread64(fd, buf, count, pos)` entry.
#[tracepoint(category = "syscalls", name = "sys_enter_pread64")]
pub fn sys_enter_pread64(ctx: TracePointContext) -> u32 {
    enter_read(&ctx, SYSCALL_PREAD64).unwrap_or(0)
}

/// `readv(fd, iov, iovcnt)` entry.
#[tracepoint(category = "syscalls", name = "sys_enter_readv")]
pub fn sys_enter_readv(ctx: TracePointContext) -> u32 {
    enter_read(&ctx, SYSCALL_READV).unwrap_or(0)
}

/// `read` exit.
#[tracepoint(category = "syscalls", name = "sys_exit_read")]
pub fn sys_exit_read(ctx: TracePointContext) -> u32 {
    exit_read(&ctx).unwrap_or(0)
}

/// `pread64` exit.
#[tracepoint(category = "syscalls", name = "sys_exit_pread64")]
pub fn sys_exit_pread64(ctx: TracePointContext) -> u32 {
    exit_read(&ctx).unwrap_or(0)
}

/// `readv` exit.
#[tracepoint(category = "syscalls", name = "sys_exit_readv")]
pub fn sys_exit_readv(ctx: TracePointContext) -> u32 {
    exit_read(&ctx).unwrap_or(0)
}

/// `close(fd)` entry: a tracked fd stops being tracked, and that is reported.
#[tracepoint(category = "syscalls", name = "sys_enter_close")]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    let run = || -> Result<u32, i64> {
        let fd = arg(&ctx, TP_OFFSETS.load().fd_arg)? as u32;
        let pid_tgid = bpf_get_current_pid_tgid();
        let key = FdKey {
            tgid: (pid_tgid >> 32) as u32,
            fd,
        };
        // SAFETY: the value is copied out before the entry is removed.
        let Some(inode) = (unsafe { TRACKED_FDS.get(&key) }).copied() else {
            return Ok(0);
        };
        let _ = TRACKED_FDS.remove(&key);
        let Some(o) = offsets() else { return Ok(0) };
        let facts = current_facts(current_task(), &o);
        let Some(mut entry) = reserve(KIND_TOKEN_CLOSE, &facts) else {
            return Ok(0);
        };
        let event = entry.as_mut_ptr();
        // SAFETY: `event` is the reserved, zeroed record.
        unsafe {
            (*event).syscall = SYSCALL_CLOSE;
            (*event).dev = inode.dev;
            (*event).ino = inode.ino;
            (*event).fd = fd as i32;
        }
        entry.submit(0);
        Ok(0)
    };
    run().unwrap_or(0)
}
