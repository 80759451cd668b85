//! The agent's kernel boundary for routing: ferry-cni's small blocking rtnetlink client
//! (`netlink-sys` + `netlink-packet-route`) with exactly the operations the overlay backends need: look a link up
//! (with its VXLAN attributes), create / change / delete the VXLAN device, read and change its
//! IPv4 addresses, dump the main routing table, add/replace and delete one route, and dump / set /
//! delete neighbour (ARP) and bridge FDB entries of one device.
//!
//! The socket acts in the network namespace it was created in (the agent's own: `ferry up` starts
//! the agent inside the node's namespace). Requests are answered by the kernel within
//! microseconds, so the async agent calls them inline instead of moving them to a thread pool.
//!
//! Why not the `rtnetlink` crate: it is an async front end (a connection task on a tokio
//! runtime, handles sending requests to it) over the same `netlink-packet-route` messages. The
//! CNI plugin is a synchronous short-lived process that opens sockets inside namespaces by
//! `setns` on its own thread, where a blocking request/response client is the simpler fit; the
//! agent shares that client, so both build on `netlink-packet-route` + `netlink-sys` directly.

use ipnetwork::Ipv4Network;
use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::io;
use std::net::{IpAddr, Ipv4Addr};

/// The main routing table.
pub const MAIN_TABLE: u32 = RouteHeader::RT_TABLE_MAIN as u32;

/// A failed netlink operation, with the kernel's errno (ferry-cni's client's error). Failures of
/// single route operations are retried by the next reconciliation round.
pub use ferry_cni::netlink::NlError;

/// A MAC address.
pub type Mac = [u8; 6];

/// Formats a MAC the way `ip` prints it (`0a:1b:...`).
pub fn mac_string(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `0a:1b:2c:3d:4e:5f`.
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut out = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// What the agent needs to know about a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// MTU.
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Hardware address, when it is an Ethernet one.
    pub mac: Option<Mac>,
    /// The VXLAN attributes, when the link is a VXLAN device.
    pub vxlan: Option<Vxlan>,
}

/// A link's packet counters (the kernel's `rtnl_link_stats64`, the fields the agent reports).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Packets received.
    pub rx_packets: u64,
    /// Packets transmitted.
    pub tx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
    /// Packets dropped on transmit (for a TUN device: no queue, or a full one).
    pub tx_dropped: u64,
}

/// The attributes of a VXLAN device the agent creates and checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vxlan {
    /// VXLAN network identifier.
    pub vni: u32,
    /// UDP destination port.
    pub port: u16,
    /// Local (source) address of the outer packets.
    pub local: Option<Ipv4Addr>,
    /// Underlay device index (`dev` of `ip link add ... type vxlan`).
    pub underlay: Option<u32>,
    /// Source-address learning.
    pub learning: bool,
}

/// A VXLAN device to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    /// Device name.
    pub name: String,
    /// Attributes.
    pub vxlan: Vxlan,
    /// MTU.
    pub mtu: u32,
    /// Hardware address.
    pub mac: Mac,
}

/// A neighbour (ARP) entry of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Neigh {
    /// IPv4 address.
    pub ip: Ipv4Addr,
    /// Link-layer address (`None` for incomplete / failed entries).
    pub mac: Option<Mac>,
    /// `NUD_PERMANENT`.
    pub permanent: bool,
}

/// A bridge FDB entry of a VXLAN device: frames to `mac` are sent to `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fdb {
    /// Destination MAC (a peer's VTEP).
    pub mac: Mac,
    /// The peer's underlay address (`None`: an entry without remote, e.g. a local one).
    pub dst: Option<Ipv4Addr>,
}

/// An IPv4 route of the main table, as installed or to install.
///
/// Only single-path unicast routes are described precisely; anything else the kernel reports
/// (multipath, blackhole, ...) keeps its destination, protocol and metric, which is all the
/// reconciler needs to stay away from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route4 {
    /// Destination.
    pub dst: Ipv4Network,
    /// Next hop.
    pub gw: Option<Ipv4Addr>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// `rtm_protocol`: who installed the route.
    pub protocol: u8,
    /// Metric (`RTA_PRIORITY`), 0 when absent.
    pub priority: u32,
    /// `RTNH_F_ONLINK`: the next hop is on the link even though no address covers it (the
    /// VXLAN backend's `via <peer subnet .0> dev ferry.1 onlink`).
    pub onlink: bool,
}

/// A blocking rtnetlink socket: ferry-cni's client (socket setup, request/reply loop) with the
/// agent's operations on top.
#[derive(Debug)]
pub struct Netlink {
    inner: ferry_cni::netlink::Netlink,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn new() -> io::Result<Netlink> {
        Ok(Netlink {
            inner: ferry_cni::netlink::Netlink::new()?,
        })
    }

    fn request(
        &mut self,
        op: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NlError> {
        self.inner.request(op, msg, flags)
    }

    /// Looks a link up by name; `None` if there is none.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>, NlError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        let op = format!("get link {name}");
        match self.request(&op, RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(replies) => Ok(replies.iter().find_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(parse_link(l)),
                _ => None,
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The kernel's counters of link `name` (`IFLA_STATS64`); `None` if there is no such link.
    pub fn link_stats(&mut self, name: &str) -> Result<Option<LinkStats>, NlError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        let op = format!("get link stats {name}");
        match self.request(&op, RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(replies) => Ok(replies.iter().find_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => l.attributes.iter().find_map(|a| match a {
                    LinkAttribute::Stats64(s) => Some(LinkStats {
                        rx_packets: s.rx_packets,
                        tx_packets: s.tx_packets,
                        rx_bytes: s.rx_bytes,
                        tx_bytes: s.tx_bytes,
                        rx_dropped: s.rx_dropped,
                        tx_dropped: s.tx_dropped,
                    }),
                    _ => None,
                }),
                _ => None,
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates a VXLAN device (up, with the given MTU and MAC). Fails with EEXIST if the name is
    /// taken.
    pub fn create_vxlan(&mut self, spec: &VxlanSpec) -> Result<(), NlError> {
        let mut msg = LinkMessage::default();
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes
            .push(LinkAttribute::IfName(spec.name.clone()));
        msg.attributes.push(LinkAttribute::Mtu(spec.mtu));
        msg.attributes
            .push(LinkAttribute::Address(spec.mac.to_vec()));
        let v = &spec.vxlan;
        let mut data = vec![InfoVxlan::Id(v.vni)];
        if let Some(local) = v.local {
            data.push(InfoVxlan::Local(local));
        }
        if let Some(dev) = v.underlay {
            data.push(InfoVxlan::Link(dev));
        }
        data.push(InfoVxlan::Port(v.port));
        data.push(InfoVxlan::Learning(v.learning));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vxlan),
            LinkInfo::Data(InfoData::Vxlan(data)),
        ]));
        self.request(
            &format!("create vxlan {}", spec.name),
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Changes the MTU and/or MAC of a link and/or brings it up (only what is `Some` / `true`).
    pub fn set_link(
        &mut self,
        index: u32,
        mtu: Option<u32>,
        mac: Option<Mac>,
        up: bool,
    ) -> Result<(), NlError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        if up {
            msg.header.flags = LinkFlags::Up;
            msg.header.change_mask = LinkFlags::Up;
        }
        if let Some(mtu) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = mac {
            msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        self.request(
            &format!("set link {index}"),
            RouteNetlinkMessage::SetLink(msg),
            NLM_F_ACK,
        )
        .map(drop)
    }

    /// Deletes a link. `Ok(false)` if it was already gone.
    pub fn del_link(&mut self, index: u32) -> Result<bool, NlError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        match self.request(
            &format!("delete link {index}"),
            RouteNetlinkMessage::DelLink(msg),
            NLM_F_ACK,
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn address_message(index: u32, addr: Ipv4Network) -> AddressMessage {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = addr.prefix();
        msg.header.index = index;
        msg.attributes
            .push(AddressAttribute::Local(IpAddr::V4(addr.ip())));
        msg.attributes
            .push(AddressAttribute::Address(IpAddr::V4(addr.ip())));
        msg
    }

    /// Adds an IPv4 address to a link (EEXIST if it is there).
    pub fn add_address(&mut self, index: u32, addr: Ipv4Network) -> Result<(), NlError> {
        self.request(
            &format!("add address {addr}"),
            RouteNetlinkMessage::NewAddress(Self::address_message(index, addr)),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Removes an IPv4 address from a link. `Ok(false)` if it was not there.
    pub fn del_address(&mut self, index: u32, addr: Ipv4Network) -> Result<bool, NlError> {
        match self.request(
            &format!("delete address {addr}"),
            RouteNetlinkMessage::DelAddress(Self::address_message(index, addr)),
            NLM_F_ACK,
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() || e.errno() == Some(libc::EADDRNOTAVAIL) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The neighbour-table entries of `family` (`Inet`: ARP, `Bridge`: FDB) on one device.
    fn dump_neighbours(
        &mut self,
        op: &str,
        family: AddressFamily,
        index: u32,
    ) -> Result<Vec<NeighbourMessage>, NlError> {
        let mut req = NeighbourMessage::default();
        req.header.family = family;
        // Strict checking refuses ndm_ifindex in a dump request; the attribute filters instead.
        req.attributes.push(NeighbourAttribute::IfIndex(index));
        let replies = self.request(op, RouteNetlinkMessage::GetNeighbour(req), NLM_F_DUMP)?;
        Ok(replies
            .into_iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewNeighbour(m)
                    if m.header.ifindex == index && m.header.family == family =>
                {
                    Some(m)
                }
                _ => None,
            })
            .collect())
    }

    /// The IPv4 neighbour entries of one device.
    pub fn neighbours_v4(&mut self, index: u32) -> Result<Vec<Neigh>, NlError> {
        let mut out = Vec::new();
        for m in self.dump_neighbours("dump neighbours", AddressFamily::Inet, index)? {
            let mut ip = None;
            let mut mac = None;
            for a in &m.attributes {
                match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) => ip = Some(*d),
                    NeighbourAttribute::LinkLayerAddress(l) => mac = l.as_slice().try_into().ok(),
                    _ => {}
                }
            }
            if let Some(ip) = ip {
                out.push(Neigh {
                    ip,
                    mac,
                    permanent: m.header.state == NeighbourState::Permanent,
                });
            }
        }
        Ok(out)
    }

    /// Creates or replaces a permanent neighbour entry `ip -> mac` on a device.
    pub fn set_neighbour(&mut self, index: u32, ip: Ipv4Addr, mac: Mac) -> Result<(), NlError> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.ifindex = index;
        msg.header.state = NeighbourState::Permanent;
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        self.request(
            &format!("set neighbour {ip}"),
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(drop)
    }

    /// Deletes the neighbour entry of `ip` on a device. `Ok(false)` if it was already gone.
    pub fn del_neighbour(&mut self, index: u32, ip: Ipv4Addr) -> Result<bool, NlError> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.ifindex = index;
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        match self.request(
            &format!("delete neighbour {ip}"),
            RouteNetlinkMessage::DelNeighbour(msg),
            NLM_F_ACK,
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The FDB entries of one (VXLAN) device, as `bridge fdb show dev D` lists them.
    pub fn fdb(&mut self, index: u32) -> Result<Vec<Fdb>, NlError> {
        let mut out = Vec::new();
        for m in self.dump_neighbours("dump fdb", AddressFamily::Bridge, index)? {
            let mut mac = None;
            let mut dst = None;
            for a in &m.attributes {
                match a {
                    NeighbourAttribute::LinkLayerAddress(l) => mac = l.as_slice().try_into().ok(),
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) => dst = Some(*d),
                    NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                        dst = <[u8; 4]>::try_from(b.as_slice()).ok().map(Ipv4Addr::from)
                    }
                    _ => {}
                }
            }
            if let Some(mac) = mac {
                out.push(Fdb { mac, dst });
            }
        }
        Ok(out)
    }

    fn fdb_message(index: u32, e: &Fdb) -> NeighbourMessage {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.ifindex = index;
        msg.header.state = NeighbourState::Permanent;
        msg.header.flags = NeighbourFlags::Own;
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(e.mac.to_vec()));
        if let Some(dst) = e.dst {
            msg.attributes
                .push(NeighbourAttribute::Destination(NeighbourAddress::Other(
                    dst.octets().to_vec(),
                )));
        }
        msg
    }

    /// Creates (or, for the same MAC, replaces the remote of) a permanent FDB entry
    /// `mac -> dst` on a VXLAN device.
    pub fn set_fdb(&mut self, index: u32, e: &Fdb) -> Result<(), NlError> {
        self.request(
            &format!("set fdb {}", mac_string(&e.mac)),
            RouteNetlinkMessage::NewNeighbour(Self::fdb_message(index, e)),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(drop)
    }

    /// Deletes exactly this FDB entry (MAC and remote). `Ok(false)` if it was already gone.
    pub fn del_fdb(&mut self, index: u32, e: &Fdb) -> Result<bool, NlError> {
        let mut msg = Self::fdb_message(index, e);
        msg.header.state = NeighbourState::None;
        match self.request(
            &format!("delete fdb {}", mac_string(&e.mac)),
            RouteNetlinkMessage::DelNeighbour(msg),
            NLM_F_ACK,
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The IPv4 addresses of one link, in the kernel's order (primary first).
    pub fn ipv4_addresses(&mut self, index: u32) -> Result<Vec<Ipv4Network>, NlError> {
        let all = self.inner.addresses(index)?;
        Ok(all
            .into_iter()
            .filter_map(|n| match n {
                ipnetwork::IpNetwork::V4(v4) => Some(v4),
                ipnetwork::IpNetwork::V6(_) => None,
            })
            .collect())
    }

    /// Every IPv4 route of the main table, whoever installed it.
    pub fn main_routes_v4(&mut self) -> Result<Vec<Route4>, NlError> {
        let mut req = RouteMessage::default();
        req.header.address_family = AddressFamily::Inet;
        req.header.table = RouteHeader::RT_TABLE_MAIN;
        let replies = self.request(
            "dump routes",
            RouteNetlinkMessage::GetRoute(req),
            NLM_F_DUMP,
        )?;
        let mut out = Vec::new();
        for r in replies {
            let RouteNetlinkMessage::NewRoute(m) = r else {
                continue;
            };
            let table = m
                .attributes
                .iter()
                .find_map(|a| match a {
                    RouteAttribute::Table(t) => Some(*t),
                    _ => None,
                })
                .unwrap_or(u32::from(m.header.table));
            if table != MAIN_TABLE || m.header.address_family != AddressFamily::Inet {
                continue;
            }
            let mut dst = Ipv4Addr::UNSPECIFIED;
            let mut gw = None;
            let mut oif = None;
            let mut priority = 0;
            let onlink = m.header.flags.contains(RouteFlags::Onlink);
            for a in &m.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = *d,
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => gw = Some(*g),
                    RouteAttribute::Oif(o) => oif = Some(*o),
                    RouteAttribute::Priority(p) => priority = *p,
                    _ => {}
                }
            }
            if let Ok(dst) = Ipv4Network::new(dst, m.header.destination_prefix_length) {
                out.push(Route4 {
                    dst,
                    gw,
                    oif,
                    protocol: u8::from(m.header.protocol),
                    priority,
                    onlink,
                });
            }
        }
        Ok(out)
    }

    fn route_message(r: &Route4) -> RouteMessage {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.destination_prefix_length = r.dst.prefix();
        msg.header.protocol = RouteProtocol::from(r.protocol);
        msg.header.kind = RouteType::Unicast;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        if r.onlink {
            msg.header.flags = RouteFlags::Onlink;
        }
        msg.header.scope = if r.gw.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        if r.dst.prefix() > 0 {
            msg.attributes
                .push(RouteAttribute::Destination(RouteAddress::Inet(
                    r.dst.network(),
                )));
        }
        if let Some(gw) = r.gw {
            msg.attributes
                .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
        }
        if let Some(oif) = r.oif {
            msg.attributes.push(RouteAttribute::Oif(oif));
        }
        if r.priority != 0 {
            msg.attributes.push(RouteAttribute::Priority(r.priority));
        }
        msg
    }

    /// Adds a route; with `replace`, atomically replaces the route with the same destination and
    /// metric instead (the caller makes sure that route is its own). Without `replace` an existing
    /// route is an error (EEXIST).
    pub fn add_route(&mut self, r: &Route4, replace: bool) -> Result<(), NlError> {
        let flags = NLM_F_ACK | NLM_F_CREATE | if replace { NLM_F_REPLACE } else { NLM_F_EXCL };
        let op = format!(
            "{} route {}",
            if replace { "replace" } else { "add" },
            r.dst
        );
        self.request(
            &op,
            RouteNetlinkMessage::NewRoute(Self::route_message(r)),
            flags,
        )
        .map(drop)
    }

    /// Deletes exactly this route: the kernel matches destination, metric, protocol, next hop and
    /// device, so a route of another protocol is never hit. `Ok(false)` if it was already gone.
    pub fn del_route(&mut self, r: &Route4) -> Result<bool, NlError> {
        let mut msg = Self::route_message(r);
        // RT_SCOPE_NOWHERE matches any scope on delete.
        msg.header.scope = RouteScope::NoWhere;
        match self.request(
            &format!("delete route {}", r.dst),
            RouteNetlinkMessage::DelRoute(msg),
            NLM_F_ACK,
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn parse_link(l: &LinkMessage) -> Link {
    let mut link = Link {
        index: l.header.index,
        mtu: 0,
        up: l.header.flags.contains(LinkFlags::Up),
        mac: None,
        vxlan: None,
    };
    for a in &l.attributes {
        match a {
            LinkAttribute::Mtu(m) => link.mtu = *m,
            LinkAttribute::Address(b) => link.mac = b.as_slice().try_into().ok(),
            LinkAttribute::LinkInfo(infos) => {
                let is_vxlan = infos
                    .iter()
                    .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Vxlan)));
                for i in infos {
                    if let (true, LinkInfo::Data(InfoData::Vxlan(data))) = (is_vxlan, i) {
                        let mut v = Vxlan {
                            vni: 0,
                            port: 0,
                            local: None,
                            underlay: None,
                            learning: true,
                        };
                        for d in data {
                            match d {
                                InfoVxlan::Id(id) => v.vni = *id,
                                InfoVxlan::Port(p) => v.port = *p,
                                InfoVxlan::Local(ip) => v.local = Some(*ip),
                                InfoVxlan::Link(dev) => v.underlay = Some(*dev),
                                InfoVxlan::Learning(on) => v.learning = *on,
                                _ => {}
                            }
                        }
                        link.vxlan = Some(v);
                    }
                }
            }
            _ => {}
        }
    }
    link
}
