//! ReplicaSet controller: keeps `spec.replicas` pods of each ReplicaSet.
//!
//! Level-triggered: on every ReplicaSet or Pod change (and every two seconds) each ReplicaSet
//! not being deleted is compared with the pods it controls. Orphan pods (no controller) matching
//! its selector are adopted; pods controlled by someone else are left alone. Missing pods are
//! created from `spec.template` (`generateName: <rs>-`, a controller ownerReference with
//! `blockOwnerDeletion`); surplus pods are deleted, unscheduled first, then not running, then not
//! ready, then newest. Pods being deleted (or terminal) no longer count. ReplicaSets with pods
//! to delete are synced before those with pods to create, so a Deployment's rollout step (old
//! scaled down, new scaled up) seen in one round never exceeds `replicas + maxSurge` live pods;
//! while a ReplicaSet keeps live pods beyond its `spec.replicas` after its sync (a deletion
//! failed), the other ReplicaSets of its controller create no pods that round.
//!
//! Creations and deletions not yet visible in the (asynchronously updated) local store are
//! remembered as expectations, so a second round never creates or deletes twice.
//!
//! Status (`replicas`, `fullyLabeledReplicas`, `readyReplicas`, `availableReplicas` with
//! `minReadySeconds`, `observedGeneration`, and `terminatingReplicas`: pods marked for deletion
//! that have not finished, which `Recreate` waits for) goes through the `/status` subresource, only when it
//! changes.

use super::{controller_of, controller_ref, seconds_since, selects};
use ferry_kube::watch::{self, Reflector};
use ferry_kube::{Expectations, Loop};
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::ResourceExt;
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Most pods created or deleted for one ReplicaSet in one round.
const BURST: usize = 100;
/// How long an unobserved creation or deletion is expected before it is forgotten.
const EXPECTATION_TTL: Duration = Duration::from_secs(30);

/// Whether a pod is running and Ready (`Ready=True`).
pub fn pod_ready(pod: &Pod) -> bool {
    pod_ready_since(pod).is_some()
}

/// When a Ready pod became ready (`None` when it is not ready).
fn pod_ready_since(pod: &Pod) -> Option<Option<jiff::Timestamp>> {
    let st = pod.status.as_ref()?;
    if matches!(st.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    st.conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

/// Whether a pod is available: ready for at least `min_ready` seconds.
pub fn pod_available(pod: &Pod, min_ready: i64) -> bool {
    match pod_ready_since(pod) {
        None => false,
        Some(_) if min_ready <= 0 => true,
        Some(None) => false,
        Some(Some(t)) => seconds_since(&t) >= min_ready,
    }
}

/// Whether a pod has finished (`Succeeded` or `Failed`).
fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Whether a pod counts towards its ReplicaSet: not being deleted, not terminal.
pub fn pod_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && !terminal(pod)
}

/// Deletion preference: lower sorts first (unscheduled, pending, not ready, newest).
fn deletion_rank(pod: &Pod) -> (u8, u8, u8, std::cmp::Reverse<Option<jiff::Timestamp>>) {
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    (
        u8::from(scheduled),
        u8::from(running),
        u8::from(pod_ready(pod)),
        std::cmp::Reverse(pod.metadata.creation_timestamp.as_ref().map(|t| t.0)),
    )
}

/// Creations and deletions made but not yet seen, per ReplicaSet uid.
#[derive(Debug, Default)]
struct PodExpectations {
    /// Pod uids created.
    adds: HashMap<String, Expectations<String>>,
    /// Pod uids deleted.
    dels: HashMap<String, Expectations<String>>,
}

/// What a ReplicaSet's first expectation starts.
fn expectations() -> Expectations<String> {
    Expectations::with_ttl(EXPECTATION_TTL)
}

/// Runs the controller.
pub async fn run(client: kube::Client) -> anyhow::Result<()> {
    let wake = Arc::new(Notify::new());
    let rss = Reflector::new(Api::<ReplicaSet>::all(client.clone()))
        .wake(wake.clone())
        .spawn();
    let pods = Reflector::new(Api::<Pod>::all(client.clone()))
        .wake(wake.clone())
        .spawn();
    watch::ready(&rss).await?;
    watch::ready(&pods).await?;
    let mut exp = PodExpectations::default();
    let mut lp = Loop::new(wake, Duration::from_secs(2));
    loop {
        round(&client, &rss, &pods, &mut exp).await;
        lp.after(()).await;
    }
}

async fn round(
    client: &kube::Client,
    rss: &Store<ReplicaSet>,
    pods: &Store<Pod>,
    exp: &mut PodExpectations,
) {
    let all_pods = pods.state();
    let by_uid: HashMap<String, &Arc<Pod>> = all_pods
        .iter()
        .filter_map(|p| p.uid().map(|u| (u, p)))
        .collect();
    // Settle expectations against what the store shows now.
    for m in exp.adds.values_mut() {
        m.settle(|uid, ()| by_uid.contains_key(uid));
    }
    for m in exp.dels.values_mut() {
        m.settle(|uid, ()| !by_uid.get(uid).is_some_and(|p| pod_active(p)));
    }
    let all_rs = rss.state();
    let live: HashSet<String> = all_rs.iter().filter_map(|r| r.uid()).collect();
    exp.adds.retain(|k, m| live.contains(k) && !m.is_empty());
    exp.dels.retain(|k, m| live.contains(k) && !m.is_empty());
    // Controllers (Deployments) one of whose ReplicaSets still has live pods beyond its
    // `spec.replicas` after its sync (a deletion failed, or creations it expects are not seen
    // yet): their other ReplicaSets create nothing this round, or a failed deletion (an etcd
    // timeout) followed by a sibling's creation would exceed `replicas + maxSurge`.
    let mut held: HashSet<String> = HashSet::new();
    for (rs, _) in shrinking_first(all_rs, &all_pods, exp) {
        let owner = controller_of(rs.owner_references()).map(|o| o.uid.clone());
        let may_create = !owner.as_ref().is_some_and(|o| held.contains(o));
        let mut surplus_left = false;
        if let Err(e) = sync(client, &rs, &all_pods, exp, may_create, &mut surplus_left).await {
            tracing::info!(
                "replicaset {}/{}: {e} (retrying)",
                rs.namespace().unwrap_or_default(),
                rs.name_any()
            );
        }
        if surplus_left {
            held.extend(owner);
        }
    }
}

/// The ReplicaSets of a round in the order they are synced, each with `spec.replicas` compared
/// with the pods it has (`Less`: pods to delete): those with pods to delete first, those with
/// pods to create last. A Deployment scales its old ReplicaSet down and then its new
/// one up; when one round sees both writes, deleting first keeps the live pods within
/// `replicas + maxSurge` at every moment (creating first put 9 live pods of a 6-replica
/// Deployment with maxSurge 2 on the API during a rollout).
fn shrinking_first(
    all_rs: Vec<Arc<ReplicaSet>>,
    all_pods: &[Arc<Pod>],
    exp: &PodExpectations,
) -> Vec<(Arc<ReplicaSet>, Ordering)> {
    let mut live: HashMap<&str, usize> = HashMap::new();
    for p in all_pods.iter().filter(|p| pod_active(p)) {
        if let Some(o) = controller_of(p.owner_references()) {
            let deleted = exp
                .dels
                .get(&o.uid)
                .is_some_and(|d| p.metadata.uid.as_ref().is_some_and(|uid| d.contains(uid)));
            if !deleted {
                *live.entry(o.uid.as_str()).or_default() += 1;
            }
        }
    }
    let mut steps: Vec<(Arc<ReplicaSet>, Ordering)> = all_rs
        .into_iter()
        .map(|rs| {
            let uid = rs.metadata.uid.as_deref().unwrap_or_default();
            let have = live.get(uid).copied().unwrap_or(0)
                + exp.adds.get(uid).map_or(0, Expectations::len);
            let want = rs.spec.as_ref().map_or(0, |s| {
                usize::try_from(s.replicas.unwrap_or(1).max(0)).unwrap_or(0)
            });
            let step = want.cmp(&have);
            (rs, step)
        })
        .collect();
    steps.sort_by_key(|(_, step)| *step);
    steps
}

/// Syncs one ReplicaSet: adoption, creations (only if `may_create`), deletions, status.
/// `surplus_left` is set while it keeps more live pods than `spec.replicas` (a deletion failed, or
/// creations it expects are not seen yet).
async fn sync(
    client: &kube::Client,
    rs: &ReplicaSet,
    all_pods: &[Arc<Pod>],
    exp: &mut PodExpectations,
    may_create: bool,
    surplus_left: &mut bool,
) -> kube::Result<()> {
    let ns = rs.namespace().unwrap_or_default();
    let uid = rs.uid().unwrap_or_default();
    let Some(spec) = rs.spec.as_ref() else {
        return Ok(());
    };
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let deleting = rs.metadata.deletion_timestamp.is_some();
    let mut owned: Vec<&Arc<Pod>> = Vec::new();
    for p in all_pods
        .iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
    {
        match controller_of(p.owner_references()) {
            Some(o) if o.uid == uid => owned.push(p),
            Some(_) => {}
            None => {
                if !deleting
                    && pod_active(p)
                    && selects(&spec.selector, p.labels())
                    && adopt(&pod_api, rs, p).await?
                {
                    owned.push(p);
                }
            }
        }
    }
    let adds = exp.adds.get(&uid).map_or(0, Expectations::len);
    let dels = exp.dels.get(&uid).cloned().unwrap_or_default();
    let mut active: Vec<&Arc<Pod>> = owned
        .iter()
        .copied()
        .filter(|p| pod_active(p) && !dels.contains(&p.uid().unwrap_or_default()))
        .collect();
    let want = usize::try_from(spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
    if !deleting {
        let have = active.len() + adds;
        if have < want && !may_create {
            tracing::info!(
                "replicaset {ns}/{}: creations wait for a sibling ReplicaSet's deletions",
                rs.name_any()
            );
        } else if have < want {
            let template = spec.template.clone().unwrap_or_default();
            for _ in 0..(want - have).min(BURST) {
                let mut pod = Pod {
                    metadata: template.metadata.clone().unwrap_or_default(),
                    spec: template.spec.clone(),
                    status: None,
                };
                pod.metadata.name = None;
                pod.metadata.namespace = Some(ns.clone());
                pod.metadata.generate_name = Some(format!("{}-", rs.name_any()));
                pod.metadata.owner_references = Some(vec![controller_ref(rs)]);
                let created = pod_api.create(&PostParams::default(), &pod).await?;
                exp.adds
                    .entry(uid.clone())
                    .or_insert_with(expectations)
                    .expect(created.uid().unwrap_or_default(), ());
            }
        } else if active.len() > want {
            *surplus_left = true;
        }
        if *surplus_left && adds == 0 {
            active.sort_by_key(|p| deletion_rank(p));
            let surplus = (active.len() - want).min(BURST);
            let left = active.len() - surplus > want;
            for p in active.into_iter().take(surplus) {
                match pod_api
                    .delete(&p.name_any(), &DeleteParams::background())
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e),
                }
                exp.dels
                    .entry(uid.clone())
                    .or_insert_with(expectations)
                    .expect(p.uid().unwrap_or_default(), ());
            }
            *surplus_left = left;
        }
    }
    update_status(client, rs, &owned).await
}

/// Makes `rs` the controller of orphan pod `p`; false when the pod changed meanwhile.
async fn adopt(api: &Api<Pod>, rs: &ReplicaSet, p: &Pod) -> kube::Result<bool> {
    let mut refs = p.owner_references().to_vec();
    refs.push(controller_ref(rs));
    let patch = serde_json::json!({"metadata": {
        "resourceVersion": p.resource_version(), "ownerReferences": refs}});
    match api
        .patch(&p.name_any(), &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// The status `rs` should have, given the pods it owns.
pub fn compute_status(rs: &ReplicaSet, owned: &[&Arc<Pod>]) -> ReplicaSetStatus {
    let min_ready = i64::from(
        rs.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0),
    );
    let template_labels = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let active: Vec<_> = owned.iter().filter(|p| pod_active(p)).collect();
    let count = |f: &dyn Fn(&Pod) -> bool| {
        i32::try_from(active.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    ReplicaSetStatus {
        replicas: count(&|_| true),
        fully_labeled_replicas: Some(count(&|p| {
            template_labels
                .iter()
                .all(|(k, v)| p.labels().get(k) == Some(v))
        })),
        ready_replicas: Some(count(&pod_ready)),
        available_replicas: Some(count(&|p| pod_available(p, min_ready))),
        observed_generation: rs.metadata.generation,
        conditions: rs.status.as_ref().and_then(|s| s.conditions.clone()),
        terminating_replicas: Some(
            i32::try_from(
                owned
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_some() && !terminal(p))
                    .count(),
            )
            .unwrap_or(i32::MAX),
        ),
    }
}

async fn update_status(
    client: &kube::Client,
    rs: &ReplicaSet,
    owned: &[&Arc<Pod>],
) -> kube::Result<()> {
    let status = compute_status(rs, owned);
    let cur = rs.status.clone().unwrap_or_default();
    let norm = |s: &ReplicaSetStatus| {
        (
            s.replicas,
            s.fully_labeled_replicas.unwrap_or(0),
            s.ready_replicas.unwrap_or(0),
            s.available_replicas.unwrap_or(0),
            s.observed_generation,
            s.terminating_replicas.unwrap_or(0),
        )
    };
    if norm(&cur) == norm(&status) {
        return Ok(());
    }
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), &rs.namespace().unwrap_or_default());
    api.patch_status(
        &rs.name_any(),
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"status": status})),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn deletion_prefers_unscheduled_then_not_ready_then_newest() {
        let unscheduled =
            pod(serde_json::json!({"metadata": {"name": "a"}, "spec": {"containers": []}}));
        let ready = |name: &str, created: &str| {
            pod(
                serde_json::json!({"metadata": {"name": name, "creationTimestamp": created},
                "spec": {"containers": [], "nodeName": "n"},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}),
            )
        };
        let not_ready = pod(
            serde_json::json!({"metadata": {"name": "b"}, "spec": {"containers": [], "nodeName": "n"},
            "status": {"phase": "Running"}}),
        );
        let old = ready("old", "2020-01-01T00:00:00Z");
        let new = ready("new", "2024-01-01T00:00:00Z");
        let mut v = [&old, &new, &not_ready, &unscheduled];
        v.sort_by_key(|p| deletion_rank(p));
        let names: Vec<_> = v.iter().map(|p| p.name_any()).collect();
        assert_eq!(names, ["a", "b", "new", "old"]);
        assert!(pod_available(&old, 0));
        assert!(
            !pod_available(&old, 5),
            "ready without a transition time is not available yet"
        );
    }

    fn rs(name: &str, replicas: i32) -> Arc<ReplicaSet> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "d", "uid": name},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "x"}}}}))
            .unwrap(),
        )
    }

    fn owned(owner: &str, name: &str, deleting: bool) -> Arc<Pod> {
        let mut meta = serde_json::json!({"name": name, "namespace": "d", "uid": name,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": owner, "uid": owner, "controller": true}]});
        if deleting {
            meta["deletionTimestamp"] = "2024-01-01T00:00:00Z".into();
        }
        Arc::new(pod(
            serde_json::json!({"metadata": meta, "spec": {"containers": []}}),
        ))
    }

    fn names(v: &[(Arc<ReplicaSet>, Ordering)]) -> Vec<String> {
        v.iter().map(|(r, _)| r.name_any()).collect()
    }

    #[test]
    fn a_round_deletes_before_it_creates() {
        // A rollout step seen in one round: old scaled 6 -> 5 (6 live pods), new 2 -> 3 (2 live),
        // plus a ReplicaSet in balance (1 of 1) and one whose surplus pod is being deleted.
        let mut pods: Vec<Arc<Pod>> = (0..6)
            .map(|i| owned("old", &format!("o{i}"), false))
            .collect();
        pods.extend((0..2).map(|i| owned("new", &format!("n{i}"), false)));
        pods.push(owned("even", "e0", false));
        pods.push(owned("gone", "g0", false));
        pods.push(owned("gone", "g1", true));
        let exp = PodExpectations::default();
        for order in [
            vec![rs("new", 3), rs("even", 1), rs("old", 5), rs("gone", 1)],
            vec![rs("even", 1), rs("gone", 1), rs("new", 3), rs("old", 5)],
        ] {
            assert_eq!(
                names(&shrinking_first(order, &pods, &exp))
                    .first()
                    .map(String::as_str),
                Some("old")
            );
        }
        let got = names(&shrinking_first(
            vec![rs("new", 3), rs("even", 1), rs("old", 5)],
            &pods,
            &exp,
        ));
        assert_eq!(got, ["old", "even", "new"]);
        let steps: Vec<Ordering> = shrinking_first(vec![rs("new", 3), rs("old", 5)], &pods, &exp)
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        assert_eq!(steps, [Ordering::Less, Ordering::Greater]);

        // Expectations count as the controller counts them: a deletion not yet seen leaves
        // nothing to delete; a creation not yet seen, nothing to create.
        let mut exp = PodExpectations::default();
        exp.dels
            .entry("old".into())
            .or_insert_with(expectations)
            .expect("o0".into(), ());
        exp.adds
            .entry("new".into())
            .or_insert_with(expectations)
            .expect("n2".into(), ());
        let got = names(&shrinking_first(
            vec![rs("new", 3), rs("old", 5), rs("even", 2)],
            &pods,
            &exp,
        ));
        assert_eq!(got, ["new", "old", "even"]);
    }
}
