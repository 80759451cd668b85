//! The node agent's main loop: watch Nodes, then reconcile this node's files, its Node
//! annotations, the overlay (VXLAN device + entries, or host-gw routes) and the iptables rules,
//! on every Node change and every `--resync-seconds`.
//!
//! ```text
//! start ──► ip_forward=1 ──► reflector(Nodes) ──► wait for the complete list ──► loop {
//!     own Node?  no ─► log "waiting for Node"        (write nothing)
//!     podCIDR?   no ─► log "waiting for podCIDR"     (write nothing)
//!                yes ─► subnet.env, then 10-ferry.conflist (only if changed)
//!     annotations differ? ─► merge patch of our Node
//!     vxlan: ferry.1 adopted/created; fdb + neighbours + routes: desired vs installed
//!     host-gw: routes: desired (all peers) vs installed (main table) ─► add / replace / delete ours
//!     iptables: FERRY-* chains vs iptables-save ─► iptables-restore when they differ
//!     sleep until a Node changes or the resync period passes
//! }
//! ```
//!
//! Nothing is reconciled before the reflector holds a complete Node list, so a starting agent (or
//! one that cannot reach the API server) never mistakes "not listed yet" for "deleted": routes
//! installed by a previous run stay until a complete list says their node is gone. The reflector
//! swaps relists in atomically, so a watch restart never shows an empty cluster either.

use crate::config::{Backend, Config};
use crate::masq::{MasqConfig, Masquerade};
use crate::netlink::{Link, Netlink};
use crate::node::{self, NodeInfo};
use crate::subnet::{self, NodeNetworkFile};
use crate::{client, hostgw, sysctl, udp, vxlan};
use futures::StreamExt as _;
use ipnetwork::Ipv4Network;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, store::Writer, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::Notify;

/// The agent could not start. Once running, it only logs and retries.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// `net.ipv4.ip_forward` could not be set.
    #[error("enabling net.ipv4.ip_forward: {0}")]
    Forwarding(#[source] std::io::Error),
    /// No netlink socket.
    #[error("opening a netlink socket: {0}")]
    Netlink(#[source] std::io::Error),
    /// The API client could not be built.
    #[error(transparent)]
    Client(#[from] client::ClientError),
    /// The Node reflector stopped before its first complete list.
    #[error("waiting for the Node list: {0}")]
    Watch(#[source] reflector::store::WriterDropped),
}

/// Where this node stands, so transitions are logged once rather than every round.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OwnState {
    /// Not reconciled yet.
    Unknown,
    /// No Node object with our name.
    NoNode,
    /// The Node has no podCIDR yet.
    NoPodCidr,
    /// The podCIDR (or the interface) cannot be used; the message says why.
    Unusable(String),
    /// Files written for this content.
    Ready(NodeNetworkFile),
}

/// The running agent.
#[derive(Debug)]
pub struct Agent {
    cfg: Config,
    nl: Netlink,
    api: Api<Node>,
    store: Store<Node>,
    own: OwnState,
    skipped: BTreeSet<String>,
    masq: Masquerade,
    masq_failing: bool,
    /// udp backend: the running datapath (started at the first round that knows our IP).
    udp: Option<udp::Datapath>,
    /// udp backend: the last datapath start error (logged once).
    udp_error: Option<String>,
}

/// Runs the agent until the process is killed.
pub async fn run(cfg: Config) -> Result<(), AgentError> {
    if sysctl::enable(Path::new(sysctl::IP_FORWARD)).map_err(AgentError::Forwarding)? {
        tracing::info!("enabled net.ipv4.ip_forward");
    }
    let nl = Netlink::new().map_err(AgentError::Netlink)?;
    let client = client::client(&cfg).await?;
    let api: Api<Node> = Api::all(client);
    let wake = Arc::new(Notify::new());
    let store = spawn_reflector(api.clone(), wake.clone());
    tracing::info!(
        node = %cfg.node_name,
        server = %cfg.server,
        backend = cfg.backend.name(),
        iface = %cfg.iface,
        "waiting for the complete Node list"
    );
    store.wait_until_ready().await.map_err(AgentError::Watch)?;
    let masq = Masquerade::new(MasqConfig {
        cluster: cfg.cluster_cidr,
        no_masquerade: cfg.no_masquerade_cidrs.clone(),
        masquerade: cfg.ip_masq,
        tunnel_port: match cfg.backend {
            Backend::Vxlan => Some(vxlan::PORT),
            Backend::Udp => Some(udp::PORT),
            Backend::HostGw => None,
        },
        random_fully: true,
    });
    let mut agent = Agent {
        cfg,
        nl,
        api,
        store,
        own: OwnState::Unknown,
        skipped: BTreeSet::new(),
        masq,
        masq_failing: false,
        udp: None,
        udp_error: None,
    };
    loop {
        agent.reconcile().await;
        let _ = tokio::time::timeout(agent.cfg.resync, wake.notified()).await;
    }
}

/// Keeps a local store of all Nodes in sync in the background, poking `wake` on every change.
fn spawn_reflector(api: Api<Node>, wake: Arc<Notify>) -> Store<Node> {
    let writer = Writer::default();
    let store = writer.as_reader();
    tokio::spawn(async move {
        let mut events = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(_) => wake.notify_one(),
                Err(e) => tracing::warn!(error = %e, "Node watch failed (retrying with backoff)"),
            }
        }
    });
    store
}

impl Agent {
    /// One level-triggered round over the current Node list.
    pub async fn reconcile(&mut self) {
        let nodes: Vec<NodeInfo> = self
            .store
            .state()
            .iter()
            .map(|n| NodeInfo::from_node(n))
            .collect();
        let link = match self.nl.link_by_name(&self.cfg.iface) {
            Ok(Some(link)) => Some(link),
            Ok(None) => {
                tracing::error!(iface = %self.cfg.iface, "interface not found (retrying every resync)");
                None
            }
            Err(e) => {
                tracing::error!(iface = %self.cfg.iface, error = %e, "reading the interface failed");
                None
            }
        };
        let me = nodes.iter().find(|n| n.name == self.cfg.node_name);
        // The largest pod MTU our underlay allows, and the cluster's (the minimum published).
        let own_mtu = link.map(|l| match self.cfg.backend {
            Backend::Vxlan => l.mtu.saturating_sub(vxlan::OVERHEAD),
            Backend::HostGw => l.mtu,
            Backend::Udp => l.mtu.saturating_sub(udp::OVERHEAD),
        });
        let mtu = own_mtu.map(|m| vxlan::cluster_mtu(&nodes, &self.cfg.node_name, m));
        let state = match (me, mtu) {
            (None, _) => OwnState::NoNode,
            (Some(me), _) if me.pod_cidr.is_none() => OwnState::NoPodCidr,
            (Some(_), None) => OwnState::Unusable(format!("interface {} missing", self.cfg.iface)),
            (Some(me), Some(mtu)) => self.write_files(me, mtu),
        };
        self.log_transition(state);
        let iface_ip = link.and_then(|l| self.iface_ipv4(l.index));
        let public_ip = me.and_then(|me| me.internal_ip).or(iface_ip);
        if let Some(me) = me {
            self.publish(me, public_ip, own_mtu).await;
        }
        if let Some(link) = link {
            match self.cfg.backend {
                Backend::HostGw => self.routes(&nodes, link.index),
                Backend::Vxlan => {
                    let cidr = me.and_then(|m| m.pod_cidr);
                    if let (Some(cidr), Some(ip), Some(mtu)) = (cidr, public_ip, mtu) {
                        self.vxlan(&nodes, link, ip, cidr, mtu);
                    }
                }
                Backend::Udp => {
                    let cidr = me.and_then(|m| m.pod_cidr);
                    if let (Some(cidr), Some(ip), Some(mtu)) = (cidr, public_ip, mtu) {
                        self.udp(&nodes, ip, cidr, mtu);
                    }
                }
            }
        }
        self.iptables();
    }

    /// Reconciles the VXLAN device and its per-peer entries.
    fn vxlan(
        &mut self,
        nodes: &[NodeInfo],
        underlay: Link,
        local: Ipv4Addr,
        cidr: Ipv4Network,
        mtu: u32,
    ) {
        let spec = vxlan::device_spec(&self.cfg.node_name, local, underlay.index, mtu);
        let own = Ipv4Network::from(cidr.network());
        let vx = match vxlan::ensure_device(&mut self.nl, &spec, own) {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(device = vxlan::DEVICE, error = %e, "VXLAN device setup failed (retried next round)");
                return;
            }
        };
        let direct = if self.cfg.direct_routing {
            self.nl.ipv4_addresses(underlay.index).unwrap_or_default()
        } else {
            Vec::new()
        };
        let want = vxlan::desired(nodes, &self.cfg.node_name, vx, underlay.index, &direct);
        self.log_skipped(want.skipped.clone());
        let done = vxlan::apply_entries(&mut self.nl, vx, &want);
        if done != vxlan::Applied::default() {
            tracing::debug!(?done, peers = want.routes.len(), "vxlan reconciled");
        }
    }

    /// udp backend: (re)starts the datapath when our address changed, brings `ferry.udp` into
    /// shape (MTU, up, the podCIDR's network address /32), hands the workers the new peer table
    /// and reconciles the per-peer routes.
    fn udp(&mut self, nodes: &[NodeInfo], local: Ipv4Addr, cidr: Ipv4Network, mtu: u32) {
        if self.udp.as_ref().is_some_and(|d| d.local() != local) {
            tracing::info!(address = %local, "node address changed: restarting the udp datapath");
            self.udp = None;
        }
        if self.udp.is_none() {
            let mut started = udp::Datapath::start(local, udp::default_threads());
            if let Err(e) = &started {
                if e.is_mismatch() {
                    if let Ok(Some(l)) = self.nl.link_by_name(udp::DEVICE) {
                        tracing::warn!(device = udp::DEVICE, error = %e, "existing device does not match: recreating it");
                        let _ = self.nl.del_link(l.index);
                        started = udp::Datapath::start(local, udp::default_threads());
                    }
                }
            }
            match started {
                Ok(d) => {
                    tracing::info!(
                        device = udp::DEVICE, address = %local, port = udp::PORT,
                        threads = d.threads(), offload = d.offload(), "udp datapath attached"
                    );
                    self.udp = Some(d);
                    self.udp_error = None;
                }
                Err(e) => {
                    let msg = e.to_string();
                    if self.udp_error.as_ref() != Some(&msg) {
                        tracing::error!(error = %msg, "udp datapath failed to start (retried next round)");
                    }
                    self.udp_error = Some(msg);
                    return;
                }
            }
        }
        let index = match udp::ensure_device(&mut self.nl, mtu, Ipv4Network::from(cidr.network())) {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(device = udp::DEVICE, error = %e, "device setup failed (retried next round)");
                if matches!(e, udp::DeviceError::Missing) {
                    self.udp = None;
                }
                return;
            }
        };
        let (want, table, skipped) = udp::desired(nodes, &self.cfg.node_name, index);
        self.log_skipped(skipped);
        if let Some(d) = &self.udp {
            d.set_table(udp::Table::new(Some(cidr), &table));
        }
        let installed = match self.nl.main_routes_v4() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "listing routes failed (retried next round)");
                return;
            }
        };
        let plan = hostgw::plan(want.values().map(|p| &p.route), &installed);
        if !(plan.is_empty() && plan.conflicts.is_empty()) {
            let done = hostgw::apply(&mut self.nl, &plan, &want);
            tracing::debug!(?done, peers = want.len(), "udp routes reconciled");
        }
    }

    /// Reconciles the iptables chains; failures are logged once until they recover.
    fn iptables(&mut self) {
        match self.masq.reconcile() {
            Ok(_) => {
                if self.masq_failing {
                    tracing::info!("iptables rules in place again");
                }
                self.masq_failing = false;
            }
            Err(e) => {
                if !self.masq_failing {
                    tracing::error!(error = %e, "iptables reconciliation failed (retried every round)");
                }
                self.masq_failing = true;
            }
        }
    }

    fn log_skipped(&mut self, skipped: Vec<(String, hostgw::Skip)>) {
        let mut now_skipped = BTreeSet::new();
        for (peer, why) in skipped {
            if !self.skipped.contains(&peer) {
                tracing::warn!(peer = %peer, reason = %why, "peer skipped: no route");
            }
            now_skipped.insert(peer);
        }
        self.skipped = now_skipped;
    }

    fn log_transition(&mut self, state: OwnState) {
        if state == self.own {
            return;
        }
        match &state {
            OwnState::Unknown => {}
            OwnState::NoNode => tracing::info!(
                node = %self.cfg.node_name,
                "waiting for this node's Node object (the kubelet registers it)"
            ),
            OwnState::NoPodCidr => tracing::info!(
                node = %self.cfg.node_name,
                "waiting for spec.podCIDR (node IPAM assigns it); no CNI config written yet"
            ),
            OwnState::Unusable(why) => {
                tracing::error!(node = %self.cfg.node_name, problem = %why, "cannot serve pods")
            }
            OwnState::Ready(f) => tracing::info!(
                node = %self.cfg.node_name,
                subnet = %f.subnet,
                mtu = f.mtu,
                "node network ready"
            ),
        }
        self.own = state;
    }

    /// Writes `subnet.env`, then the conflist (each only if it changed).
    fn write_files(&self, me: &NodeInfo, mtu: u32) -> OwnState {
        let Some(cidr) = me.pod_cidr else {
            return OwnState::NoPodCidr;
        };
        // host-gw adds no header (pods get the underlay MTU), VXLAN 50 bytes; either way the
        // cluster minimum.
        let file = match NodeNetworkFile::new(self.cfg.cluster_cidr, cidr, mtu) {
            Ok(f) => NodeNetworkFile {
                ipmasq: self.cfg.ip_masq,
                ..f
            },
            Err(e) => return OwnState::Unusable(e.to_string()),
        };
        let subnet_file = self.cfg.subnet_file();
        let conflist_file = self.cfg.conflist_file();
        let conflist = subnet::conflist(&subnet_file, &self.cfg.ipam_dir());
        for (path, content) in [(&subnet_file, file.render()), (&conflist_file, conflist)] {
            match subnet::write_if_changed(path, content.as_bytes()) {
                Ok(true) => tracing::info!(path = %path.display(), "wrote"),
                Ok(false) => {}
                Err(e) => {
                    return OwnState::Unusable(format!("writing {}: {e}", path.display()));
                }
            }
        }
        OwnState::Ready(file)
    }

    fn iface_ipv4(&mut self, index: u32) -> Option<Ipv4Addr> {
        match self.nl.ipv4_addresses(index) {
            Ok(addrs) => addrs.first().map(|a| a.ip()),
            Err(e) => {
                tracing::warn!(iface = %self.cfg.iface, error = %e, "reading addresses failed");
                None
            }
        }
    }

    /// Publishes the flannel annotations on our Node (a merge patch, only when they differ).
    async fn publish(&self, me: &NodeInfo, public_ip: Option<Ipv4Addr>, mtu: Option<u32>) {
        let data = (self.cfg.backend == Backend::Vxlan)
            .then(|| vxlan::backend_data(&vxlan::vtep_mac(&self.cfg.node_name)));
        let want =
            node::desired_annotations(self.cfg.backend.name(), public_ip, data.as_deref(), mtu);
        let changes = node::annotation_changes(&me.annotations, &want);
        if changes.is_empty() {
            return;
        }
        if public_ip.is_none() {
            tracing::warn!(
                iface = %self.cfg.iface,
                "no InternalIP and no IPv4 address on the interface: public-ip not published"
            );
        }
        let patch = serde_json::json!({"metadata": {"annotations": changes}});
        match self
            .api
            .patch(&me.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => tracing::info!(annotations = ?changes, "published node annotations"),
            Err(e) => {
                tracing::warn!(error = %e, "patching our Node's annotations failed (retried next round)")
            }
        }
    }

    /// Reconciles the host-gw routes of every peer.
    fn routes(&mut self, nodes: &[NodeInfo], oif: u32) {
        let (want, skipped) = hostgw::desired_routes(nodes, &self.cfg.node_name, oif);
        self.log_skipped(skipped);
        let installed = match self.nl.main_routes_v4() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "listing routes failed (retried next round)");
                return;
            }
        };
        let plan = hostgw::plan(want.values().map(|p| &p.route), &installed);
        if plan.is_empty() && plan.conflicts.is_empty() {
            return;
        }
        let done = hostgw::apply(&mut self.nl, &plan, &want);
        tracing::debug!(?done, peers = want.len(), "routes reconciled");
    }
}
