//! Shape-breaking bodies never crash a handler: for every served kind, create (with
//! `fieldValidation=Ignore` and the default), update and the four patch types (and `/status`,
//! `/scale` writes) are sent bodies made from a valid object by replacing each object or array
//! node with a value of the wrong type (`[]`, `{}`, `"x"`, `1`), plus whole bodies that are not
//! objects; and DELETE gets DeleteOptions of the wrong shape. Every answer must be a 4xx Status
//! (never a 500, never a dropped connection), nothing may be created or deleted, and the stored
//! objects must be unchanged.

mod common;

use common::Server;
use http_body_util::BodyExt as _;
use serde_json::{json, Value};

/// (collection path, valid object) for every kind ferry-server serves writes for.
fn kinds() -> Vec<(&'static str, Value)> {
    vec![
        (
            "/api/v1/namespaces",
            json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"fuzz-ns","labels":{"a":"b"}},
                "spec":{"finalizers":["kubernetes"]}}),
        ),
        (
            "/api/v1/nodes",
            json!({"apiVersion":"v1","kind":"Node","metadata":{"name":"fuzz-node","labels":{"a":"b"}},
                "spec":{"podCIDR":"10.250.0.0/24","podCIDRs":["10.250.0.0/24"],
                        "taints":[{"key":"k","effect":"NoSchedule"}]},
                "status":{"addresses":[{"type":"InternalIP","address":"10.0.0.9"}]}}),
        ),
        (
            "/api/v1/namespaces/default/pods",
            json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"fuzz-pod","labels":{"a":"b"}},
                "spec":{"nodeSelector":{"nowhere":"true"},"containers":[{"name":"c","image":"i","ports":[{"containerPort":80}],
                        "env":[{"name":"A","value":"1"}]}],
                        "tolerations":[{"key":"k","operator":"Exists"}]}}),
        ),
        (
            "/api/v1/namespaces/default/services",
            json!({"apiVersion":"v1","kind":"Service","metadata":{"name":"fuzz-svc"},
                "spec":{"selector":{"a":"b"},"ports":[{"name":"http","port":80,"targetPort":8080}]}}),
        ),
        (
            "/api/v1/namespaces/default/endpoints",
            json!({"apiVersion":"v1","kind":"Endpoints","metadata":{"name":"fuzz-ep"},
                "subsets":[{"addresses":[{"ip":"10.1.0.1"}],"ports":[{"port":80}]}]}),
        ),
        (
            "/api/v1/namespaces/default/events",
            json!({"apiVersion":"v1","kind":"Event","metadata":{"name":"fuzz-ev"},
                "involvedObject":{"kind":"Pod","name":"p","namespace":"default"},
                "reason":"R","message":"m","type":"Normal","count":1}),
        ),
        (
            "/api/v1/namespaces/default/configmaps",
            json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"fuzz-cm"},"data":{"a":"b"}}),
        ),
        (
            "/api/v1/namespaces/default/secrets",
            json!({"apiVersion":"v1","kind":"Secret","metadata":{"name":"fuzz-secret"},
                "data":{"a":"Yg=="},"type":"Opaque"}),
        ),
        (
            "/api/v1/namespaces/default/serviceaccounts",
            json!({"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"fuzz-sa"},
                "secrets":[{"name":"x"}]}),
        ),
        (
            "/apis/apps/v1/namespaces/default/deployments",
            json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"fuzz-dep"},
                "spec":{"replicas":0,"selector":{"matchLabels":{"a":"b"}},
                        "template":{"metadata":{"labels":{"a":"b"}},
                                    "spec":{"containers":[{"name":"c","image":"i"}]}}}}),
        ),
        (
            "/apis/apps/v1/namespaces/default/replicasets",
            json!({"apiVersion":"apps/v1","kind":"ReplicaSet","metadata":{"name":"fuzz-rs"},
                "spec":{"replicas":0,"selector":{"matchLabels":{"x":"y"}},
                        "template":{"metadata":{"labels":{"x":"y"}},
                                    "spec":{"containers":[{"name":"c","image":"i"}]}}}}),
        ),
        (
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
            json!({"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"fuzz-es"},
                "addressType":"IPv4","endpoints":[{"addresses":["10.1.0.1"],"conditions":{"ready":true}}],
                "ports":[{"name":"http","port":80,"protocol":"TCP"}]}),
        ),
        (
            "/apis/coordination.k8s.io/v1/namespaces/default/leases",
            json!({"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"fuzz-lease"},
                "spec":{"holderIdentity":"x","leaseDurationSeconds":15}}),
        ),
    ]
}

/// The JSON pointer of a node replaced by a wrong-typed value, and that value (`None`: the whole
/// body is wrong).
type Replaced = Option<(String, Value)>;

/// JSON pointers of every object and array node of `v` (the root is `""`).
fn container_nodes(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            out.push(at.clone());
            for (k, child) in m {
                container_nodes(child, format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            out.push(at.clone());
            for (i, child) in a.iter().enumerate() {
                container_nodes(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// The wrong-typed replacements for `node`.
fn wrong_values(node: &Value) -> Vec<Value> {
    match node {
        Value::Object(_) => vec![json!([]), json!("x"), json!(1)],
        Value::Array(_) => vec![json!({}), json!("x"), json!(1)],
        _ => Vec::new(),
    }
}

/// Sends one request: `Err` for a dropped connection or a cut body.
async fn send(
    client: &kube::Client,
    method: &str,
    uri: &str,
    ct: &str,
    body: Vec<u8>,
) -> Result<(u16, Value), String> {
    let req = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("Content-Type", ct)
        .body(kube::client::Body::from(body))
        .unwrap();
    let resp = client
        .send(req)
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    let code = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body cut: {e}"))?
        .to_bytes();
    Ok((code, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

/// [`send`] that must be answered.
async fn answered(client: &kube::Client, method: &str, uri: &str, body: &Value) -> (u16, Value) {
    let payload = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(body).unwrap()
    };
    send(client, method, uri, "application/json", payload)
        .await
        .unwrap_or_else(|e| panic!("{method} {uri}: {e}"))
}

/// What must not change when every hostile write failed: the object without its status and
/// the fields controllers maintain.
fn comparable(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in ["resourceVersion", "managedFields", "annotations"] {
            m.remove(k);
        }
    }
    v
}

#[tokio::test]
async fn hostile_bodies_get_status_answers_and_change_nothing() {
    let s = Server::start();
    let client = s.client().await;
    let mut sent = 0usize;
    let mut failures = Vec::new();
    for (collection, valid) in kinds() {
        let name = valid["metadata"]["name"].as_str().unwrap().to_owned();
        let kind = valid["kind"].as_str().unwrap().to_owned();
        let url = format!("{collection}/{name}");
        let (code, body) = answered(&client, "POST", collection, &valid).await;
        assert_eq!(code, 201, "creating the valid {kind}: {body}");
        let before = comparable(answered(&client, "GET", &url, &Value::Null).await.1);

        let mut bodies: Vec<(String, Value, Replaced)> = vec![
            ("root null".into(), json!(null), None),
            ("root []".into(), json!([]), None),
            ("root \"x\"".into(), json!("x"), None),
            ("root 1".into(), json!(1), None),
        ];
        let mut ptrs = Vec::new();
        container_nodes(&valid, String::new(), &mut ptrs);
        for ptr in ptrs {
            let node = valid.pointer(&ptr).unwrap();
            for wrong in wrong_values(node) {
                let mut b = valid.clone();
                if ptr.is_empty() {
                    b = wrong.clone();
                } else {
                    *b.pointer_mut(&ptr).unwrap() = wrong.clone();
                }
                bodies.push((format!("{ptr} = {wrong}"), b, Some((ptr.clone(), wrong))));
            }
        }
        let mut new_name = valid.clone();
        new_name["metadata"]["name"] = json!("fuzz-new");
        for (what, body, replaced) in bodies {
            // A create of a fresh name, so an accepted hostile body would show as an object.
            let create_body = match &replaced {
                Some((ptr, wrong)) if !ptr.is_empty() && !ptr.starts_with("/metadata") => {
                    let mut b = new_name.clone();
                    *b.pointer_mut(ptr).unwrap() = wrong.clone();
                    b
                }
                _ => body.clone(),
            };
            let json_patch = match &replaced {
                Some((ptr, wrong)) => json!([{"op": "replace", "path": ptr, "value": wrong}]),
                None => json!([{"op": "replace", "path": "", "value": body}]),
            };
            let raw = |v: &Value| serde_json::to_vec(v).unwrap();
            let requests = [
                (
                    "POST",
                    format!("{collection}?fieldValidation=Ignore"),
                    "application/json",
                    raw(&create_body),
                ),
                (
                    "POST",
                    collection.to_owned(),
                    "application/json",
                    raw(&create_body),
                ),
                (
                    "PUT",
                    format!("{url}?fieldValidation=Ignore"),
                    "application/json",
                    raw(&body),
                ),
                (
                    "PATCH",
                    url.clone(),
                    "application/json-patch+json",
                    raw(&json_patch),
                ),
                (
                    "PATCH",
                    url.clone(),
                    "application/merge-patch+json",
                    raw(&body),
                ),
                (
                    "PATCH",
                    url.clone(),
                    "application/strategic-merge-patch+json",
                    raw(&body),
                ),
                (
                    "PATCH",
                    format!("{url}?fieldManager=fuzz&force=true&fieldValidation=Ignore"),
                    "application/apply-patch+yaml",
                    raw(&body),
                ),
            ];
            let mut requests = requests.to_vec();
            // The status subresource takes the whole object too.
            if ["Node", "Pod", "Service", "Deployment", "ReplicaSet"].contains(&kind.as_str()) {
                let status = format!("{url}/status");
                requests.extend([
                    ("PUT", status.clone(), "application/json", raw(&body)),
                    (
                        "PATCH",
                        status.clone(),
                        "application/json-patch+json",
                        raw(&json_patch),
                    ),
                    (
                        "PATCH",
                        status.clone(),
                        "application/merge-patch+json",
                        raw(&body),
                    ),
                    (
                        "PATCH",
                        status,
                        "application/strategic-merge-patch+json",
                        raw(&body),
                    ),
                ]);
            }
            for (method, uri, ct, payload) in requests {
                // A merge patch of `null` is legal (it deletes everything deletable): skip it.
                if what == "root null" && ct.contains("merge-patch") {
                    continue;
                }
                sent += 1;
                let (code, status) = match send(&client, method, &uri, ct, payload).await {
                    Ok(answer) => answer,
                    Err(e) => {
                        failures.push(format!("{kind} {what}: {method} {uri} ({ct}): {e}"));
                        continue;
                    }
                };
                let is_status = status["kind"] == "Status" && status["code"] == json!(code);
                if ![400, 404, 409, 422].contains(&code) || !is_status {
                    failures.push(format!(
                        "{kind} {what}: {method} {uri} ({ct}) -> {code} {status}"
                    ));
                }
            }
        }
        let after = comparable(answered(&client, "GET", &url, &Value::Null).await.1);
        if before != after {
            failures.push(format!(
                "{kind}: the stored object changed:\n{before}\n{after}"
            ));
        }
        let (code, _) = answered(
            &client,
            "GET",
            &format!("{collection}/fuzz-new"),
            &Value::Null,
        )
        .await;
        if code != 404 {
            failures.push(format!("{kind}: a hostile create stored an object"));
        }
    }
    // The scale subresource, with hostile Scales.
    for (workload, name) in [("deployments", "fuzz-dep"), ("replicasets", "fuzz-rs")] {
        let url = format!("/apis/apps/v1/namespaces/default/{workload}/{name}");
        let before = comparable(answered(&client, "GET", &url, &Value::Null).await.1);
        let scale = json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": name, "namespace": "default"}, "spec": {"replicas": 0}});
        let mut ptrs = Vec::new();
        container_nodes(&scale, String::new(), &mut ptrs);
        for ptr in ptrs {
            for wrong in wrong_values(scale.pointer(&ptr).unwrap()) {
                let mut b = scale.clone();
                if ptr.is_empty() {
                    b = wrong.clone();
                } else {
                    *b.pointer_mut(&ptr).unwrap() = wrong.clone();
                }
                let jp = json!([{"op": "replace", "path": ptr, "value": wrong}]);
                for (method, ct, payload) in [
                    ("PUT", "application/json", &b),
                    ("PATCH", "application/json-patch+json", &jp),
                    ("PATCH", "application/merge-patch+json", &b),
                    ("PATCH", "application/strategic-merge-patch+json", &b),
                ] {
                    sent += 1;
                    let uri = format!("{url}/scale");
                    let payload = serde_json::to_vec(payload).unwrap();
                    match send(&client, method, &uri, ct, payload).await {
                        Ok((400 | 422, status)) if status["kind"] == "Status" => {}
                        other => failures
                            .push(format!("{method} {uri} ({ct}) {ptr} = {wrong}: {other:?}")),
                    }
                }
            }
        }
        let after = comparable(answered(&client, "GET", &url, &Value::Null).await.1);
        if before != after {
            failures.push(format!("{url}: changed through /scale"));
        }
    }
    // DeleteOptions of the wrong shape are refused, not ignored (a precondition the server could
    // not read must not turn into an unconditional delete).
    let cm = "/api/v1/namespaces/default/configmaps/fuzz-cm";
    for body in [
        json!([]),
        json!("x"),
        json!(1),
        json!({"preconditions": []}),
        json!({"preconditions": {"uid": 1}}),
        json!({"preconditions": {"resourceVersion": ["1"]}}),
        json!({"propagationPolicy": []}),
        json!({"gracePeriodSeconds": "x"}),
    ] {
        sent += 1;
        match send(
            &client,
            "DELETE",
            cm,
            "application/json",
            serde_json::to_vec(&body).unwrap(),
        )
        .await
        {
            Ok((400, status)) if status["kind"] == "Status" => {}
            other => failures.push(format!("DELETE {cm} with {body}: {other:?}")),
        }
    }
    if answered(&client, "GET", cm, &Value::Null).await.0 != 200 {
        failures.push("a DELETE with hostile DeleteOptions deleted the object".into());
    }
    assert!(
        failures.is_empty(),
        "{} of {sent} hostile requests were not answered with a 4xx Status:\n{}\nserver log:\n{}",
        failures.len(),
        failures.join("\n"),
        s.log()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        sent > 1000,
        "only {sent} requests: the generator lost its kinds"
    );
    println!("{sent} hostile requests, each answered with a 4xx Status");
    assert!(
        !s.log().contains("panicked"),
        "a handler panicked:\n{}",
        s.log()
    );
}
