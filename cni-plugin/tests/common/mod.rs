//! Shared fixture for the privileged ferry-cni tests: a "node" network namespace with its own
//! IPAM and cache directories, and helpers that invoke the real `ferry-cni` binary inside it the
//! way a runtime does (environment variables + config on stdin).

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses a different subset"
)]

use ferry_tests::Netns;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

pub const BIN: &str = env!("CARGO_BIN_EXE_ferry-cni");
/// Debian's reference plugins.
pub const DEBIAN_CNI: &str = "/usr/lib/cni";

/// One simulated node.
pub struct Node {
    pub ns: Netns,
    pub dir: tempfile::TempDir,
    pub bridge: String,
    /// Directory with `ferry-cni`, a `loopback` symlink to it, and Debian's plugins.
    pub bin_dir: PathBuf,
}

/// What one plugin invocation returned.
#[derive(Debug)]
pub struct Answer {
    pub ok: bool,
    pub json: serde_json::Value,
    pub stdout: String,
    pub stderr: String,
}

impl Answer {
    /// The CNI error code (panics if the call succeeded).
    pub fn code(&self) -> u64 {
        assert!(!self.ok, "expected failure, got {}", self.stdout);
        self.json["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("no code in {}", self.stdout))
    }

    pub fn expect_ok(&self) -> &serde_json::Value {
        assert!(self.ok, "plugin failed: {}\n{}", self.stdout, self.stderr);
        &self.json
    }
}

impl Node {
    pub fn new() -> Node {
        let ns = Netns::new("fcn");
        let dir = tempfile::Builder::new()
            .prefix("ferry-cni-test")
            .tempdir()
            .unwrap();
        let bin_dir = dir.path().join("bin");
        std::fs::create_dir_all(&bin_dir).unwrap();
        std::os::unix::fs::symlink(BIN, bin_dir.join("ferry-cni")).unwrap();
        std::os::unix::fs::symlink(BIN, bin_dir.join("loopback")).unwrap();
        for p in ["host-local", "portmap", "bridge"] {
            let src = Path::new(DEBIAN_CNI).join(p);
            assert!(
                src.exists(),
                "{} missing: run scripts/setup.sh",
                src.display()
            );
            std::os::unix::fs::symlink(src, bin_dir.join(p)).unwrap();
        }
        let bridge = format!("b{}", &ns.name()[3..]);
        Node {
            ns,
            dir,
            bridge,
            bin_dir,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }

    /// A ferry-cni config for this node with `subnet`, merged with `extra`.
    pub fn conf(&self, version: &str, subnet: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut c = serde_json::json!({
            "cniVersion": version,
            "name": "testnet",
            "type": "ferry-cni",
            "bridge": self.bridge,
            "ipam": {"subnet": subnet, "dataDir": self.data_dir()},
        });
        merge(&mut c, extra);
        c
    }

    /// Invokes `ferry-cni` inside the node namespace.
    pub fn call(&self, env: &[(&str, &str)], stdin: &[u8]) -> Answer {
        self.call_bin(BIN, env, stdin)
    }

    pub fn call_bin(
        &self,
        bin: impl AsRef<std::ffi::OsStr>,
        env: &[(&str, &str)],
        stdin: &[u8],
    ) -> Answer {
        let mut cmd = self.ns.command(bin);
        cmd.env_clear()
            .env("CNI_PATH", &self.bin_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let _ = child.stdin.take().unwrap().write_all(stdin);
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let json = serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null);
        Answer {
            ok: out.status.success(),
            json,
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// A standard invocation.
    pub fn cni(
        &self,
        cmd: &str,
        cid: &str,
        netns: &str,
        ifname: &str,
        conf: &serde_json::Value,
    ) -> Answer {
        self.call(
            &[
                ("CNI_COMMAND", cmd),
                ("CNI_CONTAINERID", cid),
                ("CNI_NETNS", netns),
                ("CNI_IFNAME", ifname),
            ],
            &serde_json::to_vec(conf).unwrap(),
        )
    }

    /// Host-side links (names) in the node namespace.
    pub fn links(&self) -> Vec<String> {
        self.ns.link_names()
    }

    /// A libcni-style runtime whose plugins run inside this node's namespace (never the test's).
    pub fn runtime(&self) -> ferry_libcni::runtime::Runtime {
        ferry_libcni::runtime::Runtime::in_netns(
            vec![self.bin_dir.clone()],
            self.dir.path().join("cache"),
            Path::new(self.ns.path()),
        )
        .unwrap()
    }

    /// Reservation files of the built-in IPAM for network `testnet`.
    pub fn reservations(&self) -> Vec<String> {
        let dir = self.data_dir().join("testnet");
        let Ok(rd) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut v: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect();
        v.sort();
        v
    }

    /// Links created by ferry-cni on the host side.
    pub fn ferry_veths(&self) -> Vec<String> {
        self.links()
            .into_iter()
            .filter(|l| l.starts_with("ferry"))
            .collect()
    }
}

/// The first address of a CNI result, without its prefix length.
pub fn first_ip(result: &serde_json::Value) -> String {
    let addr = result["ips"][0]["address"]
        .as_str()
        .expect("result has an address");
    addr.split('/').next().unwrap_or(addr).to_owned()
}

/// Deep-merges `extra` into `base` (objects merge, everything else replaces).
pub fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    match (base, extra) {
        (serde_json::Value::Object(b), serde_json::Value::Object(e)) => {
            for (k, v) in e {
                if v.is_null() {
                    b.remove(&k);
                } else {
                    merge(b.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        (b, e) => *b = e,
    }
}

/// Opens a TCP listener inside `server` on `addr:port` and connects to it from `client`; true if
/// the connection was accepted and a byte made it across.
pub fn tcp_reaches(server: &Netns, client: &Netns, addr: &str, port: u16) -> bool {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    let listener = server.run(|| TcpListener::bind(("0.0.0.0", port)).unwrap());
    let target: std::net::SocketAddr = format!("{addr}:{port}").parse().unwrap();
    let acceptor = std::thread::spawn(move || {
        listener.set_nonblocking(false).unwrap();
        let (mut s, _) = listener.accept().unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).map(|_| b[0]).ok()
    });
    let sent = client.run(|| {
        TcpStream::connect_timeout(&target, std::time::Duration::from_secs(2))
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
