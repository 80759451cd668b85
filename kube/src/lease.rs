//! Heartbeat Leases (`coordination.k8s.io/v1`) in `kube-node-lease`: a component proves it is
//! alive by renewing its own Lease ([`heartbeat`]); whoever watches judges those Leases on its
//! own clock ([`Freshness`]), as client-go's leader election does, so clock skew between nodes
//! does not matter.
//!
//! Two kinds live there: the kubelet's node Lease (`<node>`, the Node's heartbeat) and the L2
//! announcer's ([`announcer_lease`], `ferry-l2-<node>`, labelled [`ANNOUNCER_LABEL`]): the agent
//! announcing LoadBalancer addresses on a node renews it, so the other agents move that node's
//! addresses away when the agent dies even though the Node stays Ready.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The namespace of the heartbeat Leases.
pub const NAMESPACE: &str = "kube-node-lease";
/// The label (key, value) on every L2 announcer Lease, so the agents watch only those.
pub const ANNOUNCER_LABEL: (&str, &str) = ("ferry.dev/lease", "l2-announcer");
const ANNOUNCER_PREFIX: &str = "ferry-l2-";

/// The name of node `node`'s L2 announcer Lease.
pub fn announcer_lease(node: &str) -> String {
    format!("{ANNOUNCER_PREFIX}{node}")
}

/// The node whose L2 announcer Lease `lease` names (`None` for any other Lease).
pub fn announcer_node(lease: &str) -> Option<&str> {
    lease
        .strip_prefix(ANNOUNCER_PREFIX)
        .filter(|n| !n.is_empty())
}

/// What [`heartbeat`] renews.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// The Lease's name (in [`NAMESPACE`]).
    pub name: String,
    /// `spec.holderIdentity`.
    pub holder: String,
    /// `spec.leaseDurationSeconds`: how long after a renewal others may still count on it.
    pub duration: Duration,
    /// How often it is renewed.
    pub interval: Duration,
    /// The holder's Node (name, uid): the Lease's owner, so the garbage collector removes it
    /// with the Node.
    pub node: Option<(String, String)>,
    /// Labels set when the Lease is created.
    pub labels: BTreeMap<String, String>,
}

/// When the last successful renewal started (shared with whoever must know whether the others
/// still count this holder as alive).
pub type Renewed = Arc<Mutex<Option<Instant>>>;

/// Renews the Lease every `interval` forever (creating it when missing; each renewal also
/// restores `labels`); each success records the instant its request started in `renewed`.
/// Failures are logged and retried at the next interval; a request gets at most one interval
/// (at least a second), so a hung connection does not hold the heartbeat.
pub async fn heartbeat(api: Api<Lease>, hb: Heartbeat, renewed: Option<Renewed>) {
    let limit = hb.interval.max(Duration::from_secs(1));
    loop {
        let started = Instant::now();
        let ok = match tokio::time::timeout(limit, renew(&api, &hb)).await {
            Ok(ok) => ok,
            Err(_) => {
                tracing::warn!(lease = %hb.name, "renewing the lease: no answer within {limit:?}");
                false
            }
        };
        if ok {
            if let Some(r) = &renewed {
                *r.lock().unwrap_or_else(|e| e.into_inner()) = Some(started);
            }
        }
        tokio::time::sleep(hb.interval).await;
    }
}

/// One renewal (or creation); whether it succeeded.
async fn renew(api: &Api<Lease>, hb: &Heartbeat) -> bool {
    let secs = i32::try_from(hb.duration.as_secs().max(1)).unwrap_or(i32::MAX);
    let now = MicroTime(jiff::Timestamp::now());
    let renew = json!({"metadata": {"labels": hb.labels},
                       "spec": {"renewTime": now, "holderIdentity": hb.holder,
                                "leaseDurationSeconds": secs}});
    match api
        .patch(&hb.name, &PatchParams::default(), &Patch::Merge(&renew))
        .await
    {
        Ok(_) => true,
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let owner = hb.node.as_ref().map(|(name, uid)| {
                vec![json!({"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid})]
            });
            let lease: Result<Lease, _> = serde_json::from_value(json!({
                "metadata": {"name": hb.name, "namespace": NAMESPACE,
                    "labels": hb.labels, "ownerReferences": owner},
                "spec": {"holderIdentity": hb.holder, "leaseDurationSeconds": secs,
                    "renewTime": now},
            }));
            match lease {
                Ok(lease) => match api.create(&PostParams::default(), &lease).await {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::warn!(lease = %hb.name, "creating the lease: {e}");
                        false
                    }
                },
                Err(e) => {
                    tracing::warn!(lease = %hb.name, "building the lease: {e}");
                    false
                }
            }
        }
        Err(e) => {
            tracing::warn!(lease = %hb.name, "renewing the lease: {e}");
            false
        }
    }
}

/// Whether a holder that last renewed (successfully) at `renewed` is still counted alive by
/// the others at `now`: the others see a renewal no earlier than it started, so they count it
/// at least `duration` after that.
pub fn self_fresh(renewed: Option<Instant>, duration: Duration, now: Instant) -> bool {
    renewed.is_some_and(|t| now.saturating_duration_since(t) < duration)
}

/// Other holders' Leases judged on this process's clock: a Lease is fresh until its
/// `leaseDurationSeconds` after this process last saw its `renewTime` (or holder) change. A
/// Lease first seen counts as just renewed (so a watcher that starts gives a dead holder one
/// duration before it stops counting on it, never less than the holder promised).
#[derive(Debug, Default)]
pub struct Freshness {
    seen: HashMap<String, Seen>,
}

#[derive(Debug)]
struct Seen {
    renew: Option<jiff::Timestamp>,
    holder: Option<String>,
    duration: Duration,
    at: Instant,
}

impl Freshness {
    /// Takes in the Leases a watch shows now (Leases gone are forgotten).
    pub fn observe(&mut self, leases: &[Arc<Lease>], now: Instant) {
        let mut names = BTreeSet::new();
        for l in leases {
            let Some(name) = l.metadata.name.clone() else {
                continue;
            };
            let spec = l.spec.as_ref();
            let renew = spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0);
            let holder = spec.and_then(|s| s.holder_identity.clone());
            let duration = Duration::from_secs(
                spec.and_then(|s| s.lease_duration_seconds)
                    .and_then(|d| u64::try_from(d).ok())
                    .unwrap_or(0),
            );
            names.insert(name.clone());
            match self.seen.get_mut(&name) {
                Some(s) if s.renew == renew && s.holder == holder => s.duration = duration,
                _ => {
                    self.seen.insert(
                        name,
                        Seen {
                            renew,
                            holder,
                            duration,
                            at: now,
                        },
                    );
                }
            }
        }
        self.seen.retain(|n, _| names.contains(n));
    }

    /// The Leases fresh at `now` (held, with a renewal seen less than their duration ago):
    /// name -> holder.
    pub fn fresh(&self, now: Instant) -> BTreeMap<String, String> {
        self.seen
            .iter()
            .filter(|(_, s)| s.renew.is_some() && now.saturating_duration_since(s.at) < s.duration)
            .filter_map(|(n, s)| {
                let h = s.holder.as_deref().filter(|h| !h.is_empty())?;
                Some((n.clone(), h.to_owned()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(name: &str, holder: &str, renew: &str, secs: i32) -> Arc<Lease> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name},
                "spec": {"holderIdentity": holder, "renewTime": renew,
                         "leaseDurationSeconds": secs}}))
            .unwrap(),
        )
    }

    #[test]
    fn announcer_lease_names_round_trip() {
        assert_eq!(announcer_lease("node-1"), "ferry-l2-node-1");
        assert_eq!(announcer_node("ferry-l2-node-1"), Some("node-1"));
        assert_eq!(announcer_node("node-1"), None, "the kubelet's Lease");
        assert_eq!(announcer_node("ferry-l2-"), None);
    }

    #[test]
    fn leases_expire_a_duration_after_their_last_seen_renewal_on_our_clock() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut f = Freshness::default();
        // Renew times far in the past or future do not matter: only changes do.
        f.observe(
            &[
                lease("a", "a", "2001-01-01T00:00:00.000000Z", 10),
                lease("b", "b", "2099-01-01T00:00:00.000000Z", 10),
            ],
            t0,
        );
        assert_eq!(
            f.fresh(t0 + 9 * s).len(),
            2,
            "first sight counts as a renewal"
        );
        // a renews at t0 + 8 s; b does not.
        f.observe(
            &[
                lease("a", "a", "2001-01-01T00:00:08.000000Z", 10),
                lease("b", "b", "2099-01-01T00:00:00.000000Z", 10),
            ],
            t0 + 8 * s,
        );
        assert_eq!(
            f.fresh(t0 + 10 * s),
            BTreeMap::from([("a".to_owned(), "a".to_owned())])
        );
        assert!(f.fresh(t0 + 18 * s).is_empty());
        // A renewal after expiry makes it fresh again; a Lease gone is forgotten.
        f.observe(
            &[lease("b", "b", "2099-01-01T00:00:20.000000Z", 10)],
            t0 + 20 * s,
        );
        assert_eq!(
            f.fresh(t0 + 21 * s),
            BTreeMap::from([("b".to_owned(), "b".to_owned())])
        );
        // Released (empty holder) or zero duration: not fresh.
        f.observe(
            &[
                lease("b", "", "2099-01-01T00:00:21.000000Z", 10),
                lease("c", "c", "2099-01-01T00:00:21.000000Z", 0),
            ],
            t0 + 21 * s,
        );
        assert!(f.fresh(t0 + 21 * s).is_empty());
    }

    #[test]
    fn a_holder_counts_itself_alive_only_a_duration_after_its_last_successful_renewal() {
        let t0 = Instant::now();
        let d = Duration::from_secs(10);
        assert!(!self_fresh(None, d, t0), "never renewed");
        assert!(self_fresh(Some(t0), d, t0 + Duration::from_secs(9)));
        assert!(!self_fresh(Some(t0), d, t0 + d));
    }
}
