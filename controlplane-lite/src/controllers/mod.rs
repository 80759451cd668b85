//! Controllers that run inside `ferry-server`. Each talks to the API with kube-rs only
//! (watch -> local store -> reconcile), so it works against any Kubernetes API server. The
//! watches ([`ferry_kube::watch`]), the loop around each round ([`ferry_kube::Loop`]) and the
//! writes not yet seen in a store ([`ferry_kube::Expectations`]) come from `ferry-kube`.
//!
//! | module | job |
//! |---|---|
//! | [`nodeipam`] | a `spec.podCIDR` for every Node |
//! | [`endpointslice`] | EndpointSlices of every Service with a selector |
//! | [`kubernetes_service`] | the `default/kubernetes` Service, its EndpointSlice and Endpoints (the API server's own; runs also with `--controllers false`) |
//! | [`nodelifecycle`] | unreachable nodes: taints, not-ready pods, eviction |
//! | [`replicaset`] | ReplicaSet -> Pods |
//! | [`deployment`] | Deployment -> ReplicaSets (rolling update, recreate, scaling, status) |
//! | [`gc`] | garbage collection by ownerReferences (background, foreground, orphan) |
//! | [`lbipam`] | an address of `--loadbalancer-pool` for every LoadBalancer Service |

pub mod deployment;
pub mod endpointslice;
pub mod gc;
pub mod kubernetes_service;
pub mod lbipam;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod replicaset;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::Resource;
use std::collections::BTreeMap;

/// How long a controller whose round scans every object it watches ([`gc`], [`endpointslice`])
/// waits after a round that took `cost` before it may start the next: twice the cost, at most
/// 500 ms. Those rounds are woken by every change, so under a stream of writes (30,000 Services
/// created through the API) back-to-back O(n) rounds took the server's CPU from the writes
/// themselves and the create rate fell with the object count (409/s at 2,000 Services, 20/s at
/// 8,000); paced, a controller uses at most a third of a core and still sees every change
/// (the wake-up is kept while it waits).
pub(crate) fn pause_after(cost: std::time::Duration) -> std::time::Duration {
    cost.saturating_mul(2)
        .min(std::time::Duration::from_millis(500))
}

/// Whether `selector` (a `metav1.LabelSelector`) selects `labels`; a selector that does not
/// parse selects nothing.
pub(crate) fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let Ok(v) = serde_json::to_value(selector) else {
        return false;
    };
    ferry_apimachinery::selector::label_selector_from_json(Some(&v))
        .is_ok_and(|s| !s.is_everything() && s.matches(labels))
}

/// The controller ownerReference of an object, if any.
pub(crate) fn controller_of(refs: &[OwnerReference]) -> Option<&OwnerReference> {
    refs.iter().find(|o| o.controller == Some(true))
}

/// A controller ownerReference to `owner` (controller and blockOwnerDeletion set).
pub(crate) fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    let meta = owner.meta();
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// RFC 3339 time in seconds since the epoch, if it parses.
pub(crate) fn seconds_since(t: &jiff::Timestamp) -> i64 {
    jiff::Timestamp::now().as_second() - t.as_second()
}

#[cfg(test)]
mod tests {
    use super::pause_after;
    use std::time::Duration;

    #[test]
    fn full_scan_rounds_are_paced_by_their_cost() {
        assert_eq!(pause_after(Duration::ZERO), Duration::ZERO);
        assert_eq!(
            pause_after(Duration::from_micros(300)),
            Duration::from_micros(600),
            "a small cluster's round waits next to nothing"
        );
        assert_eq!(
            pause_after(Duration::from_millis(40)),
            Duration::from_millis(80)
        );
        assert_eq!(
            pause_after(Duration::from_secs(3)),
            Duration::from_millis(500),
            "capped: a slow round never delays the next by more than half a second"
        );
    }
}
