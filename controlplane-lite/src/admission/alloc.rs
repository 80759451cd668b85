//! The ClusterIP and NodePort allocators. Allocations are keys in the store
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
                if want.is_some() && want == had {
                    continue;
                }
                let port = claim_port(alloc, want, &proto, &owner, &name, i).await?;
                claimed.push(format!("{PORT_PREFIX}{port}-{proto}"));
                obj["spec"]["ports"][i]["nodePort"] = port.into();
            }
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

async fn claim_port(
    alloc: &Allocator<'_>,
    want: Option<u16>,
    proto: &str,
    owner: &str,
    name: &str,
    idx: usize,
) -> Result<u16, ApiError> {
    let (lo, hi) = alloc.node_port_range;
    let value = serde_json::to_vec(&json!({"service": owner})).unwrap_or_default();
    let field = format!("spec.ports[{idx}].nodePort");
    if let Some(p) = want {
        if p < lo || p > hi {
            return Err(invalid_field(name, &field, format!("Invalid value: {p}: provided port is not in the valid range. The range of valid ports is {lo}-{hi}")));
        }
        return match alloc
            .store
            .create(&format!("{PORT_PREFIX}{p}-{proto}"), value)
            .await
        {
            Ok(_) => Ok(p),
            Err(StoreError::AlreadyExists { .. }) => Err(invalid_field(
                name,
                &field,
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
    let mut keys = Vec::new();
    if res.kind != "Service" {
        return keys;
    }
    if let Some(ip) = obj
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .filter(|i| !i.is_empty() && *i != "None")
    {
        keys.push(format!("{IP_PREFIX}{ip}"));
    }
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
