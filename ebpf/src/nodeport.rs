//! `nodeport`: the per-packet IPv4 datapath for traffic from outside the node to a NodePort, an
//! externalIP or a LoadBalancer IP (tc / TCX programs; Cilium's `nodeport.h` model, no code).
//!
//! | program | attached to | job |
//! |---|---|---|
//! | [`ferry_np_ext`] | underlay ingress | tracked packets both ways; new flows to an external frontend |
//! | [`ferry_np_rev`] | bridge ingress | tracked packets (backend replies) |
//! | [`ferry_np_egr`] | underlay and `ferry.1` egress | replies of source-preserving (ETP Local) flows |
//! | [`ferry_np_xdp`] | underlay XDP (opt-in) | tracked packets that leave by the underlay again: translated and `XDP_TX` ([`xdp_run`]) |
//!
//! A new flow (ingress on the underlay, destination in `FERRY_NP4_SVC`): the backend is the
//! Maglev entry `flow_hash(5-tuple, seed) % size` of the frontend's row (so every node picks the
//! same backend for a flow). With `externalTrafficPolicy: Cluster` the source becomes the node's
//! address and a free port of the NAT range (the reply entry is claimed with `BPF_NOEXIST`, a
//! few ports tried); with `Local` (`NP_FLAG_LOCAL`), or when the backend is the node's own
//! address (a hostNetwork endpoint), the client's source is kept. Two conntrack
//! entries are written (original and reply direction, see `ferry_common::nat`); a full table
//! drops the new flow (counted) and never evicts a live one.
//!
//! Every translated packet gets incremental checksum updates (`bpf_l3_csum_replace`,
//! `bpf_l4_csum_replace` with the pseudo-header flag; a UDP checksum of 0 stays 0). Ingress
//! packets are then sent with `bpf_fib_lookup` + `bpf_redirect_neigh` to the FIB's device: after
//! SNAT to the node's own address (or a reverse NAT whose new source is a node address) the
//! kernel's input path would drop them as martians. Fragments, truncated headers, IP options
//! beyond the packet and non-TCP/UDP packets are never translated (fragments and malformed
//! packets are counted and passed).
//!
//! Built for `bpfel-unknown-none` by `ferry-agent`'s build script; on the host an empty `main`.

#![allow(
    unsafe_code,
    reason = "an eBPF program reads the kernel's context and map memory through raw pointers"
)]
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

use aya_ebpf::{
    bindings::{
        bpf_sock_tuple, bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1, xdp_action, BPF_F_CURRENT_NETNS,
    },
    helpers::{bpf_ktime_get_ns, bpf_sk_lookup_udp, bpf_sk_release, bpf_skc_lookup_tcp},
    macros::{classifier, map, xdp},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::{TcContext, XdpContext},
    EbpfContext as _,
};
use ferry_common::{
    csum,
    nat::{
        ct_lifetime_secs, flow_hash, CtEntry, CtKey, NpBackendKey, NpConfig, NpStat, NpSvc,
        NpSvcKey, CT_F_FIN, CT_F_REPLIED, CT_F_REPLY, CT_F_RST, CT_F_SNAT, CT_TCP_FIN_SECS,
        CT_TCP_TIME_WAIT_SECS, CT_TCP_TIME_WAIT_SLACK_SECS, NP4_BACKENDS_MAX_ENTRIES,
        NP4_CT_MAX_ENTRIES, NP4_MAGLEV_MAX_ENTRIES, NP4_SERVICES_MAX_ENTRIES, NP_FLAG_LOCAL,
        TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN,
    },
    Lb4Backend, BPF_F_NO_PREALLOC, IPPROTO_TCP, IPPROTO_UDP,
};
use ferry_ebpf::fib;

/// Not ours: let the next program / the stack have it (`TCX_NEXT`, `TC_ACT_UNSPEC`).
const NEXT: i32 = -1;
/// Translated, continue on the current path (`TCX_PASS`, `TC_ACT_OK`).
const PASS: i32 = 0;
/// Drop (`TC_ACT_SHOT`).
const DROP: i32 = 2;

const ETH_HLEN: usize = 14;
const ETH_P_IP_BE: u16 = 0x0800_u16.to_be();
const IP_CSUM_OFF: usize = ETH_HLEN + 10;
const IP_SRC_OFF: usize = ETH_HLEN + 12;
const IP_DST_OFF: usize = ETH_HLEN + 16;
const BPF_ANY: u64 = 0;
const BPF_NOEXIST: u64 = 1;
const BPF_F_PSEUDO_HDR: u64 = 16;
const BPF_F_MARK_MANGLED_0: u64 = 32;
const E2BIG: i64 = 7;
/// NAT ports tried for a new SNATed flow before it is dropped.
const NAT_TRIES: u32 = 32;
const NS_PER_SEC: u64 = 1_000_000_000;

/// External frontend -> Maglev row (`ferry_common::nat::names::SERVICES`).
#[map(name = "FERRY_NP4_SVC")]
static SERVICES: HashMap<NpSvcKey, NpSvc> =
    HashMap::pinned(NP4_SERVICES_MAX_ENTRIES, BPF_F_NO_PREALLOC);

/// (row, index) -> backend (`names::BACKENDS`).
#[map(name = "FERRY_NP4_BE")]
static BACKENDS: HashMap<NpBackendKey, Lb4Backend> =
    HashMap::pinned(NP4_BACKENDS_MAX_ENTRIES, BPF_F_NO_PREALLOC);

/// The Maglev rows (`names::MAGLEV`).
#[map(name = "FERRY_NP4_MAG")]
static MAGLEV: Array<u32> = Array::pinned(NP4_MAGLEV_MAX_ENTRIES, 0);

/// Connection tracking, preallocated: inserts fail when full instead of evicting
/// (`names::CONNTRACK`).
#[map(name = "FERRY_NP4_CT")]
static CONNTRACK: HashMap<CtKey, CtEntry> = HashMap::pinned(NP4_CT_MAX_ENTRIES, 0);

/// Next hop -> when the XDP program last left one of its packets to tc (`names::XDP_NEIGH`,
/// not pinned: a restart only makes every next hop due at once).
#[map(name = "FERRY_NP_XNEIGH")]
static XDP_NEIGH: LruHashMap<u32, u64> = LruHashMap::with_max_entries(4096, 0);

/// The node's settings (`names::CONFIG`).
#[map(name = "FERRY_NP4_CFG")]
static CONFIG: Array<NpConfig> = Array::pinned(1, 0);

/// Per-CPU counters indexed by [`NpStat`] (`names::STATS`).
#[map(name = "FERRY_NP_STATS")]
static STATS: PerCpuArray<u64> = PerCpuArray::pinned(NpStat::COUNT, 0);

/// Underlay ingress (`names::EXTERNAL`).
#[classifier]
fn ferry_np_ext(ctx: TcContext) -> i32 {
    run(&ctx, Hook::External)
}

/// Bridge ingress (`names::REPLY`).
#[classifier]
fn ferry_np_rev(ctx: TcContext) -> i32 {
    run(&ctx, Hook::Reply)
}

/// Underlay and `ferry.1` egress (`names::EGRESS`).
#[classifier]
fn ferry_np_egr(ctx: TcContext) -> i32 {
    run(&ctx, Hook::Egress)
}

/// Underlay XDP, opt-in (`names::XDP`): see [`xdp_run`].
#[xdp(frags)]
fn ferry_np_xdp(ctx: XdpContext) -> u32 {
    xdp_run(&ctx)
}

/// Passes every packet (`names::XDP_PASS`). For the far end of a veth underlay (the lab's
/// switch port): an `XDP_TX` frame of one veth end reaches the other end only when that end has
/// an XDP program of its own; without one the frames are lost (see docs/services.md, "XDP").
#[xdp(frags)]
fn ferry_xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Which program runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hook {
    External,
    Reply,
    Egress,
}

/// The parsed headers of an IPv4 TCP/UDP packet (addresses and ports in network byte order).
#[derive(Clone, Copy)]
struct Packet {
    l4: usize,
    csum_off: usize,
    proto: u8,
    tcp_flags: u8,
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
}

impl Packet {
    /// The conntrack key of a packet answering this one (addresses and ports swapped).
    #[inline(always)]
    const fn reply_key(&self) -> CtKey {
        CtKey {
            saddr: self.daddr,
            daddr: self.saddr,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
            pad: [0; 3],
        }
    }
}

/// A packet's new addresses.
#[derive(Clone, Copy)]
struct Tuple {
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
}

#[inline(always)]
fn run(ctx: &TcContext, hook: Hook) -> i32 {
    let p = match parse(ctx) {
        Ok(Some(p)) => p,
        Ok(None) => return NEXT,
        Err(stat) => {
            count(stat);
            return NEXT;
        }
    };
    // SAFETY: a plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let key = CtKey {
        saddr: p.saddr,
        daddr: p.daddr,
        sport: p.sport,
        dport: p.dport,
        proto: p.proto,
        pad: [0; 3],
    };
    if let Some(entry) = CONNTRACK.get_ptr_mut(key) {
        // SAFETY: the pointer comes from the lookup and stays valid for this run (the map is
        // preallocated; a concurrent delete by the agent's GC only returns the element to the
        // free list after an RCU grace period). Fields are read and written one by one.
        let e = unsafe { &mut *entry };
        let reply = e.is_reply();
        let snat = e.flags & CT_F_SNAT != 0;
        let usable = match hook {
            // An expired original-direction entry is a new flow on a reused tuple.
            Hook::External => reply || !e.expired(now),
            Hook::Reply => true,
            // Only source-preserving replies are translated on the way out.
            Hook::Egress => reply && !snat,
        };
        if usable {
            touch(e, p.proto, p.tcp_flags, now);
            let to = Tuple {
                saddr: e.saddr,
                daddr: e.daddr,
                sport: e.sport,
                dport: e.dport,
            };
            if reply && p.proto == IPPROTO_UDP {
                mark_replied(&e.partner(p.proto), now);
            }
            if p.proto == IPPROTO_TCP && p.tcp_flags & TCP_RST != 0 {
                mark_reset(&e.partner(p.proto), now);
            }
            count(if reply {
                NpStat::CtReply
            } else {
                NpStat::CtOriginal
            });
            if rewrite(ctx, &p, &to).is_err() {
                count(NpStat::DropRewrite);
                return DROP;
            }
            return if hook == Hook::Egress {
                PASS
            } else {
                redirect(ctx, &p, &to)
            };
        }
        if hook == Hook::External && !reply {
            // An expired original entry about to be replaced: its reply entry (and NAT port)
            // goes with it, or it would outlive every GC (its partner key is live again).
            remove_stale_partner(&e.partner(p.proto), &key);
        }
    }
    if hook == Hook::Egress {
        release_for_node(ctx, &p);
        return NEXT;
    }
    if hook != Hook::External {
        return NEXT;
    }
    new_flow(ctx, &p, now)
}

/// A connection the node itself opens (a packet with no ingress device) from its address and a
/// port that an external flow's NAT entry holds toward the same backend: the kernel chose the
/// port without knowing the NAT entry (the NAT range overlaps the ephemeral range so clients'
/// own ports can be kept), and the backend's replies would be rewritten to the external client.
/// The node's connection wins, as a direct connection does in [`supersede`]: the external
/// flow's entries go (counted `superseded`). TCP SYNs and UDP packets only.
#[inline(always)]
fn release_for_node(ctx: &TcContext, p: &Packet) {
    if p.proto == IPPROTO_TCP && p.tcp_flags & (TCP_SYN | TCP_ACK) != TCP_SYN {
        return;
    }
    // Only a source a NAT entry can hold: the node's address and a port of the NAT range. (The
    // overlay's encapsulated packets pass this too, their source ports being ephemeral ones: one
    // hash lookup per GSO packet.)
    let Some(cfg) = CONFIG.get(0).copied() else {
        return;
    };
    let sport = u16::from_be(p.sport);
    if p.saddr != cfg.node_addr || sport < cfg.port_min || sport > cfg.port_max {
        return;
    }
    // SAFETY: `skb` is the program's valid context; the verifier checks the field read.
    if unsafe { (*ctx.skb.skb).ingress_ifindex } != 0 {
        return; // forwarded (a translated packet redirected here), not the node's own
    }
    let reversed = p.reply_key();
    // SAFETY: as in `run`: a preallocated element, copied at once.
    let Some(old) = (unsafe { CONNTRACK.get(reversed) }).copied() else {
        return;
    };
    if old.is_reply() && old.flags & CT_F_SNAT != 0 {
        let orig = old.partner(p.proto);
        // SAFETY: as above.
        if let Some(o) = (unsafe { CONNTRACK.get(orig) }).copied() {
            if !o.is_reply() && same_key(&o.partner(p.proto), &reversed) {
                let _ = CONNTRACK.remove(orig);
            }
        }
        let _ = CONNTRACK.remove(reversed);
        count(NpStat::SupersededByNode);
    }
}

/// Parses Ethernet + IPv4 + TCP/UDP. `Ok(None)`: not IPv4 TCP/UDP; `Err`: a fragment or
/// malformed headers (counted, never translated).
#[inline(always)]
fn parse(ctx: &TcContext) -> Result<Option<Packet>, NpStat> {
    let Ok(proto) = ctx.load::<u16>(12) else {
        return Ok(None);
    };
    if proto != ETH_P_IP_BE {
        return Ok(None);
    }
    let ver_ihl = ctx
        .load::<u8>(ETH_HLEN)
        .map_err(|_| NpStat::PassMalformed)?;
    let ihl = usize::from(ver_ihl & 0x0f);
    if ver_ihl >> 4 != 4 || ihl < 5 {
        return Err(NpStat::PassMalformed);
    }
    let proto = ctx
        .load::<u8>(ETH_HLEN + 9)
        .map_err(|_| NpStat::PassMalformed)?;
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return Ok(None);
    }
    let frag = ctx
        .load::<u16>(ETH_HLEN + 6)
        .map_err(|_| NpStat::PassMalformed)?;
    // MF set or a non-zero offset: only the first fragment has ports, so none is translated.
    if u16::from_be(frag) & 0x3fff != 0 {
        return Err(NpStat::PassFragment);
    }
    let saddr = ctx
        .load::<u32>(IP_SRC_OFF)
        .map_err(|_| NpStat::PassMalformed)?;
    let daddr = ctx
        .load::<u32>(IP_DST_OFF)
        .map_err(|_| NpStat::PassMalformed)?;
    let l4 = ETH_HLEN + ihl * 4;
    let sport = ctx.load::<u16>(l4).map_err(|_| NpStat::PassMalformed)?;
    let dport = ctx.load::<u16>(l4 + 2).map_err(|_| NpStat::PassMalformed)?;
    let (csum_off, tcp_flags) = if proto == IPPROTO_TCP {
        // The whole fixed TCP header must be there (checksum at 16, urgent pointer at 18).
        ctx.load::<u16>(l4 + 18)
            .map_err(|_| NpStat::PassMalformed)?;
        let flags = ctx.load::<u8>(l4 + 13).map_err(|_| NpStat::PassMalformed)?;
        (l4 + 16, flags)
    } else {
        ctx.load::<u16>(l4 + 6).map_err(|_| NpStat::PassMalformed)?;
        (l4 + 6, 0)
    };
    Ok(Some(Packet {
        l4,
        csum_off,
        proto,
        tcp_flags,
        saddr,
        daddr,
        sport,
        dport,
    }))
}

/// Refreshes a conntrack entry after a packet: FIN / RST bits, expiry (see
/// `ferry_common::nat::ct_lifetime_secs`). A SYN starts over (a reused tuple).
#[inline(always)]
fn touch(e: &mut CtEntry, proto: u8, tcp_flags: u8, now: u64) {
    let mut flags = e.flags;
    if proto == IPPROTO_TCP {
        if tcp_flags & TCP_SYN != 0 {
            flags &= !(CT_F_FIN | CT_F_RST);
        }
        if tcp_flags & TCP_FIN != 0 {
            flags |= CT_F_FIN;
        }
        if tcp_flags & TCP_RST != 0 {
            flags |= CT_F_RST;
        }
        e.flags = flags;
    }
    e.expires_ns = now + ct_lifetime_secs(proto, flags, tcp_flags) * NS_PER_SEC;
}

/// A UDP reply: the original direction becomes a stream (the longer timeout).
#[inline(always)]
fn mark_replied(orig: &CtKey, now: u64) {
    if let Some(entry) = CONNTRACK.get_ptr_mut(orig) {
        // SAFETY: as in `run`: a preallocated element, valid for this run.
        let e = unsafe { &mut *entry };
        e.flags |= CT_F_REPLIED;
        e.expires_ns = now + ct_lifetime_secs(IPPROTO_UDP, e.flags, 0) * NS_PER_SEC;
    }
}

/// A RST seen through one direction's entry: the other direction closes too (RST flag, the short
/// close timeout), so the agent's GC, which deletes a pair only when both directions expired,
/// collects the flow after `CT_TCP_CLOSE_SECS` instead of the established timeout.
#[inline(always)]
fn mark_reset(partner: &CtKey, now: u64) {
    if let Some(entry) = CONNTRACK.get_ptr_mut(partner) {
        // SAFETY: as in `run`: a preallocated element, valid for this run.
        let e = unsafe { &mut *entry };
        e.flags |= CT_F_RST;
        e.expires_ns = now + ct_lifetime_secs(IPPROTO_TCP, e.flags, 0) * NS_PER_SEC;
    }
}

/// Deletes `partner` if it is the other direction of `key`'s (expired) entry.
#[inline(always)]
fn remove_stale_partner(partner: &CtKey, key: &CtKey) {
    // SAFETY: as in `run`: a preallocated element, copied at once.
    let Some(old) = (unsafe { CONNTRACK.get(partner) }).copied() else {
        return;
    };
    if old.is_reply() && same_key(&old.partner(key.proto), key) {
        let _ = CONNTRACK.remove(partner);
    }
}

/// Field-wise key comparison (no `memcmp` in BPF).
#[inline(always)]
fn same_key(a: &CtKey, b: &CtKey) -> bool {
    a.saddr == b.saddr
        && a.daddr == b.daddr
        && a.sport == b.sport
        && a.dport == b.dport
        && a.proto == b.proto
}

/// A packet to an external frontend without a conntrack entry.
#[inline(always)]
fn new_flow(ctx: &TcContext, p: &Packet, now: u64) -> i32 {
    let svc_key = NpSvcKey {
        addr: p.daddr,
        port: p.dport,
        proto: p.proto,
        pad: 0,
    };
    // SAFETY: `BPF_F_NO_PREALLOC` map: an element the agent replaces is freed after an RCU grace
    // period, so the reference is valid while the value is copied out at once.
    let Some(svc) = (unsafe { SERVICES.get(svc_key) }).copied() else {
        supersede(p);
        return NEXT;
    };
    if svc.count == 0 {
        count(NpStat::DropNoBackend);
        return DROP;
    }
    let Some(cfg) = CONFIG.get(0).copied() else {
        return NEXT;
    };
    if cfg.node_addr == 0 || cfg.maglev_size == 0 {
        return NEXT;
    }
    let hash = flow_hash(p.saddr, p.daddr, p.sport, p.dport, p.proto, cfg.seed);
    let size = u64::from(cfg.maglev_size);
    let index = u64::from(svc.row) * size + hash % size;
    let Ok(index) = u32::try_from(index) else {
        count(NpStat::DropNoSlot);
        return DROP;
    };
    // A backend the agent deleted between our two reads (it rewrites the Maglev entry first):
    // read the entry again, it names a live backend now.
    let Some(be) = maglev_backend(svc.row, index).or_else(|| maglev_backend(svc.row, index)) else {
        count(NpStat::DropNoSlot);
        return DROP;
    };
    // The client's source is kept with ETP Local, and for a backend on the node's own address
    // (a hostNetwork endpoint here): SNAT would make it a local source arriving from outside,
    // a martian. Its replies leave through the underlay egress program, like ETP Local ones.
    let local = svc.flags & NP_FLAG_LOCAL != 0 || be.addr == cfg.node_addr;
    let snat_flag = if local { 0 } else { CT_F_SNAT };
    let orig_flags = snat_flag;
    let reply_flags = snat_flag | CT_F_REPLY;
    let reply_value = CtEntry {
        saddr: p.daddr,
        daddr: p.saddr,
        sport: p.dport,
        dport: p.sport,
        flags: reply_flags,
        pad: [0; 3],
        expires_ns: now + ct_lifetime_secs(p.proto, reply_flags, p.tcp_flags) * NS_PER_SEC,
    };
    let mut reply_key = CtKey {
        saddr: be.addr,
        daddr: p.saddr,
        sport: be.port,
        dport: p.sport,
        proto: p.proto,
        pad: [0; 3],
    };
    if local {
        // The client's source is kept, so another frontend's flow from the same client ip:port
        // to the same backend has this reply key: a live one keeps it (the new flow is dropped),
        // an expired one is superseded.
        if !claim_local(&reply_key, &reply_value, now) {
            return DROP;
        }
    } else {
        reply_key.daddr = cfg.node_addr;
        let Some(port) = claim_port(ctx, &mut reply_key, &reply_value, &cfg, hash, p.sport, now)
        else {
            return DROP;
        };
        reply_key.dport = port;
    }
    let to = Tuple {
        saddr: reply_key.daddr,
        daddr: be.addr,
        sport: reply_key.dport,
        dport: be.port,
    };
    let orig_value = CtEntry {
        saddr: to.saddr,
        daddr: to.daddr,
        sport: to.sport,
        dport: to.dport,
        flags: orig_flags,
        pad: [0; 3],
        expires_ns: now + ct_lifetime_secs(p.proto, orig_flags, p.tcp_flags) * NS_PER_SEC,
    };
    let orig_key = CtKey {
        saddr: p.saddr,
        daddr: p.daddr,
        sport: p.sport,
        dport: p.dport,
        proto: p.proto,
        pad: [0; 3],
    };
    if let Err(e) = CONNTRACK.insert(orig_key, orig_value, BPF_ANY) {
        let _ = CONNTRACK.remove(reply_key);
        count(if i64::from(e) == -E2BIG {
            NpStat::DropCtFull
        } else {
            NpStat::DropRewrite
        });
        return DROP;
    }
    count(NpStat::NewFlows);
    if rewrite(ctx, p, &to).is_err() {
        count(NpStat::DropRewrite);
        return DROP;
    }
    redirect(ctx, p, &to)
}

/// A client opening a TCP connection straight to an address (not a frontend) with a tuple an
/// ETP Local flow's reply entry still holds (the client reused its port, e.g. after the NodePort
/// connection closed): the backend sees the same 4-tuple for both, so the new connection
/// supersedes the old flow, whose entries go; otherwise the direct connection's replies would be
/// rewritten to the frontend.
#[inline(always)]
fn supersede(p: &Packet) {
    if p.proto != IPPROTO_TCP || p.tcp_flags & (TCP_SYN | TCP_ACK) != TCP_SYN {
        return;
    }
    let reversed = p.reply_key();
    // SAFETY: as in `run`: a preallocated element, copied at once.
    let Some(old) = (unsafe { CONNTRACK.get(reversed) }).copied() else {
        return;
    };
    if old.is_reply() && old.flags & CT_F_SNAT == 0 {
        let _ = CONNTRACK.remove(old.partner(p.proto));
        let _ = CONNTRACK.remove(reversed);
        count(NpStat::Superseded);
    }
}

/// Inserts an ETP Local flow's reply entry (`BPF_NOEXIST`); an expired holder of the key is
/// removed with its original entry first. `false`: counted (table full, or a live flow holds the
/// key).
#[inline(always)]
fn claim_local(key: &CtKey, value: &CtEntry, now: u64) -> bool {
    for _ in 0..2 {
        match CONNTRACK.insert(key, value, BPF_NOEXIST) {
            Ok(()) => return true,
            Err(e) if i64::from(e) == -E2BIG => {
                count(NpStat::DropCtFull);
                return false;
            }
            Err(_) => {}
        }
        // SAFETY: as in `run`: a preallocated element, copied at once.
        let Some(old) = (unsafe { CONNTRACK.get(key) }).copied() else {
            continue;
        };
        if !old.expired(now) {
            count(NpStat::DropCollision);
            return false;
        }
        let orig = old.partner(key.proto);
        // SAFETY: as above.
        if let Some(o) = (unsafe { CONNTRACK.get(orig) }).copied() {
            if !o.is_reply() && same_key(&o.partner(key.proto), key) {
                let _ = CONNTRACK.remove(orig);
            }
        }
        let _ = CONNTRACK.remove(key);
        count(NpStat::Superseded);
    }
    count(NpStat::DropRewrite);
    false
}

/// Whether a new flow may take over the NAT port of `old` (the reply entry at `key`) at `now`:
/// its flow expired or was reset, or it closed in both directions (a FIN seen each way) at least
/// [`CT_TCP_TIME_WAIT_SECS`] ago. Sooner, the backend may still hold the old connection in
/// TIME_WAIT, and a new client on the same backend tuple (with unrelated sequence numbers and
/// timestamps) would get that socket's ACK instead of a SYN-ACK: its connect stalls until the
/// client's RST and SYN retransmission (found by `ferry bench`'s `crr` through a NodePort,
/// where the server closes first). A half-closed flow keeps its port: its other direction may
/// still carry data.
#[inline(always)]
fn reclaimable(old: &CtEntry, key: &CtKey, now: u64) -> bool {
    if old.expired(now) {
        return true;
    }
    if key.proto != IPPROTO_TCP {
        return false;
    }
    if old.flags & CT_F_RST != 0 {
        return true;
    }
    if old.flags & CT_F_FIN == 0 {
        return false;
    }
    if !past_time_wait(old, now) {
        return false;
    }
    let orig = old.partner(key.proto);
    // SAFETY: as in `run`: a preallocated element, copied at once.
    match (unsafe { CONNTRACK.get(orig) }).copied() {
        Some(o) if !o.is_reply() && same_key(&o.partner(key.proto), key) => {
            // The backend enters TIME_WAIT on the client's last packet after a simultaneous
            // close: the original direction's quiet time counts too.
            o.expired(now)
                || o.flags & CT_F_RST != 0
                || (o.flags & CT_F_FIN != 0 && past_time_wait(&o, now))
        }
        // The original entry is gone or belongs to another flow: nothing holds the port.
        _ => true,
    }
}

/// Whether a FIN-flagged entry (expiry = its last packet + `CT_TCP_FIN_SECS`) saw no packet for
/// TIME_WAIT and the timer's slack.
#[inline(always)]
fn past_time_wait(e: &CtEntry, now: u64) -> bool {
    let quiet = CT_TCP_FIN_SECS - CT_TCP_TIME_WAIT_SECS - CT_TCP_TIME_WAIT_SLACK_SECS;
    e.expires_ns <= now + quiet * NS_PER_SEC
}

/// A flow closed both ways (FIN in the reply entry `old` at `key`, FIN or RST in its original
/// entry, or that entry gone) but still inside its TIME_WAIT window: the reply entry's expiry
/// or its original entry's if later (the flow closed longest ago, by the last packet either
/// way, goes first when nothing better is left). A half-closed flow is
/// never a candidate.
#[inline(always)]
fn closing_since(old: &CtEntry, key: &CtKey) -> Option<u64> {
    if key.proto != IPPROTO_TCP || !old.is_reply() || old.flags & CT_F_FIN == 0 {
        return None;
    }
    let orig = old.partner(key.proto);
    // SAFETY: as in `run`: a preallocated element, copied at once.
    match (unsafe { CONNTRACK.get(orig) }).copied() {
        Some(o) if !o.is_reply() && same_key(&o.partner(key.proto), key) => {
            (o.flags & (CT_F_FIN | CT_F_RST) != 0).then_some(old.expires_ns.max(o.expires_ns))
        }
        _ => Some(old.expires_ns),
    }
}

/// Whether no socket of the node holds the reply key's tuple (the node's own connection from
/// its address and that port to the backend, in any state, or a listener on the port): such a
/// port is never a NAT port, or the backend's packets to that socket would be rewritten to the
/// external client. `bpf_skc_lookup_tcp` / `bpf_sk_lookup_udp` in the node's namespace, with
/// the tuple as the backend's packet to the node carries it.
#[inline(always)]
fn free_on_node(ctx: &TcContext, key: &CtKey) -> bool {
    // SAFETY: plain data, all-zero valid.
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    tuple.__bindgen_anon_1.ipv4 = bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 {
        saddr: key.saddr,
        daddr: key.daddr,
        sport: key.sport,
        dport: key.dport,
    };
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the IPv4 part of the tuple is 12 bytes"
    )]
    let size = core::mem::size_of::<bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1>() as u32;
    #[expect(
        clippy::cast_sign_loss,
        reason = "BPF_F_CURRENT_NETNS is -1 passed as u64, as the kernel expects"
    )]
    let netns = BPF_F_CURRENT_NETNS as u64;
    // SAFETY: the helpers read `tuple`, a live local of `size` bytes; a socket they return is
    // released at once (the verifier checks the reference is dropped on every path).
    unsafe {
        let sk = if key.proto == IPPROTO_TCP {
            bpf_skc_lookup_tcp(ctx.as_ptr(), &raw mut tuple, size, netns, 0)
        } else {
            bpf_sk_lookup_udp(ctx.as_ptr(), &raw mut tuple, size, netns, 0)
        };
        if sk.is_null() {
            return true;
        }
        bpf_sk_release(sk.cast());
    }
    false
}

/// One NAT port candidate's fate in [`claim_port`].
enum Candidate {
    /// The reply entry was inserted: the port is the flow's.
    Claimed,
    /// The conntrack map is full.
    TableFull,
    /// A node socket holds the tuple (or its holder vanished meanwhile).
    Skipped,
    /// Another flow's entry holds the tuple.
    Held(CtEntry),
}

/// Claims `key` (its port set) for `value` with `BPF_NOEXIST` unless a node socket holds it.
#[inline(always)]
fn try_port(ctx: &TcContext, key: &CtKey, value: &CtEntry) -> Candidate {
    if !free_on_node(ctx, key) {
        count(NpStat::NatPortNodeSocket);
        return Candidate::Skipped;
    }
    match CONNTRACK.insert(*key, *value, BPF_NOEXIST) {
        Ok(()) => Candidate::Claimed,
        Err(e) if i64::from(e) == -E2BIG => Candidate::TableFull,
        // SAFETY: as in `run`: a preallocated element, copied at once.
        Err(_) => match (unsafe { CONNTRACK.get(*key) }).copied() {
            Some(old) => Candidate::Held(old),
            None => Candidate::Skipped,
        },
    }
}

/// Claims a NAT port for the reply key. The client's own source port comes first when it lies
/// in the NAT range (the kernel's NAT keeps it too): then a client that reuses its port for a
/// new connection reaches the backend on the same tuple, with the sequence numbers and
/// timestamps its TCP keeps increasing per tuple, so a backend still holding the old connection
/// in TIME_WAIT accepts the SYN. Then [`NAT_TRIES`] candidates from the flow's hash: a free one
/// (`BPF_NOEXIST`), else the first candidate whose flow is over ([`reclaimable`]: its original
/// entry is removed with it). A port a node socket holds ([`free_on_node`]) is skipped.
/// Returns the port in network byte order. `None`: counted (table full, or every candidate held
/// by a live flow).
#[inline(always)]
fn claim_port(
    ctx: &TcContext,
    key: &mut CtKey,
    value: &CtEntry,
    cfg: &NpConfig,
    hash: u64,
    client_port: u16,
    now: u64,
) -> Option<u16> {
    if cfg.port_max < cfg.port_min {
        count(NpStat::DropNatPorts);
        return None;
    }
    let mut reclaim: Option<u16> = None;
    // The closing candidate with the oldest last packet: (port, expiry).
    let mut oldest: Option<(u16, u64)> = None;
    let own = u16::from_be(client_port);
    let span = u32::from(cfg.port_max - cfg.port_min) + 1;
    let start = (hash >> 32) as u32;
    // Try 0 is the client's own port (when in the range), then the hash's candidates.
    for i in 0..=NAT_TRIES {
        key.dport = if i == 0 {
            if own < cfg.port_min || own > cfg.port_max {
                continue;
            }
            client_port
        } else {
            let step = (i - 1).wrapping_mul(40_503);
            (cfg.port_min + (start.wrapping_add(step) % span) as u16).to_be()
        };
        match try_port(ctx, key, value) {
            Candidate::Claimed => {
                if i == 0 {
                    count(NpStat::NatPortKept);
                }
                return Some(key.dport);
            }
            Candidate::TableFull => {
                count(NpStat::DropCtFull);
                return None;
            }
            Candidate::Skipped => {}
            Candidate::Held(old) => {
                if old.is_reply() && reclaimable(&old, key, now) {
                    // The first one over; a free candidate later still comes first, except
                    // after the client's own port (kept, it spares the backend a new tuple).
                    if reclaim.is_none() {
                        reclaim = Some(key.dport);
                    }
                    if i == 0 {
                        break;
                    }
                } else if let Some(exp) = closing_since(&old, key) {
                    if oldest.is_none_or(|(_, e)| exp < e) {
                        oldest = Some((key.dport, exp));
                    }
                }
            }
        }
    }
    // Nothing free or over: rather than dropping the SYN (a retransmission a second later), the
    // flow closed longest ago gives its port up, even inside its TIME_WAIT window (the new
    // client may then need a RST and a SYN retransmission, a few milliseconds).
    let (port, in_time_wait) = match (reclaim, oldest) {
        (Some(p), _) => (p, false),
        (None, Some((p, _))) => (p, true),
        (None, None) => {
            count(NpStat::DropNatPorts);
            return None;
        }
    };
    key.dport = port;
    // SAFETY: as above.
    if let Some(old) = (unsafe { CONNTRACK.get(*key) }).copied() {
        let orig = old.partner(key.proto);
        // SAFETY: as above.
        if let Some(o) = (unsafe { CONNTRACK.get(orig) }).copied() {
            if !o.is_reply() && same_key(&o.partner(key.proto), key) {
                let _ = CONNTRACK.remove(orig);
            }
        }
        let _ = CONNTRACK.remove(*key);
    }
    // Another CPU may have taken the port meanwhile: then this flow gives up, counted.
    match CONNTRACK.insert(*key, *value, BPF_NOEXIST) {
        Ok(()) => {
            count(NpStat::Superseded);
            if in_time_wait {
                count(NpStat::NatPortInTimeWait);
            }
            if port == client_port && own >= cfg.port_min && own <= cfg.port_max {
                count(NpStat::NatPortKept);
            }
            Some(key.dport)
        }
        Err(_) => {
            count(NpStat::DropNatPorts);
            None
        }
    }
}

/// Rewrites the addresses and ports that differ, with incremental checksum updates.
#[inline(always)]
fn rewrite(ctx: &TcContext, p: &Packet, to: &Tuple) -> Result<(), i64> {
    let mangled = if p.proto == IPPROTO_UDP {
        BPF_F_MARK_MANGLED_0
    } else {
        0
    };
    if to.saddr != p.saddr {
        set_addr(ctx, p.csum_off, IP_SRC_OFF, p.saddr, to.saddr, mangled)?;
    }
    if to.daddr != p.daddr {
        set_addr(ctx, p.csum_off, IP_DST_OFF, p.daddr, to.daddr, mangled)?;
    }
    if to.sport != p.sport {
        set_port(ctx, p.csum_off, p.l4, p.sport, to.sport, mangled)?;
    }
    if to.dport != p.dport {
        set_port(ctx, p.csum_off, p.l4 + 2, p.dport, to.dport, mangled)?;
    }
    Ok(())
}

#[inline(always)]
fn set_addr(
    ctx: &TcContext,
    csum_off: usize,
    off: usize,
    old: u32,
    new: u32,
    mangled: u64,
) -> Result<(), i64> {
    ctx.l4_csum_replace(
        csum_off,
        u64::from(old),
        u64::from(new),
        BPF_F_PSEUDO_HDR | mangled | 4,
    )?;
    ctx.l3_csum_replace(IP_CSUM_OFF, u64::from(old), u64::from(new), 4)?;
    ctx.store(off, &new, 0)
}

#[inline(always)]
fn set_port(
    ctx: &TcContext,
    csum_off: usize,
    off: usize,
    old: u16,
    new: u16,
    mangled: u64,
) -> Result<(), i64> {
    ctx.l4_csum_replace(csum_off, u64::from(old), u64::from(new), mangled | 2)?;
    ctx.store(off, &new, 0)
}

/// Sends a translated ingress packet to the FIB's egress device for its new destination
/// (`bpf_redirect_neigh` resolves the next hop's MAC there). A destination the FIB does not
/// forward (a local address) or cannot route goes up the stack.
#[inline(always)]
fn redirect(ctx: &TcContext, p: &Packet, to: &Tuple) -> i32 {
    let mut fib = fib::request();
    fib.l4_protocol = p.proto;
    fib.sport = to.sport;
    fib.dport = to.dport;
    // `tot_len` stays 0: the kernel then checks the MTU itself, GSO-aware (a GRO/GSO packet's
    // IP length exceeds the MTU; with it the FIB answers FRAG_NEEDED and the rewritten packet
    // would be passed up and dropped as a martian).
    // SAFETY: `skb` is the program's valid context; reading its `ifindex` is checked by the
    // verifier.
    fib.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    fib.__bindgen_anon_3.ipv4_src = to.saddr;
    fib.__bindgen_anon_4.ipv4_dst = to.daddr;
    if !fib::lookup(ctx, &mut fib) {
        count(NpStat::FibPass);
        return PASS;
    }
    count(NpStat::Redirected);
    fib::redirect_neigh(&fib)
}

// ---- XDP ----

/// `ETH_ALEN`.
const ETH_ALEN: usize = 6;
/// Ethernet + IPv4 without options.
const XDP_L4: usize = ETH_HLEN + 20;

/// A pointer to a `T` at `off` in the XDP packet, if the packet holds it.
#[inline(always)]
fn xdp_ptr<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    let start = ctx.data() + off;
    if start + core::mem::size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some(start as *mut T)
}

/// Reads a `T` at `off` (unaligned: packet data has no alignment guarantee).
#[inline(always)]
fn xdp_read<T: Copy>(ctx: &XdpContext, off: usize) -> Option<T> {
    // SAFETY: `xdp_ptr` checked that `size_of::<T>()` bytes at `off` lie inside the packet
    // (the verifier checks the same bound against `data_end`).
    xdp_ptr::<T>(ctx, off).map(|p| unsafe { p.read_unaligned() })
}

/// Writes a `T` at `off`; `false` if the packet is too short.
#[inline(always)]
fn xdp_write<T>(ctx: &XdpContext, off: usize, v: T) -> bool {
    match xdp_ptr::<T>(ctx, off) {
        Some(p) => {
            // SAFETY: as in `xdp_read`; XDP packet data is writable.
            unsafe { p.write_unaligned(v) };
            true
        }
        None => false,
    }
}

/// The XDP fast path of tracked external flows (Cilium's XDP NodePort acceleration, reduced to
/// what XDP can do alone). A packet of a flow the tc program already tracks, whose translated
/// destination the FIB forwards out of the same underlay device with a resolved neighbour
/// (a host-gw backend on another node, a reply going back to the external client), is
/// translated here and sent back out at once (`XDP_TX`): no skb, no tc, no stack. Everything
/// else passes untouched to the tc program, which owns every state change:
///
/// - new flows (no conntrack entry) and TCP SYN / FIN / RST (state transitions), expired
///   original entries (a new flow on a reused tuple);
/// - IP options, fragments, truncated or non-TCP/UDP packets;
/// - a checksum field that holds only the pseudo-header sum: the sender left the checksum to
///   the device (`CHECKSUM_PARTIAL`, a local sender on a veth), which XDP cannot see or keep;
///   an incremental update of that field would send a corrupt packet. (A complete checksum
///   that happens to equal that sum is passed too: tc translates it correctly either way.)
/// - a destination reached through another device (a pod of this node, the overlay) or a next
///   hop without a neighbour entry (tc's `bpf_redirect_neigh` resolves it; later packets come
///   here), and one packet per next hop per second, so that tc keeps the next hop's neighbour
///   entry confirmed (XDP uses whatever MAC the entry holds, stale or not).
///
/// Multi-buffer aware (`xdp.frags`): only the headers are read, which are in the first buffer,
/// so a jumbo-MTU underlay can take the program too.
#[inline(always)]
fn xdp_run(ctx: &XdpContext) -> u32 {
    const PASS: u32 = xdp_action::XDP_PASS;
    if xdp_read::<u16>(ctx, 12) != Some(ETH_P_IP_BE) {
        return PASS;
    }
    let Some(ver_ihl) = xdp_read::<u8>(ctx, ETH_HLEN) else {
        return PASS;
    };
    let Some(frag) = xdp_read::<u16>(ctx, ETH_HLEN + 6) else {
        return PASS;
    };
    let Some(proto) = xdp_read::<u8>(ctx, ETH_HLEN + 9) else {
        return PASS;
    };
    if ver_ihl != 0x45 || u16::from_be(frag) & 0x3fff != 0 {
        return PASS;
    }
    let (csum_off, tcp_flags) = match proto {
        IPPROTO_TCP => {
            // The whole fixed header, as tc's parser wants it (urgent pointer at 18).
            let (Some(flags), Some(_)) = (
                xdp_read::<u8>(ctx, XDP_L4 + 13),
                xdp_read::<u16>(ctx, XDP_L4 + 18),
            ) else {
                return PASS;
            };
            (XDP_L4 + 16, flags)
        }
        IPPROTO_UDP => (XDP_L4 + 6, 0),
        _ => return PASS,
    };
    if tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST) != 0 {
        return PASS;
    }
    let (Some(tot_len), Some(saddr), Some(daddr), Some(sport), Some(dport), Some(check)) = (
        xdp_read::<u16>(ctx, ETH_HLEN + 2),
        xdp_read::<u32>(ctx, IP_SRC_OFF),
        xdp_read::<u32>(ctx, IP_DST_OFF),
        xdp_read::<u16>(ctx, XDP_L4),
        xdp_read::<u16>(ctx, XDP_L4 + 2),
        xdp_read::<u16>(ctx, csum_off),
    ) else {
        return PASS;
    };
    let tot_len = u16::from_be(tot_len);
    if tot_len < 20 {
        return PASS;
    }
    let key = CtKey {
        saddr,
        daddr,
        sport,
        dport,
        proto,
        pad: [0; 3],
    };
    let Some(entry) = CONNTRACK.get_ptr_mut(key) else {
        return PASS;
    };
    // SAFETY: as in `run`: a preallocated element, valid for this run; fields one by one.
    let e = unsafe { &mut *entry };
    // SAFETY: a plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let reply = e.is_reply();
    if !reply && e.expired(now) {
        return PASS;
    }
    let zero_udp = proto == IPPROTO_UDP && check == 0;
    if !zero_udp && check == csum::pseudo_header(saddr, daddr, proto, tot_len - 20) {
        count(NpStat::XdpPassPartialCsum);
        return PASS;
    }
    let to = Tuple {
        saddr: e.saddr,
        daddr: e.daddr,
        sport: e.sport,
        dport: e.dport,
    };
    let mut fib = fib::request();
    fib.l4_protocol = proto;
    fib.sport = to.sport;
    fib.dport = to.dport;
    fib.__bindgen_anon_1.tot_len = tot_len;
    // SAFETY: the program's valid context; the verifier checks the field read.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    fib.ifindex = ingress;
    fib.__bindgen_anon_3.ipv4_src = to.saddr;
    fib.__bindgen_anon_4.ipv4_dst = to.daddr;
    if !fib::lookup_neigh(ctx, &mut fib) || fib.ifindex != ingress {
        count(NpStat::XdpPassRoute);
        return PASS;
    }
    // The FIB takes a STALE neighbour entry as it is, and XDP never confirms one: one packet per
    // next hop per second goes through tc, whose `bpf_redirect_neigh` makes the kernel re-probe
    // a stale entry, so a next hop's changed MAC is learnt while the flow lasts (and the rare
    // packet overtaking its XDP-sent predecessors costs a flow nothing measurable).
    // SAFETY: with neighbour resolution the FIB leaves the next hop in `ipv4_dst`.
    let next_hop = unsafe { fib.__bindgen_anon_4.ipv4_dst };
    let due = match XDP_NEIGH.get_ptr_mut(next_hop) {
        // SAFETY: the LRU element stays valid for this run; a racing update only moves the time.
        Some(last) => unsafe {
            let due = now.wrapping_sub(*last) >= NS_PER_SEC;
            if due {
                *last = now;
            }
            due
        },
        None => {
            let _ = XDP_NEIGH.insert(next_hop, now, BPF_ANY);
            true
        }
    };
    if due {
        count(NpStat::XdpPassNeigh);
        return PASS;
    }
    touch(e, proto, tcp_flags, now);
    if reply && proto == IPPROTO_UDP {
        mark_replied(&e.partner(proto), now);
    }
    // The new header fields, then the checksums: the IP header's over the addresses, the L4
    // one over the pseudo-header addresses and the ports (a UDP checksum of 0 stays 0, a
    // computed 0 is sent as 0xffff).
    let mut ip_check = xdp_read::<u16>(ctx, IP_CSUM_OFF).unwrap_or(0);
    let mut l4_check = check;
    ip_check = csum::replace4(ip_check, saddr, to.saddr);
    ip_check = csum::replace4(ip_check, daddr, to.daddr);
    if !zero_udp {
        l4_check = csum::replace4(l4_check, saddr, to.saddr);
        l4_check = csum::replace4(l4_check, daddr, to.daddr);
        l4_check = csum::replace2(l4_check, sport, to.sport);
        l4_check = csum::replace2(l4_check, dport, to.dport);
        if proto == IPPROTO_UDP && l4_check == 0 {
            l4_check = 0xffff;
        }
    }
    let written = xdp_write(ctx, IP_SRC_OFF, to.saddr)
        && xdp_write(ctx, IP_DST_OFF, to.daddr)
        && xdp_write(ctx, IP_CSUM_OFF, ip_check)
        && xdp_write(ctx, XDP_L4, to.sport)
        && xdp_write(ctx, XDP_L4 + 2, to.dport)
        && xdp_write(ctx, csum_off, l4_check)
        && xdp_write(ctx, 0, fib.dmac)
        && xdp_write(ctx, ETH_ALEN, fib.smac);
    if !written {
        // Unreachable: every offset was read above. Nothing half-written reaches the wire.
        count(NpStat::DropRewrite);
        return xdp_action::XDP_DROP;
    }
    count(if reply {
        NpStat::CtReply
    } else {
        NpStat::CtOriginal
    });
    count(NpStat::XdpTx);
    xdp_action::XDP_TX
}

/// Adds one to a per-CPU counter.
#[inline(always)]
fn count(stat: NpStat) {
    if let Some(counter) = STATS.get_ptr_mut(stat.index()) {
        // SAFETY: this CPU's slot, valid for the run; only these programs write it (migration
        // disabled), user space reads: a plain increment is enough for a statistic.
        unsafe { *counter += 1 };
    }
}

/// The kernel only lets GPL-compatible programs call GPL-only helpers (aya-template's choice).
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

/// The backend named by Maglev entry `index` of `row`, copied out.
#[inline(always)]
fn maglev_backend(row: u32, index: u32) -> Option<Lb4Backend> {
    let be_index = MAGLEV.get(index).copied()?;
    let key = NpBackendKey {
        row,
        index: be_index,
    };
    // SAFETY: as for `SERVICES` (`BPF_F_NO_PREALLOC`), copied at once.
    unsafe { BACKENDS.get(key) }.copied()
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier rejects programs that could reach a panic, so this is never executed.
    loop {}
}

/// Host builds exist only for `cargo check` / `cargo clippy`; the real object is built for BPF.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
