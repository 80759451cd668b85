//! Helpers for objects held as JSON: metadata access, the resourceVersion a stored value gets on
//! read, and timestamps.

use ferry_store::{Kv, Rev};
use serde_json::{json, Value};

/// `metadata.<field>` as a string (empty when absent).
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.name`.
pub fn name(obj: &Value) -> &str {
    meta_str(obj, "name")
}

/// Ensures `metadata` is an object and returns it.
pub fn meta_mut(obj: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata was just made an object")
}

/// Decodes a stored value and stamps it with its revision, kind and apiVersion.
pub fn from_kv(kv: &Kv, kind: &str, api_version: &str) -> Value {
    let mut v: Value = serde_json::from_slice(&kv.value).unwrap_or_else(|_| json!({}));
    stamp(&mut v, kv.mod_rev, kind, api_version);
    v
}

/// Sets `metadata.resourceVersion`, `kind` and `apiVersion`.
pub fn stamp(v: &mut Value, rev: Rev, kind: &str, api_version: &str) {
    if !v.is_object() {
        *v = json!({});
    }
    v["kind"] = kind.into();
    v["apiVersion"] = api_version.into();
    meta_mut(v).insert("resourceVersion".into(), rev.to_string().into());
}

/// The bytes stored for an object: its JSON without `resourceVersion` (the store's revision is
/// the source of truth).
pub fn to_stored(v: &Value) -> Vec<u8> {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("selfLink");
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

/// Now as RFC 3339 with seconds (`2026-11-22T12:00:00Z`).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// RFC 3339 `secs` seconds from now.
pub fn rfc3339_in(secs: i64) -> String {
    let t = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(secs))
        .unwrap_or_else(|_| jiff::Timestamp::now());
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Labels of an object as (key, value) pairs.
pub fn labels(obj: &Value) -> std::collections::BTreeMap<String, String> {
    obj.get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                .collect()
        })
        .unwrap_or_default()
}
