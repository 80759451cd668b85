//! EndpointSlice controller: for every Service with a selector, the `discovery.k8s.io/v1`
//! EndpointSlices that list the matching pods — what the node agents' load balancers consume.
//!
//! Level-triggered over reflectors of Services, Pods and EndpointSlices: each round computes the
//! desired slices of every service and converges the stored ones (create, update only when the
//! content differs, delete the extra ones). Every pod with an IP and not finished is an endpoint:
//! `ready` = pod Ready and not terminating, `serving` = pod Ready, `terminating` = being deleted.
//! Ports are the service ports with `targetPort` resolved per pod (a named port is looked up in the
//! pod's containers), so pods that resolve differently land in different slices; a slice holds at
//! most 100 endpoints. Slices are named `<service>-<port-hash>-<n>`, labelled
//! `kubernetes.io/service-name` and `endpointslice.kubernetes.io/managed-by`, and owned by the
//! Service. Headless services get slices too; ExternalName services and services without a
//! selector get none from this controller.

use ferry_kube::watch::{self, Reflector};
use ferry_kube::Loop;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::Store;
use kube::ResourceExt;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::hash::Hasher;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// The `managed-by` label value of slices this controller owns.
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// Most endpoints per slice.
pub const MAX_ENDPOINTS: usize = 100;

/// Runs the controller.
pub async fn run(client: kube::Client) -> anyhow::Result<()> {
    let wake = Arc::new(Notify::new());
    let services = Reflector::new(Api::<Service>::all(client.clone()))
        .wake(wake.clone())
        .spawn();
    let pods = Reflector::new(Api::<Pod>::all(client.clone()))
        .wake(wake.clone())
        .spawn();
    let slices = Reflector::new(Api::<EndpointSlice>::all(client.clone()))
        .wake(wake.clone())
        .spawn();
    watch::ready(&services).await?;
    watch::ready(&pods).await?;
    watch::ready(&slices).await?;
    let mut lp = Loop::new(wake, Duration::from_secs(10));
    loop {
        let start = std::time::Instant::now();
        reconcile(&client, &services, &pods, &slices).await;
        tokio::time::sleep(super::pause_after(start.elapsed())).await;
        lp.after(()).await;
    }
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Resolves a service port's targetPort for one pod (`None` when a named port is missing).
fn target_port(port: &k8s_openapi::api::core::v1::ServicePort, pod: &Pod) -> Option<i32> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(p)) => Some(*p),
        Some(IntOrString::String(name)) => {
            if let Ok(p) = name.parse::<i32>() {
                return Some(p);
            }
            let proto = port.protocol.as_deref().unwrap_or("TCP");
            pod.spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|cp| {
                    cp.name.as_deref() == Some(name.as_str())
                        && cp.protocol.as_deref().unwrap_or("TCP") == proto
                })
                .map(|cp| cp.container_port)
        }
    }
}

fn selector_matches(sel: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.labels();
    sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The desired slices of one service: name -> slice JSON.
pub fn desired_slices(svc: &Service, pods: &[Arc<Pod>]) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let Some(spec) = &svc.spec else { return out };
    if spec.type_.as_deref() == Some("ExternalName") {
        return out;
    }
    let Some(sel) = spec.selector.as_ref().filter(|s| !s.is_empty()) else {
        return out;
    };
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    // Group endpoints by their resolved port list.
    let mut groups: BTreeMap<Vec<(String, String, i32)>, Vec<Value>> = BTreeMap::new();
    let mut matching: Vec<&Arc<Pod>> = pods
        .iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()) && selector_matches(sel, p))
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.pod_ip.as_deref())
                .is_some_and(|ip| !ip.is_empty())
        })
        .collect();
    matching.sort_by_key(|p| p.name_any());
    for pod in matching {
        let ports: Vec<(String, String, i32)> = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p.name.clone().unwrap_or_default(),
                    p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    target_port(p, pod)?,
                ))
            })
            .collect();
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let ready = pod_ready(pod);
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default();
        let mut ep = json!({
            "addresses": [ip],
            "conditions": {"ready": ready && !terminating, "serving": ready, "terminating": terminating},
            "targetRef": {"kind": "Pod", "name": pod.name_any(), "namespace": ns, "uid": pod.uid()},
        });
        if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
            ep["nodeName"] = node.into();
        }
        groups.entry(ports).or_default().push(ep);
    }
    for (ports, eps) in groups {
        let mut h = fnv::FnvHasher::default();
        for (n, proto, p) in &ports {
            h.write(n.as_bytes());
            h.write(proto.as_bytes());
            h.write_i32(*p);
        }
        let tag = format!("{:08x}", h.finish() & 0xffff_ffff);
        for (i, chunk) in eps.chunks(MAX_ENDPOINTS).enumerate() {
            let slice_name = format!("{name}-{tag}-{i}");
            out.insert(slice_name.clone(), json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": slice_name,
                    "namespace": ns,
                    "labels": {"kubernetes.io/service-name": name, "endpointslice.kubernetes.io/managed-by": MANAGED_BY},
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": name, "uid": svc.uid(), "controller": true, "blockOwnerDeletion": true}],
                },
                "addressType": "IPv4",
                "endpoints": chunk,
                "ports": ports.iter().map(|(n, proto, p)| json!({"name": n, "protocol": proto, "port": p})).collect::<Vec<_>>(),
            }));
        }
    }
    out
}

fn same_content(existing: &EndpointSlice, want: &Value) -> bool {
    let Ok(cur) = serde_json::to_value(existing) else {
        return false;
    };
    cur.get("endpoints").cloned().unwrap_or(json!([])) == want["endpoints"]
        && cur.get("ports").cloned().unwrap_or(json!([])) == want["ports"]
        && cur.pointer("/metadata/labels") == want.pointer("/metadata/labels")
}

async fn reconcile(
    client: &kube::Client,
    services: &Store<Service>,
    pods: &Store<Pod>,
    slices: &Store<EndpointSlice>,
) {
    let pods = pods.state();
    let mut existing: HashMap<(String, String), Vec<Arc<EndpointSlice>>> = HashMap::new();
    for s in slices.state() {
        if s.labels()
            .get("endpointslice.kubernetes.io/managed-by")
            .map(String::as_str)
            != Some(MANAGED_BY)
        {
            continue;
        }
        if let Some(svc) = s.labels().get("kubernetes.io/service-name") {
            existing
                .entry((s.namespace().unwrap_or_default(), svc.clone()))
                .or_default()
                .push(s.clone());
        }
    }
    for svc in services.state() {
        let ns = svc.namespace().unwrap_or_default();
        let key = (ns.clone(), svc.name_any());
        let have = existing.remove(&key).unwrap_or_default();
        let want = desired_slices(&svc, &pods);
        if have.is_empty() && want.is_empty() {
            // A Service without a selector (or without pods) and without slices of ours.
            continue;
        }
        converge(client, &ns, &have, &want).await;
    }
    // Slices of services that no longer exist.
    for ((ns, _), have) in existing {
        converge(client, &ns, &have, &BTreeMap::new()).await;
    }
}

async fn converge(
    client: &kube::Client,
    ns: &str,
    have: &[Arc<EndpointSlice>],
    want: &BTreeMap<String, Value>,
) {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    for (name, slice) in want {
        match have.iter().find(|h| h.name_any() == *name) {
            Some(cur) if same_content(cur, slice) => {}
            Some(cur) => {
                let mut body = slice.clone();
                body["metadata"]["resourceVersion"] = cur.resource_version().into();
                match serde_json::from_value::<EndpointSlice>(body) {
                    Ok(obj) => {
                        if let Err(e) = api.replace(name, &PostParams::default(), &obj).await {
                            tracing::info!("endpointslice {ns}/{name}: update: {e} (retrying)");
                        }
                    }
                    Err(e) => tracing::warn!("endpointslice {ns}/{name}: {e}"),
                }
            }
            None => match serde_json::from_value::<EndpointSlice>(slice.clone()) {
                Ok(obj) => {
                    if let Err(e) = api.create(&PostParams::default(), &obj).await {
                        tracing::info!("endpointslice {ns}/{name}: create: {e} (retrying)");
                    }
                }
                Err(e) => tracing::warn!("endpointslice {ns}/{name}: {e}"),
            },
        }
    }
    for h in have {
        let name = h.name_any();
        if !want.contains_key(&name) {
            if let Err(e) = api.delete(&name, &DeleteParams::default()).await {
                if !matches!(e, kube::Error::Api(ref s) if s.code == 404) {
                    tracing::info!("endpointslice {ns}/{name}: delete: {e} (retrying)");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(target: Value) -> Service {
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "d", "uid": "u1"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": target}]}})).unwrap()
    }

    fn pod(name: &str, ip: &str, ready: bool, port_name: &str, port: i32) -> Arc<Pod> {
        Arc::new(serde_json::from_value(json!({"metadata": {"name": name, "namespace": "d", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": port_name, "containerPort": port}]}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})).unwrap())
    }

    #[test]
    fn endpoints_ports_and_conditions() {
        let pods = vec![
            pod("a", "10.0.0.1", true, "web", 8080),
            pod("b", "10.0.0.2", false, "web", 8080),
        ];
        let want = desired_slices(&svc(json!("web")), &pods);
        assert_eq!(want.len(), 1);
        let s = want.values().next().unwrap();
        assert_eq!(s["ports"][0]["port"], 8080, "named targetPort resolved");
        assert_eq!(s["endpoints"][0]["conditions"]["ready"], true);
        assert_eq!(s["endpoints"][1]["conditions"]["ready"], false);
        assert_eq!(s["endpoints"][1]["nodeName"], "n1");
        assert_eq!(s["metadata"]["labels"]["kubernetes.io/service-name"], "web");
    }

    #[test]
    fn differing_port_resolution_splits_and_large_sets_chunk() {
        let pods = vec![
            pod("a", "10.0.0.1", true, "web", 8080),
            pod("b", "10.0.0.2", true, "web", 9090),
        ];
        assert_eq!(desired_slices(&svc(json!("web")), &pods).len(), 2);
        let many: Vec<_> = (0..250)
            .map(|i| {
                pod(
                    &format!("p{i:03}"),
                    &format!("10.0.{}.{}", i / 200, i % 200 + 1),
                    true,
                    "web",
                    8080,
                )
            })
            .collect();
        let want = desired_slices(&svc(json!(8080)), &many);
        let sizes: Vec<usize> = want
            .values()
            .map(|s| s["endpoints"].as_array().unwrap().len())
            .collect();
        assert_eq!(sizes, vec![100, 100, 50]);
    }

    #[test]
    fn no_selector_or_external_name_means_no_slices() {
        let mut s = svc(json!(80));
        s.spec.as_mut().unwrap().selector = None;
        assert!(desired_slices(&s, &[pod("a", "10.0.0.1", true, "web", 80)]).is_empty());
        let mut s = svc(json!(80));
        s.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
        assert!(desired_slices(&s, &[pod("a", "10.0.0.1", true, "web", 80)]).is_empty());
    }
}
