//! Deployments, ReplicaSets and the garbage collector against a real `ferry-server`, driven by
//! the real kubectl: a Deployment gets one ReplicaSet and its pods (scheduled over Ready nodes),
//! `kubectl rollout status` follows it, `kubectl scale` scales it, an image change rolls out a new
//! ReplicaSet within maxSurge/maxUnavailable, and deleting it cascades in the background, in the
//! foreground or not at all (orphan).
//!
//! There is no kubelet: the test marks pods Running/Ready through `pods/status` and, playing the
//! kubelet's part in graceful deletion, force-deletes pods once they are marked for deletion.

mod common;

use common::Server;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

async fn client(s: &Server) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(s.kubeconfig()).unwrap();
    kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap(),
    )
    .unwrap()
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

fn deployment(name: &str, replicas: u32, image: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: 2, maxUnavailable: 1}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: main
        image: {image}
"#
    )
}

async fn pods_of(pods: &Api<Pod>, app: &str) -> Vec<Pod> {
    pods.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
}

fn active(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
}

fn ready(p: &Pod) -> bool {
    active(p)
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn bound(p: &Pod) -> bool {
    p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
}

/// What a kubelet would report once the pod's containers run and pass readiness.
async fn mark_ready(pods: &Api<Pod>, p: &Pod, ip: u32) {
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let status = serde_json::json!({"status": {"phase": "Running",
        "podIP": format!("10.244.{}.{}", ip / 250, ip % 250 + 2),
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now},
                       {"type": "ContainersReady", "status": "True", "lastTransitionTime": now}]}});
    pods.patch_status(
        &p.name_any(),
        &PatchParams::default(),
        &Patch::Strategic(status),
    )
    .await
    .unwrap();
}

/// The kubelet's part of graceful deletion: pods marked for deletion go away.
async fn kubelet_reap(pods: &Api<Pod>) {
    for p in pods.list(&ListParams::default()).await.unwrap().items {
        if p.metadata.deletion_timestamp.is_some() {
            let _ = pods
                .delete(
                    &p.name_any(),
                    &DeleteParams {
                        grace_period_seconds: Some(0),
                        ..DeleteParams::default()
                    },
                )
                .await;
        }
    }
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

fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn owned_by(rs: &ReplicaSet, d: &str) -> bool {
    rs.owner_references()
        .iter()
        .any(|o| o.kind == "Deployment" && o.name == d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_scale_and_rolling_update() {
    let s = Server::start();
    let c = client(&s).await;
    ready_nodes(&c).await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let rss: Api<ReplicaSet> = Api::namespaced(c.clone(), "default");
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");

    s.ok_stdin(
        &["apply", "-f", "-"],
        &deployment("web", 6, "example/web:1"),
    );
    // One ReplicaSet, six pods, all scheduled, spread over the three nodes.
    until(30, "6 bound pods", || async {
        let ps = pods_of(&pods, "web").await;
        ps.len() == 6 && ps.iter().all(bound)
    })
    .await;
    let rs_list = rss.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(rs_list.len(), 1);
    let rs1 = &rs_list[0];
    assert!(owned_by(rs1, "web"));
    let hash = rs1.labels()["pod-template-hash"].clone();
    assert_eq!(rs1.name_any(), format!("web-{hash}"));
    assert_eq!(rs1.annotations()["deployment.kubernetes.io/revision"], "1");
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for p in pods_of(&pods, "web").await {
        let o = &p.owner_references()[0];
        assert_eq!(
            (o.name.as_str(), o.controller, o.block_owner_deletion),
            (rs1.name_any().as_str(), Some(true), Some(true))
        );
        assert_eq!(p.labels()["pod-template-hash"], hash);
        assert!(p.name_any().starts_with(&format!("web-{hash}-")));
        *per_node
            .entry(p.spec.unwrap().node_name.unwrap())
            .or_default() += 1;
    }
    assert_eq!(per_node.values().copied().collect::<Vec<_>>(), [2, 2, 2]);

    // Not ready yet: rollout status does not complete.
    let out = s.kubectl(&["rollout", "status", "deployment/web", "--timeout=2s"]);
    assert!(!out.status.success(), "rollout complete without ready pods");
    for (i, p) in pods_of(&pods, "web").await.iter().enumerate() {
        mark_ready(&pods, p, u32::try_from(i).unwrap()).await;
    }
    let out = s.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let d: serde_json::Value =
        serde_json::from_str(&s.ok(&["get", "deploy", "web", "-o", "json"])).unwrap();
    let st = &d["status"];
    assert_eq!(
        (
            &st["replicas"],
            &st["updatedReplicas"],
            &st["readyReplicas"],
            &st["availableReplicas"]
        ),
        (&6.into(), &6.into(), &6.into(), &6.into()),
        "{st}"
    );
    assert_eq!(st["observedGeneration"], d["metadata"]["generation"]);
    let progressing = st["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .unwrap();
    assert_eq!(progressing["reason"], "NewReplicaSetAvailable");
    let rs_status = rss.get(&rs1.name_any()).await.unwrap().status.unwrap();
    assert_eq!(
        (
            rs_status.replicas,
            rs_status.ready_replicas,
            rs_status.available_replicas,
            rs_status.fully_labeled_replicas
        ),
        (6, Some(6), Some(6), Some(6))
    );

    // kubectl scale down: four pods go (marked for deletion; we play the kubelet).
    s.ok(&["scale", "deployment/web", "--replicas=2"]);
    until(30, "2 pods after scale down", || async {
        kubelet_reap(&pods).await;
        pods_of(&pods, "web").await.len() == 2
    })
    .await;
    until(30, "status of 2 replicas", || async {
        let d = deps.get("web").await.unwrap();
        let st = d.status.unwrap();
        st.replicas == Some(2) && st.available_replicas == Some(2)
    })
    .await;
    // And back up to 6.
    s.ok(&["scale", "deployment/web", "--replicas=6"]);
    until(30, "6 bound pods after scale up", || async {
        let ps = pods_of(&pods, "web").await;
        ps.len() == 6 && ps.iter().all(bound)
    })
    .await;
    for (i, p) in pods_of(&pods, "web").await.iter().enumerate() {
        if !ready(p) {
            mark_ready(&pods, p, 20 + u32::try_from(i).unwrap()).await;
        }
    }
    s.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);

    // Image change: a new ReplicaSet; never fewer than 6 - maxUnavailable(1) available pods and
    // never more than 6 + maxSurge(2) pods, while we make new pods ready one at a time.
    s.ok(&["set", "image", "deployment/web", "main=example/web:2"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut ip = 100;
    let mut min_available = usize::MAX;
    let mut saw_both = false;
    loop {
        assert!(Instant::now() < deadline, "rolling update did not finish");
        kubelet_reap(&pods).await;
        let ps = pods_of(&pods, "web").await;
        let live: Vec<&Pod> = ps.iter().filter(|p| active(p)).collect();
        let available = live.iter().filter(|p| ready(p)).count();
        min_available = min_available.min(available);
        let image = |p: &Pod| p.spec.as_ref().unwrap().containers[0].image.clone();
        saw_both |= live
            .iter()
            .any(|p| image(p).as_deref() == Some("example/web:1"))
            && live
                .iter()
                .any(|p| image(p).as_deref() == Some("example/web:2"));
        assert!(available >= 5, "only {available} available pods");
        assert!(
            live.len() <= 8,
            "{} pods exceed replicas + maxSurge",
            live.len()
        );
        let d = deps.get("web").await.unwrap();
        let st = d.status.clone().unwrap_or_default();
        let done = d.metadata.generation == st.observed_generation
            && st.updated_replicas == Some(6)
            && st.replicas == Some(6)
            && st.available_replicas == Some(6);
        if done {
            break;
        }
        if let Some(p) = live
            .iter()
            .find(|p| bound(p) && !ready(p) && image(p).as_deref() == Some("example/web:2"))
        {
            mark_ready(&pods, p, ip).await;
            ip += 1;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(min_available >= 5);
    assert!(
        saw_both,
        "old and new pods served side by side during the rollout"
    );
    let out = s.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let rs_list = rss.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(rs_list.len(), 2);
    let old = rs_list
        .iter()
        .find(|r| r.name_any() == rs1.name_any())
        .unwrap();
    let new = rs_list
        .iter()
        .find(|r| r.name_any() != rs1.name_any())
        .unwrap();
    assert_eq!(rs_replicas(old), 0);
    assert_eq!(rs_replicas(new), 6);
    assert_eq!(new.annotations()["deployment.kubernetes.io/revision"], "2");
    assert_eq!(
        deps.get("web").await.unwrap().annotations()["deployment.kubernetes.io/revision"],
        "2"
    );
    for p in pods_of(&pods, "web").await {
        assert_eq!(
            p.spec.unwrap().containers[0].image.as_deref(),
            Some("example/web:2")
        );
    }

    // Rollback: the first ReplicaSet becomes the new one again, as revision 3.
    s.ok(&["rollout", "undo", "deployment/web"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "rollback did not finish");
        kubelet_reap(&pods).await;
        let ps = pods_of(&pods, "web").await;
        let live: Vec<&Pod> = ps.iter().filter(|p| active(p)).collect();
        assert!(live.iter().filter(|p| ready(p)).count() >= 5);
        let d = deps.get("web").await.unwrap();
        let st = d.status.clone().unwrap_or_default();
        if d.metadata.generation == st.observed_generation
            && st.updated_replicas == Some(6)
            && st.replicas == Some(6)
            && st.available_replicas == Some(6)
        {
            break;
        }
        if let Some(p) = live.iter().find(|p| bound(p) && !ready(p)) {
            mark_ready(&pods, p, ip).await;
            ip += 1;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    s.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let back = rss.get(&rs1.name_any()).await.unwrap();
    assert_eq!(rs_replicas(&back), 6);
    assert_eq!(back.annotations()["deployment.kubernetes.io/revision"], "3");
    assert_eq!(
        deps.get("web").await.unwrap().annotations()["deployment.kubernetes.io/revision"],
        "3"
    );
    let history = s.ok(&["rollout", "history", "deployment/web"]);
    assert!(history.contains('2') && history.contains('3'), "{history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_cascades_background_orphan_foreground() {
    let s = Server::start();
    let c = client(&s).await;
    ready_nodes(&c).await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let rss: Api<ReplicaSet> = Api::namespaced(c.clone(), "default");
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
    for app in ["bg", "orphan", "fg"] {
        s.ok_stdin(&["apply", "-f", "-"], &deployment(app, 2, "example/x:1"));
    }
    for app in ["bg", "orphan", "fg"] {
        until(30, "2 pods", || async {
            pods_of(&pods, app).await.len() == 2
        })
        .await;
    }
    let rs_of = |app: &'static str| {
        let rss = rss.clone();
        async move {
            rss.list(&ListParams::default().labels(&format!("app={app}")))
                .await
                .unwrap()
                .items
        }
    };

    // Background (kubectl's default): the Deployment goes now, then its ReplicaSet and pods.
    s.ok(&["delete", "deployment", "bg"]);
    until(30, "bg ReplicaSet and pods gone", || async {
        kubelet_reap(&pods).await;
        rs_of("bg").await.is_empty() && pods_of(&pods, "bg").await.is_empty()
    })
    .await;

    // Orphan: the ReplicaSet stays, without ownerReferences; orphaning the ReplicaSet leaves the
    // pods without ownerReferences, and nobody deletes them.
    s.ok(&[
        "delete",
        "deployment",
        "orphan",
        "--cascade=orphan",
        "--timeout=30s",
    ]);
    assert!(deps.get_opt("orphan").await.unwrap().is_none());
    let rs = rs_of("orphan").await;
    assert_eq!(rs.len(), 1);
    assert!(rs[0].owner_references().is_empty(), "{:?}", rs[0].metadata);
    s.ok(&[
        "delete",
        "rs",
        &rs[0].name_any(),
        "--cascade=orphan",
        "--timeout=30s",
    ]);
    assert!(rs_of("orphan").await.is_empty());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let left = pods_of(&pods, "orphan").await;
    assert_eq!(left.len(), 2);
    for p in &left {
        assert!(
            active(p) && p.owner_references().is_empty(),
            "{:?}",
            p.metadata
        );
    }

    // Foreground: the Deployment stays (deletionTimestamp, finalizer) while its pods exist.
    s.ok(&[
        "delete",
        "deployment",
        "fg",
        "--cascade=foreground",
        "--wait=false",
    ]);
    until(30, "fg pods marked for deletion", || async {
        pods_of(&pods, "fg").await.iter().all(|p| !active(p))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let d = deps.get("fg").await.unwrap();
    assert!(d.metadata.deletion_timestamp.is_some());
    assert!(d.finalizers().iter().any(|f| f == "foregroundDeletion"));
    let rs = rs_of("fg").await;
    assert_eq!(rs.len(), 1);
    assert!(rs[0].metadata.deletion_timestamp.is_some());
    until(30, "fg Deployment, ReplicaSet and pods gone", || async {
        kubelet_reap(&pods).await;
        deps.get_opt("fg").await.unwrap().is_none()
            && rs_of("fg").await.is_empty()
            && pods_of(&pods, "fg").await.is_empty()
    })
    .await;
    // Orphaned pods were left alone throughout.
    assert_eq!(pods_of(&pods, "orphan").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_history_limit_and_bad_policy() {
    let s = Server::start();
    let c = client(&s).await;
    ready_nodes(&c).await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let rss: Api<ReplicaSet> = Api::namespaced(c.clone(), "default");
    let manifest = deployment("rc", 2, "example/rc:1").replace(
        "    type: RollingUpdate\n    rollingUpdate: {maxSurge: 2, maxUnavailable: 1}\n",
        "    type: Recreate\n  revisionHistoryLimit: 1\n",
    );
    assert!(manifest.contains("Recreate"));
    s.ok_stdin(&["apply", "-f", "-"], &manifest);
    let image = |p: &Pod| {
        p.spec.as_ref().unwrap().containers[0]
            .image
            .clone()
            .unwrap()
    };
    for (rev, img) in [
        (1, "example/rc:1"),
        (2, "example/rc:2"),
        (3, "example/rc:3"),
    ] {
        if rev > 1 {
            s.ok(&["set", "image", "deployment/rc", &format!("main={img}")]);
            // Recreate: the old pods are marked for deletion before any new pod exists.
            until(30, "old pods marked for deletion", || async {
                let ps = pods_of(&pods, "rc").await;
                !ps.is_empty() && ps.iter().all(|p| !active(p))
            })
            .await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            assert!(
                pods_of(&pods, "rc").await.iter().all(|p| image(p) != img),
                "new pods while old ones still run"
            );
            kubelet_reap(&pods).await;
        }
        until(30, "2 new bound pods", || async {
            let ps = pods_of(&pods, "rc").await;
            ps.len() == 2 && ps.iter().all(|p| bound(p) && image(p) == img)
        })
        .await;
        for (i, p) in pods_of(&pods, "rc").await.iter().enumerate() {
            mark_ready(&pods, p, rev * 10 + u32::try_from(i).unwrap()).await;
        }
        s.ok(&["rollout", "status", "deployment/rc", "--timeout=60s"]);
    }
    // revisionHistoryLimit 1: revisions 3 (current) and 2 remain.
    until(30, "revision 1 cleaned up", || async {
        let mut revs: Vec<String> = rss
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|r| r.annotations()["deployment.kubernetes.io/revision"].clone())
            .collect();
        revs.sort();
        revs == ["2", "3"]
    })
    .await;

    // An unknown propagationPolicy is a 400 and deletes nothing.
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(c.clone(), "default");
    let cm: k8s_openapi::api::core::v1::ConfigMap =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "cm"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let req = http::Request::delete(
        "/api/v1/namespaces/default/configmaps/cm?propagationPolicy=Sideways",
    )
    .body(Vec::new())
    .unwrap();
    match c.request_text(req).await {
        Err(kube::Error::Api(st)) => assert_eq!(st.code, 400, "{st:?}"),
        other => panic!("expected a 400, got {other:?}"),
    }
    s.ok(&["get", "configmap", "cm"]);
    // The query parameter works as the body field does: Orphan on an object without dependents
    // completes once the garbage collector has removed the finalizer.
    let req =
        http::Request::delete("/api/v1/namespaces/default/configmaps/cm?propagationPolicy=Orphan")
            .body(Vec::new())
            .unwrap();
    let body = c.request_text(req).await.unwrap();
    assert!(body.contains("\"orphan\""), "{body}");
    until(30, "orphan-deleted ConfigMap gone", || async {
        cms.get_opt("cm").await.unwrap().is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_mid_rollout_is_proportional() {
    let s = Server::start();
    let c = client(&s).await;
    ready_nodes(&c).await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let rss: Api<ReplicaSet> = Api::namespaced(c.clone(), "default");
    s.ok_stdin(
        &["apply", "-f", "-"],
        &deployment("mid", 4, "example/mid:1"),
    );
    until(30, "4 bound pods", || async {
        let ps = pods_of(&pods, "mid").await;
        ps.len() == 4 && ps.iter().all(bound)
    })
    .await;
    for (i, p) in pods_of(&pods, "mid").await.iter().enumerate() {
        mark_ready(&pods, p, u32::try_from(i).unwrap()).await;
    }
    s.ok(&["rollout", "status", "deployment/mid", "--timeout=60s"]);
    // New pods never become ready: the rollout stops at old 3 + new 3 (4 + maxSurge 2).
    s.ok(&["set", "image", "deployment/mid", "main=example/mid:2"]);
    let sizes = || async {
        let mut v: Vec<(String, i32)> = rss
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|r| {
                (
                    r.annotations()["deployment.kubernetes.io/revision"].clone(),
                    rs_replicas(r),
                )
            })
            .collect();
        v.sort();
        v
    };
    until(30, "rollout stalled at 3 + 3", || async {
        kubelet_reap(&pods).await;
        sizes().await == [("1".to_owned(), 3), ("2".to_owned(), 3)]
    })
    .await;
    // Scaling to 8 spreads 8 + maxSurge 2 over both ReplicaSets in proportion.
    s.ok(&["scale", "deployment/mid", "--replicas=8"]);
    until(30, "proportional scale-up to 5 + 5", || async {
        sizes().await == [("1".to_owned(), 5), ("2".to_owned(), 5)]
    })
    .await;
    // Once new pods become ready the rollout completes at 8.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ip = 50;
    loop {
        assert!(
            Instant::now() < deadline,
            "rollout after scaling did not finish"
        );
        kubelet_reap(&pods).await;
        if sizes().await == [("1".to_owned(), 0), ("2".to_owned(), 8)]
            && pods_of(&pods, "mid").await.iter().all(ready)
            && pods_of(&pods, "mid").await.len() == 8
        {
            break;
        }
        for p in pods_of(&pods, "mid").await {
            if bound(&p) && active(&p) && !ready(&p) {
                mark_ready(&pods, &p, ip).await;
                ip += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    s.ok(&["rollout", "status", "deployment/mid", "--timeout=60s"]);
}
