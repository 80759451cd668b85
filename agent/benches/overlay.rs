//! `cargo bench -p ferry-agent --bench overlay` (privileged; harness = false): single-stream TCP
//! throughput (`iperf3`) between two node namespaces on a veth/bridge underlay (MTU 1400), ferry's
//! pod paths next to hand-built kernel baselines in the same two node namespaces:
//!
//! | phase | row | what |
//! |---|---|---|
//! | vxlan | ferry vxlan pod->pod | pod on A -> pod on B: ferry-cni veth + bridge, ferry-agent's `ferry.1` (VNI 1, 8472) |
//! | vxlan | hand vxlan pod->pod | the hand-built equivalent: own bridge + veth + pod namespace per node (10.250.1.0/24, 10.250.2.0/24, MTU 1350), kernel VXLAN `hvx42` (VNI 42, 4789, nolearning) with flannel's entries (onlink route via peer `.0`, permanent neighbour, fdb) |
//! | vxlan | hand vxlan node->node | node A -> node B over a point-to-point kernel VXLAN device `hv0` (VNI 43, 4790, MTU 1350; no veth / bridge) |
//! | host-gw | ferry host-gw pod->pod | the same ferry pods after switching the agents to host-gw (pods keep MTU 1350) |
//! | host-gw | hand routed pod->pod | the hand-built pods, their subnet routed `via <peer node> dev eth0` (no encap) |
//! | host-gw | underlay node->node | node A -> node B over eth0 (MTU 1400) |
//! | udp | ferry udp pod->pod | the same ferry pods after switching the agents to the userspace udp backend |
//! | udp | hand vxlan pod->pod | the hand-built VXLAN pod path again, as this phase's yardstick |
//!
//! Drift control: a backend switch means restarting both agents, so paths are interleaved within
//! a phase: every round measures every path of the phase once (order rotated by one per round),
//! and each ratio is the median of the per-round ratios (both figures from the same round).
//! Targets: ferry vxlan at least 0.95x hand vxlan pod->pod, ferry host-gw at least 0.9x
//! underlay, ferry udp at least 0.5x ferry vxlan (cross-phase: the udp phase's ratio to the hand
//! VXLAN pod path divided by the vxlan phase's, and the plain ratio of medians).
//!
//! `FERRY_BENCH_ROUNDS` (default 5) and `FERRY_BENCH_SECONDS` (iperf3 `-t`, default 3) set the
//! size (about 2 minutes in all with the defaults). `FERRY_BENCH_AFFINITY=c,s` pins the iperf3
//! client to CPU c and the server to CPU s; off by default: on the 2-core machine `0,1` made the
//! spread far worse whenever anything else ran (a pinned iperf3 cannot dodge a concurrent build;
//! rounds swung between 7 and 16 Gbit/s), and `1,1` cut absolutes by about 10 % without
//! tightening the per-round ratios. `FERRY_BENCH_DUMP=1` prints, for node A and both pods,
//! `ip -d link`, routes, `ethtool -k` (when installed), `iptables-save` and the `net.*` sysctls,
//! to diff ferry's devices against the hand-built ones. `FERRY_BENCH_PHASES` (comma-separated
//! subset of `vxlan,host-gw,udp`, default all) runs only those phases, in the usual order; the
//! udp target needs the vxlan phase (`FERRY_BENCH_PHASES=vxlan,udp` for the udp figure alone).
//! Build the spawned binaries first, in release: `cargo build --release -p controlplane-lite --bin
//! ferry-server -p ferry-cni` (the bench runs from `target/release`).

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use ferry_tests::{median, privileged, veth, wait_until, ChildGuard, Netns, RootSnapshot};
use serde_json::Value;
use std::process::Stdio;
use std::time::{Duration, Instant};

const IPERF_PORT: &str = "5301";
/// Pod MTU of every overlay path (the underlay's 1400 minus VXLAN's 50).
const POD_MTU: u32 = UNDERLAY_MTU - 50;
/// Hand-built pod path: VXLAN device, VNI, port, bridge, host-side veth.
const HAND_VX: &str = "hvx42";
const HAND_VNI: u32 = 42;
const HAND_PORT: u16 = 4789;
const HAND_BR: &str = "hbr0";
const HAND_VETH: &str = "hveth0";

/// Run-time settings from the environment.
#[derive(Debug, Clone, Copy)]
struct Settings {
    rounds: usize,
    seconds: u32,
    /// (client CPU, server CPU).
    affinity: Option<(u32, u32)>,
    /// Phases to run: vxlan, host-gw, udp.
    phases: [bool; 3],
}

/// The phases, in the order they run.
const PHASES: [&str; 3] = ["vxlan", "host-gw", "udp"];

impl Settings {
    fn from_env() -> Settings {
        let num = |name: &str, default: u32| -> u32 {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .filter(|v| *v > 0)
                .unwrap_or(default)
        };
        let affinity = std::env::var("FERRY_BENCH_AFFINITY").ok().and_then(|v| {
            let (c, s) = v.split_once(',')?;
            Some((c.trim().parse().ok()?, s.trim().parse().ok()?))
        });
        let phases = std::env::var("FERRY_BENCH_PHASES").map_or([true; 3], |v| {
            let want: Vec<&str> = v.split(',').map(str::trim).collect();
            for w in &want {
                assert!(
                    PHASES.contains(w),
                    "FERRY_BENCH_PHASES: unknown phase {w:?}"
                );
            }
            PHASES.map(|p| want.contains(&p))
        });
        Settings {
            rounds: num("FERRY_BENCH_ROUNDS", 5) as usize,
            seconds: num("FERRY_BENCH_SECONDS", 3),
            affinity,
            phases,
        }
    }
}

/// One measured path: iperf3 server in `server`, client in `client` connecting to `ip`.
#[derive(Debug)]
struct Path<'a> {
    name: &'static str,
    server: &'a Netns,
    client: &'a Netns,
    ip: String,
}

/// Gbit/s received in one `seconds`-long iperf3 run over `p` (every step bounded).
fn iperf_once(p: &Path<'_>, s: &Settings, seconds: u32) -> f64 {
    let mut server = p.server.command("iperf3");
    server.args(["-s", "-1", "-p", IPERF_PORT]);
    // `timeout` bounds the whole client run; the server is a one-off (`-1`) killed on drop.
    let (secs, limit) = (seconds.to_string(), (seconds + 20).to_string());
    let mut client = p.client.command("timeout");
    client.args([
        &limit, "iperf3", "-c", &p.ip, "-p", IPERF_PORT, "-t", &secs, "-J",
    ]);
    client.args(["--connect-timeout", "3000"]);
    if let Some((c, sv)) = s.affinity {
        server.args(["-A", &sv.to_string()]);
        client.args(["-A", &c.to_string()]);
    }
    let _server = ChildGuard(
        server
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let listening = wait_until(Duration::from_secs(5), || {
        p.server
            .command("ss")
            .args(["-Hltn", &format!("sport = :{IPERF_PORT}")])
            .output()
            .is_ok_and(|o| !o.stdout.is_empty())
    });
    assert!(listening, "{}: iperf3 server did not listen", p.name);
    let out = client.output().unwrap();
    assert!(
        out.status.success(),
        "{}: iperf3 to {}: {out:?}",
        p.name,
        p.ip
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap()
        / 1e9
}

/// `s.rounds` rounds; every round measures every path once, the order rotated by one per round.
/// A discarded 1-second warm-up of the first path comes first. Result: `[path][round]`.
fn phase(paths: &[Path<'_>], s: &Settings) -> Vec<Vec<f64>> {
    iperf_once(&paths[0], s, 1);
    let mut out = vec![Vec::with_capacity(s.rounds); paths.len()];
    for round in 0..s.rounds {
        for k in 0..paths.len() {
            let i = (round + k) % paths.len();
            out[i].push(iperf_once(&paths[i], s, s.seconds));
        }
    }
    out
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(*x), hi.max(*x))
        })
}

fn per_round_ratios(num: &[f64], den: &[f64]) -> Vec<f64> {
    num.iter().zip(den).map(|(n, d)| n / d).collect()
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prints a phase's rows (median, range, every round) and returns the medians.
fn report(title: &str, paths: &[Path<'_>], res: &[Vec<f64>], secs: f64) -> Vec<f64> {
    println!("{title} ({secs:.0} s, load {})", load());
    for (p, r) in paths.iter().zip(res) {
        let (lo, hi) = min_max(r);
        let rounds: Vec<String> = r.iter().map(|x| format!("{x:5.2}")).collect();
        println!(
            "  {:<24} {:6.2}  [{lo:5.2}-{hi:5.2}]  rounds: {}",
            p.name,
            median(r),
            rounds.join(" ")
        );
    }
    res.iter().map(|r| median(r)).collect()
}

/// Prints the median of the per-round ratios `num / den` and returns it.
fn ratio(label: &str, num: &[f64], den: &[f64], target: Option<f64>) -> f64 {
    let r = per_round_ratios(num, den);
    let m = median(&r);
    let (lo, hi) = min_max(&r);
    let rounds: Vec<String> = r.iter().map(|x| format!("{x:.3}")).collect();
    let verdict = target.map_or(String::new(), |t| {
        format!(
            "  target >= {t}: {}",
            if m >= t { "met" } else { "NOT met" }
        )
    });
    println!(
        "  ratio {label:<46} {m:.3}  [{lo:.3}-{hi:.3}]  rounds: {}{verdict}",
        rounds.join(" ")
    );
    m
}

/// The node's half of the hand-built pod path: bridge `hbr0` (`10.250.<n>.1/24`), a pod namespace
/// on a veth (`10.250.<n>.2/24`, default route via the bridge), VXLAN `hvx42` carrying
/// `10.250.<n>.0/32`, and flannel's three entries towards the peer (`10.250.<peer>.0/24`).
fn hand_pod_side(node: &NodeEnv, pod: &Netns, n: u8, peer: u8, peer_ip: &str) {
    let mac = |i: u8| format!("02:fe:00:00:00:{i:02x}");
    veth(pod, "eth0", &node.ns, HAND_VETH);
    node.ns.sh(&format!(
        "sysctl -qw net.ipv4.ip_forward=1 \
         && ip link add {HAND_BR} type bridge && ip link set {HAND_BR} mtu {POD_MTU} \
         && ip addr add 10.250.{n}.1/24 dev {HAND_BR} && ip link set {HAND_BR} up \
         && ip link set {HAND_VETH} mtu {POD_MTU} master {HAND_BR} up \
         && ip link add {HAND_VX} type vxlan id {HAND_VNI} dstport {HAND_PORT} local {} dev eth0 \
            nolearning \
         && ip link set {HAND_VX} address {} mtu {POD_MTU} up \
         && ip addr add 10.250.{n}.0/32 dev {HAND_VX} \
         && ip neigh add 10.250.{peer}.0 lladdr {} dev {HAND_VX} nud permanent \
         && bridge fdb append {} dev {HAND_VX} dst {peer_ip} self permanent \
         && ip route add 10.250.{peer}.0/24 via 10.250.{peer}.0 dev {HAND_VX} onlink",
        node.ip,
        mac(n),
        mac(peer),
        mac(peer),
    ));
    pod.sh(&format!(
        "ip link set eth0 mtu {POD_MTU} && ip addr add 10.250.{n}.2/24 dev eth0 \
         && ip link set eth0 up && ip route add default via 10.250.{n}.1"
    ));
}

/// Points the hand-built pod subnet route of `node` at the tunnel (`vxlan`) or at the peer node
/// over the underlay (routed, no encapsulation).
fn hand_route(node: &NodeEnv, peer: u8, peer_ip: &str, vxlan: bool) {
    let via = if vxlan {
        format!("10.250.{peer}.0 dev {HAND_VX} onlink")
    } else {
        format!("{peer_ip} dev eth0")
    };
    node.ns
        .sh(&format!("ip route replace 10.250.{peer}.0/24 via {via}"));
}

/// Bounded reachability check before measuring.
fn ping(from: &Netns, ip: &str, what: &str) {
    let ok = wait_until(Duration::from_secs(5), || {
        from.try_sh(&format!("ping -c1 -W1 {ip}")).status.success()
    });
    assert!(ok, "{what}: {ip} unreachable");
}

/// With `FERRY_BENCH_DUMP` set: the configuration of every device, route, rule and sysctl in
/// the given namespaces, to diff ferry's path against the hand-built one.
fn dump(nodes: &[&Netns], pods: &[&Netns]) {
    if std::env::var("FERRY_BENCH_DUMP").is_err() {
        return;
    }
    for ns in nodes.iter().chain(pods) {
        println!("--- {} ---\n{}", ns.name(), ns.sh("ip -d link show"));
        println!("{}", ns.sh("ip route show"));
        let feats = ns.try_sh(
            "for d in $(ls /sys/class/net); do echo \"== $d\"; ethtool -k $d 2>/dev/null \
             | grep -v fixed; done",
        );
        println!("{}", String::from_utf8_lossy(&feats.stdout));
        let ctl = ns.try_sh(
            "iptables-save 2>/dev/null; \
             sysctl -a 2>/dev/null | grep '^net\\.' | grep -v '^net\\.ipv6'",
        );
        println!("{}", String::from_utf8_lossy(&ctl.stdout));
    }
}

fn switch_backend(cp: &ControlPlane, nodes: [&mut NodeEnv; 2], backend: &str) {
    for n in nodes {
        n.kill_agent();
        n.args = vec!["--backend".into(), backend.into()];
        n.start_agent(cp);
    }
}

fn main() {
    if !privileged("overlay bench") {
        return;
    }
    let s = Settings::from_env();
    let root = RootSnapshot::take();
    {
        let cp = ControlPlane::start();
        let mut a = NodeEnv::new(&cp, "node-a", "pa", "10.99.0.11");
        let mut b = NodeEnv::new(&cp, "node-b", "pb", "10.99.0.12");
        for n in [&mut a, &mut b] {
            n.args = vec!["--backend".into(), "vxlan".into()];
        }
        cp.create_node("node-a", Some(&a.ip));
        cp.create_node("node-b", Some(&b.ip));
        a.start_agent(&cp);
        b.start_agent(&cp);
        let cb = cp.wait_pod_cidr("node-b");
        for n in [&a, &b] {
            let f = n.conf_dir().join("10-ferry.conflist");
            assert!(
                wait_until(Duration::from_secs(15), || f.exists()),
                "{}",
                n.logs()
            );
        }
        let ca = cp.wait_pod_cidr("node-a");
        assert!(
            wait_until(Duration::from_secs(10), || {
                a.ns.sh("ip route show dev ferry.1").contains(&cb)
                    && b.ns.sh("ip route show dev ferry.1").contains(&ca)
            }),
            "{}{}",
            a.logs(),
            b.logs()
        );
        let pod_a = Netns::new("fpa");
        let pod_b = Netns::new("fpb");
        let _ip_a = a.add_pod(&pod_a, "pod-a");
        let ip_b = b.add_pod(&pod_b, "pod-b");

        // Hand-built baselines, living in the test namespaces (they die with them).
        let hpod_a = Netns::new("hpa");
        let hpod_b = Netns::new("hpb");
        hand_pod_side(&a, &hpod_a, 1, 2, &b.ip);
        hand_pod_side(&b, &hpod_b, 2, 1, &a.ip);
        for (n, local, remote, addr) in [
            (&a, &a.ip, &b.ip, "192.168.77.1/24"),
            (&b, &b.ip, &a.ip, "192.168.77.2/24"),
        ] {
            n.ns.sh(&format!(
                "ip link add hv0 type vxlan id 43 dstport 4790 local {local} remote {remote} \
                 dev eth0 && ip link set hv0 mtu {POD_MTU} up && ip addr add {addr} dev hv0"
            ));
        }
        ping(&pod_a, &ip_b, "ferry vxlan pod->pod");
        ping(&hpod_a, "10.250.2.2", "hand vxlan pod->pod");
        ping(&a.ns, "192.168.77.2", "hand vxlan node->node");
        dump(&[&a.ns], &[&pod_a, &hpod_a]);

        let phases: Vec<&str> = PHASES
            .iter()
            .zip(s.phases)
            .filter_map(|(p, on)| on.then_some(*p))
            .collect();
        println!(
            "overlay bench: iperf3 single stream, {} rounds x {} s per path, paths interleaved \
             per round; phases {}; affinity {}; Gbit/s median [min-max]",
            s.rounds,
            s.seconds,
            phases.join(","),
            s.affinity.map_or("none".to_owned(), |(c, sv)| format!(
                "client cpu {c}, server cpu {sv}"
            ))
        );

        let hand_pp = |name| Path {
            name,
            server: &hpod_b,
            client: &hpod_a,
            ip: "10.250.2.2".into(),
        };
        let ferry_pp = |name| Path {
            name,
            server: &pod_b,
            client: &pod_a,
            ip: ip_b.clone(),
        };
        // Phase 1: vxlan.
        let mut vxlan = None;
        if s.phases[0] {
            let paths = [
                ferry_pp("ferry vxlan pod->pod"),
                hand_pp("hand vxlan pod->pod"),
                Path {
                    name: "hand vxlan node->node",
                    server: &b.ns,
                    client: &a.ns,
                    ip: "192.168.77.2".into(),
                },
            ];
            let t = Instant::now();
            let vx = phase(&paths, &s);
            let vx_med = report("phase vxlan", &paths, &vx, t.elapsed().as_secs_f64());
            let r_vx = ratio(
                "ferry vxlan / hand vxlan pod->pod",
                &vx[0],
                &vx[1],
                Some(0.95),
            );
            ratio("ferry vxlan / hand vxlan node->node", &vx[0], &vx[2], None);
            ratio("hand vxlan pod->pod / node->node", &vx[1], &vx[2], None);
            vxlan = Some((r_vx, vx_med[0]));
        }

        // Phase 2: host-gw.
        if s.phases[1] {
            switch_backend(&cp, [&mut a, &mut b], "host-gw");
            let (ia, ib) = (a.ip.clone(), b.ip.clone());
            assert!(
                wait_until(Duration::from_secs(10), || {
                    a.ns.sh("ip route show proto 78")
                        .contains(&format!("via {ib} dev eth0"))
                        && b.ns
                            .sh("ip route show proto 78")
                            .contains(&format!("via {ia} dev eth0"))
                }),
                "{}{}",
                a.logs(),
                b.logs()
            );
            hand_route(&a, 2, &b.ip, false);
            hand_route(&b, 1, &a.ip, false);
            ping(&pod_a, &ip_b, "ferry host-gw pod->pod");
            ping(&hpod_a, "10.250.2.2", "hand routed pod->pod");
            let paths = [
                ferry_pp("ferry host-gw pod->pod"),
                hand_pp("hand routed pod->pod"),
                Path {
                    name: "underlay node->node",
                    server: &b.ns,
                    client: &a.ns,
                    ip: b.ip.clone(),
                },
            ];
            let t = Instant::now();
            let hg = phase(&paths, &s);
            report("phase host-gw", &paths, &hg, t.elapsed().as_secs_f64());
            ratio("ferry host-gw / underlay", &hg[0], &hg[2], Some(0.9));
            ratio("ferry host-gw / hand routed pod->pod", &hg[0], &hg[1], None);
            ratio("hand routed pod->pod / underlay", &hg[1], &hg[2], None);
        }

        // Phase 3: udp.
        if s.phases[2] {
            switch_backend(&cp, [&mut a, &mut b], "udp");
            assert!(
                wait_until(Duration::from_secs(10), || {
                    a.ns.sh("ip route show proto 78").contains("dev ferry.udp")
                        && b.ns.sh("ip route show proto 78").contains("dev ferry.udp")
                }),
                "{}{}",
                a.logs(),
                b.logs()
            );
            hand_route(&a, 2, &b.ip, true);
            hand_route(&b, 1, &a.ip, true);
            ping(&pod_a, &ip_b, "ferry udp pod->pod");
            ping(&hpod_a, "10.250.2.2", "hand vxlan pod->pod");
            let paths = [
                ferry_pp("ferry udp pod->pod"),
                hand_pp("hand vxlan pod->pod"),
            ];
            let t = Instant::now();
            let ud = phase(&paths, &s);
            let ud_med = report("phase udp", &paths, &ud, t.elapsed().as_secs_f64());
            let r_ud = ratio("ferry udp / hand vxlan pod->pod", &ud[0], &ud[1], None);
            if let Some((r_vx, vx_med)) = vxlan {
                let cross = r_ud / r_vx;
                let plain = ud_med[0] / vx_med;
                println!(
                    "  ratio {:<46} {cross:.3}  (udp-phase ratio / vxlan-phase ratio, both vs \
                     hand vxlan pod->pod)  target >= 0.5: {}",
                    "ferry udp / ferry vxlan (drift-corrected)",
                    if cross >= 0.5 { "met" } else { "NOT met" }
                );
                println!(
                    "  ratio {:<46} {plain:.3}  (median / median across phases)",
                    "ferry udp / ferry vxlan (plain)"
                );
            }
        }
    }
    root.assert_unchanged();
}
