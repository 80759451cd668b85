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
//! `ip -j route`, ping, sockets, and a raw `AF_PACKET` capture of B's underlay decoded with
//! `pnet_packet` (Ethernet / IPv4 / UDP / the inner IPv4 packet).

mod common;

use common::*;
use ferry_tests::{privileged, wait_until, Netns, RootSnapshot};
use pnet_packet::ipv4::Ipv4Packet;
use pnet_packet::Packet as _;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
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

/// Decodes a captured frame: Ethernet / IPv4 / UDP whose payload is an IPv4 packet, that
/// packet's payload past its 8-byte UDP header. `None` for anything else or anything truncated.
fn decode(f: &[u8]) -> Option<Tunnel> {
    let (outer_src, outer_dst, udp) = outer_udp(f)?;
    let inner = Ipv4Packet::new(udp.payload())?;
    if inner.get_version() != 4 {
        return None;
    }
    Some(Tunnel {
        outer_src,
        outer_dst,
        sport: udp.get_source(),
        dport: udp.get_destination(),
        udp_len: usize::from(udp.get_length()),
        inner_len: usize::from(inner.get_total_length()),
        inner_src: inner.get_source(),
        inner_dst: inner.get_destination(),
        payload: inner.payload().get(8..)?.to_vec(),
    })
}

/// `GET path` from the agent's metrics endpoint (its default `127.0.0.1:9465`, the node
/// namespace's loopback): (status line, body).
fn scrape(n: &NodeEnv, path: &str) -> (String, String) {
    n.ns.run(|| {
        let addr: SocketAddr = "127.0.0.1:9465".parse().unwrap();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap().to_owned(), body.to_owned())
    })
}

/// Parses the Prometheus text format strictly: `# HELP` / `# TYPE` comments, then samples
/// `name{label="value",...} value` of a family whose TYPE came first (a histogram's samples are
/// its `_bucket`, `_sum` and `_count`), `_total` only on counters, no duplicate series. Returns
/// series -> value.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut types = BTreeMap::new();
    let mut out = BTreeMap::new();
    let ident = |s: &str| {
        !s.is_empty()
            && !s.starts_with(|c: char| c.is_ascii_digit())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect(line);
            assert!(
                ident(name) && matches!(kind, "counter" | "gauge" | "histogram"),
                "{line}"
            );
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
        assert!(ident(name), "metric name in {line:?}");
        let labels = labels
            .strip_suffix('}')
            .unwrap_or_else(|| panic!("{line:?}"));
        for l in labels.split(',').filter(|l| !l.is_empty()) {
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("{line:?}"));
            assert!(
                ident(k) && v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                "{line:?}"
            );
        }
        let histogram = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|sfx| name.strip_suffix(sfx))
            .find(|family| types.get(*family).is_some_and(|k| k == "histogram"));
        let kind = match histogram {
            Some(family) => &types[family],
            None => types
                .get(name)
                .unwrap_or_else(|| panic!("no TYPE before {line:?}")),
        };
        assert!(!name.ends_with("_total") || kind == "counter", "{line:?}");
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value in {line:?}"));
        assert!(
            out.insert(series.to_owned(), v).is_none(),
            "duplicate {line:?}"
        );
    }
    out
}

/// The node's metrics, scraped and parsed.
fn metrics(n: &NodeEnv) -> BTreeMap<String, f64> {
    let (status, body) = scrape(n, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    parse_metrics(&body)
}

/// The kernel's TX drop counter of `ferry.udp` (`ip -s`): packets routed into the device that no
/// agent queue took.
fn tun_tx_dropped(n: &NodeEnv) -> u64 {
    n.ns.ip_json("-s link show dev ferry.udp")[0]["stats64"]["tx"]["dropped"]
        .as_u64()
        .unwrap()
}

/// What the paced stream across a restart saw.
#[derive(Debug)]
struct Loss {
    sent: u64,
    received: u64,
    /// Lost datagrams in the longest gap.
    gap_packets: u64,
    /// Send-time distance between the last datagram delivered before the longest gap and the
    /// first after it.
    gap_ms: f64,
    /// From the kill to the first datagram delivered after the gap (send time).
    resumed_ms: f64,
}

/// Streams UDP from `pod_a` to `dst:9095` in `pod_b`, one datagram per ms (sequence number +
/// send time), kills A's agent `kill_at` in and starts it again at once. The stream goes on
/// for at least 3 s and until 1 s after delivery resumed (at most 10 s). A TCP connection opened
/// before the kill writes 1000 bytes every 50 ms all along; it must deliver every byte.
fn loss_across_restart(
    cp: &ControlPlane,
    a: &mut NodeEnv,
    pod_a: &Netns,
    pod_b: &Netns,
    dst: &str,
    kill_at: Duration,
) -> Loss {
    let rx = pod_b.run(|| UdpSocket::bind(("0.0.0.0", 9095)).unwrap());
    rx.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let tx = pod_a.run(|| UdpSocket::bind("0.0.0.0:0").unwrap());
    let target: SocketAddr = format!("{dst}:9095").parse().unwrap();
    let listener = pod_b.run(|| TcpListener::bind(("0.0.0.0", 8095)).unwrap());
    let tcp_target: SocketAddr = format!("{dst}:8095").parse().unwrap();
    let mut tcp_out =
        pod_a.run(|| TcpStream::connect_timeout(&tcp_target, Duration::from_secs(3)).unwrap());
    let (mut tcp_in, _) = listener.accept().unwrap();
    tcp_in
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    #[expect(
        clippy::cast_possible_truncation,
        reason = "i % 251 is below 256: a u8"
    )]
    let pattern = |i: usize| (i % 251) as u8;

    let kill_seq = Arc::new(AtomicU64::new(u64::MAX));
    let sent = Arc::new(AtomicU64::new(0));
    let resumed = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let receiver = {
        let (kill_seq, resumed, done) = (kill_seq.clone(), resumed.clone(), done.clone());
        std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            loop {
                match rx.recv(&mut buf) {
                    Ok(16) => {
                        let seq = u64::from_be_bytes(buf[..8].try_into().unwrap());
                        let us = u64::from_be_bytes(buf[8..16].try_into().unwrap());
                        if seq > kill_seq.load(Ordering::Relaxed) {
                            resumed.store(true, Ordering::Relaxed);
                        }
                        got.push((seq, us));
                    }
                    Ok(_) => {}
                    Err(_) if done.load(Ordering::Relaxed) => return got,
                    Err(_) => {}
                }
            }
        })
    };
    let sender = {
        let (sent, resumed, done) = (sent.clone(), resumed.clone(), done.clone());
        std::thread::spawn(move || {
            let mut send_us = Vec::new();
            let mut resumed_at = None;
            loop {
                let now = t0.elapsed();
                if resumed_at.is_none() && resumed.load(Ordering::Relaxed) {
                    resumed_at = Some(now);
                }
                let enough = now >= Duration::from_secs(3)
                    && resumed_at.is_some_and(|r| now >= r + Duration::from_secs(1));
                if enough || now >= Duration::from_secs(10) {
                    break;
                }
                let seq = send_us.len() as u64;
                let due = t0 + Duration::from_millis(seq);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let us = u64::try_from(t0.elapsed().as_micros()).expect("µs of a test run fit u64");
                let mut msg = [0u8; 16];
                msg[..8].copy_from_slice(&seq.to_be_bytes());
                msg[8..].copy_from_slice(&us.to_be_bytes());
                let _ = tx.send_to(&msg, target);
                send_us.push(us);
                sent.store(seq + 1, Ordering::Relaxed);
            }
            done.store(true, Ordering::Relaxed);
            send_us
        })
    };
    let writer = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut written = 0;
            while !done.load(Ordering::Relaxed) {
                let chunk: Vec<u8> = (written..written + 1000).map(pattern).collect();
                tcp_out.write_all(&chunk).unwrap();
                written += chunk.len();
                std::thread::sleep(Duration::from_millis(50));
            }
            tcp_out.shutdown(std::net::Shutdown::Write).unwrap();
            written
        })
    };
    let reader = std::thread::spawn(move || {
        let (mut got, mut stall, mut last) = (Vec::new(), Duration::ZERO, Instant::now());
        let mut buf = [0u8; 4096];
        loop {
            let n = tcp_in.read(&mut buf).expect("TCP read (30 s timeout)");
            if n == 0 {
                return (got, stall);
            }
            stall = stall.max(last.elapsed());
            last = Instant::now();
            got.extend_from_slice(&buf[..n]);
        }
    });

    std::thread::sleep(kill_at.saturating_sub(t0.elapsed()));
    let killed_us = u64::try_from(t0.elapsed().as_micros()).expect("µs of a test run fit u64");
    a.kill_agent();
    kill_seq.store(sent.load(Ordering::Relaxed), Ordering::Relaxed);
    a.start_agent(cp);
    let send_us = sender.join().unwrap();
    let written = writer.join().unwrap();
    let mut got = receiver.join().unwrap();
    let (tcp_got, stall) = reader.join().unwrap();

    // TCP: every byte, in order, including those written while the agent was down.
    assert_eq!(tcp_got.len(), written, "TCP bytes across the restart");
    assert!(
        tcp_got.iter().enumerate().all(|(i, b)| *b == pattern(i)),
        "TCP stream corrupted"
    );
    eprintln!(
        "restart: TCP connection kept, {written} bytes, longest stall {} ms",
        stall.as_millis()
    );

    got.sort_unstable();
    got.dedup();
    let seqs: BTreeSet<u64> = got.iter().map(|(s, _)| *s).collect();
    let end_us = *send_us.last().unwrap();
    let tail: Vec<u64> = (0..send_us.len() as u64)
        .filter(|s| send_us[usize::try_from(*s).unwrap()] + 500_000 >= end_us && !seqs.contains(s))
        .collect();
    assert!(
        tail.is_empty(),
        "datagrams of the last 500 ms lost after the restart: {tail:?}\n{}",
        a.logs()
    );
    let mut longest = (0, 0.0, 0);
    for w in got.windows(2) {
        let ((s1, us1), (s2, us2)) = (w[0], w[1]);
        let ms = (us2 - us1) as f64 / 1000.0;
        if s2 > s1 + 1 && ms > longest.1 {
            longest = (s2 - s1 - 1, ms, us2);
        }
    }
    Loss {
        sent: send_us.len() as u64,
        received: seqs.len() as u64,
        gap_packets: longest.0,
        gap_ms: longest.1,
        resumed_ms: longest.2.saturating_sub(killed_us) as f64 / 1000.0,
    }
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

        // 5b. Metrics on each node's loopback: the format parses, the datapath counters grew
        //     by at least what pod A sent to pod B, the agent-wide gauges are right.
        assert_eq!(
            scrape(&a, "/healthz"),
            ("HTTP/1.1 200 OK".into(), "ok".into())
        );
        assert!(scrape(&a, "/nope").0.starts_with("HTTP/1.1 404"));
        let (ma, mb) = (metrics(&a), metrics(&b));
        const N: u64 = 300;
        let sink = pod_b.run(|| UdpSocket::bind(("0.0.0.0", 9091)).unwrap());
        sink.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let target: SocketAddr = format!("{ip_b}:9091").parse().unwrap();
        // Read while sending: 300 unread datagrams would overflow the default receive buffer.
        let counter = std::thread::spawn(move || {
            let mut arrived = 0;
            while arrived < N && sink.recv(&mut [0u8; 200]).is_ok() {
                arrived += 1;
            }
            arrived
        });
        pod_a.run(|| {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            for i in 0..N {
                s.send_to(&[0u8; 100], target).unwrap();
                if i % 50 == 49 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        let arrived = counter.join().unwrap();
        let (ma2, mb2) = (metrics(&a), metrics(&b));
        let grew = |m0: &BTreeMap<String, f64>, m1: &BTreeMap<String, f64>, k: &str| m1[k] - m0[k];
        let (tx, rx) = (
            grew(&ma, &ma2, "ferry_udp_tx_packets_total"),
            grew(&mb, &mb2, "ferry_udp_rx_packets_total"),
        );
        eprintln!("metrics: {N} datagrams sent, {arrived} arrived, A tx +{tx}, B rx +{rx}");
        let changed = |m0: &BTreeMap<String, f64>, m1: &BTreeMap<String, f64>| {
            m1.iter()
                .filter(|(k, v)| m0.get(*k) != Some(*v))
                .map(|(k, v)| format!("{k} {} -> {v}", m0.get(k).copied().unwrap_or(0.0)))
                .collect::<Vec<_>>()
        };
        eprintln!("A: {:#?}\nB: {:#?}", changed(&ma, &ma2), changed(&mb, &mb2));
        assert_eq!(arrived, N, "datagrams lost pod A -> pod B");
        assert!(tx >= N as f64 && rx >= N as f64, "A tx +{tx}, B rx +{rx}");
        // Inner packets of 20 + 8 + 100 bytes.
        assert!(grew(&ma, &ma2, "ferry_udp_tx_bytes_total") >= (N * 128) as f64);
        assert!(grew(&mb, &mb2, "ferry_udp_rx_bytes_total") >= (N * 128) as f64);
        for (m, node) in [(&ma2, "node-a"), (&mb2, "node-b")] {
            let info = format!(
                "ferry_agent_info{{backend=\"udp\",node=\"{node}\",version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            );
            assert_eq!(m.get(&info), Some(&1.0), "{m:?}");
            // Peers: the other node and C programmed, D (vxlan) skipped.
            assert_eq!(m["ferry_agent_peers{state=\"programmed\"}"], 2.0, "{m:?}");
            assert_eq!(m["ferry_agent_peers{state=\"skipped\"}"], 1.0, "{m:?}");
            assert!(m["ferry_agent_reconcile_total"] >= 1.0, "{m:?}");
            for reason in ["no_route", "rejected", "error"] {
                let k = format!("ferry_udp_dropped_packets_total{{reason=\"{reason}\"}}");
                assert!(m.contains_key(&k), "{k} missing: {m:?}");
            }
            let k = "ferry_udp_device_dropped_packets_total{direction=\"tx\"}";
            assert!(m.contains_key(k), "{m:?}");
        }

        // 6. On the wire (B's underlay): UDP from A:8285 to B:8285 whose payload is exactly the
        //    inner IPv4 packet between the pod IPs.
        let target: SocketAddr = format!("{ip_b}:7777").parse().unwrap();
        let v = capture_marked(
            &b.ns,
            &pod_a,
            target,
            b"ferry-udp-wire-marker",
            decode,
            |v| &v.payload,
        )
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

        // 8a. Loss across kill -9 + immediate restart of A's agent (userspace datapath: while no
        //     agent is attached, what is routed into ferry.udp is dropped). Traffic must resume
        //     and TCP survive; the figures are printed.
        let dropped = tun_tx_dropped(&a);
        let loss = loss_across_restart(&cp, &mut a, &pod_a, &pod_b, &ip_b, Duration::from_secs(1));
        let dropped = tun_tx_dropped(&a) - dropped;
        eprintln!(
            "restart: {} of {} datagrams lost ({:.1}%), longest gap {} datagrams / {:.0} ms, \
             delivery resumed {:.0} ms after the kill; ferry.udp TX drops +{dropped}",
            loss.sent - loss.received,
            loss.sent,
            100.0 * (loss.sent - loss.received) as f64 / loss.sent as f64,
            loss.gap_packets,
            loss.gap_ms,
            loss.resumed_ms,
        );
        assert!(loss.gap_ms < 5000.0, "{loss:?}\n{}", a.logs());
        // The kernel counter of the persistent device is what the new agent exports.
        let before = tun_tx_dropped(&a) as f64;
        let exported = metrics(&a)["ferry_udp_device_dropped_packets_total{direction=\"tx\"}"];
        let after = tun_tx_dropped(&a) as f64;
        assert!(
            before <= exported && exported <= after,
            "{before} <= {exported} <= {after}"
        );

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
        for run in 2..=a.starts {
            let log = std::fs::read_to_string(a.log_path(run)).unwrap();
            assert!(
                log.contains("udp datapath attached")
                    && !log.contains("route installed")
                    && !log.contains("address added")
                    && !log.contains("recreating"),
                "the restarted agent (run {run}) rewrote state:\n{log}"
            );
        }

        // 8b. UDP 8285 held by another socket when the agent starts: NetworkUnavailable=True
        //     TunnelPortInUse on A's Node, the agent keeps running and serves once it is free.
        a.kill_agent();
        let squatter = a.ns.run(|| UdpSocket::bind("0.0.0.0:8285").unwrap());
        a.start_agent(&cp);
        let unavailable = |want: &str| {
            let node = cp.node("node-a");
            node["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter().any(|c| {
                    c["type"] == "NetworkUnavailable"
                        && c["status"] == want
                        && (want == "False" || c["reason"] == "TunnelPortInUse")
                })
            })
        };
        assert!(
            wait_until(Duration::from_secs(10), || unavailable("True")),
            "{}\n{}",
            cp.node("node-a")["status"],
            a.logs()
        );
        assert!(
            a.logs().contains("UDP port 8285 is held by another socket"),
            "{}",
            a.logs()
        );
        assert!(
            a.agent.as_mut().unwrap().0.try_wait().unwrap().is_none(),
            "agent exited"
        );
        drop(squatter);
        assert!(
            wait_until(Duration::from_secs(10), || unavailable("False")),
            "{}",
            a.logs()
        );
        assert!(
            wait_until(Duration::from_secs(10), || tcp_reaches(
                &pod_b, &pod_a, &ip_b, 8083
            )),
            "{}",
            a.logs()
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
