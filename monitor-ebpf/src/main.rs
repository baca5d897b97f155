//! tokenwatch kernel programs: tracepoints and raw tracepoints only (they
//! load and attach on every kernel we target; kprobes, fentry and LSM are
//! not relied upon).
//!
//! - `files`: token opens (`openat`, `openat2`, `open`), reads of token fds
//!   (`read`, `pread64`, `readv`) and `close`;
//! - `net`: TCP connects to API-server endpoints (raw tracepoint
//!   `inet_sock_set_state`);
//! - `process`: lineage (`sched:sched_process_exec` / `exit`).
//!
//! Filtering happens here, so an unrelated syscall costs one or two map
//! lookups and never reaches userspace. Struct and tracepoint field offsets
//! come from userspace (BTF and tracefs) through read-only globals.

#![no_std]
#![no_main]

mod files;
mod maps;
mod net;
mod pattern;
mod process;
mod task;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program whose code could reach a
    // panic (there is no way to unwind or abort in BPF); this is never called.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
