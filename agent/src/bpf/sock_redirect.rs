//! [`SockRedirect`]: the `sock-lb` object's `cgroup/connect4` program and its maps.
//!
//! A process in a cgroup the program is attached to that `connect(2)`s to a frontend in the
//! redirect map is connected to the frontend's backend instead (see `ebpf/src/sock_lb.rs`). This
//! is the seed of the ClusterIP load balancer; today one frontend maps to one backend.
//!
//! Lifetimes: dropping [`SockRedirect`] closes the agent's handles to the program and maps; an
//! attachment still alive keeps the program running in the kernel until the
//! [`CgroupAttachment`] is dropped (or [`CgroupAttachment::detach`]ed). Nothing is pinned.

use std::{fs::File, net::SocketAddrV4, path::Path, path::PathBuf};

use aya::{
    maps::{HashMap, MapData, PerCpuArray},
    programs::{cgroup_sock_addr::CgroupSockAddrLink, CgroupAttachMode, CgroupSockAddr, Link as _},
    Ebpf, EbpfLoader,
};
use ferry_common::{names, Lb4Backend, Lb4Key, LbStat, IPPROTO_TCP, IPPROTO_UDP};

use super::{object::SOCK_LB, BpfError};

/// The transport protocol a redirect applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum L4Proto {
    /// TCP (the `connect4` hook).
    Tcp,
    /// UDP (connected UDP sockets on `connect4`; `sendmsg4` comes with the LB issue).
    Udp,
}

impl L4Proto {
    const fn number(self) -> u8 {
        match self {
            Self::Tcp => IPPROTO_TCP,
            Self::Udp => IPPROTO_UDP,
        }
    }
}

/// Counters of the `sock-lb` programs, summed over all CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedirectStats {
    /// Times `connect4` ran (every IPv4 `connect(2)` in an attached cgroup).
    pub connect4_calls: u64,
    /// Times `connect4` rewrote the destination.
    pub connect4_rewrites: u64,
}

/// The loaded (verified) `sock-lb` object: the `connect4` program and its maps.
#[derive(Debug)]
pub struct SockRedirect {
    ebpf: Ebpf,
}

impl SockRedirect {
    /// Loads the embedded `sock-lb` object: creates its maps and loads the `connect4` program
    /// into the kernel (where the verifier checks it). Attaches nothing.
    ///
    /// Needs `CAP_BPF` + `CAP_NET_ADMIN` (or root).
    pub fn load() -> Result<Self, BpfError> {
        let bytes = SOCK_LB.bytes()?;
        let mut ebpf = EbpfLoader::new()
            .load(bytes)
            .map_err(|source| BpfError::Load {
                object: SOCK_LB.name,
                source: Box::new(source),
            })?;
        let program = connect4(&mut ebpf)?;
        program
            .load()
            .map_err(|source| program_error("load", source))?;
        Ok(Self { ebpf })
    }

    /// The kernel's id of the loaded `connect4` program (as shown by `bpftool prog show`).
    pub fn program_id(&self) -> Result<u32, BpfError> {
        let program: &CgroupSockAddr = self
            .ebpf
            .program(names::CONNECT4)
            .ok_or(BpfError::MissingProgram {
                object: SOCK_LB.name,
                program: names::CONNECT4,
            })?
            .try_into()
            .map_err(|source| program_error("type check", source))?;
        let info = program
            .info()
            .map_err(|source| program_error("query", source))?;
        Ok(info.id())
    }

    /// Attaches `connect4` to the cgroup (v2) directory `cgroup_dir`, affecting every process in
    /// it and in its descendants. Other programs attached there are left alone.
    ///
    /// Attaching to a cgroup root affects the whole host (or container): the caller chooses.
    pub fn attach(&mut self, cgroup_dir: &Path) -> Result<CgroupAttachment, BpfError> {
        let cgroup = File::open(cgroup_dir).map_err(|source| BpfError::OpenCgroup {
            path: cgroup_dir.to_owned(),
            source,
        })?;
        let program = connect4(&mut self.ebpf)?;
        let link_id = program
            .attach(&cgroup, CgroupAttachMode::Single)
            .map_err(|source| program_error("attach", source))?;
        // Own the link: aya's link detaches when dropped, independently of `self`.
        let link = program
            .take_link(link_id)
            .map_err(|source| program_error("take link", source))?;
        Ok(CgroupAttachment {
            link: Some(link),
            cgroup: cgroup_dir.to_owned(),
        })
    }

    /// Redirects `connect(2)`s to `frontend` (for `proto`) to `backend`, replacing any earlier
    /// backend for that frontend.
    pub fn insert_redirect(
        &mut self,
        proto: L4Proto,
        frontend: SocketAddrV4,
        backend: SocketAddrV4,
    ) -> Result<(), BpfError> {
        let mut map = self.services_mut()?;
        map.insert(
            Lb4Key::new(frontend, proto.number()),
            Lb4Backend::new(backend),
            0,
        )
        .map_err(|source| map_error("insert", names::LB4_SERVICES, source))
    }

    /// Removes the redirect of `frontend`; returns whether there was one.
    pub fn remove_redirect(
        &mut self,
        proto: L4Proto,
        frontend: SocketAddrV4,
    ) -> Result<bool, BpfError> {
        let mut map = self.services_mut()?;
        match map.remove(&Lb4Key::new(frontend, proto.number())) {
            Ok(()) => Ok(true),
            Err(aya::maps::MapError::KeyNotFound) => Ok(false),
            Err(source) => Err(map_error("remove", names::LB4_SERVICES, source)),
        }
    }

    /// The backend `frontend` is redirected to, if any.
    pub fn redirect(
        &self,
        proto: L4Proto,
        frontend: SocketAddrV4,
    ) -> Result<Option<SocketAddrV4>, BpfError> {
        let map: HashMap<&MapData, Lb4Key, Lb4Backend> =
            HashMap::try_from(self.map(names::LB4_SERVICES)?)
                .map_err(|source| map_error("open", names::LB4_SERVICES, source))?;
        match map.get(&Lb4Key::new(frontend, proto.number()), 0) {
            Ok(backend) => Ok(Some(backend.socket_addr())),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(map_error("lookup", names::LB4_SERVICES, source)),
        }
    }

    /// Reads the counters, summed over all CPUs.
    pub fn stats(&self) -> Result<RedirectStats, BpfError> {
        let map: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(self.map(names::LB_STATS)?)
            .map_err(|source| map_error("open", names::LB_STATS, source))?;
        let read = |stat: LbStat| -> Result<u64, BpfError> {
            let per_cpu = map
                .get(&stat.index(), 0)
                .map_err(|source| map_error("lookup", names::LB_STATS, source))?;
            Ok(per_cpu.iter().copied().fold(0, u64::wrapping_add))
        };
        Ok(RedirectStats {
            connect4_calls: read(LbStat::Connect4Calls)?,
            connect4_rewrites: read(LbStat::Connect4Rewrites)?,
        })
    }

    fn map(&self, name: &'static str) -> Result<&aya::maps::Map, BpfError> {
        self.ebpf.map(name).ok_or(BpfError::MissingMap {
            object: SOCK_LB.name,
            map: name,
        })
    }

    fn services_mut(&mut self) -> Result<HashMap<&mut MapData, Lb4Key, Lb4Backend>, BpfError> {
        let map = self
            .ebpf
            .map_mut(names::LB4_SERVICES)
            .ok_or(BpfError::MissingMap {
                object: SOCK_LB.name,
                map: names::LB4_SERVICES,
            })?;
        HashMap::try_from(map).map_err(|source| map_error("open", names::LB4_SERVICES, source))
    }
}

/// `connect4` attached to one cgroup. Dropping it detaches the program (errors ignored); use
/// [`CgroupAttachment::detach`] to see them.
#[derive(Debug)]
pub struct CgroupAttachment {
    link: Option<CgroupSockAddrLink>,
    cgroup: PathBuf,
}

impl CgroupAttachment {
    /// The cgroup directory the program is attached to.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// Detaches the program from the cgroup.
    pub fn detach(mut self) -> Result<(), BpfError> {
        match self.link.take() {
            Some(link) => link
                .detach()
                .map_err(|source| program_error("detach", source)),
            None => Ok(()),
        }
    }
}

impl Drop for CgroupAttachment {
    fn drop(&mut self) {
        if let Some(link) = self.link.take() {
            // Best effort: `detach` is the way to observe failures.
            let _ignored = link.detach();
        }
    }
}

fn connect4(ebpf: &mut Ebpf) -> Result<&mut CgroupSockAddr, BpfError> {
    let program = ebpf
        .program_mut(names::CONNECT4)
        .ok_or(BpfError::MissingProgram {
            object: SOCK_LB.name,
            program: names::CONNECT4,
        })?;
    program
        .try_into()
        .map_err(|source| program_error("type check", source))
}

fn program_error(op: &'static str, source: aya::programs::ProgramError) -> BpfError {
    BpfError::Program {
        op,
        program: names::CONNECT4,
        source: Box::new(source),
    }
}

fn map_error(op: &'static str, map: &'static str, source: aya::maps::MapError) -> BpfError {
    BpfError::Map {
        op,
        map,
        source: Box::new(source),
    }
}
