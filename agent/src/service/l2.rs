//! L2 announcement of LoadBalancer addresses (MetalLB's L2 mode): for each
//! `status.loadBalancer.ingress[].ip` of a `type: LoadBalancer` Service, exactly one node answers
//! ARP for it on the underlay, so a client on that link sends the Service's traffic to that node,
//! whose proxier translates it.
//!
//! - **Who**: the owner of an address is, among the Ready nodes whose announcer is alive, the one
//!   with the highest rendezvous (highest-random-weight) hash of (address, node name), [`owner`].
//!   Every agent computes it alike from the same Node objects and announcer Leases, with no
//!   coordination; when the owner's Node goes NotReady (or is deleted), or its agent stops
//!   renewing its Lease (`kube-node-lease/ferry-l2-<node>`, [`ferry_kube::lease`]; judged on each
//!   agent's own clock, [`alive_announcers`]), only its addresses move, each to its next node by
//!   hash. The addresses of an
//!   `externalTrafficPolicy: Local` Service are owned among the nodes with a ready endpoint of it
//!   only (any other would drop the traffic).
//! - **How**: an [`Announcer`] holds an `AF_PACKET` socket bound to the underlay interface and
//!   ARP. It answers ARP requests for the addresses it owns with the interface's MAC (no address
//!   is added to the interface, so the kernel neither answers nor routes for them), and sends a
//!   gratuitous ARP (twice, one second apart) for each address it newly owns, which moves the
//!   neighbour entries of hosts that had cached the previous owner.
//! - The Service, EndpointSlice, Node and Lease watches and the Lease heartbeat are this module's
//!   own ([`spawn`]); the announcer runs on its own thread (blocking `recv` with a short timeout).

use crate::config::{Config, ProxyMode};
use ferry_kube::lease;
use ferry_kube::watch::{self, Reflector};
use ferry_kube::Loop;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The label naming an EndpointSlice's Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The ARP ethertype.
const ETH_P_ARP: u16 = 0x0806;
/// Ethernet header (14) + ARP for IPv4 over Ethernet (28), padded to the 60-byte minimum frame.
const FRAME_LEN: usize = 60;
/// How long a `recv` waits before the announcer looks at its address set again.
const POLL: Duration = Duration::from_millis(100);
/// When the second gratuitous ARP of a newly owned address is sent.
const REGARP_AFTER: Duration = Duration::from_secs(1);

/// The rendezvous weight of `node` for `ip`: a 64-bit FNV-1a hash of the address bytes and the
/// name, finished with a murmur3 mixer (fixed here, so every agent build computes the same).
pub fn weight(ip: Ipv4Addr, node: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ip.octets().iter().chain(&[0u8]).chain(node.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    ferry_common::nat::fmix64(h)
}

/// The node that announces `ip`: the one of `nodes` with the highest [`weight`] (ties, which
/// need a 64-bit collision, go to the smaller name). `None` without nodes.
pub fn owner<S: AsRef<str>>(ip: Ipv4Addr, nodes: &[S]) -> Option<&str> {
    nodes
        .iter()
        .map(AsRef::as_ref)
        .max_by(|a, b| weight(ip, a).cmp(&weight(ip, b)).then_with(|| b.cmp(a)))
}

/// The nodes that may announce: Ready (`True`) and not being deleted, sorted by name.
pub fn eligible_nodes(nodes: &[Arc<Node>]) -> Vec<String> {
    let mut names: Vec<String> = nodes
        .iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none())
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    names.sort();
    names
}

/// Whether `svc`'s ingress addresses are ours to announce: a `type: LoadBalancer` Service
/// without `spec.loadBalancerClass` (a class names another implementation, e.g. MetalLB or a
/// cloud's, which announces its own addresses) and not handed to another proxy
/// (`service.kubernetes.io/service-proxy-name`).
fn announced(svc: &Service) -> bool {
    let ours = svc.spec.as_ref().is_some_and(|sp| {
        sp.type_.as_deref() == Some("LoadBalancer") && sp.load_balancer_class.is_none()
    });
    let other_proxy = svc
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(crate::service::table::SERVICE_PROXY_NAME_LABEL));
    ours && !other_proxy
}

/// The IPv4 ingress addresses of the `type: LoadBalancer` Services this agent announces (see
/// [`announced`]; externalIPs are not announced: whoever sets them routes them).
pub fn lb_addresses(services: &[Arc<Service>]) -> BTreeSet<Ipv4Addr> {
    services
        .iter()
        .filter(|s| announced(s))
        .filter_map(|s| s.status.as_ref()?.load_balancer.as_ref()?.ingress.as_ref())
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

/// The nodes with a ready endpoint of `svc` (from its EndpointSlices; an endpoint whose `ready`
/// is unset counts as ready, as the API defines it).
fn endpoint_nodes(svc: &Service, slices: &[Arc<EndpointSlice>]) -> BTreeSet<String> {
    let ns = svc.metadata.namespace.as_deref().unwrap_or_default();
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    slices
        .iter()
        .filter(|s| {
            s.metadata.namespace.as_deref().unwrap_or_default() == ns
                && s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .is_some_and(|n| n == name)
        })
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .filter_map(|e| e.node_name.clone())
        .collect()
}

/// The addresses node `me` announces (pure: the same inputs give every agent the same split),
/// among the Ready nodes whose announcer is `alive` (its Lease fresh). An address of an
/// `externalTrafficPolicy: Local` Service is announced only by a node with a ready endpoint of it
/// (MetalLB does the same: another node would drop the traffic), none if no such node has one.
pub fn owned_by(
    me: &str,
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    nodes: &[Arc<Node>],
    alive: &BTreeSet<String>,
) -> BTreeSet<Ipv4Addr> {
    let eligible: Vec<String> = eligible_nodes(nodes)
        .into_iter()
        .filter(|n| alive.contains(n))
        .collect();
    let mut owned = BTreeSet::new();
    for svc in services {
        let ips = lb_addresses(std::slice::from_ref(svc));
        if ips.is_empty() {
            continue;
        }
        let local = svc
            .spec
            .as_ref()
            .is_some_and(|s| s.external_traffic_policy.as_deref() == Some("Local"));
        let candidates: Vec<String> = if local {
            let with = endpoint_nodes(svc, slices);
            eligible
                .iter()
                .filter(|n| with.contains(*n))
                .cloned()
                .collect()
        } else {
            eligible.clone()
        };
        owned.extend(
            ips.into_iter()
                .filter(|ip| owner(*ip, &candidates) == Some(me)),
        );
    }
    owned
}

/// What the announcer thread and its owner share.
#[derive(Debug, Default)]
struct Shared {
    ips: Mutex<BTreeSet<Ipv4Addr>>,
    stop: AtomicBool,
}

/// Answers ARP for a set of addresses on one interface, from its own thread; stopped (and its
/// socket closed) on drop.
#[derive(Debug)]
pub struct Announcer {
    shared: Arc<Shared>,
    mac: Mac,
    thread: Option<JoinHandle<()>>,
}

impl Announcer {
    /// Opens the ARP socket on `iface` of the calling thread's network namespace and starts the
    /// thread (announcing nothing until [`Announcer::set`]).
    pub fn start(iface: &str) -> io::Result<Announcer> {
        let fd = ferry_sys::net::packet_socket_for(iface, ETH_P_ARP)?;
        let mac = ferry_sys::net::packet_hw_addr(fd.as_fd())?;
        ferry_sys::net::set_recv_timeout(fd.as_fd(), POLL)?;
        let shared = Arc::new(Shared::default());
        let sh = shared.clone();
        let name = iface.to_owned();
        let thread = std::thread::Builder::new()
            .name("l2-announce".into())
            .spawn(move || serve(&fd, mac, &sh, &name))?;
        Ok(Announcer {
            shared,
            mac,
            thread: Some(thread),
        })
    }

    /// The interface's MAC, which the announcer answers with.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Announces exactly `ips` from now on (newly added ones get gratuitous ARPs).
    pub fn set(&self, ips: BTreeSet<Ipv4Addr>) {
        if let Ok(mut cur) = self.shared.ips.lock() {
            *cur = ips;
        }
    }

    /// The addresses announced now.
    pub fn addresses(&self) -> BTreeSet<Ipv4Addr> {
        self.shared
            .ips
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The announcer thread: answers requests, sends gratuitous ARPs for new addresses.
fn serve(fd: &OwnedFd, mac: Mac, shared: &Shared, iface: &str) {
    let mut announced: BTreeSet<Ipv4Addr> = BTreeSet::new();
    // Addresses whose second gratuitous ARP is due at the given time.
    let mut regarp: BTreeMap<Ipv4Addr, Instant> = BTreeMap::new();
    let mut buf = [0u8; 2048];
    let mut last_error: Option<io::ErrorKind> = None;
    while !shared.stop.load(Ordering::SeqCst) {
        let ips = shared.ips.lock().map(|s| s.clone()).unwrap_or_default();
        for ip in ips.difference(&announced) {
            tracing::info!(%ip, iface, "L2: announcing (gratuitous ARP)");
            send_frame(fd, &gratuitous(mac, *ip), iface, &mut last_error);
            regarp.insert(*ip, Instant::now() + REGARP_AFTER);
        }
        for ip in announced.difference(&ips) {
            tracing::info!(%ip, iface, "L2: no longer announcing");
        }
        regarp.retain(|ip, due| {
            if !ips.contains(ip) {
                return false;
            }
            if Instant::now() < *due {
                return true;
            }
            send_frame(fd, &gratuitous(mac, *ip), iface, &mut last_error);
            false
        });
        announced = ips;
        let n = match ferry_sys::net::recv(fd.as_fd(), &mut buf, 0) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                if last_error != Some(e.kind()) {
                    tracing::warn!(iface, error = %e, "L2: receiving ARP failed");
                    last_error = Some(e.kind());
                }
                std::thread::sleep(POLL);
                continue;
            }
        };
        // The set as of now, not as of the last loop: a request that arrives after `set` is
        // answered by the new owner set (never for an address just given up).
        let current = shared.ips.lock().map(|s| s.clone()).unwrap_or_default();
        if let Some(reply) = answer(&buf[..n.min(buf.len())], mac, &current) {
            send_frame(fd, &reply, iface, &mut last_error);
        }
    }
}

fn send_frame(fd: &OwnedFd, frame: &[u8], iface: &str, last_error: &mut Option<io::ErrorKind>) {
    if let Err(e) = ferry_sys::net::send(fd.as_fd(), frame, 0) {
        if *last_error != Some(e.kind()) {
            tracing::warn!(iface, error = %e, "L2: sending ARP failed");
            *last_error = Some(e.kind());
        }
    }
}

/// A MAC address.
type Mac = [u8; 6];
const BROADCAST: Mac = [0xff; 6];
/// ARP operation codes.
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
/// The fixed header of ARP for IPv4 over Ethernet: htype 1, ptype 0x0800, hlen 6, plen 4.
const ARP_ETH_IPV4: [u8; 6] = [0, 1, 0x08, 0x00, 6, 4];
/// Offset of the ARP message in an (untagged) Ethernet frame.
const ARP_AT: usize = 14;

/// An Ethernet + ARP (IPv4 over Ethernet, RFC 826) frame, padded to 60 bytes.
fn arp_frame(eth_dst: Mac, op: u16, sha: Mac, spa: Ipv4Addr, tha: Mac, tpa: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(FRAME_LEN);
    f.extend_from_slice(&eth_dst);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&ARP_ETH_IPV4);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa.octets());
    f.resize(FRAME_LEN, 0);
    f
}

/// A gratuitous ARP for `ip`: a broadcast request with sender = target = `ip` (what Linux's
/// `arping -U` and MetalLB send; receivers that have `ip` cached update it).
pub fn gratuitous(mac: Mac, ip: Ipv4Addr) -> Vec<u8> {
    arp_frame(BROADCAST, ARP_REQUEST, mac, ip, [0; 6], ip)
}

/// The parsed fields of an ARP message for IPv4 over Ethernet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Arp {
    eth_src: Mac,
    op: u16,
    sha: Mac,
    spa: Ipv4Addr,
    tpa: Ipv4Addr,
}

fn mac_at(b: &[u8], at: usize) -> Option<Mac> {
    b.get(at..at + 6)?.try_into().ok()
}

fn ip_at(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let o: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(Ipv4Addr::from(o))
}

/// `frame` as an ARP message for IPv4 over Ethernet; `None` for anything else or truncated.
fn parse_arp(frame: &[u8]) -> Option<Arp> {
    if frame.get(12..14)? != ETH_P_ARP.to_be_bytes()
        || frame.get(ARP_AT..ARP_AT + 6)? != ARP_ETH_IPV4
    {
        return None;
    }
    let op: [u8; 2] = frame.get(ARP_AT + 6..ARP_AT + 8)?.try_into().ok()?;
    Some(Arp {
        eth_src: mac_at(frame, 6)?,
        op: u16::from_be_bytes(op),
        sha: mac_at(frame, ARP_AT + 8)?,
        spa: ip_at(frame, ARP_AT + 14)?,
        tpa: ip_at(frame, ARP_AT + 24)?,
    })
}

/// The reply to `frame` if it is an ARP request (IPv4 over Ethernet) from another host for one
/// of `ips`; `None` for anything else (replies, gratuitous ARPs, our own frames, truncated or
/// malformed frames).
pub fn answer(frame: &[u8], mac: Mac, ips: &BTreeSet<Ipv4Addr>) -> Option<Vec<u8>> {
    let arp = parse_arp(frame)?;
    if arp.op != ARP_REQUEST
        || arp.sha == mac
        || arp.eth_src == mac
        || arp.spa == arp.tpa
        || !ips.contains(&arp.tpa)
    {
        return None;
    }
    Some(arp_frame(
        arp.sha, ARP_REPLY, mac, arp.tpa, arp.sha, arp.spa,
    ))
}

/// Starts the announcer task of this agent: its own Service, EndpointSlice, Node and Lease
/// watches, its announcer Lease's heartbeat, the owned set recomputed on every change (and every
/// second, so an expired Lease is noticed), one [`Announcer`] on `--iface`. Not started with
/// `--service-proxy off` (nobody would translate the addresses; the node then never renews an
/// announcer Lease, so no address is given to it).
pub fn spawn(cfg: &Config, client: kube::Client) {
    if cfg.service_proxy == ProxyMode::Off {
        return;
    }
    let iface = cfg.iface.clone();
    let me = cfg.node_name.clone();
    let duration = cfg.l2_lease;
    tokio::spawn(async move {
        if let Err(e) = run(client, &iface, &me, duration).await {
            tracing::error!(error = %e, "L2 announcement stopped");
        }
    });
}

/// How often the announcer Lease is renewed: five times per duration.
pub fn renew_interval(duration: Duration) -> Duration {
    duration / 5
}

async fn run(
    client: kube::Client,
    iface: &str,
    me: &str,
    duration: Duration,
) -> anyhow::Result<()> {
    let wake = Arc::new(Notify::new());
    let services = Reflector::new(Api::<Service>::all(client.clone()))
        .wake(wake.clone())
        .name("Service watch (L2) failed (retrying with backoff)")
        .spawn();
    let slices = Reflector::new(Api::<EndpointSlice>::all(client.clone()))
        .wake(wake.clone())
        .name("EndpointSlice watch (L2) failed (retrying with backoff)")
        .spawn();
    let nodes = Reflector::new(Api::<Node>::all(client.clone()))
        .wake(wake.clone())
        .name("Node watch (L2) failed (retrying with backoff)")
        .spawn();
    let lease_api: Api<Lease> = Api::namespaced(client, lease::NAMESPACE);
    let (label, value) = lease::ANNOUNCER_LABEL;
    let leases = Reflector::new(lease_api.clone())
        .labels(&format!("{label}={value}"))
        .wake(wake.clone())
        .name("Lease watch (L2) failed (retrying with backoff)")
        .spawn();
    watch::ready(&services).await?;
    watch::ready(&slices).await?;
    watch::ready(&nodes).await?;
    watch::ready(&leases).await?;
    let renewed: lease::Renewed = Arc::default();
    // The heartbeat of this node's Node (by uid: the Lease is owned by it, so a Node recreated
    // with another uid gets a new heartbeat); aborted when dropped.
    let mut heartbeat: Option<(String, AbortOnDrop)> = None;
    let mut freshness = lease::Freshness::default();
    let mut announcer: Option<Announcer> = None;
    let mut last: BTreeSet<Ipv4Addr> = BTreeSet::new();
    let mut healthy = false;
    let mut socket_error: Option<String> = None;
    let mut lp = Loop::new(wake, Duration::from_secs(1));
    loop {
        // The ARP socket first: the heartbeat says this node answers, so it starts only once
        // the node can.
        if announcer.is_none() {
            match Announcer::start(iface) {
                Ok(a) => {
                    announcer = Some(a);
                    socket_error = None;
                }
                Err(e) => {
                    // Logged when the error changes (a missing interface is retried every second).
                    let text = e.to_string();
                    if socket_error.as_ref() != Some(&text) {
                        tracing::warn!(iface, error = %text, "L2: opening the ARP socket failed (retrying)");
                        socket_error = Some(text);
                    }
                }
            }
        }
        let all_nodes = nodes.state();
        let uid = all_nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(me))
            .and_then(|n| n.metadata.uid.clone());
        if heartbeat.as_ref().map(|(u, _)| u) != uid.as_ref() {
            // Absent, or recreated: the old heartbeat stops, its renewals no longer count.
            heartbeat = None;
            *renewed.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        if let (None, Some(uid), Some(_)) = (&heartbeat, uid, &announcer) {
            let hb = lease::Heartbeat {
                name: lease::announcer_lease(me),
                holder: me.to_owned(),
                duration,
                interval: renew_interval(duration),
                node: Some((me.to_owned(), uid.clone())),
                labels: [(label.to_owned(), value.to_owned())].into(),
            };
            let task = tokio::spawn(lease::heartbeat(
                lease_api.clone(),
                hb,
                Some(renewed.clone()),
            ));
            heartbeat = Some((uid, AbortOnDrop(task)));
        }
        let now = Instant::now();
        freshness.observe(&leases.state(), now);
        let self_fresh = lease::self_fresh(
            *renewed.lock().unwrap_or_else(|e| e.into_inner()),
            duration,
            now,
        );
        let (alive, ok) = alive_announcers(&freshness.fresh(now), me, self_fresh);
        if ok != healthy {
            if ok {
                tracing::info!("L2: this node's announcer Lease is renewed and seen");
            } else {
                tracing::warn!(
                    addresses = ?last,
                    "L2: this node's announcer Lease is not renewed or not seen (the API or the \
                     Lease watch fails): keeping the addresses announced, taking no others"
                );
            }
            healthy = ok;
        }
        // Out of touch with the API, nothing here is current: keep what was announced (in an
        // API outage every agent does the same, so the addresses stay answered once each).
        let owned = if ok {
            owned_by(me, &services.state(), &slices.state(), &all_nodes, &alive)
        } else {
            last.clone()
        };
        if owned != last {
            tracing::info!(iface, addresses = ?owned, announcers = ?alive, "L2: this node announces");
            last = owned.clone();
        }
        if let Some(a) = &announcer {
            a.set(owned);
        }
        lp.after(announcer.is_none()).await;
    }
}

/// A task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The nodes whose announcer is alive, from the fresh announcer Leases (name -> holder; a Lease
/// counts for node N only when it is `ferry-l2-N` held by N), and whether this node is among
/// them by its own judgement: its last successful renewal recent enough (`self_fresh`) *and* its
/// own Lease fresh in its own watch, so a node whose watch stalls does not take the addresses of
/// nodes it merely stopped seeing.
pub fn alive_announcers(
    fresh_leases: &BTreeMap<String, String>,
    me: &str,
    self_fresh: bool,
) -> (BTreeSet<String>, bool) {
    let mut alive: BTreeSet<String> = fresh_leases
        .iter()
        .filter_map(|(l, holder)| lease::announcer_node(l).filter(|n| *n == holder))
        .map(str::to_owned)
        .collect();
    let healthy = self_fresh && alive.contains(me);
    if !healthy {
        alive.remove(me);
    }
    (alive, healthy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ready: &str) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "status": {"conditions": [{"type": "Ready", "status": ready}]},
            }))
            .unwrap(),
        )
    }

    fn svc(ty: &str, ips: &[&str]) -> Arc<Service> {
        let ingress: Vec<_> = ips.iter().map(|i| serde_json::json!({"ip": i})).collect();
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "s", "namespace": "default"},
                "spec": {"type": ty},
                "status": {"loadBalancer": {"ingress": ingress}},
            }))
            .unwrap(),
        )
    }

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 99, 0, last)
    }

    #[test]
    fn owner_is_one_node_spread_and_stable() {
        let nodes: Vec<String> = (1..=4).map(|i| format!("node-{i}")).collect();
        assert_eq!(owner(ip(1), &Vec::<String>::new()), None);
        let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
        for last in 0..=255u8 {
            let o = owner(ip(last), &nodes).unwrap();
            // Input order does not matter.
            let mut rev = nodes.clone();
            rev.reverse();
            assert_eq!(owner(ip(last), &rev), Some(o));
            *per_node.entry(o).or_default() += 1;
        }
        // 256 addresses over 4 nodes: every node gets a fair share (64 expected).
        assert_eq!(per_node.len(), 4, "{per_node:?}");
        for (n, c) in &per_node {
            assert!((40..=90).contains(c), "{n}: {c} {per_node:?}");
        }
        // Pinned: the hash is ours, so every agent build agrees.
        assert_eq!(weight(ip(200), "node-1"), 11_799_953_620_692_785_965);
        assert_ne!(weight(ip(200), "node-1"), weight(ip(200), "node-2"));
        assert_ne!(weight(ip(200), "node-1"), weight(ip(201), "node-1"));
    }

    #[test]
    fn announces_only_our_load_balancer_addresses() {
        let svc = |name: &str, extra_spec: serde_json::Value, labels: serde_json::Value| {
            let mut spec = serde_json::json!({"type": "LoadBalancer"});
            spec.as_object_mut()
                .unwrap()
                .extend(extra_spec.as_object().unwrap().clone());
            let ip = format!("10.99.0.{}", 192 + name.len());
            Arc::new(
                serde_json::from_value::<Service>(serde_json::json!({
                    "metadata": {"name": name, "namespace": "default", "labels": labels},
                    "spec": spec,
                    "status": {"loadBalancer": {"ingress": [{"ip": ip}]}},
                }))
                .unwrap(),
            )
        };
        let none = serde_json::json!({});
        let all = [
            svc("a", none.clone(), none.clone()),
            svc(
                "bb",
                serde_json::json!({"loadBalancerClass": "metallb.io/l2"}),
                none.clone(),
            ),
            svc(
                "ccc",
                none.clone(),
                serde_json::json!({crate::service::table::SERVICE_PROXY_NAME_LABEL: "other"}),
            ),
            svc("dddd", serde_json::json!({"type": "NodePort"}), none),
        ];
        assert_eq!(
            lb_addresses(&all).into_iter().collect::<Vec<_>>(),
            vec![Ipv4Addr::new(10, 99, 0, 193)]
        );
    }

    #[test]
    fn only_the_lost_nodes_addresses_move() {
        let all: Vec<String> = (1..=5).map(|i| format!("node-{i}")).collect();
        let without: Vec<String> = all.iter().filter(|n| *n != "node-3").cloned().collect();
        let mut moved = 0;
        for last in 0..=255u8 {
            let before = owner(ip(last), &all).unwrap();
            let after = owner(ip(last), &without).unwrap();
            if before == "node-3" {
                moved += 1;
                assert_ne!(after, "node-3");
            } else {
                assert_eq!(before, after, "{}", ip(last));
            }
        }
        assert!(moved > 20, "node-3 owned only {moved} of 256");
    }

    #[test]
    fn owned_set_follows_readiness_and_service_type() {
        let services = vec![
            svc("LoadBalancer", &["10.99.0.192", "10.99.0.193", "not-an-ip"]),
            svc("ClusterIP", &["10.99.0.250"]),
        ];
        let nodes = vec![node("a", "True"), node("b", "True"), node("c", "False")];
        let a = owned_by("a", &services, &[], &nodes, &every(&nodes));
        let b = owned_by("b", &services, &[], &nodes, &every(&nodes));
        assert!(
            owned_by("c", &services, &[], &nodes, &every(&nodes)).is_empty(),
            "NotReady announces nothing"
        );
        assert!(a.is_disjoint(&b));
        let both: BTreeSet<Ipv4Addr> = a.union(&b).copied().collect();
        assert_eq!(both, [ip(192), ip(193)].into());
        // a goes NotReady: b announces everything.
        let nodes = vec![node("a", "Unknown"), node("b", "True"), node("c", "False")];
        assert_eq!(owned_by("b", &services, &[], &nodes, &every(&nodes)), both);
        assert!(owned_by("a", &services, &[], &nodes, &every(&nodes)).is_empty());
        assert_eq!(
            eligible_nodes(&[node("z", "True"), node("y", "True")]),
            ["y", "z"]
        );
    }

    /// Every node's announcer alive.
    fn every(nodes: &[Arc<Node>]) -> BTreeSet<String> {
        nodes
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect()
    }

    #[test]
    fn a_ready_node_whose_announcer_died_loses_its_addresses() {
        let services = vec![svc(
            "LoadBalancer",
            &["10.99.0.192", "10.99.0.193", "10.99.0.194", "10.99.0.195"],
        )];
        let nodes = vec![node("a", "True"), node("b", "True")];
        let a = owned_by("a", &services, &[], &nodes, &every(&nodes));
        assert!(!a.is_empty(), "a owns some of four addresses");
        // a's announcer Lease expired; its Node is still Ready.
        let alive: BTreeSet<String> = ["b".to_owned()].into();
        assert!(owned_by("a", &services, &[], &nodes, &alive).is_empty());
        assert_eq!(
            owned_by("b", &services, &[], &nodes, &alive).len(),
            4,
            "b takes them all"
        );
        // An alive announcer on a NotReady node owns nothing either.
        let nodes = vec![node("a", "True"), node("b", "False")];
        assert!(owned_by("b", &services, &[], &nodes, &every(&nodes)).is_empty());
    }

    #[test]
    fn announcers_are_alive_by_lease_and_holder_and_this_node_by_its_renewals_and_its_watch() {
        let fresh: BTreeMap<String, String> = [
            ("ferry-l2-a", "a"),
            ("ferry-l2-me", "me"),
            ("b", "b"),
            ("ferry-l2-c", "x"),
            ("ferry-l2-", ""),
        ]
        .map(|(l, h)| (l.to_owned(), h.to_owned()))
        .into();
        let set = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
        // The kubelet's Lease b names no announcer; ferry-l2-c held by someone else counts for
        // nobody.
        assert_eq!(
            alive_announcers(&fresh, "me", true),
            (set(&["a", "me"]), true)
        );
        // Our renewals failing: not healthy, whatever the watch shows.
        assert_eq!(alive_announcers(&fresh, "me", false), (set(&["a"]), false));
        // Renewals succeed but our watch does not show our Lease (it stalls): not healthy.
        let mut stale = fresh.clone();
        stale.remove("ferry-l2-me");
        assert_eq!(alive_announcers(&stale, "me", true), (set(&["a"]), false));
        assert_eq!(
            renew_interval(Duration::from_secs(10)),
            Duration::from_secs(2)
        );
    }

    fn slice(service: &str, endpoints: serde_json::Value) -> Arc<EndpointSlice> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("{service}-x"), "namespace": "default",
                    "labels": {"kubernetes.io/service-name": service}},
                "addressType": "IPv4",
                "endpoints": endpoints,
            }))
            .unwrap(),
        )
    }

    #[test]
    fn local_policy_is_announced_by_a_node_with_an_endpoint() {
        let mut local = (*svc(
            "LoadBalancer",
            &["10.99.0.192", "10.99.0.193", "10.99.0.194"],
        ))
        .clone();
        local.spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
        let services = vec![Arc::new(local)];
        let nodes = vec![node("a", "True"), node("b", "True"), node("c", "True")];
        let all: BTreeSet<Ipv4Addr> = [ip(192), ip(193), ip(194)].into();
        // Endpoints on b (ready) and c (not ready), and in another Service's slice on a.
        let slices = vec![
            slice(
                "s",
                serde_json::json!([
                    {"addresses": ["10.244.1.5"], "nodeName": "b", "conditions": {"ready": true}},
                    {"addresses": ["10.244.2.5"], "nodeName": "c", "conditions": {"ready": false}},
                ]),
            ),
            slice(
                "other",
                serde_json::json!([{"addresses": ["10.244.0.5"], "nodeName": "a"}]),
            ),
        ];
        assert_eq!(
            owned_by("b", &services, &slices, &nodes, &every(&nodes)),
            all
        );
        assert!(owned_by("a", &services, &slices, &nodes, &every(&nodes)).is_empty());
        assert!(owned_by("c", &services, &slices, &nodes, &every(&nodes)).is_empty());
        // No ready endpoint anywhere: nobody announces. Unset `ready` counts as ready.
        assert!(["a", "b", "c"].iter().all(|n| owned_by(
            n,
            &services,
            &slices[1..],
            &nodes,
            &every(&nodes)
        )
        .is_empty()));
        let unset = vec![slice(
            "s",
            serde_json::json!([{"addresses": ["10.244.2.5"], "nodeName": "c"}]),
        )];
        assert_eq!(
            owned_by("c", &services, &unset, &nodes, &every(&nodes)),
            all
        );
        // The endpoint's node goes NotReady: nobody else takes the Local addresses.
        let nodes = vec![node("a", "True"), node("b", "Unknown"), node("c", "True")];
        assert!(["a", "b", "c"].iter().all(|n| owned_by(
            n,
            &services,
            &slices,
            &nodes,
            &every(&nodes)
        )
        .is_empty()));
    }

    #[test]
    fn answers_requests_for_owned_addresses_only() {
        let mac = [2, 0, 0, 0, 0, 1];
        let client = [2, 0, 0, 0, 0, 0xee];
        let ips: BTreeSet<Ipv4Addr> = [ip(192)].into();
        let request =
            |tpa: Ipv4Addr| arp_frame(BROADCAST, ARP_REQUEST, client, ip(254), [0; 6], tpa);
        // The layout, byte by byte (RFC 826 over Ethernet II).
        let r = request(ip(192));
        assert_eq!(r.len(), FRAME_LEN);
        assert_eq!(
            &r[..14],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 0xee, 0x08, 0x06]
        );
        assert_eq!(&r[14..22], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&r[28..32], &[10, 99, 0, 254]);
        assert_eq!(&r[38..42], &[10, 99, 0, 192]);
        assert!(r[42..].iter().all(|b| *b == 0));

        let reply = answer(&r, mac, &ips).expect("a reply");
        assert_eq!(
            parse_arp(&reply),
            Some(Arp {
                eth_src: mac,
                op: ARP_REPLY,
                sha: mac,
                spa: ip(192),
                tpa: ip(254)
            })
        );
        assert_eq!(&reply[..6], &client, "unicast to the asker");
        assert_eq!(&reply[32..38], &client, "target hardware address");
        // Not ours, a reply, a gratuitous ARP, our own frame, truncated or non-IPv4: no answer.
        assert!(answer(&request(ip(193)), mac, &ips).is_none());
        let mut as_reply = request(ip(192));
        as_reply[21] = 2; // ARP opcode low byte
        assert!(answer(&as_reply, mac, &ips).is_none());
        assert!(answer(&gratuitous([2, 0, 0, 0, 0, 2], ip(192)), mac, &ips).is_none());
        assert!(answer(
            &arp_frame(BROADCAST, ARP_REQUEST, mac, ip(254), [0; 6], ip(192)),
            mac,
            &ips
        )
        .is_none());
        for cut in [0, 13, 14, 20, 41] {
            assert!(answer(&r[..cut], mac, &ips).is_none(), "cut at {cut}");
        }
        assert!(answer(&r[..42], mac, &ips).is_some(), "unpadded is fine");
        let mut ipv6 = request(ip(192));
        ipv6[16] = 0x86; // protocol type 0x86dd
        ipv6[17] = 0xdd;
        assert!(answer(&ipv6, mac, &ips).is_none());
        let mut ipv4 = request(ip(192));
        ipv4[13] = 0x00; // ethertype 0x0800
        assert!(answer(&ipv4, mac, &ips).is_none());
        // A gratuitous ARP: broadcast request, sender = target = the address.
        let g = gratuitous(mac, ip(192));
        assert_eq!(&g[..6], &BROADCAST);
        assert_eq!(
            parse_arp(&g),
            Some(Arp {
                eth_src: mac,
                op: ARP_REQUEST,
                sha: mac,
                spa: ip(192),
                tpa: ip(192)
            })
        );
    }
}
