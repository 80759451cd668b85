//! API semantics beyond what kubectl exercises directly, through kube-rs and raw requests:
//! watch from a compacted revision (in-stream 410), bookmarks and `sendInitialEvents`,
//! status/binding subresources, graceful pod deletion confirmed by the node, the node
//! authorization matrix on pods, request limits and malformed requests.

mod common;

use common::{client_for, Server};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{Api, DeleteParams, PostParams, WatchEvent, WatchParams};
use std::time::Duration;

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}),
    )
    .unwrap()
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(
        serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    )
    .unwrap()
}

/// A raw request; returns (status, body).
async fn raw(
    client: &kube::Client,
    method: &str,
    path: &str,
    ct: &str,
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", ct)
        .body(body)
        .unwrap();
    match client.request_text(req).await {
        Ok(text) => (
            200,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        ),
        Err(kube::Error::Api(e)) => (
            e.code,
            serde_json::json!({"reason": e.reason, "message": e.message}),
        ),
        Err(e) => panic!("{method} {path}: {e}"),
    }
}

#[tokio::test]
async fn watch_from_compacted_revision_gets_in_stream_410() {
    let s = Server::start_with(&["--compaction-interval", "1", "--retained-revisions", "5"]);
    let client = client_for(&s.kubeconfig()).await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    for i in 0..30 {
        api.create(&PostParams::default(), &cm(&format!("c{i}")))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // HTTP 200, then one ERROR event with code 410 (kube-rs relists only on this form).
    let mut stream = api
        .watch(&WatchParams::default().timeout(10), "2")
        .await
        .expect("watch starts with 200")
        .boxed();
    match tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
    {
        Some(Ok(WatchEvent::Error(e))) => {
            assert_eq!(e.code, 410, "{e:?}");
            assert_eq!(e.reason, "Expired");
        }
        other => panic!("expected an in-stream 410, got {other:?}"),
    }
}

#[tokio::test]
async fn bookmarks_and_initial_events() {
    let s = Server::start_with(&["--bookmark-interval", "1", "--progress-interval", "1"]);
    let client = client_for(&s.kubeconfig()).await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    api.create(&PostParams::default(), &cm("a")).await.unwrap();
    api.create(&PostParams::default(), &cm("b")).await.unwrap();
    // sendInitialEvents: ADDED for the current state, then the initial-events-end bookmark.
    let mut stream = api
        .watch(&WatchParams::streaming_lists().timeout(10), "0")
        .await
        .unwrap()
        .boxed();
    let mut added = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
        {
            Some(Ok(WatchEvent::Added(_))) => added += 1,
            Some(Ok(WatchEvent::Bookmark(b))) => {
                assert_eq!(
                    b.metadata
                        .annotations
                        .get("k8s.io/initial-events-end")
                        .map(String::as_str),
                    Some("true")
                );
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(added, 2);
    // An idle watch with bookmarks gets one within a few seconds, carrying a resourceVersion.
    let rv = api
        .get("b")
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(Duration::from_secs(6), stream.next())
        .await
        .unwrap()
    {
        Some(Ok(WatchEvent::Bookmark(b))) => assert!(!b.metadata.resource_version.is_empty()),
        other => panic!("expected a bookmark, got {other:?}"),
    }
}

#[tokio::test]
async fn status_binding_graceful_delete_and_node_authorization() {
    // API semantics only: no scheduler racing the test for its pods.
    let s = Server::start_with(&["--controllers", "false"]);
    let admin = client_for(&s.kubeconfig()).await;
    let n1 = client_for(&s.kubeconfig_for("n1", &s.node_token("n1"))).await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    let node_pods: Api<Pod> = Api::namespaced(n1.clone(), "default");
    let nodes: Api<Node> = Api::all(n1.clone());
    let node: Node = serde_json::from_value(
        serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}),
    )
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    pods.create(&PostParams::default(), &pod("bound"))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("other"))
        .await
        .unwrap();

    // Binding: sets nodeName and PodScheduled; a second binding is a 409.
    let binding = serde_json::json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "bound"}, "target": {"apiVersion": "v1", "kind": "Node", "name": "n1"}});
    let (code, _) = raw(
        &admin,
        "POST",
        "/api/v1/namespaces/default/pods/bound/binding",
        "application/json",
        serde_json::to_vec(&binding).unwrap(),
    )
    .await;
    assert_eq!(code, 200, "binding accepted (201 maps to Ok)");
    let p = pods.get("bound").await.unwrap();
    assert_eq!(p.spec.as_ref().unwrap().node_name.as_deref(), Some("n1"));
    assert!(p
        .status
        .unwrap()
        .conditions
        .unwrap()
        .iter()
        .any(|c| c.type_ == "PodScheduled" && c.status == "True"));
    let (code, _) = raw(
        &admin,
        "POST",
        "/api/v1/namespaces/default/pods/bound/binding",
        "application/json",
        serde_json::to_vec(&binding).unwrap(),
    )
    .await;
    assert_eq!(code, 409);

    // The node may write the status of its own pod only; a status write touches only status.
    let status_patch = serde_json::json!({"status": {"phase": "Running", "podIP": "10.244.1.5"}, "spec": {"nodeName": "evil"}});
    let (code, _) = raw(
        &n1,
        "PATCH",
        "/api/v1/namespaces/default/pods/bound/status",
        "application/merge-patch+json",
        serde_json::to_vec(&status_patch).unwrap(),
    )
    .await;
    assert_eq!(code, 200);
    let p = pods.get("bound").await.unwrap();
    assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Running"));
    assert_eq!(
        p.spec.as_ref().unwrap().node_name.as_deref(),
        Some("n1"),
        "status writes ignore spec"
    );
    let (code, _) = raw(
        &n1,
        "PATCH",
        "/api/v1/namespaces/default/pods/other/status",
        "application/merge-patch+json",
        serde_json::to_vec(&status_patch).unwrap(),
    )
    .await;
    assert_eq!(code, 403, "not bound to n1");
    let (code, _) = raw(
        &n1,
        "PATCH",
        "/api/v1/namespaces/default/pods/bound",
        "application/merge-patch+json",
        br#"{"metadata":{"labels":{"x":"y"}}}"#.to_vec(),
    )
    .await;
    assert_eq!(code, 403, "nodes do not edit pod specs");

    // A main-resource write ignores status.
    let mut p2 = pods.get("bound").await.unwrap();
    p2.status.as_mut().unwrap().phase = Some("Failed".into());
    p2.metadata.labels = Some([("edited".to_owned(), "yes".to_owned())].into());
    let p2 = pods
        .replace("bound", &PostParams::default(), &p2)
        .await
        .unwrap();
    assert_eq!(p2.status.unwrap().phase.as_deref(), Some("Running"));

    // Graceful deletion: a running bound pod gets a deletionTimestamp; the node confirms.
    pods.delete("bound", &DeleteParams::default())
        .await
        .unwrap();
    let p = pods.get("bound").await.unwrap();
    assert!(p.metadata.deletion_timestamp.is_some());
    assert_eq!(p.metadata.deletion_grace_period_seconds, Some(30));
    node_pods
        .delete(
            "bound",
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            },
        )
        .await
        .unwrap();
    assert!(pods.get_opt("bound").await.unwrap().is_none());
    let (code, _) = raw(
        &n1,
        "DELETE",
        "/api/v1/namespaces/default/pods/other",
        "application/json",
        Vec::new(),
    )
    .await;
    assert_eq!(code, 403);
}

#[tokio::test]
async fn malformed_requests_get_status_errors_and_store_nothing() {
    let s = Server::start_with(&["--max-request-bytes", "65536"]);
    let admin = client_for(&s.kubeconfig()).await;
    let cases: Vec<(&str, &str, &str, Vec<u8>, u16)> = vec![
        (
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            b"{not json".to_vec(),
            400,
        ),
        (
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"}}"#.to_vec(),
            400,
        ),
        (
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            vec![b' '; 70_000],
            413,
        ),
        (
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "text/plain",
            b"x".to_vec(),
            415,
        ),
        (
            "POST",
            "/api/v1/namespaces/default/configmaps?fieldValidation=Strict",
            "application/json",
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"bogus":1}"#.to_vec(),
            400,
        ),
        (
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"UPPER"}}"#.to_vec(),
            422,
        ),
        (
            "GET",
            "/api/v1/namespaces/default/configmaps?resourceVersion=abc",
            "application/json",
            Vec::new(),
            400,
        ),
        (
            "GET",
            "/api/v1/namespaces/default/configmaps?labelSelector=a%20in%20(b",
            "application/json",
            Vec::new(),
            400,
        ),
        (
            "GET",
            "/api/v1/namespaces/default/configmaps?continue=garbage",
            "application/json",
            Vec::new(),
            400,
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default/configmaps/none",
            "application/merge-patch+json",
            b"{}".to_vec(),
            404,
        ),
        (
            "GET",
            "/api/v1/widgets",
            "application/json",
            Vec::new(),
            404,
        ),
    ];
    for (method, path, ct, body, want) in cases {
        let (code, st) = raw(&admin, method, path, ct, body).await;
        assert_eq!(code, want, "{method} {path}: {st}");
    }
    // A stale resourceVersion on update is a 409; nothing above was stored.
    let api: Api<ConfigMap> = Api::namespaced(admin.clone(), "default");
    assert!(api
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .is_empty());
    let created = api.create(&PostParams::default(), &cm("v")).await.unwrap();
    let mut stale = created.clone();
    // A real change (an unchanged object is a no-op that keeps its resourceVersion, as upstream).
    let mut changed = created.clone();
    changed.metadata.labels = Some([("changed".to_owned(), "yes".to_owned())].into());
    api.replace("v", &PostParams::default(), &changed)
        .await
        .unwrap();
    stale.data = Some([("k".to_owned(), "v".to_owned())].into());
    let err = api
        .replace("v", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 409 && e.reason == "Conflict"),
        "{err:?}"
    );
}

#[test]
fn watches_per_client_are_limited() {
    let s = Server::start_with(&["--controllers", "false", "--max-watches-per-client", "2"]);
    let watch = || {
        std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(s.kubeconfig())
            .args(["get", "configmaps", "-w", "--request-timeout=30s"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map(ferry_tests::ChildGuard)
            .unwrap()
    };
    let w1 = watch();
    let _w2 = watch();
    std::thread::sleep(Duration::from_millis(1500));
    let third = s.kubectl(&["get", "configmaps", "-w", "--request-timeout=2s"]);
    let err = String::from_utf8_lossy(&third.stderr).into_owned();
    assert!(
        err.contains("TooManyRequests"),
        "a third concurrent watch is refused: {err}"
    );
    // A finished watch frees its slot.
    drop(w1);
    std::thread::sleep(Duration::from_millis(500));
    let again = s.kubectl(&["get", "configmaps", "-w", "--request-timeout=2s"]);
    let err = String::from_utf8_lossy(&again.stderr).into_owned();
    assert!(
        !err.contains("TooManyRequests"),
        "the slot of a closed watch is released: {err}"
    );
}
