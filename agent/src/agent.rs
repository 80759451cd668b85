//! The node agent's main loop: watch Nodes, then reconcile this node's files, its Node
//! annotations, the overlay (through the [`crate::overlay::Backend`] chosen by `--backend`:
//! VXLAN device + entries, host-gw routes, or the udp TUN datapath) and the iptables rules, on
//! every Node change and every `--resync-seconds`.
//!
//! ```text
//! start ──► ip_forward=1 ──► service reconciler (own task: crate::service::reconcile) ──► reflector(Nodes) ──► wait for the complete list ──► loop {
//!     own Node?  no ─► log "waiting for Node"        (write nothing)
//!     podCIDR?   no ─► log "waiting for podCIDR"     (write nothing)
//!                yes ─► subnet.env, then 10-ferry.conflist (only if changed)
//!     annotations differ? ─► merge patch of our Node
//!     overlay backend round ─► Report (peers served, skipped, faults, probe targets)
//!       vxlan: ferry.1 adopted/created; fdb + neighbours + routes: desired vs installed
//!       host-gw / udp: peer routes: desired vs installed (main table) ─► add / replace / delete ours
//!     iptables: FERRY-* chains vs iptables-save ─► iptables-restore when they differ
//!     Node conditions (NetworkUnavailable, FerryNetworkDegraded) ─► status patch if they changed
//!     sleep until a Node or one of our links changes (+50 ms to batch a burst), the resync
//!     period passes, or (while a fault holds) 1 s passes
//! }
//! ```
//!
//! Faults never tear anything down: a missing podCIDR, an underlay interface that vanished, a
//! tunnel port held by another socket or a failing device leave the files, routes and rules of
//! the last good round in place, set `NetworkUnavailable=True` with the reason (see
//! [`crate::health`]), log once, and are retried every second until they clear. Peers with
//! garbage annotations are skipped one by one (`FerryNetworkDegraded=True` names them); every
//! other peer is still served.
//!
//! Nothing is reconciled before the reflector holds a complete Node list, so a starting agent (or
//! one that cannot reach the API server) never mistakes "not listed yet" for "deleted": routes
//! installed by a previous run stay until a complete list says their node is gone. The reflector
//! swaps relists in atomically, so a watch restart never shows an empty cluster either.

use crate::bypass::{self, PodBypass};
use crate::config::Config;
use crate::health::{self, Degradation, Fault};
use crate::masq::{MasqConfig, Masquerade};
use crate::netlink::Netlink;
use crate::node::{self, NodeInfo};
use crate::overlay::{self, peers, vxlan, Backend};
use crate::probe::{Prober, Target, Verdict};
use crate::subnet::{self, NodeNetworkFile};
use crate::{client, linkwatch, sysctl};
use ferry_kube::watch::Reflector;
use ferry_kube::Loop;
use ipnetwork::Ipv4Network;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Retry period while a fault holds (the port is freed, the interface comes back).
const FAULT_RETRY: Duration = Duration::from_secs(1);
/// After a wake-up, wait this long so a burst of Node events makes one round.
const DEBOUNCE: Duration = Duration::from_millis(50);

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
    /// The podCIDR cannot be used or the files cannot be written.
    Unusable(Fault),
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
    /// Peers skipped in the last round, and why (logged on change).
    skipped: BTreeMap<String, String>,
    /// The fault of the last round (logged on change).
    fault: Option<Fault>,
    masq: Masquerade,
    /// The iptables error of the last round, while rules cannot be reconciled.
    masq_error: Option<String>,
    /// Which Service datapath runs (set by the Services loop).
    bypass: Arc<PodBypass>,
    /// The bridge-hook setting last applied (`Some(true)`: bypassing), to log transitions once.
    bypass_applied: Option<bool>,
    /// The overlay backend (`--backend`).
    backend: Box<dyn Backend>,
    /// Counters served on `--metrics-address`.
    metrics: Arc<crate::metrics::Metrics>,
    /// vxlan/udp: the tunnel prober (`None`: host-gw or `--probe-seconds 0`).
    prober: Option<Prober>,
}

/// Runs the agent until the process is killed.
pub async fn run(cfg: Config) -> Result<(), AgentError> {
    if sysctl::enable(Path::new(sysctl::IP_FORWARD)).map_err(AgentError::Forwarding)? {
        tracing::info!("enabled net.ipv4.ip_forward");
    }
    let nl = Netlink::new().map_err(AgentError::Netlink)?;
    let metrics = crate::metrics::Metrics::new(&cfg.node_name, cfg.backend.name());
    crate::metrics::spawn(cfg.metrics_address, metrics.clone());
    let backend = overlay::new(&cfg);
    let client = client::client(&cfg).await?;
    let api: Api<Node> = Api::all(client.clone());
    let wake = Arc::new(Notify::new());
    // Services beside the overlay: their own watches, loop and Node condition; they tell this
    // loop which proxier runs (the pod-to-pod netfilter bypass depends on it).
    let bypass = PodBypass::new(wake.clone());
    crate::service::reconcile::spawn(cfg.clone(), client, metrics.clone(), bypass.clone());
    let store = spawn_reflector(api.clone(), wake.clone());
    tracing::info!(
        node = %cfg.node_name,
        server = %cfg.server,
        backend = backend.name(),
        iface = %cfg.iface,
        "waiting for the complete Node list"
    );
    store.wait_until_ready().await.map_err(AgentError::Watch)?;
    let masq = Masquerade::new(MasqConfig {
        cluster: cfg.cluster_cidr,
        no_masquerade: cfg.no_masquerade_cidrs.clone(),
        masquerade: cfg.ip_masq,
        tunnel_port: backend.tunnel().map(|t| t.port),
        random_fully: true,
        pod_notrack: false,
    });
    let prober = match (cfg.probe, backend.tunnel()) {
        (Some(every), Some(tunnel)) => {
            match Prober::spawn(every, tunnel.probe_device, wake.clone()) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot probe peers (raw ICMP socket): no reachability condition");
                    None
                }
            }
        }
        _ => None,
    };
    let mut agent = Agent {
        cfg,
        nl,
        api,
        store,
        own: OwnState::Unknown,
        skipped: BTreeMap::new(),
        fault: None,
        masq,
        masq_error: None,
        bypass,
        bypass_applied: None,
        backend,
        metrics,
        prober,
    };
    let mut links = vec![agent.cfg.iface.clone()];
    links.extend(overlay::DEVICES.map(str::to_owned));
    if let Err(e) = linkwatch::spawn(links, wake.clone()) {
        tracing::warn!(error = %e, "cannot watch link changes (relying on the periodic resync)");
    }
    // The pod fast path: only while the pod netfilter bypass is applied (eBPF Service mode).
    let (fast_path, bypass_on, fast_bypass) = (
        agent.cfg.pod_fast_path,
        agent.cfg.pod_netfilter_bypass,
        agent.bypass.clone(),
    );
    let enabled = move || fast_path && bypass::wanted(bypass_on, fast_bypass.ebpf()) == Some(true);
    // Kept for the process's life (dropping it would stop the thread).
    let _fast_path = match crate::fastpath::spawn(
        agent.cfg.fast_path_settings(),
        enabled,
        agent.metrics.fast_path_stats(),
    ) {
        Ok(worker) => Some(worker),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the pod fast path (pods use the bridge path)");
            None
        }
    };
    let mut rounds = Loop::new(wake, agent.cfg.resync)
        .retry(FAULT_RETRY)
        .debounce(DEBOUNCE);
    loop {
        let faulty = agent.reconcile().await;
        rounds.after(faulty).await;
    }
}

/// Keeps a local store of all Nodes in sync in the background, poking `wake` on every change of
/// what the agent reads from a Node ([`NodeInfo`]): podCIDR, InternalIP, annotations, deletion.
/// An event that changes none of it (a kubelet's status heartbeat, our own condition updates)
/// wakes nobody; watch errors are logged and retried with backoff.
fn spawn_reflector(api: Api<Node>, wake: Arc<Notify>) -> Store<Node> {
    let mut seen: HashMap<String, NodeInfo> = HashMap::new();
    Reflector::new(api)
        .wake(wake)
        .wake_on_error(false)
        .name("Node watch failed (retrying with backoff)")
        .wake_if(move |event| match event {
            watcher::Event::Apply(n) | watcher::Event::InitApply(n) => {
                let info = NodeInfo::from_node(n);
                if seen.get(&info.name) == Some(&info) {
                    return false;
                }
                seen.insert(info.name.clone(), info);
                true
            }
            watcher::Event::Delete(n) => {
                seen.remove(n.metadata.name.as_deref().unwrap_or_default());
                true
            }
            watcher::Event::Init | watcher::Event::InitDone => true,
        })
        .spawn()
}

impl Agent {
    /// One level-triggered round over the current Node list. Returns true while a fault holds
    /// (the caller retries sooner).
    pub async fn reconcile(&mut self) -> bool {
        let nodes: Vec<NodeInfo> = self
            .store
            .state()
            .iter()
            .map(|n| NodeInfo::from_node(n))
            .collect();
        let mut round = Round::default();
        let link = match self.nl.link_by_name(&self.cfg.iface) {
            Ok(Some(link)) => Some(link),
            Ok(None) => {
                round.fault(Fault::InterfaceMissing(self.cfg.iface.clone()));
                None
            }
            Err(e) => {
                round.fault(Fault::Device(format!("reading {}: {e}", self.cfg.iface)));
                None
            }
        };
        let me = nodes.iter().find(|n| n.name == self.cfg.node_name);
        // The largest pod MTU our underlay allows, and the cluster's (the minimum published).
        let own_mtu = link
            .as_ref()
            .map(|l| l.mtu.saturating_sub(self.backend.overhead()));
        let mtu = own_mtu.map(|m| peers::cluster_mtu(&nodes, &self.cfg.node_name, m));
        let planned = match (me, mtu) {
            (None, _) => Some(OwnState::NoNode),
            (Some(me), _) if me.pod_cidr.is_none() => Some(OwnState::NoPodCidr),
            // The interface is gone: keep the files of the last good round.
            (Some(_), None) => None,
            (Some(me), Some(mtu)) => Some(match self.node_file(me, mtu) {
                Ok(file) => OwnState::Ready(file),
                Err(fault) => OwnState::Unusable(fault),
            }),
        };
        match &planned {
            Some(OwnState::NoPodCidr) => round.fault(Fault::NoPodCidr),
            Some(OwnState::Unusable(f)) => round.fault(f.clone()),
            _ => {}
        }
        let iface_ip = link.as_ref().and_then(|l| self.iface_ipv4(l.index));
        let public_ip = me.and_then(|me| me.internal_ip).or(iface_ip);
        if let Some(me) = me {
            self.publish(me, public_ip, own_mtu).await;
        }
        if let Some(link) = link {
            if self.backend.tunnel().is_some() && public_ip.is_none() && me.is_some() {
                round.fault(Fault::NoAddress(self.cfg.iface.clone()));
            } else {
                let view = overlay::View {
                    nodes: &nodes,
                    own: &self.cfg.node_name,
                    underlay: &link,
                    local: public_ip,
                    cidr: me.and_then(|m| m.pod_cidr),
                    mtu,
                };
                let report = self.backend.reconcile(&mut self.nl, &view);
                if let Some(stats) = self.backend.userspace_stats() {
                    self.metrics.set_udp(stats);
                }
                if let Some((dev, want)) = &report.probe {
                    self.probe_targets(&nodes, want, *dev);
                }
                round.merge(report);
            }
        }
        // The files go last, and only in a round without fault: the CNI answers "try again
        // later" until the overlay is up. Once written they stay through later faults.
        if let Some(state) = planned {
            let state = match state {
                OwnState::Ready(file) if round.fault.is_none() => match self.write_files(&file) {
                    Ok(()) => OwnState::Ready(file),
                    Err(fault) => {
                        round.fault(fault.clone());
                        OwnState::Unusable(fault)
                    }
                },
                OwnState::Ready(_) => self.own.clone(),
                other => other,
            };
            self.log_transition(state);
        }
        self.iptables();
        round.degraded.masquerade = self.masq_error.clone();
        self.log_skipped(&round.degraded.skipped);
        self.log_fault(round.fault.as_ref());
        let failed = round.fault.is_some()
            || round.degraded.failed_entries > 0
            || round.degraded.masquerade.is_some();
        self.metrics
            .record_round(round.peers, round.degraded.skipped.len(), failed);
        if let Some(me) = me {
            self.post_conditions(me, &round).await;
        }
        round.fault.is_some()
    }

    /// What the prober found for the current tunnel peers (`None`: no prober).
    fn reachability(&self) -> Option<health::Reachability> {
        let p = self.prober.as_ref()?;
        let report = p.report();
        let port = self.backend.tunnel().map_or(vxlan::PORT, |t| t.port);
        let mut r = health::Reachability {
            checksum_off: report.checksum_off.then_some(vxlan::DEVICE),
            ..health::Reachability::default()
        };
        for t in p.targets() {
            match report.verdicts.get(&t.node) {
                None => {}
                Some(Verdict::Answers) => {}
                Some(v) => r.unreachable.push((t.node.clone(), v.describe(port))),
            }
        }
        Some(r)
    }

    /// Hands the prober the peers reached through device `dev` (their routes' `oif`).
    fn probe_targets(
        &mut self,
        nodes: &[NodeInfo],
        want: &BTreeMap<Ipv4Network, peers::PeerRoute>,
        dev: u32,
    ) {
        let Some(p) = self.prober.as_mut() else {
            return;
        };
        let by_name: HashMap<&str, &NodeInfo> =
            nodes.iter().map(|n| (n.name.as_str(), n)).collect();
        let targets = want
            .iter()
            .filter(|(_, pr)| pr.route.oif == Some(dev))
            .filter_map(|(cidr, pr)| {
                let peer = by_name.get(pr.node.as_str())?;
                Some(Target {
                    node: pr.node.clone(),
                    overlay: cidr.network(),
                    underlay: peer.peer_address()?,
                })
            })
            .collect();
        p.set_targets(targets);
    }

    /// Patches our Node's conditions when they differ from this round's verdict.
    async fn post_conditions(&self, me: &NodeInfo, round: &Round) {
        let mut want =
            health::desired(self.backend.name(), round.fault.as_ref(), &round.degraded).to_vec();
        want.extend(self.reachability().as_ref().map(health::reachability));
        let current = self
            .store
            .get(&reflector::ObjectRef::new(&me.name))
            .and_then(|n| n.status.as_ref().and_then(|s| s.conditions.clone()))
            .unwrap_or_default();
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let Some(patch) = health::patch(&current, &want, &now) else {
            return;
        };
        match self
            .api
            .patch_status(&me.name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            Ok(_) => tracing::debug!(conditions = %patch, "node conditions posted"),
            Err(e) => {
                tracing::warn!(error = %e, "posting node conditions failed (retried next round)")
            }
        }
    }

    /// Reconciles the iptables chains and the bridge hook (the pod-to-pod netfilter bypass, see
    /// [`crate::bypass`]); failures are logged once until they recover.
    fn iptables(&mut self) {
        let wanted = bypass::wanted(self.cfg.pod_netfilter_bypass, self.bypass.ebpf());
        if let Some(on) = wanted {
            self.masq.set_pod_notrack(on);
            let path = Path::new(crate::sysctl::BRIDGE_NF_CALL_IPTABLES);
            match bypass::apply_bridge_hook(path, on) {
                Ok(_) if self.bypass_applied != Some(on) => {
                    tracing::info!(
                        bypass = on,
                        "pod-to-pod traffic {} netfilter (bridge-nf-call-iptables={}, NOTRACK {})",
                        if on { "skips" } else { "passes" },
                        u8::from(!on),
                        if on { "on" } else { "off" }
                    );
                    self.bypass_applied = Some(on);
                }
                Ok(_) => {}
                Err(e) if self.bypass_applied != Some(on) => {
                    tracing::warn!(error = %e, "cannot set net.bridge.bridge-nf-call-iptables: frames bridged between pods {} netfilter", if on { "still pass" } else { "do not pass" });
                    self.bypass_applied = Some(on);
                }
                Err(_) => {}
            }
        }
        match self.masq.reconcile() {
            Ok(_) => {
                if self.masq_error.is_some() {
                    tracing::info!("iptables rules in place again");
                }
                self.masq_error = None;
            }
            Err(e) => {
                if self.masq_error.is_none() {
                    tracing::error!(error = %e, "iptables reconciliation failed (retried every round)");
                }
                self.masq_error = Some(e.to_string());
            }
        }
    }

    /// Logs peers that became skipped (or changed why) and peers served again.
    fn log_skipped(&mut self, skipped: &[(String, String)]) {
        let now: BTreeMap<String, String> = skipped.iter().cloned().collect();
        for (peer, why) in &now {
            if self.skipped.get(peer) != Some(why) {
                tracing::warn!(peer = %peer, reason = %why, "peer skipped: no route");
            }
        }
        for peer in self.skipped.keys().filter(|p| !now.contains_key(*p)) {
            tracing::info!(peer = %peer, "peer no longer skipped");
        }
        self.skipped = now;
    }

    /// Logs a fault when it appears or changes, and its end.
    fn log_fault(&mut self, fault: Option<&Fault>) {
        if self.fault.as_ref() == fault {
            return;
        }
        match fault {
            Some(f) => tracing::error!(
                node = %self.cfg.node_name, reason = f.reason(), problem = %f.message(),
                "cannot serve pods (NetworkUnavailable=True; retrying every second)"
            ),
            None => tracing::info!(node = %self.cfg.node_name, "fault cleared: serving again"),
        }
        self.fault = fault.cloned();
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
            // Logged by log_fault.
            OwnState::Unusable(_) => {}
            OwnState::Ready(f) => tracing::info!(
                node = %self.cfg.node_name,
                subnet = %f.subnet,
                mtu = f.mtu,
                "node network ready"
            ),
        }
        self.own = state;
    }

    /// The node network file for our podCIDR and the cluster MTU.
    fn node_file(&self, me: &NodeInfo, mtu: u32) -> Result<NodeNetworkFile, Fault> {
        let Some(cidr) = me.pod_cidr else {
            return Err(Fault::NoPodCidr);
        };
        // host-gw adds no header (pods get the underlay MTU), VXLAN 50 bytes; either way the
        // cluster minimum.
        match NodeNetworkFile::new(self.cfg.cluster_cidr, cidr, mtu) {
            Ok(f) => Ok(NodeNetworkFile {
                ipmasq: self.cfg.ip_masq,
                ..f
            }),
            Err(e) => Err(Fault::PodCidrUnusable(e.to_string())),
        }
    }

    /// Writes `subnet.env`, then the conflist (each only if it changed).
    fn write_files(&self, file: &NodeNetworkFile) -> Result<(), Fault> {
        let subnet_file = self.cfg.subnet_file();
        let conflist_file = self.cfg.conflist_file();
        let conflist = subnet::conflist(&subnet_file, &self.cfg.ipam_dir());
        for (path, content) in [(&subnet_file, file.render()), (&conflist_file, conflist)] {
            match subnet::write_if_changed(path, content.as_bytes()) {
                Ok(true) => tracing::info!(path = %path.display(), "wrote"),
                Ok(false) => {}
                Err(e) => return Err(Fault::Files(format!("writing {}: {e}", path.display()))),
            }
        }
        Ok(())
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
        let data = self.backend.backend_data(&self.cfg.node_name);
        let want = node::desired_annotations(self.backend.name(), public_ip, data.as_deref(), mtu);
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
}

/// What one reconcile round found: the first fault, the peers served, what is degraded.
#[derive(Debug, Default)]
struct Round {
    fault: Option<Fault>,
    peers: usize,
    degraded: Degradation,
}

impl Round {
    /// Records `f` unless an earlier (more basic) fault was found this round.
    fn fault(&mut self, f: Fault) {
        self.fault.get_or_insert(f);
    }

    /// Takes in what the overlay backend's round found.
    fn merge(&mut self, report: overlay::Report) {
        if let Some(f) = report.fault {
            self.fault(f);
        }
        self.peers = report.peers;
        self.degraded.skipped.extend(
            report
                .skipped
                .iter()
                .map(|(p, why)| (p.clone(), why.to_string())),
        );
        self.degraded.skipped.sort();
        self.degraded.failed_entries += report.failed_entries;
    }
}
