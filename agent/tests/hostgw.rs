//! Privileged end-to-end test of `ferry-agent` with the host-gw backend, against a real
//! `ferry-server`, with real `ferry-cni` pods.
//!
//! Topology (every piece is a namespace or link this test creates, removed by `Drop` guards):
//!
//! ```text
//!            switch netns: bridge br0
//!        ┌────────────┼─────────────┐
//!   cp netns       node A netns    node B netns
//!   10.99.0.10     10.99.0.11      10.99.0.12       (eth0, MTU 1400)
//!   ferry-server   ferry-agent     ferry-agent
//!                  pod netns       pod netns        (ferry-cni, conflist written by the agent)
//! ```
//!
//! The test plays the kubelet: it creates the Node objects (with an `InternalIP`) with the admin
//! token, plus two fake peers with no machine behind them (C, E) and one without any address (D).
//! Everything is checked with independent tools: `curl` against the API, `ip -j route`,
//! `ip monitor route`, the files on disk, `ping` and a TCP connection between pods.

use ferry_cni::runtime::{ConfList, Runtime, RuntimeConf};
use ferry_tests::{privileged, veth, wait_until, ChildGuard, Netns, RootSnapshot};
use serde_json::{json, Value};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_ferry-agent");
const CP_IP: &str = "10.99.0.10";
const PORT: u16 = 6443;
const RESYNC_SECONDS: u64 = 2;
const UNDERLAY_MTU: u32 = 1400;
/// `ferry_agent::hostgw::ROUTE_PROTOCOL`, as `ip -j` prints it.
const PROTO: &str = "78";

/// The control plane: a switch, the API server's namespace and the server process.
struct ControlPlane {
    // Field order is drop order: the server dies before its namespace and data directory.
    _server: ChildGuard,
    cp: Netns,
    sw: Netns,
    dir: tempfile::TempDir,
    admin: String,
}

impl ControlPlane {
    fn start() -> ControlPlane {
        let dir = tempfile::Builder::new()
            .prefix("ferry-agent-hostgw")
            .tempdir()
            .unwrap();
        let sw = Netns::new("fsw");
        sw.sh("ip link add br0 type bridge && ip link set br0 up");
        let cp = Netns::new("fcp");
        plug(&sw, &cp, "pcp", CP_IP);
        let data = dir.path().join("server");
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let listen = format!("{CP_IP}:{PORT}");
        let child = cp
            .command(ferry_tests::bin_path("ferry-server"))
            .args(["--data-dir", data.to_str().unwrap(), "--listen", &listen])
            .args(["--advertise-address", &listen, "--tls-san", CP_IP])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut c = ControlPlane {
            _server: ChildGuard(child),
            cp,
            sw,
            dir,
            admin: String::new(),
        };
        let up = wait_until(Duration::from_secs(30), || {
            c.curl_raw("GET", "/readyz", None, "")
                .is_some_and(|(code, _)| code == 200)
        });
        assert!(up, "ferry-server did not come up:\n{}", c.server_log());
        let tokens: Value =
            serde_json::from_slice(&std::fs::read(data.join("tokens.json")).unwrap()).unwrap();
        c.admin = tokens["admin"].as_str().unwrap().to_owned();
        c
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("server")
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn ca(&self) -> PathBuf {
        self.data_dir().join("pki/ca.crt")
    }

    fn node_token(&self, node: &str) -> String {
        let out = Command::new(ferry_tests::bin_path("ferry-server"))
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["node-token", "--node", node])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `curl` from inside the control-plane namespace: (HTTP status, body).
    fn curl_raw(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &Value)>,
        token: &str,
    ) -> Option<(u16, Value)> {
        let mut cmd = self.cp.command("curl");
        cmd.args(["-sk", "--max-time", "5", "-o", "-", "-w", "\n%{http_code}"])
            .args(["-X", method])
            .arg(format!("https://{CP_IP}:{PORT}{path}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if !token.is_empty() {
            cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        if let Some((ctype, _)) = body {
            cmd.args([
                "-H",
                &format!("Content-Type: {ctype}"),
                "--data-binary",
                "@-",
            ]);
        }
        let mut child = cmd.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        if let Some((_, v)) = body {
            stdin.write_all(&serde_json::to_vec(v).unwrap()).unwrap();
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n')?;
        let code = code.trim().parse().ok()?;
        Some((code, serde_json::from_str(body).unwrap_or(Value::Null)))
    }

    /// An admin API call that must answer `want`.
    fn api(&self, method: &str, path: &str, body: Option<(&str, &Value)>, want: u16) -> Value {
        let (code, v) = self
            .curl_raw(method, path, body, &self.admin)
            .unwrap_or_else(|| panic!("{method} {path}: no answer"));
        assert_eq!(code, want, "{method} {path}: {v}");
        v
    }

    /// Plays the kubelet: registers Node `name` with `address` as its InternalIP.
    fn create_node(&self, name: &str, address: Option<&str>) {
        let addresses: Vec<Value> = address
            .map(|a| json!({"type": "InternalIP", "address": a}))
            .into_iter()
            .collect();
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name},
            "status": {"addresses": addresses},
        });
        self.api(
            "POST",
            "/api/v1/nodes",
            Some(("application/json", &node)),
            201,
        );
        // Whether or not create kept the status, make sure it is there (as a kubelet would).
        let status = json!({"status": {"addresses": addresses}});
        self.api(
            "PATCH",
            &format!("/api/v1/nodes/{name}/status"),
            Some(("application/merge-patch+json", &status)),
            200,
        );
    }

    fn node(&self, name: &str) -> Value {
        self.api("GET", &format!("/api/v1/nodes/{name}"), None, 200)
    }

    fn delete_node(&self, name: &str) {
        self.api("DELETE", &format!("/api/v1/nodes/{name}"), None, 200);
    }

    /// The node's podCIDR, once node IPAM assigned it.
    fn wait_pod_cidr(&self, name: &str) -> String {
        let mut cidr = String::new();
        let ok = wait_until(Duration::from_secs(20), || {
            cidr = self.node(name)["spec"]["podCIDR"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            !cidr.is_empty()
        });
        assert!(ok, "node {name} got no podCIDR:\n{}", self.server_log());
        cidr
    }
}

/// Connects `ns` to the switch with address `ip`/24 on its `eth0`.
fn plug(sw: &Netns, ns: &Netns, port: &str, ip: &str) {
    veth(ns, "eth0", sw, port);
    sw.sh(&format!("ip link set {port} master br0 up"));
    ns.sh(&format!(
        "ip link set eth0 mtu {UNDERLAY_MTU} && ip addr add {ip}/24 dev eth0 && ip link set eth0 up"
    ));
}

/// One node: its namespace, directories and agent.
struct NodeEnv {
    agent: Option<ChildGuard>,
    ns: Netns,
    name: String,
    ip: String,
    token: String,
    dir: tempfile::TempDir,
    starts: u32,
}

impl NodeEnv {
    fn new(cp: &ControlPlane, name: &str, port: &str, ip: &str) -> NodeEnv {
        let ns = Netns::new("fnd");
        plug(&cp.sw, &ns, port, ip);
        ns.sh("echo 0 > /proc/sys/net/ipv4/ip_forward");
        let dir = tempfile::Builder::new()
            .prefix("ferry-agent-node")
            .tempdir()
            .unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(ferry_tests::bin_path("ferry-cni"), bin.join("ferry-cni"))
            .unwrap();
        NodeEnv {
            agent: None,
            ns,
            name: name.to_owned(),
            ip: ip.to_owned(),
            token: cp.node_token(name),
            dir,
            starts: 0,
        }
    }

    fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    fn conf_dir(&self) -> PathBuf {
        self.dir.path().join("net.d")
    }

    fn start_agent(&mut self, cp: &ControlPlane) {
        self.starts += 1;
        let log = std::fs::File::create(self.log_path(self.starts)).unwrap();
        let child = self
            .ns
            .command(AGENT)
            .args(["--node-name", &self.name])
            .args(["--server", &format!("https://{CP_IP}:{PORT}")])
            .args(["--token", &self.token])
            .arg("--certificate-authority")
            .arg(cp.ca())
            .arg("--cni-conf-dir")
            .arg(self.conf_dir())
            .arg("--run-dir")
            .arg(self.run_dir())
            .args(["--iface", "eth0", "--backend", "host-gw"])
            .args(["--resync-seconds", &RESYNC_SECONDS.to_string()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.agent = Some(ChildGuard(child));
    }

    /// SIGKILL, no chance to clean up.
    fn kill_agent(&mut self) {
        if let Some(mut a) = self.agent.take() {
            a.0.kill().unwrap();
            a.0.wait().unwrap();
        }
    }

    fn log_path(&self, start: u32) -> PathBuf {
        self.dir.path().join(format!("agent-{start}.log"))
    }

    fn logs(&self) -> String {
        (1..=self.starts)
            .map(|i| {
                format!(
                    "--- {} agent run {i} ---\n{}",
                    self.name,
                    std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
                )
            })
            .collect()
    }

    /// Our routes (`proto 78`) in the node's main table: `dst -> (gateway, dev)`.
    fn ferry_routes(&self) -> Vec<(String, String, String)> {
        let routes = self.ns.ip_json("route show table main");
        let mut out: Vec<_> = routes
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["protocol"] == PROTO)
            .map(|r| {
                (
                    r["dst"].as_str().unwrap_or_default().to_owned(),
                    r["gateway"].as_str().unwrap_or_default().to_owned(),
                    r["dev"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        out.sort();
        out
    }

    fn has_route(&self, dst: &str, via: &str) -> bool {
        self.ferry_routes()
            .contains(&(dst.to_owned(), via.to_owned(), "eth0".to_owned()))
    }

    /// Attaches a pod with the conflist the agent wrote; returns its IP.
    fn add_pod(&self, pod: &Netns, id: &str) -> String {
        let list = ConfList::load(&self.conf_dir().join("10-ferry.conflist")).unwrap();
        let rt = Runtime::in_netns(
            vec![self.dir.path().join("bin")],
            self.dir.path().join("cache"),
            Path::new(self.ns.path()),
        )
        .unwrap();
        let conf = RuntimeConf {
            container_id: id.to_owned(),
            netns: pod.path().to_owned(),
            ifname: "eth0".to_owned(),
            ..RuntimeConf::default()
        };
        let result = rt
            .add(&list, &conf)
            .unwrap_or_else(|e| panic!("CNI ADD on {}: {e:?}", self.name));
        let addr = result["ips"][0]["address"].as_str().unwrap().to_owned();
        addr.split('/').next().unwrap().to_owned()
    }
}

/// A TCP listener in `server` on `addr:port`, a connection from `client`; true if a byte arrived.
fn tcp_reaches(server: &Netns, client: &Netns, addr: &str, port: u16) -> bool {
    use std::net::{TcpListener, TcpStream};
    let listener = server.run(|| TcpListener::bind(("0.0.0.0", port)).unwrap());
    let target: std::net::SocketAddr = format!("{addr}:{port}").parse().unwrap();
    let acceptor = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().ok()?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).ok().map(|()| b[0])
    });
    let sent = client.run(|| {
        TcpStream::connect_timeout(&target, Duration::from_secs(3))
            .and_then(|mut s| s.write_all(b"x"))
            .is_ok()
    });
    if !sent {
        // Unblock the acceptor.
        let _ = server.run(|| TcpStream::connect(("127.0.0.1", port)));
    }
    let got = acceptor.join().unwrap();
    sent && got == Some(b'x')
}

/// The first host of a /24 (`10.244.1.0/24` -> `10.244.1.1/24`).
fn gateway_of(cidr: &str) -> String {
    let (net, prefix) = cidr.split_once('/').unwrap();
    let mut ip: std::net::Ipv4Addr = net.parse().unwrap();
    ip = std::net::Ipv4Addr::from(u32::from(ip) + 1);
    format!("{ip}/{prefix}")
}

fn inode(p: &Path) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap())
}

#[test]
fn hostgw_routes_files_annotations_and_pod_traffic() {
    if !privileged("hostgw_routes_files_annotations_and_pod_traffic") {
        return;
    }
    let root = RootSnapshot::take();
    {
        let cp = ControlPlane::start();
        let mut a = NodeEnv::new(&cp, "node-a", "pa", "10.99.0.11");
        let mut b = NodeEnv::new(&cp, "node-b", "pb", "10.99.0.12");
        let logs = |a: &NodeEnv, b: &NodeEnv| format!("{}\n{}", a.logs(), b.logs());

        // An agent started before its Node exists waits, and writes nothing.
        a.start_agent(&cp);
        std::thread::sleep(Duration::from_secs(1));
        assert!(!a.run_dir().join("subnet.env").exists());
        assert!(!a.conf_dir().join("10-ferry.conflist").exists());

        // The test plays the kubelet; C and E are peers without a machine, D has no address.
        cp.create_node("node-a", Some(&a.ip));
        cp.create_node("node-b", Some(&b.ip));
        cp.create_node("node-c", Some("10.99.0.13"));
        cp.create_node("node-d", None);
        cp.create_node("node-e", Some("10.99.0.15"));
        b.start_agent(&cp);
        let cidr = |n: &str| cp.wait_pod_cidr(n);
        let (ca, cb, cc, cd, ce) = (
            cidr("node-a"),
            cidr("node-b"),
            cidr("node-c"),
            cidr("node-d"),
            cidr("node-e"),
        );

        // 1. Files: subnet.env first, then the conflist, with the exact content.
        for (n, c) in [(&a, &ca), (&b, &cb)] {
            let conflist = n.conf_dir().join("10-ferry.conflist");
            assert!(
                wait_until(Duration::from_secs(15), || conflist.exists()),
                "no conflist on {}:\n{}",
                n.name,
                logs(&a, &b)
            );
            let env = std::fs::read_to_string(n.run_dir().join("subnet.env")).unwrap();
            assert_eq!(
                env,
                format!(
                    "FERRY_NETWORK=10.244.0.0/16\nFERRY_SUBNET={}\nFERRY_MTU={UNDERLAY_MTU}\nFERRY_IPMASQ=false\n",
                    gateway_of(c)
                )
            );
            let got: Value = serde_json::from_slice(&std::fs::read(&conflist).unwrap()).unwrap();
            let want = json!({
                "cniVersion": "1.1.0",
                "name": "ferry",
                "plugins": [{
                    "type": "ferry-cni",
                    "bridge": "ferry0",
                    "isGateway": true,
                    "isDefaultGateway": true,
                    "hairpinMode": true,
                    "ipMasq": false,
                    "subnetFile": n.run_dir().join("subnet.env"),
                    "ipam": {"dataDir": n.run_dir().join("ipam")},
                }],
            });
            assert_eq!(got, want);
            // ip_forward was switched on in the node namespace.
            assert_eq!(n.ns.sh("cat /proc/sys/net/ipv4/ip_forward").trim(), "1");
        }

        // 2. Annotations on each agent's own Node.
        for n in [&a, &b] {
            let ok = wait_until(Duration::from_secs(10), || {
                let ann = cp.node(&n.name)["metadata"]["annotations"].clone();
                ann["flannel.alpha.coreos.com/backend-type"] == "host-gw"
                    && ann["flannel.alpha.coreos.com/public-ip"] == n.ip.as_str()
                    && ann["flannel.alpha.coreos.com/kube-subnet-manager"] == "true"
            });
            assert!(
                ok,
                "annotations of {}: {}\n{}",
                n.name,
                cp.node(&n.name)["metadata"],
                logs(&a, &b)
            );
        }

        // 3. Routes: every addressed peer via its IP, tagged proto 78; D skipped.
        let want_a = {
            let mut v = vec![
                (cb.clone(), b.ip.clone(), "eth0".to_owned()),
                (cc.clone(), "10.99.0.13".to_owned(), "eth0".to_owned()),
                (ce.clone(), "10.99.0.15".to_owned(), "eth0".to_owned()),
            ];
            v.sort();
            v
        };
        let want_b = {
            let mut v = vec![
                (ca.clone(), a.ip.clone(), "eth0".to_owned()),
                (cc.clone(), "10.99.0.13".to_owned(), "eth0".to_owned()),
                (ce.clone(), "10.99.0.15".to_owned(), "eth0".to_owned()),
            ];
            v.sort();
            v
        };
        assert!(
            wait_until(Duration::from_secs(10), || a.ferry_routes() == want_a
                && b.ferry_routes() == want_b),
            "routes A {:?} B {:?}\n{}",
            a.ferry_routes(),
            b.ferry_routes(),
            logs(&a, &b)
        );
        assert!(!a.ferry_routes().iter().any(|r| r.0 == cd));
        assert!(
            a.logs().contains("peer skipped") && a.logs().contains("node-d"),
            "{}",
            a.logs()
        );

        // 4. A route deleted by hand comes back within the resync period.
        a.ns.sh(&format!("ip route del {cb}"));
        assert!(!a.has_route(&cb, &b.ip));
        let t = Instant::now();
        assert!(
            wait_until(Duration::from_secs(RESYNC_SECONDS + 3), || a
                .has_route(&cb, &b.ip)),
            "route not restored:\n{}",
            a.logs()
        );
        eprintln!("hand-deleted route restored after {:?}", t.elapsed());

        // 5. Pod traffic A -> B over the routes: ping and TCP.
        let pod_a = Netns::new("fpa");
        let pod_b = Netns::new("fpb");
        let ip_a = a.add_pod(&pod_a, "pod-a");
        let ip_b = b.add_pod(&pod_b, "pod-b");
        pod_a.sh(&format!("ping -c 2 -W 2 {ip_b}"));
        pod_b.sh(&format!("ping -c 2 -W 2 {ip_a}"));
        assert!(
            tcp_reaches(&pod_b, &pod_a, &ip_b, 8080),
            "TCP pod A -> pod B"
        );

        // 6. A deleted Node's route disappears from every peer at once (watch event).
        let t = Instant::now();
        cp.delete_node("node-e");
        assert!(
            wait_until(Duration::from_secs(2), || !a
                .ferry_routes()
                .iter()
                .any(|r| r.0 == ce)
                && !b.ferry_routes().iter().any(|r| r.0 == ce)),
            "route of deleted node-e still there: A {:?} B {:?}",
            a.ferry_routes(),
            b.ferry_routes()
        );
        eprintln!("deleted node's route gone after {:?}", t.elapsed());

        // 7. kill -9 A; while it is down node-c goes away. Its routes stay on A (nobody
        //    reconciles), the restarted agent adopts the rest without flushing, and removes the
        //    stale one it missed.
        let subnet_env = a.run_dir().join("subnet.env");
        let conflist = a.conf_dir().join("10-ferry.conflist");
        let (ino_env, ino_conf) = (inode(&subnet_env), inode(&conflist));
        let mut monitor =
            a.ns.command("ip")
                .args(["monitor", "route"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        a.kill_agent();
        cp.delete_node("node-c");
        assert!(
            wait_until(Duration::from_secs(2), || !b
                .ferry_routes()
                .iter()
                .any(|r| r.0 == cc)),
            "B kept node-c's route"
        );
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            a.has_route(&cc, "10.99.0.13"),
            "routes must survive the agent"
        );
        a.start_agent(&cp);
        assert!(
            wait_until(Duration::from_secs(RESYNC_SECONDS + 5), || !a
                .ferry_routes()
                .iter()
                .any(|r| r.0 == cc)),
            "the restarted agent did not remove node-c's stale route:\n{}",
            a.logs()
        );
        // Let a couple of resync rounds pass, then read what changed meanwhile.
        std::thread::sleep(Duration::from_secs(RESYNC_SECONDS * 2));
        assert_eq!(
            a.ferry_routes(),
            vec![(cb.clone(), b.ip.clone(), "eth0".to_owned())]
        );
        let _ = monitor.kill();
        let mut events = String::new();
        monitor
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut events)
            .unwrap();
        let _ = monitor.wait();
        let deleted: Vec<&str> = events
            .lines()
            .filter(|l| l.starts_with("Deleted"))
            .collect();
        assert!(
            deleted.len() == 1 && deleted[0].contains(&cc),
            "only node-c's route may have been deleted across the restart; route events:\n{events}"
        );
        assert!(
            !events
                .lines()
                .any(|l| l.contains(&cb) && !l.starts_with("Deleted")),
            "node-b's route was rewritten across the restart:\n{events}"
        );
        assert_eq!(
            (inode(&subnet_env), inode(&conflist)),
            (ino_env, ino_conf),
            "unchanged files are not rewritten by the restarted agent"
        );
        pod_a.sh(&format!("ping -c 2 -W 2 {ip_b}"));
        assert!(
            tcp_reaches(&pod_b, &pod_a, &ip_b, 8081),
            "TCP after restart"
        );
        eprintln!("{}", logs(&a, &b));
    }
    root.assert_unchanged();
}
