//! Traffic from outside the cluster end to end (issue #14): a real `ferry up` cluster of 2 nodes
//! (privileged), the clients in the lab's external host namespace (`<name>-ext`, 10.99.0.254),
//! one test per proxy mode (`external_traffic_in_mode`: `external_traffic_iptables`, and
//! `external_traffic_ebpf` through the agent's tc datapath). Checked, in sequence on one cluster:
//!
//! - NodePort with `externalTrafficPolicy: Cluster` through every node, with the backend on that
//!   node and on the other one, over TCP and UDP: answered by the backend, which sees an address
//!   of the node the client went through (masqueraded), never the client;
//! - NodePort with `externalTrafficPolicy: Local` on a LoadBalancer Service: through the node with
//!   the endpoint the backend sees the client (10.99.0.254); through the node without one nothing
//!   answers; the `healthCheckNodePort` (allocated by the apiserver) answers 200 with
//!   `localEndpoints: 1` on the first node and 503 with 0 on the other, with kube-proxy's headers
//!   and body; when the endpoint moves to the other node, both the traffic and the checks follow;
//! - externalIPs, routed to a node inside the external host (`ip route add <ip>/32 via <node>`):
//!   Cluster through the node without the endpoint (masqueraded), Local through the node with it
//!   (source kept);
//! - a LoadBalancer Service gets an address of the lab's pool (10.99.0.192/27) and the external
//!   host reaches it on its link (one node answers ARP for it: the agents' L2 announcement); an
//!   `externalTrafficPolicy: Local` one is announced by its endpoint's node (source kept), and
//!   by the new one when the endpoint moves;
//! - UDP NodePort with an endpoint change: a connected UDP flow from outside moves to the new
//!   backend within seconds of the Service's selector changing, and never goes back;
//! - agent restart (SIGTERM, started again) on the node translating a long-lived TCP connection
//!   and a connected UDP flow from outside (NodePort, backend on the other node): neither is
//!   disturbed, the restarted agent adopts the datapath (iptables: the same rules) and serves the
//!   health check again.

mod common;

use common::external::{
    agent_syncs, echo_pod, ferry_rules, node_addrs, node_ip, restart_agent, wait_pods_ready,
    External, EXT_IP,
};
use common::*;
use ferry_tests::{privileged, wait_until, RootSnapshot};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One cluster at a time: the machine has two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn service(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"}, "spec": spec})
}

fn tcp_port(node_port: u16) -> Value {
    json!({"name": "web", "port": 80, "targetPort": "web", "nodePort": node_port})
}

fn udp_port(node_port: u16) -> Value {
    json!({"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns", "nodePort": node_port})
}

/// Waits (bounded) until `n` requests from the external host to `ip:port` are answered only by
/// `pod`, each seeing a peer address for which `peer_ok` holds; returns the peers seen.
fn expect_backend(
    ext: &External,
    what: &str,
    udp: bool,
    ip: &str,
    port: u16,
    pod: &str,
    peer_ok: impl Fn(&str) -> bool,
) -> BTreeSet<String> {
    let mut last = Vec::new();
    let ok = wait_until(Duration::from_secs(20), || {
        last = if udp {
            ext.udp(6, ip, port)
        } else {
            ext.tcp(6, ip, port)
        };
        last.iter().all(|l| {
            l.split_once(' ')
                .is_some_and(|(p, peer)| p == pod && peer_ok(peer))
        })
    });
    assert!(
        ok,
        "{what}: {ip}:{port} should be answered by {pod} only; got {last:?}"
    );
    let peers: BTreeSet<String> = last
        .iter()
        .filter_map(|l| l.split_once(' ').map(|(_, p)| p.to_owned()))
        .collect();
    println!("ok: {what}: {ip}:{port} answered by {pod}, peers {peers:?}");
    peers
}

/// Waits (bounded) until nothing answers `ip:port` over TCP from the external host (connects
/// time out: dropped, not refused).
fn expect_no_answer(ext: &External, what: &str, ip: &str, port: u16) {
    let mut last = Vec::new();
    let ok = wait_until(Duration::from_secs(20), || {
        last = ext.tcp(2, ip, port);
        last.iter().all(|l| l == "ERR timeout")
    });
    assert!(ok, "{what}: {ip}:{port} should not answer; got {last:?}");
    println!("ok: {what}: {ip}:{port} does not answer");
}

/// Waits (bounded) until the health check on `ip:port` answers `status` with `count` local
/// endpoints for Service `default/name`, with kube-proxy's headers.
fn expect_health(ext: &External, ip: &str, port: u16, name: &str, status: u64, count: u64) {
    let mut last = Value::Null;
    let ok = wait_until(Duration::from_secs(20), || {
        last = ext.http_get(ip, port);
        let body: Value = last["body"]
            .as_str()
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or(Value::Null);
        last["status"] == status
            && body
                == json!({"service": {"namespace": "default", "name": name},
                          "localEndpoints": count, "serviceProxyHealthy": true})
    });
    assert!(
        ok,
        "health check {ip}:{port} should answer {status} with {count} local endpoints; got {last:#}"
    );
    let headers = &last["headers"];
    assert_eq!(headers["Content-Type"], "application/json", "{last:#}");
    assert_eq!(headers["X-Content-Type-Options"], "nosniff", "{last:#}");
    println!("ok: health check {ip}:{port}: {status}, localEndpoints {count}");
}

fn external_traffic_in_mode(mode: &str) {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    binaries(&["ferry-server", "ferry-kubelet", "ferry-agent", "ferry-cni"]);
    let started = Instant::now();
    let step = |what: &str| println!("[{:>6.1}s] {mode}: {what}", started.elapsed().as_secs_f64());
    let root = RootSnapshot::take();
    let c = Cluster::new();
    let out = c.up(&["--nodes", "2", "--service-proxy", mode]);
    assert!(out.status.success(), "ferry up: {}", text(&out));
    step("cluster up");
    let k = Kubectl(c.dir().join("kubeconfig").to_string_lossy().into_owned());
    let ext = External::of(&c);
    let (n1, n2) = (node_ip(1), node_ip(2));

    k.apply(&echo_pod(
        "be-1",
        "node-1",
        json!({"pod": "be-1", "udp": "a"}),
    ));
    k.apply(&echo_pod(
        "be-2",
        "node-2",
        json!({"pod": "be-2", "udp": "b"}),
    ));
    // ETP Cluster NodePort over be-1 (node-1), TCP and UDP.
    k.apply(&service(
        "cl",
        json!({"type": "NodePort", "selector": {"pod": "be-1"},
               "ports": [tcp_port(30100), udp_port(30101)]}),
    ));
    // ETP Local LoadBalancer over be-1: its NodePort and its health check.
    k.apply(&service(
        "lo",
        json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "selector": {"pod": "be-1"},
               "ports": [tcp_port(30110)]}),
    ));
    // externalIPs over be-1: Cluster and Local.
    k.apply(&service(
        "eip",
        json!({"selector": {"pod": "be-1"}, "externalIPs": ["10.200.0.50"],
               "ports": [{"name": "web", "port": 80, "targetPort": "web"}]}),
    ));
    k.apply(&service(
        "eipl",
        json!({"selector": {"pod": "be-1"}, "externalIPs": ["10.200.0.51"],
               "externalTrafficPolicy": "Local",
               "ports": [{"name": "web", "port": 80, "targetPort": "web"}]}),
    ));
    // UDP NodePort whose endpoint changes (selector udp=a: be-1, then udp=b: be-2).
    k.apply(&service(
        "mv",
        json!({"type": "NodePort", "selector": {"udp": "a"}, "ports": [udp_port(30120)]}),
    ));
    let hc = k.json(&["get", "svc", "lo"])["spec"]["healthCheckNodePort"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .expect("the apiserver allocates a healthCheckNodePort for lo");
    wait_pods_ready(&k, &["be-1", "be-2"], 90);
    step("pods ready");
    if mode == "ebpf" {
        // The ETP Local reverse NAT sits on the egress of the underlay and of `ferry.1` (the
        // pod fast path routes pods' packets for other nodes' pods straight to `ferry.1`); bpffs
        // refuses a `.` in a pin name, hence `ferry%2e1`. No reply program on `ferry.1`.
        let bpffs = c.state()["bpffs"].as_str().map_or_else(
            || {
                let name = c.dir().file_name().unwrap().to_string_lossy().into_owned();
                std::path::PathBuf::from(format!("/sys/fs/bpf/ferry-{name}"))
            },
            std::path::PathBuf::from,
        );
        for node in ["node-1", "node-2"] {
            for pin in [
                "tcx_ferry_np_ext@eth0",
                "tcx_ferry_np_egr@eth0",
                "tcx_ferry_np_egr@ferry%2e1",
            ] {
                let pin = bpffs.join(node).join(pin);
                assert!(
                    wait_until(Duration::from_secs(20), || pin.exists()),
                    "{} missing",
                    pin.display()
                );
            }
            let rev = bpffs.join(node).join("tcx_ferry_np_rev@ferry%2e1");
            assert!(!rev.exists(), "{} exists", rev.display());
        }
        // `ferry.1` deleted behind the agent's back: the overlay recreates it, and the next
        // Services sync sees the new ifindex and attaches again (a new link behind the pin; the
        // old one went with the device). The traffic checks below then cross the new device.
        let pin = bpffs.join("node-1").join("tcx_ferry_np_egr@ferry%2e1");
        let link_id = || -> Option<u64> {
            let out = std::process::Command::new("bpftool")
                .args(["-j", "link", "show", "pinned"])
                .arg(&pin)
                .output()
                .ok()?;
            serde_json::from_slice::<Value>(&out.stdout).ok()?["id"].as_u64()
        };
        let before = link_id().expect("the ferry.1 egress link");
        let del = std::process::Command::new("ip")
            .args(["-n", &format!("{}-n1", c.name), "link", "del", "ferry.1"])
            .status()
            .unwrap();
        assert!(del.success(), "ip link del ferry.1");
        assert!(
            wait_until(Duration::from_secs(40), || link_id()
                .is_some_and(|id| id != before)),
            "ferry.1's egress program not attached again after the device was recreated"
        );
        step("ferry.1 recreated, egress program attached again");
    }
    let (addrs1, addrs2) = (node_addrs(&c, 1), node_addrs(&c, 2));
    assert!(
        addrs1.contains(&n1) && addrs2.contains(&n2),
        "{addrs1:?} {addrs2:?}"
    );

    // ETP Cluster: through each node, TCP and UDP; the backend sees that node, never the client.
    for (via, addrs, where_) in [(&n1, &addrs1, "local"), (&n2, &addrs2, "remote")] {
        for udp in [false, true] {
            let (proto, port) = if udp { ("udp", 30101) } else { ("tcp", 30100) };
            let what = format!("ETP Cluster {proto} NodePort via {via} (backend {where_})");
            expect_backend(&ext, &what, udp, via, port, "be-1", |peer| {
                addrs.contains(peer)
            });
        }
    }
    step("externalTrafficPolicy Cluster");

    // ETP Local: the node with the endpoint keeps the client's address; the other drops.
    expect_backend(
        &ext,
        "ETP Local NodePort via the endpoint's node",
        false,
        &n1,
        30110,
        "be-1",
        |p| p == EXT_IP,
    );
    expect_no_answer(
        &ext,
        "ETP Local NodePort via a node without endpoints",
        &n2,
        30110,
    );
    expect_health(&ext, &n1, hc, "lo", 200, 1);
    expect_health(&ext, &n2, hc, "lo", 503, 0);
    step("externalTrafficPolicy Local");

    // externalIPs routed to a node from the external host.
    ext.ip(&format!("route add 10.200.0.50/32 via {n2}"));
    ext.ip(&format!("route add 10.200.0.51/32 via {n1}"));
    expect_backend(
        &ext,
        "externalIP, Cluster, via the node without the endpoint",
        false,
        "10.200.0.50",
        80,
        "be-1",
        |p| addrs2.contains(p),
    );
    expect_backend(
        &ext,
        "externalIP, Local, via the endpoint's node",
        false,
        "10.200.0.51",
        80,
        "be-1",
        |p| p == EXT_IP,
    );
    step("externalIPs");

    // LoadBalancer: an address of the lab's pool (10.99.0.192/27) from the apiserver, answered on
    // the underlay by one node (the agents' L2 announcement): the external host reaches it on its
    // own link, with no route.
    k.apply(&service(
        "lb",
        json!({"type": "LoadBalancer", "selector": {"pod": "be-1"}, "ports": [tcp_port(30130)]}),
    ));
    let mut lb_ip = String::new();
    let got = wait_until(Duration::from_secs(20), || {
        lb_ip = k.json(&["get", "svc", "lb"])["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        !lb_ip.is_empty()
    });
    assert!(got, "Service lb got no LoadBalancer address");
    let last = lb_ip
        .strip_prefix("10.99.0.")
        .and_then(|l| l.parse::<u8>().ok());
    assert!(
        last.is_some_and(|l| (192..=223).contains(&l)),
        "{lb_ip} is not in the lab's pool 10.99.0.192/27"
    );
    expect_backend(
        &ext,
        "LoadBalancer IP, Cluster, announced on the underlay",
        false,
        &lb_ip,
        80,
        "be-1",
        |p| addrs1.contains(p) || addrs2.contains(p),
    );
    // ETP Local LoadBalancer (lo, its endpoint on node-1): announced only by node-1, which keeps
    // the client's address.
    let lo_ip = k.json(&["get", "svc", "lo"])["status"]["loadBalancer"]["ingress"][0]["ip"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!lo_ip.is_empty(), "Service lo got no LoadBalancer address");
    expect_backend(
        &ext,
        "LoadBalancer IP, Local, announced by the endpoint's node",
        false,
        &lo_ip,
        80,
        "be-1",
        |p| p == EXT_IP,
    );
    step("LoadBalancer");

    // UDP NodePort endpoint change: one connected flow from outside moves to the new backend.
    let flow = ext.udp_move(&n1, 30120);
    assert!(
        flow.first.starts_with("be-1 "),
        "the UDP flow should start on be-1: {:?}",
        flow.first
    );
    let out = k.run(
        &[
            "patch",
            "svc",
            "mv",
            "--type=merge",
            "-p",
            r#"{"spec":{"selector":{"udp":"b"}}}"#,
        ],
        None,
    );
    assert!(out.status.success(), "patch mv: {}", text(&out));
    let events = flow.events();
    let moved = events
        .iter()
        .find(|(_, a)| a.starts_with("be-2 "))
        .map(|(ms, _)| *ms)
        .unwrap_or_else(|| panic!("the UDP flow never reached be-2: {events:?}"));
    let back: Vec<&(u64, String)> = events
        .iter()
        .filter(|(ms, a)| *ms > moved && !a.starts_with("be-2 "))
        .collect();
    assert!(
        back.is_empty(),
        "after moving, the flow left be-2: {back:?}"
    );
    assert!(
        moved < 5000,
        "the UDP flow took {moved} ms to move: {events:?}"
    );
    println!("ok: UDP NodePort flow moved to be-2 {moved} ms after the selector change");
    step("UDP endpoint change");

    // The ETP Local endpoint moves to node-2: traffic and health checks follow.
    let out = k.run(
        &[
            "patch",
            "svc",
            "lo",
            "--type=merge",
            "-p",
            r#"{"spec":{"selector":{"pod":"be-2"}}}"#,
        ],
        None,
    );
    assert!(out.status.success(), "patch lo: {}", text(&out));
    expect_health(&ext, &n2, hc, "lo", 200, 1);
    expect_health(&ext, &n1, hc, "lo", 503, 0);
    expect_backend(
        &ext,
        "ETP Local after the endpoint moved",
        false,
        &n2,
        30110,
        "be-2",
        |p| p == EXT_IP,
    );
    expect_no_answer(&ext, "ETP Local via the node the endpoint left", &n1, 30110);
    step("ETP Local endpoint moved");
    // Its LoadBalancer address moved with it: node-2 announces it now (gratuitous ARP).
    expect_backend(
        &ext,
        "LoadBalancer IP, Local, re-announced by the endpoint's new node",
        false,
        &lo_ip,
        80,
        "be-2",
        |p| p == EXT_IP,
    );

    // Agent restart on node-2 under a long-lived TCP connection and a connected UDP flow from
    // outside through node-2's NodePort to be-1 on node-1.
    let hold = ext.hold(&n2, 30100, 30101);
    assert!(
        hold.first["tcp_ok"] == 1 && hold.first["udp_ok"] == 1,
        "the long-lived flows did not start: {}",
        hold.first
    );
    let rules_before = (mode == "iptables").then(|| ferry_rules(&c, 2));
    let agent = restart_agent(&c, 2);
    step("agent on node-2 restarted");
    let synced = wait_until(Duration::from_secs(20), || {
        agent_syncs(&c, 2).is_some_and(|n| n >= 1.0)
    });
    assert!(
        synced,
        "the restarted agent on node-2 did not sync within 20 s; its log:\n{}",
        std::fs::read_to_string(c.dir().join("logs/node-2-agent-restarted.log"))
            .unwrap_or_else(|e| e.to_string())
    );
    std::thread::sleep(Duration::from_millis(500));
    if let Some(before) = rules_before {
        assert_eq!(
            ferry_rules(&c, 2),
            before,
            "the restarted agent rewrote the rules instead of adopting them"
        );
    }
    expect_backend(
        &ext,
        "ETP Cluster NodePort after the agent restart",
        false,
        &n2,
        30100,
        "be-1",
        |p| addrs2.contains(p),
    );
    expect_health(&ext, &n2, hc, "lo", 200, 1);
    let end = hold.finish();
    println!("long-lived flows across the agent restart: {end}");
    assert!(
        end["tcp_err"] == 0
            && end["udp_err"] == 0
            && end["tcp_answers"].as_array().map(Vec::len) == Some(1)
            && end["udp_answers"].as_array().map(Vec::len) == Some(1),
        "the long-lived flows through {n2} were disturbed by the agent restart: {end}"
    );
    assert!(
        end["udp_lost"].as_u64() <= Some(2),
        "the connected UDP flow lost datagrams across the agent restart: {end}"
    );
    step("agent restart under external traffic");

    drop(agent);
    drop(ext);
    let out = c.ferry("down", &[]);
    assert!(out.status.success(), "ferry down: {}", text(&out));
    c.assert_gone();
    root.assert_unchanged();
}

#[test]
fn external_traffic_iptables() {
    if !privileged("external_traffic_iptables") {
        return;
    }
    external_traffic_in_mode("iptables");
}

#[test]
fn external_traffic_ebpf() {
    if !privileged("external_traffic_ebpf") {
        return;
    }
    external_traffic_in_mode("ebpf");
}
