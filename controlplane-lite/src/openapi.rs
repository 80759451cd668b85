//! A minimal OpenAPI v3 surface: enough for `kubectl create -f` / `apply -f` to validate on the
//! server (`fieldValidation=Strict`) instead of downloading schemas.
//!
//! kubectl checks whether the PATCH operation of the object's group-version-kind lists a
//! `fieldValidation` parameter; one PATCH path per kind in one document per group-version is all it
//! reads. `hash` is a client cache key derived from the document's content.

use crate::resources::{group_versions, RESOURCES};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn path_key(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The document of one group-version (`api/v1`, `apis/apps/v1`).
pub fn document(path: &str) -> Option<Value> {
    let (group, version) = group_versions()
        .into_iter()
        .find(|(g, v)| path_key(g, v) == path)?;
    let mut paths = serde_json::Map::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let url = if r.namespaced {
            format!(
                "{}/namespaces/{{namespace}}/{}/{{name}}",
                r.prefix(),
                r.plural
            )
        } else {
            format!("{}/{}/{{name}}", r.prefix(), r.plural)
        };
        let gv = if group.is_empty() {
            "Core".to_owned()
        } else {
            group.split('.').next().unwrap_or(group).to_owned()
        };
        let mut gv_title = gv.clone();
        if let Some(first) = gv_title.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        let scope = if r.namespaced { "Namespaced" } else { "" };
        paths.insert(
            url,
            json!({"patch": {
                "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": r.kind},
                "x-kubernetes-action": "patch",
                "operationId": format!("patch{gv_title}{}{scope}{}", capitalize(version), r.kind),
                "parameters": [
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                    {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                    {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                    {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}},
                ],
                "responses": {"200": {"description": "OK"}, "201": {"description": "Created"}},
            }}),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": crate::version::GIT_VERSION},
        "components": {"schemas": {}},
        "paths": paths,
    }))
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

fn hash(v: &Value) -> String {
    let digest = Sha256::digest(v.to_string().as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02X}")).collect()
}

/// `/openapi/v3`: the index of group-version documents with their content hashes.
pub fn index() -> Value {
    let mut paths = serde_json::Map::new();
    for (g, v) in group_versions() {
        let key = path_key(g, v);
        if let Some(doc) = document(&key) {
            paths.insert(
                key.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={}", hash(&doc))}),
            );
        }
    }
    json!({"paths": paths})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_patch_with_field_validation() {
        for r in RESOURCES {
            let doc = document(&path_key(r.group, r.version)).unwrap();
            let found = doc["paths"].as_object().unwrap().values().any(|p| {
                p["patch"]["x-kubernetes-group-version-kind"]["kind"] == r.kind
                    && p["patch"]["parameters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|q| q["name"] == "fieldValidation")
            });
            assert!(found, "{}", r.kind);
        }
        let idx = index();
        assert!(idx["paths"]["api/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap()
            .starts_with("/openapi/v3/api/v1?hash="));
        assert!(document("apis/nope/v1").is_none());
    }
}
