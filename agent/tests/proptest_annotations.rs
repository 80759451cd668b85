//! Property tests of what ferry-agent reads from other nodes and from the network: the Node
//! fields and flannel/ferry annotations any node may write (podCIDR(s), addresses, backend type
//! and data, public IP, MTU), and the IPv4 header of datagrams the udp backend receives. Arbitrary
//! values are answered with a value, an error or a skipped peer, never a panic; every peer the
//! backends program has a podCIDR and an address; an MTU is adopted only within bounds.
//! `PROPTEST_CASES` sets the cases per property (default 256).

use ferry_agent::node::{
    annotation_changes, desired_annotations, NodeInfo, ANN_BACKEND_DATA, ANN_BACKEND_TYPE, ANN_MTU,
    ANN_PUBLIC_IP, MTU_MAX, MTU_MIN,
};
use ferry_agent::overlay::{hostgw, udp, vxlan};
use ipnetwork::Ipv4Network;
use k8s_openapi::api::core::v1::Node;
use proptest::prelude::*;
use serde_json::json;
use std::net::Ipv4Addr;

/// Values a node might write into the fields the agent parses.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "vxlan",
            "host-gw",
            "udp",
            "",
            "10.244.1.0/24",
            "10.244.1.7/24",
            "10.244.1.0/33",
            "0.0.0.0/0",
            "10.99.0.11",
            " 10.99.0.11 ",
            "10.99.0.256",
            "fd00::1",
            "fd00::/64",
            "1450",
            "1280",
            "1279",
            "65535",
            "65536",
            "-1",
            "99999999999999999999",
            r#"{"VNI":1,"VtepMAC":"0a:58:0a:f4:01:01"}"#,
            r#"{"VNI":16777216,"VtepMAC":"0a:58:0a:f4:01:01"}"#,
            r#"{"VNI":1,"VtepMAC":"01:00:00:00:00:00"}"#,
            r#"{"VNI":-1}"#,
            r#"{"VNI":1.5,"VtepMAC":7}"#,
            "[]",
            "null",
            "{",
            "true",
        ])
        .prop_map(str::to_owned),
        (any::<[u8; 4]>(), 0..40u8).prop_map(|(a, p)| format!("{}/{p}", Ipv4Addr::from(a))),
        any::<[u8; 4]>().prop_map(|a| Ipv4Addr::from(a).to_string()),
        (any::<u32>(), any::<[u8; 6]>()).prop_map(|(vni, m)| {
            let mac: Vec<String> = m.iter().map(|b| format!("{b:02x}")).collect();
            format!(r#"{{"VNI":{vni},"VtepMAC":"{}"}}"#, mac.join(":"))
        }),
        ".{0,24}",
    ]
}

/// A Node as its kubelet and agent could write it, every parsed field arbitrary.
fn node(i: usize) -> impl Strategy<Value = Node> {
    (
        prop::option::of(text()),
        prop::collection::vec(text(), 0..3),
        prop::collection::vec(
            (
                prop::sample::select(vec!["InternalIP", "ExternalIP", "Hostname"]),
                text(),
            ),
            0..3,
        ),
        prop::collection::btree_map(
            prop::sample::select(vec![
                ANN_BACKEND_TYPE,
                ANN_BACKEND_DATA,
                ANN_PUBLIC_IP,
                ANN_MTU,
                "x",
            ]),
            text(),
            0..5,
        ),
    )
        .prop_map(move |(cidr, cidrs, addrs, ann)| {
            let v = json!({
                "metadata": {"name": format!("node-{i}"), "annotations": ann},
                "spec": {"podCIDR": cidr, "podCIDRs": cidrs},
                "status": {"addresses": addrs.into_iter()
                    .map(|(t, a)| json!({"type": t, "address": a}))
                    .collect::<Vec<_>>()},
            });
            serde_json::from_value(v).expect("a Node of strings")
        })
}

fn nodes() -> impl Strategy<Value = Vec<NodeInfo>> {
    (node(0), node(1), node(2), node(3))
        .prop_map(|(a, b, c, d)| [a, b, c, d].iter().map(NodeInfo::from_node).collect())
}

proptest! {
    #[test]
    fn node_annotations_never_panic_and_bounds_hold(infos in nodes()) {
        for n in &infos {
            let _ = n.vtep_checked();
            let _ = n.public_ip_problem();
            let _ = n.peer_address();
            if let Some(m) = n.mtu() {
                prop_assert!((MTU_MIN..=MTU_MAX).contains(&m), "adopted MTU {}", m);
            }
            if let Some((vni, mac)) = n.vtep() {
                prop_assert!(vni < 1 << 24);
                prop_assert!(mac[0] & 1 == 0 && mac != [0; 6], "multicast or zero VTEP MAC");
            }
            if let Some(c) = n.pod_cidr {
                prop_assert_eq!(c.ip(), c.network(), "podCIDR not normalised");
            }
        }
        // What each backend programs for node-0 from its peers.
        let routes = hostgw::desired_routes(&infos, "node-0", 2);
        prop_assert!(routes.0.values().all(|r| r.node != "node-0"));
        let _ = vxlan::desired(&infos, "node-0", 3, 2, &[]);
        let _ = vxlan::desired(&infos, "node-0", 3, 2, &["10.99.0.0/24".parse().unwrap()]);
        let _ = udp::desired(&infos, "node-0", 4);
    }

    #[test]
    fn published_annotations_are_adopted_as_published(
        backend in prop::sample::select(vec!["vxlan", "host-gw", "udp"]),
        ip in any::<[u8; 4]>(),
        mtu in any::<u32>(),
        vni in 0..(1u32 << 24),
        mac in any::<[u8; 6]>(),
    ) {
        let mac = [mac[0] & 0xfe | 0x02, mac[1], mac[2], mac[3], mac[4], mac[5]];
        let data = format!(
            r#"{{"VNI":{vni},"VtepMAC":"{}"}}"#,
            mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
        );
        let want = desired_annotations(backend, Some(Ipv4Addr::from(ip)), Some(&data), Some(mtu));
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n", "annotations": want},
        })).unwrap();
        let info = NodeInfo::from_node(&node);
        prop_assert!(annotation_changes(&info.annotations, &want).is_empty());
        prop_assert_eq!(info.public_ip, Some(Ipv4Addr::from(ip)));
        prop_assert_eq!(info.mtu(), Some(mtu).filter(|m| (MTU_MIN..=MTU_MAX).contains(m)));
        prop_assert_eq!(info.vtep().map(|(v, m)| (v, m.0)), (backend == "vxlan").then_some((vni, mac)));
    }

    #[test]
    fn received_datagrams_never_panic(
        pkt in prop::collection::vec(any::<u8>(), 0..80),
        version_ihl in any::<u8>(),
        from in any::<[u8; 4]>(),
    ) {
        let table = udp::Table::new(
            Some("10.244.0.0/24".parse::<Ipv4Network>().unwrap()),
            &[("10.244.1.0/24".parse().unwrap(), Ipv4Addr::new(10, 99, 0, 12))],
        );
        for p in [pkt.clone(), {
            let mut p = pkt;
            if let Some(b) = p.first_mut() {
                *b = version_ihl;
            }
            p
        }] {
            if let Some((src, dst)) = udp::ipv4_addrs(&p) {
                prop_assert!(p.len() >= 20);
                let _ = table.accept(Ipv4Addr::from(from), src, dst);
                let _ = table.next_hop(dst);
            }
        }
    }
}
