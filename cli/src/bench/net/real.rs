//! `ferry bench --kubeconfig K`: the same rounds, tests and report on any cluster reachable with a
//! kubeconfig (another CNI on real machines, or a `ferry up` cluster seen only through its API),
//! so two reports compare Ferry with something else.
//!
//! What it deploys, in `--namespace` (default `default`), every object labelled
//! `ferry-bench=<run id>` and deleted on every exit path (an error, Ctrl-C, a panic: a `Drop`
//! guard):
//!
//! - pods **a** and **b** on the first node and **c** on the second, pinned by `nodeName`, each
//!   running `ferry bench-agent serve` on ports 7000 (direct paths) and 7001 (the Services'
//!   `targetPort`, `lab::SVC_PORT`) and `iperf3 -s` on 5201;
//! - host-network pods **h1** (first node: the client of the node paths) and **h2** (second node:
//!   the bench agent on `--host-port`, iperf3 on the next port);
//! - Services `svc-local` (b), `svc-remote` (c), `svc-self` (a).
//!
//! The nodes are the first two Ready, schedulable nodes without a `NoSchedule` / `NoExecute`
//! taint, or `--nodes A,B`. Clients run with `kubectl exec` in the client pod's `agent` container
//! (`lab::PodExec`), so the image (`--image`) must hold `ferry` (at `--bench-binary`) and
//! `iperf3`; on a `ferry up` cluster the kubelet runs host binaries and the defaults work.
//!
//! The paths ([`CATALOGUE`]): L2 node to node, H1 node to pod, P1 pod to pod on one node, P2
//! across nodes, S1 / S2 / S3 pod to a ClusterIP with the backend local, remote and itself. What a
//! real cluster does not allow is left out and said in the report's warnings: the lab-only
//! references (L0, L1, P2-ref-vxlan), the external host (E0, E1, N1), the counters that prove a
//! path (the nodes are not this machine) and the CPU accounting (likewise).

use super::lab::{
    self, delete_bench_objects, kubectl_at, kubectl_json_at, Place, PodExec, AGENT_PORT,
    IPERF_PORT, SVC_PORT,
};
use super::paths::{Def, LabPath, Need};
use anyhow::{bail, ensure, Context as _, Result};
use serde_json::{json, Value};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The paths of a real cluster, in report order.
pub(crate) const CATALOGUE: &[Def] = &[
    Def {
        id: "L2",
        description: "node to node (host-network pods on two nodes)",
        baseline: None,
        need: Need::Cluster,
    },
    Def {
        id: "H1",
        description: "node to a pod on it (host-network pod -> pod b)",
        baseline: Some("L2"),
        need: Need::Cluster,
    },
    Def {
        id: "P1",
        description: "pod to pod on one node",
        baseline: None,
        need: Need::Cluster,
    },
    Def {
        id: "P2",
        description: "pod to pod across nodes (the cluster's CNI)",
        baseline: Some("L2"),
        need: Need::Cluster,
    },
    Def {
        id: "S1",
        description: "pod -> ClusterIP, backend on the same node",
        baseline: Some("P1"),
        need: Need::Cluster,
    },
    Def {
        id: "S2",
        description: "pod -> ClusterIP, backend on another node",
        baseline: Some("P2"),
        need: Need::Cluster,
    },
    Def {
        id: "S3",
        description: "pod -> its own Service (hairpin)",
        baseline: Some("P1"),
        need: Need::Cluster,
    },
];

/// The paths `--paths` selects on a real cluster (ids or their first letters' prefix, as in the
/// lab: `S` selects S1-S3).
pub(crate) fn select(wanted: &[String]) -> Result<Vec<Def>> {
    if wanted.is_empty() {
        return Ok(CATALOGUE.to_vec());
    }
    let mut out: Vec<Def> = Vec::new();
    for w in wanted {
        let hits: Vec<&Def> = CATALOGUE
            .iter()
            .filter(|d| d.id.eq_ignore_ascii_case(w) || d.id.starts_with(w.as_str()))
            .collect();
        if hits.is_empty() {
            let ids: Vec<&str> = CATALOGUE.iter().map(|d| d.id).collect();
            bail!(
                "path {w:?} is not available on a real cluster (--kubeconfig: {}; the lab's \
                 references, external host and NodePort paths need `ferry bench` without \
                 --kubeconfig)",
                ids.join(", ")
            );
        }
        for d in hits {
            if !out.iter().any(|o| o.id == d.id) {
                out.push(*d);
            }
        }
    }
    Ok(out)
}

/// `ferry bench --kubeconfig` settings.
#[derive(Debug, Clone)]
pub(crate) struct RealArgs {
    pub(crate) kubeconfig: PathBuf,
    pub(crate) namespace: String,
    pub(crate) image: String,
    pub(crate) ferry: String,
    pub(crate) nodes: Vec<String>,
    pub(crate) host_port: u16,
}

/// A deployed run on a real cluster; deletes its objects on drop.
#[derive(Debug)]
pub(crate) struct RealLab {
    args: RealArgs,
    run_id: String,
    /// The two nodes (first: the client's).
    pub(crate) nodes: [String; 2],
    /// The cluster's server version (`kubectl version`), for the report.
    pub(crate) server_version: String,
    pods: Vec<(String, Ipv4Addr)>,
    svc: [Ipv4Addr; 3],
    node2_ip: Ipv4Addr,
}

impl RealLab {
    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<std::process::Output> {
        kubectl(&self.args, args, stdin)
    }

    /// Picks the nodes, creates the pods and Services, waits until the pods are Ready.
    pub(crate) fn deploy(args: &RealArgs) -> Result<RealLab> {
        let nodes = pick_nodes(args)?;
        let v = kubectl_json(args, &["version"])?;
        let server_version = v["serverVersion"]["gitVersion"]
            .as_str()
            .unwrap_or("unknown")
            .to_owned();
        let node2_ip = internal_ip(args, &nodes[1])?;
        let run_id = format!("fb{}", std::process::id());
        let mut lab = RealLab {
            args: args.clone(),
            run_id: run_id.clone(),
            nodes,
            server_version,
            pods: Vec::new(),
            svc: [Ipv4Addr::UNSPECIFIED; 3],
            node2_ip,
        };
        let list = lab.manifest();
        let out = lab.kubectl(&["create", "-f", "-"], Some(&list.to_string()))?;
        ensure!(
            out.status.success(),
            "creating the bench pods: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let deadline = Instant::now() + Duration::from_secs(120);
        let sel = format!("ferry-bench={run_id}");
        loop {
            super::super::check_interrupt()?;
            let v = kubectl_json(args, &["-n", &args.namespace, "get", "pods", "-l", &sel])?;
            let items = v["items"].as_array().cloned().unwrap_or_default();
            let ready: Vec<&Value> = items.iter().filter(|p| lab::pod_ready(p)).collect();
            if ready.len() == 5 {
                lab.pods = ready
                    .iter()
                    .filter_map(|p| {
                        let role = p["metadata"]["labels"]["ferry-bench-role"].as_str()?;
                        let ip = p["status"]["podIP"].as_str()?.parse().ok()?;
                        Some((role.to_owned(), ip))
                    })
                    .collect();
                break;
            }
            if Instant::now() >= deadline {
                let states: Vec<String> = items
                    .iter()
                    .map(|p| {
                        format!(
                            "{} {}",
                            p["metadata"]["name"].as_str().unwrap_or("?"),
                            p["status"]["phase"].as_str().unwrap_or("?")
                        )
                    })
                    .collect();
                bail!(
                    "the bench pods were not Ready within 120 s ({}): does image {} hold {} and \
                     iperf3, and are ports {}/{} free on the nodes?",
                    states.join(", "),
                    args.image,
                    args.ferry,
                    args.host_port,
                    args.host_port + 1
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        for (i, svc) in ["local", "remote", "self"].iter().enumerate() {
            let v = kubectl_json(
                args,
                &[
                    "-n",
                    &args.namespace,
                    "get",
                    "service",
                    &format!("{run_id}-svc-{svc}"),
                ],
            )?;
            lab.svc[i] = v["spec"]["clusterIP"]
                .as_str()
                .context("a bench Service without a ClusterIP")?
                .parse()
                .context("the bench Services need IPv4 ClusterIPs")?;
        }
        Ok(lab)
    }

    /// The pods and Services, as one `List`.
    fn manifest(&self) -> Value {
        let a = &self.args;
        let id = &self.run_id;
        let ferry = a.ferry.as_str();
        let agent = |listen: Vec<String>, probe: u16| {
            let mut cmd = vec![ferry.to_owned(), "bench-agent".into(), "serve".into()];
            for l in listen {
                cmd.push("--listen".into());
                cmd.push(l);
            }
            json!({"name": "agent", "image": a.image, "command": cmd,
                   "readinessProbe": {"tcpSocket": {"port": probe}, "periodSeconds": 1}})
        };
        let iperf = |port: u16| {
            json!({"name": "iperf3", "image": a.image,
                   "command": ["iperf3", "-s", "-p", port.to_string()]})
        };
        let mut items = Vec::new();
        let pod_ports = || {
            vec![
                format!("0.0.0.0:{AGENT_PORT}"),
                format!("0.0.0.0:{SVC_PORT}"),
            ]
        };
        for (role, node) in [("a", 0), ("b", 0), ("c", 1)] {
            items.push(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("{id}-{role}"), "namespace": a.namespace,
                             "labels": {"ferry-bench": id, "ferry-bench-role": role}},
                "spec": {"nodeName": self.nodes[node], "terminationGracePeriodSeconds": 0,
                         "containers": [agent(pod_ports(), AGENT_PORT), iperf(IPERF_PORT)]}
            }));
        }
        let hp = a.host_port;
        for (role, node) in [("h1", 0), ("h2", 1)] {
            let mut containers = vec![agent(vec![format!("0.0.0.0:{hp}")], hp)];
            if role == "h2" {
                containers.push(iperf(hp + 1));
            }
            items.push(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("{id}-{role}"), "namespace": a.namespace,
                             "labels": {"ferry-bench": id, "ferry-bench-role": role}},
                "spec": {"nodeName": self.nodes[node], "hostNetwork": true,
                         "terminationGracePeriodSeconds": 0, "containers": containers}
            }));
        }
        for (svc, role) in [("local", "b"), ("remote", "c"), ("self", "a")] {
            items.push(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": format!("{id}-svc-{svc}"), "namespace": a.namespace,
                             "labels": {"ferry-bench": id}},
                "spec": {"selector": {"ferry-bench-role": role, "ferry-bench": id}, "ports": [
                    {"name": "tcp", "port": AGENT_PORT, "targetPort": SVC_PORT, "protocol": "TCP"},
                    {"name": "udp", "port": AGENT_PORT, "targetPort": SVC_PORT, "protocol": "UDP"}]}
            }));
        }
        json!({"apiVersion": "v1", "kind": "List", "items": items})
    }

    fn ip(&self, role: &str) -> Result<Ipv4Addr> {
        self.pods
            .iter()
            .find(|(r, _)| r == role)
            .map(|(_, ip)| *ip)
            .with_context(|| format!("bench pod {role} has no IPv4 address"))
    }

    fn place(&self, role: &str, node: usize) -> Place {
        Place {
            label: format!("pod {}-{role} on {}", self.run_id, self.nodes[node]),
            netns: PathBuf::new(),
            cgroup: None,
            exec: Some(PodExec {
                kubeconfig: self.args.kubeconfig.clone(),
                namespace: self.args.namespace.clone(),
                pod: format!("{}-{role}", self.run_id),
                container: "agent".into(),
                ferry: self.args.ferry.clone(),
            }),
        }
    }

    /// The selected paths.
    pub(crate) fn paths(&self, defs: &[Def]) -> Result<Vec<LabPath>> {
        let agent = |ip: Ipv4Addr| SocketAddrV4::new(ip, AGENT_PORT);
        let mut out = Vec::new();
        for d in defs {
            let a = self.place("a", 0);
            let p = match d.id {
                "L2" => {
                    let mut p = LabPath::new(
                        d,
                        self.place("h1", 0),
                        &format!("host-network pod on {} {}", self.nodes[1], self.node2_ip),
                        SocketAddrV4::new(self.node2_ip, self.args.host_port),
                        true,
                        Vec::new(),
                    );
                    p.iperf = Some(SocketAddrV4::new(self.node2_ip, self.args.host_port + 1));
                    p
                }
                "H1" => LabPath::new(
                    d,
                    self.place("h1", 0),
                    &format!("pod b {}", self.ip("b")?),
                    agent(self.ip("b")?),
                    true,
                    Vec::new(),
                ),
                "P1" => LabPath::new(
                    d,
                    a,
                    &format!("pod b {}", self.ip("b")?),
                    agent(self.ip("b")?),
                    true,
                    Vec::new(),
                ),
                "P2" => LabPath::new(
                    d,
                    a,
                    &format!("pod c {} on {}", self.ip("c")?, self.nodes[1]),
                    agent(self.ip("c")?),
                    true,
                    Vec::new(),
                ),
                id => {
                    let (i, backend) = match id {
                        "S1" => (0, "b"),
                        "S2" => (1, "c"),
                        _ => (2, "a"),
                    };
                    LabPath::new(
                        d,
                        a,
                        &format!(
                            "ClusterIP {}:{AGENT_PORT} -> pod {backend}:{SVC_PORT}",
                            self.svc[i]
                        ),
                        agent(self.svc[i]),
                        false,
                        Vec::new(),
                    )
                }
            };
            out.push(p);
        }
        Ok(out)
    }
}

impl Drop for RealLab {
    fn drop(&mut self) {
        delete_bench_objects(
            &self.args.kubeconfig,
            Some(&self.args.namespace),
            &self.run_id,
            "120s",
        );
    }
}

fn kubectl(a: &RealArgs, args: &[&str], stdin: Option<&str>) -> Result<std::process::Output> {
    kubectl_at(&a.kubeconfig, args, stdin)
}

fn kubectl_json(a: &RealArgs, args: &[&str]) -> Result<Value> {
    kubectl_json_at(&a.kubeconfig, args)
}

/// Whether a Node can take the bench pods: Ready, schedulable, no NoSchedule / NoExecute taint.
fn usable(n: &Value) -> bool {
    let ready_cond = n["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    });
    let tainted = n["spec"]["taints"].as_array().is_some_and(|t| {
        t.iter()
            .any(|t| t["effect"] == "NoSchedule" || t["effect"] == "NoExecute")
    });
    ready_cond && n["spec"]["unschedulable"] != true && !tainted
}

/// `--nodes`, checked, or the first two usable nodes by name.
fn pick_nodes(a: &RealArgs) -> Result<[String; 2]> {
    let v = kubectl_json(a, &["get", "nodes"])?;
    let items = v["items"].as_array().cloned().unwrap_or_default();
    let name = |n: &Value| {
        n["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    if !a.nodes.is_empty() {
        ensure!(
            a.nodes.len() == 2 && a.nodes[0] != a.nodes[1],
            "--nodes takes two different node names, not {:?}",
            a.nodes
        );
        for want in &a.nodes {
            let n = items
                .iter()
                .find(|n| name(n) == *want)
                .with_context(|| format!("--nodes: no node named {want} in the cluster"))?;
            ensure!(
                usable(n),
                "--nodes: node {want} is not Ready and schedulable"
            );
        }
        return Ok([a.nodes[0].clone(), a.nodes[1].clone()]);
    }
    let mut names: Vec<String> = items.iter().filter(|n| usable(n)).map(name).collect();
    names.sort();
    ensure!(
        names.len() >= 2,
        "ferry bench needs two Ready, schedulable, untainted nodes; the cluster has {} ({} nodes \
         in all): name two with --nodes",
        names.len(),
        items.len()
    );
    Ok([names[0].clone(), names[1].clone()])
}

/// A node's first IPv4 InternalIP.
fn internal_ip(a: &RealArgs, node: &str) -> Result<Ipv4Addr> {
    let v = kubectl_json(a, &["get", "node", node])?;
    v["status"]["addresses"]
        .as_array()
        .and_then(|addrs| {
            addrs
                .iter()
                .filter(|x| x["type"] == "InternalIP")
                .find_map(|x| x["address"].as_str()?.parse().ok())
        })
        .with_context(|| format!("node {node} has no IPv4 InternalIP"))
}

/// This executable's path, the default `--bench-binary` (right for `ferry up` clusters, whose
/// kubelet runs host binaries).
pub(crate) fn default_ferry() -> Result<String> {
    Ok(std::env::current_exe()
        .context("locating the ferry executable")?
        .to_string_lossy()
        .into_owned())
}

/// The path of a kubeconfig that must exist.
pub(crate) fn check_kubeconfig(p: &Path) -> Result<()> {
    ensure!(p.is_file(), "--kubeconfig {}: no such file", p.display());
    Ok(())
}
