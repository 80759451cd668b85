//! A LoadBalancer address moving to another node when its node dies (issue #14), end to end on a
//! real `ferry up` cluster of 2 nodes (privileged, iptables mode, `--node-grace 4`): the Service
//! gets an address of the lab's pool, the external host (`<name>-ext`) resolves it to the owner
//! node's MAC (the agents' L2 announcement) and reaches a backend; the owner node then dies (its
//! underlay link goes down: its kubelet stops renewing its Lease, its agent can no longer answer)
//! and within seconds of the Node going NotReady the other node's gratuitous ARP moves the
//! external host's neighbour entry to it and the surviving backend answers. Checked with `ip -j`
//! in the namespaces, not with the code under test.

mod common;

use common::external::{echo_pod, wait_pods_ready, External};
use common::*;
use ferry_tests::{privileged, wait_until, RootSnapshot};
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

fn ip_json(netns: &str, args: &[&str]) -> Value {
    let out = Command::new("ip")
        .args(["-n", netns, "-j"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "ip {args:?}: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
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

#[test]
fn loadbalancer_address_moves_when_its_node_dies() {
    if !privileged("loadbalancer_address_moves_when_its_node_dies") {
        return;
    }
    binaries(&["ferry-server", "ferry-kubelet", "ferry-agent", "ferry-cni"]);
    let root = RootSnapshot::take();
    let c = Cluster::new();
    let out = c.up(&[
        "--nodes",
        "2",
        "--service-proxy",
        "iptables",
        "--node-grace",
        "4",
    ]);
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

    // Reachable, resolved to one node's MAC.
    let answered = |want: &[&str]| {
        let got = ext.tcp(4, &lb, 80);
        got.iter().all(|l| {
            l.split_once(' ')
                .is_some_and(|(pod, _)| want.contains(&pod))
        })
    };
    assert!(
        wait_until(Duration::from_secs(20), || answered(&["be-1", "be-2"])),
        "{lb}:80 not answered from the external host: {:?}",
        ext.tcp(2, &lb, 80)
    );
    let macs = [
        mac(&format!("{}-n1", c.name)),
        mac(&format!("{}-n2", c.name)),
    ];
    let first = neigh(&ext_ns, &lb).expect("resolved");
    let owner = macs
        .iter()
        .position(|m| *m == first)
        .unwrap_or_else(|| panic!("{lb} resolved to {first}, not a node ({macs:?})"));
    let (dead, alive) = (owner + 1, 2 - owner);
    println!("{lb} announced by node-{dead}; taking node-{dead} down");

    // The owner dies: its underlay link goes down.
    let t0 = Instant::now();
    let out = Command::new("ip")
        .args(["-n", &format!("{}-n{dead}", c.name)])
        .args(["link", "set", "eth0", "down"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let survivor = format!("be-{alive}");
    let moved = wait_until(Duration::from_secs(60), || {
        neigh(&ext_ns, &lb).as_deref() == Some(macs[alive - 1].as_str())
    });
    assert!(
        moved,
        "{lb} still resolves to {:?} after node-{dead} died (node-{alive} is {})",
        neigh(&ext_ns, &lb),
        macs[alive - 1]
    );
    let moved_after = t0.elapsed();
    assert!(
        wait_until(Duration::from_secs(60), || answered(&[survivor.as_str()])),
        "{lb}:80 not served by {survivor} after the failover: {:?}",
        ext.tcp(2, &lb, 80)
    );
    println!(
        "failover: neighbour entry on node-{alive} {:.1} s after node-{dead}'s link went down \
         (node grace 4 s), served by {survivor} after {:.1} s",
        moved_after.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );

    drop(ext);
    let out = c.ferry("down", &[]);
    assert!(out.status.success(), "ferry down: {}", text(&out));
    c.assert_gone();
    root.assert_unchanged();
}
