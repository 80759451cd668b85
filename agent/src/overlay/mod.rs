//! The overlay backends as drivers (netavark's `NetworkDriver` shape): one [`Backend`] trait, one
//! factory ([`new`]) from the `--backend` flag, and the peer planning they share ([`peers`]).
//!
//! | backend | module | what it programs per peer |
//! |---|---|---|
//! | `vxlan` (default) | [`vxlan`] | kernel VXLAN device `ferry.1`; neighbour + FDB entry + onlink route |
//! | `host-gw` | [`hostgw`] | one plain route via the peer's underlay address |
//! | `udp` | [`udp`] (driver in `udp::driver`, userspace datapath beside it) | persistent TUN `ferry.udp`; one route into it |
//!
//! The agent's loop ([`crate::agent`]) owns everything that is the same for all backends (Node
//! list, node files, annotations, conditions, masquerade, prober) and asks the backend for the
//! rest: its overhead (the pod MTU), its tunnel (port for masquerade and the prober), what it
//! publishes in `backend-data`, and one level-triggered [`Backend::reconcile`] round that returns
//! a [`Report`] instead of touching the agent's state.

pub mod hostgw;
pub mod peers;
pub mod udp;
pub mod vxlan;

use crate::config::{self, Config};
use crate::health::Fault;
use crate::netlink::{Link, Netlink};
use crate::node::NodeInfo;
use ipnetwork::Ipv4Network;
use peers::{PeerRoute, Skip};
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// Every device an overlay backend may own (watched for changes, removed by `uninstall`).
pub const DEVICES: [&str; 2] = [vxlan::DEVICE, udp::DEVICE];

/// One way of carrying pod traffic between nodes.
pub trait Backend: fmt::Debug + Send {
    /// The name published in `flannel.alpha.coreos.com/backend-type` (the `--backend` value).
    fn name(&self) -> &'static str;
    /// Bytes the encapsulation adds to every packet: pod MTU = underlay MTU - overhead.
    fn overhead(&self) -> u32;
    /// The tunnel, for encapsulating backends (`None`: packets go out unencapsulated).
    fn tunnel(&self) -> Option<Tunnel>;
    /// The `backend-data` annotation this node publishes (`None`: none).
    fn backend_data(&self, _node: &str) -> Option<String> {
        None
    }
    /// The counters of a datapath running in this process (the udp backend's workers), for
    /// `/metrics`; `None` for kernel datapaths.
    fn userspace_stats(&self) -> Option<Arc<udp::Stats>> {
        None
    }
    /// One level-triggered round: programs the kernel (and the backend's datapath) for the peers
    /// in `view`. Never tears down what works: faults are reported, the last good state stays.
    fn reconcile(&mut self, nl: &mut Netlink, view: &View<'_>) -> Report;
}

/// What an encapsulating backend tells the rest of the agent about its tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunnel {
    /// UDP port of the encapsulated traffic (exempt from masquerade; named in probe verdicts).
    pub port: u16,
    /// The device the prober binds its ICMP socket to (`None`: routed normally).
    pub probe_device: Option<&'static str>,
}

/// What a round knows about the cluster and this node.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// Every Node, as the agent reads them.
    pub nodes: &'a [NodeInfo],
    /// This node's name.
    pub own: &'a str,
    /// The underlay interface (`--iface`).
    pub underlay: &'a Link,
    /// This node's underlay address (`InternalIP`, else the interface's first IPv4 address).
    pub local: Option<Ipv4Addr>,
    /// This node's podCIDR.
    pub cidr: Option<Ipv4Network>,
    /// The cluster MTU for pods.
    pub mtu: Option<u32>,
}

/// What one backend round did.
#[derive(Debug, Default)]
pub struct Report {
    /// The fault that stops the backend from serving (the first one found).
    pub fault: Option<Fault>,
    /// Peers served.
    pub peers: usize,
    /// Peers not served, and why.
    pub skipped: Vec<(String, Skip)>,
    /// Kernel entries that failed this round (retried next round).
    pub failed_entries: usize,
    /// The tunnel device and the peer routes through it, for the prober.
    pub probe: Option<(u32, BTreeMap<Ipv4Network, PeerRoute>)>,
}

/// The backend `--backend` names.
pub fn new(cfg: &Config) -> Box<dyn Backend> {
    match cfg.backend {
        config::Backend::Vxlan => Box::new(vxlan::Driver::new(cfg.direct_routing)),
        config::Backend::HostGw => Box::new(hostgw::Driver),
        config::Backend::Udp => Box::new(udp::Driver::new()),
    }
}

/// Diffs the peer routes `want` against the main table and applies the difference; a foreign
/// route holding a peer's destination skips that peer.
pub fn apply_routes(
    nl: &mut Netlink,
    want: &BTreeMap<Ipv4Network, PeerRoute>,
    report: &mut Report,
) {
    let installed = match nl.main_routes_v4() {
        Ok(r) => r,
        Err(e) => {
            report
                .fault
                .get_or_insert(Fault::Device(format!("listing routes: {e}")));
            return;
        }
    };
    let plan = peers::plan(want.values().map(|p| &p.route), &installed);
    for (wanted, foreign) in &plan.conflicts {
        if let Some(p) = want.get(&wanted.dst) {
            report.peers = report.peers.saturating_sub(1);
            report.skipped.push((
                p.node.clone(),
                Skip::Foreign {
                    protocol: foreign.protocol,
                },
            ));
        }
    }
    if !(plan.is_empty() && plan.conflicts.is_empty()) {
        let done = peers::apply(nl, &plan, want);
        report.failed_entries += done.failed;
        tracing::debug!(?done, peers = want.len(), "routes reconciled");
    }
}
