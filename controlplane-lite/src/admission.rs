//! Kind-specific behaviour on writes: defaulting, immutable fields, generation, status and scale
//! subresources, graceful deletion and finalizers, and the ClusterIP / NodePort allocators.
//!
//! Allocations are keys in the store (`/registry/serviceips/<ip>`,
//! `/registry/servicenodeports/<port>-<protocol>`), claimed with a create, so two `ferry-server`
//! replicas on one etcd can never hand out the same address or port.

use crate::api::Api;
use crate::machinery as mach;
use crate::objects::{meta_mut, meta_str, now_rfc3339, rfc3339_in};
use crate::resources::{Resource, Sub};
use crate::web::ApiError;
use ferry_store::StoreError;
use serde_json::{json, Value};
use std::net::Ipv4Addr;

const IP_PREFIX: &str = "/registry/serviceips/";
const PORT_PREFIX: &str = "/registry/servicenodeports/";

fn set_default(obj: &mut Value, path: &[&str], value: Value) {
    let mut cur = obj;
    for (i, p) in path.iter().enumerate() {
        if !cur.is_object() {
            return;
        }
        if i == path.len() - 1 {
            if cur.get(*p).is_none_or(Value::is_null) {
                cur[*p] = value;
            }
            return;
        }
        if cur.get(*p).is_none_or(Value::is_null) {
            cur[*p] = json!({});
        }
        cur = &mut cur[*p];
    }
}

fn default_pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    set_default(spec, &["restartPolicy"], "Always".into());
    set_default(spec, &["terminationGracePeriodSeconds"], 30.into());
    set_default(spec, &["dnsPolicy"], "ClusterFirst".into());
    set_default(spec, &["schedulerName"], "default-scheduler".into());
    set_default(spec, &["securityContext"], json!({}));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                let image = c
                    .get("image")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let latest = !image.contains(':') || image.ends_with(":latest");
                set_default(
                    c,
                    &["imagePullPolicy"],
                    if latest { "Always" } else { "IfNotPresent" }.into(),
                );
                set_default(
                    c,
                    &["terminationMessagePath"],
                    "/dev/termination-log".into(),
                );
                set_default(c, &["terminationMessagePolicy"], "File".into());
                set_default(c, &["resources"], json!({}));
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports {
                        set_default(p, &["protocol"], "TCP".into());
                    }
                }
            }
        }
    }
}

/// Defaults on create (uid, timestamps, generation, per-kind defaults).
pub fn defaults_on_create(res: &Resource, obj: &mut Value, _ns: &str) {
    let m = meta_mut(obj);
    m.insert("uid".into(), uuid::Uuid::new_v4().to_string().into());
    m.insert("creationTimestamp".into(), now_rfc3339().into());
    m.remove("deletionTimestamp");
    m.remove("deletionGracePeriodSeconds");
    if obj.get("spec").is_some()
        || matches!(res.kind, "Deployment" | "ReplicaSet" | "Pod" | "Service")
    {
        meta_mut(obj).insert("generation".into(), 1.into());
    }
    match res.kind {
        "Namespace" => {
            set_default(obj, &["spec", "finalizers"], json!(["kubernetes"]));
            obj["status"] = json!({"phase": "Active"});
        }
        "Pod" => {
            set_default(obj, &["spec"], json!({}));
            default_pod_spec(&mut obj["spec"]);
            let phase = obj.pointer("/status/phase").cloned();
            if phase.is_none_or(|p| p.is_null()) {
                obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
            }
        }
        "Service" => {
            set_default(obj, &["spec", "type"], "ClusterIP".into());
            set_default(obj, &["spec", "sessionAffinity"], "None".into());
            set_default(obj, &["spec", "internalTrafficPolicy"], "Cluster".into());
            let ty = obj
                .pointer("/spec/type")
                .and_then(Value::as_str)
                .unwrap_or("ClusterIP")
                .to_owned();
            if matches!(ty.as_str(), "NodePort" | "LoadBalancer") {
                set_default(obj, &["spec", "externalTrafficPolicy"], "Cluster".into());
            }
            if let Some(ports) = obj.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
                for p in ports {
                    set_default(p, &["protocol"], "TCP".into());
                    let port = p.get("port").cloned().unwrap_or(Value::Null);
                    set_default(p, &["targetPort"], port);
                }
            }
            set_default(obj, &["status", "loadBalancer"], json!({}));
        }
        "Deployment" => {
            set_default(obj, &["spec", "replicas"], 1.into());
            set_default(obj, &["spec", "revisionHistoryLimit"], 10.into());
            set_default(obj, &["spec", "progressDeadlineSeconds"], 600.into());
            set_default(obj, &["spec", "strategy", "type"], "RollingUpdate".into());
            if obj.pointer("/spec/strategy/type").and_then(Value::as_str) == Some("RollingUpdate") {
                set_default(
                    obj,
                    &["spec", "strategy", "rollingUpdate", "maxSurge"],
                    "25%".into(),
                );
                set_default(
                    obj,
                    &["spec", "strategy", "rollingUpdate", "maxUnavailable"],
                    "25%".into(),
                );
            }
            if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
                default_pod_spec(spec);
            }
            set_default(obj, &["status"], json!({}));
        }
        "ReplicaSet" => {
            set_default(obj, &["spec", "replicas"], 1.into());
            if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
                default_pod_spec(spec);
            }
            set_default(obj, &["status", "replicas"], 0.into());
        }
        _ => {}
    }
}

/// Claims ClusterIP and NodePorts for a Service. Returns the keys claimed (to release on failure).
pub async fn allocate(
    api: &Api,
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
            let ip = claim_ip(api, &requested, &owner, &name).await?;
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
                let port = claim_port(api, want, &proto, &owner, &name, i).await?;
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
            release(api, &claimed).await;
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
    api: &Api,
    requested: &str,
    owner: &str,
    name: &str,
) -> Result<Ipv4Addr, ApiError> {
    let cidr = api.cfg.service_cidr;
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
        return match api.store.create(&format!("{IP_PREFIX}{ip}"), value).await {
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
        match api
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
    api: &Api,
    want: Option<u16>,
    proto: &str,
    owner: &str,
    name: &str,
    idx: usize,
) -> Result<u16, ApiError> {
    let (lo, hi) = api.cfg.node_port_range;
    let value = serde_json::to_vec(&json!({"service": owner})).unwrap_or_default();
    let field = format!("spec.ports[{idx}].nodePort");
    if let Some(p) = want {
        if p < lo || p > hi {
            return Err(invalid_field(name, &field, format!("Invalid value: {p}: provided port is not in the valid range. The range of valid ports is {lo}-{hi}")));
        }
        return match api
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
        match api
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
pub async fn release(api: &Api, keys: &[String]) {
    for k in keys {
        if let Err(e) = api.store.delete(k, None).await {
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
pub async fn release_for(api: &Api, res: &Resource, obj: &Value) {
    release(api, &allocation_keys(res, obj)).await;
}

/// The object a PUT (or status PUT/PATCH) produces from the current one and the request body.
pub fn merge_update(res: &Resource, sub: Option<Sub>, old: &Value, incoming: Value) -> Value {
    match sub {
        Some(Sub::Status) => {
            let mut new = old.clone();
            new["status"] = incoming.get("status").cloned().unwrap_or(Value::Null);
            new
        }
        _ => {
            let mut new = incoming;
            new["kind"] = res.kind.into();
            new["apiVersion"] = res.api_version().into();
            {
                let m = meta_mut(&mut new);
                for k in [
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "namespace",
                    "generation",
                ] {
                    match old.get("metadata").and_then(|o| o.get(k)) {
                        Some(v) => {
                            m.insert(k.into(), v.clone());
                        }
                        None => {
                            m.remove(k);
                        }
                    }
                }
                m.insert("name".into(), old["metadata"]["name"].clone());
            }
            if res.has(Sub::Status) {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(o) = new.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
            }
            new
        }
    }
}

/// Derived fields on update: carried-over allocations, generation bumps.
pub fn on_update(res: &Resource, old: &Value, new: &mut Value) {
    if res.kind == "Service" {
        let cur = new
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("");
        if cur.is_empty() {
            if let Some(ip) = old.pointer("/spec/clusterIP") {
                new["spec"]["clusterIP"] = ip.clone();
                if let Some(ips) = old.pointer("/spec/clusterIPs") {
                    new["spec"]["clusterIPs"] = ips.clone();
                }
            }
        }
        let n = new
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        for i in 0..n {
            let missing = new["spec"]["ports"][i]
                .get("nodePort")
                .is_none_or(Value::is_null);
            if missing {
                let port = new["spec"]["ports"][i]["port"].clone();
                let prev = old
                    .pointer("/spec/ports")
                    .and_then(Value::as_array)
                    .and_then(|ps| ps.iter().find(|p| p["port"] == port))
                    .and_then(|p| p.get("nodePort"))
                    .cloned();
                if let Some(np) = prev {
                    new["spec"]["ports"][i]["nodePort"] = np;
                }
            }
            let tp = new["spec"]["ports"][i]
                .get("targetPort")
                .is_none_or(Value::is_null);
            if tp {
                new["spec"]["ports"][i]["targetPort"] = new["spec"]["ports"][i]["port"].clone();
            }
            if new["spec"]["ports"][i]
                .get("protocol")
                .is_none_or(Value::is_null)
            {
                new["spec"]["ports"][i]["protocol"] = "TCP".into();
            }
        }
    }
    if res.kind == "Pod" {
        if let Some(spec) = new.get_mut("spec") {
            default_pod_spec(spec);
        }
    }
    if matches!(res.kind, "Deployment" | "ReplicaSet") {
        if let Some(spec) = new.pointer_mut("/spec/template/spec") {
            default_pod_spec(spec);
        }
    }
    if new.get("spec") != old.get("spec") && new.get("spec").is_some() {
        let g = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            + 1;
        meta_mut(new).insert("generation".into(), g.into());
    }
}

/// Immutable fields; returns the invalid causes.
pub fn check_immutable(
    res: &Resource,
    old: &Value,
    new: &Value,
) -> Result<(), Vec<ferry_apimachinery::validate::FieldError>> {
    let mut causes = Vec::new();
    let same = |p: &str| old.pointer(p) == new.pointer(p);
    match res.kind {
        "Service"
            if !same("/spec/clusterIP")
                && old
                    .pointer("/spec/clusterIP")
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty()) =>
        {
            causes.push(mach::cause(
                "spec.clusterIP",
                "FieldValueInvalid",
                "field is immutable",
            ));
        }
        "Pod"
            if old
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty())
                && !same("/spec/nodeName") =>
        {
            causes.push(mach::cause(
                "spec.nodeName",
                "FieldValueInvalid",
                "field is immutable",
            ));
        }
        "Deployment" | "ReplicaSet" if !same("/spec/selector") => {
            causes.push(mach::cause(
                "spec.selector",
                "FieldValueInvalid",
                "field is immutable",
            ));
        }
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(causes)
    }
}

/// The `autoscaling/v1` Scale of a Deployment or ReplicaSet.
pub fn scale_of(_res: &Resource, obj: &Value) -> Value {
    let selector = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        });
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": obj["metadata"]["name"],
            "namespace": obj["metadata"]["namespace"],
            "uid": obj["metadata"]["uid"],
            "resourceVersion": obj["metadata"]["resourceVersion"],
            "creationTimestamp": obj["metadata"]["creationTimestamp"],
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(0.into())},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(0.into()),
            "selector": selector.unwrap_or_default(),
        },
    })
}

/// Finalizers of an object.
pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A DeleteOptions `propagationPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Delete the object now; the garbage collector deletes the dependents afterwards.
    Background,
    /// Keep the object (finalizer `foregroundDeletion`) until its blocking dependents are gone.
    Foreground,
    /// Keep the object (finalizer `orphan`) until its dependents' ownerReferences are removed.
    Orphan,
}

impl Propagation {
    /// The finalizer the garbage collector acts on for this policy.
    pub fn finalizer(self) -> Option<&'static str> {
        match self {
            Propagation::Background => None,
            Propagation::Foreground => Some("foregroundDeletion"),
            Propagation::Orphan => Some("orphan"),
        }
    }
}

/// The propagation policy of a DELETE: DeleteOptions `propagationPolicy` (or the legacy
/// `orphanDependents: true`), else the `propagationPolicy` query parameter.
pub fn propagation_policy(
    opts: &Value,
    query: Option<&String>,
) -> Result<Option<Propagation>, String> {
    let named = opts
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .or(query.map(String::as_str));
    match named {
        Some("Background") => Ok(Some(Propagation::Background)),
        Some("Foreground") => Ok(Some(Propagation::Foreground)),
        Some("Orphan") => Ok(Some(Propagation::Orphan)),
        Some(p) => Err(format!(
            "propagationPolicy {p:?} is not one of Orphan, Background, Foreground"
        )),
        None if opts.get("orphanDependents").and_then(Value::as_bool) == Some(true) => {
            Ok(Some(Propagation::Orphan))
        }
        None => Ok(None),
    }
}

/// Adds `f` to `metadata.finalizers` unless present.
pub fn add_finalizer(obj: &mut Value, f: &str) {
    if finalizers(obj).iter().any(|x| x == f) {
        return;
    }
    let m = meta_mut(obj);
    match m.get_mut("finalizers").and_then(Value::as_array_mut) {
        Some(a) => a.push(f.into()),
        None => {
            m.insert("finalizers".into(), json!([f]));
        }
    }
}

fn pod_needs_kubelet(obj: &Value) -> bool {
    let bound = obj
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let phase = obj
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    bound && !matches!(phase, "Succeeded" | "Failed")
}

/// Whether an object marked for deletion only waits for its finalizers (not for a kubelet).
pub fn waits_for_finalizers_only(res: &Resource, obj: &Value) -> bool {
    !(res.kind == "Pod" && pod_needs_kubelet(obj))
}

/// For a delete: `Some(object marked for deletion)` when the deletion must wait (a bound,
/// running pod with a grace period, or finalizers); `None` to delete now.
pub fn graceful(res: &Resource, obj: &Value, grace: Option<i64>) -> Option<Value> {
    let has_finalizers = !finalizers(obj).is_empty();
    let already = !meta_str(obj, "deletionTimestamp").is_empty();
    let pod_wait = res.kind == "Pod" && pod_needs_kubelet(obj) && grace != Some(0);
    if !has_finalizers && !pod_wait {
        return None;
    }
    if already {
        return Some(obj.clone());
    }
    let secs = if res.kind == "Pod" {
        grace
            .or_else(|| {
                obj.pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .unwrap_or(30)
    } else {
        0
    };
    let mut pending = obj.clone();
    let m = meta_mut(&mut pending);
    m.insert("deletionTimestamp".into(), rfc3339_in(secs).into());
    m.insert("deletionGracePeriodSeconds".into(), secs.into());
    if res.kind == "Namespace" {
        pending["status"]["phase"] = "Terminating".into();
    }
    Some(pending)
}

/// Sets (or replaces) a condition in `status.conditions`.
pub fn set_condition(obj: &mut Value, ty: &str, status: &str, reason: &str, message: &str) {
    if !obj.get("status").is_some_and(Value::is_object) {
        obj["status"] = json!({});
    }
    let conds = obj["status"]
        .as_object_mut()
        .expect("status is an object")
        .entry("conditions")
        .or_insert_with(|| json!([]));
    if !conds.is_array() {
        *conds = json!([]);
    }
    let list = conds.as_array_mut().expect("conditions is an array");
    let now = now_rfc3339();
    let mut cond = json!({"type": ty, "status": status, "lastTransitionTime": now, "lastProbeTime": Value::Null});
    if !reason.is_empty() {
        cond["reason"] = reason.into();
    }
    if !message.is_empty() {
        cond["message"] = message.into();
    }
    match list.iter_mut().find(|c| c["type"] == ty) {
        Some(c) => {
            if c["status"] == status {
                cond["lastTransitionTime"] = c["lastTransitionTime"].clone();
            }
            *c = cond;
        }
        None => list.push(cond),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn propagation_policies_and_finalizers() {
        let q = "Orphan".to_owned();
        assert_eq!(propagation_policy(&json!({}), None), Ok(None));
        assert_eq!(
            propagation_policy(&json!({"propagationPolicy": "Foreground"}), Some(&q)),
            Ok(Some(Propagation::Foreground))
        );
        assert_eq!(
            propagation_policy(&json!({}), Some(&q)),
            Ok(Some(Propagation::Orphan))
        );
        assert_eq!(
            propagation_policy(&json!({"orphanDependents": true}), None),
            Ok(Some(Propagation::Orphan))
        );
        assert!(propagation_policy(&json!({"propagationPolicy": "Sideways"}), None).is_err());
        assert_eq!(Propagation::Background.finalizer(), None);

        let res = crate::resources::find("apps", "v1", "deployments").unwrap();
        let obj = json!({"metadata": {"name": "d", "finalizers": ["x"]}});
        let mut fg = obj.clone();
        add_finalizer(&mut fg, "foregroundDeletion");
        add_finalizer(&mut fg, "foregroundDeletion");
        assert_eq!(finalizers(&fg), ["x", "foregroundDeletion"]);
        let pending = graceful(res, &fg, None).unwrap();
        assert!(!meta_str(&pending, "deletionTimestamp").is_empty());
        // No finalizer, no pod: deleted at once.
        assert!(graceful(res, &json!({"metadata": {"name": "d"}}), None).is_none());
    }
}
