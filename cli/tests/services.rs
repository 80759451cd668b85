//! Services end to end through `ferry up` (privileged), in both proxy modes: a Deployment of 3
//! replicas behind a ClusterIP Service, reached from a client on node-1 (in a pod's network
//! namespace and below node-1's cgroup, as a pod's processes are, so the agent's socket hooks
//! apply); every backend answers; scaled to 0 the ClusterIP refuses at once (ECONNREFUSED in
//! under a second, never a timeout); scaled up it works again; the `kubernetes` Service answers a
//! TLS handshake; `ferry status` shows the mode and the Service count; `ferry down` leaves no pins,
//! namespaces, cgroups or processes. The two modes run one after the other (one cluster at a time).

mod common;

use common::*;
use ferry_tests::{privileged, wait_until, RootSnapshot};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// One cluster at a time: the machine has two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The backends: answer every GET with the pod's name (as examples/web.yaml does).
const WHOAMI: &str = r#"import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (os.environ.get("POD_NAME", "?") + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("", 8080), H).serve_forever()
"#;

/// The client, run in the client pod's namespace: `get N IP PORT` (N requests, one answer per
/// line, `ERR <error>` for a failed one), `connect IP PORT` (`refused|ok|timeout|error <ms>`),
/// `tls IP PORT` (a TLS handshake, no verification: `tls <version>`).
const CLIENT: &str = r#"import socket, ssl, sys, time
cmd = sys.argv[1]
if cmd == "get":
    n, ip, port = int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    for _ in range(n):
        try:
            s = socket.create_connection((ip, port), 2)
            s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            data = b""
            while True:
                b = s.recv(4096)
                if not b:
                    break
                data += b
            s.close()
            print(data.split(b"\r\n\r\n", 1)[-1].decode().strip(), flush=True)
        except Exception as e:
            print("ERR", repr(e), flush=True)
elif cmd == "connect":
    ip, port = sys.argv[2], int(sys.argv[3])
    t = time.monotonic()
    try:
        socket.create_connection((ip, port), 3).close()
        r = "ok"
    except ConnectionRefusedError:
        r = "refused"
    except socket.timeout:
        r = "timeout"
    except OSError as e:
        r = "error:" + str(e.errno)
    print(r, int((time.monotonic() - t) * 1000))
elif cmd == "tls":
    ip, port = sys.argv[2], int(sys.argv[3])
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((ip, port), 3) as raw:
        with ctx.wrap_socket(raw, server_hostname="kubernetes.default") as s:
            print("tls", s.version())
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

fn whoami(replicas: u32) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "whoami", "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "whoami"}},
            "template": {"metadata": {"labels": {"app": "whoami"}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "whoami", "image": "python:3",
                    "command": ["/usr/bin/python3", "-c", WHOAMI],
                    "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"port": "http", "path": "/"}, "periodSeconds": 1}}]}}}})
}

/// A client run in `netns` and in the leaf cgroup `cgroup` (below the node's cgroup).
struct Client {
    netns: PathBuf,
    cgroup: PathBuf,
}

impl Client {
    fn run(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns.display()))
            .args(["/usr/bin/python3", "-c", CLIENT])
            .args(args)
            .stdin(Stdio::null());
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(self.cgroup.join("cgroup.procs"))
            .unwrap();
        ferry_sys::process::OnExec::new()
            .join_cgroup(&procs)
            .unwrap()
            .install(&mut cmd);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "client {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The backends that answered `n` requests to `ip:port`, and the failures.
    fn spread(&self, ip: &str, port: u16, n: u32) -> (BTreeSet<String>, Vec<String>) {
        let out = self.run(&["get", &n.to_string(), ip, &port.to_string()]);
        let (errs, ok): (Vec<&str>, Vec<&str>) = out.lines().partition(|l| l.starts_with("ERR"));
        (
            ok.into_iter().map(str::to_owned).collect(),
            errs.into_iter().map(str::to_owned).collect(),
        )
    }

    /// `connect`'s verdict and milliseconds.
    fn connect(&self, ip: &str, port: u16) -> (String, u64) {
        let out = self.run(&["connect", ip, &port.to_string()]);
        let mut f = out.split_whitespace();
        let verdict = f.next().unwrap_or("").to_owned();
        let ms = f.next().and_then(|m| m.parse().ok()).unwrap_or(u64::MAX);
        (verdict, ms)
    }
}

/// Waits until `n` requests reach exactly the `want` backends, none failing.
fn wait_spread(client: &Client, ip: &str, want: &BTreeSet<String>, what: &str) {
    let mut last = (BTreeSet::new(), Vec::new());
    let ok = wait_until(Duration::from_secs(20), || {
        last = client.spread(ip, 80, 30);
        &last.0 == want && last.1.is_empty()
    });
    assert!(
        ok,
        "{what}: 30 requests to {ip}:80 reached {:?} (want {want:?}); failures: {:?}",
        last.0, last.1
    );
    println!("{what}: 30 requests to {ip}:80 reached {:?}", last.0);
}

fn pod_names(k: &Kubectl) -> BTreeSet<String> {
    items(&k.json(&["get", "pods", "-l", "app=whoami"]))
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
        .collect()
}

fn agent_has_services() -> bool {
    let out = Command::new(ferry_tests::bin_path("ferry-agent"))
        .arg("--help")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("--service-proxy")
}

fn services_in_mode(mode: &str) {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for b in ["ferry-server", "ferry-kubelet", "ferry-agent", "ferry-cni"] {
        ferry_tests::bin_path(b);
    }
    assert!(
        agent_has_services(),
        "ferry-agent has no --service-proxy: the Services agent is not built"
    );
    let root = RootSnapshot::take();
    let c = Cluster::new();
    let out = c.up(&["--nodes", "3", "--service-proxy", mode]);
    assert!(out.status.success(), "ferry up: {}", text(&out));
    let k = Kubectl(c.dir().join("kubeconfig").to_string_lossy().into_owned());

    // The datapath is there, seen with independent tools.
    let node_cg = c.cgroup().join("n1");
    match mode {
        "ebpf" => {
            let ok = wait_until(Duration::from_secs(10), || {
                let out = Command::new("bpftool")
                    .args(["-j", "cgroup", "show"])
                    .arg(&node_cg)
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout);
                text.contains("connect4") || text.contains("inet4_connect")
            });
            assert!(ok, "no connect4 program on {}", node_cg.display());
        }
        _ => {
            let ok = wait_until(Duration::from_secs(10), || {
                let out = Command::new("ip")
                    .args(["netns", "exec", &format!("{}-n1", c.name), "iptables-save"])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).contains("-d 10.96.0.1/32")
            });
            assert!(ok, "no iptables rule for 10.96.0.1 in {}-n1", c.name);
        }
    }

    // The client pod on node-1, the backends anywhere.
    k.apply(&json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "client", "namespace": "default"},
        "spec": {"nodeName": "node-1", "terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": "python:3",
            "command": ["/usr/bin/python3", "-c", "import time; time.sleep(1e9)"]}]}}));
    k.apply(&whoami(3));
    k.apply(&json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "whoami", "namespace": "default"},
        "spec": {"selector": {"app": "whoami"}, "ports": [{"port": 80, "targetPort": "http"}]}}));
    k.wait(
        &["get", "pods", "-l", "app=whoami"],
        60,
        "3 ready backends",
        |l| {
            let p = items(l);
            p.len() == 3 && p.iter().all(ready)
        },
    );
    let client_pod = k.wait(&["get", "pod", "client"], 60, "client running", |p| {
        p["status"]["phase"] == "Running"
    });
    let client_cg = node_cg.join(format!("svc-client-{}", std::process::id()));
    std::fs::create_dir_all(&client_cg).unwrap();
    let client = Client {
        netns: c
            .dir()
            .join("nodes/n1/kubelet/netns")
            .join(client_pod["metadata"]["uid"].as_str().unwrap()),
        cgroup: client_cg.clone(),
    };
    let svc = k.json(&["get", "svc", "whoami"]);
    let ip = svc["spec"]["clusterIP"].as_str().unwrap().to_owned();

    // Every backend answers through the ClusterIP.
    let backends = pod_names(&k);
    wait_spread(&client, &ip, &backends, "3 replicas");

    // No endpoints: refused at once, not a timeout.
    k.ok(&["scale", "deployment/whoami", "--replicas=0"]);
    k.wait(
        &["get", "pods", "-l", "app=whoami"],
        60,
        "no backends",
        |l| items(l).is_empty(),
    );
    let mut last = (String::new(), 0);
    let refused = wait_until(Duration::from_secs(10), || {
        last = client.connect(&ip, 80);
        last.0 == "refused"
    });
    assert!(refused, "connect to {ip}:80 without endpoints: {last:?}");
    for _ in 0..3 {
        let (verdict, ms) = client.connect(&ip, 80);
        assert_eq!(verdict, "refused", "connect to {ip}:80 without endpoints");
        assert!(ms < 1000, "refused only after {ms} ms");
        println!("{mode}: connect to {ip}:80 without endpoints: refused in {ms} ms");
    }

    // Scaled up again: it works again, on the new pods.
    k.ok(&["scale", "deployment/whoami", "--replicas=3"]);
    k.wait(
        &["get", "pods", "-l", "app=whoami"],
        60,
        "3 ready backends again",
        |l| {
            let p = items(l);
            p.len() == 3 && p.iter().all(ready)
        },
    );
    let backends = pod_names(&k);
    wait_spread(&client, &ip, &backends, "scaled up again");

    // The API through the kubernetes Service.
    let mut tls = String::new();
    let ok = wait_until(Duration::from_secs(10), || {
        tls = client.run(&["tls", "10.96.0.1", "443"]);
        tls.starts_with("tls ")
    });
    assert!(ok, "TLS to 10.96.0.1:443 from a pod: {tls}");

    // `ferry status`: each node's mode and Service count (kubernetes + whoami).
    let mut status = String::new();
    let shown = wait_until(Duration::from_secs(10), || {
        let out = c.ferry("status", &[]);
        status = String::from_utf8_lossy(&out.stdout).into_owned();
        out.status.success()
            && (1..=3).all(|i| {
                status.lines().any(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.len() == 5
                        && f[0] == format!("node-{i}")
                        && f[1] == mode
                        && f[2].parse::<u32>().is_ok_and(|n| n >= 2)
                })
            })
    });
    assert!(shown, "ferry status: no proxy line per node:\n{status}");
    println!("{status}");

    // Down: nothing left, no pins.
    let _ = std::fs::remove_dir(&client_cg);
    let down = c.ferry("down", &[]);
    assert!(down.status.success(), "{}", text(&down));
    c.assert_gone();
    let pins = Path::new("/sys/fs/bpf").join(format!("ferry-{}", c.name));
    assert!(!pins.exists(), "{} left", pins.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&c.name),
        "a mount of the cluster is left:\n{mounts}"
    );
    root.assert_unchanged();
}

#[test]
fn services_with_the_ebpf_proxy() {
    if !privileged("services_ebpf") {
        return;
    }
    services_in_mode("ebpf");
}

#[test]
fn services_with_the_iptables_proxy() {
    if !privileged("services_iptables") {
        return;
    }
    services_in_mode("iptables");
}
