//! Garbage collector: acts on `metadata.ownerReferences`.
//!
//! It watches every kind `ferry-server` serves (`resources::RESOURCES`) and, each round (on
//! every change and every two seconds):
//! - **background**: a dependent all of whose owners are gone (no object with that uid) is
//!   deleted; dangling references next to live owners are removed. Absence is confirmed by a live
//!   GET of the owner before anything is deleted, so a dependent created just before its owner
//!   shows up in the local store is safe;
//! - **foreground** (owner marked for deletion with finalizer `foregroundDeletion`): its
//!   dependents are deleted (foreground too, except pods), and once no dependent with
//!   `blockOwnerDeletion` is left the finalizer is removed, which completes the deletion;
//! - **orphan** (finalizer `orphan`): the owner's reference is removed from every dependent,
//!   then the finalizer, which completes the deletion.
//!
//! The API server adds those finalizers for `DELETE` with `propagationPolicy` `Foreground` or
//! `Orphan` (see `admission::Propagation`).

use crate::resources::{Resource, RESOURCES};
use ferry_kube::watch::{self, Reflector};
use ferry_kube::Loop;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::Store;
use kube::ResourceExt;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Finalizer of a foreground deletion.
pub const FOREGROUND: &str = "foregroundDeletion";
/// Finalizer of an orphaning deletion.
pub const ORPHAN: &str = "orphan";

fn api_resource(r: &Resource) -> ApiResource {
    ApiResource {
        group: r.group.into(),
        version: r.version.into(),
        api_version: r.api_version(),
        kind: r.kind.into(),
        plural: r.plural.into(),
    }
}

/// One watched kind.
struct Kind {
    ar: ApiResource,
    namespaced: bool,
    store: Store<DynamicObject>,
}

/// An object seen in some store.
struct Obj {
    kind: usize,
    obj: Arc<DynamicObject>,
}

/// Runs the garbage collector.
pub async fn run(client: kube::Client) -> anyhow::Result<()> {
    let wake = Arc::new(Notify::new());
    let mut kinds = Vec::new();
    for r in RESOURCES {
        let ar = api_resource(r);
        let store = Reflector::with_dyntype(
            Api::<DynamicObject>::all_with(client.clone(), &ar),
            ar.clone(),
        )
        .wake(wake.clone())
        .spawn();
        kinds.push(Kind {
            ar,
            namespaced: r.namespaced,
            store,
        });
    }
    for k in &kinds {
        watch::ready(&k.store).await?;
    }
    let mut lp = Loop::new(wake, Duration::from_secs(2));
    loop {
        let start = std::time::Instant::now();
        round(&client, &kinds).await;
        tokio::time::sleep(super::pause_after(start.elapsed())).await;
        lp.after(()).await;
    }
}

fn api(client: &kube::Client, k: &Kind, ns: Option<&str>) -> Api<DynamicObject> {
    match ns.filter(|_| k.namespaced) {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &k.ar),
        None => Api::all_with(client.clone(), &k.ar),
    }
}

async fn round(client: &kube::Client, kinds: &[Kind]) {
    let mut all: Vec<Obj> = Vec::new();
    for (i, k) in kinds.iter().enumerate() {
        all.extend(k.store.state().into_iter().map(|obj| Obj { kind: i, obj }));
    }
    let by_uid: HashMap<String, &Obj> = all
        .iter()
        .filter_map(|o| o.obj.uid().map(|u| (u, o)))
        .collect();
    // Dependents per owner uid.
    let mut dependents: HashMap<&str, Vec<&Obj>> = HashMap::new();
    for o in &all {
        for r in o.obj.owner_references() {
            dependents.entry(r.uid.as_str()).or_default().push(o);
        }
    }
    // Owners being deleted with a propagation finalizer.
    for o in &all {
        if o.obj.metadata.deletion_timestamp.is_none() {
            continue;
        }
        let fins = o.obj.finalizers();
        let uid = o.obj.uid().unwrap_or_default();
        let deps = dependents.get(uid.as_str()).cloned().unwrap_or_default();
        let res = if fins.iter().any(|f| f == ORPHAN) {
            orphan(client, kinds, o, &deps).await
        } else if fins.iter().any(|f| f == FOREGROUND) {
            foreground(client, kinds, o, &deps).await
        } else {
            Ok(())
        };
        if let Err(e) = res {
            tracing::info!(
                "gc: {} {}: {e} (retrying)",
                kinds[o.kind].ar.kind,
                o.obj.name_any()
            );
        }
    }
    // Dependents with absent owners.
    let mut checked: HashMap<String, bool> = HashMap::new();
    for o in &all {
        let refs = o.obj.owner_references();
        // Objects already being deleted are left to finish.
        if refs.is_empty() || o.obj.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let missing: Vec<&OwnerReference> = refs
            .iter()
            .filter(|r| !by_uid.contains_key(&r.uid))
            .collect();
        if missing.is_empty() {
            continue;
        }
        let ns = o.obj.namespace();
        let mut gone = HashSet::new();
        for r in &missing {
            let absent = match checked.get(&r.uid) {
                Some(a) => *a,
                None => {
                    let a = owner_absent(client, kinds, r, ns.as_deref()).await;
                    checked.insert(r.uid.clone(), a);
                    a
                }
            };
            if absent {
                gone.insert(r.uid.clone());
            }
        }
        if gone.is_empty() {
            continue;
        }
        let res = if gone.len() == refs.len() {
            delete(client, kinds, o, false).await
        } else {
            strip_refs(client, kinds, o, &gone).await
        };
        if let Err(e) = res {
            tracing::info!(
                "gc: {} {}: {e} (retrying)",
                kinds[o.kind].ar.kind,
                o.obj.name_any()
            );
        }
    }
}

/// Whether the owner `r` is confirmed absent (a kind we do not know is never absent; a
/// namespaced dependent's owner is looked up in its namespace).
async fn owner_absent(
    client: &kube::Client,
    kinds: &[Kind],
    r: &OwnerReference,
    ns: Option<&str>,
) -> bool {
    let Some(k) = kinds
        .iter()
        .find(|k| k.ar.kind == r.kind && k.ar.api_version == r.api_version)
    else {
        return false;
    };
    match api(client, k, ns).get_opt(&r.name).await {
        Ok(None) => true,
        Ok(Some(o)) => o.uid().as_deref() != Some(r.uid.as_str()),
        Err(e) => {
            tracing::info!("gc: looking up owner {} {}: {e}", r.kind, r.name);
            false
        }
    }
}

async fn delete(
    client: &kube::Client,
    kinds: &[Kind],
    o: &Obj,
    foreground: bool,
) -> kube::Result<()> {
    let k = &kinds[o.kind];
    // Pods have no dependents; foreground would only add a finalizer a kubelet never removes.
    let mut dp = if foreground && k.ar.kind != "Pod" {
        DeleteParams::foreground()
    } else {
        DeleteParams::background()
    };
    // Never a namesake created since.
    dp.preconditions = Some(Preconditions {
        uid: o.obj.uid(),
        resource_version: None,
    });
    tracing::info!("gc: deleting {} {}", k.ar.kind, o.obj.name_any());
    match api(client, k, o.obj.namespace().as_deref())
        .delete(&o.obj.name_any(), &dp)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes the references to `uids` from `o`.
async fn strip_refs(
    client: &kube::Client,
    kinds: &[Kind],
    o: &Obj,
    uids: &HashSet<String>,
) -> kube::Result<()> {
    let refs: Vec<&OwnerReference> = o
        .obj
        .owner_references()
        .iter()
        .filter(|r| !uids.contains(&r.uid))
        .collect();
    let patch = serde_json::json!({"metadata": {
        "resourceVersion": o.obj.resource_version(),
        "ownerReferences": if refs.is_empty() { serde_json::Value::Null } else { serde_json::json!(refs) },
    }});
    patch_ignoring_gone(client, kinds, o, patch).await
}

async fn patch_ignoring_gone(
    client: &kube::Client,
    kinds: &[Kind],
    o: &Obj,
    patch: serde_json::Value,
) -> kube::Result<()> {
    match api(client, &kinds[o.kind], o.obj.namespace().as_deref())
        .patch(
            &o.obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Gone, or changed since the store saw it: the next round sees the new state.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes finalizer `f` from `o`.
async fn remove_finalizer(
    client: &kube::Client,
    kinds: &[Kind],
    o: &Obj,
    f: &str,
) -> kube::Result<()> {
    let fins: Vec<&String> = o.obj.finalizers().iter().filter(|x| *x != f).collect();
    tracing::info!(
        "gc: {} {}: dependents done, removing finalizer {f}",
        kinds[o.kind].ar.kind,
        o.obj.name_any()
    );
    let patch = serde_json::json!({"metadata": {
        "resourceVersion": o.obj.resource_version(),
        "finalizers": if fins.is_empty() { serde_json::Value::Null } else { serde_json::json!(fins) },
    }});
    patch_ignoring_gone(client, kinds, o, patch).await
}

async fn orphan(
    client: &kube::Client,
    kinds: &[Kind],
    owner: &Obj,
    deps: &[&Obj],
) -> kube::Result<()> {
    let uid: HashSet<String> = owner.obj.uid().into_iter().collect();
    for d in deps {
        strip_refs(client, kinds, d, &uid).await?;
    }
    if deps.is_empty() {
        remove_finalizer(client, kinds, owner, ORPHAN).await?;
    }
    Ok(())
}

async fn foreground(
    client: &kube::Client,
    kinds: &[Kind],
    owner: &Obj,
    deps: &[&Obj],
) -> kube::Result<()> {
    for d in deps {
        if d.obj.metadata.deletion_timestamp.is_none() {
            delete(client, kinds, d, true).await?;
        }
    }
    let uid = owner.obj.uid().unwrap_or_default();
    let blocking = deps.iter().any(|d| {
        d.obj
            .owner_references()
            .iter()
            .any(|r| r.uid == uid && r.block_owner_deletion == Some(true))
    });
    if !blocking {
        remove_finalizer(client, kinds, owner, FOREGROUND).await?;
    }
    Ok(())
}
