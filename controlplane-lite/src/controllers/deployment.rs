//! Deployment controller: Deployment -> ReplicaSets.
//!
//! As upstream: one ReplicaSet per pod template, named `<deployment>-<hash>` where the hash is
//! of the template JSON, with the hash as label `pod-template-hash` added to the ReplicaSet's
//! selector, template labels and its own labels. The ReplicaSet whose template (without that
//! label) equals the Deployment's is the new one; the others are old. Revisions
//! (`deployment.kubernetes.io/revision`) number the templates (a template rolled back to gets
//! the next one, so `kubectl rollout undo` works); the Deployment carries the revision of its
//! new ReplicaSet.
//!
//! Each round (on every Deployment or ReplicaSet change, and every two seconds) each Deployment
//! not being deleted and not paused is synced:
//! - a scaling event (`spec.replicas` changed while several ReplicaSets have pods) scales the
//!   active ReplicaSets proportionally;
//! - `RollingUpdate` scales the new ReplicaSet up within `replicas + maxSurge` and old ones down
//!   while keeping `replicas - maxUnavailable` pods available (percentages: surge rounds up,
//!   unavailable down; both zero means one unavailable);
//! - `Recreate` scales old ReplicaSets to zero, waits for their pods to be gone (terminating
//!   ones included, from the ReplicaSets' `terminatingReplicas`), then scales the new one up;
//! - old ReplicaSets at zero beyond `revisionHistoryLimit` are deleted;
//! - status (`replicas`, `updatedReplicas`, `readyReplicas`, `availableReplicas`,
//!   `unavailableReplicas`, `observedGeneration`, conditions `Available` and `Progressing`
//!   with reason `NewReplicaSetAvailable` once complete) is written when it changes, which is
//!   what `kubectl rollout status` follows.
//!
//! After writing for a Deployment the controller waits until its store shows the writes (by
//! ReplicaSet generation) before deciding again, so stale state never scales twice.

use super::{controller_of, controller_ref, selects};
use ferry_kube::watch::{self, Reflector};
use ferry_kube::{Expectations, Loop};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::ResourceExt;
use sha2::Digest;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Label (on ReplicaSets and their pods) naming the pod template hash.
pub const HASH_LABEL: &str = "pod-template-hash";
/// Annotation with the revision of a ReplicaSet (and of its Deployment).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Annotation with the Deployment's replicas when the ReplicaSet was last scaled.
pub const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
/// Annotation with replicas + maxSurge when the ReplicaSet was last scaled.
pub const MAX: &str = "deployment.kubernetes.io/max-replicas";
/// How long to wait for the store to show our own writes.
const SETTLE_TTL: Duration = Duration::from_secs(10);

/// Errors of one sync.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API refused or failed.
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// The Deployment cannot be synced as it is.
    #[error("{0}")]
    Invalid(String),
}

/// Resolves an int-or-percent against `total`, rounding up or down.
pub fn resolve(v: Option<&IntOrString>, total: i32, round_up: bool) -> Result<i32, Error> {
    match v {
        None => Ok(0),
        Some(IntOrString::Int(i)) => Ok(*i),
        Some(IntOrString::String(s)) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| Error::Invalid(format!("invalid int-or-percent {s:?}")))?;
            let prod = pct * i64::from(total);
            let r = if round_up {
                (prod + 99).div_euclid(100)
            } else {
                prod.div_euclid(100)
            };
            Ok(i32::try_from(r).unwrap_or(i32::MAX))
        }
    }
}

/// `(maxSurge, maxUnavailable)` of a Deployment, as upstream resolves them.
pub fn surge_and_unavailable(d: &Deployment) -> Result<(i32, i32), Error> {
    let replicas = desired(d);
    let spec = d.spec.as_ref();
    let strategy = spec.and_then(|s| s.strategy.as_ref());
    if strategy.and_then(|s| s.type_.as_deref()) == Some("Recreate") {
        return Ok((0, replicas));
    }
    let ru = strategy.and_then(|s| s.rolling_update.as_ref());
    let pct25 = IntOrString::String("25%".into());
    let surge = resolve(
        Some(ru.and_then(|r| r.max_surge.as_ref()).unwrap_or(&pct25)),
        replicas,
        true,
    )?;
    let unavailable = resolve(
        Some(
            ru.and_then(|r| r.max_unavailable.as_ref())
                .unwrap_or(&pct25),
        ),
        replicas,
        false,
    )?;
    if surge == 0 && unavailable == 0 {
        return Ok((0, 1));
    }
    Ok((surge.max(0), unavailable.clamp(0, replicas.max(0))))
}

fn desired(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0)
}

fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1)
        .max(0)
}

fn rs_available(rs: &ReplicaSet) -> i32 {
    // A status older than the spec may count pods being scaled away: never trust more than spec.
    let st = rs.status.as_ref();
    let avail = st.and_then(|s| s.available_replicas).unwrap_or(0);
    avail.min(rs_replicas(rs)).max(0)
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The pod-template hash of a template (JSON, sha256, upstream's safe alphabet).
pub fn template_hash(template: &serde_json::Value) -> String {
    const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let digest = sha2::Sha256::digest(template.to_string().as_bytes());
    let mut n = u64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]));
    let mut out = String::new();
    for _ in 0..10 {
        out.push(char::from(SAFE[(n % 27) as usize]));
        n /= 27;
    }
    out
}

/// A template without the `pod-template-hash` label, for comparing.
fn bare_template(v: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>) -> serde_json::Value {
    let mut t = serde_json::to_value(v).unwrap_or_default();
    if let Some(labels) = t
        .pointer_mut("/metadata/labels")
        .and_then(serde_json::Value::as_object_mut)
    {
        labels.remove(HASH_LABEL);
        if labels.is_empty() {
            if let Some(m) = t
                .pointer_mut("/metadata")
                .and_then(serde_json::Value::as_object_mut)
            {
                m.remove("labels");
            }
        }
    }
    if t.pointer("/metadata")
        .and_then(serde_json::Value::as_object)
        .is_some_and(serde_json::Map::is_empty)
    {
        if let Some(o) = t.as_object_mut() {
            o.remove("metadata");
        }
    }
    t
}

/// Per Deployment uid: ReplicaSet name -> generation we wrote (and when: forgotten after
/// [`SETTLE_TTL`]).
type Pending = Expectations<String, BTreeMap<String, i64>>;

/// Runs the controller.
pub async fn run(client: kube::Client) -> anyhow::Result<()> {
    let wake = Arc::new(Notify::new());
    let deps = Reflector::new(Api::<Deployment>::all(client.clone()))
        .wake(wake.clone())
        .spawn();
    let rss = Reflector::new(Api::<ReplicaSet>::all(client.clone()))
        .wake(wake.clone())
        .spawn();
    watch::ready(&deps).await?;
    watch::ready(&rss).await?;
    let mut pending = Pending::with_ttl(SETTLE_TTL);
    let mut lp = Loop::new(wake, Duration::from_secs(2));
    loop {
        round(&client, &deps, &rss, &mut pending).await;
        lp.after(()).await;
    }
}

async fn round(
    client: &kube::Client,
    deps: &Store<Deployment>,
    rss: &Store<ReplicaSet>,
    pending: &mut Pending,
) {
    let all_rs = rss.state();
    let all_deps = deps.state();
    pending.settle(|uid, writes| {
        let settled = writes.iter().all(|(name, generation)| {
            all_rs
                .iter()
                .any(|r| r.name_any() == *name && r.metadata.generation.unwrap_or(0) >= *generation)
        });
        settled || !all_deps.iter().any(|d| d.uid().as_deref() == Some(uid))
    });
    for d in all_deps {
        let uid = d.uid().unwrap_or_default();
        if pending.contains(&uid) || d.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let mut s = Sync {
            client,
            d: &d,
            ns: d.namespace().unwrap_or_default(),
            writes: BTreeMap::new(),
        };
        let res = s.sync(&all_rs).await;
        if !s.writes.is_empty() {
            pending.expect(uid, s.writes);
        }
        if let Err(e) = res {
            tracing::info!(
                "deployment {}/{}: {e} (retrying)",
                d.namespace().unwrap_or_default(),
                d.name_any()
            );
        }
    }
}

struct Sync<'a> {
    client: &'a kube::Client,
    d: &'a Deployment,
    ns: String,
    /// ReplicaSets written this round (name -> generation).
    writes: BTreeMap<String, i64>,
}

impl Sync<'_> {
    fn rs_api(&self) -> Api<ReplicaSet> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn sync(&mut self, all_rs: &[Arc<ReplicaSet>]) -> Result<(), Error> {
        let d = self.d;
        let uid = d.uid().unwrap_or_default();
        let spec = d
            .spec
            .as_ref()
            .ok_or_else(|| Error::Invalid("no spec".into()))?;
        let mut owned: Vec<ReplicaSet> = Vec::new();
        for rs in all_rs
            .iter()
            .filter(|r| r.namespace().as_deref() == Some(self.ns.as_str()))
        {
            match controller_of(rs.owner_references()) {
                Some(o) if o.uid == uid => owned.push((**rs).clone()),
                Some(_) => {}
                None => {
                    if rs.metadata.deletion_timestamp.is_none()
                        && selects(&spec.selector, rs.labels())
                    {
                        // Adopt the orphan.
                        let mut refs = rs.owner_references().to_vec();
                        refs.push(controller_ref(d));
                        let patch = serde_json::json!({"metadata": {
                            "resourceVersion": rs.resource_version(), "ownerReferences": refs}});
                        let got = self
                            .rs_api()
                            .patch(
                                &rs.name_any(),
                                &PatchParams::default(),
                                &Patch::Merge(patch),
                            )
                            .await?;
                        owned.push(got);
                    }
                }
            }
        }
        owned.sort_by_key(|r| {
            (
                revision(r),
                r.metadata.creation_timestamp.as_ref().map(|t| t.0),
            )
        });
        let want_template = bare_template(Some(&spec.template));
        let new_idx = owned.iter().position(|r| {
            bare_template(r.spec.as_ref().and_then(|s| s.template.as_ref())) == want_template
        });
        let (max_surge, max_unavail) = surge_and_unavailable(d)?;
        let paused = spec.paused.unwrap_or(false);
        let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");

        let mut new_rs = new_idx.map(|i| owned.remove(i));
        let old: Vec<ReplicaSet> = owned;
        if let Some(n) = new_rs.as_mut() {
            self.ensure_revision(n, &old).await?;
        }
        if !paused {
            if self.scaling_event(new_rs.as_ref(), &old) {
                self.scale(new_rs.as_mut(), &old, max_surge).await?;
            } else if recreate {
                self.recreate(&mut new_rs, &old).await?;
            } else {
                self.rolling(&mut new_rs, &old, max_surge, max_unavail)
                    .await?;
            }
            self.cleanup(&old).await?;
        }
        self.status(new_rs.as_ref(), &old, max_unavail).await
    }

    /// Whether `spec.replicas` changed since the active ReplicaSets were last scaled.
    fn scaling_event(&self, new_rs: Option<&ReplicaSet>, old: &[ReplicaSet]) -> bool {
        let want = desired(self.d).to_string();
        new_rs
            .into_iter()
            .chain(old)
            .filter(|r| rs_replicas(r) > 0)
            .any(|r| r.annotations().get(DESIRED).is_some_and(|v| *v != want))
    }

    /// Proportional scaling of the active ReplicaSets to `replicas + maxSurge` in all.
    async fn scale(
        &mut self,
        new_rs: Option<&mut ReplicaSet>,
        old: &[ReplicaSet],
        max_surge: i32,
    ) -> Result<(), Error> {
        let want = desired(self.d);
        let mut all: Vec<ReplicaSet> = old.to_vec();
        let new_name = new_rs.as_ref().map(|r| r.name_any());
        if let Some(n) = new_rs {
            all.push(n.clone());
        }
        let active: Vec<&ReplicaSet> = all.iter().filter(|r| rs_replicas(r) > 0).collect();
        if active.len() <= 1 {
            let target = active
                .first()
                .copied()
                .or_else(|| all.iter().find(|r| Some(r.name_any()) == new_name));
            if let Some(t) = target {
                let t = t.clone();
                self.scale_rs(&t, want).await?;
            }
            return Ok(());
        }
        let total: i32 = active.iter().map(|r| rs_replicas(r)).sum();
        let allowed = want + max_surge;
        let mut sizes: Vec<(String, i32)> = active
            .iter()
            .map(|r| {
                let share =
                    i64::from(rs_replicas(r)) * i64::from(allowed) / i64::from(total.max(1));
                (r.name_any(), i32::try_from(share).unwrap_or(0))
            })
            .collect();
        // The rounding leftover goes to the newest (the new ReplicaSet when active).
        let left = allowed - sizes.iter().map(|s| s.1).sum::<i32>();
        let idx = sizes
            .iter()
            .position(|s| Some(&s.0) == new_name.as_ref())
            .unwrap_or(sizes.len() - 1);
        sizes[idx].1 = (sizes[idx].1 + left).max(0);
        for (name, size) in sizes {
            if let Some(r) = active.iter().find(|r| r.name_any() == name) {
                let r = (*r).clone();
                self.scale_rs(&r, size).await?;
            }
        }
        Ok(())
    }

    async fn rolling(
        &mut self,
        new_rs: &mut Option<ReplicaSet>,
        old: &[ReplicaSet],
        max_surge: i32,
        max_unavail: i32,
    ) -> Result<(), Error> {
        let want = desired(self.d);
        let old_total: i32 = old.iter().map(rs_replicas).sum();
        // Scale the new ReplicaSet up within replicas + maxSurge.
        let cur_new = new_rs.as_ref().map_or(0, rs_replicas);
        let target_new = if cur_new > want {
            want
        } else {
            let room = want + max_surge - (old_total + cur_new);
            cur_new + room.clamp(0, want - cur_new)
        };
        match new_rs {
            None => *new_rs = Some(self.create_new(old, target_new).await?),
            Some(n) if cur_new != target_new => {
                let n2 = n.clone();
                *n = self.scale_rs(&n2, target_new).await?;
            }
            Some(_) => {}
        }
        if old_total == 0 || !self.writes.is_empty() {
            return Ok(());
        }
        // Scale old ReplicaSets down, keeping replicas - maxUnavailable available.
        let new_ref = new_rs.as_ref();
        let new_replicas = new_ref.map_or(0, rs_replicas);
        let min_available = want - max_unavail;
        let new_unavailable = new_replicas - new_ref.map_or(0, rs_available);
        let all_pods = old_total + new_replicas;
        let mut budget = all_pods - min_available - new_unavailable;
        if budget <= 0 {
            return Ok(());
        }
        let mut sizes: Vec<(ReplicaSet, i32)> =
            old.iter().map(|r| (r.clone(), rs_replicas(r))).collect();
        // First the unhealthy replicas of old ReplicaSets, oldest first.
        for (r, size) in &mut sizes {
            let unhealthy = *size - rs_available(r);
            let cut = unhealthy.min(budget).max(0);
            *size -= cut;
            budget -= cut;
        }
        // Then available ones, down to minAvailable in all.
        let available: i32 = sizes
            .iter()
            .map(|(r, s)| rs_available(r).min(*s))
            .sum::<i32>()
            + new_ref.map_or(0, rs_available);
        let mut extra = (available - min_available).min(budget);
        for (_, size) in &mut sizes {
            if extra <= 0 {
                break;
            }
            let cut = (*size).min(extra);
            *size -= cut;
            extra -= cut;
        }
        for (r, size) in sizes {
            if size != rs_replicas(&r) {
                self.scale_rs(&r, size).await?;
            }
        }
        Ok(())
    }

    async fn recreate(
        &mut self,
        new_rs: &mut Option<ReplicaSet>,
        old: &[ReplicaSet],
    ) -> Result<(), Error> {
        let mut scaled = false;
        for r in old.iter().filter(|r| rs_replicas(r) > 0) {
            self.scale_rs(r, 0).await?;
            scaled = true;
        }
        // Old pods still running, terminating included; a status older than the spec says
        // nothing yet.
        let old_running = old.iter().any(|r| {
            r.status.as_ref().is_none_or(|s| {
                s.observed_generation < r.metadata.generation
                    || s.replicas > 0
                    || s.terminating_replicas.unwrap_or(0) > 0
            })
        });
        if scaled || old_running {
            return Ok(());
        }
        let want = desired(self.d);
        match new_rs {
            None => *new_rs = Some(self.create_new(old, want).await?),
            Some(n) if rs_replicas(n) != want => {
                let n2 = n.clone();
                *n = self.scale_rs(&n2, want).await?;
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// Creates the ReplicaSet of the current template with `replicas`.
    async fn create_new(&mut self, old: &[ReplicaSet], replicas: i32) -> Result<ReplicaSet, Error> {
        let d = self.d;
        let spec = d
            .spec
            .as_ref()
            .ok_or_else(|| Error::Invalid("no spec".into()))?;
        let hash = template_hash(&serde_json::to_value(&spec.template).unwrap_or_default());
        let rev = old.iter().map(revision).max().unwrap_or(0) + 1;
        let mut template = spec.template.clone();
        let tmeta = template.metadata.get_or_insert_with(ObjectMeta::default);
        tmeta
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut selector: LabelSelector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut labels = tmeta.labels.clone().unwrap_or_default();
        labels.insert(HASH_LABEL.into(), hash.clone());
        let (max_surge, _) = surge_and_unavailable(d)?;
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("{}-{hash}", d.name_any())),
                namespace: Some(self.ns.clone()),
                labels: Some(labels),
                annotations: Some(BTreeMap::from([
                    (REVISION.to_owned(), rev.to_string()),
                    (DESIRED.to_owned(), desired(d).to_string()),
                    (MAX.to_owned(), (desired(d) + max_surge).to_string()),
                ])),
                owner_references: Some(vec![controller_ref(d)]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let created = match self.rs_api().create(&PostParams::default(), &rs).await {
            Ok(r) => r,
            Err(kube::Error::Api(s)) if s.code == 409 => {
                return Err(Error::Invalid(format!(
                    "ReplicaSet {} exists with another template (hash collision)",
                    rs.name_any()
                )))
            }
            Err(e) => return Err(e.into()),
        };
        self.writes
            .insert(created.name_any(), created.metadata.generation.unwrap_or(0));
        tracing::info!(
            "deployment {}/{}: created ReplicaSet {} (revision {rev}, {replicas} replicas)",
            self.ns,
            d.name_any(),
            created.name_any()
        );
        // The Deployment carries the revision of its new ReplicaSet.
        let dapi: Api<Deployment> = Api::namespaced(self.client.clone(), &self.ns);
        dapi.patch(
            &d.name_any(),
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"metadata": {"annotations": {REVISION: rev.to_string()}}}),
            ),
        )
        .await?;
        Ok(created)
    }

    /// A template rolled back to (`kubectl rollout undo`) gets the next revision; the Deployment
    /// carries the revision of its new ReplicaSet.
    async fn ensure_revision(
        &mut self,
        new_rs: &mut ReplicaSet,
        old: &[ReplicaSet],
    ) -> Result<(), Error> {
        let max_old = old.iter().map(revision).max().unwrap_or(0);
        if revision(new_rs) <= max_old {
            let rev = (max_old + 1).to_string();
            let patch = serde_json::json!({"metadata": {"annotations": {REVISION: rev}}});
            *new_rs = self
                .rs_api()
                .patch(
                    &new_rs.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(patch),
                )
                .await?;
        }
        let rev = revision(new_rs).to_string();
        if self.d.annotations().get(REVISION) != Some(&rev) {
            let dapi: Api<Deployment> = Api::namespaced(self.client.clone(), &self.ns);
            dapi.patch(
                &self.d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"annotations": {REVISION: rev}}})),
            )
            .await?;
        }
        Ok(())
    }

    /// Sets a ReplicaSet's replicas (and the desired/max annotations).
    async fn scale_rs(&mut self, rs: &ReplicaSet, replicas: i32) -> Result<ReplicaSet, Error> {
        let (max_surge, _) = surge_and_unavailable(self.d)?;
        let want = desired(self.d);
        let same =
            rs_replicas(rs) == replicas && rs.annotations().get(DESIRED) == Some(&want.to_string());
        if same {
            return Ok(rs.clone());
        }
        let patch = serde_json::json!({
            "metadata": {"annotations": {DESIRED: want.to_string(), MAX: (want + max_surge).to_string()}},
            "spec": {"replicas": replicas},
        });
        let got = self
            .rs_api()
            .patch(
                &rs.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await?;
        self.writes
            .insert(got.name_any(), got.metadata.generation.unwrap_or(0));
        tracing::info!(
            "deployment {}/{}: scaled ReplicaSet {} from {} to {replicas}",
            self.ns,
            self.d.name_any(),
            rs.name_any(),
            rs_replicas(rs)
        );
        Ok(got)
    }

    /// Deletes old ReplicaSets at zero beyond `revisionHistoryLimit`, oldest first.
    async fn cleanup(&mut self, old: &[ReplicaSet]) -> Result<(), Error> {
        let limit = self
            .d
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10)
            .max(0);
        let idle: Vec<&ReplicaSet> = old
            .iter()
            .filter(|r| {
                rs_replicas(r) == 0
                    && r.status.as_ref().is_none_or(|s| s.replicas == 0)
                    && r.metadata.deletion_timestamp.is_none()
            })
            .collect();
        let excess = idle
            .len()
            .saturating_sub(usize::try_from(limit).unwrap_or(0));
        for r in idle.into_iter().take(excess) {
            match self
                .rs_api()
                .delete(&r.name_any(), &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn status(
        &self,
        new_rs: Option<&ReplicaSet>,
        old: &[ReplicaSet],
        max_unavail: i32,
    ) -> Result<(), Error> {
        let d = self.d;
        let want = desired(d);
        let st = |r: &ReplicaSet, f: fn(&k8s_openapi::api::apps::v1::ReplicaSetStatus) -> i32| {
            r.status.as_ref().map_or(0, f)
        };
        let all: Vec<&ReplicaSet> = new_rs.into_iter().chain(old).collect();
        let replicas: i32 = all.iter().map(|r| st(r, |s| s.replicas)).sum();
        let ready: i32 = all
            .iter()
            .map(|r| st(r, |s| s.ready_replicas.unwrap_or(0)))
            .sum();
        let available: i32 = all
            .iter()
            .map(|r| st(r, |s| s.available_replicas.unwrap_or(0)))
            .sum();
        let updated = new_rs.map_or(0, |r| st(r, |s| s.replicas));
        let cur = d.status.clone().unwrap_or_default();
        let now = Time(jiff::Timestamp::now());
        let cond = |ty: &str, status: &str, reason: &str, message: String| {
            let prev = cur.conditions.iter().flatten().find(|c| c.type_ == ty);
            let same = prev.is_some_and(|p| {
                p.status == status
                    && p.reason.as_deref() == Some(reason)
                    && p.message.as_deref() == Some(message.as_str())
            });
            if let (true, Some(p)) = (same, prev) {
                return p.clone();
            }
            DeploymentCondition {
                type_: ty.into(),
                status: status.into(),
                reason: Some(reason.into()),
                message: Some(message),
                last_update_time: Some(now.clone()),
                last_transition_time: match prev {
                    Some(p) if p.status == status => p.last_transition_time.clone(),
                    _ => Some(now.clone()),
                },
            }
        };
        let available_cond = if available >= want - max_unavail {
            cond(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
            )
        } else {
            cond(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
            )
        };
        let complete = new_rs.is_some()
            && updated == want
            && replicas == want
            && available == want
            && new_rs.is_some_and(|r| rs_replicas(r) == want)
            && old.iter().all(|r| rs_replicas(r) == 0);
        let rs_name = new_rs.map(ResourceExt::name_any).unwrap_or_default();
        let progressing = if complete {
            cond(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
            )
        } else {
            cond(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{rs_name}\" is progressing."),
            )
        };
        let status = DeploymentStatus {
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            ready_replicas: Some(ready),
            available_replicas: Some(available),
            unavailable_replicas: Some((want - available).max(0)),
            observed_generation: d.metadata.generation,
            conditions: Some(vec![available_cond, progressing]),
            collision_count: cur.collision_count,
            terminating_replicas: None,
        };
        if serde_json::to_value(&status).ok() == serde_json::to_value(&cur).ok() {
            return Ok(());
        }
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.ns);
        api.patch_status(
            &d.name_any(),
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": status})),
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(replicas: i32, surge: serde_json::Value, unavail: serde_json::Value) -> Deployment {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "d"}, "spec": {
            "replicas": replicas, "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavail}}}}))
        .unwrap()
    }

    #[test]
    fn surge_rounds_up_unavailable_down() {
        use serde_json::json;
        assert_eq!(
            surge_and_unavailable(&dep(10, json!("25%"), json!("25%"))).unwrap(),
            (3, 2)
        );
        assert_eq!(
            surge_and_unavailable(&dep(6, json!(1), json!(2))).unwrap(),
            (1, 2)
        );
        assert_eq!(
            surge_and_unavailable(&dep(3, json!("10%"), json!("10%"))).unwrap(),
            (1, 0)
        );
        assert_eq!(
            surge_and_unavailable(&dep(3, json!(0), json!(0))).unwrap(),
            (0, 1)
        );
        assert_eq!(
            surge_and_unavailable(&dep(1, json!("0%"), json!("50%"))).unwrap(),
            (0, 1)
        );
        assert!(surge_and_unavailable(&dep(3, json!("x%"), json!(1))).is_err());
    }

    #[test]
    fn hashes_are_stable_and_differ_by_template() {
        let a = serde_json::json!({"spec": {"containers": [{"image": "a"}]}});
        let b = serde_json::json!({"spec": {"containers": [{"image": "b"}]}});
        assert_eq!(template_hash(&a), template_hash(&a));
        assert_ne!(template_hash(&a), template_hash(&b));
        assert_eq!(template_hash(&a).len(), 10);
    }
}
