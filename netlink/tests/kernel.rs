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
    let mut events = ns.run(|| LinkEvents::subscribe().expect("subscribe"));
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
