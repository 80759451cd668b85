//! kube-rs (the client `ferry-agent` and the controllers use) against `ferry-server`: typed CRUD,
//! paging, the watcher and the reflector, and watch resumption.

mod common;

use common::Server;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use std::time::Duration;

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"suite": "kube-rs"}},
        "data": {"k": name},
    }))
    .unwrap()
}

#[tokio::test]
async fn typed_crud_paging_and_conflicts() {
    let s = Server::start();
    let client = s.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..25 {
        api.create(&PostParams::default(), &cm(&format!("cm-{i:02}")))
            .await
            .unwrap();
    }
    // Paging: 10 at a time from one snapshot.
    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(10).labels("suite=kube-rs");
    loop {
        let page = api.list(&lp).await.unwrap();
        assert!(page
            .metadata
            .resource_version
            .as_deref()
            .is_some_and(|r| !r.is_empty()));
        names.extend(page.items.iter().filter_map(|c| c.metadata.name.clone()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(names.len(), 25);
    assert_eq!(names.first().map(String::as_str), Some("cm-00"));
    // Optimistic concurrency: a stale update is a 409.
    let cur = api.get("cm-00").await.unwrap();
    let mut a = cur.clone();
    a.data
        .get_or_insert_default()
        .insert("k".into(), "a".into());
    api.replace("cm-00", &PostParams::default(), &a)
        .await
        .unwrap();
    let mut b = cur;
    b.data
        .get_or_insert_default()
        .insert("k".into(), "b".into());
    let err = api
        .replace("cm-00", &PostParams::default(), &b)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 409),
        "{err:?}"
    );
    // Merge patch and server-side apply through kube-rs.
    api.patch(
        "cm-01",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"data": {"x": "1"}})),
    )
    .await
    .unwrap();
    let applied = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm-applied"}, "data": {"y": "2"}});
    api.patch(
        "cm-applied",
        &PatchParams::apply("kube-rs-test"),
        &Patch::Apply(applied),
    )
    .await
    .unwrap();
    assert_eq!(api.get("cm-applied").await.unwrap().data.unwrap()["y"], "2");
    api.delete("cm-applied", &DeleteParams::default())
        .await
        .unwrap();
    let err = api.get("cm-applied").await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 404),
        "{err:?}"
    );
}

#[tokio::test]
async fn reflector_follows_changes() {
    let s = Server::start();
    let client = s.client().await;
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let (reader, writer) = reflector::store::<Pod>();
    let stream = reflector::reflector(writer, watcher(api.clone(), watcher::Config::default()))
        .applied_objects()
        .boxed();
    let drain = tokio::spawn(async move {
        let _ = stream.try_for_each(|_| async { Ok(()) }).await;
    });
    tokio::time::timeout(Duration::from_secs(10), reader.wait_until_ready())
        .await
        .unwrap()
        .unwrap();
    for i in 0..3 {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("p{i}")},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
        }))
        .unwrap();
        api.create(&PostParams::default(), &pod).await.unwrap();
    }
    // Poll without blocking the runtime: the reflector runs on this same thread.
    let eventually = |want: usize| {
        let reader = reader.clone();
        async move {
            for _ in 0..500 {
                if reader.state().len() == want {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            false
        }
    };
    assert!(
        eventually(3).await,
        "reflector saw {} pods",
        reader.state().len()
    );
    api.delete("p1", &DeleteParams::default()).await.unwrap();
    assert!(eventually(2).await, "reflector saw the delete");
    drain.abort();
}
