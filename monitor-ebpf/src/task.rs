//! Reading the current task and its files through the BTF offsets, and
//! filling the common part of an event.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_get_current_uid_gid, bpf_ktime_get_ns, bpf_probe_read_kernel,
    },
    maps::ring_buf::RingBufEntry,
};
use monitor_common::{Event, InodeKey, KernelOffsets};

use crate::maps::{EVENTS, KERNEL_OFFSETS, count_drop};

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
pub fn read_at<T>(base: u64, offset: u32) -> Result<T, i64> {
    // SAFETY: bpf_probe_read_kernel checks the address and fails cleanly.
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const T) }.map_err(i64::from)
}

/// The offsets, or `None` while userspace has not filled them in.
#[inline(always)]
pub fn offsets() -> Option<KernelOffsets> {
    let offsets = KERNEL_OFFSETS.load();
    (offsets.ready == 1).then_some(offsets)
}

/// The current task's `struct task_struct *`.
#[inline(always)]
pub fn current_task() -> u64 {
    // SAFETY: a plain helper call.
    unsafe { bpf_get_current_task() }
}

/// (dev, ino) of the file behind `fd` in the current task's fd table, and
/// the `struct file *` itself.
#[inline(always)]
pub fn inode_of_fd(task: u64, fd: u32, o: &KernelOffsets) -> Result<(InodeKey, u64), i64> {
    let files: u64 = read_at(task, o.task_files)?;
    let fdt: u64 = read_at(files, o.files_fdt)?;
    let max_fds: u32 = read_at(fdt, o.fdtable_max_fds)?;
    if fd >= max_fds {
        return Err(-1);
    }
    let fd_array: u64 = read_at(fdt, o.fdtable_fd)?;
    let file: u64 = read_at(fd_array + u64::from(fd) * 8, 0)?;
    if file == 0 {
        return Err(-1);
    }
    let inode: u64 = read_at(file, o.file_inode)?;
    let ino: u64 = read_at(inode, o.inode_ino)?;
    let sb: u64 = read_at(inode, o.inode_sb)?;
    let dev: u32 = read_at(sb, o.sb_dev)?;
    Ok((InodeKey { dev, _pad: 0, ino }, file))
}

/// The process facts every event carries.
#[derive(Clone, Copy)]
pub struct TaskFacts {
    pub tgid: u32,
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub mnt_ns: u32,
    pub cgroup_id: u64,
    pub start_ns: u64,
    pub comm: [u8; 16],
}

/// Collects [`TaskFacts`] for the current task. Fields the kernel does not
/// give (a failed read) are left zero rather than dropping the event.
#[inline(always)]
pub fn current_facts(task: u64, o: &KernelOffsets) -> TaskFacts {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    let parent: u64 = read_at(task, o.task_real_parent).unwrap_or(0);
    let ppid: u32 = if parent == 0 {
        0
    } else {
        read_at(parent, o.task_tgid).unwrap_or(0)
    };
    let nsproxy: u64 = read_at(task, o.task_nsproxy).unwrap_or(0);
    let mnt_ns = if nsproxy == 0 {
        0
    } else {
        let mnt: u64 = read_at(nsproxy, o.nsproxy_mnt_ns).unwrap_or(0);
        if mnt == 0 {
            0
        } else {
            read_at(mnt, o.mnt_ns_inum).unwrap_or(0)
        }
    };
    TaskFacts {
        tgid: (pid_tgid >> 32) as u32,
        pid: pid_tgid as u32,
        ppid,
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        mnt_ns,
        // SAFETY: a plain helper call.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        start_ns: read_at(task, o.task_start_time).unwrap_or(0),
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    }
}

/// Submit flags for a lineage record (exec, exit): no wake-up, so that the
/// node's process churn does not wake userspace twice per process (a
/// context switch costs far more than the record). Userspace drains the
/// ring on a timer and before it names the readers of token accesses
/// (`Sensor::next_batch`), so the lineage is there when it is needed. A
/// ring more than a quarter full wakes it at once.
#[inline(always)]
pub fn lineage_wakeup() -> u64 {
    let ring = EVENTS.query(u64::from(BPF_RB_RING_SIZE));
    if EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) >= ring / 4 {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

/// Submit flags for every other record (token files, connects): a wake-up,
/// forced, because the kernel's adaptive one fires only when userspace has
/// read everything before the record, which unread lineage records prevent.
pub const REPORT_WAKEUP: u64 = BPF_RB_FORCE_WAKEUP as u64;

/// Reserves a zeroed event of `kind` carrying `facts`, or counts a drop.
#[inline(always)]
pub fn reserve(kind: u32, facts: &TaskFacts) -> Option<RingBufEntry<Event>> {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count_drop();
        return None;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at `size_of::<Event>()` reserved bytes; zero them
    // eight at a time (the size is a multiple of 8) before filling the header.
    unsafe {
        let words = event.cast::<u64>();
        let mut i = 0;
        while i < core::mem::size_of::<Event>() / 8 {
            *words.add(i) = 0;
            i += 1;
        }
        (*event).kind = kind;
        (*event).tgid = facts.tgid;
        (*event).pid = facts.pid;
        (*event).ppid = facts.ppid;
        (*event).uid = facts.uid;
        (*event).gid = facts.gid;
        (*event).mnt_ns = facts.mnt_ns;
        (*event).cgroup_id = facts.cgroup_id;
        (*event).start_ns = facts.start_ns;
        (*event).comm = facts.comm;
        (*event).ktime_ns = bpf_ktime_get_ns();
    }
    Some(entry)
}
