//! Node lifecycle against a real `ferry-server` with short timeouts: a node whose lease is not
//! renewed becomes Ready=Unknown with the unreachable taints, its pods turn not ready and are then
//! evicted; a node that renews stays Ready; a node that comes back loses the taints.

mod common;

use common::Server;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::time::Duration;

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string()
}

async fn renew(leases: &Api<Lease>, name: &str) {
    let l: Lease = serde_json::from_value(serde_json::json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"}, "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now()}})).unwrap();
    if leases.get_opt(name).await.unwrap().is_some() {
        let p = serde_json::json!({"spec": {"renewTime": now()}});
        leases
            .patch(name, &PatchParams::default(), &Patch::Merge(p))
            .await
            .unwrap();
    } else {
        leases.create(&PostParams::default(), &l).await.unwrap();
    }
}

fn ready_status(n: &Node) -> String {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

fn unreachable_taints(n: &Node) -> usize {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map_or(0, |ts| {
            ts.iter()
                .filter(|t| t.key == "node.kubernetes.io/unreachable")
                .count()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_nodes_are_tainted_and_their_pods_evicted() {
    let s = Server::start_with(&[
        "--node-monitor-grace-period",
        "2",
        "--pod-eviction-timeout",
        "3",
    ]);
    let c = s.client().await;
    let nodes: Api<Node> = Api::all(c.clone());
    let leases: Api<Lease> = Api::namespaced(c.clone(), "kube-node-lease");
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    for n in ["alive", "dead"] {
        let node: Node = serde_json::from_value(serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n},
            "status": {"conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": now()}]}})).unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
    }
    let pod: Pod = serde_json::from_value(
        serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "on-dead"},
        "spec": {"nodeName": "dead", "containers": [{"name": "c", "image": "i"}]}}),
    )
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    pods.patch_status("on-dead", &PatchParams::default(), &Patch::Merge(serde_json::json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}))).await.unwrap();

    let mut saw_not_ready = false;
    let mut evicted = false;
    for _ in 0..120 {
        renew(&leases, "alive").await;
        let alive = nodes.get("alive").await.unwrap();
        assert_eq!(ready_status(&alive), "True", "a renewing node stays Ready");
        assert_eq!(unreachable_taints(&alive), 0);
        match pods.get_opt("on-dead").await.unwrap() {
            Some(p) => {
                let r = p
                    .status
                    .and_then(|s| s.conditions)
                    .and_then(|cs| cs.into_iter().find(|c| c.type_ == "Ready"))
                    .map(|c| c.status);
                if r.as_deref() == Some("False") {
                    // The controller marks the node, then taints it, then turns its pods not
                    // ready: read the node after the pod, or a round between the two reads races.
                    let dead = nodes.get("dead").await.unwrap();
                    assert_eq!(ready_status(&dead), "Unknown");
                    assert_eq!(unreachable_taints(&dead), 2, "NoSchedule and NoExecute");
                    saw_not_ready = true;
                }
            }
            None => {
                evicted = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        saw_not_ready,
        "pod on the unreachable node turned not ready: {}",
        s.log()
    );
    assert!(evicted, "pod evicted after the timeout");

    // The node comes back: lease renewed, kubelet reports Ready, the taints go.
    renew(&leases, "dead").await;
    nodes.patch_status("dead", &PatchParams::default(), &Patch::Strategic(serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": now()}]}}))).await.unwrap();
    let mut cleared = false;
    for _ in 0..50 {
        renew(&leases, "dead").await;
        if unreachable_taints(&nodes.get("dead").await.unwrap()) == 0 {
            cleared = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cleared, "taints removed once the node is back");
}
