//! The strategic-merge table: how a list at a given `(kind, path)` merges.
//!
//! Upstream encodes this in Go struct tags (`patchStrategy:"merge" patchMergeKey:"name"`); we
//! keep the subset from section 9.2 of the control-plane notes, keyed by kind and by the path of
//! field names from the object root (array positions are not part of the path, so
//! `spec.containers[3].env` is looked up as `["spec", "containers", "env"]`).
//!
//! | Path (relative to a pod spec unless noted) | Strategy |
//! |---|---|
//! | `metadata.finalizers` (any `metadata`, including pod templates) | primitive set merge |
//! | `metadata.ownerReferences` | merge by `uid` |
//! | `containers`, `initContainers`, `ephemeralContainers` | merge by `name` |
//! | `<containers>.env` | merge by `name` |
//! | `<containers>.ports` | merge by `containerPort` |
//! | `<containers>.volumeMounts` / `volumeDevices` | merge by `mountPath` / `devicePath` |
//! | `volumes` (merge + retainKeys), `imagePullSecrets`, `schedulingGates`, `resourceClaims` | merge by `name` |
//! | `hostAliases` | merge by `ip` |
//! | `topologySpreadConstraints` | merge by `topologyKey` |
//! | Pod `status.conditions` / `status.podIPs` / `status.hostIPs` | by `type` / `ip` / `ip` |
//! | Node `status.conditions` / `status.addresses` | by `type` |
//! | Node `spec.podCIDRs` | primitive set merge |
//! | Service `spec.ports` | merge by `port` |
//! | `status.conditions` of Deployment, ReplicaSet, DaemonSet, StatefulSet, Namespace, Service | by `type` |
//! | everything else (`tolerations`, `args`, `command`, Endpoints `subsets`, EndpointSlice `endpoints`/`ports`, ...) | replace |
//!
//! A pod spec lives at `spec` for `Pod`, at `spec.template.spec` for `Deployment`, `ReplicaSet`,
//! `DaemonSet`, `StatefulSet` and `Job`, and at `template.spec` for `PodTemplate`. CronJob's
//! `spec.jobTemplate` is deliberately not mapped (not served).
//!
//! [`is_atomic_map`] lists the maps server-side apply treats as one field (`x-kubernetes-map-type:
//! atomic` / `structType=atomic` upstream); strategic merge still merges them key by key, as
//! upstream does.

/// How a list field merges in a strategic merge patch (and how server-side apply keys it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// The patch list replaces the original list (no `patchStrategy` upstream; also "atomic").
    Replace,
    /// Lists of objects merged element by element, matched by this key.
    MergeByKey(&'static str),
    /// Lists of scalars merged as a set (union, deduplicated).
    MergePrimitive,
}

/// Kinds whose pod spec lives at `spec.template.spec`.
const TEMPLATED_KINDS: [&str; 5] = [
    "Deployment",
    "ReplicaSet",
    "DaemonSet",
    "StatefulSet",
    "Job",
];

/// Kinds with `status.conditions` merged by `type`.
const CONDITION_KINDS: [&str; 9] = [
    "Pod",
    "Node",
    "Deployment",
    "ReplicaSet",
    "DaemonSet",
    "StatefulSet",
    "Namespace",
    "Service",
    "Job",
];

const CONTAINER_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

/// Where the pod spec of `kind` lives, if it has one.
fn pod_spec_prefix(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&["spec"]),
        "PodTemplate" => Some(&["template", "spec"]),
        k if TEMPLATED_KINDS.contains(&k) => Some(&["spec", "template", "spec"]),
        _ => None,
    }
}

/// Where the pod template's metadata of `kind` lives, if it has one.
fn template_metadata_prefix(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "PodTemplate" => Some(&["template", "metadata"]),
        k if TEMPLATED_KINDS.contains(&k) => Some(&["spec", "template", "metadata"]),
        _ => None,
    }
}

fn object_meta_rule(rest: &[&str]) -> Option<ListStrategy> {
    match rest {
        ["finalizers"] => Some(ListStrategy::MergePrimitive),
        ["ownerReferences"] => Some(ListStrategy::MergeByKey("uid")),
        _ => None,
    }
}

fn pod_spec_rule(rest: &[&str]) -> ListStrategy {
    match rest {
        [list] if CONTAINER_LISTS.contains(list) => ListStrategy::MergeByKey("name"),
        [list, field] if CONTAINER_LISTS.contains(list) => match *field {
            "env" => ListStrategy::MergeByKey("name"),
            "ports" => ListStrategy::MergeByKey("containerPort"),
            "volumeMounts" => ListStrategy::MergeByKey("mountPath"),
            "volumeDevices" => ListStrategy::MergeByKey("devicePath"),
            _ => ListStrategy::Replace,
        },
        ["volumes" | "imagePullSecrets" | "schedulingGates" | "resourceClaims"] => {
            ListStrategy::MergeByKey("name")
        }
        ["hostAliases"] => ListStrategy::MergeByKey("ip"),
        ["topologySpreadConstraints"] => ListStrategy::MergeByKey("topologyKey"),
        _ => ListStrategy::Replace,
    }
}

/// The strategy for the list at `path` (field names from the object root) in an object of
/// `kind`. Unknown kinds and paths replace.
pub fn list_strategy(kind: &str, path: &[&str]) -> ListStrategy {
    if let Some(rest) = path.strip_prefix(&["metadata"][..]) {
        if let Some(rule) = object_meta_rule(rest) {
            return rule;
        }
    }
    if let Some(prefix) = template_metadata_prefix(kind) {
        if let Some(rule) = path.strip_prefix(prefix).and_then(object_meta_rule) {
            return rule;
        }
    }
    if let Some(prefix) = pod_spec_prefix(kind) {
        if let Some(rest) = path.strip_prefix(prefix) {
            return pod_spec_rule(rest);
        }
    }
    if path == ["status", "conditions"] && CONDITION_KINDS.contains(&kind) {
        return ListStrategy::MergeByKey("type");
    }
    match (kind, path) {
        ("Pod", ["status", "podIPs" | "hostIPs"]) => ListStrategy::MergeByKey("ip"),
        ("Node", ["status", "addresses"]) => ListStrategy::MergeByKey("type"),
        ("Node", ["spec", "podCIDRs"]) => ListStrategy::MergePrimitive,
        ("Service", ["spec", "ports"]) => ListStrategy::MergeByKey("port"),
        _ => ListStrategy::Replace,
    }
}

/// True for maps that server-side apply owns as a single field (atomic upstream): label
/// selectors of workloads, Service `spec.selector`, pod `nodeSelector`.
pub fn is_atomic_map(kind: &str, path: &[&str]) -> bool {
    if path == ["spec", "selector"] && (kind == "Service" || TEMPLATED_KINDS.contains(&kind)) {
        return true;
    }
    pod_spec_prefix(kind)
        .and_then(|prefix| path.strip_prefix(prefix))
        .is_some_and(|rest| rest == ["nodeSelector"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_paths() {
        assert_eq!(
            list_strategy("Pod", &["spec", "containers"]),
            ListStrategy::MergeByKey("name")
        );
        assert_eq!(
            list_strategy("Pod", &["spec", "initContainers", "env"]),
            ListStrategy::MergeByKey("name")
        );
        assert_eq!(
            list_strategy("Pod", &["spec", "containers", "ports"]),
            ListStrategy::MergeByKey("containerPort")
        );
        assert_eq!(
            list_strategy("Pod", &["spec", "containers", "volumeMounts"]),
            ListStrategy::MergeByKey("mountPath")
        );
        assert_eq!(
            list_strategy("Pod", &["spec", "containers", "args"]),
            ListStrategy::Replace
        );
        assert_eq!(
            list_strategy("Pod", &["spec", "tolerations"]),
            ListStrategy::Replace
        );
        assert_eq!(
            list_strategy("Pod", &["spec", "volumes"]),
            ListStrategy::MergeByKey("name")
        );
        assert_eq!(
            list_strategy("Pod", &["status", "conditions"]),
            ListStrategy::MergeByKey("type")
        );
        assert_eq!(
            list_strategy("Pod", &["status", "podIPs"]),
            ListStrategy::MergeByKey("ip")
        );
        assert_eq!(
            list_strategy("Pod", &["status", "containerStatuses"]),
            ListStrategy::Replace
        );
    }

    #[test]
    fn templated_paths() {
        assert_eq!(
            list_strategy("Deployment", &["spec", "template", "spec", "containers"]),
            ListStrategy::MergeByKey("name")
        );
        assert_eq!(
            list_strategy(
                "ReplicaSet",
                &["spec", "template", "spec", "containers", "env"]
            ),
            ListStrategy::MergeByKey("name")
        );
        // A Deployment has no spec.containers.
        assert_eq!(
            list_strategy("Deployment", &["spec", "containers"]),
            ListStrategy::Replace
        );
        assert_eq!(
            list_strategy(
                "Deployment",
                &["spec", "template", "metadata", "finalizers"]
            ),
            ListStrategy::MergePrimitive
        );
        assert_eq!(
            list_strategy(
                "CronJob",
                &[
                    "spec",
                    "jobTemplate",
                    "spec",
                    "template",
                    "spec",
                    "containers"
                ]
            ),
            ListStrategy::Replace
        );
    }

    #[test]
    fn metadata_and_kind_specific_paths() {
        for kind in ["Pod", "ConfigMap", "Whatever"] {
            assert_eq!(
                list_strategy(kind, &["metadata", "finalizers"]),
                ListStrategy::MergePrimitive
            );
            assert_eq!(
                list_strategy(kind, &["metadata", "ownerReferences"]),
                ListStrategy::MergeByKey("uid")
            );
        }
        assert_eq!(
            list_strategy("Service", &["spec", "ports"]),
            ListStrategy::MergeByKey("port")
        );
        assert_eq!(
            list_strategy("Node", &["status", "addresses"]),
            ListStrategy::MergeByKey("type")
        );
        assert_eq!(
            list_strategy("Node", &["spec", "podCIDRs"]),
            ListStrategy::MergePrimitive
        );
        assert_eq!(
            list_strategy("Node", &["spec", "taints"]),
            ListStrategy::Replace
        );
        assert_eq!(
            list_strategy("Endpoints", &["subsets"]),
            ListStrategy::Replace
        );
        assert_eq!(
            list_strategy("EndpointSlice", &["endpoints"]),
            ListStrategy::Replace
        );
        assert_eq!(
            list_strategy("ConfigMap", &["status", "conditions"]),
            ListStrategy::Replace
        );
    }

    #[test]
    fn atomic_maps() {
        assert!(is_atomic_map("Deployment", &["spec", "selector"]));
        assert!(is_atomic_map("Service", &["spec", "selector"]));
        assert!(is_atomic_map("Pod", &["spec", "nodeSelector"]));
        assert!(is_atomic_map(
            "ReplicaSet",
            &["spec", "template", "spec", "nodeSelector"]
        ));
        assert!(!is_atomic_map("Pod", &["metadata", "labels"]));
    }
}
