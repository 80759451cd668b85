//! The pod fast path (`--pod-fast-path`): which pods and interfaces the `pod-fastpath` tc
//! programs serve, kept current by a thread (the mechanism is [`crate::bpf::PodFastPath`]).
//!
//! A packet for one of the node's pods normally crosses the bridge and a second veth, i.e. the
//! per-CPU backlog twice; the programs hand it to the pod's `eth0` with `bpf_redirect_peer`
//! instead (pod to pod: from the sender's host veth; from other nodes: from `ferry.1` or the
//! underlay interface); a pod's packet to another node's pod leaves straight by `ferry.1` or the
//! underlay (`bpf_redirect_neigh` from the sender's host veth, the same devices). See
//! `docs/agent.md`, "The pod fast path".
//!
//! Which pods: the CNI IPAM store this agent configures for `ferry-cni` (`<run-dir>/ipam`,
//! network [`crate::subnet::NETWORK_NAME`]). Each IPv4 reservation names (container id,
//! ifname); the plugin derives the host veth's name and the pod's MAC from those, so this
//! module derives them the same way ([`ferry_cni::bridge::host_veth_name`],
//! [`ferry_cni::bridge::derived_mac`]). A pod is served once its host veth exists.
//!
//! When: only while the pod netfilter bypass is applied (eBPF Service mode, see
//! [`crate::bypass`]): the fast path skips the bridge's netfilter hook and conntrack exactly
//! like the bypass does, and an iptables proxier needs both. Switching off (or the iptables
//! proxier taking over) detaches every program and empties the pod map.
//!
//! A thread reconciles on every link event of the node's namespace (a pod's veth appearing or
//! going away) and every [`RESCAN`]: it diffs the wanted entries against the map (removing
//! vanished pods first) and attaches `ferry_pod_ingress` to new host veths. The programs' tc
//! links belong to the agent process: if it exits, the kernel detaches them and the node falls
//! back to the bridge path.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_common::fastpath::{FastPathConfig, FastPathStat, PodEndpoint};
use ferry_netlink::{LinkEvents, Netlink, Received};
use ipnetwork::Ipv4Network;

use crate::bpf::{BpfError, Hook, PodFastPath};

/// Periodic rescan (link events make most changes visible at once).
pub const RESCAN: Duration = Duration::from_secs(3);
/// After a link event, further events within this time are folded into the same round.
const SETTLE: Duration = Duration::from_millis(20);
/// A failed load is retried after this long.
const LOAD_RETRY: Duration = Duration::from_secs(30);

/// What the fast path serves on this node.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The per-node bpffs directory (`--bpffs-dir`): the maps are pinned there.
    pub bpffs_dir: PathBuf,
    /// The IPAM store's data directory (the conflist's `ipam.dataDir`).
    pub ipam_dir: PathBuf,
    /// The CNI network name (the conflist's `name`).
    pub network: String,
    /// The node bridge (the conflist's `bridge`).
    pub bridge: String,
    /// The cluster network: only packets from inside it are routed into pods by the fast path.
    pub cluster: Ipv4Network,
    /// Interfaces whose ingress carries other nodes' packets to this node's pods: `ferry.1`
    /// (vxlan) and the underlay interface (host-gw, direct routing); the same (at most two) are
    /// the devices the fast path sends pods' packets to other nodes' pods out of.
    pub node_devices: Vec<String>,
}

/// One pod the IPAM store knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    /// The host-side veth's name.
    pub host_veth: String,
    /// The pod's `eth0` MAC.
    pub mac: [u8; 6],
}

/// An error reading what the fast path should serve.
#[derive(Debug, thiserror::Error)]
pub enum FastPathError {
    /// The IPAM store could not be opened or read (retried next round).
    #[error("reading the IPAM store in {}", dir.display())]
    Store {
        /// The data directory.
        dir: PathBuf,
        /// The store's error.
        #[source]
        source: ferry_cni::ipam::store::StoreError,
    },
    /// Listing the node's links failed (retried next round).
    #[error("listing links")]
    Netlink(#[source] ferry_netlink::NlError),
    /// A map or program operation failed (retried next round).
    #[error(transparent)]
    Bpf(#[from] BpfError),
}

/// The pods of the IPAM store of `network` under `ipam_dir`: IPv4 address -> host veth and MAC.
/// No store yet (no pod was ever added): none.
pub fn store_pods(
    ipam_dir: &std::path::Path,
    network: &str,
) -> Result<BTreeMap<Ipv4Addr, PodRef>, FastPathError> {
    use ferry_cni::bridge::{derived_mac, host_veth_name};
    use ferry_cni::ipam::store::Store;

    if !ipam_dir.join(network).is_dir() {
        return Ok(BTreeMap::new());
    }
    let reservations =
        Store::read_reservations(ipam_dir, network).map_err(|source| FastPathError::Store {
            dir: ipam_dir.to_owned(),
            source,
        })?;
    Ok(reservations
        .into_iter()
        .filter_map(|r| {
            let IpAddr::V4(ip) = r.ip else { return None };
            let o = r.owner;
            if o.container_id.is_empty() || o.ifname.is_empty() {
                return None;
            }
            Some((
                ip,
                PodRef {
                    host_veth: host_veth_name(network, &o.container_id, &o.ifname),
                    mac: derived_mac(&["pod", network, &o.container_id, &o.ifname]).0,
                },
            ))
        })
        .collect())
}

/// The pod map this node should have: each pod whose host veth exists (`links`: name ->
/// index), with that veth's index.
pub fn wanted_entries(
    pods: &BTreeMap<Ipv4Addr, PodRef>,
    links: &BTreeMap<String, u32>,
) -> BTreeMap<Ipv4Addr, PodEndpoint> {
    pods.iter()
        .filter_map(|(ip, p)| {
            links
                .get(&p.host_veth)
                .map(|&index| (*ip, PodEndpoint::new(index, p.mac)))
        })
        .collect()
}

/// The map changes from `current` to `wanted`: addresses to remove (gone or changed first),
/// then entries to write.
pub fn diff(
    current: &BTreeMap<Ipv4Addr, PodEndpoint>,
    wanted: &BTreeMap<Ipv4Addr, PodEndpoint>,
) -> (Vec<Ipv4Addr>, Vec<(Ipv4Addr, PodEndpoint)>) {
    let remove = current
        .keys()
        .filter(|ip| !wanted.contains_key(ip))
        .copied()
        .collect();
    let write = wanted
        .iter()
        .filter(|(ip, e)| current.get(ip) != Some(e))
        .map(|(ip, e)| (*ip, *e))
        .collect();
    (remove, write)
}

/// The fast path of one node: loaded lazily when first enabled.
#[derive(Debug)]
pub struct FastPath {
    settings: Settings,
    nl: Netlink,
    bpf: Option<PodFastPath>,
    /// When loading last failed (retried after [`LOAD_RETRY`]).
    load_failed: Option<Instant>,
    /// The last round's error, logged on change.
    last_error: Option<String>,
}

impl FastPath {
    /// A fast path for `settings`, with a netlink socket in the calling thread's namespace.
    pub fn new(settings: Settings) -> std::io::Result<Self> {
        Ok(Self {
            settings,
            nl: Netlink::new()?,
            bpf: None,
            load_failed: None,
            last_error: None,
        })
    }

    /// The loaded programs and maps, if loaded.
    pub fn bpf(&self) -> Option<&PodFastPath> {
        self.bpf.as_ref()
    }

    /// One round: serves the current pods when `enabled`, else makes sure nothing is attached
    /// and the map is empty.
    pub fn reconcile(&mut self, enabled: bool) -> Result<(), FastPathError> {
        if !enabled {
            if let Some(bpf) = self.bpf.as_mut() {
                bpf.clear()?;
            }
            return Ok(());
        }
        if self.bpf.is_none() {
            if self.load_failed.is_some_and(|t| t.elapsed() < LOAD_RETRY) {
                return Ok(());
            }
            match PodFastPath::load(&self.settings.bpffs_dir) {
                Ok(mut bpf) => {
                    // A previous agent's entries may name veths that are gone: start empty.
                    bpf.clear()?;
                    self.bpf = Some(bpf);
                    self.load_failed = None;
                }
                Err(e) => {
                    self.load_failed = Some(Instant::now());
                    return Err(e.into());
                }
            }
        }
        let Some(bpf) = self.bpf.as_mut() else {
            return Ok(());
        };
        let links = self.nl.links().map_err(FastPathError::Netlink)?;
        let by_name: BTreeMap<String, u32> =
            links.iter().map(|l| (l.name.clone(), l.index)).collect();
        let Some(bridge) = links.iter().find(|l| l.name == self.settings.bridge) else {
            // No bridge, no pods: nothing to serve.
            return bpf.clear().map_err(Into::into);
        };
        let want_node: BTreeMap<u32, &String> = self
            .settings
            .node_devices
            .iter()
            .filter_map(|n| by_name.get(n).map(|&i| (i, n)))
            .collect();
        let route: Vec<u32> = want_node.keys().copied().collect();
        let config = FastPathConfig::new(
            bridge.mac.map_or([0; 6], |m| m.0),
            bridge.mtu,
            self.settings.cluster.network(),
            self.settings.cluster.prefix(),
        )
        .with_routes(bridge.index, &route);
        if bpf.config()? != config {
            bpf.set_config(config)?;
        }
        let pods = store_pods(&self.settings.ipam_dir, &self.settings.network)?;
        let wanted = wanted_entries(&pods, &by_name);
        let (remove, write) = diff(&bpf.pods()?, &wanted);
        for ip in remove {
            bpf.remove_pod(ip)?;
        }
        // Attach before the entry exists: a packet the program sees without an entry takes the
        // normal path.
        let want_pod_links: BTreeSet<u32> = wanted.values().map(|e| e.ifindex).collect();
        for (ip, entry) in &wanted {
            let name = &pods[ip].host_veth;
            bpf.attach(Hook::Pod, entry.ifindex, name)?;
        }
        for (ip, entry) in write {
            bpf.insert_pod(ip, entry)?;
        }
        for index in bpf.attached(Hook::Pod).into_keys() {
            if !want_pod_links.contains(&index) {
                bpf.detach(Hook::Pod, index)?;
            }
        }
        for (index, name) in bpf.attached(Hook::Node) {
            if want_node.get(&index) != Some(&&name) {
                bpf.detach(Hook::Node, index)?;
            }
        }
        for (index, name) in want_node {
            bpf.attach(Hook::Node, index, name)?;
        }
        Ok(())
    }

    /// [`FastPath::reconcile`], logging a failure once until it changes or recovers.
    pub fn round(&mut self, enabled: bool) {
        match self.reconcile(enabled) {
            Ok(()) => {
                if self.last_error.take().is_some() {
                    tracing::info!("pod fast path reconciled again");
                }
            }
            Err(e) => {
                let text = format!("{:#}", anyhow_chain(&e));
                if self.last_error.as_deref() != Some(&text) {
                    tracing::warn!(error = %text, "pod fast path (retried; traffic takes the bridge path meanwhile)");
                    self.last_error = Some(text);
                }
            }
        }
    }

    /// The counters, once loaded.
    pub fn stats(&self) -> Option<[u64; FastPathStat::COUNT as usize]> {
        self.bpf.as_ref().and_then(|b| b.stats().ok())
    }
}

/// An error with its causes, `: `-separated.
fn anyhow_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Shared counters of the fast path (the metrics endpoint reads them).
pub type SharedStats = Arc<Mutex<Option<[u64; FastPathStat::COUNT as usize]>>>;

/// The running fast-path thread; dropping it stops the thread, which then detaches everything
/// and empties the pod map.
#[derive(Debug)]
pub struct Worker {
    stop: Arc<AtomicBool>,
    wake: mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    /// Makes the thread run a round now (e.g. after `enabled` changed).
    pub fn poke(&self) {
        let _ = self.wake.send(());
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.wake.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the fast-path thread in the calling thread's network namespace: a link-event
/// subscription wakes it at once, and it rescans every [`RESCAN`] anyway. `enabled` is asked
/// each round. The counters go to `stats` after each round.
pub fn spawn(
    settings: Settings,
    enabled: impl Fn() -> bool + Send + 'static,
    stats: SharedStats,
) -> std::io::Result<Worker> {
    let mut fast = FastPath::new(settings)?;
    let (tx, rx) = mpsc::channel::<()>();
    let wake = tx.clone();
    match LinkEvents::subscribe() {
        Ok(mut events) => {
            std::thread::Builder::new()
                .name("ferry-fastpath-events".into())
                .spawn(move || loop {
                    match events.recv() {
                        Ok(Received::Events(evs)) if evs.is_empty() => {}
                        Ok(_) => {
                            if tx.send(()).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "pod fast path: link watch ended (rescanning every few seconds)");
                            return;
                        }
                    }
                })?;
        }
        Err(e) => {
            tracing::warn!(error = %e, "pod fast path: cannot watch links (rescanning every few seconds)");
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let thread = std::thread::Builder::new()
        .name("ferry-fastpath".into())
        .spawn(move || loop {
            let stopped = stopping.load(Ordering::SeqCst);
            fast.round(!stopped && enabled());
            *stats.lock().unwrap_or_else(|e| e.into_inner()) = fast.stats();
            if stopped {
                return;
            }
            if rx.recv_timeout(RESCAN).is_ok() {
                std::thread::sleep(SETTLE);
                while rx.try_recv().is_ok() {}
            }
        })?;
    Ok(Worker {
        stop,
        wake,
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(veth: &str, last: u8) -> PodRef {
        PodRef {
            host_veth: veth.to_owned(),
            mac: [2, 0, 0, 0, 0, last],
        }
    }

    #[test]
    fn only_pods_with_a_host_veth_are_wanted() {
        let pods = BTreeMap::from([
            (Ipv4Addr::new(10, 244, 1, 2), pod("vethA", 2)),
            (Ipv4Addr::new(10, 244, 1, 3), pod("vethB", 3)),
        ]);
        let links = BTreeMap::from([("vethA".to_owned(), 7), ("ferry0".to_owned(), 3)]);
        let wanted = wanted_entries(&pods, &links);
        assert_eq!(
            wanted,
            BTreeMap::from([(
                Ipv4Addr::new(10, 244, 1, 2),
                PodEndpoint::new(7, [2, 0, 0, 0, 0, 2])
            )])
        );
    }

    #[test]
    fn diff_removes_gone_and_rewrites_changed() {
        let a = Ipv4Addr::new(10, 244, 1, 2);
        let b = Ipv4Addr::new(10, 244, 1, 3);
        let c = Ipv4Addr::new(10, 244, 1, 4);
        let current = BTreeMap::from([
            (a, PodEndpoint::new(7, [2; 6])),
            (b, PodEndpoint::new(8, [3; 6])),
        ]);
        let wanted = BTreeMap::from([
            (a, PodEndpoint::new(9, [2; 6])),
            (c, PodEndpoint::new(10, [4; 6])),
        ]);
        let (remove, write) = diff(&current, &wanted);
        assert_eq!(remove, [b]);
        assert_eq!(
            write,
            [
                (a, PodEndpoint::new(9, [2; 6])),
                (c, PodEndpoint::new(10, [4; 6]))
            ]
        );
        let (remove, write) = diff(&wanted, &wanted);
        assert!(remove.is_empty() && write.is_empty());
    }

    #[test]
    fn a_missing_store_means_no_pods() {
        let dir = tempfile::tempdir().unwrap();
        assert!(store_pods(dir.path(), "ferry").unwrap().is_empty());
        assert!(!dir.path().join("ferry").exists(), "nothing created");
    }
}
