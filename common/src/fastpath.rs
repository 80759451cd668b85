//! The `pod-fastpath` tc datapath's maps: this node's pods, its config, its counters.
//!
//! The programs of `ebpf/src/pod_fastpath.rs` hand a packet for one of the node's pods straight
//! to the pod's `eth0` with `bpf_redirect_peer`, skipping the bridge and one pass through the
//! per-CPU backlog, and send a pod's packet for another node's pod straight out of the route's
//! device with `bpf_redirect_neigh`. Maps, pinned by name beside the socket LB's:
//!
//! - [`names::PODS`]: pod IPv4 address (`u32`, network byte order, as the packet carries it) ->
//!   [`PodEndpoint`] (the host-side veth's ifindex, the pod's MAC). A hash created with
//!   `BPF_F_NO_PREALLOC`. No entry: the packet takes the normal path.
//! - [`names::CONFIG`]: one [`FastPathConfig`] (array, index 0): the bridge's MAC (the pods'
//!   gateway) and ifindex, the pod MTU, the cluster network, the devices pods' packets to other
//!   nodes may leave by. All zero (never written): nothing is handled.
//! - [`names::STATS`]: per-CPU `u64` counters indexed by [`FastPathStat`].

use core::net::Ipv4Addr;

/// Names of the `pod-fastpath` object's maps and programs (maps within 15 bytes; program names
/// longer than that are truncated by the kernel, the ELF keeps them whole).
pub mod names {
    /// `HashMap<u32, PodEndpoint>`: pod address -> host veth and MAC.
    pub const PODS: &str = "FERRY_FP_PODS";
    /// `Array<FastPathConfig>` with one entry.
    pub const CONFIG: &str = "FERRY_FP_CONF";
    /// `PerCpuArray<u64>` indexed by [`FastPathStat`](super::FastPathStat).
    pub const STATS: &str = "FERRY_FP_STATS";
    /// tc ingress of every pod's host-side veth: pod to pod on this node.
    pub const POD_INGRESS: &str = "ferry_pod_ingress";
    /// tc ingress of `ferry.1` and of the underlay interface: other nodes to a pod of this node.
    pub const NODE_INGRESS: &str = "ferry_node_ingress";
    /// Every map of the object, sorted.
    pub const MAPS: [&str; 3] = [CONFIG, PODS, STATS];
    /// Every program of the object, sorted.
    pub const PROGRAMS: [&str; 2] = [NODE_INGRESS, POD_INGRESS];
}

/// Capacity of the pod map (a node runs far fewer pods; `BPF_F_NO_PREALLOC`).
pub const FP_PODS_MAX_ENTRIES: u32 = 4096;

/// Value of the pod map: where a pod is and what its `eth0` is called on the wire.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct PodEndpoint {
    /// Index of the pod's host-side veth in the node's namespace (its peer is the pod's `eth0`).
    pub ifindex: u32,
    /// The pod's `eth0` MAC.
    pub mac: [u8; 6],
    /// Explicit padding; always zero.
    pub pad: [u8; 2],
}

const _: () = assert!(core::mem::size_of::<PodEndpoint>() == 12);
const _: () = assert!(core::mem::align_of::<PodEndpoint>() == 4);

impl PodEndpoint {
    /// An endpoint.
    pub const fn new(ifindex: u32, mac: [u8; 6]) -> Self {
        Self {
            ifindex,
            mac,
            pad: [0; 2],
        }
    }
}

/// The pod map's key for `ip`: the address's bytes as the packet carries them.
pub const fn pod_key(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

/// The address of a pod map key.
pub const fn pod_ip(key: u32) -> Ipv4Addr {
    let [a, b, c, d] = key.to_ne_bytes();
    Ipv4Addr::new(a, b, c, d)
}

/// Value of the config map (one entry).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FastPathConfig {
    /// The node bridge's MAC: the source of frames the node routes to a pod.
    pub bridge_mac: [u8; 6],
    /// Explicit padding; always zero.
    pub pad: [u8; 2],
    /// The pods' MTU: a routed packet above it (and not GSO) is left to the stack, which
    /// fragments it or answers "fragmentation needed".
    pub mtu: u32,
    /// The cluster network's address (network byte order): only packets from inside it are
    /// routed to a pod by the fast path, the traffic the pod netfilter bypass already exempts
    /// from conntrack.
    pub cluster_addr: u32,
    /// The cluster network's mask (network byte order); 0 in an unwritten config.
    pub cluster_mask: u32,
    /// The node bridge's ifindex: the incoming interface of the FIB lookup that routes a pod's
    /// packet to another node (the stack would route it as received on the bridge).
    pub bridge_ifindex: u32,
    /// The devices a pod's packet to another node's pod may be sent out of by the fast path
    /// (`ferry.1`, the underlay interface; 0 = unused slot): when the FIB names any other
    /// device the packet takes the normal path. All zero: pods' packets to other nodes are left
    /// to the stack.
    pub route_ifindex: [u32; 2],
}

const _: () = assert!(core::mem::size_of::<FastPathConfig>() == 32);
const _: () = assert!(core::mem::align_of::<FastPathConfig>() == 4);

impl FastPathConfig {
    /// A config for a bridge MAC, pod MTU and cluster network (`addr`/`prefix`).
    pub const fn new(bridge_mac: [u8; 6], mtu: u32, cluster: Ipv4Addr, prefix: u8) -> Self {
        let mask: u32 = if prefix == 0 {
            0
        } else if prefix >= 32 {
            u32::MAX
        } else {
            u32::MAX << (32 - prefix)
        };
        let mask_be = u32::from_ne_bytes(mask.to_be_bytes());
        Self {
            bridge_mac,
            pad: [0; 2],
            mtu,
            cluster_addr: pod_key(cluster) & mask_be,
            cluster_mask: mask_be,
            bridge_ifindex: 0,
            route_ifindex: [0; 2],
        }
    }

    /// The same config, routing pods' packets to other nodes' pods out of `devices` (at most
    /// two; the rest is ignored) with the bridge `bridge_ifindex` as the incoming interface.
    pub fn with_routes(mut self, bridge_ifindex: u32, devices: &[u32]) -> Self {
        self.bridge_ifindex = bridge_ifindex;
        let mut i = 0;
        while i < self.route_ifindex.len() && i < devices.len() {
            self.route_ifindex[i] = devices[i];
            i += 1;
        }
        self
    }

    /// Whether the fast path may send a routed pod packet out of `ifindex`.
    #[inline(always)]
    pub const fn routes_via(&self, ifindex: u32) -> bool {
        ifindex != 0 && (self.route_ifindex[0] == ifindex || self.route_ifindex[1] == ifindex)
    }

    /// Whether `addr_be` (network byte order) is inside the cluster network. An unwritten
    /// config (mask 0, MTU 0) contains nothing.
    #[inline(always)]
    pub const fn in_cluster(&self, addr_be: u32) -> bool {
        self.mtu != 0 && self.cluster_mask != 0 && addr_be & self.cluster_mask == self.cluster_addr
    }
}

/// One counter of the fast path.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FastPathStat {
    /// Pod to pod on this node: handed to the destination pod (bridge skipped).
    PodRedirects = 0,
    /// From another node (VXLAN or host-gw) to a pod of this node: handed to the pod.
    NodeRedirects = 1,
    /// To a pod of this node but TTL <= 1: left to the stack (which answers "time exceeded").
    PassTtl = 2,
    /// To a pod of this node but above the pod MTU: left to the stack (fragments or ICMP).
    PassTooBig = 3,
    /// To a pod of this node from outside the cluster network: left to the stack (conntrack,
    /// masquerade of the reply).
    PassForeign = 4,
    /// From a pod of this node to another node's pod: sent straight out of the FIB's device
    /// (`ferry.1` or the underlay; bridge, IP input and netfilter skipped).
    RouteRedirects = 5,
    /// From a pod of this node (its own address) to a cluster address that is not a pod of the
    /// node, but left to the stack: TTL <= 1, or the FIB lookup did not forward it out of a
    /// fast-path device (above the route's MTU; the node's own cluster addresses, such as the
    /// bridge's, which answer probes; unreachable). With the udp backend no device is
    /// configured and nothing is counted.
    RoutePass = 6,
}

impl FastPathStat {
    /// Number of counters, i.e. `max_entries` of the stats map.
    pub const COUNT: u32 = 7;
    /// Every counter, in index order.
    pub const ALL: [Self; Self::COUNT as usize] = [
        Self::PodRedirects,
        Self::NodeRedirects,
        Self::PassTtl,
        Self::PassTooBig,
        Self::PassForeign,
        Self::RouteRedirects,
        Self::RoutePass,
    ];

    /// Index of this counter in the array map.
    #[inline(always)]
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// The counter's name in snake case, as the metrics print it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::PodRedirects => "pod_redirects",
            Self::NodeRedirects => "node_redirects",
            Self::PassTtl => "pass_ttl",
            Self::PassTooBig => "pass_too_big",
            Self::PassForeign => "pass_foreign",
            Self::RouteRedirects => "route_redirects",
            Self::RoutePass => "route_pass",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_in_wire_order() {
        let ip = Ipv4Addr::new(10, 244, 1, 7);
        assert_eq!(pod_key(ip).to_ne_bytes(), [10, 244, 1, 7]);
        assert_eq!(pod_ip(pod_key(ip)), ip);
    }

    #[test]
    fn cluster_membership_uses_the_prefix() {
        let c = FastPathConfig::new([2, 0, 0, 0, 0, 1], 1450, Ipv4Addr::new(10, 244, 3, 0), 16);
        assert!(c.in_cluster(pod_key(Ipv4Addr::new(10, 244, 200, 1))));
        assert!(!c.in_cluster(pod_key(Ipv4Addr::new(10, 245, 0, 1))));
        assert!(!c.in_cluster(pod_key(Ipv4Addr::new(10, 99, 0, 254))));
        assert!(!FastPathConfig::default().in_cluster(0));
        let all = FastPathConfig::new([0; 6], 1500, Ipv4Addr::UNSPECIFIED, 0);
        assert!(
            !c.routes_via(0) && !c.routes_via(3),
            "no route devices by default"
        );
        let r = c.with_routes(4, &[7, 9, 11]);
        assert_eq!((r.bridge_ifindex, r.route_ifindex), (4, [7, 9]));
        assert!(r.routes_via(7) && r.routes_via(9) && !r.routes_via(11) && !r.routes_via(0));
        assert_eq!(c.with_routes(4, &[7]).route_ifindex, [7, 0]);
        assert!(
            !all.in_cluster(pod_key(Ipv4Addr::new(1, 2, 3, 4))),
            "mask 0 holds nothing"
        );
    }

    #[test]
    fn counters_are_dense() {
        for (i, s) in FastPathStat::ALL.iter().enumerate() {
            assert_eq!(s.index() as usize, i);
        }
    }
}
