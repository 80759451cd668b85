//! Privileged end-to-end test of `ferry-agent`'s default VXLAN backend and its masquerade rules,
//! against a real `ferry-server`, with real `ferry-cni` pods.
//!
//! ```text
//!                    switch netns: bridge br0
//!        ┌─────────────┬───────┴──────┬──────────────┐
//!   cp netns      node A netns    node B netns    ext netns
//!   10.99.0.10    10.99.0.11      10.99.0.12      10.99.0.20     (eth0, MTU 1400)
//!   ferry-server  ferry-agent     ferry-agent     "the internet"
//!                 ferry.1 + pod   ferry.1 + pod
//! ```
//!
//! A third Node, C, is a fake flannel peer: the test publishes flannel's annotations for it
//! (random-looking VTEP MAC, public IP without a machine behind it). Everything is checked with
//! independent tools: `ip -j -d link`, `bridge -j fdb`, `ip -j neigh`, `ip -j route`,
//! `ip monitor`, `iptables-save`, `iperf3`, sockets, and a raw `AF_PACKET` capture of the
//! underlay decoded with `pnet_packet` (Ethernet / IPv4 / UDP / VXLAN / inner Ethernet / IPv4).

mod common;

use common::*;
use ferry_agent::netlink::mac_string;
use ferry_agent::overlay::vxlan::vtep_mac;
use ferry_tests::{privileged, wait_until, ChildGuard, Netns, RootSnapshot};
use pnet_packet::ethernet::{EtherTypes, EthernetPacket};
use pnet_packet::ipv4::Ipv4Packet;
use pnet_packet::vxlan::VxlanPacket;
use pnet_packet::Packet as _;
use serde_json::{json, Value};
use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

const EXT_IP: &str = "10.99.0.20";
const C_IP: &str = "10.99.0.13";
const C_MAC: &str = "82:aa:bb:cc:dd:01";
const VX_MTU: u32 = UNDERLAY_MTU - 50;

fn net0(cidr: &str) -> String {
    cidr.split('/').next().unwrap().to_owned()
}

/// `(ip, mac, state)` of every neighbour entry on `ferry.1`.
fn neigh(n: &NodeEnv) -> Vec<(String, String, String)> {
    let v = n.ns.ip_json("neigh show dev ferry.1");
    let mut e: Vec<_> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["dst"].as_str().unwrap_or_default().to_owned(),
                e["lladdr"].as_str().unwrap_or_default().to_owned(),
                e["state"].to_string(),
            )
        })
        .collect();
    e.sort();
    e
}

/// `(dst, gateway, flags)` of every main-table route through `ferry.1`.
fn vx_routes(n: &NodeEnv) -> Vec<(String, String, String)> {
    let v = n.ns.ip_json("route show table main");
    let mut e: Vec<_> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["dev"] == "ferry.1")
        .map(|r| {
            assert_eq!(r["protocol"], PROTO, "{r}");
            (
                r["dst"].as_str().unwrap_or_default().to_owned(),
                r["gateway"].as_str().unwrap_or_default().to_owned(),
                r["flags"].to_string(),
            )
        })
        .collect();
    e.sort();
    e
}

/// FDB `(mac, dst)`, neighbour `(ip, mac, state)` and route `(dst, gateway, flags)` entries.
type Entries = (
    Vec<(String, String)>,
    Vec<(String, String, String)>,
    Vec<(String, String, String)>,
);

/// What node `n` must hold for `peers`: `(node name for its VTEP MAC or a literal MAC, podCIDR,
/// public IP)`.
fn want_entries(peers: &[(&str, &str, &str)]) -> Entries {
    let mut f = Vec::new();
    let mut nb = Vec::new();
    let mut r = Vec::new();
    for (mac, cidr, ip) in peers {
        f.push(((*mac).to_owned(), (*ip).to_owned()));
        nb.push((net0(cidr), (*mac).to_owned(), r#"["PERMANENT"]"#.to_owned()));
        r.push(((*cidr).to_owned(), net0(cidr), r#"["onlink"]"#.to_owned()));
    }
    f.sort();
    nb.sort();
    r.sort();
    (f, nb, r)
}

fn entries(n: &NodeEnv) -> Entries {
    (ferry1_fdb(n), neigh(n), vx_routes(n))
}

/// A decoded VXLAN frame: outer IPs, UDP ports, VNI, inner MACs, inner IPs, inner payload.
#[derive(Debug)]
struct Vxlan {
    outer_src: Ipv4Addr,
    outer_dst: Ipv4Addr,
    dport: u16,
    flags: u8,
    vni: u32,
    inner_dst_mac: [u8; 6],
    inner_src_mac: [u8; 6],
    inner_src: Ipv4Addr,
    inner_dst: Ipv4Addr,
    payload: Vec<u8>,
}

/// Decodes a captured frame: Ethernet / IPv4 / UDP / VXLAN / inner Ethernet / inner IPv4, the
/// inner payload past its 8-byte UDP header. `None` for anything else or anything truncated.
fn decode(f: &[u8]) -> Option<Vxlan> {
    let (outer_src, outer_dst, udp) = outer_udp(f)?;
    let vx = VxlanPacket::new(udp.payload())?;
    let inner = EthernetPacket::new(vx.payload())?;
    if inner.get_ethertype() != EtherTypes::Ipv4 {
        return None;
    }
    let iip = Ipv4Packet::new(inner.payload())?;
    Some(Vxlan {
        outer_src,
        outer_dst,
        dport: udp.get_destination(),
        flags: vx.get_flags(),
        vni: vx.get_vni(),
        inner_dst_mac: inner.get_destination().octets(),
        inner_src_mac: inner.get_source().octets(),
        inner_src: iip.get_source(),
        inner_dst: iip.get_destination(),
        payload: iip.payload().get(8..)?.to_vec(),
    })
}

/// The packet counter of the MASQUERADE rule in `FERRY-POSTROUTING`.
fn masq_packets(n: &NodeEnv) -> u64 {
    let save = n.ns.sh("iptables-save -c -t nat");
    let line = save
        .lines()
        .find(|l| l.contains("-A FERRY-POSTROUTING") && l.contains("MASQUERADE"))
        .unwrap_or_else(|| panic!("no MASQUERADE rule:\n{save}"));
    line.trim_start_matches('[')
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn annotate(cp: &ControlPlane, node: &str, ann: Value) {
    cp.api(
        "PATCH",
        &format!("/api/v1/nodes/{node}"),
        Some((
            "application/merge-patch+json",
            &json!({"metadata": {"annotations": ann}}),
        )),
        200,
    );
}

fn flannel_peer(cp: &ControlPlane, mac: &str, ip: &str) {
    annotate(
        cp,
        "node-c",
        json!({
            "flannel.alpha.coreos.com/backend-type": "vxlan",
            "flannel.alpha.coreos.com/backend-data": format!(r#"{{"VNI":1,"VtepMAC":"{mac}"}}"#),
            "flannel.alpha.coreos.com/public-ip": ip,
            "flannel.alpha.coreos.com/kube-subnet-manager": "true",
        }),
    );
}

#[test]
fn vxlan_overlay_masquerade_wire_format_and_restart() {
    if !privileged("vxlan_overlay_masquerade_wire_format_and_restart") {
        return;
    }
    let root = RootSnapshot::take();
    let started = Instant::now();
    {
        let cp = ControlPlane::start();
        let ext = Netns::new("fex");
        plug(&cp.sw, &ext, "pex", EXT_IP);
        let mut a = NodeEnv::new(&cp, "node-a", "pa", "10.99.0.11");
        let mut b = NodeEnv::new(&cp, "node-b", "pb", "10.99.0.12");
        // No --backend: VXLAN is the default.
        a.args.clear();
        b.args.clear();
        let logs = |a: &NodeEnv, b: &NodeEnv| format!("{}\n{}", a.logs(), b.logs());
        cp.create_node("node-a", Some(&a.ip));
        cp.create_node("node-b", Some(&b.ip));
        cp.create_node("node-c", Some(C_IP));
        cp.create_node("node-d", Some("10.99.0.14"));
        flannel_peer(&cp, C_MAC, C_IP);
        a.start_agent(&cp);
        b.start_agent(&cp);
        let (ca, cb, cc) = (
            cp.wait_pod_cidr("node-a"),
            cp.wait_pod_cidr("node-b"),
            cp.wait_pod_cidr("node-c"),
        );
        let (mac_a, mac_b) = (
            mac_string(&vtep_mac("node-a")),
            mac_string(&vtep_mac("node-b")),
        );

        // 1. subnet.env: FERRY_MTU is the VXLAN MTU, the agent masquerades.
        for (n, c) in [(&a, &ca), (&b, &cb)] {
            let env = n.run_dir().join("subnet.env");
            let want = format!(
                "FERRY_NETWORK=10.244.0.0/16\nFERRY_SUBNET={}\nFERRY_MTU={VX_MTU}\nFERRY_IPMASQ=true\n",
                gateway_of(c)
            );
            assert!(
                wait_until(Duration::from_secs(15), || std::fs::read_to_string(&env)
                    .is_ok_and(|s| s == want)),
                "subnet.env of {}: {:?}\n{}",
                n.name,
                std::fs::read_to_string(&env),
                logs(&a, &b)
            );
        }

        // 2. The device: VNI 1, port 8472, no learning, MTU underlay - 50, VTEP MAC, .0/32.
        for (n, c, mac) in [(&a, &ca, &mac_a), (&b, &cb, &mac_b)] {
            let link = n.ns.ip_json("-d addr show dev ferry.1")[0].clone();
            let info = &link["linkinfo"]["info_data"];
            assert_eq!(link["linkinfo"]["info_kind"], "vxlan", "{link}");
            assert_eq!(info["id"], 1, "{link}");
            assert_eq!(info["port"], 8472, "{link}");
            assert_eq!(info["learning"], false, "{link}");
            assert_eq!(info["local"], n.ip.as_str(), "{link}");
            assert_eq!(link["mtu"], VX_MTU, "{link}");
            assert_eq!(link["address"], mac.as_str(), "{link}");
            assert!(link["flags"].to_string().contains("\"UP\""), "{link}");
            let addrs: Vec<String> = link["addr_info"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["family"] == "inet")
                .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
                .collect();
            assert_eq!(addrs, vec![format!("{}/32", net0(c))], "{link}");
        }

        // 3. Annotations (flannel's wire format) on the agents' own Nodes.
        for (n, mac) in [(&a, &mac_a), (&b, &mac_b)] {
            let ok = wait_until(Duration::from_secs(10), || {
                let ann = cp.node(&n.name)["metadata"]["annotations"].clone();
                ann["flannel.alpha.coreos.com/backend-type"] == "vxlan"
                    && ann["flannel.alpha.coreos.com/backend-data"]
                        == format!(r#"{{"VNI":1,"VtepMAC":"{mac}"}}"#).as_str()
                    && ann["flannel.alpha.coreos.com/public-ip"] == n.ip.as_str()
                    && ann["ferry.dev/mtu"] == VX_MTU.to_string().as_str()
            });
            assert!(ok, "{}: {}", n.name, cp.node(&n.name)["metadata"]);
        }

        // 4. Exactly one FDB, neighbour and route entry per peer (D has no VTEP: none).
        let want_a = want_entries(&[(&mac_b, &cb, &b.ip), (C_MAC, &cc, C_IP)]);
        let want_b = want_entries(&[(&mac_a, &ca, &a.ip), (C_MAC, &cc, C_IP)]);
        assert!(
            wait_until(Duration::from_secs(10), || entries(&a) == want_a
                && entries(&b) == want_b),
            "A {:?}\nB {:?}\n{}",
            entries(&a),
            entries(&b),
            logs(&a, &b)
        );
        assert!(a.logs().contains("node-d"), "D must be reported as skipped");

        // 5. Pods on A and B: TCP and UDP through the tunnel keep pod source IPs; egress to the
        //    external host is masqueraded to the node IP.
        let pod_a = Netns::new("fpa");
        let pod_b = Netns::new("fpb");
        let ip_a = a.add_pod(&pod_a, "pod-a");
        let ip_b = b.add_pod(&pod_b, "pod-b");
        let link = pod_a.ip_json("link show dev eth0");
        assert_eq!(link[0]["mtu"], VX_MTU, "pod MTU: {link}");
        pod_a.sh(&format!("ping -c 2 -W 2 {ip_b}"));
        let peer = |p: Option<SocketAddr>| p.map(|s| s.ip().to_string());
        assert_eq!(
            peer(tcp_peer(&pod_b, &pod_a, &ip_b, 8080)),
            Some(ip_a.clone())
        );
        assert_eq!(
            peer(tcp_peer(&pod_a, &pod_b, &ip_a, 8080)),
            Some(ip_b.clone())
        );
        assert_eq!(
            peer(udp_peer(&pod_b, &pod_a, &ip_b, 9090)),
            Some(ip_a.clone())
        );
        assert_eq!(
            peer(udp_peer(&pod_a, &pod_b, &ip_a, 9090)),
            Some(ip_b.clone())
        );
        assert_eq!(
            peer(tcp_peer(&ext, &pod_a, EXT_IP, 8081)),
            Some(a.ip.clone())
        );
        assert_eq!(
            peer(udp_peer(&ext, &pod_b, EXT_IP, 9091)),
            Some(b.ip.clone())
        );
        let save = a.ns.sh("iptables-save");
        for rule in [
            "-A POSTROUTING -j FERRY-POSTROUTING",
            "-A FORWARD -j FERRY-FORWARD",
            "-A OUTPUT -j FERRY-OUTPUT",
            "-A FERRY-POSTROUTING -s 10.244.0.0/16 -d 10.244.0.0/16 -j RETURN",
            "-A FERRY-POSTROUTING -s 10.244.0.0/16 ! -d 224.0.0.0/4 -j MASQUERADE --random-fully",
            "-A FERRY-FORWARD -s 10.244.0.0/16 -j ACCEPT",
        ] {
            assert!(save.contains(rule), "missing {rule:?}:\n{save}");
        }
        // A FORWARD policy DROP does not break pod traffic (FERRY-FORWARD accepts it).
        for n in [&a, &b] {
            n.ns.sh("iptables -P FORWARD DROP");
        }
        assert_eq!(
            peer(tcp_peer(&pod_b, &pod_a, &ip_b, 8082)),
            Some(ip_a.clone())
        );

        // 6. On the wire (captured on B's underlay): VXLAN, VNI 1, outer = node IPs, inner = pod
        //    IPs and VTEP MACs; the MASQUERADE rule never matched any of it.
        let masq_before = masq_packets(&a);
        let target: SocketAddr = format!("{ip_b}:7777").parse().unwrap();
        let v = capture_marked(&b.ns, &pod_a, target, b"ferry-wire-marker", decode, |v| {
            &v.payload
        })
        .expect("no VXLAN frame with the marker on B's eth0");
        eprintln!("captured: {v:?}");
        assert_eq!(v.outer_src.to_string(), a.ip);
        assert_eq!(v.outer_dst.to_string(), b.ip);
        assert_eq!(v.dport, 8472);
        assert_eq!(v.flags, 0x08, "VXLAN I flag");
        assert_eq!(v.vni, 1);
        assert_eq!(mac_string(&v.inner_dst_mac), mac_b);
        assert_eq!(mac_string(&v.inner_src_mac), mac_a);
        assert_eq!(v.inner_src.to_string(), ip_a);
        assert_eq!(v.inner_dst.to_string(), ip_b);
        assert_eq!(
            masq_packets(&a),
            masq_before,
            "pod-to-pod / outer packets masqueraded"
        );

        // 7. Hand-deleted entries come back within the resync period.
        a.ns.sh(&format!(
            "bridge fdb del {mac_b} dev ferry.1 dst {} && ip neigh del {} dev ferry.1 && ip route del {cb}",
            b.ip,
            net0(&cb)
        ));
        // Each `del` fails (and `sh` panics) unless the entry was there and is gone; not checked
        // again after it: a resync (every 2 s) may already have restored them.
        let t = Instant::now();
        assert!(
            wait_until(Duration::from_secs(RESYNC_SECONDS + 3), || entries(&a)
                == want_a),
            "not restored: {:?}\n{}",
            entries(&a),
            a.logs()
        );
        eprintln!(
            "hand-deleted fdb/neigh/route restored after {:?}",
            t.elapsed()
        );

        // 8. A peer's MAC, then its IP change: reflected within 1 s; its deletion too.
        let new_mac = "82:aa:bb:cc:dd:02";
        let t = Instant::now();
        flannel_peer(&cp, new_mac, C_IP);
        let want = want_entries(&[(&mac_b, &cb, &b.ip), (new_mac, &cc, C_IP)]);
        assert!(
            wait_until(Duration::from_secs(1), || entries(&a) == want),
            "MAC change: {:?}",
            entries(&a)
        );
        eprintln!("peer MAC change applied after {:?}", t.elapsed());
        let t = Instant::now();
        flannel_peer(&cp, new_mac, "10.99.0.33");
        let want = want_entries(&[(&mac_b, &cb, &b.ip), (new_mac, &cc, "10.99.0.33")]);
        assert!(
            wait_until(Duration::from_secs(1), || entries(&a) == want),
            "IP change: {:?}",
            entries(&a)
        );
        eprintln!("peer IP change applied after {:?}", t.elapsed());
        let t = Instant::now();
        cp.delete_node("node-c");
        let want = want_entries(&[(&mac_b, &cb, &b.ip)]);
        assert!(
            wait_until(Duration::from_secs(1), || entries(&a) == want
                && entries(&b) == want_entries(&[(&mac_a, &ca, &a.ip)])),
            "delete: A {:?} B {:?}\n{}",
            entries(&a),
            entries(&b),
            logs(&a, &b)
        );
        eprintln!("deleted node's entries gone after {:?}", t.elapsed());

        // 9. kill -9 + restart of A's agent during an iperf3 transfer A -> B: the transfer
        //    completes and nothing on ferry.1 is touched (no link, route or neighbour event).
        let ifindex = a.ns.ip_json("link show dev ferry.1")[0]["ifindex"].clone();
        let mut monitor =
            a.ns.command("ip")
                .args(["-o", "monitor", "link", "route", "neigh", "address"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
        let _server = ChildGuard(
            pod_b
                .command("iperf3")
                .args(["-s", "-1", "-p", "5201"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        std::thread::sleep(Duration::from_millis(300));
        let client = pod_a
            .command("iperf3")
            .args(["-c", &ip_b, "-p", "5201", "-t", "4", "-J"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_secs(1));
        a.kill_agent();
        std::thread::sleep(Duration::from_millis(300));
        a.start_agent(&cp);
        let out = client.wait_with_output().unwrap();
        assert!(out.status.success(), "iperf3: {out:?}");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let bps = report["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap();
        eprintln!(
            "iperf3 across the restart: {:.0} Mbit/s, {} retransmits",
            bps / 1e6,
            report["end"]["sum_sent"]["retransmits"]
        );
        assert!(bps > 0.0 && report.get("error").is_none(), "{report}");
        // Let the restarted agent run a few rounds, then read what changed on ferry.1.
        std::thread::sleep(Duration::from_secs(RESYNC_SECONDS * 2));
        assert_eq!(
            a.ns.ip_json("link show dev ferry.1")[0]["ifindex"],
            ifindex,
            "ferry.1 recreated"
        );
        let _ = monitor.kill();
        let mut events = String::new();
        monitor
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut events)
            .unwrap();
        let _ = monitor.wait();
        let touched: Vec<&str> = events.lines().filter(|l| l.contains("ferry.1")).collect();
        assert!(touched.is_empty(), "restart touched ferry.1:\n{events}");
        assert_eq!(entries(&a), want_entries(&[(&mac_b, &cb, &b.ip)]));
        let second = std::fs::read_to_string(a.log_path(2)).unwrap();
        assert!(
            second.contains("waiting for the complete Node list")
                && !second.contains("rules written")
                && !second.contains("created")
                && !second.contains("entry set"),
            "the restarted agent rewrote state:\n{second}"
        );

        // 10. `ferry-agent uninstall` removes chains, device and routes.
        a.kill_agent();
        let out = a.ns.command(AGENT).arg("uninstall").output().unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(!a.ns.link_names().iter().any(|l| l == "ferry.1"));
        let save = a.ns.sh("iptables-save");
        assert!(!save.contains("FERRY"), "{save}");
        assert!(a.ns.sh("ip route show proto 78").trim().is_empty());
        eprintln!("{}", logs(&a, &b));
    }
    root.assert_unchanged();
    eprintln!("vxlan test took {:?}", started.elapsed());
}
