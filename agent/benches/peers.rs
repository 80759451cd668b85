//! `cargo bench -p ferry-agent --bench peers` (privileged; harness = false): the scale target
//! "route programming for 1,000 simulated peer Nodes (objects only) in <= 1 s, agent memory
//! <= 50 MB there".
//!
//! A control-plane namespace runs the release `ferry-server` (`--cluster-cidr 10.240.0.0/12`, so
//! 1,000 /24 podCIDRs fit), one node namespace runs the release `ferry-agent`. After the agent is
//! ready (conflist written, annotations published), 1,000 peer Node objects are created with 20
//! concurrent kube-rs requests, each complete in one request: `spec.podCIDR` set explicitly
//! (10.(240+n/256).(n%256).0/24), the flannel `public-ip` annotation on a /16 underlay the node
//! also holds (10.100.0.0/16, so host-gw's `via` is on a connected subnet) and, for vxlan, the
//! `backend-data` annotation with a `VtepMAC`. A thread polls the node namespace over netlink every
//! 20 ms and timestamps when the kernel holds all 1,000 routes (vxlan: also 1,000 FDB and 1,000
//! permanent neighbour entries on `ferry.1`). Then all peers are deleted with one
//! `deletecollection` (label selector) and the time until every entry is gone is measured.
//!
//! Reported per backend (median [min-max] of [`ROUNDS`] rounds): create throughput of the API server,
//! first create -> all programmed, last create answered -> all programmed (the agent's own
//! latency), deletecollection -> all removed, and the agent's peak RSS (`VmHWM`).
//! Build the spawned binaries first, in release: `cargo build --release -p controlplane-lite --bin
//! ferry-server -p ferry-cni` (the bench runs from `target/release`).

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use ferry_agent::netlink::Netlink;
use ferry_agent::overlay::{peers as hostgw, vxlan};
use ferry_tests::{privileged, RootSnapshot, Spread};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use std::time::{Duration, Instant};

const PEERS: u32 = 1000;
const ROUNDS: usize = 3;
const CONCURRENCY: usize = 20;
const CLUSTER_CIDR: &str = "10.240.0.0/12";
const LABEL: &str = "ferry.dev/bench";
const POLL: Duration = Duration::from_millis(20);
const TIMEOUT: Duration = Duration::from_secs(120);
const OWN: &str = "node-a";
const OWN_IP: &str = "10.99.0.11";

/// What the kernel of the node namespace holds: (routes of proto 78, FDB entries with a
/// destination on `ferry.1`, permanent neighbours on `ferry.1`).
fn counts(nl: &mut Netlink) -> (usize, usize, usize) {
    let routes = nl
        .main_routes_v4()
        .unwrap()
        .iter()
        .filter(|r| r.protocol == hostgw::ROUTE_PROTOCOL)
        .count();
    let Some(vx) = nl.link_by_name(vxlan::DEVICE).unwrap() else {
        return (routes, 0, 0);
    };
    let fdb = nl
        .fdb(vx.index)
        .unwrap()
        .iter()
        .filter(|f| f.dst.is_some())
        .count();
    let neigh = nl
        .neighbours_v4(vx.index)
        .unwrap()
        .iter()
        .filter(|n| n.permanent)
        .count();
    (routes, fdb, neigh)
}

/// Polls every [`POLL`] until `done(counts)`; the instant it first held (None on timeout).
fn wait_counts(
    nl: &mut Netlink,
    done: impl Fn((usize, usize, usize)) -> bool,
) -> (Option<Instant>, (usize, usize, usize)) {
    let start = Instant::now();
    loop {
        let c = counts(nl);
        if done(c) {
            return (Some(Instant::now()), c);
        }
        if start.elapsed() > TIMEOUT {
            return (None, c);
        }
        std::thread::sleep(POLL);
    }
}

/// Peer `i`'s Node object.
fn peer(i: u32, vxlan: bool) -> Node {
    let n = i + 1; // 10.240.0.0/24 is the agent's own (the first the allocator hands out).
    let cidr = format!("10.{}.{}.0/24", 240 + n / 256, n % 256);
    let ip = format!("10.100.{}.{}", (i + 2) / 256, (i + 2) % 256);
    let name = format!("peer-{i:04}");
    let mut annotations = serde_json::Map::new();
    annotations.insert(
        "flannel.alpha.coreos.com/public-ip".into(),
        json!(ip.clone()),
    );
    annotations.insert(
        "flannel.alpha.coreos.com/kube-subnet-manager".into(),
        json!("true"),
    );
    if vxlan {
        annotations.insert(
            "flannel.alpha.coreos.com/backend-type".into(),
            json!("vxlan"),
        );
        annotations.insert(
            "flannel.alpha.coreos.com/backend-data".into(),
            json!(vxlan::backend_data(&vxlan::vtep_mac(&name))),
        );
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {LABEL: "peer"}, "annotations": annotations},
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
    }))
    .unwrap()
}

/// One round's figures, in seconds.
#[derive(Debug, Clone, Copy)]
struct Round {
    create: f64,
    programmed: f64,
    agent: f64,
    delete_api: f64,
    removed: f64,
}

/// Creates the peers, waits for their entries, deletes them, waits for the entries to go.
async fn round(api: &Api<Node>, nl: Netlink, vxlan: bool) -> (Round, Netlink) {
    let want = PEERS as usize;
    let target =
        move |(r, f, n): (usize, usize, usize)| r == want && (!vxlan || (f == want && n == want));
    let poller = std::thread::spawn(move || {
        let mut nl = nl;
        let r = wait_counts(&mut nl, target);
        (nl, r)
    });
    let t0 = Instant::now();
    let results: Vec<_> = futures::stream::iter(0..PEERS)
        .map(|i| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &peer(i, vxlan)).await }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let created = Instant::now();
    for r in results {
        r.expect("creating a peer Node");
    }
    let (mut nl, (done, c)) = tokio::task::spawn_blocking(move || poller.join().unwrap())
        .await
        .unwrap();
    let done =
        done.unwrap_or_else(|| panic!("not all entries programmed within {TIMEOUT:?}: {c:?}"));

    let d0 = Instant::now();
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels(&format!("{LABEL}=peer")),
    )
    .await
    .expect("deletecollection of the peers");
    let deleted = Instant::now();
    let (nl, (gone, c)) = tokio::task::spawn_blocking(move || {
        let r = wait_counts(&mut nl, |c| c == (0, 0, 0));
        (nl, r)
    })
    .await
    .unwrap();
    let gone = gone.unwrap_or_else(|| panic!("entries not removed within {TIMEOUT:?}: {c:?}"));
    let s = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64();
    (
        Round {
            create: s(t0, created),
            programmed: s(t0, done),
            agent: s(created, done),
            delete_api: s(d0, deleted),
            removed: s(d0, gone),
        },
        nl,
    )
}

/// CPU seconds (user + system) `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let hz = ferry_sys::process::clock_ticks_per_second() as f64;
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / hz
}

/// `VmHWM` / `VmRSS` of `pid`, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn main() {
    if !privileged("peers bench") {
        return;
    }
    let root = RootSnapshot::take();
    let mut report = Vec::new();
    {
        let cp = ControlPlane::start_with(&["--cluster-cidr", CLUSTER_CIDR]);
        let mut node = NodeEnv::new(&cp, OWN, "pa", OWN_IP);
        // The peers' underlay addresses live on a /16 the node is connected to.
        node.ns.sh("ip addr add 10.100.0.1/16 dev eth0");
        cp.create_node(OWN, Some(OWN_IP));
        let cidr = cp.wait_pod_cidr(OWN);
        assert_eq!(cidr, "10.240.0.0/24", "the peers' podCIDRs assume this");
        let token = cp.admin.clone();
        let ca = cp.ca().to_string_lossy().into_owned();
        let mut nl = node.ns.run(|| Netlink::new().unwrap());

        for backend in ["vxlan", "host-gw"] {
            let vx = backend == "vxlan";
            if node.agent.is_some() {
                node.kill_agent();
                node.ns.command(AGENT).arg("uninstall").output().unwrap();
            }
            node.args = vec![
                "--backend".into(),
                backend.into(),
                "--cluster-cidr".into(),
                CLUSTER_CIDR.into(),
            ];
            node.start_agent(&cp);
            let conflist = node.conf_dir().join("10-ferry.conflist");
            let want_type = backend.to_owned();
            let ready = ferry_tests::wait_until(Duration::from_secs(30), || {
                conflist.exists()
                    && cp.node(OWN)["metadata"]["annotations"]
                        ["flannel.alpha.coreos.com/backend-type"]
                        == want_type.as_str()
            });
            assert!(ready, "agent not ready:\n{}", node.logs());
            let pid = node.agent.as_ref().unwrap().id();
            let cpu0 = cpu_seconds(pid);

            // The API client must live in the control-plane namespace: build and drive it on
            // a runtime whose threads are created there.
            let (rounds, nl2) = cp.cp.run(|| {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let api = admin_api(&token, &ca).await;
                    let mut nl = nl;
                    let mut rounds = Vec::new();
                    for _ in 0..ROUNDS {
                        let (r, n) = round(&api, nl, vx).await;
                        nl = n;
                        rounds.push(r);
                    }
                    (rounds, nl)
                })
            });
            nl = nl2;
            let (hwm, rss) = memory(pid);
            let cpu = (cpu_seconds(pid) - cpu0) / ROUNDS as f64;
            report.push((backend, rounds, hwm, rss, cpu));
        }
    }
    root.assert_unchanged();

    println!(
        "peers bench: {PEERS} peer Node objects, {CONCURRENCY} concurrent creates, kernel polled every {} ms, median [min-max] of {ROUNDS} rounds",
        POLL.as_millis()
    );
    for (backend, rounds, hwm, rss, cpu) in &report {
        let m = |f: fn(&Round) -> f64| format!("{:.3}", Spread::over(rounds, f));
        let entries = if *backend == "vxlan" {
            "routes + fdb + neigh"
        } else {
            "routes"
        };
        println!("  {backend} ({entries}):");
        println!(
            "    create {PEERS} Nodes (API server)         {} s",
            m(|r| r.create)
        );
        println!(
            "    first create -> all programmed         {} s   target <= 1 s",
            m(|r| r.programmed)
        );
        println!(
            "    last create answered -> all programmed {} s   (agent latency)",
            m(|r| r.agent)
        );
        println!(
            "    deletecollection -> all removed        {} s   (API call {} s)",
            m(|r| r.removed),
            m(|r| r.delete_api)
        );
        println!(
            "    deletecollection answered -> removed   {} s   (agent latency)",
            m(|r| r.removed - r.delete_api)
        );
        println!("    agent CPU per round (create + delete)  {cpu:6.3} s   (mean over the rounds)");
        println!(
            "    agent peak RSS (VmHWM)                 {hwm:6.1} MiB target <= 50 MB (VmRSS now {rss:.1} MiB)"
        );
        for (i, r) in rounds.iter().enumerate() {
            println!(
                "    round {}: create {:.3} s, programmed {:.3} s, agent {:.3} s, removed {:.3} s",
                i + 1,
                r.create,
                r.programmed,
                r.agent,
                r.removed
            );
        }
    }
}

/// A kube-rs client with the admin token, trusting the server's CA.
async fn admin_api(token: &str, ca: &str) -> Api<Node> {
    let kc: kube::config::Kubeconfig = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "ferry", "cluster": {
            "server": format!("https://{CP_IP}:{PORT}"),
            "certificate-authority": ca,
        }}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "ferry", "context": {"cluster": "ferry", "user": "admin"}}],
        "current-context": "ferry",
    }))
    .unwrap();
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap();
    Api::all(kube::Client::try_from(config).unwrap())
}
