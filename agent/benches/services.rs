//! `cargo bench -p ferry-agent --bench services` (privileged; harness = false): the Services
//! benchmark of issue #12. In one run, side by side, rounds interleaved: the eBPF socket load
//! balancer ([`EbpfProxier`]), the kube-proxy-style iptables rules of the iptables proxier
//! ([`render`], and [`IptablesProxier`] itself where it is fast enough) and direct pod IP connections (the control), with 1, 1,000, 10,000 and 30,000 Services of 4
//! endpoints each (the probed Service sorts last, so it is the last rule of `FERRY-SERVICES`).
//!
//! The lab (everything created here, removed by `Drop` guards on every exit path; SIGINT /
//! SIGTERM only set a flag, checked between steps, so Ctrl-C also unwinds through the guards):
//! two node namespaces built alike, one per datapath, so the iptables rules never tax the eBPF
//! node's packets:
//!
//! ```text
//!  client pods 10.244.2.2 (ClusterIP paths), 10.244.3.2 (direct paths)
//!      --veth-- node (10.244.2.1, 10.244.3.1 | br0 10.244.1.1, ip_forward) --bridge-- pods 10.244.1.2-6
//! ```
//!
//! The client reaches the pods **routed through the node** (as across nodes, or as on a bridge
//! with `br_netfilter`), so on the iptables node every new connection, also a direct one, walks
//! the nat `PREROUTING` chains, as with kube-proxy. Pods 1-4 are the probed Service's endpoints
//! (TCP 8080: accept, write the pod's number, close); pod 5 is the "new" endpoint of the
//! one-change step; pod 1 also runs `iperf3 -s` for the throughput step (the probed Service's
//! second port, 5201, has that one endpoint: iperf3's control and data connections must reach the
//! same server). The other Services' endpoints are unused addresses (10.128.0.0/12). The eBPF
//! node's client runs in a fresh cgroup (never the root cgroup) where the four `sock-lb` hooks are
//! attached, its maps pinned in a private bpffs mount; `iptables-restore` and the iptables proxier
//! run inside the iptables node namespace (the proxier on a thread that entered it).
//!
//! Per size, per round (paths and proxiers in an order rotated by round):
//! - **programming**: the whole table from empty (eBPF: `EbpfProxier::sync`, one `bpf(2)` call
//!   per map write; iptables: [`render`] + one flushing `iptables-restore`, kube-proxy's full
//!   sync; see [`Proxiers`] for why not the proxier's own sync);
//! - **latency and connections/s**: a client process (this binary, re-executed in the client pod
//!   namespace) connects sequentially for `FERRY_BENCH_MS` (or `FERRY_BENCH_MAX_CONNS`
//!   connections) and times each `connect()` until the accepted connection's first byte arrives;
//!   p50 / p99 of that, and transactions (connect, byte, close) per second. Paths: eBPF
//!   ClusterIP, direct pod IP on the eBPF node (same cgroup: the hooks run and miss), iptables
//!   ClusterIP, direct pod IP on the iptables node;
//! - **one change**: a table differing in the probed Service only (its 4 endpoints replaced by
//!   pod 5), then right after it 20 connections that must all reach pod 5; and back (eBPF:
//!   `sync`; iptables: render, diff against the loaded rules, `iptables-restore --noflush` of the
//!   changed chains); in the last round of a size up to `FERRY_BENCH_IPT_PROXIER_MAX` (default
//!   10,000) also the shipped `IptablesProxier::sync`, as the agent runs it: its first sync
//!   (adopting the loaded rules: `iptables-save` + diff) timed apart, then the one change and
//!   back with that proxier (remembered state: no `iptables-save`);
//! - then the empty table (not timed).
//!
//! Before the sizes, a **memory** step at the largest size: this process's RSS (`VmRSS`) before
//! and after building the table, after the eBPF sync and after rendering and loading the iptables
//! rules (the user-space growth;
//! an agent also holds its watch caches: the whole agent is measured by
//! `scripts/bench-agent-memory.sh`), and the kernel memory of the
//! pinned maps (`bpftool -j map show pinned`, `bytes_memlock`) empty and full. After the last
//! size, **throughput**: `iperf3` single stream through each ClusterIP and direct, rounds x
//! `FERRY_BENCH_IPERF_SECONDS`.
//!
//! Figures are medians of rounds with [min-max]; ratios are computed per round, then the median.
//! Targets (issue #12) are reported as met / NOT met, never asserted. `FERRY_BENCH_QUICK=1`: sizes
//! 1, 100, 1,000, 2 rounds, short runs (a smoke run). `FERRY_BENCH_SIZES=1,1000`,
//! `FERRY_BENCH_ROUNDS=n`, `FERRY_BENCH_MS`, `FERRY_BENCH_MAX_CONNS` and
//! `FERRY_BENCH_IPERF_SECONDS` override. About 9 minutes with the defaults.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_agent::service::ebpf::{uninstall, EbpfProxier};
use ferry_agent::service::iptables::{render, restore_input, IptablesProxier};
use ferry_agent::service::{
    Backend, Entry, Frontend, FrontendKind, Proto, Proxier, ServicePortName, ServiceTable,
};
use ferry_common::names;
use ferry_sys::process::OnExec;
use ferry_tests::{
    output_with_stdin, percentile, privileged, unique, veth, wait_until, ChildGuard, Netns,
    RootSnapshot, Spread,
};

/// The backends' TCP port.
const PORT: u16 = 8080;
/// The iperf3 server's port (and the probed Service's second port).
const IPERF_PORT: u16 = 5201;
/// The probed Service's ClusterIP: the highest address of the table, so it sorts last.
const PROBE_VIP: Ipv4Addr = Ipv4Addr::new(10, 111, 255, 200);
/// First ClusterIP of the filler Services.
const FILLER_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 16);
/// First endpoint address of the filler Services (never contacted).
const FILLER_EP: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 0);
/// Backend pods per node: 1-4 serve the probed Service, 5 is the one-change step's new endpoint.
const PODS: u8 = 5;
/// Argument that turns this binary into the connecting client.
const CLIENT_ARG: &str = "--ferry-svc-client";
/// Connections of the check after a one-change sync.
const CHECK_CONNS: usize = 20;

#[derive(Debug, Clone)]
struct Settings {
    sizes: Vec<usize>,
    rounds: usize,
    run_ms: u64,
    max_conns: usize,
    iperf_secs: u32,
    ipt_proxier_max: usize,
    quick: bool,
}

impl Settings {
    fn from_env() -> Settings {
        let quick = std::env::var("FERRY_BENCH_QUICK").is_ok_and(|v| v == "1" || v == "true");
        let num = |name: &str, default: u64| -> u64 {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .filter(|v| *v > 0)
                .unwrap_or(default)
        };
        let sizes = std::env::var("FERRY_BENCH_SIZES")
            .ok()
            .map(|v| {
                v.split(',')
                    .filter_map(|s| s.trim().parse::<usize>().ok())
                    .filter(|n| *n > 0)
                    .collect::<Vec<_>>()
            })
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| {
                if quick {
                    vec![1, 100, 1000]
                } else {
                    vec![1, 1000, 10_000, 30_000]
                }
            });
        let as_usize = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        Settings {
            sizes,
            rounds: as_usize(num("FERRY_BENCH_ROUNDS", if quick { 2 } else { 5 })),
            run_ms: num("FERRY_BENCH_MS", if quick { 300 } else { 1000 }),
            max_conns: as_usize(num("FERRY_BENCH_MAX_CONNS", 20_000)),
            iperf_secs: u32::try_from(num("FERRY_BENCH_IPERF_SECONDS", if quick { 1 } else { 3 }))
                .unwrap_or(3),
            ipt_proxier_max: as_usize(num("FERRY_BENCH_IPT_PROXIER_MAX", 10_000)),
            quick,
        }
    }

    fn largest(&self) -> usize {
        self.sizes.iter().copied().max().unwrap_or(1)
    }
}

// ---------------------------------------------------------------------------------------------
// The client (this binary re-executed in a pod namespace).

/// What one client run measured.
#[derive(Debug, Clone, Default)]
struct ConnRun {
    /// Completed transactions.
    n: usize,
    /// Failed connects or reads.
    errors: usize,
    /// Wall time of the measured transactions, seconds.
    secs: f64,
    /// connect() -> first byte, µs.
    p50: f64,
    p99: f64,
    /// The pods that answered (their numbers).
    seen: BTreeSet<u8>,
}

impl ConnRun {
    fn per_sec(&self) -> f64 {
        #[expect(
            clippy::cast_precision_loss,
            reason = "connection counts far below 2^52"
        )]
        let n = self.n as f64;
        n / self.secs.max(1e-9)
    }
}

/// `<exe> --ferry-svc-client <addr:port> <ms> <max> <warmup>`: sequential connections; prints
/// `n errors secs p50_us p99_us seen` on one line.
fn client_main(args: &[String]) -> ! {
    let parse = || -> Option<(SocketAddr, u64, usize, usize)> {
        Some((
            args.first()?.parse().ok()?,
            args.get(1)?.parse().ok()?,
            args.get(2)?.parse().ok()?,
            args.get(3)?.parse().ok()?,
        ))
    };
    let Some((to, ms, max, warmup)) = parse() else {
        eprintln!("usage: {CLIENT_ARG} <addr:port> <ms> <max> <warmup>");
        std::process::exit(2);
    };
    let once = |seen: &mut BTreeSet<u8>| -> Option<Duration> {
        let t = Instant::now();
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(1)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).ok()?;
        let d = t.elapsed();
        seen.insert(b[0]);
        // Read to EOF: the server closes first, so the TIME_WAIT stays on its side.
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        Some(d)
    };
    let mut seen = BTreeSet::new();
    let mut errors = 0usize;
    for _ in 0..warmup {
        if once(&mut seen).is_none() {
            errors += 1;
        }
    }
    seen.clear();
    let mut lat = Vec::with_capacity(max.min(100_000));
    let end = Duration::from_millis(ms);
    let start = Instant::now();
    let mut consecutive = 0;
    while lat.len() < max && start.elapsed() < end && consecutive < 10 {
        match once(&mut seen) {
            Some(d) => {
                consecutive = 0;
                lat.push(d.as_secs_f64() * 1e6);
            }
            None => {
                consecutive += 1;
                errors += 1;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let seen: String = seen.iter().map(|b| char::from(*b)).collect();
    println!(
        "{} {errors} {secs:.6} {:.3} {:.3} {}",
        lat.len(),
        percentile(&lat, 50.0),
        percentile(&lat, 99.0),
        if seen.is_empty() { "-" } else { &seen }
    );
    std::process::exit(0);
}

fn parse_client(out: &str) -> Option<ConnRun> {
    let f: Vec<&str> = out.split_whitespace().collect();
    Some(ConnRun {
        n: f.first()?.parse().ok()?,
        errors: f.get(1)?.parse().ok()?,
        secs: f.get(2)?.parse().ok()?,
        p50: f.get(3)?.parse().ok()?,
        p99: f.get(4)?.parse().ok()?,
        seen: f
            .get(5)?
            .bytes()
            .filter(u8::is_ascii_digit)
            .map(|b| b - b'0')
            .collect(),
    })
}

// ---------------------------------------------------------------------------------------------
// The lab.

/// One node namespace with its client pod and backend pods (dropped with them).
struct Node {
    ns: Netns,
    /// The client of the ClusterIP paths (10.244.2.2).
    client: Netns,
    /// The client of the direct paths (10.244.3.2): another source address, so the two paths
    /// never share a 4-tuple at the backend (a backend's TIME_WAIT left by a DNATed connection
    /// would otherwise meet a direct SYN with unrelated sequence numbers and timestamps).
    direct: Netns,
    _pods: Vec<Netns>,
}

fn pod_ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 1, 1 + i)
}

/// Serves TCP `PORT` in `ns`: every accepted connection gets the byte `'0' + i`, then a close.
/// The thread ends with the process.
fn serve(ns: &Netns, i: u8) {
    let l = ns
        .run(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, PORT)))
        .unwrap_or_else(|e| panic!("bind in {}: {e}", ns.name()));
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = s.write_all(&[b'0' + i]);
        }
    });
}

impl Node {
    fn new(tag: &str) -> Node {
        let ns = Netns::new(tag);
        ns.sh(
            "ip link add br0 type bridge && ip addr add 10.244.1.1/24 dev br0 \
             && ip link set br0 up && sysctl -qw net.ipv4.ip_forward=1 \
             && sysctl -qw net.ipv4.conf.all.send_redirects=0",
        );
        let mut pods = Vec::new();
        for i in 1..=PODS {
            let p = Netns::new(&format!("{tag}p"));
            let host = format!("v{i}");
            veth(&p, "eth0", &ns, &host);
            ns.sh(&format!("ip link set {host} master br0 up"));
            p.sh(&format!(
                "ip addr add {}/24 dev eth0 && ip link set eth0 up \
                 && ip route add default via 10.244.1.1",
                pod_ip(i)
            ));
            serve(&p, i);
            pods.push(p);
        }
        let client = Netns::new(&format!("{tag}c"));
        veth(&client, "eth0", &ns, "vc");
        ns.sh("ip addr add 10.244.2.1/24 dev vc && ip link set vc up");
        client.sh("ip addr add 10.244.2.2/24 dev eth0 && ip link set eth0 up \
             && ip route add default via 10.244.2.1");
        let direct = Netns::new(&format!("{tag}d"));
        veth(&direct, "eth0", &ns, "vd");
        ns.sh("ip addr add 10.244.3.1/24 dev vd && ip link set vd up");
        direct.sh("ip addr add 10.244.3.2/24 dev eth0 && ip link set eth0 up \
             && ip route add default via 10.244.3.1");
        Node {
            ns,
            client,
            direct,
            _pods: pods,
        }
    }

    fn pod(&self, i: u8) -> &Netns {
        &self._pods[usize::from(i - 1)]
    }
}

/// The eBPF node's cgroup and private bpffs mount; removed on drop (pins, mount, cgroup and any
/// process still in it).
struct BpfLab {
    cgroup: PathBuf,
    bpffs: PathBuf,
    pin_dir: PathBuf,
}

impl BpfLab {
    fn new() -> BpfLab {
        let cg_root = ferry_sys::cgroup::mount().expect("no cgroup2 mount");
        let cgroup = cg_root.join(format!("ferry-{}", unique("sbn")));
        assert_ne!(cgroup, cg_root, "never attach to the root cgroup");
        ferry_sys::cgroup::create(&cgroup).expect("creating the bench cgroup");
        let bpffs = std::env::temp_dir().join(format!("ferry-bpffs-{}", unique("sbn")));
        std::fs::create_dir_all(&bpffs).expect("bpffs mount point");
        let lab = BpfLab {
            pin_dir: bpffs.join("node"),
            cgroup,
            bpffs,
        };
        let st = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&lab.bpffs)
            .status()
            .expect("mount");
        assert!(st.success(), "mounting bpffs on {}", lab.bpffs.display());
        lab
    }

    /// Kernel memory of the pinned maps (`bytes_memlock` summed), from `bpftool`.
    fn map_bytes(&self) -> Option<u64> {
        let mut sum = 0;
        for name in names::MAPS {
            let pin = self.pin_dir.join(name);
            let out = Command::new("bpftool")
                .args(["-j", "map", "show", "pinned"])
                .arg(&pin)
                .output()
                .ok()?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            sum += v["bytes_memlock"].as_u64()?;
        }
        Some(sum)
    }
}

impl Drop for BpfLab {
    fn drop(&mut self) {
        let _ = uninstall(&self.pin_dir);
        let _ = Command::new("umount").arg(&self.bpffs).status();
        let _ = std::fs::remove_dir(&self.bpffs);
        let _ = ferry_sys::cgroup::kill(&self.cgroup);
        let _ = ferry_sys::cgroup::remove_tree(&self.cgroup, Duration::from_secs(5));
    }
}

// ---------------------------------------------------------------------------------------------
// Tables.

fn entry(name: String, backends: Vec<Backend>) -> Entry {
    Entry {
        service: ServicePortName {
            namespace: "bench".into(),
            name,
            port: String::new(),
        },
        kind: FrontendKind::ClusterIp,
        backends,
        local_backends: Vec::new(),
        external_local: false,
        affinity_timeout: None,
    }
}

fn offset(base: Ipv4Addr, i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base) + u32::try_from(i).expect("table size fits u32"))
}

/// `n` Services: `n - 1` fillers with 4 unused endpoints each, then the probed Service (port 80
/// over pods `probe`, port 5201 over pod 1's iperf3).
fn table(n: usize, probe: &[u8]) -> ServiceTable {
    let mut t = ServiceTable::default();
    for i in 0..n.saturating_sub(1) {
        let backends = (0..4)
            .map(|j| Backend {
                addr: offset(FILLER_EP, 4 * i + j),
                port: PORT,
            })
            .collect();
        t.entries.insert(
            Frontend {
                addr: offset(FILLER_VIP, i),
                port: 80,
                proto: Proto::Tcp,
            },
            entry(format!("svc-{i}"), backends),
        );
    }
    let probe: Vec<Backend> = probe
        .iter()
        .map(|i| Backend {
            addr: pod_ip(*i),
            port: PORT,
        })
        .collect();
    t.entries.insert(
        Frontend {
            addr: PROBE_VIP,
            port: 80,
            proto: Proto::Tcp,
        },
        entry("probe".into(), probe),
    );
    t.entries.insert(
        Frontend {
            addr: PROBE_VIP,
            port: IPERF_PORT,
            proto: Proto::Tcp,
        },
        entry(
            "probe".into(),
            vec![Backend {
                addr: pod_ip(1),
                port: IPERF_PORT,
            }],
        ),
    );
    t
}

// ---------------------------------------------------------------------------------------------
// Measurement.

/// The pod network of both nodes (the iptables rules masquerade other sources).
fn cluster() -> Option<ipnetwork::Ipv4Network> {
    "10.244.0.0/16".parse().ok()
}

/// `iptables-restore` (flushing the tables, or `--noflush`) of `input` in `ns`.
fn restore(ns: &Netns, input: &str, noflush: bool) {
    let mut cmd = ns.command("iptables-restore");
    cmd.args(["-w", "5"]);
    if noflush {
        cmd.arg("--noflush");
    }
    let out = output_with_stdin(&mut cmd, Some(input));
    assert!(
        out.status.success(),
        "iptables-restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The eBPF proxier, and the iptables node's rules.
///
/// The iptables datapath is loaded the way kube-proxy's full sync loads it: the proxier's own
/// rules ([`render`]) in one flushing `iptables-restore`; a change writes only the chains that
/// differ ([`restore_input`] against the loaded rules) with `iptables-restore --noflush`. The
/// shipped [`IptablesProxier::sync`] reads `iptables-save` at its first sync (adoption; on this
/// machine's iptables-nft that read alone takes about 16 s at 10,000 Services) and a
/// `--noflush` restore of a whole table grows quadratically (43 s at 10,000), so the proxier
/// itself is timed once per size, up to `FERRY_BENCH_IPT_PROXIER_MAX` (default 10,000).
struct Proxiers<'a> {
    ebpf: EbpfProxier,
    ipt_node: &'a Netns,
    /// The loaded iptables rules in `iptables-save` form (what the diff is taken against).
    ipt_loaded: String,
}

/// A full restore input (from nothing) as the `iptables-save` text of the same rules.
fn as_save(full_input: &str) -> String {
    full_input
        .lines()
        .map(|l| {
            l.strip_prefix("-I ")
                .map_or_else(|| l.to_owned(), |r| format!("-A {r}"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Proxiers<'_> {
    /// Programs the whole table into one datapath (0: eBPF sync, 1: iptables full restore); the
    /// wall time in ms.
    fn sync(&mut self, which: usize, t: &ServiceTable) -> f64 {
        let start = Instant::now();
        if which == 1 {
            let input = restore_input(&render(t, cluster()), "").unwrap_or_default();
            restore(self.ipt_node, &input, false);
            let ms = start.elapsed().as_secs_f64() * 1e3;
            self.ipt_loaded = as_save(&input);
            return ms;
        }
        let stats = self.ebpf.sync(t);
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let stats = stats.unwrap_or_else(|e| panic!("ebpf sync: {e}"));
        assert_eq!(stats.failed, 0, "ebpf sync: {stats:?}");
        ms
    }

    /// Moves one datapath to `t`, which differs from what it holds in a few Services (0: eBPF
    /// sync; 1: render, diff, `iptables-restore --noflush` of the changed chains); ms.
    fn change(&mut self, which: usize, t: &ServiceTable) -> f64 {
        if which == 0 {
            return self.sync(0, t);
        }
        let start = Instant::now();
        let rules = render(t, cluster());
        if let Some(input) = restore_input(&rules, &self.ipt_loaded) {
            restore(self.ipt_node, &input, true);
        }
        let ms = start.elapsed().as_secs_f64() * 1e3;
        self.ipt_loaded = as_save(&restore_input(&rules, "").unwrap_or_default());
        ms
    }
}

const MODES: [&str; 2] = ["ebpf", "iptables"];

/// One measured connection path.
struct ConnPath<'a> {
    name: &'static str,
    client: &'a Netns,
    cgroup: Option<&'a Path>,
    to: SocketAddrV4,
    /// Where `iperf3 -s` runs for this path.
    iperf_server: &'a Netns,
}

fn connect_run(p: &ConnPath<'_>, ms: u64, max: usize, warmup: usize) -> ConnRun {
    let exe = std::env::current_exe().expect("current_exe");
    let limit = (ms / 1000 + 20).to_string();
    let mut cmd = p.client.command("timeout");
    cmd.arg(&limit).arg(exe).arg(CLIENT_ARG).args([
        p.to.to_string(),
        ms.to_string(),
        max.to_string(),
        warmup.to_string(),
    ]);
    if let Some(cg) = p.cgroup {
        let procs = ferry_sys::cgroup::open_procs(cg).expect("cgroup.procs");
        OnExec::new()
            .join_cgroup(&procs)
            .expect("dup")
            .install(&mut cmd);
    }
    let out = cmd.stderr(Stdio::inherit()).output().expect("client");
    let text = String::from_utf8_lossy(&out.stdout);
    let run = parse_client(&text).unwrap_or_else(|| panic!("{}: client said {text:?}", p.name));
    assert!(
        out.status.success() && run.n > 0,
        "{}: client to {}: {out:?}",
        p.name,
        p.to
    );
    run
}

/// Gbit/s received in one iperf3 run over `p` (to its address's iperf port; bounded).
fn iperf_once(p: &ConnPath<'_>, secs: u32) -> f64 {
    let port = IPERF_PORT.to_string();
    let _server = ChildGuard(
        p.iperf_server
            .command("iperf3")
            .args(["-s", "-1", "-p", &port])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("iperf3 -s"),
    );
    let listening = wait_until(Duration::from_secs(5), || {
        p.iperf_server
            .command("ss")
            .args(["-Hltn", &format!("sport = :{port}")])
            .output()
            .is_ok_and(|o| !o.stdout.is_empty())
    });
    assert!(listening, "{}: iperf3 server did not listen", p.name);
    let (t, limit) = (secs.to_string(), (secs + 20).to_string());
    let ip = p.to.ip().to_string();
    let mut cmd = p.client.command("timeout");
    cmd.args([&limit, "iperf3", "-c", &ip, "-p", &port, "-t", &t, "-J"])
        .args(["--connect-timeout", "3000"]);
    if let Some(cg) = p.cgroup {
        let procs = ferry_sys::cgroup::open_procs(cg).expect("cgroup.procs");
        OnExec::new()
            .join_cgroup(&procs)
            .expect("dup")
            .install(&mut cmd);
    }
    let out = cmd.output().expect("iperf3 -c");
    assert!(out.status.success(), "{}: iperf3 to {ip}: {out:?}", p.name);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("iperf3 JSON");
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .expect("bits_per_second")
        / 1e9
}

/// Right after a one-change sync: `CHECK_CONNS` connections over `path` all reach pod 5.
fn reaches_only_pod5(path: &ConnPath<'_>) -> bool {
    let check = connect_run(path, 60_000, CHECK_CONNS, 0);
    check.n == CHECK_CONNS && check.seen == BTreeSet::from([5])
}

/// The shipped iptables proxier's figures at one size.
#[derive(Debug, Clone, Copy)]
struct ProxierOnce {
    /// First sync of `full` by a new proxier (adopts the loaded rules: `iptables-save` + diff).
    adopt_ms: f64,
    /// Then `changed`, by the proxier that has synced before (as the agent's, round after round).
    change_ms: f64,
    /// And back to `full`.
    back_ms: f64,
    /// Right after the change, every check connection reached the new endpoint.
    ok: bool,
}

/// The shipped iptables proxier, once, as the agent runs it: a new [`IptablesProxier`] syncs
/// `full` (adopting the loaded rules), then `changed` (the path is checked), then `full` again;
/// only the first sync may read `iptables-save`.
fn iptables_proxier_change(
    node: &Netns,
    path: &ConnPath<'_>,
    changed: &ServiceTable,
    full: &ServiceTable,
) -> ProxierOnce {
    let mut p = IptablesProxier::new(cluster());
    let mut timed = |t: &ServiceTable| {
        let start = Instant::now();
        let r = node.run(|| p.sync(t));
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let stats = r.unwrap_or_else(|e| panic!("IptablesProxier::sync: {e}"));
        assert_eq!(stats.failed, 0, "{stats:?}");
        ms
    };
    let adopt_ms = timed(full);
    let change_ms = timed(changed);
    let ok = reaches_only_pod5(path);
    let back_ms = timed(full);
    assert_eq!(
        p.saves(),
        1,
        "a proxier that has synced reads no iptables-save"
    );
    ProxierOnce {
        adopt_ms,
        change_ms,
        back_ms,
        ok,
    }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `VmRSS` (or another `/proc/self/status` field) in MiB.
fn status_mib(field: &str) -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn check_interrupt() {
    assert!(!ferry_sys::process::interrupted(), "interrupted");
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

/// Per-round results of one size.
#[derive(Debug, Default, Clone)]
struct Round {
    /// Full programming, ms: [ebpf, iptables].
    program: [f64; 2],
    /// One change and back, ms: [ebpf, iptables] x [change, back].
    change: [[f64; 2]; 2],
    /// Right after the change: connections that all reached the new pod: [ebpf, iptables].
    change_ok: [bool; 2],
    /// Per path.
    runs: Vec<ConnRun>,
}

fn ratios(rounds: &[Round], f: impl Fn(&Round) -> f64) -> Spread {
    Spread::over(rounds, f)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(CLIENT_ARG) {
        client_main(&args[2..]);
    }
    if !privileged("services bench") {
        return;
    }
    ferry_sys::process::catch_interrupts();
    let s = Settings::from_env();
    let root = RootSnapshot::take();
    run(&s);
    root.assert_unchanged();
}

#[expect(clippy::too_many_lines, reason = "the benchmark's steps, in order")]
fn run(s: &Settings) {
    let largest = s.largest();
    println!(
        "services bench: sizes {:?}, {} rounds, connection runs of {} ms (max {} connections), \
         iperf3 {} s{}; load {}",
        s.sizes,
        s.rounds,
        s.run_ms,
        s.max_conns,
        s.iperf_secs,
        if s.quick { " (quick)" } else { "" },
        load()
    );
    let node_e = Node::new("sbe");
    let node_i = Node::new("sbi");
    let lab = BpfLab::new();

    // Memory: RSS before the proxier, after the table, after each sync.
    let rss0 = status_mib("VmRSS:");
    let ebpf = EbpfProxier::new(&lab.pin_dir, &lab.cgroup).expect("EbpfProxier::new");
    let mut px = Proxiers {
        ebpf,
        ipt_node: &node_i.ns,
        ipt_loaded: String::new(),
    };
    let rss_loaded = status_mib("VmRSS:");
    let kmem_empty = lab.map_bytes();
    let empty = ServiceTable::default();
    {
        let big = table(largest, &[1, 2, 3, 4]);
        let rss_table = status_mib("VmRSS:");
        let e_ms = px.sync(0, &big);
        let rss_ebpf = status_mib("VmRSS:");
        let kmem_full = lab.map_bytes();
        check_interrupt();
        let i_ms = px.sync(1, &big);
        let rss_ipt = status_mib("VmRSS:");
        let rules = px
            .ipt_loaded
            .lines()
            .filter(|l| l.starts_with("-A "))
            .count();
        let mib = |b: Option<u64>| {
            #[expect(clippy::cast_precision_loss, reason = "map sizes far below 2^52")]
            b.map_or(f64::NAN, |b| b as f64 / 1048576.0)
        };
        println!(
            "memory at {largest} Services / {} endpoints (single run, load {}):",
            (largest - 1) * 4 + 5,
            load()
        );
        println!(
            "  bench process VmRSS: {rss0:.1} MiB before the proxier, {rss_loaded:.1} with the \
             eBPF object loaded, {rss_table:.1} with the table built (+{:.1}), {rss_ebpf:.1} \
             after the eBPF sync (+{:.1}), {rss_ipt:.1} after the iptables rules were rendered \
             and loaded (+{:.1}, the rules kept as text); VmHWM {:.1} MiB",
            rss_table - rss_loaded,
            rss_ebpf - rss_table,
            rss_ipt - rss_ebpf,
            status_mib("VmHWM:")
        );
        println!(
            "  kernel map memory (bpftool bytes_memlock, 5 pinned maps): {:.1} MiB empty, {:.1} \
             MiB full (+{:.1}); iptables rules loaded: {rules}",
            mib(kmem_empty),
            mib(kmem_full),
            mib(kmem_full) - mib(kmem_empty)
        );
        let agent = rss_ebpf - rss0;
        println!(
            "  eBPF proxier + table (user space, part of the agent's memory): {agent:.1} MiB; the \
             whole agent (watch caches too) is measured by scripts/bench-agent-memory.sh"
        );
        println!(
            "  (first full programming, single run: ebpf sync {e_ms:.0} ms, iptables render + \
             restore {i_ms:.0} ms)"
        );
        px.sync(0, &empty);
        px.sync(1, &empty);
    }

    let paths = [
        ConnPath {
            name: "ebpf ClusterIP",
            client: &node_e.client,
            cgroup: Some(&lab.cgroup),
            to: SocketAddrV4::new(PROBE_VIP, 80),
            iperf_server: node_e.pod(1),
        },
        ConnPath {
            name: "direct pod IP (ebpf node)",
            client: &node_e.direct,
            cgroup: Some(&lab.cgroup),
            to: SocketAddrV4::new(pod_ip(1), PORT),
            iperf_server: node_e.pod(1),
        },
        ConnPath {
            name: "iptables ClusterIP",
            client: &node_i.client,
            cgroup: None,
            to: SocketAddrV4::new(PROBE_VIP, 80),
            iperf_server: node_i.pod(1),
        },
        ConnPath {
            name: "direct pod IP (iptables node)",
            client: &node_i.direct,
            cgroup: None,
            to: SocketAddrV4::new(pod_ip(1), PORT),
            iperf_server: node_i.pod(1),
        },
    ];
    let warmup = if s.quick { 20 } else { 100 };
    let mut per_size: Vec<(usize, Vec<Round>)> = Vec::new();
    let mut proxier_once: Vec<Option<ProxierOnce>> = vec![None; s.sizes.len()];
    for (si, &size) in s.sizes.iter().enumerate() {
        let full = table(size, &[1, 2, 3, 4]);
        let changed = table(size, &[5]);
        let last_size = si + 1 == s.sizes.len();
        let mut rounds = Vec::new();
        for r in 0..s.rounds {
            check_interrupt();
            let mut round = Round::default();
            for k in 0..2 {
                let m = (r + k) % 2;
                round.program[m] = px.sync(m, &full);
            }
            round.runs = vec![ConnRun::default(); paths.len()];
            for k in 0..paths.len() {
                check_interrupt();
                let i = (r + k) % paths.len();
                round.runs[i] = connect_run(&paths[i], s.run_ms, s.max_conns, warmup);
            }
            for (m, path) in [(0, &paths[0]), (1, &paths[2])] {
                check_interrupt();
                round.change[m][0] = px.change(m, &changed);
                round.change_ok[m] = reaches_only_pod5(path);
                round.change[m][1] = px.change(m, &full);
            }
            // Every path reached what it should (ClusterIPs: all four endpoints, unless the run
            // was too short to see them).
            for (p, run) in paths.iter().zip(&round.runs) {
                let want: BTreeSet<u8> = if p.to.ip() == &PROBE_VIP {
                    (1..=4).collect()
                } else {
                    BTreeSet::from([1])
                };
                assert!(
                    run.seen.is_subset(&want) && (run.n < 50 || run.seen == want),
                    "{}: reached {:?}",
                    p.name,
                    run.seen
                );
            }
            if r + 1 == s.rounds && size <= s.ipt_proxier_max {
                check_interrupt();
                proxier_once[si] = Some(iptables_proxier_change(
                    &node_i.ns, &paths[2], &changed, &full,
                ));
            }
            let keep = last_size && r + 1 == s.rounds;
            if !keep {
                px.sync(0, &empty);
                px.sync(1, &empty);
            }
            rounds.push(round);
        }
        report_size(size, &paths, &rounds, proxier_once[si]);
        per_size.push((size, rounds));
    }

    // Throughput at the largest size (still programmed).
    println!(
        "throughput at {largest} Services: iperf3 single stream, {} rounds x {} s, paths \
         rotated per round; load {}",
        s.rounds,
        s.iperf_secs,
        load()
    );
    let mut tput = vec![Vec::new(); paths.len()];
    let tpaths: Vec<ConnPath<'_>> = paths
        .iter()
        .map(|p| ConnPath {
            to: SocketAddrV4::new(*p.to.ip(), IPERF_PORT),
            name: p.name,
            client: p.client,
            cgroup: p.cgroup,
            iperf_server: p.iperf_server,
        })
        .collect();
    iperf_once(&tpaths[0], 1);
    for r in 0..s.rounds {
        for k in 0..tpaths.len() {
            check_interrupt();
            let i = (r + k) % tpaths.len();
            tput[i].push(iperf_once(&tpaths[i], s.iperf_secs));
        }
    }
    for (p, v) in tpaths.iter().zip(&tput) {
        println!("  {:<30} {:.2} Gbit/s", p.name, Spread::of(v));
    }
    let per_round = |a: usize, b: usize| -> Spread {
        Spread::of(
            &tput[a]
                .iter()
                .zip(&tput[b])
                .map(|(x, y)| x / y)
                .collect::<Vec<_>>(),
        )
    };
    let te = per_round(0, 1);
    let ti = per_round(2, 3);
    println!(
        "  ratio ebpf ClusterIP / direct: {te:.3}  target >= 0.98: {}",
        verdict(te.median >= 0.98)
    );
    println!("  ratio iptables ClusterIP / direct: {ti:.3}");
    px.sync(0, &empty);
    px.sync(1, &empty);

    summary(&per_size);
    println!("load at the end: {}", load());
}

fn report_size(
    size: usize,
    paths: &[ConnPath<'_>],
    rounds: &[Round],
    proxier: Option<ProxierOnce>,
) {
    println!(
        "{size} Services ({} rounds, load {}):",
        rounds.len(),
        load()
    );
    for (m, name) in MODES.iter().enumerate() {
        println!(
            "  {name:<9} full programming {:.1} ms, one change {:.2} ms (back {:.2} ms), new \
             endpoint used right after: {}/{} rounds",
            Spread::over(rounds, |r| r.program[m]),
            Spread::over(rounds, |r| r.change[m][0]),
            Spread::over(rounds, |r| r.change[m][1]),
            rounds.iter().filter(|r| r.change_ok[m]).count(),
            rounds.len()
        );
    }
    match proxier {
        Some(p) => println!(
            "  IptablesProxier::sync (single run): first sync {:.0} ms (adopts the loaded rules: \
             iptables-save + diff); then, synced before: one change {:.0} ms, back {:.0} ms \
             (diff + restore --noflush), new endpoint used right after: {}",
            p.adopt_ms, p.change_ms, p.back_ms, p.ok
        ),
        None => {
            println!("  IptablesProxier::sync: not run at this size (FERRY_BENCH_IPT_PROXIER_MAX)")
        }
    }
    println!(
        "  {:<30} {:>24} {:>24} {:>24}",
        "path", "connect p50 µs", "connect p99 µs", "conn/s"
    );
    for (i, p) in paths.iter().enumerate() {
        println!(
            "  {:<30} {:>24} {:>24} {:>24}",
            p.name,
            format!("{:.1}", Spread::over(rounds, |r| r.runs[i].p50)),
            format!("{:.1}", Spread::over(rounds, |r| r.runs[i].p99)),
            format!("{:.0}", Spread::over(rounds, |r| r.runs[i].per_sec())),
        );
    }
    let errors: usize = rounds
        .iter()
        .flat_map(|r| r.runs.iter().map(|x| x.errors))
        .sum();
    println!(
        "  ratios per round: ebpf/direct p50 {:.3}, iptables/direct p50 {:.3}, ebpf/iptables \
         conn/s {:.3}; failed connections {errors}",
        ratios(rounds, |r| r.runs[0].p50 / r.runs[1].p50),
        ratios(rounds, |r| r.runs[2].p50 / r.runs[3].p50),
        ratios(rounds, |r| r.runs[0].per_sec() / r.runs[2].per_sec()),
    );
}

fn summary(per_size: &[(usize, Vec<Round>)]) {
    let Some((first, r1)) = per_size.first() else {
        return;
    };
    let Some((last, rn)) = per_size.last() else {
        return;
    };
    println!("targets (issue #12):");
    let p50 = |r: &[Round], i: usize| Spread::over(r, |x| x.runs[i].p50).median;
    let plain = p50(rn, 0) / p50(r1, 0);
    let corrected = plain / (p50(rn, 1) / p50(r1, 1));
    println!(
        "  ebpf p50 at {last} / at {first}: {plain:.3} (drift-corrected by the direct path: \
         {corrected:.3})  target <= 1.1: {}",
        verdict(plain <= 1.1)
    );
    let vs_direct = Spread::over(rn, |r| r.runs[0].p50 / r.runs[1].p50);
    println!(
        "  ebpf p50 / direct p50 at {last}: {vs_direct:.3}  target <= 1.05: {}",
        verdict(vs_direct.median <= 1.05)
    );
    for (size, r) in per_size {
        let cps = Spread::over(r, |x| x.runs[0].per_sec() / x.runs[2].per_sec());
        println!(
            "  ebpf conn/s / iptables conn/s at {size}: {cps:.3}  target >= 1: {}",
            verdict(cps.median >= 1.0)
        );
    }
    if let Some((_, r)) = per_size.iter().find(|(n, _)| *n == 10_000) {
        let p = Spread::over(r, |x| x.program[0]);
        println!(
            "  ebpf full programming of 10000: {p:.1} ms  target <= 200 ms: {}",
            verdict(p.median <= 200.0)
        );
    }
    let c = Spread::over(rn, |x| x.change[0][0]);
    println!(
        "  ebpf one change at {last}: {c:.2} ms  target <= 5 ms: {}",
        verdict(c.median <= 5.0)
    );
}
