//! The VXLAN backend (the default): one kernel VXLAN device `ferry.1` (VNI 1, UDP 8472, no
//! learning, MTU = underlay MTU - 50), and for every remote node three entries, exactly as flannel
//! programs them (datapath reference 3.4), so a ferry node and a flannel node can peer:
//!
//! ```text
//! neighbour  <peer podCIDR .0> lladdr <peer VtepMAC> dev ferry.1 PERMANENT
//! fdb        <peer VtepMAC> dst <peer public-ip> dev ferry.1 self permanent
//! route      <peer podCIDR> via <peer podCIDR .0> dev ferry.1 onlink proto 78
//! ```
//!
//! The device carries the node's own podCIDR network address as a /32 (so host-to-pod traffic
//! has an overlay source). Its MAC ([`vtep_mac`]) is derived from the node name, so it survives
//! reboots and re-creation (datapath pitfall 8); it is published in the `backend-data` annotation.
//! With `--direct-routing`, peers whose public IP is on one of the underlay's subnets get a plain
//! host-gw route instead and no neighbour / FDB entry.
//!
//! Level-triggered like host-gw: every round computes the wanted entries from the full Node list
//! ([`desired`]), dumps what the kernel holds on `ferry.1` and diffs ([`plan_neighbours`],
//! [`plan_fdb`], and [`super::peers::plan`] for the routes). Missing entries are added, changed
//! ones replaced in place, entries on our device that no node owns are deleted. An existing
//! device with the right VNI / port / local address / underlay is **adopted** (only MTU, MAC or
//! the up flag are fixed in place); a restarted agent therefore changes nothing in the kernel.

use super::peers::{self, PeerRoute, Skip};
use crate::health::Fault;
use crate::netlink::{mac_string, Fdb, Mac, Neigh, Netlink, NlError, Route4, Vxlan, VxlanSpec};
use crate::node::NodeInfo;
use ipnetwork::Ipv4Network;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// Name of the VXLAN device (flannel's is `flannel.1`).
pub const DEVICE: &str = "ferry.1";
/// VXLAN network identifier (flannel's default).
pub const VNI: u32 = 1;
/// UDP destination port (the Linux default, flannel's default).
pub const PORT: u16 = 8472;
/// Encapsulation overhead: outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8.
pub const OVERHEAD: u32 = 50;

/// The VTEP MAC of node `name`: FNV-1a (64 bit) of the name, finished with the splitmix64
/// mixer (so names differing in one character differ everywhere), first six bytes, marked
/// locally administered unicast (`x2:..`). Stable across reboots, restarts and builds.
pub fn vtep_mac(name: &str) -> Mac {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"ferry-vtep/".iter().chain(name.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    let b = h.to_be_bytes();
    Mac([(b[0] & 0xfc) | 0x02, b[1], b[2], b[3], b[4], b[5]])
}

/// The `backend-data` annotation: `{"VNI":1,"VtepMAC":"0a:..."}` (flannel's exact format).
pub fn backend_data(mac: &Mac) -> String {
    format!(r#"{{"VNI":{VNI},"VtepMAC":"{}"}}"#, mac_string(mac))
}

/// The device this node wants: `local` is the node's public IP, `underlay` the interface index.
pub fn device_spec(node: &str, local: Ipv4Addr, underlay: u32, mtu: u32) -> VxlanSpec {
    VxlanSpec {
        name: DEVICE.to_owned(),
        vxlan: Vxlan {
            vni: VNI,
            port: PORT,
            local: Some(local),
            underlay: Some(underlay),
            learning: false,
        },
        mtu,
        mac: vtep_mac(node),
    }
}

/// Everything this node wants in the kernel for its peers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// Routes (VXLAN `onlink` routes, and direct routes), keyed by destination.
    pub routes: BTreeMap<Ipv4Network, PeerRoute>,
    /// Neighbour entries on the device: peer subnet `.0` -> peer VTEP MAC.
    pub neighbours: BTreeMap<Ipv4Addr, Mac>,
    /// FDB entries on the device: peer VTEP MAC -> peer public IP.
    pub fdb: BTreeSet<Fdb>,
    /// Peers with a podCIDR that get nothing, and why.
    pub skipped: Vec<(String, Skip)>,
}

/// The wanted routes, neighbour and FDB entries for every peer. `vx` is the device's index,
/// `underlay` the underlay interface's; `direct` lists the underlay's subnets when
/// `--direct-routing` is on (empty otherwise).
pub fn desired(
    nodes: &[NodeInfo],
    own: &str,
    vx: u32,
    underlay: u32,
    direct: &[Ipv4Network],
) -> Desired {
    let is_direct = |addr: Ipv4Addr| direct.iter().any(|n| n.contains(addr));
    let (peers, skipped) = peers::usable_peers(nodes, own, |n| {
        let addr = n.peer_address()?;
        if is_direct(addr) {
            return None;
        }
        match n.vtep_checked() {
            Ok(Some((vni, _))) if vni == VNI => None,
            Ok(Some((vni, _))) => Some(Skip::Garbage(format!(
                "its VXLAN uses VNI {vni}, this node VNI {VNI}"
            ))),
            Ok(None) => Some(Skip::NoVtep),
            Err(garbage) => Some(Skip::Garbage(garbage)),
        }
    });
    let mut out = Desired {
        skipped,
        ..Desired::default()
    };
    for p in peers {
        let route = if is_direct(p.addr) {
            peers::route(p.cidr, p.addr, underlay)
        } else {
            let Some((_, mac)) = p.node.vtep() else {
                continue;
            };
            let gw = p.cidr.network();
            out.neighbours.insert(gw, mac);
            out.fdb.insert(Fdb {
                mac,
                dst: Some(p.addr),
            });
            Route4 {
                dst: p.cidr,
                gw: Some(gw),
                oif: Some(vx),
                protocol: peers::ROUTE_PROTOCOL,
                priority: 0,
                onlink: true,
            }
        };
        out.routes.insert(
            p.cidr,
            PeerRoute {
                node: p.node.name.clone(),
                route,
            },
        );
    }
    out
}

/// Neighbour changes: `(set, delete)`. An entry is kept only when it is permanent with the wanted
/// MAC; any other entry on the device (stale peer, kernel-made incomplete entry) is deleted.
pub fn plan_neighbours(
    want: &BTreeMap<Ipv4Addr, Mac>,
    have: &[Neigh],
) -> (Vec<(Ipv4Addr, Mac)>, Vec<Ipv4Addr>) {
    let set = want
        .iter()
        .filter(|(ip, mac)| {
            !have
                .iter()
                .any(|n| n.ip == **ip && n.mac == Some(**mac) && n.permanent)
        })
        .map(|(ip, mac)| (*ip, *mac))
        .collect();
    let delete = have
        .iter()
        .filter(|n| !want.contains_key(&n.ip))
        .map(|n| n.ip)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    (set, delete)
}

/// FDB changes: `(set, delete)`: wanted entries that are missing, and entries nothing wants.
pub fn plan_fdb(want: &BTreeSet<Fdb>, have: &[Fdb]) -> (Vec<Fdb>, Vec<Fdb>) {
    let set = want.iter().filter(|w| !have.contains(w)).copied().collect();
    let delete = have.iter().filter(|h| !want.contains(h)).copied().collect();
    (set, delete)
}

/// Why the device could not be brought into shape this round.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// A netlink operation failed.
    #[error(transparent)]
    Netlink(#[from] NlError),
    /// The device vanished right after being created.
    #[error("{DEVICE} not found after creating it")]
    Vanished,
}

impl DeviceError {
    /// True when the kernel refused to bring the device up because another socket holds the
    /// VXLAN UDP port (`EADDRINUSE`).
    pub fn is_addr_in_use(&self) -> bool {
        matches!(self, DeviceError::Netlink(e) if e.source.raw_os_error() == Some(libc::EADDRINUSE))
    }
}

/// Makes sure `ferry.1` exists as `spec` says, with `addr` (the podCIDR's network address /32)
/// as its only IPv4 address. Adopts a matching device (fixing MTU / MAC / up in place); a device
/// with another VNI, port, local address, underlay or with learning on is deleted and recreated.
/// Returns the device index.
pub fn ensure_device(
    nl: &mut Netlink,
    spec: &VxlanSpec,
    addr: Ipv4Network,
) -> Result<u32, DeviceError> {
    let index = match nl.link_by_name(&spec.name)? {
        Some(l) if l.vxlan == Some(spec.vxlan) => {
            let mtu = (l.mtu != spec.mtu).then_some(spec.mtu);
            let mac = (l.mac != Some(spec.mac)).then_some(spec.mac);
            if mtu.is_some() || mac.is_some() || !l.up {
                nl.set_link(l.index, mtu, mac, !l.up)?;
                tracing::info!(
                    device = DEVICE, mtu = ?mtu, mac = ?mac.map(|m| mac_string(&m)), up = !l.up,
                    "VXLAN device adjusted in place"
                );
            }
            l.index
        }
        other => {
            if let Some(l) = other {
                tracing::warn!(
                    device = DEVICE, have = ?l.vxlan, want = ?spec.vxlan,
                    "existing device does not match: recreating it"
                );
                nl.del_link(l.index)?;
            }
            nl.create_vxlan(spec)?;
            let l = nl.link_by_name(&spec.name)?.ok_or(DeviceError::Vanished)?;
            tracing::info!(
                device = DEVICE, vni = spec.vxlan.vni, port = spec.vxlan.port, mtu = spec.mtu,
                mac = %mac_string(&spec.mac), "VXLAN device created"
            );
            l.index
        }
    };
    let addrs = nl.ipv4_addresses(index)?;
    for a in &addrs {
        if *a != addr {
            nl.del_address(index, *a)?;
            tracing::info!(device = DEVICE, address = %a, "stale address removed");
        }
    }
    if !addrs.contains(&addr) {
        nl.add_address(index, addr)?;
        tracing::info!(device = DEVICE, address = %addr, "address added");
    }
    Ok(index)
}

/// Counts of what [`apply_entries`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Entries added or replaced.
    pub changed: usize,
    /// Entries deleted.
    pub deleted: usize,
    /// Operations that failed (logged; retried next round).
    pub failed: usize,
}

/// Reconciles neighbour and FDB entries and the routes. Order: FDB and neighbour entries first
/// (so a new route never points at an unresolved next hop), then routes, then deletions of
/// neighbour / FDB entries nothing owns (after their routes went). Every failure is logged and
/// retried next round; the other entries are still served.
pub fn apply_entries(nl: &mut Netlink, vx: u32, want: &Desired) -> Applied {
    let mut done = Applied::default();
    fn count(done: &mut Applied, r: Result<(), NlError>, what: &str, changed: bool) {
        match r {
            Ok(()) if changed => done.changed += 1,
            Ok(()) => done.deleted += 1,
            Err(e) => {
                done.failed += 1;
                tracing::warn!(entry = what, error = %e, "VXLAN entry failed (retried next round)");
            }
        }
    }
    let fdb = nl.fdb(vx);
    let neigh = nl.neighbours_v4(vx);
    let (fdb, neigh) = match (fdb, neigh) {
        (Ok(f), Ok(n)) => (f, n),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "listing {DEVICE} entries failed (retried next round)");
            done.failed += 1;
            return done;
        }
    };
    let (fdb_set, fdb_del) = plan_fdb(&want.fdb, &fdb);
    let (neigh_set, neigh_del) = plan_neighbours(&want.neighbours, &neigh);
    for e in &fdb_set {
        let r = nl.set_fdb(vx, e);
        if r.is_ok() {
            tracing::info!(mac = %mac_string(&e.mac), dst = ?e.dst, "fdb entry set");
        }
        count(&mut done, r, "fdb", true);
    }
    for (ip, mac) in &neigh_set {
        let r = nl.set_neighbour(vx, *ip, *mac);
        if r.is_ok() {
            tracing::info!(ip = %ip, mac = %mac_string(mac), "neighbour entry set");
        }
        count(&mut done, r, "neighbour", true);
    }
    match nl.main_routes_v4() {
        Ok(installed) => {
            let plan = peers::plan(want.routes.values().map(|p| &p.route), &installed);
            if !(plan.is_empty() && plan.conflicts.is_empty()) {
                let r = peers::apply(nl, &plan, &want.routes);
                done.changed += r.changed;
                done.deleted += r.deleted;
                done.failed += r.failed;
            }
        }
        Err(e) => {
            done.failed += 1;
            tracing::error!(error = %e, "listing routes failed (retried next round)");
        }
    }
    for ip in &neigh_del {
        let r = nl.del_neighbour(vx, *ip).map(drop);
        if r.is_ok() {
            tracing::info!(ip = %ip, "stale neighbour entry deleted");
        }
        count(&mut done, r, "neighbour", false);
    }
    for e in &fdb_del {
        let r = nl.del_fdb(vx, e).map(drop);
        if r.is_ok() {
            tracing::info!(mac = %mac_string(&e.mac), dst = ?e.dst, "stale fdb entry deleted");
        }
        count(&mut done, r, "fdb", false);
    }
    done
}

/// The VXLAN driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct Driver {
    /// `--direct-routing`: peers on one of the underlay's subnets get a plain route instead.
    direct_routing: bool,
}

impl Driver {
    /// A driver with or without direct routing.
    pub fn new(direct_routing: bool) -> Self {
        Driver { direct_routing }
    }
}

impl super::Backend for Driver {
    fn name(&self) -> &'static str {
        crate::config::Backend::Vxlan.name()
    }

    fn overhead(&self) -> u32 {
        OVERHEAD
    }

    fn tunnel(&self) -> Option<super::Tunnel> {
        Some(super::Tunnel {
            port: PORT,
            probe_device: Some(DEVICE),
        })
    }

    fn backend_data(&self, node: &str) -> Option<String> {
        Some(backend_data(&vtep_mac(node)))
    }

    /// Reconciles the VXLAN device and its per-peer entries.
    fn reconcile(&mut self, nl: &mut Netlink, view: &super::View<'_>) -> super::Report {
        let mut report = super::Report::default();
        let (Some(cidr), Some(local), Some(mtu)) = (view.cidr, view.local, view.mtu) else {
            return report;
        };
        let underlay = view.underlay.index;
        let spec = device_spec(view.own, local, underlay, mtu);
        let own = Ipv4Network::from(cidr.network());
        let vx = match ensure_device(nl, &spec, own) {
            Ok(i) => i,
            Err(e) => {
                report.fault = Some(if e.is_addr_in_use() {
                    Fault::PortInUse {
                        device: DEVICE,
                        port: PORT,
                    }
                } else {
                    Fault::Device(e.to_string())
                });
                return report;
            }
        };
        let direct = if self.direct_routing {
            nl.ipv4_addresses(underlay).unwrap_or_default()
        } else {
            Vec::new()
        };
        let want = desired(view.nodes, view.own, vx, underlay, &direct);
        report.skipped.clone_from(&want.skipped);
        report.peers = want.routes.len();
        report.probe = Some((vx, want.routes.clone()));
        let done = apply_entries(nl, vx, &want);
        report.failed_entries += done.failed;
        if done != Applied::default() {
            tracing::debug!(?done, peers = want.routes.len(), "vxlan reconciled");
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{ANN_BACKEND_DATA, ANN_BACKEND_TYPE};

    fn info(name: &str, cidr: &str, ip: &str, vtep: Option<Mac>) -> NodeInfo {
        let mut annotations = BTreeMap::new();
        if let Some(mac) = vtep {
            annotations.insert(ANN_BACKEND_TYPE.to_owned(), "vxlan".to_owned());
            annotations.insert(ANN_BACKEND_DATA.to_owned(), backend_data(&mac));
        }
        NodeInfo {
            name: name.into(),
            pod_cidr: Some(cidr.parse().unwrap()),
            internal_ip: Some(ip.parse().unwrap()),
            public_ip: None,
            annotations,
        }
    }

    #[test]
    fn vtep_mac_is_stable_local_unicast_and_distinct() {
        let a = vtep_mac("node-a");
        assert_eq!(a, vtep_mac("node-a"));
        assert_ne!(a, vtep_mac("node-b"));
        assert_eq!(a[0] & 0x03, 0x02, "locally administered, unicast");
        // Pinned: a change would give every node a new MAC on upgrade (pitfall 8).
        assert_eq!(mac_string(&vtep_mac("node-a")), "1a:89:53:49:bd:a6");
        let b = vtep_mac("node-b");
        assert!(
            a.iter().zip(b).filter(|(x, y)| **x != *y).count() >= 4,
            "well mixed"
        );
        assert_eq!(
            backend_data(&Mac([2, 0, 0, 0, 0, 1])),
            r#"{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}"#
        );
    }

    #[test]
    fn desired_entries_per_peer_and_direct_routing() {
        let mb = vtep_mac("b");
        let flannel_mac = Mac([0x82, 1, 2, 3, 4, 5]);
        let nodes = [
            info("me", "10.244.0.0/24", "10.99.0.1", Some(vtep_mac("me"))),
            info("b", "10.244.1.0/24", "10.99.0.2", Some(mb)),
            info("c", "10.244.2.0/24", "10.98.0.3", Some(flannel_mac)),
            info("d", "10.244.3.0/24", "10.99.0.4", None),
        ];
        let d = desired(&nodes, "me", 9, 2, &[]);
        assert_eq!(d.routes.len(), 2);
        let rb = d.routes[&"10.244.1.0/24".parse().unwrap()].route;
        assert_eq!(rb.gw, Some("10.244.1.0".parse().unwrap()));
        assert_eq!((rb.oif, rb.onlink, rb.protocol), (Some(9), true, 78));
        assert_eq!(d.neighbours[&"10.244.2.0".parse().unwrap()], flannel_mac);
        assert!(d.fdb.contains(&Fdb {
            mac: mb,
            dst: Some("10.99.0.2".parse().unwrap())
        }));
        assert_eq!(d.fdb.len(), 2);
        assert_eq!(d.skipped, vec![("d".to_owned(), Skip::NoVtep)]);
        // Direct routing: same-subnet peers get a plain route and no VXLAN entries, even
        // without a VTEP; the peer on another subnet still goes through the tunnel.
        let d = desired(&nodes, "me", 9, 2, &["10.99.0.0/24".parse().unwrap()]);
        let rb = d.routes[&"10.244.1.0/24".parse().unwrap()].route;
        assert_eq!(rb, peers::route(rb.dst, "10.99.0.2".parse().unwrap(), 2));
        assert!(d.routes.contains_key(&"10.244.3.0/24".parse().unwrap()));
        assert_eq!(d.neighbours.len(), 1);
        assert_eq!(d.fdb.len(), 1);
        assert!(d.skipped.is_empty());
    }

    #[test]
    fn neighbour_and_fdb_diffs() {
        let m1 = Mac([2, 0, 0, 0, 0, 1]);
        let m2 = Mac([2, 0, 0, 0, 0, 2]);
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let want = BTreeMap::from([(ip("10.244.1.0"), m1), (ip("10.244.2.0"), m2)]);
        let have = [
            Neigh {
                ip: ip("10.244.1.0"),
                mac: Some(m1),
                permanent: true,
            },
            Neigh {
                ip: ip("10.244.2.0"),
                mac: Some(m1),
                permanent: true,
            },
            Neigh {
                ip: ip("10.244.9.0"),
                mac: None,
                permanent: false,
            },
        ];
        let (set, del) = plan_neighbours(&want, &have);
        assert_eq!(set, vec![(ip("10.244.2.0"), m2)]);
        assert_eq!(del, vec![ip("10.244.9.0")]);
        let f = |mac, dst: &str| Fdb {
            mac,
            dst: Some(ip(dst)),
        };
        let want = BTreeSet::from([f(m1, "10.99.0.2"), f(m2, "10.99.0.3")]);
        let (set, del) = plan_fdb(&want, &[f(m1, "10.99.0.2"), f(m2, "10.99.0.9")]);
        assert_eq!(set, vec![f(m2, "10.99.0.3")]);
        assert_eq!(del, vec![f(m2, "10.99.0.9")]);
        assert_eq!(
            plan_fdb(&want, &[f(m2, "10.99.0.3"), f(m1, "10.99.0.2")]).0,
            []
        );
    }
}
