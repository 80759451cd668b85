//! Leader election with two `ferry-server` replicas on one real etcd: exactly one holds the
//! `kube-system/ferry-controller-manager` Lease and only it runs the scheduler and controllers
//! (Deployments get exactly their replicas, never duplicates); when the leader is killed with
//! SIGKILL mid-rollout, the other takes over within the lease duration (plus the retry periods it
//! needs to see the last renewal and to try again) and finishes the rollout without duplicates.
//!
//! There is no kubelet: the test marks pods Ready through `pods/status` and force-deletes pods
//! marked for deletion, as in `deployments.rs`.

mod common;

use common::{free_port, Server};
use ferry_tests::ChildGuard;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn etcd(dir: &std::path::Path) -> (ChildGuard, String) {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let bin = ["/usr/bin/etcd", "/usr/local/bin/etcd"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(bin) = bin else {
        assert!(
            !ci,
            "etcd is not installed (scripts/setup.sh installs etcd-server) and CI=true forbids skipping"
        );
        panic!("etcd is not installed: run scripts/setup.sh");
    };
    let (client, peer) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new(bin)
        .args(["--name", "ferry-test", "--data-dir"])
        .arg(dir.join("etcd"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args(["--initial-cluster", &format!("ferry-test={peer_url}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let up = ferry_tests::wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", client)).is_ok()
    });
    assert!(up, "etcd did not start");
    (ChildGuard(child), url)
}

/// Two replicas on one etcd with `extra` flags; B shares A's tokens and CA (replicas behind one
/// address).
fn replicas(url: &str, prefix: &str, extra: &[&str]) -> (Server, Server) {
    let mut args = vec![
        "--store",
        "etcd",
        "--etcd-endpoints",
        url,
        "--etcd-prefix",
        prefix,
    ];
    args.extend_from_slice(extra);
    let a = Server::start_with(&args);
    let b_dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        a.dir.path().join("tokens.json"),
        b_dir.path().join("tokens.json"),
    )
    .unwrap();
    std::fs::create_dir_all(b_dir.path().join("pki")).unwrap();
    for f in ["ca.crt", "ca.key"] {
        std::fs::copy(
            a.dir.path().join("pki").join(f),
            b_dir.path().join("pki").join(f),
        )
        .unwrap();
    }
    let mut b = Server {
        child: None,
        dir: b_dir,
        port: free_port(),
        extra: a.extra.clone(),
    };
    b.spawn();
    (a, b)
}

fn pid(s: &Server) -> u32 {
    s.child.as_ref().unwrap().0.id()
}

/// The holder of the controllers' Lease, once there is one.
async fn holder(c: &kube::Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(c.clone(), "kube-system");
    leases
        .get_opt("ferry-controller-manager")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
        .filter(|h| !h.is_empty())
}

/// Which of `servers` an identity (`host_pid_random`) belongs to.
fn which<'a>(servers: &[&'a Server], identity: &str) -> &'a Server {
    servers
        .iter()
        .find(|s| identity.contains(&format!("_{}_", pid(s))))
        .unwrap_or_else(|| panic!("no replica has identity {identity}"))
}

async fn until<F: std::future::Future<Output = bool>>(
    secs: u64,
    what: &str,
    mut f: impl FnMut() -> F,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn ready_nodes(c: &kube::Client) {
    let nodes: Api<Node> = Api::all(c.clone());
    for n in ["n1", "n2", "n3"] {
        let node: Node = serde_json::from_value(serde_json::json!({"metadata": {"name": n},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                "allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"}}}))
        .unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
    }
}

fn deployment(name: &str, replicas: u32, image: &str) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": 2, "maxUnavailable": 1}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "main", "image": image}]}}
        }
    }))
    .unwrap()
}

fn active(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn bound(p: &Pod) -> bool {
    p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
}

fn image(p: &Pod) -> Option<String> {
    p.spec.as_ref()?.containers.first()?.image.clone()
}

async fn pods_of(pods: &Api<Pod>, app: &str) -> Vec<Pod> {
    pods.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
}

/// The kubelet's part: bound pods become Ready, pods marked for deletion go.
async fn kubelet(pods: &Api<Pod>) {
    let Ok(list) = pods.list(&ListParams::default()).await else {
        return;
    };
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    for (i, p) in list.items.iter().enumerate() {
        if !active(p) {
            let _ = pods
                .delete(
                    &p.name_any(),
                    &DeleteParams {
                        grace_period_seconds: Some(0),
                        ..DeleteParams::default()
                    },
                )
                .await;
        } else if bound(p) && !ready(p) {
            let status = serde_json::json!({"status": {"phase": "Running",
                "podIP": format!("10.244.{}.{}", i / 250, i % 250 + 2),
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now},
                               {"type": "ContainersReady", "status": "True", "lastTransitionTime": now}]}});
            let _ = pods
                .patch_status(
                    &p.name_any(),
                    &PatchParams::default(),
                    &Patch::Strategic(status),
                )
                .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_only_it_reconciles() {
    let dir = tempfile::tempdir().unwrap();
    let (_etcd, url) = etcd(dir.path());
    let prefix = format!("/ferry-le-{}", std::process::id());
    let (a, b) = replicas(&url, &prefix, &[]);
    let (ca, cb) = (a.client().await, b.client().await);

    until(20, "a leader", || async { holder(&ca).await.is_some() }).await;
    let id = holder(&ca).await.unwrap();
    let leader = which(&[&a, &b], &id);
    let follower = if std::ptr::eq(leader, &a) { &b } else { &a };

    // Many Deployments, created through both replicas at once: two sets of controllers would
    // race each other into duplicate pods.
    ready_nodes(&ca).await;
    for i in 0..6 {
        let c = if i % 2 == 0 { &ca } else { &cb };
        let d: Api<Deployment> = Api::namespaced(c.clone(), "default");
        d.create(
            &PostParams::default(),
            &deployment(&format!("d{i}"), 5, "x:1"),
        )
        .await
        .unwrap();
    }
    let pods: Api<Pod> = Api::namespaced(ca.clone(), "default");
    until(30, "5 pods for each Deployment", || async {
        let mut ok = true;
        for i in 0..6 {
            ok &= pods_of(&pods, &format!("d{i}")).await.len() == 5;
        }
        ok
    })
    .await;
    // And it stays so: no late duplicates, one ReplicaSet each, all pods scheduled once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss: Api<ReplicaSet> = Api::namespaced(ca.clone(), "default");
    assert_eq!(
        rss.list(&ListParams::default()).await.unwrap().items.len(),
        6
    );
    for i in 0..6 {
        let ps = pods_of(&pods, &format!("d{i}")).await;
        assert_eq!(
            ps.len(),
            5,
            "d{i}: {:?}",
            ps.iter().map(ResourceExt::name_any).collect::<Vec<_>>()
        );
        assert!(ps.iter().all(bound), "d{i}: every pod scheduled");
    }
    // The Lease never moved, and only the leader ever led.
    assert_eq!(holder(&cb).await.as_deref(), Some(id.as_str()));
    assert!(leader.log().contains("became leader"), "{}", leader.log());
    assert!(
        !follower.log().contains("became leader"),
        "the follower led too:\n{}",
        follower.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_and_the_rollout_completes() {
    // Short timings keep the test fast; the ratios are the defaults' (15/10/2 s).
    const LEASE: Duration = Duration::from_secs(6);
    const RETRY: Duration = Duration::from_secs(1);
    let dir = tempfile::tempdir().unwrap();
    let (_etcd, url) = etcd(dir.path());
    let prefix = format!("/ferry-le-kill-{}", std::process::id());
    let (mut a, mut b) = replicas(
        &url,
        &prefix,
        &[
            "--leader-elect-lease-duration",
            "6s",
            "--leader-elect-renew-deadline",
            "4s",
            "--leader-elect-retry-period",
            "1s",
        ],
    );
    let (ca, cb) = (a.client().await, b.client().await);
    until(20, "a leader", || async { holder(&ca).await.is_some() }).await;
    let first = holder(&ca).await.unwrap();
    let a_leads = std::ptr::eq(which(&[&a, &b], &first), &a);
    let survivor = if a_leads { cb.clone() } else { ca.clone() };

    ready_nodes(&ca).await;
    let deps: Api<Deployment> = Api::namespaced(survivor.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(survivor.clone(), "default");
    deps.create(&PostParams::default(), &deployment("web", 6, "web:1"))
        .await
        .unwrap();
    until(30, "6 ready pods of web:1", || async {
        kubelet(&pods).await;
        let ps = pods_of(&pods, "web").await;
        ps.len() == 6 && ps.iter().all(ready)
    })
    .await;

    // Roll out web:2; once it is under way, kill -9 the leader.
    deps.patch(
        "web",
        &PatchParams::default(),
        &Patch::Strategic(serde_json::json!({"spec": {"template": {"spec": {
            "containers": [{"name": "main", "image": "web:2"}]}}}})),
    )
    .await
    .unwrap();
    until(20, "the rollout to start", || async {
        pods_of(&pods, "web")
            .await
            .iter()
            .any(|p| image(p).as_deref() == Some("web:2"))
    })
    .await;
    let killed = Instant::now();
    if a_leads {
        a.kill();
    } else {
        b.kill();
    }
    // Nothing moves until the other replica leads (no kubelet meanwhile either: the rollout
    // must be finished by the new leader's controllers).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if holder(&survivor).await.is_some_and(|h| h != first) {
            break;
        }
        assert!(Instant::now() < deadline, "no new leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = killed.elapsed();
    // The candidate sees the last renewal up to one (jittered) retry period late, and tries
    // again up to one retry period after the lease expires; 1 s of slack for the test itself.
    let bound = LEASE + RETRY.mul_f64(2.0 * 1.2) + Duration::from_secs(1);
    assert!(took <= bound, "takeover took {took:?} (bound {bound:?})");
    // Not before the lease expired: the dead leader's last committed renewal started at most
    // two retry periods before the kill (the attempt after it may have been in flight), the
    // survivor waits a full lease duration after seeing it; one more retry period of slack.
    assert!(
        took >= LEASE - 3 * RETRY,
        "takeover after {took:?}: the lease ({LEASE:?}) was not respected"
    );
    eprintln!("new leader {took:?} after the kill");
    let survivor_server = if a_leads { &b } else { &a };
    assert!(
        survivor_server.log().contains("became leader"),
        "{}",
        survivor_server.log()
    );

    // The new leader finishes the rollout; never more than replicas + maxSurge pods.
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        kubelet(&pods).await;
        let ps = pods_of(&pods, "web").await;
        let live: Vec<&Pod> = ps.iter().filter(|p| active(p)).collect();
        most = most.max(live.len());
        let st = deps.get("web").await.unwrap().status.unwrap_or_default();
        if live.len() == 6
            && ps.len() == 6
            && live
                .iter()
                .all(|p| ready(p) && image(p).as_deref() == Some("web:2"))
            && st.updated_replicas == Some(6)
            && st.available_replicas == Some(6)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rollout did not complete: {st:?}, pods {:?}",
            ps.iter()
                .map(|p| (p.name_any(), image(p), ready(p), active(p)))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(most <= 8, "{most} live pods at once (6 + maxSurge 2)");
    // Settled: no late duplicates.
    tokio::time::sleep(Duration::from_secs(2)).await;
    kubelet(&pods).await;
    assert_eq!(pods_of(&pods, "web").await.len(), 6);
    let rss: Api<ReplicaSet> = Api::namespaced(survivor.clone(), "default");
    let counts: Vec<i32> = rss
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|r| r.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0))
        .collect();
    assert_eq!(counts.iter().sum::<i32>(), 6, "ReplicaSets: {counts:?}");
    assert_eq!(counts.len(), 2, "one old, one new ReplicaSet: {counts:?}");
    drop((a, b));
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_stops_releases_the_lease() {
    // Default timings: without the release the other replica would wait 15 s.
    let dir = tempfile::tempdir().unwrap();
    let (_etcd, url) = etcd(dir.path());
    let prefix = format!("/ferry-le-release-{}", std::process::id());
    let (a, b) = replicas(&url, &prefix, &[]);
    let (ca, cb) = (a.client().await, b.client().await);
    until(20, "a leader", || async { holder(&ca).await.is_some() }).await;
    let first = holder(&ca).await.unwrap();
    let leader = which(&[&a, &b], &first);
    let (survivor, other) = if std::ptr::eq(leader, &a) {
        (cb, &b)
    } else {
        (ca, &a)
    };
    let stopped = Instant::now();
    signal(pid(leader), "TERM");
    let deadline = stopped + Duration::from_secs(15);
    loop {
        if holder(&survivor).await.is_some_and(|h| h != first) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new leader:\nold:\n{}\nsurvivor:\n{}",
            leader.log(),
            other.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = stopped.elapsed();
    // One (jittered) retry period of 2 s to see the release, one more in case the read raced it.
    assert!(
        took < Duration::from_secs(6),
        "takeover after {took:?}: the lease was not released\n{}",
        leader.log()
    );
    assert!(leader.log().contains("released"), "{}", leader.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_stops_its_controllers_by_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (etcd_proc, url) = etcd(dir.path());
    let prefix = format!("/ferry-le-deadline-{}", std::process::id());
    let a = Server::start_with(&[
        "--store",
        "etcd",
        "--etcd-endpoints",
        &url,
        "--etcd-prefix",
        &prefix,
        "--leader-elect-lease-duration",
        "6s",
        "--leader-elect-renew-deadline",
        "4s",
        "--leader-elect-retry-period",
        "1s",
    ]);
    let ca = a.client().await;
    until(20, "a leader", || async { holder(&ca).await.is_some() }).await;
    // etcd stops answering: no renewal can succeed.
    let etcd_pid = etcd_proc.0.id();
    signal(etcd_pid, "STOP");
    let frozen = Instant::now();
    let stopped = ferry_tests::wait_until(Duration::from_secs(10), || {
        a.log().contains("stopped the controllers")
    });
    let took = frozen.elapsed();
    signal(etcd_pid, "CONT");
    assert!(stopped, "the leader kept acting:\n{}", a.log());
    // The last successful renewal started at most two retry periods (1 s) before the freeze
    // (one more when an attempt was in flight at the freeze); the deadline (4 s) runs from
    // there; 1 s of slack for the log line to show.
    assert!(
        took >= Duration::from_secs(2) && took <= Duration::from_secs(5),
        "stopped {took:?} after the freeze (renew deadline 4 s)\n{}",
        a.log()
    );
    // etcd is back: the same replica leads again (the Lease still names it) and runs them anew.
    let again = ferry_tests::wait_until(Duration::from_secs(20), || {
        a.log().matches("became leader").count() == 2
    });
    assert!(again, "{}", a.log());
}
