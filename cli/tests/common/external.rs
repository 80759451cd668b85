//! Traffic from outside the cluster in `ferry up` tests: backend pods that answer with their name
//! and the address they saw the client come from, and a client run in the lab's external host
//! namespace (`<name>-ext`, 10.99.0.254) with independent tools (Python sockets, `ip`).

use super::{text, Cluster, Kubectl};
use ferry_tests::ChildGuard;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};

/// The external host's address (cli/src/topology.rs `EXT_IP`).
pub const EXT_IP: &str = "10.99.0.254";

/// Node `i`'s underlay address (10.99.0.(10+i)).
pub fn node_ip(i: u32) -> String {
    format!("10.99.0.{}", 10 + i)
}

/// The backend: `tcp:PORT` greets each connection with `<pod> <peer address>\n` and answers
/// every line it receives the same way until the client closes; `udp:PORT` answers each datagram
/// with `<pod> <peer address>`.
pub const ECHO_PEER: &str = r#"import os, socket, sys, threading
name = os.environ.get("POD_NAME", "?")
def conn(c, peer):
    answer = ("%s %s\n" % (name, peer)).encode()
    try:
        c.sendall(answer)
        for _ in c.makefile("rb"):
            c.sendall(answer)
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
        threading.Thread(target=conn, args=(c, peer[0]), daemon=True).start()
def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("", port))
    while True:
        data, peer = s.recvfrom(65535)
        s.sendto(("%s %s" % (name, peer[0])).encode(), peer)
for spec in sys.argv[1:]:
    proto, port = spec.split(":")
    threading.Thread(target=tcp if proto == "tcp" else udp, args=(int(port),), daemon=True).start()
threading.Event().wait()
"#;

/// TCP port of [`echo_pod`] (named `web`).
pub const ECHO_TCP: u16 = 8080;
/// UDP port of [`echo_pod`] (named `dns`).
pub const ECHO_UDP: u16 = 5353;

/// A pod on `node` running [`ECHO_PEER`] on TCP `web` (8080) and UDP `dns` (5353), ready once
/// its TCP port accepts, with `labels`.
pub fn echo_pod(name: &str, node: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "srv", "image": "python:3",
                "command": ["/usr/bin/python3", "-c", ECHO_PEER,
                            format!("tcp:{ECHO_TCP}"), format!("udp:{ECHO_UDP}")],
                "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "ports": [{"name": "web", "containerPort": ECHO_TCP},
                          {"name": "dns", "containerPort": ECHO_UDP, "protocol": "UDP"}],
                "readinessProbe": {"tcpSocket": {"port": "web"}, "periodSeconds": 1}}]}})
}

/// Waits until the pods named `names` are Running and Ready.
pub fn wait_pods_ready(k: &Kubectl, names: &[&str], secs: u64) {
    let want: BTreeSet<&str> = names.iter().copied().collect();
    k.wait(&["get", "pods"], secs, "pods ready", |l| {
        let ready: BTreeSet<&str> = l["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                p["status"]["phase"] == "Running"
                    && p["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
            })
            .filter_map(|p| p["metadata"]["name"].as_str())
            .collect();
        want.is_subset(&ready)
    });
}

/// The client run in the external host. `tcp N IP PORT`: N connections, the first line of each
/// answer, or `ERR <kind>` (`ERR timeout` when nothing answers within 2 s, `ERR refused`).
/// `udp N IP PORT`: N datagrams from fresh sockets, the answer or `ERR timeout`. `http IP PORT`:
/// one `GET /`: JSON `{status, headers, body}` (`status` 0 and `error` when it fails).
/// `udpmove IP PORT`: one connected UDP socket; prints its first answer, then after a line on
/// stdin sends every 100 ms for up to 15 s and prints JSON `[[ms, answer]..]` (`timeout` for a
/// lost one), stopping 1 s after the answer first changed. `hold IP TPORT UPORT`: one TCP
/// connection and one connected UDP socket, a request on each every 100 ms until a line arrives
/// on stdin; JSON counters (`rounds`, `tcp_ok`, `tcp_err`, `udp_ok`, `udp_lost`, `udp_err`, the
/// answers seen, the first errors) after the first round and at the end.
pub const EXT_CLIENT: &str = r#"import json, select, socket, sys, time, urllib.request, urllib.error
cmd = sys.argv[1]
def ask_tcp(ip, port):
    try:
        s = socket.create_connection((ip, port), 2)
    except socket.timeout:
        return "ERR timeout"
    except ConnectionRefusedError:
        return "ERR refused"
    except OSError as e:
        return "ERR %r" % e
    try:
        s.settimeout(2)
        line = s.makefile("rb").readline().decode().strip()
        return line or "ERR empty"
    except OSError as e:
        return "ERR %r" % e
    finally:
        s.close()
def ask_udp(s):
    try:
        s.send(b"x")
        return s.recv(65535).decode().strip()
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return "ERR %r" % e
if cmd == "tcp":
    n, ip, port = int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    for _ in range(n):
        print(ask_tcp(ip, port), flush=True)
elif cmd == "udp":
    n, ip, port = int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(2)
        s.connect((ip, port))
        r = ask_udp(s)
        print("ERR timeout" if r == "timeout" else r, flush=True)
        s.close()
elif cmd == "http":
    ip, port = sys.argv[2], int(sys.argv[3])
    try:
        r = urllib.request.urlopen("http://%s:%d/" % (ip, port), timeout=3)
        out = {"status": r.status, "headers": dict(r.headers), "body": r.read().decode()}
    except urllib.error.HTTPError as e:
        out = {"status": e.code, "headers": dict(e.headers), "body": e.read().decode()}
    except Exception as e:
        out = {"status": 0, "error": repr(e)}
    print(json.dumps(out), flush=True)
elif cmd == "udpmove":
    ip, port = sys.argv[2], int(sys.argv[3])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.5)
    s.connect((ip, port))
    first = "timeout"
    for _ in range(20):
        first = ask_udp(s)
        if first != "timeout":
            break
    print(first, flush=True)
    sys.stdin.readline()
    t0 = time.monotonic()
    events, changed = [], None
    while time.monotonic() - t0 < 15:
        ms = int((time.monotonic() - t0) * 1000)
        r = ask_udp(s)
        events.append([ms, r])
        if changed is None and r not in (first, "timeout"):
            changed = ms
        if changed is not None and ms - changed > 1000:
            break
        time.sleep(0.1)
    print(json.dumps(events), flush=True)
elif cmd == "hold":
    ip, tport, uport = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    t = socket.create_connection((ip, tport), 2)
    t.settimeout(2)
    tf = t.makefile("rb")
    tf.readline()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.connect((ip, uport))
    u.settimeout(0.5)
    st = {"rounds": 0, "tcp_ok": 0, "tcp_err": 0, "udp_ok": 0, "udp_lost": 0, "udp_err": 0,
          "tcp_answers": [], "udp_answers": [], "errors": []}
    def note(kind, e):
        st[kind] += 1
        if len(st["errors"]) < 5:
            st["errors"].append("%s %d %s" % (kind, st["rounds"], e))
    def once():
        st["rounds"] += 1
        try:
            t.sendall(b"n\n")
            a = tf.readline().decode().strip()
            if not a:
                raise OSError(0, "closed")
            st["tcp_ok"] += 1
            if a not in st["tcp_answers"]:
                st["tcp_answers"].append(a)
        except OSError as e:
            note("tcp_err", repr(e))
        r = ask_udp(u)
        if r == "timeout":
            note("udp_lost", r)
        elif r.startswith("ERR"):
            note("udp_err", r)
        else:
            st["udp_ok"] += 1
            if r not in st["udp_answers"]:
                st["udp_answers"].append(r)
    once()
    print(json.dumps(st), flush=True)
    while not select.select([sys.stdin], [], [], 0.1)[0]:
        once()
    print(json.dumps(st), flush=True)
"#;

/// The lab's external host of cluster `c`.
pub struct External {
    netns: String,
}

impl External {
    /// The external host of `c` (`/run/netns/<name>-ext`).
    pub fn of(c: &Cluster) -> External {
        External {
            netns: format!("{}-ext", c.name),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.netns))
            .args(["/usr/bin/python3", "-c", EXT_CLIENT])
            .args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.command(args).stdin(Stdio::null()).output().unwrap();
        assert!(
            out.status.success(),
            "external client {args:?}: {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `n` TCP connections to `ip:port`: the answers (`<pod> <peer>` or `ERR ..`).
    pub fn tcp(&self, n: u32, ip: &str, port: u16) -> Vec<String> {
        self.run(&["tcp", &n.to_string(), ip, &port.to_string()])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// `n` UDP datagrams from fresh sockets to `ip:port`: the answers (or `ERR timeout`).
    pub fn udp(&self, n: u32, ip: &str, port: u16) -> Vec<String> {
        self.run(&["udp", &n.to_string(), ip, &port.to_string()])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// `GET http://ip:port/`: `{status, headers, body}` (`status` 0 when nothing answered).
    pub fn http_get(&self, ip: &str, port: u16) -> Value {
        let out = self.run(&["http", ip, &port.to_string()]);
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("http {ip}:{port}: {e}: {out}"))
    }

    /// Starts `udpmove` to `ip:port` and returns it with its first answer.
    pub fn udp_move(&self, ip: &str, port: u16) -> UdpMove {
        let mut child = ChildGuard(
            self.command(&["udpmove", ip, &port.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let stdin = child.0.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.0.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        UdpMove {
            _child: child,
            stdin,
            stdout,
            first: first.trim().to_owned(),
        }
    }

    /// `ip <args>` inside the external host (e.g. a route to an externalIP via a node).
    pub fn ip(&self, args: &str) {
        let out = Command::new("ip")
            .args(["-n", &self.netns])
            .args(args.split_whitespace())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip -n {} {args}: {}",
            self.netns,
            text(&out)
        );
    }
}

/// A running `hold` client: a long-lived TCP connection and connected UDP flow.
pub struct Hold {
    _child: ChildGuard,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// The counters after the first round.
    pub first: Value,
}

impl Hold {
    /// Stops it and returns its final counters.
    pub fn finish(mut self) -> Value {
        use std::io::Write as _;
        writeln!(self.stdin).unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("hold: not JSON ({e}): {line:?}"))
    }
}

impl External {
    /// Starts `hold` (TCP to `ip:tport`, UDP to `ip:uport`) and returns it after its first round.
    pub fn hold(&self, ip: &str, tport: u16, uport: u16) -> Hold {
        let mut child = ChildGuard(
            self.command(&["hold", ip, &tport.to_string(), &uport.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let stdin = child.0.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.0.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let first = serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("hold: not JSON ({e}): {line:?}"));
        Hold {
            _child: child,
            stdin,
            stdout,
            first,
        }
    }
}

/// Stops node `node`'s agent of `c` with SIGTERM (waits for it to exit) and starts it again with
/// the same command line, in the node's namespace and its agent cgroup; the new process is
/// killed when the guard drops. Its log is `logs/node-<node>-agent-restarted.log`.
pub fn restart_agent(c: &Cluster, node: u32) -> ChildGuard {
    let state = c.state();
    let pid = state["components"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|x| x["name"] == format!("node-{node}/agent"))
        .and_then(|x| x["proc"]["pid"].as_i64())
        .and_then(|p| i32::try_from(p).ok())
        .unwrap_or_else(|| panic!("no node-{node}/agent in {state:#}"));
    let argv: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap()
        .split(|b| *b == 0)
        .filter(|x| !x.is_empty())
        .map(|x| String::from_utf8_lossy(x).into_owned())
        .collect();
    ferry_sys::process::signal(pid, libc::SIGTERM).unwrap_or_else(|e| panic!("kill {pid}: {e}"));
    assert!(
        ferry_tests::wait_until(std::time::Duration::from_secs(15), || exited(pid)),
        "agent {pid} still alive after SIGTERM"
    );
    let log = std::fs::File::create(
        c.dir()
            .join("logs")
            .join(format!("node-{node}-agent-restarted.log")),
    )
    .unwrap();
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}-n{node}", c.name))
        .args(&argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(c.cgroup().join(format!("n{node}/agent/cgroup.procs")))
        .unwrap();
    ferry_sys::process::OnExec::new()
        .join_cgroup(&procs)
        .unwrap()
        .install(&mut cmd);
    ChildGuard(cmd.spawn().unwrap())
}

/// Whether every thread of process `pid` has exited. The thread-group leader turns zombie as
/// soon as it exits while other threads may still be finishing (an eBPF agent's take a moment)
/// and hold the process's sockets, e.g. its metrics port: a new agent started then could not
/// bind it.
fn exited(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("stat")).map_or(true, |s| {
            let state = s
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next())
                .unwrap_or("Z");
            state == "Z" || state == "X"
        })
    })
}

/// `ferry_service_sync_total` of node `node`'s agent (its metrics on the node's loopback).
pub fn agent_syncs(c: &Cluster, node: u32) -> Option<f64> {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}-n{node}", c.name))
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

/// Our iptables rules in node `node`'s namespace (`-A FERRY-..` lines of `iptables-save`).
pub fn ferry_rules(c: &Cluster, node: u32) -> Vec<String> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("{}-n{node}", c.name),
            "iptables-save",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "iptables-save: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("-A FERRY-"))
        .map(str::to_owned)
        .collect()
}

/// A running `udpmove` client.
pub struct UdpMove {
    _child: ChildGuard,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// The first answer (`<pod> <peer>`, or `timeout`).
    pub first: String,
}

impl UdpMove {
    /// Lets it run (after the change) and returns its `[ms, answer]` events.
    pub fn events(mut self) -> Vec<(u64, String)> {
        use std::io::Write as _;
        writeln!(self.stdin).unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let v: Vec<(u64, String)> = serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("udpmove: not JSON ({e}): {line:?}"));
        v
    }
}

/// The IPv4 addresses of node `i` of `c` (`ip -j addr` in its namespace): what a masqueraded
/// packet from that node may carry as its source.
pub fn node_addrs(c: &Cluster, i: u32) -> BTreeSet<String> {
    let out = Command::new("ip")
        .args(["-n", &format!("{}-n{i}", c.name), "-j", "-4", "addr"])
        .output()
        .unwrap();
    assert!(out.status.success(), "ip -j addr: {}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["local"].as_str().map(str::to_owned))
        .filter(|a| a != "127.0.0.1")
        .collect()
}
