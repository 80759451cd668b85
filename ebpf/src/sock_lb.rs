//! `sock-lb`: the socket-level IPv4 Service load balancer (Cilium's `bpf_sock.c` model).
//!
//! Four programs run in every process of the cgroup they are attached to (the node's cgroup):
//!
//! | hook | program | job |
//! |---|---|---|
//! | `cgroup/connect4` | [`ferry_connect4`] | TCP and connected UDP: rewrite a frontend to a backend before the connection exists |
//! | `cgroup/sendmsg4` | [`ferry_sendmsg4`] | unconnected UDP: the same, per datagram |
//! | `cgroup/recvmsg4` | [`ferry_recvmsg4`] | UDP replies: the source becomes the frontend again |
//! | `cgroup/getpeername4` | [`ferry_getpeer4`] | `getpeername(2)` shows the frontend |
//!
//! Translation: look up the frontend's service entry (slot 0 of `FERRY_LB4_SVC`). Not there:
//! leave the socket alone. `count == 0`: refuse at once with `ECONNREFUSED` (`bpf_set_retval`,
//! return 0), never a timeout and never `EPERM`. Otherwise pick a slot of the entry's generation
//! (the ClientIP affinity entry if the Service has affinity and the entry is younger than the
//! timeout, else `bpf_get_prandom_u32() % count + 1`), read the backend id there, the backend's
//! address in `FERRY_LB4_BE`, rewrite the destination, and remember (socket cookie, backend) ->
//! frontend in the LRU `FERRY_LB4_RNAT` for the reverse hooks. A slot or backend missing because
//! the agent flipped the generation between the lookups is retried once with a fresh service
//! entry (the agent never gives a freed backend id to another backend at once, so a stale id
//! finds nothing rather than a stranger).
//!
//! Every outcome is counted per CPU in `FERRY_LB_STATS` (`ferry_common::LbStat`). All maps are
//! pinned by name (`PinningType::ByName`) under the per-node bpffs directory the agent chooses.
//!
//! Built for `bpfel-unknown-none` by `ferry-agent`'s build script. On the host this file compiles
//! to an empty `main` so that `cargo clippy --workspace --all-targets` can check it.

#![allow(
    unsafe_code,
    reason = "an eBPF program reads the kernel's context and map memory through raw pointers"
)]
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

use aya_ebpf::{
    helpers::{
        bpf_get_netns_cookie, bpf_get_prandom_u32, bpf_get_socket_cookie, bpf_ktime_get_ns,
        bpf_set_retval,
    },
    macros::{cgroup_sock_addr, map},
    maps::{HashMap, LruHashMap, PerCpuArray},
    programs::SockAddrContext,
    EbpfContext as _,
};
use ferry_common::{
    Lb4Affinity, Lb4AffinityKey, Lb4Backend, Lb4RevNat, Lb4RevNatKey, Lb4Svc, Lb4SvcKey, LbStat,
    BPF_F_NO_PREALLOC, IPPROTO_UDP, LB4_AFFINITY_MAX_ENTRIES, LB4_BACKENDS_MAX_ENTRIES,
    LB4_REVNAT_MAX_ENTRIES, LB4_SERVICES_MAX_ENTRIES,
};

/// Return value of a cgroup sock_addr program that lets the call proceed.
const ALLOW: i32 = 1;
/// Return value that fails the call with the error set by `bpf_set_retval` (else `EPERM`).
const REJECT: i32 = 0;
/// `ECONNREFUSED` (Linux).
const ECONNREFUSED: i32 = 111;
/// `BPF_ANY` for map updates.
const BPF_ANY: u64 = 0;

/// Frontend slots -> service entry / backend ids (`ferry_common::names::LB4_SERVICES`).
#[map(name = "FERRY_LB4_SVC")]
static LB4_SERVICES: HashMap<Lb4SvcKey, Lb4Svc> =
    HashMap::pinned(LB4_SERVICES_MAX_ENTRIES, BPF_F_NO_PREALLOC);

/// Backend id -> backend (`ferry_common::names::LB4_BACKENDS`).
#[map(name = "FERRY_LB4_BE")]
static LB4_BACKENDS: HashMap<u32, Lb4Backend> =
    HashMap::pinned(LB4_BACKENDS_MAX_ENTRIES, BPF_F_NO_PREALLOC);

/// (socket cookie, backend) -> frontend (`ferry_common::names::LB4_REVNAT`).
#[map(name = "FERRY_LB4_RNAT")]
static LB4_REVNAT: LruHashMap<Lb4RevNatKey, Lb4RevNat> =
    LruHashMap::pinned(LB4_REVNAT_MAX_ENTRIES, 0);

/// (netns cookie, frontend) -> (backend id, last use) (`ferry_common::names::LB4_AFFINITY`).
#[map(name = "FERRY_LB4_AFF")]
static LB4_AFFINITY: LruHashMap<Lb4AffinityKey, Lb4Affinity> =
    LruHashMap::pinned(LB4_AFFINITY_MAX_ENTRIES, 0);

/// Per-CPU counters indexed by [`LbStat`] (`ferry_common::names::LB_STATS`).
#[map(name = "FERRY_LB_STATS")]
static LB_STATS: PerCpuArray<u64> = PerCpuArray::pinned(LbStat::COUNT, 0);

/// The `cgroup/connect4` program (`ferry_common::names::CONNECT4`).
#[cgroup_sock_addr(connect4)]
fn ferry_connect4(ctx: SockAddrContext) -> i32 {
    count(LbStat::Connect4Calls);
    forward(&ctx, LbStat::Connect4Rewrites)
}

/// The `cgroup/sendmsg4` program (`ferry_common::names::SENDMSG4`).
#[cgroup_sock_addr(sendmsg4)]
fn ferry_sendmsg4(ctx: SockAddrContext) -> i32 {
    count(LbStat::Sendmsg4Calls);
    forward(&ctx, LbStat::Sendmsg4Rewrites)
}

/// The `cgroup/recvmsg4` program (`ferry_common::names::RECVMSG4`). Must return 1.
#[cgroup_sock_addr(recvmsg4)]
fn ferry_recvmsg4(ctx: SockAddrContext) -> i32 {
    reverse(&ctx, LbStat::RevNatRecvmsg);
    ALLOW
}

/// The `cgroup/getpeername4` program (`ferry_common::names::GETPEERNAME4`). Must return 1.
#[cgroup_sock_addr(getpeername4)]
fn ferry_getpeer4(ctx: SockAddrContext) -> i32 {
    reverse(&ctx, LbStat::RevNatGetpeername);
    ALLOW
}

/// The forward translation shared by `connect4` and `sendmsg4`.
#[inline(always)]
fn forward(ctx: &SockAddrContext, rewritten: LbStat) -> i32 {
    // SAFETY: for cgroup sock_addr programs the kernel passes a valid `struct bpf_sock_addr` that
    // lives for the whole run; the verifier checks every field access below (4-byte reads of
    // `user_ip4`, `user_port` and `protocol`, 4-byte writes of `user_ip4` and `user_port`).
    let sock_addr = unsafe { &mut *ctx.sock_addr };
    #[expect(
        clippy::cast_possible_truncation,
        reason = "kernel ABI: bpf_sock_addr.user_port carries the port in its low 16 bits, the \
                  high bits are zero; no extra branch for the verifier"
    )]
    let port_be = sock_addr.user_port as u16;
    #[expect(
        clippy::cast_possible_truncation,
        reason = "kernel ABI: bpf_sock_addr.protocol is an IPPROTO_* number (< 256) in a u32"
    )]
    let proto = sock_addr.protocol as u8;
    let vip = sock_addr.user_ip4;
    let key = Lb4SvcKey::service_wire(vip, port_be, proto);

    let Some(svc) = service(&key) else {
        return ALLOW;
    };
    if svc.count == 0 {
        count(LbStat::Refused);
        // SAFETY: a plain helper call; `bpf_set_retval` exists for connect4 / sendmsg4.
        unsafe { bpf_set_retval(-ECONNREFUSED) };
        return REJECT;
    }

    let ptr = ctx.as_ptr();
    let affinity_key = Lb4AffinityKey {
        // SAFETY: a plain helper call on the program's own context.
        netns_cookie: unsafe { bpf_get_netns_cookie(ptr) },
        addr: vip,
        port: port_be,
        proto,
        pad: 0,
    };
    // SAFETY: a plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let mut affinity_hit = None;
    if let Some(timeout) = svc.affinity() {
        // SAFETY: the reference points into the LRU element, valid for this run (RCU); the
        // value is copied out at once.
        if let Some(entry) = unsafe { LB4_AFFINITY.get(affinity_key) } {
            let entry = *entry;
            if now.wrapping_sub(entry.last_used_ns) <= u64::from(timeout) * 1_000_000_000 {
                affinity_hit = backend(entry.backend_id).map(|b| (entry.backend_id, b));
            }
        }
    }

    let (backend_id, be) = match affinity_hit {
        Some(hit) => {
            count(LbStat::AffinityHits);
            hit
        }
        None => match pick(&key, svc) {
            Ok(hit) => hit,
            Err(stat) => {
                count(stat);
                return ALLOW;
            }
        },
    };

    if svc.affinity().is_some() {
        let value = Lb4Affinity {
            backend_id,
            pad: 0,
            last_used_ns: now,
        };
        if LB4_AFFINITY.insert(affinity_key, value, BPF_ANY).is_err() {
            count(LbStat::ErrAffinityUpdate);
        }
    }

    let rev_key = Lb4RevNatKey {
        // SAFETY: a plain helper call on the program's own context.
        cookie: unsafe { bpf_get_socket_cookie(ptr) },
        addr: be.addr,
        port: be.port,
        pad: [0; 2],
    };
    let rev = Lb4RevNat {
        addr: vip,
        port: port_be,
        pad: [0; 2],
    };
    // TCP needs the entry for getpeername only, UDP for every reply: both write it.
    if LB4_REVNAT.insert(rev_key, rev, BPF_ANY).is_err() && proto == IPPROTO_UDP {
        count(LbStat::ErrRevNatUpdate);
    }

    sock_addr.user_ip4 = be.addr;
    sock_addr.user_port = u32::from(be.port);
    count(rewritten);
    ALLOW
}

/// The reverse translation shared by `recvmsg4` and `getpeername4`: a backend address seen by a
/// socket that was sent there by [`forward`] becomes the frontend again.
#[inline(always)]
fn reverse(ctx: &SockAddrContext, rewritten: LbStat) {
    // SAFETY: as in `forward`: a valid context for the whole run, accesses checked by the
    // verifier (reads and writes of `user_ip4` and `user_port`).
    let sock_addr = unsafe { &mut *ctx.sock_addr };
    #[expect(
        clippy::cast_possible_truncation,
        reason = "kernel ABI: bpf_sock_addr.user_port carries the port in its low 16 bits"
    )]
    let port_be = sock_addr.user_port as u16;
    let key = Lb4RevNatKey {
        // SAFETY: a plain helper call on the program's own context.
        cookie: unsafe { bpf_get_socket_cookie(ctx.as_ptr()) },
        addr: sock_addr.user_ip4,
        port: port_be,
        pad: [0; 2],
    };
    // SAFETY: the reference points into the LRU element, valid for this run (RCU); copied at once.
    if let Some(rev) = unsafe { LB4_REVNAT.get(key) } {
        let rev = *rev;
        sock_addr.user_ip4 = rev.addr;
        sock_addr.user_port = u32::from(rev.port);
        count(rewritten);
    }
}

/// The service entry of a frontend, copied out.
#[inline(always)]
fn service(key: &Lb4SvcKey) -> Option<Lb4Svc> {
    // SAFETY: the map is created with `BPF_F_NO_PREALLOC`, so an element replaced or deleted by
    // the agent is freed only after an RCU grace period: the reference stays valid (old or new
    // value, never a reused element) while the value is copied out at once.
    unsafe { LB4_SERVICES.get(key) }.copied()
}

/// A random backend of the service's live generation (id and address). A slot or a backend
/// missing because the agent flipped the generation between our lookups (and deleted the old
/// slots and the backends only they used) is retried once with a fresh service entry: the new
/// generation's slots and backends were written before the flip.
#[inline(always)]
fn pick(key: &Lb4SvcKey, svc: Lb4Svc) -> Result<(u32, Lb4Backend), LbStat> {
    // SAFETY: a plain helper call.
    let random = unsafe { bpf_get_prandom_u32() };
    if let Ok(hit) = pick_in(key, svc, random) {
        return Ok(hit);
    }
    let svc = service(key).ok_or(LbStat::ErrNoSlot)?;
    pick_in(key, svc, random)
}

/// The backend in slot `random % count + 1` of the entry's generation.
#[inline(always)]
fn pick_in(key: &Lb4SvcKey, svc: Lb4Svc, random: u32) -> Result<(u32, Lb4Backend), LbStat> {
    let id = slot(key, svc, random).ok_or(LbStat::ErrNoSlot)?;
    let be = backend(id).ok_or(LbStat::ErrNoBackend)?;
    Ok((id, be))
}

/// The backend id in slot `random % count + 1` of the entry's generation.
#[inline(always)]
fn slot(key: &Lb4SvcKey, svc: Lb4Svc, random: u32) -> Option<u32> {
    if svc.count == 0 {
        return None;
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the remainder is below count, a u16"
    )]
    let index = (random % u32::from(svc.count)) as u16 + 1;
    let slot_key = key.with_slot(svc.gen, index);
    // SAFETY: as in `service` (same map, `BPF_F_NO_PREALLOC`).
    unsafe { LB4_SERVICES.get(slot_key) }.map(|s| s.backend_id)
}

/// The backend with this id, copied out.
#[inline(always)]
fn backend(id: u32) -> Option<Lb4Backend> {
    // SAFETY: `BPF_F_NO_PREALLOC` map, as in `service`: valid until the copy is made.
    unsafe { LB4_BACKENDS.get(id) }.copied()
}

/// Adds one to a per-CPU counter.
#[inline(always)]
fn count(stat: LbStat) {
    if let Some(counter) = LB_STATS.get_ptr_mut(stat.index()) {
        // SAFETY: the pointer comes from the map lookup and points at this CPU's slot, valid for
        // the program's run. Only these programs write it (user space reads), and they run with
        // migration disabled, so a plain increment is enough for a statistic (a preempted run on
        // the same CPU could at worst lose one count).
        unsafe { *counter += 1 };
    }
}

/// The kernel only lets GPL-compatible programs call GPL-only helpers; the declaration follows
/// aya-template (the Rust sources keep the workspace licence).
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier rejects programs that could reach a panic, so this is never executed.
    loop {}
}

/// Host builds exist only for `cargo check` / `cargo clippy`; the real object is built for BPF.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
