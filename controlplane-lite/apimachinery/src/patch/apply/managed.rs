//! `metadata.managedFields` entries: [`ManagedEntry`] (one manager's operation, apiVersion,
//! time, subresource and field set) decoded from and encoded to `FieldsV1`, read from an object
//! or from what a client sent, and written back pruned of vanished paths and sorted like upstream.

use std::fmt;

use serde_json::{Map, Value};

use crate::patch::fieldset::{value_at, FieldSet, PathElement};

/// One `metadata.managedFields` entry, decoded.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ManagedEntry {
    pub(super) manager: String,
    pub(super) operation: String,
    pub(super) api_version: String,
    pub(super) time: String,
    pub(super) subresource: String,
    pub(super) fields: FieldSet,
}

impl ManagedEntry {
    fn decode(value: &Value) -> Option<Self> {
        let text = |k: &str| {
            value
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Some(Self {
            manager: text("manager"),
            operation: text("operation"),
            api_version: text("apiVersion"),
            time: text("time"),
            subresource: text("subresource"),
            fields: FieldSet::from_fields_v1(value.get("fieldsV1")?),
        })
    }

    fn encode(&self) -> Value {
        let mut map = Map::new();
        map.insert("manager".to_owned(), Value::from(self.manager.clone()));
        map.insert("operation".to_owned(), Value::from(self.operation.clone()));
        map.insert(
            "apiVersion".to_owned(),
            Value::from(self.api_version.clone()),
        );
        if !self.time.is_empty() {
            map.insert("time".to_owned(), Value::from(self.time.clone()));
        }
        map.insert("fieldsType".to_owned(), Value::from("FieldsV1"));
        map.insert("fieldsV1".to_owned(), self.fields.to_fields_v1());
        if !self.subresource.is_empty() {
            map.insert(
                "subresource".to_owned(),
                Value::from(self.subresource.clone()),
            );
        }
        Value::Object(map)
    }
}

impl fmt::Display for ManagedEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.manager, self.operation)
    }
}

pub(super) fn read_entries(obj: Option<&Value>) -> Vec<ManagedEntry> {
    obj.and_then(|o| o.pointer("/metadata/managedFields"))
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(ManagedEntry::decode).collect())
        .unwrap_or_default()
}

/// Prunes paths missing from `obj`, drops empty entries, sorts like upstream and stores the
/// result in `obj.metadata.managedFields` (removing the key when nothing is managed).
pub(super) fn write_entries(obj: &mut Value, mut entries: Vec<ManagedEntry>) {
    for entry in &mut entries {
        for path in entry.fields.paths() {
            if value_at(obj, &path).is_none() {
                entry.fields.remove(&path);
            }
        }
    }
    entries.retain(|e| !e.fields.is_empty());
    entries.sort_by(|p, q| {
        p.operation
            .cmp(&q.operation)
            .then_with(|| p.time.cmp(&q.time))
            .then_with(|| p.manager.cmp(&q.manager))
            .then_with(|| p.api_version.cmp(&q.api_version))
            .then_with(|| p.subresource.cmp(&q.subresource))
    });
    let Some(obj) = obj.as_object_mut() else {
        return;
    };
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert(
            "managedFields".to_owned(),
            Value::Array(entries.iter().map(ManagedEntry::encode).collect()),
        );
    }
}

/// The `metadata.managedFields` a client sent, as upstream's `decodeLiveOrNew` takes them: `None`
/// when absent, `null`, not a list or not decodable (keep the live ones), no entries for a reset
/// (`[]`, or one empty entry `[{}]`).
pub(super) fn requested_entries(obj: &Value) -> Option<Vec<ManagedEntry>> {
    let list = obj.pointer("/metadata/managedFields")?.as_array()?;
    let is_reset = match list.as_slice() {
        [] => true,
        [only] => only
            .as_object()
            .is_some_and(|m| m.values().all(|v| v.is_null() || v.as_str() == Some(""))),
        _ => false,
    };
    if is_reset {
        return Some(Vec::new());
    }
    list.iter().map(ManagedEntry::decode).collect()
}

pub(super) fn without_managed_fields(obj: &Value) -> Value {
    let mut obj = obj.clone();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    obj
}

/// True for paths whose last element is a list element (`k:`/`v:`/`i:`): their existence is
/// owned, but they carry no value of their own to conflict on.
pub(super) fn is_element_path(path: &[PathElement]) -> bool {
    matches!(
        path.last(),
        Some(PathElement::Key(_) | PathElement::Value(_))
    )
}
