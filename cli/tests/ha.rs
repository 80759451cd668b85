//! `ferry up --store etcd --servers 3` on the real kernel (privileged), driven with real kubectl
//! through the balanced loopback port: kill -9 of the leading ferry-server during a Deployment
//! rollout (a new leader once its Lease expires, the rollout completes, no duplicate pods, every
//! acknowledged write still readable), and kill -9 of one etcd member (the API keeps serving
//! reads and writes; the member restarted rejoins healthy).
//!
//! The two tests take turns (one lock): each runs three etcd members and three replicas, and the
//! timing bounds assume the machine is not running two such clusters at once.

mod common;

use common::*;
use ferry_tests::{privileged, RootSnapshot};
use serde_json::{json, Value};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// ferry-server's default leader election timings (`--leader-elect-lease-duration` and
/// `--leader-elect-retry-period`), which `ferry up` keeps.
const LEASE: Duration = Duration::from_secs(15);
const RETRY: Duration = Duration::from_secs(2);

fn up3(c: &Cluster) -> Kubectl {
    binaries(&["ferry-server", "ferry-kubelet", "ferry-agent", "ferry-cni"]);
    let out = c.up(&["--nodes", "2", "--store", "etcd", "--servers", "3"]);
    assert!(out.status.success(), "ferry up: {}", text(&out));
    Kubectl(c.dir().join("kubeconfig").to_string_lossy().into_owned())
}

/// The holder of the controllers' leader Lease (`host_pid_random`), if any.
fn holder(k: &Kubectl) -> Option<String> {
    let out = k.run(
        &[
            "get",
            "lease",
            "-n",
            "kube-system",
            "ferry-controller-manager",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
        None,
    );
    let h = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !h.is_empty()).then_some(h)
}

/// The replica (`apiserver-<k>`) whose pid the identity names.
fn replica_of(c: &Cluster, identity: &str) -> String {
    (1..=3)
        .map(|k| format!("apiserver-{k}"))
        .find(|n| identity.contains(&format!("_{}_", c.pid_of(n))))
        .unwrap_or_else(|| panic!("no replica has identity {identity}"))
}

fn items(list: &Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

fn deployment(version: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 6, "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"rollingUpdate": {"maxSurge": 2, "maxUnavailable": 1}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "web",
                    "image": "busybox", "command": ["/bin/sleep", "3600"],
                    "env": [{"name": "VERSION", "value": version}]}]}}}})
}

fn version(p: &Value) -> Option<String> {
    p["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == "VERSION")?["value"]
        .as_str()
        .map(str::to_owned)
}

fn ready(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
        && p["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// One line per pod: name, owner, version, node, phase, readiness, whether active, creation
/// and deletion times.
fn describe(ps: &[&Value]) -> String {
    ps.iter()
        .map(|p| {
            format!(
                "{} owner={} version={:?} node={} phase={} ready={} active={} created={} deleted={}\n",
                p["metadata"]["name"],
                p["metadata"]["ownerReferences"][0]["name"],
                version(p),
                p["spec"]["nodeName"],
                p["status"]["phase"],
                ready(p),
                active(p),
                p["metadata"]["creationTimestamp"],
                p["metadata"]["deletionTimestamp"],
            )
        })
        .collect()
}

/// The last 30 lines of the logs of the three replicas and both kubelets.
fn tails(c: &Cluster) -> String {
    [
        "apiserver-1",
        "apiserver-2",
        "apiserver-3",
        "node-1-kubelet",
        "node-2-kubelet",
    ]
    .iter()
    .map(|n| {
        let text = std::fs::read_to_string(c.dir().join("logs").join(format!("{n}.log")))
            .unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        format!(
            "--- {n}.log (last 30 lines)\n{}\n",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    })
    .collect()
}

/// Neither terminating nor finished.
fn active(p: &Value) -> bool {
    p["metadata"]["deletionTimestamp"].is_null()
        && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
}

/// Writes ConfigMaps `<tag>-<n>` one after another with kubectl until stopped; the names of
/// those kubectl reported created, and how many attempts failed.
/// Dropped without `stop` (a failed assertion), it stops all the same.
struct Writer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(Vec<String>, usize)>>,
}

impl Writer {
    fn start(k: &Kubectl, tag: &str) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let (k, tag, flag) = (Kubectl(k.0.clone()), tag.to_owned(), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let (mut acked, mut failed) = (Vec::new(), 0);
            let mut n = 0;
            while !flag.load(Ordering::Relaxed) {
                n += 1;
                let name = format!("{tag}-{n}");
                let out = k.run(
                    &[
                        "create",
                        "configmap",
                        &name,
                        "--from-literal",
                        &format!("n={n}"),
                    ],
                    None,
                );
                if out.status.success() {
                    acked.push(name);
                } else {
                    failed += 1;
                    eprintln!("write {name} failed: {}", text(&out));
                }
            }
            (acked, failed)
        });
        Writer {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> (Vec<String>, usize) {
        self.halt().unwrap_or_default()
    }

    fn halt(&mut self) -> Option<(Vec<String>, usize)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Follows the live pods of `app=web` through a watch (`kubectl get -w --output-watch-events`),
/// so every state the API went through counts, not only the sampled ones: the most live pods at
/// once and who they were. A watch through the killed replica ends; the next one starts from a
/// fresh list (forgetting what it had, so a pod deleted in the gap is not counted as live; while
/// a list is replayed the count sees a subset of one state, never more).
/// Dropped without `stop` (a failed assertion), it stops all the same.
struct LiveWatch {
    stop: Arc<AtomicBool>,
    child: Arc<Mutex<Option<std::process::Child>>>,
    thread: Option<std::thread::JoinHandle<(usize, String)>>,
}

impl LiveWatch {
    fn start(k: &Kubectl) -> LiveWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let child: Arc<Mutex<Option<std::process::Child>>> = Arc::default();
        let (kc, flag, slot) = (k.0.clone(), Arc::clone(&stop), Arc::clone(&child));
        let thread = std::thread::spawn(move || {
            let (mut most, mut crowd) = (0, String::new());
            while !flag.load(Ordering::Relaxed) {
                let spawned = std::process::Command::new("kubectl")
                    .args(["--kubeconfig", &kc, "get", "pods", "-l", "app=web", "-w"])
                    .args(["--output-watch-events", "-o", "json"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn();
                let Ok(mut ch) = spawned else {
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                };
                let out = ch.stdout.take().unwrap();
                *slot.lock().unwrap() = Some(ch);
                if flag.load(Ordering::Relaxed) {
                    if let Some(mut ch) = slot.lock().unwrap().take() {
                        let _ = ch.kill();
                        let _ = ch.wait();
                    }
                    break;
                }
                let mut pods: std::collections::BTreeMap<String, Value> = Default::default();
                for ev in serde_json::Deserializer::from_reader(out).into_iter::<Value>() {
                    let Ok(ev) = ev else { break };
                    let name = ev["object"]["metadata"]["name"].as_str().unwrap_or("");
                    match ev["type"].as_str() {
                        Some("ADDED" | "MODIFIED") => {
                            pods.insert(name.to_owned(), ev["object"].clone());
                        }
                        Some("DELETED") => {
                            pods.remove(name);
                        }
                        _ => continue,
                    }
                    let live: Vec<&Value> = pods.values().filter(|p| active(p)).collect();
                    if live.len() > most {
                        most = live.len();
                        crowd = describe(&live);
                    }
                }
                if let Some(mut ch) = slot.lock().unwrap().take() {
                    let _ = ch.kill();
                    let _ = ch.wait();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (most, crowd)
        });
        LiveWatch {
            stop,
            child,
            thread: Some(thread),
        }
    }

    /// The most live pods seen at once, and a description of them.
    fn stop(mut self) -> (usize, String) {
        self.halt().unwrap_or_default()
    }

    fn halt(&mut self) -> Option<(usize, String)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(ch) = self
            .child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            let _ = ch.kill();
        }
        self.thread.take().and_then(|t| t.join().ok())
    }
}

impl Drop for LiveWatch {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Every acknowledged ConfigMap is readable, with the value written.
fn assert_all_readable(k: &Kubectl, acked: &[String]) {
    let list = k.json(&["get", "configmaps"]);
    let have: std::collections::HashMap<String, String> = items(&list)
        .iter()
        .map(|cm| {
            (
                cm["metadata"]["name"].as_str().unwrap_or("").to_owned(),
                cm["data"]["n"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for name in acked {
        let n = name.rsplit('-').next().unwrap();
        assert_eq!(
            have.get(name).map(String::as_str),
            Some(n),
            "acknowledged write {name} lost"
        );
    }
}

fn status(c: &Cluster) -> (bool, String) {
    let out = c.ferry("status", &[]);
    (out.status.success(), text(&out))
}

/// Whether a line of `ferry status` starting with `first` (a component, replica or etcd member
/// name: it heads a row in more than one table) satisfies `f`.
fn row(status: &str, first: &str, f: impl Fn(&str) -> bool) -> bool {
    status
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with(&format!("{first} ")))
        .any(f)
}

#[test]
fn killing_the_leading_server_mid_rollout_loses_nothing() {
    if !privileged("ha_killing_the_leading_server_mid_rollout_loses_nothing") {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = RootSnapshot::take();
    let c = Cluster::new();
    let k = up3(&c);
    let (healthy, st) = status(&c);
    assert!(healthy, "{st}");
    for r in ["apiserver-1", "apiserver-2", "apiserver-3"] {
        assert!(row(&st, r, |l| l.contains(" ok ")), "{st}");
    }
    for m in ["etcd-1", "etcd-2", "etcd-3"] {
        assert!(row(&st, m, |l| l.ends_with(" healthy")), "{st}");
    }
    let first = holder(&k).expect("a leader once ferry up returns (nodes got podCIDRs)");
    let leader = replica_of(&c, &first);
    assert_eq!(
        st.lines()
            .filter(|l| l.trim_start().starts_with("apiserver-") && l.ends_with(" yes"))
            .map(|l| l.split_whitespace().next().unwrap().to_owned())
            .collect::<Vec<_>>(),
        std::slice::from_ref(&leader),
        "{st}"
    );
    // The kubernetes Service lists every replica: each replica's endpoint reconciler polls every
    // 2 s, so right after `ferry up` the slice may still hold only the first one (CI saw that).
    let eps = || -> Vec<String> {
        let slice = k.json(&["get", "endpointslice", "kubernetes"]);
        let mut eps: Vec<String> = slice["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["addresses"][0].as_str().unwrap().to_owned())
            .collect();
        eps.sort();
        eps
    };
    let all = ["10.99.0.3", "10.99.0.4", "10.99.0.5"];
    assert!(
        ferry_tests::wait_until(Duration::from_secs(10), || eps() == all),
        "{:?}",
        eps()
    );

    k.apply(&deployment("v1"));
    k.wait(
        &["get", "pods", "-l", "app=web"],
        60,
        "6 ready pods of v1",
        |l| {
            let p = items(l);
            p.len() == 6 && p.iter().all(ready)
        },
    );

    let writer = Writer::start(&k, "ack");
    let watch = LiveWatch::start(&k);
    k.apply(&deployment("v2"));
    k.wait(
        &["get", "pods", "-l", "app=web"],
        30,
        "the rollout to start",
        |l| items(l).iter().any(|p| version(p).as_deref() == Some("v2")),
    );
    let killed = Instant::now();
    kill9(c.pid_of(&leader));
    let new = loop {
        if let Some(h) = holder(&k).filter(|h| *h != first) {
            break h;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "no new leader 60 s after the kill"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = killed.elapsed();
    let successor = replica_of(&c, &new);
    assert_ne!(successor, leader);
    eprintln!("{successor} leads {took:?} after {leader} was killed");
    // The survivors take over once the Lease expires: they see the last renewal up to one
    // (jittered) retry period late and retry up to one period after expiry; the Lease write
    // (an etcd commit) and kubectl's polling add seconds on two loaded cores.
    let bound = LEASE + RETRY.mul_f64(2.0 * 1.2) + Duration::from_secs(5);
    assert!(took <= bound, "takeover took {took:?} (bound {bound:?})");
    assert!(
        took >= LEASE - 3 * RETRY,
        "takeover after {took:?}: the Lease ({LEASE:?}) was not respected"
    );

    // The new leader's controllers finish the rollout; never more than 6 + maxSurge pods.
    let (mut most, mut crowd) = (0, String::new());
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        // A transient failure of one kubectl call (an etcd timeout on a loaded machine) is
        // retried until the deadline.
        let (Some(pods), Some(d)) = (
            k.try_json(&["get", "pods", "-l", "app=web"]),
            k.try_json(&["get", "deployment", "web"]),
        ) else {
            assert!(Instant::now() < deadline, "kubectl kept failing");
            std::thread::sleep(Duration::from_millis(300));
            continue;
        };
        let ps = items(&pods);
        let live: Vec<&Value> = ps.iter().filter(|p| active(p)).collect();
        if live.len() > most {
            most = live.len();
            crowd = describe(&live);
        }
        let st = &d["status"];
        if ps.len() == 6
            && live.len() == 6
            && live
                .iter()
                .all(|p| ready(p) && version(p).as_deref() == Some("v2"))
            && st["updatedReplicas"] == 6
            && st["availableReplicas"] == 6
        {
            break;
        }
        if Instant::now() >= deadline {
            panic!(
                "the rollout did not complete: {st}, pods:\n{}{}",
                describe(&ps.iter().collect::<Vec<_>>()),
                tails(&c)
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let (watched, watched_crowd) = watch.stop();
    eprintln!("at most {most} live pods sampled, {watched} watched during the rollout");
    assert!(
        watched >= 6,
        "the watch saw {watched} live pods: it did not follow the rollout"
    );
    if watched > most {
        (most, crowd) = (watched, watched_crowd);
    }
    assert!(
        most <= 8,
        "{most} live pods at once (6 + maxSurge 2):\n{crowd}{}",
        tails(&c)
    );
    let (acked, failed) = writer.stop();
    eprintln!(
        "{} writes acknowledged, {failed} failed during the takeover",
        acked.len()
    );
    assert!(
        acked.len() >= 10,
        "only {} writes went through",
        acked.len()
    );
    assert_all_readable(&k, &acked);
    // Settled: no late duplicates, one old and one new ReplicaSet holding 6 replicas in all.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(items(&k.json(&["get", "pods", "-l", "app=web"])).len(), 6);
    let counts: Vec<i64> = items(&k.json(&["get", "replicasets", "-l", "app=web"]))
        .iter()
        .map(|r| r["spec"]["replicas"].as_i64().unwrap_or(0))
        .collect();
    assert_eq!(counts.iter().sum::<i64>(), 6, "ReplicaSets: {counts:?}");
    assert_eq!(counts.len(), 2, "one old, one new ReplicaSet: {counts:?}");

    // `ferry status` names the dead replica and the new leader.
    let (healthy, st) = status(&c);
    assert!(!healthy, "a dead replica is a problem:\n{st}");
    assert!(row(&st, &leader, |l| l.contains(" DEAD ")), "{st}");
    assert!(row(&st, &leader, |l| l.contains(" FAILED ")), "{st}");
    assert!(row(&st, &successor, |l| l.ends_with(" yes")), "{st}");

    let down = c.ferry("down", &[]);
    assert!(down.status.success(), "{}", text(&down));
    c.assert_gone();
    root.assert_unchanged();
}

#[test]
fn killing_one_etcd_member_keeps_the_api_serving() {
    if !privileged("ha_killing_one_etcd_member_keeps_the_api_serving") {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = RootSnapshot::take();
    let c = Cluster::new();
    let k = up3(&c);
    k.ok(&["create", "configmap", "before", "--from-literal", "n=0"]);

    // etcd-1 is the first endpoint every replica was given.
    let victim = "etcd-1";
    let pid = c.pid_of(victim);
    let cmdline: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let killed = Instant::now();
    kill9(pid);

    // Reads and writes through kubectl keep working: the first may wait for a new etcd leader
    // (and for a replica's client to leave the dead endpoint), then every one succeeds.
    let writer = Writer::start(&k, "after");
    let mut served = None;
    while killed.elapsed() < Duration::from_secs(30) {
        if k.run(&["get", "configmap", "before"], None)
            .status
            .success()
        {
            served = Some(killed.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let served = served.expect("no read served within 30 s of losing one etcd member");
    eprintln!("first read {served:?} after the kill");
    std::thread::sleep(Duration::from_secs(8));
    let (acked, failed) = writer.stop();
    eprintln!(
        "{} writes acknowledged, {failed} failed with {victim} dead",
        acked.len()
    );
    assert!(
        acked.len() >= 10,
        "only {} writes went through",
        acked.len()
    );
    // Settled: every write succeeds now.
    for i in 0..10 {
        k.ok(&[
            "create",
            "configmap",
            &format!("late-{i}"),
            "--from-literal",
            "n=1",
        ]);
    }
    assert_all_readable(&k, &acked);
    let nodes = k.json(&["get", "nodes"]);
    assert_eq!(items(&nodes).len(), 2);
    // Watches work too: the controllers, the scheduler and the kubelets see a new Deployment
    // through theirs and run its pods.
    k.apply(&deployment("v1"));
    k.wait(
        &["get", "pods", "-l", "app=web"],
        60,
        "6 ready pods with one etcd member dead",
        |l| {
            let p = items(l);
            p.len() == 6 && p.iter().all(ready)
        },
    );

    let (healthy, st) = status(&c);
    assert!(!healthy, "a dead member is a problem:\n{st}");
    assert!(row(&st, victim, |l| l.contains(" UNHEALTHY ")), "{st}");
    for m in ["etcd-2", "etcd-3"] {
        assert!(row(&st, m, |l| l.ends_with(" healthy")), "{st}");
    }
    for r in ["apiserver-1", "apiserver-2", "apiserver-3"] {
        assert!(row(&st, r, |l| l.contains(" ok ")), "{st}");
    }

    // The member started again with its own data dir rejoins, and everything is healthy.
    let cp = format!("{}-cp", c.name);
    let netns = std::fs::File::open(format!("/run/netns/{cp}")).unwrap();
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(c.cgroup().join(victim).join("cgroup.procs"))
        .unwrap();
    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(c.dir().join("logs").join(format!("{victim}.log")))
        .unwrap();
    let mut cmd = std::process::Command::new(&cmdline[0]);
    cmd.args(&cmdline[1..])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    ferry_sys::process::OnExec::new()
        .join_cgroup(&procs)
        .unwrap()
        .enter_netns(&netns)
        .unwrap()
        .new_session()
        .install(&mut cmd);
    // Not waited for: `ferry down` kills it with the rest of the cgroup.
    let restarted = cmd.spawn().unwrap();
    let back = ferry_tests::wait_until(Duration::from_secs(30), || {
        let (_, st) = status(&c);
        row(&st, victim, |l| l.ends_with(" healthy"))
    });
    assert!(back, "{victim} did not rejoin: {}", status(&c).1);
    assert_all_readable(&k, &acked);

    let down = c.ferry("down", &[]);
    assert!(down.status.success(), "{}", text(&down));
    drop(restarted);
    c.assert_gone();
    root.assert_unchanged();
}

/// `--servers` out of range, or above 1 without etcd: a clear error before anything is created
/// (no root needed to get it).
#[test]
fn bad_servers_flags_are_refused_up_front() {
    let c = Cluster::new();
    for (args, want) in [
        (&["--servers", "3"][..], "--servers 3 needs --store etcd"),
        (
            &["--servers", "3", "--store", "sqlite"][..],
            "needs --store etcd",
        ),
        (
            &["--servers", "0", "--store", "etcd"][..],
            "--servers must be between 1 and 5",
        ),
        (
            &["--servers", "6", "--store", "etcd"][..],
            "--servers must be between 1 and 5",
        ),
    ] {
        let out = c.up(args);
        assert!(!out.status.success(), "{args:?} accepted: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: no {want:?} in {err}");
        assert!(!c.dir().exists(), "{args:?} created {}", c.dir().display());
        assert!(c.namespaces().is_empty(), "{args:?} created namespaces");
    }
}
