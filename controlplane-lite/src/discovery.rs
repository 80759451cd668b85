//! API discovery, legacy (`APIVersions`, `APIGroupList`, `APIResourceList`) and aggregated
//! (`apidiscovery.k8s.io/v2` and `v2beta1` `APIGroupDiscoveryList`), all derived from
//! [`crate::resources::RESOURCES`] and the create-only [`crate::resources::REVIEWS`].

use crate::resources::{group_versions, Resource, Sub, RESOURCES, REVIEWS};
use serde_json::{json, Value};

/// The Content-Type kubectl requires for aggregated discovery (`v` as requested).
pub fn aggregated_content_type(version: &str) -> String {
    format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList")
}

/// Whether `accept` asks for aggregated discovery, and which version (`v2` preferred).
pub fn wants_aggregated(accept: &str) -> Option<&'static str> {
    let mut best = None;
    for part in accept.split(',') {
        let p = part.replace(' ', "");
        if p.contains("as=APIGroupDiscoveryList") && p.contains("g=apidiscovery.k8s.io") {
            if p.contains("v=v2beta1") {
                best.get_or_insert("v2beta1");
            } else if p.contains("v=v2") {
                return Some("v2");
            }
        }
    }
    best
}

fn sub_response_kind(r: &Resource, s: Sub) -> Value {
    match s {
        Sub::Scale => json!({"group": "autoscaling", "version": "v1", "kind": "Scale"}),
        Sub::Binding => json!({"group": "", "version": "v1", "kind": "Binding"}),
        Sub::Eviction => json!({"group": "policy", "version": "v1", "kind": "Eviction"}),
        Sub::Log => json!({"group": "", "version": "v1", "kind": "Pod"}),
        Sub::Exec => json!({"group": "", "version": "v1", "kind": "PodExecOptions"}),
        Sub::Attach => json!({"group": "", "version": "v1", "kind": "PodAttachOptions"}),
        Sub::PortForward => json!({"group": "", "version": "v1", "kind": "PodPortForwardOptions"}),
        Sub::Status => json!({"group": r.group, "version": r.version, "kind": r.kind}),
    }
}

fn sub_verbs(s: Sub) -> Vec<&'static str> {
    match s {
        Sub::Binding | Sub::Eviction => vec!["create"],
        Sub::Log => vec!["get"],
        Sub::Exec | Sub::Attach | Sub::PortForward => vec!["create", "get"],
        Sub::Status | Sub::Scale => vec!["get", "patch", "update"],
    }
}

/// `/api` or `/apis` aggregated: `core` selects the legacy group.
pub fn aggregated(core: bool, version: &str) -> Value {
    let mut items = Vec::new();
    for (group, ver) in group_versions() {
        if group.is_empty() != core {
            continue;
        }
        let resources: Vec<Value> = RESOURCES
            .iter()
            .chain(REVIEWS)
            .filter(|r| r.group == group && r.version == ver)
            .map(|r| {
                json!({
                    "resource": r.plural,
                    "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                    "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                    "singularResource": r.singular,
                    "verbs": r.verbs(),
                    "shortNames": r.short_names,
                    "categories": r.categories,
                    "subresources": r.subresources.iter().map(|s| json!({
                        "subresource": s.name(),
                        "responseKind": sub_response_kind(r, *s),
                        "verbs": sub_verbs(*s),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        items.push(json!({
            "metadata": {"name": group},
            "versions": [{"version": ver, "freshness": "Current", "resources": resources}],
        }));
    }
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    })
}

/// Legacy `/api`.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

/// Legacy `/apis`.
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = group_versions()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, v)| {
            let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
            json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// Legacy `/apis/{group}`.
pub fn api_group(group: &str) -> Option<Value> {
    let (g, v) = group_versions()
        .into_iter()
        .find(|(g, _)| *g == group && !g.is_empty())?;
    let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
    Some(
        json!({"kind": "APIGroup", "apiVersion": "v1", "name": g, "versions": [gv.clone()], "preferredVersion": gv}),
    )
}

/// Legacy `/api/v1` or `/apis/{group}/{version}`.
pub fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    let mut list = Vec::new();
    for r in RESOURCES
        .iter()
        .chain(REVIEWS)
        .filter(|r| r.group == group && r.version == version)
    {
        list.push(json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs(),
            "shortNames": r.short_names,
            "categories": r.categories,
        }));
        for s in r.subresources {
            let rk = sub_response_kind(r, *s);
            let mut entry = json!({
                "name": format!("{}/{}", r.plural, s.name()),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": rk["kind"],
                "verbs": sub_verbs(*s),
            });
            // A subresource whose kind is of another group says so (Scale, Eviction).
            if rk["group"]
                .as_str()
                .is_some_and(|g| !g.is_empty() && g != r.group)
            {
                entry["group"] = rk["group"].clone();
                entry["version"] = rk["version"].clone();
            }
            list.push(entry);
        }
    }
    if list.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_discovery_shape() {
        assert_eq!(
            wants_aggregated("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"),
            Some("v2")
        );
        assert_eq!(wants_aggregated("application/json"), None);
        let core = aggregated(true, "v2");
        assert_eq!(core["items"][0]["metadata"]["name"], "");
        let pods = core["items"][0]["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "pods")
            .unwrap()
            .clone();
        assert_eq!(pods["scope"], "Namespaced");
        assert_eq!(pods["shortNames"][0], "po");
        let apps = aggregated(false, "v2");
        let deploy = &apps["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["metadata"]["name"] == "apps")
            .unwrap()["versions"][0]["resources"][0];
        assert_eq!(deploy["subresources"][1]["responseKind"]["kind"], "Scale");
    }

    #[test]
    fn legacy_lists() {
        let v1 = api_resource_list("", "v1").unwrap();
        let names: Vec<&str> = v1["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"pods/binding") && names.contains(&"pods/status"));
        let apps = api_resource_list("apps", "v1").unwrap();
        let scale = apps["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .unwrap();
        assert_eq!(scale["group"], "autoscaling");
        assert!(api_resource_list("nope", "v1").is_none());
        let groups = api_group_list();
        let names: Vec<&str> = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        for g in ["apps", "authorization.k8s.io", "authentication.k8s.io"] {
            assert!(names.contains(&g), "{names:?}");
        }
        let authz = api_resource_list("authorization.k8s.io", "v1").unwrap();
        assert_eq!(authz["resources"][0]["name"], "selfsubjectaccessreviews");
        assert_eq!(
            authz["resources"][0]["verbs"],
            serde_json::json!(["create"])
        );
    }
}
