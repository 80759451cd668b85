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

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::ControlPlane;
use ferry_agent::bpf::LbMaps;
use ferry_agent::service::ebpf::{uninstall, EbpfProxier};
use ferry_agent::service::{
    Backend, Entry, Frontend, FrontendKind, Proto, Proxier as _, ServicePortName, ServiceTable,
};
use ferry_common::{names, Lb4Backend, LB4_BACKENDS_MAX_ENTRIES};
use ferry_sys::process::OnExec;
use ferry_tests::{privileged, unique, wait_until, Netns};
use serde_json::json;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 8, 10);
const VIP_EMPTY: Ipv4Addr = Ipv4Addr::new(10, 96, 8, 11);
const VIP_NEW: Ipv4Addr = Ipv4Addr::new(10, 96, 8, 12);
const VIP_SHARED: Ipv4Addr = Ipv4Addr::new(10, 96, 8, 13);

/// The client: one operation per process, one JSON line per result on stdout.
const CLIENT: &str = r#"
import json, socket, sys, time
op, vip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
def out(**k): print(json.dumps(k), flush=True)
def addr(a): return "%s:%d" % a
if op == "tcp":
    for _ in range(int(sys.argv[4])):
        s = socket.socket(); s.settimeout(5); t = time.monotonic()
        try:
            s.connect((vip, port)); peer = addr(s.getpeername()); got = s.recv(64).decode()
            out(peer=peer, got=got)
        except OSError as e:
            out(errno=e.errno, ms=(time.monotonic() - t) * 1000)
        s.close()
elif op == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
    try:
        s.sendto(b"x" * int(sys.argv[4]), (vip, port)); data, frm = s.recvfrom(65535)
        out(got=data.decode(), frm=addr(frm))
    except OSError as e:
        out(errno=e.errno)
elif op == "udpconn":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
    s.connect((vip, port)); peer = addr(s.getpeername()); s.send(b"hi"); data = s.recv(100)
    out(peer=peer, got=data.decode())
    sys.stdin.readline()
    try:
        s.send(b"again"); data = s.recv(100); out(got=data.decode())
    except OSError as e:
        out(errno=e.errno)
"#;

/// Everything one test owns; dropped in reverse order of creation.
struct Lab {
    netns: Netns,
    cgroup: PathBuf,
    bpffs: PathBuf,
    pin_dir: PathBuf,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let cg_root = ferry_sys::cgroup::mount().expect("no cgroup2 mount");
        let cgroup = cg_root.join(format!("ferry-{}", unique(tag)));
        assert_ne!(cgroup, cg_root, "never attach to the root cgroup");
        ferry_sys::cgroup::create(&cgroup).expect("creating the test cgroup");
        let bpffs = std::env::temp_dir().join(format!("ferry-bpffs-{}", unique(tag)));
        std::fs::create_dir_all(&bpffs).expect("bpffs mount point");
        let lab = Lab {
            netns: Netns::new(tag),
            pin_dir: bpffs.join("node"),
            cgroup,
            bpffs,
        };
        let st = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&lab.bpffs)
            .status()
            .expect("mount");
        assert!(
            st.success(),
            "mounting a private bpffs on {}",
            lab.bpffs.display()
        );
        lab
    }

    /// A TCP backend in the netns that writes `name` to every connection.
    fn tcp_backend(&self, name: &'static str) -> Backend {
        let listener = self
            .netns
            .run(|| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { return };
                let _ = s.write_all(name.as_bytes());
            }
        });
        Backend {
            addr: Ipv4Addr::LOCALHOST,
            port,
        }
    }

    fn client(&self, args: &[String]) -> Command {
        let procs = ferry_sys::cgroup::open_procs(&self.cgroup).expect("cgroup.procs");
        let mut cmd = self.netns.command("python3");
        cmd.arg("-c").arg(CLIENT).args(args);
        OnExec::new()
            .join_cgroup(&procs)
            .expect("dup")
            .install(&mut cmd);
        cmd
    }

    /// Runs a client to completion; its JSON lines.
    fn run(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let out = self
            .client(&args)
            .stderr(Stdio::inherit())
            .output()
            .expect("python3");
        assert!(out.status.success(), "client {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("client JSON"))
            .collect()
    }

    fn proxier(&self) -> EbpfProxier {
        EbpfProxier::new(&self.pin_dir, &self.cgroup).expect("EbpfProxier::new")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = uninstall(&self.pin_dir);
        let _ = Command::new("umount").arg(&self.bpffs).status();
        let _ = std::fs::remove_dir(&self.bpffs);
        let _ = ferry_sys::cgroup::kill(&self.cgroup);
        let _ = ferry_sys::cgroup::remove_tree(&self.cgroup, Duration::from_secs(5));
    }
}

/// One frontend of a test table: address, port, protocol, backends, affinity timeout.
type Row = (Ipv4Addr, u16, Proto, Vec<Backend>, Option<u32>);

fn table(entries: &[Row]) -> ServiceTable {
    ServiceTable {
        entries: entries
            .iter()
            .map(|(addr, port, proto, backends, affinity)| {
                let mut backends = backends.clone();
                backends.sort();
                (
                    Frontend {
                        addr: *addr,
                        port: *port,
                        proto: *proto,
                    },
                    Entry {
                        service: ServicePortName {
                            namespace: "default".into(),
                            name: "web".into(),
                            port: String::new(),
                        },
                        kind: FrontendKind::ClusterIp,
                        backends,
                        affinity_timeout: *affinity,
                    },
                )
            })
            .collect(),
        skipped: Vec::new(),
    }
}

fn got_names(results: &[serde_json::Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in results {
        let got = r["got"].as_str().unwrap_or_else(|| panic!("no reply: {r}"));
        *m.entry(got.to_owned()).or_insert(0) += 1;
    }
    m
}

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
