//! The SQLite backend: the conformance suite plus persistence, locking, compaction and watch lag.

use std::sync::Arc;
use std::time::Duration;

use ferry_store::sqlite::{SqliteError, SqliteOptions, SqliteStore};
use ferry_store::{EventKind, Store, StoreError, WatchItem};
use futures::StreamExt;

use crate::conformance::{next_event, Fixture, CASE_TIMEOUT};

/// Test options: no background compaction, fast progress.
pub(crate) fn test_options() -> SqliteOptions {
    SqliteOptions {
        compaction_interval: None,
        progress_interval: Duration::from_millis(200),
        ..SqliteOptions::default()
    }
}

pub(crate) async fn fixture(_test: &str) -> Option<Fixture> {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path().join("store.db"), test_options())
        .await
        .expect("open store");
    Some(Fixture {
        store: Arc::new(store),
        _keep: Box::new(dir),
    })
}

mod conformance {
    conformance_suite!(super::fixture);
}

fn kine_rows(path: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(path).expect("open db");
    conn.query_row("SELECT COUNT(*) FROM kine", [], |r| r.get(0))
        .expect("count rows")
}

/// The async API works on a current-thread runtime: nothing blocks the runtime thread.
#[tokio::test(flavor = "current_thread")]
async fn works_on_a_current_thread_runtime() {
    let fx = fixture("works_on_a_current_thread_runtime")
        .await
        .expect("fixture");
    tokio::time::timeout(
        CASE_TIMEOUT,
        crate::conformance::crud(Arc::clone(&fx.store)),
    )
    .await
    .expect("timed out");
    let mut w = fx.store.watch("/registry/", 0).await.expect("watch");
    assert!(matches!(w.next().await, Some(Ok(WatchItem::Event(_)))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_data_revisions_and_floor() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.db");
    let (a, b, floor) = {
        let s = SqliteStore::open(&path, test_options())
            .await
            .expect("open");
        let a = s
            .create("/registry/pods/ns/a", b"a".to_vec())
            .await
            .expect("create a");
        let b = s
            .create("/registry/pods/ns/b", b"b".to_vec())
            .await
            .expect("create b");
        let (del, _) = s
            .delete("/registry/pods/ns/b", None)
            .await
            .expect("delete b");
        s.compact(a.mod_rev).await.expect("compact");
        s.close().await;
        (a, b, del)
    };
    let s = SqliteStore::open(&path, test_options())
        .await
        .expect("reopen");
    assert_eq!(
        s.current_rev().await.expect("current"),
        floor,
        "revision survives reopen"
    );
    assert_eq!(
        s.compacted_rev().await.expect("floor"),
        a.mod_rev,
        "floor survives reopen"
    );
    assert_eq!(
        s.get("/registry/pods/ns/a").await.expect("get"),
        Some(a.clone())
    );
    assert_eq!(s.get("/registry/pods/ns/b").await.expect("get"), None);
    let c = s
        .create("/registry/pods/ns/b", b"b2".to_vec())
        .await
        .expect("re-create b");
    assert_eq!(c.mod_rev, floor + 1, "revisions continue without reuse");
    let old = s
        .list("/registry/pods/ns/", Some(b.mod_rev), None, None)
        .await
        .expect("old list");
    assert_eq!(old.kvs, vec![a, b]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_open_of_one_database_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.db");
    let _s = SqliteStore::open(&path, test_options())
        .await
        .expect("open");
    match SqliteStore::open(&path, test_options()).await {
        Err(SqliteError::InUse { .. }) => {}
        other => panic!("expected InUse, got {other:?}"),
    }
}

/// The background compaction keeps `retained_revisions` and physically deletes superseded rows
/// and tombstones, but never the current state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_compaction_keeps_retained_revisions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.db");
    let s = SqliteStore::open(
        &path,
        SqliteOptions {
            compaction_interval: Some(Duration::from_millis(100)),
            retained_revisions: 10,
            ..test_options()
        },
    )
    .await
    .expect("open");
    tokio::time::timeout(CASE_TIMEOUT, async {
        s.create("/registry/leases/l", b"0".to_vec())
            .await
            .expect("create");
        for i in 1..200 {
            s.update("/registry/leases/l", i.to_string().into_bytes(), None)
                .await
                .expect("update");
        }
        for i in 0..50 {
            let k = format!("/registry/pods/ns/p{i}");
            s.create(&k, b"x".to_vec()).await.expect("create pod");
            if i % 2 == 0 {
                s.delete(&k, None).await.expect("delete pod");
            }
        }
        let current = s.current_rev().await.expect("current");
        loop {
            if s.compacted_rev().await.expect("floor") == current - 10 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Let the batches after the floor update finish.
        // Live keys: the lease and the 25 pods never deleted. Besides their rows, only the 10
        // retained revisions (and a create whose delete is among them) may remain.
        let live: usize = 1 + 25;
        let bound = i64::try_from(live + 10 + 1).expect("small");
        let mut rows = kine_rows(&path);
        for _ in 0..200 {
            if rows <= bound {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            rows = kine_rows(&path);
        }
        assert!(rows <= bound, "{rows} rows left; at most {bound} expected");
        assert_eq!(
            s.count("/registry/").await.expect("count"),
            u64::try_from(live).expect("n")
        );
        let l = s
            .get("/registry/leases/l")
            .await
            .expect("get")
            .expect("present");
        assert_eq!(l.value, b"199".to_vec());
        assert_eq!(l.create_rev, 1);
        assert!(matches!(
            s.list("/registry/", Some(current - 11), None, None).await,
            Err(StoreError::Compacted { .. })
        ));
        let page = s
            .list("/registry/", Some(current - 10), None, None)
            .await
            .expect("at floor");
        assert!(page.kvs.iter().all(|kv| kv.mod_rev <= current - 10));
        assert!(page.kvs.iter().any(|kv| kv.key == "/registry/leases/l"));
        assert_eq!(
            s.list("/registry/", None, None, None)
                .await
                .expect("latest")
                .kvs
                .len(),
            live
        );
    })
    .await
    .expect("timed out");
}

/// A watcher that stops reading while events keep coming is told it lagged, then ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_watcher_gets_lagged_then_ends() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = SqliteStore::open(
        dir.path().join("store.db"),
        SqliteOptions {
            watch_buffer: 16,
            ..test_options()
        },
    )
    .await
    .expect("open");
    tokio::time::timeout(CASE_TIMEOUT, async {
        let first = s
            .create("/registry/pods/ns/first", b"x".to_vec())
            .await
            .expect("create");
        let mut w = s.watch("/registry/pods/", 0).await.expect("watch");
        assert_eq!(next_event(&mut w).await.kv, first);
        // Live now; fall behind by far more than the buffer.
        for i in 0..200 {
            s.create(&format!("/registry/pods/ns/p{i}"), b"x".to_vec())
                .await
                .expect("create");
        }
        let mut events = 0;
        loop {
            match w.next().await {
                Some(Ok(WatchItem::Event(_))) => events += 1,
                Some(Ok(WatchItem::Progress(_))) => {}
                Some(Err(StoreError::Lagged)) => break,
                other => panic!("expected Lagged, got {other:?}"),
            }
        }
        assert!(events < 200, "some events were dropped");
        assert!(w.next().await.is_none(), "the stream ends after Lagged");
    })
    .await
    .expect("timed out");
}

/// Broadcast overflow while the watcher is still catching up from SQL is harmless: SQL already
/// delivered those events, so the watch continues without gaps or duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflow_during_catch_up_is_not_a_lag() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = SqliteStore::open(
        dir.path().join("store.db"),
        SqliteOptions {
            watch_buffer: 16,
            ..test_options()
        },
    )
    .await
    .expect("open");
    tokio::time::timeout(CASE_TIMEOUT, async {
        // Subscribed here, but not polled until after 200 writes overflow its buffer.
        let mut w = s.watch("/registry/pods/", 0).await.expect("watch");
        let mut revs = Vec::new();
        for i in 0..200 {
            revs.push(
                s.create(&format!("/registry/pods/ns/p{i:03}"), b"x".to_vec())
                    .await
                    .expect("create")
                    .mod_rev,
            );
        }
        let mut got = Vec::new();
        for _ in 0..200 {
            got.push(next_event(&mut w).await.kv.mod_rev);
        }
        assert_eq!(got, revs);
        let live = s
            .create("/registry/pods/ns/live", b"x".to_vec())
            .await
            .expect("create");
        let ev = next_event(&mut w).await;
        assert_eq!((ev.kind, ev.kv), (EventKind::Put, live));
    })
    .await
    .expect("timed out");
}

/// Closing the store ends its watches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_store_ends_watches() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = SqliteStore::open(dir.path().join("store.db"), test_options())
        .await
        .expect("open");
    let mut w = s.watch("/registry/", 0).await.expect("watch");
    s.close().await;
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match w.next().await {
                None => return,
                Some(Ok(WatchItem::Progress(_))) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the watch did not end");
    // The file is released: it can be opened again right away.
    SqliteStore::open(dir.path().join("store.db"), test_options())
        .await
        .expect("reopen");
}
