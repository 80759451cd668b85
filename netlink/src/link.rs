//! [`Link`] and the link operations: look up and list links, create a bridge, a veth pair (peer
//! born inside another namespace) or a VXLAN device, change up/MTU/MAC and hairpin mode, delete,
//! read counters, and learn the id a namespace has here (`RTM_GETNSID`).

use crate::error::NlError;
use crate::mac::Mac;
use crate::socket::Netlink;
use crate::IfIndex;
use ferry_sys::netns::NetnsFd;
use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, InfoVxlan,
    LinkAttribute, LinkFlags, LinkInfo, LinkMessage, LinkXdp, XdpAttached,
};
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_packet_route::RouteNetlinkMessage;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd};

/// What Ferry needs to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: IfIndex,
    /// Name.
    pub name: String,
    /// `IFLA_INFO_KIND` (`"bridge"`, `"veth"`, ...), if any.
    pub kind: Option<String>,
    /// Hardware address, when it is an Ethernet one.
    pub mac: Option<Mac>,
    /// MTU.
    pub mtu: u32,
    /// Index of the controller (bridge) this link is attached to.
    pub master: Option<IfIndex>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// For a link whose peer (veth) or lower device lives in another network namespace: that
    /// namespace's id as seen from this socket's namespace (`IFLA_LINK_NETNSID`).
    pub link_netnsid: Option<i32>,
    /// The peer's (veth) or lower device's index (`IFLA_LINK`), in the namespace
    /// [`Self::link_netnsid`] names when there is one; absent or equal to `index` for a link
    /// without one.
    pub link: Option<IfIndex>,
    /// An XDP program is attached (`IFLA_XDP_ATTACHED` other than none).
    pub xdp: bool,
    /// The VXLAN attributes, when the link is a VXLAN device.
    pub vxlan: Option<Vxlan>,
}

impl Link {
    /// Reads a link from an `RTM_NEWLINK` message.
    pub fn from_msg(msg: &LinkMessage) -> Link {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            kind: None,
            mac: None,
            mtu: 0,
            master: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            link_netnsid: None,
            link: None,
            xdp: false,
            vxlan: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::Link(i) => link.link = Some(*i),
                LinkAttribute::Xdp(xdp) => {
                    link.xdp = xdp
                        .iter()
                        .any(|x| matches!(x, LinkXdp::Attached(a) if *a != XdpAttached::None));
                }
                LinkAttribute::IfName(n) => link.name.clone_from(n),
                LinkAttribute::Mtu(m) => link.mtu = *m,
                LinkAttribute::Controller(m) => link.master = Some(*m),
                LinkAttribute::LinkNetNsId(id) => link.link_netnsid = Some(*id),
                LinkAttribute::Address(a) => link.mac = Mac::from_slice(a),
                LinkAttribute::LinkInfo(infos) => {
                    link.kind = infos.iter().find_map(|i| match i {
                        LinkInfo::Kind(k) => Some(k.to_string()),
                        _ => None,
                    });
                    if link.kind.as_deref() == Some("vxlan") {
                        link.vxlan = infos.iter().find_map(|i| match i {
                            LinkInfo::Data(InfoData::Vxlan(data)) => Some(Vxlan::from_info(data)),
                            _ => None,
                        });
                    }
                }
                _ => {}
            }
        }
        link
    }
}

/// A link's packet counters (the kernel's `rtnl_link_stats64`, the fields Ferry reports).
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

/// The attributes of a VXLAN device Ferry creates and checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vxlan {
    /// VXLAN network identifier.
    pub vni: u32,
    /// UDP destination port.
    pub port: u16,
    /// Local (source) address of the outer packets.
    pub local: Option<Ipv4Addr>,
    /// Underlay device index (`dev` of `ip link add ... type vxlan`).
    pub underlay: Option<IfIndex>,
    /// Source-address learning.
    pub learning: bool,
}

impl Vxlan {
    fn from_info(data: &[InfoVxlan]) -> Vxlan {
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
        v
    }
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

/// One end of a veth pair to create.
#[derive(Debug, Clone)]
pub struct VethEnd<'a> {
    /// Interface name.
    pub name: &'a str,
    /// MAC address.
    pub mac: Mac,
    /// MTU.
    pub mtu: u32,
}

fn by_name(name: &str) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
    msg
}

fn set_up_flag(msg: &mut LinkMessage) {
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
}

fn vxlan_message(spec: &VxlanSpec) -> LinkMessage {
    let mut msg = by_name(&spec.name);
    set_up_flag(&mut msg);
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
    msg
}

impl Netlink {
    /// Looks a link up by name; `None` if there is none.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>, NlError> {
        let op = format!("get link {name}");
        match self.request(&op, RouteNetlinkMessage::GetLink(by_name(name)), 0) {
            Ok(replies) => Ok(replies.iter().find_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_msg(l)),
                _ => None,
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The peer of veth `link` as its own namespace sees it (`RTM_GETLINK` by index with
    /// `IFLA_TARGET_NETNSID`, so without entering that namespace); `None` if `link` is no veth
    /// or its peer is gone.
    pub fn veth_peer(&mut self, link: &Link) -> Result<Option<Link>, NlError> {
        let (Some("veth"), Some(peer)) = (link.kind.as_deref(), link.link) else {
            return Ok(None);
        };
        let mut msg = LinkMessage::default();
        msg.header.index = peer;
        if let Some(nsid) = link.link_netnsid {
            msg.attributes.push(LinkAttribute::IfNetnsId(nsid));
        }
        let op = format!("get the peer of {}", link.name);
        match self.request(&op, RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(replies) => Ok(replies.iter().find_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_msg(l)),
                _ => None,
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
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

    /// The kernel's counters of link `name` (`IFLA_STATS64`); `None` if there is no such link.
    pub fn link_stats(&mut self, name: &str) -> Result<Option<LinkStats>, NlError> {
        let op = format!("get link stats {name}");
        match self.request(&op, RouteNetlinkMessage::GetLink(by_name(name)), 0) {
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

    /// Creates an up bridge with a fixed MAC (so it never changes as ports come and go).
    pub fn create_bridge(&mut self, name: &str, mac: Mac, mtu: u32) -> Result<(), NlError> {
        let mut msg = by_name(name);
        set_up_flag(&mut msg);
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

    /// Creates a veth pair in one request: `host` in this socket's namespace, attached to
    /// `master` and up; `peer` created directly inside `peer_ns` (never moved), still down.
    pub fn create_veth(
        &mut self,
        host: &VethEnd<'_>,
        master: IfIndex,
        peer: &VethEnd<'_>,
        peer_ns: &NetnsFd,
    ) -> Result<(), NlError> {
        // The peer cannot be created up: veth_open() fails with ENOTCONN until both ends exist.
        let mut peer_msg = by_name(peer.name);
        peer_msg
            .attributes
            .push(LinkAttribute::Address(peer.mac.to_vec()));
        peer_msg.attributes.push(LinkAttribute::Mtu(peer.mtu));
        peer_msg
            .attributes
            .push(LinkAttribute::NetNsFd(peer_ns.as_fd().as_raw_fd()));

        let mut msg = by_name(host.name);
        set_up_flag(&mut msg);
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

    /// Creates a VXLAN device (up, with the given MTU and MAC). Fails with EEXIST if the name is
    /// taken.
    pub fn create_vxlan(&mut self, spec: &VxlanSpec) -> Result<(), NlError> {
        self.request(
            &format!("create vxlan {}", spec.name),
            RouteNetlinkMessage::NewLink(vxlan_message(spec)),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Sets a link administratively up.
    pub fn set_up(&mut self, index: IfIndex) -> Result<(), NlError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        set_up_flag(&mut msg);
        self.request("set link up", RouteNetlinkMessage::SetLink(msg), NLM_F_ACK)
            .map(drop)
    }

    /// Changes the MTU and/or MAC of a link and/or brings it up (only what is `Some` / `true`).
    pub fn set_link(
        &mut self,
        index: IfIndex,
        mtu: Option<u32>,
        mac: Option<Mac>,
        up: bool,
    ) -> Result<(), NlError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        if up {
            set_up_flag(&mut msg);
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

    /// Sets hairpin mode on a bridge port, found by name.
    pub fn set_hairpin_by_name(&mut self, name: &str, on: bool) -> Result<(), NlError> {
        let mut msg = by_name(name);
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(
                on,
            )])),
        ]));
        self.request("set hairpin", RouteNetlinkMessage::NewLink(msg), NLM_F_ACK)
            .map(drop)
    }

    /// Deletes a link by index. `Ok(false)` if it was already gone.
    pub fn del_link(&mut self, index: IfIndex) -> Result<bool, NlError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.delete(&format!("delete link {index}"), msg)
    }

    /// Deletes a link by name. `Ok(false)` if it did not exist.
    pub fn del_link_by_name(&mut self, name: &str) -> Result<bool, NlError> {
        self.delete(&format!("delete link {name}"), by_name(name))
    }

    fn delete(&mut self, op: &str, msg: LinkMessage) -> Result<bool, NlError> {
        match self.request(op, RouteNetlinkMessage::DelLink(msg), NLM_F_ACK) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VxlanSpec {
        VxlanSpec {
            name: "ferry.1".into(),
            vxlan: Vxlan {
                vni: 1,
                port: 8472,
                local: Some(Ipv4Addr::new(10, 99, 0, 1)),
                underlay: Some(2),
                learning: false,
            },
            mtu: 1450,
            mac: Mac([0x1a, 0x89, 0x53, 0x49, 0xbd, 0xa6]),
        }
    }

    #[test]
    fn a_created_vxlan_reads_back_as_its_spec() {
        let s = spec();
        let mut msg = vxlan_message(&s);
        msg.header.index = 7;
        msg.attributes.push(LinkAttribute::Controller(3));
        msg.attributes.push(LinkAttribute::LinkNetNsId(4));
        let l = Link::from_msg(&msg);
        assert_eq!(
            l,
            Link {
                index: 7,
                name: "ferry.1".into(),
                kind: Some("vxlan".into()),
                mac: Some(s.mac),
                mtu: 1450,
                master: Some(3),
                up: true,
                link_netnsid: Some(4),
                link: None,
                xdp: false,
                vxlan: Some(s.vxlan),
            }
        );
    }

    #[test]
    fn a_veth_reads_its_peer_index_and_xdp_state() {
        let mut msg = by_name("u0");
        msg.attributes.push(LinkAttribute::Link(4));
        msg.attributes.push(LinkAttribute::LinkNetNsId(2));
        msg.attributes.push(LinkAttribute::Xdp(vec![
            LinkXdp::Attached(XdpAttached::Driver),
            LinkXdp::ProgId(77),
        ]));
        let l = Link::from_msg(&msg);
        assert_eq!((l.link, l.link_netnsid, l.xdp), (Some(4), Some(2), true));
        let mut msg = by_name("u1");
        msg.attributes
            .push(LinkAttribute::Xdp(vec![LinkXdp::Attached(
                XdpAttached::None,
            )]));
        assert!(!Link::from_msg(&msg).xdp, "XDP_ATTACHED_NONE");
    }

    #[test]
    fn plain_links_have_no_vxlan_and_odd_addresses_no_mac() {
        let mut msg = by_name("tun0");
        msg.attributes.push(LinkAttribute::Address(vec![]));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Bridge),
            LinkInfo::Data(InfoData::Vxlan(vec![InfoVxlan::Id(5)])),
        ]));
        let l = Link::from_msg(&msg);
        assert_eq!(l.name, "tun0");
        assert_eq!(l.kind.as_deref(), Some("bridge"));
        assert_eq!((l.mac, l.vxlan, l.up, l.master), (None, None, false, None));
    }

    #[test]
    fn vxlan_learning_defaults_on() {
        let v = Vxlan::from_info(&[InfoVxlan::Id(9)]);
        assert!(v.learning);
        assert_eq!((v.vni, v.port, v.local, v.underlay), (9, 0, None, None));
    }
}
