//! [`NodePortTc`]: the `nodeport` object's tc programs (TCX links, pinned), and [`NpMaps`], typed
//! handles on its maps (see `ferry_common::nat` and `ebpf/src/nodeport.rs`).
//!
//! Pins live beside the socket LB's under the per-node bpffs directory:
//!
//! ```text
//! <dir>/FERRY_NP4_SVC FERRY_NP4_BE FERRY_NP4_MAG FERRY_NP4_CT FERRY_NP4_CFG FERRY_NP_STATS
//! <dir>/tcx_<program>@<interface>                      one pinned TCX link per attachment
//! <dir>/xdp_<program>@<interface>                      the opt-in XDP program's pinned link
//! ```
//!
//! A TCX link (kernel >= 6.6) is a `bpf_link`: pinned, it keeps the program attached while the
//! agent is down or after `kill -9`, and a new agent swaps the program behind it with
//! `BPF_LINK_UPDATE` (no moment without a program). The conntrack map being pinned too, a restart
//! loses no external flow. [`unpin`] detaches everything (`ferry-agent uninstall`).

use std::fs;
use std::os::fd::{AsFd as _, BorrowedFd};
use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray};
use aya::programs::{
    links::LinkOrder, tc::TcAttachOptions, SchedClassifier, TcAttachType, Xdp, XdpMode,
};
use aya::Ebpf;
use ferry_common::nat::{names, CtEntry, CtKey, NpBackendKey, NpConfig, NpStat, NpSvc, NpSvcKey};
use ferry_common::Lb4Backend;

use super::util::{self, absent_ok, map_error, program_error};
use super::{object::NODEPORT, AttachOutcome, BpfError};

/// Where a program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcHook {
    /// Ingress of the underlay interface: [`names::EXTERNAL`].
    UnderlayIngress,
    /// Egress of the underlay interface: [`names::EGRESS`].
    UnderlayEgress,
    /// Ingress of the pod bridge or the overlay device: [`names::REPLY`].
    ReplyIngress,
    /// Egress of the overlay device: [`names::EGRESS`], for source-preserving replies that
    /// leave by the overlay without crossing a reply device (the pod fast path sends a pod's
    /// packets for another node's pods straight to it).
    OverlayEgress,
    /// XDP (native) on the underlay interface: [`names::XDP`], opt-in, in front of
    /// [`Self::UnderlayIngress`].
    UnderlayXdp,
}

impl TcHook {
    /// The program this hook runs.
    pub const fn program(self) -> &'static str {
        match self {
            Self::UnderlayIngress => names::EXTERNAL,
            Self::UnderlayEgress | Self::OverlayEgress => names::EGRESS,
            Self::ReplyIngress => names::REPLY,
            Self::UnderlayXdp => names::XDP,
        }
    }

    /// The tc direction of a tc hook; `None` for XDP.
    fn attach_type(self) -> Option<TcAttachType> {
        match self {
            Self::UnderlayEgress | Self::OverlayEgress => Some(TcAttachType::Egress),
            Self::UnderlayIngress | Self::ReplyIngress => Some(TcAttachType::Ingress),
            Self::UnderlayXdp => None,
        }
    }
}

/// The loaded (verified) `nodeport` programs.
#[derive(Debug)]
pub struct NodePortTc {
    ebpf: Ebpf,
    pin_dir: PathBuf,
}

/// Pin name prefix of the TCX links.
const TCX_PREFIX: &str = "tcx_";
/// Pin name prefix of the XDP link.
const XDP_PREFIX: &str = "xdp_";

impl NodePortTc {
    /// Loads the embedded `nodeport` object with its maps pinned under `pin_dir` (pinned maps
    /// reused, replaced if their shape changed, missing ones created), loads the three tc
    /// programs and attaches nothing (the XDP programs are loaded when first attached: a node
    /// without `--external-xdp` never depends on them). Needs
    /// `CAP_BPF` + `CAP_NET_ADMIN`.
    pub fn load(pin_dir: &Path) -> Result<(Self, NpMaps), BpfError> {
        let mut ebpf = util::load_pinned(&NODEPORT, pin_dir)?;
        for name in names::PROGRAMS {
            program_mut(&mut ebpf, name)?
                .load()
                .map_err(|source| program_error("load", name, source))?;
        }
        let maps = NpMaps::take(&mut ebpf)?;
        Ok((
            Self {
                ebpf,
                pin_dir: pin_dir.to_owned(),
            },
            maps,
        ))
    }

    /// The descriptor of the XDP program, loaded if it was not (for `BPF_PROG_TEST_RUN`).
    pub fn xdp_program_fd(&mut self) -> Result<BorrowedFd<'_>, BpfError> {
        let program = self.loaded_xdp(names::XDP)?;
        let fd = program
            .fd()
            .map_err(|source| program_error("fd", names::XDP, source))?;
        Ok(fd.as_fd())
    }

    /// XDP program `name`, loaded (verified) on first use.
    fn loaded_xdp(&mut self, name: &'static str) -> Result<&mut Xdp, BpfError> {
        let program: &mut Xdp = util::program_mut(&mut self.ebpf, NODEPORT.name, name)?;
        if program.fd().is_err() {
            program
                .load()
                .map_err(|source| program_error("load", name, source))?;
        }
        Ok(program)
    }

    /// Attaches the XDP program to `iface` (in the caller's network namespace) in the driver
    /// (native) mode through a pinned link, or swaps the program behind an existing pinned
    /// link. The driver must support native XDP (veth does); no generic-mode fallback, whose
    /// per-packet cost would defeat its purpose. On a veth the **peer** must have an XDP
    /// program of its own ([`Self::attach_xdp_pass`] there), or the `XDP_TX` frames are lost
    /// (measured: with GRO on at the peer and no program there, the kernel counted the frames
    /// sent and none arrived; TCP handshakes never completed). The agent checks this before
    /// calling here.
    pub fn attach_xdp(&mut self, iface: &str) -> Result<AttachOutcome, BpfError> {
        self.attach_xdp_program(names::XDP, iface)
    }

    /// Attaches [`names::XDP_PASS`] to `iface` (native mode, pinned link): for the far end of a
    /// veth underlay, so that the frames [`Self::attach_xdp`]'s program sends back out are
    /// delivered (a lab's switch ports; the tests).
    pub fn attach_xdp_pass(&mut self, iface: &str) -> Result<AttachOutcome, BpfError> {
        self.attach_xdp_program(names::XDP_PASS, iface)
    }

    fn attach_xdp_program(
        &mut self,
        name: &'static str,
        iface: &str,
    ) -> Result<AttachOutcome, BpfError> {
        let pin = xdp_link_pin(&self.pin_dir, name, iface);
        let program = self.loaded_xdp(name)?;
        let prog_fd = program
            .fd()
            .map_err(|source| program_error("fd", name, source))?;
        if util::update_pinned_netdev_link(&pin, prog_fd.as_fd())? {
            return Ok(AttachOutcome::Updated);
        }
        let link_id = program
            .attach(iface, XdpMode::Driver)
            .map_err(|source| program_error("attach (xdp, native)", name, source))?;
        let link = program
            .take_link(link_id)
            .map_err(|source| program_error("take link", name, source))?;
        util::pin_link(link, name, &pin)?;
        Ok(AttachOutcome::Created)
    }

    /// The descriptor of a loaded program (for `BPF_PROG_TEST_RUN`).
    pub fn program_fd(&self, name: &'static str) -> Result<BorrowedFd<'_>, BpfError> {
        let program: &SchedClassifier = util::program(&self.ebpf, NODEPORT.name, name)?;
        let fd = program
            .fd()
            .map_err(|source| program_error("fd", name, source))?;
        Ok(fd.as_fd())
    }

    /// Attaches `hook`'s program to `iface` (in the caller's network namespace) through a
    /// pinned TCX link, or swaps the program behind an existing pinned link
    /// ([`TcHook::UnderlayXdp`]: [`Self::attach_xdp`]).
    pub fn attach(&mut self, iface: &str, hook: TcHook) -> Result<AttachOutcome, BpfError> {
        let Some(attach_type) = hook.attach_type() else {
            return self.attach_xdp(iface);
        };
        let name = hook.program();
        let pin = link_pin(&self.pin_dir, name, iface);
        let program = program_mut(&mut self.ebpf, name)?;
        let prog_fd = program
            .fd()
            .map_err(|source| program_error("fd", name, source))?;
        if util::update_pinned_netdev_link(&pin, prog_fd.as_fd())? {
            return Ok(AttachOutcome::Updated);
        }
        let link_id = program
            .attach_with_options(
                iface,
                attach_type,
                // First on the hook: conntracked NAT must see its packets before any other
                // program (e.g. the pod fast path) decides; unmatched packets go on (TCX_NEXT).
                TcAttachOptions::TcxOrder(LinkOrder::first()),
            )
            .map_err(|source| program_error("attach (tcx)", name, source))?;
        let link = program
            .take_link(link_id)
            .map_err(|source| program_error("take link", name, source))?;
        util::pin_link(link, name, &pin)?;
        Ok(AttachOutcome::Created)
    }
}

/// The pin path of one TCX attachment: `tcx_<program>@<iface>`, the interface name escaped by
/// [`pin_iface`].
fn link_pin(pin_dir: &Path, program: &str, iface: &str) -> PathBuf {
    pin_dir.join(format!("{TCX_PREFIX}{program}@{}", pin_iface(iface)))
}

/// The pin path of `program`'s XDP attachment to `iface`.
fn xdp_link_pin(pin_dir: &Path, program: &str, iface: &str) -> PathBuf {
    pin_dir.join(format!("{XDP_PREFIX}{program}@{}", pin_iface(iface)))
}

/// The interfaces the XDP program's pinned links are attached to.
pub fn xdp_interfaces(pin_dir: &Path) -> Vec<String> {
    interfaces_of(pin_dir, &format!("{XDP_PREFIX}{}@", names::XDP))
}

/// Detaches the XDP program from `iface` (removes its link pin; the kernel detaches when the
/// last reference goes). `false`: it was not attached there.
pub fn detach_xdp(pin_dir: &Path, iface: &str) -> Result<bool, BpfError> {
    Ok(util::remove_pins([xdp_link_pin(pin_dir, names::XDP, iface)])? == 1)
}

/// An interface name as a bpffs file name may hold it: bpffs refuses any name with a `.`
/// (`BPF_OBJ_PIN` fails with `EPERM`), and interface names may have one (`ferry.1`), so `.`
/// becomes `%2e` and `%` itself `%25` (reversed by [`iface_of_pin`]).
fn pin_iface(iface: &str) -> String {
    iface.replace('%', "%25").replace('.', "%2e")
}

/// The interface name a [`pin_iface`] name stands for.
fn iface_of_pin(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("%2e") {
            out.push('.');
            rest = t;
        } else if let Some(t) = tail.strip_prefix("%25") {
            out.push('%');
            rest = t;
        } else {
            out.push('%');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The interfaces `program`'s pinned links are attached to (from the pin names).
pub fn attached_interfaces(pin_dir: &Path, program: &str) -> Vec<String> {
    interfaces_of(pin_dir, &format!("{TCX_PREFIX}{program}@"))
}

/// The interfaces named by the pins under `pin_dir` that start with `prefix`.
fn interfaces_of(pin_dir: &Path, prefix: &str) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(pin_dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix(prefix).map(iface_of_pin))
        })
        .collect();
    out.sort();
    out
}

/// Detaches the tc and XDP programs (removes their link pins) and removes the `nodeport` map
/// pins.
/// Missing pins are fine. Returns how many pins were removed. Leaves the directory (the socket
/// LB's [`super::unpin`] removes it).
pub fn unpin(pin_dir: &Path) -> Result<usize, BpfError> {
    let mut paths: Vec<PathBuf> = fs::read_dir(pin_dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(TCX_PREFIX) || n.starts_with(XDP_PREFIX))
        })
        .map(|e| e.path())
        .collect();
    paths.extend(names::MAPS.iter().map(|m| pin_dir.join(m)));
    util::remove_pins(paths)
}

fn program_mut<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, BpfError> {
    util::program_mut(ebpf, NODEPORT.name, name)
}

/// The six maps of the `nodeport` object, owned.
pub struct NpMaps {
    services: HashMap<MapData, NpSvcKey, NpSvc>,
    backends: HashMap<MapData, NpBackendKey, Lb4Backend>,
    maglev: Array<MapData, u32>,
    conntrack: HashMap<MapData, CtKey, CtEntry>,
    config: Array<MapData, NpConfig>,
    stats: PerCpuArray<MapData, u64>,
}

impl std::fmt::Debug for NpMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NpMaps")
            .field("services", &self.services)
            .field("conntrack", &self.conntrack)
            .finish_non_exhaustive()
    }
}

impl NpMaps {
    /// Opens the maps pinned under `dir` without loading a program (inspection, tests).
    pub fn open_pinned(dir: &Path) -> Result<Self, BpfError> {
        let mut open = |name: &'static str| -> Result<Map, BpfError> {
            let data =
                MapData::from_pin(dir.join(name)).map_err(|e| map_error("open pin", name, e))?;
            Map::from_map_data(data).map_err(|e| map_error("open pin", name, e))
        };
        Self::from_maps(&mut open)
    }

    fn take(ebpf: &mut Ebpf) -> Result<Self, BpfError> {
        let mut take = |name: &'static str| {
            ebpf.take_map(name).ok_or(BpfError::MissingMap {
                object: NODEPORT.name,
                map: name,
            })
        };
        Self::from_maps(&mut take)
    }

    fn from_maps(
        get: &mut dyn FnMut(&'static str) -> Result<Map, BpfError>,
    ) -> Result<Self, BpfError> {
        Ok(Self {
            services: HashMap::try_from(get(names::SERVICES)?)
                .map_err(|e| map_error("type check", names::SERVICES, e))?,
            backends: HashMap::try_from(get(names::BACKENDS)?)
                .map_err(|e| map_error("type check", names::BACKENDS, e))?,
            maglev: Array::try_from(get(names::MAGLEV)?)
                .map_err(|e| map_error("type check", names::MAGLEV, e))?,
            conntrack: HashMap::try_from(get(names::CONNTRACK)?)
                .map_err(|e| map_error("type check", names::CONNTRACK, e))?,
            config: Array::try_from(get(names::CONFIG)?)
                .map_err(|e| map_error("type check", names::CONFIG, e))?,
            stats: PerCpuArray::try_from(get(names::STATS)?)
                .map_err(|e| map_error("type check", names::STATS, e))?,
        })
    }

    /// Every external frontend entry.
    pub fn dump_services(&self) -> Result<Vec<(NpSvcKey, NpSvc)>, BpfError> {
        self.services
            .iter()
            .map(|r| r.map_err(|e| map_error("dump", names::SERVICES, e)))
            .collect()
    }

    /// Every (row, index) -> backend entry.
    pub fn dump_backends(&self) -> Result<Vec<(NpBackendKey, Lb4Backend)>, BpfError> {
        self.backends
            .iter()
            .map(|r| r.map_err(|e| map_error("dump", names::BACKENDS, e)))
            .collect()
    }

    /// Every conntrack entry.
    pub fn dump_conntrack(&self) -> Result<Vec<(CtKey, CtEntry)>, BpfError> {
        self.conntrack
            .iter()
            .map(|r| r.map_err(|e| map_error("dump", names::CONNTRACK, e)))
            .collect()
    }

    /// Writes an external frontend entry.
    pub fn insert_service(&mut self, key: NpSvcKey, value: NpSvc) -> Result<(), BpfError> {
        self.services
            .insert(key, value, 0)
            .map_err(|e| map_error("insert", names::SERVICES, e))
    }

    /// Deletes an external frontend entry; `false` if absent.
    pub fn remove_service(&mut self, key: &NpSvcKey) -> Result<bool, BpfError> {
        absent_ok(self.services.remove(key), names::SERVICES)
    }

    /// Writes a row backend.
    pub fn insert_backend(&mut self, key: NpBackendKey, b: Lb4Backend) -> Result<(), BpfError> {
        self.backends
            .insert(key, b, 0)
            .map_err(|e| map_error("insert", names::BACKENDS, e))
    }

    /// Deletes a row backend; `false` if absent.
    pub fn remove_backend(&mut self, key: &NpBackendKey) -> Result<bool, BpfError> {
        absent_ok(self.backends.remove(key), names::BACKENDS)
    }

    /// Reads one Maglev array entry.
    pub fn maglev_entry(&self, index: u32) -> Result<u32, BpfError> {
        self.maglev
            .get(&index, 0)
            .map_err(|e| map_error("lookup", names::MAGLEV, e))
    }

    /// Writes one Maglev array entry.
    pub fn set_maglev_entry(&mut self, index: u32, value: u32) -> Result<(), BpfError> {
        self.maglev
            .set(index, value, 0)
            .map_err(|e| map_error("update", names::MAGLEV, e))
    }

    /// Length of the Maglev array.
    pub fn maglev_len(&self) -> u32 {
        self.maglev.len()
    }

    /// Writes a conntrack entry (tests; the datapath writes its own).
    pub fn insert_conntrack(&mut self, key: CtKey, value: CtEntry) -> Result<(), BpfError> {
        self.conntrack
            .insert(key, value, 0)
            .map_err(|e| map_error("insert", names::CONNTRACK, e))
    }

    /// One conntrack entry; `None` if absent.
    pub fn conntrack_entry(&self, key: &CtKey) -> Result<Option<CtEntry>, BpfError> {
        match self.conntrack.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_error("lookup", names::CONNTRACK, e)),
        }
    }

    /// Deletes a conntrack entry; `false` if absent.
    pub fn remove_conntrack(&mut self, key: &CtKey) -> Result<bool, BpfError> {
        absent_ok(self.conntrack.remove(key), names::CONNTRACK)
    }

    /// The config element.
    pub fn config(&self) -> Result<NpConfig, BpfError> {
        self.config
            .get(&0, 0)
            .map_err(|e| map_error("lookup", names::CONFIG, e))
    }

    /// Writes the config element.
    pub fn set_config(&mut self, cfg: NpConfig) -> Result<(), BpfError> {
        self.config
            .set(0, cfg, 0)
            .map_err(|e| map_error("update", names::CONFIG, e))
    }

    /// The counters summed over CPUs, in [`NpStat::ALL`] order.
    pub fn stats(&self) -> Result<Vec<(NpStat, u64)>, BpfError> {
        NpStat::ALL
            .iter()
            .map(|&stat| {
                let per_cpu = self
                    .stats
                    .get(&stat.index(), 0)
                    .map_err(|e| map_error("lookup", names::STATS, e))?;
                Ok((stat, per_cpu.iter().copied().fold(0, u64::wrapping_add)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_names_hold_no_dot_and_give_the_interface_back() {
        for iface in ["eth0", "ferry.1", "a.b.c", "x%2e", "%", "v%25.1", "u0"] {
            let pin = pin_iface(iface);
            assert!(!pin.contains('.'), "{iface} -> {pin}");
            assert_eq!(iface_of_pin(&pin), iface, "{pin}");
        }
        assert_eq!(
            link_pin(Path::new("/p"), names::EGRESS, "ferry.1"),
            Path::new("/p/tcx_ferry_np_egr@ferry%2e1")
        );
    }
}
