//! Node lifecycle: a node whose kubelet stops renewing its Lease (in `kube-node-lease`) for the
//! grace period becomes `Ready=Unknown` with the `node.kubernetes.io/unreachable` taints
//! (NoSchedule and NoExecute); its pods are marked not ready, so endpoint slices drop them, and
//! are evicted (deleted) once the eviction timeout has passed. When the kubelet reports again and
//! the node is Ready, the taints are removed.
//!
//! A reachable node whose network plugin reports `NetworkUnavailable=True` gets the
//! `node.kubernetes.io/network-unavailable:NoSchedule` taint (upstream's taint-nodes-by-condition),
//! removed when the condition clears, so new pods are not placed where they could get no network.
//!
//! The heartbeat is the newer of the Lease's `renewTime` and the Ready condition's
//! `lastHeartbeatTime`; a node never heard from is judged from its creation time.

use ferry_kube::watch::{self, Reflector};
use ferry_kube::Loop;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::ResourceExt;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// The taint put on unreachable nodes.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint (NoSchedule) put on nodes whose `NetworkUnavailable` condition is `True`.
pub const NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

/// Settings.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Heartbeat age after which a node is unreachable (40 s upstream).
    pub grace: Duration,
    /// How long pods stay on an unreachable node before eviction.
    pub eviction: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            grace: Duration::from_secs(40),
            eviction: Duration::from_secs(300),
        }
    }
}

/// Runs the controller.
pub async fn run(client: kube::Client, cfg: Config) -> anyhow::Result<()> {
    let wake = Arc::new(Notify::new());
    let nodes = Reflector::new(Api::<Node>::all(client.clone()))
        .wake(wake.clone())
        .spawn();
    let leases = Reflector::new(Api::<Lease>::namespaced(client.clone(), "kube-node-lease"))
        .wake(wake.clone())
        .spawn();
    let pods = Reflector::new(Api::<Pod>::all(client.clone()))
        .wake(wake.clone())
        .spawn();
    watch::ready(&nodes).await?;
    watch::ready(&leases).await?;
    watch::ready(&pods).await?;
    let mut lp = Loop::new(wake, Duration::from_secs(1));
    loop {
        reconcile(&client, &cfg, &nodes, &leases, &pods).await;
        lp.after(()).await;
    }
}

fn ready_condition(node: &Node) -> Option<&k8s_openapi::api::core::v1::NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// Seconds since the node's last sign of life.
fn heartbeat_age(node: &Node, lease: Option<&Lease>, now: jiff::Timestamp) -> f64 {
    let renew = lease
        .and_then(|l| l.spec.as_ref()?.renew_time.as_ref())
        .map(|t| t.0);
    let hb = ready_condition(node)
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0);
    let created = node.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let last = [renew, hb, created].into_iter().flatten().max();
    last.map_or(f64::INFINITY, |t| now.duration_since(t).as_secs_f64())
}

async fn reconcile(
    client: &kube::Client,
    cfg: &Config,
    nodes: &Store<Node>,
    leases: &Store<Lease>,
    pods: &Store<Pod>,
) {
    let now = jiff::Timestamp::now();
    let now_s = now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let node_api: Api<Node> = Api::all(client.clone());
    let leases = leases.state();
    for node in nodes.state() {
        let name = node.name_any();
        let lease = leases
            .iter()
            .find(|l| l.name_any() == name)
            .map(AsRef::as_ref);
        let age = heartbeat_age(&node, lease, now);
        let ready = ready_condition(&node);
        let unknown = ready.is_some_and(|c| c.status == "Unknown");
        let taints: Vec<_> = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let tainted = taints.iter().any(|t| t.key == UNREACHABLE);
        let mut rv = node.resource_version();
        if age > cfg.grace.as_secs_f64() {
            if !unknown {
                let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
                    "message": "Kubelet stopped posting node status.", "lastTransitionTime": now_s,
                    "lastHeartbeatTime": ready.and_then(|c| c.last_heartbeat_time.clone())}]}});
                match node_api
                    .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
                    .await
                {
                    // The taint patch below is guarded by this newer resourceVersion.
                    Ok(updated) => rv = updated.resource_version(),
                    Err(e) => {
                        tracing::info!("node lifecycle: marking {name} unknown: {e}");
                        continue;
                    }
                }
                tracing::info!(
                    "node lifecycle: {name} is unreachable (no heartbeat for {age:.0} s)"
                );
            }
            if !tainted {
                let mut t = serde_json::to_value(&taints).unwrap_or(json!([]));
                if let Some(list) = t.as_array_mut() {
                    for effect in ["NoSchedule", "NoExecute"] {
                        list.push(
                            json!({"key": UNREACHABLE, "effect": effect, "timeAdded": now_s}),
                        );
                    }
                }
                let patch = json!({"metadata": {"resourceVersion": rv}, "spec": {"taints": t}});
                if let Err(e) = node_api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                {
                    // Pods are handled once the node is tainted (the next round retries).
                    tracing::info!("node lifecycle: tainting {name}: {e}");
                    continue;
                }
            }
            let evict = age > (cfg.grace + cfg.eviction).as_secs_f64();
            for pod in pods.state().iter().filter(|p| {
                p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str())
            }) {
                let ns = pod.namespace().unwrap_or_default();
                let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
                if evict {
                    let dp = DeleteParams {
                        grace_period_seconds: Some(0),
                        ..DeleteParams::default()
                    };
                    match api.delete(&pod.name_any(), &dp).await {
                        Ok(_) => tracing::info!(
                            "node lifecycle: evicted {ns}/{} from unreachable node {name}",
                            pod.name_any()
                        ),
                        Err(e) => {
                            tracing::info!("node lifecycle: evicting {ns}/{}: {e}", pod.name_any())
                        }
                    }
                    continue;
                }
                let is_ready = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                if is_ready {
                    let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "NodeLost",
                        "message": format!("node {name} is unreachable"), "lastTransitionTime": now_s}]}});
                    if let Err(e) = api
                        .patch_status(
                            &pod.name_any(),
                            &PatchParams::default(),
                            &Patch::Strategic(patch),
                        )
                        .await
                    {
                        tracing::info!(
                            "node lifecycle: marking {ns}/{} not ready: {e}",
                            pod.name_any()
                        );
                    }
                }
            }
        } else {
            let want = reachable_taints(&taints, ready, network_unavailable(&node), &now_s);
            if let Some(kept) = want {
                let patch = json!({"metadata": {"resourceVersion": node.resource_version()}, "spec": {"taints": kept}});
                match node_api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                {
                    Ok(_) => tracing::info!("node lifecycle: {name} taints now {kept}"),
                    Err(e) => tracing::info!("node lifecycle: updating the taints of {name}: {e}"),
                }
            }
        }
    }
}

/// True when the node's `NetworkUnavailable` condition (set by the network plugin) is `True`.
fn network_unavailable(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "NetworkUnavailable" && c.status == "True")
        })
}

/// The taints of a node that is reachable, when they must change: the unreachable taints go once
/// it is Ready, and `node.kubernetes.io/network-unavailable:NoSchedule` follows its
/// `NetworkUnavailable` condition (upstream's taint-nodes-by-condition). `None`: nothing to do.
fn reachable_taints(
    taints: &[k8s_openapi::api::core::v1::Taint],
    ready: Option<&k8s_openapi::api::core::v1::NodeCondition>,
    net_down: bool,
    now: &str,
) -> Option<serde_json::Value> {
    let mut kept: Vec<serde_json::Value> = taints
        .iter()
        .filter_map(|t| serde_json::to_value(t).ok())
        .collect();
    let before = kept.len();
    if ready.is_some_and(|c| c.status == "True") {
        kept.retain(|t| t["key"] != UNREACHABLE);
    }
    let has_net = kept.iter().any(|t| t["key"] == NETWORK_UNAVAILABLE);
    let mut changed = kept.len() != before;
    if net_down && !has_net {
        kept.push(json!({"key": NETWORK_UNAVAILABLE, "effect": "NoSchedule", "timeAdded": now}));
        changed = true;
    } else if !net_down && has_net {
        kept.retain(|t| t["key"] != NETWORK_UNAVAILABLE);
        changed = true;
    }
    changed.then_some(serde_json::Value::Array(kept))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_is_the_newest_signal() {
        let now: jiff::Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "n", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-01-01T00:00:30Z"}]}})).unwrap();
        assert!((heartbeat_age(&node, None, now) - 30.0).abs() < 0.001);
        let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "n"}, "spec": {"renewTime": "2026-01-01T00:00:50.000000Z"}})).unwrap();
        assert!((heartbeat_age(&node, Some(&lease), now) - 10.0).abs() < 0.001);
        let bare: Node = serde_json::from_value(json!({"metadata": {"name": "n"}})).unwrap();
        assert!(heartbeat_age(&bare, None, now).is_infinite());
    }

    #[test]
    fn taints_follow_reachability_and_the_network_condition() {
        let now = "2026-01-01T00:00:00Z";
        let ready: k8s_openapi::api::core::v1::NodeCondition =
            serde_json::from_value(json!({"type": "Ready", "status": "True"})).unwrap();
        let taint = |k: &str| -> k8s_openapi::api::core::v1::Taint {
            serde_json::from_value(json!({"key": k, "effect": "NoSchedule"})).unwrap()
        };
        // Healthy and untainted: nothing to do.
        assert_eq!(reachable_taints(&[], Some(&ready), false, now), None);
        // Network down: the NoSchedule taint is added, other taints kept.
        let other = taint("example.com/x");
        let t = reachable_taints(std::slice::from_ref(&other), Some(&ready), true, now).unwrap();
        assert_eq!(t.as_array().unwrap().len(), 2);
        assert_eq!(t[1]["key"], NETWORK_UNAVAILABLE);
        assert_eq!(t[1]["effect"], "NoSchedule");
        // Already tainted while down: nothing to do; back up: removed.
        let net = taint(NETWORK_UNAVAILABLE);
        assert_eq!(
            reachable_taints(std::slice::from_ref(&net), Some(&ready), true, now),
            None
        );
        let t = reachable_taints(&[net, other], Some(&ready), false, now).unwrap();
        assert_eq!(t, json!([{"key": "example.com/x", "effect": "NoSchedule"}]));
        // Unreachable taints go once Ready, not before.
        let unreachable = taint(UNREACHABLE);
        assert_eq!(
            reachable_taints(std::slice::from_ref(&unreachable), None, false, now),
            None
        );
        let t = reachable_taints(&[unreachable], Some(&ready), false, now).unwrap();
        assert_eq!(t, json!([]));
    }
}
