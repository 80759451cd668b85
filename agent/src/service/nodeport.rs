//! [`NodePortDatapath`]: programs the `nodeport` tc datapath's maps (external frontends, Maglev
//! rows, config) from the [`ServiceTable`], and garbage-collects its connection tracking.
//!
//! Only frontends reachable from outside (NodePort, ExternalIp, LoadBalancer) are written. All
//! frontends of one Service port with one traffic policy share a **row**: the row's backends
//! (`(row, index) -> backend`, indices stable while a backend stays) and its Maglev table
//! (`maglev::table` over the row's backends, entries written as the stable indices). A change
//! is applied in place and stays consistent for the programs at every step: new backends are
//! written first, then only the Maglev entries that differ (each a single atomic array store
//! naming a backend that exists), then the frontends' counts, and removed backends are deleted
//! last. Established flows never depend on the table: conntrack holds them.
//!
//! `externalTrafficPolicy: Local` frontends use the Service's local endpoints and the
//! `NP_FLAG_LOCAL` flag (no SNAT); without a local endpoint the count is 0 and new flows are
//! dropped (what kube-proxy does).
//!
//! Restart: [`NodePortDatapath::new`] reads the frontends and row backends back; the first sync
//! adopts the row a frontend already uses (same indices, only differing Maglev entries
//! rewritten), so a restarted agent never reshuffles backends.
//!
//! [`NodePortDatapath::gc`] deletes conntrack pairs whose both directions expired, and the UDP
//! flows whose backend left the frontend (kube-proxy clears UDP conntrack the same way; TCP
//! flows to a gone backend die with the backend). It walks the whole map, so the proxier runs
//! it periodically and right after a backend left ([`NodePortDatapath::gc_wanted`]), not at
//! every sync.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::RangeInclusive;

use ferry_common::nat::{
    CtKey, NpBackendKey, NpConfig, NpStat, NpSvc, NpSvcKey, NP4_CT_MAX_ENTRIES, NP_FLAG_LOCAL,
};
use ferry_common::{Lb4Backend, IPPROTO_UDP};

use super::maglev;
use super::table::{Backend, Frontend, FrontendKind, Proto, ServicePortName, ServiceTable};
use super::{MapFill, ProxyError, SyncStats};
use crate::bpf::{BpfError, NpMaps};

/// Default NAT source port range for `externalTrafficPolicy: Cluster` flows: the upper half of
/// the port space, which holds the ephemeral ports of Linux clients (32768-60999) and of most
/// others (49152-65535), so the datapath can keep a client's own port (see docs/services.md,
/// "Connection tracking"); a port a socket of the node holds is skipped.
pub const DEFAULT_NAT_PORTS: RangeInclusive<u16> = 32_768..=65_535;

/// The node-level settings of the tc datapath.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePortConfig {
    /// The SNAT source address (the node's underlay address).
    pub node_addr: Ipv4Addr,
    /// NAT source ports.
    pub nat_ports: RangeInclusive<u16>,
    /// Maglev table size (prime, checked by [`maglev::check_size`]).
    pub maglev_size: u32,
    /// The cluster-wide seed (flow hash and Maglev permutations).
    pub seed: u64,
}

impl NodePortConfig {
    fn to_map(&self) -> NpConfig {
        NpConfig {
            node_addr: u32::from_ne_bytes(self.node_addr.octets()),
            port_min: *self.nat_ports.start(),
            port_max: *self.nat_ports.end(),
            maglev_size: self.maglev_size,
            pad: 0,
            seed: self.seed,
        }
    }
}

/// The frontends of one Service port with one external traffic policy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Group {
    service: ServicePortName,
    local: bool,
}

/// One Maglev row as programmed.
#[derive(Debug, Clone, Default)]
struct Row {
    row: u32,
    /// Stable index -> backend.
    slots: Vec<Option<Backend>>,
    /// The Maglev entries as written (stable indices); empty: nothing known, write all.
    written: Vec<u32>,
}

impl Row {
    fn live(&self) -> Vec<(u32, Backend)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, b)| Some((u32::try_from(i).ok()?, (*b)?)))
            .collect()
    }
}

/// What the datapath holds when read back (for adoption).
#[derive(Debug, Default)]
struct Adopted {
    frontends: BTreeMap<Frontend, NpSvc>,
    rows: BTreeMap<u32, Vec<Option<Backend>>>,
}

/// The programmer of the `nodeport` maps.
#[derive(Debug)]
pub struct NodePortDatapath {
    maps: NpMaps,
    cfg: NodePortConfig,
    rows: BTreeMap<Group, Row>,
    frontends: BTreeMap<Frontend, (Group, NpSvc)>,
    free_rows: Vec<u32>,
    next_row: u32,
    max_rows: u32,
    adopted: Option<Adopted>,
    /// Conntrack entries left by the last [`NodePortDatapath::gc`].
    ct_entries: Option<u64>,
    /// A row lost a backend since the last GC (its UDP flows must go now, not at the next
    /// periodic GC).
    backend_removed: bool,
}

fn bpf_err(e: &BpfError) -> ProxyError {
    let mut s = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    ProxyError::Bpf(s)
}

fn svc_key(f: &Frontend) -> NpSvcKey {
    NpSvcKey::new(SocketAddrV4::new(f.addr, f.port), f.proto.number())
}

fn frontend_of(k: &NpSvcKey) -> Option<Frontend> {
    let a = k.socket_addr();
    let proto = match k.proto {
        6 => Proto::Tcp,
        17 => Proto::Udp,
        _ => return None,
    };
    Some(Frontend {
        addr: *a.ip(),
        port: a.port(),
        proto,
    })
}

fn lb_backend(b: &Backend) -> Lb4Backend {
    Lb4Backend::new(SocketAddrV4::new(b.addr, b.port))
}

/// The external frontends of `table`, grouped: group -> (backends, frontends).
fn desired(table: &ServiceTable) -> BTreeMap<Group, (Vec<Backend>, Vec<Frontend>)> {
    let mut out: BTreeMap<Group, (Vec<Backend>, Vec<Frontend>)> = BTreeMap::new();
    for (f, e) in &table.entries {
        if e.kind == FrontendKind::ClusterIp {
            continue;
        }
        let group = Group {
            service: e.service.clone(),
            local: e.external_local,
        };
        let backends = if e.external_local {
            &e.local_backends
        } else {
            &e.backends
        };
        let slot = out
            .entry(group)
            .or_insert_with(|| (backends.clone(), Vec::new()));
        slot.1.push(*f);
    }
    out
}

impl NodePortDatapath {
    /// Takes the loaded maps, writes the node config (validated) and reads back what a previous
    /// agent programmed.
    pub fn new(mut maps: NpMaps, cfg: NodePortConfig) -> Result<Self, ProxyError> {
        maglev::check_size(cfg.maglev_size).map_err(|e| ProxyError::Bpf(e.to_string()))?;
        if cfg.nat_ports.is_empty() {
            return Err(ProxyError::Bpf(format!(
                "empty NAT port range {:?}",
                cfg.nat_ports
            )));
        }
        let max_rows = maps.maglev_len() / cfg.maglev_size;
        let old = maps.config().map_err(|e| bpf_err(&e))?;
        let mut adopted = Adopted::default();
        // Rows written for another table size cannot be adopted: start over (the frontends are
        // rewritten at the first sync; conntrack keeps the flows).
        let same_size = old.maglev_size == cfg.maglev_size;
        for (k, v) in maps.dump_services().map_err(|e| bpf_err(&e))? {
            match frontend_of(&k) {
                Some(f) if same_size && v.row < max_rows => {
                    adopted.frontends.insert(f, v);
                    // A row without backends (a frontend that drops) is a row too.
                    adopted.rows.entry(v.row).or_default();
                }
                _ => {
                    maps.remove_service(&k).map_err(|e| bpf_err(&e))?;
                }
            }
        }
        for (k, b) in maps.dump_backends().map_err(|e| bpf_err(&e))? {
            let live = adopted.frontends.values().any(|s| s.row == k.row);
            let Ok(index) = usize::try_from(k.index) else {
                continue;
            };
            if !live || index >= 65_536 {
                maps.remove_backend(&k).map_err(|e| bpf_err(&e))?;
                continue;
            }
            let slots = adopted.rows.entry(k.row).or_default();
            if slots.len() <= index {
                slots.resize(index + 1, None);
            }
            let a = b.socket_addr();
            slots[index] = Some(Backend {
                addr: *a.ip(),
                port: a.port(),
            });
        }
        maps.set_config(cfg.to_map()).map_err(|e| bpf_err(&e))?;
        Ok(Self {
            maps,
            cfg,
            rows: BTreeMap::new(),
            frontends: BTreeMap::new(),
            free_rows: Vec::new(),
            next_row: 0,
            max_rows,
            adopted: Some(adopted),
            ct_entries: None,
            backend_removed: false,
        })
    }

    /// The maps (tests, inspection).
    pub fn maps(&self) -> &NpMaps {
        &self.maps
    }

    /// Mutable maps (tests).
    pub fn maps_mut(&mut self) -> &mut NpMaps {
        &mut self.maps
    }

    /// The row and count programmed for an external frontend.
    pub fn frontend(&self, f: &Frontend) -> Option<NpSvc> {
        self.frontends.get(f).map(|(_, s)| *s)
    }

    /// The backends of a frontend's row by stable index (what the Maglev entries name).
    pub fn row_backends(&self, f: &Frontend) -> Option<Vec<(u32, Backend)>> {
        let (g, _) = self.frontends.get(f)?;
        self.rows.get(g).map(Row::live)
    }

    /// Makes the maps match `table`'s external frontends.
    pub fn sync(&mut self, table: &ServiceTable) -> Result<SyncStats, ProxyError> {
        let want = desired(table);
        let mut stats = SyncStats::default();
        let mut adopted = self.adopted.take().unwrap_or_default();
        // Frontends that leave (or change group) first, so their rows can be freed below.
        let keep: BTreeMap<Frontend, &Group> = want
            .iter()
            .flat_map(|(g, (_, fs))| fs.iter().map(move |f| (*f, g)))
            .collect();
        let leaving: Vec<Frontend> = self
            .frontends
            .iter()
            .filter(|(f, (g, _))| keep.get(*f) != Some(&g))
            .map(|(f, _)| *f)
            .collect();
        for f in leaving {
            self.maps
                .remove_service(&svc_key(&f))
                .map_err(|e| bpf_err(&e))?;
            self.frontends.remove(&f);
            stats.removed += 1;
        }
        for (group, (backends, fronts)) in &want {
            match self.sync_group(group, backends, fronts, &mut adopted) {
                Ok(changed) => stats.changed += changed,
                Err(e) => {
                    tracing::warn!(service = %group.service, error = %e, "nodeport: row not programmed");
                    stats.failed += fronts.len();
                }
            }
        }
        // Adopted frontends nobody wants any more.
        for f in adopted.frontends.keys() {
            if !self.frontends.contains_key(f) {
                self.maps
                    .remove_service(&svc_key(f))
                    .map_err(|e| bpf_err(&e))?;
                stats.removed += 1;
            }
        }
        // Adopted rows nobody claimed: emptied, and free again (`claim_row` skipped them).
        let claimed: BTreeSet<u32> = self.rows.values().map(|r| r.row).collect();
        for (row, slots) in &adopted.rows {
            for i in 0..slots.len() {
                let key = NpBackendKey {
                    row: *row,
                    index: u32::try_from(i).unwrap_or(u32::MAX),
                };
                self.maps.remove_backend(&key).map_err(|e| bpf_err(&e))?;
            }
            if *row < self.next_row && !claimed.contains(row) {
                self.free_rows.push(*row);
            }
        }
        // Rows of groups that left.
        let gone: Vec<Group> = self
            .rows
            .keys()
            .filter(|g| !want.contains_key(*g))
            .cloned()
            .collect();
        for g in gone {
            if let Some(row) = self.rows.remove(&g) {
                for (i, _) in row.live() {
                    self.maps
                        .remove_backend(&NpBackendKey {
                            row: row.row,
                            index: i,
                        })
                        .map_err(|e| bpf_err(&e))?;
                }
                self.free_rows.push(row.row);
            }
        }
        Ok(stats)
    }

    /// A row for a new group: an adopted one its frontends already use, else a free one.
    fn claim_row(&mut self, fronts: &[Frontend], adopted: &mut Adopted) -> Option<Row> {
        let used: BTreeSet<u32> = self.rows.values().map(|r| r.row).collect();
        for f in fronts {
            let Some(svc) = adopted.frontends.get(f) else {
                continue;
            };
            if used.contains(&svc.row) {
                continue;
            }
            if let Some(slots) = adopted.rows.remove(&svc.row) {
                let written = self.read_row(svc.row).unwrap_or_default();
                return Some(Row {
                    row: svc.row,
                    slots,
                    written,
                });
            }
        }
        let adopted_rows: BTreeSet<u32> = adopted.frontends.values().map(|s| s.row).collect();
        if let Some(row) = self.free_rows.pop() {
            return Some(Row {
                row,
                ..Row::default()
            });
        }
        while self.next_row < self.max_rows {
            let row = self.next_row;
            self.next_row += 1;
            if !used.contains(&row) && !adopted_rows.contains(&row) {
                return Some(Row {
                    row,
                    ..Row::default()
                });
            }
        }
        None
    }

    fn read_row(&self, row: u32) -> Result<Vec<u32>, BpfError> {
        let base = row * self.cfg.maglev_size;
        (0..self.cfg.maglev_size)
            .map(|i| self.maps.maglev_entry(base + i))
            .collect()
    }

    /// Brings one group's row and frontends up to date; returns the frontends changed.
    fn sync_group(
        &mut self,
        group: &Group,
        backends: &[Backend],
        fronts: &[Frontend],
        adopted: &mut Adopted,
    ) -> Result<usize, ProxyError> {
        let mut row = match self.rows.remove(group) {
            Some(r) => r,
            None => self.claim_row(fronts, adopted).ok_or_else(|| {
                ProxyError::Bpf(format!(
                    "no free Maglev row ({} rows of {} entries)",
                    self.max_rows, self.cfg.maglev_size
                ))
            })?,
        };
        let result = self.apply_row(&mut row, backends);
        let changed = match result {
            Ok(()) => self.write_frontends(group, &row, fronts, adopted),
            Err(e) => Err(e),
        };
        self.rows.insert(group.clone(), row);
        changed
    }

    /// Steps 1-2 and 4 of the module docs for one row.
    fn apply_row(&mut self, row: &mut Row, backends: &[Backend]) -> Result<(), ProxyError> {
        let want: BTreeSet<Backend> = backends.iter().copied().collect();
        let have: BTreeSet<Backend> = row.slots.iter().flatten().copied().collect();
        // 1. New backends into free indices.
        for b in want.difference(&have) {
            let index = match row.slots.iter().position(Option::is_none) {
                Some(i) => i,
                None => {
                    row.slots.push(None);
                    row.slots.len() - 1
                }
            };
            let key = NpBackendKey {
                row: row.row,
                index: u32::try_from(index).map_err(|_| ProxyError::Bpf("row index".into()))?,
            };
            self.maps
                .insert_backend(key, lb_backend(b))
                .map_err(|e| bpf_err(&e))?;
            row.slots[index] = Some(*b);
        }
        // 2. The Maglev table over the wanted backends, as stable indices.
        let live: Vec<(u32, Backend)> = row
            .live()
            .into_iter()
            .filter(|(_, b)| want.contains(b))
            .collect();
        let list: Vec<Backend> = live.iter().map(|(_, b)| *b).collect();
        let table = maglev::table(&list, self.cfg.maglev_size, self.cfg.seed)
            .map_err(|e| ProxyError::Bpf(e.to_string()))?;
        let entries: Vec<u32> = table
            .iter()
            .map(|&i| live.get(i as usize).map_or(0, |(idx, _)| *idx))
            .collect();
        if !entries.is_empty() {
            let base = row.row * self.cfg.maglev_size;
            let full = row.written.len() != entries.len();
            for (i, &v) in entries.iter().enumerate() {
                if full || row.written[i] != v {
                    let i = u32::try_from(i).map_err(|_| ProxyError::Bpf("maglev index".into()))?;
                    self.maps
                        .set_maglev_entry(base + i, v)
                        .map_err(|e| bpf_err(&e))?;
                }
            }
            row.written = entries;
        }
        // 4. Backends that left (after the table no longer names them; the frontends' counts
        // are written before by the caller only when growing, so a count never exceeds the set).
        for (i, b) in row.live() {
            if !want.contains(&b) {
                self.maps
                    .remove_backend(&NpBackendKey {
                        row: row.row,
                        index: i,
                    })
                    .map_err(|e| bpf_err(&e))?;
                if let Some(slot) = row.slots.get_mut(i as usize) {
                    *slot = None;
                }
                self.backend_removed = true;
            }
        }
        Ok(())
    }

    /// Step 3: the frontends' entries (row, count, flags); returns how many changed.
    fn write_frontends(
        &mut self,
        group: &Group,
        row: &Row,
        fronts: &[Frontend],
        adopted: &Adopted,
    ) -> Result<usize, ProxyError> {
        let count = u16::try_from(row.live().len())
            .map_err(|_| ProxyError::Bpf("too many backends".into()))?;
        let value = NpSvc {
            row: row.row,
            count: if row.written.is_empty() { 0 } else { count },
            flags: if group.local { NP_FLAG_LOCAL } else { 0 },
            pad: 0,
        };
        let mut changed = 0;
        for f in fronts {
            if self.frontends.get(f).map(|(_, s)| *s) == Some(value) {
                continue;
            }
            if !self.frontends.contains_key(f) && adopted.frontends.get(f) == Some(&value) {
                // Adopted as it is: nothing to write.
                self.frontends.insert(*f, (group.clone(), value));
                continue;
            }
            self.maps
                .insert_service(svc_key(f), value)
                .map_err(|e| bpf_err(&e))?;
            self.frontends.insert(*f, (group.clone(), value));
            changed += 1;
        }
        Ok(changed)
    }

    /// Deletes conntrack pairs whose both directions expired at monotonic `now_ns`, and UDP
    /// flows whose backend is no longer one of its frontend's. Returns (removed, remaining).
    pub fn gc(&mut self, now_ns: u64) -> Result<(usize, usize), ProxyError> {
        self.backend_removed = false;
        let entries = self.maps.dump_conntrack().map_err(|e| bpf_err(&e))?;
        let all: BTreeMap<CtKey, ferry_common::nat::CtEntry> = entries.into_iter().collect();
        let mut doomed: BTreeSet<CtKey> = BTreeSet::new();
        let mut doomed_by_expiry: BTreeSet<CtKey> = BTreeSet::new();
        for (k, v) in &all {
            let partner = v.partner(k.proto);
            let partner_dead = all.get(&partner).is_none_or(|p| p.expired(now_ns));
            if v.expired(now_ns) && partner_dead {
                doomed.insert(*k);
                doomed.insert(partner);
                doomed_by_expiry.insert(*k);
                doomed_by_expiry.insert(partner);
                continue;
            }
            if k.proto == IPPROTO_UDP && !v.is_reply() && self.backend_gone(k, v) {
                doomed.insert(*k);
                doomed.insert(partner);
            }
        }
        let mut removed = 0;
        for k in &doomed {
            // Re-read first: the datapath may have refreshed or recreated the entry since the
            // dump (a new flow on the tuple); only the entry the decision was made on goes.
            let now_entry = self.maps.conntrack_entry(k).map_err(|e| bpf_err(&e))?;
            let (Some(current), Some(dumped)) = (now_entry, all.get(k)) else {
                continue;
            };
            // A flow doomed by expiry must not have been refreshed; one doomed because its
            // backend left (live traffic keeps refreshing it) must still go to that backend.
            let unchanged = if doomed_by_expiry.contains(k) {
                current == *dumped
            } else {
                current.partner(k.proto) == dumped.partner(k.proto)
            };
            if !unchanged {
                continue;
            }
            if self.maps.remove_conntrack(k).map_err(|e| bpf_err(&e))? {
                removed += 1;
            }
        }
        let left = all.len().saturating_sub(removed);
        self.ct_entries = Some(left as u64);
        Ok((removed, left))
    }

    /// The flow's frontend is ours and its backend is not in the frontend's row any more.
    fn backend_gone(&self, k: &CtKey, v: &ferry_common::nat::CtEntry) -> bool {
        let Some(f) = frontend_of(&NpSvcKey {
            addr: k.daddr,
            port: k.dport,
            proto: k.proto,
            pad: 0,
        }) else {
            return false;
        };
        let Some((g, _)) = self.frontends.get(&f) else {
            return false;
        };
        let Some(row) = self.rows.get(g) else {
            return false;
        };
        let dst = CtKey {
            daddr: v.daddr,
            dport: v.dport,
            ..*k
        }
        .dst();
        !row.live()
            .iter()
            .any(|(_, b)| b.addr == *dst.ip() && b.port == dst.port())
    }

    /// A backend left a row since the last GC: run one now (UDP flows to it must move).
    pub fn gc_wanted(&self) -> bool {
        self.backend_removed
    }

    /// The datapath's counters.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        self.maps
            .stats()
            .map(|v| v.into_iter().map(|(s, n)| (s.name(), n)).collect())
            .unwrap_or_default()
    }

    /// Map fill: frontends, row backends and conntrack entries (as counted by the last GC).
    pub fn map_fill(&self) -> Vec<MapFill> {
        let backends: usize = self.rows.values().map(|r| r.live().len()).sum();
        vec![
            MapFill {
                map: ferry_common::nat::names::SERVICES,
                entries: Some(self.frontends.len() as u64),
                capacity: u64::from(ferry_common::nat::NP4_SERVICES_MAX_ENTRIES),
            },
            MapFill {
                map: ferry_common::nat::names::BACKENDS,
                entries: Some(backends as u64),
                capacity: u64::from(ferry_common::nat::NP4_BACKENDS_MAX_ENTRIES),
            },
            MapFill {
                map: ferry_common::nat::names::CONNTRACK,
                entries: self.ct_entries,
                capacity: u64::from(NP4_CT_MAX_ENTRIES),
            },
        ]
    }

    /// Which drop counter names exist (for documentation and tests).
    pub fn drop_counters() -> Vec<&'static str> {
        NpStat::ALL
            .iter()
            .map(|s| s.name())
            .filter(|n| n.starts_with("drop_"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::table::Entry;
    use super::*;

    fn be(last: u8) -> Backend {
        Backend {
            addr: Ipv4Addr::new(10, 244, 1, last),
            port: 8080,
        }
    }

    fn entry(name: &str, kind: FrontendKind, local: bool) -> Entry {
        Entry {
            service: ServicePortName {
                namespace: "default".into(),
                name: name.into(),
                port: String::new(),
            },
            kind,
            backends: vec![be(1), be(2)],
            local_backends: vec![be(1)],
            external_local: local,
            affinity_timeout: None,
        }
    }

    fn fe(addr: [u8; 4], port: u16) -> Frontend {
        Frontend {
            addr: Ipv4Addr::from(addr),
            port,
            proto: Proto::Tcp,
        }
    }

    #[test]
    fn desired_groups_external_frontends_by_service_and_policy() {
        let mut t = ServiceTable::default();
        t.entries.insert(
            fe([10, 96, 0, 1], 80),
            entry("web", FrontendKind::ClusterIp, false),
        );
        t.entries.insert(
            fe([10, 99, 0, 10], 30080),
            entry("web", FrontendKind::NodePort, false),
        );
        t.entries.insert(
            fe([10, 99, 0, 11], 30080),
            entry("web", FrontendKind::NodePort, false),
        );
        t.entries.insert(
            fe([10, 99, 0, 200], 80),
            entry("web", FrontendKind::LoadBalancer, false),
        );
        t.entries.insert(
            fe([10, 99, 0, 10], 30081),
            entry("loc", FrontendKind::NodePort, true),
        );
        let d = desired(&t);
        assert_eq!(d.len(), 2, "{d:?}");
        let web = &d[&Group {
            service: t.entries[&fe([10, 99, 0, 10], 30080)].service.clone(),
            local: false,
        }];
        assert_eq!(web.0, vec![be(1), be(2)]);
        assert_eq!(
            web.1.len(),
            3,
            "both node addresses and the LB IP share a row"
        );
        assert!(!web.1.contains(&fe([10, 96, 0, 1], 80)), "ClusterIPs never");
        let loc = d
            .iter()
            .find(|(g, _)| g.local)
            .map(|(_, v)| v)
            .expect("local group");
        assert_eq!(loc.0, vec![be(1)], "ETP Local: the local endpoints");
    }

    #[test]
    fn config_is_written_in_wire_order() {
        let c = NodePortConfig {
            node_addr: Ipv4Addr::new(10, 99, 0, 10),
            nat_ports: DEFAULT_NAT_PORTS,
            maglev_size: 16_381,
            seed: 9,
        }
        .to_map();
        assert_eq!(c.node_addr.to_ne_bytes(), [10, 99, 0, 10]);
        assert_eq!((c.port_min, c.port_max), (32_768, 65_535));
        assert_eq!((c.maglev_size, c.seed), (16_381, 9));
    }
}
