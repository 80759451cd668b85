//! Privileged tests of ferry-netlink against the kernel, each in a fresh network namespace,
//! checked with independent tools (`tc -j`, `ip -j`).

use ferry_netlink::{LinkEventKind, LinkEvents, Mac, Netlink, Received};
use ferry_sys::netns::NetnsFd;
use ferry_tests::{privileged, Netns};

fn netlink_in(ns: &Netns) -> Netlink {
    let fd = NetnsFd::open(ns.path()).expect("open netns");
    Netlink::new_in(&fd).expect("netlink in netns")
}

/// `tc -j qdisc show dev D` inside the namespace: the kinds of D's qdiscs.
fn tc_kinds(ns: &Netns, dev: &str) -> Vec<String> {
    let out = ns.sh(&format!("tc -j qdisc show dev {dev}"));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {out}"))
        .iter()
        .filter_map(|q| q["kind"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn clsact_qdisc_add_list_delete() {
    if !privileged("clsact_qdisc_add_list_delete") {
        return;
    }
    let ns = Netns::new("nltc");
    ns.sh("ip link add d0 type veth peer name d0p && ip link set d0 up");
    let mut nl = netlink_in(&ns);
    let d0 = nl.link_by_name("d0").unwrap().expect("d0").index;
    assert!(!tc_kinds(&ns, "d0").contains(&"clsact".to_owned()));
    assert!(!nl.del_clsact(d0).unwrap(), "nothing to delete yet");

    nl.add_clsact(d0).unwrap();
    assert!(tc_kinds(&ns, "d0").contains(&"clsact".to_owned()));
    let ours: Vec<_> = nl.qdiscs(Some(d0)).unwrap();
    let clsact = ours.iter().find(|q| q.is_clsact()).expect("listed");
    assert_eq!(
        (clsact.index, clsact.handle, clsact.parent),
        (d0, 0xffff_0000, 0xffff_fff1)
    );
    assert!(ours.iter().all(|q| q.index == d0));
    assert!(nl
        .qdiscs(None)
        .unwrap()
        .iter()
        .any(|q| q.is_clsact() && q.index == d0));
    let again = nl.add_clsact(d0).unwrap_err();
    assert!(again.is_exists(), "{again}");

    assert!(nl.del_clsact(d0).unwrap());
    assert!(!tc_kinds(&ns, "d0").contains(&"clsact".to_owned()));
    assert!(!nl.del_clsact(d0).unwrap(), "already gone");

    // An ingress qdisc holds the same slot; deleting "clsact" leaves it alone.
    ns.sh("tc qdisc add dev d0 ingress");
    assert!(nl.add_clsact(d0).unwrap_err().is_exists());
    assert!(!nl.del_clsact(d0).unwrap());
    assert!(tc_kinds(&ns, "d0").contains(&"ingress".to_owned()));
}

#[test]
fn link_events_name_new_and_deleted_links() {
    if !privileged("link_events_name_new_and_deleted_links") {
        return;
    }
    let ns = Netns::new("nlev");
    let fd = NetnsFd::open(ns.path()).expect("open netns");
    let mut events = LinkEvents::subscribe_in(&fd).expect("subscribe");
    ns.sh("ip link add ev0 type veth peer name ev0p && ip link del ev0");
    let (mut new, mut del) = (false, false);
    while !(new && del) {
        let Received::Events(evs) = events.recv().unwrap() else {
            continue;
        };
        for e in evs.into_iter().filter(|e| e.name.as_deref() == Some("ev0")) {
            match e.kind {
                LinkEventKind::New => new = true,
                LinkEventKind::Del => del = true,
            }
        }
    }
}

#[test]
fn link_mac_and_address_read_back_as_ip_shows_them() {
    if !privileged("link_mac_and_address_read_back_as_ip_shows_them") {
        return;
    }
    let ns = Netns::new("nlln");
    let mac: Mac = "02:00:00:aa:bb:01".parse().unwrap();
    ns.sh(&format!(
        "ip link add d1 address {mac} type veth peer name d1p"
    ));
    let mut nl = netlink_in(&ns);
    let l = nl.link_by_name("d1").unwrap().expect("d1");
    assert_eq!(
        (l.mac, l.kind.as_deref(), l.up),
        (Some(mac), Some("veth"), false)
    );
    nl.set_link(l.index, Some(1400), None, true).unwrap();
    nl.add_address(
        l.index,
        "10.9.0.1/32".parse::<ipnetwork::Ipv4Network>().unwrap(),
    )
    .unwrap();
    let shown = ns.ip_json("addr show dev d1");
    assert_eq!(shown[0]["address"], mac.to_string());
    assert_eq!(shown[0]["mtu"], 1400);
    assert_eq!(shown[0]["addr_info"][0]["local"], "10.9.0.1");
    assert_eq!(
        nl.ipv4_addresses(l.index).unwrap(),
        vec!["10.9.0.1/32".parse().unwrap()]
    );
    assert!(nl
        .del_address(
            l.index,
            "10.9.0.1/32".parse::<ipnetwork::Ipv4Network>().unwrap()
        )
        .unwrap());
    assert!(!nl
        .del_address(
            l.index,
            "10.9.0.1/32".parse::<ipnetwork::Ipv4Network>().unwrap()
        )
        .unwrap());
    assert!(nl.del_link(l.index).unwrap());
    assert!(!nl.del_link_by_name("d1").unwrap());
    assert_eq!(nl.link_by_name("d1").unwrap(), None);
}

#[test]
fn routes_neighbours_and_fdb_as_ip_and_bridge_show_them() {
    if !privileged("routes_neighbours_and_fdb_as_ip_and_bridge_show_them") {
        return;
    }
    use ferry_netlink::{Fdb, Route4, Vxlan, VxlanSpec};
    let ns = Netns::new("nlrt");
    ns.sh("ip link add r0 type veth peer name r0p && ip link set r0 up && ip link set r0p up && ip addr add 10.8.0.1/24 dev r0");
    let mut nl = netlink_in(&ns);
    let r0 = nl.link_by_name("r0").unwrap().expect("r0").index;

    // A route of our own protocol: added, replaced, deleted exactly once.
    let route = Route4 {
        dst: "10.9.0.0/24".parse().unwrap(),
        gw: Some("10.8.0.2".parse().unwrap()),
        oif: Some(r0),
        protocol: 42,
        priority: 0,
        onlink: false,
    };
    nl.add_route(&route, false).unwrap();
    assert!(nl.add_route(&route, false).unwrap_err().is_exists());
    let shown = ns.ip_json("route show proto 42");
    assert_eq!(shown[0]["dst"], "10.9.0.0/24");
    assert_eq!(shown[0]["gateway"], "10.8.0.2");
    let moved = Route4 {
        gw: Some("10.8.0.3".parse().unwrap()),
        ..route
    };
    nl.add_route(&moved, true).unwrap();
    assert_eq!(ns.ip_json("route show proto 42")[0]["gateway"], "10.8.0.3");
    assert!(nl.main_routes_v4().unwrap().contains(&moved));
    assert!(!nl.del_route(&route).unwrap(), "the old next hop is gone");
    assert!(nl.del_route(&moved).unwrap());
    assert_eq!(ns.ip_json("route show proto 42"), serde_json::json!([]));

    // A permanent neighbour entry.
    let mac: Mac = "02:00:00:00:00:42".parse().unwrap();
    let ip = "10.8.0.42".parse().unwrap();
    nl.set_neighbour(r0, ip, mac).unwrap();
    let neigh = ns.ip_json("neigh show dev r0 10.8.0.42");
    assert_eq!(neigh[0]["lladdr"], mac.to_string());
    assert_eq!(neigh[0]["state"][0], "PERMANENT");
    assert!(nl
        .neighbours_v4(r0)
        .unwrap()
        .iter()
        .any(|n| n.ip == ip && n.mac == Some(mac) && n.permanent));
    assert!(nl.del_neighbour(r0, ip).unwrap());
    assert!(!nl.del_neighbour(r0, ip).unwrap());

    // A VXLAN device and one FDB entry on it.
    let spec = VxlanSpec {
        name: "vx0".into(),
        vxlan: Vxlan {
            vni: 7,
            port: 4789,
            local: Some("10.8.0.1".parse().unwrap()),
            underlay: Some(r0),
            learning: false,
        },
        mtu: 1400,
        mac: "02:00:00:00:07:01".parse().unwrap(),
    };
    nl.create_vxlan(&spec).unwrap();
    let vx = nl.link_by_name("vx0").unwrap().expect("vx0");
    assert_eq!(
        (vx.vxlan, vx.mac, vx.mtu, vx.up),
        (Some(spec.vxlan), Some(spec.mac), 1400, true)
    );
    let entry = Fdb {
        mac: "02:00:00:00:07:02".parse().unwrap(),
        dst: Some("10.8.0.2".parse().unwrap()),
    };
    nl.set_fdb(vx.index, &entry).unwrap();
    let fdb = ns.sh("bridge -j fdb show dev vx0");
    let fdb: serde_json::Value = serde_json::from_str(&fdb).unwrap();
    assert!(
        fdb.as_array()
            .unwrap()
            .iter()
            .any(|e| e["mac"] == entry.mac.to_string() && e["dst"] == "10.8.0.2"),
        "{fdb}"
    );
    assert!(nl.fdb(vx.index).unwrap().contains(&entry));
    assert!(nl.del_fdb(vx.index, &entry).unwrap());
    assert!(!nl.del_fdb(vx.index, &entry).unwrap());
    assert!(!nl.fdb(vx.index).unwrap().contains(&entry));
}
