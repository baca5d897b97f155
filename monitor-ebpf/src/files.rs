//! Token file syscalls, all seen at one place: `raw_syscalls:sys_exit`.
//!
//! At a syscall's exit the user registers saved at entry still hold its
//! arguments, so one program handles everything without remembering state
//! between entry and exit:
//!
//! - `openat`/`openat2`/`open` that succeeded: the new fd is resolved to
//!   (dev, ino); it is a token when that inode is in `WATCHED_INODES`, or
//!   when the opened file's own name is the last component of a suffix
//!   pattern and the path the caller passed matches that pattern. A token
//!   fd goes into `TRACKED_FDS` and the open is reported.
//! - `read`/`pread64`/`readv` of a tracked fd: reported with the bytes
//!   actually read. Any other fd costs one lookup.
//! - `close` of a tracked fd: tracking ends, and that is reported.
//!
//! Every other syscall costs one register read and a few compares. This is
//! much cheaper than the per-syscall `syscalls:*` tracepoints, which build a
//! perf record for every call before the program runs.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_kernel_buf, bpf_probe_read_user,
        generated::bpf_probe_read_user_str,
    },
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use monitor_common::{
    FdKey, InodeKey, KIND_TOKEN_CLOSE, KIND_TOKEN_OPEN, KIND_TOKEN_READ, MATCH_INODE, MATCH_SUFFIX,
    NAME_LEN, PATH_LEN, SYSCALL_CLOSE, SYSCALL_OPEN, SYSCALL_OPENAT, SYSCALL_OPENAT2,
    SYSCALL_PREAD64, SYSCALL_READ, SYSCALL_READV, SyscallAbi,
};

use crate::{
    maps::{PATH_SCRATCH, SELF_TGID, SYSCALL_ABI, TRACKED_FDS, WATCHED_INODES},
    pattern::{matches_any, name_may_match},
    task::{REPORT_WAKEUP, current_facts, current_task, inode_of_fd, offsets, read_at, reserve},
};

/// Every syscall exit; see the module docs for what is kept.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> u32 {
    try_sys_exit(&ctx).unwrap_or(0)
}

#[inline(always)]
fn try_sys_exit(ctx: &RawTracePointContext) -> Result<u32, i64> {
    let regs: u64 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    let abi = SYSCALL_ABI.load();
    let nr: u64 = read_at(regs, abi.regs_nr)?;
    if nr == abi.nr_read || nr == abi.nr_pread64 || nr == abi.nr_readv {
        let syscall = if nr == abi.nr_read {
            SYSCALL_READ
        } else if nr == abi.nr_pread64 {
            SYSCALL_PREAD64
        } else {
            SYSCALL_READV
        };
        return exit_read(regs, ret, syscall, &abi);
    }
    if nr == abi.nr_close {
        return exit_close(regs, ret, &abi);
    }
    if ret < 0 {
        return Ok(0);
    }
    if nr == abi.nr_openat {
        let filename: u64 = read_at(regs, abi.regs_arg1)?;
        let flags: u64 = read_at(regs, abi.regs_arg2)?;
        return exit_open(ret, filename, flags as u32, SYSCALL_OPENAT, &abi);
    }
    if nr == abi.nr_openat2 {
        let filename: u64 = read_at(regs, abi.regs_arg1)?;
        let how: u64 = read_at(regs, abi.regs_arg2)?;
        // `struct open_how` starts with `__u64 flags`.
        // SAFETY: a user pointer read through the checked helper.
        let flags: u64 = unsafe { bpf_probe_read_user(how as *const u64) }.unwrap_or(0);
        return exit_open(ret, filename, flags as u32, SYSCALL_OPENAT2, &abi);
    }
    if nr == abi.nr_open {
        let filename: u64 = read_at(regs, abi.regs_arg0)?;
        let flags: u64 = read_at(regs, abi.regs_arg1)?;
        return exit_open(ret, filename, flags as u32, SYSCALL_OPEN, &abi);
    }
    Ok(0)
}

#[inline(always)]
fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// The opened file's own name (`file->f_path.dentry->d_name.name`), NUL-padded.
#[inline(always)]
fn file_name(file: u64, abi: &SyscallAbi) -> Result<[u8; NAME_LEN], i64> {
    let dentry: u64 = read_at(file, abi.file_dentry)?;
    let name: u64 = read_at(dentry, abi.dentry_name)?;
    let mut buf = [0u8; NAME_LEN];
    // SAFETY: a kernel pointer read through the checked helper; names
    // shorter than NAME_LEN are NUL-terminated inside the buffer, longer
    // ones cannot equal a pattern's name (at most NAME_LEN - 1 bytes).
    unsafe { bpf_probe_read_kernel_buf(name as *const u8, &mut buf) }.map_err(i64::from)?;
    Ok(buf)
}

/// A successful open: report and track the fd when the file is a token.
#[inline(always)]
fn exit_open(
    fd: i64,
    filename: u64,
    flags: u32,
    syscall: u32,
    abi: &SyscallAbi,
) -> Result<u32, i64> {
    if current_tgid() == SELF_TGID.load() {
        return Ok(0);
    }
    let Some(o) = offsets() else { return Ok(0) };
    let task = current_task();
    let (inode, file) = inode_of_fd(task, fd as u32, &o)?;

    let mut matched = 0;
    // SAFETY: only the presence of the key is used.
    if unsafe { WATCHED_INODES.get(&inode) }.is_some() {
        matched |= MATCH_INODE;
    }
    let Some(scratch) = PATH_SCRATCH.get_ptr_mut(0) else {
        return Ok(0);
    };
    // The path is read when it will be reported (inode match) or when the
    // file's own name makes a suffix match possible.
    let name_ok = file_name(file, abi).is_ok_and(|name| name_may_match(&name));
    let mut copied = 0;
    if matched != 0 || name_ok {
        // SAFETY: `scratch` is this CPU's slot; the helper writes at most
        // PATH_LEN bytes into `path` and NUL-terminates.
        copied = unsafe {
            bpf_probe_read_user_str(
                (*scratch).path.as_mut_ptr().cast(),
                PATH_LEN as u32,
                filename as *const _,
            )
        };
        // SAFETY: as above.
        unsafe { (*scratch).len = if copied > 0 { (copied - 1) as u32 } else { 0 } };
    }
    if name_ok && copied > 0 && matches_any(scratch) {
        matched |= MATCH_SUFFIX;
    }
    if matched == 0 {
        return Ok(0);
    }

    let facts = current_facts(task, &o);
    TRACKED_FDS.insert(
        FdKey {
            tgid: facts.tgid,
            fd: fd as u32,
        },
        inode,
        0,
    )?;
    let Some(mut entry) = reserve(KIND_TOKEN_OPEN, &facts) else {
        return Ok(0);
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` is the reserved, zeroed record; `scratch` as above.
    unsafe {
        (*event).syscall = syscall;
        (*event).dev = inode.dev;
        (*event).ino = inode.ino;
        (*event).fd = fd as i32;
        (*event).flags = flags;
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
    entry.submit(REPORT_WAKEUP);
    Ok(0)
}

/// The tracked fd named by the syscall's first argument, if any.
#[inline(always)]
fn tracked_fd(regs: u64, abi: &SyscallAbi) -> Result<Option<(FdKey, InodeKey)>, i64> {
    let fd: u64 = read_at(regs, abi.regs_arg0)?;
    let key = FdKey {
        tgid: current_tgid(),
        fd: fd as u32,
    };
    // SAFETY: the value is copied out.
    Ok(unsafe { TRACKED_FDS.get(&key) }
        .copied()
        .map(|inode| (key, inode)))
}

/// A read of any kind: reported when its fd is tracked.
#[inline(always)]
fn exit_read(regs: u64, bytes: i64, syscall: u32, abi: &SyscallAbi) -> Result<u32, i64> {
    let Some((key, inode)) = tracked_fd(regs, abi)? else {
        return Ok(0);
    };
    emit_fd_event(KIND_TOKEN_READ, syscall, key, inode, bytes)
}

/// A close: a tracked fd stops being tracked, and that is reported.
#[inline(always)]
fn exit_close(regs: u64, ret: i64, abi: &SyscallAbi) -> Result<u32, i64> {
    if ret != 0 {
        return Ok(0);
    }
    let Some((key, inode)) = tracked_fd(regs, abi)? else {
        return Ok(0);
    };
    let _ = TRACKED_FDS.remove(&key);
    emit_fd_event(KIND_TOKEN_CLOSE, SYSCALL_CLOSE, key, inode, 0)
}

#[inline(always)]
fn emit_fd_event(
    kind: u32,
    syscall: u32,
    key: FdKey,
    inode: InodeKey,
    ret: i64,
) -> Result<u32, i64> {
    let Some(o) = offsets() else { return Ok(0) };
    let facts = current_facts(current_task(), &o);
    let Some(mut entry) = reserve(kind, &facts) else {
        return Ok(0);
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` is the reserved, zeroed record.
    unsafe {
        (*event).syscall = syscall;
        (*event).dev = inode.dev;
        (*event).ino = inode.ino;
        (*event).fd = key.fd as i32;
        (*event).ret = ret;
    }
    entry.submit(REPORT_WAKEUP);
    Ok(0)
}
