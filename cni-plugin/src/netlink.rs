//! A small synchronous rtnetlink client: typed link, address and route operations over one
//! `NETLINK_ROUTE` socket, built on `netlink-sys` and `netlink-packet-route`.
//!
//! The plugin is a short-lived, single-threaded process, so a blocking socket is both the simplest
//! and the fastest choice (no runtime to start). A socket is bound to the network namespace it was
//! created in: [`Netlink::new_in`] creates one inside a pod's namespace, after which every
//! operation on it acts there, whatever namespace the thread is in.

use ferry_sys::netns::{NetnsError, NetnsFd};
use ipnetwork::IpNetwork;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteMetric, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};

/// A failed netlink operation, with the kernel's errno.
#[derive(Debug, thiserror::Error)]
#[error("netlink {op}: {source}")]
pub struct NlError {
    /// What was being done (`"create veth"`, `"add route"`, ...).
    pub op: String,
    /// The kernel's answer (or a local I/O or decode failure).
    #[source]
    pub source: io::Error,
}

impl NlError {
    fn new(op: impl Into<String>, source: io::Error) -> Self {
        NlError {
            op: op.into(),
            source,
        }
    }

    /// The errno, for callers that branch on EEXIST / ENODEV / ESRCH.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }

    /// True for "already exists".
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }

    /// True for "no such device / entry".
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENODEV | libc::ENOENT | libc::ESRCH)
        )
    }
}

/// What we need to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// `IFLA_INFO_KIND` (`"bridge"`, `"veth"`, ...), if any.
    pub kind: Option<String>,
    /// MAC address.
    pub mac: Option<[u8; 6]>,
    /// MTU.
    pub mtu: u32,
    /// Index of the controller (bridge) this link is attached to.
    pub master: Option<u32>,
    /// Administratively up.
    pub up: bool,
    /// For a link whose peer (veth) or lower device lives in another network namespace: that
    /// namespace's id as seen from this socket's namespace (`IFLA_LINK_NETNSID`).
    pub link_netnsid: Option<i32>,
}

impl Link {
    fn from_msg(msg: &LinkMessage) -> Link {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            kind: None,
            mac: None,
            mtu: 0,
            master: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            link_netnsid: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name.clone_from(n),
                LinkAttribute::Mtu(m) => link.mtu = *m,
                LinkAttribute::Controller(m) => link.master = Some(*m),
                LinkAttribute::LinkNetNsId(id) => link.link_netnsid = Some(*id),
                LinkAttribute::Address(a) if a.len() == 6 => {
                    let mut mac = [0; 6];
                    mac.copy_from_slice(a);
                    link.mac = Some(mac);
                }
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(k) = info {
                            link.kind = Some(k.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

/// One end of a veth pair to create.
#[derive(Debug, Clone)]
pub struct VethEnd<'a> {
    /// Interface name.
    pub name: &'a str,
    /// MAC address.
    pub mac: [u8; 6],
    /// MTU.
    pub mtu: u32,
}

/// A route to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destination.
    pub dst: IpNetwork,
    /// Next hop.
    pub gw: Option<IpAddr>,
    /// Output interface.
    pub oif: u32,
    /// Metric.
    pub priority: Option<u32>,
    /// Path MTU metric.
    pub mtu: Option<u32>,
    /// Advertised MSS metric.
    pub advmss: Option<u32>,
    /// Table (main if absent).
    pub table: Option<u32>,
    /// Scope (universe if absent).
    pub scope: Option<u8>,
}

/// An installed route, as read back from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledRoute {
    /// Destination.
    pub dst: IpNetwork,
    /// Next hop.
    pub gw: Option<IpAddr>,
    /// Output interface.
    pub oif: Option<u32>,
    /// Routing table.
    pub table: u32,
    /// Metric (`RTA_PRIORITY`; 0 when the kernel reports none, as for IPv4 routes added without
    /// one).
    pub priority: u32,
}

/// The main routing table.
pub const MAIN_TABLE: u32 = 254;
const RECV_BUF: usize = 64 * 1024;

/// A blocking rtnetlink socket.
#[derive(Debug)]
pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn new() -> io::Result<Netlink> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // Strict checking lets the kernel filter dumps by the header we send.
        let _ = socket.set_netlink_get_strict_chk(true);
        Ok(Netlink {
            socket,
            seq: 0,
            buf: vec![0; RECV_BUF],
        })
    }

    /// Opens a socket inside `ns`; the thread returns to its own namespace afterwards.
    pub fn new_in(ns: &NetnsFd) -> Result<Netlink, NetnsError> {
        ns.run(Netlink::new)?.map_err(|source| NetnsError::Io {
            op: "open netlink socket in",
            path: ns.path().to_path_buf(),
            source,
        })
    }

    /// Sends one request and collects the replies: a dump until NLMSG_DONE, an ACKed request until
    /// its ACK, anything else until its first reply. Errors carry `op` and the kernel's errno
    /// (also when a dump fails to start and reports it in NLMSG_DONE). Other crates with
    /// operations of their own (the node agent's routes, neighbours, FDB) build on it.
    pub fn request(
        &mut self,
        op: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NlError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0).map_err(|e| NlError::new(op, e))?;

        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut replies = Vec::new();
        loop {
            let n = {
                let mut slice = &mut self.buf[..];
                self.socket
                    .recv(&mut slice, 0)
                    .map_err(|e| NlError::new(op, e))?
            };
            let mut offset = 0;
            while offset < n {
                let reply =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[offset..n])
                        .map_err(|e| {
                            NlError::new(op, io::Error::new(io::ErrorKind::InvalidData, e))
                        })?;
                let len = reply.header.length as usize;
                if len == 0 {
                    break;
                }
                offset += (len + 3) & !3;
                if reply.header.sequence_number != self.seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Error(err) => {
                        return match err.code {
                            None => Ok(replies),
                            Some(_) => Err(NlError::new(op, err.to_io())),
                        };
                    }
                    // A dump that fails to start reports its errno in NLMSG_DONE.
                    NetlinkPayload::Done(d) if d.code < 0 => {
                        return Err(NlError::new(op, io::Error::from_raw_os_error(-d.code)));
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::InnerMessage(m) => {
                        replies.push(m);
                        if !dump && flags & NLM_F_ACK == 0 {
                            return Ok(replies);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Looks a link up by name; `None` if there is none.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>, NlError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        match self.request("get link", RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(replies) => Ok(replies.iter().find_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_msg(l)),
                _ => None,
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(NlError {
                op: format!("get link {name}"),
                source: e.source,
            }),
        }
    }

    /// All links.
    pub fn links(&mut self) -> Result<Vec<Link>, NlError> {
        let replies = self.request(
            "dump links",
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_msg(l)),
                _ => None,
            })
            .collect())
    }

    /// Creates an up bridge with a fixed MAC (so it never changes as ports come and go).
    pub fn create_bridge(&mut self, name: &str, mac: [u8; 6], mtu: u32) -> Result<(), NlError> {
        let mut msg = LinkMessage::default();
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.request(
            &format!("create bridge {name}"),
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Sets a link administratively up.
    pub fn set_up(&mut self, index: u32) -> Result<(), NlError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.request("set link up", RouteNetlinkMessage::SetLink(msg), NLM_F_ACK)
            .map(drop)
    }

    /// Creates a veth pair in one request: `host` in this socket's namespace, attached to
    /// `master` and up; `peer` created directly inside `peer_ns` (never moved), still down.
    pub fn create_veth(
        &mut self,
        host: &VethEnd<'_>,
        master: u32,
        peer: &VethEnd<'_>,
        peer_ns: &NetnsFd,
    ) -> Result<(), NlError> {
        // The peer cannot be created up: veth_open() fails with ENOTCONN until both ends exist.
        let mut peer_msg = LinkMessage::default();
        peer_msg
            .attributes
            .push(LinkAttribute::IfName(peer.name.to_owned()));
        peer_msg
            .attributes
            .push(LinkAttribute::Address(peer.mac.to_vec()));
        peer_msg.attributes.push(LinkAttribute::Mtu(peer.mtu));
        peer_msg
            .attributes
            .push(LinkAttribute::NetNsFd(peer_ns.as_fd().as_raw_fd()));

        let mut msg = LinkMessage::default();
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes
            .push(LinkAttribute::IfName(host.name.to_owned()));
        msg.attributes
            .push(LinkAttribute::Address(host.mac.to_vec()));
        msg.attributes.push(LinkAttribute::Mtu(host.mtu));
        msg.attributes.push(LinkAttribute::Controller(master));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        self.request(
            &format!("create veth {}/{}", host.name, peer.name),
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Sets hairpin mode on a bridge port, found by name.
    pub fn set_hairpin_by_name(&mut self, name: &str, on: bool) -> Result<(), NlError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(
                on,
            )])),
        ]));
        self.request("set hairpin", RouteNetlinkMessage::NewLink(msg), NLM_F_ACK)
            .map(drop)
    }

    /// Deletes a link by name. `Ok(false)` if it did not exist.
    pub fn del_link(&mut self, name: &str) -> Result<bool, NlError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        match self.request(
            &format!("delete link {name}"),
            RouteNetlinkMessage::DelLink(msg),
            NLM_F_ACK,
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Adds `addr` to a link (no DAD). EEXIST is returned to the caller.
    pub fn add_address(&mut self, index: u32, addr: IpNetwork) -> Result<(), NlError> {
        let mut msg = AddressMessage::default();
        msg.header.family = family(addr.ip());
        msg.header.prefix_len = addr.prefix();
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(addr.ip()));
        msg.attributes.push(AddressAttribute::Address(addr.ip()));
        if let IpNetwork::V4(v4) = addr {
            msg.attributes
                .push(AddressAttribute::Broadcast(v4.broadcast()));
        }
        msg.attributes.push(AddressAttribute::Flags(
            AddressFlags::Nodad | AddressFlags::Permanent,
        ));
        self.request(
            &format!("add address {addr}"),
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Addresses of one link.
    pub fn addresses(&mut self, index: u32) -> Result<Vec<IpNetwork>, NlError> {
        let mut req = AddressMessage::default();
        req.header.index = index;
        let replies = self.request(
            "dump addresses",
            RouteNetlinkMessage::GetAddress(req),
            NLM_F_DUMP,
        )?;
        let mut out = Vec::new();
        for r in replies {
            let RouteNetlinkMessage::NewAddress(m) = r else {
                continue;
            };
            if m.header.index != index {
                continue;
            }
            let ip = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let ip = ip.or_else(|| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(ip) = ip {
                if let Ok(net) = IpNetwork::new(ip, m.header.prefix_len) {
                    out.push(net);
                }
            }
        }
        Ok(out)
    }

    /// Adds a route. EEXIST is returned to the caller.
    pub fn add_route(&mut self, r: &RouteSpec) -> Result<(), NlError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(r.dst.ip());
        msg.header.destination_prefix_length = r.dst.prefix();
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.kind = RouteType::Unicast;
        msg.header.scope = match r.scope {
            Some(s) => RouteScope::from(s),
            None if r.gw.is_none() => RouteScope::Link,
            None => RouteScope::Universe,
        };
        let table = r.table.unwrap_or(MAIN_TABLE);
        msg.header.table = u8::try_from(table).unwrap_or(0);
        if table > 255 {
            msg.attributes.push(RouteAttribute::Table(table));
        }
        if r.dst.prefix() > 0 {
            msg.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(
                    r.dst.network(),
                )));
        }
        if let Some(gw) = r.gw {
            msg.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        msg.attributes.push(RouteAttribute::Oif(r.oif));
        if let Some(p) = r.priority {
            msg.attributes.push(RouteAttribute::Priority(p));
        }
        let mut metrics = Vec::new();
        if let Some(m) = r.mtu {
            metrics.push(RouteMetric::Mtu(m));
        }
        if let Some(m) = r.advmss {
            metrics.push(RouteMetric::Advmss(m));
        }
        if !metrics.is_empty() {
            msg.attributes.push(RouteAttribute::Metrics(metrics));
        }
        self.request(
            &format!("add route {}", r.dst),
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// The id this socket's namespace gives the namespace `ns` (`RTM_GETNSID`); `None` when it has
    /// given it none. Compare with [`Link::link_netnsid`] to learn whether a veth's peer is in `ns`
    /// (reading such a link makes the kernel assign an id to the peer's namespace).
    pub fn nsid_of(&mut self, ns: &NetnsFd) -> Result<Option<i32>, NlError> {
        let mut msg = NsidMessage::default();
        let fd = u32::try_from(ns.as_fd().as_raw_fd()).map_err(|e| {
            NlError::new("get nsid", io::Error::new(io::ErrorKind::InvalidInput, e))
        })?;
        msg.attributes.push(NsidAttribute::Fd(fd));
        let replies = self.request("get nsid", RouteNetlinkMessage::GetNsId(msg), 0)?;
        Ok(replies
            .iter()
            .find_map(|r| match r {
                RouteNetlinkMessage::NewNsId(m) => m.attributes.iter().find_map(|a| match a {
                    NsidAttribute::Id(id) => Some(*id),
                    _ => None,
                }),
                _ => None,
            })
            .filter(|id| *id >= 0))
    }

    /// Routes of every table for one family (unicast and otherwise, as the kernel lists them).
    pub fn routes(&mut self, v6: bool) -> Result<Vec<InstalledRoute>, NlError> {
        let mut req = RouteMessage::default();
        req.header.address_family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
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
            let mut table = u32::from(m.header.table);
            let mut dst_ip = None;
            let mut gw = None;
            let mut oif = None;
            let mut priority = 0;
            for a in &m.attributes {
                match a {
                    RouteAttribute::Destination(d) => dst_ip = route_ip(d),
                    RouteAttribute::Gateway(g) => gw = route_ip(g),
                    RouteAttribute::Oif(o) => oif = Some(*o),
                    RouteAttribute::Table(t) => table = *t,
                    RouteAttribute::Priority(p) => priority = *p,
                    _ => {}
                }
            }
            let unspecified: IpAddr = if v6 {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            };
            if let Ok(dst) = IpNetwork::new(
                dst_ip.unwrap_or(unspecified),
                m.header.destination_prefix_length,
            ) {
                out.push(InstalledRoute {
                    dst,
                    gw,
                    oif,
                    table,
                    priority,
                });
            }
        }
        Ok(out)
    }
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
