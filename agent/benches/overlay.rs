//! `cargo bench -p ferry-agent --bench overlay` (privileged; harness = false): single-stream TCP
//! throughput (`iperf3`, 3 runs each, medians) between two node namespaces on a veth/bridge
//! underlay (MTU 1400):
//!
//! | path | what |
//! |---|---|
//! | underlay | node A -> node B over eth0 (no overlay) |
//! | hand vxlan | node A -> node B over a hand-built point-to-point kernel VXLAN device (MTU 1350) |
//! | ferry vxlan | pod on A -> pod on B through ferry-agent's VXLAN backend (veth + bridge + ferry.1) |
//! | ferry host-gw | the same pods after switching the agents to host-gw (pods keep MTU 1350) |
//! | ferry udp | the same pods after switching the agents to the userspace udp backend |
//!
//! Ratios are printed against the underlay and, for ferry vxlan, against the hand-built path;
//! the udp row also against ferry vxlan (target: >= 0.5x).
//! Build the spawned binaries first, in release: `cargo build --release -p controlplane-lite --bin
//! ferry-server -p ferry-cni` (the bench runs from `target/release`).

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use ferry_tests::{median, privileged, wait_until, ChildGuard, Netns, RootSnapshot};
use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;

const RUNS: usize = 3;
const SECONDS: &str = "2";

/// Median Gbit/s of `RUNS` iperf3 runs from `client` to `server_ip` (server in `server`).
fn iperf(server: &Netns, client: &Netns, server_ip: &str) -> f64 {
    let mut results = Vec::new();
    for _ in 0..RUNS {
        let _s = ChildGuard(
            server
                .command("iperf3")
                .args(["-s", "-1", "-p", "5301"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        std::thread::sleep(Duration::from_millis(300));
        let out = client
            .command("iperf3")
            .args(["-c", server_ip, "-p", "5301", "-t", SECONDS, "-J"])
            .output()
            .unwrap();
        assert!(out.status.success(), "iperf3 to {server_ip}: {out:?}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        results.push(
            v["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .unwrap()
                / 1e9,
        );
    }
    median(&results)
}

fn main() {
    if !privileged("overlay bench") {
        return;
    }
    let root = RootSnapshot::take();
    {
        let cp = ControlPlane::start();
        let mut a = NodeEnv::new(&cp, "node-a", "pa", "10.99.0.11");
        let mut b = NodeEnv::new(&cp, "node-b", "pb", "10.99.0.12");
        for n in [&mut a, &mut b] {
            n.args = vec!["--backend".into(), "vxlan".into()];
        }
        cp.create_node("node-a", Some(&a.ip));
        cp.create_node("node-b", Some(&b.ip));
        a.start_agent(&cp);
        b.start_agent(&cp);
        let cb = cp.wait_pod_cidr("node-b");
        for n in [&a, &b] {
            let f = n.conf_dir().join("10-ferry.conflist");
            assert!(
                wait_until(Duration::from_secs(15), || f.exists()),
                "{}",
                n.logs()
            );
        }
        let ca = cp.wait_pod_cidr("node-a");
        assert!(
            wait_until(Duration::from_secs(10), || {
                a.ns.sh("ip route show dev ferry.1").contains(&cb)
                    && b.ns.sh("ip route show dev ferry.1").contains(&ca)
            }),
            "{}{}",
            a.logs(),
            b.logs()
        );
        let pod_a = Netns::new("fpa");
        let pod_b = Netns::new("fpb");
        let _ip_a = a.add_pod(&pod_a, "pod-a");
        let ip_b = b.add_pod(&pod_b, "pod-b");

        let underlay = iperf(&b.ns, &a.ns, &b.ip);
        for (n, local, remote, addr) in [
            (&a, &a.ip, &b.ip, "192.168.77.1/24"),
            (&b, &b.ip, &a.ip, "192.168.77.2/24"),
        ] {
            n.ns.sh(&format!(
                "ip link add hv0 type vxlan id 42 dstport 4789 local {local} remote {remote} dev eth0 \
                 && ip link set hv0 mtu {} up && ip addr add {addr} dev hv0",
                UNDERLAY_MTU - 50
            ));
        }
        let hand = iperf(&b.ns, &a.ns, "192.168.77.2");
        let ferry_vxlan = iperf(&pod_b, &pod_a, &ip_b);

        for n in [&mut a, &mut b] {
            n.kill_agent();
            n.args = vec!["--backend".into(), "host-gw".into()];
            n.start_agent(&cp);
        }
        let (ia, ib) = (a.ip.clone(), b.ip.clone());
        assert!(
            wait_until(Duration::from_secs(10), || {
                a.ns.sh("ip route show proto 78")
                    .contains(&format!("via {ib} dev eth0"))
                    && b.ns
                        .sh("ip route show proto 78")
                        .contains(&format!("via {ia} dev eth0"))
            }),
            "{}{}",
            a.logs(),
            b.logs()
        );
        let hostgw = iperf(&pod_b, &pod_a, &ip_b);

        for n in [&mut a, &mut b] {
            n.kill_agent();
            n.args = vec!["--backend".into(), "udp".into()];
            n.start_agent(&cp);
        }
        assert!(
            wait_until(Duration::from_secs(10), || {
                a.ns.sh("ip route show proto 78").contains("dev ferry.udp")
                    && b.ns.sh("ip route show proto 78").contains("dev ferry.udp")
            }),
            "{}{}",
            a.logs(),
            b.logs()
        );
        let udp = iperf(&pod_b, &pod_a, &ip_b);

        println!(
            "overlay bench: iperf3 single stream, {SECONDS} s x {RUNS} runs, medians (Gbit/s)"
        );
        println!("  underlay node->node     {underlay:7.2}");
        println!(
            "  hand-built vxlan        {hand:7.2}   {:.2} x underlay",
            hand / underlay
        );
        println!(
            "  ferry vxlan pod->pod    {ferry_vxlan:7.2}   {:.2} x underlay, {:.2} x hand-built vxlan",
            ferry_vxlan / underlay,
            ferry_vxlan / hand
        );
        println!(
            "  ferry host-gw pod->pod  {hostgw:7.2}   {:.2} x underlay",
            hostgw / underlay
        );
        println!(
            "  ferry udp pod->pod      {udp:7.2}   {:.2} x underlay, {:.2} x ferry vxlan (target >= 0.5)",
            udp / underlay,
            udp / ferry_vxlan
        );
    }
    root.assert_unchanged();
}
