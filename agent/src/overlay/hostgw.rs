//! The host-gw backend: one plain route per peer node, `<peer podCIDR> via <peer IP> dev <iface>`,
//! in the main table, tagged with ferry's route protocol. No encapsulation, so pods get the full
//! underlay MTU; it needs L2 adjacency between nodes. Planning and reconciliation are the shared
//! ones of [`super::peers`].

use super::peers::{route, usable_peers, PeerRoute, Skip};
use super::{apply_routes, Backend, Report, Tunnel, View};
use crate::config;
use crate::netlink::Netlink;
use crate::node::NodeInfo;
use ipnetwork::Ipv4Network;
use std::collections::BTreeMap;

/// The host-gw driver (stateless: everything it needs is in the kernel and the Node list).
#[derive(Debug, Clone, Copy, Default)]
pub struct Driver;

impl Backend for Driver {
    fn name(&self) -> &'static str {
        config::Backend::HostGw.name()
    }

    fn overhead(&self) -> u32 {
        0
    }

    fn tunnel(&self) -> Option<Tunnel> {
        None
    }

    fn reconcile(&mut self, nl: &mut Netlink, view: &View<'_>) -> Report {
        let (want, skipped) = desired_routes(view.nodes, view.own, view.underlay.index);
        let mut report = Report {
            peers: want.len(),
            skipped,
            ..Report::default()
        };
        apply_routes(nl, &want, &mut report);
        report
    }
}

/// The routes this node wants, keyed by destination, and the peers that get none (with podCIDR
/// but unusable). Nodes without podCIDR are simply not peers yet.
pub fn desired_routes(
    nodes: &[NodeInfo],
    own: &str,
    oif: u32,
) -> (BTreeMap<Ipv4Network, PeerRoute>, Vec<(String, Skip)>) {
    let (peers, skipped) = usable_peers(nodes, own, |_| None);
    let want = peers
        .into_iter()
        .map(|p| {
            (
                p.cidr,
                PeerRoute {
                    node: p.node.name.clone(),
                    route: route(p.cidr, p.addr, oif),
                },
            )
        })
        .collect();
    (want, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

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

    #[test]
    fn desired_routes_cover_usable_peers_only() {
        let nodes = [
            info("me", Some("10.244.0.0/24"), Some("10.99.0.1"), None),
            info("b", Some("10.244.1.0/24"), Some("10.99.0.2"), None),
            info(
                "c",
                Some("10.244.2.0/24"),
                Some("10.99.0.3"),
                Some("10.99.1.3"),
            ),
            info("d", Some("10.244.3.0/24"), None, None),
            info("e", None, Some("10.99.0.5"), None),
            info("f", Some("10.244.0.0/25"), Some("10.99.0.6"), None),
            info("g", Some("10.244.1.0/24"), Some("10.99.0.7"), None),
        ];
        let (want, skipped) = desired_routes(&nodes, "me", 7);
        assert_eq!(want.len(), 2);
        assert_eq!(
            want[&net("10.244.1.0/24")].route,
            route(net("10.244.1.0/24"), ip("10.99.0.2"), 7)
        );
        assert_eq!(want[&net("10.244.1.0/24")].node, "b");
        // The published public-ip wins over InternalIP.
        assert_eq!(want[&net("10.244.2.0/24")].route.gw, Some(ip("10.99.1.3")));
        assert_eq!(
            skipped,
            vec![
                ("d".to_owned(), Skip::NoAddress),
                ("f".to_owned(), Skip::OverlapsOwn(net("10.244.0.0/24"))),
                ("g".to_owned(), Skip::Overlaps { winner: "b".into() }),
            ]
        );
    }
}
