//! The streaming tests' fixture: a control-plane namespace running ferry-server and the real
//! kubectl, a node namespace running ferry-kubelet (with the pod network a node agent would
//! set up), pods in their own namespaces; and what it leaves is removed on drop.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses a different subset"
)]

use ferry_tests::{bin_path, unique, wait_until, ChildGuard, Netns};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const CP_IP: &str = "10.97.0.1";
pub const NODE_IP: &str = "10.97.0.2";
pub const NODE: &str = "worker-s";

pub struct Fixture {
    pub cp: Netns,
    pub node: Netns,
    pub dir: tempfile::TempDir,
    pub server: ChildGuard,
    pub kubelet: Option<ChildGuard>,
    pub cgroup: PathBuf,
    pub token_file: PathBuf,
    /// Flags every start of the kubelet gets (beyond the fixture's own).
    pub kubelet_flags: Vec<String>,
}

impl Fixture {
    pub fn new(tag: &str) -> Fixture {
        let f = Fixture::bare(tag, &[], &[]);
        f.network_ready();
        f
    }

    /// The fixture with extra `server_flags` and `kubelet_flags`, the kubelet started, and no
    /// pod network yet (the test plays the node agent with [`Fixture::network_ready`]).
    pub fn bare(tag: &str, server_flags: &[&str], kubelet_flags: &[&str]) -> Fixture {
        let cp = Netns::new(&format!("{tag}c"));
        let node = Netns::new(&format!("{tag}n"));
        ferry_tests::veth(&cp, "eth0", &node, "eth0");
        cp.sh(&format!(
            "ip link set lo up; ip addr add {CP_IP}/24 dev eth0; ip link set eth0 up"
        ));
        node.sh(&format!(
            "ip link set lo up; ip addr add {NODE_IP}/24 dev eth0; ip link set eth0 up; \
             sysctl -qw net.ipv4.ip_forward=1"
        ));
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("server");
        let server = cp
            .command(bin_path("ferry-server"))
            .args(["--data-dir", data.to_str().unwrap()])
            .args(["--listen", &format!("{CP_IP}:6443")])
            .args(server_flags)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("server.log")).unwrap())
            .spawn()
            .expect("ferry-server");
        let server = ChildGuard(server);
        assert!(
            wait_until(Duration::from_secs(20), || data
                .join("admin.kubeconfig")
                .exists()
                && cp
                    .command("curl")
                    .args(["-sfk", &format!("https://{CP_IP}:6443/readyz")])
                    .output()
                    .is_ok_and(|o| o.status.success())),
            "ferry-server did not come up"
        );
        let out = Command::new(bin_path("ferry-server"))
            .args(["node-token", "--data-dir", data.to_str().unwrap()])
            .args(["--node", NODE])
            .output()
            .unwrap();
        let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        // The kubelet reads the token from a 0600 file: never on a command line.
        let token_file = dir.path().join("node.token");
        write_private(&token_file, &token);
        let p = |s: &str| dir.path().join(s).to_str().unwrap().to_owned();
        let out = Command::new(bin_path("ferry-server"))
            .args(["kubelet-cert", "--data-dir", data.to_str().unwrap()])
            .args(["--node", NODE, "--ip", NODE_IP])
            .args([
                "--cert-file",
                &p("kubelet.crt"),
                "--key-file",
                &p("kubelet.key"),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let bin = dir.path().join("cni-bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy(bin_path("ferry-cni"), bin.join("ferry-cni")).unwrap();
        std::os::unix::fs::symlink(bin.join("ferry-cni"), bin.join("loopback")).unwrap();
        let cg2 = ferry_kubelet::cgroup::cgroup2_mount().expect("cgroup2 mount");
        let cgroup = cg2.join(unique("fks"));
        let mut f = Fixture {
            cp,
            node,
            dir,
            server,
            kubelet: None,
            cgroup,
            token_file,
            kubelet_flags: kubelet_flags.iter().map(|s| (*s).to_owned()).collect(),
        };
        f.start_kubelet();
        f
    }

    /// Starts the node's kubelet (again: its log is appended to).
    pub fn start_kubelet(&mut self) {
        self.start_kubelet_with(&[]);
    }

    /// [`Fixture::start_kubelet`] with `extra` flags.
    pub fn start_kubelet_with(&mut self, extra: &[&str]) {
        let p = |s: &str| self.path(s).to_str().unwrap().to_owned();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("kubelet.log"))
            .unwrap();
        let kubelet = self
            .node
            .command(bin_path("ferry-kubelet"))
            .args(["--node-name", NODE])
            .args(["--server", &format!("https://{CP_IP}:6443")])
            .args(["--token-file", &p("node.token"), "--node-ip", NODE_IP])
            .args(["--certificate-authority", &p("server/pki/ca.crt")])
            .args(["--cni-conf-dir", &p("net.d")])
            .args(["--cni-bin-dir", &p("cni-bin")])
            .args(["--root-dir", &p("kubelet")])
            .args(["--cgroup-root", self.cgroup.to_str().unwrap()])
            .args(["--tls-cert-file", &p("kubelet.crt")])
            .args(["--tls-private-key-file", &p("kubelet.key")])
            .args(&self.kubelet_flags)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("ferry-kubelet");
        self.kubelet = Some(ChildGuard(kubelet));
    }

    /// Kills the kubelet with SIGKILL (its containers' shims keep running).
    pub fn kill_kubelet(&mut self) {
        if let Some(mut k) = self.kubelet.take() {
            let _ = k.0.kill();
            let _ = k.0.wait();
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = self.cp.command("kubectl");
        cmd.args([
            "--kubeconfig",
            self.path("server/admin.kubeconfig").to_str().unwrap(),
        ])
        .args(args);
        cmd
    }

    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        ferry_tests::output_with_stdin(&mut self.kubectl_cmd(args), stdin)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args, None);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}{}\nkubelet log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log("kubelet.log")
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    pub fn get(&self, what: &str) -> Option<Value> {
        let out = self.kubectl(&["get", what, "-o", "json"], None);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    pub fn wait(&self, what: &str, secs: u64, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(v) = self.get(what) {
                if f(&v) {
                    return v;
                }
                last = Some(v);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{what} did not reach the expected state in {secs}s; last: {}\nkubelet log:\n{}",
            serde_json::to_string_pretty(&last).unwrap(),
            self.log("kubelet.log")
        );
    }

    /// Plays the node agent: node network file + conflist from the node's podCIDR; returns it.
    pub fn network_ready(&self) -> String {
        let node = self.wait(&format!("node/{NODE}"), 20, |n| {
            n["spec"]["podCIDR"].is_string()
        });
        let cidr = node["spec"]["podCIDR"].as_str().unwrap().to_owned();
        let (net, len) = cidr.split_once('/').unwrap();
        let gw = format!("{}.1", net.rsplit_once('.').unwrap().0);
        std::fs::write(
            self.path("subnet.env"),
            format!("FERRY_NETWORK=10.244.0.0/16\nFERRY_SUBNET={gw}/{len}\nFERRY_MTU=1500\nFERRY_IPMASQ=false\n"),
        )
        .unwrap();
        std::fs::create_dir_all(self.path("net.d")).unwrap();
        let conf = json!({"cniVersion": "1.1.0", "name": "ferry", "plugins": [{
            "type": "ferry-cni", "bridge": "ferry0", "isGateway": true,
            "subnetFile": self.path("subnet.env"),
            "ipam": {"dataDir": self.path("ipam")}}]});
        std::fs::write(self.path("net.d/10-ferry.conflist"), conf.to_string()).unwrap();
        cidr
    }

    /// `kubectl create` of `obj`, which must succeed.
    pub fn create(&self, obj: &Value) {
        let out = self.kubectl(&["create", "-f", "-"], Some(&obj.to_string()));
        assert!(
            out.status.success(),
            "create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The pod's network namespace (the kubelet's bind mount).
    pub fn pod_netns(&self, uid: &str) -> PathBuf {
        self.path("kubelet/netns").join(uid)
    }

    /// The addresses the CNI IPAM store holds.
    pub fn allocated_ips(&self) -> Vec<String> {
        let mut out = Vec::new();
        let Ok(d) = std::fs::read_dir(self.path("ipam")) else {
            return out;
        };
        for net in d.flatten() {
            if let Ok(files) = std::fs::read_dir(net.path()) {
                out.extend(
                    files
                        .flatten()
                        .map(|f| f.file_name().to_string_lossy().into_owned())
                        .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok()),
                );
            }
        }
        out
    }

    /// PIDs in the pod's cgroups.
    pub fn pod_pids(&self, uid: &str) -> Vec<i32> {
        let mut pids = Vec::new();
        collect_pids(&self.cgroup.join(uid), &mut pids);
        pids
    }
}

pub fn collect_pids(dir: &Path, out: &mut Vec<i32>) {
    if let Ok(s) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(s.lines().filter_map(|l| l.parse::<i32>().ok()));
    }
    if let Ok(d) = std::fs::read_dir(dir) {
        for e in d.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_pids(&e.path(), out);
            }
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(mut k) = self.kubelet.take() {
            let _ = k.0.kill();
            let _ = k.0.wait();
        }
        if self.cgroup.exists() {
            let _ = std::fs::write(self.cgroup.join("cgroup.kill"), "1");
            wait_until(Duration::from_secs(5), || {
                !std::fs::read_to_string(self.cgroup.join("cgroup.events"))
                    .unwrap_or_default()
                    .contains("populated 1")
            });
            remove_cgroup(&self.cgroup);
        }
        // The shims exit by themselves once their containers are gone.
        if let Ok(d) = std::fs::read_dir(self.path("kubelet/netns")) {
            for e in d.flatten() {
                let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

pub fn remove_cgroup(dir: &Path) {
    if let Ok(d) = std::fs::read_dir(dir) {
        for e in d.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

pub fn pod(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
           "spec": spec})
}

pub fn running(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
}

pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Writes a secret to a new file created mode 0600 (never readable by others).
pub fn write_private(path: &Path, contents: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}
