//! Property tests of the parsers and patchers that take client input as it comes: label and field
//! selectors, JSON patch, JSON merge patch, strategic merge patch and server-side apply. Every
//! one must answer arbitrary input with a value or an error, never a panic; where a printer or an
//! algebraic law exists it is checked too (a selector prints to text that parses back to itself,
//! a merge patch applied twice changes nothing more, an empty patch changes nothing).
//!
//! Inputs are biased towards what the code branches on (Kubernetes field names, strategic
//! directives, JSON pointer paths, selector operators) so the cases reach past the first check.
//! `PROPTEST_CASES` sets the cases per property (default 256).

use ferry_apimachinery::patch::{
    apply, apply_patch, json_patch, merge_patch, strategic_merge, track_update, PatchType,
};
use ferry_apimachinery::selector::{parse_field_selector, parse_label_selector};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// Keys the patch code looks at, plus arbitrary short ones.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "apiVersion", "kind", "metadata", "name", "namespace", "labels", "annotations",
            "finalizers", "ownerReferences", "uid", "managedFields", "manager", "operation",
            "fieldsV1", "fieldsType", "f:spec", "f:metadata", "k:{\"name\":\"a\"}", "v:\"x\"", ".",
            "spec", "template", "selector", "replicas", "containers", "initContainers", "image",
            "ports", "port", "containerPort", "protocol", "env", "value", "volumes",
            "volumeMounts", "mountPath", "status", "conditions", "type", "addresses", "podCIDRs",
            "podCIDR", "data", "$patch", "$retainKeys", "$setElementOrder/containers",
            "$setElementOrder/ports", "$deleteFromPrimitiveList/finalizers", "op", "path", "from",
            "",
        ])
        .prop_map(str::to_owned),
        1 => "[a-z$/:.]{0,8}",
    ]
}

/// Scalars the patch code compares against, plus arbitrary ones.
fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        prop::sample::select(vec![
            "replace",
            "merge",
            "delete",
            "add",
            "remove",
            "move",
            "copy",
            "test",
            "a",
            "v1",
            "apps/v1",
            "Pod",
            "Deployment",
            "/spec",
            "/spec/containers/0",
            "/spec/containers/-",
            "/metadata/labels/a",
            "/metadata/finalizers/0",
            "/",
            "",
            "~1",
            "/a~0b",
            "FieldsV1",
            "Apply",
            "Update",
            "TCP",
        ])
        .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ]
}

/// JSON values a few levels deep.
fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// An object of `kind` with arbitrary content under the usual top-level fields.
fn object() -> impl Strategy<Value = Value> {
    (kind(), value(), value(), prop::option::of("[a-z]{1,5}")).prop_map(
        |(kind, spec, extra, name)| {
            let mut o = json!({"apiVersion": "v1", "kind": kind, "spec": spec, "metadata": {}});
            if let Some(n) = name {
                o["metadata"]["name"] = n.into();
            }
            if let Value::Object(m) = extra {
                for (k, v) in m {
                    o[k] = v;
                }
            }
            o
        },
    )
}

fn kind() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "Pod",
        "Deployment",
        "ReplicaSet",
        "Service",
        "Node",
        "ConfigMap",
        "Secret",
        "Event",
        "Lease",
        "EndpointSlice",
        "Unknown",
    ])
    .prop_map(str::to_owned)
}

/// A JSON patch document: mostly well-formed operations with arbitrary parts.
fn json_patch_doc() -> impl Strategy<Value = Value> {
    let op = (scalar(), scalar(), value(), scalar())
        .prop_map(|(op, path, v, from)| json!({"op": op, "path": path, "value": v, "from": from}));
    prop_oneof![
        3 => prop::collection::vec(op, 0..4).prop_map(Value::Array),
        1 => value(),
    ]
}

const NOW: &str = "2026-12-05T00:00:00Z";

proptest! {
    #[test]
    fn merge_patch_never_panics_and_is_idempotent(original in value(), patch in value()) {
        if let Ok(once) = merge_patch(&original, &patch) {
            // RFC 7386: applying the same merge patch again changes nothing.
            prop_assert_eq!(merge_patch(&once, &patch).ok(), Some(once));
        }
    }

    #[test]
    fn json_patch_never_panics(original in value(), patch in json_patch_doc()) {
        let _ = json_patch(&original, &patch);
        prop_assert_eq!(json_patch(&original, &json!([])).ok(), Some(original));
    }

    #[test]
    fn strategic_merge_never_panics(kind in kind(), original in object(), patch in value()) {
        let _ = strategic_merge(&kind, &original, &patch);
        let _ = strategic_merge(&kind, &patch, &original);
        let _ = apply_patch(&kind, PatchType::StrategicMerge, &original, &patch);
    }

    #[test]
    fn strategic_merge_with_an_empty_patch_changes_nothing(kind in kind(), original in object()) {
        prop_assert_eq!(strategic_merge(&kind, &original, &json!({})).ok(), Some(original));
    }

    #[test]
    fn server_side_apply_never_panics(
        kind in kind(),
        existing in prop::option::of(object()),
        applied in prop_oneof![object(), value()],
        force in any::<bool>(),
    ) {
        let _ = apply(&kind, existing.as_ref(), &applied, "test-manager", force, NOW);
        if let Some(old) = &existing {
            // A second manager over the first one's result, and the update path's bookkeeping.
            if let Ok(out) = apply(&kind, None, old, "first", false, NOW) {
                let _ = apply(&kind, Some(&out.object), &applied, "second", force, NOW);
            }
            let _ = track_update(&kind, Some(old), &applied, "updater", None, NOW);
            let _ = track_update(&kind, Some(old), &applied, "updater", Some("status"), NOW);
        }
        let _ = track_update(&kind, None, &applied, "creator", None, NOW);
    }

    #[test]
    fn patch_content_types_never_panic(ct in ".{0,40}", original in value(), patch in value()) {
        if let Some(t) = PatchType::from_content_type(&ct) {
            let _ = apply_patch("Pod", t, &original, &patch);
        }
    }
}

/// Selector text: operators, parentheses, separators and label-ish words, plus anything.
fn selector_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(
            prop::sample::select(vec![
                "a", "b", "app", "tier", "x.io/y", "k8s.io/", "-a", "a-", "1", "10", "", " ",
                "=", "==", "!=", "!", "<", ">", "in", "notin", " in ", " notin ", "(", ")",
                ",", "\\,", "\\", "spec.nodeName", "metadata.name", "status.phase", "é", "\0",
            ]),
            0..12,
        )
        .prop_map(|parts| parts.concat()),
        1 => ".{0,40}",
    ]
}

/// A valid label requirement as text: a qualified key, an operator and fitting values.
fn requirement_text() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        "[a-z][a-z0-9]{0,6}",
        ("[a-z]{1,4}\\.io", "[a-z][a-z0-9]{0,5}").prop_map(|(p, n)| format!("{p}/{n}")),
    ];
    let val = "[a-z0-9]([a-z0-9._-]{0,5}[a-z0-9])?";
    (
        key,
        0..8u8,
        prop::collection::btree_set(val, 1..4),
        0..1000u32,
    )
        .prop_map(|(k, op, vals, n)| {
            let first = vals.iter().next().cloned().unwrap_or_default();
            let set = vals.into_iter().collect::<Vec<_>>().join(",");
            match op {
                0 => format!("{k}={first}"),
                1 => format!("{k}=={first}"),
                2 => format!("{k}!={first}"),
                3 => format!("{k} in ({set})"),
                4 => format!("{k} notin ({set})"),
                5 => k,
                6 => format!("!{k}"),
                _ => format!("{k}>{n}"),
            }
        })
}

proptest! {
    #[test]
    fn label_selectors_never_panic_and_reprint_to_themselves(s in selector_text()) {
        if let Ok(sel) = parse_label_selector(&s) {
            let printed = sel.to_string();
            let again = parse_label_selector(&printed);
            prop_assert_eq!(again.as_ref().ok(), Some(&sel), "{:?} printed as {:?}", s, printed);
        }
    }

    #[test]
    fn valid_label_selectors_parse_and_round_trip(
        reqs in prop::collection::vec(requirement_text(), 0..5)
    ) {
        let text = reqs.join(",");
        let sel = parse_label_selector(&text);
        prop_assert!(sel.is_ok(), "{:?}: {:?}", text, sel);
        let sel = sel.unwrap();
        prop_assert_eq!(parse_label_selector(&sel.to_string()).ok(), Some(sel));
    }

    #[test]
    fn field_selectors_never_panic(kind in kind(), s in selector_text(), obj in object()) {
        let plural = match kind.as_str() {
            "Pod" => "pods",
            "Node" => "nodes",
            "Event" => "events",
            "Service" => "services",
            "Secret" => "secrets",
            _ => "configmaps",
        };
        for k in [kind.as_str(), plural] {
            if let Ok(sel) = parse_field_selector(k, &s) {
                let _ = sel.matches(&obj);
            }
        }
    }
}
