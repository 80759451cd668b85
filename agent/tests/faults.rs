//! Privileged test of `ferry-agent` under bad input and faults, on the default VXLAN backend,
//! against a real `ferry-server` (whose node IPAM has room for one /24 only):
//!
//! 1. node A's VXLAN port is held by another socket, node B has no podCIDR (IPAM exhausted):
//!    both Nodes say `NetworkUnavailable=True` with the reason, neither writes a conflist, both
//!    agents keep running; the port freed and a podCIDR given, both recover on their own and
//!    pods on A and B reach each other;
//! 2. peers with garbage annotations (backend-data not JSON, bad public-ip, another VNI, a
//!    podCIDR overlapping A's): skipped one by one, named in `FerryNetworkDegraded=True`, while
//!    a good flannel peer is programmed; a fixed peer is programmed within a second, and with
//!    the garbage gone the condition clears;
//! 3. A's underlay interface disappears (moved to another namespace; the kernel deletes
//!    `ferry.1` with it): `NetworkUnavailable=True InterfaceMissing` within ~1 s, A's files and
//!    pod stay, B keeps serving its other peers; the interface back, A rebuilds its overlay and
//!    the pods talk again.
//!
//! Node A reaches the API server over a separate management link (`mgmt0`, straight to the
//! control-plane namespace), as a node with a dedicated overlay NIC would: when the interface
//! that carries the API traffic itself disappears, the agent can only log (it posts the
//! condition once it reaches the server again). Conditions are read from the API, kernel state
//! with `ip -j` / `bridge -j`.

mod common;

use common::*;
use ferry_agent::netlink::mac_string;
use ferry_agent::overlay::vxlan::vtep_mac;
use ferry_tests::{privileged, veth, wait_until, Netns, RootSnapshot};
use serde_json::{json, Value};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

const D_MAC: &str = "82:aa:bb:cc:dd:0d";
const D_IP: &str = "10.99.0.14";

/// `(status, reason, message)` of condition `ty` on Node `node` (empty strings when absent).
fn condition(cp: &ControlPlane, node: &str, ty: &str) -> (String, String, String) {
    let n = cp.node(node);
    let c = n["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == ty).cloned())
        .unwrap_or(Value::Null);
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
    (s("status"), s("reason"), s("message"))
}

/// Waits until condition `ty` of `node` has `status` and `reason`; returns its message.
fn wait_condition(cp: &ControlPlane, n: &NodeEnv, ty: &str, status: &str, reason: &str) -> String {
    wait_message(cp, n, ty, status, reason, "")
}

/// Like [`wait_condition`], also waiting for the message to contain `part`.
fn wait_message(
    cp: &ControlPlane,
    n: &NodeEnv,
    ty: &str,
    status: &str,
    reason: &str,
    part: &str,
) -> String {
    let mut last = Default::default();
    let ok = wait_until(Duration::from_secs(15), || {
        last = condition(cp, &n.name, ty);
        last.0 == status && last.1 == reason && last.2.contains(part)
    });
    assert!(
        ok,
        "{}: {ty} is {last:?}, want {status} {reason}\n{}",
        n.name,
        n.logs()
    );
    last.2
}

/// The taints of Node `node`, as `key:effect`.
fn taints(cp: &ControlPlane, node: &str) -> Vec<String> {
    cp.node(node)["spec"]["taints"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    format!(
                        "{}:{}",
                        t["key"].as_str().unwrap_or(""),
                        t["effect"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

const NET_TAINT: &str = "node.kubernetes.io/network-unavailable:NoSchedule";

fn alive(n: &mut NodeEnv) -> bool {
    n.agent
        .as_mut()
        .is_some_and(|a| a.0.try_wait().unwrap().is_none())
}

/// Creates Node `name` with a preset podCIDR and `annotations`.
fn create_peer(cp: &ControlPlane, name: &str, cidr: &str, ip: &str, annotations: Value) {
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
    });
    cp.api(
        "POST",
        "/api/v1/nodes",
        Some(("application/json", &node)),
        201,
    );
    let status = json!({"status": {"addresses": [{"type": "InternalIP", "address": ip}]}});
    cp.api(
        "PATCH",
        &format!("/api/v1/nodes/{name}/status"),
        Some(("application/merge-patch+json", &status)),
        200,
    );
}

fn flannel(mac: &str, ip: &str, vni: u32) -> Value {
    json!({
        "flannel.alpha.coreos.com/backend-type": "vxlan",
        "flannel.alpha.coreos.com/backend-data": format!(r#"{{"VNI":{vni},"VtepMAC":"{mac}"}}"#),
        "flannel.alpha.coreos.com/public-ip": ip,
    })
}

fn has_vx_route(n: &NodeEnv, cidr: &str) -> bool {
    n.ferry_routes()
        .iter()
        .any(|(dst, _, dev)| dst == cidr && dev == "ferry.1")
}

fn device_up(n: &NodeEnv) -> bool {
    let out = n.ns.try_sh("ip -j link show dev ferry.1");
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("\"UP\"")
}

#[test]
fn faults_and_garbage_set_node_conditions_and_tear_nothing_down() {
    if !privileged("faults_and_garbage_set_node_conditions_and_tear_nothing_down") {
        return;
    }
    let root = RootSnapshot::take();
    {
        let cp = ControlPlane::start_with(&["--cluster-cidr", "10.244.0.0/24"]);
        let mut a = NodeEnv::new(&cp, "node-a", "pa", "10.99.0.11");
        let mut b = NodeEnv::new(&cp, "node-b", "pb", "10.99.0.12");
        // VXLAN (the default), peers probed every second.
        for n in [&mut a, &mut b] {
            n.args = vec!["--probe-seconds".into(), "1".into()];
        }
        veth(&a.ns, "mgmt0", &cp.cp, "mg0");
        cp.cp
            .sh("ip addr add 10.98.0.10/24 dev mg0 && ip link set mg0 up");
        a.ns.sh(&format!(
            "ip addr add 10.98.0.11/24 dev mgmt0 && ip link set mgmt0 up \
             && ip route add {CP_IP}/32 via 10.98.0.10 dev mgmt0"
        ));
        cp.create_node("node-a", Some(&a.ip));
        let ca = cp.wait_pod_cidr("node-a");
        cp.create_node("node-b", Some(&b.ip));

        // 1. A's VXLAN port is taken, B gets no podCIDR (the IPAM's one /24 went to A).
        let squatter = a.ns.run(|| UdpSocket::bind("0.0.0.0:8472").unwrap());
        a.start_agent(&cp);
        b.start_agent(&cp);
        let msg = wait_condition(&cp, &a, "NetworkUnavailable", "True", "TunnelPortInUse");
        assert!(msg.contains("UDP port 8472"), "{msg}");
        let msg = wait_condition(&cp, &b, "NetworkUnavailable", "True", "NoPodCIDR");
        assert!(msg.contains("spec.podCIDR"), "{msg}");
        std::thread::sleep(Duration::from_secs(2));
        for n in [&mut a, &mut b] {
            assert!(alive(n), "{} agent exited:\n{}", n.name, n.logs());
            assert!(
                !n.conf_dir().join("10-ferry.conflist").exists(),
                "{}: conflist written while the overlay is down",
                n.name
            );
        }
        assert_eq!(
            a.logs().matches("reason=\"TunnelPortInUse\"").count(),
            1,
            "logged once:\n{}",
            a.logs()
        );
        assert!(b.logs().contains("NoPodCIDR"), "{}", b.logs());
        // The node lifecycle controller keeps new pods off both (taint-nodes-by-condition).
        for n in ["node-a", "node-b"] {
            assert!(
                wait_until(Duration::from_secs(5), || taints(&cp, n)
                    .contains(&NET_TAINT.to_owned())),
                "{n} not tainted: {:?}",
                taints(&cp, n)
            );
        }

        let t = Instant::now();
        drop(squatter);
        let cb = "10.244.1.0/24";
        cp.api(
            "PATCH",
            "/api/v1/nodes/node-b",
            Some((
                "application/merge-patch+json",
                &json!({"spec": {"podCIDR": cb, "podCIDRs": [cb]}}),
            )),
            200,
        );
        for n in [&a, &b] {
            wait_condition(&cp, n, "NetworkUnavailable", "False", "FerryAgentReady");
            let conflist = n.conf_dir().join("10-ferry.conflist");
            assert!(
                wait_until(Duration::from_secs(5), || conflist.exists() && device_up(n)),
                "{}",
                n.logs()
            );
        }
        eprintln!(
            "port freed + podCIDR given: both nodes ready after {:?}",
            t.elapsed()
        );
        assert!(a.logs().contains("fault cleared"), "{}", a.logs());
        for n in ["node-a", "node-b"] {
            assert!(
                wait_until(Duration::from_secs(5), || !taints(&cp, n)
                    .contains(&NET_TAINT.to_owned())),
                "{n} still tainted: {:?}",
                taints(&cp, n)
            );
        }
        wait_condition(
            &cp,
            &a,
            "FerryNetworkDegraded",
            "False",
            "AllPeersProgrammed",
        );
        let pod_a = Netns::new("fpa");
        let pod_b = Netns::new("fpb");
        let ip_a = a.add_pod(&pod_a, "pod-a");
        let ip_b = b.add_pod(&pod_b, "pod-b");
        assert!(wait_until(Duration::from_secs(5), || has_vx_route(&a, cb)
            && has_vx_route(&b, &ca)));
        pod_a.sh(&format!("ping -c 2 -W 2 {ip_b}"));

        // 2. Garbage peers next to a good one.
        create_peer(
            &cp,
            "node-c",
            "10.244.5.0/24",
            "10.99.0.13",
            json!({
                "flannel.alpha.coreos.com/backend-type": "vxlan",
                "flannel.alpha.coreos.com/backend-data": "{not json",
            }),
        );
        create_peer(
            &cp,
            "node-d",
            "10.244.6.0/24",
            D_IP,
            flannel(D_MAC, D_IP, 1),
        );
        let mut bad_ip = flannel("82:aa:bb:cc:dd:0e", "10.99.0.15", 1);
        bad_ip["flannel.alpha.coreos.com/public-ip"] = json!("10.99.0.300");
        create_peer(&cp, "node-e", "10.244.7.0/24", "10.99.0.15", bad_ip);
        create_peer(
            &cp,
            "node-f",
            "10.244.8.0/24",
            "10.99.0.16",
            flannel("82:aa:bb:cc:dd:0f", "10.99.0.16", 7),
        );
        create_peer(
            &cp,
            "node-g",
            &ca,
            "10.99.0.17",
            flannel("82:aa:bb:cc:dd:10", "10.99.0.17", 1),
        );
        let msg = wait_message(
            &cp,
            &a,
            "FerryNetworkDegraded",
            "True",
            "PeersSkipped",
            "4 peer(s) skipped",
        );
        eprintln!("A FerryNetworkDegraded: {msg}");
        for want in [
            "4 peer(s) skipped",
            "node-c: flannel.alpha.coreos.com/backend-data \"{not json\": not JSON",
            "node-e: flannel.alpha.coreos.com/public-ip \"10.99.0.300\" is not an IPv4 address",
            "node-f: its VXLAN uses VNI 7, this node VNI 1",
            "node-g: its podCIDR overlaps this node's",
        ] {
            assert!(msg.contains(want), "missing {want:?} in {msg:?}");
        }
        let msg = wait_message(
            &cp,
            &b,
            "FerryNetworkDegraded",
            "True",
            "PeersSkipped",
            "4 peer(s) skipped",
        );
        assert!(
            msg.contains("node-g: its podCIDR overlaps node \"node-a\"'s"),
            "{msg}"
        );
        // The good peer is served on both; nothing of the garbage peers is in the kernel.
        let mac_b = mac_string(&vtep_mac("node-b"));
        let mut want_a = vec![
            (D_MAC.to_owned(), D_IP.to_owned()),
            (mac_b.clone(), b.ip.clone()),
        ];
        want_a.sort();
        assert!(
            wait_until(Duration::from_secs(3), || ferry1_fdb(&a) == want_a),
            "{:?}",
            ferry1_fdb(&a)
        );
        for cidr in ["10.244.5.0/24", "10.244.7.0/24", "10.244.8.0/24"] {
            assert!(!has_vx_route(&a, cidr), "{cidr}: {:?}", a.ferry_routes());
        }
        assert!(has_vx_route(&a, "10.244.6.0/24") && has_vx_route(&b, "10.244.6.0/24"));
        assert!(alive(&mut a) && alive(&mut b));
        pod_a.sh(&format!("ping -c 1 -W 2 {ip_b}"));

        // A fixed peer is programmed within a second; without the garbage the condition clears.
        let t = Instant::now();
        cp.api(
            "PATCH",
            "/api/v1/nodes/node-c",
            Some((
                "application/merge-patch+json",
                &json!({"metadata": {"annotations": flannel("82:aa:bb:cc:dd:0c", "10.99.0.13", 1)}}),
            )),
            200,
        );
        assert!(
            wait_until(Duration::from_secs(1), || has_vx_route(&a, "10.244.5.0/24")),
            "fixed peer not programmed: {:?}\n{}",
            a.ferry_routes(),
            a.logs()
        );
        eprintln!("fixed peer programmed after {:?}", t.elapsed());
        for n in ["node-e", "node-f", "node-g"] {
            cp.delete_node(n);
        }
        let msg = wait_condition(
            &cp,
            &a,
            "FerryNetworkDegraded",
            "False",
            "AllPeersProgrammed",
        );
        assert_eq!(msg, "every peer is programmed");
        wait_condition(
            &cp,
            &b,
            "FerryNetworkDegraded",
            "False",
            "AllPeersProgrammed",
        );

        // 3. A's underlay interface disappears (parked in another namespace), then comes back.
        let park = Netns::new("fpk");
        let t = Instant::now();
        a.ns.sh(&format!("ip link set eth0 netns {}", park.name()));
        let msg = wait_condition(&cp, &a, "NetworkUnavailable", "True", "InterfaceMissing");
        eprintln!("interface gone: condition after {:?}: {msg}", t.elapsed());
        assert!(msg.contains("eth0"), "{msg}");
        std::thread::sleep(Duration::from_secs(2));
        assert!(alive(&mut a), "{}", a.logs());
        // Nothing torn down by the agent: files and the pod stay.
        assert!(a.conf_dir().join("10-ferry.conflist").exists());
        assert!(a.run_dir().join("subnet.env").exists());
        assert!(pod_a.sh("ip -4 -o addr show dev eth0").contains(&ip_a));
        // B keeps serving its peers (A's Node is unchanged, so B keeps A too).
        assert!(has_vx_route(&b, "10.244.6.0/24") && has_vx_route(&b, &ca));
        assert_eq!(
            condition(&cp, "node-b", "NetworkUnavailable").0,
            "False",
            "{}",
            b.logs()
        );

        let t = Instant::now();
        park.sh(&format!("ip link set eth0 netns {}", a.ns.name()));
        a.ns.sh(&format!(
            "ip link set eth0 mtu {UNDERLAY_MTU} && ip addr add {}/24 dev eth0 && ip link set eth0 up",
            a.ip
        ));
        wait_condition(&cp, &a, "NetworkUnavailable", "False", "FerryAgentReady");
        assert!(
            wait_until(Duration::from_secs(5), || device_up(&a)
                && has_vx_route(&a, cb)
                && has_vx_route(&a, "10.244.6.0/24")),
            "{:?}\n{}",
            a.ferry_routes(),
            a.logs()
        );
        eprintln!("interface back: overlay rebuilt after {:?}", t.elapsed());
        assert!(
            wait_until(Duration::from_secs(10), || pod_a
                .try_sh(&format!("ping -c 1 -W 1 {ip_b}"))
                .status
                .success()),
            "pods do not reach each other after the interface came back\n{}",
            a.logs()
        );
        assert!(alive(&mut a) && alive(&mut b));
        drop(park);

        // 4. Tunnel probes. The fake peers C and D have no machine behind them: neither their
        //    tunnel nor their underlay address answers. Blocking UDP 8472 on B leaves B's
        //    underlay answering but its tunnel silent: A names it, tries the checksum fallback
        //    (offload off, probe, no better: offload back on) and clears once unblocked.
        // `ethtool -k ferry.1`'s verdict on TX checksumming: `Some(true)` for "on".
        let tx_csum = |n: &NodeEnv| {
            let out = n.ns.sh("ethtool -k ferry.1");
            let line = out.lines().find(|l| l.starts_with("tx-checksumming:"))?;
            Some(
                line.trim_start_matches("tx-checksumming:")
                    .trim_start()
                    .starts_with("on"),
            )
        };
        assert_eq!(tx_csum(&a), Some(true));
        // The agent's ethtool ioctl, checked with ethtool itself.
        a.ns.run(|| ferry_agent::probe::set_tx_checksum("ferry.1", false))
            .unwrap();
        assert_eq!(tx_csum(&a), Some(false));
        assert_eq!(
            a.ns.run(|| ferry_agent::probe::tx_checksum("ferry.1")),
            Some(false)
        );
        a.ns.run(|| ferry_agent::probe::set_tx_checksum("ferry.1", true))
            .unwrap();
        assert_eq!(tx_csum(&a), Some(true));
        let msg = wait_message(
            &cp,
            &a,
            "FerryPeersUnreachable",
            "True",
            "TunnelProbeFailed",
            "2 peer(s) do not answer",
        );
        for want in [
            "node-c: neither the tunnel nor its underlay address answers",
            "node-d: neither the tunnel nor its underlay address answers",
        ] {
            assert!(msg.contains(want), "missing {want:?} in {msg:?}");
        }
        assert!(!msg.contains("node-b"), "{msg}");
        b.ns.sh("iptables -I INPUT -p udp --dport 8472 -j DROP");
        let t = Instant::now();
        let msg = wait_message(
            &cp,
            &a,
            "FerryPeersUnreachable",
            "True",
            "TunnelProbeFailed",
            "node-b: no answer through the tunnel but its underlay address answers (UDP 8472 blocked",
        );
        eprintln!("blocked tunnel reported after {:?}: {msg}", t.elapsed());
        assert!(
            wait_until(Duration::from_secs(10), || a
                .logs()
                .contains("checksums are not the cause")),
            "no checksum experiment:\n{}",
            a.logs()
        );
        assert_eq!(tx_csum(&a), Some(true), "offload not restored");
        assert!(!a.logs().contains("offload disabled"), "{}", a.logs());
        b.ns.sh("iptables -D INPUT -p udp --dport 8472 -j DROP");
        for n in ["node-c", "node-d"] {
            cp.delete_node(n);
        }
        let msg = wait_condition(&cp, &a, "FerryPeersUnreachable", "False", "AllPeersAnswer");
        assert_eq!(msg, "every probed peer answers through the tunnel");
        assert!(alive(&mut a) && alive(&mut b));
    }
    root.assert_unchanged();
}
