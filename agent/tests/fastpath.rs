//! Privileged test of the pod fast path (`pod-fastpath` tc programs + `ferry_agent::fastpath`)
//! with real `ferry-cni` pods.
//!
//! Topology (every piece is a namespace, link or mount this test creates, removed by Drop
//! guards; nothing is added to the root namespace):
//!
//! ```text
//!   pod1 netns    pod2 netns            (ferry-cni ADD: veth, 10.244.1.x/24, MTU 1400)
//!        \          /
//!      node netns: bridge, fast-path worker thread
//!        | n0 10.99.0.1/24            | vn0 10.98.0.1/24 + VXLAN fvx 10.244.255.1/30
//!   out netns (host-gw style)     vx netns (vxlan style)
//!   o0 10.99.0.2, lo 10.244.2.1   v0 10.98.0.2 + VXLAN vx 10.244.255.2/30
//! ```
//!
//! `out` reaches the pod subnet through a plain route (host-gw), `vx` through a VXLAN pair; both
//! use a source inside the cluster network 10.244.0.0/16. Checked with independent tools: `ping`,
//! TCP through Python sockets, `ip -j -s link` counters (the bridge and the pods' host veths do
//! not move for fast-path traffic while the pods' `eth0` do; for a pod's packets to the peers the
//! bridge does not pass them up to the node), the TTL a pod or peer receives (`IP_RECVTTL`),
//! `bpftool` (the tc links and their programs), the ICMP "fragmentation needed" for a too-big
//! datagram (pod MTU inbound, a route MTU outbound).

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_agent::fastpath::{self, Settings, Worker};
use ferry_common::fastpath::FastPathStat;
use ferry_tests::{bin_path, privileged, run_ok, unique, veth, wait_until, Netns, RootSnapshot};
use serde_json::{json, Value};

const NETWORK: &str = "fpnet";
const POD_MTU: u32 = 1400;

/// A private bpffs mount (unmounted on drop, releasing every pin).
struct Bpffs(PathBuf);

impl Bpffs {
    fn new() -> Bpffs {
        let dir = std::env::temp_dir().join(format!("ferry-bpffs-{}", unique("fp")));
        std::fs::create_dir_all(&dir).expect("bpffs mount point");
        run_ok(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&dir));
        Bpffs(dir)
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

struct Pod {
    ns: Netns,
    cid: String,
    ip: String,
    host_veth: String,
}

struct World {
    node: Netns,
    out: Netns,
    vx: Netns,
    dir: tempfile::TempDir,
    bridge: String,
    bpffs: Bpffs,
}

impl World {
    fn new() -> World {
        let node = Netns::new("fpn");
        let out = Netns::new("fpo");
        let vx = Netns::new("fpv");
        let dir = tempfile::tempdir().expect("tempdir");
        let bridge = format!("b{}", &node.name()[3..]);
        veth(&node, "n0", &out, "o0");
        veth(&node, "vn0", &vx, "v0");
        node.sh("sysctl -qw net.ipv4.ip_forward=1
             ip addr add 10.99.0.1/24 dev n0 && ip link set n0 up
             ip addr add 10.98.0.1/24 dev vn0 && ip link set vn0 up
             ip link add fvx type vxlan id 1 local 10.98.0.1 remote 10.98.0.2 dstport 4789 dev vn0
             ip addr add 10.244.255.1/30 dev fvx && ip link set fvx up
             ip route add 10.244.2.0/24 via 10.99.0.2");
        out.sh("ip addr add 10.99.0.2/24 dev o0 && ip link set o0 up
             ip addr add 10.244.2.1/32 dev lo
             ip route add 10.244.1.0/24 via 10.99.0.1 src 10.244.2.1");
        vx.sh("ip addr add 10.98.0.2/24 dev v0 && ip link set v0 up
             ip link add vx type vxlan id 1 local 10.98.0.2 remote 10.98.0.1 dstport 4789 dev v0
             ip addr add 10.244.255.2/30 dev vx && ip link set vx up
             ip route add 10.244.1.0/24 via 10.244.255.1 dev vx");
        World {
            node,
            out,
            vx,
            dir,
            bridge,
            bpffs: Bpffs::new(),
        }
    }

    fn ipam_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }

    fn pin_dir(&self) -> PathBuf {
        self.bpffs.0.join("node")
    }

    fn conf(&self) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": NETWORK,
            "type": "ferry-cni",
            "bridge": self.bridge,
            "isGateway": true,
            "mtu": POD_MTU,
            "ipam": {"subnet": "10.244.1.0/24", "dataDir": self.ipam_dir(),
                     "routes": [{"dst": "0.0.0.0/0"}]},
        })
    }

    fn cni(&self, cmd: &str, cid: &str, netns: &str) -> Value {
        let mut c = self.node.command(bin_path("ferry-cni"));
        c.env_clear()
            .env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", cid)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", self.dir.path());
        let out = ferry_tests::output_with_stdin(&mut c, Some(&self.conf().to_string()));
        assert!(
            out.status.success(),
            "ferry-cni {cmd}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    fn add_pod(&self, tag: &str) -> Pod {
        let ns = Netns::new(tag);
        let cid = unique("cid");
        let result = self.cni("ADD", &cid, ns.path());
        let ip = result["ips"][0]["address"]
            .as_str()
            .expect("an address")
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        Pod {
            host_veth: ferry_cni::bridge::host_veth_name(NETWORK, &cid, "eth0"),
            ns,
            cid,
            ip,
        }
    }

    fn settings(&self) -> Settings {
        Settings {
            bpffs_dir: self.pin_dir(),
            ipam_dir: self.ipam_dir(),
            network: NETWORK.to_owned(),
            bridge: self.bridge.clone(),
            cluster: "10.244.0.0/16".parse().unwrap(),
            node_devices: vec!["fvx".to_owned(), "n0".to_owned()],
        }
    }
}

/// `(rx_packets, tx_packets)` of `dev` in `ns`, read with `ip -j -s link`.
fn counters(ns: &Netns, dev: &str) -> (u64, u64) {
    let v = ns.ip_json(&format!("-s link show dev {dev}"));
    let s = &v[0]["stats64"];
    (
        s["rx"]["packets"].as_u64().expect("rx"),
        s["tx"]["packets"].as_u64().expect("tx"),
    )
}

/// Sends `count` pings of `size` bytes from `from` to `ip` (all must be answered).
fn ping(from: &Netns, ip: &str, count: u32) {
    from.sh(&format!("ping -q -c {count} -i 0.002 -W 2 {ip}"));
}

/// A TCP echo of 256 KiB from `client` to `server_ip` (the server runs in `server`).
fn tcp_echo(server: &Netns, server_ip: &str, client: &Netns) {
    let srv = server.spawn(
        "python3",
        &[
            "-c",
            "import socket\n\
             s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('0.0.0.0', 7777)); s.listen(1)\n\
             c,_=s.accept()\n\
             while True:\n\
             \x20   d=c.recv(65536)\n\
             \x20   if not d: break\n\
             \x20   c.sendall(d)\n",
        ],
    );
    let script = format!(
        "import socket, time\n\
         for i in range(100):\n\
         \x20   try:\n\
         \x20       c=socket.create_connection(('{server_ip}', 7777), timeout=5); break\n\
         \x20   except OSError: time.sleep(0.05)\n\
         data=bytes(range(256))*1024\n\
         c.sendall(data); c.shutdown(socket.SHUT_WR)\n\
         got=b''\n\
         while True:\n\
         \x20   d=c.recv(65536)\n\
         \x20   if not d: break\n\
         \x20   got+=d\n\
         assert got==data, len(got)\n\
         print('ok')\n"
    );
    let out = run_ok(client.command("python3").args(["-c", &script]));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    drop(srv);
}

/// Sends one UDP datagram with TTL `ttl` from `from` to `ip:port` and returns the TTL the
/// receiver in `to` saw (`None`: nothing arrived within a second).
fn received_ttl(from: &Netns, to: &Netns, ip: &str, ttl: u8) -> Option<u8> {
    let rx = to
        .command("python3")
        .args([
            "-c",
            "import socket\n\
             s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             s.setsockopt(socket.IPPROTO_IP, 12, 1)  # IP_RECVTTL\n\
             s.bind(('0.0.0.0', 7778)); s.settimeout(1.5)\n\
             print('ready', flush=True)\n\
             try:\n\
             \x20   m, anc, f, a = s.recvmsg(100, 64)\n\
             \x20   print(anc[0][2][0])\n\
             except socket.timeout:\n\
             \x20   print('none')\n",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut rx = rx;
    let mut stdout = std::io::BufReader::new(rx.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    from.sh(&format!(
        "python3 -c \"import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
         s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, {ttl}); s.sendto(b'x', ('{ip}', 7778))\""
    ));
    line.clear();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    let _ = rx.wait();
    line.trim().parse().ok()
}

/// Names of the programs attached to the tc (TCX) ingress of `dev` in `ns`, as the kernel
/// answers `BPF_PROG_QUERY` (bpftool 7.1 on this machine does not decode TCX links); the
/// kernel keeps 15 bytes of a name.
fn tc_ingress(ns: &Netns, dev: &str) -> Vec<String> {
    use aya::programs::{SchedClassifier, TcAttachType};
    let dev = dev.to_owned();
    let (_, progs) = ns
        .run(move || SchedClassifier::query_tcx(&dev, TcAttachType::Ingress))
        .expect("BPF_PROG_QUERY");
    progs
        .iter()
        .map(|p| p.name_as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Whether none of `devs` in `ns` runs one of the fast path's programs.
fn none_attached(ns: &Netns, devs: &[&str]) -> bool {
    devs.iter()
        .all(|d| tc_ingress(ns, d).iter().all(|n| !n.starts_with("ferry_")))
}

fn stat(stats: &fastpath::SharedStats, s: FastPathStat) -> u64 {
    stats.lock().unwrap().map_or(0, |v| v[s.index() as usize])
}

#[test]
fn pods_and_peers_bypass_the_bridge() {
    if !privileged("fastpath::pods_and_peers_bypass_the_bridge") {
        return;
    }
    let root = RootSnapshot::take();
    {
        let w = World::new();
        let p1 = w.add_pod("fp1");
        let p2 = w.add_pod("fp2");
        let enabled = Arc::new(AtomicBool::new(true));
        let stats: fastpath::SharedStats = Arc::default();
        let on = enabled.clone();
        let worker: Mutex<Option<Worker>> = Mutex::new(Some(
            w.node
                .run(|| {
                    fastpath::spawn(
                        w.settings(),
                        move || on.load(Ordering::SeqCst),
                        stats.clone(),
                    )
                })
                .expect("spawn the fast path"),
        ));
        assert_eq!(
            fastpath::store_pods(&w.ipam_dir(), NETWORK).unwrap().len(),
            2,
            "the IPAM store lists both pods"
        );
        let pinned = |w: &World| -> Vec<String> { pinned_pods(&w.pin_dir()) };
        assert!(
            wait_until(Duration::from_secs(5), || {
                let mut want = vec![p1.ip.clone(), p2.ip.clone()];
                want.sort();
                pinned(&w) == want
            }),
            "both pods in the map: {:?}",
            pinned(&w)
        );

        // The programs are attached: the pods' host veths run ferry_pod_ingress, fvx and n0
        // ferry_node_ingress (names as the kernel keeps them, 15 bytes).
        for dev in [&p1.host_veth, &p2.host_veth] {
            assert_eq!(tc_ingress(&w.node, dev), ["ferry_pod_ingre"], "{dev}");
        }
        for dev in ["fvx", "n0"] {
            assert_eq!(tc_ingress(&w.node, dev), ["ferry_node_ingr"], "{dev}");
        }
        let devs = [p1.host_veth.as_str(), "fvx", "n0"];

        // Pod to pod, both ways: works, and the destination's host veth never transmits it
        // (the bridge path would: bridge -> host veth -> pod).
        ping(&p1.ns, &p2.ip, 3);
        ping(&p2.ns, &p1.ip, 3);
        let before_v2 = counters(&w.node, &p2.host_veth);
        let before_e2 = counters(&p2.ns, "eth0");
        let before_redirects = stat(&stats, FastPathStat::PodRedirects);
        ping(&p1.ns, &p2.ip, 200);
        tcp_echo(&p2.ns, &p2.ip, &p1.ns);
        tcp_echo(&p1.ns, &p1.ip, &p2.ns);
        let after_v2 = counters(&w.node, &p2.host_veth);
        let after_e2 = counters(&p2.ns, "eth0");
        assert!(
            after_e2.0 - before_e2.0 >= 200,
            "pod2 eth0 rx {before_e2:?} -> {after_e2:?}"
        );
        // Pod2's host veth still transmits what the bridge floods (ARP, IPv6 neighbour
        // discovery of the fresh pods): a few packets, not the traffic.
        let (rx, tx) = (after_e2.0 - before_e2.0, after_v2.1 - before_v2.1);
        assert!(
            tx * 20 < rx,
            "pod2's host veth transmitted {tx} of the {rx} packets pod2 received: the bridge path was used"
        );
        assert!(
            wait_until(Duration::from_secs(5), || stat(
                &stats,
                FastPathStat::PodRedirects
            ) >= before_redirects + 200),
            "pod_redirects counter"
        );

        // From the host-gw peer and through VXLAN: works both ways, the bridge does not
        // transmit it, the TTL is decremented once.
        for peer in [&w.out, &w.vx] {
            ping(peer, &p1.ip, 3);
            let before_br = counters(&w.node, &w.bridge);
            let before_e1 = counters(&p1.ns, "eth0");
            ping(peer, &p1.ip, 200);
            tcp_echo(&p1.ns, &p1.ip, peer);
            let after_br = counters(&w.node, &w.bridge);
            let after_e1 = counters(&p1.ns, "eth0");
            assert!(
                after_e1.0 - before_e1.0 >= 200,
                "pod1 rx {before_e1:?} -> {after_e1:?}"
            );
            let (rx, tx) = (after_e1.0 - before_e1.0, after_br.1 - before_br.1);
            assert!(
                tx * 20 < rx,
                "the bridge transmitted {tx} of the {rx} packets pod1 received: the bridge path was used"
            );
            assert_eq!(received_ttl(peer, &p1.ns, &p1.ip, 9), Some(8));
        }
        // The worker publishes the counters after each round (at the latest every 3 s).
        assert!(wait_until(Duration::from_secs(5), || stat(
            &stats,
            FastPathStat::NodeRedirects
        ) >= 400));

        // The other way, a pod to a peer's address in the cluster network (host-gw route via
        // n0, VXLAN connected on fvx): sent straight out of n0 / fvx, so the bridge never passes
        // it up to the node's IP stack (its rx counter), the TTL is decremented once, and the
        // gateway (the node's own address) is still answered by the stack.
        let route_before = stat(&stats, FastPathStat::RouteRedirects);
        for (peer, peer_ip, peer_dev) in
            [(&w.out, "10.244.2.1", "o0"), (&w.vx, "10.244.255.2", "vx")]
        {
            ping(&p1.ns, peer_ip, 3);
            let before_br = counters(&w.node, &w.bridge);
            let before_peer = counters(peer, peer_dev);
            ping(&p1.ns, peer_ip, 200);
            tcp_echo(peer, peer_ip, &p1.ns);
            let after_br = counters(&w.node, &w.bridge);
            let after_peer = counters(peer, peer_dev);
            let (rx, up) = (after_peer.0 - before_peer.0, after_br.0 - before_br.0);
            assert!(rx >= 200, "{peer_dev} rx {before_peer:?} -> {after_peer:?}");
            assert!(
                up * 20 < rx,
                "the bridge passed {up} of the {rx} packets {peer_dev} received up to the node: the stack routed them"
            );
            assert_eq!(received_ttl(&p1.ns, peer, peer_ip, 9), Some(8), "{peer_ip}");
        }
        assert!(
            wait_until(Duration::from_secs(5), || stat(
                &stats,
                FastPathStat::RouteRedirects
            ) >= route_before + 400),
            "route_redirects counter"
        );
        ping(&p1.ns, "10.244.1.1", 2);
        // TTL 1 towards another node: left to the stack ("time exceeded"), nothing arrives.
        let pass_before = stat(&stats, FastPathStat::RoutePass);
        assert_eq!(received_ttl(&p1.ns, &w.out, "10.244.2.1", 1), None);
        assert!(wait_until(Duration::from_secs(5), || stat(
            &stats,
            FastPathStat::RoutePass
        ) > pass_before));
        // Above the route's MTU with DF: the FIB refuses, the stack answers "fragmentation
        // needed" with the route's MTU; below it the same route is still fast. (Forwarding uses
        // a route's MTU only when it is locked, or with `ip_forward_use_pmtu`; so does the FIB
        // helper.)
        w.node
            .sh("ip route change 10.244.2.0/24 via 10.99.0.2 mtu lock 1300");
        // The counters are published once per round: read them settled, before the probe.
        std::thread::sleep(Duration::from_millis(3500));
        let pass_before = stat(&stats, FastPathStat::RoutePass);
        let route_before = stat(&stats, FastPathStat::RouteRedirects);
        // (Sent once: the pod then knows the path MTU and refuses a second one itself.)
        let big = p1.ns.try_sh("ping -c 1 -W 2 -M do -s 1350 10.244.2.1");
        let text = String::from_utf8_lossy(&big.stdout).to_string()
            + &String::from_utf8_lossy(&big.stderr);
        assert!(
            text.contains("mtu = 1300") || text.contains("Frag needed"),
            "{text}"
        );
        ping(&p1.ns, "10.244.2.1", 3);
        assert!(wait_until(Duration::from_secs(5), || stat(
            &stats,
            FastPathStat::RoutePass
        ) > pass_before
            && stat(&stats, FastPathStat::RouteRedirects)
                >= route_before + 3));
        w.node.sh("ip route change 10.244.2.0/24 via 10.99.0.2");
        // TTL 1: left to the stack, which drops it with "time exceeded".
        let ttl_before = stat(&stats, FastPathStat::PassTtl);
        assert_eq!(received_ttl(&w.out, &p1.ns, &p1.ip, 1), None);
        assert!(wait_until(Duration::from_secs(5), || stat(
            &stats,
            FastPathStat::PassTtl
        ) > ttl_before));
        // Too big for the pods' MTU with DF: the stack still answers "fragmentation needed".
        let big = w
            .out
            .try_sh(&format!("ping -c 1 -W 2 -M do -s 1450 {}", p1.ip));
        let text = String::from_utf8_lossy(&big.stdout).to_string()
            + &String::from_utf8_lossy(&big.stderr);
        assert!(
            text.contains(&format!("mtu = {POD_MTU}")) || text.contains("Frag needed"),
            "{text}"
        );
        assert!(wait_until(Duration::from_secs(5), || stat(
            &stats,
            FastPathStat::PassTooBig
        ) >= 1));
        // A source outside the cluster network takes the normal path (and still works).
        let foreign_before = stat(&stats, FastPathStat::PassForeign);
        w.out
            .sh(&format!("ping -q -c 2 -W 2 -I 10.99.0.2 {}", p1.ip));
        assert!(wait_until(Duration::from_secs(5), || stat(
            &stats,
            FastPathStat::PassForeign
        ) >= foreign_before
            + 2));

        // DEL of a pod: its entry goes within a second, the other stays.
        w.cni("DEL", &p2.cid, p2.ns.path());
        assert!(
            wait_until(Duration::from_secs(1), || pinned(&w) == vec![p1.ip.clone()]),
            "{:?}",
            pinned(&w)
        );

        // Disabled: every link detached, the map empty; traffic still flows (bridge path).
        enabled.store(false, Ordering::SeqCst);
        worker.lock().unwrap().as_ref().unwrap().poke();
        assert!(
            wait_until(Duration::from_secs(2), || pinned(&w).is_empty()
                && none_attached(&w.node, &devs)),
            "map {:?}, {} runs {:?}",
            pinned(&w),
            p1.host_veth,
            tc_ingress(&w.node, &p1.host_veth)
        );
        ping(&w.out, &p1.ip, 3);
        ping(&w.vx, &p1.ip, 3);

        // On again, then the worker stops (the agent exits): everything detached again.
        enabled.store(true, Ordering::SeqCst);
        worker.lock().unwrap().as_ref().unwrap().poke();
        assert!(wait_until(Duration::from_secs(2), || pinned(&w) == vec![p1.ip.clone()]));
        assert!(!none_attached(&w.node, &devs));
        drop(worker.lock().unwrap().take());
        assert!(none_attached(&w.node, &devs));
        ping(&w.out, &p1.ip, 3);

        // Uninstall removes the pins.
        assert_eq!(ferry_agent::bpf::unpin_fastpath(&w.pin_dir()).unwrap(), 3);
        assert!(!w.pin_dir().join("FERRY_FP_PODS").exists());
        w.cni("DEL", &p1.cid, p1.ns.path());
    }
    root.assert_unchanged();
}

/// The pod map's addresses, read from its pin with `bpftool` (independent of the agent).
fn pinned_pods(pin_dir: &Path) -> Vec<String> {
    let pin = pin_dir.join("FERRY_FP_PODS");
    if !pin.exists() {
        return Vec::new();
    }
    let out = run_ok(
        Command::new("bpftool")
            .args(["-j", "map", "dump", "pinned"])
            .arg(&pin),
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("bpftool json");
    let mut ips: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let key: Vec<u8> = e["key"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| {
                    let s = b.as_str().unwrap();
                    u8::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
                })
                .collect();
            format!("{}.{}.{}.{}", key[0], key[1], key[2], key[3])
        })
        .collect();
    ips.sort();
    ips
}
