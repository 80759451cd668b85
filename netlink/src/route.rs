//! Route operations, in two shapes:
//!
//! - [`RouteSpec`] / [`InstalledRoute`]: any family and table, with metrics, installed with
//!   protocol `boot` (what `ip route add` uses): the CNI plugin's routes inside a pod;
//! - [`Route4`]: IPv4 routes of the main table with the caller's protocol, added, replaced and
//!   deleted exactly: the agent's peer routes, which it must tell from everyone else's.

use crate::addr::family;
use crate::error::NlError;
use crate::socket::Netlink;
use crate::IfIndex;
use ipnetwork::{IpNetwork, Ipv4Network};
use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteMetric,
    RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The main routing table.
pub const MAIN_TABLE: u32 = RouteHeader::RT_TABLE_MAIN as u32;

/// A route to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destination.
    pub dst: IpNetwork,
    /// Next hop.
    pub gw: Option<IpAddr>,
    /// Output interface.
    pub oif: IfIndex,
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
    pub oif: Option<IfIndex>,
    /// Routing table.
    pub table: u32,
    /// Metric (`RTA_PRIORITY`; 0 when the kernel reports none, as for IPv4 routes added without
    /// one).
    pub priority: u32,
}

/// An IPv4 route of the main table, as installed or to install.
///
/// Only single-path unicast routes are described precisely; anything else the kernel reports
/// (multipath, blackhole, ...) keeps its destination, protocol and metric, which is all a
/// reconciler needs to stay away from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route4 {
    /// Destination.
    pub dst: Ipv4Network,
    /// Next hop.
    pub gw: Option<Ipv4Addr>,
    /// Output interface index.
    pub oif: Option<IfIndex>,
    /// `rtm_protocol`: who installed the route.
    pub protocol: u8,
    /// Metric (`RTA_PRIORITY`), 0 when absent.
    pub priority: u32,
    /// `RTNH_F_ONLINK`: the next hop is on the link even though no address covers it (the
    /// VXLAN backend's `via <peer subnet .0> dev ferry.1 onlink`).
    pub onlink: bool,
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn spec_message(r: &RouteSpec) -> RouteMessage {
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
    msg
}

fn installed(m: &RouteMessage, v6: bool) -> Option<InstalledRoute> {
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
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::UNSPECIFIED.into()
    };
    let dst = IpNetwork::new(
        dst_ip.unwrap_or(unspecified),
        m.header.destination_prefix_length,
    )
    .ok()?;
    Some(InstalledRoute {
        dst,
        gw,
        oif,
        table,
        priority,
    })
}

fn route4_message(r: &Route4) -> RouteMessage {
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

/// The [`Route4`] of a dumped route, if it is an IPv4 route of the main table.
fn main_route4(m: &RouteMessage) -> Option<Route4> {
    let table = m
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table));
    if table != MAIN_TABLE || m.header.address_family != AddressFamily::Inet {
        return None;
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
    let dst = Ipv4Network::new(dst, m.header.destination_prefix_length).ok()?;
    Some(Route4 {
        dst,
        gw,
        oif,
        protocol: u8::from(m.header.protocol),
        priority,
        onlink,
    })
}

impl Netlink {
    /// Adds a route with protocol `boot`. EEXIST is returned to the caller.
    pub fn add_route_spec(&mut self, r: &RouteSpec) -> Result<(), NlError> {
        self.request(
            &format!("add route {}", r.dst),
            RouteNetlinkMessage::NewRoute(spec_message(r)),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
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
        Ok(replies
            .iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewRoute(m) => installed(m, v6),
                _ => None,
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
        Ok(replies
            .iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewRoute(m) => main_route4(m),
                _ => None,
            })
            .collect())
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
        self.request(&op, RouteNetlinkMessage::NewRoute(route4_message(r)), flags)
            .map(drop)
    }

    /// Deletes exactly this route: the kernel matches destination, metric, protocol, next hop and
    /// device, so a route of another protocol is never hit. `Ok(false)` if it was already gone.
    pub fn del_route(&mut self, r: &Route4) -> Result<bool, NlError> {
        let mut msg = route4_message(r);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route4_round_trips_through_its_message() {
        let r = Route4 {
            dst: "10.244.1.0/24".parse().unwrap(),
            gw: Some("10.244.1.0".parse().unwrap()),
            oif: Some(5),
            protocol: 42,
            priority: 0,
            onlink: true,
        };
        let msg = route4_message(&r);
        assert_eq!(msg.header.scope, RouteScope::Universe);
        assert!(!msg
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Priority(_))));
        assert_eq!(main_route4(&msg), Some(r));
        let direct = Route4 {
            gw: None,
            priority: 7,
            onlink: false,
            ..r
        };
        let msg = route4_message(&direct);
        assert_eq!(msg.header.scope, RouteScope::Link);
        assert_eq!(main_route4(&msg), Some(direct));
    }

    #[test]
    fn other_tables_and_families_are_not_main_routes() {
        let r = Route4 {
            dst: "0.0.0.0/0".parse().unwrap(),
            gw: Some("10.0.0.1".parse().unwrap()),
            oif: None,
            protocol: 3,
            priority: 0,
            onlink: false,
        };
        let mut msg = route4_message(&r);
        assert_eq!(main_route4(&msg), Some(r), "default route has no RTA_DST");
        msg.attributes.push(RouteAttribute::Table(1000));
        assert_eq!(main_route4(&msg), None);
        let mut msg = route4_message(&r);
        msg.header.address_family = AddressFamily::Inet6;
        assert_eq!(main_route4(&msg), None);
    }

    #[test]
    fn spec_uses_boot_protocol_big_tables_and_metrics() {
        let spec = RouteSpec {
            dst: "fd00::/64".parse().unwrap(),
            gw: None,
            oif: 2,
            priority: Some(100),
            mtu: Some(1400),
            advmss: None,
            table: Some(1000),
            scope: None,
        };
        let msg = spec_message(&spec);
        assert_eq!(msg.header.protocol, RouteProtocol::Boot);
        assert_eq!(msg.header.scope, RouteScope::Link);
        assert_eq!(msg.header.table, 0);
        assert!(msg.attributes.contains(&RouteAttribute::Table(1000)));
        assert!(msg
            .attributes
            .contains(&RouteAttribute::Metrics(vec![RouteMetric::Mtu(1400)])));
        let back = installed(&msg, true).unwrap();
        assert_eq!(
            back,
            InstalledRoute {
                dst: spec.dst,
                gw: None,
                oif: Some(2),
                table: 1000,
                priority: 100
            }
        );
        let main = spec_message(&RouteSpec {
            table: None,
            gw: Some("fd00::1".parse().unwrap()),
            ..spec
        });
        assert_eq!(main.header.table, RouteHeader::RT_TABLE_MAIN);
        assert_eq!(main.header.scope, RouteScope::Universe);
    }
}
