//! The conformance suite: every case runs against a fresh store of each backend
//! (`conformance_suite!` expands one `#[tokio::test]` per case).

use std::any::Any;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ferry_store::{Event, EventKind, Kv, Rev, Store, StoreError, WatchItem, WatchStream};
use futures::StreamExt;

/// A store plus whatever must outlive it (temp dir, etcd process). Fields drop in order: the
/// store first.
pub(crate) struct Fixture {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) _keep: Box<dyn Any + Send>,
}

/// Upper bound of every case.
pub(crate) const CASE_TIMEOUT: Duration = Duration::from_secs(90);

/// Waits for one watch item.
const ITEM_TIMEOUT: Duration = Duration::from_secs(15);

/// Expands to one test per conformance case, each with a fresh fixture from `$fixture`
/// (`async fn(test_name) -> Option<Fixture>`; `None` = backend unavailable, visibly skipped).
macro_rules! conformance_suite {
    ($fixture:path) => {
        conformance_suite!(@cases $fixture;
            crud,
            create_existing_is_already_exists,
            conflicts_and_not_found,
            list_at_old_revision_sees_old_state,
            paging_reads_one_snapshot,
            count_live_keys,
            watch_replays_history_then_live,
            watch_prefix_isolation,
            delete_events_carry_prev,
            compaction,
            future_revision,
            concurrent_conflicting_writes_one_wins,
            watch_started_during_writes_has_no_gaps,
            progress_on_idle_watch,
            special_characters_in_keys,
        );
    };
    (@cases $fixture:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(fx) = $fixture(stringify!($case)).await else { return };
                tokio::time::timeout(
                    $crate::conformance::CASE_TIMEOUT,
                    $crate::conformance::$case(std::sync::Arc::clone(&fx.store)),
                )
                .await
                .expect(concat!(stringify!($case), " timed out"));
            }
        )*
    };
}

fn v(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// The next event of a watch, skipping progress; panics on error, end or timeout.
pub(crate) async fn next_event(w: &mut WatchStream) -> Event {
    loop {
        match tokio::time::timeout(ITEM_TIMEOUT, w.next()).await {
            Ok(Some(Ok(WatchItem::Event(ev)))) => return ev,
            Ok(Some(Ok(WatchItem::Progress(_)))) => continue,
            Ok(Some(Err(e))) => panic!("watch failed: {e}"),
            Ok(None) => panic!("watch ended"),
            Err(_) => panic!("no watch event within {ITEM_TIMEOUT:?}"),
        }
    }
}

/// Asserts that no event arrives for `quiet` (progress items are fine).
async fn assert_no_event(w: &mut WatchStream, quiet: Duration) {
    let end = tokio::time::Instant::now() + quiet;
    loop {
        match tokio::time::timeout_at(end, w.next()).await {
            Err(_) => return,
            Ok(Some(Ok(WatchItem::Progress(_)))) => continue,
            Ok(other) => panic!("unexpected watch item: {other:?}"),
        }
    }
}

fn keys(kvs: &[Kv]) -> Vec<&str> {
    kvs.iter().map(|kv| kv.key.as_str()).collect()
}

pub(crate) async fn crud(s: Arc<dyn Store>) {
    let key = "/registry/pods/default/a";
    let binary = vec![0u8, 159, 146, 150, b'\n', 0xff];
    let a = s.create(key, binary.clone()).await.expect("create");
    assert!(a.mod_rev > 0);
    assert_eq!(a.create_rev, a.mod_rev);
    assert_eq!(a.value, binary);
    assert_eq!(s.current_rev().await.expect("current"), a.mod_rev);
    assert_eq!(s.get(key).await.expect("get"), Some(a.clone()));

    let b = s
        .update(key, v("2"), Some(a.mod_rev))
        .await
        .expect("update");
    assert!(b.mod_rev > a.mod_rev);
    assert_eq!(b.create_rev, a.create_rev);
    let c = s
        .update(key, v("3"), None)
        .await
        .expect("unconditional update");
    assert!(c.mod_rev > b.mod_rev);
    assert_eq!(s.get(key).await.expect("get"), Some(c.clone()));

    let (rev, last) = s.delete(key, Some(c.mod_rev)).await.expect("delete");
    assert!(rev > c.mod_rev);
    assert_eq!(last, c);
    assert_eq!(s.get(key).await.expect("get"), None);
    assert_eq!(s.current_rev().await.expect("current"), rev);

    let d = s.create(key, v("4")).await.expect("re-create");
    assert!(d.mod_rev > rev);
    assert_eq!(
        d.create_rev, d.mod_rev,
        "a new incarnation gets a new create_rev"
    );
    let (_, last) = s.delete(key, None).await.expect("unconditional delete");
    assert_eq!(last, d);
}

pub(crate) async fn create_existing_is_already_exists(s: Arc<dyn Store>) {
    let key = "/registry/namespaces/x";
    let a = s.create(key, v("1")).await.expect("create");
    match s.create(key, v("2")).await {
        Err(StoreError::AlreadyExists { key: k }) => assert_eq!(k, key),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(
        s.current_rev().await.expect("current"),
        a.mod_rev,
        "a failed write uses no revision"
    );
    assert_eq!(s.get(key).await.expect("get"), Some(a));
}

pub(crate) async fn conflicts_and_not_found(s: Arc<dyn Store>) {
    let key = "/registry/configmaps/ns/c";
    assert!(matches!(
        s.update(key, v("x"), None).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.delete(key, None).await,
        Err(StoreError::NotFound { .. })
    ));

    let a = s.create(key, v("1")).await.expect("create");
    let b = s
        .update(key, v("2"), Some(a.mod_rev))
        .await
        .expect("update");
    match s.update(key, v("3"), Some(a.mod_rev)).await {
        Err(StoreError::Conflict {
            key: k,
            expected,
            current_rev,
        }) => {
            assert_eq!(
                (k.as_str(), expected, current_rev),
                (key, a.mod_rev, b.mod_rev)
            );
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    match s.delete(key, Some(a.mod_rev)).await {
        Err(StoreError::Conflict { current_rev, .. }) => assert_eq!(current_rev, b.mod_rev),
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(
        s.get(key).await.expect("get"),
        Some(b.clone()),
        "failed writes change nothing"
    );

    s.delete(key, Some(b.mod_rev)).await.expect("delete");
    match s.update(key, v("4"), Some(b.mod_rev)).await {
        Err(StoreError::Conflict { current_rev, .. }) => assert_eq!(current_rev, 0),
        other => panic!("expected Conflict with current_rev 0, got {other:?}"),
    }
    match s.delete(key, Some(b.mod_rev)).await {
        Err(StoreError::Conflict { current_rev, .. }) => assert_eq!(current_rev, 0),
        other => panic!("expected Conflict with current_rev 0, got {other:?}"),
    }
    assert!(matches!(
        s.update(key, v("5"), None).await,
        Err(StoreError::NotFound { .. })
    ));
    // expected = 0 must not create a missing key.
    assert!(matches!(
        s.update(key, v("6"), Some(0)).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(s.get(key).await.expect("get"), None);
}

pub(crate) async fn list_at_old_revision_sees_old_state(s: Arc<dyn Store>) {
    let p = "/registry/pods/ns/";
    let a1 = s
        .create("/registry/pods/ns/a", v("a1"))
        .await
        .expect("create a");
    let b1 = s
        .create("/registry/pods/ns/b", v("b1"))
        .await
        .expect("create b");
    let r1 = s.current_rev().await.expect("current");
    let a2 = s
        .update("/registry/pods/ns/a", v("a2"), None)
        .await
        .expect("update a");
    s.delete("/registry/pods/ns/b", None)
        .await
        .expect("delete b");
    let c1 = s
        .create("/registry/pods/ns/c", v("c1"))
        .await
        .expect("create c");

    let old = s.list(p, Some(r1), None, None).await.expect("list at r1");
    assert_eq!(old.rev, r1);
    assert_eq!(old.kvs, vec![a1.clone(), b1.clone()]);
    assert!(!old.more);
    let at_a1 = s
        .list(p, Some(a1.mod_rev), None, None)
        .await
        .expect("list at a1");
    assert_eq!(at_a1.kvs, vec![a1]);
    let now = s.list(p, None, None, None).await.expect("list latest");
    assert_eq!(now.rev, s.current_rev().await.expect("current"));
    assert_eq!(now.kvs, vec![a2, c1]);
}

pub(crate) async fn paging_reads_one_snapshot(s: Arc<dyn Store>) {
    let p = "/registry/configmaps/ns/";
    for i in 0..10 {
        s.create(&format!("{p}k{i:02}"), v(&format!("v{i}")))
            .await
            .expect("create");
    }
    s.create("/registry/configmaps/other/k", v("x"))
        .await
        .expect("create outside");
    let full = s.list(p, None, None, None).await.expect("full list");
    assert_eq!(full.kvs.len(), 10);

    let page1 = s.list(p, None, None, Some(4)).await.expect("page 1");
    assert_eq!(
        keys(&page1.kvs),
        ["k00", "k01", "k02", "k03"].map(|k| format!("{p}{k}"))
    );
    assert!(page1.more);
    let snap = page1.rev;

    // Changes after the snapshot must not show in later pages.
    s.delete(&format!("{p}k05"), None)
        .await
        .expect("delete k05");
    s.create(&format!("{p}k045"), v("new"))
        .await
        .expect("create k045");
    s.update(&format!("{p}k08"), v("changed"), None)
        .await
        .expect("update k08");

    let mut all = page1.kvs.clone();
    let mut last = page1.kvs.last().map(|kv| kv.key.clone());
    let mut pages = 1;
    loop {
        let page = s
            .list(p, Some(snap), last.as_deref(), Some(4))
            .await
            .expect("next page");
        assert_eq!(page.rev, snap);
        pages += 1;
        all.extend(page.kvs.iter().cloned());
        last = page.kvs.last().map(|kv| kv.key.clone());
        if !page.more {
            break;
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(all, full.kvs, "pages concatenate to the snapshot");

    // start_after before the prefix starts at the prefix; after its end yields nothing.
    let from_before = s
        .list(p, Some(snap), Some("/a"), Some(2))
        .await
        .expect("start before");
    assert_eq!(
        keys(&from_before.kvs),
        [format!("{p}k00"), format!("{p}k01")]
    );
    let past = s
        .list(p, Some(snap), Some("/z"), None)
        .await
        .expect("start after");
    assert!(past.kvs.is_empty() && !past.more);
    // An exact-size page: no more.
    let exact = s
        .list(p, Some(snap), Some(&format!("{p}k05")), Some(4))
        .await
        .expect("tail");
    assert_eq!(exact.kvs.len(), 4);
    assert!(!exact.more);
}

pub(crate) async fn count_live_keys(s: Arc<dyn Store>) {
    let p = "/registry/secrets/ns/";
    assert_eq!(s.count(p).await.expect("count empty"), 0);
    for k in ["a", "b", "c"] {
        s.create(&format!("{p}{k}"), v(k)).await.expect("create");
    }
    s.create("/registry/secrets/ns2/a", v("x"))
        .await
        .expect("create outside");
    s.update(&format!("{p}a"), v("a2"), None)
        .await
        .expect("update");
    s.delete(&format!("{p}b"), None).await.expect("delete");
    assert_eq!(s.count(p).await.expect("count"), 2);
    assert_eq!(
        s.count("/registry/secrets/").await.expect("count parent"),
        3
    );
}

pub(crate) async fn watch_replays_history_then_live(s: Arc<dyn Store>) {
    let p = "/registry/pods/w/";
    let r0 = s.current_rev().await.expect("current");
    let a1 = s
        .create("/registry/pods/w/a", v("1"))
        .await
        .expect("create");
    let a2 = s
        .update("/registry/pods/w/a", v("2"), None)
        .await
        .expect("update");
    let (rd, _) = s.delete("/registry/pods/w/a", None).await.expect("delete");
    let b1 = s
        .create("/registry/pods/w/b", v("b"))
        .await
        .expect("create b");

    let mut w = s.watch(p, r0).await.expect("watch");
    let evs = [
        next_event(&mut w).await,
        next_event(&mut w).await,
        next_event(&mut w).await,
        next_event(&mut w).await,
    ];
    let got: Vec<(EventKind, &str, Rev)> = evs
        .iter()
        .map(|e| (e.kind, e.kv.key.as_str(), e.kv.mod_rev))
        .collect();
    assert_eq!(
        got,
        vec![
            (EventKind::Put, "/registry/pods/w/a", a1.mod_rev),
            (EventKind::Put, "/registry/pods/w/a", a2.mod_rev),
            (EventKind::Delete, "/registry/pods/w/a", rd),
            (EventKind::Put, "/registry/pods/w/b", b1.mod_rev),
        ]
    );
    assert_eq!(evs[0].prev, None, "a create has no prev");
    assert_eq!(evs[1].prev, Some(a1.clone()));

    let c1 = s
        .create("/registry/pods/w/c", v("c"))
        .await
        .expect("create c");
    let live = next_event(&mut w).await;
    assert_eq!(
        (live.kind, live.kv.clone(), live.prev),
        (EventKind::Put, c1.clone(), None)
    );

    // From the middle of history: only later changes.
    let mut w2 = s.watch(p, a2.mod_rev).await.expect("watch from a2");
    assert_eq!(next_event(&mut w2).await.kv.mod_rev, rd);
    assert_eq!(next_event(&mut w2).await.kv.mod_rev, b1.mod_rev);
    assert_eq!(next_event(&mut w2).await.kv.mod_rev, c1.mod_rev);

    // From the current revision: nothing until the next write.
    let mut w3 = s.watch(p, c1.mod_rev).await.expect("watch from now");
    assert_no_event(&mut w3, Duration::from_millis(300)).await;
    let d1 = s
        .create("/registry/pods/w/d", v("d"))
        .await
        .expect("create d");
    assert_eq!(next_event(&mut w3).await.kv, d1);
    assert_eq!(next_event(&mut w).await.kv, d1);
}

pub(crate) async fn watch_prefix_isolation(s: Arc<dyn Store>) {
    let r0 = s.current_rev().await.expect("current");
    let mut w = s.watch("/registry/pods/", r0).await.expect("watch");
    s.create("/registry/podsx/ns/a", v("x"))
        .await
        .expect("create podsx");
    s.create("/registry/pod/a", v("x"))
        .await
        .expect("create pod");
    s.create("/registry/pods", v("x"))
        .await
        .expect("create pods without slash");
    s.create("/registry/services/ns/a", v("x"))
        .await
        .expect("create service");
    let mine = s
        .create("/registry/pods/ns/a", v("mine"))
        .await
        .expect("create pod");
    let ev = next_event(&mut w).await;
    assert_eq!(ev.kv, mine, "only keys under the prefix");
    assert_no_event(&mut w, Duration::from_millis(300)).await;

    let mut ns = s
        .watch("/registry/pods/ns/", r0)
        .await
        .expect("watch namespace");
    assert_eq!(next_event(&mut ns).await.kv, mine);
}

pub(crate) async fn delete_events_carry_prev(s: Arc<dyn Store>) {
    let key = "/registry/pods/d/a";
    let r0 = s.current_rev().await.expect("current");
    let a1 = s.create(key, v("1")).await.expect("create");
    let a2 = s
        .update(key, v("2"), Some(a1.mod_rev))
        .await
        .expect("update");
    let (rd, last) = s.delete(key, Some(a2.mod_rev)).await.expect("delete");
    assert_eq!(last, a2);

    let mut w = s.watch("/registry/pods/d/", r0).await.expect("watch");
    next_event(&mut w).await;
    let up = next_event(&mut w).await;
    assert_eq!(
        (up.kind, up.prev.clone()),
        (EventKind::Put, Some(a1.clone()))
    );
    let del = next_event(&mut w).await;
    assert_eq!(del.kind, EventKind::Delete);
    assert_eq!(
        del.kv,
        Kv {
            key: key.to_owned(),
            value: v("2"),
            create_rev: a1.create_rev,
            mod_rev: rd
        },
        "a delete carries the last value at the deletion revision"
    );
    assert_eq!(del.prev, Some(a2));
}

pub(crate) async fn compaction(s: Arc<dyn Store>) {
    let p = "/registry/leases/ns/";
    let a1 = s
        .create("/registry/leases/ns/a", v("a1"))
        .await
        .expect("create a");
    let a2 = s
        .update("/registry/leases/ns/a", v("a2"), None)
        .await
        .expect("update a");
    s.create("/registry/leases/ns/b", v("b1"))
        .await
        .expect("create b");
    s.delete("/registry/leases/ns/b", None)
        .await
        .expect("delete b");
    let c1 = s
        .create("/registry/leases/ns/c", v("c1"))
        .await
        .expect("create c");
    let floor = s.current_rev().await.expect("current");
    let a3 = s
        .update("/registry/leases/ns/a", v("a3"), None)
        .await
        .expect("update a again");

    s.compact(floor).await.expect("compact");
    assert_eq!(s.compacted_rev().await.expect("compacted_rev"), floor);

    match s.list(p, Some(a1.mod_rev), None, None).await {
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => {
            assert_eq!((requested, compacted), (a1.mod_rev, floor));
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    match s.watch(p, a1.mod_rev).await {
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => {
            assert_eq!((requested, compacted), (a1.mod_rev, floor));
        }
        Err(e) => panic!("expected Compacted, got {e}"),
        Ok(_) => panic!("expected Compacted, got a watch"),
    }
    match s.watch(p, floor - 1).await {
        Err(StoreError::Compacted { .. }) => {}
        Err(e) => panic!("expected Compacted, got {e}"),
        Ok(_) => panic!("watch from below the floor must fail"),
    }

    // The state at and after the floor is intact.
    let at_floor = s
        .list(p, Some(floor), None, None)
        .await
        .expect("list at floor");
    assert_eq!(at_floor.kvs, vec![a2, c1.clone()]);
    let now = s.list(p, None, None, None).await.expect("list latest");
    assert_eq!(now.kvs, vec![a3.clone(), c1]);
    let mut w = s.watch(p, floor).await.expect("watch from the floor");
    assert_eq!(next_event(&mut w).await.kv, a3);

    // Compacting below the floor is a no-op; beyond the current revision is an error.
    s.compact(floor - 1).await.expect("compact below the floor");
    assert_eq!(s.compacted_rev().await.expect("compacted_rev"), floor);
    let current = s.current_rev().await.expect("current");
    assert!(matches!(
        s.compact(current + 100).await,
        Err(StoreError::FutureRevision { .. })
    ));

    // Writes keep working after compaction, including re-creating a compacted-away key.
    let b = s
        .create("/registry/leases/ns/b", v("b2"))
        .await
        .expect("re-create b");
    assert_eq!(next_event(&mut w).await.kv, b);
}

pub(crate) async fn future_revision(s: Arc<dyn Store>) {
    s.create("/registry/pods/f/a", v("1"))
        .await
        .expect("create");
    let current = s.current_rev().await.expect("current");
    match s
        .list("/registry/pods/", Some(current + 10), None, None)
        .await
    {
        Err(StoreError::FutureRevision {
            requested,
            current: c,
        }) => {
            assert_eq!(requested, current + 10);
            assert!(c >= current);
        }
        other => panic!("expected FutureRevision, got {other:?}"),
    }
    // The current revision itself is fine.
    let page = s
        .list("/registry/pods/", Some(current), None, None)
        .await
        .expect("list at current");
    assert_eq!(page.kvs.len(), 1);
}

pub(crate) async fn concurrent_conflicting_writes_one_wins(s: Arc<dyn Store>) {
    let key = "/registry/deployments/ns/d";
    let base = s.create(key, v("0")).await.expect("create");
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                s.update(key, v(&format!("writer-{i}")), Some(base.mod_rev))
                    .await
            })
        })
        .collect();
    let mut wins = Vec::new();
    let mut conflicts = Vec::new();
    for t in tasks {
        match t.await.expect("join") {
            Ok(kv) => wins.push(kv),
            Err(StoreError::Conflict { current_rev, .. }) => conflicts.push(current_rev),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(wins.len(), 1, "exactly one conditional update wins");
    assert_eq!(conflicts.len(), 9);
    assert!(
        conflicts.iter().all(|r| *r == wins[0].mod_rev),
        "losers see the winner's revision"
    );
    assert_eq!(s.get(key).await.expect("get"), Some(wins[0].clone()));

    // Same for creates of one new key.
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                s.create("/registry/deployments/ns/new", v(&i.to_string()))
                    .await
            })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        match t.await.expect("join") {
            Ok(_) => created += 1,
            Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(created, 1, "exactly one create wins");
}

pub(crate) async fn watch_started_during_writes_has_no_gaps(s: Arc<dyn Store>) {
    const N: usize = 300;
    let p = "/registry/events/ns/";
    let writer = {
        let s = Arc::clone(&s);
        tokio::spawn(async move {
            let mut revs = Vec::with_capacity(N);
            for i in 0..N {
                revs.push(
                    s.create(&format!("{p}e{i:04}"), v("x"))
                        .await
                        .expect("create")
                        .mod_rev,
                );
            }
            revs
        })
    };
    // Start the watch while the writer is busy.
    loop {
        if s.count(p).await.expect("count") >= 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut w = s.watch(p, 0).await.expect("watch from 0");
    let revs = writer.await.expect("join");
    let last = *revs.last().expect("revisions");
    let mut got = Vec::with_capacity(N);
    while got.last() != Some(&last) {
        let ev = next_event(&mut w).await;
        assert_eq!(ev.kind, EventKind::Put);
        got.push(ev.kv.mod_rev);
    }
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing revisions"
    );
    assert_eq!(got, revs, "every change exactly once");
}

/// The next progress item reporting at least `min`; panics on an event, error or timeout.
async fn next_progress(w: &mut WatchStream, min: Rev) -> Rev {
    loop {
        match tokio::time::timeout(ITEM_TIMEOUT, w.next()).await {
            Ok(Some(Ok(WatchItem::Progress(rev)))) if rev >= min => return rev,
            Ok(Some(Ok(WatchItem::Progress(_)))) => continue,
            other => panic!("expected progress, got {other:?}"),
        }
    }
}

pub(crate) async fn progress_on_idle_watch(s: Arc<dyn Store>) {
    let a = s
        .create("/registry/nodes/n1", v("1"))
        .await
        .expect("create");
    let mut w = s.watch("/registry/nodes/", a.mod_rev).await.expect("watch");
    assert!(next_progress(&mut w, a.mod_rev).await >= a.mod_rev);
    // A write under another prefix moves the progress revision without an event.
    let other = s
        .create("/registry/pods/ns/p", v("x"))
        .await
        .expect("create elsewhere");
    let rev = next_progress(&mut w, other.mod_rev).await;
    assert!(rev >= other.mod_rev);
    assert!(rev <= s.current_rev().await.expect("current"));
}

pub(crate) async fn special_characters_in_keys(s: Arc<dyn Store>) {
    // `_` and `%` are SQL LIKE wildcards; none of this may match by accident.
    let under = s
        .create("/registry/a_b/k", v("1"))
        .await
        .expect("create a_b");
    s.create("/registry/axb/k", v("2"))
        .await
        .expect("create axb");
    let pct = s.create("/registry/a%/k", v("3")).await.expect("create a%");
    s.create("/registry/aXYZ/k", v("4"))
        .await
        .expect("create aXYZ");
    s.create("/registry/A_B/k", v("5"))
        .await
        .expect("create A_B");
    let uni = s
        .create("/registry/ümlaut/ключ", v("6"))
        .await
        .expect("create unicode");

    let l = s
        .list("/registry/a_b/", None, None, None)
        .await
        .expect("list a_b");
    assert_eq!(l.kvs, vec![under]);
    let l = s
        .list("/registry/a%/", None, None, None)
        .await
        .expect("list a%");
    assert_eq!(l.kvs, vec![pct]);
    let l = s
        .list("/registry/ümlaut/", None, None, None)
        .await
        .expect("list unicode");
    assert_eq!(l.kvs, vec![uni.clone()]);
    assert_eq!(s.count("/registry/a_b/").await.expect("count"), 1);
    assert_eq!(
        s.get("/registry/ümlaut/ключ").await.expect("get"),
        Some(uni)
    );
    let everything = s.list("", None, None, None).await.expect("list everything");
    assert_eq!(everything.kvs.len(), 6);
    let sorted: BTreeSet<&str> = keys(&everything.kvs).into_iter().collect();
    assert_eq!(
        sorted.into_iter().collect::<Vec<_>>(),
        keys(&everything.kvs),
        "key order"
    );
}
