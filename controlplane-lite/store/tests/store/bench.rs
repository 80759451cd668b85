//! Throughput measurement (printed, not asserted): creates per second on SQLite with 10
//! concurrent clients, the shape of the apiserver benchmark. Run with
//! `cargo test -p ferry-store --test store bench -- --nocapture` to see the numbers.

use std::sync::Arc;
use std::time::Instant;

use ferry_store::sqlite::{Durability, SqliteOptions, SqliteStore};
use ferry_store::Store;

const CLIENTS: usize = 10;
const PER_CLIENT: usize = 400;

async fn creates_per_second(durability: Durability, clients: usize) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = SqliteOptions {
        durability,
        compaction_interval: None,
        ..SqliteOptions::default()
    };
    let store = Arc::new(
        SqliteStore::open(dir.path().join("store.db"), options)
            .await
            .expect("open"),
    );
    // A realistic object size (~1 KiB of JSON).
    let value = Arc::new(
        format!(
            "{{\"kind\":\"ConfigMap\",\"data\":{{\"k\":\"{}\"}}}}",
            "x".repeat(1000)
        )
        .into_bytes(),
    );
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let store = Arc::clone(&store);
            let value = Arc::clone(&value);
            tokio::spawn(async move {
                for i in 0..PER_CLIENT {
                    store
                        .create(
                            &format!("/registry/configmaps/ns{c}/cm{i:05}"),
                            value.to_vec(),
                        )
                        .await
                        .expect("create");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("client");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let total = clients * PER_CLIENT;
    assert_eq!(
        store.count("/registry/configmaps/").await.expect("count"),
        u64::try_from(total).expect("n")
    );
    if clients > 1 {
        // Paging through everything, 500 per page (what kubectl and kube-rs do).
        let start = Instant::now();
        let (mut at, mut after, mut seen) = (None, None::<String>, 0);
        loop {
            let page = store
                .list("/registry/configmaps/", at, after.as_deref(), Some(500))
                .await
                .expect("list page");
            seen += page.kvs.len();
            at = Some(page.rev);
            after = page.kvs.last().map(|kv| kv.key.clone());
            if !page.more {
                break;
            }
        }
        assert_eq!(seen, total);
        println!(
            "sqlite: paged list of {total} keys (500 per page) in {:?}",
            start.elapsed()
        );
    }
    f64::from(u32::try_from(total).expect("n")) / elapsed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_sqlite_creates_per_second() {
    for (durability, clients) in [
        (Durability::Full, 1),
        (Durability::Full, CLIENTS),
        (Durability::Normal, 1),
        (Durability::Normal, CLIENTS),
    ] {
        let rate = creates_per_second(durability, clients).await;
        println!("sqlite {durability:?}: {clients} client(s): {rate:.0} creates/s");
    }
}
