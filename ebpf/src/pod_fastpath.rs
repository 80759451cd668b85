//! `pod-fastpath`: hands a packet for one of this node's pods straight to the pod's `eth0` with
//! `bpf_redirect_peer` (Cilium's "host routing" / `redirect_peer`, `bpf_lxc.c` / `bpf_host.c`).
//!
//! The normal path of a pod's packet to another pod of the node is pod `eth0` -> host veth ->
//! bridge -> host veth -> pod `eth0`: the second veth hop queues the packet on the per-CPU
//! backlog once more. `bpf_redirect_peer` from a tc *ingress* hook switches the packet to the
//! peer of the target veth (the pod's `eth0`, in the pod's namespace) within the same receive
//! round: no bridge, no second backlog pass.
//!
//! | hook | program | job |
//! |---|---|---|
//! | tc ingress of each pod's host-side veth | [`ferry_pod_ingress`] | pod to pod on this node |
//! | tc ingress of `ferry.1` and the underlay | [`ferry_node_ingress`] | other nodes to a pod |
//!
//! - [`ferry_pod_ingress`]: an IPv4 frame whose destination address is a pod of the node, whose
//!   destination MAC is that pod's MAC (what the bridge would have forwarded) and which does not
//!   come from that pod's own veth is redirected unchanged (bridging semantics).
//! - [`ferry_node_ingress`]: a `PACKET_HOST` IPv4 packet to a pod of the node, from inside the
//!   cluster network, is routed as the stack would: Ethernet destination = pod MAC, source =
//!   the bridge's MAC, TTL decremented with the header checksum fixed. TTL <= 1 and packets above
//!   the pod MTU (segments above it for GSO packets) are left to the stack, which answers with
//!   the ICMP error.
//!
//! Anything else returns `TC_ACT_UNSPEC` (`TCX_NEXT`): the next program on the hook (the
//! NodePort programs share the underlay's ingress) and then the stack see the packet as if this
//! program did not exist. A missing map entry or an unwritten config means the normal path, so
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

/// `TC_ACT_UNSPEC` (= `TCX_NEXT`): not handled, the next program or the stack decides.
const NEXT: i32 = -1;
/// `TC_ACT_SHOT`: drop (only for a packet this program already modified and cannot finish).
const SHOT: i32 = 2;
/// Ethernet header length.
const ETH_HLEN: usize = 14;
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
        return NEXT;
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
    let Ok(ip) = ctx.load::<[u8; 20]>(ETH_HLEN) else {
        return NEXT;
    };
    if ip[0] >> 4 != 4 {
        return NEXT;
    }
    let ihl = u32::from(ip[0] & 0x0f) * 4;
    if ihl < 20 {
        return NEXT;
    }
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
    let too_big = if gso_size == 0 {
        u32::from(u16::from_be_bytes([ip[2], ip[3]])) > cfg.mtu
    } else {
        // A GSO packet is forwardable when each segment fits (the stack's check for routed
        // GSO packets): payload per segment + IP header + L4 header.
        let l4_header = if l4 == IPPROTO_TCP {
            match ctx.load::<u8>(ETH_HLEN + ihl as usize + 12) {
                Ok(doff) => u32::from(doff >> 4) * 4,
                Err(_) => return NEXT,
            }
        } else if l4 == IPPROTO_UDP {
            8
        } else {
            return NEXT;
        };
        gso_size + ihl + l4_header > cfg.mtu
    };
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
    let new_ttl = ttl - 1;
    let old_word = u16::from_ne_bytes([ttl, l4]);
    let new_word = u16::from_ne_bytes([new_ttl, l4]);
    if ctx.store(ETH_HLEN + IP_TTL_OFF, &new_ttl, 0).is_err() {
        // Only the MACs changed: the stack still routes it (its packet type was set before).
        return NEXT;
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
        // The TTL changed but the checksum could not follow: the stack would drop it anyway.
        return SHOT;
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
