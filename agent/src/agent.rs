//! The node agent's main loop: watch Nodes, then reconcile this node's files, its Node
//! annotations and the host-gw routes, on every Node change and every `--resync-seconds`.
//!
//! ```text
//! start ──► ip_forward=1 ──► reflector(Nodes) ──► wait for the complete list ──► loop {
//!     own Node?  no ─► log "waiting for Node"        (write nothing)
//!     podCIDR?   no ─► log "waiting for podCIDR"     (write nothing)
//!                yes ─► subnet.env, then 10-ferry.conflist (only if changed)
//!     annotations differ? ─► merge patch of our Node
//!     routes: desired (all peers) vs installed (main table) ─► add / replace / delete ours
//!     sleep until a Node changes or the resync period passes
//! }
//! ```
//!
//! Nothing is reconciled before the reflector holds a complete Node list, so a starting agent (or
//! one that cannot reach the API server) never mistakes "not listed yet" for "deleted": routes
//! installed by a previous run stay until a complete list says their node is gone. The reflector
//! swaps relists in atomically, so a watch restart never shows an empty cluster either.

use crate::config::Config;
use crate::netlink::Netlink;
use crate::node::{self, NodeInfo};
use crate::subnet::{self, NodeNetworkFile};
use crate::{client, hostgw, sysctl};
use futures::StreamExt as _;
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
    let mut agent = Agent {
        cfg,
        nl,
        api,
        store,
        own: OwnState::Unknown,
        skipped: BTreeSet::new(),
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
        let state = match (me, link) {
            (None, _) => OwnState::NoNode,
            (Some(me), _) if me.pod_cidr.is_none() => OwnState::NoPodCidr,
            (Some(_), None) => OwnState::Unusable(format!("interface {} missing", self.cfg.iface)),
            (Some(me), Some(link)) => self.write_files(me, link.mtu),
        };
        self.log_transition(state);
        if let Some(me) = me {
            let iface_ip = link.and_then(|l| self.iface_ipv4(l.index));
            self.publish(me, me.internal_ip.or(iface_ip)).await;
        }
        if let Some(link) = link {
            self.routes(&nodes, link.index);
        }
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
        // host-gw adds no header: pods get the underlay MTU.
        let file = match NodeNetworkFile::new(self.cfg.cluster_cidr, cidr, mtu) {
            Ok(f) => f,
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
    async fn publish(&self, me: &NodeInfo, public_ip: Option<Ipv4Addr>) {
        let want = node::desired_annotations(self.cfg.backend.name(), public_ip);
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
        let mut now_skipped = BTreeSet::new();
        for (peer, why) in skipped {
            if !self.skipped.contains(&peer) {
                tracing::warn!(peer = %peer, reason = %why, "peer skipped: no route");
            }
            now_skipped.insert(peer);
        }
        self.skipped = now_skipped;
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
