//! Privileged end-to-end test of the iptables Service proxier
//! (`ferry_agent::service::iptables::IptablesProxier`) on real sockets.
//!
//! Everything lives in namespaces this test creates (removed by `Drop` guards, also on panic):
//! a node namespace with a bridge `br0` (10.244.1.1/24) and `ip_forward` on, three backend
//! "pods" (10.244.1.2-4, each serving its name over TCP 8080 and UDP 5353) and a client pod
//! (10.244.1.10), each attached to the bridge with a veth pair; the Service network is routed
//! to an absent gateway (as a node's default route would take it), so rejected frontends are
//! rejected by our rules and not by a missing route (ICMP redirects are off: routing back out
//! of `br0` would otherwise send one first, and the per-host ICMP rate limit would then swallow
//! the port unreachable). The proxier runs on a thread that
//! entered the node namespace, so its `iptables-save` / `iptables-restore` / `conntrack`
//! children act there only; the rules are checked with `iptables-save` inside the namespace.
//!
//! Checked: ClusterIP over TCP and UDP reaches every backend; a frontend without endpoints
//! refuses at once (`ECONNREFUSED` on connect, ICMP port unreachable for UDP); `ClientIP`
//! affinity sticks; a NodePort on the node's address answers pods and the node itself; hairpin (a pod reaching itself through its Service) works; an unchanged
//! table runs no `iptables-restore`; a removed endpoint is never picked again; a connected UDP
//! socket whose backend leaves is moved to another one (its conntrack entry is deleted), also
//! when the leave happens across a proxier restart, and refused once none is left (needs the
//! `conntrack` tool).
//!
//! A third test covers traffic from outside the cluster: an "external host" namespace on the
//! node's uplink (10.99.0.0/24) reaches a NodePort and an externalIP; with
//! `externalTrafficPolicy: Cluster` the backends see the node's address and every endpoint
//! answers, with `Local` only the node's own endpoint answers and sees the client's address,
//! while a pod and the node itself still reach every endpoint; without a local endpoint the
//! external client gets no answer (dropped, not refused) and pods still do; a UDP flow from
//! outside whose local endpoint leaves moves to the next one.
//!
//! A second test runs the whole agent (`--service-proxy iptables`) against a real `ferry-server`
//! (the fixture of `common/`): a Service and an EndpointSlice created through the API become
//! rules in the node namespace (ClusterIP and NodePort on the Node's InternalIP), a slice
//! update removes an endpoint, deleting the slice leaves a REJECT, and the Node carries
//! `FerryServiceProxyReady=True`.

#![forbid(unsafe_code)]

mod common;

use common::{ControlPlane, NodeEnv};
use ferry_agent::service::iptables::IptablesProxier;
use ferry_agent::service::{
    Backend, Entry, Frontend, FrontendKind, Proto, Proxier as _, ServicePortName, ServiceTable,
};
use ferry_tests::{privileged, veth, wait_until, Netns};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 5353;
const TIMEOUT: Duration = Duration::from_secs(3);

/// A pod namespace at `ip` on the node's bridge.
fn pod(node: &Netns, tag: &str, host_if: &str, ip: &str) -> Netns {
    let p = Netns::new(tag);
    veth(&p, "eth0", node, host_if);
    // Hairpin mode on the port, as ferry-cni sets it (datapath pitfall 5).
    node.sh(&format!(
        "ip link set {host_if} master br0 up && ip link set {host_if} type bridge_slave hairpin on"
    ));
    p.sh(&format!(
        "ip addr add {ip}/24 dev eth0 && ip link set eth0 up && ip route add default via 10.244.1.1"
    ));
    p
}

/// Serves `name` on TCP 8080 and UDP 5353 in `ns` (sockets made inside it, served from
/// background threads that end with the test process).
fn serve(ns: &Netns, name: &'static str) {
    let (tcp, udp) = ns.run(|| {
        (
            TcpListener::bind(("0.0.0.0", TCP_PORT)).unwrap(),
            UdpSocket::bind(("0.0.0.0", UDP_PORT)).unwrap(),
        )
    });
    std::thread::spawn(move || {
        for mut s in tcp.incoming().flatten() {
            let _ = s.write_all(name.as_bytes());
        }
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((_, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(name.as_bytes(), from);
        }
    });
}

/// Connects from `ns` to `to` and reads the backend's name.
fn tcp_name(ns: &Netns, to: SocketAddr) -> std::io::Result<String> {
    ns.run(|| {
        let mut s = TcpStream::connect_timeout(&to, TIMEOUT)?;
        s.set_read_timeout(Some(TIMEOUT))?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
}

/// Sends one datagram from a fresh socket in `ns` to `to` and reads the answer.
fn udp_name(ns: &Netns, to: SocketAddr) -> std::io::Result<String> {
    ns.run(|| {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.connect(to)?;
        s.set_read_timeout(Some(TIMEOUT))?;
        s.send(b"who")?;
        let mut buf = [0u8; 64];
        let n = s.recv(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
}

/// Serves `name` and the peer's address (`<name> <peer ip>`) on TCP 8080 and UDP 5353 in `ns`.
fn serve_peer(ns: &Netns, name: &'static str) {
    let (tcp, udp) = ns.run(|| {
        (
            TcpListener::bind(("0.0.0.0", TCP_PORT)).unwrap(),
            UdpSocket::bind(("0.0.0.0", UDP_PORT)).unwrap(),
        )
    });
    std::thread::spawn(move || {
        for mut s in tcp.incoming().flatten() {
            let peer = s
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            let _ = s.write_all(format!("{name} {peer}").as_bytes());
        }
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((_, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(format!("{name} {}", from.ip()).as_bytes(), from);
        }
    });
}

/// What `f` answers over `n` connections (each `<name> <peer>`).
fn answers(n: usize, mut f: impl FnMut() -> std::io::Result<String>) -> BTreeSet<String> {
    (0..n).map(|_| f().expect("an answer")).collect()
}

fn fe(addr: &str, port: u16, proto: Proto) -> Frontend {
    Frontend {
        addr: addr.parse().unwrap(),
        port,
        proto,
    }
}

fn entry(name: &str, backends: &[&str], port: u16, affinity: Option<u32>) -> Entry {
    Entry {
        service: ServicePortName {
            namespace: "default".into(),
            name: name.into(),
            port: String::new(),
        },
        kind: FrontendKind::ClusterIp,
        backends: backends
            .iter()
            .map(|a| Backend {
                addr: a.parse::<Ipv4Addr>().unwrap(),
                port,
            })
            .collect(),
        local_backends: Vec::new(),
        external_local: false,
        affinity_timeout: affinity,
    }
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn iptables_proxier_serves_cluster_ips_in_a_namespace() {
    if !privileged("iptables_proxier_serves_cluster_ips_in_a_namespace") {
        return;
    }
    let root = ferry_tests::RootSnapshot::take();
    let node = Netns::new("fsvcn");
    node.sh(
        "ip link add br0 type bridge && ip addr add 10.244.1.1/24 dev br0 && ip link set br0 up \
         && sysctl -qw net.ipv4.ip_forward=1 \
         && ip route add 10.96.0.0/12 via 10.244.1.254 dev br0 \
         && sysctl -qw net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.br0.send_redirects=0",
    );
    let p1 = pod(&node, "fsvc1", "v1", "10.244.1.2");
    let p2 = pod(&node, "fsvc2", "v2", "10.244.1.3");
    let p3 = pod(&node, "fsvc3", "v3", "10.244.1.4");
    let client = pod(&node, "fsvcc", "vc", "10.244.1.10");
    serve(&p1, "p1");
    serve(&p2, "p2");
    serve(&p3, "p3");
    let all = ["10.244.1.2", "10.244.1.3", "10.244.1.4"];

    let mut table = ServiceTable::default();
    table.entries.insert(
        fe("10.96.0.10", 80, Proto::Tcp),
        entry("web", &all, TCP_PORT, None),
    );
    table.entries.insert(
        fe("10.96.0.10", 53, Proto::Udp),
        entry("web", &all, UDP_PORT, None),
    );
    table.entries.insert(
        fe("10.96.0.11", 80, Proto::Tcp),
        entry("empty", &[], 1, None),
    );
    table.entries.insert(
        fe("10.96.0.11", 53, Proto::Udp),
        entry("empty", &[], 1, None),
    );
    table.entries.insert(
        fe("10.96.0.12", 80, Proto::Tcp),
        entry("sticky", &all, TCP_PORT, Some(60)),
    );
    table.entries.insert(
        fe("10.96.0.13", 80, Proto::Tcp),
        entry("self", &["10.244.1.2"], TCP_PORT, None),
    );

    // NodePort on the node's own address (its bridge address here).
    let mut np = entry("np", &["10.244.1.3"], TCP_PORT, None);
    np.kind = FrontendKind::NodePort;
    table
        .entries
        .insert(fe("10.244.1.1", 30080, Proto::Tcp), np);

    let mut proxier = IptablesProxier::new(Some("10.244.0.0/16".parse().unwrap()));
    let stats = node.run(|| proxier.sync(&table)).expect("first sync");
    assert_eq!(stats.changed, 5, "{stats:?}");
    assert_eq!(proxier.restores(), 1);

    // The rules, seen by an independent tool inside the node namespace.
    let save = node.sh("iptables-save");
    for want in [
        "-A PREROUTING -j FERRY-SERVICES",
        "-A OUTPUT -j FERRY-SERVICES",
        "-A POSTROUTING -j FERRY-SERVICES-POST",
        "-A FORWARD -j FERRY-SERVICES",
        "-A FERRY-SERVICES -d 10.96.0.11/32 -p tcp -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable",
        "-A FERRY-SERVICES -d 10.96.0.10/32 -p udp -m udp --dport 53 -j FERRY-SVC-",
        "-j DNAT --to-destination 10.244.1.4:8080",
        "-m statistic --mode random --probability 0.33333333349 -j FERRY-SEP-",
    ] {
        assert!(save.contains(want), "{want:?} missing in\n{save}");
    }
    assert!(!save.contains("KUBE-"), "{save}");

    // ClusterIP TCP and UDP reach every backend.
    let mut seen = BTreeSet::new();
    for _ in 0..60 {
        seen.insert(tcp_name(&client, sa("10.96.0.10:80")).expect("tcp via ClusterIP"));
    }
    assert_eq!(
        seen,
        BTreeSet::from(["p1".into(), "p2".into(), "p3".into()])
    );
    let mut seen = BTreeSet::new();
    for _ in 0..60 {
        seen.insert(udp_name(&client, sa("10.96.0.10:53")).expect("udp via ClusterIP"));
    }
    assert_eq!(
        seen,
        BTreeSet::from(["p1".into(), "p2".into(), "p3".into()])
    );

    // No endpoints: refused at once, never a timeout.
    let t = Instant::now();
    let e = tcp_name(&client, sa("10.96.0.11:80")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    let e = udp_name(&client, sa("10.96.0.11:53")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");

    // ClientIP affinity sticks.
    let first = tcp_name(&client, sa("10.96.0.12:80")).unwrap();
    for _ in 0..20 {
        assert_eq!(tcp_name(&client, sa("10.96.0.12:80")).unwrap(), first);
    }

    // Hairpin: p1 reaches itself through its Service.
    assert_eq!(tcp_name(&p1, sa("10.96.0.13:80")).expect("hairpin"), "p1");

    // NodePort from a pod and from the node itself (OUTPUT), on the node's address.
    assert_eq!(
        tcp_name(&client, sa("10.244.1.1:30080")).expect("pod -> NodePort"),
        "p2"
    );
    assert_eq!(
        tcp_name(&node, sa("10.244.1.1:30080")).expect("node -> NodePort"),
        "p2"
    );

    // Unchanged table: no iptables-restore.
    let stats = node.run(|| proxier.sync(&table)).unwrap();
    assert_eq!(stats, Default::default());
    assert_eq!(proxier.restores(), 1);
    // Partial syncs diff against what the proxier wrote: `iptables-save` only at the first.
    assert_eq!(proxier.saves(), 1);
    let rules = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.starts_with("-A "))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(rules(&node.sh("iptables-save")), rules(&save));

    // p3 leaves the Service: never picked again, its chain gone.
    let web = fe("10.96.0.10", 80, Proto::Tcp);
    table.entries.get_mut(&web).unwrap().backends.pop();
    let stats = node.run(|| proxier.sync(&table)).unwrap();
    assert_eq!((stats.changed, stats.removed), (1, 0), "{stats:?}");
    assert_eq!(proxier.restores(), 2);
    assert_eq!(proxier.saves(), 1);
    let save = node.sh("iptables-save -t nat");
    assert_eq!(
        save.matches("DNAT --to-destination 10.244.1.4:8080")
            .count(),
        1,
        "only the sticky Service still uses p3:\n{save}"
    );
    for _ in 0..30 {
        assert_ne!(tcp_name(&client, sa("10.96.0.10:80")).unwrap(), "p3");
    }

    // UDP conntrack: a connected socket keeps its 5-tuple and its backend; when that backend
    // leaves, the flow is deleted and the next datagram goes to a remaining one (N -> M); when
    // none is left, it is refused (N -> 0), not sent to the old backend.
    let ask = |s: &UdpSocket| -> std::io::Result<String> {
        s.send(b"who")?;
        let mut buf = [0u8; 64];
        let n = s.recv(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    let sock = client.run(|| {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.connect("10.96.0.10:53").unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s
    });
    let first = ask(&sock).unwrap();
    for _ in 0..5 {
        assert_eq!(ask(&sock).unwrap(), first, "one flow, one backend");
    }
    let udp = fe("10.96.0.10", 53, Proto::Udp);
    let gone = ["p1", "p2", "p3"].iter().position(|n| *n == first).unwrap();
    table.entries.get_mut(&udp).unwrap().backends.remove(gone);
    node.run(|| proxier.sync(&table)).unwrap();
    let next = ask(&sock).unwrap();
    assert_ne!(next, first, "the flow to the removed backend was not deleted (is `conntrack` installed? see scripts/setup.sh)");
    // Agent restart while that backend leaves too: the new process's first sync finds the
    // flow in conntrack answered by a non-backend and deletes it.
    let mut restarted = IptablesProxier::new(Some("10.244.0.0/16".parse().unwrap()));
    let second = ["p1", "p2", "p3"].iter().position(|n| *n == next).unwrap();
    let ip = format!("10.244.1.{}", second + 2);
    table
        .entries
        .get_mut(&udp)
        .unwrap()
        .backends
        .retain(|b| b.addr.to_string() != ip);
    node.run(|| restarted.sync(&table)).unwrap();
    let third = ask(&sock).unwrap();
    assert!(third != next && third != first, "{first} {next} {third}");
    table.entries.get_mut(&udp).unwrap().backends.clear();
    node.run(|| restarted.sync(&table)).unwrap();
    let e = ask(&sock).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");

    // A failed restore forgets the remembered state: while someone else jumps to the chain of
    // a Service that leaves, deleting it fails (the whole restore is atomic, nothing changes);
    // once the reference is gone, the next sync reads `iptables-save` again and succeeds.
    let own = fe("10.96.0.13", 80, Proto::Tcp);
    let own_chain = ferry_agent::service::iptables::svc_chain(&own, &table.entries[&own]);
    node.sh(&format!(
        "iptables -t nat -I OUTPUT -d 192.0.2.1/32 -j {own_chain}"
    ));
    table.entries.remove(&own);
    let saves = restarted.saves();
    node.run(|| restarted.sync(&table))
        .expect_err("deleting a referenced chain must fail");
    assert!(node
        .sh("iptables-save -t nat")
        .contains("-A FERRY-SERVICES -d 10.96.0.13/32"));
    node.sh(&format!(
        "iptables -t nat -D OUTPUT -d 192.0.2.1/32 -j {own_chain}"
    ));
    let stats = node
        .run(|| restarted.sync(&table))
        .expect("sync after the failure");
    assert_eq!(stats.removed, 1, "{stats:?}");
    assert_eq!(restarted.saves(), saves + 1);
    let save = node.sh("iptables-save -t nat");
    assert!(
        !save.contains(&own_chain) && !save.contains("10.96.0.13"),
        "{save}"
    );

    // Everything removed: no chain of ours is left.
    node.run(ferry_agent::service::iptables::uninstall).unwrap();
    let save = node.sh("iptables-save");
    assert!(!save.contains("FERRY-"), "{save}");
    drop((client, p1, p2, p3, node));
    root.assert_unchanged();
}

#[test]
fn iptables_proxier_external_traffic_policies() {
    if !privileged("iptables_proxier_external_traffic_policies") {
        return;
    }
    let root = ferry_tests::RootSnapshot::take();
    // The node: pods on br0 (10.244.1.0/24, this node's), a "remote" pod on br1 (10.244.2.0/24:
    // another node's range; the table says it is not local), the uplink to the external host.
    let node = Netns::new("fetn");
    let ext = Netns::new("fete");
    veth(&ext, "eth0", &node, "uplink");
    node.sh(
        "ip link add br0 type bridge && ip addr add 10.244.1.1/24 dev br0 && ip link set br0 up \
         && ip link add br1 type bridge && ip addr add 10.244.2.1/24 dev br1 && ip link set br1 up \
         && ip addr add 10.99.0.11/24 dev uplink && ip link set uplink up \
         && sysctl -qw net.ipv4.ip_forward=1",
    );
    ext.sh(
        "ip addr add 10.99.0.254/24 dev eth0 && ip link set eth0 up \
         && ip route add 192.0.2.50/32 via 10.99.0.11",
    );
    let local1 = pod(&node, "fet1", "v1", "10.244.1.2");
    let local2 = pod(&node, "fet2", "v2", "10.244.1.3");
    let client = pod(&node, "fetc", "vc", "10.244.1.10");
    let remote = Netns::new("fetr");
    veth(&remote, "eth0", &node, "vr");
    node.sh("ip link set vr master br1 up");
    remote.sh(
        "ip addr add 10.244.2.2/24 dev eth0 && ip link set eth0 up && ip route add default via 10.244.2.1",
    );
    serve_peer(&local1, "l1");
    serve_peer(&local2, "l2");
    serve_peer(&remote, "r");

    let both = ["10.244.1.2", "10.244.2.2"];
    let node_port = |name: &str, port: u16, eps: &[&str], local: &[&str], etp_local: bool| {
        let mut e = entry(name, eps, port, None);
        e.kind = FrontendKind::NodePort;
        e.local_backends = entry(name, local, port, None).backends;
        e.external_local = etp_local;
        e
    };
    let mut table = ServiceTable::default();
    // ETP Cluster, ETP Local, ETP Local without a local endpoint; a UDP ETP Local NodePort;
    // an externalIP with ETP Local.
    let cluster_fe = fe("10.99.0.11", 30080, Proto::Tcp);
    let local_fe = fe("10.99.0.11", 30081, Proto::Tcp);
    let none_fe = fe("10.99.0.11", 30082, Proto::Tcp);
    let udp_fe = fe("10.99.0.11", 30053, Proto::Udp);
    let ext_ip_fe = fe("192.0.2.50", 80, Proto::Tcp);
    table.entries.insert(
        cluster_fe,
        node_port("cl", TCP_PORT, &both, &["10.244.1.2"], false),
    );
    table.entries.insert(
        local_fe,
        node_port("lo", TCP_PORT, &both, &["10.244.1.2"], true),
    );
    table.entries.insert(
        none_fe,
        node_port("none", TCP_PORT, &["10.244.2.2"], &[], true),
    );
    table.entries.insert(
        udp_fe,
        node_port(
            "udp",
            UDP_PORT,
            &["10.244.1.2", "10.244.1.3", "10.244.2.2"],
            &["10.244.1.2", "10.244.1.3"],
            true,
        ),
    );
    let mut e = node_port("eip", TCP_PORT, &both, &["10.244.1.2"], true);
    e.kind = FrontendKind::ExternalIp;
    table.entries.insert(ext_ip_fe, e);
    let mut proxier = IptablesProxier::new(Some("10.244.0.0/16".parse().unwrap()));
    node.run(|| proxier.sync(&table)).expect("first sync");
    let tcp = |ns: &Netns, to: Frontend| tcp_name(ns, SocketAddr::from((to.addr, to.port)));
    let set = |v: &[&str]| -> BTreeSet<String> { v.iter().map(|s| (*s).to_owned()).collect() };

    // Cluster: every endpoint, the source masqueraded to a node address (the local pod sees
    // br0's, the remote one br1's: both the node's).
    assert_eq!(
        answers(40, || tcp(&ext, cluster_fe)),
        set(&["l1 10.244.1.1", "r 10.244.2.1"])
    );
    // Local: only the node's endpoint, which sees the external client.
    assert_eq!(
        answers(20, || tcp(&ext, local_fe)),
        set(&["l1 10.99.0.254"])
    );
    assert_eq!(
        answers(20, || tcp(&ext, ext_ip_fe)),
        set(&["l1 10.99.0.254"])
    );
    // A pod still reaches every endpoint, with its own address; the node too (masqueraded).
    assert_eq!(
        answers(40, || tcp(&client, local_fe)),
        set(&["l1 10.244.1.10", "r 10.244.1.10"])
    );
    assert_eq!(
        answers(40, || tcp(&node, local_fe)),
        set(&["l1 10.244.1.1", "r 10.244.2.1"])
    );
    // No local endpoint: the external client gets no answer (dropped, so the connect times
    // out rather than being refused); a pod still reaches the remote endpoint.
    let e = tcp(&ext, none_fe).expect_err("dropped");
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    assert_eq!(tcp(&client, none_fe).unwrap(), "r 10.244.1.10");
    // An unchanged table writes nothing: the new chains read back as they were rendered.
    let restores = proxier.restores();
    node.run(|| proxier.sync(&table)).unwrap();
    assert_eq!(proxier.restores(), restores);
    let mut fresh = IptablesProxier::new(Some("10.244.0.0/16".parse().unwrap()));
    node.run(|| fresh.sync(&table)).unwrap();
    assert_eq!(fresh.restores(), 0, "adopting the rules must write nothing");

    // UDP from outside: one flow stays on one local endpoint; when that endpoint leaves the
    // flow moves to the other local one (never to the remote one) at the next datagram.
    let ask = |s: &UdpSocket| -> std::io::Result<String> {
        s.send(b"who")?;
        let mut buf = [0u8; 64];
        let n = s.recv(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    let sock = ext.run(|| {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.connect("10.99.0.11:30053").unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s
    });
    let first = ask(&sock).unwrap();
    assert!(first.ends_with(" 10.99.0.254"), "{first}");
    for _ in 0..5 {
        assert_eq!(ask(&sock).unwrap(), first, "one flow, one endpoint");
    }
    let (gone, stays) = if first.starts_with("l1 ") {
        ("10.244.1.2", "l2 10.99.0.254")
    } else {
        ("10.244.1.3", "l1 10.99.0.254")
    };
    let e = table.entries.get_mut(&udp_fe).unwrap();
    e.backends.retain(|b| b.addr.to_string() != gone);
    e.local_backends.retain(|b| b.addr.to_string() != gone);
    node.run(|| proxier.sync(&table)).unwrap();
    assert_eq!(ask(&sock).unwrap(), stays);

    node.run(ferry_agent::service::iptables::uninstall).unwrap();
    assert!(!node.sh("iptables-save").contains("FERRY-"));
    drop((client, local1, local2, remote, ext, node));
    root.assert_unchanged();
}

/// The node's nat and filter rules (`iptables-save` inside its namespace).
fn rules(n: &NodeEnv) -> String {
    n.ns.sh("iptables-save")
}

fn wait_rules(cp: &ControlPlane, n: &NodeEnv, what: &str, f: impl Fn(&str) -> bool) {
    let ok = wait_until(Duration::from_secs(20), || f(&rules(n)));
    assert!(
        ok,
        "{what}: rules never matched:\n{}\n{}\n{}",
        rules(n),
        n.logs(),
        cp.server_log()
    );
}

#[test]
fn agent_programs_services_from_the_api() {
    if !privileged("agent_programs_services_from_the_api") {
        return;
    }
    let root = ferry_tests::RootSnapshot::take();
    let cp = ControlPlane::start();
    cp.create_node("sn1", Some("10.99.0.11"));
    let mut n = NodeEnv::new(&cp, "sn1", "psn1", "10.99.0.11");
    n.args
        .extend(["--service-proxy".to_owned(), "iptables".to_owned()]);
    n.start_agent(&cp);

    let svc = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"type": "NodePort", "clusterIP": "10.96.0.50",
                 "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080}]}});
    cp.api(
        "POST",
        "/api/v1/namespaces/default/services",
        Some(("application/json", &svc)),
        201,
    );
    let slice = |eps: &[&str]| -> Value {
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": eps.iter().map(|a| json!({"addresses": [a], "conditions": {"ready": true}})).collect::<Vec<_>>()})
    };
    let slices = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";
    cp.api(
        "POST",
        slices,
        Some(("application/json", &slice(&["10.244.5.2", "10.244.5.3"]))),
        201,
    );
    wait_rules(&cp, &n, "two endpoints", |r| {
        r.contains("-A FERRY-SERVICES -d 10.96.0.50/32 -p tcp -m tcp --dport 80 -j FERRY-SVC-")
            && r.contains(
                "-A FERRY-SERVICES -d 10.99.0.11/32 -p tcp -m tcp --dport 30080 -j FERRY-SVC-",
            )
            && r.contains("-A FERRY-NODEPORTS -p tcp -m tcp --dport 30080 -j FERRY-SVC-")
            && r.matches("-j DNAT --to-destination 10.244.5.3:8080")
                .count()
                == 2
    });
    let ok = wait_until(Duration::from_secs(20), || {
        cp.node("sn1")["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c["type"] == "FerryServiceProxyReady"
                        && c["status"] == "True"
                        && c["reason"] == "ServicesProgrammed"
                })
            })
    });
    assert!(
        ok,
        "no FerryServiceProxyReady=True: {}\n{}",
        cp.node("sn1"),
        n.logs()
    );

    // One endpoint leaves: its DNAT goes (ClusterIP and NodePort chains).
    let mut one = slice(&["10.244.5.2"]);
    one["metadata"]["resourceVersion"] =
        cp.api("GET", &format!("{slices}/web-1"), None, 200)["metadata"]["resourceVersion"].clone();
    cp.api(
        "PUT",
        &format!("{slices}/web-1"),
        Some(("application/json", &one)),
        200,
    );
    wait_rules(&cp, &n, "one endpoint", |r| {
        !r.contains("10.244.5.3:8080") && r.matches("--to-destination 10.244.5.2:8080").count() == 2
    });

    // No endpoints: rejected, not dropped.
    cp.api("DELETE", &format!("{slices}/web-1"), None, 200);
    wait_rules(&cp, &n, "no endpoints", |r| {
        !r.contains("10.244.5.")
            && r.contains("-A FERRY-SERVICES -d 10.96.0.50/32 -p tcp -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable")
            && r.contains("-A FERRY-SERVICES -p tcp -m addrtype --dst-type LOCAL -m tcp --dport 30080 -j REJECT --reject-with icmp-port-unreachable")
    });
    let logs = n.logs();
    assert!(logs.contains("service table programmed"), "{logs}");
    drop(n);
    drop(cp);
    root.assert_unchanged();
}
