//! Namespaces: which kinds are namespaced ([`is_namespaced`]) and how the request namespace is
//! applied to a body ([`resolve_namespace`], upstream `BeforeCreate`/`BeforeUpdate`).

use serde_json::Value;

/// Whether objects of `kind` live in a namespace (false for `Namespace`, `Node` and the other
/// cluster-scoped kinds upstream has).
pub fn is_namespaced(kind: &str) -> bool {
    !matches!(
        kind,
        "Namespace"
            | "Node"
            | "PersistentVolume"
            | "ClusterRole"
            | "ClusterRoleBinding"
            | "StorageClass"
            | "CustomResourceDefinition"
            | "PriorityClass"
            | "RuntimeClass"
            | "APIService"
    )
}

/// Upstream's message when the body's namespace differs from the URL's (400 BadRequest).
pub const NAMESPACE_MISMATCH: &str =
    "the namespace of the provided object does not match the namespace sent on the request";

/// Applies the request namespace to `obj` as upstream `BeforeCreate`/`BeforeUpdate`:
/// namespaced kinds get `metadata.namespace` from the URL when the body has none, and a
/// different one is an error (the [`NAMESPACE_MISMATCH`] message, for a 400); cluster-scoped
/// kinds have any namespace cleared.
pub fn resolve_namespace(
    obj: &mut Value,
    request_namespace: Option<&str>,
    namespaced: bool,
) -> Result<(), String> {
    let Some(root) = obj.as_object_mut() else {
        return Err("the object must be a JSON object".to_owned());
    };
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    let Some(meta) = meta.as_object_mut() else {
        return Err("metadata must be an object".to_owned());
    };
    let body = meta
        .get("namespace")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    if !namespaced {
        meta.remove("namespace");
        return Ok(());
    }
    match (body, request_namespace.filter(|s| !s.is_empty())) {
        (Some(b), Some(r)) if b != r => Err(NAMESPACE_MISMATCH.to_owned()),
        (None, Some(r)) => {
            meta.insert("namespace".to_owned(), Value::from(r));
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn namespace_resolution() {
        let mut obj = json!({"metadata":{"name":"a"}});
        resolve_namespace(&mut obj, Some("default"), true).expect("ok");
        assert_eq!(obj["metadata"]["namespace"], "default");
        let mut obj = json!({"metadata":{"name":"a","namespace":"other"}});
        assert_eq!(
            resolve_namespace(&mut obj, Some("default"), true),
            Err(NAMESPACE_MISMATCH.to_owned())
        );
        let mut node = json!({"metadata":{"name":"n","namespace":"x"}});
        resolve_namespace(&mut node, None, false).expect("ok");
        assert!(node["metadata"].get("namespace").is_none());
        assert!(is_namespaced("Pod"));
        assert!(!is_namespaced("Node"));
    }
}
