//! ferry-kubelet on the real kernel: a control-plane namespace running ferry-server, a node
//! namespace running ferry-kubelet with ferry-cni, pods in their own namespaces. The test plays
//! the node agent (it writes the node network file and the conflist) and checks results with
//! kubectl, `ip -j` in the pod namespaces, cgroup files and the CNI IPAM store.

use ferry_tests::{bin_path, privileged, unique, wait_until, ChildGuard, Netns, RootSnapshot};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const CP_IP: &str = "10.98.0.1";
const NODE_IP: &str = "10.98.0.2";
const NODE: &str = "worker-1";

struct Fixture {
    cp: Netns,
    node: Netns,
    dir: tempfile::TempDir,
    _server: ChildGuard,
    kubelet: Option<ChildGuard>,
    cgroup: PathBuf,
    token_file: PathBuf,
}

impl Fixture {
    fn new(tag: &str) -> Fixture {
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
            .args(["--node-monitor-grace-period", "40"])
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
            .args([
                "node-token",
                "--data-dir",
                data.to_str().unwrap(),
                "--node",
                NODE,
            ])
            .output()
            .unwrap();
        let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        // The kubelet reads the token from a 0600 file: never on a command line.
        let token_file = dir.path().join("node.token");
        write_private(&token_file, &token);
        let out = Command::new(bin_path("ferry-server"))
            .args(["kubelet-cert", "--data-dir", data.to_str().unwrap()])
            .args(["--node", NODE, "--ip", NODE_IP])
            .arg("--cert-file")
            .arg(dir.path().join("kubelet.crt"))
            .arg("--key-file")
            .arg(dir.path().join("kubelet.key"))
            .output()
            .unwrap();
        assert!(out.status.success(), "kubelet-cert: {out:?}");
        // CNI binaries: ferry-cni, and loopback as the same binary.
        let bin = dir.path().join("cni-bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy(bin_path("ferry-cni"), bin.join("ferry-cni")).unwrap();
        std::os::unix::fs::symlink(bin.join("ferry-cni"), bin.join("loopback")).unwrap();
        let cg2 = ferry_kubelet::cgroup::cgroup2_mount().expect("cgroup2 mount");
        let cgroup = cg2.join(unique("fkl"));
        let mut f = Fixture {
            cp,
            node,
            dir,
            _server: server,
            kubelet: None,
            cgroup,
            token_file,
        };
        f.start_kubelet();
        f
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn start_kubelet(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("kubelet.log"))
            .unwrap();
        let child = self
            .node
            .command(bin_path("ferry-kubelet"))
            .args([
                "--node-name",
                NODE,
                "--server",
                &format!("https://{CP_IP}:6443"),
            ])
            .arg("--token-file")
            .arg(&self.token_file)
            .args(["--node-ip", NODE_IP])
            .args([
                "--certificate-authority",
                self.path("server/pki/ca.crt").to_str().unwrap(),
            ])
            .args(["--cni-conf-dir", self.path("net.d").to_str().unwrap()])
            .args(["--cni-bin-dir", self.path("cni-bin").to_str().unwrap()])
            .args(["--root-dir", self.path("kubelet").to_str().unwrap()])
            .args(["--cgroup-root", self.cgroup.to_str().unwrap()])
            .args(["--backoff-base", "1"])
            .arg("--tls-cert-file")
            .arg(self.path("kubelet.crt"))
            .arg("--tls-private-key-file")
            .arg(self.path("kubelet.key"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("ferry-kubelet");
        self.kubelet = Some(ChildGuard(child));
    }

    fn kill_kubelet(&mut self) {
        if let Some(mut k) = self.kubelet.take() {
            let _ = k.0.kill();
            let _ = k.0.wait();
        }
    }

    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = self.cp.command("kubectl");
        cmd.args([
            "--kubeconfig",
            self.path("server/admin.kubeconfig").to_str().unwrap(),
        ])
        .args(args);
        ferry_tests::output_with_stdin(&mut cmd, stdin)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args, None);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn create(&self, obj: &Value) {
        let out = self.kubectl(&["create", "-f", "-"], Some(&obj.to_string()));
        assert!(
            out.status.success(),
            "create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn get(&self, what: &str) -> Option<Value> {
        let out = self.kubectl(&["get", what, "-o", "json"], None);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    fn wait(&self, what: &str, secs: u64, f: impl Fn(&Value) -> bool) -> Value {
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
            std::fs::read_to_string(self.path("kubelet.log")).unwrap_or_default()
        );
    }

    /// Plays the node agent: node network file + conflist from the node's podCIDR.
    fn network_ready(&self) -> String {
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

    fn pod_netns(&self, uid: &str) -> PathBuf {
        self.path("kubelet/netns").join(uid)
    }

    /// PIDs in the pod's cgroups.
    fn pod_pids(&self, uid: &str) -> Vec<i32> {
        let mut pids = Vec::new();
        let dir = self.cgroup.join(uid);
        if let Ok(d) = std::fs::read_dir(&dir) {
            for e in d.flatten() {
                if let Ok(s) = std::fs::read_to_string(e.path().join("cgroup.procs")) {
                    pids.extend(s.lines().filter_map(|l| l.parse::<i32>().ok()));
                }
            }
        }
        pids
    }

    fn allocated_ips(&self) -> Vec<String> {
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
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.kill_kubelet();
        // Kill every pod process and shim, drop the pod namespaces' bind mounts, remove cgroups.
        if self.cgroup.exists() {
            let _ = std::fs::write(self.cgroup.join("cgroup.kill"), "1");
            wait_until(Duration::from_secs(5), || {
                !std::fs::read_to_string(self.cgroup.join("cgroup.events"))
                    .unwrap_or_default()
                    .contains("populated 1")
            });
            remove_cgroup(&self.cgroup);
        }
        let _ = Command::new("pkill")
            .args([
                "-KILL",
                "-f",
                &format!("shim {}", self.path("kubelet").display()),
            ])
            .status();
        if let Ok(d) = std::fs::read_dir(self.path("kubelet/netns")) {
            for e in d.flatten() {
                let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

fn remove_cgroup(dir: &Path) {
    if let Ok(d) = std::fs::read_dir(dir) {
        for e in d.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

fn condition(pod: &Value, ty: &str) -> String {
    pod["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == ty))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
        .to_owned()
}

fn pod(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
           "spec": spec})
}

fn running_ready(p: &Value) -> bool {
    p["status"]["phase"] == "Running" && condition(p, "Ready") == "True"
}

fn in_cidr(ip: &str, cidr: &str) -> bool {
    let net: ipnetwork_lite::Net = cidr.parse().unwrap();
    net.contains(ip.parse().unwrap())
}

mod ipnetwork_lite {
    //! Just enough IPv4 CIDR arithmetic for the assertions.
    use std::net::Ipv4Addr;
    pub(crate) struct Net(u32, u32);
    impl std::str::FromStr for Net {
        type Err = String;
        fn from_str(s: &str) -> Result<Self, String> {
            let (a, l) = s.split_once('/').ok_or("no /")?;
            let a: Ipv4Addr = a.parse().map_err(|_| "addr")?;
            let l: u32 = l.parse().map_err(|_| "len")?;
            let mask = if l == 0 { 0 } else { u32::MAX << (32 - l) };
            Ok(Net(u32::from(a) & mask, mask))
        }
    }
    impl Net {
        pub(crate) fn contains(&self, ip: Ipv4Addr) -> bool {
            u32::from(ip) & self.1 == self.0
        }
    }
}

#[test]
fn pods_wait_for_the_network_then_run_with_an_ip_logs_and_restarts() {
    if !privileged("kubelet_lifecycle") {
        return;
    }
    let root = RootSnapshot::take();
    let f = Fixture::new(&unique("kl"));
    // No conflist yet: the node is registered but not Ready, and says why.
    let node = f.wait(&format!("node/{NODE}"), 20, |n| {
        n["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter().any(|c| {
                c["type"] == "Ready"
                    && c["status"] == "False"
                    && c["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("NetworkPluginNotReady"))
            })
        })
    });
    // NetworkUnavailable belongs to the network agent: the kubelet never sets it, and keeps a
    // condition somebody else set (its status updates are strategic merges by type).
    assert_eq!(condition(&node, "NetworkUnavailable"), "");
    f.ok(&[
        "patch", "node", NODE, "--subresource=status", "--type=strategic", "-p",
        r#"{"status":{"conditions":[{"type":"NetworkUnavailable","status":"False","reason":"TestAgentReady","message":"set by the test"}]}}"#,
    ]);
    assert_eq!(node["status"]["addresses"][0]["address"], NODE_IP);
    let lease = f.ok(&["get", "lease", NODE, "-n", "kube-node-lease", "-o", "json"]);
    let lease: Value = serde_json::from_str(&lease).unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], NODE);

    // A pod bound to the node waits (Pending, ContainerCreating), it does not fail.
    f.create(&pod(
        "web",
        json!({"nodeName": NODE, "containers": [{"name": "c", "image": "busybox",
            "command": ["sh", "-c", "echo hello-$(POD_NAME); echo to-stderr >&2; exec sleep 1000"],
            "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}),
    ));
    std::thread::sleep(Duration::from_secs(1));
    let p = f.get("pod/web").unwrap();
    assert_eq!(p["status"]["phase"], "Pending", "{p}");
    let cidr = f.network_ready();
    let node = f.wait(&format!("node/{NODE}"), 20, |n| {
        condition(n, "Ready") == "True"
    });
    assert_eq!(condition(&node, "NetworkUnavailable"), "False", "{node}");
    let p = f.wait("pod/web", 20, running_ready);
    let ip = p["status"]["podIP"].as_str().unwrap().to_owned();
    assert!(in_cidr(&ip, &cidr), "{ip} not in {cidr}");
    assert_eq!(p["status"]["hostIP"], NODE_IP);
    let uid = p["metadata"]["uid"].as_str().unwrap().to_owned();
    // Independent check: the pod's own namespace has eth0 with the IP, and lo up.
    let out = Command::new("nsenter")
        .arg(format!("--net={}", f.pod_netns(&uid).display()))
        .args(["ip", "-j", "addr"])
        .output()
        .unwrap();
    let addrs: Value = serde_json::from_slice(&out.stdout).unwrap();
    let has = |ifname: &str, addr: &str| {
        addrs.as_array().unwrap().iter().any(|l| {
            l["ifname"] == ifname
                && l["addr_info"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|a| a["local"] == addr)
        })
    };
    assert!(has("eth0", &ip) && has("lo", "127.0.0.1"), "{addrs}");
    // The container process runs in that namespace and in the pod's cgroup.
    let pids = f.pod_pids(&uid);
    assert_eq!(pids.len(), 1, "one process (sleep): {pids:?}");
    let pid_ns = std::fs::read_link(format!("/proc/{}/ns/net", pids[0])).unwrap();
    let pod_ns = Command::new("nsenter")
        .arg(format!("--net={}", f.pod_netns(&uid).display()))
        .args(["readlink", "/proc/self/ns/net"])
        .output()
        .unwrap();
    assert_eq!(
        pid_ns.to_string_lossy(),
        String::from_utf8_lossy(&pod_ns.stdout).trim()
    );
    // kubectl logs through the API server -> kubelet.
    let logs = f.ok(&["logs", "web"]);
    assert!(
        logs.contains("hello-web") && logs.contains("to-stderr"),
        "{logs}"
    );
    // The node reaches the pod (kubelet probes depend on it).
    assert!(f
        .node
        .try_sh(&format!("ping -c1 -W1 {ip}"))
        .status
        .success());

    // A killed container restarts (restartPolicy Always); --previous shows the old log.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let p = f.wait("pod/web", 20, |p| {
        p["status"]["containerStatuses"][0]["restartCount"] == 1 && running_ready(p)
    });
    assert_eq!(
        p["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
        137
    );
    assert_eq!(p["status"]["podIP"], ip.as_str(), "same sandbox, same IP");
    let prev = f.ok(&["logs", "web", "--previous"]);
    assert!(prev.contains("hello-web"), "{prev}");
    assert_eq!(f.pod_pids(&uid).len(), 1);

    // Graceful deletion: SIGTERM, the pod goes away, its namespace, cgroup and IP too.
    f.ok(&["delete", "pod", "web", "--wait=true", "--timeout=30s"]);
    assert!(wait_until(Duration::from_secs(10), || !f
        .pod_netns(&uid)
        .exists()));
    assert!(wait_until(Duration::from_secs(10), || !f
        .cgroup
        .join(&uid)
        .exists()));
    assert!(f.allocated_ips().is_empty(), "{:?}", f.allocated_ips());
    drop(f);
    root.assert_unchanged();
}

#[test]
fn restart_policies_probes_and_bad_input() {
    if !privileged("kubelet_policies") {
        return;
    }
    let root = RootSnapshot::take();
    let f = Fixture::new(&unique("kp"));
    f.network_ready();
    f.wait(&format!("node/{NODE}"), 20, |n| {
        condition(n, "Ready") == "True"
    });
    let flag = f.path("ready-flag");
    let live = f.path("live-flag");
    std::fs::write(&flag, "").unwrap();
    std::fs::write(&live, "").unwrap();
    let spec = |containers: Value, policy: &str| {
        json!({"nodeName": NODE, "restartPolicy": policy, "terminationGracePeriodSeconds": 2,
               "containers": containers})
    };
    f.create(&pod(
        "done-ok",
        spec(
            json!([{"name": "c", "image": "x", "command": ["true"]}]),
            "Never",
        ),
    ));
    f.create(&pod(
        "done-bad",
        spec(
            json!([{"name": "c", "image": "x", "command": ["sh", "-c", "exit 3"]}]),
            "Never",
        ),
    ));
    f.create(&pod(
        "on-failure",
        spec(
            json!([{"name": "c", "image": "x", "command": ["true"]}]),
            "OnFailure",
        ),
    ));
    f.create(&pod(
        "probed",
        spec(
            json!([{"name": "web", "image": "python", "ports": [{"name": "http", "containerPort": 8080}],
                "command": ["/usr/bin/python3", "-m", "http.server", "8080"],
                "readinessProbe": {"exec": {"command": ["test", "-f", flag]}, "periodSeconds": 1, "failureThreshold": 1},
                "livenessProbe": {"exec": {"command": ["test", "-f", live]}, "periodSeconds": 1, "failureThreshold": 2},
                "startupProbe": {"httpGet": {"port": "http", "path": "/"}, "periodSeconds": 1, "failureThreshold": 30}}]),
            "Always",
        ),
    ));
    // Bad input.
    f.create(&pod(
        "no-such-binary",
        spec(
            json!([{"name": "c", "image": "x", "command": ["/nonexistent/bin"]}]),
            "Always",
        ),
    ));
    f.create(&pod(
        "no-command",
        spec(json!([{"name": "c", "image": "nginx"}]), "Always"),
    ));
    f.create(&pod(
        "bad-env",
        spec(json!([{"name": "c", "image": "x", "command": ["sleep", "100"],
            "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "missing", "key": "k"}}}]}]), "Always"),
    ));
    f.create(&pod(
        "bad-probe",
        spec(
            json!([{"name": "c", "image": "x", "command": ["sleep", "100"],
            "readinessProbe": {"tcpSocket": {"port": "nope"}}}]),
            "Always",
        ),
    ));
    let dup = f.kubectl(
        &["create", "-f", "-"],
        Some(&pod("dup", spec(json!([{"name": "c", "image": "x", "command": ["true"]}, {"name": "c", "image": "x", "command": ["true"]}]), "Always")).to_string()),
    );
    assert!(
        !dup.status.success(),
        "duplicate container names must be rejected"
    );
    assert!(
        String::from_utf8_lossy(&dup.stderr).contains("Duplicate value"),
        "{}",
        String::from_utf8_lossy(&dup.stderr)
    );
    let huge = f.kubectl(
        &["create", "-f", "-"],
        Some(
            &pod(
                "huge",
                json!({"containers": [{"name": "c", "image": "x", "command": ["true"],
            "resources": {"requests": {"cpu": "1000"}}}]}),
            )
            .to_string(),
        ),
    );
    assert!(huge.status.success());

    f.wait("pod/done-ok", 20, |p| p["status"]["phase"] == "Succeeded");
    let bad = f.wait("pod/done-bad", 20, |p| p["status"]["phase"] == "Failed");
    assert_eq!(
        bad["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        3
    );
    f.wait("pod/on-failure", 20, |p| {
        p["status"]["phase"] == "Succeeded"
    });
    // Finished pods released their addresses.
    let p = f.wait("pod/probed", 30, running_ready);
    assert_eq!(p["status"]["containerStatuses"][0]["started"], true);
    // Readiness follows the probe without restarting.
    std::fs::remove_file(&flag).unwrap();
    f.wait("pod/probed", 20, |p| condition(p, "Ready") == "False");
    std::fs::write(&flag, "").unwrap();
    f.wait("pod/probed", 20, |p| condition(p, "Ready") == "True");
    // Liveness failure restarts the container.
    std::fs::remove_file(&live).unwrap();
    f.wait("pod/probed", 30, |p| {
        p["status"]["containerStatuses"][0]["restartCount"].as_i64() >= Some(1)
    });
    std::fs::write(&live, "").unwrap();
    f.wait("pod/probed", 30, running_ready);

    let p = f.wait("pod/no-such-binary", 20, |p| {
        let st = &p["status"]["containerStatuses"][0];
        st["restartCount"].as_i64() >= Some(1)
            && (st["state"]["waiting"]["reason"] == "CrashLoopBackOff"
                || st["state"]["terminated"]["reason"] == "StartError")
    });
    assert_eq!(
        p["status"]["phase"], "Running",
        "restartPolicy Always keeps it Running"
    );
    let p = f.wait("pod/no-command", 20, |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
            == "CreateContainerConfigError"
    });
    assert!(
        p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
            .as_str()
            .unwrap()
            .contains("no command")
    );
    f.wait("pod/bad-env", 20, |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
            == "CreateContainerConfigError"
    });
    f.wait("pod/huge", 20, |p| {
        p["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "PodScheduled" && c["reason"] == "Unschedulable")
        })
    });
    let events = f.ok(&["get", "events", "-o", "json"]);
    let events: Value = serde_json::from_str(&events).unwrap();
    let has_event = |obj: &str, reason: &str| {
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["involvedObject"]["name"] == obj && e["reason"] == reason)
    };
    assert!(has_event("no-such-binary", "Failed"));
    assert!(has_event("bad-probe", "InvalidProbe"));
    assert!(has_event("probed", "Unhealthy"));
    // Nothing crashed: the kubelet still serves, and deleting everything leaves nothing behind.
    f.ok(&["delete", "pods", "--all", "--wait=true", "--timeout=60s"]);
    assert!(
        wait_until(Duration::from_secs(10), || f.allocated_ips().is_empty()),
        "{:?}",
        f.allocated_ips()
    );
    assert!(wait_until(Duration::from_secs(10), || std::fs::read_dir(
        f.path("kubelet/netns")
    )
    .map_or(true, |d| d.count() == 0)));
    drop(f);
    root.assert_unchanged();
}

#[test]
fn a_restarted_kubelet_adopts_its_pods_and_cleans_up_deleted_ones() {
    if !privileged("kubelet_adoption") {
        return;
    }
    let root = RootSnapshot::take();
    let mut f = Fixture::new(&unique("ka"));
    f.network_ready();
    f.wait(&format!("node/{NODE}"), 20, |n| {
        condition(n, "Ready") == "True"
    });
    for name in ["keep", "gone"] {
        f.create(&pod(
            name,
            json!({"nodeName": NODE, "terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": "x", "command": ["sleep", "1000"]}]}),
        ));
    }
    let keep = f.wait("pod/keep", 20, running_ready);
    let gone = f.wait("pod/gone", 20, running_ready);
    let keep_uid = keep["metadata"]["uid"].as_str().unwrap().to_owned();
    let gone_uid = gone["metadata"]["uid"].as_str().unwrap().to_owned();
    let keep_pids = f.pod_pids(&keep_uid);
    let keep_ip = keep["status"]["podIP"].clone();
    let cache = f.path("kubelet/cni-cache/results");
    let cache_before: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .map(|e| (e.file_name(), e.metadata().unwrap().modified().unwrap()))
        .collect();
    let ips_before = f.allocated_ips();
    assert_eq!(ips_before.len(), 2);

    f.kill_kubelet(); // SIGKILL
                      // While it is down: one pod is force-deleted.
    f.ok(&["delete", "pod", "gone", "--grace-period=0", "--force"]);
    assert_eq!(
        f.pod_pids(&keep_uid),
        keep_pids,
        "pods keep running without the kubelet"
    );
    f.start_kubelet();
    assert!(
        wait_until(Duration::from_secs(15), || !f.pod_netns(&gone_uid).exists()
            && f.pod_pids(&gone_uid).is_empty()),
        "the pod deleted while the kubelet was down is cleaned up"
    );
    assert!(wait_until(Duration::from_secs(10), || f
        .allocated_ips()
        .len()
        == 1));
    std::thread::sleep(Duration::from_secs(2));
    let keep = f.wait("pod/keep", 10, running_ready);
    assert_eq!(keep["status"]["containerStatuses"][0]["restartCount"], 0);
    assert_eq!(keep["status"]["podIP"], keep_ip);
    assert_eq!(
        f.pod_pids(&keep_uid),
        keep_pids,
        "adopted, not restarted, no duplicate"
    );
    // No second ADD: the cached result of `keep` was not rewritten.
    let keep_cache: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .map(|e| (e.file_name(), e.metadata().unwrap().modified().unwrap()))
        .collect();
    for entry in &keep_cache {
        assert!(
            cache_before.contains(entry),
            "cache entry rewritten: {entry:?}"
        );
    }
    // The adopted container is still supervised: killing it restarts it.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(keep_pids[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    f.wait("pod/keep", 20, |p| {
        p["status"]["containerStatuses"][0]["restartCount"] == 1 && running_ready(p)
    });
    f.ok(&["delete", "pod", "keep", "--wait=true", "--timeout=30s"]);
    assert!(wait_until(Duration::from_secs(10), || f
        .allocated_ips()
        .is_empty()));
    drop(f);
    root.assert_unchanged();
}

/// Writes a secret to a new file created mode 0600 (never readable by others).
fn write_private(path: &Path, contents: &str) {
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
