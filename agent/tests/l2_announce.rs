//! Privileged test of the L2 announcer (`ferry_agent::service::l2::Announcer`) in namespaces this
//! test creates (removed by their `Drop` guards, also on panic): a switch namespace with a bridge,
//! two "node" namespaces running only the announcer on their `eth0`, and an external host. The
//! external host resolves the LoadBalancer address to node A's MAC (A answers ARP, B stays
//! silent, neither has the address); A stops and B takes the address over: B's gratuitous ARP
//! moves the external host's neighbour entry to B's MAC within seconds, and B answers requests.
//! Checked with `ip -j neigh` / `ip -j link`, not with the code under test.

#![forbid(unsafe_code)]

use ferry_agent::service::l2::Announcer;
use ferry_tests::{privileged, veth, Netns, RootSnapshot};
use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

const LB: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 200);

fn mac_of(ns: &Netns, dev: &str) -> String {
    ns.ip_json(&format!("link show {dev}"))[0]["address"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The external host's neighbour entry for the LB address: (lladdr, states), if any.
fn neigh(ext: &Netns) -> Option<(String, String)> {
    let v = ext.ip_json(&format!("neigh show {LB} dev eth0"));
    let e = v.as_array()?.first()?;
    Some((
        e["lladdr"].as_str().unwrap_or_default().to_owned(),
        e["state"].to_string(),
    ))
}

/// Sends one UDP datagram to the LB address from the external host (makes its kernel resolve
/// the address with ARP, as any client would).
fn poke(ext: &Netns) {
    ext.run(|| {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        // EHOSTUNREACH after a failed resolution is fine: only the neighbour entry matters.
        let _ = s.send_to(b"x", (LB, 9));
    });
}

#[test]
fn owner_answers_arp_and_failover_moves_the_neighbour_entry() {
    if !privileged("owner_answers_arp_and_failover_moves_the_neighbour_entry") {
        return;
    }
    let root = RootSnapshot::take();
    let sw = Netns::new("fl2sw");
    let a = Netns::new("fl2a");
    let b = Netns::new("fl2b");
    let ext = Netns::new("fl2x");
    sw.sh("ip link add br0 type bridge && ip link set br0 up");
    for (ns, port, addr) in [
        (&a, "pa", "10.77.0.11/24"),
        (&b, "pb", "10.77.0.12/24"),
        (&ext, "px", "10.77.0.254/24"),
    ] {
        veth(ns, "eth0", &sw, port);
        sw.sh(&format!(
            "ip link set {port} master br0 && ip link set {port} up"
        ));
        ns.sh(&format!(
            "ip addr add {addr} dev eth0 && ip link set eth0 up"
        ));
    }
    let (mac_a, mac_b) = (mac_of(&a, "eth0"), mac_of(&b, "eth0"));
    assert_ne!(mac_a, mac_b);

    let ann_a = a.run(|| Announcer::start("eth0")).expect("announcer on A");
    let ann_b = b.run(|| Announcer::start("eth0")).expect("announcer on B");
    assert_eq!(
        fmt_mac(ann_a.mac()),
        mac_a,
        "the announcer reads its interface's MAC"
    );
    ann_a.set([LB].into());
    ann_b.set([].into());

    // The external host resolves the address to A (only A answers).
    let resolved = ferry_tests::wait_until(Duration::from_secs(5), || {
        poke(&ext);
        neigh(&ext).is_some_and(|(mac, _)| mac == mac_a)
    });
    assert!(
        resolved,
        "LB address not resolved to A ({mac_a}): {:?}",
        neigh(&ext)
    );
    // Neither node holds the address: the answer came from the announcer, not the kernel.
    for ns in [&a, &b] {
        let addrs = ns.sh("ip -4 -o addr show");
        assert!(!addrs.contains("10.77.0.200"), "{addrs}");
    }

    // Failover: A stops, B becomes the owner; B's gratuitous ARPs move the entry.
    drop(ann_a);
    let t0 = std::time::Instant::now();
    ann_b.set([LB].into());
    let moved = ferry_tests::wait_until(Duration::from_secs(5), || {
        neigh(&ext).is_some_and(|(mac, _)| mac == mac_b)
    });
    assert!(
        moved,
        "neighbour entry did not move to B ({mac_b}): {:?}",
        neigh(&ext)
    );
    eprintln!(
        "neighbour entry moved to B {:?} after B took over",
        t0.elapsed()
    );

    // A fresh resolution goes to B too (B answers requests, A is gone).
    ext.sh(&format!("ip neigh flush to {LB} dev eth0"));
    let again = ferry_tests::wait_until(Duration::from_secs(5), || {
        poke(&ext);
        neigh(&ext).is_some_and(|(mac, _)| mac == mac_b)
    });
    assert!(again, "LB address not resolved to B: {:?}", neigh(&ext));

    // B no longer owns it: nobody answers (the entry fails to resolve).
    ann_b.set([].into());
    ext.sh(&format!("ip neigh flush to {LB} dev eth0"));
    poke(&ext);
    std::thread::sleep(Duration::from_secs(4));
    let left = neigh(&ext);
    assert!(
        left.as_ref().is_none_or(|(mac, _)| mac.is_empty()),
        "someone still answers: {left:?} (A {mac_a}, B {mac_b})"
    );
    drop(ann_b);
    drop((sw, a, b, ext));
    root.assert_unchanged();
}
