//! LoadBalancer IPAM: gives every `type: LoadBalancer` Service without `spec.loadBalancerClass`
//! one address of the pool (`ferry-server --loadbalancer-pool CIDR`) in
//! `status.loadBalancer.ingress[0].ip`, like k3s's ServiceLB or MetalLB's IPAM. The agents then
//! translate that address and one node announces it on the underlay (the agent's `service::l2`).
//!
//! Level-triggered and stateless: which addresses are in use is read from the Services' own
//! status on every round, so a restarted server (or a new leader) keeps every assignment as it
//! was, and an address is free again as soon as its Service is deleted, changes type or gets a
//! `loadBalancerClass`. `spec.loadBalancerIP` is honoured when it is in the pool and free.
//! A Service that gets no address (pool exhausted, requested address taken or outside the pool)
//! stays pending and gets a Warning Event `AllocationFailed`; it is served as soon as an address
//! is freed (the next round sees it). Writes are status patches guarded by the resourceVersion
//! the decision was made on.

use ferry_kube::watch::{self, Reflector};
use ferry_kube::{Expectations, Loop};
use ipnetwork::Ipv4Network;
use k8s_openapi::api::core::v1::{Event, Service};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::ResourceExt;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// The Event reason of a Service that could not get an address.
pub const ALLOCATION_FAILED: &str = "AllocationFailed";

/// The addresses LoadBalancer Services get, from one or more IPv4 CIDRs (every address of each,
/// network and broadcast included: on an L2 segment they are ordinary host addresses of the
/// larger subnet the pool is carved from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    ranges: Vec<Ipv4Network>,
}

/// A pool that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// A range overlaps the ClusterIP range.
    #[error("--loadbalancer-pool {0} overlaps the service CIDR {1}")]
    OverlapsServiceCidr(Ipv4Network, Ipv4Network),
    /// A range overlaps the pod range.
    #[error("--loadbalancer-pool {0} overlaps the cluster CIDR {1}")]
    OverlapsClusterCidr(Ipv4Network, Ipv4Network),
    /// Two ranges of the pool overlap.
    #[error("--loadbalancer-pool {0} overlaps --loadbalancer-pool {1}")]
    Overlapping(Ipv4Network, Ipv4Network),
}

impl Pool {
    /// A pool of `ranges`, which must not overlap each other, the service CIDR or the cluster
    /// (pod) CIDR. An empty list is an empty pool (every LoadBalancer Service stays pending).
    pub fn new(
        ranges: &[Ipv4Network],
        service_cidr: Ipv4Network,
        cluster_cidr: Ipv4Network,
    ) -> Result<Pool, PoolError> {
        for (i, r) in ranges.iter().enumerate() {
            if r.overlaps(service_cidr) {
                return Err(PoolError::OverlapsServiceCidr(*r, service_cidr));
            }
            if r.overlaps(cluster_cidr) {
                return Err(PoolError::OverlapsClusterCidr(*r, cluster_cidr));
            }
            if let Some(o) = ranges[..i].iter().find(|o| o.overlaps(*r)) {
                return Err(PoolError::Overlapping(*r, *o));
            }
        }
        Ok(Pool {
            ranges: ranges.to_vec(),
        })
    }

    /// The ranges, as given.
    pub fn ranges(&self) -> &[Ipv4Network] {
        &self.ranges
    }

    /// Whether `ip` is in the pool.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.ranges.iter().any(|r| r.contains(ip))
    }

    /// Every address, range by range, in ascending order within each range.
    pub fn addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.ranges.iter().flat_map(|r| r.iter())
    }

    /// How many addresses the pool has.
    pub fn size(&self) -> u64 {
        self.ranges.iter().map(|r| u64::from(r.size())).sum()
    }
}

/// Settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The addresses to hand out.
    pub pool: Pool,
}

/// What one Service should get, as [`plan`] decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Write `ip` as the Service's only ingress address.
    Assign {
        /// `namespace/name`.
        service: String,
        /// The address.
        ip: Ipv4Addr,
    },
    /// Remove the Service's pool address (it is no longer a LoadBalancer Service of ours).
    Release {
        /// `namespace/name`.
        service: String,
    },
    /// No address can be given now: the Service stays pending.
    Pending {
        /// `namespace/name`.
        service: String,
        /// Why (the Event's message).
        reason: String,
    },
}

/// Whether the controller serves `svc`: `type: LoadBalancer` and no `loadBalancerClass`.
pub fn wants_address(svc: &Service) -> bool {
    svc.spec.as_ref().is_some_and(|s| {
        s.type_.as_deref() == Some("LoadBalancer") && s.load_balancer_class.is_none()
    })
}

/// The Service's ingress addresses that are in `pool`.
fn pool_ingress(svc: &Service, pool: &Pool) -> Vec<Ipv4Addr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .filter(|ip| pool.contains(*ip))
        .collect()
}

/// `spec.loadBalancerIP`: `None` if unset or empty, `Some(Err(text))` if it is not an IPv4
/// address.
fn requested(svc: &Service) -> Option<Result<Ipv4Addr, String>> {
    let r = svc.spec.as_ref()?.load_balancer_ip.as_deref()?;
    if r.is_empty() {
        return None;
    }
    Some(r.parse().map_err(|_| r.to_owned()))
}

fn key(svc: &Service) -> String {
    format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any())
}

/// What every Service should get (pure). `in_flight`: addresses assigned by this controller
/// that the Services in `services` do not show yet, by Service key; those Services are left
/// alone and their addresses count as used.
///
/// Services keep the pool address they show (the oldest holder wins if two show the same one);
/// the others get their requested address or the lowest free one, oldest Service first.
pub fn plan(
    services: &[Arc<Service>],
    pool: &Pool,
    in_flight: &HashMap<String, Ipv4Addr>,
) -> Vec<Step> {
    let mut ordered: Vec<&Service> = services.iter().map(AsRef::as_ref).collect();
    ordered.sort_by_key(|s| (s.metadata.creation_timestamp.clone().map(|t| t.0), key(s)));
    let mut used: BTreeMap<Ipv4Addr, String> =
        in_flight.iter().map(|(k, ip)| (*ip, k.clone())).collect();
    let mut steps = Vec::new();
    let mut need = Vec::new();
    for svc in ordered {
        let k = key(svc);
        if in_flight.contains_key(&k) {
            continue;
        }
        let held = pool_ingress(svc, pool);
        if !wants_address(svc) {
            if !held.is_empty() {
                steps.push(Step::Release { service: k });
            }
            continue;
        }
        let req = requested(svc);
        let keep = match (&req, held.as_slice()) {
            // Exactly one pool address, the one asked for (if any), nobody older holds it.
            (None, [ip]) => Some(*ip),
            (Some(Ok(r)), [ip]) if r == ip => Some(*ip),
            _ => None,
        }
        .filter(|ip| !used.contains_key(ip));
        match keep {
            Some(ip) => {
                used.insert(ip, k);
            }
            None => need.push((svc, k, req)),
        }
    }
    for (_, k, req) in need {
        let step = match req {
            Some(Err(text)) => Step::Pending {
                service: k,
                reason: format!("spec.loadBalancerIP {text:?} is not an IPv4 address"),
            },
            Some(Ok(ip)) if !pool.contains(ip) => Step::Pending {
                service: k,
                reason: format!(
                    "spec.loadBalancerIP {ip} is not in the LoadBalancer pool ({})",
                    ranges_text(pool)
                ),
            },
            Some(Ok(ip)) => match used.get(&ip) {
                Some(other) => Step::Pending {
                    service: k,
                    reason: format!("spec.loadBalancerIP {ip} is already assigned to {other}"),
                },
                None => {
                    used.insert(ip, k.clone());
                    Step::Assign { service: k, ip }
                }
            },
            None => match pool.addresses().find(|ip| !used.contains_key(ip)) {
                Some(ip) => {
                    used.insert(ip, k.clone());
                    Step::Assign { service: k, ip }
                }
                None => Step::Pending {
                    service: k,
                    reason: format!(
                        "no address left in the LoadBalancer pool ({}, {} addresses)",
                        ranges_text(pool),
                        pool.size()
                    ),
                },
            },
        };
        steps.push(step);
    }
    steps
}

fn ranges_text(pool: &Pool) -> String {
    if pool.ranges.is_empty() {
        return "empty".into();
    }
    pool.ranges
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs the controller.
pub async fn run(client: kube::Client, cfg: Config) -> anyhow::Result<()> {
    let api: Api<Service> = Api::all(client.clone());
    let wake = Arc::new(Notify::new());
    let store = Reflector::new(api).wake(wake.clone()).spawn();
    watch::ready(&store).await?;
    tracing::info!(
        "LoadBalancer IPAM: pool {} ({} addresses)",
        ranges_text(&cfg.pool),
        cfg.pool.size()
    );
    // Assignments written but not yet in the store: without them the next round could hand the
    // same address to another Service. Service key -> address.
    let mut in_flight: Expectations<String, Ipv4Addr> =
        Expectations::with_ttl(Duration::from_secs(30));
    // The last warning recorded per Service uid (one Event per distinct reason, not per round).
    let mut warned: HashMap<String, String> = HashMap::new();
    let mut lp = Loop::new(wake, Duration::from_secs(10));
    loop {
        reconcile(&client, &store, &cfg, &mut in_flight, &mut warned).await;
        lp.after(()).await;
    }
}

async fn reconcile(
    client: &kube::Client,
    store: &Store<Service>,
    cfg: &Config,
    in_flight: &mut Expectations<String, Ipv4Addr>,
    warned: &mut HashMap<String, String>,
) {
    let services = store.state();
    let by_key: HashMap<String, &Arc<Service>> = services.iter().map(|s| (key(s), s)).collect();
    // Settled: the Service shows the address, or is gone.
    in_flight.settle(|k, ip| {
        by_key
            .get(k)
            .is_none_or(|s| pool_ingress(s, &cfg.pool).contains(ip))
    });
    let pending: HashMap<String, Ipv4Addr> = by_key
        .keys()
        .filter_map(|k| Some((k.clone(), *in_flight.get(k)?)))
        .collect();
    warned.retain(|uid, _| services.iter().any(|s| s.uid().as_deref() == Some(uid)));
    for step in plan(&services, &cfg.pool, &pending) {
        let (Step::Assign { service, .. }
        | Step::Release { service }
        | Step::Pending { service, .. }) = &step;
        let Some(svc) = by_key.get(service) else {
            continue;
        };
        let ns = svc.namespace().unwrap_or_default();
        let api: Api<Service> = Api::namespaced(client.clone(), &ns);
        let uid = svc.uid().unwrap_or_default();
        match step {
            Step::Assign { service, ip } => {
                let patch = serde_json::json!({
                    "metadata": {"resourceVersion": svc.resource_version()},
                    "status": {"loadBalancer": {"ingress": [{"ip": ip.to_string(), "ipMode": "VIP"}]}},
                });
                match api
                    .patch_status(
                        &svc.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(patch),
                    )
                    .await
                {
                    Ok(_) => {
                        tracing::info!("LoadBalancer IPAM: {service} gets {ip}");
                        in_flight.expect(service, ip);
                        warned.remove(&uid);
                    }
                    Err(e) => tracing::info!(
                        "LoadBalancer IPAM: assigning {ip} to {service}: {e} (retrying)"
                    ),
                }
            }
            Step::Release { service } => {
                let patch = serde_json::json!({
                    "metadata": {"resourceVersion": svc.resource_version()},
                    "status": {"loadBalancer": {"ingress": null}},
                });
                match api
                    .patch_status(
                        &svc.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(patch),
                    )
                    .await
                {
                    Ok(_) => tracing::info!("LoadBalancer IPAM: {service} released its address"),
                    Err(e) => {
                        tracing::info!("LoadBalancer IPAM: releasing {service}: {e} (retrying)")
                    }
                }
            }
            Step::Pending { service, reason } => {
                if warned.get(&uid) == Some(&reason) {
                    continue;
                }
                tracing::warn!("LoadBalancer IPAM: {service} stays pending: {reason}");
                match record_warning(client, svc, &reason).await {
                    Ok(()) => {
                        warned.insert(uid, reason);
                    }
                    Err(e) => tracing::info!("LoadBalancer IPAM: event for {service}: {e}"),
                }
            }
        }
    }
}

async fn record_warning(client: &kube::Client, svc: &Service, msg: &str) -> kube::Result<()> {
    let ns = svc.namespace().unwrap_or_default();
    let now = jiff::Timestamp::now();
    let stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let ev: Event = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{}.{:x}", svc.name_any(), now.as_nanosecond()), "namespace": ns},
        "involvedObject": {"apiVersion": "v1", "kind": "Service", "name": svc.name_any(),
            "namespace": ns, "uid": svc.uid(), "resourceVersion": svc.resource_version()},
        "reason": ALLOCATION_FAILED, "message": msg, "type": "Warning",
        "source": {"component": "ferry-lbipam"},
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        "reportingComponent": "ferry-lbipam",
    }))
    .map_err(kube::Error::SerdeError)?;
    Api::<Event>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &ev)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(r: &[&str]) -> Pool {
        let r: Vec<Ipv4Network> = r.iter().map(|c| c.parse().unwrap()).collect();
        Pool::new(
            &r,
            "10.96.0.0/16".parse().unwrap(),
            "10.244.0.0/16".parse().unwrap(),
        )
        .unwrap()
    }

    /// A Service `default/<name>` created at second `age` of the day.
    fn svc(name: &str, age: u32, spec: serde_json::Value, ingress: &[&str]) -> Arc<Service> {
        let ingress: Vec<_> = ingress
            .iter()
            .map(|ip| serde_json::json!({"ip": ip}))
            .collect();
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                    "creationTimestamp": format!("2026-01-01T00:00:{age:02}Z")},
                "spec": spec,
                "status": {"loadBalancer": {"ingress": ingress}},
            }))
            .unwrap(),
        )
    }

    fn lb() -> serde_json::Value {
        serde_json::json!({"type": "LoadBalancer", "ports": [{"port": 80}]})
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn assign(s: &str, a: &str) -> Step {
        Step::Assign {
            service: format!("default/{s}"),
            ip: ip(a),
        }
    }

    #[test]
    fn pool_validation() {
        let svc_cidr: Ipv4Network = "10.96.0.0/16".parse().unwrap();
        let pods: Ipv4Network = "10.244.0.0/16".parse().unwrap();
        let p = |s: &str| s.parse::<Ipv4Network>().unwrap();
        assert!(Pool::new(&[p("10.99.0.192/27")], svc_cidr, pods).is_ok());
        assert_eq!(
            Pool::new(&[p("10.96.7.0/24")], svc_cidr, pods),
            Err(PoolError::OverlapsServiceCidr(p("10.96.7.0/24"), svc_cidr))
        );
        // Upstream's default service CIDR, 10.96.0.0/12, spans 10.96-10.111: it holds the lab's
        // underlay, so the lab runs with a /16.
        let wide: Ipv4Network = "10.96.0.0/12".parse().unwrap();
        assert_eq!(
            Pool::new(&[p("10.99.0.192/27")], wide, pods),
            Err(PoolError::OverlapsServiceCidr(p("10.99.0.192/27"), wide))
        );
        assert_eq!(
            Pool::new(&[p("10.0.0.0/8")], "192.168.0.0/16".parse().unwrap(), pods),
            Err(PoolError::OverlapsClusterCidr(p("10.0.0.0/8"), pods))
        );
        assert_eq!(
            Pool::new(&[p("10.99.0.192/27"), p("10.99.0.200/29")], svc_cidr, pods),
            Err(PoolError::Overlapping(
                p("10.99.0.200/29"),
                p("10.99.0.192/27")
            ))
        );
        let two = pool(&["10.99.0.192/31", "10.99.0.250/32"]);
        assert_eq!(two.size(), 3);
        assert_eq!(
            two.addresses().collect::<Vec<_>>(),
            [ip("10.99.0.192"), ip("10.99.0.193"), ip("10.99.0.250")]
        );
        assert!(two.contains(ip("10.99.0.250")) && !two.contains(ip("10.99.0.194")));
    }

    #[test]
    fn assigns_lowest_free_oldest_first_and_keeps_held() {
        let p = pool(&["10.99.0.192/30"]);
        let services = vec![
            svc("new", 9, lb(), &[]),
            svc("held", 5, lb(), &["10.99.0.192"]),
            svc("old", 1, lb(), &[]),
            svc("cip", 0, serde_json::json!({"type": "ClusterIP"}), &[]),
            svc(
                "classed",
                0,
                serde_json::json!({"type": "LoadBalancer", "loadBalancerClass": "x.io/lb"}),
                &[],
            ),
        ];
        assert_eq!(
            plan(&services, &p, &HashMap::new()),
            [assign("old", "10.99.0.193"), assign("new", "10.99.0.194")]
        );
        // Stable: once written, nothing to do (what a restarted server sees).
        let written = vec![
            svc("new", 9, lb(), &["10.99.0.194"]),
            svc("held", 5, lb(), &["10.99.0.192"]),
            svc("old", 1, lb(), &["10.99.0.193"]),
        ];
        assert_eq!(plan(&written, &p, &HashMap::new()), []);
        // In flight: skipped, and its address counts as used.
        let inf = HashMap::from([("default/old".to_owned(), ip("10.99.0.193"))]);
        assert_eq!(plan(&services, &p, &inf), [assign("new", "10.99.0.194")]);
    }

    #[test]
    fn requested_address_honoured_or_pending() {
        let p = pool(&["10.99.0.192/30"]);
        let want = |a: &str| serde_json::json!({"type": "LoadBalancer", "loadBalancerIP": a});
        let services = vec![
            svc("a", 1, want("10.99.0.195"), &[]),
            svc("outside", 2, want("10.99.1.1"), &[]),
            svc("taken", 3, want("10.99.0.195"), &[]),
            svc("garbage", 4, want("nope"), &[]),
        ];
        let steps = plan(&services, &p, &HashMap::new());
        assert_eq!(steps[0], assign("a", "10.99.0.195"));
        assert!(
            matches!(&steps[1], Step::Pending { service, reason } if service == "default/outside" && reason.contains("not in the LoadBalancer pool (10.99.0.192/30)")),
            "{steps:?}"
        );
        assert!(
            matches!(&steps[2], Step::Pending { reason, .. } if reason.contains("already assigned to default/a")),
            "{steps:?}"
        );
        assert!(
            matches!(&steps[3], Step::Pending { reason, .. } if reason.contains("not an IPv4"))
        );
        // A changed loadBalancerIP moves the Service to it.
        let moved = vec![svc("a", 1, want("10.99.0.194"), &["10.99.0.195"])];
        assert_eq!(
            plan(&moved, &p, &HashMap::new()),
            [assign("a", "10.99.0.194")]
        );
    }

    #[test]
    fn exhausted_pending_then_freed() {
        let p = pool(&["10.99.0.192/31"]);
        let services = vec![
            svc("a", 1, lb(), &["10.99.0.192"]),
            svc("b", 2, lb(), &["10.99.0.193"]),
            svc("c", 3, lb(), &[]),
        ];
        let steps = plan(&services, &p, &HashMap::new());
        assert!(
            matches!(&steps[..], [Step::Pending { service, reason }] if service == "default/c" && reason.contains("no address left") && reason.contains("2 addresses")),
            "{steps:?}"
        );
        // `a` deleted: c gets its address.
        assert_eq!(
            plan(&services[1..], &p, &HashMap::new()),
            [assign("c", "10.99.0.192")]
        );
        // `b` becomes ClusterIP: released, and c gets its address in the same round.
        let changed = vec![
            services[0].clone(),
            svc(
                "b",
                2,
                serde_json::json!({"type": "ClusterIP"}),
                &["10.99.0.193"],
            ),
            services[2].clone(),
        ];
        assert_eq!(
            plan(&changed, &p, &HashMap::new()),
            [
                Step::Release {
                    service: "default/b".into()
                },
                assign("c", "10.99.0.193")
            ]
        );
    }

    #[test]
    fn duplicate_holders_the_oldest_keeps_it() {
        let p = pool(&["10.99.0.192/30"]);
        let services = vec![
            svc("young", 5, lb(), &["10.99.0.192"]),
            svc("old", 1, lb(), &["10.99.0.192"]),
            // An address outside the pool is not ours: replaced by a pool address.
            svc("foreign", 2, lb(), &["203.0.113.7"]),
        ];
        assert_eq!(
            plan(&services, &p, &HashMap::new()),
            [
                assign("foreign", "10.99.0.193"),
                assign("young", "10.99.0.194")
            ]
        );
    }
}
