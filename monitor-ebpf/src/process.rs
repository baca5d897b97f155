//! Process lineage: `sched:sched_process_exec` and `sched:sched_process_exit`.
//!
//! Every exec is reported with the executable path, parent and start time,
//! so that userspace can still name a short-lived reader (`cat`) after it
//! has exited; exits are reported for thread-group leaders only. Neither
//! wakes userspace (see [`lineage_wakeup`]).

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel_str_bytes},
    macros::tracepoint,
    programs::TracePointContext,
};
use monitor_common::{KIND_EXEC, KIND_EXIT};

use crate::{
    maps::TP_OFFSETS,
    task::{current_facts, current_task, lineage_wakeup, offsets, read_at, reserve},
};

/// A successful `execve`: the new program's path.
#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    try_exec(&ctx).unwrap_or(0)
}

fn try_exec(ctx: &TracePointContext) -> Result<u32, i64> {
    let Some(o) = offsets() else { return Ok(0) };
    let base = ctx.as_ptr() as u64;
    let data_loc: u32 = read_at(base, TP_OFFSETS.load().exec_filename)?;
    let facts = current_facts(current_task(), &o);
    let Some(mut entry) = reserve(KIND_EXEC, &facts) else {
        return Ok(0);
    };
    let event = entry.as_mut_ptr();
    let filename = base + u64::from(data_loc & 0xffff);
    // SAFETY: `event` is the reserved, zeroed record; the helper writes at
    // most `path.len()` bytes and checks the source address.
    unsafe {
        let _ = bpf_probe_read_kernel_str_bytes(filename as *const u8, &mut (*event).path);
    }
    entry.submit(lineage_wakeup());
    Ok(0)
}

/// A task exits; reported once per process (its thread-group leader).
#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    try_exit().unwrap_or(0)
}

fn try_exit() -> Result<u32, i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 != pid_tgid as u32 {
        return Ok(0);
    }
    let Some(o) = offsets() else { return Ok(0) };
    let task = current_task();
    let facts = current_facts(task, &o);
    let exit_code: u32 = read_at(task, o.task_exit_code).unwrap_or(0);
    let Some(mut entry) = reserve(KIND_EXIT, &facts) else {
        return Ok(0);
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` is the reserved, zeroed record.
    unsafe { (*event).flags = exit_code };
    entry.submit(lineage_wakeup());
    Ok(0)
}
