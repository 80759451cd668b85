//! Peer planning shared by every overlay backend: which peers can be served ([`usable_peers`],
//! the reasons a peer is [`Skip`]ped), the route ferry installs for a peer ([`route`], tagged with
//! ferry's own route protocol [`ROUTE_PROTOCOL`]), the cluster MTU, and the level-triggered route
//! reconciliation the host-gw, udp and VXLAN backends all use.
//!
//! Level-triggered (datapath pitfall 7): every round computes the desired routes from the full
//! Node list, reads every IPv4 route of the main table, diffs the two ([`plan`]) and applies the
//! difference ([`apply`]): missing routes are added, changed ones are replaced atomically (no
//! window without a route), and routes of our protocol that no node owns any more are deleted.
//! That last step also removes routes of nodes deleted while the agent was down; nothing is ever
//! flushed, so a restarted agent adopts what its predecessor installed.
//!
//! Routes of any other protocol are never changed or deleted: when a foreign route already holds
//! a peer's destination (same prefix and metric) the peer is skipped with a warning. One failing
//! route is logged and retried next round; the others are still served.

use crate::netlink::{Netlink, Route4};
use crate::node::NodeInfo;
use ipnetwork::Ipv4Network;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// `rtm_protocol` of every route ferry installs (`ip route ... proto 78`). Unassigned in
/// `/etc/iproute2/rt_protos`; distinct from Calico's 80 and the routing daemons' numbers.
pub const ROUTE_PROTOCOL: u8 = 0x4e;

/// Why a peer node gets no route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// It has a podCIDR but neither a `public-ip` annotation nor an IPv4 `InternalIP`.
    NoAddress,
    /// Its podCIDR overlaps this node's own subnet.
    OverlapsOwn(Ipv4Network),
    /// Another node claims an overlapping podCIDR; the lexically first node name keeps it.
    Overlaps {
        /// The node that keeps the route.
        winner: String,
    },
    /// VXLAN backend: the peer has not published a usable `backend-data` (`VtepMAC`, VNI).
    NoVtep,
    /// udp backend: the peer published another `backend-type` (empty: none yet).
    OtherBackend(String),
    /// The peer's annotations are malformed (the message says which and how).
    Garbage(String),
    /// A route of another protocol already holds the peer's destination.
    Foreign {
        /// The other route's protocol number.
        protocol: u8,
    },
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::NoAddress => f.write_str("no public-ip annotation and no IPv4 InternalIP"),
            Skip::OverlapsOwn(own) => write!(f, "its podCIDR overlaps this node's {own}"),
            Skip::Overlaps { winner } => write!(f, "its podCIDR overlaps node {winner:?}'s"),
            Skip::NoVtep => f.write_str(
                "no vxlan backend-data annotation with VNI 1 and a VtepMAC (its agent has not published yet)",
            ),
            Skip::OtherBackend(b) if b.is_empty() => {
                f.write_str("no backend-type annotation (its agent has not published yet)")
            }
            Skip::OtherBackend(b) => write!(f, "it runs backend {b:?}, this node udp"),
            Skip::Garbage(what) => f.write_str(what),
            Skip::Foreign { protocol } => write!(
                f,
                "a route of protocol {protocol} (not ferry's) already holds its podCIDR"
            ),
        }
    }
}

/// One desired peer route and the node it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRoute {
    /// The peer node.
    pub node: String,
    /// The route.
    pub route: Route4,
}

/// A peer that can be routed: its node, podCIDR and underlay address.
#[derive(Debug, Clone, Copy)]
pub struct UsablePeer<'a> {
    /// The peer node.
    pub node: &'a NodeInfo,
    /// Its podCIDR.
    pub cidr: Ipv4Network,
    /// Its underlay address (`public-ip`, else `InternalIP`).
    pub addr: Ipv4Addr,
}

/// The peers this node can route to (sorted by name), and the ones with a podCIDR that cannot be
/// used. `usable` decides, after the overlap checks, whether a peer with an address is served
/// (the VXLAN backend also needs its VTEP); peers it refuses do not win overlaps.
pub fn usable_peers<'a>(
    nodes: &'a [NodeInfo],
    own: &str,
    mut usable: impl FnMut(&NodeInfo) -> Option<Skip>,
) -> (Vec<UsablePeer<'a>>, Vec<(String, Skip)>) {
    let own_cidr = nodes
        .iter()
        .find(|n| n.name == own)
        .and_then(|n| n.pod_cidr);
    let mut peers: Vec<&NodeInfo> = nodes
        .iter()
        .filter(|n| n.name != own && n.pod_cidr.is_some())
        .collect();
    peers.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out: Vec<UsablePeer<'a>> = Vec::new();
    let mut skipped = Vec::new();
    for peer in peers {
        let Some(cidr) = peer.pod_cidr else {
            continue;
        };
        if let Some(own) = own_cidr.filter(|o| overlaps(*o, cidr)) {
            skipped.push((peer.name.clone(), Skip::OverlapsOwn(own)));
            continue;
        }
        if let Some(winner) = out.iter().find(|w| overlaps(w.cidr, cidr)) {
            skipped.push((
                peer.name.clone(),
                Skip::Overlaps {
                    winner: winner.node.name.clone(),
                },
            ));
            continue;
        }
        if let Some(problem) = peer.public_ip_problem() {
            skipped.push((peer.name.clone(), Skip::Garbage(problem)));
            continue;
        }
        let Some(addr) = peer.peer_address() else {
            skipped.push((peer.name.clone(), Skip::NoAddress));
            continue;
        };
        if let Some(why) = usable(peer) {
            skipped.push((peer.name.clone(), why));
            continue;
        }
        out.push(UsablePeer {
            node: peer,
            cidr,
            addr,
        });
    }
    (out, skipped)
}

/// The cluster MTU: the smallest of this node's own pod MTU (underlay MTU minus the backend's overhead) and the MTUs other nodes published.
pub fn cluster_mtu(nodes: &[NodeInfo], own: &str, own_mtu: u32) -> u32 {
    nodes
        .iter()
        .filter(|n| n.name != own)
        .filter_map(NodeInfo::mtu)
        .filter(|m| *m >= 68)
        .fold(own_mtu, u32::min)
}

/// Our route for `dst` via `via` out of `oif`.
pub fn route(dst: Ipv4Network, via: Ipv4Addr, oif: u32) -> Route4 {
    Route4 {
        dst,
        gw: Some(via),
        oif: Some(oif),
        protocol: ROUTE_PROTOCOL,
        priority: 0,
        onlink: false,
    }
}

fn overlaps(a: Ipv4Network, b: Ipv4Network) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

/// What one round changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Routes to create (nothing holds their destination and metric).
    pub add: Vec<Route4>,
    /// Routes that replace one of ours with the same destination and metric.
    pub replace: Vec<Route4>,
    /// Routes of ours that nothing wants (exactly as installed).
    pub delete: Vec<Route4>,
    /// Desired routes whose destination and metric a route of another protocol already holds
    /// (left alone, the peer gets no route): `(wanted, foreign)`.
    pub conflicts: Vec<(Route4, Route4)>,
}

impl Plan {
    /// True when the kernel already matches.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.replace.is_empty() && self.delete.is_empty()
    }
}

/// Diffs the desired routes against every route of the main table.
pub fn plan<'a>(want: impl IntoIterator<Item = &'a Route4>, installed: &[Route4]) -> Plan {
    let (ours, foreign): (Vec<&Route4>, Vec<&Route4>) =
        installed.iter().partition(|r| r.protocol == ROUTE_PROTOCOL);
    let mut kept: BTreeSet<&Route4> = BTreeSet::new();
    let mut out = Plan::default();
    for w in want {
        if let Some(same) = ours.iter().find(|r| **r == w) {
            kept.insert(same);
            continue;
        }
        let same_key = |r: &&&Route4| r.dst == w.dst && r.priority == w.priority;
        if let Some(f) = foreign.iter().find(same_key) {
            out.conflicts.push((*w, **f));
            continue;
        }
        match ours.iter().find(same_key) {
            Some(old) => {
                kept.insert(old);
                out.replace.push(*w);
            }
            None => out.add.push(*w),
        }
    }
    out.delete = ours
        .into_iter()
        .filter(|r| !kept.contains(r))
        .copied()
        .collect();
    out
}

/// Counts of what [`apply`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Routes added or replaced.
    pub changed: usize,
    /// Routes deleted.
    pub deleted: usize,
    /// Operations that failed (logged; retried next round).
    pub failed: usize,
}

/// Applies `plan`: additions and replacements first, then deletions. Failures are logged per
/// route and do not stop the others.
pub fn apply(nl: &mut Netlink, plan: &Plan, owner: &BTreeMap<Ipv4Network, PeerRoute>) -> Applied {
    let mut done = Applied::default();
    let node_of = |r: &Route4| {
        owner
            .get(&r.dst)
            .map_or("?", |p| p.node.as_str())
            .to_owned()
    };
    for (wanted, foreign) in &plan.conflicts {
        tracing::warn!(
            node = %node_of(wanted),
            dst = %wanted.dst,
            foreign_protocol = foreign.protocol,
            foreign_gw = ?foreign.gw,
            "not routing peer: a route of another protocol holds its podCIDR (left untouched)"
        );
    }
    for (r, replace) in plan
        .add
        .iter()
        .map(|r| (r, false))
        .chain(plan.replace.iter().map(|r| (r, true)))
    {
        let gw = r.gw.map(|g| g.to_string()).unwrap_or_default();
        match nl.add_route(r, replace) {
            Ok(()) => {
                done.changed += 1;
                tracing::info!(node = %node_of(r), dst = %r.dst, via = %gw, replace, "route installed");
            }
            Err(e) => {
                done.failed += 1;
                tracing::warn!(node = %node_of(r), dst = %r.dst, via = %gw, error = %e, "route failed (retried next round)");
            }
        }
    }
    for r in &plan.delete {
        match nl.del_route(r) {
            Ok(_) => {
                done.deleted += 1;
                tracing::info!(dst = %r.dst, gw = ?r.gw, "stale route deleted (no node owns it)");
            }
            Err(e) => {
                done.failed += 1;
                tracing::warn!(dst = %r.dst, error = %e, "deleting stale route failed (retried next round)");
            }
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(
        name: &str,
        cidr: Option<&str>,
        internal: Option<&str>,
        public: Option<&str>,
    ) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            pod_cidr: cidr.map(|c| c.parse().unwrap()),
            internal_ip: internal.map(|i| i.parse().unwrap()),
            public_ip: public.map(|i| i.parse().unwrap()),
            annotations: BTreeMap::new(),
        }
    }

    fn net(s: &str) -> Ipv4Network {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn foreign(dst: &str, gw: &str, protocol: u8) -> Route4 {
        Route4 {
            dst: net(dst),
            gw: Some(ip(gw)),
            oif: Some(7),
            protocol,
            priority: 0,
            onlink: false,
        }
    }

    #[test]
    fn plan_adds_replaces_deletes_and_never_touches_foreign_routes() {
        let a = route(net("10.244.1.0/24"), ip("10.99.0.2"), 7);
        let b = route(net("10.244.2.0/24"), ip("10.99.0.3"), 7);
        let c = route(net("10.244.3.0/24"), ip("10.99.0.4"), 7);
        let d = route(net("10.244.4.0/24"), ip("10.99.0.5"), 7);
        let b_old = route(net("10.244.2.0/24"), ip("10.99.0.33"), 7);
        let stale = route(net("10.244.9.0/24"), ip("10.99.0.9"), 7);
        let connected = Route4 {
            dst: net("10.99.0.0/24"),
            gw: None,
            oif: Some(7),
            protocol: 2,
            priority: 0,
            onlink: false,
        };
        let boot_d = foreign("10.244.4.0/24", "10.99.0.50", 3);
        let boot_other = foreign("10.244.8.0/24", "10.99.0.8", 3);
        let installed = [a, b_old, stale, connected, boot_d, boot_other];
        let p = plan(&[a, b, c, d], &installed);
        assert_eq!(p.add, vec![c]);
        assert_eq!(p.replace, vec![b]);
        assert_eq!(p.delete, vec![stale]);
        assert_eq!(p.conflicts, vec![(d, boot_d)]);
        assert!(!p.is_empty());
    }

    #[test]
    fn plan_converges_and_restart_adopts() {
        let a = route(net("10.244.1.0/24"), ip("10.99.0.2"), 7);
        let b = route(net("10.244.2.0/24"), ip("10.99.0.3"), 7);
        // Everything in place (e.g. installed by the previous agent): nothing to do.
        assert!(plan(&[a, b], &[b, a]).is_empty());
        // Nothing desired (every peer deleted): only our routes go.
        let other = foreign("10.244.7.0/24", "10.99.0.7", 4);
        let p = plan(&[], &[a, other, b]);
        assert_eq!(p.delete, vec![a, b]);
        assert!(p.add.is_empty() && p.replace.is_empty());
        // A route of ours on another interface or metric is replaced / deleted, not duplicated.
        let moved = route(net("10.244.1.0/24"), ip("10.99.0.2"), 9);
        let mut metric = a;
        metric.priority = 100;
        let p = plan(&[a], &[moved, metric]);
        assert_eq!(p.replace, vec![a]);
        assert_eq!(p.delete, vec![metric]);
    }

    #[test]
    fn cluster_mtu_is_the_minimum() {
        let mut a = info("a", Some("10.244.1.0/24"), Some("10.99.0.2"), None);
        let mut b = info("b", Some("10.244.2.0/24"), Some("10.99.0.3"), None);
        a.annotations
            .insert(crate::node::ANN_MTU.into(), "1400".into());
        b.annotations
            .insert(crate::node::ANN_MTU.into(), "junk".into());
        let me = info("me", Some("10.244.0.0/24"), Some("10.99.0.1"), None);
        assert_eq!(
            cluster_mtu(&[me.clone(), a.clone(), b.clone()], "me", 1450),
            1400
        );
        assert_eq!(cluster_mtu(&[me, b], "me", 1450), 1450);
        // Our own published value never counts (it may be stale after an underlay change).
        assert_eq!(cluster_mtu(&[a], "a", 8950), 8950);
    }
}
