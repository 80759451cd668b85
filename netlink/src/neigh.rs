//! Neighbour (ARP) entries and bridge FDB entries of one device: dump, set (create or replace,
//! permanent) and delete exactly one. The VXLAN overlay keeps one of each per peer.

use crate::error::NlError;
use crate::mac::Mac;
use crate::socket::Netlink;
use crate::IfIndex;
use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::net::Ipv4Addr;

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

fn neigh_of(m: &NeighbourMessage) -> Option<Neigh> {
    let mut ip = None;
    let mut mac = None;
    for a in &m.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) => ip = Some(*d),
            NeighbourAttribute::LinkLayerAddress(l) => mac = Mac::from_slice(l),
            _ => {}
        }
    }
    Some(Neigh {
        ip: ip?,
        mac,
        permanent: m.header.state == NeighbourState::Permanent,
    })
}

fn fdb_of(m: &NeighbourMessage) -> Option<Fdb> {
    let mut mac = None;
    let mut dst = None;
    for a in &m.attributes {
        match a {
            NeighbourAttribute::LinkLayerAddress(l) => mac = Mac::from_slice(l),
            NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) => dst = Some(*d),
            NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                dst = <[u8; 4]>::try_from(b.as_slice()).ok().map(Ipv4Addr::from)
            }
            _ => {}
        }
    }
    Some(Fdb { mac: mac?, dst })
}

fn fdb_message(index: IfIndex, e: &Fdb) -> NeighbourMessage {
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

fn neigh_message(index: IfIndex, ip: Ipv4Addr) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.ifindex = index;
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    msg
}

impl Netlink {
    /// The neighbour-table entries of `family` (`Inet`: ARP, `Bridge`: FDB) on one device.
    fn dump_neighbours(
        &mut self,
        op: &str,
        family: AddressFamily,
        index: IfIndex,
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
    pub fn neighbours_v4(&mut self, index: IfIndex) -> Result<Vec<Neigh>, NlError> {
        let all = self.dump_neighbours("dump neighbours", AddressFamily::Inet, index)?;
        Ok(all.iter().filter_map(neigh_of).collect())
    }

    /// Creates or replaces a permanent neighbour entry `ip -> mac` on a device.
    pub fn set_neighbour(&mut self, index: IfIndex, ip: Ipv4Addr, mac: Mac) -> Result<(), NlError> {
        let mut msg = neigh_message(index, ip);
        msg.header.state = NeighbourState::Permanent;
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
    pub fn del_neighbour(&mut self, index: IfIndex, ip: Ipv4Addr) -> Result<bool, NlError> {
        match self.request(
            &format!("delete neighbour {ip}"),
            RouteNetlinkMessage::DelNeighbour(neigh_message(index, ip)),
            NLM_F_ACK,
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The FDB entries of one (VXLAN) device, as `bridge fdb show dev D` lists them.
    pub fn fdb(&mut self, index: IfIndex) -> Result<Vec<Fdb>, NlError> {
        let all = self.dump_neighbours("dump fdb", AddressFamily::Bridge, index)?;
        Ok(all.iter().filter_map(fdb_of).collect())
    }

    /// Creates (or, for the same MAC, replaces the remote of) a permanent FDB entry
    /// `mac -> dst` on a VXLAN device.
    pub fn set_fdb(&mut self, index: IfIndex, e: &Fdb) -> Result<(), NlError> {
        self.request(
            &format!("set fdb {}", e.mac),
            RouteNetlinkMessage::NewNeighbour(fdb_message(index, e)),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(drop)
    }

    /// Deletes exactly this FDB entry (MAC and remote). `Ok(false)` if it was already gone.
    pub fn del_fdb(&mut self, index: IfIndex, e: &Fdb) -> Result<bool, NlError> {
        let mut msg = fdb_message(index, e);
        msg.header.state = NeighbourState::None;
        match self.request(
            &format!("delete fdb {}", e.mac),
            RouteNetlinkMessage::DelNeighbour(msg),
            NLM_F_ACK,
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdb_entries_read_back() {
        let e = Fdb {
            mac: Mac([2, 0, 0, 0, 0, 1]),
            dst: Some(Ipv4Addr::new(10, 99, 0, 2)),
        };
        let msg = fdb_message(4, &e);
        assert_eq!(msg.header.family, AddressFamily::Bridge);
        assert_eq!(msg.header.state, NeighbourState::Permanent);
        assert_eq!(fdb_of(&msg), Some(e));
        let local = Fdb { dst: None, ..e };
        assert_eq!(fdb_of(&fdb_message(4, &local)), Some(local));
        assert_eq!(
            fdb_of(&NeighbourMessage::default()),
            None,
            "no MAC, no entry"
        );
    }

    #[test]
    fn neighbours_read_back() {
        let ip = Ipv4Addr::new(10, 244, 1, 0);
        let mut msg = neigh_message(4, ip);
        assert_eq!(
            neigh_of(&msg),
            Some(Neigh {
                ip,
                mac: None,
                permanent: false
            })
        );
        msg.header.state = NeighbourState::Permanent;
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 9]));
        assert_eq!(
            neigh_of(&msg),
            Some(Neigh {
                ip,
                mac: Some(Mac([2, 0, 0, 0, 0, 9])),
                permanent: true
            })
        );
        assert_eq!(
            neigh_of(&NeighbourMessage::default()),
            None,
            "no IP, no entry"
        );
    }
}
