//! Wakes the reconcile loop when one of the agent's links appears, disappears or changes: the
//! underlay interface (`--iface`), `ferry.1`, `ferry.udp`.
//!
//! A thread holds a netlink socket subscribed to `RTNLGRP_LINK` in the agent's network
//! namespace and pokes the loop's [`Notify`] for `RTM_NEWLINK` / `RTM_DELLINK` messages that name
//! one of those links. Without it, an underlay interface that vanishes (the kernel then also
//! deletes the VXLAN device bound to it, and every route through either) or comes back would
//! only be noticed at the next periodic resync. Pod veths, which come and go all the time in a
//! node's namespace, are filtered out so they cost no reconcile rounds.
//!
//! If the socket overflows (`ENOBUFS`: events were lost) the loop is woken once, since the lost
//! events may have been ours; any other socket failure ends the watch with a log line, and the
//! periodic resync carries on alone.

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::io;
use std::sync::Arc;
use tokio::sync::Notify;

/// `RTMGRP_LINK`: the multicast group of link notifications (bit mask form for `bind`).
const RTMGRP_LINK: u32 = 1;

/// The name in a link notification, if `msg` is one (`RTM_NEWLINK` / `RTM_DELLINK`).
pub fn link_event_name(msg: &RouteNetlinkMessage) -> Option<&str> {
    let (RouteNetlinkMessage::NewLink(l) | RouteNetlinkMessage::DelLink(l)) = msg else {
        return None;
    };
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

/// Opens the subscription in the calling thread's network namespace (so a failure is reported
/// at start) and spawns the thread that reads it. `names` are the links that matter.
pub fn spawn(names: Vec<String>, wake: Arc<Notify>) -> io::Result<()> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind(&SocketAddr::new(0, RTMGRP_LINK))?;
    std::thread::Builder::new()
        .name("ferry-linkwatch".into())
        .spawn(move || watch(&socket, &names, &wake))?;
    Ok(())
}

fn watch(socket: &Socket, names: &[String], wake: &Notify) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = {
            let mut slice = &mut buf[..];
            match socket.recv(&mut slice, 0) {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    tracing::debug!("link notifications overflowed: reconciling");
                    wake.notify_one();
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "link watch ended (the periodic resync still runs)");
                    return;
                }
            }
        };
        let mut offset = 0;
        let mut ours = false;
        while offset < n {
            let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[offset..n])
            else {
                break;
            };
            let len = msg.header.length as usize;
            if len == 0 {
                break;
            }
            offset += (len + 3) & !3;
            if let NetlinkPayload::InnerMessage(m) = &msg.payload {
                if link_event_name(m).is_some_and(|name| names.iter().any(|w| w == name)) {
                    ours = true;
                }
            }
        }
        if ours {
            wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::link::LinkMessage;

    #[test]
    fn names_of_link_events_only() {
        let mut l = LinkMessage::default();
        l.attributes.push(LinkAttribute::IfName("eth0".into()));
        assert_eq!(
            link_event_name(&RouteNetlinkMessage::DelLink(l.clone())),
            Some("eth0")
        );
        assert_eq!(
            link_event_name(&RouteNetlinkMessage::NewLink(l.clone())),
            Some("eth0")
        );
        assert_eq!(link_event_name(&RouteNetlinkMessage::SetLink(l)), None);
        assert_eq!(
            link_event_name(&RouteNetlinkMessage::NewLink(LinkMessage::default())),
            None
        );
    }
}
