//! The whole system end to end through `ferry up` (privileged): control plane in its namespace,
//! three node namespaces with kubelet + agent + ferry-cni, pods in their own namespaces, kubectl
//! from the root namespace. A Deployment spreads, scales, rolls; a killed container restarts; a
//! node whose kubelet is gone turns NotReady and its endpoints leave the Service's slices; a
//! restarted kubelet adopts its pods.

mod common;

use common::*;
use ferry_tests::{privileged, wait_until, RootSnapshot};
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::Duration;

fn pods(list: &Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

fn ready(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
        && p["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn in_cidr(ip: &str, cidr: &str) -> bool {
    let (net, len) = cidr.split_once('/').unwrap();
    let len: u32 = len.parse().unwrap();
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    let a: std::net::Ipv4Addr = ip.parse().unwrap();
    let n: std::net::Ipv4Addr = net.parse().unwrap();
    u32::from(a) & mask == u32::from(n) & mask
}

fn deployment(replicas: u32, version: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"rollingUpdate": {"maxSurge": 2, "maxUnavailable": 1}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "web", "image": "python:3",
                    "command": ["/usr/bin/python3", "-m", "http.server", "8080"],
                    "env": [{"name": "VERSION", "value": version}],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"port": "http", "path": "/"}, "periodSeconds": 1}}]}}}})
}

fn slice_endpoints(k: &Kubectl) -> Vec<Value> {
    let slices = k.json(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=web",
    ]);
    pods(&slices)
        .iter()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[test]
fn a_deployment_across_three_nodes_scales_rolls_restarts_and_survives_kubelet_loss() {
    if !privileged("e2e_deployment") {
        return;
    }
    for b in ["ferry-server", "ferry-kubelet", "ferry-agent", "ferry-cni"] {
        ferry_tests::bin_path(b);
    }
    let root = RootSnapshot::take();
    let c = Cluster::new();
    let out = c.up(&["--nodes", "3", "--node-grace", "6"]);
    assert!(out.status.success(), "ferry up: {}", text(&out));
    let k = Kubectl(c.dir().join("kubeconfig").to_string_lossy().into_owned());
    let nodes = k.json(&["get", "nodes"]);
    let cidrs: std::collections::HashMap<String, String> = pods(&nodes)
        .iter()
        .map(|n| {
            (
                n["metadata"]["name"].as_str().unwrap().to_owned(),
                n["spec"]["podCIDR"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(cidrs.len(), 3);
    // The kubelet's and the agent's conditions side by side: Ready from the kubelet,
    // NetworkUnavailable, FerryNetworkDegraded and FerryPeersUnreachable (every peer answers the
    // tunnel probes) from the agent; neither overwrites the other.
    k.wait(
        &["get", "nodes"],
        20,
        "conditions from kubelet and agent",
        |list| {
            let status = |n: &Value, ty: &str| {
                n["status"]["conditions"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["type"] == ty).cloned())
                    .map(|c| (c["status"].clone(), c["reason"].clone()))
            };
            pods(list).iter().all(|n| {
                status(n, "Ready") == Some((json!("True"), json!("KubeletReady")))
                    && status(n, "NetworkUnavailable")
                        == Some((json!("False"), json!("FerryAgentReady")))
                    && status(n, "FerryNetworkDegraded")
                        == Some((json!("False"), json!("AllPeersProgrammed")))
                    && status(n, "FerryPeersUnreachable")
                        == Some((json!("False"), json!("AllPeersAnswer")))
            })
        },
    );

    // 6 replicas spread over 3 nodes, all Ready, each IP from its node's podCIDR.
    k.apply(&deployment(6, "v1"));
    k.apply(&json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}}));
    let list = k.wait(&["get", "pods", "-l", "app=web"], 60, "6 ready pods", |l| {
        let p = pods(l);
        p.len() == 6 && p.iter().all(ready)
    });
    let mut per_node = std::collections::HashMap::<String, usize>::new();
    for p in pods(&list) {
        let node = p["spec"]["nodeName"].as_str().unwrap().to_owned();
        let ip = p["status"]["podIP"].as_str().unwrap();
        assert!(
            in_cidr(ip, &cidrs[&node]),
            "{ip} not in {node}'s {}",
            cidrs[&node]
        );
        *per_node.entry(node).or_default() += 1;
    }
    assert_eq!(per_node.len(), 3, "spread over every node: {per_node:?}");
    assert!(per_node.values().all(|n| *n == 2), "{per_node:?}");
    let wide = k.ok(&["get", "pods", "-o", "wide"]);
    println!("{wide}");
    for node in cidrs.keys() {
        assert!(wide.contains(node.as_str()), "{wide}");
    }
    assert!(
        wait_until(Duration::from_secs(10), || slice_endpoints(&k).len() == 6),
        "6 endpoints in the slices"
    );
    k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);

    // Egress and pod to pod, from the pods' network namespaces (the kubelets' bind mounts).
    let on = |node: &str| {
        pods(&list)
            .into_iter()
            .find(|p| p["spec"]["nodeName"] == node)
            .unwrap_or_else(|| panic!("no pod on {node}"))
    };
    let (a, b) = (on("node-1"), on("node-2"));
    let pod_ns = |p: &Value, i: u32| {
        c.dir()
            .join(format!("nodes/n{i}/kubelet/netns"))
            .join(p["metadata"]["uid"].as_str().unwrap())
    };
    let (ns_a, ns_b) = (pod_ns(&a, 1), pod_ns(&b, 2));
    let ip_a = a["status"]["podIP"].as_str().unwrap();
    let ip_b = b["status"]["podIP"].as_str().unwrap();
    // A pod reaches the external host, which sees its node's address (masquerade).
    let ext_ns = std::path::PathBuf::from(format!("/run/netns/{}-ext", c.name));
    let seen = connect_and_see_source(&ns_a, &ext_ns, "10.99.0.254");
    assert_eq!(seen, "10.99.0.11", "external host sees pod {ip_a} as");
    // Pod to pod across nodes keeps the pod address (no masquerade inside the cluster).
    let seen = connect_and_see_source(&ns_a, &ns_b, ip_b);
    assert_eq!(seen, ip_a, "pod {ip_b} on node-2 sees pod {ip_a} as");
    // `ferry status` shows each node's overlay.
    let status = c.ferry("status", &[]);
    assert!(status.status.success(), "{}", text(&status));
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    println!("{status}");
    assert!(status.contains("external host: 10.99.0.254/24"), "{status}");
    for (node, cidr) in &cidrs {
        assert!(
            status.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() == 8
                    && f[0] == node
                    && f[1] == "ready"
                    && f[2] == cidr
                    && f[3] == "vxlan"
                    && f[7] == "2/2"
            }),
            "no overlay line for {node} (ready, {cidr}, vxlan, 2/2 peers):\n{status}"
        );
    }

    // Scale up and down.
    k.ok(&["scale", "deployment/web", "--replicas=9"]);
    k.wait(&["get", "pods", "-l", "app=web"], 60, "9 ready pods", |l| {
        let p = pods(l);
        p.len() == 9 && p.iter().all(ready)
    });
    k.ok(&["scale", "deployment/web", "--replicas=3"]);
    k.wait(&["get", "pods", "-l", "app=web"], 60, "3 pods", |l| {
        let p = pods(l);
        p.len() == 3 && p.iter().all(ready)
    });

    // Rolling update to v2.
    k.apply(&deployment(3, "v2"));
    k.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    let list = k.wait(&["get", "pods", "-l", "app=web"], 60, "3 v2 pods", |l| {
        let p = pods(l);
        p.len() == 3
            && p.iter()
                .all(|p| ready(p) && p["spec"]["containers"][0]["env"][0]["value"] == "v2")
    });

    // A killed container restarts.
    let victim = pods(&list)[0].clone();
    let name = victim["metadata"]["name"].as_str().unwrap().to_owned();
    let uid = victim["metadata"]["uid"].as_str().unwrap().to_owned();
    let node = victim["spec"]["nodeName"].as_str().unwrap().to_owned();
    let idx: u32 = node.trim_start_matches("node-").parse().unwrap();
    let pod_cg = c.cgroup().join(format!("n{idx}/pods")).join(&uid);
    let pids = child_cgroup_pids(&pod_cg);
    assert_eq!(pids.len(), 1, "{pids:?} in {}", pod_cg.display());
    nix_kill(pids[0], libc::SIGKILL);
    k.wait(&["get", "pod", &name], 30, "restarted container", |p| {
        p["status"]["containerStatuses"][0]["restartCount"].as_i64() >= Some(1) && ready(p)
    });

    // Kill one node's kubelet: the node turns NotReady (Unknown), its endpoints leave the slices.
    let state = c.state();
    let kubelet = state["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == format!("{node}/kubelet"))
        .unwrap_or_else(|| panic!("no {node}/kubelet in {state:#}"))
        .clone();
    let kpid =
        i32::try_from(kubelet["proc"]["pid"].as_i64().unwrap()).expect("a pid fits in pid_t");
    let on_node: Vec<String> = pods(&k.json(&["get", "pods", "-l", "app=web"]))
        .iter()
        .filter(|p| p["spec"]["nodeName"] == node.as_str())
        .map(|p| p["status"]["podIP"].as_str().unwrap().to_owned())
        .collect();
    assert!(!on_node.is_empty());
    let argv: Vec<String> = std::fs::read(format!("/proc/{kpid}/cmdline"))
        .unwrap()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    nix_kill(kpid, libc::SIGKILL);
    k.wait(&["get", "node", &node], 30, "node NotReady", |n| {
        n["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "Unknown")
        })
    });
    assert!(
        wait_until(Duration::from_secs(15), || {
            slice_endpoints(&k).iter().all(|e| {
                let ip = e["addresses"][0].as_str().unwrap_or("");
                !on_node.iter().any(|x| x == ip) || e["conditions"]["ready"] == false
            })
        }),
        "endpoints of {node} still ready: {:#?}",
        slice_endpoints(&k)
    );
    // Restart that kubelet by hand (same command line): it adopts its pods.
    let before = node_pod_pids(&c, idx);
    let netns = format!("/run/netns/{}-n{idx}", c.name);
    let cg = c.cgroup().join(format!("n{idx}/kubelet/cgroup.procs"));
    let log = std::fs::File::create(
        c.dir()
            .join("logs")
            .join(format!("{node}-kubelet-restarted.log")),
    )
    .unwrap();
    let mut restarted = Command::new("nsenter");
    restarted
        .arg(format!("--net={netns}"))
        .args(&argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // Join the node's kubelet cgroup first, so `ferry down` finds this process too.
    let cg_file = std::fs::OpenOptions::new().write(true).open(&cg).unwrap();
    ferry_sys::process::OnExec::new()
        .join_cgroup(&cg_file)
        .unwrap()
        .install(&mut restarted);
    let _child = ferry_tests::ChildGuard(restarted.spawn().unwrap());
    k.wait(&["get", "node", &node], 30, "node Ready again", |n| {
        n["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
    });
    k.wait(
        &["get", "pods", "-l", "app=web"],
        30,
        "pods ready again",
        |l| pods(l).iter().all(ready),
    );
    let after = node_pod_pids(&c, idx);
    assert_eq!(before, after, "adopted: same processes, none added");
    assert!(
        wait_until(Duration::from_secs(15), || slice_endpoints(&k)
            .iter()
            .filter(|e| e["conditions"]["ready"] == true)
            .count()
            == 3),
        "endpoints back: {:#?}",
        slice_endpoints(&k)
    );

    // Delete the Deployment: everything it owned goes, addresses are released.
    k.ok(&[
        "delete",
        "deployment",
        "web",
        "--wait=true",
        "--timeout=60s",
    ]);
    k.wait(&["get", "pods"], 60, "no pods", |l| pods(l).is_empty());
    let down = c.ferry("down", &[]);
    assert!(down.status.success(), "{}", text(&down));
    c.assert_gone();
    root.assert_unchanged();
}

/// Starts a one-shot TCP listener in the network namespace `server_ns` (port chosen by the
/// kernel), connects to it at `server_ip` from `client_ns`, and returns the source address the
/// listener saw.
fn connect_and_see_source(
    client_ns: &std::path::Path,
    server_ns: &std::path::Path,
    server_ip: &str,
) -> String {
    use std::io::BufRead as _;
    const LISTENER: &str = "import socket\n\
        s = socket.socket()\n\
        s.bind(('0.0.0.0', 0))\n\
        s.listen(1)\n\
        s.settimeout(20)\n\
        print(s.getsockname()[1], flush=True)\n\
        c, peer = s.accept()\n\
        print(peer[0], flush=True)\n";
    let mut server = ferry_tests::ChildGuard(
        Command::new("nsenter")
            .arg(format!("--net={}", server_ns.display()))
            .args(["/usr/bin/python3", "-c", LISTENER])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = std::io::BufReader::new(server.0.stdout.take().unwrap()).lines();
    let port = lines.next().expect("listener port").unwrap();
    let client = Command::new("nsenter")
        .arg(format!("--net={}", client_ns.display()))
        .args([
            "/usr/bin/python3",
            "-c",
            "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 5).close()",
            server_ip,
            &port,
        ])
        .output()
        .unwrap();
    assert!(
        client.status.success(),
        "connect {server_ip}:{port} from {}: {}",
        client_ns.display(),
        text(&client)
    );
    let seen = lines.next().expect("peer address").unwrap();
    assert!(server.0.wait().unwrap().success());
    seen
}

fn nix_kill(pid: i32, sig: i32) {
    if let Err(e) = ferry_sys::process::signal(pid, sig) {
        panic!("kill {pid}: {e}");
    }
}

/// Every process in the pod cgroups of node `idx`.
fn node_pod_pids(c: &Cluster, idx: u32) -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_dir(c.cgroup().join(format!("n{idx}/pods")))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .flat_map(|e| child_cgroup_pids(&e.path()))
        .collect();
    pids.sort_unstable();
    pids
}

/// The processes in the child cgroups of `dir` (one level down: a pod's container attempts).
fn child_cgroup_pids(dir: &std::path::Path) -> Vec<i32> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .flat_map(|e| {
            std::fs::read_to_string(e.path().join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}
