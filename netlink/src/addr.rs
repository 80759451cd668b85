//! Address operations: add (plain, as the agent gives its overlay devices one, or with broadcast
//! and no DAD, as the CNI plugin configures a pod interface), delete, and list one link's
//! addresses.

use crate::error::NlError;
use crate::socket::Netlink;
use crate::IfIndex;
use ipnetwork::{IpNetwork, Ipv4Network};
use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::net::IpAddr;

/// How [`Netlink::add_address_with`] adds an address. The default adds it the way
/// `ip addr add A/P dev D` does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddressOptions {
    /// Set the IPv4 broadcast address to the subnet's (`brd +`); ignored for IPv6.
    pub broadcast: bool,
    /// Send `IFA_F_NODAD | IFA_F_PERMANENT`: an IPv6 address is usable at once, without duplicate
    /// address detection.
    pub nodad: bool,
}

impl AddressOptions {
    /// What a CNI plugin gives a pod interface or a bridge: broadcast set, no DAD.
    pub const INTERFACE: AddressOptions = AddressOptions {
        broadcast: true,
        nodad: true,
    };
}

pub(crate) fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

fn address_message(index: IfIndex, addr: IpNetwork, opts: AddressOptions) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = family(addr.ip());
    msg.header.prefix_len = addr.prefix();
    msg.header.index = index;
    msg.attributes.push(AddressAttribute::Local(addr.ip()));
    msg.attributes.push(AddressAttribute::Address(addr.ip()));
    if let (true, IpNetwork::V4(v4)) = (opts.broadcast, addr) {
        msg.attributes
            .push(AddressAttribute::Broadcast(v4.broadcast()));
    }
    if opts.nodad {
        msg.attributes.push(AddressAttribute::Flags(
            AddressFlags::Nodad | AddressFlags::Permanent,
        ));
    }
    msg
}

/// The address of one `RTM_NEWADDR` reply: `IFA_LOCAL`, else `IFA_ADDRESS`, with the prefix.
fn address_of(m: &AddressMessage) -> Option<IpNetwork> {
    let local = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let ip = local.or_else(|| {
        m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })?;
    IpNetwork::new(ip, m.header.prefix_len).ok()
}

impl Netlink {
    /// Adds `addr` to a link as `ip addr add` does (no broadcast, no flags). EEXIST is returned
    /// to the caller.
    pub fn add_address(
        &mut self,
        index: IfIndex,
        addr: impl Into<IpNetwork>,
    ) -> Result<(), NlError> {
        self.add_address_with(index, addr, AddressOptions::default())
    }

    /// Adds `addr` to a link with `opts`. EEXIST is returned to the caller.
    pub fn add_address_with(
        &mut self,
        index: IfIndex,
        addr: impl Into<IpNetwork>,
        opts: AddressOptions,
    ) -> Result<(), NlError> {
        let addr = addr.into();
        self.request(
            &format!("add address {addr}"),
            RouteNetlinkMessage::NewAddress(address_message(index, addr, opts)),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Removes an address from a link. `Ok(false)` if it was not there.
    pub fn del_address(
        &mut self,
        index: IfIndex,
        addr: impl Into<IpNetwork>,
    ) -> Result<bool, NlError> {
        let addr = addr.into();
        let msg = address_message(index, addr, AddressOptions::default());
        match self.request(
            &format!("delete address {addr}"),
            RouteNetlinkMessage::DelAddress(msg),
            NLM_F_ACK,
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() || e.errno() == Some(libc::EADDRNOTAVAIL) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Addresses of one link, in the kernel's order (primary first).
    pub fn addresses(&mut self, index: IfIndex) -> Result<Vec<IpNetwork>, NlError> {
        let mut req = AddressMessage::default();
        req.header.index = index;
        let replies = self.request(
            "dump addresses",
            RouteNetlinkMessage::GetAddress(req),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewAddress(m) if m.header.index == index => address_of(m),
                _ => None,
            })
            .collect())
    }

    /// The IPv4 addresses of one link, in the kernel's order (primary first).
    pub fn ipv4_addresses(&mut self, index: IfIndex) -> Result<Vec<Ipv4Network>, NlError> {
        Ok(self
            .addresses(index)?
            .into_iter()
            .filter_map(|n| match n {
                IpNetwork::V4(v4) => Some(v4),
                IpNetwork::V6(_) => None,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_interface_addresses() {
        let net: IpNetwork = "10.244.1.5/24".parse().unwrap();
        let plain = address_message(3, net, AddressOptions::default());
        assert_eq!(plain.header.family, AddressFamily::Inet);
        assert_eq!((plain.header.index, plain.header.prefix_len), (3, 24));
        assert_eq!(
            plain.attributes,
            vec![
                AddressAttribute::Local(net.ip()),
                AddressAttribute::Address(net.ip())
            ]
        );
        let full = address_message(3, net, AddressOptions::INTERFACE);
        assert_eq!(
            full.attributes[2..],
            [
                AddressAttribute::Broadcast("10.244.1.255".parse().unwrap()),
                AddressAttribute::Flags(AddressFlags::Nodad | AddressFlags::Permanent),
            ]
        );
        let v6: IpNetwork = "fd00::5/64".parse().unwrap();
        let full6 = address_message(3, v6, AddressOptions::INTERFACE);
        assert_eq!(full6.header.family, AddressFamily::Inet6);
        assert_eq!(full6.attributes.len(), 3, "no broadcast for IPv6");
        assert_eq!(address_of(&full6), Some(v6));
    }

    #[test]
    fn local_wins_over_address() {
        let mut m = AddressMessage::default();
        m.header.prefix_len = 32;
        m.attributes
            .push(AddressAttribute::Address("10.0.0.2".parse().unwrap()));
        assert_eq!(address_of(&m), Some("10.0.0.2/32".parse().unwrap()));
        m.attributes
            .push(AddressAttribute::Local("10.0.0.1".parse().unwrap()));
        assert_eq!(address_of(&m), Some("10.0.0.1/32".parse().unwrap()));
        assert_eq!(address_of(&AddressMessage::default()), None);
    }
}
