//! `ferry status`: every component's process (running or dead), the external host, the apiserver's
//! `/readyz` through the loopback port, the nodes (Ready, podCIDR, InternalIP), each node's overlay
//! (from the annotations ferry-agent publishes), each node's Service proxy (mode and Service count,
//! from the agent's Prometheus endpoint: `ferry_service_proxy_info{mode}` and `ferry_services`,
//! scraped on 127.0.0.1:9465 inside the node's namespace) and the pods on each node; with
//! `--servers N` > 1, each replica's `/readyz`, the leader, and each etcd member's health. Exits non-zero
//! when anything is unhealthy.

use crate::down::Target;
use crate::state::{ClusterDir, Component, Phase, State};
use crate::{api, ha, net, sys, topology};
use anyhow::{anyhow, bail, Context, Result};
use k8s_openapi::api::coordination::v1::Lease;

/// Prints rows as aligned columns, indented by two spaces.
fn table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::from("  ");
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        println!("{}", line.trim_end());
    }
}

/// One line per component: name, pid, (state,) namespace, address, log.
pub(crate) fn print_components(components: &[Component], with_state: bool) {
    let mut rows = vec![{
        let mut h = vec!["COMPONENT", "PID"];
        if with_state {
            h.push("STATE");
        }
        h.extend(["NETNS", "ADDRESS", "LOG"]);
        h.into_iter().map(str::to_owned).collect::<Vec<_>>()
    }];
    for c in components {
        let mut r = vec![c.name.clone(), c.proc.pid.to_string()];
        if with_state {
            r.push(if c.proc.is_running() {
                "running".to_owned()
            } else {
                "DEAD".to_owned()
            });
        }
        r.extend([
            c.netns.clone(),
            c.address.clone(),
            c.log.display().to_string(),
        ]);
        rows.push(r);
    }
    table(&rows);
}

/// `ferry status`.
pub(crate) fn run(t: &Target) -> Result<()> {
    topology::validate_name(&t.name).map_err(|e| anyhow!(e))?;
    if !sys::is_root() {
        bail!("ferry status needs root: the cluster's state and credentials are readable by root only");
    }
    let dir = ClusterDir::new(&t.state_dir, &t.name);
    let Some(state) = dir.load()? else {
        bail!(
            "no cluster named {} is up (ferry up --name {} starts one)",
            t.name,
            t.name
        );
    };
    let mut problems: Vec<String> = Vec::new();
    let phase = match state.phase {
        Phase::Up => "up",
        Phase::Creating => {
            if state.up.is_some_and(|p| p.is_running()) {
                "being created by ferry up"
            } else {
                problems.push("ferry up did not finish (crashed or killed)".to_owned());
                "incomplete (ferry up did not finish)"
            }
        }
        Phase::Failed => {
            problems.push("ferry up failed (--keep-on-failure kept it)".to_owned());
            "failed (kept by --keep-on-failure)"
        }
    };
    println!(
        "cluster {}: {phase}; {} node(s), store {}, apiserver https://127.0.0.1:{}",
        state.name, state.nodes, state.store, state.api_port
    );
    if let Some(kc) = &state.kubeconfig {
        println!("kubeconfig: {}", kc.display());
    }
    let topo = topology::Topology {
        name: state.name.clone(),
        nodes: state.nodes,
    };
    let ext = topo.ext_ns();
    if state.namespaces.contains(&ext) {
        let there = net::netns_path(&ext).exists();
        println!(
            "external host: {}/{} in namespace {ext} on the underlay{}",
            topology::EXT_IP,
            topology::UNDERLAY_PREFIX,
            if there { "" } else { " (MISSING)" }
        );
        if !there && state.phase == Phase::Up {
            problems.push(format!("namespace {ext} of the external host is missing"));
        }
    }
    println!("\ncomponents:");
    print_components(&state.components, true);
    for c in state.components.iter().filter(|c| !c.proc.is_running()) {
        problems.push(format!(
            "{} is not running (log: {})",
            c.name,
            c.log.display()
        ));
    }

    if state.components.iter().any(|c| c.name == "apiserver-lb") {
        print_replicas(&state, &dir, &mut problems)?;
    }

    match &state.kubeconfig {
        None => problems.push("no kubeconfig written yet".to_owned()),
        Some(kc) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(api_status(kc, &state, &mut problems));
        }
    }

    println!();
    if problems.is_empty() {
        println!("cluster {} is healthy", state.name);
        return Ok(());
    }
    bail!(
        "cluster {} is not healthy:\n  - {}",
        state.name,
        problems.join("\n  - ")
    )
}

/// `--servers N` > 1: each ferry-server replica's `/readyz` on its own address (from inside
/// the control-plane namespace) and which one holds the controllers' leader Lease, then each
/// etcd member's `/health`. A replica or member down is a problem; the cluster keeps serving
/// while a majority of etcd and one replica remain, which the rows show.
fn print_replicas(state: &State, dir: &ClusterDir, problems: &mut Vec<String>) -> Result<()> {
    let cp = topology::Topology {
        name: state.name.clone(),
        nodes: state.nodes,
    }
    .cp_ns();
    let netns = net::netns_path(&cp);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // The Lease through the balanced address (any replica answers).
    let holder = match &state.kubeconfig {
        Some(kc) => rt.block_on(async {
            let c = api::client(kc).await?;
            let leases: kube::Api<Lease> = kube::Api::namespaced(c, controlplane_lease::NAMESPACE);
            let l = leases.get_opt(controlplane_lease::NAME).await?;
            anyhow::Ok(l.and_then(|l| l.spec?.holder_identity))
        }),
        None => Err(anyhow!("no kubeconfig")),
    };
    let ca = dir.server().join("pki/ca.crt");
    println!(
        "
apiserver replicas (behind apiserver-lb; the leader runs the controllers):"
    );
    let mut rows = vec![["REPLICA", "ADDRESS", "READYZ", "LEADER"]
        .map(str::to_owned)
        .to_vec()];
    for c in &state.components {
        let Some(k) = ha::member_index(&c.name, "apiserver-") else {
            continue;
        };
        let url = format!("https://{}:{}", ha::server_ip(k), topology::API_PORT);
        let ca = ca.clone();
        let url2 = url.clone();
        let ready = sys::in_netns(&netns, move || -> Result<()> {
            // Sockets are opened by the thread that polls them: a runtime of this thread's.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let client = ferry_kube::ClientBuilder::new(url2)
                    .ca_file(ca)
                    .connect_timeout(std::time::Duration::from_secs(2))
                    .read_timeout(std::time::Duration::from_secs(3))
                    .build()
                    .await?;
                api::readyz(&client).await
            })
        })
        .map_err(anyhow::Error::from)
        .and_then(|r| r);
        let leads = match &holder {
            Ok(Some(id)) if id.contains(&format!("_{}_", c.proc.pid)) => "yes".to_owned(),
            Ok(_) => "no".to_owned(),
            Err(e) => format!("? ({e:#})"),
        };
        let ready = match ready {
            Ok(()) => "ok".to_owned(),
            Err(e) => {
                problems.push(format!("replica {} not ready: {e:#}", c.name));
                format!("FAILED ({e:#})")
            }
        };
        rows.push(vec![c.name.clone(), url, ready, leads]);
    }
    table(&rows);
    match &holder {
        Ok(Some(_)) | Err(_) => {}
        Ok(None) => problems.push("no replica holds the controllers' leader Lease".to_owned()),
    }
    if let Ok(Some(id)) = &holder {
        let known = state.components.iter().any(|c| {
            ha::member_index(&c.name, "apiserver-").is_some()
                && id.contains(&format!("_{}_", c.proc.pid))
        });
        if !known {
            println!("  leader Lease held by {id} (not a running replica: it expires soon)");
        }
    }

    println!(
        "
etcd members:"
    );
    let mut rows = vec![["MEMBER", "CLIENT URL", "HEALTH"]
        .map(str::to_owned)
        .to_vec()];
    for c in &state.components {
        let Some(k) = ha::member_index(&c.name, "etcd-") else {
            continue;
        };
        let health = match ha::etcd_health(&netns, ha::etcd_ip(k)) {
            Ok(()) => "healthy".to_owned(),
            Err(e) => {
                problems.push(format!("etcd member {} unhealthy: {e:#}", c.name));
                format!("UNHEALTHY ({e:#})")
            }
        };
        rows.push(vec![c.name.clone(), ha::etcd_client_url(k), health]);
    }
    table(&rows);
    Ok(())
}

/// The controllers' leader Lease (ferry-server's `--leader-elect-resource-*` defaults).
mod controlplane_lease {
    /// Its namespace.
    pub(super) const NAMESPACE: &str = "kube-system";
    /// Its name.
    pub(super) const NAME: &str = "ferry-controller-manager";
}

/// The PEERS column: programmed / known peers. Known: the other nodes with a podCIDR; skipped
/// ones are counted in the agent's `FerryNetworkDegraded` message (`M peer(s) skipped: ...`).
fn peers_column(n: &api::NodeSummary, nodes: &[api::NodeSummary]) -> String {
    let known = nodes
        .iter()
        .filter(|p| p.name != n.name && p.pod_cidr != "-")
        .count();
    let Some((status, _, msg)) = &n.degraded else {
        return known.to_string();
    };
    let skipped = if status == "True" {
        msg.split_once(" peer(s) skipped")
            .and_then(|(head, _)| head.rsplit(' ').next()?.parse::<usize>().ok())
            .unwrap_or(0)
    } else {
        0
    };
    format!("{}/{known}", known.saturating_sub(skipped))
}

/// The NETWORK column: `ready`, or the reason of the agent's `NetworkUnavailable=True`.
fn network_column(n: &api::NodeSummary) -> String {
    match &n.network {
        Some((status, _, _)) if status == "False" => "ready".to_owned(),
        Some((_, reason, _)) => reason.clone(),
        None => "-".to_owned(),
    }
}

/// One line per node: the agent's verdict, subnet, backend, public IP, VTEP MAC, MTU and peers.
fn print_overlay(nodes: &[api::NodeSummary]) {
    println!("\noverlay (ferry-agent's annotations and conditions):");
    let mut rows = vec![[
        "NODE",
        "NETWORK",
        "SUBNET",
        "BACKEND",
        "PUBLIC-IP",
        "VTEP-MAC",
        "MTU",
        "PEERS",
    ]
    .map(str::to_owned)
    .to_vec()];
    for n in nodes {
        let peers = peers_column(n, nodes);
        let o = &n.overlay;
        rows.push(vec![
            n.name.clone(),
            network_column(n),
            n.pod_cidr.clone(),
            o.backend.clone(),
            o.public_ip.clone(),
            o.vtep_mac.clone(),
            o.mtu.clone(),
            peers,
        ]);
    }
    table(&rows);
}

/// A node's Service proxy as its agent's metrics tell it (`None`: not in the metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Proxy {
    /// `ferry_service_proxy_info`'s `mode` label: `ebpf`, `iptables`, `off`, `none`.
    mode: Option<String>,
    /// `ferry_services`.
    services: Option<u64>,
    /// `ferry_service_frontends`.
    frontends: Option<u64>,
    /// `ferry_service_backends`.
    backends: Option<u64>,
}

/// The [`Proxy`] numbers of a Prometheus text exposition.
fn parse_proxy(metrics: &str) -> Proxy {
    let mut p = Proxy::default();
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        // Gauges of counts: the agent writes integers.
        let n = value.trim().parse::<u64>().ok();
        if let Some(labels) = key.strip_prefix("ferry_service_proxy_info{") {
            p.mode = labels
                .split(',')
                .find_map(|kv| kv.trim().strip_prefix("mode=\""))
                .and_then(|v| v.split('"').next())
                .map(str::to_owned);
        }
        match key {
            "ferry_services" => p.services = n,
            "ferry_service_frontends" => p.frontends = n,
            "ferry_service_backends" => p.backends = n,
            _ => {}
        }
    }
    p
}

/// `GET /metrics` from the agent of the node in namespace `ns` (its metrics listen on the node's
/// loopback).
fn scrape_agent(ns: &str) -> Result<String> {
    use std::io::{Read as _, Write as _};
    let path = net::netns_path(ns);
    sys::in_netns(&path, || -> std::io::Result<String> {
        let addr = (std::net::Ipv4Addr::LOCALHOST, topology::AGENT_METRICS_PORT).into();
        let mut c = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(1))?;
        c.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
        c.set_write_timeout(Some(std::time::Duration::from_secs(2)))?;
        c.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut body = String::new();
        c.read_to_string(&mut body)?;
        Ok(body)
    })?
    .with_context(|| format!("scraping the agent's metrics in {ns}"))
}

/// One line per node: the Service proxy its agent runs and what it holds; a node whose agent
/// runs another mode than `ferry up` asked for (or none) is a problem.
fn print_services(state: &crate::state::State, problems: &mut Vec<String>) {
    println!(
        "
services (ferry-agent's metrics):"
    );
    let mut rows = vec![["NODE", "PROXY", "SERVICES", "FRONTENDS", "BACKENDS"]
        .map(str::to_owned)
        .to_vec()];
    let topo = topology::Topology {
        name: state.name.clone(),
        nodes: state.nodes,
    };
    let num = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
    for i in topo.node_indexes() {
        let node = topology::node_name(i);
        let agent_runs = state
            .components
            .iter()
            .any(|c| c.name == format!("{node}/agent") && c.proc.is_running());
        let proxy = if agent_runs {
            scrape_agent(&topo.node_ns(i)).map(|m| parse_proxy(&m))
        } else {
            Err(anyhow!("agent not running"))
        };
        let row = match &proxy {
            Ok(p) => {
                if let (Some(want), Some(mode)) = (&state.service_proxy, &p.mode) {
                    if want != mode && want != "off" {
                        problems.push(format!(
                            "{node}: the agent's service proxy is {mode}, ferry up asked for {want}"
                        ));
                    }
                }
                vec![
                    node.clone(),
                    p.mode.clone().unwrap_or_else(|| "-".to_owned()),
                    num(p.services),
                    num(p.frontends),
                    num(p.backends),
                ]
            }
            Err(e) => vec![node.clone(), format!("- ({e:#})")],
        };
        rows.push(row);
    }
    table(&rows);
}

async fn api_status(
    kubeconfig: &std::path::Path,
    state: &crate::state::State,
    problems: &mut Vec<String>,
) {
    let client = match api::client(kubeconfig).await {
        Ok(c) => c,
        Err(e) => {
            problems.push(format!("no API client: {e:#}"));
            return;
        }
    };
    let url = format!("https://127.0.0.1:{}", state.api_port);
    match api::readyz(&client).await {
        Ok(()) => println!("\napiserver {url}/readyz: ok"),
        Err(e) => {
            println!("\napiserver {url}/readyz: FAILED ({e:#})");
            problems.push(format!("apiserver not ready: {e:#}"));
            return;
        }
    }
    let nodes = match api::nodes(&client).await {
        Ok(n) => n,
        Err(e) => {
            problems.push(format!("{e:#}"));
            return;
        }
    };
    println!("\nnodes:");
    let mut rows = vec![["NAME", "READY", "POD-CIDR", "INTERNAL-IP", "REASON"]
        .map(str::to_owned)
        .to_vec()];
    for n in &nodes {
        rows.push(vec![
            n.name.clone(),
            n.ready.clone(),
            n.pod_cidr.clone(),
            n.internal_ip.clone(),
            n.why.clone(),
        ]);
    }
    table(&rows);
    print_overlay(&nodes);
    if state.components.iter().any(|c| c.name.ends_with("/agent")) {
        print_services(state, problems);
    }
    let kubelets = state
        .components
        .iter()
        .filter(|c| c.name.ends_with("/kubelet"))
        .count();
    for i in 1..=state.nodes {
        let name = topology::node_name(i);
        match nodes.iter().find(|n| n.name == name) {
            None if kubelets > 0 => problems.push(format!("{name} is not registered")),
            Some(n)
                if !n.is_ready() && state.components.iter().any(|c| c.name.ends_with("/agent")) =>
            {
                problems.push(format!("{name} is not Ready"));
            }
            _ => {}
        }
        let Some(n) = nodes.iter().find(|n| n.name == name) else {
            continue;
        };
        for (cond, bad) in [
            (&n.network, "network unavailable"),
            (&n.degraded, "network degraded"),
            (&n.unreachable, "peers unreachable"),
        ] {
            if let Some((status, reason, msg)) = cond {
                if status == "True" {
                    problems.push(format!("{name}: {bad} ({reason}): {msg}"));
                }
            }
        }
    }
    match api::pods(&client).await {
        Ok(pods) => {
            println!("\npods:");
            if pods.is_empty() {
                println!("  (none)");
                return;
            }
            let mut rows = vec![["NODE", "POD", "PHASE", "POD-IP"]
                .map(str::to_owned)
                .to_vec()];
            for p in pods {
                rows.push(vec![p.node, p.name, p.phase, p.ip]);
            }
            table(&rows);
        }
        Err(e) => problems.push(format!("{e:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: &str, degraded: Option<&str>) -> api::NodeSummary {
        api::NodeSummary {
            name: name.to_owned(),
            ready: "True".to_owned(),
            why: String::new(),
            pod_cidr: cidr.to_owned(),
            internal_ip: "-".to_owned(),
            overlay: api::Overlay {
                backend: "vxlan".to_owned(),
                public_ip: "-".to_owned(),
                vtep_mac: "-".to_owned(),
                mtu: "-".to_owned(),
            },
            network: Some(("False".into(), "FerryAgentReady".into(), String::new())),
            degraded: degraded.map(|m| {
                let bad = if m.contains("skipped") {
                    "True"
                } else {
                    "False"
                };
                (bad.into(), "y".into(), m.to_owned())
            }),
            unreachable: None,
        }
    }

    #[test]
    fn proxy_numbers_from_the_agent_metrics() {
        let text = "# HELP ferry_service_proxy_info x\n# TYPE ferry_service_proxy_info gauge\n\
                    ferry_service_proxy_info{mode=\"ebpf\"} 1\nferry_services 3\n\
                    ferry_service_frontends 4\nferry_service_backends 7\n\
                    ferry_service_sync_total 9\nferry_agent_peers{state=\"programmed\"} 2\n";
        assert_eq!(
            parse_proxy(text),
            Proxy {
                mode: Some("ebpf".into()),
                services: Some(3),
                frontends: Some(4),
                backends: Some(7),
            }
        );
        assert_eq!(
            parse_proxy("ferry_agent_info{backend=\"vxlan\"} 1\n"),
            Proxy::default()
        );
    }

    #[test]
    fn peers_and_network_columns_follow_the_agent_conditions() {
        let nodes = vec![
            node("a", "10.244.0.0/24", Some("every peer is programmed")),
            node("b", "10.244.1.0/24", Some("1 peer(s) skipped: c: garbage")),
            node("c", "10.244.2.0/24", None),
        ];
        assert_eq!(peers_column(&nodes[0], &nodes), "2/2");
        assert_eq!(peers_column(&nodes[1], &nodes), "1/2");
        assert_eq!(
            peers_column(&nodes[2], &nodes),
            "2",
            "no condition: nodes with a podCIDR"
        );
        assert_eq!(network_column(&nodes[0]), "ready");
        let mut down = nodes[0].clone();
        down.network = Some(("True".into(), "TunnelPortInUse".into(), String::new()));
        assert_eq!(network_column(&down), "TunnelPortInUse");
        down.network = None;
        assert_eq!(network_column(&down), "-");
    }
}
