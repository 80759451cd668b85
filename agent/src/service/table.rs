//! The service table: what every Service frontend on this node should be translated to, computed
//! as a pure function of the Services, EndpointSlices and Nodes the agent sees ([`compute`]).
//! Both proxiers (eBPF socket LB and iptables) program exactly this table; tests compare the
//! kernel's state with it.
//!
//! One [`Entry`] per [`Frontend`] (address, port, protocol): a ClusterIP port, a NodePort on one
//! node address, an externalIP port or a LoadBalancer ingress IP port. Its backends are the
//! endpoints kube-proxy would use (ready ones; serving-terminating ones only when none is ready;
//! `internalTrafficPolicy: Local` keeps this node's), sorted, with the port resolved (named
//! `targetPort`s through the EndpointSlice's port names). An entry with no backends is kept: the
//! proxier must refuse it at once (ECONNREFUSED / ICMP port unreachable), never time out.
//!
//! `externalTrafficPolicy: Local` (on a NodePort, externalIP or LoadBalancer frontend) marks the
//! entry [`Entry::external_local`]: traffic from outside the cluster goes only to
//! [`Entry::local_backends`] (this node's endpoints, same fallback), with the client's address
//! preserved, and is dropped when there are none; pods' and the node's own traffic still uses
//! [`Entry::backends`]. A LoadBalancer Service with that policy also gets a
//! [`ServiceTable::health_checks`] entry: its `healthCheckNodePort` and this node's count of ready
//! local endpoints (kube-proxy's `LocalReadyEndpoints`: distinct addresses, terminating ones not
//! counted, so a draining node fails its health check).

use k8s_openapi::api::core::v1::{Node, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::Ipv4Addr;

/// L4 protocol of a frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// The IANA protocol number (6, 17), as the kernel and the BPF maps use it.
    pub const fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }

    /// `tcp` / `udp`, as iptables and the inspection output spell it.
    pub const fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// What a client connects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Frontend {
    /// The address (ClusterIP, node address, externalIP or LoadBalancer ingress IP).
    pub addr: Ipv4Addr,
    /// The port (the Service port, or the nodePort).
    pub port: u16,
    /// The protocol.
    pub proto: Proto,
}

impl fmt::Display for Frontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.addr, self.port, self.proto.name())
    }
}

/// Where a connection goes instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Backend {
    /// The endpoint's address.
    pub addr: Ipv4Addr,
    /// The endpoint's port (the resolved `targetPort`).
    pub port: u16,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.addr, self.port)
    }
}

/// Which kind of Service address a frontend is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FrontendKind {
    /// `spec.clusterIP` (and `clusterIPs`).
    ClusterIp,
    /// `nodePort` on one node address.
    NodePort,
    /// One of `spec.externalIPs`.
    ExternalIp,
    /// One of `status.loadBalancer.ingress[].ip`.
    LoadBalancer,
}

/// The Service port a frontend belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortName {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The port's name (empty for a single unnamed port).
    pub port: String,
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port.is_empty() {
            write!(f, "{}/{}", self.namespace, self.name)
        } else {
            write!(f, "{}/{}:{}", self.namespace, self.name, self.port)
        }
    }
}

/// One frontend's translation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    /// The Service port this frontend serves.
    pub service: ServicePortName,
    /// What kind of address the frontend is.
    pub kind: FrontendKind,
    /// The endpoints to spread new connections over (sorted, no duplicates); empty: refuse.
    /// For an [`Entry::external_local`] frontend: what the cluster's own clients (pods, nodes) use.
    pub backends: Vec<Backend>,
    /// This node's endpoints among all the Service's (ready ones; the serving terminating ones
    /// when none is ready), sorted; filled for every frontend.
    pub local_backends: Vec<Backend>,
    /// `externalTrafficPolicy: Local` on a NodePort, externalIP or LoadBalancer frontend: traffic
    /// from outside the cluster goes only to [`Entry::local_backends`], source preserved (none:
    /// drop). Always `false` for a ClusterIP frontend.
    pub external_local: bool,
    /// `sessionAffinity: ClientIP`: its `timeoutSeconds` (`None`: no affinity).
    pub affinity_timeout: Option<u32>,
}

/// Everything the proxier programs, and what was left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceTable {
    /// Frontend -> translation.
    pub entries: BTreeMap<Frontend, Entry>,
    /// Objects (or parts of them) skipped as unusable: `(namespace/name, why)`, for logs, metrics
    /// and events. Every other Service is still served.
    pub skipped: Vec<(String, String)>,
    /// `healthCheckNodePort` -> what it reports, for the LoadBalancer Services with
    /// `externalTrafficPolicy: Local` (kube-proxy's service health server).
    pub health_checks: BTreeMap<u16, HealthCheck>,
}

/// One `healthCheckNodePort` listener's subject and answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// Ready endpoints of the Service on this node (distinct addresses over all its ports);
    /// 0: the listener answers 503.
    pub local_endpoints: usize,
}

/// Label naming the proxy that implements a Service; any value means "not us" (kube-proxy
/// without `--service-proxy-name` ignores such Services the same way).
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// Label marking a headless Service or its EndpointSlices: ignored.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// `sessionAffinityConfig.clientIP.timeoutSeconds` when unset (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;
/// Largest `timeoutSeconds` the API accepts (one day).
const MAX_AFFINITY_TIMEOUT: u32 = 86400;

/// Settings of [`compute`] beyond the objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Addresses that serve NodePorts in addition to every Node's InternalIPs (e.g. this node's
    /// interface address while its Node has no InternalIP yet).
    pub node_port_addresses: Vec<Ipv4Addr>,
}

/// One endpoint as read from the slices, before the policy picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Candidate {
    ready: bool,
    serving: bool,
    terminating: bool,
    local: bool,
}

impl Candidate {
    /// Two slices list the same endpoint: keep the best view of it.
    fn merge(self, o: Candidate) -> Candidate {
        Candidate {
            ready: self.ready || o.ready,
            serving: self.serving || o.serving,
            terminating: self.terminating && o.terminating,
            local: self.local || o.local,
        }
    }
}

/// The endpoints kube-proxy would use out of `all`: ready ones; when none is ready, the serving
/// and terminating ones (KEP-1669). `local_only`: only this node's (`internalTrafficPolicy:
/// Local`), with the same fallback among them.
fn pick(all: &BTreeMap<Backend, Candidate>, local_only: bool) -> Vec<Backend> {
    let eligible = |c: &Candidate| !local_only || c.local;
    let ready: Vec<Backend> = all
        .iter()
        .filter(|(_, c)| eligible(c) && c.ready)
        .map(|(b, _)| *b)
        .collect();
    if !ready.is_empty() {
        return ready;
    }
    all.iter()
        .filter(|(_, c)| eligible(c) && c.serving && c.terminating)
        .map(|(b, _)| *b)
        .collect()
}

/// A port number from the API (`i32`), if it is a valid one.
fn port_number(p: i32) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p != 0)
}

fn protocol(p: Option<&str>) -> Result<Proto, String> {
    match p.unwrap_or("TCP") {
        "TCP" => Ok(Proto::Tcp),
        "UDP" => Ok(Proto::Udp),
        other => Err(format!("protocol {other} is not supported")),
    }
}

/// What an address string from the API is.
enum Addr {
    V4(Ipv4Addr),
    V6,
    Garbage,
}

fn parse_addr(s: &str) -> Addr {
    match s.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => Addr::V4(a),
        Ok(std::net::IpAddr::V6(_)) => Addr::V6,
        Err(_) => Addr::Garbage,
    }
}

/// One valid Service port, as the table reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PortRecord {
    /// The port's name (empty for a single unnamed port).
    name: String,
    proto: Proto,
    port: u16,
    /// The nodePort, for the types that serve one (`NodePort`, `LoadBalancer`).
    node_port: Option<u16>,
}

/// What the service table reads of one Service, taken when the watch delivers it
/// ([`ServiceRecord::new`]). The agent keeps these instead of the API objects: a few hundred
/// bytes each instead of several KB (`managedFields`, annotations, timestamps, every unset field
/// of the spec), and what is wrong with the object is found once per change, not every round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecord {
    namespace: String,
    name: String,
    /// Frontend addresses other than the NodePorts, in the API's order.
    addresses: Vec<(FrontendKind, Ipv4Addr)>,
    /// The usable ports, in the API's order.
    ports: Vec<PortRecord>,
    /// `sessionAffinity: ClientIP`: its timeout.
    affinity_timeout: Option<u32>,
    /// `internalTrafficPolicy: Local`.
    local_only: bool,
    /// `externalTrafficPolicy: Local` on a Service with external frontends (type NodePort or
    /// LoadBalancer, or externalIPs), as kube-proxy's `ExternalPolicyLocal`.
    external_local: bool,
    /// `healthCheckNodePort`, for a LoadBalancer Service with `externalTrafficPolicy: Local`.
    health_check_node_port: Option<u16>,
    /// Why parts of the Service are left out, in the order found.
    problems: Vec<String>,
}

/// The frontend addresses of a Service beyond its NodePorts: `(kind, address)`; what is unusable
/// goes to `problems`.
fn service_addresses(svc: &Service, problems: &mut Vec<String>) -> Vec<(FrontendKind, Ipv4Addr)> {
    let mut out = Vec::new();
    let spec = svc.spec.as_ref();
    let cluster_ips: Vec<&String> = match spec.and_then(|s| s.cluster_ips.as_ref()) {
        Some(ips) if !ips.is_empty() => ips.iter().collect(),
        _ => spec
            .and_then(|s| s.cluster_ip.as_ref())
            .into_iter()
            .collect(),
    };
    let mut push = |kind: FrontendKind, what: &str, s: &str| match parse_addr(s) {
        Addr::V4(a) => out.push((kind, a)),
        Addr::V6 => problems.push(format!("{what} {s} is IPv6 (only IPv4 is served)")),
        Addr::Garbage => problems.push(format!("{what} {s:?} is not an address")),
    };
    for ip in cluster_ips.into_iter().filter(|ip| !ip.is_empty()) {
        push(FrontendKind::ClusterIp, "clusterIP", ip);
    }
    for ip in spec
        .and_then(|s| s.external_ips.as_ref())
        .into_iter()
        .flatten()
    {
        push(FrontendKind::ExternalIp, "externalIP", ip);
    }
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    for ing in ingress.into_iter().flatten() {
        // ipMode Proxy: the load balancer delivers to the node with its own address as the
        // destination, so the proxy must not capture the IP (kube-proxy skips it too).
        if ing.ip_mode.as_deref() == Some("Proxy") {
            continue;
        }
        if let Some(ip) = ing.ip.as_deref().filter(|ip| !ip.is_empty()) {
            push(FrontendKind::LoadBalancer, "load balancer ingress IP", ip);
        }
    }
    out
}

/// Validates one Service port.
fn service_port(p: &ServicePort, has_node_ports: bool) -> Result<PortRecord, String> {
    let name = p.name.clone().unwrap_or_default();
    let proto = protocol(p.protocol.as_deref()).map_err(|why| format!("port {}: {why}", p.port))?;
    let port = port_number(p.port).ok_or_else(|| format!("port {} is out of range", p.port))?;
    let node_port = match p.node_port {
        Some(n) if has_node_ports => Some(
            port_number(n).ok_or_else(|| format!("port {port}: nodePort {n} is out of range"))?,
        ),
        _ => None,
    };
    Ok(PortRecord {
        name,
        proto,
        port,
        node_port,
    })
}

impl ServiceRecord {
    /// What the table needs of `svc`; `None` for a Service this proxy does not serve (labelled
    /// for another proxy or headless, `ExternalName`, `clusterIP: None`, no spec).
    pub fn new(svc: &Service) -> Option<ServiceRecord> {
        let labels = svc.metadata.labels.as_ref();
        if labels.is_some_and(|l| {
            l.contains_key(SERVICE_PROXY_NAME_LABEL) || l.contains_key(HEADLESS_LABEL)
        }) {
            return None;
        }
        let spec = svc.spec.as_ref()?;
        let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
        if type_ == "ExternalName" || spec.cluster_ip.as_deref() == Some("None") {
            return None;
        }
        let has_node_ports = matches!(type_, "NodePort" | "LoadBalancer");
        let mut problems = Vec::new();
        let addresses = service_addresses(svc, &mut problems);
        let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .filter(|t| (1..=MAX_AFFINITY_TIMEOUT).contains(t))
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
        });
        let mut ports: Vec<PortRecord> = Vec::new();
        let mut seen_ports: BTreeSet<(u16, Proto)> = BTreeSet::new();
        let mut seen_names: BTreeSet<&str> = BTreeSet::new();
        for sp in spec.ports.iter().flatten() {
            let p = match service_port(sp, has_node_ports) {
                Ok(p) => p,
                Err(why) => {
                    problems.push(why);
                    continue;
                }
            };
            if !seen_ports.insert((p.port, p.proto))
                || !seen_names.insert(sp.name.as_deref().unwrap_or_default())
            {
                problems.push(format!(
                    "duplicate port {}/{} ({:?})",
                    p.port,
                    p.proto.name(),
                    p.name
                ));
                continue;
            }
            ports.push(p);
        }
        let has_external_ips = spec.external_ips.as_ref().is_some_and(|v| !v.is_empty());
        let external_local = spec.external_traffic_policy.as_deref() == Some("Local")
            && (has_node_ports || has_external_ips);
        let health_check_node_port = if external_local && type_ == "LoadBalancer" {
            match spec.health_check_node_port {
                Some(p) => port_number(p).or_else(|| {
                    problems.push(format!("healthCheckNodePort {p} is out of range"));
                    None
                }),
                None => {
                    problems.push(
                        "externalTrafficPolicy Local without a healthCheckNodePort: no health check"
                            .to_owned(),
                    );
                    None
                }
            }
        } else {
            None
        };
        Some(ServiceRecord {
            namespace: svc.metadata.namespace.clone().unwrap_or_default(),
            name: svc.metadata.name.clone().unwrap_or_default(),
            addresses,
            ports,
            affinity_timeout,
            local_only: spec.internal_traffic_policy.as_deref() == Some("Local"),
            external_local,
            health_check_node_port,
            problems,
        })
    }
}

/// What the service table reads of one EndpointSlice, taken when the watch delivers it
/// ([`SliceRecord::new`]): its Service, its usable ports and its endpoints' first IPv4 address
/// and conditions, with "on this node" resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceRecord {
    namespace: String,
    name: String,
    /// The `kubernetes.io/service-name` label (empty: the slice is unusable, see `problems`).
    service: String,
    /// `(name, protocol, port)`.
    ports: Vec<(String, Proto, u16)>,
    endpoints: Vec<(Ipv4Addr, Candidate)>,
    /// Why the slice, or parts of it, are left out.
    problems: Vec<String>,
}

impl SliceRecord {
    /// What the table needs of `s`, as seen from node `node_name` (which endpoints are local);
    /// `None` for a headless Service's slice (ignored).
    pub fn new(s: &EndpointSlice, node_name: &str) -> Option<SliceRecord> {
        let labels = s.metadata.labels.as_ref();
        if labels.is_some_and(|l| l.contains_key(HEADLESS_LABEL)) {
            return None;
        }
        let mut r = SliceRecord {
            namespace: s.metadata.namespace.clone().unwrap_or_default(),
            name: s.metadata.name.clone().unwrap_or_default(),
            service: String::new(),
            ports: Vec::new(),
            endpoints: Vec::new(),
            problems: Vec::new(),
        };
        let Some(svc) = labels
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .filter(|n| !n.is_empty())
        else {
            r.problems.push(format!(
                "EndpointSlice without the {SERVICE_NAME_LABEL} label"
            ));
            return Some(r);
        };
        if s.address_type != "IPv4" {
            r.problems.push(format!(
                "EndpointSlice of addressType {} (only IPv4 is served)",
                s.address_type
            ));
            return Some(r);
        }
        r.service.clone_from(svc);
        for p in s.ports.iter().flatten() {
            let name = p.name.clone().unwrap_or_default();
            let proto = match protocol(p.protocol.as_deref()) {
                Ok(proto) => proto,
                Err(why) => {
                    r.problems.push(format!("port {name:?}: {why}"));
                    continue;
                }
            };
            match p.port.and_then(port_number) {
                Some(n) => r.ports.push((name, proto, n)),
                None => r.problems.push(format!(
                    "port {name:?}: missing or out-of-range port {:?}",
                    p.port
                )),
            }
        }
        for e in &s.endpoints {
            // kube-proxy uses the first address only (the API requires exactly one for IPv4).
            let Some(first) = e.addresses.first() else {
                continue;
            };
            let addr = match parse_addr(first) {
                Addr::V4(a) => a,
                _ => {
                    r.problems
                        .push(format!("endpoint address {first:?} is not IPv4"));
                    continue;
                }
            };
            let c = e.conditions.as_ref();
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            r.endpoints.push((
                addr,
                Candidate {
                    ready,
                    serving: c.and_then(|c| c.serving).unwrap_or(ready),
                    terminating: c.and_then(|c| c.terminating).unwrap_or(false),
                    local: e.node_name.as_deref() == Some(node_name),
                },
            ));
        }
        r.ports.shrink_to_fit();
        r.endpoints.shrink_to_fit();
        Some(r)
    }
}

/// The endpoints of one Service, merged over its EndpointSlices: per slice port (name,
/// protocol), every endpoint with its conditions.
type Endpoints<'a> = HashMap<(&'a str, Proto), BTreeMap<Backend, Candidate>>;

/// Merges the slices' endpoints per Service `(namespace, name)`; records what is unusable in
/// `skipped`.
fn endpoints_by_service<'a>(
    slices: impl Iterator<Item = &'a SliceRecord>,
    skipped: &mut Vec<(String, String)>,
) -> HashMap<(&'a str, &'a str), Endpoints<'a>> {
    let mut out: HashMap<(&str, &str), Endpoints<'a>> = HashMap::new();
    for s in slices {
        if !s.problems.is_empty() {
            let id = format!("{}/{}", s.namespace, s.name);
            skipped.extend(s.problems.iter().map(|p| (id.clone(), p.clone())));
        }
        if s.service.is_empty() {
            continue;
        }
        let merged = out
            .entry((s.namespace.as_str(), s.service.as_str()))
            .or_default();
        for (name, proto, port) in &s.ports {
            let set = merged.entry((name.as_str(), *proto)).or_default();
            for (addr, cand) in &s.endpoints {
                let b = Backend {
                    addr: *addr,
                    port: *port,
                };
                let c = set.get(&b).map_or(*cand, |old| old.merge(*cand));
                set.insert(b, c);
            }
        }
    }
    out
}

/// Every IPv4 InternalIP of `nodes`, plus the extra addresses.
fn node_port_addresses<N: Borrow<Node>>(nodes: &[N], opts: &Options) -> BTreeSet<Ipv4Addr> {
    let mut out: BTreeSet<Ipv4Addr> = opts.node_port_addresses.iter().copied().collect();
    for n in nodes {
        let addrs = n
            .borrow()
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref());
        for a in addrs.into_iter().flatten() {
            if a.type_ == "InternalIP" {
                if let Addr::V4(ip) = parse_addr(&a.address) {
                    out.insert(ip);
                }
            }
        }
    }
    out
}

/// Adds `svc`'s health check on `port`: its ready local endpoints (distinct addresses, as
/// kube-proxy counts them); a port already taken by another Service is reported and left to it.
fn health_check(table: &mut ServiceTable, svc: &ServiceRecord, port: u16, eps: &Endpoints<'_>) {
    if let Some(other) = table.health_checks.get(&port) {
        table.skipped.push((
            format!("{}/{}", svc.namespace, svc.name),
            format!(
                "healthCheckNodePort {port} is already used by {}/{}",
                other.namespace, other.name
            ),
        ));
        return;
    }
    let local: BTreeSet<Ipv4Addr> = eps
        .values()
        .flatten()
        .filter(|(_, c)| c.local && c.ready)
        .map(|(b, _)| b.addr)
        .collect();
    table.health_checks.insert(
        port,
        HealthCheck {
            namespace: svc.namespace.clone(),
            name: svc.name.clone(),
            local_endpoints: local.len(),
        },
    );
}

/// The service table for these Services and EndpointSlices (as records: [`ServiceRecord::new`],
/// [`SliceRecord::new`], which also fixes the node whose local endpoints count) and Nodes:
/// kube-proxy's semantics (see the module documentation and `docs/services.md`). Pure; bad
/// objects (or bad parts of one) are left out with a reason in [`ServiceTable::skipped`] and
/// never affect the others. Services are taken in namespace/name order, so when two claim one
/// frontend the first keeps it.
pub fn compute<S, E, N>(services: &[S], slices: &[E], nodes: &[N], opts: &Options) -> ServiceTable
where
    S: Borrow<ServiceRecord>,
    E: Borrow<SliceRecord>,
    N: Borrow<Node>,
{
    let mut table = ServiceTable::default();
    let endpoints = endpoints_by_service(slices.iter().map(Borrow::borrow), &mut table.skipped);
    let node_addrs = node_port_addresses(nodes, opts);
    let mut ordered: Vec<&ServiceRecord> = services.iter().map(Borrow::borrow).collect();
    ordered.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let empty = Endpoints::new();
    for svc in ordered {
        let id = || format!("{}/{}", svc.namespace, svc.name);
        table
            .skipped
            .extend(svc.problems.iter().map(|p| (id(), p.clone())));
        let eps = endpoints
            .get(&(svc.namespace.as_str(), svc.name.as_str()))
            .unwrap_or(&empty);
        if let Some(port) = svc.health_check_node_port {
            health_check(&mut table, svc, port, eps);
        }
        for p in &svc.ports {
            let all = eps.get(&(p.name.as_str(), p.proto));
            let pick_with = |local: bool| all.map(|a| pick(a, local)).unwrap_or_default();
            let cluster = pick_with(false);
            let local = pick_with(true);
            let internal = if svc.local_only {
                local.clone()
            } else {
                cluster.clone()
            };
            let service = ServicePortName {
                namespace: svc.namespace.clone(),
                name: svc.name.clone(),
                port: p.name.clone(),
            };
            let mut frontends: Vec<(Frontend, FrontendKind)> = svc
                .addresses
                .iter()
                .map(|(kind, addr)| {
                    (
                        Frontend {
                            addr: *addr,
                            port: p.port,
                            proto: p.proto,
                        },
                        *kind,
                    )
                })
                .collect();
            if let Some(np) = p.node_port {
                frontends.extend(node_addrs.iter().map(|a| {
                    (
                        Frontend {
                            addr: *a,
                            port: np,
                            proto: p.proto,
                        },
                        FrontendKind::NodePort,
                    )
                }));
            }
            for (fe, kind) in frontends {
                if let Some(other) = table.entries.get(&fe) {
                    if other.service != service {
                        table.skipped.push((
                            id(),
                            format!("{fe} is already served for {}", other.service),
                        ));
                    }
                    continue;
                }
                let cluster_ip = kind == FrontendKind::ClusterIp;
                let backends = if cluster_ip {
                    internal.clone()
                } else {
                    cluster.clone()
                };
                table.entries.insert(
                    fe,
                    Entry {
                        service: service.clone(),
                        kind,
                        backends,
                        local_backends: local.clone(),
                        external_local: svc.external_local && !cluster_ip,
                        affinity_timeout: svc.affinity_timeout,
                    },
                );
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn svc(v: Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn slice(v: Value) -> EndpointSlice {
        serde_json::from_value(v).unwrap()
    }

    fn node(name: &str, ip: &str) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name},
            "status": {"addresses": [{"type": "InternalIP", "address": ip},
                                     {"type": "Hostname", "address": name}]}}))
        .unwrap()
    }

    /// A ClusterIP Service `ns/name` with `ports` (`[name, port, protocol]`).
    fn cluster_ip(name: &str, ip: &str, ports: Value) -> Value {
        json!({"metadata": {"namespace": "default", "name": name},
               "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "ports": ports}})
    }

    /// A slice for Service `svc` with `ports` and `endpoints`.
    fn slice_of(name: &str, svc: &str, ports: Value, endpoints: Value) -> EndpointSlice {
        slice(json!({"metadata": {"namespace": "default", "name": name,
                                  "labels": {SERVICE_NAME_LABEL: svc}},
                     "addressType": "IPv4", "ports": ports, "endpoints": endpoints}))
    }

    fn ep(ip: &str, node: &str) -> Value {
        json!({"addresses": [ip], "nodeName": node, "conditions": {"ready": true}})
    }

    fn fe(addr: &str, port: u16, proto: Proto) -> Frontend {
        Frontend {
            addr: addr.parse().unwrap(),
            port,
            proto,
        }
    }

    fn be(addr: &str, port: u16) -> Backend {
        Backend {
            addr: addr.parse().unwrap(),
            port,
        }
    }

    /// The table of node `node` for these objects, through the records the agent keeps.
    fn run_on(
        node: &str,
        services: &[Value],
        slices: &[EndpointSlice],
        nodes: &[Node],
    ) -> ServiceTable {
        let services: Vec<ServiceRecord> = services
            .iter()
            .filter_map(|s| ServiceRecord::new(&svc(s.clone())))
            .collect();
        let slices: Vec<SliceRecord> = slices
            .iter()
            .filter_map(|s| SliceRecord::new(s, node))
            .collect();
        compute(&services, &slices, nodes, &Options::default())
    }

    fn run(services: &[Value], slices: &[EndpointSlice], nodes: &[Node]) -> ServiceTable {
        run_on("n1", services, slices, nodes)
    }

    #[test]
    fn cluster_ip_tcp_and_udp_with_named_target_ports() {
        let s = cluster_ip(
            "dns",
            "10.96.0.10",
            json!([{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"},
                   {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": "dns-tcp"},
                   {"name": "metrics", "port": 9153, "targetPort": 9153}]),
        );
        let sl = slice_of(
            "dns-abc",
            "dns",
            json!([{"name": "dns", "port": 5353, "protocol": "UDP"},
                   {"name": "dns-tcp", "port": 5354, "protocol": "TCP"},
                   {"name": "metrics", "port": 9153, "protocol": "TCP"}]),
            json!([ep("10.244.1.3", "n1"), ep("10.244.2.3", "n2")]),
        );
        let t = run(&[s], &[sl], &[]);
        assert!(t.skipped.is_empty(), "{:?}", t.skipped);
        assert_eq!(t.entries.len(), 3);
        let udp = &t.entries[&fe("10.96.0.10", 53, Proto::Udp)];
        assert_eq!(
            udp.backends,
            vec![be("10.244.1.3", 5353), be("10.244.2.3", 5353)]
        );
        assert_eq!(udp.kind, FrontendKind::ClusterIp);
        assert_eq!(udp.service.to_string(), "default/dns:dns");
        assert_eq!(udp.affinity_timeout, None);
        let tcp = &t.entries[&fe("10.96.0.10", 53, Proto::Tcp)];
        assert_eq!(
            tcp.backends,
            vec![be("10.244.1.3", 5354), be("10.244.2.3", 5354)]
        );
        assert_eq!(
            t.entries[&fe("10.96.0.10", 9153, Proto::Tcp)].backends[0],
            be("10.244.1.3", 9153)
        );
    }

    #[test]
    fn readiness_and_terminating_fallback() {
        let s = cluster_ip("web", "10.96.0.20", json!([{"port": 80}]));
        let ports = json!([{"port": 8080}]);
        let eps = |v: Value| slice_of("web-1", "web", ports.clone(), v);
        // ready nil counts as ready; not ready is left out.
        let t = run(
            std::slice::from_ref(&s),
            &[eps(json!([
                {"addresses": ["10.244.1.1"]},
                {"addresses": ["10.244.1.2"], "conditions": {"ready": false}},
                {"addresses": ["10.244.1.3"], "conditions": {"ready": false, "serving": true, "terminating": true}}
            ]))],
            &[],
        );
        let f = fe("10.96.0.20", 80, Proto::Tcp);
        assert_eq!(t.entries[&f].backends, vec![be("10.244.1.1", 8080)]);
        assert_eq!(t.entries[&f].service.to_string(), "default/web");
        // No ready endpoint: the serving terminating ones (not the non-serving terminating).
        let t = run(
            std::slice::from_ref(&s),
            &[eps(json!([
                {"addresses": ["10.244.1.2"], "conditions": {"ready": false}},
                {"addresses": ["10.244.1.3"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.244.1.4"], "conditions": {"ready": false, "serving": false, "terminating": true}}
            ]))],
            &[],
        );
        assert_eq!(t.entries[&f].backends, vec![be("10.244.1.3", 8080)]);
        // No endpoints at all (no slice): the entry stays, empty (refuse).
        let t = run(&[s], &[], &[]);
        assert_eq!(t.entries[&f].backends, vec![]);
    }

    #[test]
    fn slices_merge_and_dedupe() {
        let s = cluster_ip("web", "10.96.0.20", json!([{"port": 80}]));
        let ports = json!([{"port": 8080}]);
        let a = slice_of(
            "web-a",
            "web",
            ports.clone(),
            json!([ep("10.244.1.1", "n1"), {"addresses": ["10.244.1.2"], "conditions": {"ready": false}}]),
        );
        let b = slice_of(
            "web-b",
            "web",
            ports,
            json!([
                ep("10.244.1.2", "n2"),
                ep("10.244.1.1", "n1"),
                ep("10.244.1.9", "n3")
            ]),
        );
        let t = run(&[s], &[a, b], &[]);
        assert_eq!(
            t.entries[&fe("10.96.0.20", 80, Proto::Tcp)].backends,
            vec![
                be("10.244.1.1", 8080),
                be("10.244.1.2", 8080),
                be("10.244.1.9", 8080)
            ]
        );
    }

    #[test]
    fn internal_traffic_policy_local_and_affinity() {
        let mut s = cluster_ip("web", "10.96.0.20", json!([{"port": 80}]));
        s["spec"]["internalTrafficPolicy"] = json!("Local");
        s["spec"]["sessionAffinity"] = json!("ClientIP");
        let sl = slice_of(
            "web-a",
            "web",
            json!([{"port": 8080}]),
            json!([ep("10.244.1.1", "n1"), ep("10.244.2.1", "n2")]),
        );
        let t = run(std::slice::from_ref(&s), std::slice::from_ref(&sl), &[]);
        let e = &t.entries[&fe("10.96.0.20", 80, Proto::Tcp)];
        assert_eq!(e.backends, vec![be("10.244.1.1", 8080)]);
        assert_eq!(e.affinity_timeout, Some(DEFAULT_AFFINITY_TIMEOUT));
        s["spec"]["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 60}});
        // On a node without local endpoints: none (refuse), as kube-proxy does.
        let t = run_on("n9", &[s], &[sl], &[]);
        let e = &t.entries[&fe("10.96.0.20", 80, Proto::Tcp)];
        assert_eq!(e.backends, vec![]);
        assert_eq!(e.affinity_timeout, Some(60));
    }

    #[test]
    fn node_ports_external_ips_and_load_balancers() {
        let s = json!({"metadata": {"namespace": "default", "name": "lb"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.30",
                     "externalIPs": ["192.0.2.7"],
                     "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]},
            "status": {"loadBalancer": {"ingress": [
                {"ip": "198.51.100.1"}, {"ip": "198.51.100.2", "ipMode": "VIP"},
                {"ip": "198.51.100.3", "ipMode": "Proxy"}, {"hostname": "lb.example"}]}}});
        let np = json!({"metadata": {"namespace": "default", "name": "np"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.31",
                     "ports": [{"port": 81, "nodePort": 30081, "protocol": "UDP"}]}});
        // A ClusterIP Service's nodePort (left over from a type change) is not served.
        let cip = json!({"metadata": {"namespace": "default", "name": "cip"},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.32",
                     "ports": [{"port": 82, "nodePort": 30082}]}});
        let nodes = [node("n1", "10.0.0.1"), node("n2", "10.0.0.2")];
        let t = run(&[s, np, cip], &[], &nodes);
        assert!(t.skipped.is_empty(), "{:?}", t.skipped);
        let kinds: Vec<(Frontend, FrontendKind)> =
            t.entries.iter().map(|(f, e)| (*f, e.kind)).collect();
        let want = [
            (fe("10.0.0.1", 30080, Proto::Tcp), FrontendKind::NodePort),
            (fe("10.0.0.1", 30081, Proto::Udp), FrontendKind::NodePort),
            (fe("10.0.0.2", 30080, Proto::Tcp), FrontendKind::NodePort),
            (fe("10.0.0.2", 30081, Proto::Udp), FrontendKind::NodePort),
            (fe("10.96.0.30", 80, Proto::Tcp), FrontendKind::ClusterIp),
            (fe("10.96.0.31", 81, Proto::Udp), FrontendKind::ClusterIp),
            (fe("10.96.0.32", 82, Proto::Tcp), FrontendKind::ClusterIp),
            (fe("192.0.2.7", 80, Proto::Tcp), FrontendKind::ExternalIp),
            (
                fe("198.51.100.1", 80, Proto::Tcp),
                FrontendKind::LoadBalancer,
            ),
            (
                fe("198.51.100.2", 80, Proto::Tcp),
                FrontendKind::LoadBalancer,
            ),
        ];
        assert_eq!(kinds, want);
    }

    #[test]
    fn ignored_services_and_slices() {
        let mut proxied = cluster_ip("other", "10.96.0.40", json!([{"port": 80}]));
        proxied["metadata"]["labels"] = json!({SERVICE_PROXY_NAME_LABEL: "someone-else"});
        let headless = json!({"metadata": {"namespace": "default", "name": "hl"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}});
        let external = json!({"metadata": {"namespace": "default", "name": "ext"},
            "spec": {"type": "ExternalName", "externalName": "example.com"}});
        let web = cluster_ip("web", "10.96.0.20", json!([{"port": 80}]));
        let mut hl_slice = slice_of(
            "web-h",
            "web",
            json!([{"port": 1}]),
            json!([ep("10.244.9.9", "n1")]),
        );
        hl_slice
            .metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(HEADLESS_LABEL.into(), String::new());
        let t = run(&[proxied, headless, external, web], &[hl_slice], &[]);
        assert!(t.skipped.is_empty(), "{:?}", t.skipped);
        assert_eq!(t.entries.len(), 1);
        assert_eq!(
            t.entries[&fe("10.96.0.20", 80, Proto::Tcp)].backends,
            vec![]
        );
    }

    #[test]
    fn bad_input_is_skipped_with_a_reason_and_breaks_nothing_else() {
        let bad_ports = cluster_ip(
            "bad",
            "10.96.0.50",
            json!([{"name": "a", "port": 70000}, {"name": "b", "port": 80},
                   {"name": "c", "port": 80}, {"name": "d", "port": 90, "protocol": "SCTP"},
                   {"name": "e", "port": 91}]),
        );
        let v6 = json!({"metadata": {"namespace": "default", "name": "v6"},
            "spec": {"clusterIP": "fd00::10", "clusterIPs": ["fd00::10", "10.96.0.60"],
                     "ports": [{"port": 80}]}});
        let garbage = cluster_ip("garbage", "not-an-ip", json!([{"port": 80}]));
        let web = cluster_ip("web", "10.96.0.20", json!([{"port": 80}]));
        let good = slice_of(
            "web-a",
            "web",
            json!([{"port": 8080}]),
            json!([ep("10.244.1.1", "n1"), {"addresses": ["10.244.1.999"]}, {"addresses": []}]),
        );
        let bad_port = slice_of(
            "web-b",
            "web",
            json!([{"port": 0}]),
            json!([ep("10.244.1.5", "n1")]),
        );
        let unlabelled = slice(
            json!({"metadata": {"namespace": "default", "name": "orphan"},
            "addressType": "IPv4", "ports": [{"port": 1}], "endpoints": []}),
        );
        let v6_slice = slice(
            json!({"metadata": {"namespace": "default", "name": "web-v6",
            "labels": {SERVICE_NAME_LABEL: "web"}}, "addressType": "IPv6", "endpoints": []}),
        );
        let t = run(
            &[bad_ports, v6, garbage, web],
            &[good, bad_port, unlabelled, v6_slice],
            &[],
        );
        let reasons: Vec<String> = t
            .skipped
            .iter()
            .map(|(id, why)| format!("{id}: {why}"))
            .collect();
        let has = |s: &str| reasons.iter().any(|r| r.contains(s));
        assert!(
            has("default/web-a: endpoint address \"10.244.1.999\" is not IPv4"),
            "{reasons:#?}"
        );
        assert!(
            has("default/web-b: port \"\": missing or out-of-range port Some(0)"),
            "{reasons:#?}"
        );
        assert!(has(
            "default/orphan: EndpointSlice without the kubernetes.io/service-name label"
        ));
        assert!(has("default/web-v6: EndpointSlice of addressType IPv6"));
        assert!(has("default/bad: port 70000 is out of range"));
        assert!(has("default/bad: duplicate port 80/tcp (\"c\")"));
        assert!(has("default/bad: port 90: protocol SCTP is not supported"));
        assert!(has("default/v6: clusterIP fd00::10 is IPv6"));
        assert!(has(
            "default/garbage: clusterIP \"not-an-ip\" is not an address"
        ));
        assert_eq!(t.skipped.len(), 9, "{reasons:#?}");
        // The good parts are served.
        assert_eq!(
            t.entries[&fe("10.96.0.20", 80, Proto::Tcp)].backends,
            vec![be("10.244.1.1", 8080)]
        );
        assert!(t.entries.contains_key(&fe("10.96.0.50", 80, Proto::Tcp)));
        assert!(t.entries.contains_key(&fe("10.96.0.50", 91, Proto::Tcp)));
        assert!(t.entries.contains_key(&fe("10.96.0.60", 80, Proto::Tcp)));
        assert_eq!(t.entries.len(), 4);
    }

    /// A LoadBalancer Service `name` (ETP `etp`, health check `hc`) with two ports, an externalIP
    /// and an ingress IP, over a slice with local (n1) and remote endpoints.
    fn lb_local(name: &str, etp: &str, hc: Option<u16>) -> Value {
        json!({"metadata": {"namespace": "default", "name": name},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.70",
                     "externalIPs": ["192.0.2.70"], "externalTrafficPolicy": etp,
                     "healthCheckNodePort": hc,
                     "ports": [{"name": "http", "port": 80, "nodePort": 30070},
                               {"name": "dns", "port": 53, "nodePort": 30053, "protocol": "UDP"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.70"}]}}})
    }

    fn lb_slice(name: &str, svc: &str, endpoints: Value) -> EndpointSlice {
        slice_of(
            name,
            svc,
            json!([{"name": "http", "port": 8080}, {"name": "dns", "port": 5353, "protocol": "UDP"}]),
            endpoints,
        )
    }

    #[test]
    fn external_traffic_policy_local_marks_external_frontends_and_counts_health() {
        let s = lb_local("web", "Local", Some(32000));
        let sl = lb_slice(
            "web-a",
            "web",
            json!([ep("10.244.1.1", "n1"), ep("10.244.1.2", "n1"), ep("10.244.2.1", "n2"),
                   {"addresses": ["10.244.1.3"], "nodeName": "n1",
                    "conditions": {"ready": false, "serving": true, "terminating": true}}]),
        );
        let nodes = [node("n1", "10.0.0.1"), node("n2", "10.0.0.2")];
        let t = run(std::slice::from_ref(&s), std::slice::from_ref(&sl), &nodes);
        assert!(t.skipped.is_empty(), "{:?}", t.skipped);
        let all = vec![
            be("10.244.1.1", 8080),
            be("10.244.1.2", 8080),
            be("10.244.2.1", 8080),
        ];
        let local = vec![be("10.244.1.1", 8080), be("10.244.1.2", 8080)];
        for (f, kind) in [
            (fe("10.0.0.1", 30070, Proto::Tcp), FrontendKind::NodePort),
            (fe("10.0.0.2", 30070, Proto::Tcp), FrontendKind::NodePort),
            (fe("192.0.2.70", 80, Proto::Tcp), FrontendKind::ExternalIp),
            (
                fe("198.51.100.70", 80, Proto::Tcp),
                FrontendKind::LoadBalancer,
            ),
        ] {
            let e = &t.entries[&f];
            assert_eq!(e.kind, kind, "{f}");
            assert!(e.external_local, "{f}");
            assert_eq!(
                e.backends, all,
                "{f}: the cluster's own clients use every endpoint"
            );
            assert_eq!(e.local_backends, local, "{f}");
        }
        // The ClusterIP is never external-local; its local backends are filled all the same.
        let c = &t.entries[&fe("10.96.0.70", 80, Proto::Tcp)];
        assert!(!c.external_local);
        assert_eq!(c.backends, all);
        assert_eq!(c.local_backends, local);
        assert_eq!(
            t.entries[&fe("10.0.0.1", 30053, Proto::Udp)].local_backends,
            vec![be("10.244.1.1", 5353), be("10.244.1.2", 5353)]
        );
        // Two ready local addresses (two ports each count once); the terminating one does not.
        let hc = HealthCheck {
            namespace: "default".into(),
            name: "web".into(),
            local_endpoints: 2,
        };
        assert_eq!(t.health_checks, BTreeMap::from([(32000, hc.clone())]));
        // On n2: one; on n3: none (the listener answers 503), and no local backend at all.
        let t2 = run_on(
            "n2",
            std::slice::from_ref(&s),
            std::slice::from_ref(&sl),
            &nodes,
        );
        assert_eq!(t2.health_checks[&32000].local_endpoints, 1);
        let t3 = run_on(
            "n3",
            std::slice::from_ref(&s),
            std::slice::from_ref(&sl),
            &nodes,
        );
        assert_eq!(t3.health_checks[&32000].local_endpoints, 0);
        let e3 = &t3.entries[&fe("10.0.0.1", 30070, Proto::Tcp)];
        assert!(e3.external_local);
        assert_eq!(e3.local_backends, vec![]);
        assert_eq!(e3.backends, all);
    }

    #[test]
    fn local_backends_fall_back_to_serving_terminating_ones() {
        let s = lb_local("web", "Local", Some(32000));
        let sl = lb_slice(
            "web-a",
            "web",
            json!([ep("10.244.2.1", "n2"),
                   {"addresses": ["10.244.1.3"], "nodeName": "n1",
                    "conditions": {"ready": false, "serving": true, "terminating": true}}]),
        );
        let t = run(&[s], &[sl], &[node("n1", "10.0.0.1")]);
        let e = &t.entries[&fe("10.0.0.1", 30070, Proto::Tcp)];
        assert_eq!(e.local_backends, vec![be("10.244.1.3", 8080)]);
        assert_eq!(e.backends, vec![be("10.244.2.1", 8080)]);
        // Traffic may still go to the draining pod, but the load balancer is told to leave.
        assert_eq!(t.health_checks[&32000].local_endpoints, 0);
    }

    #[test]
    fn external_traffic_policy_cluster_and_which_services_get_a_health_check() {
        let nodes = [node("n1", "10.0.0.1")];
        // Cluster: nothing external-local, no health check (even with a leftover port).
        let t = run(&[lb_local("web", "Cluster", Some(32000))], &[], &nodes);
        assert!(t.entries.values().all(|e| !e.external_local));
        assert!(t.health_checks.is_empty());
        // NodePort with Local: external-local, but no health check (LoadBalancer only).
        let np = json!({"metadata": {"namespace": "default", "name": "np"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.71", "externalTrafficPolicy": "Local",
                     "ports": [{"port": 80, "nodePort": 30071}]}});
        // ClusterIP with externalIPs and Local: the externalIP is external-local.
        let mut cip = cluster_ip("cip", "10.96.0.72", json!([{"port": 80}]));
        cip["spec"]["externalIPs"] = json!(["192.0.2.72"]);
        cip["spec"]["externalTrafficPolicy"] = json!("Local");
        let t = run(&[np, cip], &[], &nodes);
        assert!(t.skipped.is_empty(), "{:?}", t.skipped);
        assert!(t.health_checks.is_empty());
        assert!(t.entries[&fe("10.0.0.1", 30071, Proto::Tcp)].external_local);
        assert!(t.entries[&fe("192.0.2.72", 80, Proto::Tcp)].external_local);
        assert!(!t.entries[&fe("10.96.0.71", 80, Proto::Tcp)].external_local);
        assert!(!t.entries[&fe("10.96.0.72", 80, Proto::Tcp)].external_local);
    }

    #[test]
    fn bad_or_clashing_health_check_ports_are_reported() {
        let nodes = [node("n1", "10.0.0.1")];
        let missing = lb_local("a", "Local", None);
        let mut out_of_range = lb_local("b", "Local", None);
        out_of_range["spec"]["healthCheckNodePort"] = json!(70000);
        out_of_range["spec"]["clusterIP"] = json!("10.96.0.80");
        out_of_range["spec"]["externalIPs"] = json!([]);
        out_of_range["status"] = json!({});
        out_of_range["spec"]["ports"] = json!([{"port": 81, "nodePort": 30081}]);
        let mut first = lb_local("c", "Local", Some(32001));
        first["spec"]["clusterIP"] = json!("10.96.0.81");
        first["spec"]["externalIPs"] = json!([]);
        first["status"] = json!({});
        first["spec"]["ports"] = json!([{"port": 82, "nodePort": 30082}]);
        let mut second = first.clone();
        second["metadata"]["name"] = json!("d");
        second["spec"]["clusterIP"] = json!("10.96.0.82");
        second["spec"]["ports"] = json!([{"port": 83, "nodePort": 30083}]);
        let t = run(&[missing, out_of_range, first, second], &[], &nodes);
        let reasons: Vec<String> = t
            .skipped
            .iter()
            .map(|(id, why)| format!("{id}: {why}"))
            .collect();
        assert_eq!(
            reasons,
            [
                "default/a: externalTrafficPolicy Local without a healthCheckNodePort: no health check",
                "default/b: healthCheckNodePort 70000 is out of range",
                "default/d: healthCheckNodePort 32001 is already used by default/c",
            ]
        );
        assert_eq!(t.health_checks.len(), 1);
        assert_eq!(t.health_checks[&32001].name, "c");
        // The Services themselves are served.
        assert!(t.entries[&fe("10.0.0.1", 30070, Proto::Tcp)].external_local);
        assert!(t.entries[&fe("10.0.0.1", 30081, Proto::Tcp)].external_local);
        assert!(t.entries[&fe("10.0.0.1", 30083, Proto::Tcp)].external_local);
    }

    #[test]
    fn a_frontend_claimed_twice_goes_to_the_first_service() {
        let mut a = cluster_ip("a", "10.96.0.1", json!([{"port": 80}]));
        a["spec"]["externalIPs"] = json!(["192.0.2.1"]);
        let mut b = cluster_ip("b", "10.96.0.2", json!([{"port": 80}]));
        b["spec"]["externalIPs"] = json!(["192.0.2.1"]);
        let t = run(&[b, a], &[], &[]);
        assert_eq!(
            t.entries[&fe("192.0.2.1", 80, Proto::Tcp)].service.name,
            "a"
        );
        assert_eq!(
            t.skipped,
            vec![(
                "default/b".to_owned(),
                "192.0.2.1:80/tcp is already served for default/a".to_owned()
            )]
        );
    }
}
