//! Property tests of what ferry-cni and libcni parse from the container runtime and the agent:
//! the network configuration on stdin (with its IPAM ranges), a conflist, the `CNI_*` environment,
//! `CNI_ARGS`, the CNI version, and the node network file ferry-agent writes. Arbitrary input is
//! answered with a value or a CNI error, never a panic; `CNI_ARGS` and the node network file
//! print back to what was parsed. `PROPTEST_CASES` sets the cases per property (default 256).

use ferry_cni::config::{NetConf, NodeNetwork};
use ferry_cni::env::{parse_cni_args, CniEnv, Command};
use ferry_libcni::runtime::ConfList;
use ferry_libcni::version::Version;
use ipnetwork::IpNetwork;
use proptest::prelude::*;
use serde_json::{json, Value};

/// Address-ish strings: valid and broken IPv4/IPv6 addresses and prefixes.
fn addr_text() -> impl Strategy<Value = String> {
    prop_oneof![
        (any::<[u8; 4]>(), 0..40u8)
            .prop_map(|(a, p)| format!("{}.{}.{}.{}/{p}", a[0], a[1], a[2], a[3])),
        any::<[u8; 4]>().prop_map(|a| format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])),
        (any::<u128>(), 0..140u8).prop_map(|(a, p)| format!("{}/{p}", std::net::Ipv6Addr::from(a))),
        any::<u128>().prop_map(|a| std::net::Ipv6Addr::from(a).to_string()),
        prop::sample::select(vec![
            "10.0.0.0/30",
            "10.0.0.0/31",
            "10.0.0.0/32",
            "0.0.0.0/0",
            "10.0.0.1",
            "10.0.0.3",
            "10.0.0.255",
            "255.255.255.255/32",
            "::/0",
            "::/128",
            "::1",
            "fd00::/126",
            "fd00::3",
            "",
            "x",
            "10.0.0.0/",
            "/24",
            "10.0.0.0/24/1",
        ])
        .prop_map(str::to_owned),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0..70000u32).prop_map(Value::from),
        addr_text().prop_map(Value::from),
        prop::sample::select(vec![
            "0.3.0",
            "0.3.1",
            "0.4.0",
            "1.0.0",
            "1.1.0",
            "2.0.0",
            "ferry-cni",
            "host-local",
            "static",
            "br0",
            "cni0",
            "eth0",
            "/tmp/x",
        ])
        .prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
    ]
}

/// A range object of `ipam.ranges`.
fn range() -> impl Strategy<Value = Value> {
    (
        addr_text(),
        prop::option::of(addr_text()),
        prop::option::of(addr_text()),
        prop::option::of(addr_text()),
    )
        .prop_map(|(subnet, start, end, gw)| {
            let mut r = json!({"subnet": subnet});
            if let Some(s) = start {
                r["rangeStart"] = s.into();
            }
            if let Some(e) = end {
                r["rangeEnd"] = e.into();
            }
            if let Some(g) = gw {
                r["gateway"] = g.into();
            }
            r
        })
}

/// A network configuration: the fields ferry-cni reads, each either plausible or arbitrary.
fn net_conf() -> impl Strategy<Value = Value> {
    let ipam = (
        range(),
        prop::collection::vec(prop::collection::vec(range(), 0..3), 0..3),
        prop::collection::vec((addr_text(), prop::option::of(addr_text())), 0..3),
        scalar(),
        any::<bool>(),
    )
        .prop_map(|(single, sets, routes, ty, use_sets)| {
            let mut ipam = if use_sets {
                json!({"ranges": sets})
            } else {
                single
            };
            ipam["type"] = ty;
            ipam["routes"] = routes
                .into_iter()
                .map(|(dst, gw)| match gw {
                    Some(gw) => json!({"dst": dst, "gw": gw}),
                    None => json!({"dst": dst}),
                })
                .collect();
            ipam
        });
    let fields = prop::collection::vec(
        (
            prop::sample::select(vec![
                "cniVersion",
                "name",
                "type",
                "bridge",
                "isGateway",
                "isDefaultGateway",
                "mtu",
                "hairpinMode",
                "ipMasq",
                "nodeNetworkFile",
                "dataDir",
                "prevResult",
                "runtimeConfig",
                "args",
                "capabilities",
                "cniVersions",
                "plugins",
            ]),
            scalar(),
        ),
        0..8,
    );
    (fields, prop::option::of(ipam), any::<bool>()).prop_map(|(fields, ipam, base)| {
        let mut c = if base {
            json!({"cniVersion": "1.0.0", "name": "n", "type": "ferry-cni"})
        } else {
            json!({})
        };
        for (k, v) in fields {
            c[k] = v;
        }
        if let Some(i) = ipam {
            c["ipam"] = i;
        }
        c
    })
}

proptest! {
    #[test]
    fn network_configs_never_panic(conf in net_conf()) {
        let bytes = serde_json::to_vec(&conf).unwrap();
        let _ = NetConf::parse(&bytes);
        let _ = NetConf::version_of(&conf);
        let _ = ConfList::parse(&bytes);
        let list = json!({"cniVersion": conf["cniVersion"], "name": "l", "plugins": [conf]});
        let _ = ConfList::parse(&serde_json::to_vec(&list).unwrap());
    }

    #[test]
    fn arbitrary_stdin_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        let _ = NetConf::parse(&bytes);
        let _ = ConfList::parse(&bytes);
    }

    #[test]
    fn the_environment_never_panics(
        vars in prop::collection::btree_map(
            prop::sample::select(vec![
                "CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS",
                "CNI_PATH", "FERRY_CNI_FAULT",
            ]),
            prop_oneof![
                prop::sample::select(vec![
                    "ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS", "add", "abc", "eth0",
                    "/var/run/netns/x", "/opt/cni/bin:/usr/lib/cni", "a=b;c=d", "", "lo",
                    "0123456789abcdef", "after-veth",
                ])
                .prop_map(str::to_owned),
                ".{0,20}",
            ],
            0..7,
        )
    ) {
        let _ = CniEnv::from_lookup(|k| vars.get(k).cloned());
        if let Some(c) = vars.get("CNI_COMMAND") {
            let _ = Command::parse(c);
        }
        let _ = Version::parse_supported(vars.get("CNI_IFNAME").map_or("", String::as_str));
    }

    #[test]
    fn cni_args_round_trip(
        args in prop::collection::btree_map("[A-Za-z_][A-Za-z0-9_]{0,10}", "[^;=]{0,12}", 0..5),
        junk in ".{0,30}",
    ) {
        let _ = parse_cni_args(&junk);
        let text: Vec<String> = args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        prop_assert_eq!(parse_cni_args(&text.join(";")).ok(), Some(args));
    }

    #[test]
    fn node_network_files_never_panic(
        lines in prop::collection::vec(
            (
                prop::sample::select(vec![
                    "FERRY_NETWORK", "FERRY_SUBNET", "FERRY_MTU", "FERRY_IPMASQ",
                    "FLANNEL_SUBNET", "FLANNEL_MTU", "# FERRY_SUBNET", "", "X",
                ]),
                prop_oneof![addr_text(), (0..70000u32).prop_map(|m| m.to_string()), ".{0,10}"],
                prop::sample::select(vec!["=", " = ", "", "=="]),
            ),
            0..6,
        )
    ) {
        let text: String = lines.iter().map(|(k, v, eq)| format!("{k}{eq}{v}\n")).collect();
        if let Ok(n) = NodeNetwork::parse(&text) {
            let _ = n.range();
        }
    }

    #[test]
    fn node_network_files_round_trip(
        network in prop::option::of((any::<[u8; 4]>(), 0..=32u8)),
        subnet in (any::<[u8; 4]>(), 0..=32u8),
        mtu in prop::option::of(68..=65535u32),
        ipmasq in any::<bool>(),
    ) {
        let net = |(a, p): ([u8; 4], u8)| IpNetwork::new(std::net::Ipv4Addr::from(a).into(), p).unwrap();
        let n = NodeNetwork { network: network.map(net), subnet: net(subnet), mtu, ipmasq };
        prop_assert_eq!(NodeNetwork::parse(&n.render()).ok(), Some(n.clone()));
        let _ = n.range();
    }
}
