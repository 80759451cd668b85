//! ferry-kubelet on the real kernel: a control-plane namespace running ferry-server, a node
//! namespace running ferry-kubelet with ferry-cni, pods in their own namespaces. The test plays
//! the node agent (it writes the node network file and the conflist) and checks results with
//! kubectl, `ip -j` in the pod namespaces, cgroup files and the CNI IPAM store.

use ferry_tests::{privileged, unique, wait_until, RootSnapshot};
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

mod common;

use common::{pod, Fixture, NODE, NODE_IP};

/// The fixture of these tests: a fast node-lifecycle grace and restart back-off, and no pod
/// network until the test plays the node agent.
fn fixture(tag: &str) -> Fixture {
    Fixture::bare(
        tag,
        &["--node-monitor-grace-period", "40"],
        &["--backoff-base", "1"],
    )
}

fn condition(pod: &Value, ty: &str) -> String {
    pod["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == ty))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
        .to_owned()
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
    let f = fixture(&unique("kl"));
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
    let f = fixture(&unique("kp"));
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
    let mut f = fixture(&unique("ka"));
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
