//! What an update may not change: [`merge_update`] keeps the stored object's identity and
//! system metadata (and its status, outside the status subresource) under a PUT, and
//! [`check_immutable`] rejects changes to immutable fields (a Service's `clusterIP`, a bound pod's
//! `nodeName`, a workload's selector, a Node's podCIDRs).

use crate::machinery as mach;
use crate::objects::meta_mut;
use crate::resources::{Resource, Sub};
use serde_json::Value;

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
        "Node" => causes.extend(super::node::pod_cidrs_immutable(old, new)),
        _ => {}
    }
    causes.extend(super::secrets::immutable_data(res.kind, old, new));
    if causes.is_empty() {
        Ok(())
    } else {
        Err(causes)
    }
}
