//! Privileged fault tests of the eBPF Service proxy (issue #12, "Bad input and faults" and
//! "Observability"):
//!
//! - `map_full_skips_the_frontend_and_counters_move`: the proxier in a private world (the `Lab`
//!   of `sock_lb.rs`: a private bpffs mount, a fresh cgroup and netns, real sockets). The
//!   datapath counters read by `Proxier::datapath` (what `/metrics` exports) move with real
//!   connects and refusals. Then the backend map (the smaller one, 262,144 entries, the shipped
//!   object unchanged) is really filled through its pin with filler backends: a frontend that
//!   needs a new backend is skipped (counted in `failed`, nothing half-written: no entry, no
//!   slot), while a frontend whose backend already exists is added and the old one keeps
//!   serving; once room is made the skipped frontend is programmed at the next sync.
//! - `unavailable_ebpf_reaches_the_node_condition_and_falls_back`: the whole agent against
//!   `ferry-server` (the fixture of `common/`), with a real bpffs pin directory but a
//!   `--proxy-cgroup` that is a plain directory, not a cgroup: the programs load and pin, the
//!   kernel refuses the cgroup attachment. Without `--proxy-fallback` the Node gets
//!   `FerryServiceProxyReady=False` (`ProxierUnavailable`) with the kernel's reason; restarted
//!   with `--proxy-fallback`, the Service is programmed as iptables rules in the node namespace
//!   and the condition is `True` with a message naming the fallback and the reason; `/metrics`
//!   shows the iptables mode and no eBPF datapath families.

#![forbid(unsafe_code)]

mod common;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::ControlPlane;
use ferry_agent::bpf::LbMaps;
use ferry_agent::service::ebpf::EbpfProxier;
use ferry_agent::service::{Proto, Proxier as _};
use ferry_common::{names, Lb4Backend, LB4_BACKENDS_MAX_ENTRIES};
use ferry_tests::{privileged, unique, wait_until};
use serde_json::json;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 8, 10);
const VIP_EMPTY: Ipv4Addr = Ipv4Addr::new(10, 96, 8, 11);
const VIP_NEW: Ipv4Addr = Ipv4Addr::new(10, 96, 8, 12);
const VIP_SHARED: Ipv4Addr = Ipv4Addr::new(10, 96, 8, 13);

mod sock_lb_lab;

use sock_lb_lab::{got_names, table, Lab};

fn counter(p: &EbpfProxier, name: &str) -> u64 {
    let dp = p.datapath().expect("the eBPF proxier has datapath stats");
    dp.counters
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no counter {name}: {dp:?}"))
        .1
}

fn entries(p: &EbpfProxier, map: &str) -> Option<u64> {
    let dp = p.datapath().expect("datapath stats");
    dp.maps
        .iter()
        .find(|m| m.map == map)
        .unwrap_or_else(|| panic!("no map {map}: {dp:?}"))
        .entries
}

#[test]
fn map_full_skips_the_frontend_and_counters_move() {
    if !privileged("sock_lb_faults::map_full_skips_the_frontend_and_counters_move") {
        return;
    }
    let lab = Lab::new("slf");
    let a = lab.tcp_backend("a");
    let b = lab.tcp_backend("b");
    let mut proxier = lab.proxier();
    let t = table(&[
        (VIP, 80, Proto::Tcp, vec![a], None),
        (VIP_EMPTY, 80, Proto::Tcp, vec![], None),
    ]);
    let stats = proxier.sync(&t).expect("sync");
    assert_eq!((stats.changed, stats.failed), (2, 0));

    // Counters move with real connects (what /metrics exports after each sync).
    let (calls, rewrites, refused) = (
        counter(&proxier, "connect4_calls"),
        counter(&proxier, "connect4_rewrites"),
        counter(&proxier, "refused"),
    );
    let got = got_names(&lab.run(&["tcp", &VIP.to_string(), "80", "5"]));
    assert_eq!(got.get("a"), Some(&5), "{got:?}");
    let r = lab.run(&["tcp", &VIP_EMPTY.to_string(), "80", "2"]);
    assert!(r.iter().all(|r| r["errno"] == libc::ECONNREFUSED), "{r:?}");
    assert!(counter(&proxier, "connect4_calls") >= calls + 7);
    assert!(counter(&proxier, "connect4_rewrites") >= rewrites + 5);
    assert!(counter(&proxier, "refused") >= refused + 2);
    assert_eq!(counter(&proxier, "err_no_slot"), 0);
    // Map fill: VIP (entry + 1 slot) and VIP_EMPTY (entry); one backend.
    assert_eq!(entries(&proxier, names::LB4_SERVICES), Some(3));
    assert_eq!(entries(&proxier, names::LB4_BACKENDS), Some(1));
    assert_eq!(entries(&proxier, names::LB4_REVNAT), None);

    // Fill the backend map for real, through its pin, with ids the proxier never allocates.
    let start = Instant::now();
    let mut filler = LbMaps::open_pinned(&lab.pin_dir).expect("open pins");
    let junk = Lb4Backend::new(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 9));
    let mut written = Vec::new();
    let mut id = 1_000_000u32;
    let err = loop {
        match filler.insert_backend(id, junk) {
            Ok(()) => written.push(id),
            Err(e) => break e,
        }
        id += 1;
        assert!(
            written.len() <= LB4_BACKENDS_MAX_ENTRIES as usize,
            "the backend map took more than its capacity"
        );
    };
    let filled = start.elapsed();
    eprintln!(
        "backend map full after {} filler entries in {filled:?}: {err}",
        written.len()
    );
    assert_eq!(written.len() + 1, LB4_BACKENDS_MAX_ENTRIES as usize);
    let before = dump(&lab.pin_dir);

    // VIP_NEW needs a new backend: skipped, nothing of it written. VIP_SHARED reuses `a`.
    let t2 = table(&[
        (VIP, 80, Proto::Tcp, vec![a], None),
        (VIP_EMPTY, 80, Proto::Tcp, vec![], None),
        (VIP_NEW, 80, Proto::Tcp, vec![b], None),
        (VIP_SHARED, 80, Proto::Tcp, vec![a], None),
    ]);
    let stats = proxier.sync(&t2).expect("a full map is not a failed sync");
    assert_eq!((stats.changed, stats.failed), (1, 1), "{stats:?}");
    let after = dump(&lab.pin_dir);
    let added: Vec<&String> = after.iter().filter(|e| !before.contains(*e)).collect();
    assert_eq!(
        added.len(),
        2,
        "only VIP_SHARED's entry and slot: {added:?}"
    );
    assert!(!proxier.programmed().keys().any(|f| f.addr == VIP_NEW));
    assert_eq!(entries(&proxier, names::LB4_BACKENDS), Some(1));
    // Every good frontend keeps working.
    let got = got_names(&lab.run(&["tcp", &VIP.to_string(), "80", "3"]));
    assert_eq!(got.get("a"), Some(&3), "{got:?}");
    let got = got_names(&lab.run(&["tcp", &VIP_SHARED.to_string(), "80", "3"]));
    assert_eq!(got.get("a"), Some(&3), "{got:?}");
    // Retried every sync: still failing while full.
    let stats = proxier.sync(&t2).expect("sync");
    assert_eq!((stats.changed, stats.failed), (0, 1), "{stats:?}");

    // Room made: the skipped frontend is programmed at the next sync.
    for id in written.drain(..) {
        filler.remove_backend(id).expect("remove filler");
    }
    let stats = proxier.sync(&t2).expect("sync");
    assert_eq!((stats.changed, stats.failed), (1, 0), "{stats:?}");
    let got = got_names(&lab.run(&["tcp", &VIP_NEW.to_string(), "80", "3"]));
    assert_eq!(got.get("b"), Some(&3), "{got:?}");
    assert_eq!(entries(&proxier, names::LB4_BACKENDS), Some(2));
    assert_eq!(entries(&proxier, names::LB4_SERVICES), Some(7));
    assert!(
        filled < Duration::from_secs(60),
        "filling the backend map took {filled:?}"
    );
}

/// The service map's entries, independently (`bpftool map dump pinned`).
fn dump(pin_dir: &Path) -> BTreeSet<String> {
    let p = pin_dir.join(names::LB4_SERVICES);
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(&p)
        .output()
        .expect("bpftool");
    assert!(out.status.success(), "bpftool: {out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    v.as_array()
        .expect("array")
        .iter()
        .map(|e| format!("{}={}", e["key"], e["value"]))
        .collect()
}

/// A private bpffs instance on a temporary directory; unmounted (releasing every pin) on drop.
struct Bpffs(PathBuf);

impl Bpffs {
    fn new(tag: &str) -> Bpffs {
        let dir = std::env::temp_dir().join(format!("ferry-bpffs-{}", unique(tag)));
        std::fs::create_dir_all(&dir).expect("bpffs mount point");
        let fs = Bpffs(dir);
        let st = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&fs.0)
            .status()
            .expect("mount");
        assert!(
            st.success(),
            "mounting a private bpffs on {}",
            fs.0.display()
        );
        fs
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The Node's `FerryServiceProxyReady` condition, once it satisfies `f`.
fn wait_condition(
    cp: &ControlPlane,
    n: &common::NodeEnv,
    what: &str,
    f: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let ok = wait_until(Duration::from_secs(30), || {
        last = cp.node(&n.name)["status"]["conditions"]
            .as_array()
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c["type"] == "FerryServiceProxyReady")
                    .cloned()
            })
            .unwrap_or_default();
        f(&last)
    });
    assert!(ok, "{what}: condition is {last}\n{}", n.logs());
    last
}

#[test]
fn unavailable_ebpf_reaches_the_node_condition_and_falls_back() {
    if !privileged("sock_lb_faults::unavailable_ebpf_reaches_the_node_condition_and_falls_back") {
        return;
    }
    let root = ferry_tests::RootSnapshot::take();
    let bpffs = Bpffs::new("slfa");
    // A plain directory: the kernel refuses to attach cgroup programs to it.
    let not_a_cgroup = tempfile::Builder::new()
        .prefix("ferry-not-a-cgroup")
        .tempdir()
        .expect("tempdir");
    let cp = ControlPlane::start();
    cp.create_node("sf1", Some("10.99.0.21"));
    let mut n = common::NodeEnv::new(&cp, "sf1", "psf1", "10.99.0.21");
    n.args.extend([
        "--service-proxy".to_owned(),
        "ebpf".to_owned(),
        "--bpffs-dir".to_owned(),
        bpffs.0.join("sf1").to_string_lossy().into_owned(),
        "--proxy-cgroup".to_owned(),
        not_a_cgroup.path().to_string_lossy().into_owned(),
    ]);
    n.start_agent(&cp);
    let svc = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.60", "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}});
    cp.api(
        "POST",
        "/api/v1/namespaces/default/services",
        Some(("application/json", &svc)),
        201,
    );
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.244.6.2"], "conditions": {"ready": true}}]});
    cp.api(
        "POST",
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
        Some(("application/json", &slice)),
        201,
    );

    // Without --proxy-fallback: False with the kernel's reason, and no rules of ours.
    let c = wait_condition(&cp, &n, "no fallback", |c| {
        c["status"] == "False" && c["reason"] == "ProxierUnavailable"
    });
    eprintln!("without --proxy-fallback: {c}");
    let msg = c["message"].as_str().unwrap_or_default().to_owned();
    assert!(msg.contains("eBPF datapath"), "{msg}");
    // The kernel's errno for a directory that is not a cgroup (v2).
    assert!(msg.contains("Bad file descriptor (os error 9)"), "{msg}");
    assert!(
        msg.contains(&*not_a_cgroup.path().to_string_lossy()),
        "the condition names the cgroup: {msg}"
    );
    assert!(!n.ns.sh("iptables-save").contains("FERRY-SERVICES"));

    // With --proxy-fallback: the Service is programmed through iptables; True, says fallback.
    n.kill_agent();
    n.args.push("--proxy-fallback".to_owned());
    n.start_agent(&cp);
    let c = wait_condition(&cp, &n, "fallback", |c| {
        c["status"] == "True" && c["reason"] == "ServicesProgrammed"
    });
    eprintln!("with --proxy-fallback: {c}");
    let msg = c["message"].as_str().unwrap_or_default();
    assert!(msg.contains("iptables mode"), "{msg}");
    assert!(
        msg.contains("iptables fallback (--proxy-fallback)"),
        "{msg}"
    );
    assert!(
        msg.contains(&*not_a_cgroup.path().to_string_lossy()),
        "{msg}"
    );
    let ok = wait_until(Duration::from_secs(20), || {
        let r = n.ns.sh("iptables-save");
        r.contains("-A FERRY-SERVICES -d 10.96.0.60/32 -p tcp -m tcp --dport 80 -j FERRY-SVC-")
            && r.contains("-j DNAT --to-destination 10.244.6.2:8080")
    });
    assert!(
        ok,
        "fallback rules:\n{}\n{}",
        n.ns.sh("iptables-save"),
        n.logs()
    );
    // /metrics says the fallback runs; no eBPF datapath families in iptables mode.
    let mut text = String::new();
    let ok = wait_until(Duration::from_secs(10), || {
        text = String::from_utf8_lossy(
            &n.ns
                .try_sh("curl -s --max-time 2 http://127.0.0.1:9465/metrics")
                .stdout,
        )
        .into_owned();
        text.contains("ferry_service_frontends_failed 0\n")
    });
    assert!(ok, "metrics:\n{text}\n{}", n.logs());
    assert!(
        text.contains("ferry_service_proxy_info{mode=\"iptables\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("ferry_service_frontends_failed 0\n"),
        "{text}"
    );
    assert!(!text.contains("ferry_service_datapath_"), "{text}");
    assert!(!text.contains("ferry_service_map_"), "{text}");
    n.kill_agent();
    drop(n);
    drop(cp);
    drop(bpffs);
    root.assert_unchanged();
}
