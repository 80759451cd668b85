//! The fixture the socket-LB tests share (`sock_lb.rs`, `sock_lb_faults.rs`): a fresh network
//! namespace, cgroup and private bpffs mount per test ([`Lab`], removed on drop), loopback
//! backends, the Python client run inside the namespace and cgroup, and test tables.

#![allow(dead_code, reason = "each test crate uses a part of the fixture")]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use ferry_agent::service::ebpf::{uninstall, EbpfProxier};
use ferry_agent::service::{
    Backend, Entry, Frontend, FrontendKind, Proto, ServicePortName, ServiceTable,
};
use ferry_sys::process::OnExec;
use ferry_tests::{unique, Netns};

/// The client: one operation per process, one JSON line per result on stdout.
pub(crate) const CLIENT: &str = r#"
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
pub(crate) struct Lab {
    pub(crate) netns: Netns,
    pub(crate) cgroup: PathBuf,
    pub(crate) bpffs: PathBuf,
    pub(crate) pin_dir: PathBuf,
}

impl Lab {
    pub(crate) fn new(tag: &str) -> Lab {
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
    pub(crate) fn tcp_backend(&self, name: &'static str) -> Backend {
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

    /// A UDP backend that answers `<name>:<length>`.
    pub(crate) fn udp_backend(&self, name: &'static str) -> Backend {
        let sock = self
            .netns
            .run(|| UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)))
            .expect("bind");
        let port = sock.local_addr().expect("addr").port();
        thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(format!("{name}:{n}").as_bytes(), from);
            }
        });
        Backend {
            addr: Ipv4Addr::LOCALHOST,
            port,
        }
    }

    pub(crate) fn client(&self, args: &[String]) -> Command {
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
    pub(crate) fn run(&self, args: &[&str]) -> Vec<serde_json::Value> {
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

    pub(crate) fn proxier(&self) -> EbpfProxier {
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
pub(crate) type Row = (Ipv4Addr, u16, Proto, Vec<Backend>, Option<u32>);

pub(crate) fn table(entries: &[Row]) -> ServiceTable {
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
                        local_backends: Vec::new(),
                        external_local: false,
                        affinity_timeout: *affinity,
                    },
                )
            })
            .collect(),
        ..ServiceTable::default()
    }
}

pub(crate) fn got_names(results: &[serde_json::Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in results {
        let got = r["got"].as_str().unwrap_or_else(|| panic!("no reply: {r}"));
        *m.entry(got.to_owned()).or_insert(0) += 1;
    }
    m
}
