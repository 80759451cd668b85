//! Subresource views: the `autoscaling/v1` Scale of a workload, and `status.conditions` updates
//! (the `PodScheduled` condition a binding sets).

use crate::objects::now_rfc3339;
use crate::resources::Resource;
use serde_json::{json, Value};

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
