//! The bridge driver: ADD, DEL, CHECK, GC and STATUS for a veth pair attached to a Linux bridge.
//!
//! ADD creates the veth pair in one netlink request with the container end born inside the pod
//! netns (never moved between namespaces, which blocks on `rtnl_lock`), already up, with fixed
//! MACs; the host end is attached to the bridge in the same request. Everything on the host side
//! is named deterministically from `(network, containerID, ifname)`, so DEL, GC and a retried ADD
//! find it without the pod netns or any saved state.

use crate::config::{IpamSource, NetConf, NodeNetwork};
use crate::env::CniEnv;
use crate::error::{code, quoted, CniError, CniResult};
use crate::ipam;
use crate::masq;
use crate::types::{CniOutput, Interface, IpConfig, Route};
use ferry_netlink::{
    AddressOptions, InstalledRoute, Link, Mac, Netlink, NlError, RouteSpec, VethEnd, MAIN_TABLE,
};
use ferry_sys::netns::NetnsFd;
use ipnetwork::IpNetwork;
use std::hash::Hasher;
use std::net::IpAddr;

/// Prefix of host-side veth names; GC only ever deletes links with this prefix on our bridge.
pub const HOST_VETH_PREFIX: &str = "ferry";

fn hash(parts: &[&str]) -> u64 {
    let mut h = fnv::FnvHasher::default();
    for p in parts {
        h.write(p.as_bytes());
        h.write_u8(0);
    }
    h.finish()
}

/// The host-side veth name of an attachment: `ferry` + 10 hex digits (40 bits of FNV-1a).
pub fn host_veth_name(network: &str, container_id: &str, ifname: &str) -> String {
    format!(
        "{HOST_VETH_PREFIX}{:010x}",
        hash(&[network, container_id, ifname]) & 0xff_ffff_ffff
    )
}

/// A locally administered unicast MAC derived from `parts`.
pub fn derived_mac(parts: &[&str]) -> Mac {
    let b = hash(parts).to_be_bytes();
    Mac([(b[0] & 0xfc) | 0x02, b[1], b[2], b[3], b[4], b[5]])
}

/// A netlink failure as the plugin reports it: code [`code::NETLINK`] with the operation and the
/// kernel's error. (A function, not a `From` impl: both types live in other crates; the CNI spec
/// crate has no business knowing netlink.)
pub(crate) fn netlink_error(e: NlError) -> CniError {
    CniError::new(code::NETLINK, e.to_string())
}

/// The node network file, when the config takes its subnet from one.
fn node_network(conf: &NetConf) -> CniResult<Option<NodeNetwork>> {
    match &conf.ipam {
        IpamSource::NodeFile(path) => NodeNetwork::load(path).map(Some),
        _ => Ok(None),
    }
}

/// A netlink socket in the calling thread's (the node's) namespace.
fn host_netlink() -> CniResult<Netlink> {
    Netlink::new().map_err(|e| netlink_error(NlError::new("open socket", e)))
}

/// The bridge, if it exists; a name clash with a link that is not a bridge is an error.
fn existing_bridge(nl: &mut Netlink, conf: &NetConf) -> CniResult<Option<Link>> {
    match nl.link_by_name(&conf.bridge).map_err(netlink_error)? {
        Some(link) if link.kind.as_deref() != Some("bridge") => Err(CniError::new(
            code::NAME_CONFLICT,
            format!(
                "link {} exists and is not a bridge (kind {})",
                quoted(&conf.bridge),
                link.kind.as_deref().unwrap_or("none")
            ),
        )),
        found => Ok(found),
    }
}

/// Creates the bridge unless `found` (the result of [`existing_bridge`]) has it, and makes sure it
/// is up; concurrent callers converge (EEXIST counts as success).
fn ensure_bridge(
    nl: &mut Netlink,
    conf: &NetConf,
    mtu: u32,
    found: Option<Link>,
) -> CniResult<Link> {
    let link = match found {
        Some(link) => link,
        None => {
            match nl.create_bridge(&conf.bridge, derived_mac(&["bridge", &conf.bridge]), mtu) {
                Ok(()) => {}
                Err(e) if e.is_exists() => {}
                Err(e) => return Err(netlink_error(e)),
            }
            existing_bridge(nl, conf)?.ok_or_else(|| {
                CniError::new(
                    code::NETLINK,
                    format!("bridge {} vanished while being set up", conf.bridge),
                )
            })?
        }
    };
    if !link.up {
        nl.set_up(link.index).map_err(netlink_error)?;
    }
    Ok(link)
}

fn enable_forwarding(v6: bool) {
    use ferry_sys::sysctl::{self, SysctlError};
    let path = if v6 {
        sysctl::IPV6_FORWARDING
    } else {
        sysctl::IP_FORWARD
    };
    // Unreadable (no such sysctl): nothing to enable.
    if let Err(e @ SysctlError::Write { .. }) = sysctl::enable(path) {
        eprintln!("ferry-cni: cannot enable forwarding ({path}): {e}");
    }
}

/// Something one ADD created, recorded the moment it exists.
#[derive(Debug)]
enum Created {
    /// Addresses reserved for the attachment (or a delegated IPAM ADD that succeeded).
    Ipam(ipam::IpamUndo),
    /// The veth pair, by its host end (deleting it takes the pod end, with its addresses and
    /// routes, along).
    Veth(String),
}

/// The undo log of one ADD: what it created, undone newest first when ADD fails (or panics), so a
/// failed ADD leaves behind nothing it created and touches nothing that existed before it.
///
/// Node-wide state that ADD only converges (the bridge, its gateway address, forwarding, the
/// masquerade rules) is never recorded: other attachments use it, concurrent ADDs may be
/// attaching to a bridge this ADD just created, and the reference plugin keeps it too.
#[derive(Debug)]
struct Rollback<'a> {
    conf: &'a NetConf,
    env: &'a CniEnv,
    created: Vec<Created>,
}

impl<'a> Rollback<'a> {
    fn new(conf: &'a NetConf, env: &'a CniEnv) -> Self {
        Rollback {
            conf,
            env,
            created: Vec::new(),
        }
    }

    fn record(&mut self, c: Created) {
        self.created.push(c);
    }

    /// ADD succeeded: everything recorded stays.
    fn commit(mut self) {
        self.created.clear();
    }

    /// Undoes everything recorded, newest first; returns what could not be undone.
    fn undo(&mut self) -> Vec<String> {
        let mut failed = Vec::new();
        while let Some(c) = self.created.pop() {
            match c {
                Created::Veth(name) => {
                    if let Err(e) = Netlink::new()
                        .map_err(|e| e.to_string())
                        .and_then(|mut nl| nl.del_link_by_name(&name).map_err(|e| e.to_string()))
                    {
                        failed.push(format!("deleting veth {name}: {e}"));
                    }
                }
                Created::Ipam(undo) => {
                    if let Err(e) = ipam::undo_add(self.conf, self.env, &undo) {
                        failed.push(format!("releasing the addresses reserved: {e}"));
                    }
                }
            }
        }
        failed
    }
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        // Entries are left only when ADD panicked: still leave nothing behind.
        for f in self.undo() {
            eprintln!("ferry-cni: rollback: {f}");
        }
    }
}

/// ADD. Every step is listed in [`crate::fault::ADD_STEPS`] and ends with its fault point.
pub fn add(conf: &NetConf, env: &CniEnv) -> CniResult<CniOutput> {
    let mut rollback = Rollback::new(conf, env);
    match add_steps(conf, env, &mut rollback) {
        Ok(out) => {
            rollback.commit();
            Ok(out)
        }
        Err(mut e) => {
            let failed = rollback.undo();
            if !failed.is_empty() {
                let undo = format!("rollback incomplete: {}", failed.join("; "));
                e.details = if e.details.is_empty() {
                    undo
                } else {
                    format!("{}; {undo}", e.details)
                };
            }
            Err(e)
        }
    }
}

fn ifname_exists(env: &CniEnv) -> CniError {
    CniError::new(
        code::NAME_CONFLICT,
        format!(
            "interface {} already exists in netns {}",
            env.ifname, env.netns
        ),
    )
}

/// Whose is this attachment's host veth name, found taken before ADD creates the pair.
#[derive(Debug, PartialEq, Eq)]
enum HostVeth {
    /// Nobody's.
    Free,
    /// A veth left by an earlier ADD of this attachment into this same pod netns, whose pod end
    /// is no longer `CNI_IFNAME` (a crash between steps, then a renamed or stripped pod end): it
    /// is replaced, so a retried ADD converges.
    Stale,
    /// Anything else: the pod end lives in another netns (the attachment is alive there) or the
    /// name is held by something that is not our veth. Never touched.
    InUse,
}

fn host_veth_state(nl: &mut Netlink, name: &str, netns: &NetnsFd) -> CniResult<HostVeth> {
    let Some(link) = nl.link_by_name(name).map_err(netlink_error)? else {
        return Ok(HostVeth::Free);
    };
    if link.kind.as_deref() != Some("veth") {
        return Ok(HostVeth::InUse);
    }
    // Reading the link made the kernel give its peer's netns an id, if it had none.
    let pod_ns = nl.nsid_of(netns).map_err(netlink_error)?;
    Ok(match (link.link_netnsid, pod_ns) {
        (Some(peer), Some(pod)) if peer == pod => HostVeth::Stale,
        _ => HostVeth::InUse,
    })
}

fn host_veth_in_use(conf: &NetConf, env: &CniEnv, host_name: &str) -> CniError {
    CniError::new(
        code::NAME_CONFLICT,
        format!(
            "host veth {host_name} of attachment (network {}, container {}, interface {}) \
             already exists and does not lead into netns {}",
            conf.name, env.container_id, env.ifname, env.netns
        ),
    )
    .with_details("the attachment is set up elsewhere; a repeated ADD needs a DEL first")
}

fn add_steps(conf: &NetConf, env: &CniEnv, rollback: &mut Rollback<'_>) -> CniResult<CniOutput> {
    let fault = env.fault;
    let netns = NetnsFd::open(&env.netns)?;
    fault.after("netns")?;

    let node = node_network(conf)?;
    let mtu = conf
        .mtu
        .or(node.as_ref().and_then(|n| n.mtu))
        .unwrap_or(crate::config::DEFAULT_MTU);
    fault.after("node-network")?;

    let mut host_nl = host_netlink()?;
    // Fail early, before reserving anything, on a bridge name clash.
    let bridge = existing_bridge(&mut host_nl, conf)?;
    fault.after("bridge-check")?;

    // The spec: fail if CNI_IFNAME exists. Checked before anything is reserved or created, so a
    // repeated ADD of a working attachment answers 101 having touched nothing.
    let mut pod_nl = Netlink::new_in(&netns)?;
    if pod_nl
        .link_by_name(&env.ifname)
        .map_err(netlink_error)?
        .is_some()
    {
        return Err(ifname_exists(env));
    }
    fault.after("ifname-check")?;

    let host_name = host_veth_name(&conf.name, &env.container_id, &env.ifname);
    let host_veth = host_veth_state(&mut host_nl, &host_name, &netns)?;
    if host_veth == HostVeth::InUse {
        return Err(host_veth_in_use(conf, env, &host_name));
    }
    fault.after("host-veth-check")?;

    let assigned = ipam::add(conf, env, node.as_ref())?;
    if assigned.undo != ipam::IpamUndo::Nothing {
        rollback.record(Created::Ipam(assigned.undo.clone()));
    }
    fault.after("ipam")?;

    let bridge = ensure_bridge(&mut host_nl, conf, mtu, bridge)?;
    fault.after("bridge")?;

    if conf.is_gateway {
        for ip in &assigned.ips {
            if let Some(gw) = ip.gateway {
                let net = IpNetwork::new(gw, ip.address.prefix())
                    .map_err(|e| CniError::new(code::INVALID_CONFIG, e.to_string()))?;
                match host_nl.add_address_with(bridge.index, net, AddressOptions::INTERFACE) {
                    Ok(()) => {}
                    Err(e) if e.is_exists() => {}
                    Err(e) => return Err(netlink_error(e)),
                }
                enable_forwarding(gw.is_ipv6());
            }
        }
    }
    fault.after("gateway")?;

    let host_mac = derived_mac(&["host", &conf.name, &env.container_id, &env.ifname]);
    let pod_mac = derived_mac(&["pod", &conf.name, &env.container_id, &env.ifname]);
    let host_end = VethEnd {
        name: &host_name,
        mac: host_mac,
        mtu,
    };
    let pod_end = VethEnd {
        name: &env.ifname,
        mac: pod_mac,
        mtu,
    };
    if host_veth == HostVeth::Stale {
        host_nl
            .del_link_by_name(&host_name)
            .map_err(netlink_error)?;
    }
    match host_nl.create_veth(&host_end, bridge.index, &pod_end, &netns) {
        Ok(()) => rollback.record(Created::Veth(host_name.clone())),
        // Taken since the checks above (the spec forbids concurrent ADDs of one attachment, so
        // this is someone else's): not ours to remove.
        Err(e) if e.is_exists() => {
            return Err(
                if pod_nl
                    .link_by_name(&env.ifname)
                    .map_err(netlink_error)?
                    .is_some()
                {
                    ifname_exists(env)
                } else {
                    host_veth_in_use(conf, env, &host_name)
                },
            );
        }
        Err(e) => return Err(netlink_error(e)),
    }
    fault.after("veth")?;

    if conf.hairpin {
        host_nl
            .set_hairpin_by_name(&host_name, true)
            .map_err(netlink_error)?;
    }
    fault.after("hairpin")?;

    let pod_link = pod_nl
        .link_by_name(&env.ifname)
        .map_err(netlink_error)?
        .ok_or_else(|| {
            CniError::new(
                code::NETLINK,
                format!("{} vanished from the pod netns", env.ifname),
            )
        })?;
    for ip in &assigned.ips {
        pod_nl
            .add_address_with(pod_link.index, ip.address, AddressOptions::INTERFACE)
            .map_err(netlink_error)?;
    }
    fault.after("pod-address")?;

    pod_nl.set_up(pod_link.index).map_err(netlink_error)?;
    fault.after("pod-up")?;

    let wanted = planned_routes(conf, &assigned, mtu);
    let routes = install_routes(&mut pod_nl, &pod_link, wanted)?;
    fault.after("routes")?;

    ensure_masq(conf, &assigned)?;
    fault.after("masq")?;

    let mut out = conf.prev_result.clone().unwrap_or_default();
    let base = out.interfaces.len();
    out.interfaces.push(Interface {
        name: conf.bridge.clone(),
        mac: bridge.mac.map(|m| m.to_string()).unwrap_or_default(),
        ..Default::default()
    });
    out.interfaces.push(Interface {
        name: host_name,
        mac: host_mac.to_string(),
        mtu: Some(mtu),
        ..Default::default()
    });
    out.interfaces.push(Interface {
        name: env.ifname.clone(),
        mac: pod_mac.to_string(),
        mtu: Some(mtu),
        sandbox: env.netns.clone(),
        ..Default::default()
    });
    out.ips.extend(assigned.ips.iter().map(|ip| IpConfig {
        interface: Some(base + 2),
        ..ip.clone()
    }));
    out.routes.extend(routes);
    if !conf.dns.is_empty() {
        out.dns = conf.dns.clone();
    } else if !assigned.dns.is_empty() {
        out.dns = assigned.dns.clone();
    }
    Ok(out)
}

/// The routes the attachment asks for: the default route via the gateway (`isDefaultGateway`)
/// and IPAM's routes, with the gateway, `mtu` and `advmss` filled in.
fn planned_routes(conf: &NetConf, assigned: &ipam::Assigned, mtu: u32) -> Vec<Route> {
    let mut routes = Vec::new();
    if conf.is_default_gateway {
        for ip in &assigned.ips {
            if let Some(gw) = ip.gateway {
                let any = if gw.is_ipv4() { "0.0.0.0/0" } else { "::/0" };
                let dst: IpNetwork = any.parse().unwrap_or(ip.address);
                if !routes.iter().any(|r: &Route| r.dst == dst) {
                    routes.push(Route::new(dst, Some(gw)));
                }
            }
        }
    }
    for r in &assigned.routes {
        // A cluster-network route is redundant next to a default route via the same gateway.
        let covered = routes
            .iter()
            .any(|d| d.dst.prefix() == 0 && d.dst.is_ipv4() == r.dst.is_ipv4());
        if !covered || r.gw.is_some() {
            routes.push(r.clone());
        }
    }
    for r in &mut routes {
        r.gw = r.gw.or_else(|| {
            assigned
                .ips
                .iter()
                .find(|i| i.address.is_ipv4() == r.dst.is_ipv4())
                .and_then(|i| i.gateway)
        });
        r.mtu = Some(mtu);
        r.advmss = Some(mtu.saturating_sub(if r.dst.is_ipv4() { 40 } else { 60 }));
    }
    routes
}

/// The metric the kernel gives a route added without one.
fn implicit_metric(v6: bool) -> u32 {
    if v6 {
        1024
    } else {
        0
    }
}

/// `0.0.0.0/0 via 10.1.0.1 dev eth0 metric 1 table 100`, leaving out what is unset.
fn describe_route(
    dst: IpNetwork,
    gw: Option<IpAddr>,
    dev: &str,
    metric: Option<u32>,
    table: Option<u32>,
) -> String {
    let mut s = dst.to_string();
    if let Some(gw) = gw {
        s.push_str(&format!(" via {gw}"));
    }
    s.push_str(&format!(" dev {dev}"));
    if let Some(m) = metric {
        s.push_str(&format!(" metric {m}"));
    }
    if let Some(t) = table.filter(|t| *t != MAIN_TABLE) {
        s.push_str(&format!(" table {t}"));
    }
    s
}

/// Installs `routes` on `link` and returns them as installed, so the result describes what is
/// in the kernel. A route whose (table, destination, metric) is already taken in the pod netns,
/// typically a second default route beside another interface's, is installed with the lowest
/// metric above every existing route to that destination (they keep precedence) and reported
/// with it; when the config pins its metric (`priority`), that clash is an error instead. EEXIST
/// is never taken as success: the route in the way may not be ours.
fn install_routes(pod_nl: &mut Netlink, link: &Link, routes: Vec<Route>) -> CniResult<Vec<Route>> {
    let mut installed: Vec<Route> = Vec::new();
    let mut have: [Option<Vec<InstalledRoute>>; 2] = [None, None];
    for mut r in routes {
        let v6 = r.dst.is_ipv6();
        let existing = match &mut have[usize::from(v6)] {
            Some(h) => h,
            slot => slot.insert(pod_nl.routes(v6).map_err(netlink_error)?),
        };
        let table = r.table.unwrap_or(MAIN_TABLE);
        let metric = r.priority.unwrap_or(implicit_metric(v6));
        let same_dst: Vec<&InstalledRoute> = existing
            .iter()
            .filter(|h| h.table == table && h.dst == r.dst)
            .collect();
        if let Some(taken) = same_dst.iter().find(|h| h.priority == metric) {
            if taken.oif == Some(link.index) && taken.gw == r.gw {
                // Listed twice: installed (and reported) once.
                continue;
            }
            let holder = describe_route(
                taken.dst,
                taken.gw,
                &link_name(pod_nl, taken.oif),
                Some(taken.priority),
                Some(taken.table),
            );
            if r.priority.is_some() {
                return Err(CniError::new(
                    code::NAME_CONFLICT,
                    format!(
                        "cannot add route {}: the pod netns already has {holder}",
                        describe_route(r.dst, r.gw, &link.name, r.priority, r.table)
                    ),
                )
                .with_details("the configured route priority is taken; choose another"));
            }
            let above = same_dst
                .iter()
                .map(|h| h.priority)
                .max()
                .unwrap_or(metric)
                .checked_add(1)
                .ok_or_else(|| {
                    CniError::new(
                        code::NAME_CONFLICT,
                        format!(
                            "cannot add route {}: no metric left above {holder}",
                            describe_route(r.dst, r.gw, &link.name, None, r.table)
                        ),
                    )
                })?;
            r.priority = Some(above);
        }
        let spec = RouteSpec {
            dst: r.dst,
            gw: r.gw,
            oif: link.index,
            priority: r.priority,
            mtu: r.mtu,
            advmss: r.advmss,
            table: r.table,
            scope: r.scope.and_then(|s| u8::try_from(s).ok()),
        };
        pod_nl.add_route_spec(&spec).map_err(|e| {
            CniError::new(
                code::NETLINK,
                format!(
                    "cannot add route {}",
                    describe_route(r.dst, r.gw, &link.name, r.priority, r.table)
                ),
            )
            .with_details(e)
        })?;
        existing.push(InstalledRoute {
            dst: r.dst,
            gw: r.gw,
            oif: Some(link.index),
            table,
            priority: r.priority.unwrap_or(implicit_metric(v6)),
        });
        installed.push(r);
    }
    Ok(installed)
}

/// The name of link `index` for messages (`"?"` when it cannot be read).
fn link_name(nl: &mut Netlink, index: Option<u32>) -> String {
    index
        .and_then(|i| {
            nl.links()
                .ok()?
                .into_iter()
                .find(|l| l.index == i)
                .map(|l| l.name)
        })
        .unwrap_or_else(|| "?".to_owned())
}

fn ensure_masq(conf: &NetConf, assigned: &ipam::Assigned) -> CniResult<()> {
    if !conf.ip_masq {
        return Ok(());
    }
    let boot = ipam::store::current_boot_id()
        .map_err(|e| CniError::new(code::IO_FAILURE, "reading boot id").with_details(e))?;
    let stamp_dir = conf.data_dir.join(&conf.name);
    for ip in &assigned.ips {
        masq::ensure_once(&conf.name, ip.address, &stamp_dir, &boot)
            .map_err(|e| CniError::new(code::IO_FAILURE, "ipMasq").with_details(e))?;
    }
    Ok(())
}

/// DEL: removes the host veth (and with it the pod end) and releases the addresses. Idempotent;
/// works with an empty or vanished netns and after a crash halfway through ADD. Keeps going past
/// failures and reports them together.
pub fn del(conf: &NetConf, env: &CniEnv) -> CniResult<()> {
    let mut errors = Vec::new();
    let host_name = host_veth_name(&conf.name, &env.container_id, &env.ifname);
    match Netlink::new() {
        Ok(mut nl) => match nl.del_link_by_name(&host_name) {
            Ok(true) => {}
            Ok(false) => {
                // No host end: make sure no orphaned pod end survives either.
                if !env.netns.is_empty() {
                    if let Ok(ns) = NetnsFd::open(&env.netns) {
                        if let Ok(mut pod_nl) = Netlink::new_in(&ns) {
                            if let Ok(Some(l)) = pod_nl.link_by_name(&env.ifname) {
                                if l.kind.as_deref() == Some("veth") {
                                    if let Err(e) = pod_nl.del_link_by_name(&env.ifname) {
                                        errors.push(e.to_string());
                                    }
                                }
                            }
                        }
                    }
                }
            }
            Err(e) => errors.push(e.to_string()),
        },
        Err(e) => errors.push(format!("open netlink socket: {e}")),
    }
    if let Err(e) = ipam::del(conf, env) {
        errors.push(e.to_string());
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(code::IO_FAILURE, "DEL incomplete").with_details(errors.join("; ")))
    }
}

fn check_failed(msg: String) -> CniError {
    CniError::new(code::CHECK_FAILED, msg)
}

/// CHECK: verifies the attachment against `prevResult`.
pub fn check(conf: &NetConf, env: &CniEnv) -> CniResult<()> {
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::new(code::INVALID_CONFIG, "CHECK needs prevResult"))?;
    let idx = prev
        .sandbox_interface(&env.ifname, &env.netns)
        .ok_or_else(|| {
            check_failed(format!(
                "prevResult has no interface {} in {}",
                env.ifname, env.netns
            ))
        })?;
    let want = &prev.interfaces[idx];
    let netns = NetnsFd::open(&env.netns)?;
    let mut pod_nl = Netlink::new_in(&netns)?;
    let link = pod_nl
        .link_by_name(&env.ifname)
        .map_err(netlink_error)?
        .ok_or_else(|| {
            check_failed(format!(
                "interface {} is missing from the netns",
                env.ifname
            ))
        })?;
    if link.kind.as_deref() != Some("veth") {
        return Err(check_failed(format!("{} is not a veth", env.ifname)));
    }
    let mac = link.mac.map(|m| m.to_string());
    if !want.mac.is_empty() && mac.as_deref() != Some(want.mac.as_str()) {
        return Err(check_failed(format!(
            "{} has MAC {}, expected {}",
            env.ifname,
            mac.as_deref().unwrap_or("none"),
            want.mac
        )));
    }
    if let Some(mtu) = want.mtu.filter(|m| *m != link.mtu) {
        return Err(check_failed(format!(
            "{} has MTU {}, expected {mtu}",
            env.ifname, link.mtu
        )));
    }
    let addrs = pod_nl.addresses(link.index).map_err(netlink_error)?;
    for ip in prev.ips.iter().filter(|i| i.interface == Some(idx)) {
        if !addrs.contains(&ip.address) {
            return Err(check_failed(format!(
                "address {} is missing from {}",
                ip.address, env.ifname
            )));
        }
    }
    for v6 in [false, true] {
        let wanted: Vec<&Route> = prev
            .routes
            .iter()
            .filter(|r| r.dst.is_ipv6() == v6)
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let have = pod_nl.routes(v6).map_err(netlink_error)?;
        for r in wanted {
            // Same matching as ADD installed it: on this interface, in its table, via its
            // gateway, and with its metric when the result records one (1.1.0 results do; older
            // versions have no field for it).
            let found = have.iter().any(|h| {
                h.dst == r.dst
                    && h.oif == Some(link.index)
                    && h.table == r.table.unwrap_or(MAIN_TABLE)
                    && r.gw.is_none_or(|gw| h.gw == Some(gw))
                    && r.priority.is_none_or(|p| h.priority == p)
            });
            if !found {
                return Err(check_failed(format!(
                    "route {} is missing",
                    describe_route(r.dst, r.gw, &env.ifname, r.priority, r.table)
                )));
            }
        }
    }
    let mut host_nl = host_netlink()?;
    let bridge = host_nl
        .link_by_name(&conf.bridge)
        .map_err(netlink_error)?
        .ok_or_else(|| check_failed(format!("bridge {} is missing", conf.bridge)))?;
    let host_name = host_veth_name(&conf.name, &env.container_id, &env.ifname);
    let host = host_nl
        .link_by_name(&host_name)
        .map_err(netlink_error)?
        .ok_or_else(|| check_failed(format!("host veth {host_name} is missing")))?;
    if host.master != Some(bridge.index) {
        return Err(check_failed(format!(
            "host veth {host_name} is not attached to {}",
            conf.bridge
        )));
    }
    Ok(())
}

/// GC: releases every reservation and host veth not in `cni.dev/valid-attachments`.
pub fn gc(conf: &NetConf, env: &CniEnv) -> CniResult<()> {
    let valid = conf.valid_attachments.clone().unwrap_or_default();
    let mut errors = Vec::new();
    if let Err(e) = ipam::gc(conf, env) {
        errors.push(e.to_string());
    }
    if conf.ip_masq {
        if let crate::config::IpamSource::Static { ranges, .. } = &conf.ipam {
            for r in ranges.iter().flatten() {
                if let Err(e) = masq::ensure(&conf.name, r.subnet) {
                    errors.push(e);
                }
            }
        }
    }
    let keep: Vec<String> = valid
        .iter()
        .map(|a| host_veth_name(&conf.name, &a.container_id, &a.ifname))
        .collect();
    match Netlink::new() {
        Ok(mut nl) => {
            if let Some(bridge) = nl.link_by_name(&conf.bridge).map_err(netlink_error)? {
                for link in nl.links().map_err(netlink_error)? {
                    let ours = link.master == Some(bridge.index)
                        && link.name.starts_with(HOST_VETH_PREFIX)
                        && link.name.len() == HOST_VETH_PREFIX.len() + 10;
                    if ours && !keep.contains(&link.name) {
                        if let Err(e) = nl.del_link_by_name(&link.name) {
                            errors.push(e.to_string());
                        }
                    }
                }
            }
        }
        Err(e) => errors.push(format!("open netlink socket: {e}")),
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(code::IO_FAILURE, "GC incomplete").with_details(errors.join("; ")))
    }
}

/// STATUS: ready unless the node network file is missing or unreadable, the bridge name is taken
/// by something else, or a delegated IPAM plugin is unavailable.
pub fn status(conf: &NetConf, env: &CniEnv) -> CniResult<()> {
    if let Err(e) = node_network(conf) {
        return Err(CniError::new(code::NOT_AVAILABLE, e.msg).with_details(e.details));
    }
    let mut nl = host_netlink()?;
    existing_bridge(&mut nl, conf).map_err(|e| CniError::new(code::NOT_AVAILABLE, e.msg))?;
    ipam::status(conf, env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_stable_short_and_distinct() {
        let a = host_veth_name("net", "c1", "eth0");
        assert_eq!(a, host_veth_name("net", "c1", "eth0"));
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("ferry"));
        assert_ne!(a, host_veth_name("net", "c1", "eth1"));
        assert_ne!(a, host_veth_name("net2", "c1", "eth0"));
        // Pinned: DEL after an upgrade must find the veth an older version created.
        assert_eq!(
            host_veth_name("n", "c", "eth0"),
            host_veth_name("n", "c", "eth0")
        );
        let mac = derived_mac(&["x"]);
        assert_eq!(mac[0] & 0x03, 0x02, "locally administered unicast");
    }
}
