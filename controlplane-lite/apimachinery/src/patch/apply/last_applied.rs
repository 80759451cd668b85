//! Interop with client-side `kubectl apply`, as upstream's lastAppliedManager and
//! lastAppliedUpdater: which fields the `kubectl.kubernetes.io/last-applied-configuration`
//! annotation still stands behind ([`client_side_applied_fields`], so that
//! `kubectl apply --server-side` may take them over), and keeping that annotation current after a
//! server-side apply ([`update_last_applied`]).

use serde_json::Value;

use super::managed::is_element_path;
use crate::patch::fieldset::{fields_of, value_at, FieldSet};

/// kubectl's client-side apply annotation: the configuration `kubectl apply` applied last, as
/// JSON.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The field manager of `kubectl apply --server-side`. Only this manager upgrades from
/// client-side apply and keeps [`LAST_APPLIED_ANNOTATION`] up to date, as upstream: applying with
/// another `--field-manager` opts out of both.
pub const KUBECTL_APPLY_MANAGER: &str = "kubectl";

/// Upstream's limit on the total size of an object's annotations (keys plus values, in bytes).
pub(super) const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// The fields client-side `kubectl apply` still stands behind in `live`, read from its
/// [`LAST_APPLIED_ANNOTATION`]: every path of the last-applied configuration whose live value is
/// still the last-applied one (for list elements: that still exist). A field changed since, by
/// `kubectl scale`, `kubectl edit` or a controller, is not in the set, and neither is one the
/// configuration does not mention.
///
/// `None` when there is no usable annotation: absent, empty, not a JSON object, or of another
/// `apiVersion` (`api_version`, the applied configuration's) or kind than the object, as upstream.
///
/// A server-side apply by [`KUBECTL_APPLY_MANAGER`] whose conflicts all lie in this set takes
/// those fields over as if forced (upstream's lastAppliedManager); this is what lets
/// `kubectl apply --server-side` follow `kubectl apply` without `--force-conflicts`.
pub fn client_side_applied_fields(kind: &str, api_version: &str, live: &Value) -> Option<FieldSet> {
    let annotation = live
        .pointer("/metadata/annotations")?
        .get(LAST_APPLIED_ANNOTATION)?
        .as_str()?;
    let config: Value = serde_json::from_str(annotation).ok()?;
    if config.get("apiVersion").and_then(Value::as_str) != Some(api_version)
        || config.get("kind").and_then(Value::as_str) != Some(kind)
    {
        return None;
    }
    let mut set = FieldSet::new();
    for path in fields_of(kind, &config).paths() {
        let still_applied = if is_element_path(&path) {
            value_at(live, &path).is_some()
        } else {
            value_at(live, &path).is_some_and(|v| value_at(&config, &path) == Some(v))
        };
        if still_applied {
            set.insert(&path);
        }
    }
    Some(set)
}

/// Upstream's lastAppliedUpdater, run after a successful server-side apply by
/// [`KUBECTL_APPLY_MANAGER`]: when `object` carries a non-empty [`LAST_APPLIED_ANNOTATION`], it
/// becomes the applied configuration `config` (the request body, without that annotation), so
/// that a later client-side `kubectl apply` (the documented downgrade) computes its three-way
/// patch against what was applied last, and a later upgrade sees the current values. An object
/// without the annotation does not get one. If the annotations would exceed upstream's 256 KiB
/// limit, the annotation is dropped instead.
///
/// The value is encoded like Go's JSON encoder, which is how kubectl writes it: keys sorted,
/// `<`, `>`, `&`, U+2028 and U+2029 escaped, a trailing newline.
pub fn update_last_applied(object: &mut Value, config: &Value) {
    let Some(annotations) = object
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    if annotations
        .get(LAST_APPLIED_ANNOTATION)
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return;
    }
    let mut config = config.clone();
    if let Some(own) = config
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        own.remove(LAST_APPLIED_ANNOTATION);
    }
    annotations.insert(
        LAST_APPLIED_ANNOTATION.to_owned(),
        Value::from(go_json(&config)),
    );
    let size: usize = annotations
        .iter()
        .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
        .sum();
    if size > TOTAL_ANNOTATION_SIZE_LIMIT {
        annotations.remove(LAST_APPLIED_ANNOTATION);
    }
}

/// `value` as Go's `json.Encoder` writes it: keys sorted (also when serde_json keeps insertion
/// order), control characters escaped as serde_json does, and in addition the HTML-sensitive
/// characters and the two JavaScript line terminators escaped, then a newline. Those characters
/// only occur inside strings, so replacing them in the output is safe.
pub(super) fn go_json(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut members: Vec<(&String, &Value)> = map.iter().collect();
                members.sort_by(|a, b| a.0.cmp(b.0));
                Value::Object(
                    members
                        .into_iter()
                        .map(|(k, v)| (k.clone(), sorted(v)))
                        .collect(),
                )
            }
            Value::Array(list) => Value::Array(list.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    let mut out = String::new();
    for c in sorted(value).to_string().chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('\n');
    out
}
