//! `pod-fastpath`: hands a packet for one of this node's pods straight to the pod's `eth0` with
//! `bpf_redirect_peer`, and a pod's packet for another node's pod straight to `ferry.1` or the
//! underlay with `bpf_redirect_neigh` (Cilium's "BPF host routing" / `redirect_peer`,
//! `bpf_lxc.c` / `bpf_host.c`).
//!
//! The normal path of a pod's packet to another pod of the node is pod `eth0` -> host veth ->
//! bridge -> host veth -> pod `eth0`: the second veth hop queues the packet on the per-CPU
//! backlog once more. `bpf_redirect_peer` from a tc *ingress* hook switches the packet to the
//! peer of the target veth (the pod's `eth0`, in the pod's namespace) within the same receive
//! round: no bridge, no second backlog pass.
//!
//! | hook | program | job |
//! |---|---|---|
//! | tc ingress of each pod's host-side veth | [`ferry_pod_ingress`] | pod to pod on this node; pod to another node's pod |
//! | tc ingress of `ferry.1` and the underlay | [`ferry_node_ingress`] | other nodes to a pod |
//!
//! - [`ferry_pod_ingress`]: an IPv4 frame whose destination address is a pod of the node, whose
//!   destination MAC is that pod's MAC (what the bridge would have forwarded) and which does not
//!   come from that pod's own veth is redirected unchanged (bridging semantics). A frame to the
//!   bridge's MAC (the pods' gateway) from the pod behind this veth (its source address is that
//!   pod's) to an address of the cluster network that is not a pod of the node is routed as
//!   the stack would: `bpf_fib_lookup` (incoming interface the bridge, the segment length as
//!   `tot_len` so the route's MTU is checked), and when the FIB names a fast-path device
//!   (`ferry.1`, or the underlay with host-gw / direct routing) the TTL is decremented and the
//!   packet sent with `bpf_redirect_neigh` to the FIB's next hop: bridge, IP input and the
//!   netfilter hooks are skipped (Cilium's BPF host routing). Anything the FIB does not forward
//!   out of such a device (a node address, an unreachable network, the udp backend's TUN, a
//!   packet above the route's MTU, TTL <= 1) is left to the stack.
//! - [`ferry_node_ingress`]: a `PACKET_HOST` IPv4 packet to a pod of the node, from inside the
//!   cluster network, is routed as the stack would: Ethernet destination = pod MAC, source =
//!   the bridge's MAC, TTL decremented with the header checksum fixed. TTL <= 1 and packets above
//!   the pod MTU (segments above it for GSO packets) are left to the stack, which answers with
//!   the ICMP error.
//!
//! Anything else returns `TC_ACT_UNSPEC` (`TCX_NEXT`): the stack sees the packet as if this
//! program did not exist (the NodePort programs, which share the underlay's ingress, are
//! attached first and have already passed it on). A missing map entry or an unwritten config means the normal path, so
//! correctness never depends on the maps. Counters per CPU in `FERRY_FP_STATS`
//! ([`FastPathStat`]).
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
    helpers::bpf_redirect_peer,
    macros::{classifier, map},
    maps::{Array, HashMap, PerCpuArray},
    programs::TcContext,
};
use ferry_common::{
    fastpath::{FastPathConfig, FastPathStat, PodEndpoint, FP_PODS_MAX_ENTRIES},
    BPF_F_NO_PREALLOC, IPPROTO_TCP, IPPROTO_UDP,
};
use ferry_ebpf::fib;

/// `TC_ACT_UNSPEC` (= `TCX_NEXT`): not handled, the next program or the stack decides.
const NEXT: i32 = -1;
/// `TC_ACT_SHOT`: drop (only for a packet this program already modified and cannot finish).
const SHOT: i32 = 2;
/// Ethernet header length.
const ETH_HLEN: usize = 14;
/// [`ETH_HLEN`] as the skb's length type.
const ETH_HLEN_U32: u32 = 14;
/// `PACKET_HOST`: the frame was addressed to this device's MAC.
const PACKET_HOST: u32 = 0;
/// Offset of the TTL in the IPv4 header.
const IP_TTL_OFF: usize = 8;
/// Offset of the header checksum in the IPv4 header.
const IP_CSUM_OFF: usize = 10;

/// Pod address -> host veth, pod MAC (`ferry_common::fastpath::names::PODS`).
#[map(name = "FERRY_FP_PODS")]
static PODS: HashMap<u32, PodEndpoint> = HashMap::pinned(FP_PODS_MAX_ENTRIES, BPF_F_NO_PREALLOC);

/// The node's config, one entry (`ferry_common::fastpath::names::CONFIG`).
#[map(name = "FERRY_FP_CONF")]
static CONFIG: Array<FastPathConfig> = Array::pinned(1, 0);

/// Per-CPU counters indexed by [`FastPathStat`] (`ferry_common::fastpath::names::STATS`).
#[map(name = "FERRY_FP_STATS")]
static STATS: PerCpuArray<u64> = PerCpuArray::pinned(FastPathStat::COUNT, 0);

/// tc ingress of a pod's host-side veth.
#[classifier]
fn ferry_pod_ingress(ctx: TcContext) -> i32 {
    pod_ingress(&ctx)
}

/// tc ingress of `ferry.1` and of the underlay interface.
#[classifier]
fn ferry_node_ingress(ctx: TcContext) -> i32 {
    node_ingress(&ctx)
}

#[inline(always)]
fn pod_ingress(ctx: &TcContext) -> i32 {
    let Ok(eth) = ctx.load::<[u8; ETH_HLEN]>(0) else {
        return NEXT;
    };
    if eth[12] != 0x08 || eth[13] != 0x00 {
        return NEXT;
    }
    // The destination address, as the packet carries it (network byte order).
    let Ok(daddr) = ctx.load::<u32>(ETH_HLEN + 16) else {
        return NEXT;
    };
    // SAFETY: a `BPF_F_NO_PREALLOC` hash: an element is freed only after an RCU grace period,
    // so the reference stays valid for this run; it is copied at once.
    let Some(pod) = (unsafe { PODS.get(daddr) }).copied() else {
        return route_out(ctx, &eth);
    };
    if !mac_eq(&pod.mac, &[eth[0], eth[1], eth[2], eth[3], eth[4], eth[5]]) {
        return NEXT;
    }
    // SAFETY: `skb` is the program's context pointer, valid for the run.
    if pod.ifindex == unsafe { (*ctx.skb.skb).ifindex } {
        return NEXT;
    }
    count(FastPathStat::PodRedirects);
    redirect_peer(pod.ifindex)
}

/// A pod's frame to its gateway for another node's pod: routed out of the FIB's device when
/// that is a fast-path device (see the module header), else left to the stack.
#[inline(always)]
fn route_out(ctx: &TcContext, eth: &[u8; ETH_HLEN]) -> i32 {
    let Some(cfg) = CONFIG.get(0).copied() else {
        return NEXT;
    };
    if (cfg.route_ifindex[0] == 0 && cfg.route_ifindex[1] == 0)
        || !mac_eq(
            &cfg.bridge_mac,
            &[eth[0], eth[1], eth[2], eth[3], eth[4], eth[5]],
        )
    {
        return NEXT;
    }
    let Some((ip, ihl)) = ipv4_header(ctx) else {
        return NEXT;
    };
    // IP options (source or record route) are the stack's to process.
    if ihl != 20 {
        return NEXT;
    }
    let saddr = u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]);
    let daddr = u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]);
    if !cfg.in_cluster(daddr) {
        return NEXT;
    }
    // Only the pod behind this veth, with its own address (anything else, e.g. a secondary
    // address the IPAM store does not know, is the stack's).
    // SAFETY: `skb` is the program's context pointer, valid for the run.
    let (ifindex, gso_size) = unsafe { ((*ctx.skb.skb).ifindex, (*ctx.skb.skb).gso_size) };
    // SAFETY: as in `pod_ingress`.
    match unsafe { PODS.get(saddr) } {
        Some(src) if src.ifindex == ifindex => {}
        _ => return NEXT,
    }
    let ttl = ip[IP_TTL_OFF];
    if ttl <= 1 {
        count(FastPathStat::RoutePass);
        return NEXT;
    }
    let proto = ip[9];
    let tot_len = u32::from(u16::from_be_bytes([ip[2], ip[3]]));
    if gso_size == 0 {
        // The stack trims a frame to the IP length before routing; one whose length disagrees
        // with its header is the stack's (so the MTU check below sees the real length).
        if ctx.len() != ETH_HLEN_U32 + tot_len {
            return NEXT;
        }
    } else if proto != IPPROTO_TCP {
        // UDP GSO may carry a pod's own tunnel, whose segments are longer than the UDP header
        // and `gso_size` suggest: the stack's forwarding check knows the encapsulation.
        return NEXT;
    }
    let Some(seg_len) = segment_len(ctx, &ip, ihl, gso_size) else {
        return NEXT;
    };
    let mut fib = fib::request();
    fib.l4_protocol = proto;
    // The ports, for policy rules and the multipath hash; none for any fragment (the kernel's
    // hash sees none either, so all fragments of a datagram take one path).
    let fragment = ip[6] & 0x3f != 0 || ip[7] != 0;
    if !fragment && (proto == IPPROTO_TCP || proto == IPPROTO_UDP) {
        if let Ok(ports) = ctx.load::<[u8; 4]>(ETH_HLEN + 20) {
            fib.sport = u16::from_ne_bytes([ports[0], ports[1]]);
            fib.dport = u16::from_ne_bytes([ports[2], ports[3]]);
        }
    }
    // A segment above the route's MTU makes the FIB answer FRAG_NEEDED: the stack fragments it
    // or answers "fragmentation needed".
    #[expect(
        clippy::cast_possible_truncation,
        reason = "a segment of an IPv4 packet is below 64 KiB"
    )]
    {
        fib.__bindgen_anon_1.tot_len = seg_len as u16;
    }
    fib.__bindgen_anon_2.tos = ip[1];
    // Routed as received on the bridge, as the stack would route it.
    fib.ifindex = if cfg.bridge_ifindex != 0 {
        cfg.bridge_ifindex
    } else {
        ifindex
    };
    fib.__bindgen_anon_3.ipv4_src = saddr;
    fib.__bindgen_anon_4.ipv4_dst = daddr;
    if !fib::lookup(ctx, &mut fib) || !cfg.routes_via(fib.ifindex) {
        count(FastPathStat::RoutePass);
        return NEXT;
    }
    if let Err(verdict) = decrement_ttl(ctx, ttl, proto) {
        return verdict;
    }
    count(FastPathStat::RouteRedirects);
    fib::redirect_neigh(&fib)
}

/// The fixed 20 bytes of the IPv4 header after the Ethernet header and the header length in
/// bytes; `None` when the packet is too short, not version 4 or its IHL below 5.
#[inline(always)]
fn ipv4_header(ctx: &TcContext) -> Option<([u8; 20], u32)> {
    let ip = ctx.load::<[u8; 20]>(ETH_HLEN).ok()?;
    let ihl = u32::from(ip[0] & 0x0f) * 4;
    (ip[0] >> 4 == 4 && ihl >= 20).then_some((ip, ihl))
}

/// The length of the packet on the wire after segmentation: its IP length, or for a GSO packet
/// the IP header + L4 header + `gso_size` (the stack's check for routed GSO packets). `None`
/// for a GSO packet that is neither TCP nor UDP or whose TCP header cannot be read.
#[inline(always)]
fn segment_len(ctx: &TcContext, ip: &[u8; 20], ihl: u32, gso_size: u32) -> Option<u32> {
    if gso_size == 0 {
        return Some(u32::from(u16::from_be_bytes([ip[2], ip[3]])));
    }
    let l4_header = if ip[9] == IPPROTO_TCP {
        let doff = ctx.load::<u8>(ETH_HLEN + ihl as usize + 12).ok()?;
        u32::from(doff >> 4) * 4
    } else if ip[9] == IPPROTO_UDP {
        8
    } else {
        return None;
    };
    Some(gso_size + ihl + l4_header)
}

/// Decrements the TTL (`ttl`, > 1) and fixes the header checksum (`l4` is the protocol byte
/// that shares the checksummed word). `Err` is the verdict when it could not: `NEXT` when
/// nothing changed, `SHOT` when the TTL changed but the checksum could not follow.
#[inline(always)]
fn decrement_ttl(ctx: &TcContext, ttl: u8, l4: u8) -> Result<(), i32> {
    let new_ttl = ttl - 1;
    let old_word = u16::from_ne_bytes([ttl, l4]);
    let new_word = u16::from_ne_bytes([new_ttl, l4]);
    if ctx.store(ETH_HLEN + IP_TTL_OFF, &new_ttl, 0).is_err() {
        return Err(NEXT);
    }
    if ctx
        .l3_csum_replace(
            ETH_HLEN + IP_CSUM_OFF,
            u64::from(old_word),
            u64::from(new_word),
            2,
        )
        .is_err()
    {
        // The stack would drop a packet with a wrong header checksum anyway.
        return Err(SHOT);
    }
    Ok(())
}

#[inline(always)]
fn node_ingress(ctx: &TcContext) -> i32 {
    // SAFETY: `skb` is the program's context pointer, valid for the run.
    let (pkt_type, gso_size) = unsafe { ((*ctx.skb.skb).pkt_type, (*ctx.skb.skb).gso_size) };
    if pkt_type != PACKET_HOST {
        return NEXT;
    }
    let Ok(proto) = ctx.load::<[u8; 2]>(12) else {
        return NEXT;
    };
    if proto != [0x08, 0x00] {
        return NEXT;
    }
    let Some((ip, ihl)) = ipv4_header(ctx) else {
        return NEXT;
    };
    let daddr = u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]);
    // SAFETY: as in `pod_ingress`.
    let Some(pod) = (unsafe { PODS.get(daddr) }).copied() else {
        return NEXT;
    };
    let Some(cfg) = CONFIG.get(0).copied() else {
        return NEXT;
    };
    let saddr = u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]);
    if !cfg.in_cluster(saddr) {
        count(FastPathStat::PassForeign);
        return NEXT;
    }
    let ttl = ip[IP_TTL_OFF];
    if ttl <= 1 {
        count(FastPathStat::PassTtl);
        return NEXT;
    }
    let l4 = ip[9];
    let Some(seg_len) = segment_len(ctx, &ip, ihl, gso_size) else {
        return NEXT;
    };
    let too_big = seg_len > cfg.mtu;
    if too_big {
        count(FastPathStat::PassTooBig);
        return NEXT;
    }
    let m = pod.mac;
    let b = cfg.bridge_mac;
    let macs = [
        m[0], m[1], m[2], m[3], m[4], m[5], b[0], b[1], b[2], b[3], b[4], b[5],
    ];
    if ctx.store(0, &macs, 0).is_err() {
        return NEXT;
    }
    if let Err(verdict) = decrement_ttl(ctx, ttl, l4) {
        // `NEXT`: only the MACs changed, the stack still routes it (its packet type was set
        // before).
        return verdict;
    }
    count(FastPathStat::NodeRedirects);
    redirect_peer(pod.ifindex)
}

/// `bpf_redirect_peer` to the peer of veth `ifindex` (`TC_ACT_REDIRECT`).
#[inline(always)]
fn redirect_peer(ifindex: u32) -> i32 {
    // SAFETY: a plain helper call; flags must be 0.
    let r = unsafe { bpf_redirect_peer(ifindex, 0) };
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the helper returns a TC_ACT_* verdict (7 or 2)"
    )]
    let verdict = r as i32;
    verdict
}

/// Compares two MACs without a `memcmp` call (none exists in BPF).
#[inline(always)]
fn mac_eq(a: &[u8; 6], b: &[u8; 6]) -> bool {
    a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] && a[5] == b[5]
}

/// Adds one to a per-CPU counter.
#[inline(always)]
fn count(stat: FastPathStat) {
    if let Some(counter) = STATS.get_ptr_mut(stat.index()) {
        // SAFETY: the pointer comes from the map lookup and points at this CPU's slot, valid for
        // the run; programs run with migration disabled, so a plain increment suffices for a
        // statistic.
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
