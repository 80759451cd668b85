//! Deletion: finalizers, the DeleteOptions `propagationPolicy` (whose `foregroundDeletion` and
//! `orphan` finalizers the garbage collector acts on), and graceful deletion (a bound, running pod
//! waits for its kubelet; a namespace turns `Terminating`).

use crate::objects::{meta_mut, meta_str, rfc3339_in};
use crate::resources::Resource;
use serde_json::{json, Value};

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
