//! Privileged end-to-end test of `ferry-agent --backend udp` (TUN device `ferry.udp`, userspace
//! datapath, flannel's `udp` wire format) against a real `ferry-server`, with real `ferry-cni`
//! pods.
//!
//! ```text
//!                    switch netns: bridge br0
//!        ┌─────────────┬───────┴──────┐
//!   cp netns      node A netns    node B netns
//!   10.99.0.10    10.99.0.11      10.99.0.12      (eth0, MTU 1400)
//!   ferry-server  ferry-agent     ferry-agent
//!                 ferry.udp+pod   ferry.udp+pod
//! ```
//!
//! Node C only exists as an object (udp annotations, no machine) so its route can come and go;
//! node D runs "vxlan" and must be skipped. Checked with independent tools: `ip -j -d link`,
//! `ip -j route`, ping, sockets, and a raw `AF_PACKET` capture of B's underlay.

mod common;

use common::*;
use ferry_tests::{privileged, wait_until, Netns, RootSnapshot};
use serde_json::{json, Value};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::time::{Duration, Instant};

const TUN_MTU: u32 = UNDERLAY_MTU - 28;
const C_IP: &str = "10.99.0.13";

fn net0(cidr: &str) -> String {
    cidr.split('/').next().unwrap().to_owned()
}

/// Our routes through `ferry.udp`: `(dst, gateway, dev)`.
fn udp_routes(n: &NodeEnv) -> Vec<(String, String, String)> {
    n.ferry_routes()
}

fn want_routes(cidrs: &[&str]) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = cidrs
        .iter()
        .map(|c| ((*c).to_owned(), String::new(), "ferry.udp".to_owned()))
        .collect();
    v.sort();
    v
}

/// UDP datagram from `client` to `addr:port` served in `server`: the source the server saw.
fn udp_peer(server: &Netns, client: &Netns, addr: &str, port: u16) -> Option<SocketAddr> {
    let sock = server.run(|| UdpSocket::bind(("0.0.0.0", port)).unwrap());
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let target: SocketAddr = format!("{addr}:{port}").parse().unwrap();
    client.run(|| {
        let c = UdpSocket::bind("0.0.0.0:0").unwrap();
        c.send_to(b"ferry-udp", target).unwrap();
    });
    let mut buf = [0u8; 64];
    let (n, from) = sock.recv_from(&mut buf).ok()?;
    (buf[..n] == *b"ferry-udp").then_some(from)
}

/// A decoded tunnel frame: outer IPs and UDP ports, then the inner IPv4 packet (the whole UDP
/// payload, flannel's udp format).
#[derive(Debug)]
struct Tunnel {
    outer_src: Ipv4Addr,
    outer_dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    udp_len: usize,
    inner_len: usize,
    inner_src: Ipv4Addr,
    inner_dst: Ipv4Addr,
    payload: Vec<u8>,
}

fn decode(f: &[u8]) -> Option<Tunnel> {
    let ip4 = |b: &[u8]| Ipv4Addr::new(b[0], b[1], b[2], b[3]);
    if f.len() < 14 + 20 + 8 + 20 + 8 || f[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &f[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[9] != 17 {
        return None;
    }
    let udp = &ip[ihl..];
    let inner = &udp[8..];
    if inner[0] >> 4 != 4 {
        return None;
    }
    let iihl = usize::from(inner[0] & 0x0f) * 4;
    Some(Tunnel {
        outer_src: ip4(&ip[12..16]),
        outer_dst: ip4(&ip[16..20]),
        sport: u16::from_be_bytes([udp[0], udp[1]]),
        dport: u16::from_be_bytes([udp[2], udp[3]]),
        udp_len: usize::from(u16::from_be_bytes([udp[4], udp[5]])),
        inner_len: usize::from(u16::from_be_bytes([inner[2], inner[3]])),
        inner_src: ip4(&inner[12..16]),
        inner_dst: ip4(&inner[16..20]),
        payload: inner.get(iihl + 8..)?.to_vec(),
    })
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

#[test]
fn udp_backend_tun_routes_wire_format_and_restart() {
    if !privileged("udp_backend_tun_routes_wire_format_and_restart") {
        return;
    }
    let root = RootSnapshot::take();
    let started = Instant::now();
    {
        let cp = ControlPlane::start();
        let mut a = NodeEnv::new(&cp, "node-a", "pa", "10.99.0.11");
        let mut b = NodeEnv::new(&cp, "node-b", "pb", "10.99.0.12");
        for n in [&mut a, &mut b] {
            n.args = vec!["--backend".into(), "udp".into()];
        }
        let logs = |a: &NodeEnv, b: &NodeEnv| format!("{}\n{}", a.logs(), b.logs());
        cp.create_node("node-a", Some(&a.ip));
        cp.create_node("node-b", Some(&b.ip));
        cp.create_node("node-c", Some(C_IP));
        cp.create_node("node-d", Some("10.99.0.14"));
        annotate(
            &cp,
            "node-c",
            json!({"flannel.alpha.coreos.com/backend-type": "udp",
                   "flannel.alpha.coreos.com/public-ip": C_IP}),
        );
        annotate(
            &cp,
            "node-d",
            json!({"flannel.alpha.coreos.com/backend-type": "vxlan"}),
        );
        a.start_agent(&cp);
        b.start_agent(&cp);
        let (ca, cb, cc) = (
            cp.wait_pod_cidr("node-a"),
            cp.wait_pod_cidr("node-b"),
            cp.wait_pod_cidr("node-c"),
        );

        // 1. subnet.env: the pods' MTU is the underlay's minus 28.
        for (n, c) in [(&a, &ca), (&b, &cb)] {
            let env = n.run_dir().join("subnet.env");
            let want = format!(
                "FERRY_NETWORK=10.244.0.0/16\nFERRY_SUBNET={}\nFERRY_MTU={TUN_MTU}\nFERRY_IPMASQ=true\n",
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

        // 2. Annotations: backend-type udp, public-ip.
        for n in [&a, &b] {
            let ok = wait_until(Duration::from_secs(10), || {
                let ann = cp.node(&n.name)["metadata"]["annotations"].clone();
                ann["flannel.alpha.coreos.com/backend-type"] == "udp"
                    && ann["flannel.alpha.coreos.com/public-ip"] == n.ip.as_str()
                    && ann["ferry.dev/mtu"] == TUN_MTU.to_string().as_str()
            });
            assert!(ok, "{}: {}", n.name, cp.node(&n.name)["metadata"]);
        }

        // 3. One route per udp peer (C included, D running vxlan skipped).
        assert!(
            wait_until(Duration::from_secs(10), || udp_routes(&a)
                == want_routes(&[&cb, &cc])
                && udp_routes(&b) == want_routes(&[&ca, &cc])),
            "A {:?}\nB {:?}\n{}",
            udp_routes(&a),
            udp_routes(&b),
            logs(&a, &b)
        );
        assert!(a.logs().contains("node-d"), "D must be reported as skipped");

        // 4. The device: a persistent multi-queue TUN without packet info, MTU underlay - 28, up,
        //    the podCIDR's .0/32.
        for (n, c) in [(&a, &ca), (&b, &cb)] {
            let link = n.ns.ip_json("-d addr show dev ferry.udp")[0].clone();
            eprintln!("{}: {link}", n.name);
            let info = &link["linkinfo"]["info_data"];
            assert_eq!(link["linkinfo"]["info_kind"], "tun", "{link}");
            assert_eq!(info["type"], "tun", "{link}");
            assert_eq!(info["pi"], false, "{link}");
            assert_eq!(info["multi_queue"], true, "{link}");
            assert_eq!(info["persist"], true, "{link}");
            assert_eq!(info["vnet_hdr"], true, "offloads on: {link}");
            assert_eq!(link["mtu"], TUN_MTU, "{link}");
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

        // 5. Pods on A and B: ping, TCP and UDP in both directions with pod source IPs.
        let pod_a = Netns::new("fpa");
        let pod_b = Netns::new("fpb");
        let ip_a = a.add_pod(&pod_a, "pod-a");
        let ip_b = b.add_pod(&pod_b, "pod-b");
        let link = pod_a.ip_json("link show dev eth0");
        assert_eq!(link[0]["mtu"], TUN_MTU, "pod MTU: {link}");
        pod_a.sh(&format!("ping -c 2 -W 2 {ip_b}"));
        pod_b.sh(&format!("ping -c 2 -W 2 {ip_a}"));
        // Full-size packets (DF set) fit through the tunnel.
        pod_a.sh(&format!("ping -c 2 -W 2 -M do -s {} {ip_b}", TUN_MTU - 28));
        assert!(tcp_reaches(&pod_b, &pod_a, &ip_b, 8080), "{}", logs(&a, &b));
        assert!(tcp_reaches(&pod_a, &pod_b, &ip_a, 8080), "{}", logs(&a, &b));
        let peer = |p: Option<SocketAddr>| p.map(|s| s.ip().to_string());
        assert_eq!(
            peer(udp_peer(&pod_b, &pod_a, &ip_b, 9090)),
            Some(ip_a.clone())
        );
        assert_eq!(
            peer(udp_peer(&pod_a, &pod_b, &ip_a, 9090)),
            Some(ip_b.clone())
        );
        // 8 MiB of patterned bytes over TCP arrive intact (TSO segmentation on A, GRO
        // coalescing on B: their checksums are only partly verified downstream).
        {
            use std::io::{Read as _, Write as _};
            let data: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
            let listener = pod_b.run(|| std::net::TcpListener::bind(("0.0.0.0", 8090)).unwrap());
            let reader = std::thread::spawn(move || {
                let (mut s, _) = listener.accept().unwrap();
                let mut got = Vec::new();
                s.read_to_end(&mut got).unwrap();
                got
            });
            let target: SocketAddr = format!("{ip_b}:8090").parse().unwrap();
            let sent = data.clone();
            pod_a.run(move || {
                let mut s =
                    std::net::TcpStream::connect_timeout(&target, Duration::from_secs(3)).unwrap();
                s.write_all(&sent).unwrap();
            });
            let got = reader.join().unwrap();
            assert!(
                got == data,
                "stream corrupted: {} of {} bytes",
                got.len(),
                data.len()
            );
        }
        // Host to remote pod: sourced from the TUN's .0 address, answered through the tunnel.
        a.ns.sh(&format!("ping -c 1 -W 2 {ip_b}"));

        // 6. On the wire (B's underlay): UDP from A:8285 to B:8285 whose payload is exactly the
        //    inner IPv4 packet between the pod IPs.
        let fd = raw_socket(&b.ns);
        let marker = b"ferry-udp-wire-marker";
        let target: SocketAddr = format!("{ip_b}:7777").parse().unwrap();
        let capture = std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(5);
            let mut buf = vec![0u8; 65536];
            while Instant::now() < end {
                // SAFETY: buf is a valid writable buffer of buf.len() bytes, fd is open.
                let n =
                    unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n <= 0 {
                    continue;
                }
                if let Some(v) = decode(&buf[..n as usize]) {
                    if v.payload.windows(marker.len()).any(|w| w == marker) {
                        return Some(v);
                    }
                }
            }
            None
        });
        std::thread::sleep(Duration::from_millis(100));
        pod_a.run(|| {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            for _ in 0..5 {
                s.send_to(marker, target).unwrap();
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let v = capture
            .join()
            .unwrap()
            .expect("no tunnel datagram with the marker on B's eth0");
        eprintln!("captured: {v:?}");
        assert_eq!(v.outer_src.to_string(), a.ip);
        assert_eq!(v.outer_dst.to_string(), b.ip);
        assert_eq!((v.sport, v.dport), (8285, 8285));
        assert_eq!(v.udp_len, 8 + v.inner_len, "payload = the inner packet");
        assert_eq!(v.inner_src.to_string(), ip_a);
        assert_eq!(v.inner_dst.to_string(), ip_b);

        // 7. A deleted Node's route disappears.
        let t = Instant::now();
        cp.delete_node("node-c");
        assert!(
            wait_until(Duration::from_secs(2), || udp_routes(&a)
                == want_routes(&[&cb])
                && udp_routes(&b) == want_routes(&[&ca])),
            "A {:?} B {:?}\n{}",
            udp_routes(&a),
            udp_routes(&b),
            logs(&a, &b)
        );
        eprintln!("deleted node's route gone after {:?}", t.elapsed());

        // 8. kill -9 + restart of A's agent: the persistent device, its address and the routes
        //    survive (same ifindex); the new agent re-attaches and pods talk again.
        let ifindex = a.ns.ip_json("link show dev ferry.udp")[0]["ifindex"].clone();
        a.kill_agent();
        std::thread::sleep(Duration::from_millis(300));
        let link = a.ns.ip_json("-d link show dev ferry.udp")[0].clone();
        assert_eq!(link["ifindex"], ifindex, "device gone without its agent");
        assert_eq!(
            udp_routes(&a),
            want_routes(&[&cb]),
            "routes gone without the agent"
        );
        a.start_agent(&cp);
        let t = Instant::now();
        assert!(
            wait_until(Duration::from_secs(10), || tcp_reaches(
                &pod_b, &pod_a, &ip_b, 8081
            )),
            "{}",
            a.logs()
        );
        eprintln!("pod to pod again {:?} after the restart", t.elapsed());
        assert!(tcp_reaches(&pod_a, &pod_b, &ip_a, 8081), "{}", a.logs());
        pod_a.sh(&format!("ping -c 1 -W 2 {ip_b}"));
        std::thread::sleep(Duration::from_secs(RESYNC_SECONDS));
        assert_eq!(
            a.ns.ip_json("link show dev ferry.udp")[0]["ifindex"],
            ifindex,
            "ferry.udp recreated"
        );
        assert_eq!(udp_routes(&a), want_routes(&[&cb]));
        let second = std::fs::read_to_string(a.log_path(2)).unwrap();
        assert!(
            second.contains("udp datapath attached")
                && !second.contains("route installed")
                && !second.contains("address added")
                && !second.contains("recreating"),
            "the restarted agent rewrote state:\n{second}"
        );

        // 9. `ferry-agent uninstall` removes the device and the routes.
        a.kill_agent();
        let out = a.ns.command(AGENT).arg("uninstall").output().unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(!a.ns.link_names().iter().any(|l| l == "ferry.udp"));
        assert!(a.ns.sh("ip route show proto 78").trim().is_empty());
        eprintln!("{}", logs(&a, &b));
    }
    root.assert_unchanged();
    eprintln!("udp test took {:?}", started.elapsed());
}
