//! Service semantics end to end on a real `ferry up` cluster (2 nodes, privileged), one test per
//! proxy mode, one cluster per test, the checks in sequence (issue #12, "Semantics"; the upstream
//! conformance assertions each one mirrors are listed in docs/services.md, "Conformance"):
//! several ports with named targetPorts resolved per pod, and one port number over TCP and UDP;
//! UDP through a ClusterIP (spread, replies from the ClusterIP, a 2,000-byte datagram whole);
//! NodePort from a pod and from a node's host process, on both nodes' addresses; externalIPs and
//! a LoadBalancer ingress IP from a pod; `sessionAffinity: ClientIP` on a ClusterIP and a
//! NodePort (sticks, chooses again after `timeoutSeconds`, spreads when switched to None, sticks
//! when switched back); `internalTrafficPolicy: Local` from both nodes; headless and ExternalName
//! Services absent from the datapath, which holds exactly the API's frontends; a Service without
//! endpoints refuses TCP and UDP at once; hairpin through a ClusterIP (TCP and UDP) and the own
//! node's NodePort (TCP and UDP); a deleted Service leaves the datapath, recreated with a second
//! port it is served again, a removed port leaves; agent restart (SIGTERM) and `kill -9`: a
//! long-lived TCP connection and a connected UDP flow through the ClusterIP keep working, new
//! connections are served while the agent is down, the datapath is adopted unchanged (the same
//! frontends, generations and backend ids, or the same rules) and, in eBPF mode, the inspection
//! command reads it while the agent is down; a deleted backend (which keeps answering while it
//! terminates) is never picked by a new connection 1 s after its endpoint left, a connected UDP
//! socket pinned to it is moved or closed (never black-holed) while one pinned to the remaining
//! backend is untouched; a terminating endpoint is used once no ready one is left.
//!
//! Clients run as processes in a pod's (or a node's) network namespace and in a leaf cgroup below
//! the node's cgroup, as the pods' own processes are, so the eBPF socket hooks apply to them.

mod common;

use common::*;
use ferry_tests::{privileged, wait_until, ChildGuard, RootSnapshot};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One cluster at a time: the machine has two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// `sessionAffinityConfig.clientIP.timeoutSeconds` of the affinity Service: short, so its expiry
/// is tested too.
const AFFINITY_TIMEOUT: u64 = 2;

/// The backend pods: `tcp:PORT` and `udp:PORT` listeners named by argv. TCP answers every line
/// with `<pod> <local port> <peer address> <line>`; UDP answers every datagram with `<pod> <local port> <size>`.
/// With `IGNORE_TERM` set, SIGTERM is ignored: the pod keeps serving while it terminates (the
/// kubelet has no preStop hooks; this is the same as a preStop sleep).
const SERVER: &str = r#"import os, signal, socket, sys, threading
name = os.environ.get("POD_NAME", "?")
if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
def serve(c, peer, port):
    try:
        for line in c.makefile("rb"):
            c.sendall(("%s %d %s %s\n" % (name, port, peer, line.decode().strip())).encode())
    except OSError:
        pass
    finally:
        c.close()
def tcp(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", port))
    s.listen(128)
    while True:
        c, peer = s.accept()
        threading.Thread(target=serve, args=(c, peer[0], port), daemon=True).start()
def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("", port))
    while True:
        data, peer = s.recvfrom(65535)
        s.sendto(("%s %d %d" % (name, port, len(data))).encode(), peer)
for spec in sys.argv[1:]:
    proto, port = spec.split(":")
    threading.Thread(target=tcp if proto == "tcp" else udp, args=(int(port),), daemon=True).start()
threading.Event().wait()
"#;

/// The client. `tcp N IP PORT`: N connections, one answer (`<pod> <port>`) per line, `ERR ..` for
/// a failed one (`tcpsrc`: `<pod> <source address the pod saw>`). `udp N IP PORT [SIZE]`: N datagrams of SIZE bytes from fresh unconnected
/// sockets, `<pod> <port> <size received> <reply source ip:port>` per line. `hold IP TPORT UPORT`:
/// one TCP connection and one connected UDP socket, a request on each every 100 ms until a line
/// arrives on stdin; JSON counters after the first round and at the end. `udpstick IP PORT POD..`:
/// connected UDP sockets until one is answered by each POD (JSON list of the pinned ones), then,
/// after a line on stdin, a datagram on each every 100 ms for 4 s: JSON `{pod: [[ms, event]..]}`
/// where an event is the answering pod, `timeout` or `err:<errno>` (the socket is closed then).
/// `refuse IP PORT tcp|udp`: one TCP connect, or a connected UDP socket's send and receive:
/// `ok|refused|timeout|err:<errno> <ms>`.
const CLIENT: &str = r#"import errno, json, select, socket, sys, time
def tcp_once(ip, port, fields=(0, 1)):
    s = socket.create_connection((ip, port), 2)
    try:
        s.settimeout(2)
        s.sendall(b"hi\n")
        f = s.makefile("rb").readline().decode().split()
        return " ".join(f[i] for i in fields) if f else "ERR empty"
    finally:
        s.close()
def udp_once(ip, port, size):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    try:
        s.sendto(b"x" * size, (ip, port))
        data, src = s.recvfrom(65535)
        f = data.decode().split()
        return "%s %s %s %s:%d" % (f[0], f[1], f[2], src[0], src[1])
    finally:
        s.close()
def err(e):
    return "err:" + errno.errorcode.get(e.errno, str(e.errno)) if e.errno else "err:" + repr(e)
cmd = sys.argv[1]
if cmd in ("tcp", "tcpsrc", "udp"):
    n, ip, port = int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    size = int(sys.argv[5]) if len(sys.argv) > 5 else 8
    for _ in range(n):
        try:
            if cmd == "udp":
                print(udp_once(ip, port, size), flush=True)
            else:
                print(tcp_once(ip, port, (0, 1) if cmd == "tcp" else (0, 2)), flush=True)
        except Exception as e:
            print("ERR", repr(e), flush=True)
elif cmd == "hold":
    ip, tport, uport = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    t = socket.create_connection((ip, tport), 2)
    t.settimeout(2)
    tf = t.makefile("rb")
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.connect((ip, uport))
    u.settimeout(0.5)
    st = {"rounds": 0, "tcp_ok": 0, "tcp_err": 0, "udp_ok": 0, "udp_lost": 0, "udp_err": 0,
          "tcp_backends": [], "udp_backends": [], "errors": []}
    def note(kind, e):
        st[kind] += 1
        if len(st["errors"]) < 5:
            st["errors"].append("%s %d %s" % (kind, st["rounds"], e))
    def once():
        st["rounds"] += 1
        try:
            t.sendall(b"n\n")
            f = tf.readline().decode().split()
            if not f:
                raise OSError(0, "closed")
            st["tcp_ok"] += 1
            if f[0] not in st["tcp_backends"]:
                st["tcp_backends"].append(f[0])
        except OSError as e:
            note("tcp_err", err(e))
        try:
            u.send(b"n")
            f = u.recv(65535).decode().split()
            st["udp_ok"] += 1
            if f[0] not in st["udp_backends"]:
                st["udp_backends"].append(f[0])
        except socket.timeout:
            note("udp_lost", "timeout")
        except OSError as e:
            note("udp_err", err(e))
    once()
    print(json.dumps(st), flush=True)
    while not select.select([sys.stdin], [], [], 0.1)[0]:
        once()
    print(json.dumps(st), flush=True)
elif cmd == "refuse":
    ip, port, proto = sys.argv[2], int(sys.argv[3]), sys.argv[4]
    t = time.monotonic()
    try:
        if proto == "tcp":
            socket.create_connection((ip, port), 3).close()
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(3)
            s.connect((ip, port))
            s.send(b"x")
            s.recv(100)
        r = "ok"
    except ConnectionRefusedError:
        r = "refused"
    except socket.timeout:
        r = "timeout"
    except OSError as e:
        r = err(e)
    print(r, int((time.monotonic() - t) * 1000))
elif cmd == "udpstick":
    ip, port, want = sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    socks = {}
    for _ in range(200):
        if len(socks) == len(want):
            break
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect((ip, port))
        s.settimeout(1)
        try:
            s.send(b"p")
            name = s.recv(65535).decode().split()[0]
        except OSError:
            s.close()
            continue
        if name in want and name not in socks:
            socks[name] = s
        else:
            s.close()
    print(json.dumps(sorted(socks)), flush=True)
    sys.stdin.readline()
    t0 = time.monotonic()
    res = {k: [] for k in socks}
    live = dict(socks)
    for s in live.values():
        s.settimeout(0.3)
    while time.monotonic() - t0 < 4:
        for k, s in list(live.items()):
            ms = int((time.monotonic() - t0) * 1000)
            try:
                s.send(b"q")
                ev = s.recv(65535).decode().split()[0]
            except socket.timeout:
                ev = "timeout"
            except OSError as e:
                ev = err(e)
                del live[k]
            res[k].append([ms, ev])
        time.sleep(0.1)
    print(json.dumps(res), flush=True)
"#;

fn items(list: &Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

fn ready(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
        && p["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// A backend pod pinned to `node`: TCP ports `web` and `admin`, UDP port `dns`, with numbers
/// that differ per pod (`base` + 8080 / 9090 / 5353), so named targetPorts resolve per pod.
fn backend(name: &str, node: &str, base: u16, ignore_term: bool, grace: u32) -> Value {
    let (web, admin, dns) = (8080 + base, 9090 + base, 5353 + base);
    let mut env = vec![
        json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
    ];
    if ignore_term {
        env.push(json!({"name": "IGNORE_TERM", "value": "1"}));
    }
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "be", "pod": name}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": grace,
            "containers": [{"name": "srv", "image": "python:3",
                "command": ["/usr/bin/python3", "-c", SERVER, format!("tcp:{web}"), format!("tcp:{admin}"), format!("udp:{dns}")],
                "env": env,
                "ports": [{"name": "web", "containerPort": web}, {"name": "admin", "containerPort": admin},
                          {"name": "dns", "containerPort": dns, "protocol": "UDP"}],
                "readinessProbe": {"tcpSocket": {"port": "web"}, "periodSeconds": 1}}]}})
}

fn service(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"}, "spec": spec})
}

/// A leaf cgroup below a node's cgroup for the test's client processes; killed and removed on drop.
struct LeafCgroup(PathBuf);

impl LeafCgroup {
    fn new(node_cg: &Path, tag: &str) -> LeafCgroup {
        let p = node_cg.join(format!("sem-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        LeafCgroup(p)
    }
}

impl Drop for LeafCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("cgroup.kill"), "1");
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Runs the client in a network namespace and a leaf cgroup below a node's cgroup.
struct Client<'a> {
    what: String,
    netns: PathBuf,
    cgroup: &'a LeafCgroup,
}

impl Client<'_> {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns.display()))
            .args(["/usr/bin/python3", "-c", CLIENT])
            .args(args);
        let leaf = &self.cgroup.0;
        if !leaf.exists() {
            // Seen once on the shared machine: the leaf vanished under a live cluster. Say so,
            // and recreate it only while its node cgroup (with the socket hooks) still exists.
            let node = leaf.parent().unwrap();
            assert!(
                node.exists(),
                "{} is gone: the cluster was torn down under the test",
                node.display()
            );
            eprintln!("warning: {} vanished; recreated", leaf.display());
            std::fs::create_dir(leaf).unwrap();
        }
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(leaf.join("cgroup.procs"))
            .unwrap_or_else(|e| panic!("{}/cgroup.procs: {e}", leaf.display()));
        ferry_sys::process::OnExec::new()
            .join_cgroup(&procs)
            .unwrap()
            .install(&mut cmd);
        // (OnExec holds a duplicate of `procs` for as long as `cmd` lives.)
        cmd
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.command(args).stdin(Stdio::null()).output().unwrap();
        assert!(
            out.status.success(),
            "client ({}) {args:?}: {}",
            self.what,
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `n` TCP connections to `ip:port`: the answers (`<pod> <port>`), failures as `ERR ..`.
    fn tcp(&self, n: u32, ip: &str, port: u16) -> Vec<String> {
        self.run(&["tcp", &n.to_string(), ip, &port.to_string()])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn udp(&self, n: u32, ip: &str, port: u16, size: usize) -> Vec<String> {
        self.run(&[
            "udp",
            &n.to_string(),
            ip,
            &port.to_string(),
            &size.to_string(),
        ])
        .lines()
        .map(str::to_owned)
        .collect()
    }

    /// `refuse`'s verdict and milliseconds.
    fn refuse(&self, ip: &str, port: u16, proto: &str) -> (String, u64) {
        let out = self.run(&["refuse", ip, &port.to_string(), proto]);
        let mut f = out.split_whitespace();
        let verdict = f.next().unwrap_or("").to_owned();
        let ms = f.next().and_then(|m| m.parse().ok()).unwrap_or(u64::MAX);
        (verdict, ms)
    }

    /// Waits (bounded) until `n` TCP connections to `ip:port` are all answered and the answers
    /// are exactly `want`; panics with the last answers otherwise.
    fn expect_tcp(&self, what: &str, ip: &str, port: u16, n: u32, want: &[&str]) {
        let want: BTreeSet<String> = want.iter().map(|s| (*s).to_owned()).collect();
        let mut last = Vec::new();
        let ok = wait_until(Duration::from_secs(15), || {
            last = self.tcp(n, ip, port);
            last.iter().all(|l| !l.starts_with("ERR"))
                && last.iter().cloned().collect::<BTreeSet<_>>() == want
        });
        assert!(
            ok,
            "{what}: {n} TCP connections from {} to {ip}:{port} should reach exactly {want:?}; got {last:?}",
            self.what
        );
        println!(
            "ok: {what}: {n} connections to {ip}:{port} from {} reached {want:?}",
            self.what
        );
    }

    fn spawn(&self, args: &[&str]) -> (ChildGuard, ChildStdin, BufReader<ChildStdout>) {
        let mut child = ChildGuard(
            self.command(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let stdin = child.0.stdin.take().unwrap();
        let stdout = BufReader::new(child.0.stdout.take().unwrap());
        (child, stdin, stdout)
    }
}

fn read_json_line(out: &mut BufReader<ChildStdout>, what: &str) -> Value {
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {line:?}"))
}

/// The cluster's view of one node's agent: its pid and command line from `state.json`.
struct Agent {
    node: u32,
    argv: Vec<String>,
    restarted: Vec<ChildGuard>,
}

impl Agent {
    fn pid(&self, c: &Cluster) -> i32 {
        if let Some(g) = self.restarted.last() {
            return i32::try_from(g.id()).unwrap();
        }
        let state = c.state();
        let comp = state["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == format!("node-{}/agent", self.node))
            .unwrap_or_else(|| panic!("no node-{}/agent in {state:#}", self.node))
            .clone();
        i32::try_from(comp["proc"]["pid"].as_i64().unwrap()).unwrap()
    }

    fn new(c: &Cluster, node: u32) -> Agent {
        let mut a = Agent {
            node,
            argv: Vec::new(),
            restarted: Vec::new(),
        };
        let pid = a.pid(c);
        a.argv = std::fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap()
            .split(|b| *b == 0)
            .filter(|x| !x.is_empty())
            .map(|x| String::from_utf8_lossy(x).into_owned())
            .collect();
        a
    }

    fn stop(&mut self, c: &Cluster, sig: i32) {
        let pid = self.pid(c);
        ferry_sys::process::signal(pid, sig).unwrap_or_else(|e| panic!("kill {pid}: {e}"));
        if let Some(g) = self.restarted.last_mut() {
            let _ = g.0.wait();
        }
        assert!(
            wait_until(Duration::from_secs(15), || !alive(pid)),
            "agent {pid} still alive after signal {sig}"
        );
    }

    /// Starts the agent again with the same command line, in its node's netns and cgroup.
    fn start(&mut self, c: &Cluster) {
        let n = self.restarted.len() + 1;
        let log = std::fs::File::create(
            c.dir()
                .join("logs")
                .join(format!("node-{}-agent-restarted-{n}.log", self.node)),
        )
        .unwrap();
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}-n{}", c.name, self.node))
            .args(&self.argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(
                c.cgroup()
                    .join(format!("n{}/agent/cgroup.procs", self.node)),
            )
            .unwrap();
        ferry_sys::process::OnExec::new()
            .join_cgroup(&procs)
            .unwrap()
            .install(&mut cmd);
        self.restarted.push(ChildGuard(cmd.spawn().unwrap()));
    }
}

/// `ferry_service_sync_total` of node `i`'s agent (its metrics on the node's loopback).
fn syncs(c: &Cluster, i: u32) -> Option<f64> {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}-n{i}", c.name))
        .args([
            "/usr/bin/python3",
            "-c",
            "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9465/metrics', timeout=2).read().decode())",
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("ferry_service_sync_total"))
        .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
}

/// The eBPF datapath as `ferry-agent services -o json` reads it from node `i`'s pins.
fn inspect(bpffs: &Path, i: u32) -> Value {
    let out = Command::new(ferry_tests::bin_path("ferry-agent"))
        .args(["services", "--bpffs-dir"])
        .arg(bpffs.join(format!("node-{i}")))
        .args(["-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "ferry-agent services: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Frontends (`ip:port/proto`) with their generation and backend ids, from the inspection.
fn ebpf_frontends(view: &Value) -> BTreeSet<String> {
    view["frontends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{}:{}/{} gen {} backends {}",
                f["address"].as_str().unwrap(),
                f["port"],
                f["protocol"].as_str().unwrap().to_lowercase(),
                f["generation"],
                f["backends"]
            )
        })
        .collect()
}

/// The frontends the datapath of node `i` serves, as `ip:port/proto`: in eBPF mode from
/// `ferry-agent services` (the pinned maps), in iptables mode from the `FERRY-SERVICES` and
/// `FERRY-NODEPORTS` rules of `iptables-save` (NodePorts, which match any local address there,
/// as `node:port/proto`; see [`normalise`]).
fn frontends(c: &Cluster, bpffs: Option<&Path>, i: u32) -> BTreeSet<String> {
    match bpffs {
        Some(dir) => inspect(dir, i)["frontends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                format!(
                    "{}:{}/{}",
                    f["address"].as_str().unwrap(),
                    f["port"],
                    f["protocol"].as_str().unwrap().to_lowercase()
                )
            })
            .collect(),
        None => ferry_rules(c, i)
            .iter()
            .filter_map(|r| {
                let w: Vec<&str> = r.split_whitespace().collect();
                let after = |flag: &str| {
                    w.iter()
                        .position(|x| *x == flag)
                        .and_then(|p| w.get(p + 1).copied())
                };
                let port = after("--dport")?;
                let proto = after("-p")?;
                let ip = after("-d").map_or("node", |d| d.trim_end_matches("/32"));
                Some(normalise(false, &format!("{ip}:{port}/{proto}")))
            })
            .collect(),
    }
}

/// In iptables mode a NodePort frontend is one rule for every local address: `10.99.0.x:port`
/// becomes `node:port`.
fn normalise(ebpf: bool, f: &str) -> String {
    match f.strip_prefix("10.99.0.") {
        Some(rest) if !ebpf => format!("node:{}", rest.split_once(':').map_or(rest, |x| x.1)),
        _ => f.to_owned(),
    }
}

/// What a rebuild would reset, read with independent tools: in eBPF mode the kernel id of the
/// pinned service map (`bpftool map show pinned`) and the `connect4_rewrites` counter kept in the
/// pinned stats map; in iptables mode the packet counter of the ClusterIP rule of `vip:80`
/// (`iptables-save -c`: a flushed and rewritten chain starts from 0).
fn continuity(c: &Cluster, bpffs: Option<&Path>, vip: &str) -> (String, u64) {
    match bpffs {
        Some(dir) => {
            let pin = dir.join("node-1/FERRY_LB4_SVC");
            let out = Command::new("bpftool")
                .args(["-j", "map", "show", "pinned"])
                .arg(&pin)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "bpftool map show pinned {}: {}",
                pin.display(),
                text(&out)
            );
            let map: Value = serde_json::from_slice(&out.stdout).unwrap();
            let rewrites = inspect(dir, 1)["counters"]["connect4_rewrites"]
                .as_u64()
                .unwrap();
            (format!("map id {}", map["id"]), rewrites)
        }
        None => {
            let out = Command::new("ip")
                .args(["netns", "exec", &format!("{}-n1", c.name)])
                .args(["iptables-save", "-c", "-t", "nat"])
                .output()
                .unwrap();
            let rule = format!("-A FERRY-SERVICES -d {vip}/32 -p tcp -m tcp --dport 80 ");
            let text = String::from_utf8_lossy(&out.stdout);
            let line = text
                .lines()
                .find(|l| l.contains(&rule))
                .unwrap_or_else(|| panic!("no `{rule}` in iptables-save -c:\n{text}"));
            let pkts = line
                .strip_prefix('[')
                .and_then(|l| l.split(':').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no counter in {line}"));
            ("rules".to_owned(), pkts)
        }
    }
}

/// The nat and filter rules of our chains in node `i`'s namespace (`-A FERRY-..` lines).
fn ferry_rules(c: &Cluster, i: u32) -> Vec<String> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("{}-n{i}", c.name),
            "iptables-save",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "iptables-save: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("-A FERRY-S") || l.starts_with("-A FERRY-NODEPORTS"))
        .map(str::to_owned)
        .collect()
}

fn semantics_in_mode(mode: &str) {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    binaries(&["ferry-server", "ferry-kubelet", "ferry-agent", "ferry-cni"]);
    let started = Instant::now();
    let step = |what: &str| println!("[{:>6.1}s] {mode}: {what}", started.elapsed().as_secs_f64());
    let root = RootSnapshot::take();
    let c = Cluster::new();
    let out = c.up(&["--nodes", "2", "--service-proxy", mode]);
    assert!(out.status.success(), "ferry up: {}", text(&out));
    step("cluster up");
    let k = Kubectl(c.dir().join("kubeconfig").to_string_lossy().into_owned());
    let bpffs: Option<PathBuf> = c.state()["bpffs"].as_str().map(PathBuf::from);
    if mode == "ebpf" {
        assert!(bpffs.is_some(), "no bpffs directory in state.json");
    }

    // Pods: a client on node-1, backends be-1 (node-1) and be-2 (node-2; it ignores SIGTERM and
    // has a long grace period, so it keeps serving while it terminates).
    k.apply(&json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "client", "namespace": "default"},
        "spec": {"nodeName": "node-1", "terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": "python:3",
            "command": ["/usr/bin/python3", "-c", "import time; time.sleep(1e9)"]}]}}));
    k.apply(&backend("be-1", "node-1", 0, false, 1));
    k.apply(&backend("be-2", "node-2", 1, true, 300));
    let tcp = |name: &str| json!({"name": name, "port": 80, "targetPort": "web"});
    k.apply(&service(
        "multi",
        json!({"selector": {"app": "be"}, "ports": [
        tcp("web"),
        {"name": "admin", "port": 90, "targetPort": "admin"},
        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": "web"}]}),
    ));
    k.apply(&service(
        "np",
        json!({"type": "NodePort", "selector": {"app": "be"}, "ports": [tcp("web")]}),
    ));
    k.apply(&service(
        "ext",
        json!({"selector": {"app": "be"}, "externalIPs": ["10.200.0.10"], "ports": [tcp("web")]}),
    ));
    k.apply(&service(
        "lb",
        // A class of another implementation: ferry-server's pool leaves its address alone, the
        // test writes the status as that implementation would.
        json!({"type": "LoadBalancer", "loadBalancerClass": "example.com/external",
               "selector": {"app": "be"}, "ports": [tcp("web")]}),
    ));
    k.apply(&service(
        "aff",
        json!({"type": "NodePort", "selector": {"app": "be"}, "sessionAffinity": "ClientIP",
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": AFFINITY_TIMEOUT}}, "ports": [tcp("web")]}),
    ));
    k.apply(&service(
        "empty",
        json!({"selector": {"app": "nothing"}, "ports": [
        tcp("web"), {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"}]}),
    ));
    k.apply(&service(
        "local",
        json!({"selector": {"app": "be"}, "internalTrafficPolicy": "Local", "ports": [tcp("web")]}),
    ));
    k.apply(&service(
        "local1",
        json!({"selector": {"pod": "be-1"}, "internalTrafficPolicy": "Local", "ports": [tcp("web")]}),
    ));
    // Left to another proxy, or headless by label: ignored like the headless Service.
    k.apply(&json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "proxyname", "namespace": "default",
            "labels": {"service.kubernetes.io/service-proxy-name": "foo-bar"}},
        "spec": {"selector": {"app": "be"}, "ports": [{"name": "web", "port": 7779, "targetPort": "web"}]}}));
    k.apply(&json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "headless-label", "namespace": "default",
            "labels": {"service.kubernetes.io/headless": ""}},
        "spec": {"selector": {"app": "be"}, "ports": [{"name": "web", "port": 7780, "targetPort": "web"}]}}));
    k.apply(&service(
        "hp",
        json!({"type": "NodePort", "selector": {"pod": "be-1"}, "ports": [
        tcp("web"), {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"}]}),
    ));
    k.apply(&service(
        "headless",
        json!({"clusterIP": "None", "selector": {"app": "be"},
        "ports": [{"name": "web", "port": 7777, "targetPort": "web"}]}),
    ));
    k.apply(&service(
        "extname",
        json!({"type": "ExternalName", "externalName": "example.com", "ports": [{"name": "x", "port": 7778}]}),
    ));
    let out = k.run(
        &[
            "patch",
            "svc",
            "lb",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"loadBalancer":{"ingress":[{"ip":"10.200.0.20"}]}}}"#,
        ],
        None,
    );
    assert!(
        out.status.success(),
        "kubectl patch svc lb --subresource=status: {}",
        text(&out)
    );
    let pods = k.wait(&["get", "pods"], 90, "3 ready pods", |l| {
        let p = items(l);
        p.len() == 3 && p.iter().all(ready)
    });
    step("pods ready");
    let pod = |name: &str| {
        items(&pods)
            .into_iter()
            .find(|p| p["metadata"]["name"] == name)
            .unwrap()
    };
    let netns_of = |name: &str, node: u32| {
        c.dir()
            .join(format!("nodes/n{node}/kubelet/netns"))
            .join(pod(name)["metadata"]["uid"].as_str().unwrap())
    };
    let be2_ip = pod("be-2")["status"]["podIP"].as_str().unwrap().to_owned();
    let svc = |name: &str| k.json(&["get", "svc", name]);
    let cluster_ip = |name: &str| svc(name)["spec"]["clusterIP"].as_str().unwrap().to_owned();
    let node_port = |name: &str, i: usize| {
        u16::try_from(svc(name)["spec"]["ports"][i]["nodePort"].as_u64().unwrap()).unwrap()
    };

    let cg1 = LeafCgroup::new(&c.cgroup().join("n1"), "n1");
    let cg2 = LeafCgroup::new(&c.cgroup().join("n2"), "n2");
    let client = Client {
        what: "pod client on node-1".into(),
        netns: netns_of("client", 1),
        cgroup: &cg1,
    };
    let host1 = Client {
        what: "host process on node-1".into(),
        netns: PathBuf::from(format!("/run/netns/{}-n1", c.name)),
        cgroup: &cg1,
    };
    let host2 = Client {
        what: "host process on node-2".into(),
        netns: PathBuf::from(format!("/run/netns/{}-n2", c.name)),
        cgroup: &cg2,
    };
    let in_be1 = Client {
        what: "pod be-1 itself".into(),
        netns: netns_of("be-1", 1),
        cgroup: &cg1,
    };

    // 1. Several ports, named targetPorts resolved per pod (be-1: 8080/9090, be-2: 8081/9091).
    let multi = cluster_ip("multi");
    client.expect_tcp(
        "port 80 -> targetPort web",
        &multi,
        80,
        30,
        &["be-1 8080", "be-2 8081"],
    );
    client.expect_tcp(
        "port 90 -> targetPort admin",
        &multi,
        90,
        30,
        &["be-1 9090", "be-2 9091"],
    );
    client.expect_tcp(
        "port 53/TCP -> targetPort web (53/UDP is dns)",
        &multi,
        53,
        30,
        &["be-1 8080", "be-2 8081"],
    );
    step("several ports, named targetPorts, one port number over TCP and UDP");

    // 1b. The backends see the client pod's own address (no SNAT inside the cluster).
    let client_ip = pod("client")["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_owned();
    let want_src = BTreeSet::from([format!("be-1 {client_ip}"), format!("be-2 {client_ip}")]);
    let mut last = BTreeSet::new();
    let ok = wait_until(Duration::from_secs(15), || {
        last = client
            .run(&["tcpsrc", "30", &multi, "80"])
            .lines()
            .map(str::to_owned)
            .collect();
        last == want_src
    });
    assert!(
        ok,
        "the backends should see the client pod's address {client_ip} through the ClusterIP: {last:?}"
    );
    step("source pod IP preserved through the ClusterIP");

    // 1c. Pod-to-pod netfilter on node-1 (agent `--pod-netfilter-bypass`, on by default): in eBPF
    //     mode the bridge hook is off and forwarded pod<->pod packets are NOTRACKed, so direct
    //     connections to be-1 (bridged) and be-2 (routed to node-2) leave no conntrack entry; the
    //     iptables mode needs both and keeps them. Read with the kernel's own tools.
    let in_node1 = |args: &[&str]| {
        let out = Command::new("ip")
            .args(["netns", "exec", &format!("{}-n1", c.name)])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ebpf = mode == "ebpf";
    let hook = if ebpf { "0" } else { "1" };
    let mut seen = String::new();
    assert!(
        wait_until(Duration::from_secs(15), || {
            seen = in_node1(&["cat", "/proc/sys/net/bridge/bridge-nf-call-iptables"]);
            seen.trim() == hook
        }),
        "{mode}: node-1's net.bridge.bridge-nf-call-iptables should be {hook}, is {seen}"
    );
    let raw = in_node1(&["iptables-save", "-t", "raw"]);
    let notrack = "-A FERRY-PREROUTING -s 10.244.0.0/16 -d 10.244.0.0/16 -m addrtype ! --dst-type LOCAL -j NOTRACK";
    assert_eq!(
        raw.lines().any(|l| l == notrack),
        ebpf,
        "{mode}: raw table of node-1:\n{raw}"
    );
    let be1_ip = pod("be-1")["status"]["podIP"].as_str().unwrap().to_owned();
    for (ip, port) in [(&be1_ip, 8080), (&be2_ip, 8081)] {
        let got = client.tcp(3, ip, port);
        assert!(
            got.iter().all(|l| !l.starts_with("ERR")),
            "{ip}:{port}: {got:?}"
        );
        let entries = in_node1(&["conntrack", "-L", "-s", &client_ip, "-d", ip]);
        assert_eq!(
            entries.lines().count() == 0,
            ebpf,
            "{mode}: conntrack entries on node-1 for {client_ip} -> {ip}:\n{entries}"
        );
    }
    step("pod-to-pod netfilter: bridge hook and NOTRACK per mode, checked with conntrack");

    // 2. UDP through the ClusterIP: spread, replies from the ClusterIP, 2,000 bytes whole.
    let mut last = Vec::new();
    let ok = wait_until(Duration::from_secs(15), || {
        last = client.udp(30, &multi, 53, 8);
        let seen: BTreeSet<String> = last
            .iter()
            .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
            .collect();
        seen == BTreeSet::from(["be-1 5353".to_owned(), "be-2 5354".to_owned()])
    });
    assert!(
        ok,
        "UDP {multi}:53 x30 should reach be-1:5353 and be-2:5354 only; got {last:?}"
    );
    for l in &last {
        assert!(
            l.ends_with(&format!(" 8 {multi}:53")),
            "UDP reply should come from the ClusterIP {multi}:53: {l}"
        );
    }
    let big = client.udp(6, &multi, 53, 2000);
    for l in &big {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert!(
            f.len() == 4 && f[2] == "2000" && f[3] == format!("{multi}:53"),
            "a 2,000-byte datagram to {multi}:53 should arrive whole (backend reports 2000) and be answered from the ClusterIP: {big:?}"
        );
    }
    step("UDP ClusterIP: spread, reply source, 2,000-byte datagram");

    // 3. NodePort on both nodes' addresses, from a pod and from the node itself.
    let np = node_port("np", 0);
    for who in [&client, &host1] {
        for ip in ["10.99.0.11", "10.99.0.12"] {
            who.expect_tcp("NodePort", ip, np, 30, &["be-1 8080", "be-2 8081"]);
        }
    }
    step("NodePort from a pod and from the node");

    // 4. externalIP and LoadBalancer ingress IP from a pod.
    client.expect_tcp(
        "externalIP",
        "10.200.0.10",
        80,
        30,
        &["be-1 8080", "be-2 8081"],
    );
    client.expect_tcp(
        "LoadBalancer ingress IP",
        "10.200.0.20",
        80,
        30,
        &["be-1 8080", "be-2 8081"],
    );
    step("externalIP and LoadBalancer ingress IP");

    // 5. sessionAffinity ClientIP, on the ClusterIP and on a NodePort: one backend per client;
    //    after the timeout the choice is made again; switched to None it spreads, back to
    //    ClientIP it sticks again.
    let aff = cluster_ip("aff");
    let aff_np = node_port("aff", 0);
    let sticky = |ip: &str, port: u16| -> String {
        let mut last = Vec::new();
        let ok = wait_until(Duration::from_secs(15), || {
            last = client.tcp(15, ip, port);
            last.iter().all(|l| !l.starts_with("ERR"))
                && last.iter().collect::<BTreeSet<_>>().len() == 1
        });
        assert!(
            ok,
            "sessionAffinity ClientIP: 15 connections from one client to {ip}:{port} should reach one backend: {last:?}"
        );
        last[0].clone()
    };
    let first = sticky(&aff, 80);
    sticky("10.99.0.11", aff_np);
    let mut seen = vec![first.clone()];
    for _ in 0..16 {
        std::thread::sleep(Duration::from_secs(AFFINITY_TIMEOUT + 1));
        seen.extend(client.tcp(1, &aff, 80));
        if seen.iter().any(|b| b != &first) {
            break;
        }
    }
    assert!(
        seen.iter().any(|b| b != &first),
        "sessionAffinity timeoutSeconds {AFFINITY_TIMEOUT}: after each expiry a connection should choose again; 16 choices all went to {first}: {seen:?}"
    );
    k.ok(&[
        "patch",
        "svc",
        "aff",
        "--type=merge",
        "-p",
        r#"{"spec":{"sessionAffinity":"None"}}"#,
    ]);
    client.expect_tcp(
        "sessionAffinity switched to None",
        &aff,
        80,
        30,
        &["be-1 8080", "be-2 8081"],
    );
    k.ok(&["patch", "svc", "aff", "--type=merge", "-p",
        &json!({"spec": {"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}}}}).to_string()]);
    sticky(&aff, 80);
    step("sessionAffinity ClientIP: sticks, expires, switches off and on");

    // 6. internalTrafficPolicy Local: each node's clients reach only that node's endpoints.
    let local = cluster_ip("local");
    client.expect_tcp(
        "internalTrafficPolicy Local (node-1)",
        &local,
        80,
        20,
        &["be-1 8080"],
    );
    host2.expect_tcp(
        "internalTrafficPolicy Local (node-2)",
        &local,
        80,
        20,
        &["be-2 8081"],
    );
    let local1 = cluster_ip("local1");
    client.expect_tcp(
        "internalTrafficPolicy Local, local endpoint",
        &local1,
        80,
        10,
        &["be-1 8080"],
    );
    let (verdict, ms) = host2.refuse(&local1, 80, "tcp");
    assert!(
        verdict == "refused" && ms < 1000,
        "internalTrafficPolicy Local without a local endpoint (node-2 to {local1}:80, be-1 is on node-1) should be refused at once: {verdict} after {ms} ms"
    );
    step("internalTrafficPolicy Local");

    // 7. Headless and ExternalName Services, and Services labelled service-proxy-name or headless,
    //    are not in the datapath; it holds exactly the API's
    //    frontends (every ClusterIP, NodePort on both node addresses, externalIP, LB IP).
    let mut want: BTreeSet<String> = BTreeSet::new();
    for s in items(&k.json(&["get", "svc", "-A"])) {
        let spec = &s["spec"];
        let labels = &s["metadata"]["labels"];
        if spec["type"] == "ExternalName"
            || spec["clusterIP"] == "None"
            || labels
                .get("service.kubernetes.io/service-proxy-name")
                .is_some()
            || labels.get("service.kubernetes.io/headless").is_some()
        {
            continue;
        }
        for p in spec["ports"].as_array().unwrap() {
            let proto = p["protocol"].as_str().unwrap_or("TCP").to_lowercase();
            let mut add = |ip: &str, port: &Value| {
                want.insert(format!("{ip}:{port}/{proto}"));
            };
            add(spec["clusterIP"].as_str().unwrap(), &p["port"]);
            if let Some(npv) = p.get("nodePort").filter(|v| v.is_u64()) {
                if spec["type"] == "NodePort" || spec["type"] == "LoadBalancer" {
                    add("10.99.0.11", npv);
                    add("10.99.0.12", npv);
                }
            }
            for ip in spec["externalIPs"].as_array().into_iter().flatten() {
                add(ip.as_str().unwrap(), &p["port"]);
            }
            for ing in s["status"]["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
            {
                add(ing["ip"].as_str().unwrap(), &p["port"]);
            }
        }
    }
    let ebpf = bpffs.is_some();
    let want: BTreeSet<String> = want.iter().map(|f| normalise(ebpf, f)).collect();
    let mut have = BTreeSet::new();
    let same = wait_until(Duration::from_secs(10), || {
        have = frontends(&c, bpffs.as_deref(), 1);
        have == want
    });
    assert!(
        same,
        "node-1's datapath ({}) should hold exactly the API's frontends, none for the headless (:7777) or ExternalName (:7778) Services;\n missing: {:?}\n extra: {:?}",
        if ebpf { "ferry-agent services" } else { "iptables-save" },
        want.difference(&have).collect::<Vec<_>>(),
        have.difference(&want).collect::<Vec<_>>()
    );
    // `ferry status` counts the Services the agent serves: kubernetes and the 9 above.
    let mut status = String::new();
    let counted = wait_until(Duration::from_secs(10), || {
        let out = c.ferry("status", &[]);
        status = String::from_utf8_lossy(&out.stdout).into_owned();
        (1..=2).all(|i| {
            status.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() == 5 && f[0] == format!("node-{i}") && f[1] == mode && f[2] == "10"
            })
        })
    });
    assert!(
        counted,
        "ferry status should show 10 Services per node (headless, ExternalName and labelled ones ignored):\n{status}"
    );
    step("headless and ExternalName ignored; datapath == API frontends");

    // 7b. A Service without endpoints refuses at once: TCP connect and a connected UDP socket
    //     get ECONNREFUSED (ICMP port unreachable, or the socket hook), never a timeout.
    let empty = cluster_ip("empty");
    for proto in ["tcp", "udp"] {
        let port = if proto == "tcp" { 80 } else { 53 };
        let (verdict, ms) = client.refuse(&empty, port, proto);
        assert!(
            verdict == "refused" && ms < 1000,
            "{proto} to {empty}:{port} (a Service without endpoints) should be refused in < 1 s: {verdict} after {ms} ms"
        );
    }
    step("no endpoints: TCP and UDP refused at once");

    // 8. Hairpin: be-1 reaches itself through a Service that selects only it (ClusterIP TCP and
    //    UDP, and its own node's NodePort).
    let hp = cluster_ip("hp");
    in_be1.expect_tcp("hairpin ClusterIP", &hp, 80, 5, &["be-1 8080"]);
    in_be1.expect_tcp(
        "hairpin own NodePort",
        "10.99.0.11",
        node_port("hp", 0),
        5,
        &["be-1 8080"],
    );
    let mut last = Vec::new();
    let ok = wait_until(Duration::from_secs(15), || {
        last = in_be1.udp(5, &hp, 53, 8);
        last.iter().all(|l| l == &format!("be-1 5353 8 {hp}:53"))
    });
    assert!(ok, "hairpin UDP {hp}:53 from be-1: {last:?}");
    let hp_udp = node_port("hp", 1);
    let last = in_be1.udp(5, "10.99.0.11", hp_udp, 8);
    assert!(
        last.iter().all(|l| l.starts_with("be-1 5353 8 ")),
        "hairpin UDP through its own node's NodePort 10.99.0.11:{hp_udp}: {last:?}"
    );
    step("hairpin");

    // 8b. A deleted Service leaves the datapath; recreated (with a second port) it is served
    //     again; a port removed from it leaves the datapath.
    k.ok(&["delete", "svc", "ext", "--wait=true"]);
    let mut have = BTreeSet::new();
    let gone = wait_until(Duration::from_secs(10), || {
        have = frontends(&c, bpffs.as_deref(), 1);
        !have.iter().any(|f| f.starts_with("10.200.0.10:"))
    });
    assert!(
        gone,
        "the deleted Service's externalIP is still in node-1's datapath: {have:?}"
    );
    k.apply(&service(
        "ext",
        json!({"selector": {"app": "be"}, "externalIPs": ["10.200.0.10"],
            "ports": [tcp("web"), {"name": "admin", "port": 90, "targetPort": "admin"}]}),
    ));
    let ext = cluster_ip("ext");
    client.expect_tcp(
        "recreated Service",
        &ext,
        80,
        20,
        &["be-1 8080", "be-2 8081"],
    );
    client.expect_tcp(
        "recreated Service, added port",
        "10.200.0.10",
        90,
        20,
        &["be-1 9090", "be-2 9091"],
    );
    k.ok(&[
        "patch",
        "svc",
        "ext",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/ports/1"}]"#,
    ]);
    let gone = wait_until(Duration::from_secs(10), || {
        have = frontends(&c, bpffs.as_deref(), 1);
        !have.contains(&format!("{ext}:90/tcp"))
            && !have.contains("10.200.0.10:90/tcp")
            && have.contains(&format!("{ext}:80/tcp"))
    });
    assert!(gone, "port 90 removed from Service ext should leave node-1's datapath (and port 80 stay): {have:?}");
    step("Service deleted, recreated with a new port, port removed");

    // 9. Agent restart (SIGTERM) and kill -9 on node-1, under a long-lived TCP connection and a
    //    connected UDP flow through the ClusterIP.
    let (mut hold, mut hold_in, mut hold_out) = client.spawn(&["hold", &multi, "80", "53"]);
    let first = read_json_line(&mut hold_out, "hold");
    assert!(
        first["tcp_ok"] == 1 && first["udp_ok"] == 1,
        "the long-lived flows did not start: {first}"
    );
    let snapshot = || match &bpffs {
        Some(dir) => ebpf_frontends(&inspect(dir, 1))
            .into_iter()
            .collect::<Vec<_>>(),
        None => ferry_rules(&c, 1),
    };
    let before = snapshot();
    let mut agent = Agent::new(&c, 1);
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGKILL, "kill -9")] {
        let kept = continuity(&c, bpffs.as_deref(), &multi);
        agent.stop(&c, sig);
        step(&format!("agent on node-1 stopped ({name})"));
        std::thread::sleep(Duration::from_millis(500));
        let got = client.tcp(20, &multi, 80);
        let seen: BTreeSet<&str> = got.iter().map(String::as_str).collect();
        assert_eq!(
            seen,
            BTreeSet::from(["be-1 8080", "be-2 8081"]),
            "new connections to {multi}:80 while the agent is down ({name})"
        );
        assert_eq!(
            snapshot(),
            before,
            "the datapath changed while the agent was down ({name}; eBPF: read with ferry-agent services from the pins)"
        );
        agent.start(&c);
        let ok = wait_until(Duration::from_secs(20), || {
            syncs(&c, 1).is_some_and(|n| n >= 1.0)
        });
        assert!(
            ok,
            "the restarted agent on node-1 did not sync within 20 s ({name})"
        );
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            snapshot(),
            before,
            "the restarted agent rebuilt the datapath instead of adopting it ({name})"
        );
        let now = continuity(&c, bpffs.as_deref(), &multi);
        assert!(
            now.0 == kept.0 && now.1 >= kept.1,
            "the datapath was recreated across the agent restart ({name}): before {kept:?}, after {now:?} (the same object and a counter that only grows are expected)"
        );
        client.expect_tcp(
            "after the agent came back",
            &multi,
            80,
            20,
            &["be-1 8080", "be-2 8081"],
        );
        step(&format!(
            "agent restarted after {name}: datapath adopted unchanged ({} {} -> {})",
            now.0, kept.1, now.1
        ));
    }
    writeln!(hold_in, "stop").unwrap();
    let end = read_json_line(&mut hold_out, "hold");
    let _ = hold.0.wait();
    println!("long-lived flows across two agent restarts: {end}");
    assert!(
        end["tcp_err"] == 0 && end["udp_err"] == 0 && end["tcp_backends"].as_array().map(Vec::len) == Some(1)
            && end["udp_backends"].as_array().map(Vec::len) == Some(1),
        "a long-lived TCP connection / connected UDP flow through {multi} was disturbed by the agent restarts: {end}"
    );
    assert!(
        end["udp_lost"].as_u64() <= Some(2),
        "connected UDP flow lost datagrams across the agent restarts: {end}"
    );

    // 10. Backend removal: be-2 is deleted but keeps answering while it terminates (300 s grace,
    //     SIGTERM ignored). One second after its endpoint left, no new connection reaches it; a
    //     connected UDP socket pinned to it is moved or closed; one pinned to be-1 is untouched.
    let (mut stick, mut stick_in, mut stick_out) =
        client.spawn(&["udpstick", &multi, "53", "be-1", "be-2"]);
    let pinned = read_json_line(&mut stick_out, "udpstick");
    assert_eq!(
        pinned,
        json!(["be-1", "be-2"]),
        "connected UDP sockets pinned to each backend"
    );
    k.ok(&["delete", "pod", "be-2", "--wait=false"]);
    let slices = || {
        k.json(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=multi",
        ])
    };
    let endpoint = |list: &Value, ip: &str| {
        items(list)
            .iter()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .find(|e| e["addresses"][0] == ip)
    };
    let mut last = Value::Null;
    let left = wait_until(Duration::from_secs(15), || {
        last = slices();
        endpoint(&last, &be2_ip).is_some_and(|e| e["conditions"]["ready"] == false)
    });
    assert!(
        left,
        "be-2's endpoint still ready after its deletion: {last:#}"
    );
    let removed_at = Instant::now();
    writeln!(stick_in, "go").unwrap();
    let e = endpoint(&last, &be2_ip).unwrap();
    assert!(
        e["conditions"]["serving"] == true && e["conditions"]["terminating"] == true,
        "be-2 should be serving and terminating: {e}"
    );
    step("be-2 deleted: its endpoint is terminating");
    std::thread::sleep(Duration::from_secs(1).saturating_sub(removed_at.elapsed()));
    let got = client.tcp(30, &multi, 80);
    assert!(
        got.iter().all(|l| l == "be-1 8080"),
        "1 s after be-2's endpoint left (terminating while be-1 is ready), new connections to {multi}:80 should reach only be-1: {got:?}"
    );
    let got = client.udp(10, &multi, 53, 8);
    assert!(
        got.iter().all(|l| l.starts_with("be-1 5353 ")),
        "new UDP datagrams to {multi}:53 after be-2 left: {got:?}"
    );
    // be-2 still answers on its pod address: the checks above mean something.
    let direct = client.tcp(1, &be2_ip, 8081);
    assert_eq!(
        direct,
        vec!["be-2 8081".to_owned()],
        "be-2 should still serve while it terminates"
    );
    let res = read_json_line(&mut stick_out, "udpstick");
    let _ = stick.0.wait();
    println!("connected UDP sockets after be-2 left: {res}");
    let events = |k: &str| -> Vec<(u64, String)> {
        res[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e[0].as_u64().unwrap(), e[1].as_str().unwrap().to_owned()))
            .collect()
    };
    let stale = events("be-2");
    let late: Vec<&(u64, String)> = stale.iter().filter(|(ms, _)| *ms >= 1000).collect();
    let closed = stale.iter().any(|(_, e)| e.starts_with("err:"));
    assert!(
        late.iter().all(|(_, e)| e != "be-2"),
        "{mode}: a connected UDP socket still reached the removed be-2 1 s after it left: {stale:?}"
    );
    assert!(
        closed || (!late.is_empty() && late.iter().all(|(_, e)| e == "be-1")),
        "{mode}: a connected UDP socket pinned to the removed be-2 should be moved to be-1 or closed, not black-holed: {stale:?}"
    );
    let kept = events("be-1");
    assert!(
        kept.iter().all(|(_, e)| e == "be-1") && kept.len() > 20,
        "{mode}: the connected UDP socket pinned to the remaining be-1 was disturbed: {kept:?}"
    );
    step(&format!(
        "be-2 removed: no new connection, connected UDP socket {}",
        if closed { "closed" } else { "moved" }
    ));

    // 11. Terminating endpoints are used once no ready one exists: be-1 goes, be-2 (still
    //     terminating, still serving) takes the traffic.
    k.ok(&["delete", "pod", "be-1", "--wait=true", "--timeout=60s"]);
    client.expect_tcp(
        "terminating be-2 once no endpoint is ready",
        &multi,
        80,
        20,
        &["be-2 8081"],
    );
    let be2 = k.json(&["get", "pod", "be-2"]);
    assert!(
        be2["metadata"]["deletionTimestamp"].is_string(),
        "be-2 should still be terminating: {be2:#}"
    );
    client.expect_tcp(
        "terminating be-2 through a NodePort",
        "10.99.0.11",
        np,
        10,
        &["be-2 8081"],
    );
    host2.expect_tcp(
        "terminating be-2 as the local endpoint (internalTrafficPolicy Local, node-2)",
        &local,
        80,
        10,
        &["be-2 8081"],
    );
    let (verdict, ms) = client.refuse(&local, 80, "tcp");
    assert!(
        verdict == "refused" && ms < 1000,
        "internalTrafficPolicy Local on node-1, whose only endpoint is gone (be-2 terminates on node-2), should refuse: {verdict} after {ms} ms"
    );
    step("terminating endpoint used when no ready one exists (ClusterIP, NodePort, ITP Local)");

    drop(client);
    drop(host1);
    drop(host2);
    drop(in_be1);
    drop(agent);
    drop(cg1);
    drop(cg2);
    let down = c.ferry("down", &[]);
    assert!(down.status.success(), "{}", text(&down));
    c.assert_gone();
    root.assert_unchanged();
    step("down: nothing left");
}

#[test]
fn service_semantics_with_the_ebpf_proxy() {
    if !privileged("services_semantics_ebpf") {
        return;
    }
    semantics_in_mode("ebpf");
}

#[test]
fn service_semantics_with_the_iptables_proxy() {
    if !privileged("services_semantics_iptables") {
        return;
    }
    semantics_in_mode("iptables");
}
