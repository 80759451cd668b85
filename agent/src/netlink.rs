//! The agent's kernel boundary for routing: a small blocking rtnetlink client (`netlink-sys` +
//! `netlink-packet-route`) with exactly the operations the overlay backends need: look a link up,
//! read its IPv4 addresses, dump the main routing table, add/replace and delete one route.
//!
//! The socket acts in the network namespace it was created in (the agent's own: `ferry up` starts
//! the agent inside the node's namespace). Requests are answered by the kernel within
//! microseconds, so the async agent calls them inline instead of moving them to a thread pool.

use ipnetwork::Ipv4Network;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::io;
use std::net::{IpAddr, Ipv4Addr};

/// The main routing table.
pub const MAIN_TABLE: u32 = RouteHeader::RT_TABLE_MAIN as u32;
const RECV_BUF: usize = 64 * 1024;

/// A failed netlink operation, with the kernel's errno. Failures of single route operations are
/// retried by the next reconciliation round.
#[derive(Debug, thiserror::Error)]
#[error("netlink {op}: {source}")]
pub struct NlError {
    /// What was being done (`"add route 10.244.1.0/24"`, ...).
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

    /// The errno, for callers that branch on EEXIST / ESRCH.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }

    /// True for "no such device / entry / process" (a delete of something already gone).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENODEV | libc::ENOENT | libc::ESRCH)
        )
    }
}

/// What the agent needs to know about a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// MTU.
    pub mtu: u32,
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
}

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
        // Strict checking lets the kernel filter dumps by the header we send; without it
        // (old kernels) the client-side filters below still apply.
        let _ = socket.set_netlink_get_strict_chk(true);
        Ok(Netlink {
            socket,
            seq: 0,
            buf: vec![0; RECV_BUF],
        })
    }

    fn request(
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
        let op = format!("get link {name}");
        match self.request(&op, RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(replies) => Ok(replies.iter().find_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(Link {
                    index: l.header.index,
                    mtu: l
                        .attributes
                        .iter()
                        .find_map(|a| match a {
                            LinkAttribute::Mtu(m) => Some(*m),
                            _ => None,
                        })
                        .unwrap_or(0),
                }),
                _ => None,
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The IPv4 addresses of one link, in the kernel's order (primary first).
    pub fn ipv4_addresses(&mut self, index: u32) -> Result<Vec<Ipv4Network>, NlError> {
        let mut req = AddressMessage::default();
        req.header.family = AddressFamily::Inet;
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
            let local = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            let addr = local.or_else(|| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(ip) = addr {
                if let Ok(net) = Ipv4Network::new(ip, m.header.prefix_len) {
                    out.push(net);
                }
            }
        }
        Ok(out)
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
