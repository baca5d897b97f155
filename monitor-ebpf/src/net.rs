//! TCP connects to API-server endpoints, from the raw tracepoint
//! `inet_sock_set_state` (`TP_PROTO(const struct sock *sk, int oldstate,
//! int newstate)`).
//!
//! A raw tracepoint hands the program the tracepoint's arguments as they
//! are: the classic `sock:inet_sock_set_state` first had the kernel fill a
//! whole perf record (addresses, ports, family, protocol) for every TCP
//! state change of every socket on the node. Here the two state numbers
//! are compared first, and the socket is read only for the transitions
//! that matter:
//!
//! - CLOSE -> SYN_SENT runs in the connecting task's context: the socket's
//!   destination port is read from `struct sock` (its offset from BTF, in
//!   `SOCK_DPORT`; the others in `SOCK_OFFSETS`) and tested in
//!   `ENDPOINT_PORTS`, a bitmap of the
//!   endpoints' ports (an array lookup the verifier inlines). Only for an
//!   endpoint's port are the protocol, family and address read; when the
//!   destination is in `ENDPOINTS`, the caller is reported and remembered by
//!   socket.
//! - The socket's next move out of SYN_SENT (to ESTABLISHED, or to CLOSE
//!   when refused, reset or timed out) may run in softirq context, so it is
//!   reported with the remembered caller. Its port is tested first too, so
//!   a socket that was not remembered costs a lookup only when it went to
//!   an endpoint's port.
//!
//! An unrelated connect thus costs two runs of one read and one bit test
//! each; every other state change costs two compares. An IPv4-mapped IPv6
//! destination (`::ffff:a.b.c.d`, an IPv6 socket connecting to an IPv4
//! address) matches the IPv4 endpoint.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use monitor_common::{
    AF_INET, AF_INET6, EndpointKey, IPPROTO_TCP, KIND_CONNECT, KIND_CONNECT_RESULT, PendingConnect,
    SockOffsets, TCP_CLOSE, TCP_SYN_SENT, port_bit,
};

use crate::{
    maps::{ENDPOINT_PORTS, ENDPOINTS, PENDING_CONNECTS, SOCK_DPORT, SOCK_OFFSETS},
    task::{REPORT_WAKEUP, TaskFacts, current_facts, current_task, offsets, read_at, reserve},
};

/// Every TCP state change; see the module docs for what is kept.
///
/// Inlined into the program's entry point, which the macro wraps around
/// it: a non-inlined function taking the context is a global BPF function,
/// which verifiers before 6.8 refuse (docs/requirements.md).
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
#[inline(always)]
pub fn inet_sock_set_state(ctx: RawTracePointContext) -> u32 {
    try_set_state(&ctx).unwrap_or(0)
}

#[inline(always)]
fn try_set_state(ctx: &RawTracePointContext) -> Result<u32, i64> {
    let oldstate: i32 = ctx.arg(1);
    let newstate: i32 = ctx.arg(2);
    if oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT {
        attempt(ctx.arg(0), newstate)
    } else if oldstate == TCP_SYN_SENT {
        outcome(ctx.arg(0), newstate)
    } else {
        Ok(0)
    }
}

/// The `struct sock` offsets, or `None` while userspace has not filled them in.
#[inline(always)]
fn sock_offsets() -> Option<SockOffsets> {
    let offsets = SOCK_OFFSETS.load();
    (offsets.ready == 1).then_some(offsets)
}

/// CLOSE -> SYN_SENT of socket `sk`: reported and remembered when its
/// destination is an endpoint.
#[inline(always)]
fn attempt(sk: u64, newstate: i32) -> Result<u32, i64> {
    let Some(dport) = endpoint_port(sk)? else {
        return Ok(0);
    };
    let Some(so) = sock_offsets() else {
        return Ok(0);
    };
    let protocol: u16 = read_at(sk, so.protocol)?;
    if protocol != IPPROTO_TCP {
        return Ok(0);
    }
    let family: u16 = read_at(sk, so.family)?;
    let mut key = EndpointKey {
        family,
        port: dport,
        _pad: 0,
        addr: [0; 16],
    };
    if family == AF_INET {
        let daddr: [u8; 4] = read_at(sk, so.daddr)?;
        key.addr[..4].copy_from_slice(&daddr);
    } else if family == AF_INET6 {
        key.addr = read_at(sk, so.v6_daddr)?;
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
    PENDING_CONNECTS.insert(sk, pending, 0)?;
    emit(sk, &so, KIND_CONNECT, &facts, newstate)
}

/// SYN_SENT -> anything of socket `sk`: reported with the remembered
/// caller when the attempt was.
#[inline(always)]
fn outcome(sk: u64, newstate: i32) -> Result<u32, i64> {
    // Remembered sockets went to an endpoint's port (a port dropped from
    // the bitmap meanwhile leaves its entry to the LRU).
    if endpoint_port(sk)?.is_none() {
        return Ok(0);
    }
    let Some(so) = sock_offsets() else {
        return Ok(0);
    };
    // SAFETY: the value is copied out before the entry is removed.
    let Some(p) = (unsafe { PENDING_CONNECTS.get(&sk) }).copied() else {
        return Ok(0);
    };
    let _ = PENDING_CONNECTS.remove(&sk);
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
    emit(sk, &so, KIND_CONNECT_RESULT, &facts, newstate)
}

/// The destination port of socket `sk` (host byte order) when it is an
/// endpoint's port, else `None` (also while the loader has not set
/// `SOCK_DPORT`): one read of the socket and one bit test.
#[inline(always)]
fn endpoint_port(sk: u64) -> Result<Option<u16>, i64> {
    let offset = SOCK_DPORT.load();
    if offset == 0 {
        return Ok(None);
    }
    let dport = u16::from_be(read_at(sk, offset)?);
    let (word, bit) = port_bit(dport);
    Ok(ENDPOINT_PORTS
        .get(word)
        .is_some_and(|w| *w & bit != 0)
        .then_some(dport))
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

/// Reports a connect attempt or result with the socket's addresses and
/// ports (ports in host byte order, as the classic tracepoint gave them).
#[inline(always)]
fn emit(sk: u64, so: &SockOffsets, kind: u32, facts: &TaskFacts, state: i32) -> Result<u32, i64> {
    let family: u16 = read_at(sk, so.family)?;
    let sport: u16 = read_at(sk, so.num)?;
    let dport = u16::from_be(read_at(sk, so.dport)?);
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    if family == AF_INET {
        let s: [u8; 4] = read_at(sk, so.rcv_saddr)?;
        let d: [u8; 4] = read_at(sk, so.daddr)?;
        saddr[..4].copy_from_slice(&s);
        daddr[..4].copy_from_slice(&d);
    } else {
        saddr = read_at(sk, so.v6_rcv_saddr)?;
        daddr = read_at(sk, so.v6_daddr)?;
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
        (*event).sock_id = sk;
        (*event).ret = i64::from(state);
    }
    entry.submit(REPORT_WAKEUP);
    Ok(0)
}
