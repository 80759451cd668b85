//! [`SockLb`]: the `sock-lb` object's cgroup socket programs, with pinned maps and pinned links.
//!
//! Everything lives under one per-node bpffs directory (`--bpffs-dir`, default
//! `/sys/fs/bpf/ferry/<node>`; several agents share one kernel in the lab):
//!
//! ```text
//! <dir>/FERRY_LB4_SVC FERRY_LB4_BE FERRY_LB4_RNAT FERRY_LB4_AFF FERRY_LB_STATS   maps (by name)
//! <dir>/link_ferry_connect4 link_ferry_sendmsg4 link_ferry_recvmsg4 link_ferry_getpeer4
//! ```
//!
//! [`SockLb::load`] creates the maps or reuses the pinned ones (aya's `PinningType::ByName`;
//! one of another shape than this build's is replaced, see `util::remove_stale_pins`), so a
//! restarted agent finds the entries the previous one wrote. [`SockLb::attach`] attaches each
//! program to the cgroup through a `bpf_link` and pins the link; if the link pin exists already
//! (a previous agent), it swaps the program behind it with `BPF_LINK_UPDATE` instead: the hook
//! never runs without a program. Dropping a [`SockLb`] closes the agent's descriptors only; the
//! pins keep the links (and so the programs and maps) alive. [`unpin`] removes everything
//! (`ferry-agent uninstall`).

use std::fs::{self, File};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};

use aya::programs::{CgroupAttachMode, CgroupSockAddr};
use aya::Ebpf;
use ferry_common::names;

use super::util::{self, program_error};
use super::{maps::LbMaps, object::SOCK_LB, BpfError};

/// What [`SockLb::attach`] did for one program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachOutcome {
    /// A new link was created and pinned.
    Created,
    /// A pinned link existed; its program was replaced (`BPF_LINK_UPDATE`).
    Updated,
}

/// The loaded (verified) `sock-lb` programs; their maps are pinned under [`SockLb::pin_dir`].
#[derive(Debug)]
pub struct SockLb {
    ebpf: Ebpf,
    pin_dir: PathBuf,
}

impl SockLb {
    /// Loads the embedded `sock-lb` object with its maps pinned under `pin_dir` (created if
    /// missing; it must be on bpffs): pinned maps are reused (replaced if their shape changed),
    /// missing ones created and pinned. Loads the four programs (the verifier checks them) and attaches nothing.
    /// Returns the maps beside it.
    ///
    /// Needs `CAP_BPF` + `CAP_NET_ADMIN` (or root).
    pub fn load(pin_dir: &Path) -> Result<(Self, LbMaps), BpfError> {
        let mut ebpf = util::load_pinned(&SOCK_LB, pin_dir)?;
        for name in names::PROGRAMS {
            let program = program_mut(&mut ebpf, name)?;
            program
                .load()
                .map_err(|source| program_error("load", name, source))?;
        }
        let maps = LbMaps::take(&mut ebpf)?;
        Ok((
            Self {
                ebpf,
                pin_dir: pin_dir.to_owned(),
            },
            maps,
        ))
    }

    /// The bpffs directory holding the pins.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// The kernel ids of the loaded programs, in [`names::PROGRAMS`] order.
    pub fn program_ids(&self) -> Result<Vec<(&'static str, u32)>, BpfError> {
        names::PROGRAMS
            .iter()
            .map(|&name| {
                let program: &CgroupSockAddr = util::program(&self.ebpf, SOCK_LB.name, name)?;
                let info = program
                    .info()
                    .map_err(|source| program_error("query", name, source))?;
                Ok((name, info.id()))
            })
            .collect()
    }

    /// Makes the four programs serve the cgroup (v2) directory `cgroup_dir` (and everything
    /// below it) through pinned links: creates and pins a link where there is no pin yet, and
    /// replaces the program behind an existing pinned link otherwise (the pinned link keeps the
    /// cgroup it was created for).
    ///
    /// Attaching to a cgroup root affects the whole host (or container): the caller chooses.
    pub fn attach(
        &mut self,
        cgroup_dir: &Path,
    ) -> Result<Vec<(&'static str, AttachOutcome)>, BpfError> {
        let cgroup = File::open(cgroup_dir).map_err(|source| BpfError::OpenCgroup {
            path: cgroup_dir.to_owned(),
            source,
        })?;
        let mut out = Vec::with_capacity(names::PROGRAMS.len());
        for name in names::PROGRAMS {
            let pin = link_pin(&self.pin_dir, name);
            let program = program_mut(&mut self.ebpf, name)?;
            if pin.exists() {
                let link = ferry_sys::bpf::obj_get(&pin).map_err(|source| BpfError::Pin {
                    op: "open link pin",
                    path: pin.clone(),
                    source,
                })?;
                let prog_fd = program
                    .fd()
                    .map_err(|source| program_error("fd", name, source))?;
                ferry_sys::bpf::link_update(link.as_fd(), prog_fd.as_fd()).map_err(|source| {
                    BpfError::Pin {
                        op: "BPF_LINK_UPDATE",
                        path: pin.clone(),
                        source,
                    }
                })?;
                out.push((name, AttachOutcome::Updated));
                continue;
            }
            let link_id = program
                .attach(&cgroup, CgroupAttachMode::Single)
                .map_err(|source| BpfError::AttachCgroup {
                    program: name,
                    path: cgroup_dir.to_owned(),
                    source: Box::new(source),
                })?;
            let link = program
                .take_link(link_id)
                .map_err(|source| program_error("take link", name, source))?;
            util::pin_link(link, name, &pin)?;
            out.push((name, AttachOutcome::Created));
        }
        Ok(out)
    }
}

/// Refuses a pin directory that is not on a bpffs mount (pinning would fail with a bare `EPERM`
/// deep inside aya): the innermost mount containing it (lexically) must be of type `bpf`.
pub(crate) fn check_on_bpffs(pin_dir: &Path) -> Result<(), BpfError> {
    let innermost = ferry_sys::fs::mounts()
        .into_iter()
        .filter(|m| pin_dir.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.components().count());
    match innermost {
        Some(m) if m.fstype == "bpf" => Ok(()),
        other => Err(BpfError::Pin {
            op: "pin directory must be on bpffs (mount -t bpf bpf /sys/fs/bpf):",
            path: pin_dir.to_owned(),
            source: std::io::Error::other(format!(
                "innermost mount is {}",
                other.map_or_else(
                    || "unknown".to_owned(),
                    |m| format!("{} ({})", m.mount_point.display(), m.fstype)
                )
            )),
        }),
    }
}

/// The pin path of a program's cgroup link.
pub(crate) fn link_pin(pin_dir: &Path, program: &str) -> PathBuf {
    pin_dir.join(format!("{}{program}", names::LINK_PREFIX))
}

/// Whether any of the socket LB's cgroup links is pinned under `pin_dir` (its hooks are attached,
/// whether or not an agent runs).
pub fn attached(pin_dir: &Path) -> bool {
    names::PROGRAMS
        .iter()
        .any(|p| link_pin(pin_dir, p).exists())
}

/// Detaches the programs (by removing their link pins; the kernel releases a link whose last
/// reference goes) and removes the map pins and `pin_dir` itself. Missing pins are fine: running
/// it twice is a no-op. Returns how many pins were removed.
pub fn unpin(pin_dir: &Path) -> Result<usize, BpfError> {
    let links = names::PROGRAMS.iter().map(|p| link_pin(pin_dir, p));
    let maps = names::MAPS.iter().map(|m| pin_dir.join(m));
    let removed = util::remove_pins(links.chain(maps))?;
    match fs::remove_dir(pin_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(BpfError::Pin {
                op: "remove directory",
                path: pin_dir.to_owned(),
                source,
            })
        }
    }
    Ok(removed)
}

fn program_mut<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut CgroupSockAddr, BpfError> {
    util::program_mut(ebpf, SOCK_LB.name, name)
}
