//! `ferry-agent uninstall`: removes what the agent installed in the current network namespace:
//! the jumps to our iptables chains and the chains, the VXLAN device `ferry.1` (which takes its
//! neighbour and FDB entries and its onlink routes with it), the persistent TUN device `ferry.udp`, and every main-table route of
//! ferry's protocol 78 (host-gw and direct routes). Files (`subnet.env`, the conflist) and
//! `ip_forward` are left alone. Keeps going past failures and reports them all; running it twice
//! is a no-op.
//!
//! [`uninstall_bpf`] tears down the eBPF socket LB's pins (`--bpffs-dir`): pinned cgroup links
//! and maps keep serving while the agent is down, so only an explicit uninstall removes them.

use crate::masq;
use crate::netlink::Netlink;
use crate::overlay::{peers, DEVICES};

/// What [`uninstall`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    /// The VXLAN or the TUN device was deleted.
    pub device: bool,
    /// Routes of protocol 78 deleted.
    pub routes: usize,
    /// Failures (each a message).
    pub errors: Vec<String>,
}

/// Removes ferry's iptables chains, VXLAN device and routes from the current network namespace.
pub fn uninstall() -> Removed {
    let mut out = Removed::default();
    out.errors
        .extend(masq::uninstall().into_iter().map(|e| e.to_string()));
    // The iptables Service proxier's chains (FERRY-SERVICES, FERRY-SVC-*, FERRY-SEP-*, ...).
    if let Err(e) = crate::service::iptables::uninstall() {
        out.errors.push(e.to_string());
    }
    let mut nl = match Netlink::new() {
        Ok(nl) => nl,
        Err(e) => {
            out.errors.push(format!("opening a netlink socket: {e}"));
            return out;
        }
    };
    for device in DEVICES {
        match nl.link_by_name(device) {
            Ok(Some(l)) => match nl.del_link(l.index) {
                Ok(gone) => out.device |= gone,
                Err(e) => out.errors.push(e.to_string()),
            },
            Ok(None) => {}
            Err(e) => out.errors.push(e.to_string()),
        }
    }
    match nl.main_routes_v4() {
        Ok(routes) => {
            for r in routes
                .iter()
                .filter(|r| r.protocol == peers::ROUTE_PROTOCOL)
            {
                match nl.del_route(r) {
                    Ok(true) => out.routes += 1,
                    Ok(false) => {}
                    Err(e) => out.errors.push(e.to_string()),
                }
            }
        }
        Err(e) => out.errors.push(e.to_string()),
    }
    out
}

/// Detaches the eBPF socket LB and removes its pins under `bpffs_dir` (maps, links, the
/// directory): the only place the pinned datapath is torn down. Returns the pins removed.
pub fn uninstall_bpf(bpffs_dir: &std::path::Path) -> Result<usize, String> {
    // The pod fast path's map pins first: the socket LB's teardown removes the directory.
    let fast = crate::bpf::unpin_fastpath(bpffs_dir).map_err(|e| e.to_string())?;
    crate::service::ebpf::uninstall(bpffs_dir)
        .map(|n| n + fast)
        .map_err(|e| e.to_string())
}
