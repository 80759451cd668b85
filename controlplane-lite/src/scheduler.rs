//! The scheduler: binds pending pods to nodes.
//!
//! It talks to the API with kube-rs only (reflectors on pods and nodes, the `pods/binding`
//! subresource, `pods/status` and Events), so it works against any Kubernetes API server.
//!
//! Each round (on every pod or node change, and at least once a second) takes the pending pods
//! (no `spec.nodeName`, our `schedulerName`, not being deleted, no scheduling gates) oldest first
//! and, for each, filters the nodes (Ready, schedulable, `NoSchedule` taints tolerated,
//! `nodeSelector` matched, resource requests within allocatable minus what is already bound or
//! assumed) and scores the rest (least allocated, plus spreading pods of the same owner). Binds run
//! concurrently; a pod is "assumed" on its node until the reflector shows it bound, so a burst of
//! pods never over-commits a node. A pod that fits nowhere gets `PodScheduled=False` with reason
//! `Unschedulable` and a `FailedScheduling` Event, and is retried when nodes change.

use ferry_apimachinery::quantity::parse_quantity;
use ferry_kube::watch::{self, Reflector};
use ferry_kube::Loop;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::ResourceExt;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `schedulerName` this scheduler serves.
    pub name: String,
    /// Binds in flight at once.
    pub parallel_binds: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "default-scheduler".into(),
            parallel_binds: 16,
        }
    }
}

/// CPU (cores), memory (bytes) and pod count.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Resources {
    /// Cores.
    pub cpu: f64,
    /// Bytes.
    pub memory: f64,
    /// Pods.
    pub pods: f64,
}

impl Resources {
    fn add(&mut self, o: Resources) {
        self.cpu += o.cpu;
        self.memory += o.memory;
        self.pods += o.pods;
    }
}

/// What a pod requests (sum over containers; init containers count by their maximum).
pub fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = &pod.spec else {
        return Resources {
            pods: 1.0,
            ..Default::default()
        };
    };
    let get = |c: &k8s_openapi::api::core::v1::Container, k: &str| {
        c.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|m| m.get(k))
            .and_then(|q| parse_quantity(&q.0))
            .unwrap_or(0.0)
    };
    let mut r = Resources {
        pods: 1.0,
        ..Default::default()
    };
    for c in &spec.containers {
        r.cpu += get(c, "cpu");
        r.memory += get(c, "memory");
    }
    for c in spec.init_containers.iter().flatten() {
        r.cpu = r.cpu.max(get(c, "cpu"));
        r.memory = r.memory.max(get(c, "memory"));
    }
    r
}

/// What a node offers (status.allocatable, falling back to capacity; 110 pods by default).
pub fn node_allocatable(node: &Node) -> Resources {
    let st = node.status.as_ref();
    let map = st.and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()));
    let get = |k: &str| {
        map.and_then(|m| m.get(k))
            .and_then(|q| parse_quantity(&q.0))
    };
    Resources {
        cpu: get("cpu").unwrap_or(f64::INFINITY),
        memory: get("memory").unwrap_or(f64::INFINITY),
        pods: get("pods").unwrap_or(110.0),
    }
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn tolerates(pod: &Pod, taint: &k8s_openapi::api::core::v1::Taint) -> bool {
    let tols = pod.spec.as_ref().and_then(|s| s.tolerations.as_ref());
    tols.into_iter().flatten().any(|t| {
        let effect_ok = t
            .effect
            .as_deref()
            .is_none_or(|e| e.is_empty() || e == taint.effect);
        let key_ok = match t.operator.as_deref().unwrap_or("Equal") {
            "Exists" => t
                .key
                .as_deref()
                .is_none_or(|k| k.is_empty() || k == taint.key),
            _ => {
                t.key.as_deref() == Some(taint.key.as_str())
                    && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
            }
        };
        effect_ok && key_ok
    })
}

/// Why a node does not fit a pod (`None` when it fits).
pub fn unfit_reason(pod: &Pod, node: &Node, used: Resources) -> Option<&'static str> {
    if !node_ready(node) {
        return Some("node(s) were not ready");
    }
    let spec = node.spec.as_ref();
    if spec.and_then(|s| s.unschedulable).unwrap_or(false) {
        return Some("node(s) were unschedulable");
    }
    for t in spec.and_then(|s| s.taints.as_ref()).into_iter().flatten() {
        if t.effect == "NoSchedule" && !tolerates(pod, t) {
            return Some("node(s) had untolerated taint(s)");
        }
    }
    if let Some(sel) = pod.spec.as_ref().and_then(|s| s.node_selector.as_ref()) {
        let labels = node.labels();
        if sel.iter().any(|(k, v)| labels.get(k) != Some(v)) {
            return Some("node(s) didn't match Pod's node affinity/selector");
        }
    }
    let want = pod_requests(pod);
    let have = node_allocatable(node);
    if used.pods + want.pods > have.pods {
        return Some("Too many pods");
    }
    if used.cpu + want.cpu > have.cpu + 1e-9 {
        return Some("Insufficient cpu");
    }
    if used.memory + want.memory > have.memory + 0.5 {
        return Some("Insufficient memory");
    }
    None
}

fn owner_key(pod: &Pod) -> Option<String> {
    pod.owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.clone())
}

/// Score of a fitting node: higher is better (least allocated, fewer siblings of the same owner).
pub fn score(pod: &Pod, node: &Node, used: Resources, siblings_on_node: usize) -> f64 {
    let have = node_allocatable(node);
    let want = pod_requests(pod);
    let frac = |u: f64, w: f64, h: f64| {
        if h.is_finite() && h > 0.0 {
            ((u + w) / h).min(1.0)
        } else {
            0.0
        }
    };
    let free = 1.0
        - (frac(used.cpu, want.cpu, have.cpu)
            + frac(used.memory, want.memory, have.memory)
            + frac(used.pods, want.pods, have.pods))
            / 3.0;
    #[expect(clippy::cast_precision_loss, reason = "small counts")]
    let spread = 1.0 / (1.0 + siblings_on_node as f64);
    free * 50.0 + spread * 50.0
}

fn is_pending(pod: &Pod, name: &str) -> bool {
    let Some(spec) = &pod.spec else { return false };
    spec.node_name.as_deref().is_none_or(str::is_empty)
        && spec
            .scheduler_name
            .as_deref()
            .unwrap_or("default-scheduler")
            == name
        && pod.metadata.deletion_timestamp.is_none()
        && spec.scheduling_gates.as_ref().is_none_or(Vec::is_empty)
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

fn bound_to(pod: &Pod) -> Option<&str> {
    let node = pod
        .spec
        .as_ref()?
        .node_name
        .as_deref()
        .filter(|n| !n.is_empty())?;
    let terminal = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    (!terminal).then_some(node)
}

#[derive(Default)]
struct State {
    /// Pod uid -> node, bound by us but not yet seen bound.
    assumed: HashMap<String, (String, Resources, Option<String>)>,
    /// Pod uid -> the last FailedScheduling message recorded.
    reported: HashMap<String, String>,
}

/// Runs the scheduler until the client's streams end.
pub async fn run(client: kube::Client, cfg: Config) -> anyhow::Result<()> {
    let wake = Arc::new(Notify::new());
    let pods = Reflector::new(Api::<Pod>::all(client.clone()))
        .wake(wake.clone())
        .spawn();
    let nodes = Reflector::new(Api::<Node>::all(client.clone()))
        .wake(wake.clone())
        .spawn();
    watch::ready(&pods).await?;
    watch::ready(&nodes).await?;
    let state = Arc::new(Mutex::new(State::default()));
    let binds = Arc::new(Semaphore::new(cfg.parallel_binds.max(1)));
    let mut lp = Loop::new(wake.clone(), Duration::from_secs(1));
    loop {
        round(&client, &cfg, &pods, &nodes, &state, &binds, &wake).await;
        lp.after(()).await;
    }
}

async fn round(
    client: &kube::Client,
    cfg: &Config,
    pods: &Store<Pod>,
    nodes: &Store<Node>,
    state: &Arc<Mutex<State>>,
    binds: &Arc<Semaphore>,
    wake: &Arc<Notify>,
) {
    let all_pods = pods.state();
    let all_nodes = nodes.state();
    let mut used: BTreeMap<String, Resources> = BTreeMap::new();
    let mut siblings: HashMap<(String, String), usize> = HashMap::new();
    let mut bound_uids = HashSet::new();
    for p in &all_pods {
        if let Some(n) = bound_to(p) {
            used.entry(n.to_owned()).or_default().add(pod_requests(p));
            if let Some(o) = owner_key(p) {
                *siblings.entry((n.to_owned(), o)).or_default() += 1;
            }
            bound_uids.insert(p.uid().unwrap_or_default());
        }
    }
    let mut pending: Vec<Arc<Pod>> = all_pods
        .iter()
        .filter(|p| is_pending(p, &cfg.name))
        .cloned()
        .collect();
    pending.sort_by(|a, b| {
        a.creation_timestamp()
            .cmp(&b.creation_timestamp())
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
    let mut st = state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    st.assumed.retain(|uid, _| {
        !bound_uids.contains(uid) && all_pods.iter().any(|p| p.uid().as_deref() == Some(uid))
    });
    for (node, r, owner) in st.assumed.values() {
        used.entry(node.clone()).or_default().add(*r);
        if let Some(o) = owner {
            *siblings.entry((node.clone(), o.clone())).or_default() += 1;
        }
    }
    for pod in pending {
        let uid = pod.uid().unwrap_or_default();
        if st.assumed.contains_key(&uid) {
            continue;
        }
        let owner = owner_key(&pod);
        let mut best: Option<(f64, &Arc<Node>)> = None;
        let mut reasons: BTreeMap<&'static str, usize> = BTreeMap::new();
        for node in &all_nodes {
            let name = node.name_any();
            let u = used.get(&name).copied().unwrap_or_default();
            match unfit_reason(&pod, node, u) {
                Some(r) => *reasons.entry(r).or_default() += 1,
                None => {
                    let sib = owner
                        .as_ref()
                        .and_then(|o| siblings.get(&(name.clone(), o.clone())))
                        .copied()
                        .unwrap_or(0);
                    let s = score(&pod, node, u, sib);
                    if best.as_ref().is_none_or(|(b, bn)| {
                        s > *b || (s == *b && node.name_any() < bn.name_any())
                    }) {
                        best = Some((s, node));
                    }
                }
            }
        }
        match best {
            Some((_, node)) => {
                let node_name = node.name_any();
                let req = pod_requests(&pod);
                used.entry(node_name.clone()).or_default().add(req);
                if let Some(o) = &owner {
                    *siblings.entry((node_name.clone(), o.clone())).or_default() += 1;
                }
                st.assumed
                    .insert(uid.clone(), (node_name.clone(), req, owner));
                st.reported.remove(&uid);
                let (client, state, binds, wake) =
                    (client.clone(), state.clone(), binds.clone(), wake.clone());
                tokio::spawn(async move {
                    let _permit = binds.acquire().await;
                    if let Err(e) = bind(&client, &pod, &node_name).await {
                        tracing::info!(
                            "binding {}/{} to {node_name} failed: {e}",
                            pod.namespace().unwrap_or_default(),
                            pod.name_any()
                        );
                        state
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .assumed
                            .remove(&uid);
                        wake.notify_one();
                    }
                });
            }
            None => {
                let n = all_nodes.len();
                let detail = reasons
                    .iter()
                    .map(|(r, c)| format!("{c} {r}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let msg = if detail.is_empty() {
                    format!("0/{n} nodes are available.")
                } else {
                    format!("0/{n} nodes are available: {detail}.")
                };
                if st.reported.get(&uid) != Some(&msg) {
                    st.reported.insert(uid.clone(), msg.clone());
                    let (client, state) = (client.clone(), state.clone());
                    tokio::spawn(async move {
                        if let Err(e) = report_unschedulable(&client, &pod, &msg).await {
                            // Stale (409) or failed: forget it, so a later round reports anew.
                            tracing::debug!(
                                "recording FailedScheduling for {}: {e}",
                                pod.name_any()
                            );
                            let mut st = state
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            st.reported.remove(&pod.uid().unwrap_or_default());
                        }
                    });
                }
            }
        }
    }
}

async fn bind(client: &kube::Client, pod: &Pod, node: &str) -> kube::Result<()> {
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let binding = serde_json::json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": pod.name_any(), "namespace": ns, "uid": pod.uid()},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    let _: serde_json::Value = api
        .create_subresource("binding", &pod.name_any(), &PostParams::default(), &binding)
        .await?;
    Ok(())
}

async fn report_unschedulable(client: &kube::Client, pod: &Pod, msg: &str) -> kube::Result<()> {
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    // Guarded by the resourceVersion the decision was made on: if the pod changed meanwhile
    // (bound by someone else, deleted), the report is stale and the patch fails with 409.
    let patch = serde_json::json!({"metadata": {"resourceVersion": pod.resource_version()}, "status": {"conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg,
        "lastTransitionTime": now, "lastProbeTime": null,
    }]}});
    api.patch_status(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Strategic(patch),
    )
    .await?;
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let ev: Event = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{}.{:x}", pod.name_any(), jiff::Timestamp::now().as_nanosecond()), "namespace": ns},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": pod.name_any(), "namespace": ns, "uid": pod.uid()},
        "reason": "FailedScheduling", "message": msg, "type": "Warning",
        "source": {"component": "default-scheduler"},
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        "reportingComponent": "default-scheduler",
    }))
    .map_err(kube::Error::SerdeError)?;
    events.create(&PostParams::default(), &ev).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, extra: serde_json::Value) -> Node {
        let mut n = serde_json::json!({"metadata": {"name": name}, "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"}}});
        merge(&mut n, extra);
        serde_json::from_value(n).unwrap()
    }

    fn pod(extra: serde_json::Value) -> Pod {
        let mut p = serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        merge(&mut p, extra);
        serde_json::from_value(p).unwrap()
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        json_patch::merge(a, &b);
    }

    #[test]
    fn filters() {
        let free = Resources::default();
        assert_eq!(
            unfit_reason(
                &pod(serde_json::json!({})),
                &node("n", serde_json::json!({})),
                free
            ),
            None
        );
        let not_ready = node(
            "n",
            serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
        );
        assert!(unfit_reason(&pod(serde_json::json!({})), &not_ready, free).is_some());
        let cordoned = node("n", serde_json::json!({"spec": {"unschedulable": true}}));
        assert!(unfit_reason(&pod(serde_json::json!({})), &cordoned, free).is_some());
        let tainted = node(
            "n",
            serde_json::json!({"spec": {"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]}}),
        );
        assert!(unfit_reason(&pod(serde_json::json!({})), &tainted, free).is_some());
        let tol = pod(
            serde_json::json!({"spec": {"tolerations": [{"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"}]}}),
        );
        assert_eq!(unfit_reason(&tol, &tainted, free), None);
        let exists = pod(serde_json::json!({"spec": {"tolerations": [{"operator": "Exists"}]}}));
        assert_eq!(unfit_reason(&exists, &tainted, free), None);
        let sel = pod(serde_json::json!({"spec": {"nodeSelector": {"disk": "ssd"}}}));
        assert!(unfit_reason(&sel, &node("n", serde_json::json!({})), free).is_some());
        assert_eq!(
            unfit_reason(
                &sel,
                &node(
                    "n",
                    serde_json::json!({"metadata": {"labels": {"disk": "ssd"}}})
                ),
                free
            ),
            None
        );
        let big = pod(
            serde_json::json!({"spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "1500m"}}}]}}),
        );
        assert_eq!(
            unfit_reason(&big, &node("n", serde_json::json!({})), free),
            None
        );
        let half = Resources {
            cpu: 1.0,
            ..Default::default()
        };
        assert_eq!(
            unfit_reason(&big, &node("n", serde_json::json!({})), half),
            Some("Insufficient cpu")
        );
    }

    #[test]
    fn scoring_prefers_free_nodes_and_spreads_siblings() {
        let p = pod(serde_json::json!({}));
        let n = node("n", serde_json::json!({}));
        let busy = Resources {
            cpu: 1.5,
            memory: 0.0,
            pods: 50.0,
        };
        assert!(score(&p, &n, Resources::default(), 0) > score(&p, &n, busy, 0));
        assert!(score(&p, &n, Resources::default(), 0) > score(&p, &n, Resources::default(), 2));
    }
}
