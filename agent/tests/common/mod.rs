//! Fixture shared by the privileged agent tests: a switch namespace with a bridge, a control-plane
//! namespace running `ferry-server`, node namespaces running `ferry-agent`, pods attached with
//! `ferry-cni` using the conflist the agent wrote. Every piece is removed by `Drop` guards.
#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the fixture"
)]

use ferry_libcni::runtime::{ConfList, Runtime, RuntimeConf};
use ferry_tests::{veth, wait_until, ChildGuard, Netns};
use serde_json::{json, Value};
use std::io::{Read as _, Write as _};
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub(crate) const AGENT: &str = env!("CARGO_BIN_EXE_ferry-agent");
pub(crate) const CP_IP: &str = "10.99.0.10";
pub(crate) const PORT: u16 = 6443;
pub(crate) const RESYNC_SECONDS: u64 = 2;
pub(crate) const UNDERLAY_MTU: u32 = 1400;
/// `ferry_agent::overlay::peers::ROUTE_PROTOCOL`, as `ip -j` prints it.
pub(crate) const PROTO: &str = "78";

/// The control plane: a switch, the API server's namespace and the server process.
pub(crate) struct ControlPlane {
    // Field order is drop order: the server dies before its namespace and data directory.
    _server: ChildGuard,
    pub(crate) cp: Netns,
    pub(crate) sw: Netns,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) admin: String,
}

impl ControlPlane {
    pub(crate) fn start() -> ControlPlane {
        ControlPlane::start_with(&[])
    }

    /// Like [`ControlPlane::start`], with extra `ferry-server` flags (`--cluster-cidr ...`).
    pub(crate) fn start_with(extra: &[&str]) -> ControlPlane {
        let dir = tempfile::Builder::new()
            .prefix("ferry-agent-cp")
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
            .args(extra)
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

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.path().join("server")
    }

    pub(crate) fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub(crate) fn ca(&self) -> PathBuf {
        self.data_dir().join("pki/ca.crt")
    }

    pub(crate) fn node_token(&self, node: &str) -> String {
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
    pub(crate) fn curl_raw(
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
        // The token goes to curl in a 0600 header file, never on its command line.
        let header = (!token.is_empty()).then(|| {
            let path = self
                .dir
                .path()
                .join(format!("{}.hdr", ferry_tests::unique("auth")));
            write_private(&path, &format!("Authorization: Bearer {token}\n"));
            path
        });
        if let Some(h) = &header {
            cmd.arg("-H").arg(format!("@{}", h.display()));
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
        if let Some(h) = header {
            let _ = std::fs::remove_file(h);
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n')?;
        let code = code.trim().parse().ok()?;
        Some((code, serde_json::from_str(body).unwrap_or(Value::Null)))
    }

    /// An admin API call that must answer `want`.
    pub(crate) fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &Value)>,
        want: u16,
    ) -> Value {
        let (code, v) = self
            .curl_raw(method, path, body, &self.admin)
            .unwrap_or_else(|| panic!("{method} {path}: no answer"));
        assert_eq!(code, want, "{method} {path}: {v}");
        v
    }

    /// Plays the kubelet: registers Node `name` with `address` as its InternalIP.
    pub(crate) fn create_node(&self, name: &str, address: Option<&str>) {
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

    pub(crate) fn node(&self, name: &str) -> Value {
        self.api("GET", &format!("/api/v1/nodes/{name}"), None, 200)
    }

    pub(crate) fn delete_node(&self, name: &str) {
        self.api("DELETE", &format!("/api/v1/nodes/{name}"), None, 200);
    }

    /// The node's podCIDR, once node IPAM assigned it.
    pub(crate) fn wait_pod_cidr(&self, name: &str) -> String {
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
pub(crate) fn plug(sw: &Netns, ns: &Netns, port: &str, ip: &str) {
    veth(ns, "eth0", sw, port);
    sw.sh(&format!("ip link set {port} master br0 up"));
    ns.sh(&format!(
        "ip link set eth0 mtu {UNDERLAY_MTU} && ip addr add {ip}/24 dev eth0 && ip link set eth0 up"
    ));
}

/// One node: its namespace, directories and agent.
pub(crate) struct NodeEnv {
    pub(crate) agent: Option<ChildGuard>,
    pub(crate) ns: Netns,
    pub(crate) name: String,
    pub(crate) ip: String,
    pub(crate) token: String,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) starts: u32,
    /// Backend flags passed to every agent start (`--backend host-gw`, ...).
    pub(crate) args: Vec<String>,
}

impl NodeEnv {
    pub(crate) fn new(cp: &ControlPlane, name: &str, port: &str, ip: &str) -> NodeEnv {
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
            args: vec!["--backend".into(), "host-gw".into()],
        }
    }

    pub(crate) fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub(crate) fn conf_dir(&self) -> PathBuf {
        self.dir.path().join("net.d")
    }

    /// The node's token, in a 0600 file (what the agent is started with).
    pub(crate) fn token_file(&self) -> PathBuf {
        let path = self.dir.path().join("token");
        if !path.exists() {
            write_private(&path, &self.token);
        }
        path
    }

    pub(crate) fn start_agent(&mut self, cp: &ControlPlane) {
        self.starts += 1;
        let log = std::fs::File::create(self.log_path(self.starts)).unwrap();
        let child = self
            .ns
            .command(AGENT)
            .args(["--node-name", &self.name])
            .args(["--server", &format!("https://{CP_IP}:{PORT}")])
            .arg("--token-file")
            .arg(self.token_file())
            .arg("--certificate-authority")
            .arg(cp.ca())
            .arg("--cni-conf-dir")
            .arg(self.conf_dir())
            .arg("--run-dir")
            .arg(self.run_dir())
            .args(["--iface", "eth0"])
            .args(&self.args)
            .args(["--resync-seconds", &RESYNC_SECONDS.to_string()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.agent = Some(ChildGuard(child));
    }

    /// SIGKILL, no chance to clean up.
    pub(crate) fn kill_agent(&mut self) {
        if let Some(mut a) = self.agent.take() {
            a.0.kill().unwrap();
            a.0.wait().unwrap();
        }
    }

    pub(crate) fn log_path(&self, start: u32) -> PathBuf {
        self.dir.path().join(format!("agent-{start}.log"))
    }

    pub(crate) fn logs(&self) -> String {
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
    pub(crate) fn ferry_routes(&self) -> Vec<(String, String, String)> {
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

    pub(crate) fn has_route(&self, dst: &str, via: &str) -> bool {
        self.ferry_routes()
            .contains(&(dst.to_owned(), via.to_owned(), "eth0".to_owned()))
    }

    /// Attaches a pod with the conflist the agent wrote; returns its IP.
    pub(crate) fn add_pod(&self, pod: &Netns, id: &str) -> String {
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
pub(crate) fn tcp_reaches(server: &Netns, client: &Netns, addr: &str, port: u16) -> bool {
    tcp_peer(server, client, addr, port).is_some()
}

/// TCP from `client` to `addr:port` served in `server`: the peer address the server saw (once a
/// byte arrived), `None` if the connection or the byte did not make it.
pub(crate) fn tcp_peer(
    server: &Netns,
    client: &Netns,
    addr: &str,
    port: u16,
) -> Option<std::net::SocketAddr> {
    use std::net::{TcpListener, TcpStream};
    let listener = server.run(|| TcpListener::bind(("0.0.0.0", port)).unwrap());
    let target: std::net::SocketAddr = format!("{addr}:{port}").parse().unwrap();
    let acceptor = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().ok()?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).ok().map(|()| peer)
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
    let peer = acceptor.join().unwrap();
    peer.filter(|_| sent)
}

/// UDP datagram from `client` to `addr:port` served in `server`: the source the server saw.
pub(crate) fn udp_peer(
    server: &Netns,
    client: &Netns,
    addr: &str,
    port: u16,
) -> Option<std::net::SocketAddr> {
    use std::net::UdpSocket;
    let sock = server.run(|| UdpSocket::bind(("0.0.0.0", port)).unwrap());
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let target: std::net::SocketAddr = format!("{addr}:{port}").parse().unwrap();
    client.run(|| {
        let c = UdpSocket::bind("0.0.0.0:0").unwrap();
        c.send_to(b"ferry-udp", target).unwrap();
    });
    let mut buf = [0u8; 64];
    let (n, from) = sock.recv_from(&mut buf).ok()?;
    (buf[..n] == *b"ferry-udp").then_some(from)
}

/// The first host of a /24 (`10.244.1.0/24` -> `10.244.1.1/24`).
pub(crate) fn gateway_of(cidr: &str) -> String {
    let (net, prefix) = cidr.split_once('/').unwrap();
    let mut ip: std::net::Ipv4Addr = net.parse().unwrap();
    ip = std::net::Ipv4Addr::from(u32::from(ip) + 1);
    format!("{ip}/{prefix}")
}

pub(crate) fn inode(p: &Path) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap())
}

/// An `AF_PACKET` socket receiving every frame on `eth0` of `ns` (200 ms receive timeout).
pub(crate) fn raw_socket(ns: &Netns) -> OwnedFd {
    ns.run(|| {
        let fd = ferry_sys::net::packet_socket("eth0").expect("AF_PACKET socket on eth0");
        ferry_sys::net::set_recv_timeout(fd.as_fd(), Duration::from_millis(200))
            .expect("SO_RCVTIMEO");
        fd
    })
}

/// Sends `marker` five times over UDP from `sender` to `target` while capturing every frame on
/// `capture`'s `eth0`: the first frame that `decode` accepts and whose `payload` contains the
/// marker (5 s at most).
pub(crate) fn capture_marked<T: Send + 'static>(
    capture: &Netns,
    sender: &Netns,
    target: std::net::SocketAddr,
    marker: &'static [u8],
    decode: fn(&[u8]) -> Option<T>,
    payload: fn(&T) -> &[u8],
) -> Option<T> {
    let fd = raw_socket(capture);
    let capture = std::thread::spawn(move || {
        let end = std::time::Instant::now() + Duration::from_secs(5);
        let mut buf = vec![0u8; 65536];
        while std::time::Instant::now() < end {
            let Ok(n) = ferry_sys::net::recv(fd.as_fd(), &mut buf, 0) else {
                continue;
            };
            if let Some(v) = decode(&buf[..n]) {
                if payload(&v).windows(marker.len()).any(|w| w == marker) {
                    return Some(v);
                }
            }
        }
        None
    });
    std::thread::sleep(Duration::from_millis(100));
    sender.run(|| {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..5 {
            s.send_to(marker, target).unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    capture.join().unwrap()
}

/// `(mac, dst)` of every FDB entry with a destination on `ferry.1` of node `n` (sorted; empty
/// when the device does not exist).
pub(crate) fn ferry1_fdb(n: &NodeEnv) -> Vec<(String, String)> {
    let out =
        n.ns.sh("bridge -j fdb show dev ferry.1 2>/dev/null || echo '[]'");
    let v: Value = serde_json::from_str(&out).unwrap_or(Value::Array(vec![]));
    let mut e: Vec<_> = v
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|e| e.get("dst").is_some())
        .map(|e| {
            (
                e["mac"].as_str().unwrap_or_default().to_owned(),
                e["dst"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    e.sort();
    e
}

/// The outer IPv4 source and destination and the UDP datagram of a captured Ethernet frame
/// (decoded with `pnet_packet`); `None` for anything but IPv4 / UDP, or anything truncated.
pub(crate) fn outer_udp(
    f: &[u8],
) -> Option<(
    std::net::Ipv4Addr,
    std::net::Ipv4Addr,
    pnet_packet::udp::UdpPacket<'_>,
)> {
    use pnet_packet::ethernet::{EtherTypes, EthernetPacket};
    use pnet_packet::ipv4::Ipv4Packet;
    if EthernetPacket::new(f)?.get_ethertype() != EtherTypes::Ipv4 {
        return None;
    }
    let l3 = f.get(EthernetPacket::minimum_packet_size()..)?;
    let ip = Ipv4Packet::new(l3)?;
    if ip.get_next_level_protocol() != pnet_packet::ip::IpNextHeaderProtocols::Udp {
        return None;
    }
    let start = usize::from(ip.get_header_length()) * 4;
    let end = usize::from(ip.get_total_length()).min(l3.len());
    let udp = pnet_packet::udp::UdpPacket::new(l3.get(start..end)?)?;
    Some((ip.get_source(), ip.get_destination(), udp))
}

/// Writes a secret to a new file created mode 0600 (never readable by others).
pub(crate) fn write_private(path: &Path, contents: &str) {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.write_all(contents.as_bytes()).unwrap();
}

/// Attaches the `nodeport` programs at `hooks` (interface, hook) inside `ns`, panicking with the
/// interface that failed.
pub(crate) fn attach_nodeport(
    ns: &Netns,
    tc: &mut ferry_agent::bpf::NodePortTc,
    hooks: &[(&str, ferry_agent::bpf::TcHook)],
) {
    ns.run(|| -> Result<(), String> {
        for &(iface, hook) in hooks {
            tc.attach(iface, hook)
                .map_err(|e| format!("{iface} {hook:?}: {e:?}"))?;
        }
        Ok(())
    })
    .expect("attach the nodeport programs");
}
