//! A LoadBalancer address moving to another node (issue #14), end to end on real `ferry up`
//! clusters of 2 nodes (privileged, iptables mode): the Service gets an address of the lab's
//! pool, the external host (`<name>-ext`) resolves it to the owner node's MAC (the agents' L2
//! announcement) and reaches a backend. Then
//! - the owner node dies (`--node-grace 4`; its underlay link goes down: its kubelet stops
//!   renewing its Lease, its agent can no longer answer): within seconds of the Node going
//!   NotReady the other node's gratuitous ARP moves the external host's neighbour entry to it and
//!   the surviving backend answers;
//! - or only the owner's agent dies (SIGKILL; default node grace, the Node stays Ready): the
//!   other agents stop counting on its announcer Lease (`kube-node-lease/ferry-l2-<node>`) once
//!   it is `--l2-lease-seconds` (10) old, and the other node takes the address over; then the
//!   API server dies as well and the new owner keeps answering for the address (re-resolved
//!   after the lease ran out), since an agent out of touch with the API keeps what it announced.
//!
//! Checked with `ip -j` in the namespaces and kubectl, not with the code under test.

mod common;

use common::external::{echo_pod, wait_pods_ready, External};
use common::*;
use ferry_tests::{privileged, wait_until, RootSnapshot};
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

/// `ip -n netns ARGS`, which must succeed; its stdout.
fn ip(netns: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new("ip")
        .args(["-n", netns])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip -n {netns} {args:?}: {}",
        text(&out)
    );
    out.stdout
}

fn ip_json(netns: &str, args: &[&str]) -> Value {
    let mut a = vec!["-j"];
    a.extend(args);
    serde_json::from_slice(&ip(netns, &a)).unwrap_or(Value::Null)
}

fn mac(netns: &str) -> String {
    ip_json(netns, &["link", "show", "eth0"])[0]["address"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The external host's neighbour entry (MAC) for `ip`, if resolved.
fn neigh(netns: &str, ip: &str) -> Option<String> {
    ip_json(netns, &["neigh", "show", ip, "dev", "eth0"])
        .as_array()?
        .first()?["lladdr"]
        .as_str()
        .map(str::to_owned)
}

/// A 2-node iptables-mode cluster (`extra` flags for `ferry up`) with a backend pod on each
/// node behind a LoadBalancer Service, reachable from the external host.
struct Lab {
    c: Cluster,
    k: Kubectl,
    ext: External,
    ext_ns: String,
    lb: String,
    /// The nodes' underlay MACs (node-1, node-2).
    macs: [String; 2],
    /// The node (1 or 2) announcing the address.
    owner: usize,
}

impl Lab {
    fn up(extra: &[&str]) -> Lab {
        binaries(&["ferry-server", "ferry-kubelet", "ferry-agent", "ferry-cni"]);
        let c = Cluster::new();
        let mut args = vec!["--nodes", "2", "--service-proxy", "iptables"];
        args.extend(extra);
        let out = c.up(&args);
        assert!(out.status.success(), "ferry up: {}", text(&out));
        let k = Kubectl(c.dir().join("kubeconfig").to_string_lossy().into_owned());
        let ext = External::of(&c);
        let ext_ns = format!("{}-ext", c.name);
        for i in [1, 2] {
            k.apply(&echo_pod(
                &format!("be-{i}"),
                &format!("node-{i}"),
                json!({"app": "lb"}),
            ));
        }
        k.apply(&json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "lb", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "selector": {"app": "lb"},
                     "ports": [{"name": "web", "port": 80, "targetPort": "web"}]}}));
        wait_pods_ready(&k, &["be-1", "be-2"], 90);
        let mut lb = String::new();
        assert!(
            wait_until(Duration::from_secs(20), || {
                lb = k.json(&["get", "svc", "lb"])["status"]["loadBalancer"]["ingress"][0]["ip"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                !lb.is_empty()
            }),
            "Service lb got no LoadBalancer address"
        );
        assert!(lb.starts_with("10.99.0."), "{lb}");
        let mut lab = Lab {
            macs: [
                mac(&format!("{}-n1", c.name)),
                mac(&format!("{}-n2", c.name)),
            ],
            c,
            k,
            ext,
            ext_ns,
            lb,
            owner: 0,
        };
        // Reachable, resolved to one node's MAC.
        assert!(
            wait_until(Duration::from_secs(20), || lab.answered(&["be-1", "be-2"])),
            "{}:80 not answered from the external host: {:?}",
            lab.lb,
            lab.ext.tcp(2, &lab.lb, 80)
        );
        let first = neigh(&lab.ext_ns, &lab.lb).expect("resolved");
        lab.owner = 1 + lab
            .macs
            .iter()
            .position(|m| *m == first)
            .unwrap_or_else(|| {
                panic!(
                    "{} resolved to {first}, not a node ({:?})",
                    lab.lb, lab.macs
                )
            });
        lab
    }

    /// Whether every answer of a few connections from the external host came from one of `want`.
    fn answered(&self, want: &[&str]) -> bool {
        let got = self.ext.tcp(4, &self.lb, 80);
        !got.is_empty()
            && got.iter().all(|l| {
                l.split_once(' ')
                    .is_some_and(|(pod, _)| want.contains(&pod))
            })
    }

    /// Waits until the external host's entry for the address names node `node`'s MAC (after
    /// `what` happened); how long that took since `t0`.
    fn assert_moved_to(&self, node: usize, within: Duration, what: &str, t0: Instant) -> Duration {
        let moved = wait_until(within, || {
            neigh(&self.ext_ns, &self.lb).as_deref() == Some(self.macs[node - 1].as_str())
        });
        assert!(
            moved,
            "{} still resolves to {:?} after {what} (node-{node} is {})",
            self.lb,
            neigh(&self.ext_ns, &self.lb),
            self.macs[node - 1]
        );
        t0.elapsed()
    }

    fn down(self, root: RootSnapshot) {
        drop(self.ext);
        let out = self.c.ferry("down", &[]);
        assert!(out.status.success(), "ferry down: {}", text(&out));
        self.c.assert_gone();
        root.assert_unchanged();
    }
}

#[test]
fn loadbalancer_address_moves_when_its_node_dies() {
    if !privileged("loadbalancer_address_moves_when_its_node_dies") {
        return;
    }
    let root = RootSnapshot::take();
    let lab = Lab::up(&["--node-grace", "4"]);
    let (dead, alive) = (lab.owner, 3 - lab.owner);
    println!(
        "{} announced by node-{dead}; taking node-{dead} down",
        lab.lb
    );

    // The owner dies: its underlay link goes down.
    let t0 = Instant::now();
    ip(
        &format!("{}-n{dead}", lab.c.name),
        &["link", "set", "eth0", "down"],
    );
    let survivor = format!("be-{alive}");
    let moved_after = lab.assert_moved_to(
        alive,
        Duration::from_secs(60),
        &format!("node-{dead} died"),
        t0,
    );
    assert!(
        wait_until(Duration::from_secs(60), || lab
            .answered(&[survivor.as_str()])),
        "{}:80 not served by {survivor} after the failover: {:?}",
        lab.lb,
        lab.ext.tcp(2, &lab.lb, 80)
    );
    println!(
        "failover: neighbour entry on node-{alive} {:.1} s after node-{dead}'s link went down \
         (node grace 4 s), served by {survivor} after {:.1} s",
        moved_after.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    lab.down(root);
}

#[test]
fn loadbalancer_address_moves_when_its_agent_dies() {
    if !privileged("loadbalancer_address_moves_when_its_agent_dies") {
        return;
    }
    let root = RootSnapshot::take();
    let lab = Lab::up(&[]);
    let (dead, alive) = (lab.owner, 3 - lab.owner);
    // Both announcer Leases exist, renewed by the agents, owned by their Nodes.
    let leases = lab.k.json(&[
        "get",
        "leases",
        "-n",
        "kube-node-lease",
        "-l",
        "ferry.dev/lease=l2-announcer",
    ]);
    let mut names: Vec<&str> = leases["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["metadata"]["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["ferry-l2-node-1", "ferry-l2-node-2"], "{leases}");
    for l in leases["items"].as_array().unwrap() {
        assert_eq!(l["metadata"]["ownerReferences"][0]["kind"], "Node", "{l}");
    }
    println!(
        "{} announced by node-{dead}; killing node-{dead}'s agent",
        lab.lb
    );

    let t0 = Instant::now();
    kill9(lab.c.pid_of(&format!("node-{dead}/agent")));
    let moved_after = lab.assert_moved_to(
        alive,
        Duration::from_secs(30),
        &format!("node-{dead}'s agent died"),
        t0,
    );
    // Not the Node's readiness: node-{dead} is still Ready (its kubelet is alive).
    let node = lab.k.json(&["get", "node", &format!("node-{dead}")]);
    let ready = node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    assert!(ready, "node-{dead} went NotReady: {}", node["status"]);
    assert!(
        moved_after >= Duration::from_secs(5),
        "moved after {moved_after:?}: sooner than the Lease allows"
    );
    // Served through node-{alive}, by either backend (node-{dead}'s pod is alive).
    assert!(
        wait_until(Duration::from_secs(30), || lab.answered(&["be-1", "be-2"])),
        "{}:80 not served after the takeover: {:?}",
        lab.lb,
        lab.ext.tcp(2, &lab.lb, 80)
    );
    println!(
        "agent failover: neighbour entry on node-{alive} {:.1} s after node-{dead}'s agent was \
         killed (L2 lease 10 s, node still Ready)",
        moved_after.as_secs_f64()
    );

    // The API server dies too: node-{alive}'s agent can no longer renew its Lease, and keeps
    // answering for the address (the data plane does not depend on the control plane), well
    // past the lease, also to a fresh ARP request.
    kill9(lab.c.pid_of("apiserver"));
    std::thread::sleep(Duration::from_secs(15));
    ip(
        &lab.ext_ns,
        &["neigh", "flush", "to", &lab.lb, "dev", "eth0"],
    );
    assert!(
        wait_until(Duration::from_secs(10), || lab.answered(&["be-1", "be-2"])),
        "{}:80 not served 15 s into an API outage: {:?}",
        lab.lb,
        lab.ext.tcp(2, &lab.lb, 80)
    );
    assert_eq!(
        neigh(&lab.ext_ns, &lab.lb).as_deref(),
        Some(lab.macs[alive - 1].as_str()),
        "re-resolved during the API outage"
    );
    lab.down(root);
}
