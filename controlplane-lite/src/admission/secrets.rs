//! Secrets and ConfigMaps on write, as kube-apiserver does them: a Secret's write-only
//! `stringData` is merged into `data` (base64, `stringData` winning) and never stored, `type`
//! defaults to `Opaque`; on update a Secret's `type` is immutable, and an object marked
//! `immutable: true` may change neither its data nor the mark.
//!
//! Secrets are stored like every other object (no encryption at rest yet).

use crate::machinery as mach;
use base64::Engine;
use ferry_apimachinery::validate::FieldError;
use serde_json::{json, Value};

/// Merges `stringData` into `data` and defaults `type` (create and update of a Secret).
pub fn normalize_secret(obj: &mut Value) {
    let Some(o) = obj.as_object_mut() else { return };
    if let Some(Value::Object(strings)) = o.remove("stringData") {
        if !o.get("data").is_some_and(Value::is_object) {
            o.insert("data".into(), json!({}));
        }
        if let Some(Value::Object(data)) = o.get_mut("data") {
            for (k, v) in strings {
                let text = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                let encoded = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
                data.insert(k, encoded.into());
            }
        }
    }
    if o.get("type")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        o.insert("type".into(), "Opaque".into());
    }
}

/// Update rules of Secrets and ConfigMaps: the causes of a 422 (empty when allowed).
pub fn immutable_data(kind: &str, old: &Value, new: &Value) -> Vec<FieldError> {
    let mut causes = Vec::new();
    if !matches!(kind, "Secret" | "ConfigMap") {
        return causes;
    }
    let same = |f: &str| old.get(f) == new.get(f);
    if kind == "Secret" && !same("type") {
        causes.push(mach::cause(
            "type",
            "FieldValueInvalid",
            "field is immutable",
        ));
    }
    if old.get("immutable") == Some(&Value::Bool(true)) {
        let fields: &[&str] = if kind == "Secret" {
            &["data"]
        } else {
            &["data", "binaryData"]
        };
        for f in fields {
            if !same(f) {
                causes.push(mach::cause(
                    f,
                    "FieldValueForbidden",
                    "Forbidden: field is immutable when `immutable` is set",
                ));
            }
        }
        if new.get("immutable") != Some(&Value::Bool(true)) {
            causes.push(mach::cause(
                "immutable",
                "FieldValueForbidden",
                "Forbidden: field is immutable when `immutable` is set",
            ));
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_data_is_merged_and_dropped() {
        let mut s = json!({"data": {"a": "eA==", "b": "eQ=="}, "stringData": {"b": "z", "c": "w"}});
        normalize_secret(&mut s);
        assert_eq!(
            s,
            json!({"data": {"a": "eA==", "b": "eg==", "c": "dw=="}, "type": "Opaque"})
        );
        let mut t = json!({"type": "kubernetes.io/tls", "stringData": {"tls.key": "k"}});
        normalize_secret(&mut t);
        assert_eq!(
            t,
            json!({"type": "kubernetes.io/tls", "data": {"tls.key": "aw=="}})
        );
    }

    #[test]
    fn immutability() {
        let old = json!({"type": "Opaque", "data": {"a": "eA=="}, "immutable": true});
        assert!(immutable_data("Secret", &old, &old).is_empty());
        let changed = json!({"type": "Opaque", "data": {"a": "eQ=="}, "immutable": true});
        assert_eq!(immutable_data("Secret", &old, &changed).len(), 1);
        let unset = json!({"type": "Opaque", "data": {"a": "eA=="}});
        assert_eq!(immutable_data("Secret", &old, &unset)[0].field, "immutable");
        let retyped = json!({"type": "x", "data": {"a": "eA=="}, "immutable": true});
        assert_eq!(immutable_data("Secret", &old, &retyped)[0].field, "type");
        let cm_old = json!({"data": {"a": "x"}, "immutable": true});
        let cm_new = json!({"data": {"a": "x"}, "binaryData": {"b": "eA=="}, "immutable": true});
        assert_eq!(
            immutable_data("ConfigMap", &cm_old, &cm_new)[0].field,
            "binaryData"
        );
        let mutable = json!({"data": {"a": "x"}});
        assert!(immutable_data("ConfigMap", &mutable, &cm_new).is_empty());
    }
}
