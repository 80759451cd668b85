//! Bad input: every case is answered on stdout with the CNI error JSON (right code, a message),
//! a non-zero exit, and leaves nothing behind (no veth, no reservation).

mod common;

use common::Node;
use ferry_tests::{privileged, Netns};
use serde_json::json;

fn assert_clean(node: &Node, case: &str) {
    assert!(
        node.ferry_veths().is_empty(),
        "{case}: veth left: {:?}",
        node.ferry_veths()
    );
    assert!(
        node.reservations().is_empty(),
        "{case}: reservation left: {:?}",
        node.reservations()
    );
}

#[test]
fn environment_and_config_errors() {
    if !privileged("environment_and_config_errors") {
        return;
    }
    let node = Node::new();
    let pod = Netns::new("fcp");
    let not_netns = node.dir.path().join("plain-file");
    std::fs::write(&not_netns, "x").unwrap();
    let good = serde_json::to_vec(&node.conf("1.0.0", "10.41.0.0/24", json!({}))).unwrap();
    let with = |extra: serde_json::Value| {
        serde_json::to_vec(&node.conf("1.0.0", "10.41.0.0/24", extra)).unwrap()
    };
    let full = |cmd: &'static str, netns: &str, ifname: &str| -> Vec<(&'static str, String)> {
        vec![
            ("CNI_COMMAND", cmd.to_owned()),
            ("CNI_CONTAINERID", "ctr".to_owned()),
            ("CNI_NETNS", netns.to_owned()),
            ("CNI_IFNAME", ifname.to_owned()),
        ]
    };
    let p = pod.path();
    let drop_key = |k: &str| {
        full("ADD", p, "eth0")
            .into_iter()
            .filter(|(n, _)| *n != k)
            .collect::<Vec<_>>()
    };
    // (case, environment, stdin, expected code, word the message must contain)
    type Case<'a> = (&'a str, Vec<(&'static str, String)>, Vec<u8>, u64, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "malformed JSON",
            full("ADD", p, "eth0"),
            b"{\"cniVersion\": ".to_vec(),
            6,
            "decode",
        ),
        (
            "missing CNI_COMMAND",
            drop_key("CNI_COMMAND"),
            good.clone(),
            4,
            "CNI_COMMAND",
        ),
        (
            "unknown CNI_COMMAND",
            full("FROB", p, "eth0"),
            good.clone(),
            4,
            "FROB",
        ),
        (
            "missing CNI_CONTAINERID",
            drop_key("CNI_CONTAINERID"),
            good.clone(),
            4,
            "CNI_CONTAINERID",
        ),
        (
            "missing CNI_NETNS",
            drop_key("CNI_NETNS"),
            good.clone(),
            4,
            "CNI_NETNS",
        ),
        (
            "missing CNI_IFNAME",
            drop_key("CNI_IFNAME"),
            good.clone(),
            4,
            "CNI_IFNAME",
        ),
        (
            "netns does not exist",
            full("ADD", "/run/netns/ferry-no-such-ns", "eth0"),
            good.clone(),
            3,
            "does not exist",
        ),
        (
            "netns is not a netns",
            full("ADD", not_netns.to_str().unwrap(), "eth0"),
            good.clone(),
            4,
            "not a network namespace",
        ),
        (
            "unsupported cniVersion",
            full("ADD", p, "eth0"),
            with(json!({"cniVersion": "0.2.0"})),
            1,
            "0.2.0",
        ),
        (
            "invalid subnet",
            full("ADD", p, "eth0"),
            with(json!({"ipam": {"subnet": "10.41.0.0/40"}})),
            7,
            "subnet",
        ),
        (
            "gateway outside subnet",
            full("ADD", p, "eth0"),
            with(json!({"ipam": {"gateway": "192.0.2.1"}})),
            7,
            "gateway",
        ),
        (
            "invalid MTU",
            full("ADD", p, "eth0"),
            with(json!({"mtu": 20})),
            7,
            "mtu",
        ),
        (
            "interface name too long",
            full("ADD", p, "eth0-much-too-long"),
            good.clone(),
            4,
            "longer than 15",
        ),
        (
            "invalid bridge name",
            full("ADD", p, "eth0"),
            with(json!({"bridge": "bad/bridge"})),
            7,
            "bridge name",
        ),
    ];
    for (case, env, stdin, code, needle) in cases {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let a = node.call(&env, &stdin);
        assert!(!a.ok, "{case}: expected failure, got {}", a.stdout);
        assert_eq!(a.code(), code, "{case}: {}", a.stdout);
        let msg = a.json["msg"].as_str().unwrap_or_default().to_owned();
        assert!(
            msg.contains(needle)
                || a.json["details"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(needle),
            "{case}: message {msg:?} should mention {needle:?}"
        );
        assert!(
            a.json["cniVersion"].is_string(),
            "{case}: error has a cniVersion"
        );
        assert_clean(&node, case);
    }
}

#[test]
fn runtime_state_errors() {
    if !privileged("runtime_state_errors") {
        return;
    }
    let node = Node::new();
    let conf = node.conf("1.0.0", "10.42.0.0/30", json!({}));

    // Interface already present in the pod netns.
    let pod = Netns::new("fcp");
    pod.sh("ip link add eth0 type veth peer name eth0peer");
    let a = node.cni("ADD", "c1", pod.path(), "eth0", &conf);
    assert_eq!(a.code(), 101, "{}", a.stdout);
    assert!(a.json["msg"].as_str().unwrap().contains("already exists"));
    assert_clean(&node, "ifname present");
    assert!(
        pod.link_names().contains(&"eth0peer".to_owned()),
        "the existing eth0 is untouched"
    );

    // Exhaustion: a /30 has one usable address besides the gateway.
    let p1 = Netns::new("fcp");
    let p2 = Netns::new("fcp");
    node.cni("ADD", "c2", p1.path(), "eth0", &conf).expect_ok();
    let a = node.cni("ADD", "c3", p2.path(), "eth0", &conf);
    assert_eq!(a.code(), 100, "{}", a.stdout);
    assert!(
        a.json["msg"]
            .as_str()
            .unwrap()
            .contains("no free IP address"),
        "{}",
        a.stdout
    );
    assert_eq!(node.reservations().len(), 1, "only c2's reservation");
    assert_eq!(node.ferry_veths().len(), 1, "only c2's veth");
    assert!(!p2.link_names().contains(&"eth0".to_owned()));
    node.cni("DEL", "c2", p1.path(), "eth0", &conf).expect_ok();
    assert_clean(&node, "exhaustion");

    // Bridge name taken by a non-bridge link.
    let clash = node.conf("1.0.0", "10.42.1.0/24", json!({"bridge": "notabridge0"}));
    node.ns
        .sh("ip link add notabridge0 type veth peer name nb0peer");
    let a = node.cni("ADD", "c4", p2.path(), "eth0", &clash);
    assert_eq!(a.code(), 101, "{}", a.stdout);
    assert!(a.json["msg"].as_str().unwrap().contains("not a bridge"));
    let s = node.call(
        &[("CNI_COMMAND", "STATUS")],
        &serde_json::to_vec(&node.conf("1.1.0", "10.42.1.0/24", json!({"bridge": "notabridge0"})))
            .unwrap(),
    );
    assert_eq!(s.code(), 50);
    assert_clean(&node, "bridge clash");
}

#[test]
fn del_after_crash_halfway_through_add_and_reboot_reclaim() {
    if !privileged("del_after_crash_halfway_through_add") {
        return;
    }
    let node = Node::new();
    let pod = Netns::new("fcp");
    let conf = node.conf("1.0.0", "10.43.0.0/24", json!({}));
    // Simulate a crash after the veth was created and the IP reserved, before the address was
    // set: run a full ADD, then strip the pod side back to a bare veth.
    let r = node
        .cni("ADD", "c1", pod.path(), "eth0", &conf)
        .expect_ok()
        .clone();
    pod.sh("ip addr flush dev eth0 && ip link set eth0 down");
    let host = r["interfaces"][1]["name"].as_str().unwrap().to_owned();
    // A retried ADD (without DEL) converges instead of failing on the stale host veth.
    pod.sh("ip link del eth0 2>/dev/null || true");
    node.ns.sh(&format!(
        "ip link add {host} type veth peer name tmp0 && ip link set tmp0 netns {}",
        pod.name()
    ));
    let again = node
        .cni("ADD", "c1", pod.path(), "eth0", &conf)
        .expect_ok()
        .clone();
    assert_eq!(
        again["ips"][0]["address"], r["ips"][0]["address"],
        "same attachment, same address"
    );
    // DEL with an empty netns and no prevResult still releases everything.
    node.cni("DEL", "c1", "", "eth0", &conf).expect_ok();
    assert!(node.ferry_veths().is_empty(), "{:?}", node.links());
    assert!(node.reservations().is_empty());

    // A reservation from a previous boot is reclaimed by the next ADD.
    let dir = node.data_dir().join("testnet");
    std::fs::write(
        dir.join("10.43.0.77"),
        r#"{"containerId":"old","ifname":"eth0","bootId":"previous-boot"}"#,
    )
    .unwrap();
    std::fs::write(dir.join("boot_id"), "previous-boot").unwrap();
    node.cni("ADD", "c2", pod.path(), "eth1", &conf).expect_ok();
    assert!(
        !dir.join("10.43.0.77").exists(),
        "stale-boot reservation reclaimed"
    );
    node.cni("DEL", "c2", pod.path(), "eth1", &conf).expect_ok();
}
