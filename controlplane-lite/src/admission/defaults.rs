//! Defaulting: what a create fills in (uid, timestamps, generation, per-kind defaults as upstream's
//! `SetDefaults_*`), and the derived fields of an update (carried-over ClusterIP and node ports,
//! pod-spec defaults, generation bumps).

use crate::objects::{meta_mut, now_rfc3339};
use crate::resources::Resource;
use serde_json::{json, Value};

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
        "Secret" => super::secrets::normalize_secret(obj),
        _ => {}
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
    if res.kind == "Secret" {
        super::secrets::normalize_secret(new);
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
