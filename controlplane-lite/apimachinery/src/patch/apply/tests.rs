//! Unit tests of server-side apply and managed-fields tracking: conflicts and `force`, removal
//! of omitted fields, status reset, `track_update` ownership moves, and the upgrade from and
//! downgrade to client-side `kubectl apply`.

use super::last_applied::{go_json, TOTAL_ANNOTATION_SIZE_LIMIT};
use super::*;
use serde_json::json;

const T0: &str = "2025-01-01T00:00:00Z";
const T1: &str = "2025-01-01T00:01:00Z";

fn deployment(replicas: i64, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": image}]}}
        }
    })
}

fn managers(obj: &Value) -> Vec<(String, String)> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|e| {
                    (
                        e["manager"].as_str().unwrap_or_default().to_owned(),
                        e["operation"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn create_records_apply_entry() {
    let out = apply(
        "Deployment",
        None,
        &deployment(2, "nginx:1"),
        "kubectl",
        false,
        T0,
    )
    .expect("apply");
    assert!(out.created);
    let entry = &out.object["metadata"]["managedFields"][0];
    assert_eq!(entry["manager"], "kubectl");
    assert_eq!(entry["operation"], "Apply");
    assert_eq!(entry["apiVersion"], "apps/v1");
    assert_eq!(entry["time"], T0);
    assert_eq!(entry["fieldsType"], "FieldsV1");
    assert_eq!(entry["fieldsV1"]["f:spec"]["f:replicas"], json!({}));
    assert_eq!(
        entry["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]
            ["k:{\"name\":\"nginx\"}"]["."],
        json!({})
    );
    assert_eq!(out.object["spec"]["replicas"], 2);
}

#[test]
fn reapply_same_manager_updates_without_conflict() {
    let first = apply(
        "Deployment",
        None,
        &deployment(2, "nginx:1"),
        "kubectl",
        false,
        T0,
    )
    .expect("create");
    let second = apply(
        "Deployment",
        Some(&first.object),
        &deployment(3, "nginx:2"),
        "kubectl",
        false,
        T1,
    )
    .expect("update");
    assert!(!second.created);
    assert_eq!(second.object["spec"]["replicas"], 3);
    assert_eq!(
        second.object["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:2"
    );
    assert_eq!(
        managers(&second.object),
        vec![("kubectl".into(), "Apply".into())]
    );
    assert_eq!(second.object["metadata"]["managedFields"][0]["time"], T1);
}

#[test]
fn conflict_with_other_applier_and_force() {
    let first = apply(
        "Deployment",
        None,
        &deployment(2, "nginx:1"),
        "alice",
        false,
        T0,
    )
    .expect("create");
    let bob = json!({"apiVersion":"apps/v1","kind":"Deployment",
        "metadata":{"name":"web"},"spec":{"replicas":5}});
    let err =
        apply("Deployment", Some(&first.object), &bob, "bob", false, T1).expect_err("conflict");
    assert_eq!(err.http_status(), 409);
    match &err {
        ApplyError::Conflict { causes } => {
            assert_eq!(causes.len(), 1);
            assert_eq!(causes[0].manager, "alice");
            assert_eq!(causes[0].field, ".spec.replicas");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"alice\": .spec.replicas"
    );

    // Same value: shared ownership, no conflict.
    let same = json!({"apiVersion":"apps/v1","kind":"Deployment",
        "metadata":{"name":"web"},"spec":{"replicas":2}});
    let shared = apply("Deployment", Some(&first.object), &same, "bob", false, T1).expect("shared");
    assert_eq!(managers(&shared.object).len(), 2);

    // Forced: bob takes .spec.replicas, alice keeps the rest.
    let forced = apply("Deployment", Some(&first.object), &bob, "bob", true, T1).expect("force");
    assert_eq!(forced.object["spec"]["replicas"], 5);
    let fields = &forced.object["metadata"]["managedFields"];
    let alice = fields
        .as_array()
        .and_then(|l| l.iter().find(|e| e["manager"] == "alice"))
        .expect("alice entry");
    assert!(alice["fieldsV1"]["f:spec"].get("f:replicas").is_none());
    assert!(alice["fieldsV1"]["f:spec"].get("f:template").is_some());
}

#[test]
fn conflict_with_updater_names_api_version() {
    let created = track_update(
        "Deployment",
        None,
        &deployment(1, "nginx:1"),
        "kubectl-create",
        None,
        T0,
    );
    let applied = json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},
        "spec":{"replicas":4,"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:9"}]}}}});
    let err =
        apply("Deployment", Some(&created), &applied, "kubectl", false, T1).expect_err("conflict");
    let ApplyError::Conflict { causes } = &err else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(causes.len(), 2);
    assert_eq!(
        err.to_string(),
        "Apply failed with 2 conflicts: conflicts with \"kubectl-create\" using apps/v1:\n\
         - .spec.replicas\n\
         - .spec.template.spec.containers[name=\"nginx\"].image"
    );
}

#[test]
fn omitted_fields_are_removed_unless_owned_elsewhere() {
    let mut config = deployment(2, "nginx:1");
    config["metadata"]["labels"]["tier"] = json!("fe");
    config["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .expect("containers")
        .push(json!({"name": "sidecar", "image": "envoy"}));
    let first = apply("Deployment", None, &config, "kubectl", false, T0).expect("create");

    // Another manager also applies the tier label (same value, shared).
    let other = json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web",
        "labels":{"tier":"fe"}}});
    let shared = apply(
        "Deployment",
        Some(&first.object),
        &other,
        "labeler",
        false,
        T0,
    )
    .expect("shared");

    // kubectl drops the sidecar and the tier label.
    let second = apply(
        "Deployment",
        Some(&shared.object),
        &deployment(2, "nginx:1"),
        "kubectl",
        false,
        T1,
    )
    .expect("reapply");
    assert_eq!(
        second.object["spec"]["template"]["spec"]["containers"],
        json!([{"name": "nginx", "image": "nginx:1"}])
    );
    // Still owned by "labeler", so it stays.
    assert_eq!(second.object["metadata"]["labels"]["tier"], "fe");

    // Without the other owner it would go.
    let third = apply(
        "Deployment",
        Some(&first.object),
        &deployment(2, "nginx:1"),
        "kubectl",
        false,
        T1,
    )
    .expect("reapply");
    assert!(third.object["metadata"]["labels"].get("tier").is_none());
    assert_eq!(third.object["metadata"]["labels"]["app"], "web");
}

#[test]
fn removal_prunes_emptied_containers() {
    let config = json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},
        "data":{"a":"1"}});
    let first = apply("ConfigMap", None, &config, "m", false, T0).expect("create");
    let second = apply(
        "ConfigMap",
        Some(&first.object),
        &json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}),
        "m",
        false,
        T1,
    )
    .expect("reapply");
    assert!(second.object.get("data").is_none());
    assert!(second.object["metadata"].get("managedFields").is_none());
}

#[test]
fn fields_set_by_others_are_not_removed() {
    let first = apply(
        "Deployment",
        None,
        &deployment(2, "nginx:1"),
        "kubectl",
        false,
        T0,
    )
    .expect("create");
    // A controller adds an annotation with an ordinary update.
    let mut edited = first.object.clone();
    edited["metadata"]["annotations"] = json!({"deployment.kubernetes.io/revision": "1"});
    let edited = track_update(
        "Deployment",
        Some(&first.object),
        &edited,
        "kube-controller-manager",
        None,
        T0,
    );
    let again = apply(
        "Deployment",
        Some(&edited),
        &deployment(2, "nginx:1"),
        "kubectl",
        false,
        T1,
    )
    .expect("reapply");
    assert_eq!(
        again.object["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    assert_eq!(
        managers(&again.object),
        vec![
            ("kubectl".into(), "Apply".into()),
            ("kube-controller-manager".into(), "Update".into())
        ]
    );
}

#[test]
fn status_is_dropped_for_status_subresource_kinds() {
    let mut config = deployment(1, "nginx:1");
    config["status"] = json!({"replicas": 9});
    let out = apply("Deployment", None, &config, "kubectl", false, T0).expect("apply");
    assert!(out.object.get("status").is_none());
    let cm = json!({"apiVersion":"v1","kind":"Lease","metadata":{"name":"l"},"status":{"x":1}});
    let out = apply("Lease", None, &cm, "kubectl", false, T0).expect("apply");
    assert_eq!(out.object["status"]["x"], 1);
}

#[test]
fn bad_requests() {
    let cfg = deployment(1, "x");
    let err = apply("Deployment", None, &cfg, "", false, T0).expect_err("no manager");
    assert_eq!(err.http_status(), 400);
    let err = apply("Pod", None, &cfg, "m", false, T0).expect_err("wrong kind");
    assert!(matches!(err, ApplyError::BadRequest(_)));
    let err = apply("Deployment", None, &json!([]), "m", false, T0).expect_err("array");
    assert_eq!(err.http_status(), 400);
    let mut with_mf = cfg.clone();
    with_mf["metadata"]["managedFields"] = json!([{"manager": "x"}]);
    let err = apply("Deployment", None, &with_mf, "m", false, T0).expect_err("managedFields");
    assert_eq!(err.to_string(), "metadata.managedFields must be nil");
    let mut no_version = cfg;
    no_version.as_object_mut().map(|m| m.remove("apiVersion"));
    assert!(apply("Deployment", None, &no_version, "m", false, T0).is_err());
}

#[test]
fn track_update_moves_ownership() {
    let created = track_update(
        "Deployment",
        None,
        &deployment(1, "nginx:1"),
        "kubectl-create",
        None,
        T0,
    );
    assert_eq!(
        managers(&created),
        vec![("kubectl-create".into(), "Update".into())]
    );
    let mut scaled = created.clone();
    scaled["spec"]["replicas"] = json!(3);
    let scaled = track_update(
        "Deployment",
        Some(&created),
        &scaled,
        "kubectl-scale",
        None,
        T1,
    );
    let entries = scaled["metadata"]["managedFields"]
        .as_array()
        .expect("entries");
    assert_eq!(entries.len(), 2);
    let create_entry = entries
        .iter()
        .find(|e| e["manager"] == "kubectl-create")
        .expect("c");
    assert!(create_entry["fieldsV1"]["f:spec"]
        .get("f:replicas")
        .is_none());
    let scale_entry = entries
        .iter()
        .find(|e| e["manager"] == "kubectl-scale")
        .expect("s");
    assert_eq!(scale_entry["fieldsV1"], json!({"f:spec":{"f:replicas":{}}}));
    // No change: no new entry, time untouched.
    let same = track_update("Deployment", Some(&scaled), &scaled, "noop", None, T1);
    assert_eq!(
        same["metadata"]["managedFields"],
        scaled["metadata"]["managedFields"]
    );
}

#[test]
fn track_update_status_subresource() {
    let pod = json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},
        "spec":{"containers":[{"name":"c","image":"i"}]}});
    let created = track_update("Pod", None, &pod, "kubectl", None, T0);
    let mut with_status = created.clone();
    with_status["status"] = json!({"phase":"Running"});
    let out = track_update(
        "Pod",
        Some(&created),
        &with_status,
        "kubelet",
        Some("status"),
        T1,
    );
    let entries = out["metadata"]["managedFields"]
        .as_array()
        .expect("entries");
    let kubelet = entries
        .iter()
        .find(|e| e["manager"] == "kubelet")
        .expect("kubelet");
    assert_eq!(kubelet["subresource"], "status");
    assert_eq!(kubelet["fieldsV1"], json!({"f:status":{"f:phase":{}}}));
}

/// `config` as `kubectl apply` (client-side) creates it: with the last-applied annotation and
/// every field owned by `kubectl-client-side-apply` through an `Update` entry.
fn client_side_applied(config: &Value) -> Value {
    let mut obj = config.clone();
    obj["metadata"]["annotations"] = json!({ LAST_APPLIED_ANNOTATION: go_json(config) });
    track_update(
        "Deployment",
        None,
        &obj,
        "kubectl-client-side-apply",
        None,
        T0,
    )
}

fn entry<'a>(obj: &'a Value, manager: &str) -> Option<&'a Value> {
    obj["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|e| e["manager"] == manager)
}

fn owns(obj: &Value, manager: &str, path: &[&str]) -> bool {
    entry(obj, manager).is_some_and(|e| {
        path.iter()
            .try_fold(&e["fieldsV1"], |node, key| node.get(key))
            .is_some()
    })
}

const REPLICAS: &[&str] = &["f:spec", "f:replicas"];
const IMAGE: &[&str] = &[
    "f:spec",
    "f:template",
    "f:spec",
    "f:containers",
    "k:{\"name\":\"nginx\"}",
    "f:image",
];
const TIER: &[&str] = &["f:metadata", "f:labels", "f:tier"];

fn last_applied(obj: &Value) -> Value {
    let text = obj["metadata"]["annotations"][LAST_APPLIED_ANNOTATION]
        .as_str()
        .expect("annotation");
    serde_json::from_str(text).expect("JSON")
}

fn conflict_fields(err: &ApplyError) -> Vec<(String, String)> {
    match err {
        ApplyError::Conflict { causes } => causes
            .iter()
            .map(|c| (c.manager.clone(), c.field.clone()))
            .collect(),
        other => panic!("not a conflict: {other:?}"),
    }
}

#[test]
fn kubectl_takes_over_what_client_side_apply_set() {
    let mut config = deployment(2, "nginx:1");
    config["metadata"]["labels"]["tier"] = json!("be");
    let live = client_side_applied(&config);

    let mut next = deployment(3, "nginx:2");
    next["metadata"]["labels"]["tier"] = json!("fe");
    let out = apply("Deployment", Some(&live), &next, "kubectl", false, T1).expect("upgrade");
    assert_eq!(out.object["spec"]["replicas"], 3);
    assert_eq!(
        out.object["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:2"
    );
    for path in [REPLICAS, IMAGE, TIER] {
        assert!(owns(&out.object, "kubectl", path), "{path:?}");
        assert!(
            !owns(&out.object, "kubectl-client-side-apply", path),
            "{path:?}"
        );
    }
    // Unchanged fields are shared, as after a forced apply; the annotation stays with
    // client-side apply and now holds the applied configuration.
    assert!(owns(
        &out.object,
        "kubectl-client-side-apply",
        &["f:spec", "f:selector"]
    ));
    assert_eq!(last_applied(&out.object), next);

    // Only what is different from the live object was a conflict: applying the same
    // configuration by another manager is fine (shared), a different one conflicts as usual.
    let err = apply("Deployment", Some(&live), &next, "kubectl-other", false, T1)
        .expect_err("not kubectl");
    assert_eq!(conflict_fields(&err).len(), 3);
}

#[test]
fn fields_changed_since_client_side_apply_still_conflict() {
    let mut config = deployment(2, "nginx:1");
    config["metadata"]["labels"]["tier"] = json!("be");
    let live = client_side_applied(&config);
    // kubectl scale, through the scale subresource; it sends no field manager, so the
    // server names it after the user agent: `kubectl`, like the applier, but an updater.
    let mut scaled = live.clone();
    scaled["spec"]["replicas"] = json!(5);
    let scaled = track_update(
        "Deployment",
        Some(&live),
        &scaled,
        "kubectl",
        Some("scale"),
        T1,
    );
    // kubectl edit, with its own manager.
    let mut edited = scaled.clone();
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:edit");
    let edited = track_update(
        "Deployment",
        Some(&scaled),
        &edited,
        "kubectl-edit",
        None,
        T1,
    );

    // The manifest still says 2 replicas, changes the image and the label: the label may
    // transfer, the other two are reported, and only they.
    let mut next = deployment(2, "nginx:2");
    next["metadata"]["labels"]["tier"] = json!("fe");
    let err =
        apply("Deployment", Some(&edited), &next, "kubectl", false, T1).expect_err("conflict");
    assert_eq!(
        conflict_fields(&err),
        vec![
            ("kubectl".into(), ".spec.replicas".into()),
            (
                "kubectl-edit".into(),
                ".spec.template.spec.containers[name=\"nginx\"].image".into()
            ),
        ]
    );
    assert_eq!(
        err.to_string(),
        "Apply failed with 2 conflicts: \
         conflicts with \"kubectl\" with subresource \"scale\" using apps/v1:\n\
         - .spec.replicas\n\
         conflicts with \"kubectl-edit\" using apps/v1:\n\
         - .spec.template.spec.containers[name=\"nginx\"].image"
    );

    // Forced, kubectl's Apply entry gets all three; the scale and edit entries, which had
    // one field each, go.
    let out = apply("Deployment", Some(&edited), &next, "kubectl", true, T1).expect("force");
    for path in [REPLICAS, IMAGE, TIER] {
        assert!(owns(&out.object, "kubectl", path), "{path:?}");
    }
    assert_eq!(
        managers(&out.object),
        vec![
            ("kubectl".into(), "Apply".into()),
            ("kubectl-client-side-apply".into(), "Update".into()),
        ]
    );
}

#[test]
fn upgrade_needs_a_usable_annotation() {
    let live = client_side_applied(&deployment(2, "nginx:1"));
    let next = deployment(3, "nginx:1");
    let with_annotation = |value: Value| {
        let mut obj = live.clone();
        obj["metadata"]["annotations"][LAST_APPLIED_ANNOTATION] = value;
        obj
    };
    let mut other_version = deployment(2, "nginx:1");
    other_version["apiVersion"] = json!("apps/v1beta1");
    let mut other_kind = deployment(2, "nginx:1");
    other_kind["kind"] = json!("ReplicaSet");
    for obj in [
        with_annotation(Value::Null),
        with_annotation(json!("")),
        with_annotation(json!("{not json")),
        with_annotation(json!(go_json(&other_version))),
        with_annotation(json!(go_json(&other_kind))),
    ] {
        let err =
            apply("Deployment", Some(&obj), &next, "kubectl", false, T1).expect_err("no upgrade");
        assert_eq!(
            conflict_fields(&err),
            vec![("kubectl-client-side-apply".into(), ".spec.replicas".into())]
        );
    }
}

#[test]
fn client_side_applied_fields_are_those_still_matching() {
    let mut config = deployment(2, "nginx:1");
    config["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .expect("containers")
        .push(json!({"name": "gone", "image": "x"}));
    let mut live = deployment(4, "nginx:1");
    live["metadata"]["labels"]["extra"] = json!("live only");
    live["metadata"]["annotations"] = json!({ LAST_APPLIED_ANNOTATION: go_json(&config) });
    let set = client_side_applied_fields("Deployment", "apps/v1", &live).expect("annotation");
    let path = |p: &[&str]| -> Vec<PathElement> {
        p.iter()
            .map(|s| match s.split_at(2) {
                ("f:", rest) => PathElement::Field(rest.to_owned()),
                ("k:", rest) => PathElement::Key(rest.to_owned()),
                _ => panic!("{s}"),
            })
            .collect()
    };
    assert!(set.contains(&path(IMAGE)));
    assert!(set.contains(&path(&["f:metadata", "f:labels", "f:app"])));
    assert!(set.contains(&path(&[
        "f:spec",
        "f:template",
        "f:spec",
        "f:containers",
        "k:{\"name\":\"nginx\"}"
    ])));
    // Changed since.
    assert!(!set.contains(&path(REPLICAS)));
    // Never applied.
    assert!(!set.contains(&path(&["f:metadata", "f:labels", "f:extra"])));
    // Applied, since removed.
    assert!(!set.contains_at_or_below(&path(&[
        "f:spec",
        "f:template",
        "f:spec",
        "f:containers",
        "k:{\"name\":\"gone\"}"
    ])));
    assert!(client_side_applied_fields("Deployment", "apps/v1", &deployment(1, "x")).is_none());
}

#[test]
fn last_applied_is_kept_up_to_date_only_by_kubectl() {
    let live = client_side_applied(&deployment(2, "nginx:1"));
    let original = live["metadata"]["annotations"][LAST_APPLIED_ANNOTATION].clone();
    // Another manager: untouched (and it shares replicas, no conflict).
    let other = apply(
        "Deployment",
        Some(&live),
        &deployment(2, "nginx:1"),
        "deployer",
        false,
        T1,
    )
    .expect("shared");
    assert_eq!(
        other.object["metadata"]["annotations"][LAST_APPLIED_ANNOTATION],
        original
    );
    // kubectl: the applied configuration, without the annotation itself (which it may only
    // set with force: client-side apply owns it).
    let mut next = deployment(2, "nginx:<2>&");
    next["metadata"]["annotations"] = json!({
        LAST_APPLIED_ANNOTATION: "stale",
        "note": "kept",
    });
    let err = apply("Deployment", Some(&live), &next, "kubectl", false, T1)
        .expect_err("the annotation is not the last-applied one");
    assert_eq!(conflict_fields(&err).len(), 1);
    let out = apply("Deployment", Some(&live), &next, "kubectl", true, T1).expect("apply");
    let text = out.object["metadata"]["annotations"][LAST_APPLIED_ANNOTATION]
        .as_str()
        .expect("annotation");
    let mut expected = next.clone();
    expected["metadata"]["annotations"] = json!({"note": "kept"});
    assert_eq!(last_applied(&out.object), expected);
    // Encoded as Go (and so kubectl) encodes it.
    assert!(text.starts_with("{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\","));
    assert!(text.contains("nginx:\\u003c2\\u003e\\u0026"), "{text}");
    assert!(text.ends_with("}\n"));
    assert_eq!(out.object["metadata"]["annotations"]["note"], "kept");

    // No annotation, none added; on create too.
    let plain = apply(
        "Deployment",
        None,
        &deployment(1, "nginx:1"),
        "kubectl",
        false,
        T0,
    )
    .expect("create");
    assert!(plain.object["metadata"].get("annotations").is_none());
    let created = apply("Deployment", None, &next, "kubectl", false, T0).expect("create");
    assert_eq!(last_applied(&created.object), expected);
}

#[test]
fn oversized_last_applied_is_dropped() {
    let mut object = json!({"metadata": {"annotations": {
        LAST_APPLIED_ANNOTATION: "x",
        "big": "y".repeat(TOTAL_ANNOTATION_SIZE_LIMIT - 2000),
    }}});
    let mut config = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {}});
    config["data"]["k"] = json!("z".repeat(1000));
    update_last_applied(&mut object, &config);
    assert!(object["metadata"]["annotations"][LAST_APPLIED_ANNOTATION]
        .as_str()
        .is_some_and(|t| t.len() > 1000));
    config["data"]["k"] = json!("z".repeat(3000));
    update_last_applied(&mut object, &config);
    assert!(object["metadata"]["annotations"]
        .get(LAST_APPLIED_ANNOTATION)
        .is_none());
    assert!(object["metadata"]["annotations"].get("big").is_some());
}

#[test]
fn track_update_takes_managed_fields_from_the_client() {
    let live = client_side_applied(&deployment(2, "nginx:1"));
    let applied = apply(
        "Deployment",
        Some(&live),
        &deployment(3, "nginx:1"),
        "kubectl",
        false,
        T1,
    )
    .expect("upgrade")
    .object;
    assert!(entry(&applied, "kubectl-client-side-apply").is_some());

    // What kubectl sends after its first server-side apply: client-side apply's entry merged
    // into kubectl's.
    let mut migrated = applied.clone();
    let mut merged = entry(&applied, "kubectl").expect("kubectl").clone();
    merged["fieldsV1"] =
        entry(&applied, "kubectl-client-side-apply").expect("csa")["fieldsV1"].clone();
    merged["fieldsV1"]["f:spec"]["f:replicas"] = json!({});
    migrated["metadata"]["managedFields"] = json!([merged]);
    let out = track_update("Deployment", Some(&applied), &migrated, "kubectl", None, T1);
    assert_eq!(managers(&out), vec![("kubectl".into(), "Apply".into())]);
    assert!(owns(&out, "kubectl", REPLICAS) && owns(&out, "kubectl", IMAGE));

    // No managedFields in the request, or ones that do not decode: the live ones stay.
    let mut dropped = applied.clone();
    dropped["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("managedFields");
    let mut broken = applied.clone();
    broken["metadata"]["managedFields"] = json!([{"manager": "x", "operation": "Update"}]);
    for obj in [dropped, broken] {
        let out = track_update("Deployment", Some(&applied), &obj, "m", None, T1);
        assert_eq!(
            out["metadata"]["managedFields"],
            applied["metadata"]["managedFields"]
        );
    }

    // A reset, `[]` or `[{}]`: only this write's changes are tracked.
    for reset in [json!([]), json!([{}])] {
        let mut obj = applied.clone();
        obj["metadata"]["managedFields"] = reset;
        obj["spec"]["replicas"] = json!(7);
        let out = track_update("Deployment", Some(&applied), &obj, "m", None, T1);
        assert_eq!(managers(&out), vec![("m".into(), "Update".into())]);
        assert!(owns(&out, "m", REPLICAS));
    }

    // A subresource write never takes them.
    let out = track_update(
        "Deployment",
        Some(&applied),
        &migrated,
        "m",
        Some("status"),
        T1,
    );
    assert_eq!(
        out["metadata"]["managedFields"],
        applied["metadata"]["managedFields"]
    );
}
