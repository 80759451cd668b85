//! Link notifications: a socket subscribed to `RTNLGRP_LINK` that reports links appearing,
//! changing (`RTM_NEWLINK`) and disappearing (`RTM_DELLINK`) in the namespace it was opened in.
//!
//! [`LinkEvents::recv`] blocks for the next datagram. If the socket's receive queue overflowed
//! (`ENOBUFS`: the kernel dropped notifications) it says so with [`Received::Overflow`], since a
//! listener must then assume that anything may have changed.

use crate::socket::{frames, RECV_BUF};
use crate::IfIndex;
use ferry_sys::netns::{NetnsError, NetnsFd};
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::io;

/// `RTMGRP_LINK`: the multicast group of link notifications (bit mask form for `bind`).
const RTMGRP_LINK: u32 = 1;

/// What happened to a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkEventKind {
    /// `RTM_NEWLINK`: the link appeared or changed.
    New,
    /// `RTM_DELLINK`: the link is gone.
    Del,
}

/// One link notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEvent {
    /// New/changed or deleted.
    pub kind: LinkEventKind,
    /// The link's index.
    pub index: IfIndex,
    /// The link's name (`IFLA_IFNAME`), when the message carries it.
    pub name: Option<String>,
}

/// What one [`LinkEvents::recv`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// The link notifications of one datagram (possibly none, for other messages).
    Events(Vec<LinkEvent>),
    /// Notifications were lost (`ENOBUFS`).
    Overflow,
}

/// The link event of `msg`, if it is a link notification (`RTM_NEWLINK` / `RTM_DELLINK`).
pub fn link_event(msg: &RouteNetlinkMessage) -> Option<LinkEvent> {
    let (kind, l) = match msg {
        RouteNetlinkMessage::NewLink(l) => (LinkEventKind::New, l),
        RouteNetlinkMessage::DelLink(l) => (LinkEventKind::Del, l),
        _ => return None,
    };
    Some(LinkEvent {
        kind,
        index: l.header.index,
        name: l.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        }),
    })
}

/// The link events in one datagram. A message that does not decode ends the datagram (the
/// events before it count).
fn events_in(buf: &[u8]) -> Vec<LinkEvent> {
    frames(buf)
        .map_while(Result::ok)
        .filter_map(|msg| match &msg.payload {
            NetlinkPayload::InnerMessage(m) => link_event(m),
            _ => None,
        })
        .collect()
}

/// A subscription to link notifications.
#[derive(Debug)]
pub struct LinkEvents {
    socket: Socket,
    buf: Vec<u8>,
}

impl LinkEvents {
    /// Subscribes in the calling thread's network namespace.
    pub fn subscribe() -> io::Result<LinkEvents> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind(&SocketAddr::new(0, RTMGRP_LINK))?;
        Ok(LinkEvents {
            socket,
            buf: vec![0; RECV_BUF],
        })
    }

    /// Subscribes inside `ns`; the thread returns to its own namespace afterwards.
    pub fn subscribe_in(ns: &NetnsFd) -> Result<LinkEvents, NetnsError> {
        ns.run(LinkEvents::subscribe)?
            .map_err(|source| NetnsError::Io {
                op: "subscribe to link events in",
                path: ns.path().to_path_buf(),
                source,
            })
    }

    /// Waits for the next datagram of notifications (interrupted waits are resumed).
    pub fn recv(&mut self) -> io::Result<Received> {
        loop {
            let mut slice = &mut self.buf[..];
            match self.socket.recv(&mut slice, 0) {
                Ok(n) => return Ok(Received::Events(events_in(&self.buf[..n]))),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(Received::Overflow),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NetlinkHeader, NetlinkMessage};
    use netlink_packet_route::link::LinkMessage;

    fn named(name: &str) -> LinkMessage {
        let mut l = LinkMessage::default();
        l.header.index = 3;
        l.attributes.push(LinkAttribute::IfName(name.into()));
        l
    }

    #[test]
    fn only_new_and_del_link_are_events() {
        let l = named("eth0");
        let ev = |kind| LinkEvent {
            kind,
            index: 3,
            name: Some("eth0".into()),
        };
        assert_eq!(
            link_event(&RouteNetlinkMessage::DelLink(l.clone())),
            Some(ev(LinkEventKind::Del))
        );
        assert_eq!(
            link_event(&RouteNetlinkMessage::NewLink(l.clone())),
            Some(ev(LinkEventKind::New))
        );
        assert_eq!(link_event(&RouteNetlinkMessage::SetLink(l)), None);
        assert_eq!(
            link_event(&RouteNetlinkMessage::NewLink(LinkMessage::default())).and_then(|e| e.name),
            None
        );
    }

    #[test]
    fn events_of_a_datagram() {
        let mut buf = Vec::new();
        for m in [
            RouteNetlinkMessage::NewLink(named("ab")),
            RouteNetlinkMessage::SetLink(named("x")),
            RouteNetlinkMessage::DelLink(named("ferry.1")),
        ] {
            let mut p = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(m));
            p.finalize();
            let mut out = vec![0; p.buffer_len()];
            p.serialize(&mut out);
            buf.extend(out);
            buf.resize((buf.len() + 3) & !3, 0);
        }
        let names: Vec<_> = events_in(&buf)
            .into_iter()
            .map(|e| (e.kind, e.name))
            .collect();
        assert_eq!(
            names,
            vec![
                (LinkEventKind::New, Some("ab".into())),
                (LinkEventKind::Del, Some("ferry.1".into()))
            ]
        );
        // Garbage after the first message: the first still counts.
        let first = buf.len();
        buf.extend([0xff; 5]);
        assert_eq!(events_in(&buf).len(), 2);
        assert_eq!(events_in(&buf[..first]).len(), 2);
    }
}
