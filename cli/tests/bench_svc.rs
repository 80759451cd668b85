//! The Service scale sweep of `ferry bench` (cli/src/bench/net/svc.rs, compiled into this test)
//! end to end through `ferry up` (privileged), in both proxy modes: a 2-node cluster, a bench
//! server pod per node (`ferry bench-agent serve`), a client pod on node-1 whose load generator
//! and prober run in its network namespace and below node-1's cgroup (as a pod's processes do, so
//! the socket LB applies), and the lab's external host (`<name>-ext`) with a host route to the
//! node-1 server via node-1 (the bench's X1); the sweep at 0 and 50 Services with 4 endpoints
//! each, one short round, from both. Checked: a point per (target, test) and count with non-zero
//! connections/s and latencies, the ClusterIP's connections/s at least a quarter of the pod IP's
//! (the control), every NodePort point's connections counted by node-1's NodePort counter (read
//! here, not by the sweep's code: the tc datapath's `new_flows` + `ct_original`, or the
//! packets of the nat rules matching the nodePort) at least once each, its ratio taken against
//! the external control, the
//! datapath grows with N (map entries from `ferry-agent services`, rules from `iptables-save`, both
//! independent of the sweep), programming latencies recorded and under 5 s, and no object of the
//! sweep left in the API; `ferry down` leaves nothing behind.

mod common;

#[expect(
    dead_code,
    reason = "the sweep module also holds the bench-agent probe command, unused here"
)]
#[path = "../src/bench/net/svc.rs"]
mod svc;

use common::*;
use ferry_bench::loadgen::{Outcome, Spec};
use ferry_bench::probe::{Expect, ProbeOutcome, ProbeSpec};
use ferry_tests::{privileged, RootSnapshot};
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// One cluster at a time: the machine has two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const PORT: u16 = 7000;
/// The Services' targetPort (the bench pods' second port, as in the lab).
const TARGET_PORT: u16 = 7001;

/// Runs `ferry bench-agent <verb> --spec <json>` in the client pod (its netns, a leaf cgroup below
/// node-1's) and returns its stdout.
fn in_client(netns: &Path, cgroup: &Path, verb: &str, spec: &str) -> anyhow::Result<String> {
    let ns = std::fs::File::open(netns)?;
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(cgroup.join("cgroup.procs"))?;
    let mut cmd = Command::new(FERRY);
    cmd.args(["bench-agent", verb, "--spec", spec])
        .stdin(Stdio::null());
    ferry_sys::process::OnExec::new()
        .join_cgroup(procs.as_fd())?
        .enter_netns(ns.as_fd())?
        .install(&mut cmd);
    let out = cmd.output()?;
    anyhow::ensure!(out.status.success(), "bench-agent {verb}: {}", text(&out));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ferry bench-agent run --spec <json>` in the external host's namespace.
fn in_ext(netns: &Path, spec: &str) -> anyhow::Result<String> {
    let ns = std::fs::File::open(netns)?;
    let mut cmd = Command::new(FERRY);
    cmd.args(["bench-agent", "run", "--spec", spec])
        .stdin(Stdio::null());
    ferry_sys::process::OnExec::new()
        .enter_netns(ns.as_fd())?
        .install(&mut cmd);
    let out = cmd.output()?;
    anyhow::ensure!(out.status.success(), "bench-agent run: {}", text(&out));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// node-1's pin directory (ebpf mode).
fn node1_bpffs(c: &Cluster) -> PathBuf {
    c.state()["bpffs"]
        .as_str()
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new("/sys/fs/bpf").join(format!("ferry-{}", c.name)))
        .join("node-1")
}

/// `ferry-agent services -o json` for node-1's pinned datapath.
fn node1_services(c: &Cluster) -> anyhow::Result<serde_json::Value> {
    let out = Command::new(ferry_tests::bin_path("ferry-agent"))
        .args(["services", "-o", "json", "--bpffs-dir"])
        .arg(node1_bpffs(c))
        .output()?;
    anyhow::ensure!(out.status.success(), "ferry-agent services: {}", text(&out));
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// node-1's NodePort counter, read independently of the sweep's code: the tc datapath's
/// `new_flows` + `ct_original` (ebpf, `ferry-agent services -o json`), or the packets of the nat
/// rules matching `--dport <port>` (iptables).
fn nodeport_counter(c: &Cluster, mode: &str, port: u16) -> anyhow::Result<u64> {
    if mode == "ebpf" {
        let v = node1_services(c)?;
        let k = &v["external"]["counters"];
        match (k["new_flows"].as_u64(), k["ct_original"].as_u64()) {
            (Some(a), Some(b)) => Ok(a + b),
            _ => anyhow::bail!("no tc datapath counters: {v}"),
        }
    } else {
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}-n1", c.name))
            .args(["iptables-save", "-c", "-t", "nat"])
            .output()?;
        anyhow::ensure!(out.status.success(), "iptables-save: {}", text(&out));
        Ok(svc::nodeport_rule_packets(
            &String::from_utf8_lossy(&out.stdout),
            port,
        ))
    }
}

/// Datapath size on node-1, read without the sweep: eBPF map entries (frontends with their slots,
/// backend ids) or the iptables rules of the node's namespace.
fn datapath_entries(c: &Cluster, mode: &str) -> anyhow::Result<u64> {
    if mode == "ebpf" {
        let v = node1_services(c)?;
        let fronts = v["frontends"].as_array().cloned().unwrap_or_default();
        let slots: u64 = fronts
            .iter()
            .map(|f| 1 + f["backends"].as_array().map_or(0, |b| b.len() as u64))
            .sum();
        Ok(slots + v["maps"]["backends"].as_u64().unwrap_or(0))
    } else {
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}-n1", c.name))
            .arg("iptables-save")
            .output()?;
        anyhow::ensure!(out.status.success(), "iptables-save: {}", text(&out));
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("-A "))
            .count() as u64)
    }
}

fn sweep_in_mode(mode: &str) {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    binaries(&["ferry-server", "ferry-kubelet", "ferry-agent", "ferry-cni"]);
    let root = RootSnapshot::take();
    let c = Cluster::new();
    let out = c.up(&["--nodes", "2", "--service-proxy", mode]);
    assert!(out.status.success(), "ferry up: {}", text(&out));
    let kubeconfig = c.dir().join("kubeconfig");
    let k = Kubectl(kubeconfig.to_string_lossy().into_owned());

    // A bench server per node, the client on node-1.
    for i in 1..=2 {
        k.apply(&json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("srv-{i}"), "namespace": "default"},
            "spec": {"nodeName": format!("node-{i}"), "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "s", "image": "ferry-bench",
                    "command": [FERRY, "bench-agent", "serve", "--listen", format!("0.0.0.0:{PORT}"),
                        "--listen", format!("0.0.0.0:{TARGET_PORT}")],
                    "readinessProbe": {"tcpSocket": {"port": PORT}, "periodSeconds": 1}}]}}));
    }
    k.apply(&json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "client", "namespace": "default"},
        "spec": {"nodeName": "node-1", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "python:3",
                "command": ["/usr/bin/python3", "-c", "import time; time.sleep(1e9)"]}]}}));
    let mut backends: Vec<IpAddr> = Vec::new();
    for p in ["srv-1", "srv-2", "client"] {
        let pod = k.wait(&["get", "pod", p], 60, &format!("{p} running"), |p| {
            p["status"]["phase"] == "Running" && p["status"]["podIP"].is_string()
        });
        if p.starts_with("srv") {
            backends.push(pod["status"]["podIP"].as_str().unwrap().parse().unwrap());
        }
    }
    let client_pod = k.json(&["get", "pod", "client"]);
    let netns = c
        .dir()
        .join("nodes/n1/kubelet/netns")
        .join(client_pod["metadata"]["uid"].as_str().unwrap());
    let cgroup = c
        .cgroup()
        .join("n1")
        .join(format!("bench-svc-{}", std::process::id()));
    std::fs::create_dir_all(&cgroup).unwrap();

    let run_client = |spec: &Spec| -> anyhow::Result<Outcome> {
        let out = in_client(&netns, &cgroup, "run", &serde_json::to_string(spec)?)?;
        Ok(serde_json::from_str(out.trim())?)
    };
    let run_probe = |spec: &ProbeSpec| -> anyhow::Result<ProbeOutcome> {
        let out = in_client(&netns, &cgroup, "probe", &serde_json::to_string(spec)?)?;
        Ok(serde_json::from_str(out.trim())?)
    };
    // The servers answer before the sweep starts.
    for b in &backends {
        let mut spec = ProbeSpec::new(SocketAddr::new(*b, PORT), Expect::Reachable);
        spec.give_up_ms = 20_000;
        run_probe(&spec).unwrap_or_else(|e| panic!("server {b}:{PORT}: {e:#}"));
    }
    let entries = || datapath_entries(&c, mode);

    // The external host reaches the node-1 server (the probed Service's backend) by a host route
    // via node-1, inside its own namespace (gone with the cluster; deleted below too).
    let ext_ns = PathBuf::from(format!("/run/netns/{}-ext", c.name));
    let dst = format!("{}/32", backends[0]);
    let route = Command::new("nsenter")
        .arg(format!("--net={}", ext_ns.display()))
        .args(["ip", "route", "add", &dst, "via", &external::node_ip(1)])
        .output()
        .unwrap();
    assert!(route.status.success(), "route to {dst}: {}", text(&route));
    let ext_client = |spec: &Spec| -> anyhow::Result<Outcome> {
        let out = in_ext(&ext_ns, &serde_json::to_string(spec)?)?;
        Ok(serde_json::from_str(out.trim())?)
    };
    let ext_probe = |spec: &ProbeSpec| -> anyhow::Result<ProbeOutcome> {
        let ns = std::fs::File::open(&ext_ns)?;
        let mut cmd = Command::new(FERRY);
        cmd.args([
            "bench-agent",
            "probe",
            "--spec",
            &serde_json::to_string(spec)?,
        ])
        .stdin(Stdio::null());
        ferry_sys::process::OnExec::new()
            .enter_netns(ns.as_fd())?
            .install(&mut cmd);
        let out = cmd.output()?;
        anyhow::ensure!(out.status.success(), "bench-agent probe: {}", text(&out));
        Ok(serde_json::from_str(
            String::from_utf8_lossy(&out.stdout).trim(),
        )?)
    };
    let np_counter = |port: u16| nodeport_counter(&c, mode, port);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let kube = rt
        .block_on(
            ferry_kube::ClientBuilder::from_kubeconfig_file(&kubeconfig)
                .read_timeout(std::time::Duration::from_secs(10))
                .build(),
        )
        .unwrap();
    let ctx = svc::SweepCtx {
        kube,
        mode: mode.into(),
        namespace: "default".into(),
        backend_ips: backends.clone(),
        port: PORT,
        target_port: TARGET_PORT,
        run_client: &run_client,
        run_probe: &run_probe,
        datapath_entries: &entries,
        counts: vec![0, 50],
        endpoints: 4,
        rounds: 1,
        duration_s: 1.0,
        warmup_s: 0.3,
        changes: 5,
        from: svc::SvcFrom::BOTH,
        external: Some(svc::ExternalCtx {
            node_ip: external::node_ip(1).parse().unwrap(),
            run_client: &ext_client,
            run_probe: &ext_probe,
            nodeport_counter: &np_counter,
            counter_name: format!("node-1 NodePort counter ({mode})"),
        }),
    };
    let started = std::time::Instant::now();
    let (points, programming) = svc::sweep(&ctx).unwrap_or_else(|e| panic!("sweep: {e:#}"));
    println!(
        "{mode}: sweep in {:.1} s\n{}\n{}",
        started.elapsed().as_secs_f64(),
        serde_json::to_string_pretty(&points).unwrap(),
        serde_json::to_string_pretty(&programming).unwrap()
    );

    for n in [0u32, 50] {
        for target in ["clusterip", "pod-ip", "nodeport", "pod-ip-external"] {
            for test in ["tcp_cc", "tcp_crr"] {
                let p = points
                    .iter()
                    .find(|p| p.services == n && p.target == target && p.test == test)
                    .unwrap_or_else(|| panic!("no point for {n} Services, {target}, {test}"));
                assert_eq!(p.mode, mode);
                assert_eq!(p.cps.n, 1, "{n} {target} {test}: runs summarised");
                assert!(p.cps.median > 0.0, "{n} {target} {test}: cps {:?}", p.cps);
                assert!(p.connect_p50_us.median > 0.0, "{n} {target} {test}: p50");
                assert!(
                    p.connect_p99_us.median >= p.connect_p50_us.median,
                    "{n} {target} {test}: p99 < p50"
                );
                assert!(p.full_sync_s > 0.0 && p.full_sync_s < 60.0, "{p:?}");
                assert!(p.connections > 0, "{n} {target} {test}: no connection");
                if target == "nodeport" {
                    // Through the NodePort: node-1's NodePort counter grew by at least one per
                    // connection (to the backend's pod IP, or anywhere else, it would not move).
                    let v = p.verified.as_ref().unwrap_or_else(|| {
                        panic!("{n} nodeport {test}: no counter read around its runs")
                    });
                    assert!(v.counter.contains("nodePort 3"), "{v:?}");
                    assert!(
                        v.delta >= p.connections,
                        "{n} nodeport {test}: the NodePort counter grew by {} for {} connections",
                        v.delta,
                        p.connections
                    );
                    let r = p.connect_p50_us.ratio.as_ref().expect("nodeport p50 ratio");
                    assert_eq!(r.baseline, format!("pod-ip-external {test} at N={n}"));
                    assert!(
                        r.median > 0.0 && r.min <= r.median && r.median <= r.max,
                        "{r:?}"
                    );
                } else {
                    assert!(
                        p.verified.is_none(),
                        "{n} {target} {test}: {:?}",
                        p.verified
                    );
                }
            }
        }
        // A Service costs a lookup, not most of the connection rate: when TIME_WAIT sockets
        // left by the control were hit by ClusterIP SYNs (PAWS drops behind DNAT), the ClusterIP
        // made 2-8 % of the control's connections/s.
        for test in ["tcp_cc", "tcp_crr"] {
            let cps = |target: &str| {
                points
                    .iter()
                    .find(|p| p.services == n && p.target == target && p.test == test)
                    .map_or(0.0, |p| p.cps.median)
            };
            assert!(
                cps("clusterip") >= 0.25 * cps("pod-ip"),
                "{n} Services, {test}: ClusterIP {} conn/s against the pod IP's {}",
                cps("clusterip"),
                cps("pod-ip")
            );
        }
    }
    let at = |n: u32| {
        points
            .iter()
            .find(|p| p.services == n)
            .unwrap()
            .datapath_entries
    };
    // 50 Services of 4 endpoints: at least one rule / entry per Service and endpoint more.
    assert!(
        at(50) >= at(0) + 50 * 5,
        "datapath entries at 0 and 50 Services: {} and {}",
        at(0),
        at(50)
    );
    assert_eq!(programming.len(), 2);
    for p in &programming {
        assert_eq!(p.mode, mode);
        assert_eq!(p.changes, 10, "5 additions and 5 removals");
        assert!(
            p.p50_ms > 0.0 && p.p50_ms <= p.p99_ms && p.p99_ms <= p.max_ms,
            "{p:?}"
        );
        assert!(p.max_ms < 5000.0, "{p:?}");
    }

    // Nothing of the sweep is left.
    let left = k.ok(&[
        "get",
        "services,endpointslices",
        "-A",
        "-l",
        svc::RUN_LABEL,
        "-o",
        "name",
    ]);
    assert_eq!(left.trim(), "", "objects of the sweep left");

    let _ = Command::new("nsenter")
        .arg(format!("--net={}", ext_ns.display()))
        .args(["ip", "route", "del", &dst])
        .output();
    let _ = std::fs::remove_dir(&cgroup);
    let down = c.ferry("down", &[]);
    assert!(down.status.success(), "{}", text(&down));
    c.assert_gone();
    root.assert_unchanged();
}

#[test]
fn service_sweep_with_the_ebpf_proxy() {
    if !privileged("bench_svc_ebpf") {
        return;
    }
    sweep_in_mode("ebpf");
}

#[test]
fn service_sweep_with_the_iptables_proxy() {
    if !privileged("bench_svc_iptables") {
        return;
    }
    sweep_in_mode("iptables");
}
