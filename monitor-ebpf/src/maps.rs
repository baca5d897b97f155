//! Maps and load-time globals shared by all hooks.

use aya_ebpf::{
    Global,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use monitor_common::{
    EndpointKey, FdKey, InodeKey, KernelOffsets, MAX_PATTERNS, PORT_WORDS, PathPattern,
    PathScratch, PendingConnect, SockOffsets, SyscallAbi, TracepointOffsets,
};

/// Kernel struct offsets from BTF (written by the loader).
#[unsafe(no_mangle)]
pub static KERNEL_OFFSETS: Global<KernelOffsets> =
    // SAFETY: all-zero is a valid `KernelOffsets` (plain integers); `ready == 0` disables the hooks.
    Global::new(unsafe { core::mem::zeroed() });

/// Tracepoint field offsets from tracefs (written by the loader).
#[unsafe(no_mangle)]
pub static TP_OFFSETS: Global<TracepointOffsets> =
    // SAFETY: as above.
    Global::new(unsafe { core::mem::zeroed() });

/// `struct sock` field offsets from BTF (written by the loader).
#[unsafe(no_mangle)]
pub static SOCK_OFFSETS: Global<SockOffsets> =
    // SAFETY: as above; `ready == 0` disables the connect program.
    Global::new(unsafe { core::mem::zeroed() });

/// `SockOffsets::dport` alone (written by the loader with the rest; 0,
/// which `skc_dport` never is, until then): the one offset the connect
/// program reads on every connect, loaded without the other eight (a load
/// of the whole struct is nine loads and their spills on the hot path).
#[unsafe(no_mangle)]
pub static SOCK_DPORT: Global<u32> = Global::new(0);

/// Syscall numbers and `pt_regs` layout (written by the loader).
#[unsafe(no_mangle)]
pub static SYSCALL_ABI: Global<SyscallAbi> =
    // SAFETY: as above; all-zero numbers match only `read`, and only once
    // offsets are `ready`, which the loader sets together with this.
    Global::new(unsafe { core::mem::zeroed() });

/// The tgid of the agent itself, whose own opens are not reported.
#[unsafe(no_mangle)]
pub static SELF_TGID: Global<u32> = Global::new(0);

/// Every event goes through this ring buffer (size set by the loader).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// Records the kernel could not reserve in `EVENTS`, per CPU (index 0).
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Watched token inodes: the authority on what is a token.
#[map]
pub static WATCHED_INODES: HashMap<InodeKey, u8> = HashMap::with_max_entries(16384, 0);

/// Path-suffix patterns, the fallback when an inode is not (yet) watched.
#[map]
pub static PATTERNS: Array<PathPattern> = Array::with_max_entries(MAX_PATTERNS, 0);

/// API-server endpoints.
#[map]
pub static ENDPOINTS: HashMap<EndpointKey, u8> = HashMap::with_max_entries(256, 0);

/// The endpoints' destination ports, one bit each: bit `port % 64` of
/// entry `port / 64`. A connect to any other port is let go after one read
/// of its socket (the loader keeps it in step with `ENDPOINTS`).
#[map]
pub static ENDPOINT_PORTS: Array<u64> = Array::with_max_entries(PORT_WORDS, 0);

/// Open token fds, per process; reads of anything else are ignored.
#[map]
pub static TRACKED_FDS: LruHashMap<FdKey, InodeKey> = LruHashMap::with_max_entries(65536, 0);

/// Connects to endpoints waiting for their outcome, per socket.
#[map]
pub static PENDING_CONNECTS: LruHashMap<u64, PendingConnect> =
    LruHashMap::with_max_entries(4096, 0);

/// Scratch space for the caller's path (too big for the 512-byte stack).
#[map]
pub static PATH_SCRATCH: PerCpuArray<PathScratch> = PerCpuArray::with_max_entries(1, 0);

/// Counts one record the ring buffer had no room for.
#[inline(always)]
pub fn count_drop() {
    if let Some(counter) = DROPS.get_ptr_mut(0) {
        // SAFETY: a per-CPU slot, touched only by this CPU with preemption off.
        unsafe { *counter += 1 };
    }
}
