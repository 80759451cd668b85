//! [`LbMaps`]: typed handles on the socket load balancer's maps (see `ferry_common::lb`).

use std::path::Path;

use aya::maps::{HashMap, Map, MapData, MapError, PerCpuArray};
use aya::Ebpf;
use ferry_common::{
    names, Lb4Affinity, Lb4AffinityKey, Lb4Backend, Lb4RevNat, Lb4RevNatKey, Lb4Svc, Lb4SvcKey,
    LbStat,
};

use super::util::{absent_ok, map_error};
use super::{object::SOCK_LB, BpfError};

/// The five maps of the `sock-lb` object, owned (the kernel keeps them alive through their pins
/// and the loaded programs, not through this value).
pub struct LbMaps {
    services: HashMap<MapData, Lb4SvcKey, Lb4Svc>,
    backends: HashMap<MapData, u32, Lb4Backend>,
    revnat: HashMap<MapData, Lb4RevNatKey, Lb4RevNat>,
    affinity: HashMap<MapData, Lb4AffinityKey, Lb4Affinity>,
    stats: PerCpuArray<MapData, u64>,
}

impl std::fmt::Debug for LbMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // aya's `PerCpuArray` has no `Debug`; the hash maps' handles say enough.
        f.debug_struct("LbMaps")
            .field("services", &self.services)
            .field("backends", &self.backends)
            .finish_non_exhaustive()
    }
}

impl LbMaps {
    /// Opens the maps pinned under `dir` (by name), without loading any program: what
    /// `ferry-agent services` and the tests use, also while the agent is down.
    pub fn open_pinned(dir: &Path) -> Result<Self, BpfError> {
        let open = |name: &'static str| -> Result<Map, BpfError> {
            let data =
                MapData::from_pin(dir.join(name)).map_err(|e| map_error("open pin", name, e))?;
            Map::from_map_data(data).map_err(|e| map_error("open pin", name, e))
        };
        Self::from_maps(
            open(names::LB4_SERVICES)?,
            open(names::LB4_BACKENDS)?,
            open(names::LB4_REVNAT)?,
            open(names::LB4_AFFINITY)?,
            open(names::LB_STATS)?,
        )
    }

    /// Takes the maps out of a loaded object (its programs keep their own references).
    pub(crate) fn take(ebpf: &mut Ebpf) -> Result<Self, BpfError> {
        let mut take = |name: &'static str| {
            ebpf.take_map(name).ok_or(BpfError::MissingMap {
                object: SOCK_LB.name,
                map: name,
            })
        };
        let services = take(names::LB4_SERVICES)?;
        let backends = take(names::LB4_BACKENDS)?;
        let revnat = take(names::LB4_REVNAT)?;
        let affinity = take(names::LB4_AFFINITY)?;
        let stats = take(names::LB_STATS)?;
        Self::from_maps(services, backends, revnat, affinity, stats)
    }

    fn from_maps(
        services: Map,
        backends: Map,
        revnat: Map,
        affinity: Map,
        stats: Map,
    ) -> Result<Self, BpfError> {
        Ok(Self {
            services: HashMap::try_from(services)
                .map_err(|e| map_error("type check", names::LB4_SERVICES, e))?,
            backends: HashMap::try_from(backends)
                .map_err(|e| map_error("type check", names::LB4_BACKENDS, e))?,
            revnat: HashMap::try_from(revnat)
                .map_err(|e| map_error("type check", names::LB4_REVNAT, e))?,
            affinity: HashMap::try_from(affinity)
                .map_err(|e| map_error("type check", names::LB4_AFFINITY, e))?,
            stats: PerCpuArray::try_from(stats)
                .map_err(|e| map_error("type check", names::LB_STATS, e))?,
        })
    }

    /// Every entry of the service map (service entries and slots, unordered).
    pub fn dump_services(&self) -> Result<Vec<(Lb4SvcKey, Lb4Svc)>, BpfError> {
        self.services
            .iter()
            .map(|r| r.map_err(|e| map_error("dump", names::LB4_SERVICES, e)))
            .collect()
    }

    /// Every entry of the backend map.
    pub fn dump_backends(&self) -> Result<Vec<(u32, Lb4Backend)>, BpfError> {
        self.backends
            .iter()
            .map(|r| r.map_err(|e| map_error("dump", names::LB4_BACKENDS, e)))
            .collect()
    }

    /// Every entry of the reverse-NAT map.
    pub fn dump_revnat(&self) -> Result<Vec<(Lb4RevNatKey, Lb4RevNat)>, BpfError> {
        self.revnat
            .iter()
            .map(|r| r.map_err(|e| map_error("dump", names::LB4_REVNAT, e)))
            .collect()
    }

    /// Every entry of the affinity map.
    pub fn dump_affinity(&self) -> Result<Vec<(Lb4AffinityKey, Lb4Affinity)>, BpfError> {
        self.affinity
            .iter()
            .map(|r| r.map_err(|e| map_error("dump", names::LB4_AFFINITY, e)))
            .collect()
    }

    /// The frontend a socket was sent to `backend` for, if the reverse-NAT map remembers it.
    pub fn revnat(&self, key: &Lb4RevNatKey) -> Result<Option<Lb4RevNat>, BpfError> {
        match self.revnat.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_error("lookup", names::LB4_REVNAT, e)),
        }
    }

    /// Writes a service entry or slot.
    pub fn insert_service(&mut self, key: Lb4SvcKey, value: Lb4Svc) -> Result<(), BpfError> {
        self.services
            .insert(key, value, 0)
            .map_err(|e| map_error("insert", names::LB4_SERVICES, e))
    }

    /// Deletes a service entry or slot; `false` if it was not there.
    pub fn remove_service(&mut self, key: &Lb4SvcKey) -> Result<bool, BpfError> {
        absent_ok(self.services.remove(key), names::LB4_SERVICES)
    }

    /// Writes a backend.
    pub fn insert_backend(&mut self, id: u32, backend: Lb4Backend) -> Result<(), BpfError> {
        self.backends
            .insert(id, backend, 0)
            .map_err(|e| map_error("insert", names::LB4_BACKENDS, e))
    }

    /// Deletes a backend; `false` if it was not there.
    pub fn remove_backend(&mut self, id: u32) -> Result<bool, BpfError> {
        absent_ok(self.backends.remove(&id), names::LB4_BACKENDS)
    }

    /// Deletes an affinity entry; `false` if it was not there.
    pub fn remove_affinity(&mut self, key: &Lb4AffinityKey) -> Result<bool, BpfError> {
        absent_ok(self.affinity.remove(key), names::LB4_AFFINITY)
    }

    /// The counters, summed over all CPUs, in [`LbStat::ALL`] order.
    pub fn stats(&self) -> Result<Vec<(LbStat, u64)>, BpfError> {
        LbStat::ALL
            .iter()
            .map(|&stat| {
                let per_cpu = self
                    .stats
                    .get(&stat.index(), 0)
                    .map_err(|e| map_error("lookup", names::LB_STATS, e))?;
                Ok((stat, per_cpu.iter().copied().fold(0, u64::wrapping_add)))
            })
            .collect()
    }
}
