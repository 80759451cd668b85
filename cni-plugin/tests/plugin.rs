//! Privileged end-to-end tests of the `ferry-cni` binary on the real kernel: every test builds
//! fresh namespaces (a node and its pods), drives the binary like a runtime, and checks the result
//! with `ip -j` rather than with the plugin's own reads.

mod common;

use common::{first_ip, tcp_reaches, Node};
use ferry_tests::{privileged, Netns};
use serde_json::json;

#[test]
fn add_check_del_lifecycle() {
    if !privileged("add_check_del_lifecycle") {
        return;
    }
    let node = Node::new();
    let pod = Netns::new("fcp");
    let conf = node.conf("1.0.0", "10.31.0.0/24", json!({"mtu": 1400}));
    let out = node.cni("ADD", "ctr1", pod.path(), "eth0", &conf);
    let result = out.expect_ok().clone();

    // The result: bridge, host veth, pod interface with sandbox; IP on the pod interface.
    assert_eq!(result["cniVersion"], "1.0.0");
    let ifaces = result["interfaces"].as_array().unwrap();
    assert_eq!(ifaces.len(), 3);
    assert_eq!(ifaces[0]["name"], node.bridge.as_str());
    assert_eq!(ifaces[2]["name"], "eth0");
    assert_eq!(ifaces[2]["sandbox"], pod.path());
    assert_eq!(result["ips"][0]["interface"], 2);
    assert_eq!(result["ips"][0]["gateway"], "10.31.0.1");
    let addr = result["ips"][0]["address"].as_str().unwrap().to_owned();
    assert!(
        addr.starts_with("10.31.0.") && addr.ends_with("/24"),
        "{addr}"
    );
    assert!(
        result["ips"][0].get("version").is_none(),
        "1.0.0 results carry no ips[].version"
    );
    assert_eq!(result["routes"][0]["dst"], "0.0.0.0/0");

    // Independent view of the pod: eth0 up with the address, MTU and a default route.
    let links = pod.ip_json("addr show dev eth0");
    let eth0 = &links[0];
    assert_eq!(eth0["mtu"], 1400);
    assert_eq!(eth0["operstate"], "UP");
    assert_eq!(eth0["address"], ifaces[2]["mac"]);
    let ip = addr.split('/').next().unwrap();
    assert!(eth0["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["local"] == ip));
    let routes = pod.ip_json("route show default");
    assert_eq!(routes[0]["gateway"], "10.31.0.1");
    assert_eq!(routes[0]["dev"], "eth0");

    // The node: bridge up with the gateway, host veth attached with hairpin on.
    let host = ifaces[1]["name"].as_str().unwrap();
    let br = node.ns.ip_json(&format!("addr show dev {}", node.bridge));
    assert!(br[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["local"] == "10.31.0.1"));
    let hl = node.ns.ip_json(&format!("-d link show dev {host}"));
    assert_eq!(hl[0]["master"], node.bridge.as_str());
    assert_eq!(hl[0]["linkinfo"]["info_slave_data"]["hairpin"], true);
    assert_eq!(hl[0]["mtu"], 1400);

    // Traffic: node -> pod over the bridge.
    assert!(
        tcp_reaches(&pod, &node.ns, ip, 7001),
        "node cannot reach the pod"
    );

    // CHECK passes, and fails once a route is gone.
    let mut with_prev = conf.clone();
    with_prev["prevResult"] = result.clone();
    node.cni("CHECK", "ctr1", pod.path(), "eth0", &with_prev)
        .expect_ok();
    pod.sh("ip route del default");
    let bad = node.cni("CHECK", "ctr1", pod.path(), "eth0", &with_prev);
    assert_eq!(bad.code(), 103, "{}", bad.stdout);

    // DEL removes the veth and the reservation; a second DEL and one with no netns succeed.
    node.cni("DEL", "ctr1", pod.path(), "eth0", &with_prev)
        .expect_ok();
    assert!(node.ferry_veths().is_empty(), "{:?}", node.links());
    assert!(!pod.link_names().contains(&"eth0".to_owned()));
    assert!(node.reservations().is_empty());
    node.cni("DEL", "ctr1", pod.path(), "eth0", &conf)
        .expect_ok();
    node.cni("DEL", "ctr1", "", "eth0", &conf).expect_ok();
}

#[test]
fn pods_on_one_bridge_reach_each_other_and_hairpin_is_configurable() {
    if !privileged("pods_reach_each_other") {
        return;
    }
    let node = Node::new();
    let (a, b) = (Netns::new("fcp"), Netns::new("fcp"));
    let conf = node.conf("1.0.0", "10.32.0.0/24", json!({}));
    let ra = node
        .cni("ADD", "a", a.path(), "eth0", &conf)
        .expect_ok()
        .clone();
    let rb = node
        .cni("ADD", "b", b.path(), "eth0", &conf)
        .expect_ok()
        .clone();
    let ip_a = first_ip(&ra);
    let ip_b = first_ip(&rb);
    assert_ne!(ip_a, ip_b);
    assert!(tcp_reaches(&b, &a, &ip_b, 7002));
    assert!(tcp_reaches(&a, &b, &ip_a, 7003));
    // hairpinMode false is honoured.
    let c = Netns::new("fcp");
    let conf_nohp = node.conf("1.0.0", "10.32.0.0/24", json!({"hairpinMode": false}));
    let rc = node
        .cni("ADD", "c", c.path(), "eth0", &conf_nohp)
        .expect_ok()
        .clone();
    let host = rc["interfaces"][1]["name"].as_str().unwrap();
    let hl = node.ns.ip_json(&format!("-d link show dev {host}"));
    assert_eq!(hl[0]["linkinfo"]["info_slave_data"]["hairpin"], false);
    for (id, ns) in [("a", &a), ("b", &b), ("c", &c)] {
        node.cni("DEL", id, ns.path(), "eth0", &conf).expect_ok();
    }
    assert!(node.reservations().is_empty());
    assert!(node.ferry_veths().is_empty());
}

#[test]
fn answers_in_every_supported_version() {
    if !privileged("answers_in_every_supported_version") {
        return;
    }
    let node = Node::new();
    let v = node.call(&[("CNI_COMMAND", "VERSION")], br#"{"cniVersion":"1.0.0"}"#);
    assert_eq!(
        v.expect_ok()["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
    assert_eq!(v.json["cniVersion"], "1.0.0");
    for (i, ver) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
        .iter()
        .enumerate()
    {
        let pod = Netns::new("fcp");
        let conf = node.conf(ver, "10.33.0.0/24", json!({}));
        let id = format!("v{i}");
        let r = node
            .cni("ADD", &id, pod.path(), "eth0", &conf)
            .expect_ok()
            .clone();
        assert_eq!(r["cniVersion"], *ver);
        let has_version = r["ips"][0].get("version").is_some();
        assert_eq!(has_version, ver.starts_with("0."), "{ver}: {r}");
        let has_route_mtu = r["routes"][0].get("mtu").is_some();
        assert_eq!(has_route_mtu, *ver == "1.1.0", "{ver}: {r}");
        let mut prev = conf.clone();
        prev["prevResult"] = r;
        let check = node.cni("CHECK", &id, pod.path(), "eth0", &prev);
        if ver.starts_with("0.3") {
            assert_eq!(check.code(), 1, "CHECK is not defined before 0.4.0");
        } else {
            check.expect_ok();
        }
        for verb in ["GC", "STATUS"] {
            let a = node.cni(verb, &id, pod.path(), "eth0", &conf);
            if *ver == "1.1.0" {
                assert!(a.ok, "{verb} {}", a.stdout);
            } else {
                assert_eq!(a.code(), 1, "{verb} is 1.1.0-only");
            }
        }
        node.cni("DEL", &id, pod.path(), "eth0", &conf).expect_ok();
    }
    assert!(node.reservations().is_empty());
}

#[test]
fn thirty_concurrent_adds_on_a_fresh_bridge_then_gc() {
    if !privileged("thirty_concurrent_adds") {
        return;
    }
    let node = Node::new();
    let pods: Vec<Netns> = (0..30).map(|_| Netns::new("fcp")).collect();
    let conf = node.conf("1.1.0", "10.34.0.0/24", json!({}));
    let answers: Vec<common::Answer> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (node, conf) = (&node, &conf);
                s.spawn(move || node.cni("ADD", &format!("p{i}"), p.path(), "eth0", conf))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ips: Vec<String> = answers
        .iter()
        .map(|a| {
            a.expect_ok()["ips"][0]["address"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 30, "every pod got its own address");
    assert_eq!(node.reservations().len(), 30);
    assert_eq!(node.ferry_veths().len(), 30);
    // The bridge holds the gateway exactly once.
    let br = node.ns.ip_json(&format!("addr show dev {}", node.bridge));
    let gws = br[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["local"] == "10.34.0.1")
        .count();
    assert_eq!(gws, 1);

    // GC keeping p0..p9 releases the other 20 reservations and veths.
    let mut gc_conf = conf.clone();
    gc_conf["cni.dev/valid-attachments"] = (0..10)
        .map(|i| json!({"containerID": format!("p{i}"), "ifname": "eth0"}))
        .collect();
    node.call(
        &[("CNI_COMMAND", "GC")],
        &serde_json::to_vec(&gc_conf).unwrap(),
    )
    .expect_ok();
    assert_eq!(node.reservations().len(), 10);
    assert_eq!(node.ferry_veths().len(), 10, "{:?}", node.ferry_veths());
    for (i, p) in pods.iter().enumerate().take(10) {
        assert!(
            p.link_names().contains(&"eth0".to_owned()),
            "p{i} kept its interface"
        );
    }
    for p in pods.iter().skip(10) {
        assert!(!p.link_names().contains(&"eth0".to_owned()));
    }
}

#[test]
fn node_network_file_gates_add_and_status() {
    if !privileged("node_network_file_gates_add_and_status") {
        return;
    }
    let node = Node::new();
    let pod = Netns::new("fcp");
    let file = node.dir.path().join("subnet.env");
    let conf = node.conf(
        "1.1.0",
        "unused",
        json!({"subnetFile": file, "ipam": {"subnet": null}}),
    );
    let a = node.cni("ADD", "c1", pod.path(), "eth0", &conf);
    assert_eq!(
        a.code(),
        11,
        "missing node file is 'try again later': {}",
        a.stdout
    );
    assert!(a.json["msg"]
        .as_str()
        .unwrap()
        .contains("does not exist yet"));
    let s = node.call(
        &[("CNI_COMMAND", "STATUS")],
        &serde_json::to_vec(&conf).unwrap(),
    );
    assert_eq!(s.code(), 50);
    assert!(node.ferry_veths().is_empty() && node.reservations().is_empty());

    std::fs::write(&file, "FERRY_NETWORK=10.244.0.0/16\nFERRY_SUBNET=10.244.7.1/24\nFERRY_MTU=1450\nFERRY_IPMASQ=true\n").unwrap();
    node.call(
        &[("CNI_COMMAND", "STATUS")],
        &serde_json::to_vec(&conf).unwrap(),
    )
    .expect_ok();
    let r = node
        .cni("ADD", "c1", pod.path(), "eth0", &conf)
        .expect_ok()
        .clone();
    assert!(r["ips"][0]["address"]
        .as_str()
        .unwrap()
        .starts_with("10.244.7."));
    assert_eq!(r["ips"][0]["gateway"], "10.244.7.1");
    assert_eq!(pod.ip_json("link show dev eth0")[0]["mtu"], 1450);
    node.cni("DEL", "c1", "", "eth0", &conf).expect_ok();
    assert!(node.reservations().is_empty());
}

#[test]
fn delegates_ipam_to_host_local() {
    if !privileged("delegates_ipam_to_host_local") {
        return;
    }
    let node = Node::new();
    let pod = Netns::new("fcp");
    let hl_dir = node.dir.path().join("host-local");
    let conf = node.conf(
        "1.0.0",
        "unused",
        json!({"ipam": {"type": "host-local", "subnet": "10.35.0.0/24", "dataDir": hl_dir,
                        "routes": [{"dst": "0.0.0.0/0"}]}}),
    );
    let r = node
        .cni("ADD", "c1", pod.path(), "eth0", &conf)
        .expect_ok()
        .clone();
    let ip = first_ip(&r);
    assert!(ip.starts_with("10.35.0."));
    assert!(
        hl_dir.join("testnet").join(&ip).exists(),
        "host-local holds the reservation"
    );
    assert!(tcp_reaches(&pod, &node.ns, &ip, 7004));
    node.cni("DEL", "c1", pod.path(), "eth0", &conf).expect_ok();
    assert!(
        !hl_dir.join("testnet").join(&ip).exists(),
        "host-local released it"
    );
    assert!(node.ferry_veths().is_empty());
    // A delegate that does not exist: a clear error, nothing left behind.
    let missing = node.conf("1.0.0", "unused", json!({"ipam": {"type": "no-such-ipam"}}));
    let a = node.cni("ADD", "c2", pod.path(), "eth0", &missing);
    assert_eq!(a.code(), 7);
    assert!(a.json["msg"].as_str().unwrap().contains("no-such-ipam"));
    assert!(node.ferry_veths().is_empty());
}

#[test]
fn dual_stack_ranges() {
    if !privileged("dual_stack_ranges") {
        return;
    }
    let node = Node::new();
    let pod = Netns::new("fcp");
    let conf = node.conf(
        "1.1.0",
        "unused",
        json!({"ipam": {"subnet": null, "ranges": [[{"subnet": "10.36.0.0/24"}], [{"subnet": "fd36::/64"}]]}}),
    );
    let r = node
        .cni("ADD", "c1", pod.path(), "eth0", &conf)
        .expect_ok()
        .clone();
    assert_eq!(r["ips"].as_array().unwrap().len(), 2);
    let v6 = pod.ip_json("-6 route show default");
    assert_eq!(v6[0]["gateway"], "fd36::1");
    let addrs = pod.ip_json("-6 addr show dev eth0 scope global");
    assert!(addrs[0]["addr_info"][0]["local"]
        .as_str()
        .unwrap()
        .starts_with("fd36::"));
    node.cni("DEL", "c1", pod.path(), "eth0", &conf).expect_ok();
    assert!(node.reservations().is_empty());
}

#[test]
fn ip_masq_hides_pods_behind_the_node_address() {
    if !privileged("ip_masq_hides_pods_behind_the_node_address") {
        return;
    }
    let node = Node::new();
    let ext = Netns::new("fce");
    let pod = Netns::new("fcp");
    ferry_tests::veth(&node.ns, "up0", &ext, "ext0");
    node.ns
        .sh("ip addr add 172.30.9.1/24 dev up0 && ip link set up0 up");
    ext.sh("ip addr add 172.30.9.2/24 dev ext0 && ip link set ext0 up");
    let conf = node.conf("1.0.0", "10.37.0.0/24", json!({"ipMasq": true}));
    node.cni("ADD", "c1", pod.path(), "eth0", &conf).expect_ok();
    let rules = node.ns.sh("iptables-save -t nat");
    assert!(
        rules
            .contains("-A POSTROUTING -m comment --comment ferry-cni-masquerade -j FERRY-CNI-MASQ"),
        "{rules}"
    );
    assert!(
        rules.contains("-A FERRY-CNI-MASQ -s 10.37.0.0/24 ! -d 224.0.0.0/4"),
        "{rules}"
    );
    // A second pod does not duplicate the rules.
    let pod2 = Netns::new("fcp");
    node.cni("ADD", "c2", pod2.path(), "eth0", &conf)
        .expect_ok();
    let rules2 = node.ns.sh("iptables-save -t nat");
    assert_eq!(rules2.matches("MASQUERADE").count(), 1, "{rules2}");

    // The external host sees the node's address, not the pod's.
    use std::io::Read;
    let listener = ext.run(|| std::net::TcpListener::bind("172.30.9.2:7100").unwrap());
    let accept = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        peer.ip().to_string()
    });
    pod.run(|| {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect("172.30.9.2:7100").unwrap();
        s.write_all(b"x").unwrap();
    });
    assert_eq!(accept.join().unwrap(), "172.30.9.1");
    for (c, p) in [("c1", &pod), ("c2", &pod2)] {
        node.cni("DEL", c, p.path(), "eth0", &conf).expect_ok();
    }
}

/// Issue #10, second defect: a second attachment of one pod to the same network asks for a
/// default route the pod already has (via eth0). ADD used to report it without installing it
/// (EEXIST was taken as success) and CHECK then failed. Now it is installed with the next metric
/// (eth0's route keeps precedence), the result says so, and CHECK agrees; a configured priority
/// that clashes fails clearly and rolls back.
#[test]
fn second_default_route_gets_the_next_metric_and_check_agrees() {
    if !privileged("second_default_route_gets_the_next_metric_and_check_agrees") {
        return;
    }
    let node = Node::new();
    let pod = Netns::new("fcp");
    let conf = node.conf("1.1.0", "10.89.0.0/24", json!({}));
    let check = |ifname: &str, result: &serde_json::Value, conf: &serde_json::Value| {
        let mut with_prev = conf.clone();
        with_prev["prevResult"] = result.clone();
        node.cni("CHECK", "c3", pod.path(), ifname, &with_prev)
    };
    let eth0 = node
        .cni("ADD", "c3", pod.path(), "eth0", &conf)
        .expect_ok()
        .clone();
    assert_eq!(first_ip(&eth0), "10.89.0.2");
    let eth9 = node
        .cni("ADD", "c3", pod.path(), "eth9", &conf)
        .expect_ok()
        .clone();
    assert_eq!(eth9["routes"].as_array().unwrap().len(), 1, "{eth9}");
    let route = &eth9["routes"][0];
    assert_eq!(
        (&route["dst"], &route["gw"], &route["priority"]),
        (&json!("0.0.0.0/0"), &json!("10.89.0.1"), &json!(1)),
        "{eth9}"
    );

    // The kernel has what the result says, and eth0's default route still wins.
    let defaults = pod.ip_json("route show default");
    let on = |dev: &str| {
        defaults
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["dev"] == dev)
            .unwrap_or_else(|| panic!("no default route on {dev}: {defaults}"))
            .clone()
    };
    assert_eq!(on("eth0")["gateway"], "10.89.0.1");
    assert!(on("eth0").get("metric").is_none(), "eth0 keeps metric 0");
    assert_eq!(on("eth9")["gateway"], "10.89.0.1");
    assert_eq!(on("eth9")["metric"], 1);
    assert_eq!(pod.ip_json("route get 192.0.2.1")[0]["dev"], "eth0");

    check("eth9", &eth9, &conf).expect_ok();
    check("eth0", &eth0, &conf).expect_ok();

    // A 1.0.0 result has no field for the metric: the route is installed above both others, and
    // CHECK finds it by device and gateway.
    let conf_100 = node.conf("1.0.0", "10.89.0.0/24", json!({}));
    let eth8 = node
        .cni("ADD", "c3", pod.path(), "eth8", &conf_100)
        .expect_ok()
        .clone();
    assert!(eth8["routes"][0].get("priority").is_none(), "{eth8}");
    assert_eq!(on_dev(&pod, "eth8")["metric"], 2);
    check("eth8", &eth8, &conf_100).expect_ok();

    // CHECK notices the route going, and says which in plain words.
    pod.sh("ip route del default dev eth9");
    let bad = check("eth9", &eth9, &conf);
    assert_eq!(bad.code(), 103, "{}", bad.stdout);
    assert_eq!(
        bad.json["msg"],
        "route 0.0.0.0/0 via 10.89.0.1 dev eth9 metric 1 is missing"
    );

    // A priority pinned by IPAM that is taken: a clear error, the delegated reservation released.
    let log = node.dir.path().join("ipam.log");
    let ipam = node.bin_dir.join("pinned-ipam");
    std::fs::write(
        &ipam,
        format!(
            "#!/bin/sh\necho \"$CNI_COMMAND $CNI_IFNAME\" >> {}\n\
             [ \"$CNI_COMMAND\" = ADD ] && echo '{{\"cniVersion\":\"1.1.0\",\
             \"ips\":[{{\"address\":\"10.89.0.77/24\",\"gateway\":\"10.89.0.1\"}}],\
             \"routes\":[{{\"dst\":\"0.0.0.0/0\",\"gw\":\"10.89.0.1\",\"priority\":0}}]}}'\n\
             exit 0\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&ipam, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let pinned = node.conf(
        "1.1.0",
        "unused",
        json!({"isDefaultGateway": false, "ipam": {"type": "pinned-ipam"}}),
    );
    let a = node.cni("ADD", "c3", pod.path(), "eth7", &pinned);
    assert_eq!(a.code(), 101, "{}", a.stdout);
    assert_eq!(
        a.json["msg"],
        "cannot add route 0.0.0.0/0 via 10.89.0.1 dev eth7 metric 0: \
         the pod netns already has 0.0.0.0/0 via 10.89.0.1 dev eth0 metric 0"
    );
    assert!(!pod.link_names().contains(&"eth7".to_owned()));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "ADD eth7\nDEL eth7\n",
        "the delegated ADD was undone"
    );
    assert_eq!(node.ferry_veths().len(), 3, "eth0, eth9 and eth8 only");
}

/// The default route on `dev` in `pod`, from `ip -j`.
fn on_dev(pod: &Netns, dev: &str) -> serde_json::Value {
    pod.ip_json(&format!("route show default dev {dev}"))[0].clone()
}
