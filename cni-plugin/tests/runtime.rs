//! Behaviour under a real runtime's calling pattern (containerd 1.6's CRI plugin), driven through
//! [`ferry_libcni::runtime`], our libcni equivalent: a conflist chain with Debian's `portmap` after
//! `ferry-cni`, the `loopback` network run concurrently with `eth0`, the result cache, DEL twice
//! (the second with an empty netns and no prevResult), CHECK and GC.

mod common;

use common::Node;
use ferry_libcni::runtime::{ConfList, RuntimeConf};
use ferry_tests::{privileged, Netns, RootSnapshot};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;

fn iptables_nat(ns: &Netns) -> String {
    ns.sh("iptables-save -t nat")
}

#[test]
fn containerd_style_chain_with_portmap_and_loopback() {
    if !privileged("containerd_style_chain_with_portmap_and_loopback") {
        return;
    }
    let root = RootSnapshot::take();
    let node = Node::new();
    let pod = Netns::new("fcp");
    pod.sh("ip link set lo down");
    let cache = node.dir.path().join("cache");
    let rt = node.runtime();
    let list = ConfList::parse(
        &serde_json::to_vec(&json!({
            "cniVersion": "1.0.0",
            "name": "ferrynet",
            "plugins": [
                {"type": "ferry-cni", "bridge": node.bridge, "ipam": {"subnet": "10.51.0.0/24", "dataDir": node.data_dir()}},
                {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
            ]
        }))
        .unwrap(),
    )
    .unwrap();
    let lo_list = ConfList::parse(
        br#"{"cniVersion":"0.3.1","name":"cni-loopback","plugins":[{"type":"loopback"}]}"#,
    )
    .unwrap();
    let sandbox = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let args = vec![
        ("K8S_POD_UID".to_owned(), "uid-1".to_owned()),
        ("IgnoreUnknown".to_owned(), "1".to_owned()),
        ("K8S_POD_NAMESPACE".to_owned(), "default".to_owned()),
        ("K8S_POD_NAME".to_owned(), "web-0".to_owned()),
        ("K8S_POD_INFRA_CONTAINER_ID".to_owned(), sandbox.to_owned()),
    ];
    let mut caps = serde_json::Map::new();
    caps.insert(
        "portMappings".into(),
        json!([{"hostPort": 30080, "containerPort": 80, "protocol": "tcp"}]),
    );
    let eth0 = RuntimeConf {
        container_id: sandbox.into(),
        netns: pod.path().into(),
        ifname: "eth0".into(),
        args: args.clone(),
        capability_args: caps,
    };
    let lo = RuntimeConf {
        ifname: "lo".into(),
        capability_args: Default::default(),
        ..eth0.clone()
    };

    // containerd runs the loopback and eth0 ADDs concurrently.
    let (r_eth0, r_lo) = std::thread::scope(|s| {
        let a = s.spawn(|| rt.add(&list, &eth0));
        let b = s.spawn(|| rt.add(&lo_list, &lo));
        (a.join().unwrap(), b.join().unwrap())
    });
    let result = r_eth0.unwrap_or_else(|e| panic!("eth0 ADD: {e}"));
    r_lo.unwrap_or_else(|e| panic!("lo ADD: {e}"));

    // The pod IP is found the way containerd finds it: on the interface named eth0 with a sandbox.
    let idx = result["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .position(|i| i["name"] == "eth0" && i["sandbox"] == pod.path())
        .expect("eth0 with sandbox in the result");
    let ip = result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["interface"] == idx)
        .expect("eth0 IP");
    let pod_ip = ip["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(
        pod.ip_json("link show dev lo")[0]["operstate"],
        "UNKNOWN",
        "lo is up"
    );

    // portmap (Debian's, after us in the chain) programmed the host port to our pod IP.
    let nat = iptables_nat(&node.ns);
    assert!(nat.contains("CNI-HOSTPORT-DNAT"), "{nat}");
    assert!(
        nat.contains("30080") && nat.contains(&format!("{pod_ip}:80")),
        "{nat}"
    );

    // The cache entry: libcni's format, mode 0600.
    let cache_file = cache
        .join("results")
        .join(format!("ferrynet-{sandbox}-eth0"));
    let meta = std::fs::metadata(&cache_file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let entry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cache_file).unwrap()).unwrap();
    assert_eq!(entry["kind"], "cniCacheV1");
    assert_eq!(entry["result"], result);

    // CHECK our plugin against the cached result (Debian's portmap 1.1.1 has its own CHECK bug:
    // it looks for an IPv6 chain it never created, so it is left out of this list).
    let ferry_only = ConfList {
        plugins: list.plugins[..1].to_vec(),
        ..list.clone()
    };
    rt.check(&ferry_only, &eth0)
        .unwrap_or_else(|e| panic!("CHECK: {e}"));

    // StopPodSandbox: DEL with netns and prevResult, eth0 and lo one after the other.
    rt.del(&list, &eth0)
        .unwrap_or_else(|e| panic!("DEL 1: {e}"));
    rt.del(&lo_list, &lo)
        .unwrap_or_else(|e| panic!("lo DEL 1: {e}"));
    assert!(!cache_file.exists());
    assert!(node.ferry_veths().is_empty());
    assert!(node.reservations().is_empty());
    assert!(
        !iptables_nat(&node.ns).contains(&format!("{pod_ip}:80")),
        "portmap rules removed"
    );

    // RemovePodSandbox: DEL again, netns gone (empty), no prevResult.
    drop(pod);
    let gone = RuntimeConf {
        netns: String::new(),
        ..eth0.clone()
    };
    rt.del(&list, &gone)
        .unwrap_or_else(|e| panic!("DEL 2: {e}"));
    rt.del(
        &lo_list,
        &RuntimeConf {
            ifname: "lo".into(),
            ..gone.clone()
        },
    )
    .unwrap_or_else(|e| panic!("lo DEL 2: {e}"));
    drop(node);
    root.assert_unchanged();
}

#[test]
fn gc_and_status_through_the_runtime() {
    if !privileged("gc_and_status_through_the_runtime") {
        return;
    }
    let root = RootSnapshot::take();
    let node = Node::new();
    let rt = node.runtime();
    let list = ConfList::parse(
        &serde_json::to_vec(&json!({
            "cniVersion": "1.1.0",
            "name": "testnet",
            "plugins": [{"type": "ferry-cni", "bridge": node.bridge, "ipam": {"subnet": "10.52.0.0/24", "dataDir": node.data_dir()}}]
        }))
        .unwrap(),
    )
    .unwrap();
    rt.status(&list).unwrap();
    let pods: Vec<Netns> = (0..3).map(|_| Netns::new("fcp")).collect();
    for (i, p) in pods.iter().enumerate() {
        let conf = RuntimeConf {
            container_id: format!("c{i}"),
            netns: p.path().into(),
            ifname: "eth0".into(),
            ..Default::default()
        };
        rt.add(&list, &conf).unwrap();
    }
    assert_eq!(node.reservations().len(), 3);
    rt.gc(&list, &[("c1".into(), "eth0".into())]).unwrap();
    assert_eq!(node.reservations().len(), 1);
    assert_eq!(node.ferry_veths().len(), 1);
    assert!(pods[1].link_names().contains(&"eth0".to_owned()));
    drop(pods);
    drop(node);
    root.assert_unchanged();
}
