//! The `nodeport` tc datapath's maps: external frontends, Maglev rows, connection tracking.
//!
//! Packets from outside the node to a NodePort, an externalIP or a LoadBalancer IP are
//! translated per packet by the tc programs of `ebpf/src/nodeport.rs` (the socket load balancer
//! only sees sockets of the node). Maps, all pinned by name beside the socket LB's:
//!
//! - [`names::SERVICES`]: [`NpSvcKey`] (frontend) -> [`NpSvc`] (Maglev row, backend count,
//!   [`NP_FLAG_LOCAL`]). Only frontends reachable from outside (NodePort, ExternalIp,
//!   LoadBalancer) are here; ClusterIPs never are.
//! - [`names::BACKENDS`]: [`NpBackendKey`] (row, index) -> [`Lb4Backend`].
//! - [`names::MAGLEV`]: a flat `u32` array; row `r`'s lookup table is the slice
//!   `[r * size, (r + 1) * size)` (`size` = [`NpConfig::maglev_size`]), each entry an index into
//!   the row's backends. Frontends with the same backend set share a row.
//! - [`names::CONNTRACK`]: [`CtKey`] (the 5-tuple exactly as a packet carries it) ->
//!   [`CtEntry`] (the tuple to rewrite it to). A flow has two entries: the original direction
//!   (client -> frontend) and the reply direction (backend -> the node's NAT address, or the
//!   client when the source is preserved); [`CtEntry::partner`] names one from the other.
//!   A plain preallocated hash, not an LRU: when full, new flows are dropped and counted, live
//!   flows are never evicted. The agent deletes expired pairs ([`CtEntry::expired`]).
//! - [`names::CONFIG`]: one [`NpConfig`]: node address, NAT port range, Maglev size, seed.
//! - [`names::STATS`]: per-CPU counters indexed by [`NpStat`].
//!
//! Addresses and ports are in network byte order, as the packet carries them.

use core::net::{Ipv4Addr, SocketAddrV4};

/// Names of the `nodeport` object's maps and programs (at most 15 bytes each).
pub mod names {
    /// `HashMap<NpSvcKey, NpSvc>`.
    pub const SERVICES: &str = "FERRY_NP4_SVC";
    /// `HashMap<NpBackendKey, Lb4Backend>`.
    pub const BACKENDS: &str = "FERRY_NP4_BE";
    /// `Array<u32>`: the Maglev rows.
    pub const MAGLEV: &str = "FERRY_NP4_MAG";
    /// `HashMap<CtKey, CtEntry>` (preallocated).
    pub const CONNTRACK: &str = "FERRY_NP4_CT";
    /// `Array<NpConfig>` with one element.
    pub const CONFIG: &str = "FERRY_NP4_CFG";
    /// `PerCpuArray<u64>` indexed by [`NpStat`](super::NpStat).
    pub const STATS: &str = "FERRY_NP_STATS";
    /// `LruHashMap<u32, u64>`, not pinned: next hop -> when the XDP program last left one of
    /// its packets to tc (neighbour upkeep).
    pub const XDP_NEIGH: &str = "FERRY_NP_XNEIGH";

    /// Underlay ingress: connection tracking and new external flows.
    pub const EXTERNAL: &str = "ferry_np_ext";
    /// Bridge / overlay ingress: replies of tracked flows only.
    pub const REPLY: &str = "ferry_np_rev";
    /// Underlay egress: reverse NAT of replies whose source was preserved (ETP Local).
    pub const EGRESS: &str = "ferry_np_egr";
    /// Underlay XDP (opt-in): tracked packets whose translated destination is reached through
    /// the underlay again, sent back out at once (`XDP_TX`); everything else goes on to tc.
    pub const XDP: &str = "ferry_np_xdp";
    /// An XDP program that passes everything, for the far end of a veth underlay (the lab's
    /// switch ports), which must have one for `XDP_TX` frames to be delivered.
    pub const XDP_PASS: &str = "ferry_xdp_pass";

    /// Every map of the object, sorted.
    pub const MAPS: [&str; 7] = [
        BACKENDS, CONFIG, CONNTRACK, MAGLEV, SERVICES, STATS, XDP_NEIGH,
    ];
    /// Every tc program of the object, sorted ([`XDP`] is the other one).
    pub const PROGRAMS: [&str; 3] = [EGRESS, EXTERNAL, REPLY];
}

/// Capacity of the external frontend map.
pub const NP4_SERVICES_MAX_ENTRIES: u32 = 65_536;
/// Capacity of the (row, index) -> backend map.
pub const NP4_BACKENDS_MAX_ENTRIES: u32 = 262_144;
/// Length of the Maglev array (8 MiB): 128 rows at the default size 16381.
pub const NP4_MAGLEV_MAX_ENTRIES: u32 = 2_097_152;
/// Capacity of the conntrack map: two entries per flow, so 64k flows (preallocated, ~10 MiB).
pub const NP4_CT_MAX_ENTRIES: u32 = 131_072;
/// Default Maglev table size (prime; Cilium's default too).
pub const MAGLEV_DEFAULT_SIZE: u32 = 16_381;

/// [`NpSvc::flags`]: `externalTrafficPolicy: Local` (no SNAT, local backends only).
pub const NP_FLAG_LOCAL: u8 = 1;

/// [`CtEntry::flags`]: this entry is the reply direction.
pub const CT_F_REPLY: u8 = 1;
/// [`CtEntry::flags`]: the flow was source-NATed to the node.
pub const CT_F_SNAT: u8 = 2;
/// [`CtEntry::flags`]: a FIN was seen in this direction.
pub const CT_F_FIN: u8 = 4;
/// [`CtEntry::flags`]: a RST was seen in this direction.
pub const CT_F_RST: u8 = 8;
/// [`CtEntry::flags`]: (UDP, original direction) the backend has replied.
pub const CT_F_REPLIED: u8 = 16;

/// TCP timeouts (seconds), as the kernel's `nf_conntrack_tcp_timeout_*`: SYN seen.
pub const CT_TCP_SYN_SECS: u64 = 120;
/// TCP established (`nf_conntrack_tcp_timeout_established`, 5 days).
pub const CT_TCP_ESTABLISHED_SECS: u64 = 432_000;
/// TCP after a FIN (`time_wait` / `fin_wait`).
pub const CT_TCP_FIN_SECS: u64 = 120;
/// TCP after a RST (`close`).
pub const CT_TCP_CLOSE_SECS: u64 = 10;
/// How long a backend may hold a closed connection in TIME_WAIT (Linux's `TCP_TIMEWAIT_LEN`):
/// a NAT tuple closed with FINs goes to another client only this long after its last packet
/// (the new client's initial sequence number and timestamps are unrelated to the old ones, so
/// the backend's TIME_WAIT socket would answer its SYN with an ACK of the old connection).
pub const CT_TCP_TIME_WAIT_SECS: u64 = 60;
/// Added to [`CT_TCP_TIME_WAIT_SECS`]: the kernel's TIME_WAIT timer sits on a coarse timer-wheel
/// level at 60 s and may fire a few seconds late.
pub const CT_TCP_TIME_WAIT_SLACK_SECS: u64 = 6;
const _: () = assert!(CT_TCP_FIN_SECS >= CT_TCP_TIME_WAIT_SECS + CT_TCP_TIME_WAIT_SLACK_SECS);
/// UDP without a reply (`nf_conntrack_udp_timeout`).
pub const CT_UDP_SECS: u64 = 30;
/// UDP once replied (`nf_conntrack_udp_timeout_stream`).
pub const CT_UDP_STREAM_SECS: u64 = 120;

/// Key of the external frontend map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NpSvcKey {
    /// Frontend address, network byte order.
    pub addr: u32,
    /// Frontend port, network byte order.
    pub port: u16,
    /// IANA protocol number.
    pub proto: u8,
    /// Explicit padding; always zero.
    pub pad: u8,
}

const _: () = assert!(core::mem::size_of::<NpSvcKey>() == 8);

impl NpSvcKey {
    /// The key of a host-side frontend.
    pub const fn new(frontend: SocketAddrV4, proto: u8) -> Self {
        Self {
            addr: u32::from_ne_bytes(frontend.ip().octets()),
            port: frontend.port().to_be(),
            proto,
            pad: 0,
        }
    }

    /// The frontend's socket address.
    pub const fn socket_addr(&self) -> SocketAddrV4 {
        let [a, b, c, d] = self.addr.to_ne_bytes();
        SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), u16::from_be(self.port))
    }
}

/// Value of the external frontend map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct NpSvc {
    /// The Maglev row (and backend list) of this frontend's backend set.
    pub row: u32,
    /// Number of backends in the row; 0: drop new flows (kube-proxy drops too).
    pub count: u16,
    /// [`NP_FLAG_LOCAL`].
    pub flags: u8,
    /// Explicit padding; always zero.
    pub pad: u8,
}

const _: () = assert!(core::mem::size_of::<NpSvc>() == 8);

/// Key of the row backend map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NpBackendKey {
    /// Maglev row.
    pub row: u32,
    /// Index into the row's backends (what the Maglev entries hold).
    pub index: u32,
}

const _: () = assert!(core::mem::size_of::<NpBackendKey>() == 8);

/// The one element of the config map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct NpConfig {
    /// The node address used as SNAT source (network byte order); 0: datapath disabled.
    pub node_addr: u32,
    /// First NAT source port (host byte order).
    pub port_min: u16,
    /// Last NAT source port (host byte order, inclusive).
    pub port_max: u16,
    /// Maglev table size (prime); rows are this long.
    pub maglev_size: u32,
    /// Explicit padding; always zero.
    pub pad: u32,
    /// Cluster-wide flow hash seed (every node must use the same).
    pub seed: u64,
}

const _: () = assert!(core::mem::size_of::<NpConfig>() == 24);

/// Conntrack key: a packet's 5-tuple as it is on the wire.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CtKey {
    /// Source address, network byte order.
    pub saddr: u32,
    /// Destination address, network byte order.
    pub daddr: u32,
    /// Source port, network byte order.
    pub sport: u16,
    /// Destination port, network byte order.
    pub dport: u16,
    /// IANA protocol number.
    pub proto: u8,
    /// Explicit padding; always zero.
    pub pad: [u8; 3],
}

const _: () = assert!(core::mem::size_of::<CtKey>() == 16);

impl CtKey {
    /// A key from host-side addresses.
    pub const fn new(src: SocketAddrV4, dst: SocketAddrV4, proto: u8) -> Self {
        Self {
            saddr: u32::from_ne_bytes(src.ip().octets()),
            daddr: u32::from_ne_bytes(dst.ip().octets()),
            sport: src.port().to_be(),
            dport: dst.port().to_be(),
            proto,
            pad: [0; 3],
        }
    }

    /// Source socket address.
    pub const fn src(&self) -> SocketAddrV4 {
        sock(self.saddr, self.sport)
    }

    /// Destination socket address.
    pub const fn dst(&self) -> SocketAddrV4 {
        sock(self.daddr, self.dport)
    }
}

const fn sock(addr_be: u32, port_be: u16) -> SocketAddrV4 {
    let [a, b, c, d] = addr_be.to_ne_bytes();
    SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), u16::from_be(port_be))
}

/// Conntrack value: the tuple a packet matching the key is rewritten to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CtEntry {
    /// New source address, network byte order.
    pub saddr: u32,
    /// New destination address, network byte order.
    pub daddr: u32,
    /// New source port, network byte order.
    pub sport: u16,
    /// New destination port, network byte order.
    pub dport: u16,
    /// `CT_F_*` bits.
    pub flags: u8,
    /// Explicit padding; always zero.
    pub pad: [u8; 3],
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) after which the entry is dead.
    pub expires_ns: u64,
}

const _: () = assert!(core::mem::size_of::<CtEntry>() == 24);

impl CtEntry {
    /// The key of the other direction's entry: the rewritten tuple, reversed.
    #[inline(always)]
    pub const fn partner(&self, proto: u8) -> CtKey {
        CtKey {
            saddr: self.daddr,
            daddr: self.saddr,
            sport: self.dport,
            dport: self.sport,
            proto,
            pad: [0; 3],
        }
    }

    /// Whether the entry is dead at monotonic time `now_ns`.
    #[inline(always)]
    pub const fn expired(&self, now_ns: u64) -> bool {
        now_ns > self.expires_ns
    }

    /// The new source socket address.
    pub const fn src(&self) -> SocketAddrV4 {
        sock(self.saddr, self.sport)
    }

    /// The new destination socket address.
    pub const fn dst(&self) -> SocketAddrV4 {
        sock(self.daddr, self.dport)
    }

    /// The entry is the reply direction.
    pub const fn is_reply(&self) -> bool {
        self.flags & CT_F_REPLY != 0
    }
}

/// Lifetime in seconds of a conntrack entry after a packet with TCP flags `tcp_flags` (byte 13
/// of the TCP header; ignored for UDP) given the entry's `flags` after the update. Follows the
/// kernel's TCP states coarsely: RST -> close, FIN -> time-wait, SYN -> syn-sent/recv, else
/// established (a closing flow never gets the long timeout back).
#[inline(always)]
pub const fn ct_lifetime_secs(proto: u8, flags: u8, tcp_flags: u8) -> u64 {
    if proto == crate::IPPROTO_UDP {
        return if flags & (CT_F_REPLY | CT_F_REPLIED) != 0 {
            CT_UDP_STREAM_SECS
        } else {
            CT_UDP_SECS
        };
    }
    if flags & CT_F_RST != 0 {
        CT_TCP_CLOSE_SECS
    } else if flags & CT_F_FIN != 0 {
        CT_TCP_FIN_SECS
    } else if tcp_flags & TCP_SYN != 0 {
        CT_TCP_SYN_SECS
    } else {
        CT_TCP_ESTABLISHED_SECS
    }
}

/// TCP header flag bits (byte 13).
pub const TCP_FIN: u8 = 0x01;
/// SYN.
pub const TCP_SYN: u8 = 0x02;
/// RST.
pub const TCP_RST: u8 = 0x04;
/// ACK.
pub const TCP_ACK: u8 = 0x10;

/// The flow hash both the programs and the agent's tests use to index a Maglev row: the
/// 5-tuple (network byte order, as on the wire) mixed with the cluster seed by two rounds of
/// the murmur3 64-bit finaliser. Every node computes the same hash for a flow.
#[inline(always)]
pub const fn flow_hash(
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
    proto: u8,
    seed: u64,
) -> u64 {
    let a = ((saddr as u64) << 32) | daddr as u64;
    let b = ((sport as u64) << 24) | ((dport as u64) << 8) | proto as u64;
    fmix64(fmix64(seed ^ a) ^ b)
}

/// The murmur3 64-bit finaliser (`fmix64`): a bijective mixer every hash of the project is built
/// on (the flow hash, the agent's Maglev permutations, the L2 announcer's rendezvous weights).
/// Its values are part of the cluster's behaviour (every node must agree): never change it.
#[inline(always)]
pub const fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// One counter of the tc datapath.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NpStat {
    /// New external flows translated (conntrack pair created).
    NewFlows = 0,
    /// Packets translated through an original-direction entry.
    CtOriginal = 1,
    /// Packets translated through a reply-direction entry.
    CtReply = 2,
    /// New flows dropped: the frontend has no (local) backend.
    DropNoBackend = 3,
    /// New flows dropped: the conntrack map is full.
    DropCtFull = 4,
    /// New flows dropped: no free NAT port found.
    DropNatPorts = 5,
    /// New flows dropped: a Maglev entry or backend was missing (an update in flight).
    DropNoSlot = 6,
    /// IPv4 fragments seen (passed untranslated).
    PassFragment = 7,
    /// Truncated or malformed headers (passed untranslated).
    PassMalformed = 8,
    /// Translated packets redirected to the FIB's egress device.
    Redirected = 9,
    /// Translated packets passed up because the FIB lookup did not give a device.
    FibPass = 10,
    /// Packet rewrite helpers failed (packet dropped).
    DropRewrite = 11,
    /// ETP Local flows superseded by a direct TCP connection on the same tuple (entries deleted).
    Superseded = 12,
    /// New ETP Local flows dropped: a live flow of another frontend from the same client
    /// ip:port to the same backend holds the reply entry.
    DropCollision = 13,
    /// ETP Cluster flows whose NAT port is the client's own source port.
    NatPortKept = 14,
    /// NAT port candidates skipped because a socket of the node holds the tuple.
    NatPortNodeSocket = 15,
    /// NAT ports taken from a flow closed less than TIME_WAIT ago (nothing better was left).
    NatPortInTimeWait = 16,
    /// External flows superseded by the node's own new connection on their NAT tuple.
    SupersededByNode = 17,
    /// Tracked packets translated by the XDP program and sent back out of the underlay.
    XdpTx = 18,
    /// Tracked packets the XDP program left to tc because their L4 checksum field holds only
    /// the pseudo-header sum (a local sender's `CHECKSUM_PARTIAL`; XDP cannot update that).
    XdpPassPartialCsum = 19,
    /// Tracked packets the XDP program left to tc because their new destination is not
    /// reached through the underlay (a pod of this node, the overlay) or its neighbour is
    /// unresolved.
    XdpPassRoute = 20,
    /// Tracked packets the XDP program left to tc (one per next hop per second), so that tc's
    /// `bpf_redirect_neigh` keeps the next hop's neighbour entry confirmed.
    XdpPassNeigh = 21,
}

impl NpStat {
    /// Number of counters.
    pub const COUNT: u32 = 22;
    /// Every counter, in index order.
    pub const ALL: [Self; Self::COUNT as usize] = [
        Self::NewFlows,
        Self::CtOriginal,
        Self::CtReply,
        Self::DropNoBackend,
        Self::DropCtFull,
        Self::DropNatPorts,
        Self::DropNoSlot,
        Self::PassFragment,
        Self::PassMalformed,
        Self::Redirected,
        Self::FibPass,
        Self::DropRewrite,
        Self::Superseded,
        Self::DropCollision,
        Self::NatPortKept,
        Self::NatPortNodeSocket,
        Self::NatPortInTimeWait,
        Self::SupersededByNode,
        Self::XdpTx,
        Self::XdpPassPartialCsum,
        Self::XdpPassRoute,
        Self::XdpPassNeigh,
    ];

    /// Index in the array map.
    #[inline(always)]
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// Snake-case name for metrics and inspection.
    pub const fn name(self) -> &'static str {
        match self {
            Self::NewFlows => "new_flows",
            Self::CtOriginal => "ct_original",
            Self::CtReply => "ct_reply",
            Self::DropNoBackend => "drop_no_backend",
            Self::DropCtFull => "drop_ct_full",
            Self::DropNatPorts => "drop_nat_ports",
            Self::DropNoSlot => "drop_no_slot",
            Self::PassFragment => "pass_fragment",
            Self::PassMalformed => "pass_malformed",
            Self::Redirected => "redirected",
            Self::FibPass => "fib_pass",
            Self::DropRewrite => "drop_rewrite",
            Self::Superseded => "superseded",
            Self::DropCollision => "drop_collision",
            Self::NatPortKept => "nat_port_kept",
            Self::NatPortNodeSocket => "nat_port_node_socket",
            Self::NatPortInTimeWait => "nat_port_in_time_wait",
            Self::SupersededByNode => "superseded_by_node",
            Self::XdpTx => "xdp_tx",
            Self::XdpPassPartialCsum => "xdp_pass_partial_csum",
            Self::XdpPassRoute => "xdp_pass_route",
            Self::XdpPassNeigh => "xdp_pass_neigh",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{IPPROTO_TCP, IPPROTO_UDP};

    #[test]
    fn partner_of_each_direction_is_the_other_key() {
        let client = SocketAddrV4::new(Ipv4Addr::new(10, 99, 0, 254), 40000);
        let front = SocketAddrV4::new(Ipv4Addr::new(10, 99, 0, 10), 30080);
        let node = SocketAddrV4::new(Ipv4Addr::new(10, 99, 0, 10), 61000);
        let backend = SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 5), 8080);
        let orig = CtKey::new(client, front, IPPROTO_TCP);
        let reply = CtKey::new(backend, node, IPPROTO_TCP);
        let orig_v = CtEntry {
            saddr: reply.daddr,
            daddr: reply.saddr,
            sport: reply.dport,
            dport: reply.sport,
            flags: CT_F_SNAT,
            pad: [0; 3],
            expires_ns: 5,
        };
        let reply_v = CtEntry {
            saddr: orig.daddr,
            daddr: orig.saddr,
            sport: orig.dport,
            dport: orig.sport,
            flags: CT_F_SNAT | CT_F_REPLY,
            pad: [0; 3],
            expires_ns: 5,
        };
        assert_eq!(orig_v.partner(IPPROTO_TCP), reply);
        assert_eq!(reply_v.partner(IPPROTO_TCP), orig);
        assert!(reply_v.is_reply() && !orig_v.is_reply());
        assert!(orig_v.expired(6) && !orig_v.expired(5));
        assert_eq!(orig.src(), client);
        assert_eq!(reply.dst(), node);
    }

    #[test]
    fn lifetimes_follow_the_kernel() {
        assert_eq!(ct_lifetime_secs(IPPROTO_TCP, 0, TCP_SYN), 120);
        assert_eq!(ct_lifetime_secs(IPPROTO_TCP, 0, 0x10), 432_000);
        assert_eq!(ct_lifetime_secs(IPPROTO_TCP, CT_F_FIN, 0x10), 120);
        assert_eq!(ct_lifetime_secs(IPPROTO_TCP, CT_F_FIN | CT_F_RST, 0x10), 10);
        assert_eq!(ct_lifetime_secs(IPPROTO_UDP, 0, 0), 30);
        assert_eq!(ct_lifetime_secs(IPPROTO_UDP, CT_F_REPLY, 0), 120);
        assert_eq!(ct_lifetime_secs(IPPROTO_UDP, CT_F_REPLIED, 0), 120);
    }

    #[test]
    fn flow_hash_depends_on_every_field_and_the_seed() {
        let h = flow_hash(1, 2, 3, 4, 6, 7);
        assert_eq!(h, flow_hash(1, 2, 3, 4, 6, 7));
        for other in [
            flow_hash(9, 2, 3, 4, 6, 7),
            flow_hash(1, 9, 3, 4, 6, 7),
            flow_hash(1, 2, 9, 4, 6, 7),
            flow_hash(1, 2, 3, 9, 6, 7),
            flow_hash(1, 2, 3, 4, 17, 7),
            flow_hash(1, 2, 3, 4, 6, 9),
        ] {
            assert_ne!(h, other);
        }
    }

    #[test]
    fn stat_indexes_are_dense_and_names_short() {
        for (i, stat) in NpStat::ALL.iter().enumerate() {
            assert_eq!(stat.index() as usize, i);
        }
        for name in names::MAPS
            .iter()
            .chain(names::PROGRAMS.iter())
            .chain([names::XDP, names::XDP_PASS].iter())
        {
            assert!(name.len() <= 15, "{name}");
        }
        let mut sorted = names::MAPS;
        sorted.sort_unstable();
        assert_eq!(sorted, names::MAPS);
        let mut sorted = names::PROGRAMS;
        sorted.sort_unstable();
        assert_eq!(sorted, names::PROGRAMS);
    }

    #[test]
    fn svc_key_round_trips() {
        let f = SocketAddrV4::new(Ipv4Addr::new(10, 99, 0, 10), 30080);
        let k = NpSvcKey::new(f, IPPROTO_TCP);
        assert_eq!(k.addr.to_ne_bytes(), [10, 99, 0, 10]);
        assert_eq!(k.socket_addr(), f);
    }
}
