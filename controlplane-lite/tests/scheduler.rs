//! The in-process scheduler and node IPAM against a real `ferry-server`: pods bind to ready,
//! fitting nodes, siblings spread, selectors and taints are honoured, a pod that fits nowhere is
//! reported Unschedulable and binds once a node that fits appears; nodes get distinct podCIDRs.

mod common;

use common::Server;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use std::collections::BTreeMap;
use std::time::Duration;

fn node(name: &str, cpu: &str, extra: serde_json::Value) -> Node {
    let mut n = serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}], "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"}}});
    json_patch::merge(&mut n, &extra);
    serde_json::from_value(n).unwrap()
}

fn pod(name: &str, extra: serde_json::Value) -> Pod {
    let mut p = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}});
    json_patch::merge(&mut p, &extra);
    serde_json::from_value(p).unwrap()
}

async fn eventually<F: std::future::Future<Output = bool>>(
    secs: u64,
    mut f: impl FnMut() -> F,
) -> bool {
    for _ in 0..secs * 20 {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_spreads_filters_and_retries() {
    let s = Server::start();
    let c = s.client().await;
    let nodes: Api<Node> = Api::all(c.clone());
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    for n in ["n1", "n2", "n3"] {
        nodes
            .create(&PostParams::default(), &node(n, "4", serde_json::json!({})))
            .await
            .unwrap();
    }
    // Node IPAM: distinct /24s from 10.244.0.0/16.
    let cidrs_assigned = eventually(10, || async {
        let l = nodes.list(&ListParams::default()).await.unwrap();
        l.items
            .iter()
            .all(|n| n.spec.as_ref().and_then(|s| s.pod_cidr.as_ref()).is_some())
    })
    .await;
    assert!(cidrs_assigned, "every node got a podCIDR");
    let mut cidrs: Vec<String> = nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|n| n.spec.as_ref().unwrap().pod_cidr.clone().unwrap())
        .collect();
    cidrs.sort();
    assert_eq!(cidrs, ["10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"]);

    // 30 siblings spread evenly over 3 equal nodes.
    // The owner is of a kind the garbage collector does not handle: a ReplicaSet that does not
    // exist would have its pods collected.
    let owner = serde_json::json!({"metadata": {"ownerReferences": [{"apiVersion": "example.com/v1", "kind": "Spreader", "name": "rs", "uid": "rs-uid-1", "controller": true}]}});
    for i in 0..30 {
        pods.create(
            &PostParams::default(),
            &pod(&format!("w{i:02}"), owner.clone()),
        )
        .await
        .unwrap();
    }
    let all_bound = eventually(20, || async {
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .all(|p| p.spec.as_ref().unwrap().node_name.is_some())
    })
    .await;
    assert!(all_bound, "all 30 pods bound");
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for p in pods.list(&ListParams::default()).await.unwrap().items {
        *per_node
            .entry(p.spec.unwrap().node_name.unwrap())
            .or_default() += 1;
        let cond = p.status.unwrap().conditions.unwrap();
        assert!(cond
            .iter()
            .any(|c| c.type_ == "PodScheduled" && c.status == "True"));
    }
    assert_eq!(
        per_node.values().copied().collect::<Vec<_>>(),
        vec![10, 10, 10],
        "{per_node:?}"
    );

    // nodeSelector and taints.
    nodes.create(&PostParams::default(), &node("ssd", "4", serde_json::json!({"metadata": {"labels": {"disk": "ssd"}}, "spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}))).await.unwrap();
    pods.create(&PostParams::default(), &pod("db", serde_json::json!({"spec": {"nodeSelector": {"disk": "ssd"}, "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]}}))).await.unwrap();
    pods.create(
        &PostParams::default(),
        &pod(
            "intolerant",
            serde_json::json!({"spec": {"nodeSelector": {"disk": "ssd"}}}),
        ),
    )
    .await
    .unwrap();
    assert!(
        eventually(10, || async {
            pods.get("db")
                .await
                .unwrap()
                .spec
                .unwrap()
                .node_name
                .as_deref()
                == Some("ssd")
        })
        .await
    );

    // Fits nowhere: Unschedulable condition and a FailedScheduling event; binds once a big node appears.
    pods.create(&PostParams::default(), &pod("huge", serde_json::json!({"spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "32"}}}]}}))).await.unwrap();
    let reported = eventually(10, || async {
        let p = pods.get("huge").await.unwrap();
        p.status.and_then(|s| s.conditions).is_some_and(|cs| {
            cs.iter().any(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
                    && c.message
                        .as_deref()
                        .is_some_and(|m| m.contains("Insufficient cpu"))
            })
        })
    })
    .await;
    assert!(reported, "huge pod reported Unschedulable");
    let events: Api<Event> = Api::namespaced(c.clone(), "default");
    let evented = eventually(10, || async {
        let evs = events.list(&ListParams::default()).await.unwrap();
        evs.items.iter().any(|e| {
            e.reason.as_deref() == Some("FailedScheduling")
                && e.involved_object.name.as_deref() == Some("huge")
        })
    })
    .await;
    assert!(evented, "FailedScheduling event recorded: {}", s.log());
    assert!(
        pods.get("intolerant")
            .await
            .unwrap()
            .spec
            .unwrap()
            .node_name
            .is_none(),
        "untolerated taint kept it pending"
    );
    nodes
        .create(
            &PostParams::default(),
            &node("big", "64", serde_json::json!({})),
        )
        .await
        .unwrap();
    assert!(
        eventually(10, || async {
            pods.get("huge")
                .await
                .unwrap()
                .spec
                .unwrap()
                .node_name
                .as_deref()
                == Some("big")
        })
        .await,
        "retried when a node appeared"
    );
}
