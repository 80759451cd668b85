//! Field sets for server-side apply: the `FieldsV1` encoding of `metadata.managedFields`.
//!
//! A [`FieldSet`] is a tree of [`PathElement`]s whose nodes may be *members* (the path itself is
//! owned). The JSON encoding is upstream's `FieldsV1`: `f:<field>` for a struct/map field,
//! `k:{"name":"nginx"}` for an element of a list merged by key, `v:<json>` for an element of a
//! set-like primitive list, `i:<n>` for a positional element, and `".": {}` marking a node that is
//! itself a member while also having children. A member leaf is `{}`.
//!
//! [`fields_of`] derives the set an object (or an applied configuration) touches, using the
//! strategic-merge table of [`strategy`](super::strategy) instead of a schema:
//!
//! - every scalar, every list with [`ListStrategy::Replace`] and every
//!   [atomic map](super::strategy::is_atomic_map) is one leaf;
//! - every element of a keyed list is a member (`k:{...}` with `"."`) and its fields recurse;
//! - every element of a primitive set list is a member leaf (`v:...`);
//! - empty objects are leaves;
//! - `apiVersion`, `kind` and the server-owned metadata (`name`, `namespace`, `uid`,
//!   `resourceVersion`, `generation`, `creationTimestamp`, `managedFields`, `selfLink`,
//!   `deletionTimestamp`, `deletionGracePeriodSeconds`) are never part of a set, as upstream.
//!
//! Differences from upstream (documented, "good enough"): keyed elements use only the strategic
//! merge key (`k:{"containerPort":80}`, upstream also lists `protocol` for ports), structs and maps
//! are not distinguished (upstream adds `"."` for some optional structs and maps in Update
//! entries), and lists without a merge key are atomic everywhere.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use super::strategy::{is_atomic_map, list_strategy, ListStrategy};

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    /// A struct or map field (`f:name`).
    Field(String),
    /// An element of a list merged by key; the canonical JSON of the key object (`k:{...}`).
    Key(String),
    /// An element of a primitive set list; the element's JSON (`v:...`).
    Value(String),
    /// A positional list element (`i:3`); only produced when decoding foreign sets.
    Index(usize),
}

impl PathElement {
    fn encode(&self) -> String {
        match self {
            Self::Field(name) => format!("f:{name}"),
            Self::Key(json) => format!("k:{json}"),
            Self::Value(json) => format!("v:{json}"),
            Self::Index(i) => format!("i:{i}"),
        }
    }

    fn decode(s: &str) -> Option<Self> {
        let (prefix, rest) = s.split_at_checked(2)?;
        match prefix {
            "f:" => Some(Self::Field(rest.to_owned())),
            "k:" => {
                // Re-encode so that equal keys compare equal whatever the spacing.
                let key: Value = serde_json::from_str(rest).ok()?;
                key.is_object().then(|| Self::Key(key.to_string()))
            }
            "v:" => {
                let value: Value = serde_json::from_str(rest).ok()?;
                Some(Self::Value(value.to_string()))
            }
            "i:" => rest.parse().ok().map(Self::Index),
            _ => None,
        }
    }
}

/// A path rendered the way upstream prints it in conflict messages:
/// `.spec.containers[name="nginx"].image`.
#[derive(Debug, Clone, Copy)]
pub struct DisplayPath<'a>(pub &'a [PathElement]);

impl fmt::Display for DisplayPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for element in self.0 {
            match element {
                PathElement::Field(name) => write!(f, ".{name}")?,
                PathElement::Key(json) => {
                    let parts: Vec<String> = match serde_json::from_str::<Value>(json) {
                        Ok(Value::Object(map)) => {
                            map.iter().map(|(k, v)| format!("{k}={v}")).collect()
                        }
                        _ => vec![json.clone()],
                    };
                    write!(f, "[{}]", parts.join(","))?;
                }
                PathElement::Value(json) => write!(f, "[={json}]")?,
                PathElement::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

/// A set of field paths, stored as a tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    member: bool,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when no path is a member.
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.values().all(FieldSet::is_empty)
    }

    /// Adds `path`.
    pub fn insert(&mut self, path: &[PathElement]) {
        let mut node = self;
        for element in path {
            node = node.children.entry(element.clone()).or_default();
        }
        node.member = true;
    }

    fn node(&self, path: &[PathElement]) -> Option<&FieldSet> {
        let mut node = self;
        for element in path {
            node = node.children.get(element)?;
        }
        Some(node)
    }

    /// True when `path` itself is a member.
    pub fn contains(&self, path: &[PathElement]) -> bool {
        self.node(path).is_some_and(|n| n.member)
    }

    /// True when `path` or any path below it is a member.
    pub fn contains_at_or_below(&self, path: &[PathElement]) -> bool {
        self.node(path).is_some_and(|n| !n.is_empty())
    }

    /// Removes `path` (not its descendants) and prunes empty branches. Returns whether it was a
    /// member.
    pub fn remove(&mut self, path: &[PathElement]) -> bool {
        fn go(node: &mut FieldSet, path: &[PathElement]) -> bool {
            match path.split_first() {
                None => std::mem::replace(&mut node.member, false),
                Some((first, rest)) => {
                    let Some(child) = node.children.get_mut(first) else {
                        return false;
                    };
                    let removed = go(child, rest);
                    if child.is_empty() {
                        node.children.remove(first);
                    }
                    removed
                }
            }
        }
        go(self, path)
    }

    /// Every member path, parents before children, in element order.
    pub fn paths(&self) -> Vec<Vec<PathElement>> {
        fn go(node: &FieldSet, prefix: &mut Vec<PathElement>, out: &mut Vec<Vec<PathElement>>) {
            if node.member {
                out.push(prefix.clone());
            }
            for (element, child) in &node.children {
                prefix.push(element.clone());
                go(child, prefix, out);
                prefix.pop();
            }
        }
        let mut out = Vec::new();
        go(self, &mut Vec::new(), &mut out);
        out
    }

    /// The `FieldsV1` JSON encoding.
    pub fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        if self.member && !self.children.is_empty() {
            map.insert(".".to_owned(), Value::Object(Map::new()));
        }
        for (element, child) in &self.children {
            if !child.is_empty() {
                map.insert(element.encode(), child.to_fields_v1());
            }
        }
        Value::Object(map)
    }

    /// Decodes `FieldsV1` JSON. Unknown or malformed keys are skipped (the set is advisory).
    pub fn from_fields_v1(value: &Value) -> Self {
        fn go(value: &Value, is_root: bool) -> FieldSet {
            let mut set = FieldSet::default();
            let Value::Object(map) = value else {
                return set;
            };
            set.member = !is_root && (map.is_empty() || map.contains_key("."));
            for (key, child) in map {
                if key == "." {
                    continue;
                }
                if let Some(element) = PathElement::decode(key) {
                    let child = go(child, false);
                    if !child.is_empty() {
                        set.children.insert(element, child);
                    }
                }
            }
            set
        }
        go(value, true)
    }
}

/// Metadata fields that are never owned (upstream strips them from every managed set).
const UNOWNED_METADATA: [&str; 10] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// The field set `obj` (an object or applied configuration of `kind`) touches.
pub fn fields_of(kind: &str, obj: &Value) -> FieldSet {
    let mut set = FieldSet::new();
    let Value::Object(map) = obj else {
        return set;
    };
    let mut names = Vec::new();
    let mut prefix = Vec::new();
    for (key, value) in map {
        if key == "apiVersion" || key == "kind" || value.is_null() {
            continue;
        }
        if key == "metadata" {
            if let Value::Object(meta) = value {
                for (mk, mv) in meta {
                    if UNOWNED_METADATA.contains(&mk.as_str()) || mv.is_null() {
                        continue;
                    }
                    names.extend(["metadata".to_owned(), mk.clone()]);
                    prefix.extend([
                        PathElement::Field("metadata".to_owned()),
                        PathElement::Field(mk.clone()),
                    ]);
                    collect(kind, &mut names, &mut prefix, mv, &mut set);
                    names.clear();
                    prefix.clear();
                }
            }
            continue;
        }
        names.push(key.clone());
        prefix.push(PathElement::Field(key.clone()));
        collect(kind, &mut names, &mut prefix, value, &mut set);
        names.pop();
        prefix.pop();
    }
    set
}

fn collect(
    kind: &str,
    names: &mut Vec<String>,
    prefix: &mut Vec<PathElement>,
    value: &Value,
    set: &mut FieldSet,
) {
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    match value {
        Value::Object(map) if !map.is_empty() && !is_atomic_map(kind, &name_refs) => {
            for (key, child) in map {
                if child.is_null() {
                    continue;
                }
                names.push(key.clone());
                prefix.push(PathElement::Field(key.clone()));
                collect(kind, names, prefix, child, set);
                names.pop();
                prefix.pop();
            }
        }
        Value::Array(list) if !list.is_empty() => match list_strategy(kind, &name_refs) {
            ListStrategy::MergeByKey(key) if list.iter().all(|e| e.get(key).is_some()) => {
                for element in list {
                    let Some(key_element) = key_element(element, key) else {
                        continue;
                    };
                    prefix.push(key_element);
                    set.insert(prefix);
                    if let Value::Object(fields) = element {
                        for (field, child) in fields {
                            if child.is_null() {
                                continue;
                            }
                            names.push(field.clone());
                            prefix.push(PathElement::Field(field.clone()));
                            collect(kind, names, prefix, child, set);
                            names.pop();
                            prefix.pop();
                        }
                    }
                    prefix.pop();
                }
            }
            ListStrategy::MergePrimitive => {
                for element in list {
                    prefix.push(PathElement::Value(element.to_string()));
                    set.insert(prefix);
                    prefix.pop();
                }
            }
            _ => set.insert(prefix),
        },
        _ => set.insert(prefix),
    }
}

fn key_element(element: &Value, key: &str) -> Option<PathElement> {
    let key_value = element.get(key)?;
    let mut map = Map::new();
    map.insert(key.to_owned(), key_value.clone());
    Some(PathElement::Key(Value::Object(map).to_string()))
}

/// True when `element` (a list item) matches the `k:` key JSON.
fn matches_key(element: &Value, key_json: &str) -> bool {
    let Ok(Value::Object(key)) = serde_json::from_str::<Value>(key_json) else {
        return false;
    };
    key.iter().all(|(k, v)| element.get(k) == Some(v))
}

fn matches_value(element: &Value, value_json: &str) -> bool {
    serde_json::from_str::<Value>(value_json).is_ok_and(|v| &v == element)
}

/// The value at `path` in `obj`, if present.
pub fn value_at<'a>(obj: &'a Value, path: &[PathElement]) -> Option<&'a Value> {
    let mut current = obj;
    for element in path {
        current = match element {
            PathElement::Field(name) => current.as_object()?.get(name)?,
            PathElement::Key(json) => current.as_array()?.iter().find(|e| matches_key(e, json))?,
            PathElement::Value(json) => current
                .as_array()?
                .iter()
                .find(|e| matches_value(e, json))?,
            PathElement::Index(i) => current.as_array()?.get(*i)?,
        };
        if current.is_null() {
            return None;
        }
    }
    Some(current)
}

fn value_at_mut<'a>(obj: &'a mut Value, path: &[PathElement]) -> Option<&'a mut Value> {
    let mut current = obj;
    for element in path {
        current = match element {
            PathElement::Field(name) => current.as_object_mut()?.get_mut(name)?,
            PathElement::Key(json) => current
                .as_array_mut()?
                .iter_mut()
                .find(|e| matches_key(e, json))?,
            PathElement::Value(json) => current
                .as_array_mut()?
                .iter_mut()
                .find(|e| matches_value(e, json))?,
            PathElement::Index(i) => current.as_array_mut()?.get_mut(*i)?,
        };
    }
    Some(current)
}

/// Removes the value at `path` from `obj`. Returns whether something was removed.
pub fn remove_at(obj: &mut Value, path: &[PathElement]) -> bool {
    let Some((last, parent_path)) = path.split_last() else {
        return false;
    };
    let Some(parent) = value_at_mut(obj, parent_path) else {
        return false;
    };
    match (last, parent) {
        (PathElement::Field(name), Value::Object(map)) => map.remove(name).is_some(),
        (PathElement::Key(json), Value::Array(list)) => {
            let before = list.len();
            list.retain(|e| !matches_key(e, json));
            list.len() != before
        }
        (PathElement::Value(json), Value::Array(list)) => {
            let before = list.len();
            list.retain(|e| !matches_value(e, json));
            list.len() != before
        }
        (PathElement::Index(i), Value::Array(list)) if *i < list.len() => {
            list.remove(*i);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(name: &str) -> PathElement {
        PathElement::Field(name.to_owned())
    }

    #[test]
    fn fields_of_deployment_matches_upstream_shape() {
        let obj = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "default", "labels": {"app": "d"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "d"}},
                "template": {
                    "metadata": {"labels": {"app": "d"}},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx:1",
                        "ports": [{"containerPort": 80}], "args": ["a"]}]}
                }
            }
        });
        let set = fields_of("Deployment", &obj);
        assert_eq!(
            set.to_fields_v1(),
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {
                            ".": {},
                            "f:args": {},
                            "f:image": {},
                            "f:name": {},
                            "f:ports": {"k:{\"containerPort\":80}": {".": {}, "f:containerPort": {}}}
                        }}}
                    }
                }
            })
        );
    }

    #[test]
    fn fields_v1_round_trip_and_foreign_input() {
        let encoded = json!({
            "f:metadata": {"f:finalizers": {"v:\"a\"": {}}, "f:labels": {".": {}, "f:x": {}}},
            "f:spec": {"f:containers": {"k:{\"name\": \"c\"}": {".": {}, "f:image": {}}},
                       "f:list": {"i:0": {}}}
        });
        let set = FieldSet::from_fields_v1(&encoded);
        assert!(set.contains(&[f("metadata"), f("labels")]));
        assert!(set.contains(&[f("metadata"), f("labels"), f("x")]));
        assert!(set.contains(&[
            f("spec"),
            f("containers"),
            PathElement::Key("{\"name\":\"c\"}".to_owned())
        ]));
        assert!(!set.contains(&[f("spec")]));
        assert!(set.contains_at_or_below(&[f("spec")]));
        let again = FieldSet::from_fields_v1(&set.to_fields_v1());
        assert_eq!(again, set);
        assert_eq!(set.paths().len(), 6);
    }

    #[test]
    fn remove_prunes() {
        let mut set = FieldSet::new();
        set.insert(&[f("a"), f("b")]);
        assert!(set.remove(&[f("a"), f("b")]));
        assert!(set.is_empty());
        assert!(!set.remove(&[f("a")]));
        assert_eq!(set.to_fields_v1(), json!({}));
    }

    #[test]
    fn value_at_and_remove_at() {
        let mut obj = json!({"spec":{"containers":[{"name":"a","image":"x"},{"name":"b"}]},
                             "metadata":{"finalizers":["f1","f2"]}});
        let key = PathElement::Key("{\"name\":\"a\"}".to_owned());
        let path = [f("spec"), f("containers"), key.clone(), f("image")];
        assert_eq!(value_at(&obj, &path), Some(&json!("x")));
        assert!(remove_at(&mut obj, &path));
        assert_eq!(value_at(&obj, &path), None);
        assert!(remove_at(&mut obj, &[f("spec"), f("containers"), key]));
        assert_eq!(obj["spec"]["containers"], json!([{"name":"b"}]));
        let fin = [
            f("metadata"),
            f("finalizers"),
            PathElement::Value("\"f1\"".to_owned()),
        ];
        assert!(value_at(&obj, &fin).is_some());
        assert!(remove_at(&mut obj, &fin));
        assert_eq!(obj["metadata"]["finalizers"], json!(["f2"]));
        assert!(!remove_at(&mut obj, &[f("nope"), f("x")]));
    }

    #[test]
    fn display_path_like_upstream() {
        let path = [
            f("spec"),
            f("containers"),
            PathElement::Key("{\"name\":\"nginx\"}".to_owned()),
            f("image"),
        ];
        assert_eq!(
            DisplayPath(&path).to_string(),
            ".spec.containers[name=\"nginx\"].image"
        );
        let path = [
            f("spec"),
            f("ports"),
            PathElement::Key("{\"port\":80}".to_owned()),
        ];
        assert_eq!(DisplayPath(&path).to_string(), ".spec.ports[port=80]");
        assert_eq!(
            DisplayPath(&[f("x"), PathElement::Index(2)]).to_string(),
            ".x[2]"
        );
    }

    #[test]
    fn server_owned_metadata_is_not_tracked() {
        let obj = json!({"apiVersion":"v1","kind":"ConfigMap",
            "metadata":{"name":"c","namespace":"n","uid":"u","resourceVersion":"1","annotations":{"a":"b"}},
            "data":{"k":"v"}});
        assert_eq!(
            fields_of("ConfigMap", &obj).to_fields_v1(),
            json!({"f:data":{"f:k":{}},"f:metadata":{"f:annotations":{"f:a":{}}}})
        );
    }
}
