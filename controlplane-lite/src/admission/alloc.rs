//! The ClusterIP and NodePort allocators (node ports and `healthCheckNodePort` share the
//! NodePort range and its keys). Allocations are keys in the store
//! (`/registry/serviceips/<ip>`, `/registry/servicenodeports/<port>-<protocol>`), claimed with a
//! create, so two `ferry-server` replicas on one etcd can never hand out the same address or port.

use crate::machinery as mach;
use crate::objects::meta_str;
use crate::resources::Resource;
use crate::web::ApiError;
use ferry_store::{Store, StoreError};
use serde_json::{json, Value};
use std::net::Ipv4Addr;

const IP_PREFIX: &str = "/registry/serviceips/";
const PORT_PREFIX: &str = "/registry/servicenodeports/";

/// Where and how Service addresses and node ports are allocated: the store holding the claims,
/// and the ranges to claim from (`--service-cluster-ip-range`, `--service-node-port-range`).
#[derive(Clone, Copy)]
pub struct Allocator<'a> {
    /// The store the claims are keys in.
    pub store: &'a dyn Store,
    /// ClusterIP range.
    pub service_cidr: ipnetwork::Ipv4Network,
    /// NodePort range (inclusive).
    pub node_port_range: (u16, u16),
}

impl std::fmt::Debug for Allocator<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Allocator")
            .field("service_cidr", &self.service_cidr)
            .field("node_port_range", &self.node_port_range)
            .finish_non_exhaustive()
    }
}

/// Claims ClusterIP and NodePorts for a Service. Returns the keys claimed (to release on failure).
pub async fn allocate(
    alloc: &Allocator<'_>,
    res: &Resource,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<Vec<String>, ApiError> {
    if res.kind != "Service" {
        return Ok(Vec::new());
    }
    let owner = format!("{}/{}", meta_str(obj, "namespace"), meta_str(obj, "name"));
    let name = meta_str(obj, "name").to_owned();
    let mut claimed = Vec::new();
    let result = async {
        let ty = obj
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_owned();
        if ty == "ExternalName" {
            return Ok(());
        }
        let requested = obj
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let old_ip = old
            .and_then(|o| o.pointer("/spec/clusterIP"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if requested != "None" && (requested.is_empty() || requested != old_ip) {
            let ip = claim_ip(alloc, &requested, &owner, &name).await?;
            claimed.push(format!("{IP_PREFIX}{ip}"));
            obj["spec"]["clusterIP"] = ip.to_string().into();
            obj["spec"]["clusterIPs"] = json!([ip.to_string()]);
            obj["spec"]["ipFamilies"] = json!(["IPv4"]);
            obj["spec"]["ipFamilyPolicy"] = "SingleStack".into();
        } else if requested == "None" {
            obj["spec"]["clusterIPs"] = json!(["None"]);
        }
        // The node ports this Service held (not its healthCheckNodePort: a nodePort set to that
        // must be claimed, and so refused as taken).
        let old_keys = old.map(node_port_keys).unwrap_or_default();
        if matches!(ty.as_str(), "NodePort" | "LoadBalancer") {
            let n = obj
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            for i in 0..n {
                let p = &obj["spec"]["ports"][i];
                let proto = p
                    .get("protocol")
                    .and_then(Value::as_str)
                    .unwrap_or("TCP")
                    .to_owned();
                let want = p
                    .get("nodePort")
                    .and_then(Value::as_u64)
                    .and_then(|x| u16::try_from(x).ok());
                let had = old
                    .and_then(|o| o.pointer(&format!("/spec/ports/{i}/nodePort")))
                    .and_then(Value::as_u64)
                    .and_then(|x| u16::try_from(x).ok());
                // Kept, or this Service's already (ports reordered on update).
                if want.is_some() && want == had
                    || want.is_some_and(|p| old_keys.contains(&format!("{PORT_PREFIX}{p}-{proto}")))
                {
                    continue;
                }
                let field = format!("spec.ports[{i}].nodePort");
                let port = claim_port(alloc, want, &proto, &owner, &name, &field).await?;
                claimed.push(format!("{PORT_PREFIX}{port}-{proto}"));
                obj["spec"]["ports"][i]["nodePort"] = port.into();
            }
        }
        if let Some(port) = health_check_node_port(alloc, obj, old, &owner, &name).await? {
            claimed.push(format!("{PORT_PREFIX}{port}-TCP"));
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => Ok(claimed),
        Err(e) => {
            release(alloc, &claimed).await;
            Err(e)
        }
    }
}

fn invalid_field(name: &str, field: &str, msg: String) -> ApiError {
    let res = crate::resources::by_kind("Service").expect("services are served");
    ApiError::from_pair(mach::invalid(
        res,
        name,
        vec![mach::cause(field, "FieldValueInvalid", &msg)],
    ))
}

async fn claim_ip(
    alloc: &Allocator<'_>,
    requested: &str,
    owner: &str,
    name: &str,
) -> Result<Ipv4Addr, ApiError> {
    let cidr = alloc.service_cidr;
    let value = serde_json::to_vec(&json!({"service": owner})).unwrap_or_default();
    if !requested.is_empty() {
        let ip: Ipv4Addr = requested.parse().map_err(|_| {
            invalid_field(
                name,
                "spec.clusterIP",
                format!("{requested:?}: must be a valid IP address"),
            )
        })?;
        if !cidr.contains(ip) || ip == cidr.network() || ip == cidr.broadcast() {
            return Err(invalid_field(name, "spec.clusterIP", format!("{requested}: provided IP is not in the valid range. The range of valid IPs is {cidr}")));
        }
        return match alloc.store.create(&format!("{IP_PREFIX}{ip}"), value).await {
            Ok(_) => Ok(ip),
            Err(StoreError::AlreadyExists { .. }) => Err(invalid_field(
                name,
                "spec.clusterIP",
                format!("{requested}: provided IP is already allocated"),
            )),
            Err(e) => Err(ApiError::internal(format!("allocating a cluster IP: {e}"))),
        };
    }
    let base = u32::from(cidr.network());
    let size = cidr.size().saturating_sub(2);
    let start: u32 = rand::random::<u32>() % size.max(1);
    for i in 0..size {
        // Offset 1 (the first usable address) is kept for the `kubernetes` service, as upstream.
        let off = 2 + (start + i) % size.saturating_sub(1).max(1);
        let ip = Ipv4Addr::from(base + off);
        match alloc
            .store
            .create(&format!("{IP_PREFIX}{ip}"), value.clone())
            .await
        {
            Ok(_) => return Ok(ip),
            Err(StoreError::AlreadyExists { .. }) => continue,
            Err(e) => return Err(ApiError::internal(format!("allocating a cluster IP: {e}"))),
        }
    }
    Err(ApiError::new(
        500,
        "InternalError",
        format!("failed to allocate a serviceIP: range {cidr} is full"),
    ))
}

/// Whether a Service needs a `spec.healthCheckNodePort`: `type: LoadBalancer` with
/// `externalTrafficPolicy: Local` (kube-apiserver's `needsHCNodePort`).
fn needs_health_check_node_port(svc: &Value) -> bool {
    svc.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer")
        && svc
            .pointer("/spec/externalTrafficPolicy")
            .and_then(Value::as_str)
            == Some("Local")
}

/// `spec.healthCheckNodePort`, unless unset, null or 0 (`Some(Err(()))`: not a port number).
fn hc_port(svc: &Value) -> Option<Result<u16, ()>> {
    let v = svc.pointer("/spec/healthCheckNodePort")?;
    if v.is_null() || v.as_u64() == Some(0) {
        return None;
    }
    Some(v.as_u64().and_then(|p| u16::try_from(p).ok()).ok_or(()))
}

/// `spec.healthCheckNodePort`, as kube-apiserver handles it: a Service that needs one gets one
/// from the NodePort range (the requested one if given, validated and claimed), keeps it on
/// update (also when the update omits it), and loses it when it no longer needs it (type or
/// `externalTrafficPolicy` changed; the claim is released once the update is stored, see
/// [`released_by_update`]). Setting one on a Service that does not need it is invalid. Returns
/// the port newly claimed, if any.
async fn health_check_node_port(
    alloc: &Allocator<'_>,
    obj: &mut Value,
    old: Option<&Value>,
    owner: &str,
    name: &str,
) -> Result<Option<u16>, ApiError> {
    const FIELD: &str = "spec.healthCheckNodePort";
    let want = match hc_port(obj) {
        Some(Err(())) => {
            return Err(invalid_field(
                name,
                FIELD,
                format!(
                    "{}: must be a port number",
                    obj["spec"]["healthCheckNodePort"]
                ),
            ))
        }
        Some(Ok(p)) => Some(p),
        None => None,
    };
    let had = old
        .filter(|o| needs_health_check_node_port(o))
        .and_then(hc_port)
        .and_then(Result::ok);
    if !needs_health_check_node_port(obj) {
        if want.is_some() && want == had {
            // No longer needed: dropped (upstream's dropTypeDependentFields).
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("healthCheckNodePort");
            }
            return Ok(None);
        }
        return match want {
            Some(p) => Err(invalid_field(
                name,
                FIELD,
                format!("{p}: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"),
            )),
            None => Ok(None),
        };
    }
    match (want, had) {
        (Some(p), Some(h)) if p == h => Ok(None),
        (None, Some(h)) => {
            obj["spec"]["healthCheckNodePort"] = h.into();
            Ok(None)
        }
        _ => {
            let port = claim_port(alloc, want, "TCP", owner, name, FIELD).await?;
            obj["spec"]["healthCheckNodePort"] = port.into();
            Ok(Some(port))
        }
    }
}

async fn claim_port(
    alloc: &Allocator<'_>,
    want: Option<u16>,
    proto: &str,
    owner: &str,
    name: &str,
    field: &str,
) -> Result<u16, ApiError> {
    let (lo, hi) = alloc.node_port_range;
    let value = serde_json::to_vec(&json!({"service": owner})).unwrap_or_default();
    if let Some(p) = want {
        if p < lo || p > hi {
            return Err(invalid_field(name, field, format!("Invalid value: {p}: provided port is not in the valid range. The range of valid ports is {lo}-{hi}")));
        }
        return match alloc
            .store
            .create(&format!("{PORT_PREFIX}{p}-{proto}"), value)
            .await
        {
            Ok(_) => Ok(p),
            Err(StoreError::AlreadyExists { .. }) => Err(invalid_field(
                name,
                field,
                format!("Invalid value: {p}: provided port is already allocated"),
            )),
            Err(e) => Err(ApiError::internal(format!("allocating a node port: {e}"))),
        };
    }
    let span = u32::from(hi - lo) + 1;
    let start = rand::random::<u32>() % span;
    for i in 0..span {
        let p = lo + u16::try_from((start + i) % span).unwrap_or(0);
        match alloc
            .store
            .create(&format!("{PORT_PREFIX}{p}-{proto}"), value.clone())
            .await
        {
            Ok(_) => return Ok(p),
            Err(StoreError::AlreadyExists { .. }) => continue,
            Err(e) => return Err(ApiError::internal(format!("allocating a node port: {e}"))),
        }
    }
    Err(ApiError::new(
        500,
        "InternalError",
        format!("failed to allocate a nodePort: range {lo}-{hi} is full"),
    ))
}

/// Releases allocation keys.
pub async fn release(alloc: &Allocator<'_>, keys: &[String]) {
    for k in keys {
        if let Err(e) = alloc.store.delete(k, None).await {
            if !matches!(e, StoreError::NotFound { .. }) {
                tracing::warn!("releasing {k}: {e}");
            }
        }
    }
}

/// The allocation keys an object holds.
pub fn allocation_keys(res: &Resource, obj: &Value) -> Vec<String> {
    if res.kind != "Service" {
        return Vec::new();
    }
    service_keys(obj)
}

/// The keys an update from `old` to `new` gave up (to release once the update is stored).
pub fn released_by_update(res: &Resource, old: &Value, new: &Value) -> Vec<String> {
    let kept = allocation_keys(res, new);
    allocation_keys(res, old)
        .into_iter()
        .filter(|k| !kept.contains(k))
        .collect()
}

/// The allocation keys a Service holds: ClusterIP, node ports, health check node port.
fn service_keys(obj: &Value) -> Vec<String> {
    let mut keys = Vec::new();
    if let Some(ip) = obj
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .filter(|i| !i.is_empty() && *i != "None")
    {
        keys.push(format!("{IP_PREFIX}{ip}"));
    }
    keys.extend(node_port_keys(obj));
    if let Some(Ok(p)) = hc_port(obj) {
        keys.push(format!("{PORT_PREFIX}{p}-TCP"));
    }
    keys
}

/// The allocation keys of a Service's `spec.ports[].nodePort`s.
fn node_port_keys(obj: &Value) -> Vec<String> {
    let mut keys = Vec::new();
    for p in obj
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(n) = p.get("nodePort").and_then(Value::as_u64) {
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            keys.push(format!("{PORT_PREFIX}{n}-{proto}"));
        }
    }
    keys
}

/// Releases what a deleted object held.
pub async fn release_for(alloc: &Allocator<'_>, res: &Resource, obj: &Value) {
    release(alloc, &allocation_keys(res, obj)).await;
}
