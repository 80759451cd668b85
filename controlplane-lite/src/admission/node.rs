//! Nodes: what a node's own credential may write to its Node (kube-apiserver's NodeRestriction,
//! narrowed to what ferry's kubelet and agent write), the `spec.podCIDR(s)` immutability rule
//! (every caller), and the validation of the `ferry.dev/mtu` annotation agents adopt the
//! cluster minimum of.
//!
//! A node (`system:node:<name>`) may, on its own Node: change `status` (through `/status`), add,
//! change or remove labels outside the restricted ones ([`label_forbidden`]), and change the
//! annotations the agent publishes ([`NODE_ANNOTATIONS`]). Nothing else: no `spec` (podCIDR,
//! taints, unschedulable, providerID), no ownerReferences or finalizers, no other annotation.
//! The authorizer (`crate::auth`) already keeps it off other nodes' objects.

use crate::auth::Identity;
use crate::machinery as mach;
use crate::resources::Resource;
use crate::web::ApiError;
use ferry_apimachinery::validate::FieldError;
use serde_json::{Map, Value};

/// The annotations a node may set on its own Node: exactly those the agent publishes
/// (`agent/src/node.rs`: flannel's `--kube-subnet-mgr` keys and `ferry.dev/mtu`). Flannel's
/// admin-set `public-ip-overwrite` is not among them.
pub const NODE_ANNOTATIONS: [&str; 5] = [
    "flannel.alpha.coreos.com/backend-type",
    "flannel.alpha.coreos.com/backend-data",
    "flannel.alpha.coreos.com/public-ip",
    "flannel.alpha.coreos.com/kube-subnet-manager",
    MTU_ANNOTATION,
];

/// The pod MTU a node publishes; every agent adopts the smallest one in the cluster.
pub const MTU_ANNOTATION: &str = "ferry.dev/mtu";
/// Smallest accepted `ferry.dev/mtu` (IPv6's minimum link MTU).
pub const MTU_MIN: u32 = 1280;
/// Largest accepted `ferry.dev/mtu` (the largest IPv4 packet).
pub const MTU_MAX: u32 = 65535;

/// Labels the kubelet may set although they are in `kubernetes.io` / `k8s.io` namespaces
/// (upstream `kubeletapis.IsKubeletLabel`).
const KUBELET_LABELS: [&str; 12] = [
    "kubernetes.io/hostname",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "node.kubernetes.io/windows-build",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
];
/// Label namespaces the kubelet may use freely (upstream `kubeletLabelNamespaces`).
const KUBELET_LABEL_NAMESPACES: [&str; 2] = ["kubelet.kubernetes.io", "node.kubernetes.io"];

fn in_namespace(ns: &str, domain: &str) -> bool {
    ns == domain || ns.strip_suffix(domain).is_some_and(|p| p.ends_with('.'))
}

/// Whether a node may not set, change or remove label `key` on its own Node (upstream
/// NodeRestriction): `node-restriction.kubernetes.io/` (and its subdomains) always, and
/// `kubernetes.io` / `k8s.io` labels except the kubelet's own.
pub fn label_forbidden(key: &str) -> bool {
    let ns = key.split_once('/').map_or("", |(ns, _)| ns);
    if in_namespace(ns, "node-restriction.kubernetes.io") {
        return true;
    }
    let kubernetes = in_namespace(ns, "kubernetes.io") || in_namespace(ns, "k8s.io");
    let kubelet = KUBELET_LABELS.contains(&key)
        || KUBELET_LABEL_NAMESPACES
            .iter()
            .any(|allowed| in_namespace(ns, allowed));
    kubernetes && !kubelet
}

fn string_map(obj: &Value, field: &str) -> Map<String, Value> {
    obj.pointer(&format!("/metadata/{field}"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// Keys whose values differ between two maps (added, changed or removed), sorted.
fn changed_keys(old: &Map<String, Value>, new: &Map<String, Value>) -> Vec<String> {
    let mut keys: Vec<String> = old
        .keys()
        .chain(new.keys())
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Everything of a Node but what a node may change and what the server maintains.
fn restricted_view(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(o) = v.as_object_mut() {
        for k in ["status", "kind", "apiVersion"] {
            o.remove(k);
        }
        // An empty spec is no spec (the kubelet registers with `"spec": {}`).
        if o.get("spec")
            .is_some_and(|s| s.as_object().is_some_and(Map::is_empty))
        {
            o.remove("spec");
        }
        if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in [
                "labels",
                "annotations",
                "managedFields",
                "resourceVersion",
                "generation",
                "uid",
                "creationTimestamp",
                "name",
                "generateName",
                "selfLink",
            ] {
                m.remove(k);
            }
            // Empty lists are no lists (clients send `ownerReferences: []`).
            m.retain(|_, v| !v.as_array().is_some_and(Vec::is_empty));
            if m.is_empty() {
                o.remove("metadata");
            }
        }
    }
    v
}

/// NodeRestriction: whether `who` may turn Node `old` (`None`: create) into `new`. Only node
/// identities writing Nodes are restricted; a refusal is a 403 naming what the node may not
/// change. Status-subresource writes only ever change `status`, which is allowed.
pub fn node_restriction(
    who: &Identity,
    res: &Resource,
    old: Option<&Value>,
    new: &Value,
) -> Result<(), ApiError> {
    let Identity::Node(node) = who else {
        return Ok(());
    };
    if res.kind != "Node" {
        return Ok(());
    }
    let name = new
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let forbid = |what: String| {
        Err(ApiError::new(
            403,
            "Forbidden",
            format!("nodes \"{name}\" is forbidden: node \"{node}\" is not allowed to {what}"),
        ))
    };
    if name != node {
        return forbid(format!("modify node \"{name}\""));
    }
    let empty = Value::Object(Map::new());
    let old = old.unwrap_or(&empty);
    let labels: Vec<String> = changed_keys(&string_map(old, "labels"), &string_map(new, "labels"))
        .into_iter()
        .filter(|k| label_forbidden(k))
        .collect();
    if !labels.is_empty() {
        return forbid(format!("modify labels: {}", labels.join(", ")));
    }
    let annotations: Vec<String> = changed_keys(
        &string_map(old, "annotations"),
        &string_map(new, "annotations"),
    )
    .into_iter()
    .filter(|k| !NODE_ANNOTATIONS.contains(&k.as_str()))
    .collect();
    if !annotations.is_empty() {
        return forbid(format!(
            "modify annotations: {} (only {} are a node's own)",
            annotations.join(", "),
            NODE_ANNOTATIONS.join(", ")
        ));
    }
    let (was, now) = (restricted_view(old), restricted_view(new));
    if was == now {
        return Ok(());
    }
    if old.pointer("/spec/taints") != new.pointer("/spec/taints") {
        return forbid("modify taints".to_owned());
    }
    let mut fields: Vec<String> = ["spec", "metadata"]
        .iter()
        .flat_map(|top| {
            let (a, b) = (&was[*top], &now[*top]);
            match (a.as_object(), b.as_object()) {
                (Some(a), Some(b)) => changed_keys(a, b)
                    .into_iter()
                    .map(|k| format!("{top}.{k}"))
                    .collect(),
                _ if a != b => vec![(*top).to_owned()],
                _ => Vec::new(),
            }
        })
        .collect();
    if fields.is_empty() {
        fields.push("the object outside status, labels and its annotations".to_owned());
    }
    forbid(format!("modify {}", fields.join(", ")))
}

/// `spec.podCIDR` / `spec.podCIDRs` are immutable once set (any caller; node IPAM sets them
/// once, from unset). The invalid causes, empty when they are unchanged or were unset.
pub fn pod_cidrs_immutable(old: &Value, new: &Value) -> Vec<FieldError> {
    let mut causes = Vec::new();
    for (pointer, field) in [
        ("/spec/podCIDR", "spec.podCIDR"),
        ("/spec/podCIDRs", "spec.podCIDRs"),
    ] {
        let set = match old.pointer(pointer) {
            Some(Value::String(s)) => !s.is_empty(),
            Some(Value::Array(a)) => !a.is_empty(),
            _ => false,
        };
        if set && old.pointer(pointer) != new.pointer(pointer) {
            causes.push(mach::cause(
                field,
                "FieldValueInvalid",
                "field is immutable: node updates may not change podCIDR except from \"\" to valid",
            ));
        }
    }
    causes
}

/// Node validation beyond the generic object checks: `ferry.dev/mtu`, when present, is a
/// decimal number in [`MTU_MIN`]..=[`MTU_MAX`]; `spec.podCIDR(s)` are IPv4 CIDRs and agree.
/// On an update (`old` given) a value the update does not change is not checked again, so a
/// value stored before these checks existed does not block every later write (status too).
pub fn validate_node(obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut causes = validate_node_fields(obj);
    if let Some(old) = old {
        let stale = validate_node_fields(old);
        causes.retain(|c| !stale.contains(c));
    }
    causes
}

fn validate_node_fields(obj: &Value) -> Vec<FieldError> {
    let mut causes = Vec::new();
    if let Some(v) = obj
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(MTU_ANNOTATION))
    {
        if let Err(why) = parse_mtu(v) {
            causes.push(mach::cause(
                &format!("metadata.annotations[{MTU_ANNOTATION}]"),
                "FieldValueInvalid",
                &format!("{MTU_ANNOTATION}: {why}"),
            ));
        }
    }
    let single = obj.pointer("/spec/podCIDR").and_then(Value::as_str);
    if let Some(c) = single.filter(|c| !c.is_empty()) {
        if c.parse::<ipnetwork::Ipv4Network>().is_err() {
            causes.push(mach::cause(
                "spec.podCIDR",
                "FieldValueInvalid",
                &format!("{c:?} is not a valid IPv4 CIDR"),
            ));
        }
    }
    if let Some(list) = obj.pointer("/spec/podCIDRs") {
        let items = list.as_array().map(Vec::as_slice).unwrap_or_default();
        if !list.is_array() && !list.is_null() {
            causes.push(mach::cause(
                "spec.podCIDRs",
                "FieldValueInvalid",
                "must be a list of CIDRs",
            ));
        }
        for (i, c) in items.iter().enumerate() {
            if c.as_str()
                .and_then(|c| c.parse::<ipnetwork::Ipv4Network>().ok())
                .is_none()
            {
                causes.push(mach::cause(
                    &format!("spec.podCIDRs[{i}]"),
                    "FieldValueInvalid",
                    &format!("{c} is not a valid IPv4 CIDR"),
                ));
            }
        }
        if let (Some(first), Some(single)) = (items.first().and_then(Value::as_str), single) {
            if !single.is_empty() && first != single {
                causes.push(mach::cause(
                    "spec.podCIDRs[0]",
                    "FieldValueInvalid",
                    "must match spec.podCIDR",
                ));
            }
        }
    }
    causes
}

/// The value of a `ferry.dev/mtu` annotation, or why it is not acceptable.
fn parse_mtu(v: &Value) -> Result<u32, String> {
    let s = v.as_str().ok_or("must be a string")?;
    let n: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a decimal number"))?;
    u32::try_from(n)
        .ok()
        .filter(|n| (MTU_MIN..=MTU_MAX).contains(n))
        .ok_or_else(|| format!("{n} is outside {MTU_MIN}..={MTU_MAX}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn restricted_labels_follow_upstream() {
        for k in [
            "node-restriction.kubernetes.io/x",
            "a.node-restriction.kubernetes.io/x",
            "node-role.kubernetes.io/control-plane",
            "kubernetes.io/role",
            "foo.k8s.io/x",
            "k8s.io/x",
        ] {
            assert!(label_forbidden(k), "{k}");
        }
        for k in [
            "kubernetes.io/hostname",
            "node.kubernetes.io/instance-type",
            "node.kubernetes.io/anything",
            "x.kubelet.kubernetes.io/y",
            "topology.kubernetes.io/zone",
            "example.com/pool",
            "plain",
            "notkubernetes.io/x",
        ] {
            assert!(!label_forbidden(k), "{k}");
        }
    }

    #[test]
    fn mtu_bounds() {
        for ok in ["1280", "65535", " 1450 "] {
            assert!(parse_mtu(&json!(ok)).is_ok(), "{ok}");
        }
        for bad in [
            json!("1279"),
            json!("65536"),
            json!("-1"),
            json!("x"),
            json!(""),
            json!("99999999999999999999999"),
            json!(1400),
        ] {
            assert!(parse_mtu(&bad).is_err(), "{bad}");
        }
        let n = json!({"metadata": {"annotations": {"ferry.dev/mtu": "68"}}});
        assert_eq!(validate_node(&n, None).len(), 1);
        assert!(validate_node(&json!({"metadata": {}}), None).is_empty());
        // A stale stored value does not block an update that leaves it alone...
        let mut status = n.clone();
        status["status"] = json!({"phase": "Running"});
        assert!(validate_node(&status, Some(&n)).is_empty());
        // ... but a new bad value is refused.
        let worse = json!({"metadata": {"annotations": {"ferry.dev/mtu": "69"}}});
        assert_eq!(validate_node(&worse, Some(&n)).len(), 1);
        let ok = json!({"metadata": {"annotations": {"ferry.dev/mtu": "1400"}}});
        assert_eq!(validate_node(&n, Some(&ok)).len(), 1);
    }

    #[test]
    fn pod_cidrs_are_checked_and_immutable() {
        let set = json!({"spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]}});
        assert!(validate_node(&set, None).is_empty());
        assert!(pod_cidrs_immutable(&json!({"spec": {}}), &set).is_empty());
        assert!(pod_cidrs_immutable(&set, &set).is_empty());
        assert_eq!(pod_cidrs_immutable(&set, &json!({"spec": {}})).len(), 2);
        let moved = json!({"spec": {"podCIDR": "10.244.2.0/24", "podCIDRs": ["10.244.1.0/24"]}});
        assert_eq!(pod_cidrs_immutable(&set, &moved).len(), 1);
        assert_eq!(
            validate_node(&moved, None).len(),
            1,
            "podCIDRs[0] must match"
        );
        assert_eq!(
            validate_node(&json!({"spec": {"podCIDR": "x"}}), None).len(),
            1
        );
    }

    #[test]
    fn node_restriction_matrix() {
        let res = crate::resources::by_kind("Node").unwrap();
        let n1 = Identity::Node("n1".into());
        let old = json!({"metadata": {"name": "n1", "uid": "u", "resourceVersion": "3",
            "labels": {"kubernetes.io/hostname": "n1"}}, "spec": {"podCIDR": "10.244.1.0/24"}});
        let with = |f: &dyn Fn(&mut Value)| {
            let mut v = old.clone();
            f(&mut v);
            v["metadata"]["resourceVersion"] = "4".into();
            v
        };
        let allowed = [
            with(&|v| v["metadata"]["labels"]["example.com/a"] = "b".into()),
            with(&|v| v["metadata"]["annotations"] = json!({"ferry.dev/mtu": "1400"})),
            with(&|v| v["status"] = json!({"phase": "Running"})),
            with(&|v| v["metadata"]["managedFields"] = json!([{"manager": "x"}])),
        ];
        for new in &allowed {
            assert!(node_restriction(&n1, res, Some(&old), new).is_ok(), "{new}");
        }
        let denied = [
            with(&|v| v["spec"]["podCIDR"] = "10.244.2.0/24".into()),
            with(&|v| v["spec"]["taints"] = json!([{"key": "k"}])),
            with(&|v| v["metadata"]["labels"]["kubernetes.io/role"] = "x".into()),
            with(&|v| v["metadata"]["annotations"] = json!({"x": "y"})),
            with(&|v| v["metadata"]["ownerReferences"] = json!([{"name": "x"}])),
            with(&|v| v["metadata"]["name"] = "n2".into()),
        ];
        for new in &denied {
            let e = node_restriction(&n1, res, Some(&old), new).unwrap_err();
            assert_eq!(e.code, 403, "{new}");
        }
        assert!(node_restriction(&Identity::Admin, res, Some(&old), &denied[0]).is_ok());
        let create = json!({"metadata": {"name": "n1", "labels": {"kubernetes.io/os": "linux"}},
            "spec": {}});
        assert!(node_restriction(&n1, res, None, &create).is_ok());
        let create = json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.244.9.0/24"}});
        assert!(node_restriction(&n1, res, None, &create).is_err());
    }
}
