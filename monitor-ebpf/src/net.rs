//! TCP connects to API-server endpoints, from `sock:inet_sock_set_state`.
//!
//! CLOSE -> SYN_SENT runs in the connecting task's context: when the
//! destination (family, addr, port) is in `ENDPOINTS`, the caller is
//! reported and remembered by socket. The socket's next move out of
//! SYN_SENT (to ESTABLISHED, or to CLOSE when refused, reset or timed out)
//! may run in softirq context, so it is reported with the remembered caller.
//! Every other state change costs one lookup. An IPv4-mapped IPv6
//! destination (`::ffff:a.b.c.d`, an IPv6 socket connecting to an IPv4
//! address) matches the IPv4 endpoint.

use aya_ebpf::{EbpfContext as _, macros::tracepoint, programs::TracePointContext};
use monitor_common::{
    AF_INET, AF_INET6, EndpointKey, IPPROTO_TCP, KIND_CONNECT, KIND_CONNECT_RESULT, PendingConnect,
    TCP_CLOSE, TCP_SYN_SENT,
};

use crate::{
    maps::{ENDPOINTS, PENDING_CONNECTS, TP_OFFSETS},
    task::{REPORT_WAKEUP, TaskFacts, current_facts, current_task, offsets, read_at, reserve},
};

/// Every TCP state change; see the module docs for what is kept.
#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    try_set_state(&ctx).unwrap_or(0)
}

fn try_set_state(ctx: &TracePointContext) -> Result<u32, i64> {
    let base = ctx.as_ptr() as u64;
    let tp = TP_OFFSETS.load();
    let protocol: u16 = read_at(base, tp.sk_protocol)?;
    if protocol != IPPROTO_TCP {
        return Ok(0);
    }
    let oldstate: i32 = read_at(base, tp.sk_oldstate)?;
    let newstate: i32 = read_at(base, tp.sk_newstate)?;
    let skaddr: u64 = read_at(base, tp.sk_skaddr)?;
    if oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT {
        let family: u16 = read_at(base, tp.sk_family)?;
        let dport: u16 = read_at(base, tp.sk_dport)?;
        let mut key = EndpointKey {
            family,
            port: dport,
            _pad: 0,
            addr: [0; 16],
        };
        if family == AF_INET {
            let daddr: [u8; 4] = read_at(base, tp.sk_daddr)?;
            key.addr[..4].copy_from_slice(&daddr);
        } else if family == AF_INET6 {
            key.addr = read_at(base, tp.sk_daddr_v6)?;
        } else {
            return Ok(0);
        }
        // SAFETY: only the presence of the key is used.
        let mut found = unsafe { ENDPOINTS.get(&key) }.is_some();
        if !found && family == AF_INET6 && is_v4_mapped(&key.addr) {
            // `::ffff:a.b.c.d` (an IPv6 socket reaching an IPv4 address)
            // matches the IPv4 endpoint.
            let v4 = EndpointKey {
                family: AF_INET,
                port: dport,
                _pad: 0,
                addr: [
                    key.addr[12],
                    key.addr[13],
                    key.addr[14],
                    key.addr[15],
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                ],
            };
            // SAFETY: as above.
            found = unsafe { ENDPOINTS.get(&v4) }.is_some();
        }
        if !found {
            return Ok(0);
        }
        let Some(o) = offsets() else { return Ok(0) };
        let facts = current_facts(current_task(), &o);
        let pending = PendingConnect {
            tgid: facts.tgid,
            pid: facts.pid,
            ppid: facts.ppid,
            uid: facts.uid,
            gid: facts.gid,
            mnt_ns: facts.mnt_ns,
            cgroup_id: facts.cgroup_id,
            start_ns: facts.start_ns,
            comm: facts.comm,
        };
        PENDING_CONNECTS.insert(skaddr, pending, 0)?;
        emit(base, KIND_CONNECT, &facts, skaddr, i64::from(newstate))
    } else if oldstate == TCP_SYN_SENT {
        // SAFETY: the value is copied out before the entry is removed.
        let Some(p) = (unsafe { PENDING_CONNECTS.get(&skaddr) }).copied() else {
            return Ok(0);
        };
        let _ = PENDING_CONNECTS.remove(&skaddr);
        let facts = TaskFacts {
            tgid: p.tgid,
            pid: p.pid,
            ppid: p.ppid,
            uid: p.uid,
            gid: p.gid,
            mnt_ns: p.mnt_ns,
            cgroup_id: p.cgroup_id,
            start_ns: p.start_ns,
            comm: p.comm,
        };
        emit(
            base,
            KIND_CONNECT_RESULT,
            &facts,
            skaddr,
            i64::from(newstate),
        )
    } else {
        Ok(0)
    }
}

/// Whether an IPv6 address is IPv4-mapped (`::ffff:0:0/96`).
#[inline(always)]
fn is_v4_mapped(addr: &[u8; 16]) -> bool {
    addr[0]
        | addr[1]
        | addr[2]
        | addr[3]
        | addr[4]
        | addr[5]
        | addr[6]
        | addr[7]
        | addr[8]
        | addr[9]
        == 0
        && addr[10] == 0xff
        && addr[11] == 0xff
}

/// Reports a connect attempt or result with the tracepoint's addresses.
#[inline(always)]
fn emit(base: u64, kind: u32, facts: &TaskFacts, skaddr: u64, state: i64) -> Result<u32, i64> {
    let tp = TP_OFFSETS.load();
    let family: u16 = read_at(base, tp.sk_family)?;
    let sport: u16 = read_at(base, tp.sk_sport)?;
    let dport: u16 = read_at(base, tp.sk_dport)?;
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    if family == AF_INET {
        let s: [u8; 4] = read_at(base, tp.sk_saddr)?;
        let d: [u8; 4] = read_at(base, tp.sk_daddr)?;
        saddr[..4].copy_from_slice(&s);
        daddr[..4].copy_from_slice(&d);
    } else {
        saddr = read_at(base, tp.sk_saddr_v6)?;
        daddr = read_at(base, tp.sk_daddr_v6)?;
    }
    let Some(mut entry) = reserve(kind, facts) else {
        return Ok(0);
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` is the reserved, zeroed record.
    unsafe {
        (*event).family = family;
        (*event).sport = sport;
        (*event).dport = dport;
        (*event).saddr = saddr;
        (*event).daddr = daddr;
        (*event).sock_id = skaddr;
        (*event).ret = state;
    }
    entry.submit(REPORT_WAKEUP);
    Ok(0)
}
