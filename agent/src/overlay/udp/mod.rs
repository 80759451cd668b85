//! The `udp` backend: userspace encapsulation for underlays that block VXLAN, wire-compatible
//! with flannel's `udp` backend (UDP port 8285, the payload is the bare inner IPv4 packet, no
//! extra header), but multi-threaded and batched.
//!
//! ```text
//! pod ─► ferry0 ─► route <peer podCIDR> dev ferry.udp proto 78 ─► TUN queue k ─► worker k
//!     worker k: read() up to 64 packets, inner dst ─► peer public IP (snapshot table),
//!               one sendmmsg() from <node ip>:8285 ─► peer:8285
//! peer:8285 ─► SO_REUSEPORT socket k ─► worker k: one recvmmsg() for up to 64 datagrams,
//!               drop unless the sender is a known peer, the inner source lies in that peer's
//!               podCIDR and the inner destination in ours; write() into TUN queue k
//! ```
//!
//! The device `ferry.udp` is a TUN device (`IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE`) with one
//! queue and one `SO_REUSEPORT` UDP socket per worker thread (`min(available_parallelism, 4)`
//! workers), so the kernel spreads flows over the workers in both directions and no lock is
//! taken per packet: each batch reads the peer table through one `RwLock` read of an `Arc`
//! snapshot that reconciliation replaces as a whole. The device carries the node podCIDR's
//! network address as a /32 (like flannel's `flannel0`) and MTU = underlay MTU - 28 (IPv4 20 +
//! UDP 8); every peer gets one route `<peer podCIDR> dev ferry.udp proto 78`, reconciled like the
//! host-gw routes (level-triggered, stale routes of our protocol deleted).
//!
//! **Parsing.** Headers are read through `pnet_packet`'s zero-copy views (`Ipv4Packet` for the
//! inner addresses here, `Ipv4Packet` / `TcpPacket` in [`offload`]: bounds-checked getters over
//! the packet buffer, no copy, no allocation). What the datapath writes (TSO segmentation, GRO
//! coalescing, checksums) stays hand-written in [`offload`].
//!
//! **Restart.** The device is made persistent (`TUNSETPERSIST`), so it, its address and the
//! routes through it survive the agent process; a restarted agent re-attaches its queues to the
//! same device (same ifindex, nothing rewritten). While no agent is attached (after `kill -9`,
//! before the new agent's first round), the kernel drops what is routed into `ferry.udp`
//! (counted as the device's TX drops), packets that were queued on the TUN queues or in the UDP
//! sockets' receive buffers die with the process, and datagrams arriving at port 8285 are
//! answered with ICMP port unreachable. TCP retransmits across the gap; UDP datagrams sent in it
//! are lost. `ferry-agent uninstall` deletes the device.
//!
//! | module | job |
//! |---|---|
//! | this one | the backend's public face: names, ports, [`desired`] routes, the peer [`Table`] |
//! | `device` | [`ensure_device`]: MTU, up, address of the (attached) device, over netlink |
//! | `tun` | opening the device's queues (offloads, persistence) through [`ferry_sys::tun`] |
//! | `socket` | the workers' `SO_REUSEPORT` UDP sockets through [`ferry_sys::net`] |
//! | `datapath` | [`Datapath`]: the worker threads and their hot loops (its only raw syscalls) |
//! | [`offload`] | TSO segmentation, UDP GSO batching, GRO coalescing (pure) |
//! | `stats` | the datapath's packet counters ([`Stats`]) |

mod datapath;
mod device;
mod driver;
mod offload;
#[cfg(test)]
mod offload_props;
mod socket;
mod stats;
mod tun;

pub use datapath::Datapath;
pub use device::{ensure_device, DeviceError};
pub use driver::Driver;
pub use stats::Stats;

use crate::netlink::Route4;
use crate::node::{NodeInfo, ANN_BACKEND_TYPE};
use crate::overlay::peers::{self, PeerRoute, Skip};
use ipnetwork::Ipv4Network;
use pnet_packet::ipv4::Ipv4Packet;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::Ipv4Addr;

/// Name of the TUN device (flannel's is `flannel0`).
pub const DEVICE: &str = "ferry.udp";
/// UDP port of the tunnel (flannel's default for its `udp` backend).
pub const PORT: u16 = 8285;
/// Encapsulation overhead: outer IPv4 20 + UDP 8.
pub const OVERHEAD: u32 = 28;
/// The name published in `flannel.alpha.coreos.com/backend-type`.
pub const BACKEND: &str = "udp";

/// The worker threads this machine gets: `min(available_parallelism, 4)`.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// What [`desired`] returns: routes keyed by destination, the `(podCIDR, public IP)` of every
/// served peer, and the skipped peers with the reason.
pub type Desired = (
    BTreeMap<Ipv4Network, PeerRoute>,
    Vec<(Ipv4Network, Ipv4Addr)>,
    Vec<(String, Skip)>,
);

/// The routes this node wants (`<peer podCIDR> dev <tun> proto 78`, keyed by destination), the
/// `(podCIDR, public IP)` of every peer for the datapath, and the peers that get nothing. Only
/// peers that published `backend-type: udp` are served: a VXLAN or host-gw peer would not
/// understand the datagrams.
pub fn desired(nodes: &[NodeInfo], own: &str, tun: u32) -> Desired {
    let (peers, skipped) = peers::usable_peers(nodes, own, |n| {
        match n.annotations.get(ANN_BACKEND_TYPE).map(String::as_str) {
            Some(BACKEND) => None,
            other => Some(Skip::OtherBackend(other.unwrap_or("").to_owned())),
        }
    });
    let mut routes = BTreeMap::new();
    let mut table = Vec::new();
    for p in peers {
        table.push((p.cidr, p.addr));
        routes.insert(
            p.cidr,
            PeerRoute {
                node: p.node.name.clone(),
                route: Route4 {
                    dst: p.cidr,
                    gw: None,
                    oif: Some(tun),
                    protocol: peers::ROUTE_PROTOCOL,
                    priority: 0,
                    onlink: false,
                },
            },
        );
    }
    (routes, table, skipped)
}

/// The datapath's view of the cluster: where each peer podCIDR lives and which podCIDR each peer
/// may send from. Replaced as a whole by every reconciliation round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    own: Option<Ipv4Network>,
    /// Per prefix length (longest first): network address -> peer public IP.
    by_prefix: Vec<(u8, HashMap<u32, Ipv4Addr>)>,
    /// Peer public IP -> the podCIDRs it owns.
    sources: HashMap<Ipv4Addr, Vec<Ipv4Network>>,
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl Table {
    /// A table for this node's podCIDR `own` and the peers' `(podCIDR, public IP)`.
    pub fn new(own: Option<Ipv4Network>, peers: &[(Ipv4Network, Ipv4Addr)]) -> Table {
        let mut by_prefix: BTreeMap<u8, HashMap<u32, Ipv4Addr>> = BTreeMap::new();
        let mut sources: HashMap<Ipv4Addr, Vec<Ipv4Network>> = HashMap::new();
        for (cidr, addr) in peers {
            by_prefix
                .entry(cidr.prefix())
                .or_default()
                .insert(u32::from(cidr.network()), *addr);
            sources.entry(*addr).or_default().push(*cidr);
        }
        Table {
            own,
            by_prefix: by_prefix.into_iter().rev().collect(),
            sources,
        }
    }

    /// The public IP of the peer owning `dst` (longest prefix).
    pub fn next_hop(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        let d = u32::from(dst);
        self.by_prefix
            .iter()
            .find_map(|(p, m)| m.get(&(d & mask(*p))).copied())
    }

    /// Whether a packet `src -> dst` that arrived from underlay address `from` may enter: the
    /// sender is a known peer, `src` lies in one of its podCIDRs and `dst` in ours.
    pub fn accept(&self, from: Ipv4Addr, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.sender(from).is_some_and(|s| s.admits(src, dst))
    }

    /// The known peer at underlay address `from` (`None` for strangers, or before this node has
    /// a podCIDR): one lookup per datagram, then [`Sender::admits`] per inner packet.
    pub fn sender(&self, from: Ipv4Addr) -> Option<Sender<'_>> {
        Some(Sender {
            own: self.own?,
            cidrs: self.sources.get(&from)?,
        })
    }
}

/// A known peer as seen by the receive path (see [`Table::sender`]).
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    own: Ipv4Network,
    cidrs: &'a [Ipv4Network],
}

impl Sender<'_> {
    /// Whether an inner packet `src -> dst` from this peer may enter: `src` lies in one of its
    /// podCIDRs and `dst` in ours.
    pub fn admits(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.own.contains(dst) && self.cidrs.iter().any(|c| c.contains(src))
    }
}

/// `(source, destination)` of an IPv4 packet, read through a zero-copy [`Ipv4Packet`] view
/// (20-byte header); `None` for anything else (IPv6, truncated, IHL < 5).
pub fn ipv4_addrs(pkt: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let ip = Ipv4Packet::new(pkt)?;
    (ip.get_version() == 4 && ip.get_header_length() >= 5)
        .then(|| (ip.get_source(), ip.get_destination()))
}

/// Why the datapath could not start.
#[derive(Debug, thiserror::Error)]
pub enum UdpError {
    /// `/dev/net/tun` could not be opened.
    #[error("opening /dev/net/tun: {0}")]
    OpenTun(#[source] io::Error),
    /// `TUNSETIFF` refused: EINVAL / EBUSY mean a device of that name exists with other flags
    /// (or is not a TUN device).
    #[error("attaching to TUN device {DEVICE} (TUNSETIFF): {0}")]
    Attach(#[source] io::Error),
    /// `TUNSETOFFLOAD` failed (the datapath then runs without offloads).
    #[error("enabling offloads on {DEVICE} (TUNSETOFFLOAD): {0}")]
    Offload(#[source] io::Error),
    /// `TUNSETPERSIST` failed.
    #[error("making {DEVICE} persistent: {0}")]
    Persist(#[source] io::Error),
    /// The UDP socket could not be set up.
    #[error("UDP socket {0}:{PORT}: {1}")]
    Socket(Ipv4Addr, #[source] io::Error),
}

impl UdpError {
    /// True when another socket holds the UDP port (`EADDRINUSE` on bind).
    pub fn is_addr_in_use(&self) -> bool {
        matches!(self, UdpError::Socket(_, e) if e.raw_os_error() == Some(libc::EADDRINUSE))
    }

    /// True when a device of our name exists but cannot be attached (delete and retry).
    pub fn is_mismatch(&self) -> bool {
        matches!(self, UdpError::Attach(e)
            if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::EBUSY) | Some(libc::EPERM)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::ANN_PUBLIC_IP;

    fn net(s: &str) -> Ipv4Network {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn info(name: &str, cidr: &str, addr: &str, backend: Option<&str>) -> NodeInfo {
        let mut annotations = BTreeMap::new();
        if let Some(b) = backend {
            annotations.insert(ANN_BACKEND_TYPE.to_owned(), b.to_owned());
            annotations.insert(ANN_PUBLIC_IP.to_owned(), addr.to_owned());
        }
        NodeInfo {
            name: name.into(),
            pod_cidr: Some(net(cidr)),
            internal_ip: Some(ip(addr)),
            public_ip: None,
            annotations,
        }
    }

    #[test]
    fn desired_serves_udp_peers_only() {
        let nodes = [
            info("me", "10.244.0.0/24", "10.99.0.1", Some("udp")),
            info("b", "10.244.1.0/24", "10.99.0.2", Some("udp")),
            info("c", "10.244.2.0/24", "10.99.0.3", Some("vxlan")),
            info("d", "10.244.3.0/24", "10.99.0.4", None),
        ];
        let (routes, table, skipped) = desired(&nodes, "me", 9);
        assert_eq!(routes.len(), 1);
        let r = routes[&net("10.244.1.0/24")].route;
        assert_eq!((r.gw, r.oif, r.protocol), (None, Some(9), 78));
        assert_eq!(table, vec![(net("10.244.1.0/24"), ip("10.99.0.2"))]);
        assert_eq!(
            skipped,
            vec![
                ("c".to_owned(), Skip::OtherBackend("vxlan".into())),
                ("d".to_owned(), Skip::OtherBackend(String::new())),
            ]
        );
    }

    #[test]
    fn table_routes_by_longest_prefix_and_filters_senders() {
        let t = Table::new(
            Some(net("10.244.0.0/24")),
            &[
                (net("10.244.1.0/24"), ip("10.99.0.2")),
                (net("10.245.0.0/16"), ip("10.99.0.3")),
                (net("10.245.7.0/24"), ip("10.99.0.4")),
            ],
        );
        assert_eq!(t.next_hop(ip("10.244.1.9")), Some(ip("10.99.0.2")));
        assert_eq!(t.next_hop(ip("10.245.7.1")), Some(ip("10.99.0.4")));
        assert_eq!(t.next_hop(ip("10.245.8.1")), Some(ip("10.99.0.3")));
        assert_eq!(t.next_hop(ip("10.244.0.5")), None);
        assert_eq!(t.next_hop(ip("8.8.8.8")), None);
        assert!(t.accept(ip("10.99.0.2"), ip("10.244.1.5"), ip("10.244.0.7")));
        // Unknown sender, spoofed inner source, not for us.
        assert!(!t.accept(ip("10.99.0.9"), ip("10.244.1.5"), ip("10.244.0.7")));
        assert!(!t.accept(ip("10.99.0.2"), ip("10.244.2.5"), ip("10.244.0.7")));
        assert!(!t.accept(ip("10.99.0.2"), ip("10.244.1.5"), ip("10.244.5.7")));
        assert!(!Table::default().accept(ip("10.99.0.2"), ip("10.244.1.5"), ip("10.244.0.7")));
    }

    #[test]
    fn parses_ipv4_headers() {
        let mut p = [0u8; 20];
        p[0] = 0x45;
        p[12..16].copy_from_slice(&[10, 244, 1, 2]);
        p[16..20].copy_from_slice(&[10, 244, 0, 3]);
        assert_eq!(ipv4_addrs(&p), Some((ip("10.244.1.2"), ip("10.244.0.3"))));
        assert_eq!(ipv4_addrs(&p[..19]), None);
        p[0] = 0x60;
        assert_eq!(ipv4_addrs(&p), None, "IPv6");
        p[0] = 0x44;
        assert_eq!(ipv4_addrs(&p), None, "IHL < 5");
    }
}
