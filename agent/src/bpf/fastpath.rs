//! [`PodFastPath`]: the `pod-fastpath` object's tc programs and maps (see
//! `ebpf/src/pod_fastpath.rs` and `ferry_common::fastpath`).
//!
//! The maps are pinned by name under the per-node bpffs directory (beside the socket LB's), so
//! the counters survive an agent restart and can be read from the pins. The tc attachments are
//! TCX links owned by the agent process and deliberately *not* pinned: when the agent exits (or
//! dies), the kernel detaches every program and all pod traffic takes the normal bridge path
//! again, so a stale map can never steer packets while no agent keeps it current. A restarted
//! agent empties the pod map and attaches again. A link whose device is deleted stops running
//! with the device; closing it later ([`PodFastPath::detach`]) releases it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use aya::maps::{Array, HashMap, MapData, MapError, PerCpuArray};
use aya::programs::tc::{SchedClassifierLinkId, TcAttachOptions};
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType};
use aya::Ebpf;
use ferry_common::fastpath::{names, pod_ip, pod_key, FastPathConfig, FastPathStat, PodEndpoint};

use super::util::{self, map_error, program_error};
use super::{object::POD_FASTPATH, BpfError};

/// Which program a link runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hook {
    /// `ferry_pod_ingress` on a pod's host-side veth.
    Pod,
    /// `ferry_node_ingress` on `ferry.1` or the underlay interface.
    Node,
}

impl Hook {
    fn program(self) -> &'static str {
        match self {
            Hook::Pod => names::POD_INGRESS,
            Hook::Node => names::NODE_INGRESS,
        }
    }
}

/// The loaded programs, their maps and the links this process holds.
pub struct PodFastPath {
    ebpf: Ebpf,
    pods: HashMap<MapData, u32, PodEndpoint>,
    config: Array<MapData, FastPathConfig>,
    stats: PerCpuArray<MapData, u64>,
    /// (hook, ifindex) -> (interface name, link).
    links: BTreeMap<(Hook, u32), (String, SchedClassifierLinkId)>,
}

impl std::fmt::Debug for PodFastPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodFastPath")
            .field("links", &self.links.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl PodFastPath {
    /// Loads the embedded object with its maps pinned under `pin_dir` (created if missing; it
    /// must be on bpffs), loads both programs (verifier) and attaches nothing.
    ///
    /// Needs `CAP_BPF` + `CAP_NET_ADMIN` (or root).
    pub fn load(pin_dir: &Path) -> Result<Self, BpfError> {
        let mut ebpf = util::load_pinned(&POD_FASTPATH, pin_dir)?;
        for name in names::PROGRAMS {
            program_mut(&mut ebpf, name)?
                .load()
                .map_err(|source| program_error("load", name, source))?;
        }
        let mut take = |name: &'static str| {
            ebpf.take_map(name).ok_or(BpfError::MissingMap {
                object: POD_FASTPATH.name,
                map: name,
            })
        };
        let pods = take(names::PODS)?;
        let config = take(names::CONFIG)?;
        let stats = take(names::STATS)?;
        Ok(Self {
            pods: HashMap::try_from(pods).map_err(|e| map_error("type check", names::PODS, e))?,
            config: Array::try_from(config)
                .map_err(|e| map_error("type check", names::CONFIG, e))?,
            stats: PerCpuArray::try_from(stats)
                .map_err(|e| map_error("type check", names::STATS, e))?,
            ebpf,
            links: BTreeMap::new(),
        })
    }

    /// Writes the config (bridge MAC, pod MTU, cluster network).
    pub fn set_config(&mut self, config: FastPathConfig) -> Result<(), BpfError> {
        self.config
            .set(0, config, 0)
            .map_err(|e| map_error("update", names::CONFIG, e))
    }

    /// The config as the programs see it.
    pub fn config(&self) -> Result<FastPathConfig, BpfError> {
        self.config
            .get(&0, 0)
            .map_err(|e| map_error("lookup", names::CONFIG, e))
    }

    /// Every pod entry.
    pub fn pods(&self) -> Result<BTreeMap<Ipv4Addr, PodEndpoint>, BpfError> {
        self.pods
            .iter()
            .map(|r| {
                r.map(|(k, v)| (pod_ip(k), v))
                    .map_err(|e| map_error("dump", names::PODS, e))
            })
            .collect()
    }

    /// Adds or replaces a pod entry.
    pub fn insert_pod(&mut self, ip: Ipv4Addr, endpoint: PodEndpoint) -> Result<(), BpfError> {
        self.pods
            .insert(pod_key(ip), endpoint, 0)
            .map_err(|e| map_error("insert", names::PODS, e))
    }

    /// Removes a pod entry; `Ok(false)` if there was none.
    pub fn remove_pod(&mut self, ip: Ipv4Addr) -> Result<bool, BpfError> {
        match self.pods.remove(&pod_key(ip)) {
            Ok(()) => Ok(true),
            Err(MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(map_error("delete", names::PODS, e)),
        }
    }

    /// The counters, summed over CPUs, in [`FastPathStat::ALL`] order.
    pub fn stats(&self) -> Result<[u64; FastPathStat::COUNT as usize], BpfError> {
        read_stats(&self.stats)
    }

    /// The interfaces (index, name) `hook` is attached to by this process.
    pub fn attached(&self, hook: Hook) -> BTreeMap<u32, String> {
        self.links
            .iter()
            .filter(|((h, _), _)| *h == hook)
            .map(|((_, index), (name, _))| (*index, name.clone()))
            .collect()
    }

    /// Attaches `hook`'s program to the tc ingress of `ifname` (index `ifindex`) as a TCX link
    /// run after those already there. Already attached there: nothing to do.
    pub fn attach(&mut self, hook: Hook, ifindex: u32, ifname: &str) -> Result<(), BpfError> {
        if self.links.contains_key(&(hook, ifindex)) {
            return Ok(());
        }
        let name = hook.program();
        let program = program_mut(&mut self.ebpf, name)?;
        let link = program
            .attach_with_options(
                ifname,
                TcAttachType::Ingress,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(|source| program_error("attach to tc ingress", name, source))?;
        self.links
            .insert((hook, ifindex), (ifname.to_owned(), link));
        Ok(())
    }

    /// Detaches `hook` from interface `ifindex` (closes the link; for a deleted device that
    /// only releases it). Not attached: nothing to do.
    pub fn detach(&mut self, hook: Hook, ifindex: u32) -> Result<(), BpfError> {
        let Some((_, link)) = self.links.remove(&(hook, ifindex)) else {
            return Ok(());
        };
        let name = hook.program();
        program_mut(&mut self.ebpf, name)?
            .detach(link)
            .map_err(|source| program_error("detach", name, source))
    }

    /// Detaches everything, empties the pod map and zeroes the config: the node is back on the
    /// normal path. Keeps going past failures and returns the first.
    pub fn clear(&mut self) -> Result<(), BpfError> {
        let mut first = None;
        let keys: Vec<_> = self.links.keys().copied().collect();
        for (hook, index) in keys {
            if let Err(e) = self.detach(hook, index) {
                first.get_or_insert(e);
            }
        }
        match self.pods() {
            Ok(pods) => {
                for ip in pods.into_keys() {
                    if let Err(e) = self.remove_pod(ip) {
                        first.get_or_insert(e);
                    }
                }
            }
            Err(e) => {
                first.get_or_insert(e);
            }
        }
        if let Err(e) = self.set_config(FastPathConfig::default()) {
            first.get_or_insert(e);
        }
        first.map_or(Ok(()), Err)
    }
}

fn read_stats(
    stats: &PerCpuArray<MapData, u64>,
) -> Result<[u64; FastPathStat::COUNT as usize], BpfError> {
    let mut out = [0; FastPathStat::COUNT as usize];
    for stat in FastPathStat::ALL {
        let values = stats
            .get(&stat.index(), 0)
            .map_err(|e| map_error("lookup", names::STATS, e))?;
        out[stat.index() as usize] = values.iter().sum();
    }
    Ok(out)
}

/// The counters read from the pinned stats map under `pin_dir` (also while no agent runs);
/// `Ok(None)` when the fast path was never loaded there.
pub fn pinned_stats(
    pin_dir: &Path,
) -> Result<Option<[u64; FastPathStat::COUNT as usize]>, BpfError> {
    let path = pin_dir.join(names::STATS);
    if !path.exists() {
        return Ok(None);
    }
    let data = MapData::from_pin(&path).map_err(|e| map_error("open pin", names::STATS, e))?;
    let map = aya::maps::Map::PerCpuArray(data);
    let stats = PerCpuArray::try_from(map).map_err(|e| map_error("type check", names::STATS, e))?;
    read_stats(&stats).map(Some)
}

/// Removes the fast path's map pins under `pin_dir` (its links are never pinned: they die with
/// the agent). Missing pins are fine. Returns how many were removed.
pub fn unpin(pin_dir: &Path) -> Result<usize, BpfError> {
    util::remove_pins(names::MAPS.iter().map(|m| pin_dir.join(m)))
}

fn program_mut<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, BpfError> {
    util::program_mut(ebpf, POD_FASTPATH.name, name)
}
