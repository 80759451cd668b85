//! The `kubernetes` Service in `default`: how pods reach the API server, as on any cluster.
//!
//! Kept by every `ferry-server` (it is part of the API server, as upstream's
//! `kubernetesservice` controller and endpoint reconciler are, so it runs also with
//! `--controllers false`):
//!
//! | object | content |
//! |---|---|
//! | Service `default/kubernetes` | `ClusterIP` = the first address of `--service-cidr` (`10.96.0.1`), port 443 named `https`, TCP, `targetPort` = the advertised port (see below for several replicas); labels `component=apiserver`, `provider=kubernetes`; no selector |
//! | EndpointSlice `default/kubernetes` | label `kubernetes.io/service-name=kubernetes` only (no `managed-by`, exactly as upstream's `EndpointsAdapter` writes it), `IPv4`, one ready endpoint per live API server, port `https` |
//! | Endpoints `default/kubernetes` | the same addresses, labelled `endpointslice.kubernetes.io/skip-mirror=true` (as upstream: the mirroring controller must not copy it) |
//! | Lease `kube-system/ferry-server-<ip>-<port>` | one per API server, renewed every [`RENEW`], `holderIdentity` = its advertised `IP:port` |
//!
//! Upstream's apiserver writes the Endpoints and the EndpointSlice itself (the slice does not
//! come from the mirroring controller: the Endpoints carry `skip-mirror`); Ferry does the same.
//! The endpoint set is upstream's `lease` reconciler over Lease objects: each replica renews its
//! own Lease, and the endpoints are the replicas whose Lease is fresh, so several `ferry-server`
//! replicas on one etcd agree instead of each writing only itself. This server's own address is
//! always in the set. One port per slice, like upstream (which assumes every apiserver serves the
//! same port): the port of the lowest live address, and only the replicas on it are listed, so
//! every replica computes the same objects and none fights another.
//!
//! Level-triggered, by polling: every [`POLL`] a round reads the four objects (GETs and two
//! label-selected LISTs, no watch: the API server's own loop must not take watch slots from the
//! admin identity, which `--max-watches-per-client` limits) and converges them, so a deleted object
//! is recreated and an edited one repaired (ports, type, selector of the Service; endpoints, ports
//! and labels of the slice and the Endpoints) within a couple of seconds. The EndpointSlice controller never touches these: the
//! Service has no selector and the slice carries no `managed-by` label of its.

use ipnetwork::Ipv4Network;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

/// Name of the Service, its EndpointSlice and its Endpoints.
pub const NAME: &str = "kubernetes";
/// Their namespace.
pub const NAMESPACE: &str = "default";
/// Namespace of the API servers' Leases.
pub const LEASE_NAMESPACE: &str = "kube-system";
/// Label of the API servers' Leases (value `ferry-server`).
pub const LEASE_LABEL: &str = "ferry.dev/apiserver-endpoint";
/// How often a server renews its Lease.
pub const RENEW: Duration = Duration::from_secs(5);
/// How often the objects are read and converged.
pub const POLL: Duration = Duration::from_secs(2);
/// The next round after a failed read or write.
const RETRY: Duration = Duration::from_secs(1);
/// How long a Lease counts after its last renewal.
pub const LEASE_SECONDS: i32 = 15;

/// Settings.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// The ClusterIP range; the Service takes its first address.
    pub service_cidr: Ipv4Network,
    /// This server's endpoint (its advertised address); `None` when the advertised host is not
    /// an IPv4 address a pod could reach (then the Service exists with the other replicas only).
    pub endpoint: Option<SocketAddrV4>,
    /// The Service's `targetPort` and the slice's port.
    pub port: u16,
}

impl Config {
    /// The settings for an advertised `host:port` (`--advertise-address`).
    pub fn new(service_cidr: Ipv4Network, advertise: &str) -> Config {
        let (host, port) = advertise.rsplit_once(':').unwrap_or((advertise, "443"));
        let port = port.parse().unwrap_or(443);
        let endpoint = host
            .trim_matches(['[', ']'])
            .parse::<Ipv4Addr>()
            .ok()
            .filter(|ip| !ip.is_unspecified())
            .map(|ip| SocketAddrV4::new(ip, port));
        Config {
            service_cidr,
            endpoint,
            port,
        }
    }
}

/// The Service's ClusterIP: the first address of the range.
pub fn cluster_ip(cidr: Ipv4Network) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr.network()).wrapping_add(1))
}

fn ports(port: u16) -> Value {
    json!([{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}])
}

/// The Service as created, with `targetPort` = `port`.
pub fn desired_service(cfg: &Config, port: u16) -> Value {
    let ip = cluster_ip(cfg.service_cidr).to_string();
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": NAME, "namespace": NAMESPACE,
            "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "ports": ports(port),
            "sessionAffinity": "None"},
    })
}

/// `cur` repaired (ports with `targetPort` = `port`, type, no selector), or `None` when it needs
/// nothing.
pub fn repaired_service(cur: &Service, port: u16) -> Option<Value> {
    let mut v = serde_json::to_value(cur).ok()?;
    let want = ports(port);
    let same_ports = v.pointer("/spec/ports").is_some_and(|p| {
        p.as_array().is_some_and(|a| {
            a.len() == 1
                && a[0]["name"] == want[0]["name"]
                && a[0]["port"] == want[0]["port"]
                && a[0].get("protocol").unwrap_or(&json!("TCP")) == "TCP"
                && a[0]["targetPort"] == want[0]["targetPort"]
        })
    });
    let ty_ok = v
        .pointer("/spec/type")
        .is_none_or(|t| t.as_str() == Some("ClusterIP"));
    let no_selector = v
        .pointer("/spec/selector")
        .is_none_or(|s| s.as_object().is_none_or(serde_json::Map::is_empty));
    if same_ports && ty_ok && no_selector {
        return None;
    }
    v["spec"]["ports"] = want;
    v["spec"]["type"] = "ClusterIP".into();
    if let Some(spec) = v["spec"].as_object_mut() {
        spec.remove("selector");
    }
    Some(v)
}

/// The name of the Lease of the server at `ep`.
pub fn lease_name(ep: SocketAddrV4) -> String {
    format!("ferry-server-{}-{}", ep.ip(), ep.port())
}

/// The endpoints of the live servers and their port: the fresh Leases with [`LEASE_LABEL`]
/// (renewed within their duration of `now`, `holderIdentity` an `IPv4:port`) plus `own`; the port
/// is that of the lowest such address, and only the servers on that port are listed. Every
/// replica computes the same answer from the same Leases, so they never fight over the objects.
pub fn live_endpoints(
    leases: &[Arc<Lease>],
    own: Option<SocketAddrV4>,
    default_port: u16,
    now: jiff::Timestamp,
) -> (u16, BTreeSet<Ipv4Addr>) {
    let mut live: BTreeSet<SocketAddrV4> = own.into_iter().collect();
    for l in leases {
        let Some(spec) = &l.spec else { continue };
        let Some(ep) = spec
            .holder_identity
            .as_deref()
            .and_then(|h| h.parse::<SocketAddrV4>().ok())
        else {
            continue;
        };
        let fresh = spec.renew_time.as_ref().is_some_and(|t| {
            let age = now.as_second() - t.0.as_second();
            age < i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS))
        });
        if fresh {
            live.insert(ep);
        }
    }
    let port = live.first().map_or(default_port, SocketAddrV4::port);
    let ips = live
        .iter()
        .filter(|e| e.port() == port)
        .map(|e| *e.ip())
        .collect();
    (port, ips)
}

/// The EndpointSlice for `ips`.
pub fn desired_slice(ips: &BTreeSet<Ipv4Addr>, port: u16) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": NAME, "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": NAME}},
        "addressType": "IPv4",
        "endpoints": ips.iter().map(|ip| json!({"addresses": [ip.to_string()], "conditions": {"ready": true}})).collect::<Vec<_>>(),
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    })
}

/// The Endpoints for `ips`.
pub fn desired_endpoints(ips: &BTreeSet<Ipv4Addr>, port: u16) -> Value {
    let subsets = if ips.is_empty() {
        json!([])
    } else {
        json!([{
            "addresses": ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect::<Vec<_>>(),
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        }])
    };
    json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": NAME, "namespace": NAMESPACE,
            "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": subsets,
    })
}

/// Whether `cur` (any object, as JSON) already holds `want`'s `fields` and labels.
fn same(cur: &Value, want: &Value, fields: &[&str]) -> bool {
    fields
        .iter()
        .all(|f| cur.get(*f).unwrap_or(&json!([])) == want.get(*f).unwrap_or(&json!([])))
        && cur.pointer("/metadata/labels") == want.pointer("/metadata/labels")
}

/// Runs the loop (forever).
pub async fn run(client: kube::Client, cfg: Config) -> anyhow::Result<()> {
    loop {
        let faulty = reconcile(&client, &cfg).await;
        tokio::time::sleep(if faulty { RETRY } else { POLL }).await;
    }
}

/// What the API holds now.
struct Current {
    service: Option<Service>,
    slices: Vec<EndpointSlice>,
    endpoints: Option<Endpoints>,
    leases: Vec<Arc<Lease>>,
}

async fn read(client: &kube::Client) -> Result<Current, kube::Error> {
    let svc_api: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let slice_api: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    let ep_api: Api<Endpoints> = Api::namespaced(client.clone(), NAMESPACE);
    let lease_api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    Ok(Current {
        service: svc_api.get_opt(NAME).await?,
        slices: slice_api
            .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={NAME}")))
            .await?
            .items,
        endpoints: ep_api.get_opt(NAME).await?,
        leases: lease_api
            .list(&ListParams::default().labels(LEASE_LABEL))
            .await?
            .items
            .into_iter()
            .map(Arc::new)
            .collect(),
    })
}

/// One round; true if a read or write failed (retry soon).
async fn reconcile(client: &kube::Client, cfg: &Config) -> bool {
    let cur = match read(client).await {
        Ok(c) => c,
        Err(e) => {
            tracing::info!("kubernetes service: reading: {e} (retrying)");
            return true;
        }
    };
    let mut faulty = false;
    let now = jiff::Timestamp::now();
    if let Some(own) = cfg.endpoint {
        faulty |= renew_lease(client, own, &cur.leases, now).await;
    }

    let (port, ips) = live_endpoints(&cur.leases, cfg.endpoint, cfg.port, now);

    // The Service.
    let svc_api: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    match &cur.service {
        None => faulty |= create(&svc_api, desired_service(cfg, port)).await,
        Some(svc) => {
            if let Some(fixed) = repaired_service(svc, port) {
                tracing::warn!(
                    "service {NAMESPACE}/{NAME} was edited: repairing its ports, type and selector"
                );
                faulty |= replace(&svc_api, fixed).await;
            }
        }
    }

    // Its endpoints.
    let slice_api: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    let want = desired_slice(&ips, port);
    match cur.slices.iter().find(|x| x.name_any() == NAME) {
        None => faulty |= create(&slice_api, want).await,
        Some(slice) => {
            let cur_v = serde_json::to_value(slice).unwrap_or_default();
            if !same(&cur_v, &want, &["endpoints", "ports", "addressType"]) {
                faulty |= replace(&slice_api, with_version(want, slice.resource_version())).await;
            }
        }
    }
    // Any other slice claiming to be this Service's (upstream deletes them too).
    for other in cur.slices.iter().filter(|x| x.name_any() != NAME) {
        match slice_api
            .delete(&other.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                tracing::info!(
                    "endpointslice {NAMESPACE}/{}: delete: {e} (retrying)",
                    other.name_any()
                );
                faulty = true;
            }
        }
    }
    let ep_api: Api<Endpoints> = Api::namespaced(client.clone(), NAMESPACE);
    let want = desired_endpoints(&ips, port);
    match &cur.endpoints {
        None => faulty |= create(&ep_api, want).await,
        Some(ep) => {
            let cur_v = serde_json::to_value(ep).unwrap_or_default();
            if !same(&cur_v, &want, &["subsets"]) {
                faulty |= replace(&ep_api, with_version(want, ep.resource_version())).await;
            }
        }
    }
    faulty
}

fn with_version(mut v: Value, rv: Option<String>) -> Value {
    v["metadata"]["resourceVersion"] = rv.into();
    v
}

/// Renews (or creates) this server's Lease unless it was renewed less than [`RENEW`] ago; true on
/// failure.
async fn renew_lease(
    client: &kube::Client,
    own: SocketAddrV4,
    leases: &[Arc<Lease>],
    now: jiff::Timestamp,
) -> bool {
    let name = lease_name(own);
    let recent = leases
        .iter()
        .find(|l| l.name_any() == name)
        .is_some_and(|l| {
            l.spec
                .as_ref()
                .and_then(|s| s.renew_time.as_ref())
                .is_some_and(|t| {
                    let age = now.as_second() - t.0.as_second();
                    (0..i64::try_from(RENEW.as_secs()).unwrap_or(5) - 1).contains(&age)
                })
        });
    if recent {
        return false;
    }
    let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let t = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(now);
    let spec = json!({"holderIdentity": own.to_string(), "leaseDurationSeconds": LEASE_SECONDS, "renewTime": t});
    match api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": spec})),
        )
        .await
    {
        Ok(_) => false,
        Err(kube::Error::Api(e)) if e.code == 404 => {
            create(
                &api,
                json!({
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": name, "namespace": LEASE_NAMESPACE, "labels": {LEASE_LABEL: "ferry-server"}},
                    "spec": spec,
                }),
            )
            .await
        }
        Err(e) => {
            tracing::info!("lease {LEASE_NAMESPACE}/{name}: renew: {e} (retrying)");
            true
        }
    }
}

/// Creates `obj`; true on failure (an object created meanwhile by another replica is fine).
async fn create<K>(api: &Api<K>, obj: Value) -> bool
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let what = format!(
        "{} {}/{}",
        K::kind(&()),
        obj["metadata"]["namespace"].as_str().unwrap_or_default(),
        obj["metadata"]["name"].as_str().unwrap_or_default()
    );
    let obj: K = match serde_json::from_value(obj) {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!("{what}: {e}");
            return false;
        }
    };
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => {
            tracing::info!("{what}: created");
            false
        }
        Err(kube::Error::Api(e)) if e.code == 409 => false,
        Err(e) => {
            tracing::info!("{what}: create: {e} (retrying)");
            true
        }
    }
}

/// Replaces the object named in `obj` (which carries the resourceVersion it was read at); true on
/// failure (a conflict retries with a fresher read).
async fn replace<K>(api: &Api<K>, obj: Value) -> bool
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let name = obj["metadata"]["name"].as_str().unwrap_or(NAME).to_owned();
    let what = format!("{} {NAMESPACE}/{name}", K::kind(&()));
    let obj: K = match serde_json::from_value(obj) {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!("{what}: {e}");
            return false;
        }
    };
    match api.replace(&name, &PostParams::default(), &obj).await {
        Ok(_) => {
            tracing::info!("{what}: repaired");
            false
        }
        Err(e) => {
            tracing::info!("{what}: update: {e} (retrying)");
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::new("10.96.0.0/12".parse().unwrap(), "10.99.0.2:6443")
    }

    fn lease(holder: &str, age: i64, duration: i32) -> Arc<Lease> {
        let t = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() - age).unwrap();
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": "x"}, "spec": {
            "holderIdentity": holder, "leaseDurationSeconds": duration,
            "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(t)}}))
            .unwrap(),
        )
    }

    #[test]
    fn config_and_service() {
        let c = cfg();
        assert_eq!(c.endpoint, Some("10.99.0.2:6443".parse().unwrap()));
        assert_eq!(c.port, 6443);
        assert_eq!(cluster_ip(c.service_cidr), Ipv4Addr::new(10, 96, 0, 1));
        let svc = desired_service(&c, c.port);
        assert_eq!(svc["spec"]["clusterIP"], "10.96.0.1");
        assert_eq!(svc["spec"]["ports"][0]["name"], "https");
        assert_eq!(svc["spec"]["ports"][0]["port"], 443);
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 6443);
        assert!(svc["spec"].get("selector").is_none());
        let unusable = Config::new(c.service_cidr, "0.0.0.0:6443");
        assert_eq!(unusable.endpoint, None);
        assert_eq!(Config::new(c.service_cidr, "localhost:7000").port, 7000);
    }

    #[test]
    fn repair_only_what_drifted() {
        let c = cfg();
        let ok: Service = serde_json::from_value(desired_service(&c, 6443)).unwrap();
        assert!(repaired_service(&ok, 6443).is_none());
        let mut bad = ok.clone();
        bad.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 8443;
        bad.spec.as_mut().unwrap().selector = Some([("a".to_owned(), "b".to_owned())].into());
        let fixed = repaired_service(&bad, 6443).unwrap();
        assert_eq!(fixed["spec"]["ports"], ports(6443));
        assert!(fixed["spec"].get("selector").is_none());
        assert_eq!(fixed["spec"]["clusterIP"], "10.96.0.1", "the rest is kept");
    }

    #[test]
    fn endpoints_are_the_fresh_leases_on_our_port() {
        let c = cfg();
        let leases = vec![
            lease("10.99.0.3:6443", 2, 15),
            lease("10.99.0.4:6443", 20, 15),
            lease("10.99.0.5:7443", 1, 15),
            lease("garbage", 1, 15),
        ];
        let (port, ips) = live_endpoints(&leases, c.endpoint, c.port, jiff::Timestamp::now());
        assert_eq!(port, 6443);
        let want: BTreeSet<Ipv4Addr> = ["10.99.0.2", "10.99.0.3"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(ips, want);
        // The lowest live address decides the port: every replica agrees.
        let (port, low) = live_endpoints(
            &[lease("10.99.0.1:7443", 1, 15)],
            c.endpoint,
            c.port,
            jiff::Timestamp::now(),
        );
        assert_eq!((port, low.len()), (7443, 1));
        assert_eq!(
            live_endpoints(&[], None, 6443, jiff::Timestamp::now()),
            (6443, BTreeSet::new())
        );
        let slice = desired_slice(&ips, c.port);
        assert_eq!(slice["endpoints"][1]["addresses"][0], "10.99.0.3");
        assert_eq!(slice["ports"][0]["port"], 6443);
        assert_eq!(
            slice["metadata"]["labels"],
            json!({"kubernetes.io/service-name": "kubernetes"})
        );
        let ep = desired_endpoints(&ips, c.port);
        assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "10.99.0.2");
        assert_eq!(desired_endpoints(&BTreeSet::new(), 1)["subsets"], json!([]));
    }
}
