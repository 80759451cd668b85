//! The EndpointSlice controller against a real `ferry-server`: slices follow pod readiness,
//! deletion (terminating) and removal, resolve named target ports, and go away with the Service.
//! Pod status is written through the API the way a kubelet would (there is no kubelet here).

mod common;

use common::Server;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use std::time::{Duration, Instant};

async fn set_status(pods: &Api<Pod>, name: &str, ip: &str, ready: bool) {
    let st = serde_json::json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(st))
        .await
        .unwrap();
}

/// Endpoints of the service's slices as (ip, ready, terminating).
async fn endpoints(slices: &Api<EndpointSlice>) -> Vec<(String, bool, bool)> {
    let l = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .unwrap();
    let mut out: Vec<_> = l
        .items
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .map(|e| {
            let c = e.conditions.clone().unwrap_or_default();
            (
                e.addresses[0].clone(),
                c.ready.unwrap_or(false),
                c.terminating.unwrap_or(false),
            )
        })
        .collect();
    out.sort();
    out
}

async fn wait_for(slices: &Api<EndpointSlice>, want: &[(&str, bool, bool)]) -> Duration {
    let want: Vec<(String, bool, bool)> = want
        .iter()
        .map(|(a, r, t)| ((*a).to_owned(), *r, *t))
        .collect();
    let start = Instant::now();
    for _ in 0..400 {
        if endpoints(slices).await == want {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "slices never reached {want:?}; have {:?}",
        endpoints(slices).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_follow_pods_and_services() {
    let s = Server::start();
    let c = s.client().await;
    let node: Node = serde_json::from_value(
        serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
    )
    .unwrap();
    Api::<Node>::all(c.clone())
        .create(&PostParams::default(), &node)
        .await
        .unwrap();
    let svcs: Api<Service> = Api::namespaced(c.clone(), "default");
    let svc: Service = serde_json::from_value(serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})).unwrap();
    svcs.create(&PostParams::default(), &svc).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    for i in 1..=3 {
        let p: Pod = serde_json::from_value(serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("web-{i}"), "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"name": "http", "containerPort": 8080}]}]}})).unwrap();
        pods.create(&PostParams::default(), &p).await.unwrap();
        set_status(&pods, &format!("web-{i}"), &format!("10.244.0.{i}"), true).await;
    }
    let slices: Api<EndpointSlice> = Api::namespaced(c.clone(), "default");
    wait_for(
        &slices,
        &[
            ("10.244.0.1", true, false),
            ("10.244.0.2", true, false),
            ("10.244.0.3", true, false),
        ],
    )
    .await;
    let l = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .unwrap();
    assert_eq!(
        l.items[0].ports.as_ref().unwrap()[0].port,
        Some(8080),
        "named targetPort resolved"
    );
    assert_eq!(l.items[0].address_type, "IPv4");
    assert_eq!(l.items[0].endpoints[0].node_name.as_deref(), Some("n1"));

    // Readiness change.
    set_status(&pods, "web-2", "10.244.0.2", false).await;
    let took = wait_for(
        &slices,
        &[
            ("10.244.0.1", true, false),
            ("10.244.0.2", false, false),
            ("10.244.0.3", true, false),
        ],
    )
    .await;
    eprintln!("readiness change reached the slice in {took:?} (polled every 10 ms)");

    // Graceful deletion: terminating, then gone when the node confirms.
    pods.delete("web-3", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        &slices,
        &[
            ("10.244.0.1", true, false),
            ("10.244.0.2", false, false),
            ("10.244.0.3", false, true),
        ],
    )
    .await;
    pods.delete(
        "web-3",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        },
    )
    .await
    .unwrap();
    wait_for(
        &slices,
        &[("10.244.0.1", true, false), ("10.244.0.2", false, false)],
    )
    .await;

    // The service goes, its slices go.
    svcs.delete("web", &DeleteParams::default()).await.unwrap();
    wait_for(&slices, &[]).await;
}
