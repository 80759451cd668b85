//! Kubernetes protobuf against a real `ferry-server` and the real `kubectl`: the generator commands
//! (which send protobuf) store what the JSON path stores, every served kind round-trips through
//! protobuf against its JSON form (and through `k8s-pb`, an independent implementation), bad
//! bodies are a 400 naming what failed with nothing stored, watches stream protobuf frames (read by
//! `kubectl events -w`), Secrets and ServiceAccounts behave as on kube-apiserver, and an unserved
//! kind fails with kubectl's mapping error and ferry-server's warning rather than "failed to
//! download openapi".

mod common;

use common::Server;
use controlplane_lite::protobuf::{self, MAGIC, MEDIA_TYPE};
use controlplane_lite::resources::RESOURCES;
use http_body_util::BodyExt;
use prost::Message;
use serde_json::{json, Value};

/// One object of every served kind, using the JSON shapes protobuf must carry: IntOrString,
/// Quantity, Time and MicroTime, bytes, maps, int64, and pointer fields set to zero/false.
fn fixture(kind: &str) -> Value {
    let meta = |name: &str| {
        json!({"name": name, "namespace": "default", "labels": {"app": "pb"},
               "annotations": {"note": "x"}, "creationTimestamp": "2026-01-02T03:04:05Z"})
    };
    let pod_spec = json!({
        "containers": [{
            "name": "web", "image": "nginx:1.27", "command": ["sh", "-c", "sleep 1"],
            "ports": [{"containerPort": 8080, "protocol": "TCP", "name": "http"}],
            "env": [{"name": "A", "value": "b"},
                    {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "pbsecret", "key": "pw"}}}],
            "envFrom": [{"configMapRef": {"name": "pbcm"}, "prefix": "CM_"}],
            "volumeMounts": [{"name": "cfg", "mountPath": "/cfg", "readOnly": true}],
            "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},
            "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 5},
        }],
        "volumes": [{"name": "cfg", "configMap": {"name": "pbcm", "defaultMode": 420}},
                    {"name": "scratch", "emptyDir": {}}],
        "terminationGracePeriodSeconds": 0,
        "automountServiceAccountToken": false,
        "restartPolicy": "Always",
    });
    match kind {
        "Namespace" => json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "pbns", "labels": {"team": "a"}}}),
        "Node" => json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "pbnode", "labels": {"kubernetes.io/hostname": "pbnode"}},
            "spec": {"podCIDR": "10.244.9.0/24", "podCIDRs": ["10.244.9.0/24"], "unschedulable": true},
            "status": {"capacity": {"cpu": "2", "pods": "110"},
                       "addresses": [{"type": "InternalIP", "address": "10.0.0.9"}]}}),
        "Pod" => json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta("pbpod"),
            "spec": pod_spec}),
        "Service" => json!({"apiVersion": "v1", "kind": "Service", "metadata": meta("pbsvc"),
            "spec": {"type": "NodePort", "selector": {"app": "pb"},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                               {"name": "alt", "port": 81, "targetPort": 8081, "protocol": "TCP"}]}}),
        "Endpoints" => json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": meta("pbep"),
            "subsets": [{"addresses": [{"ip": "10.244.0.5", "nodeName": "n1"}],
                         "ports": [{"port": 8080, "protocol": "TCP", "name": "http"}]}]}),
        "Event" => json!({"apiVersion": "v1", "kind": "Event", "metadata": meta("pbev"),
            "involvedObject": {"kind": "Pod", "name": "pbpod", "namespace": "default"},
            "reason": "Tested", "message": "hello", "type": "Normal", "count": 3,
            "firstTimestamp": "2026-01-02T03:04:05Z",
            "eventTime": "2026-01-02T03:04:05.123456Z",
            "source": {"component": "test"}}),
        "ConfigMap" => json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("pbcm"),
            "data": {"a": "b", "empty": ""}, "binaryData": {"bin": "AAEC/w=="}}),
        "Secret" => json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta("pbsecret"),
            "type": "Opaque", "data": {"pw": "aHVudGVyMg==", "zero": ""}, "immutable": false}),
        "ServiceAccount" => json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": meta("pbsa"), "automountServiceAccountToken": false,
            "imagePullSecrets": [{"name": "regcred"}]}),
        "Deployment" => json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": meta("pbdeploy"),
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "pb"}},
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
                     "template": {"metadata": {"labels": {"app": "pb"}}, "spec": pod_spec}}}),
        "ReplicaSet" => json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": meta("pbrs"),
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "pb"}},
                     "template": {"metadata": {"labels": {"app": "pb"}}, "spec": pod_spec}}}),
        "EndpointSlice" => json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": meta("pbslice"), "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.0.5"], "conditions": {"ready": false},
                           "nodeName": "n1"}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}),
        "Lease" => json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": meta("pblease"),
            "spec": {"holderIdentity": "pbnode", "leaseDurationSeconds": 40,
                     "renewTime": "2026-01-02T03:04:05.000001Z"}}),
        other => panic!("no protobuf fixture for served kind {other}: add one"),
    }
}

/// Decodes `raw` with k8s-pb's generated type `T` and encodes it again: a second protobuf
/// implementation reading what ferry-server wrote.
fn through<T: Message + Default>(raw: &[u8]) -> Vec<u8> {
    T::decode(raw)
        .unwrap_or_else(|e| panic!("k8s-pb cannot decode {}: {e}", std::any::type_name::<T>()))
        .encode_to_vec()
}

fn via_k8s_pb(kind: &str, raw: &[u8]) -> Vec<u8> {
    use k8s_pb::api::discovery::v1 as disc;
    use k8s_pb::api::{apps::v1 as apps, coordination::v1 as coord, core::v1 as core};
    match kind {
        "Namespace" => through::<core::Namespace>(raw),
        "Node" => through::<core::Node>(raw),
        "Pod" => through::<core::Pod>(raw),
        "Service" => through::<core::Service>(raw),
        "Endpoints" => through::<core::Endpoints>(raw),
        "Event" => through::<core::Event>(raw),
        "ConfigMap" => through::<core::ConfigMap>(raw),
        "Secret" => through::<core::Secret>(raw),
        "ServiceAccount" => through::<core::ServiceAccount>(raw),
        "Deployment" => through::<apps::Deployment>(raw),
        "ReplicaSet" => through::<apps::ReplicaSet>(raw),
        "EndpointSlice" => through::<disc::EndpointSlice>(raw),
        "Lease" => through::<coord::Lease>(raw),
        other => panic!("no k8s-pb type listed for served kind {other}: add one"),
    }
}

#[test]
fn every_served_kind_round_trips_and_k8s_pb_reads_it() {
    use k8s_pb::apimachinery::pkg::runtime::Unknown;
    for r in RESOURCES {
        let obj = fixture(r.kind);
        let body = protobuf::encode(&obj).unwrap_or_else(|e| panic!("{}: {e}", r.kind));
        assert!(body.starts_with(MAGIC), "{}", r.kind);
        assert_eq!(
            protobuf::decode(&body).unwrap(),
            obj,
            "{} round trip",
            r.kind
        );
        // k8s-pb decodes the envelope and the object, and what it encodes decodes to the same JSON.
        let mut env = Unknown::decode(&body[4..]).unwrap();
        let tm = env.type_meta.clone().unwrap();
        assert_eq!(tm.kind.as_deref(), Some(r.kind));
        assert_eq!(tm.api_version, Some(r.api_version()));
        env.raw = Some(via_k8s_pb(r.kind, env.raw.as_deref().unwrap_or_default()));
        let mut again = MAGIC.to_vec();
        again.extend(env.encode_to_vec());
        assert_eq!(
            protobuf::decode(&again).unwrap(),
            obj,
            "{} via k8s-pb",
            r.kind
        );
    }
    // Pointer zeros survive as values k8s-pb sees (Go would see them too).
    let body = protobuf::encode(&fixture("Deployment")).unwrap();
    let env = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(&body[4..]).unwrap();
    let d = k8s_pb::api::apps::v1::Deployment::decode(env.raw.as_deref().unwrap()).unwrap();
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(0));
    let pod = spec.template.unwrap().spec.unwrap();
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(pod.termination_grace_period_seconds, Some(0));
    let strategy = spec.strategy.unwrap().rolling_update.unwrap();
    assert_eq!(strategy.max_surge.unwrap().str_val.as_deref(), Some("25%"));
    assert_eq!(strategy.max_unavailable.unwrap().int_val, Some(0));
}

/// A raw request with the admin identity: (status, content type, body).
async fn send(
    client: &kube::Client,
    method: &str,
    uri: &str,
    content_type: &str,
    accept: &str,
    body: Vec<u8>,
) -> (u16, String, Vec<u8>) {
    let req = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("Content-Type", content_type)
        .header("Accept", accept)
        .body(kube::client::Body::from(body))
        .unwrap();
    let resp = client.send(req).await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, ct, bytes)
}

/// Whether `canon` is `full` with only zero values (`0`, `""`, `false`, `null`, `[]`, `{}`) left
/// out: what Go's `omitempty` drops.
fn same_but_go_zeros(full: &Value, canon: &Value) -> bool {
    let zero = |v: &Value| match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    };
    match (full, canon) {
        (Value::Object(a), Value::Object(b)) => {
            b.keys().all(|k| a.contains_key(k))
                && a.iter().all(|(k, v)| match b.get(k) {
                    Some(w) => same_but_go_zeros(v, w),
                    None => zero(v),
                })
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(v, w)| same_but_go_zeros(v, w))
        }
        _ => full == canon,
    }
}

#[test]
fn go_zero_comparison() {
    let full = json!({"a": 1, "s": {"replicas": 0, "x": ""}, "l": [{"b": false, "c": 2}]});
    assert!(same_but_go_zeros(
        &full,
        &json!({"a": 1, "s": {}, "l": [{"c": 2}]})
    ));
    assert!(same_but_go_zeros(&full, &full));
    assert!(
        !same_but_go_zeros(&full, &json!({"s": {}, "l": [{"c": 2}]})),
        "a is not zero"
    );
    assert!(!same_but_go_zeros(
        &full,
        &json!({"a": 1, "s": {}, "l": [{"c": 3}]})
    ));
    assert!(!same_but_go_zeros(
        &full,
        &json!({"a": 1, "s": {}, "l": [{"c": 2}], "z": 1})
    ));
}

const PB_FIRST: &str = "application/vnd.kubernetes.protobuf,application/json";

fn collection(r: &controlplane_lite::resources::Resource) -> String {
    if r.namespaced {
        format!("{}/namespaces/default/{}", r.prefix(), r.plural)
    } else {
        format!("{}/{}", r.prefix(), r.plural)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_served_kind_over_http_in_protobuf() {
    let s = Server::start();
    let client = s.client().await;
    for r in RESOURCES {
        let obj = fixture(r.kind);
        let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
        let (code, ct, body) = send(
            &client,
            "POST",
            &collection(r),
            MEDIA_TYPE,
            PB_FIRST,
            protobuf::encode(&obj).unwrap(),
        )
        .await;
        assert_eq!(code, 201, "{}: {}", r.kind, String::from_utf8_lossy(&body));
        assert_eq!(ct, MEDIA_TYPE, "{}", r.kind);
        let created = protobuf::decode(&body).unwrap();
        let url = format!("{}/{name}", collection(r));
        // The object read as JSON and as protobuf is the same (retried if a controller wrote
        // in between).
        let mut same = false;
        for _ in 0..10 {
            let (c1, _, j1) = send(&client, "GET", &url, "", "application/json", vec![]).await;
            let (c2, ct2, p) = send(&client, "GET", &url, "", PB_FIRST, vec![]).await;
            let (_, _, j2) = send(&client, "GET", &url, "", "application/json", vec![]).await;
            assert_eq!((c1, c2, ct2.as_str()), (200, 200, MEDIA_TYPE), "{}", r.kind);
            let (j1, j2): (Value, Value) = (
                serde_json::from_slice(&j1).unwrap(),
                serde_json::from_slice(&j2).unwrap(),
            );
            if j1 != j2 {
                continue;
            }
            // The protobuf answer is the JSON object, less the zero values Go's JSON omits
            // (non-pointer fields; our controllers write e.g. `status.replicas: 0`).
            let from_pb = protobuf::decode(&p).unwrap();
            assert!(
                same_but_go_zeros(&j1, &from_pb),
                "{} GET:\n json {j1}\n protobuf {from_pb}",
                r.kind
            );
            assert_eq!(
                created["metadata"]["uid"], j1["metadata"]["uid"],
                "{}",
                r.kind
            );
            for field in ["spec", "data", "subsets", "endpoints", "involvedObject"] {
                if field == "spec" && matches!(r.kind, "Pod" | "Service" | "Namespace" | "Node") {
                    continue; // defaulted or allocated on create; compared via GET above
                }
                assert_eq!(created.get(field), j1.get(field), "{} {field}", r.kind);
            }
            same = true;
            break;
        }
        assert!(same, "{} kept changing", r.kind);
        // Lists in protobuf.
        let (code, ct, body) = send(&client, "GET", &collection(r), "", PB_FIRST, vec![]).await;
        assert_eq!((code, ct.as_str()), (200, MEDIA_TYPE), "{} list", r.kind);
        let list = protobuf::decode(&body).unwrap();
        assert_eq!(list["kind"], r.list_kind(), "{}", r.kind);
        assert!(
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["metadata"]["name"] == name.as_str()),
            "{} list: {list}",
            r.kind
        );
    }
    // Status errors in protobuf too.
    let (code, ct, body) = send(
        &client,
        "GET",
        "/api/v1/namespaces/default/configmaps/missing",
        "",
        PB_FIRST,
        vec![],
    )
    .await;
    assert_eq!((code, ct.as_str()), (404, MEDIA_TYPE));
    let status = protobuf::decode(&body).unwrap();
    assert_eq!(
        (
            status["kind"].as_str(),
            status["reason"].as_str(),
            status["code"].as_i64()
        ),
        (Some("Status"), Some("NotFound"), Some(404))
    );
    // DeleteOptions in protobuf (typed clients' deletes).
    let cm_url = "/api/v1/namespaces/default/configmaps/pbcm";
    let bad = b"k8s\0\x0a".to_vec();
    let (code, _, body) = send(&client, "DELETE", cm_url, MEDIA_TYPE, PB_FIRST, bad).await;
    let status = protobuf::decode(&body).unwrap();
    assert_eq!(code, 400, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid DeleteOptions: the protobuf body does not decode"),
        "{status}"
    );
    let opts = json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
        "propagationPolicy": "Background"});
    let (code, _, _) = send(
        &client,
        "DELETE",
        cm_url,
        MEDIA_TYPE,
        PB_FIRST,
        protobuf::encode(&opts).unwrap(),
    )
    .await;
    assert_eq!(code, 200);
    let (code, _, _) = send(&client, "GET", cm_url, "", PB_FIRST, vec![]).await;
    assert_eq!(code, 404);
    // Clients that list JSON first get JSON.
    let (_, ct, _) = send(
        &client,
        "GET",
        "/api/v1/namespaces/default/secrets/pbsecret",
        "",
        "application/json,application/vnd.kubernetes.protobuf",
        vec![],
    )
    .await;
    assert_eq!(ct, "application/json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_protobuf_bodies_are_400_and_nothing_is_stored() {
    let s = Server::start();
    let client = s.client().await;
    let url = "/api/v1/namespaces/default/configmaps";
    let good = protobuf::encode(&fixture("ConfigMap")).unwrap();
    let mut wrong_magic = good.clone();
    wrong_magic[2] = b'z';
    let mut garbage_envelope = MAGIC.to_vec();
    garbage_envelope.extend([0x0a, 0x7f, 0x0a, 0x02]);
    let unknown_kind = protobuf::encode(&json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "pbunknown"}}))
    .unwrap();
    let unknown_kind = String::from_utf8(unknown_kind)
        .unwrap()
        .replace("ConfigMap", "ConfigMaq")
        .into_bytes();
    let mut bad_object = MAGIC.to_vec();
    {
        use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
        bad_object.extend(
            Unknown {
                type_meta: Some(TypeMeta {
                    api_version: Some("v1".into()),
                    kind: Some("ConfigMap".into()),
                }),
                // Field 1 (metadata) as a varint: a wrong wire type.
                raw: Some(vec![0x08, 0x01]),
                content_encoding: None,
                content_type: None,
            }
            .encode_to_vec(),
        );
    }
    let secret = protobuf::encode(&fixture("Secret")).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            good[..good.len() - 5].to_vec(),
            "the body is truncated",
        ),
        ("too short", b"k8".to_vec(), "truncated"),
        ("wrong magic", wrong_magic, "magic"),
        (
            "JSON sent as protobuf",
            br#"{"kind":"ConfigMap"}"#.to_vec(),
            "magic",
        ),
        ("garbage envelope", garbage_envelope, "envelope"),
        ("unknown kind", unknown_kind, "unknown kind"),
        ("wrong wire type", bad_object, "ConfigMap"),
        ("empty envelope", MAGIC.to_vec(), "typeMeta"),
        ("kind for another path", secret, "do not match"),
    ];
    for (what, body, needle) in cases {
        let (code, _, resp) =
            send(&client, "POST", url, MEDIA_TYPE, "application/json", body).await;
        let status: Value = serde_json::from_slice(&resp).unwrap();
        assert_eq!(code, 400, "{what}: {status}");
        assert_eq!(status["reason"], "BadRequest", "{what}");
        let msg = status["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{what}: {msg}");
    }
    let (code, _, resp) = send(&client, "GET", url, "", "application/json", vec![]).await;
    assert_eq!(code, 200);
    let list: Value = serde_json::from_slice(&resp).unwrap();
    assert_eq!(list["items"], json!([]), "nothing stored");
    // The good body still works afterwards.
    let (code, _, _) = send(&client, "POST", url, MEDIA_TYPE, PB_FIRST, good).await;
    assert_eq!(code, 201);
}

/// The stored object without what differs between two creates (identity, times, allocations).
fn comparable(mut v: Value) -> Value {
    if let Some(m) = v["metadata"].as_object_mut() {
        for k in [
            "uid",
            "creationTimestamp",
            "resourceVersion",
            "managedFields",
        ] {
            m.remove(k);
        }
        // Written by the deployment controller, whenever it gets to each.
        if let Some(a) = m.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove("deployment.kubernetes.io/revision");
            if a.is_empty() {
                m.remove("annotations");
            }
        }
    }
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    if let Some(spec) = v["spec"].as_object_mut() {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports {
                if let Some(p) = p.as_object_mut() {
                    p.remove("nodePort");
                }
            }
        }
    }
    v
}

#[test]
fn generators_send_protobuf_and_store_what_the_json_path_stores() {
    let s = Server::start();
    s.ok(&[
        "create",
        "deployment",
        "pbsrc",
        "--image=nginx",
        "--port=8080",
    ]);
    // (kind for `get`, whether kubectl 1.33 sends it as protobuf, the command; NAME is replaced).
    // `expose` builds its Service from the (JSON) object it read and sends JSON.
    let generators: &[(&str, bool, &str)] = &[
        ("deployment", true, "create deployment NAME --image=nginx:1.27 --replicas=0 --port=8080"),
        ("configmap", true, "create configmap NAME --from-literal=a=b --from-literal=empty="),
        ("namespace", true, "create namespace NAME"),
        ("service", true, "create service clusterip NAME --tcp=80:8080"),
        ("service", true, "create service nodeport NAME --tcp=81:8081"),
        ("service", false, "expose deployment pbsrc --port=80 --name=NAME"),
        ("secret", true, "create secret generic NAME --from-literal=pw=hunter2"),
        ("secret", true, "create secret docker-registry NAME --docker-server=r.example --docker-username=u --docker-password=p"),
        ("serviceaccount", true, "create serviceaccount NAME"),
    ];
    for (i, (kind, sends_protobuf, command)) in generators.iter().enumerate() {
        let args: Vec<&str> = command.split(' ').collect();
        let (pb, js) = (format!("pbgen{i}"), format!("jsgen{i}"));
        let with =
            |name: &str| -> Vec<String> { args.iter().map(|a| a.replace("NAME", name)).collect() };
        // The generator itself: protobuf in, protobuf out.
        let mut pb_args = with(&pb);
        pb_args.push("-v=8".into());
        let refs: Vec<&str> = pb_args.iter().map(String::as_str).collect();
        let out = s.kubectl(&refs);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{refs:?}: {stderr}");
        assert!(
            !sends_protobuf
                || stderr
                    .matches("Content-Type: application/vnd.kubernetes.protobuf")
                    .count()
                    >= 2,
            "{refs:?} did not use protobuf both ways: {stderr}"
        );
        // The same object through the JSON path.
        let mut dry = with(&js);
        dry.extend(["--dry-run=client".into(), "-o".into(), "json".into()]);
        let refs: Vec<&str> = dry.iter().map(String::as_str).collect();
        let manifest = s.ok(&refs);
        s.ok_stdin(&["create", "-f", "-"], &manifest);
        let get = |name: &str| -> Value {
            serde_json::from_str(&s.ok(&["get", kind, name, "-o", "json"])).unwrap()
        };
        let via_pb = comparable(get(&pb));
        let via_json = comparable(get(&js));
        let via_json: Value =
            serde_json::from_str(&via_json.to_string().replace(&js, &pb)).unwrap();
        assert_eq!(via_pb, via_json, "{command}: protobuf vs JSON path");
    }
    // The zero replicas a generator sends are kept (a pointer in Go), not defaulted to 1.
    let d: Value =
        serde_json::from_str(&s.ok(&["get", "deployment", "pbgen0", "-o", "json"])).unwrap();
    assert_eq!(d["spec"]["replicas"], 0);
}

#[test]
fn secrets_and_service_accounts_like_kube_apiserver() {
    let s = Server::start();
    s.ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=user=admin",
        "--from-literal=pw=hunter22",
    ]);
    let yaml = s.ok(&["get", "secret", "creds", "-o", "yaml"]);
    for line in [
        "pw: aHVudGVyMjI=",
        "user: YWRtaW4=",
        "type: Opaque",
        "kind: Secret",
    ] {
        assert!(yaml.contains(line), "{yaml}");
    }
    let described = s.ok(&["describe", "secret", "creds"]);
    assert!(described.contains("Type:  Opaque"), "{described}");
    assert!(
        described.contains("pw:    8 bytes") && described.contains("user:  5 bytes"),
        "{described}"
    );
    assert!(
        !described.contains("hunter22") && !described.contains("aHVudGVy"),
        "{described}"
    );
    let table = s.ok(&["get", "secrets"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "TYPE", "DATA", "AGE"], "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("creds") && l.contains("Opaque") && l.contains(" 2 ")),
        "{table}"
    );

    // stringData is merged into data and not stored; an immutable Secret stays as it is.
    let manifest = "apiVersion: v1\nkind: Secret\nmetadata: {name: sd}\ndata: {a: eA==, b: eA==}\nstringData: {b: new, c: plain}\nimmutable: true\n";
    s.ok_stdin(&["create", "-f", "-"], manifest);
    let sd: Value = serde_json::from_str(&s.ok(&["get", "secret", "sd", "-o", "json"])).unwrap();
    assert_eq!(
        sd["data"],
        json!({"a": "eA==", "b": "bmV3", "c": "cGxhaW4="})
    );
    assert!(sd.get("stringData").is_none(), "{sd}");
    assert_eq!(sd["type"], "Opaque");
    let err = s.fails(
        &["patch", "secret", "sd", "-p", r#"{"data":{"a":"eQ=="}}"#],
        None,
    );
    assert!(
        err.contains("field is immutable when `immutable` is set"),
        "{err}"
    );
    let err = s.fails(
        &[
            "patch",
            "secret",
            "creds",
            "--type=merge",
            "-p",
            r#"{"type":"other"}"#,
        ],
        None,
    );
    assert!(err.contains("type") && err.contains("immutable"), "{err}");
    // Typed Secrets need their keys; data must be base64.
    let tls = "apiVersion: v1\nkind: Secret\nmetadata: {name: t}\ntype: kubernetes.io/tls\nstringData: {tls.crt: x}\n";
    let err = s.fails(&["create", "-f", "-"], Some(tls));
    assert!(err.contains("tls.key"), "{err}");
    let bad = "apiVersion: v1\nkind: Secret\nmetadata: {name: b}\ndata: {a: '%%%'}\n";
    let err = s.fails(&["create", "-f", "-", "--validate=false"], Some(bad));
    // A 400 when the body is decoded strictly (as upstream), else validation's 422.
    assert!(
        err.contains("cannot be handled as a Secret") || err.contains("must be base64-encoded"),
        "{err}"
    );
    for name in ["t", "b"] {
        assert!(s
            .fails(&["get", "secret", name], None)
            .contains("not found"));
    }

    // ServiceAccounts.
    assert!(s
        .ok(&["create", "serviceaccount", "robot"])
        .contains("serviceaccount/robot created"));
    let sa = s.ok(&["get", "sa"]);
    assert!(sa.lines().next().unwrap().contains("SECRETS"), "{sa}");
    assert!(sa.contains("robot"), "{sa}");
    let described = s.ok(&["describe", "serviceaccount", "robot"]);
    assert!(
        described.contains("Name:") && described.contains("robot"),
        "{described}"
    );
    // Every namespace has its `default` ServiceAccount, new ones too.
    assert!(sa.lines().any(|l| l.starts_with("default ")), "{sa}");
    s.ok(&["create", "namespace", "team"]);
    let team = s.ok(&["get", "sa", "-n", "team", "--no-headers"]);
    assert!(team.starts_with("default "), "{team}");
    s.ok(&["delete", "sa", "robot"]);
    s.ok(&["delete", "secret", "creds"]);
}

#[test]
fn unserved_kinds_fail_at_mapping_and_lists_create() {
    let s = Server::start();
    let rc = "apiVersion: v1\nkind: ReplicationController\nmetadata: {name: rc}\nspec:\n  replicas: 1\n  selector: {app: x}\n  template:\n    metadata: {labels: {app: x}}\n    spec: {containers: [{name: c, image: nginx}]}\n";
    let err = s.fails(&["create", "-f", "-"], Some(rc));
    assert!(
        err.contains(r#"no matches for kind "ReplicationController" in version "v1""#),
        "{err}"
    );
    assert!(!err.contains("failed to download openapi"), "{err}");
    assert!(
        err.contains("a kind not served by ferry-server (it serves Namespace, Node, Pod"),
        "{err}"
    );
    let sts = "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: st}\nspec: {}\n";
    let err = s.fails(&["apply", "-f", "-"], Some(sts));
    assert!(
        err.contains(r#"no matches for kind "StatefulSet""#),
        "{err}"
    );
    // `kind: List` manifests validate (kubectl reads OpenAPI v2 for them) and create.
    let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: l1}\n  data: {a: b}\n";
    assert!(s
        .ok_stdin(&["create", "-f", "-"], list)
        .contains("configmap/l1 created"));
    // Served kinds are still validated on the server (strict field validation).
    let typo = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: l2}\ndataa: {a: b}\n";
    let err = s.fails(&["create", "-f", "-"], Some(typo));
    assert!(err.contains(r#"unknown field "dataa""#), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_stream_protobuf_frames() {
    use k8s_pb::apimachinery::pkg::apis::meta::v1::WatchEvent;
    let s = Server::start();
    let client = s.client().await;
    let url = "/api/v1/namespaces/default/configmaps";
    let (code, _, _) = send(
        &client,
        "POST",
        url,
        MEDIA_TYPE,
        PB_FIRST,
        protobuf::encode(&fixture("ConfigMap")).unwrap(),
    )
    .await;
    assert_eq!(code, 201);
    let (_, _, json) = send(
        &client,
        "GET",
        &format!("{url}/pbcm"),
        "",
        "application/json",
        vec![],
    )
    .await;
    let stored: Value = serde_json::from_slice(&json).unwrap();
    // From resourceVersion 0: the current state as ADDED, then the stream ends at the timeout.
    let (code, ct, body) = send(
        &client,
        "GET",
        &format!("{url}?watch=true&resourceVersion=0&timeoutSeconds=1"),
        "",
        PB_FIRST,
        vec![],
    )
    .await;
    assert_eq!(
        (code, ct.as_str()),
        (200, "application/vnd.kubernetes.protobuf;stream=watch")
    );
    let mut rest = &body[..];
    let mut events = Vec::new();
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        // k8s-pb reads the frame: an independent decoder of the WatchEvent.
        let ev = WatchEvent::decode(&rest[4..4 + len]).unwrap();
        let raw = ev.object.unwrap().raw.unwrap();
        events.push((ev.r#type.unwrap(), protobuf::decode(&raw).unwrap()));
        rest = &rest[4 + len..];
    }
    let added: Vec<&Value> = events
        .iter()
        .filter(|(t, _)| t == "ADDED")
        .map(|(_, o)| o)
        .collect();
    assert_eq!(added, vec![&stored], "{events:?}");

    // kubectl's typed watches ask for protobuf first: `kubectl events -w` reads the frames.
    let mut cmd = std::process::Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(s.kubeconfig())
        .args(["events", "-w", "-v=8"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut watcher = ferry_tests::ChildGuard(cmd.spawn().unwrap());
    std::thread::sleep(std::time::Duration::from_secs(2));
    let event = "apiVersion: v1\nkind: Event\nmetadata: {name: e2}\ninvolvedObject: {kind: Pod, name: web, namespace: default}\nreason: Later\nmessage: the second event\ntype: Warning\n";
    s.ok_stdin(&["create", "-f", "-"], event);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let _ = watcher.0.kill();
    let _ = watcher.0.wait();
    let read = |p: Option<&mut dyn std::io::Read>| {
        let mut buf = Vec::new();
        if let Some(p) = p {
            p.read_to_end(&mut buf).unwrap();
        }
        String::from_utf8_lossy(&buf).into_owned()
    };
    let stdout = read(
        watcher
            .0
            .stdout
            .as_mut()
            .map(|p| p as &mut dyn std::io::Read),
    );
    let stderr = read(
        watcher
            .0
            .stderr
            .as_mut()
            .map(|p| p as &mut dyn std::io::Read),
    );
    assert!(stdout.contains("the second event"), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("Content-Type: application/vnd.kubernetes.protobuf;stream=watch"),
        "{stderr}"
    );
}
