//! PATCH semantics for the four content types of section 9.1 of the control-plane notes.
//!
//! - [`merge_patch`]: JSON merge patch (RFC 7386, `application/merge-patch+json`), via `json-patch`.
//! - [`json_patch()`]: JSON patch (RFC 6902, `application/json-patch+json`), via `json-patch`; a
//!   failed `test` operation is [`PatchError::TestFailed`] (the server answers 422).
//! - [`strategic_merge`]: strategic merge patch (`application/strategic-merge-patch+json`), table
//!   driven by `(kind, path)`, see [`strategy`].
//! - [`apply()`]: server-side apply (`application/apply-patch+yaml`), minimal, with
//!   `metadata.managedFields` tracking and conflict detection, see [`apply`](mod@apply).
//!
//! Everything here is pure: objects are `serde_json::Value`s and nothing touches the store.
//! [`PatchType::from_content_type`] maps a request's `Content-Type` to the patch type, and
//! [`apply_patch`] dispatches the three non-apply types.

pub mod apply;
pub mod fieldset;
pub mod strategic;
pub mod strategy;

use serde_json::Value;

pub use apply::{apply, conflict_message, track_update, ApplyError, ApplyOutcome, ConflictCause};
pub use strategic::strategic_merge;

/// Media types accepted by PATCH, in the order the apiserver lists them in its 415 message.
pub const PATCH_CONTENT_TYPES: [&str; 4] = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

/// The four PATCH content types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PatchType {
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`.
    StrategicMerge,
    /// `application/apply-patch+yaml` (server-side apply; kubectl and kube-rs send JSON).
    Apply,
}

impl PatchType {
    /// Parses a `Content-Type` header value, ignoring parameters such as `; charset=utf-8` and
    /// case. Returns `None` for anything else (the server answers 415 with
    /// [`PATCH_CONTENT_TYPES`]).
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::StrategicMerge),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }

    /// The canonical media type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => PATCH_CONTENT_TYPES[0],
            Self::Merge => PATCH_CONTENT_TYPES[1],
            Self::StrategicMerge => PATCH_CONTENT_TYPES[2],
            Self::Apply => PATCH_CONTENT_TYPES[3],
        }
    }
}

/// Why a patch could not be applied.
///
/// [`PatchError::http_status`] gives the code the apiserver uses: 400 for a malformed patch
/// document, 422 when a well-formed patch cannot be applied to this object (failed `test`,
/// missing path, ...). None of these are retryable with the same patch.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The patch body is not a JSON object (merge and strategic merge patches must be).
    #[error("patch must be a JSON object, got {found}")]
    NotAnObject {
        /// JSON type name of what was sent.
        found: &'static str,
    },
    /// The JSON patch document is not an array of valid operations.
    #[error("invalid JSON patch: {source}")]
    InvalidJsonPatch {
        /// Decoding error from serde.
        #[source]
        source: serde_json::Error,
    },
    /// A JSON patch `test` operation did not match (422).
    #[error("testing value {path} failed: test failed (operation {operation})")]
    TestFailed {
        /// Index of the failing operation.
        operation: usize,
        /// JSON pointer of the operation.
        path: String,
    },
    /// A JSON patch operation could not be applied (bad path, move into itself, ...) (422).
    #[error("{source}")]
    JsonPatchFailed {
        /// The `json-patch` error, with operation index and path.
        #[source]
        source: json_patch::PatchError,
    },
    /// A strategic merge patch is malformed: bad directive, missing merge key, wrong shape (400).
    #[error("invalid strategic merge patch at {path}: {message}")]
    InvalidStrategicMerge {
        /// Dotted path of the offending field (`spec.containers`).
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl PatchError {
    /// HTTP status the apiserver answers with: 422 for patches that do not apply to the
    /// object, 400 for malformed patches.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::TestFailed { .. } | Self::JsonPatchFailed { .. } => 422,
            Self::NotAnObject { .. }
            | Self::InvalidJsonPatch { .. }
            | Self::InvalidStrategicMerge { .. } => 400,
        }
    }

    /// True for a failed JSON patch `test` operation.
    pub fn is_test_failure(&self) -> bool {
        matches!(self, Self::TestFailed { .. })
    }
}

/// JSON type name for error messages.
pub(crate) fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Applies a JSON merge patch (RFC 7386): objects merge recursively, `null` deletes, everything
/// else (arrays included) replaces.
///
/// The patch must be an object: a whole-document replacement is never a valid Kubernetes patch,
/// so a non-object is reported as [`PatchError::NotAnObject`] (400) instead of producing a
/// non-object.
pub fn merge_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    if !patch.is_object() {
        return Err(PatchError::NotAnObject {
            found: json_type_name(patch),
        });
    }
    let mut doc = original.clone();
    json_patch::merge(&mut doc, patch);
    Ok(doc)
}

/// Applies a JSON patch (RFC 6902). The patch is the decoded request body (an array of
/// operations). Atomic: on error nothing is applied (the original is untouched anyway).
pub fn json_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|source| PatchError::InvalidJsonPatch { source })?;
    let mut doc = original.clone();
    json_patch::patch(&mut doc, &ops).map_err(|e| match e.kind {
        json_patch::PatchErrorKind::TestFailed => PatchError::TestFailed {
            operation: e.operation,
            path: e.path.to_string(),
        },
        _ => PatchError::JsonPatchFailed { source: e },
    })?;
    Ok(doc)
}

/// Applies a JSON, merge or strategic merge patch. `kind` selects the strategic merge table and
/// is ignored by the other two. Server-side apply needs a field manager and has its own entry
/// point, [`apply()`]; [`PatchType::Apply`] here is reported as
/// [`PatchError::InvalidStrategicMerge`].
pub fn apply_patch(
    kind: &str,
    patch_type: PatchType,
    original: &Value,
    patch: &Value,
) -> Result<Value, PatchError> {
    match patch_type {
        PatchType::Json => json_patch(original, patch),
        PatchType::Merge => merge_patch(original, patch),
        PatchType::StrategicMerge => strategic_merge(kind, original, patch),
        PatchType::Apply => Err(PatchError::InvalidStrategicMerge {
            path: String::new(),
            message: "apply patches go through patch::apply".to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_type_parsing() {
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json"),
            Some(PatchType::Merge)
        );
        assert_eq!(
            PatchType::from_content_type("Application/Strategic-Merge-Patch+JSON; charset=utf-8"),
            Some(PatchType::StrategicMerge)
        );
        assert_eq!(
            PatchType::from_content_type("application/apply-patch+yaml"),
            Some(PatchType::Apply)
        );
        assert_eq!(
            PatchType::from_content_type("application/json-patch+json"),
            Some(PatchType::Json)
        );
        assert_eq!(PatchType::from_content_type("application/json"), None);
        assert_eq!(PatchType::from_content_type(""), None);
        assert_eq!(
            PatchType::StrategicMerge.content_type(),
            "application/strategic-merge-patch+json"
        );
    }

    #[test]
    fn merge_patch_recursive_null_deletes_arrays_replace() {
        let orig =
            json!({"metadata":{"labels":{"a":"1","b":"2"}},"spec":{"replicas":1,"args":["x","y"]}});
        let patch =
            json!({"metadata":{"labels":{"a":null,"c":"3"}},"spec":{"replicas":3,"args":["z"]}});
        let out = merge_patch(&orig, &patch).expect("merge");
        assert_eq!(
            out,
            json!({"metadata":{"labels":{"b":"2","c":"3"}},"spec":{"replicas":3,"args":["z"]}})
        );
    }

    #[test]
    fn merge_patch_scale_shape() {
        let orig = json!({"spec":{"replicas":1},"status":{"replicas":1}});
        let out = merge_patch(&orig, &json!({"spec":{"replicas":5}})).expect("merge");
        assert_eq!(out["spec"]["replicas"], 5);
        assert_eq!(out["status"]["replicas"], 1);
    }

    #[test]
    fn merge_patch_rejects_non_object() {
        let err = merge_patch(&json!({}), &json!([1])).expect_err("array patch");
        assert!(matches!(err, PatchError::NotAnObject { found: "array" }));
        assert_eq!(err.http_status(), 400);
    }

    #[test]
    fn json_patch_ops() {
        let orig = json!({"metadata":{"labels":{"a":"1"}},"spec":{"containers":[{"name":"c","image":"i:1"}]}});
        let patch = json!([
            {"op":"test","path":"/metadata/labels/a","value":"1"},
            {"op":"replace","path":"/spec/containers/0/image","value":"i:2"},
            {"op":"add","path":"/metadata/labels/b","value":"2"},
            {"op":"remove","path":"/metadata/labels/a"}
        ]);
        let out = json_patch(&orig, &patch).expect("patch");
        assert_eq!(out["spec"]["containers"][0]["image"], "i:2");
        assert_eq!(out["metadata"]["labels"], json!({"b":"2"}));
    }

    #[test]
    fn json_patch_failed_test_is_distinguishable() {
        let orig = json!({"spec":{"replicas":1}});
        let patch = json!([
            {"op":"replace","path":"/spec/replicas","value":2},
            {"op":"test","path":"/spec/replicas","value":7}
        ]);
        let err = json_patch(&orig, &patch).expect_err("test must fail");
        assert!(err.is_test_failure());
        assert_eq!(err.http_status(), 422);
        match err {
            PatchError::TestFailed { operation, path } => {
                assert_eq!(operation, 1);
                assert_eq!(path, "/spec/replicas");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn json_patch_bad_path_is_422_and_not_test_failure() {
        let err = json_patch(
            &json!({"spec":{}}),
            &json!([{"op":"remove","path":"/spec/nope"}]),
        )
        .expect_err("missing path");
        assert!(!err.is_test_failure());
        assert_eq!(err.http_status(), 422);
    }

    #[test]
    fn json_patch_malformed_is_400() {
        let err = json_patch(&json!({}), &json!({"op":"add"})).expect_err("not an array");
        assert!(matches!(err, PatchError::InvalidJsonPatch { .. }));
        assert_eq!(err.http_status(), 400);
        let err =
            json_patch(&json!({}), &json!([{"op":"frobnicate","path":"/a"}])).expect_err("bad op");
        assert_eq!(err.http_status(), 400);
    }

    #[test]
    fn apply_patch_dispatches() {
        let orig = json!({"metadata":{"finalizers":["a"]}});
        let p = json!({"metadata":{"finalizers":["b"]}});
        let merged = apply_patch("Pod", PatchType::Merge, &orig, &p).expect("merge");
        assert_eq!(merged["metadata"]["finalizers"], json!(["b"]));
        let smp = apply_patch("Pod", PatchType::StrategicMerge, &orig, &p).expect("smp");
        assert_eq!(smp["metadata"]["finalizers"], json!(["b", "a"]));
        assert!(apply_patch("Pod", PatchType::Apply, &orig, &p).is_err());
    }
}
