//! A node credential (`system:node:<name>`) can take no more than its own: NodeRestriction on
//! its Node (status, allowed labels and the annotations the agent publishes, nothing else; no
//! other node), `spec.podCIDR(s)` immutable once node IPAM set them (admin included), the
//! `ferry.dev/mtu` bounds, and what a node may read (pods bound to it, the kinds the agent and
//! kubelet watch, the ConfigMaps its pods use; not other nodes' pods or their logs).

mod common;

use common::{client_for, Server};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use serde_json::{json, Value};
use std::time::Duration;

/// A raw request; returns (status, body or Status).
async fn raw(
    client: &kube::Client,
    method: &str,
    path: &str,
    ct: &str,
    body: &Value,
) -> (u16, Value) {
    let bytes = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(body).unwrap()
    };
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", ct)
        .body(bytes)
        .unwrap();
    match client.request_text(req).await {
        Ok(text) => (200, serde_json::from_str(&text).unwrap_or(Value::Null)),
        Err(kube::Error::Api(e)) => (e.code, json!({"reason": e.reason, "message": e.message})),
        Err(e) => panic!("{method} {path}: {e}"),
    }
}

const MERGE: &str = "application/merge-patch+json";

async fn get_node(admin: &kube::Client, name: &str) -> Value {
    let (code, v) = raw(
        admin,
        "GET",
        &format!("/api/v1/nodes/{name}"),
        "application/json",
        &Value::Null,
    )
    .await;
    assert_eq!(code, 200, "{v}");
    v
}

/// Patches node `name` as `who`; asserts `want` and, when refused, that nothing changed.
async fn patch_node(
    who: &kube::Client,
    admin: &kube::Client,
    name: &str,
    sub: &str,
    ct: &str,
    patch: Value,
    want: u16,
) -> Value {
    let before = get_node(admin, name).await;
    let (code, body) = raw(
        who,
        "PATCH",
        &format!("/api/v1/nodes/{name}{sub}"),
        ct,
        &patch,
    )
    .await;
    assert_eq!(code, want, "PATCH {name}{sub} {patch}: {body}");
    if want != 200 {
        let after = get_node(admin, name).await;
        assert_eq!(before, after, "a refused patch changed the node: {patch}");
    }
    body
}

async fn wait_pod_cidr(admin: &kube::Client, name: &str) -> String {
    for _ in 0..100 {
        let n = get_node(admin, name).await;
        if let Some(c) = n.pointer("/spec/podCIDR").and_then(Value::as_str) {
            return c.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("node IPAM gave {name} no podCIDR");
}

#[tokio::test]
async fn a_node_changes_only_its_status_allowed_labels_and_its_annotations() {
    let s = Server::start();
    let admin = client_for(&s.kubeconfig()).await;
    let n1 = client_for(&s.kubeconfig_for("n1", &s.node_token("n1"))).await;

    // Registration: restricted labels, spec and foreign annotations are refused; nothing stored.
    for (what, node) in [
        (
            "role label",
            json!({"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": ""}}}),
        ),
        (
            "restriction label",
            json!({"metadata": {"name": "n1", "labels": {"node-restriction.kubernetes.io/x": "y"}}}),
        ),
        (
            "podCIDR",
            json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.244.9.0/24"}}),
        ),
        (
            "taints",
            json!({"metadata": {"name": "n1"}, "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}}),
        ),
        (
            "annotation",
            json!({"metadata": {"name": "n1", "annotations": {"example.com/a": "b"}}}),
        ),
        (
            "owner",
            json!({"metadata": {"name": "n1", "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "x", "uid": "u"}]}}),
        ),
    ] {
        let (code, body) = raw(&n1, "POST", "/api/v1/nodes", "application/json", &node).await;
        assert_eq!(code, 403, "{what}: {body}");
        let (code, _) = raw(
            &admin,
            "GET",
            "/api/v1/nodes/n1",
            "application/json",
            &Value::Null,
        )
        .await;
        assert_eq!(code, 404, "{what}: the refused create stored the node");
    }
    // What the kubelet registers with.
    let ok: Node = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1", "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64"}}, "spec": {}}))
    .unwrap();
    Api::<Node>::all(n1.clone())
        .create(&PostParams::default(), &ok)
        .await
        .unwrap();
    let other: Node = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2"}}),
    )
    .unwrap();
    Api::<Node>::all(admin.clone())
        .create(&PostParams::default(), &other)
        .await
        .unwrap();
    let cidr = wait_pod_cidr(&admin, "n1").await;
    wait_pod_cidr(&admin, "n2").await;

    // Forbidden changes of its own Node: 403, the node unchanged.
    for patch in [
        json!({"spec": {"podCIDR": "10.244.200.0/24", "podCIDRs": ["10.244.200.0/24"]}}),
        json!({"spec": {"unschedulable": true}}),
        json!({"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}}),
        json!({"spec": {"providerID": "x://y"}}),
        json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}}),
        json!({"metadata": {"labels": {"node-restriction.kubernetes.io/pool": "a"}}}),
        json!({"metadata": {"labels": {"example.node-restriction.kubernetes.io/pool": "a"}}}),
        json!({"metadata": {"labels": {"foo.k8s.io/x": "y"}}}),
        json!({"metadata": {"labels": {"kubernetes.io/role": "master"}}}),
        json!({"metadata": {"annotations": {"flannel.alpha.coreos.com/public-ip-overwrite": "1.2.3.4"}}}),
        json!({"metadata": {"annotations": {"example.com/x": "y"}}}),
        json!({"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "n2", "uid": "u"}]}}),
        json!({"metadata": {"finalizers": ["example.com/keep"]}}),
    ] {
        patch_node(&n1, &admin, "n1", "", MERGE, patch, 403).await;
    }
    // The same through a JSON patch and a PUT.
    patch_node(
        &n1,
        &admin,
        "n1",
        "",
        "application/json-patch+json",
        json!([{"op": "replace", "path": "/spec/podCIDR", "value": "10.244.201.0/24"}]),
        403,
    )
    .await;
    let mut replaced = get_node(&admin, "n1").await;
    replaced["spec"]["unschedulable"] = true.into();
    let (code, body) = raw(
        &n1,
        "PUT",
        "/api/v1/nodes/n1",
        "application/json",
        &replaced,
    )
    .await;
    assert_eq!(code, 403, "PUT with a changed spec: {body}");
    // Another node's object and status: nothing.
    patch_node(
        &n1,
        &admin,
        "n2",
        "",
        MERGE,
        json!({"metadata": {"labels": {"a": "b"}}}),
        403,
    )
    .await;
    patch_node(
        &n1,
        &admin,
        "n2",
        "/status",
        MERGE,
        json!({"status": {"phase": "x"}}),
        403,
    )
    .await;

    // Allowed: its status, labels outside the restricted prefixes (kubelet labels included), the
    // annotations the agent publishes.
    for patch in [
        json!({"metadata": {"labels": {"example.com/pool": "a", "node.kubernetes.io/instance-type": "big",
            "topology.kubernetes.io/zone": "z1"}}}),
        json!({"metadata": {"labels": {"example.com/pool": null}}}),
        json!({"metadata": {"annotations": {"ferry.dev/mtu": "1400",
            "flannel.alpha.coreos.com/backend-type": "vxlan",
            "flannel.alpha.coreos.com/backend-data": "{\"VNI\":1,\"VtepMAC\":\"0a:00:00:00:00:01\"}",
            "flannel.alpha.coreos.com/public-ip": "10.99.0.1",
            "flannel.alpha.coreos.com/kube-subnet-manager": "true"}}}),
    ] {
        patch_node(&n1, &admin, "n1", "", MERGE, patch, 200).await;
    }
    let body = patch_node(
        &n1,
        &admin,
        "n1",
        "/status",
        "application/strategic-merge-patch+json",
        json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        200,
    )
    .await;
    assert_eq!(
        body.pointer("/status/conditions/0/status"),
        Some(&json!("True")),
        "{body}"
    );
    let now = get_node(&admin, "n1").await;
    assert_eq!(
        now["metadata"]["labels"]["node.kubernetes.io/instance-type"],
        "big"
    );
    assert_eq!(now["metadata"]["annotations"]["ferry.dev/mtu"], "1400");
    assert_eq!(now["spec"]["podCIDR"].as_str(), Some(cidr.as_str()));

    // podCIDR(s) are immutable for everyone once set; the admin may still change the rest.
    for patch in [
        json!({"spec": {"podCIDR": "10.244.200.0/24", "podCIDRs": ["10.244.200.0/24"]}}),
        json!({"spec": {"podCIDRs": [cidr, "10.244.201.0/24"]}}),
        json!({"spec": {"podCIDR": null, "podCIDRs": null}}),
    ] {
        let body = patch_node(&admin, &admin, "n1", "", MERGE, patch, 422).await;
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("field is immutable"),
            "{body}"
        );
    }
    patch_node(
        &admin,
        &admin,
        "n1",
        "",
        MERGE,
        json!({"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]},
        "metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}}),
        200,
    )
    .await;
    // ... and a node still may not touch them.
    patch_node(
        &n1,
        &admin,
        "n1",
        "",
        MERGE,
        json!({"spec": {"taints": null}}),
        403,
    )
    .await;
    patch_node(
        &n1,
        &admin,
        "n1",
        "",
        MERGE,
        json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": null}}}),
        403,
    )
    .await;
}

#[tokio::test]
async fn mtu_annotation_is_bounded_for_everyone() {
    let s = Server::start_with(&["--controllers", "false"]);
    let admin = client_for(&s.kubeconfig()).await;
    let n1 = client_for(&s.kubeconfig_for("n1", &s.node_token("n1"))).await;
    let (code, body) = raw(
        &n1,
        "POST",
        "/api/v1/nodes",
        "application/json",
        &json!({"metadata": {"name": "n1", "annotations": {"ferry.dev/mtu": "68"}}}),
    )
    .await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("ferry.dev/mtu"),
        "{body}"
    );
    let (code, body) = raw(
        &n1,
        "POST",
        "/api/v1/nodes",
        "application/json",
        &json!({"metadata": {"name": "n1", "annotations": {"ferry.dev/mtu": "1450"}}}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    for who in [&n1, &admin] {
        for bad in [
            "1279",
            "68",
            "65536",
            "-1",
            "abc",
            "",
            "1400.5",
            "99999999999999999999",
        ] {
            let body = patch_node(
                who,
                &admin,
                "n1",
                "",
                MERGE,
                json!({"metadata": {"annotations": {"ferry.dev/mtu": bad}}}),
                422,
            )
            .await;
            assert!(
                body["message"].as_str().unwrap().contains("ferry.dev/mtu"),
                "{bad}: {body}"
            );
        }
        for good in ["1280", "65535", "9000"] {
            patch_node(
                who,
                &admin,
                "n1",
                "",
                MERGE,
                json!({"metadata": {"annotations": {"ferry.dev/mtu": good}}}),
                200,
            )
            .await;
        }
    }
}

#[tokio::test]
async fn a_node_reads_only_what_it_needs() {
    let s = Server::start_with(&["--controllers", "false"]);
    let admin = client_for(&s.kubeconfig()).await;
    let n1 = client_for(&s.kubeconfig_for("n1", &s.node_token("n1"))).await;
    let create = |path: &'static str, body: Value| {
        let admin = admin.clone();
        async move {
            let (code, b) = raw(&admin, "POST", path, "application/json", &body).await;
            assert_eq!(code, 200, "{path}: {b}");
        }
    };
    let pod = |name: &str, node: &str, cm: &str| {
        json!({"metadata": {"name": name}, "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i",
            "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": cm, "key": "k"}}}]}]}})
    };
    create("/api/v1/namespaces/default/pods", pod("mine", "n1", "used")).await;
    create(
        "/api/v1/namespaces/default/pods",
        pod("theirs", "n2", "unused"),
    )
    .await;
    create(
        "/api/v1/namespaces/default/configmaps",
        json!({"metadata": {"name": "used"}, "data": {"k": "v"}}),
    )
    .await;
    create(
        "/api/v1/namespaces/default/configmaps",
        json!({"metadata": {"name": "unused"}, "data": {"k": "v"}}),
    )
    .await;
    create(
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
        json!({"metadata": {"name": "n2"}}),
    )
    .await;

    let get = |path: String| {
        let n1 = n1.clone();
        async move { raw(&n1, "GET", &path, "application/json", &Value::Null).await }
    };
    let allowed = [
        "/api/v1/namespaces/default/pods/mine",
        "/api/v1/namespaces/default/pods/mine/status",
        "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1",
        "/api/v1/namespaces/default/pods?fieldSelector=spec.nodeName%3D%3Dn1",
        "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1&watch=true&timeoutSeconds=1",
        "/api/v1/nodes",
        "/api/v1/nodes?watch=true&timeoutSeconds=1",
        "/api/v1/services",
        "/api/v1/endpoints",
        "/apis/discovery.k8s.io/v1/endpointslices",
        "/apis/discovery.k8s.io/v1/endpointslices?watch=true&timeoutSeconds=1",
        "/api/v1/namespaces/default/configmaps/used",
        // Every heartbeat Lease (the agents judge each other's L2 announcer Leases).
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n2",
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases?watch=true&timeoutSeconds=1",
    ];
    for path in allowed {
        let (code, body) = get(path.to_owned()).await;
        assert_eq!(code, 200, "{path}: {body}");
    }
    // Its own Lease: readable (404 while the kubelet has not created it, not 403).
    let (code, body) =
        get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1".into()).await;
    assert_eq!(code, 404, "{body}");
    let denied = [
        "/api/v1/namespaces/default/pods/theirs",
        "/api/v1/namespaces/default/pods/theirs/status",
        "/api/v1/namespaces/default/pods/theirs/log",
        "/api/v1/pods",
        "/api/v1/namespaces/default/pods",
        "/api/v1/pods?watch=true",
        "/api/v1/pods?fieldSelector=spec.nodeName%3Dn2",
        "/api/v1/pods?fieldSelector=spec.nodeName%21%3Dn1",
        "/api/v1/namespaces/default/configmaps/unused",
        "/api/v1/namespaces/default/configmaps",
        "/apis/coordination.k8s.io/v1/namespaces/default/leases",
        "/apis/apps/v1/deployments",
        "/api/v1/namespaces/default/events",
    ];
    for path in denied {
        let (code, body) = get(path.to_owned()).await;
        assert_eq!(code, 403, "{path}: {body}");
    }
    // It writes its own Leases (the kubelet's and the L2 announcer's), no other node's.
    let leases = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
    for (name, code) in [
        ("n1", 200),
        ("ferry-l2-n1", 200),
        ("ferry-l2-n2", 403),
        ("n3", 403),
    ] {
        let (got, body) = raw(
            &n1,
            "POST",
            leases,
            "application/json",
            &json!({"metadata": {"name": name}, "spec": {"holderIdentity": "n1"}}),
        )
        .await;
        assert_eq!(got, code, "create lease {name}: {body}");
    }
    let (got, body) = raw(
        &n1,
        "PATCH",
        &format!("{leases}/n2"),
        "application/merge-patch+json",
        &json!({"spec": {"holderIdentity": "n1"}}),
    )
    .await;
    assert_eq!(got, 403, "patch another node's lease: {body}");
}
