//! The etcd backend: the conformance suite against a real etcd, plus replica and namespace
//! behaviour.

use std::sync::Arc;
use std::time::Duration;

use ferry_store::etcd::{EtcdOptions, EtcdStore};
use ferry_store::{EventKind, Store, StoreError};

use crate::conformance::{next_event, Fixture, CASE_TIMEOUT};
use crate::etcd_server::EtcdServer;

async fn start(test: &str) -> Option<EtcdServer> {
    let test = test.to_owned();
    tokio::task::spawn_blocking(move || EtcdServer::start(&test))
        .await
        .expect("join etcd start")
}

pub(crate) async fn fixture(test: &str) -> Option<Fixture> {
    let server = start(test).await?;
    let store = server.connect("").await;
    Some(Fixture {
        store: Arc::new(store),
        _keep: Box::new(server),
    })
}

mod conformance {
    conformance_suite!(super::fixture);
}

/// Two stores on one etcd (two ferry-server replicas): each sees the other's writes in list and
/// watch, and optimistic concurrency holds across them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_etcd() {
    let Some(server) = start("two_replicas_share_one_etcd").await else {
        return;
    };
    tokio::time::timeout(CASE_TIMEOUT, async {
        let a = server.connect("").await;
        let b = server.connect("").await;
        let r0 = b.current_rev().await.expect("current");
        let mut wb = b.watch("/registry/pods/", r0).await.expect("watch on b");

        let created = a
            .create("/registry/pods/ns/p", b"1".to_vec())
            .await
            .expect("create on a");
        let ev = next_event(&mut wb).await;
        assert_eq!((ev.kind, ev.kv.clone()), (EventKind::Put, created.clone()));
        let page = b
            .list("/registry/pods/", None, None, None)
            .await
            .expect("list on b");
        assert_eq!(page.kvs, vec![created.clone()]);
        assert_eq!(
            b.get("/registry/pods/ns/p").await.expect("get on b"),
            Some(created.clone())
        );

        // Both replicas try the same conditional update: one wins.
        let (ra, rb) = tokio::join!(
            a.update("/registry/pods/ns/p", b"a".to_vec(), Some(created.mod_rev)),
            b.update("/registry/pods/ns/p", b"b".to_vec(), Some(created.mod_rev)),
        );
        let winner = match (ra, rb) {
            (Ok(kv), Err(StoreError::Conflict { current_rev, .. }))
            | (Err(StoreError::Conflict { current_rev, .. }), Ok(kv)) => {
                assert_eq!(current_rev, kv.mod_rev);
                kv
            }
            other => panic!("expected one winner and one conflict, got {other:?}"),
        };
        assert_eq!(next_event(&mut wb).await.kv, winner);

        let (rev, _) = b
            .delete("/registry/pods/ns/p", None)
            .await
            .expect("delete on b");
        let mut wa = a
            .watch("/registry/pods/", winner.mod_rev)
            .await
            .expect("watch on a");
        let del = next_event(&mut wa).await;
        assert_eq!(
            (del.kind, del.kv.mod_rev, del.prev),
            (EventKind::Delete, rev, Some(winner))
        );
    })
    .await
    .expect("timed out");
}

/// Stores with different namespaces on one etcd do not see each other's keys; keys come back
/// without the namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_isolate_clusters() {
    let Some(server) = start("namespaces_isolate_clusters").await else {
        return;
    };
    tokio::time::timeout(CASE_TIMEOUT, async {
        let a = server.connect("/cluster-a").await;
        let b = server.connect("/cluster-b").await;
        let r0 = b.current_rev().await.expect("current");
        let mut wb = b.watch("", r0).await.expect("watch everything on b");
        let ka = a
            .create("/registry/pods/ns/p", b"a".to_vec())
            .await
            .expect("create on a");
        assert_eq!(ka.key, "/registry/pods/ns/p");
        let kb = b
            .create("/registry/pods/ns/p", b"b".to_vec())
            .await
            .expect("same key on b");
        assert_eq!(
            next_event(&mut wb).await.kv,
            kb,
            "b's watch skips a's write"
        );
        assert_eq!(
            a.list("", None, None, None).await.expect("list a").kvs,
            vec![ka]
        );
        assert_eq!(
            b.list("", None, None, None).await.expect("list b").kvs,
            vec![kb]
        );
        assert_eq!(a.count("/registry/").await.expect("count a"), 1);
    })
    .await
    .expect("timed out");
}

/// Nothing listening: connect fails with a backend error, within the connect timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_etcd_is_a_backend_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let options = EtcdOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(1),
        compaction_interval: None,
        ..EtcdOptions::default()
    };
    let res = tokio::time::timeout(
        Duration::from_secs(10),
        EtcdStore::connect_with(&[format!("127.0.0.1:{port}")], "", options),
    )
    .await
    .expect("connect must give up in time");
    let err = res.expect_err("nothing listens there");
    let store_err = StoreError::from(err);
    assert!(matches!(store_err, StoreError::Backend(_)), "{store_err:?}");
}

/// Compaction on a timer (the replica-side compactor).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timer_compaction_keeps_retained_revisions() {
    let Some(server) = start("timer_compaction_keeps_retained_revisions").await else {
        return;
    };
    tokio::time::timeout(CASE_TIMEOUT, async {
        let writer = server.connect("").await;
        writer
            .create("/registry/leases/l", b"0".to_vec())
            .await
            .expect("create");
        for i in 1..30 {
            writer
                .update("/registry/leases/l", i.to_string().into_bytes(), None)
                .await
                .expect("update");
        }
        let options = EtcdOptions {
            compaction_interval: Some(Duration::from_millis(200)),
            retained_revisions: 5,
            ..EtcdOptions::default()
        };
        let compacting =
            EtcdStore::connect_with(std::slice::from_ref(&server.endpoint), "", options)
                .await
                .expect("connect");
        let current = compacting.current_rev().await.expect("current");
        let mut floor = 0;
        for _ in 0..100 {
            floor = compacting.compacted_rev().await.expect("compacted_rev");
            if floor > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(floor, current - 5);
        assert!(matches!(
            compacting
                .list("/registry/", Some(floor - 1), None, None)
                .await,
            Err(StoreError::Compacted { .. })
        ));
        let latest = compacting
            .get("/registry/leases/l")
            .await
            .expect("get")
            .expect("present");
        assert_eq!(latest.value, b"29".to_vec());
    })
    .await
    .expect("timed out");
}

/// One of the endpoints is dead (a member of a three-member cluster killed): every request still
/// succeeds. The balanced channel keeps picking the dead endpoint (its connection fails at once,
/// so it looks least loaded); before requests that never left were made again, about half of
/// them failed with `tcp connect error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_costs_no_request() {
    let Some(server) = start("a_dead_endpoint_costs_no_request").await else {
        return;
    };
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("127.0.0.1:{}", l.local_addr().expect("addr").port())
    };
    tokio::time::timeout(CASE_TIMEOUT, async {
        let options = EtcdOptions {
            compaction_interval: None,
            ..EtcdOptions::default()
        };
        let store = EtcdStore::connect_with(&[dead.clone(), server.endpoint.clone()], "", options)
            .await
            .expect("connect with one live endpoint");
        let r0 = store.current_rev().await.expect("current");
        let mut w = store.watch("/registry/cm/", r0).await.expect("watch");
        for i in 0..40 {
            let key = format!("/registry/cm/ns/c{i}");
            let kv = store
                .create(&key, b"v".to_vec())
                .await
                .unwrap_or_else(|e| panic!("create {i}: {e}"));
            assert_eq!(store.get(&key).await.expect("get"), Some(kv.clone()));
            assert_eq!(next_event(&mut w).await.kv, kv);
        }
        let page = store
            .list("/registry/cm/", None, None, None)
            .await
            .expect("list");
        assert_eq!(page.kvs.len(), 40);
        assert_eq!(store.count("/registry/cm/").await.expect("count"), 40);
    })
    .await
    .expect("timed out");
}
