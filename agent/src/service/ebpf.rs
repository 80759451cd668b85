//! [`EbpfProxier`]: the [`Proxier`] that programs the `sock-lb` socket load balancer's pinned
//! maps (see `docs/services.md` and `ferry_common::lb`).
//!
//! Incremental: the proxier keeps what it believes is programmed ([`Programmed`] per frontend,
//! reference-counted backend ids) and, per sync, touches only frontends whose backends or
//! affinity differ. At start it reads the pinned maps back ([`Datapath::read`]) instead of
//! assuming them empty, so a restarted agent adopts the datapath and changes only what differs
//! (never a flush). Each frontend update is atomic for the programs: the new backend slots go
//! into the other generation, then the service entry flips (count and generation in one map
//! update), then the old generation's slots are deleted. A freed backend id rests for
//! [`ID_REUSE_AFTER`] before another backend takes it, so a program that read it just before the
//! deletion finds no backend (and retries with the live generation), never a stranger.
//!
//! A frontend that cannot be written (map full, any map error) is rolled back as far as
//! possible, counted in [`SyncStats::failed`] and retried next sync; the others are served.
//!
//! Connected UDP sockets still sent to a backend that left a frontend are destroyed after the
//! sync (kube-proxy clears UDP conntrack the same way; TCP is left alone): the proxier walks the
//! network namespaces of the processes in the attached cgroup (deduplicated by inode), lists
//! their connected UDP sockets with sock_diag on a thread inside each namespace, and destroys
//! those the reverse-NAT map ties to a removed (frontend, backend) pair.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddrV4;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_common::{
    names, Lb4Backend, Lb4RevNatKey, Lb4Svc, Lb4SvcKey, LbStat, LB4_AFFINITY_MAX_ENTRIES,
    LB4_BACKENDS_MAX_ENTRIES, LB4_REVNAT_MAX_ENTRIES, LB4_SERVICES_MAX_ENTRIES,
    LB_MAX_BACKENDS_PER_SERVICE,
};

use super::nodeport::{NodePortConfig, NodePortDatapath};
use super::table::{Backend, Frontend, Proto, ServiceTable};
use super::{DatapathStats, MapFill, Proxier, ProxyError, ProxyMode, SyncStats};
use crate::bpf::{
    detach_xdp, xdp_interfaces, AttachOutcome, BpfError, LbMaps, NodePortTc, SockLb, TcHook,
};

/// What one frontend is programmed to: the live generation, its backends in slot order, and
/// its ClientIP affinity timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Programmed {
    /// The live generation (0 or 1).
    pub gen: u8,
    /// Backends in slot order (slot `i + 1`).
    pub backends: Vec<Backend>,
    /// ClientIP affinity timeout in seconds.
    pub affinity: Option<u32>,
    /// The service entry's slot count: `backends.len()` unless slots or backends were found
    /// missing when reading the maps back (then the frontend is rewritten at the next sync).
    pub slots: u16,
}

impl Programmed {
    /// Every slot of the entry resolved to a backend.
    pub fn intact(&self) -> bool {
        usize::from(self.slots) == self.backends.len()
    }
}

/// The datapath as read back from the maps: frontends, and the backend id table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Datapath {
    /// Frontend -> what it is programmed to.
    pub frontends: BTreeMap<Frontend, Programmed>,
    /// Backend id -> backend.
    pub backends: BTreeMap<u32, Backend>,
    /// Service map entries that belong to no live generation or name a missing backend id
    /// (leftovers of an interrupted update); [`EbpfProxier::new`] deletes them.
    pub stray_slots: Vec<Lb4SvcKey>,
}

fn proto_of(n: u8) -> Option<Proto> {
    match n {
        6 => Some(Proto::Tcp),
        17 => Some(Proto::Udp),
        _ => None,
    }
}

fn frontend_of(key: &Lb4SvcKey) -> Option<Frontend> {
    let addr = key.socket_addr();
    Some(Frontend {
        addr: *addr.ip(),
        port: addr.port(),
        proto: proto_of(key.proto)?,
    })
}

fn service_key(f: &Frontend) -> Lb4SvcKey {
    Lb4SvcKey::service(SocketAddrV4::new(f.addr, f.port), f.proto.number())
}

fn backend_of(b: &Lb4Backend) -> Backend {
    let a = b.socket_addr();
    Backend {
        addr: *a.ip(),
        port: a.port(),
    }
}

fn slot_index(i: usize) -> Result<u16, ProxyError> {
    u16::try_from(i + 1).map_err(|_| ProxyError::Bpf(format!("slot {i} beyond u16")))
}

impl Datapath {
    /// Reads the service and backend maps back (pure over the dumped entries: see
    /// [`Datapath::from_entries`]).
    pub fn read(maps: &LbMaps) -> Result<Self, BpfError> {
        Ok(Self::from_entries(
            &maps.dump_services()?,
            &maps.dump_backends()?,
        ))
    }

    /// Rebuilds the frontends from raw map entries: a frontend's live slots are
    /// `1..=count` of its entry's generation; a frontend with a missing slot or backend keeps
    /// the slots it has (the next sync rewrites it, since it differs from the table).
    pub fn from_entries(services: &[(Lb4SvcKey, Lb4Svc)], backends: &[(u32, Lb4Backend)]) -> Self {
        let backends: BTreeMap<u32, Backend> = backends
            .iter()
            .map(|(id, b)| (*id, backend_of(b)))
            .collect();
        let slots: HashMap<Lb4SvcKey, u32> = services
            .iter()
            .filter(|(k, _)| k.slot != 0)
            .map(|(k, v)| (*k, v.backend_id))
            .collect();
        let mut out = Datapath {
            backends,
            ..Datapath::default()
        };
        let mut live = BTreeSet::new();
        for (key, entry) in services.iter().filter(|(k, _)| k.slot == 0) {
            let Some(frontend) = frontend_of(key) else {
                out.stray_slots.push(*key);
                continue;
            };
            let mut list = Vec::with_capacity(usize::from(entry.count));
            for slot in 1..=entry.count {
                let slot_key = key.with_slot(entry.gen, slot);
                live.insert(slot_key);
                if let Some(b) = slots.get(&slot_key).and_then(|id| out.backends.get(id)) {
                    list.push(*b);
                }
            }
            out.frontends.insert(
                frontend,
                Programmed {
                    gen: entry.gen,
                    backends: list,
                    affinity: entry.affinity(),
                    slots: entry.count,
                },
            );
        }
        let mut stray: Vec<Lb4SvcKey> = slots
            .keys()
            .filter(|k| !live.contains(*k))
            .copied()
            .collect();
        stray.sort();
        out.stray_slots.extend(stray);
        out
    }
}

/// Backend id allocation with reference counts (one count per slot that names the backend).
/// Ids start at 1 (0 is never a backend id: service entries carry it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendIds {
    ids: HashMap<Backend, (u32, usize)>,
    /// Freed ids, oldest first, with the time they were freed: reused only after
    /// [`ID_REUSE_AFTER`].
    free: VecDeque<(u32, Instant)>,
    next: u32,
}

/// How long a freed backend id stays unused. A program that read the id from a slot just before
/// the agent deleted the slot and the backend must find no backend (and retry with the new
/// generation), never another Service's backend that took the id over meanwhile.
pub const ID_REUSE_AFTER: Duration = Duration::from_secs(1);

impl Default for BackendIds {
    fn default() -> Self {
        Self {
            ids: HashMap::new(),
            free: VecDeque::new(),
            next: 1,
        }
    }
}

impl BackendIds {
    /// Starts from the ids the datapath already uses (references counted from `frontends`).
    pub fn adopt(dp: &Datapath) -> Self {
        let mut ids = HashMap::new();
        for (id, b) in &dp.backends {
            ids.entry(*b).or_insert((*id, 0));
        }
        for p in dp.frontends.values() {
            for b in &p.backends {
                if let Some(e) = ids.get_mut(b) {
                    e.1 += 1;
                }
            }
        }
        let next = dp.backends.keys().max().map_or(1, |m| m.saturating_add(1));
        Self {
            ids,
            free: VecDeque::new(),
            next,
        }
    }

    /// The id of `b` if it has one.
    pub fn get(&self, b: &Backend) -> Option<u32> {
        self.ids.get(b).map(|e| e.0)
    }

    /// Takes one reference on `b`; returns its id and whether it is new (must be written).
    pub fn acquire(&mut self, b: Backend) -> (u32, bool) {
        self.acquire_at(b, Instant::now())
    }

    /// [`Self::acquire`] at time `now`: a freed id is reused once it has been free for
    /// [`ID_REUSE_AFTER`], else a new one is taken.
    fn acquire_at(&mut self, b: Backend, now: Instant) -> (u32, bool) {
        if let Some(e) = self.ids.get_mut(&b) {
            e.1 += 1;
            return (e.0, false);
        }
        let reusable = self
            .free
            .front()
            .is_some_and(|(_, freed)| now.saturating_duration_since(*freed) >= ID_REUSE_AFTER);
        let rested = if reusable {
            self.free.pop_front()
        } else {
            None
        };
        let id = rested.map_or_else(
            || {
                let id = self.next;
                self.next = self.next.wrapping_add(1).max(1);
                id
            },
            |(id, _)| id,
        );
        self.ids.insert(b, (id, 1));
        (id, true)
    }

    /// Drops one reference on `b`; returns its id if that was the last (must be deleted).
    pub fn release(&mut self, b: &Backend) -> Option<u32> {
        let e = self.ids.get_mut(b)?;
        e.1 = e.1.saturating_sub(1);
        if e.1 == 0 {
            let id = e.0;
            self.ids.remove(b);
            self.free.push_back((id, Instant::now()));
            return Some(id);
        }
        None
    }

    /// Backends with no reference (adopted ids nothing uses any more).
    pub fn unreferenced(&self) -> Vec<(Backend, u32)> {
        let mut v: Vec<_> = self
            .ids
            .iter()
            .filter(|(_, e)| e.1 == 0)
            .map(|(b, e)| (*b, e.0))
            .collect();
        v.sort();
        v
    }

    /// Forgets an unreferenced backend (after deleting it from the map).
    pub fn forget(&mut self, b: &Backend) {
        if let Some((id, 0)) = self.ids.get(b).copied() {
            self.ids.remove(b);
            self.free.push_back((id, Instant::now()));
        }
    }

    /// Number of backends with an id.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// No backend has an id.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// One step of a sync, in the order it must happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Write (or rewrite) a frontend: `old` is what is programmed now (if anything).
    Upsert {
        /// The frontend.
        frontend: Frontend,
        /// What it should become (generation chosen at apply time).
        backends: Vec<Backend>,
        /// Affinity timeout.
        affinity: Option<u32>,
        /// What it is now.
        old: Option<Programmed>,
    },
    /// Only the affinity changed: rewrite the service entry in place.
    Affinity {
        /// The frontend.
        frontend: Frontend,
        /// The programmed state (generation and backends stay).
        now: Programmed,
        /// The new affinity.
        affinity: Option<u32>,
    },
    /// Remove a frontend.
    Remove {
        /// The frontend.
        frontend: Frontend,
        /// What it is now.
        old: Programmed,
    },
}

/// The changes that make `programmed` match `table` (pure). Backends beyond
/// [`LB_MAX_BACKENDS_PER_SERVICE`] are cut (the table keeps them sorted, so the cut is stable).
/// Both maps are sorted by frontend, so they are walked side by side (no lookups, no copy of an
/// unchanged frontend's backends): one changed Service among 30,000 is planned in well under a
/// millisecond. Removals come after the table's changes, in frontend order.
pub fn plan(programmed: &BTreeMap<Frontend, Programmed>, table: &ServiceTable) -> Vec<Change> {
    let max = usize::from(LB_MAX_BACKENDS_PER_SERVICE);
    let mut out = Vec::new();
    let mut removed = Vec::new();
    let mut have = programmed.iter().peekable();
    for (frontend, entry) in &table.entries {
        while let Some((f, old)) = have.next_if(|(f, _)| *f < frontend) {
            removed.push(Change::Remove {
                frontend: *f,
                old: old.clone(),
            });
        }
        let now = have.next_if(|(f, _)| *f == frontend).map(|(_, p)| p);
        let backends = &entry.backends[..entry.backends.len().min(max)];
        match now {
            Some(now)
                if now.intact()
                    && now.backends == backends
                    && now.affinity == entry.affinity_timeout => {}
            Some(now) if now.intact() && now.backends == backends => out.push(Change::Affinity {
                frontend: *frontend,
                now: now.clone(),
                affinity: entry.affinity_timeout,
            }),
            now => out.push(Change::Upsert {
                frontend: *frontend,
                backends: backends.to_vec(),
                affinity: entry.affinity_timeout,
                old: now.cloned(),
            }),
        }
    }
    removed.extend(have.map(|(f, old)| Change::Remove {
        frontend: *f,
        old: old.clone(),
    }));
    out.extend(removed);
    out
}

/// The eBPF socket load balancer as a [`Proxier`].
#[derive(Debug)]
pub struct EbpfProxier {
    lb: SockLb,
    maps: LbMaps,
    cgroup: PathBuf,
    programmed: BTreeMap<Frontend, Programmed>,
    ids: BackendIds,
    attach: Vec<(&'static str, AttachOutcome)>,
    destroyed: usize,
    /// Frontends whose last write failed (logged once at warn, then at debug while it lasts).
    failing: BTreeSet<Frontend>,
    /// The tc datapath for traffic from outside the node, when enabled.
    external: Option<External>,
}

/// Where the tc datapath for traffic from outside attaches, and its node settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalOptions {
    /// The underlay interface (ingress: new flows and replies; egress: ETP Local replies).
    pub underlay: String,
    /// Devices replies of backends arrive on: the pod bridge.
    pub reply_devices: Vec<String>,
    /// Devices source-preserving replies may leave by without crossing a reply device: the
    /// overlay device (the pod fast path routes pods' packets for other nodes' pods straight to
    /// it; with host-gw and direct routing they leave by the underlay, whose egress is hooked).
    pub egress_devices: Vec<String>,
    /// Node address, NAT ports, Maglev size and seed.
    pub config: NodePortConfig,
    /// Also attach the XDP program to the underlay (`--external-xdp`).
    pub xdp: bool,
}

/// The loaded tc programs and their maps' programmer.
#[derive(Debug)]
struct External {
    /// Keeps the programs loaded while attached links are swapped.
    tc: NodePortTc,
    datapath: NodePortDatapath,
    /// The current attachments.
    attached: Vec<Attached>,
    /// Reply and egress devices not attached yet (they did not exist yet, or the attach
    /// failed), and whether a failure on an existing device was logged.
    pending: Vec<(String, TcHook, bool)>,
    /// When the conntrack GC last ran.
    last_gc: Option<std::time::Instant>,
}

/// Least time between two conntrack GC walks (unless a backend left).
const CONNTRACK_GC_PERIOD: std::time::Duration = std::time::Duration::from_secs(10);

/// One program attached to one device.
#[derive(Debug, Clone)]
struct Attached {
    iface: String,
    hook: TcHook,
    /// Created, or an existing pinned link updated.
    outcome: AttachOutcome,
    /// The device's ifindex when attached: a device deleted and created again (e.g. `ferry.1`
    /// after an underlay address change) lost its link.
    ifindex: u32,
}

/// The entries of `attached` whose device now has another ifindex or none (`index_of`): it was
/// deleted (and maybe created again), which detached the kernel's link.
fn moved_devices(attached: &[Attached], index_of: impl Fn(&str) -> Option<u32>) -> Vec<usize> {
    attached
        .iter()
        .enumerate()
        .filter(|(_, a)| index_of(&a.iface) != Some(a.ifindex))
        .map(|(i, _)| i)
        .collect()
}

impl External {
    /// Moves the attachments whose device was deleted or recreated back to the pending list
    /// (re-attaching replaces the stale pinned link).
    fn recheck_devices(&mut self) {
        let moved = moved_devices(&self.attached, |iface| ferry_sys::net::if_index(iface).ok());
        for i in moved.into_iter().rev() {
            let Attached { iface, hook, .. } = self.attached.remove(i);
            tracing::info!(%iface, ?hook, "nodeport: device recreated or gone, attaching again");
            self.pending.push((iface, hook, false));
        }
    }

    /// Attaches `hook`'s program to `iface` and records it.
    fn attach(&mut self, iface: &str, hook: TcHook) -> Result<(), BpfError> {
        if hook == TcHook::UnderlayXdp {
            xdp_peer_check(iface)?;
        }
        let outcome = self.tc.attach(iface, hook)?;
        // The device existed a moment ago; if it is gone already the next recheck retries.
        let ifindex = ferry_sys::net::if_index(iface).unwrap_or(0);
        self.attached.push(Attached {
            iface: iface.to_owned(),
            hook,
            outcome,
            ifindex,
        });
        Ok(())
    }

    /// Attaches the reply and egress programs to the pending devices that exist now. A device
    /// that does not exist yet is expected (the bridge comes with the first pod); any other
    /// failure is logged once, then retried quietly at every sync.
    fn attach_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for (iface, hook, warned) in pending {
            match self.attach(&iface, hook) {
                Ok(()) => tracing::info!(%iface, ?hook, "nodeport: program attached"),
                Err(e) => {
                    let exists = ferry_sys::net::if_index(&iface).is_ok();
                    if exists && !warned {
                        tracing::warn!(%iface, ?hook, error = %error_chain(&e), "nodeport: attach failed (retried at every sync)");
                    }
                    self.pending.push((iface, hook, warned || exists));
                }
            }
        }
    }
}

/// XDP on a veth sends its `XDP_TX` frames to the peer, which delivers them only if it has an
/// XDP program too: `Err` if `iface` is a veth whose peer (read through `IFLA_TARGET_NETNSID`,
/// without entering its namespace) has none. Other devices, and a peer that cannot be read,
/// pass (the attach itself reports what the driver refuses).
fn xdp_peer_check(iface: &str) -> Result<(), BpfError> {
    let Ok(mut nl) = crate::netlink::Netlink::new() else {
        return Ok(());
    };
    let Ok(Some(link)) = nl.link_by_name(iface) else {
        return Ok(());
    };
    match nl.veth_peer(&link) {
        Ok(Some(peer)) if !peer.xdp => Err(BpfError::XdpPeer {
            iface: iface.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// The tc datapath's options for this node: the underlay's first IPv4 address as the SNAT
/// source, the pod bridge and the overlay's Ethernet device (if any) as reply devices.
pub fn external_options(cfg: &crate::config::Config) -> Result<ExternalOptions, ProxyError> {
    use crate::config::Backend as Overlay;
    let mut nl =
        crate::netlink::Netlink::new().map_err(|e| ProxyError::Bpf(format!("netlink: {e}")))?;
    let link = nl
        .link_by_name(&cfg.iface)
        .map_err(|e| ProxyError::Bpf(format!("underlay {}: {e}", cfg.iface)))?
        .ok_or_else(|| ProxyError::Bpf(format!("underlay {} does not exist", cfg.iface)))?;
    let node_addr = nl
        .ipv4_addresses(link.index)
        .map_err(|e| ProxyError::Bpf(format!("underlay {} addresses: {e}", cfg.iface)))?
        .first()
        .map(|n| n.ip())
        .ok_or_else(|| ProxyError::Bpf(format!("underlay {} has no IPv4 address", cfg.iface)))?;
    // Replies of local backends cross the bridge. A remote backend answers the node's underlay
    // address (the SNAT source), so its replies arrive on the underlay, whatever the backend:
    // nothing a reply program would translate arrives on `ferry.1`, which gets none (it would
    // cost a lookup per received VXLAN packet). Its egress does get the egress program, for the
    // ETP Local replies the pod fast path routes there past the bridge.
    let reply_devices = vec![crate::subnet::BRIDGE.to_owned()];
    let egress_devices = match cfg.backend {
        Overlay::Vxlan => vec![crate::overlay::vxlan::DEVICE.to_owned()],
        // host-gw replies leave by the underlay, whose egress is hooked; the udp backend's TUN
        // device carries no Ethernet header, which the programs expect.
        Overlay::HostGw | Overlay::Udp => Vec::new(),
    };
    Ok(ExternalOptions {
        underlay: cfg.iface.clone(),
        reply_devices,
        egress_devices,
        config: NodePortConfig {
            node_addr,
            nat_ports: super::nodeport::DEFAULT_NAT_PORTS,
            maglev_size: cfg.maglev_table_size,
            seed: cfg.maglev_seed,
        },
        xdp: cfg.external_xdp,
    })
}

fn bpf_err(e: BpfError) -> ProxyError {
    ProxyError::Bpf(error_chain(&e))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl EbpfProxier {
    /// Loads the programs with their maps pinned under `bpffs_dir` (adopting pinned maps), makes
    /// them serve `cgroup` through pinned links (adopting pinned links with `BPF_LINK_UPDATE`),
    /// reads the maps back and deletes leftovers of an interrupted update. Nothing else is
    /// changed until the first [`Proxier::sync`].
    pub fn new(bpffs_dir: &Path, cgroup: &Path) -> Result<Self, ProxyError> {
        let (mut lb, mut maps) = SockLb::load(bpffs_dir).map_err(bpf_err)?;
        let attach = lb.attach(cgroup).map_err(bpf_err)?;
        let dp = Datapath::read(&maps).map_err(bpf_err)?;
        for key in &dp.stray_slots {
            maps.remove_service(key).map_err(bpf_err)?;
        }
        let mut ids = BackendIds::adopt(&dp);
        for (b, id) in ids.unreferenced() {
            maps.remove_backend(id).map_err(bpf_err)?;
            ids.forget(&b);
        }
        Ok(Self {
            lb,
            maps,
            cgroup: cgroup.to_owned(),
            programmed: dp.frontends,
            ids,
            attach,
            destroyed: 0,
            failing: BTreeSet::new(),
            external: None,
        })
    }

    /// Loads the `nodeport` tc programs with their maps pinned beside the socket LB's, adopts
    /// what a previous agent programmed, and attaches them (pinned TCX links, adopted with
    /// `BPF_LINK_UPDATE`) to the underlay (ingress + egress) and to every reply device that
    /// exists. The next [`Proxier::sync`] programs the external frontends.
    pub fn enable_external(&mut self, opts: &ExternalOptions) -> Result<(), ProxyError> {
        let (tc, maps) = NodePortTc::load(self.lb.pin_dir()).map_err(bpf_err)?;
        let datapath = NodePortDatapath::new(maps, opts.config.clone())?;
        // The bridge appears with the first pod, the overlay device with the overlay: those
        // are retried at every sync; the underlay must take its programs now.
        let pending = opts
            .reply_devices
            .iter()
            .map(|d| (d.clone(), TcHook::ReplyIngress, false))
            .chain(
                opts.egress_devices
                    .iter()
                    .map(|d| (d.clone(), TcHook::OverlayEgress, false)),
            )
            .collect();
        let mut ext = External {
            tc,
            datapath,
            attached: Vec::new(),
            pending,
            last_gc: None,
        };
        for hook in [TcHook::UnderlayIngress, TcHook::UnderlayEgress] {
            ext.attach(&opts.underlay, hook).map_err(bpf_err)?;
        }
        if opts.xdp {
            // Not fatal: without it tc does the same work. A failure is logged once and
            // retried at every sync (e.g. a driver without native XDP: never).
            ext.pending
                .push((opts.underlay.clone(), TcHook::UnderlayXdp, false));
        }
        ext.attach_pending();
        // XDP off (or on another device now): a previous agent's XDP link goes, or it would
        // go on translating what tc no longer expects to see.
        for iface in xdp_interfaces(self.lb.pin_dir()) {
            if opts.xdp && iface == opts.underlay {
                continue;
            }
            match detach_xdp(self.lb.pin_dir(), &iface) {
                Ok(_) => tracing::info!(%iface, "nodeport: XDP program detached"),
                Err(e) => tracing::warn!(%iface, error = %e, "nodeport: detaching XDP failed"),
            }
        }
        self.external = Some(ext);
        Ok(())
    }

    /// Enables the tc datapath with `opts` (`None`: `--external-datapath false`; an `Err`: its
    /// options could not be worked out), or, when it is not enabled, detaches the tc programs a
    /// previous agent left pinned and removes their maps ([`disable_external`]): they would
    /// otherwise go on translating with maps nobody updates. Logs what it did; returns whether
    /// the tc datapath is on. The socket LB serves the node's own clients either way, so nothing
    /// here is fatal.
    pub fn configure_external(
        &mut self,
        opts: Option<Result<ExternalOptions, ProxyError>>,
    ) -> bool {
        if let Some(opts) = opts {
            match opts.and_then(|o| self.enable_external(&o)) {
                Ok(()) => return true,
                Err(e) => {
                    tracing::warn!(error = %e, "external traffic datapath (tc) not enabled: NodePorts, externalIPs and LoadBalancer IPs are not served to clients outside the node");
                }
            }
        }
        match disable_external(self.lb.pin_dir()) {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                pins = n,
                "external traffic datapath (tc) off: detached the previous agent's tc programs and removed their maps; external traffic takes the plain path"
            ),
            Err(e) => {
                tracing::error!(error = %e, "external traffic datapath (tc) off, but the previous agent's tc programs could not be detached: they keep translating with stale maps");
            }
        }
        false
    }

    /// The tc datapath's programmer, when enabled.
    pub fn external(&self) -> Option<&NodePortDatapath> {
        self.external.as_ref().map(|e| &e.datapath)
    }

    /// The tc programs, when enabled (program descriptors for tests).
    pub fn external_programs(&self) -> Option<&NodePortTc> {
        self.external.as_ref().map(|e| &e.tc)
    }

    /// What [`EbpfProxier::enable_external`] did per (interface, hook).
    pub fn external_attach_outcomes(&self) -> Vec<(String, TcHook, AttachOutcome)> {
        self.external
            .as_ref()
            .map(|e| {
                e.attached
                    .iter()
                    .map(|a| (a.iface.clone(), a.hook, a.outcome))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What [`EbpfProxier::new`] did with each program's link (created or adopted).
    pub fn attach_outcomes(&self) -> &[(&'static str, AttachOutcome)] {
        &self.attach
    }

    /// The frontends as this proxier believes them programmed.
    pub fn programmed(&self) -> &BTreeMap<Frontend, Programmed> {
        &self.programmed
    }

    /// The maps (for tests and metrics).
    pub fn maps(&self) -> &LbMaps {
        &self.maps
    }

    /// The loaded programs (ids for `bpftool`).
    pub fn programs(&self) -> &SockLb {
        &self.lb
    }

    /// Connected UDP sockets destroyed by the last sync.
    pub fn last_destroyed(&self) -> usize {
        self.destroyed
    }

    /// Writes one frontend (see the module docs for the order); on error, undoes what it wrote.
    fn upsert(
        &mut self,
        frontend: Frontend,
        backends: &[Backend],
        affinity: Option<u32>,
        old: Option<&Programmed>,
    ) -> Result<Programmed, ProxyError> {
        let key = service_key(&frontend);
        let gen = match old {
            Some(p) => 1 - (p.gen & 1),
            None => 0,
        };
        let count = u16::try_from(backends.len())
            .map_err(|_| ProxyError::Bpf(format!("{frontend}: too many backends")))?;
        let mut acquired = Vec::with_capacity(backends.len());
        let mut written = Vec::with_capacity(backends.len());
        let result = (|| -> Result<(), ProxyError> {
            for (i, b) in backends.iter().enumerate() {
                let (id, new) = self.ids.acquire(*b);
                acquired.push(*b);
                if new {
                    self.maps
                        .insert_backend(id, Lb4Backend::new(SocketAddrV4::new(b.addr, b.port)))
                        .map_err(bpf_err)?;
                }
                let slot_key = key.with_slot(gen, slot_index(i)?);
                self.maps
                    .insert_service(slot_key, Lb4Svc::slot(id))
                    .map_err(bpf_err)?;
                written.push(slot_key);
            }
            self.maps
                .insert_service(key, Lb4Svc::entry(count, gen, affinity))
                .map_err(bpf_err)
        })();
        if let Err(e) = result {
            for k in &written {
                let _ignored = self.maps.remove_service(k);
            }
            for b in &acquired {
                if let Some(id) = self.ids.release(b) {
                    let _ignored = self.maps.remove_backend(id);
                }
            }
            return Err(e);
        }
        // Flipped: the old generation's slots and references go.
        if let Some(old) = old {
            self.drop_slots(&key, old)?;
        }
        Ok(Programmed {
            gen,
            backends: backends.to_vec(),
            affinity,
            slots: count,
        })
    }

    /// Deletes a generation's slots and releases its backend references.
    fn drop_slots(&mut self, key: &Lb4SvcKey, old: &Programmed) -> Result<(), ProxyError> {
        for slot in 1..=old.slots {
            self.maps
                .remove_service(&key.with_slot(old.gen, slot))
                .map_err(bpf_err)?;
        }
        for b in &old.backends {
            if let Some(id) = self.ids.release(b) {
                self.maps.remove_backend(id).map_err(bpf_err)?;
            }
        }
        Ok(())
    }

    /// Deletes the affinity entries of the `frontends` that name a backend id the frontend no
    /// longer has: one pass over the affinity map per sync, however many frontends changed.
    fn purge_affinity(&mut self, frontends: &BTreeSet<Frontend>) {
        let live: HashMap<(SocketAddrV4, u8), BTreeSet<u32>> = frontends
            .iter()
            .map(|f| {
                let ids = self.programmed.get(f).map_or_else(BTreeSet::new, |p| {
                    p.backends.iter().filter_map(|b| self.ids.get(b)).collect()
                });
                ((SocketAddrV4::new(f.addr, f.port), f.proto.number()), ids)
            })
            .collect();
        let entries = match self.maps.dump_affinity() {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "sock-lb: reading the affinity map failed");
                return;
            }
        };
        for (k, v) in entries {
            let stale = live
                .get(&(k.socket_addr(), k.proto))
                .is_some_and(|ids| !ids.contains(&v.backend_id));
            if stale {
                let _ignored = self.maps.remove_affinity(&k);
            }
        }
    }
}

impl Proxier for EbpfProxier {
    fn mode(&self) -> ProxyMode {
        ProxyMode::Ebpf
    }

    fn datapath(&self) -> Option<DatapathStats> {
        // 12 lookups of the per-CPU counters; the fill of the two maps the agent writes is
        // known without a syscall, the LRU maps' is not (the programs write them).
        let counters = match self.maps.stats() {
            Ok(c) => c.into_iter().map(|(s, n)| (s.name(), n)).collect(),
            Err(e) => {
                tracing::debug!(error = %e, "sock-lb: reading the counters failed");
                Vec::new()
            }
        };
        let mut counters: Vec<(&'static str, u64)> = counters;
        let mut maps = map_fill(&self.programmed, self.ids.len());
        if let Some(ext) = &self.external {
            counters.extend(ext.datapath.counters());
            maps.extend(ext.datapath.map_fill());
        }
        Some(DatapathStats { counters, maps })
    }

    fn sync(&mut self, table: &ServiceTable) -> Result<SyncStats, ProxyError> {
        let mut stats = SyncStats::default();
        // (UDP frontend, backend) pairs that stopped existing: their connected sockets go.
        let mut gone_udp: BTreeSet<(SocketAddrV4, SocketAddrV4)> = BTreeSet::new();
        // Affinity frontends that lost backends, changed affinity or went: their stale affinity
        // entries go.
        let mut purge: BTreeSet<Frontend> = BTreeSet::new();
        for change in plan(&self.programmed, table) {
            match change {
                Change::Upsert {
                    frontend,
                    backends,
                    affinity,
                    old,
                } => match self.upsert(frontend, &backends, affinity, old.as_ref()) {
                    Ok(p) => {
                        if let Some(old) = &old {
                            let now: BTreeSet<Backend> = p.backends.iter().copied().collect();
                            let gone: BTreeSet<Backend> = old
                                .backends
                                .iter()
                                .filter(|b| !now.contains(b))
                                .copied()
                                .collect();
                            if !gone.is_empty() {
                                if frontend.proto == Proto::Udp {
                                    let f = SocketAddrV4::new(frontend.addr, frontend.port);
                                    gone_udp.extend(
                                        gone.iter().map(|b| (f, SocketAddrV4::new(b.addr, b.port))),
                                    );
                                }
                                if p.affinity.is_some() {
                                    purge.insert(frontend);
                                }
                            }
                        }
                        self.programmed.insert(frontend, p);
                        if self.failing.remove(&frontend) {
                            tracing::info!(%frontend, "sock-lb: frontend programmed after earlier failures");
                        }
                        stats.changed += 1;
                    }
                    Err(e) => {
                        if self.failing.insert(frontend) {
                            tracing::warn!(%frontend, error = %e, "sock-lb: frontend not programmed (e.g. a full map): skipped, retried every sync, the others are served");
                        } else {
                            tracing::debug!(%frontend, error = %e, "sock-lb: frontend still not programmed");
                        }
                        stats.failed += 1;
                    }
                },
                Change::Affinity {
                    frontend,
                    now,
                    affinity,
                } => {
                    let count = u16::try_from(now.backends.len()).unwrap_or(u16::MAX);
                    match self.maps.insert_service(
                        service_key(&frontend),
                        Lb4Svc::entry(count, now.gen, affinity),
                    ) {
                        Ok(()) => {
                            // Entries left from an earlier affinity period may name ids that
                            // left the frontend meanwhile (and may name another Service's
                            // backend once reused).
                            purge.insert(frontend);
                            self.programmed
                                .insert(frontend, Programmed { affinity, ..now });
                            stats.changed += 1;
                        }
                        Err(e) => {
                            tracing::warn!(%frontend, error = %e, "sock-lb: affinity not updated");
                            stats.failed += 1;
                        }
                    }
                }
                Change::Remove { frontend, old } => {
                    let key = service_key(&frontend);
                    let r = self
                        .maps
                        .remove_service(&key)
                        .map_err(bpf_err)
                        .and_then(|_| self.drop_slots(&key, &old));
                    match r {
                        Ok(()) => {
                            if frontend.proto == Proto::Udp {
                                let f = SocketAddrV4::new(frontend.addr, frontend.port);
                                gone_udp.extend(
                                    old.backends
                                        .iter()
                                        .map(|b| (f, SocketAddrV4::new(b.addr, b.port))),
                                );
                            }
                            if old.affinity.is_some() {
                                // Its entries would outlive it in the LRU map, naming ids that
                                // another backend takes later: a Service created again on the
                                // same address would send its clients there.
                                purge.insert(frontend);
                            }
                            self.programmed.remove(&frontend);
                            stats.removed += 1;
                        }
                        Err(e) => {
                            tracing::warn!(%frontend, error = %e, "sock-lb: frontend not removed");
                            stats.failed += 1;
                        }
                    }
                }
            }
        }
        self.failing.retain(|f| table.entries.contains_key(f));
        if !purge.is_empty() {
            self.purge_affinity(&purge);
        }
        self.destroyed = if gone_udp.is_empty() {
            0
        } else {
            destroy_udp_sockets(&self.cgroup, &self.maps, &gone_udp)
        };
        if let Some(ext) = &mut self.external {
            ext.recheck_devices();
            if !ext.pending.is_empty() {
                ext.attach_pending();
            }
            match ext.datapath.sync(table) {
                Ok(s) => stats.failed += s.failed,
                Err(e) => {
                    tracing::warn!(error = %e, "nodeport: external frontends not programmed");
                    stats.failed += 1;
                }
            }
            // The GC walks the whole conntrack map: periodically, and at once when a backend
            // left (its UDP flows move), never on every small sync.
            let due = ext
                .last_gc
                .is_none_or(|t| t.elapsed() >= CONNTRACK_GC_PERIOD);
            if due || ext.datapath.gc_wanted() {
                ext.last_gc = Some(std::time::Instant::now());
                if let Err(e) = ext.datapath.gc(ferry_sys::clock::monotonic_ns()) {
                    tracing::warn!(error = %e, "nodeport: conntrack GC failed");
                }
            }
        }
        Ok(stats)
    }
}

/// The fill of the four hash maps: service entries plus their slots, backend ids; the LRU
/// maps' entry counts are not cheap (a full walk) and are left out.
pub fn map_fill(programmed: &BTreeMap<Frontend, Programmed>, backends: usize) -> Vec<MapFill> {
    let services: u64 = programmed.values().map(|p| 1 + u64::from(p.slots)).sum();
    vec![
        MapFill {
            map: names::LB4_SERVICES,
            entries: Some(services),
            capacity: u64::from(LB4_SERVICES_MAX_ENTRIES),
        },
        MapFill {
            map: names::LB4_BACKENDS,
            entries: Some(backends as u64),
            capacity: u64::from(LB4_BACKENDS_MAX_ENTRIES),
        },
        MapFill {
            map: names::LB4_REVNAT,
            entries: None,
            capacity: u64::from(LB4_REVNAT_MAX_ENTRIES),
        },
        MapFill {
            map: names::LB4_AFFINITY,
            entries: None,
            capacity: u64::from(LB4_AFFINITY_MAX_ENTRIES),
        },
    ]
}

/// Destroys the connected UDP sockets of the cgroup's processes whose reverse-NAT entry ties
/// them to one of the `gone` (frontend, backend) pairs. Best effort: failures are logged.
fn destroy_udp_sockets(
    cgroup: &Path,
    maps: &LbMaps,
    gone: &BTreeSet<(SocketAddrV4, SocketAddrV4)>,
) -> usize {
    let mut seen = BTreeSet::new();
    let mut destroyed = 0;
    for pid in ferry_sys::cgroup::pids(cgroup) {
        let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        let Ok(ns) = ferry_sys::netns::NetnsFd::open(&path) else {
            continue;
        };
        let sockets = ns.run_on_thread(|| -> std::io::Result<usize> {
            let mut n = 0;
            for s in ferry_sys::sock_diag::udp4_sockets()? {
                if !s.connected {
                    continue;
                }
                let Ok(Some(rev)) = maps.revnat(&Lb4RevNatKey::new(s.cookie, s.peer)) else {
                    continue;
                };
                if gone.contains(&(rev.socket_addr(), s.peer)) {
                    match ferry_sys::sock_diag::destroy_udp4(&s) {
                        Ok(()) => n += 1,
                        Err(e) => tracing::warn!(socket = ?s.local, error = %e, "sock-lb: SOCK_DESTROY failed"),
                    }
                }
            }
            Ok(n)
        });
        match sockets {
            Ok(Ok(n)) => destroyed += n,
            Ok(Err(e)) => tracing::warn!(pid, error = %e, "sock-lb: listing UDP sockets failed"),
            Err(e) => tracing::warn!(pid, error = %e, "sock-lb: entering the netns failed"),
        }
    }
    destroyed
}

/// One frontend as the datapath sees it (for `ferry-agent services`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontendView {
    /// The frontend.
    pub frontend: Frontend,
    /// Live generation.
    pub gen: u8,
    /// Backends with their ids, in slot order.
    pub backends: Vec<(u32, Backend)>,
    /// Affinity timeout.
    pub affinity: Option<u32>,
}

/// The service table as the datapath sees it, read from the pinned maps only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatapathView {
    /// Frontends, sorted.
    pub frontends: Vec<FrontendView>,
    /// Counters summed over CPUs.
    pub counters: Vec<(LbStat, u64)>,
    /// Entries in the reverse-NAT LRU map.
    pub revnat_entries: usize,
    /// Entries in the affinity LRU map.
    pub affinity_entries: usize,
    /// Entries in the backend map.
    pub backend_entries: usize,
    /// The tc datapath for external traffic, if its maps are pinned there.
    pub external: Option<ExternalView>,
}

/// The tc datapath as its pinned maps show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalView {
    /// External frontends: (frontend, Maglev row, backend count, ETP Local), sorted.
    pub frontends: Vec<(Frontend, u32, u16, bool)>,
    /// Conntrack entries (two per flow).
    pub conntrack_entries: usize,
    /// Counters summed over CPUs.
    pub counters: Vec<(ferry_common::nat::NpStat, u64)>,
}

/// Reads the tc datapath's pinned maps (`None` when they are not pinned there).
fn inspect_external(bpffs_dir: &Path) -> Result<Option<ExternalView>, ProxyError> {
    if !bpffs_dir.join(ferry_common::nat::names::SERVICES).exists() {
        return Ok(None);
    }
    let maps = crate::bpf::NpMaps::open_pinned(bpffs_dir).map_err(bpf_err)?;
    let mut frontends: Vec<(Frontend, u32, u16, bool)> = maps
        .dump_services()
        .map_err(bpf_err)?
        .into_iter()
        .filter_map(|(k, v)| {
            let a = k.socket_addr();
            Some((
                Frontend {
                    addr: *a.ip(),
                    port: a.port(),
                    proto: proto_of(k.proto)?,
                },
                v.row,
                v.count,
                v.flags & ferry_common::nat::NP_FLAG_LOCAL != 0,
            ))
        })
        .collect();
    frontends.sort();
    Ok(Some(ExternalView {
        frontends,
        conntrack_entries: maps.dump_conntrack().map_err(bpf_err)?.len(),
        counters: maps.stats().map_err(bpf_err)?,
    }))
}

/// Reads the datapath from the maps pinned under `bpffs_dir` (no program loaded; works while the
/// agent is down).
pub fn inspect(bpffs_dir: &Path) -> Result<DatapathView, ProxyError> {
    let maps = LbMaps::open_pinned(bpffs_dir).map_err(bpf_err)?;
    let services = maps.dump_services().map_err(bpf_err)?;
    let backends = maps.dump_backends().map_err(bpf_err)?;
    let ids: HashMap<Backend, u32> = backends
        .iter()
        .map(|(id, b)| (backend_of(b), *id))
        .collect();
    let dp = Datapath::from_entries(&services, &backends);
    let frontends = dp
        .frontends
        .into_iter()
        .map(|(frontend, p)| FrontendView {
            frontend,
            gen: p.gen,
            backends: p
                .backends
                .iter()
                .map(|b| (ids.get(b).copied().unwrap_or(0), *b))
                .collect(),
            affinity: p.affinity,
        })
        .collect();
    Ok(DatapathView {
        frontends,
        counters: maps.stats().map_err(bpf_err)?,
        revnat_entries: maps.dump_revnat().map_err(bpf_err)?.len(),
        affinity_entries: maps.dump_affinity().map_err(bpf_err)?.len(),
        backend_entries: backends.len(),
        external: inspect_external(bpffs_dir)?,
    })
}

impl fmt::Display for DatapathView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<4} {:<28} {:<12} BACKENDS",
            "GEN", "FRONTEND", "AFFINITY"
        )?;
        for v in &self.frontends {
            let aff = v
                .affinity
                .map_or_else(|| "-".to_owned(), |t| format!("ClientIP {t}s"));
            let backends = if v.backends.is_empty() {
                "(none: refused)".to_owned()
            } else {
                v.backends
                    .iter()
                    .map(|(id, b)| format!("{b} (#{id})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            writeln!(
                f,
                "{:<4} {:<28} {:<12} {backends}",
                v.gen,
                v.frontend.to_string(),
                aff
            )?;
        }
        writeln!(
            f,
            "\nmaps: {} frontends, {} backends, {} reverse-NAT, {} affinity entries",
            self.frontends.len(),
            self.backend_entries,
            self.revnat_entries,
            self.affinity_entries
        )?;
        writeln!(f, "counters:")?;
        for (stat, n) in &self.counters {
            writeln!(f, "  {:<22} {n}", stat.name())?;
        }
        if let Some(ext) = &self.external {
            writeln!(
                f,
                "\nfrom outside the node (tc): {} frontends, {} conntrack entries",
                ext.frontends.len(),
                ext.conntrack_entries
            )?;
            for (fe, row, count, local) in &ext.frontends {
                let policy = if *local { "Local" } else { "Cluster" };
                writeln!(
                    f,
                    "  {:<28} row {row:<4} {count} backends, externalTrafficPolicy {policy}",
                    fe.to_string()
                )?;
            }
            for (stat, n) in &ext.counters {
                writeln!(f, "  {:<22} {n}", stat.name())?;
            }
        }
        Ok(())
    }
}

impl DatapathView {
    /// The view as JSON (`ferry-agent services -o json`).
    pub fn to_json(&self) -> serde_json::Value {
        let frontends: Vec<_> = self
            .frontends
            .iter()
            .map(|v| {
                serde_json::json!({
                    "frontend": v.frontend.to_string(),
                    "address": v.frontend.addr.to_string(),
                    "port": v.frontend.port,
                    "protocol": v.frontend.proto.name(),
                    "generation": v.gen,
                    "affinityTimeoutSeconds": v.affinity,
                    "backends": v.backends.iter().map(|(id, b)| serde_json::json!({
                        "id": id, "address": b.addr.to_string(), "port": b.port,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let counters: serde_json::Map<String, serde_json::Value> = self
            .counters
            .iter()
            .map(|(s, n)| (s.name().to_owned(), serde_json::Value::from(*n)))
            .collect();
        let external = self.external.as_ref().map(|e| {
            serde_json::json!({
                "frontends": e.frontends.iter().map(|(fe, row, count, local)| serde_json::json!({
                    "frontend": fe.to_string(), "row": row, "backends": count,
                    "externalTrafficPolicy": if *local { "Local" } else { "Cluster" },
                })).collect::<Vec<_>>(),
                "conntrackEntries": e.conntrack_entries,
                "counters": e.counters.iter().map(|(s, n)| (s.name().to_owned(), serde_json::Value::from(*n))).collect::<serde_json::Map<_, _>>(),
            })
        });
        serde_json::json!({
            "external": external,
            "frontends": frontends,
            "counters": counters,
            "maps": {
                "backends": self.backend_entries,
                "revnat": self.revnat_entries,
                "affinity": self.affinity_entries,
            },
        })
    }
}

/// Detaches the tc programs a previous agent left attached (link pins) and removes their map
/// pins under `bpffs_dir`, for an agent that runs without the tc datapath (`--external-datapath
/// false`, or enabling it failed): otherwise they would keep translating with frozen maps. The
/// node then serves external traffic on the plain path. Returns how many pins were removed.
pub fn disable_external(bpffs_dir: &Path) -> Result<usize, ProxyError> {
    crate::bpf::unpin_nodeport(bpffs_dir).map_err(bpf_err)
}

/// Detaches the programs (socket hooks and tc links) and removes every pin under `bpffs_dir`
/// (`ferry-agent uninstall`).
pub fn uninstall(bpffs_dir: &Path) -> Result<usize, ProxyError> {
    let tc = crate::bpf::unpin_nodeport(bpffs_dir).map_err(bpf_err)?;
    Ok(tc + crate::bpf::unpin(bpffs_dir).map_err(bpf_err)?)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::super::table::{Entry, FrontendKind, ServicePortName};
    use super::*;

    fn fe(port: u16) -> Frontend {
        Frontend {
            addr: Ipv4Addr::new(10, 96, 0, 10),
            port,
            proto: Proto::Tcp,
        }
    }

    #[test]
    fn a_device_with_another_index_or_none_is_attached_again() {
        let at = |iface: &str, hook, ifindex| Attached {
            iface: iface.to_owned(),
            hook,
            outcome: AttachOutcome::Created,
            ifindex,
        };
        let attached = vec![
            at("eth0", TcHook::UnderlayIngress, 2),
            at("ferry.1", TcHook::OverlayEgress, 3),
            at("ferry0", TcHook::ReplyIngress, 4),
        ];
        let now = |iface: &str| match iface {
            "eth0" => Some(2),
            "ferry.1" => Some(9),
            _ => None,
        };
        assert_eq!(moved_devices(&attached, now), [1, 2]);
        assert!(moved_devices(&attached, |i| attached
            .iter()
            .find(|a| a.iface == i)
            .map(|a| a.ifindex))
        .is_empty());
    }

    #[test]
    fn map_fill_counts_entries_slots_and_backend_ids() {
        let be = |p| Backend {
            addr: Ipv4Addr::new(10, 244, 0, 2),
            port: p,
        };
        let mut programmed = BTreeMap::new();
        programmed.insert(
            fe(80),
            Programmed {
                gen: 1,
                backends: vec![be(1), be(2)],
                affinity: None,
                slots: 2,
            },
        );
        programmed.insert(
            fe(81),
            Programmed {
                gen: 0,
                backends: vec![],
                affinity: None,
                slots: 0,
            },
        );
        let fill = map_fill(&programmed, 2);
        let get = |m: &str| fill.iter().find(|f| f.map == m).cloned().unwrap();
        assert_eq!(get(names::LB4_SERVICES).entries, Some(4));
        assert_eq!(get(names::LB4_SERVICES).capacity, 524_288);
        assert_eq!(get(names::LB4_BACKENDS).entries, Some(2));
        assert_eq!(get(names::LB4_BACKENDS).capacity, 262_144);
        assert_eq!(get(names::LB4_REVNAT).entries, None);
        assert_eq!(get(names::LB4_AFFINITY).capacity, 65_536);
    }

    fn be(last: u8) -> Backend {
        Backend {
            addr: Ipv4Addr::new(10, 244, 0, last),
            port: 8080,
        }
    }

    fn table(entries: &[(Frontend, Vec<Backend>, Option<u32>)]) -> ServiceTable {
        ServiceTable {
            entries: entries
                .iter()
                .map(|(f, b, a)| {
                    (
                        *f,
                        Entry {
                            service: ServicePortName {
                                namespace: "default".into(),
                                name: "web".into(),
                                port: String::new(),
                            },
                            kind: FrontendKind::ClusterIp,
                            backends: b.clone(),
                            local_backends: Vec::new(),
                            external_local: false,
                            affinity_timeout: *a,
                        },
                    )
                })
                .collect(),
            ..ServiceTable::default()
        }
    }

    #[test]
    fn plan_touches_only_what_differs() {
        let mut programmed = BTreeMap::new();
        programmed.insert(
            fe(80),
            Programmed {
                gen: 1,
                backends: vec![be(1), be(2)],
                affinity: None,
                slots: 2,
            },
        );
        programmed.insert(
            fe(81),
            Programmed {
                gen: 0,
                backends: vec![be(1)],
                affinity: None,
                slots: 1,
            },
        );
        programmed.insert(
            fe(82),
            Programmed {
                gen: 0,
                backends: vec![be(3)],
                affinity: None,
                slots: 1,
            },
        );
        let t = table(&[
            (fe(80), vec![be(1), be(2)], None),
            (fe(81), vec![be(1)], Some(30)),
            (fe(83), vec![], None),
        ]);
        let changes = plan(&programmed, &t);
        assert_eq!(changes.len(), 3, "{changes:?}");
        assert!(
            matches!(&changes[0], Change::Affinity { frontend, affinity: Some(30), .. } if *frontend == fe(81))
        );
        assert!(
            matches!(&changes[1], Change::Upsert { frontend, backends, old: None, .. } if *frontend == fe(83) && backends.is_empty())
        );
        assert!(matches!(&changes[2], Change::Remove { frontend, .. } if *frontend == fe(82)));
        assert!(plan(
            &programmed,
            &table(&[
                (fe(80), vec![be(1), be(2)], None),
                (fe(81), vec![be(1)], None),
                (fe(82), vec![be(3)], None),
            ])
        )
        .is_empty());
    }

    #[test]
    fn plan_walks_both_sides_in_order() {
        let p = |b: u8| Programmed {
            gen: 0,
            backends: vec![be(b)],
            affinity: None,
            slots: 1,
        };
        // Removed frontends before, between and after the table's: all removed, after the
        // table's changes, in frontend order; an unchanged one in the middle stays untouched.
        let programmed: BTreeMap<Frontend, Programmed> = [
            (fe(79), p(1)),
            (fe(80), p(2)),
            (fe(82), p(3)),
            (fe(90), p(4)),
        ]
        .into_iter()
        .collect();
        let t = table(&[
            (fe(80), vec![be(2)], None),
            (fe(81), vec![be(5)], None),
            (fe(85), vec![be(6)], None),
        ]);
        let got: Vec<(u16, &str)> = plan(&programmed, &t)
            .iter()
            .map(|c| match c {
                Change::Upsert { frontend, .. } => (frontend.port, "upsert"),
                Change::Affinity { frontend, .. } => (frontend.port, "affinity"),
                Change::Remove { frontend, .. } => (frontend.port, "remove"),
            })
            .collect();
        assert_eq!(
            got,
            [
                (81, "upsert"),
                (85, "upsert"),
                (79, "remove"),
                (82, "remove"),
                (90, "remove")
            ]
        );
        assert_eq!(plan(&programmed, &ServiceTable::default()).len(), 4);
        assert_eq!(plan(&BTreeMap::new(), &t).len(), 3);
    }

    #[test]
    fn backend_ids_are_reference_counted_and_reused() {
        let mut ids = BackendIds::default();
        let (a, new_a) = ids.acquire(be(1));
        let (a2, new_a2) = ids.acquire(be(1));
        let (b, new_b) = ids.acquire(be(2));
        assert_eq!(
            (a, new_a, a2, new_a2, b, new_b),
            (1, true, 1, false, 2, true)
        );
        assert_eq!(ids.release(&be(1)), None);
        assert_eq!(ids.release(&be(1)), Some(1));
        let freed = Instant::now();
        let (c, new_c) = ids.acquire_at(be(3), freed);
        assert_eq!((c, new_c), (3, true), "a freed id rests first");
        let (d, new_d) = ids.acquire_at(be(4), freed + ID_REUSE_AFTER);
        assert_eq!((d, new_d), (1, true), "then it is reused");
        assert_eq!(ids.len(), 3);
    }

    fn key(f: &Frontend) -> Lb4SvcKey {
        service_key(f)
    }

    #[test]
    fn datapath_reads_the_live_generation_and_finds_strays() {
        let f = fe(80);
        let k = key(&f);
        let b1 = Lb4Backend::new(SocketAddrV4::new(be(1).addr, 8080));
        let b2 = Lb4Backend::new(SocketAddrV4::new(be(2).addr, 8080));
        let services = vec![
            (k, Lb4Svc::entry(2, 1, Some(10))),
            (k.with_slot(1, 1), Lb4Svc::slot(7)),
            (k.with_slot(1, 2), Lb4Svc::slot(9)),
            // Left over from an interrupted update: generation 0 is not live.
            (k.with_slot(0, 1), Lb4Svc::slot(7)),
        ];
        let dp = Datapath::from_entries(&services, &[(7, b1), (9, b2), (11, b1)]);
        assert_eq!(
            dp.frontends[&f],
            Programmed {
                gen: 1,
                backends: vec![be(1), be(2)],
                affinity: Some(10),
                slots: 2,
            }
        );
        assert_eq!(dp.stray_slots, vec![k.with_slot(0, 1)]);
        let ids = BackendIds::adopt(&dp);
        assert_eq!(ids.get(&be(2)), Some(9));
        assert_eq!(ids.next, 12);
        // Id 11 duplicates backend 1's address and is unreferenced through id 7's entry.
        assert!(ids.unreferenced().is_empty() || ids.unreferenced().iter().all(|(_, id)| *id != 9));
    }

    #[test]
    fn a_frontend_with_a_missing_slot_is_rewritten() {
        let f = fe(80);
        let k = key(&f);
        let b1 = Lb4Backend::new(SocketAddrV4::new(be(1).addr, 8080));
        // Count 2, but slot 2 is gone: the backends read back match the table, yet the entry
        // would send half the connections nowhere.
        let services = vec![
            (k, Lb4Svc::entry(2, 0, None)),
            (k.with_slot(0, 1), Lb4Svc::slot(7)),
        ];
        let dp = Datapath::from_entries(&services, &[(7, b1)]);
        assert!(!dp.frontends[&f].intact());
        let changes = plan(&dp.frontends, &table(&[(f, vec![be(1)], None)]));
        assert!(matches!(&changes[..], [Change::Upsert { old: Some(old), .. }] if old.slots == 2));
    }

    #[test]
    fn datapath_round_trips_through_the_view_format() {
        let dp = Datapath::from_entries(&[], &[]);
        assert!(dp.frontends.is_empty() && dp.backends.is_empty() && dp.stray_slots.is_empty());
    }
}
