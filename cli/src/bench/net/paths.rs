//! The path matrix: every path `ferry bench` knows ([`CATALOGUE`]), which ones a run selects, and
//! how each is built: the reference paths in the bench's own namespaces ([`Baselines`]: L0
//! loopback, L1 raw veth pair, P2-ref-vxlan a hand-built kernel VXLAN pod path) and the cluster
//! paths from the bench pods (`lab::Pods`) of the cluster with the right backend and proxy mode.

use super::lab::{Ns, Place, Proc, AGENT_PORT, IPERF_PORT, SVC_PORT};
use super::verify::Check;
use anyhow::{bail, Context as _, Result};
use ferry_bench::model::PathInfo;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

/// What a path needs from the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// The bench's own namespaces only.
    Own,
    /// Any cluster (the first one).
    Cluster,
    /// A cluster with this overlay backend.
    Backend(&'static str),
    /// A cluster with this Service proxy mode.
    Proxy(&'static str),
}

/// One known path.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Def {
    /// Id.
    pub(crate) id: &'static str,
    /// One line for people.
    pub(crate) description: &'static str,
    /// Its baseline's id.
    pub(crate) baseline: Option<&'static str>,
    /// What it needs.
    pub(crate) need: Need,
}

macro_rules! def {
    ($id:expr, $desc:expr, $base:expr, $need:expr) => {
        Def {
            id: $id,
            description: $desc,
            baseline: $base,
            need: $need,
        }
    };
}

/// Every path, in report order.
pub(crate) const CATALOGUE: &[Def] = &[
    def!("L0", "loopback inside one namespace", None, Need::Own),
    def!(
        "L1",
        "raw veth pair between two namespaces (no bridge, no netfilter)",
        Some("L0"),
        Need::Own
    ),
    def!(
        "L2",
        "node-1 -> node-2 over the underlay",
        Some("L1"),
        Need::Cluster
    ),
    def!("H1", "node-1 -> a pod on node-1", Some("L1"), Need::Cluster),
    def!(
        "P1",
        "pod -> pod, same node (ferry0 bridge)",
        Some("L1"),
        Need::Cluster
    ),
    def!(
        "P2-ref-vxlan",
        "pod -> pod across two namespaces joined by hand-built kernel VXLAN (reference)",
        Some("L1"),
        Need::Own
    ),
    def!(
        "P2-vxlan",
        "pod -> pod, across nodes, VXLAN",
        Some("P2-ref-vxlan"),
        Need::Backend("vxlan")
    ),
    def!(
        "P2-host-gw",
        "pod -> pod, across nodes, host-gw routes",
        Some("L2"),
        Need::Backend("host-gw")
    ),
    def!(
        "P2-udp",
        "pod -> pod, across nodes, userspace UDP backend",
        Some("L2"),
        Need::Backend("udp")
    ),
    def!(
        "S1-ebpf",
        "pod -> ClusterIP, backend on the same node, eBPF socket LB",
        Some("P1"),
        Need::Proxy("ebpf")
    ),
    def!(
        "S2-ebpf",
        "pod -> ClusterIP, backend on the other node, eBPF socket LB",
        Some("P2-vxlan"),
        Need::Proxy("ebpf")
    ),
    def!(
        "S3-ebpf",
        "pod -> its own ClusterIP (hairpin), eBPF socket LB",
        Some("P1"),
        Need::Proxy("ebpf")
    ),
    def!(
        "S1-iptables",
        "pod -> ClusterIP, backend on the same node, iptables",
        Some("P1"),
        Need::Proxy("iptables")
    ),
    def!(
        "S2-iptables",
        "pod -> ClusterIP, backend on the other node, iptables",
        Some("P2-host-gw"),
        Need::Proxy("iptables")
    ),
    def!(
        "S3-iptables",
        "pod -> its own ClusterIP (hairpin), iptables",
        Some("P1"),
        Need::Proxy("iptables")
    ),
    def!(
        "E0",
        "node-1 -> the external host",
        Some("L2"),
        Need::Cluster
    ),
    def!(
        "E1",
        "pod -> the external host through masquerade",
        Some("E0"),
        Need::Cluster
    ),
    def!(
        "X1",
        "external host -> a pod on node-1 by its IP (routed by node-1; control of N1)",
        Some("E0"),
        Need::Cluster
    ),
    def!(
        "X2",
        "external host -> a pod on node-2 by its IP, routed by node-1 over the overlay (control of N2)",
        Some("E0"),
        Need::Cluster
    ),
    def!(
        "N1-ebpf",
        "external host -> NodePort on node-1, local backend, eBPF mode (tc datapath)",
        Some("X1"),
        Need::Proxy("ebpf")
    ),
    def!(
        "N1-iptables",
        "external host -> NodePort on node-1, local backend, iptables",
        Some("X1"),
        Need::Proxy("iptables")
    ),
    def!(
        "N2-ebpf",
        "external host -> NodePort on node-1, only backend on node-2 (SNAT + overlay), eBPF mode",
        Some("X2"),
        Need::Proxy("ebpf")
    ),
    def!(
        "N2-iptables",
        "external host -> NodePort on node-1, only backend on node-2 (SNAT + overlay), iptables",
        Some("X2"),
        Need::Proxy("iptables")
    ),
];

/// The paths `--quick` measures.
pub(crate) const QUICK: &[&str] = &["L1", "P1", "P2-ref-vxlan", "P2-vxlan", "S1-ebpf", "S2-ebpf"];

/// Resolves `--paths` (ids or prefixes such as `S1`, `P2`) against the catalogue, keeping only
/// paths whose backend and proxy mode are selected. Unknown ids are refused.
pub(crate) fn select(
    wanted: &[String],
    quick: bool,
    backends: &[String],
    proxies: &[String],
) -> Result<Vec<Def>> {
    let allowed = |d: &Def| match d.need {
        Need::Backend(b) => backends.iter().any(|x| x == b),
        Need::Proxy(p) => proxies.iter().any(|x| x == p),
        Need::Own | Need::Cluster => true,
    };
    if wanted.is_empty() {
        return Ok(CATALOGUE
            .iter()
            .filter(|d| if quick { QUICK.contains(&d.id) } else { true })
            .filter(|d| allowed(d))
            .copied()
            .collect());
    }
    let mut out: Vec<Def> = Vec::new();
    for w in wanted {
        let hits: Vec<&Def> = CATALOGUE
            .iter()
            .filter(|d| d.id.eq_ignore_ascii_case(w) || d.id.split('-').next() == Some(w.as_str()))
            .collect();
        if hits.is_empty() {
            let ids: Vec<&str> = CATALOGUE.iter().map(|d| d.id).collect();
            bail!("unknown path {w:?} (known: {})", ids.join(", "));
        }
        let usable: Vec<&Def> = hits.iter().copied().filter(|d| allowed(d)).collect();
        if usable.is_empty() {
            bail!(
                "path {w} cannot be built with --backend {} --proxy {}",
                backends.join(","),
                proxies.join(",")
            );
        }
        for d in usable {
            if !out.iter().any(|o| o.id == d.id) {
                out.push(*d);
            }
        }
    }
    // Report order.
    out.sort_by_key(|d| CATALOGUE.iter().position(|c| c.id == d.id));
    Ok(out)
}

/// A path ready to measure.
#[derive(Debug, Clone)]
pub(crate) struct LabPath {
    /// What the report says about it.
    pub(crate) info: PathInfo,
    /// Where the client runs.
    pub(crate) client: Place,
    /// The bench agent's address (TCP).
    pub(crate) target: SocketAddrV4,
    /// The bench agent's address for the UDP tests (differs from `target` behind a NodePort).
    pub(crate) udp_target: SocketAddrV4,
    /// iperf3's server, on plain-IP paths.
    pub(crate) iperf: Option<SocketAddrV4>,
    /// Counters the path must move.
    pub(crate) checks: Vec<Check>,
}

impl LabPath {
    /// A path from its definition.
    pub(crate) fn new(
        def: &Def,
        client: Place,
        server: &str,
        target: SocketAddrV4,
        iperf: bool,
        checks: Vec<Check>,
    ) -> LabPath {
        LabPath {
            info: PathInfo {
                id: def.id.to_owned(),
                description: def.description.to_owned(),
                baseline: def.baseline.map(str::to_owned),
                client: client.label.clone(),
                server: server.to_owned(),
                verify: checks.iter().map(Check::describe).collect(),
                unavailable: None,
            },
            client,
            target,
            udp_target: target,
            iperf: iperf.then(|| SocketAddrV4::new(*target.ip(), IPERF_PORT)),
            checks,
        }
    }
}

/// Starts the bench agent's and iperf3's servers in `place` (killed on drop).
pub(crate) fn servers(place: &Place, ferry: &Path) -> Result<Vec<Proc>> {
    let mut agent = place.command(ferry)?;
    agent.args([
        "bench-agent",
        "serve",
        "--listen",
        &format!("0.0.0.0:{AGENT_PORT}"),
    ]);
    let mut iperf = place.command(Path::new("iperf3"))?;
    iperf.args(["-s", "-p", &IPERF_PORT.to_string()]);
    Ok(vec![
        Proc::spawn(agent, &format!("the bench agent in {}", place.label))?,
        Proc::spawn(iperf, &format!("iperf3 -s in {}", place.label))?,
    ])
}

/// The reference paths' namespaces, links and servers (removed on drop, servers first).
#[derive(Debug, Default)]
pub(crate) struct Baselines {
    /// Servers (dropped before the namespaces).
    pub(crate) procs: Vec<Proc>,
    /// Namespaces.
    pub(crate) ns: Vec<Ns>,
    /// The paths built.
    pub(crate) paths: Vec<LabPath>,
}

impl Drop for Baselines {
    fn drop(&mut self) {
        self.procs.clear();
        self.ns.clear();
    }
}

fn place(ns: &Ns, label: &str) -> Place {
    Place {
        label: label.to_owned(),
        netns: ns.path().to_owned(),
        cgroup: None,
        exec: None,
    }
}

impl Baselines {
    /// Builds the selected reference paths (L0, L1, P2-ref-vxlan) under unique names.
    pub(crate) fn build(defs: &[Def], ferry: &Path) -> Result<Baselines> {
        let tag = format!("fb{}", std::process::id() % 100_000);
        let mut b = Baselines::default();
        for d in defs {
            match d.id {
                "L0" => {
                    let ns = Ns::create(&format!("{tag}-l0"))?;
                    let p = place(&ns, "l0");
                    b.procs.extend(servers(&p, ferry)?);
                    let lo = Check::Link {
                        place: p.clone(),
                        dev: "lo".into(),
                        dir: "tx",
                    };
                    let target = SocketAddrV4::new(Ipv4Addr::LOCALHOST, AGENT_PORT);
                    b.paths.push(LabPath::new(
                        d,
                        p,
                        "127.0.0.1 (same namespace)",
                        target,
                        true,
                        vec![lo],
                    ));
                    b.ns.push(ns);
                }
                "L1" => {
                    let c = Ns::create(&format!("{tag}-l1c"))?;
                    let s = Ns::create(&format!("{tag}-l1s"))?;
                    super::lab::run_ok(std::process::Command::new("ip").args([
                        "link",
                        "add",
                        "v0",
                        "netns",
                        c.name(),
                        "type",
                        "veth",
                        "peer",
                        "name",
                        "v1",
                        "netns",
                        s.name(),
                    ]))?;
                    c.sh("ip addr add 10.98.1.1/30 dev v0; ip link set v0 up")?;
                    s.sh("ip addr add 10.98.1.2/30 dev v1; ip link set v1 up")?;
                    let (pc, ps) = (place(&c, "l1-client"), place(&s, "l1-server"));
                    b.procs.extend(servers(&ps, ferry)?);
                    let v0 = Check::Link {
                        place: pc.clone(),
                        dev: "v0".into(),
                        dir: "tx",
                    };
                    let target = SocketAddrV4::new(Ipv4Addr::new(10, 98, 1, 2), AGENT_PORT);
                    b.paths.push(LabPath::new(
                        d,
                        pc,
                        "10.98.1.2 over veth",
                        target,
                        true,
                        vec![v0],
                    ));
                    b.ns.extend([c, s]);
                }
                "P2-ref-vxlan" => {
                    let path = ref_vxlan(&tag, d, ferry, &mut b)?;
                    b.paths.push(path);
                }
                _ => {}
            }
        }
        Ok(b)
    }
}

/// Two "node" namespaces joined by a veth underlay, a kernel VXLAN device each (VNI 42, the same
/// MTU as the lab's pods: 1450), and a "pod" namespace behind each node via a veth, with routes.
fn ref_vxlan(tag: &str, d: &Def, ferry: &Path, b: &mut Baselines) -> Result<LabPath> {
    // The same topology as the lab's P2 path, with nothing of Ferry in it: two "node" namespaces
    // on a switch namespace (a bridge, as the lab's underlay), a kernel VXLAN device in each and
    // a "pod" behind a bridge in each (as ferry-cni attaches pods), routes by hand, no iptables.
    // So the ratio P2-vxlan / P2-ref-vxlan is what Ferry's own configuration costs.
    let sw = Ns::create(&format!("{tag}-rsw"))?;
    let n1 = Ns::create(&format!("{tag}-rn1"))?;
    let n2 = Ns::create(&format!("{tag}-rn2"))?;
    let p1 = Ns::create(&format!("{tag}-rp1"))?;
    let p2 = Ns::create(&format!("{tag}-rp2"))?;
    let link = |a: &Ns, an: &str, z: &Ns, zn: &str| {
        super::lab::run_ok(std::process::Command::new("ip").args([
            "link",
            "add",
            an,
            "netns",
            a.name(),
            "type",
            "veth",
            "peer",
            "name",
            zn,
            "netns",
            z.name(),
        ]))
    };
    link(&n1, "u0", &sw, "s1")?;
    link(&n2, "u0", &sw, "s2")?;
    link(&p1, "eth0", &n1, "h0")?;
    link(&p2, "eth0", &n2, "h0")?;
    sw.sh("ip link add br0 type bridge; ip link set br0 up
         for p in s1 s2; do ip link set $p master br0; ip link set $p up; done")?;
    for (n, me, peer, pod_net, far_net, far_vx) in [
        (&n1, "1", "2", "10.98.11", "10.98.12", "10.98.100.2"),
        (&n2, "2", "1", "10.98.12", "10.98.11", "10.98.100.1"),
    ] {
        n.sh(&format!(
            "sysctl -qw net.ipv4.ip_forward=1
             ip addr add 10.98.2.{me}/24 dev u0; ip link set u0 up
             ip link add vx0 type vxlan id 42 local 10.98.2.{me} remote 10.98.2.{peer} dstport 4789 dev u0
             ip link set vx0 mtu 1450
             ip addr add 10.98.100.{me}/24 dev vx0; ip link set vx0 up
             ip link add br0 type bridge; ip link set br0 mtu 1450 up
             ip link set h0 master br0; ip link set h0 mtu 1450 up
             ip addr add {pod_net}.1/24 dev br0
             ip route add {far_net}.0/24 via {far_vx} dev vx0 onlink"
        ))?;
    }
    for (p, net) in [(&p1, "10.98.11"), (&p2, "10.98.12")] {
        p.sh(&format!(
            "ip addr add {net}.2/24 dev eth0; ip link set eth0 mtu 1450 up
             ip route add default via {net}.1"
        ))?;
    }
    let (client, server, node1) = (
        place(&p1, "ref-pod-1"),
        place(&p2, "ref-pod-2"),
        place(&n1, "ref-node-1"),
    );
    b.procs.extend(servers(&server, ferry)?);
    let vx = Check::Link {
        place: node1,
        dev: "vx0".into(),
        dir: "tx",
    };
    let target = SocketAddrV4::new(Ipv4Addr::new(10, 98, 12, 2), AGENT_PORT);
    let path = LabPath::new(
        d,
        client,
        "10.98.12.2 over kernel VXLAN",
        target,
        true,
        vec![vx],
    );
    b.ns.extend([p1, p2, n1, n2, sw]);
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn quick_selects_the_quick_paths() {
        let d = select(&[], true, &s(&["vxlan"]), &s(&["ebpf"])).unwrap();
        let ids: Vec<&str> = d.iter().map(|d| d.id).collect();
        assert_eq!(ids, QUICK);
    }

    #[test]
    fn prefixes_select_variants_of_selected_modes() {
        let d = select(
            &s(&["S1", "L0"]),
            false,
            &s(&["vxlan", "host-gw"]),
            &s(&["ebpf", "iptables"]),
        )
        .unwrap();
        let ids: Vec<&str> = d.iter().map(|d| d.id).collect();
        assert_eq!(ids, ["L0", "S1-ebpf", "S1-iptables"]);
        let d = select(&s(&["P2"]), false, &s(&["vxlan"]), &s(&["ebpf"])).unwrap();
        let ids: Vec<&str> = d.iter().map(|d| d.id).collect();
        assert_eq!(ids, ["P2-ref-vxlan", "P2-vxlan"]);
    }

    #[test]
    fn unknown_or_unbuildable_paths_are_refused() {
        let e = select(&s(&["X9"]), false, &s(&["vxlan"]), &s(&["ebpf"])).unwrap_err();
        assert!(e.to_string().contains("unknown path \"X9\""));
        let e = select(&s(&["P2-udp"]), false, &s(&["vxlan"]), &s(&["ebpf"])).unwrap_err();
        assert!(e.to_string().contains("cannot be built"), "{e}");
    }

    #[test]
    fn nodeport_paths_have_their_direct_controls_as_baselines() {
        let d = select(
            &s(&["N2", "X1"]),
            false,
            &s(&["vxlan"]),
            &s(&["ebpf", "iptables"]),
        )
        .unwrap();
        let ids: Vec<&str> = d.iter().map(|d| d.id).collect();
        assert_eq!(ids, ["X1", "N2-ebpf", "N2-iptables"]);
        for d in CATALOGUE {
            let want = match d.id.split('-').next() {
                Some("N1") => Some("X1"),
                Some("N2") => Some("X2"),
                _ => continue,
            };
            assert_eq!(d.baseline, want, "{}", d.id);
        }
        assert!(!QUICK
            .iter()
            .any(|q| q.starts_with('N') || q.starts_with('X')));
    }

    #[test]
    fn every_baseline_is_a_known_path() {
        for d in CATALOGUE {
            if let Some(b) = d.baseline {
                assert!(CATALOGUE.iter().any(|c| c.id == b), "{}: {b}", d.id);
            }
        }
    }
}

/// The name of the first device of `kind` (`vxlan`, `tun`) in a namespace.
fn device_of_kind(node: &Place, kind: &str) -> Result<String> {
    let out = super::lab::run_ok(
        node.command(Path::new("ip"))?
            .args(["-d", "-j", "link", "show"]),
    )?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v.as_array()
        .into_iter()
        .flatten()
        .find(|l| l["linkinfo"]["info_kind"] == kind)
        .and_then(|l| l["ifname"].as_str().map(str::to_owned))
        .ok_or_else(|| anyhow::anyhow!("no {kind} device in {}", node.label))
}

/// What the cluster paths of one cluster are built from.
#[derive(Debug)]
pub(crate) struct ClusterCtx<'a> {
    /// The cluster.
    pub(crate) cluster: &'a super::lab::Cluster,
    /// Its bench pods.
    pub(crate) pods: &'a super::lab::Pods<'a>,
    /// The client cgroup below node-1's.
    pub(crate) client_cg: &'a Path,
}

/// Starts the servers the selected cluster paths need outside pods: in node-2 (L2) and in the
/// external host (E0, E1).
pub(crate) fn node_servers(
    defs: &[Def],
    c: &super::lab::Cluster,
    ferry: &Path,
) -> Result<Vec<Proc>> {
    let mut procs = Vec::new();
    if defs.iter().any(|d| d.id == "L2") {
        let p = Place {
            label: format!("node-2 ({})", c.name),
            netns: c.node_ns(2),
            cgroup: None,
            exec: None,
        };
        procs.extend(servers(&p, ferry)?);
    }
    if defs.iter().any(|d| d.id == "E0" || d.id == "E1") {
        let p = Place {
            label: format!("external host ({})", c.name),
            netns: c.ext_ns(),
            cgroup: None,
            exec: None,
        };
        procs.extend(servers(&p, ferry)?);
    }
    Ok(procs)
}

/// Host routes to bench pods added in the external host's namespace (never the root one) for
/// the X paths, deleted on drop.
#[derive(Debug, Default)]
pub(crate) struct ExtRoutes {
    /// The external host.
    place: Option<Place>,
    /// The destinations (`10.244.1.3/32`).
    routes: Vec<String>,
}

impl ExtRoutes {
    /// Routes to pod b (X1) and pod c (X2) via node-1's underlay address, in `c`'s external host.
    pub(crate) fn add(
        defs: &[Def],
        c: &super::lab::Cluster,
        pods: &super::lab::Pods<'_>,
    ) -> Result<ExtRoutes> {
        let place = Place {
            label: format!("external host ({})", c.name),
            netns: c.ext_ns(),
            cgroup: None,
            exec: None,
        };
        let mut r = ExtRoutes {
            place: Some(place.clone()),
            routes: Vec::new(),
        };
        let via = super::lab::Cluster::node_ip(1).to_string();
        for (id, ip) in [("X1", pods.b.ip), ("X2", pods.c.ip)] {
            if !defs.iter().any(|d| d.id == id) {
                continue;
            }
            let dst = format!("{ip}/32");
            super::lab::run_ok(
                place
                    .command(Path::new("ip"))?
                    .args(["route", "replace", &dst, "via", &via]),
            )
            .with_context(|| format!("route to {dst} in {}", place.label))?;
            r.routes.push(dst);
        }
        Ok(r)
    }
}

impl Drop for ExtRoutes {
    fn drop(&mut self) {
        let Some(place) = &self.place else { return };
        for dst in &self.routes {
            if let Ok(mut cmd) = place.command(Path::new("ip")) {
                let _ = cmd.args(["route", "del", dst]).output();
            }
        }
    }
}

/// One host route to a pod in a cluster's external host namespace (never the root one) via
/// node-1's underlay address, as X1's: the Service scale sweep's external control
/// (`--svc-from external`) needs it whether or not X1 is measured. Deleted on drop unless it was
/// there before (then it is X1's, [`ExtRoutes`], and stays to that guard).
#[derive(Debug)]
pub(crate) struct ExtRoute {
    place: Place,
    dst: String,
    added: bool,
}

impl ExtRoute {
    /// The route to `pod` in `c`'s external host.
    pub(crate) fn add(c: &super::lab::Cluster, pod: Ipv4Addr) -> Result<ExtRoute> {
        let place = Place {
            label: format!("external host ({})", c.name),
            netns: c.ext_ns(),
            cgroup: None,
            exec: None,
        };
        let dst = format!("{pod}/32");
        let via = super::lab::Cluster::node_ip(1).to_string();
        let shown = super::lab::run_ok(
            place
                .command(Path::new("ip"))?
                .args(["-j", "route", "show", "exact", &dst]),
        )
        .with_context(|| format!("reading the routes of {}", place.label))?;
        let present = serde_json::from_str::<serde_json::Value>(&shown)
            .ok()
            .and_then(|v| v.as_array().map(|a| !a.is_empty()))
            .unwrap_or(false);
        if !present {
            super::lab::run_ok(
                place
                    .command(Path::new("ip"))?
                    .args(["route", "add", &dst, "via", &via]),
            )
            .with_context(|| format!("route to {dst} in {}", place.label))?;
        }
        Ok(ExtRoute {
            place,
            dst,
            added: !present,
        })
    }
}

impl Drop for ExtRoute {
    fn drop(&mut self) {
        if !self.added {
            return;
        }
        if let Ok(mut cmd) = self.place.command(Path::new("ip")) {
            let _ = cmd.args(["route", "del", &self.dst]).output();
        }
    }
}

/// Builds the path `def` on a cluster.
pub(crate) fn cluster_path(def: &Def, cx: &ClusterCtx<'_>) -> Result<LabPath> {
    let (c, p) = (cx.cluster, cx.pods);
    let cg = Some(cx.client_cg.to_owned());
    let node = |i: u32, cgroup: Option<std::path::PathBuf>| Place {
        label: format!("node-{i} ({})", c.name),
        netns: c.node_ns(i),
        cgroup,
        exec: None,
    };
    let pod = |pod: &super::lab::Pod, cgroup: Option<std::path::PathBuf>| Place {
        label: format!("pod {} on node-{}", pod.name, pod.node),
        netns: pod.netns.clone(),
        cgroup,
        exec: None,
    };
    let ext = Place {
        label: format!("external host ({})", c.name),
        netns: c.ext_ns(),
        cgroup: None,
        exec: None,
    };
    let link = |place: Place, dev: &str, dir: &'static str| Check::Link {
        place,
        dev: dev.to_owned(),
        dir,
    };
    let socklb = || -> Result<Check> {
        Ok(Check::SockLb {
            bpffs: c
                .node_bpffs(1)
                .ok_or_else(|| anyhow::anyhow!("cluster {} has no socket LB pins", c.name))?,
            node: format!("node-1 ({})", c.name),
        })
    };
    // The bench Services' targetPort.
    let dnat = |ip: Ipv4Addr| Check::Dnat {
        place: node(1, None),
        to: format!("{ip}:{SVC_PORT}"),
    };
    let agent = |ip: Ipv4Addr| SocketAddrV4::new(ip, AGENT_PORT);
    let a = pod(&p.a, cg.clone());
    let path = match def.id {
        "L2" => {
            let ip = super::lab::Cluster::node_ip(2);
            LabPath::new(
                def,
                node(1, cg),
                &format!("node-2 {ip}"),
                agent(ip),
                true,
                vec![link(node(1, None), "eth0", "tx")],
            )
        }
        "H1" => LabPath::new(
            def,
            node(1, cg),
            &format!("pod {} {}", p.b.name, p.b.ip),
            agent(p.b.ip),
            true,
            vec![link(pod(&p.b, None), "eth0", "rx")],
        ),
        "P1" => LabPath::new(
            def,
            a,
            &format!("pod {} {}", p.b.name, p.b.ip),
            agent(p.b.ip),
            true,
            vec![link(pod(&p.b, None), "eth0", "rx")],
        ),
        id if id.starts_with("P2-") => {
            let dev = match c.backend.as_str() {
                "vxlan" => device_of_kind(&node(1, None), "vxlan")?,
                "udp" => device_of_kind(&node(1, None), "tun")?,
                _ => "eth0".into(),
            };
            LabPath::new(
                def,
                a,
                &format!("pod {} {} on node-2", p.c.name, p.c.ip),
                agent(p.c.ip),
                true,
                vec![link(node(1, None), &dev, "tx")],
            )
        }
        id if id.starts_with('S') => {
            let (svc, backend) = match &id[..2] {
                "S1" => (p.svc[0], &p.b),
                "S2" => (p.svc[1], &p.c),
                _ => (p.svc[2], &p.a),
            };
            let check = if c.proxy == "ebpf" {
                socklb()?
            } else {
                dnat(backend.ip)
            };
            LabPath::new(
                def,
                a,
                &format!(
                    "ClusterIP {svc}:{AGENT_PORT} -> {}:{SVC_PORT}",
                    backend.name
                ),
                agent(svc),
                false,
                vec![check],
            )
        }
        "E0" | "E1" => {
            let client = if def.id == "E0" { node(1, cg) } else { a };
            let ip = super::lab::Cluster::EXT_IP;
            LabPath::new(
                def,
                client,
                &format!("external host {ip}"),
                agent(ip),
                true,
                vec![link(node(1, None), "eth0", "tx")],
            )
        }
        "X1" | "X2" => {
            let (pd, check) = if def.id == "X1" {
                (&p.b, link(pod(&p.b, None), "eth0", "rx"))
            } else {
                (&p.c, link(pod(&p.c, None), "eth0", "rx"))
            };
            LabPath::new(
                def,
                ext,
                &format!(
                    "pod {} {} on node-{} (route via node-1)",
                    pd.name, pd.ip, pd.node
                ),
                agent(pd.ip),
                true,
                vec![check],
            )
        }
        id if id.starts_with("N1") || id.starts_with("N2") => {
            let ip = super::lab::Cluster::node_ip(1);
            let (backend, tcp, udp) = if id.starts_with("N1") {
                (&p.b, p.node_port, p.node_port_udp)
            } else {
                (&p.c, p.node_port_remote, p.node_port_remote_udp)
            };
            let check = if c.proxy == "ebpf" {
                Check::NodePortTc {
                    bpffs: c
                        .node_bpffs(1)
                        .ok_or_else(|| anyhow::anyhow!("cluster {} has no eBPF pins", c.name))?,
                    node: format!("node-1 ({})", c.name),
                }
            } else {
                dnat(backend.ip)
            };
            let mut path = LabPath::new(
                def,
                ext,
                &format!(
                    "NodePort {ip}:{tcp} -> {} on node-{}",
                    backend.name, backend.node
                ),
                SocketAddrV4::new(ip, tcp),
                false,
                vec![check],
            );
            path.udp_target = SocketAddrV4::new(ip, udp);
            path
        }
        other => bail!("path {other} is not a cluster path"),
    };
    Ok(path)
}
