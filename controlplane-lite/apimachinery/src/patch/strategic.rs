//! Strategic merge patch, as `kubectl apply` (client side), `kubectl patch`, `kubectl label` and
//! `kubectl annotate` send it.
//!
//! Semantics follow upstream `k8s.io/apimachinery/pkg/util/strategicpatch` with the server's
//! options (`MergeParallelList`, `IgnoreUnmatchedNulls`):
//!
//! - objects merge recursively; `null` deletes a key; scalars and type changes replace;
//! - lists follow [`super::strategy::list_strategy`]: merge by key, primitive set
//!   merge, or replace;
//! - directives: `$patch: replace | delete` in an object (replace it / make it empty), list
//!   elements `{"$patch": "delete", <key>: v}` (remove the element) and `{"$patch": "replace"}`
//!   (the list becomes the other patch elements), `$setElementOrder/<field>` (order of the merged
//!   list), `$retainKeys` (drop keys not listed), `$deleteFromPrimitiveList/<field>`;
//! - element order: the upstream algorithm (patch items ordered by `$setElementOrder` or by the
//!   patch, server-only items keep their relative order and are interleaved by their original
//!   position). A new element merged without `$setElementOrder` therefore lands *before* the
//!   existing ones, exactly as upstream.
//!
//! Deviations (all more lenient, none reachable from kubectl): `$patch: merge` on an object is
//! accepted as a no-op (upstream rejects it); values added where the original had nothing are
//! cleaned of directives and `null`s (upstream copies them verbatim); the consistency check between
//! `$setElementOrder` and the patch list is not performed.

use serde_json::{Map, Value};

use super::strategy::{list_strategy, ListStrategy};
use super::{json_type_name, PatchError};

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// Applies a strategic merge `patch` to `original`, an object of `kind` (`Pod`, `Service`, ...;
/// unknown kinds merge maps and replace every list except `metadata.finalizers` /
/// `metadata.ownerReferences`).
///
/// Errors are [`PatchError::NotAnObject`] and [`PatchError::InvalidStrategicMerge`] (both 400).
pub fn strategic_merge(kind: &str, original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::NotAnObject {
            found: json_type_name(patch),
        });
    };
    let original = match original {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    let mut merger = Merger {
        kind,
        path: Vec::new(),
    };
    merger.merge_map(original, patch.clone()).map(Value::Object)
}

struct Merger<'a> {
    kind: &'a str,
    /// Field names from the root to the current value (array positions omitted).
    path: Vec<String>,
}

impl Merger<'_> {
    fn error(&self, message: impl Into<String>) -> PatchError {
        PatchError::InvalidStrategicMerge {
            path: self.path.join("."),
            message: message.into(),
        }
    }

    fn strategy(&self) -> ListStrategy {
        let path: Vec<&str> = self.path.iter().map(String::as_str).collect();
        list_strategy(self.kind, &path)
    }

    fn merge_map(
        &mut self,
        mut original: Map<String, Value>,
        mut patch: Map<String, Value>,
    ) -> Result<Map<String, Value>, PatchError> {
        if let Some(directive) = patch.remove(DIRECTIVE) {
            match directive.as_str() {
                Some("replace") => return self.merge_map(Map::new(), patch),
                Some("delete") => return Ok(Map::new()),
                Some("merge") => {}
                _ => return Err(self.error(format!("unknown patch type {directive}"))),
            }
        }

        if let Some(retain) = patch.remove(RETAIN_KEYS) {
            self.apply_retain_keys(&mut original, &patch, &retain)?;
        }

        let order_keys: Vec<String> = patch
            .keys()
            .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
            .cloned()
            .collect();
        for order_key in order_keys {
            let order = patch.remove(&order_key).unwrap_or(Value::Null);
            let field = order_key[SET_ELEMENT_ORDER.len()..].to_owned();
            self.path.push(field.clone());
            let result = self.merge_with_element_order(&mut original, &mut patch, &field, order);
            self.path.pop();
            result?;
        }

        let delete_keys: Vec<String> = patch
            .keys()
            .filter(|k| k.starts_with(DELETE_FROM_PRIMITIVE_LIST))
            .cloned()
            .collect();
        for delete_key in delete_keys {
            let field = &delete_key[DELETE_FROM_PRIMITIVE_LIST.len()..];
            let Some(Value::Array(to_delete)) = patch.remove(&delete_key) else {
                return Err(self.error(format!("{delete_key} must be a list")));
            };
            if let Some(Value::Array(list)) = original.get_mut(field) {
                list.retain(|v| !to_delete.contains(v));
            }
        }

        for (key, patch_value) in patch {
            if key.starts_with('$') {
                return Err(self.error(format!("unknown directive {key:?}")));
            }
            if patch_value.is_null() {
                original.remove(&key);
                continue;
            }
            self.path.push(key.clone());
            let merged = match original.remove(&key) {
                None => {
                    if is_delete_directive(&patch_value) {
                        self.path.pop();
                        continue;
                    }
                    self.clean(patch_value)
                }
                Some(Value::Object(orig)) => match patch_value {
                    Value::Object(p) => self.merge_map(orig, p).map(Value::Object),
                    other => self.clean(other),
                },
                Some(Value::Array(orig)) => match patch_value {
                    Value::Array(p) => self.merge_list(orig, p).map(Value::Array),
                    other => self.clean(other),
                },
                Some(_) => self.clean(patch_value),
            };
            self.path.pop();
            original.insert(key, merged?);
        }
        Ok(original)
    }

    /// A patch value with nothing to merge into: applied to an empty value of its own type, so
    /// directives are interpreted and `null`s dropped.
    fn clean(&mut self, value: Value) -> Result<Value, PatchError> {
        match value {
            Value::Object(map) => self.merge_map(Map::new(), map).map(Value::Object),
            Value::Array(list) => self.merge_list(Vec::new(), list).map(Value::Array),
            other => Ok(other),
        }
    }

    fn apply_retain_keys(
        &self,
        original: &mut Map<String, Value>,
        patch: &Map<String, Value>,
        retain: &Value,
    ) -> Result<(), PatchError> {
        let Value::Array(retain) = retain else {
            return Err(self.error("$retainKeys must be a list of strings"));
        };
        let retain: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        for (key, value) in patch {
            if value.is_null()
                || key.starts_with(SET_ELEMENT_ORDER)
                || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
                || key == DIRECTIVE
            {
                continue;
            }
            if !retain.contains(&key.as_str()) {
                return Err(self.error(format!("{key:?} is not present in $retainKeys")));
            }
        }
        original.retain(|k, _| retain.contains(&k.as_str()));
        Ok(())
    }

    /// Handles `$setElementOrder/<field>` together with the `field` list of the same patch.
    fn merge_with_element_order(
        &mut self,
        original: &mut Map<String, Value>,
        patch: &mut Map<String, Value>,
        field: &str,
        order: Value,
    ) -> Result<(), PatchError> {
        let Value::Array(order) = order else {
            return Err(self.error("$setElementOrder must be a list"));
        };
        let original_list = match original.get(field) {
            Some(Value::Array(list)) => Some(list.clone()),
            _ => None,
        };
        let patch_list = match patch.get(field) {
            Some(Value::Array(_)) => match patch.remove(field) {
                Some(Value::Array(list)) => Some(list),
                _ => None,
            },
            // A null or non-list value is left to the main loop; the order is moot.
            Some(_) => return Ok(()),
            None => None,
        };
        let merged = match (original_list.clone(), patch_list) {
            (Some(orig), None) => orig,
            (None, Some(p)) => self.merge_list(Vec::new(), p)?,
            (Some(orig), Some(p)) => self.merge_list(orig, p)?,
            (None, None) => return Ok(()),
        };
        let key = match self.strategy() {
            ListStrategy::MergeByKey(key) => Some(key),
            _ => None,
        };
        let (mut in_order, mut server_only): (Vec<Value>, Vec<Value>) = merged
            .into_iter()
            .partition(|item| index_of(&order, item, key).is_some());
        sort_by_order(&mut in_order, &order, key);
        let server_order = original_list.unwrap_or_default();
        sort_by_order(&mut server_only, &server_order, key);
        let result = merge_sorted(server_only, in_order, &server_order, key);
        original.insert(field.to_owned(), Value::Array(result));
        Ok(())
    }

    fn merge_list(
        &mut self,
        original: Vec<Value>,
        patch: Vec<Value>,
    ) -> Result<Vec<Value>, PatchError> {
        match self.strategy() {
            ListStrategy::Replace => Ok(patch),
            ListStrategy::MergePrimitive => self.merge_primitive_list(original, patch),
            ListStrategy::MergeByKey(key) => self.merge_keyed_list(original, patch, key),
        }
    }

    fn merge_primitive_list(
        &self,
        original: Vec<Value>,
        patch: Vec<Value>,
    ) -> Result<Vec<Value>, PatchError> {
        if patch
            .iter()
            .chain(&original)
            .any(|v| v.is_object() || v.is_array())
        {
            return Err(self.error("cannot merge lists without merge key"));
        }
        let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
        for v in original.iter().chain(&patch) {
            if !merged.contains(v) {
                merged.push(v.clone());
            }
        }
        let (mut in_patch, mut server_only): (Vec<Value>, Vec<Value>) =
            merged.into_iter().partition(|v| patch.contains(v));
        sort_by_order(&mut in_patch, &patch, None);
        sort_by_order(&mut server_only, &original, None);
        Ok(merge_sorted(server_only, in_patch, &original, None))
    }

    fn merge_keyed_list(
        &mut self,
        mut original: Vec<Value>,
        patch: Vec<Value>,
        key: &str,
    ) -> Result<Vec<Value>, PatchError> {
        let server_order = original.clone();
        let mut replace = false;
        let mut plain: Vec<Map<String, Value>> = Vec::with_capacity(patch.len());
        for element in patch {
            let Value::Object(element) = element else {
                return Err(self.error(format!(
                    "list elements must be objects with merge key {key:?}, got {}",
                    json_type_name(&element)
                )));
            };
            match element.get(DIRECTIVE).map(|d| d.as_str()) {
                None => plain.push(element),
                Some(Some("delete")) => {
                    let Some(key_value) = element.get(key) else {
                        return Err(
                            self.error(format!("delete directive without merge key {key:?}"))
                        );
                    };
                    original.retain(|o| o.get(key) != Some(key_value));
                }
                Some(Some("replace")) => replace = true,
                Some(Some("merge")) => {
                    return Err(self.error("merging lists cannot yet be specified in the patch"))
                }
                Some(_) => return Err(self.error("unknown patch type in list element")),
            }
        }
        if replace {
            return plain
                .into_iter()
                .map(|element| self.merge_map(Map::new(), element).map(Value::Object))
                .collect();
        }

        let patch_order: Vec<Value> = plain.iter().cloned().map(Value::Object).collect();
        for element in plain {
            let Some(key_value) = element.get(key).cloned() else {
                return Err(self.error(format!("list element has no merge key {key:?}")));
            };
            let position = original.iter().position(|o| o.get(key) == Some(&key_value));
            match position {
                Some(i) => {
                    let Value::Object(orig) = std::mem::take(&mut original[i]) else {
                        return Err(self.error("original list element is not an object"));
                    };
                    original[i] = Value::Object(self.merge_map(orig, element)?);
                }
                None => original.push(Value::Object(self.merge_map(Map::new(), element)?)),
            }
        }

        let (mut in_patch, mut server_only): (Vec<Value>, Vec<Value>) = original
            .into_iter()
            .partition(|item| index_of(&patch_order, item, Some(key)).is_some());
        sort_by_order(&mut in_patch, &patch_order, Some(key));
        sort_by_order(&mut server_only, &server_order, Some(key));
        Ok(merge_sorted(
            server_only,
            in_patch,
            &server_order,
            Some(key),
        ))
    }
}

fn is_delete_directive(value: &Value) -> bool {
    value.get(DIRECTIVE).and_then(Value::as_str) == Some("delete")
}

/// Position of `item` in `list`, comparing merge-key values for keyed lists and whole values
/// for primitive lists (upstream `index`).
fn index_of(list: &[Value], item: &Value, key: Option<&str>) -> Option<usize> {
    match key {
        Some(key) => {
            let wanted = item.get(key);
            list.iter().position(|v| v.get(key) == wanted)
        }
        None => list.iter().position(|v| v == item),
    }
}

/// Stable sort by position in `order`; items not in `order` keep their place after the ones
/// that are (upstream only ever sorts lists whose items are all in `order`).
fn sort_by_order(items: &mut [Value], order: &[Value], key: Option<&str>) {
    items.sort_by_key(|item| index_of(order, item, key).unwrap_or(usize::MAX));
}

/// Upstream `mergeSortedSlice`: interleaves server-only items (`left`) into patch items
/// (`right`), taking a left item first only when both are in `server_order` and it comes first
/// there.
fn merge_sorted(
    left: Vec<Value>,
    right: Vec<Value>,
    server_order: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => {
                match (
                    index_of(server_order, l, key),
                    index_of(server_order, r, key),
                ) {
                    (Some(li), Some(ri)) => li < ri,
                    _ => false,
                }
            }
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(kind: &str, original: Value, patch: Value) -> Value {
        strategic_merge(kind, &original, &patch).expect("strategic merge")
    }

    #[test]
    fn notes_example_service_port_80_to_8080() {
        let original = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "selector": {"app": "web"},
                "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}]
            }
        });
        let patch = json!({"spec":{
            "$setElementOrder/ports":[{"port":8080}],
            "ports":[{"port":8080,"protocol":"TCP","targetPort":80},{"$patch":"delete","port":80}]
        }});
        let out = smp("Service", original, patch);
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 8080, "protocol": "TCP", "targetPort": 80}])
        );
        assert_eq!(out["spec"]["selector"], json!({"app": "web"}));
    }

    #[test]
    fn service_ports_merge_by_port_keeps_server_only() {
        let original = json!({"spec":{"ports":[
            {"name":"http","port":80,"targetPort":8080},
            {"name":"https","port":443,"nodePort":30443}
        ]}});
        let patch = json!({"spec":{"ports":[{"port":443,"targetPort":8443}]}});
        let out = smp("Service", original, patch);
        assert_eq!(
            out["spec"]["ports"],
            json!([
                {"name":"http","port":80,"targetPort":8080},
                {"name":"https","port":443,"nodePort":30443,"targetPort":8443}
            ])
        );
    }

    #[test]
    fn containers_merge_by_name_and_env_by_name() {
        let original = json!({"spec":{"containers":[
            {"name":"app","image":"app:1","env":[{"name":"A","value":"1"},{"name":"B","value":"2"}]},
            {"name":"sidecar","image":"proxy:1"}
        ]}});
        let patch = json!({"spec":{"containers":[
            {"name":"app","image":"app:2","env":[{"name":"B","value":"20"},{"name":"A","$patch":"delete"}]}
        ]}});
        let out = smp("Pod", original, patch);
        assert_eq!(
            out["spec"]["containers"],
            json!([
                {"name":"app","image":"app:2","env":[{"name":"B","value":"20"}]},
                {"name":"sidecar","image":"proxy:1"}
            ])
        );
    }

    #[test]
    fn deployment_template_containers_merge_with_set_element_order() {
        let original = json!({"spec":{"replicas":1,"template":{"spec":{"containers":[
            {"name":"a","image":"a:1"},{"name":"b","image":"b:1"}
        ]}}}});
        let patch = json!({"spec":{"template":{"spec":{
            "$setElementOrder/containers":[{"name":"c"},{"name":"a"},{"name":"b"}],
            "containers":[{"name":"c","image":"c:1"},{"name":"a","image":"a:2"}]
        }}}});
        let out = smp("Deployment", original, patch);
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name":"c","image":"c:1"},{"name":"a","image":"a:2"},{"name":"b","image":"b:1"}])
        );
        assert_eq!(out["spec"]["replicas"], 1);
    }

    #[test]
    fn new_element_without_order_goes_first_like_upstream() {
        let original = json!({"spec":{"containers":[{"name":"a"},{"name":"b"}]}});
        let out = smp(
            "Pod",
            original.clone(),
            json!({"spec":{"containers":[{"name":"x"}]}}),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name":"x"},{"name":"a"},{"name":"b"}])
        );
        // A patch that mentions an existing element anchors the new one after it.
        let out = smp(
            "Pod",
            original,
            json!({"spec":{"containers":[{"name":"b"},{"name":"x"}]}}),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name":"a"},{"name":"b"},{"name":"x"}])
        );
    }

    #[test]
    fn container_ports_merge_by_container_port() {
        let original = json!({"spec":{"containers":[{"name":"a","ports":[{"containerPort":80,"name":"http"}]}]}});
        let patch = json!({"spec":{"containers":[{"name":"a","ports":[{"containerPort":80,"protocol":"TCP"},{"containerPort":9090}]}]}});
        let out = smp("Pod", original, patch);
        assert_eq!(
            out["spec"]["containers"][0]["ports"],
            json!([{"containerPort":80,"name":"http","protocol":"TCP"},{"containerPort":9090}])
        );
    }

    #[test]
    fn replace_lists_replace() {
        let original = json!({"spec":{"tolerations":[{"key":"a"}],"containers":[{"name":"a","args":["x","y"]}]}});
        let patch =
            json!({"spec":{"tolerations":[{"key":"b"}],"containers":[{"name":"a","args":["z"]}]}});
        let out = smp("Pod", original, patch);
        assert_eq!(out["spec"]["tolerations"], json!([{"key":"b"}]));
        assert_eq!(out["spec"]["containers"][0]["args"], json!(["z"]));
    }

    #[test]
    fn unknown_kind_replaces_lists_but_merges_maps() {
        let original = json!({"data":{"a":"1"},"items":[1,2]});
        let out = smp("Widget", original, json!({"data":{"b":"2"},"items":[3]}));
        assert_eq!(out, json!({"data":{"a":"1","b":"2"},"items":[3]}));
    }

    #[test]
    fn null_deletes_and_labels_patch() {
        let original =
            json!({"metadata":{"labels":{"app":"web","tier":"fe"},"annotations":{"x":"1"}}});
        let patch = json!({"metadata":{"labels":{"tier":null,"env":"prod"},"annotations":null}});
        let out = smp("Pod", original, patch);
        assert_eq!(
            out["metadata"],
            json!({"labels":{"app":"web","env":"prod"}})
        );
    }

    #[test]
    fn nulls_in_new_values_are_dropped() {
        let out = smp(
            "Pod",
            json!({}),
            json!({"metadata":{"labels":{"a":"1","b":null}}}),
        );
        assert_eq!(out, json!({"metadata":{"labels":{"a":"1"}}}));
    }

    #[test]
    fn finalizers_primitive_merge_and_delete_from_primitive_list() {
        let original = json!({"metadata":{"finalizers":["a","b"]}});
        let out = smp(
            "Pod",
            original.clone(),
            json!({"metadata":{"finalizers":["b","c"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c"]));
        let out = smp(
            "Pod",
            original.clone(),
            json!({"metadata":{"$deleteFromPrimitiveList/finalizers":["a"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        let out = smp(
            "Pod",
            original,
            json!({"metadata":{
                "$setElementOrder/finalizers":["c","b"],
                "finalizers":["c"],
                "$deleteFromPrimitiveList/finalizers":["a"]
            }}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["c", "b"]));
    }

    #[test]
    fn owner_references_merge_by_uid() {
        let original =
            json!({"metadata":{"ownerReferences":[{"uid":"1","kind":"ReplicaSet","name":"rs"}]}});
        let patch =
            json!({"metadata":{"ownerReferences":[{"uid":"2","kind":"Deployment","name":"d"}]}});
        let out = smp("Pod", original, patch);
        assert_eq!(
            out["metadata"]["ownerReferences"].as_array().map(Vec::len),
            Some(2)
        );
    }

    #[test]
    fn conditions_merge_by_type() {
        let original = json!({"status":{"phase":"Pending","conditions":[
            {"type":"PodScheduled","status":"True"},{"type":"Ready","status":"False"}
        ]}});
        let patch =
            json!({"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}});
        let out = smp("Pod", original, patch);
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type":"PodScheduled","status":"True"},{"type":"Ready","status":"True"}])
        );
        assert_eq!(out["status"]["phase"], "Running");
    }

    #[test]
    fn node_addresses_merge_by_type() {
        let original = json!({"status":{"addresses":[{"type":"InternalIP","address":"10.0.0.1"},{"type":"Hostname","address":"n1"}]}});
        let patch = json!({"status":{"addresses":[{"type":"InternalIP","address":"10.0.0.2"}]}});
        let out = smp("Node", original, patch);
        assert_eq!(
            out["status"]["addresses"],
            json!([{"type":"InternalIP","address":"10.0.0.2"},{"type":"Hostname","address":"n1"}])
        );
    }

    #[test]
    fn patch_replace_directive_on_map_and_list() {
        let original = json!({"spec":{"strategy":{"type":"RollingUpdate","rollingUpdate":{"maxSurge":1}},
            "template":{"spec":{"containers":[{"name":"a"},{"name":"b"}]}}}});
        let patch = json!({"spec":{"strategy":{"$patch":"replace","type":"Recreate"},
            "template":{"spec":{"containers":[{"name":"c","image":"c"},{"$patch":"replace"}]}}}});
        let out = smp("Deployment", original, patch);
        assert_eq!(out["spec"]["strategy"], json!({"type":"Recreate"}));
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name":"c","image":"c"}])
        );
    }

    #[test]
    fn patch_delete_directive_on_map() {
        let original = json!({"spec":{"securityContext":{"runAsUser":1}}});
        let out = smp(
            "Pod",
            original,
            json!({"spec":{"securityContext":{"$patch":"delete"}}}),
        );
        assert_eq!(out["spec"]["securityContext"], json!({}));
        // Deleting something absent adds nothing.
        let out = smp(
            "Pod",
            json!({"spec":{}}),
            json!({"spec":{"affinity":{"$patch":"delete"}}}),
        );
        assert_eq!(out, json!({"spec":{}}));
    }

    #[test]
    fn retain_keys_on_volumes() {
        let original = json!({"spec":{"volumes":[{"name":"v","emptyDir":{}}]}});
        let patch = json!({"spec":{"volumes":[{"name":"v","$retainKeys":["name","hostPath"],"hostPath":{"path":"/x"}}]}});
        let out = smp("Pod", original, patch);
        assert_eq!(
            out["spec"]["volumes"],
            json!([{"name":"v","hostPath":{"path":"/x"}}])
        );
    }

    #[test]
    fn retain_keys_rejects_unlisted_patch_key() {
        let patch = json!({"spec":{"strategy":{"$retainKeys":["type"],"rollingUpdate":{}}}});
        let err = strategic_merge("Deployment", &json!({}), &patch).expect_err("invalid");
        assert_eq!(err.http_status(), 400);
    }

    #[test]
    fn errors_are_typed() {
        let err = strategic_merge("Pod", &json!({}), &json!("x")).expect_err("not object");
        assert!(matches!(err, PatchError::NotAnObject { .. }));
        let err = strategic_merge(
            "Pod",
            &json!({"spec":{"containers":[{"name":"a"}]}}),
            &json!({"spec":{"containers":[{"image":"x"}]}}),
        )
        .expect_err("missing merge key");
        match err {
            PatchError::InvalidStrategicMerge { path, .. } => assert_eq!(path, "spec.containers"),
            other => panic!("unexpected {other:?}"),
        }
        let err = strategic_merge(
            "Pod",
            &json!({"spec":{"containers":[{"name":"a"}]}}),
            &json!({"spec":{"containers":[{"$patch":"merge"}]}}),
        )
        .expect_err("list merge directive");
        assert_eq!(err.http_status(), 400);
        let err = strategic_merge("Pod", &json!({}), &json!({"$bogus": 1})).expect_err("bogus");
        assert_eq!(err.http_status(), 400);
    }

    #[test]
    fn kubectl_apply_style_three_way_patch() {
        // What client-side apply sends when an env var is added, one removed and the image bumped.
        let original = json!({"metadata":{"name":"d","annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{}"}},
            "spec":{"template":{"spec":{"containers":[{"name":"app","image":"app:1",
                "env":[{"name":"A","value":"1"},{"name":"B","value":"2"}]}]}}}});
        let patch = json!({"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"v\":2}"}},
            "spec":{"template":{"spec":{
                "$setElementOrder/containers":[{"name":"app"}],
                "containers":[{"name":"app","image":"app:2",
                    "$setElementOrder/env":[{"name":"A"},{"name":"C"}],
                    "env":[{"name":"C","value":"3"},{"$patch":"delete","name":"B"}]}]}}}});
        let out = smp("Deployment", original, patch);
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name":"app","image":"app:2","env":[{"name":"A","value":"1"},{"name":"C","value":"3"}]}])
        );
        assert_eq!(
            out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
            "{\"v\":2}"
        );
    }

    #[test]
    fn set_element_order_alone_reorders() {
        let original =
            json!({"spec":{"containers":[{"name":"a","image":"a"},{"name":"b","image":"b"}]}});
        let patch = json!({"spec":{"$setElementOrder/containers":[{"name":"b"},{"name":"a"}]}});
        let out = smp("Pod", original, patch);
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name":"b","image":"b"},{"name":"a","image":"a"}])
        );
    }

    #[test]
    fn server_only_elements_are_interleaved_by_live_position() {
        // `c` was added by someone else between `a` and `b`; the applier reorders a/b.
        let original = json!({"spec":{"containers":[{"name":"a"},{"name":"c"},{"name":"b"}]}});
        let patch = json!({"spec":{
            "$setElementOrder/containers":[{"name":"a"},{"name":"b"},{"name":"d"}],
            "containers":[{"name":"d"}]
        }});
        let out = smp("Pod", original, patch);
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name":"a"},{"name":"c"},{"name":"b"},{"name":"d"}])
        );
    }

    #[test]
    fn empty_patch_is_identity() {
        let original = json!({"a":{"b":[1,2]},"c":"d"});
        assert_eq!(smp("Pod", original.clone(), json!({})), original);
    }

    #[test]
    fn type_change_replaces() {
        let out = smp("Pod", json!({"a":{"b":1}}), json!({"a":"x"}));
        assert_eq!(out, json!({"a":"x"}));
        let out = smp("Pod", json!({"a":"x"}), json!({"a":{"b":1,"c":null}}));
        assert_eq!(out, json!({"a":{"b":1}}));
    }
}
