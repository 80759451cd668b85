//! Embedded SQLite backend (the default): the kine append-only log in one database file.
//!
//! Layout:
//! - `schema`: the log table and every SQL statement;
//! - `writer`: the one writing connection, on its own OS thread, with group commit;
//! - `reader`: a small pool of read connections used from `spawn_blocking`;
//! - `watch`: SQL catch-up followed by the in-process broadcast.
//!
//! Durability: `journal_mode=WAL` and, by default, `synchronous=FULL` ([`Durability::Full`]): a
//! write is acknowledged only after its transaction's WAL frames were fsynced, so it survives a
//! process kill and a power loss. [`Durability::Normal`] (WAL + `synchronous=NORMAL`) skips that
//! fsync: the COMMIT has still `write(2)`n the frames into the WAL file before returning, so the
//! kernel holds them and an acknowledged write survives `kill -9` of the process, but not an OS
//! crash or power loss.
//!
//! One process per database: `open` takes an exclusive lock on `<db>.lock` (released by the
//! kernel when the process dies), because the writer assigns revisions from memory.
//!
//! Compaction keeps the last [`SqliteOptions::retained_revisions`] revisions: a timer (every
//! [`SqliteOptions::compaction_interval`]) raises the floor to `current - retained`, then deletes
//! superseded rows and tombstones at or below it in small batches interleaved with writes.

mod reader;
mod schema;
mod watch;
mod writer;

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::Connection;
use tokio::sync::{broadcast, mpsc, oneshot};

use self::reader::ReadPool;
use self::schema::KeyRange;
use self::writer::{Op, Request, Writer};
use crate::{Event, Kv, ListPage, Rev, Store, StoreError, StoreResult, WatchStream};

/// How hard a commit is pushed to disk before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: fsync on every commit (one per group-commit batch). Survives process
    /// crashes and power loss.
    #[default]
    Full,
    /// `synchronous=NORMAL` (with WAL): no fsync on commit. Survives process crashes (`kill -9`),
    /// may lose the last commits on an OS crash or power loss.
    Normal,
}

/// Options of [`SqliteStore::open`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// How often the background compaction runs; `None` disables it ([`Store::compact`] still
    /// works). Default 5 minutes.
    pub compaction_interval: Option<Duration>,
    /// Revisions kept behind the current one by the background compaction. Default 1000.
    pub retained_revisions: i64,
    /// How often an idle watch yields [`crate::WatchItem::Progress`]. Default 5 s.
    pub progress_interval: Duration,
    /// Events buffered per watcher before it counts as lagging. Default 8192.
    pub watch_buffer: usize,
    /// Commit durability. Default [`Durability::Full`].
    pub durability: Durability,
    /// Most writes grouped into one transaction. Default 256.
    pub max_batch: usize,
    /// Read connections (concurrent reads). Default 4.
    pub read_connections: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            compaction_interval: Some(Duration::from_secs(300)),
            retained_revisions: 1000,
            progress_interval: Duration::from_secs(5),
            watch_buffer: 8192,
            durability: Durability::Full,
            max_batch: 256,
            read_connections: 4,
        }
    }
}

/// Rows deleted per compaction transaction.
const COMPACT_BATCH: usize = 1000;

/// Depth of the writer's request queue.
const WRITE_QUEUE: usize = 4096;

/// How long `open` waits for the database lock (a previous store in this process may still be
/// shutting down).
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// SQLite backend failures (reported to callers as [`StoreError::Backend`]).
#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    /// Opening or creating the database file failed.
    #[error("opening {}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// A statement failed. Retryable when the cause is transient (busy, I/O).
    #[error("sqlite {op}")]
    Sql {
        /// What was being done.
        op: &'static str,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The lock file could not be opened or locked.
    #[error("locking {}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Another process (or store) has the database open.
    #[error("{} is in use by another store", path.display())]
    InUse {
        /// The database file.
        path: PathBuf,
    },
    /// SQLite refused WAL mode (for example on a filesystem without shared memory support).
    #[error("journal_mode=WAL refused (got {mode:?})")]
    NoWal {
        /// The journal mode SQLite kept.
        mode: String,
    },
    /// The database was written by a newer ferry.
    #[error("unsupported schema version {version}")]
    SchemaVersion {
        /// The version found.
        version: i64,
    },
    /// The writer thread could not be started.
    #[error("starting the writer thread")]
    Thread(#[source] std::io::Error),
    /// The store was shut down.
    #[error("the store is closed")]
    Closed,
}

impl SqliteError {
    /// Adapter for `map_err`: a failed statement doing `op`.
    pub(crate) fn sql(op: &'static str) -> impl FnOnce(rusqlite::Error) -> SqliteError {
        move |source| SqliteError::Sql { op, source }
    }
}

impl From<SqliteError> for StoreError {
    fn from(e: SqliteError) -> Self {
        StoreError::Backend(crate::error_chain(&e))
    }
}

/// State shared by the store handle and the writer thread.
#[derive(Debug)]
struct Shared {
    /// The newest committed revision.
    current: AtomicI64,
    /// The compaction floor.
    floor: AtomicI64,
}

/// The embedded SQLite store. Cheap to share behind an `Arc`; dropping it stops the writer and
/// compaction and ends open watches (use [`SqliteStore::close`] to also wait for the file to be
/// released).
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    writer: mpsc::Sender<Request>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
    events: broadcast::Sender<Arc<Event>>,
    reads: Arc<ReadPool>,
    shared: Arc<Shared>,
    progress_interval: Duration,
    compactor: Option<tokio::task::JoinHandle<()>>,
}

impl SqliteStore {
    /// Opens (creating when missing) the store at `path` (a file; its directory must exist) and
    /// starts the writer thread and, if configured, background compaction. Needs a Tokio runtime.
    pub async fn open(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<SqliteStore, SqliteError> {
        // Absolute, so read connections opened later do not depend on the working directory.
        let path = std::path::absolute(path.as_ref()).unwrap_or_else(|_| path.as_ref().to_owned());
        let p = path.clone();
        let opts = options.clone();
        let (conn, lock, current, floor) =
            tokio::task::spawn_blocking(move || open_writer(&p, &opts))
                .await
                .map_err(|e| SqliteError::Thread(std::io::Error::other(e.to_string())))??;

        let shared = Arc::new(Shared {
            current: AtomicI64::new(current),
            floor: AtomicI64::new(floor),
        });
        let (events, _) = broadcast::channel(options.watch_buffer.max(16));
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let writer = Writer {
            conn,
            current,
            shared: Arc::clone(&shared),
            events: events.clone(),
            max_batch: options.max_batch.max(1),
            compact_batch: COMPACT_BATCH,
        };
        let writer_thread = std::thread::Builder::new()
            .name("ferry-store-writer".into())
            .spawn(move || {
                writer.run(rx);
                // Released only once the writing connection is closed.
                drop(lock);
            })
            .map_err(SqliteError::Thread)?;

        let compactor = options.compaction_interval.map(|every| {
            let tx = tx.clone();
            let shared = Arc::clone(&shared);
            let retained = options.retained_revisions.max(0);
            tokio::spawn(async move {
                let mut ticker =
                    tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticker.tick().await;
                    let target = shared.current.load(Ordering::SeqCst) - retained;
                    if target <= 0 {
                        continue;
                    }
                    let started = Instant::now();
                    match compact(&tx, target).await {
                        Ok(()) => tracing::debug!(
                            "compacted the store to revision {target} in {:?}",
                            started.elapsed()
                        ),
                        Err(e) => tracing::warn!("store compaction to {target} failed: {e}"),
                    }
                }
            })
        });

        Ok(SqliteStore {
            reads: Arc::new(ReadPool::new(&path, options.read_connections)),
            path,
            writer: tx,
            writer_thread: Some(writer_thread),
            events,
            shared,
            progress_interval: options.progress_interval,
            compactor,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops the store and waits until the writer has finished and closed the database (pending
    /// writes are completed first). Open watches end.
    pub async fn close(mut self) {
        if let Some(c) = self.compactor.take() {
            c.abort();
            let _ = c.await;
        }
        let thread = self.writer_thread.take();
        drop(self);
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    async fn write(&self, op: Op) -> StoreResult<Arc<Event>> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(Request::Write { op, reply })
            .await
            .map_err(|_| SqliteError::Closed)?;
        rx.await.map_err(|_| SqliteError::Closed)?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if let Some(c) = &self.compactor {
            c.abort();
        }
    }
}

/// Opens the writing connection: lock, pragmas, schema, current revision and floor.
fn open_writer(
    path: &Path,
    options: &SqliteOptions,
) -> Result<(Connection, File, Rev, Rev), SqliteError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| SqliteError::Lock {
            path: lock_path.clone(),
            source,
        })?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match lock.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(TryLockError::WouldBlock) => {
                return Err(SqliteError::InUse {
                    path: path.to_owned(),
                })
            }
            Err(TryLockError::Error(source)) => {
                return Err(SqliteError::Lock {
                    path: lock_path,
                    source,
                })
            }
        }
    }

    let conn = Connection::open(path).map_err(|source| SqliteError::Open {
        path: path.to_owned(),
        source,
    })?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(SqliteError::sql("set busy_timeout"))?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(SqliteError::sql("set journal_mode"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(SqliteError::NoWal { mode });
    }
    let sync = match options.durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)
        .map_err(SqliteError::sql("set synchronous"))?;
    if let Err(version) = schema::init(&conn).map_err(SqliteError::sql("create schema"))? {
        return Err(SqliteError::SchemaVersion { version });
    }
    let current = schema::current_rev(&conn).map_err(SqliteError::sql("read current revision"))?;
    let floor = schema::compact_rev(&conn).map_err(SqliteError::sql("read compact_rev"))?;
    Ok((conn, lock, current, floor))
}

/// Sends one request to the writer and waits for its answer.
async fn call<T>(
    writer: &mpsc::Sender<Request>,
    req: impl FnOnce(oneshot::Sender<StoreResult<T>>) -> Request,
) -> StoreResult<T> {
    let (reply, rx) = oneshot::channel();
    writer
        .send(req(reply))
        .await
        .map_err(|_| SqliteError::Closed)?;
    rx.await.map_err(|_| SqliteError::Closed)?
}

/// Raises the floor to `rev`, then deletes what it made obsolete, batch by batch (writes run
/// between batches).
async fn compact(writer: &mpsc::Sender<Request>, rev: Rev) -> StoreResult<()> {
    let Some((mut after, floor)) =
        call(writer, |reply| Request::CompactStart { rev, reply }).await?
    else {
        return Ok(());
    };
    while let Some(next) = call(writer, |reply| Request::CompactBatch {
        after,
        floor,
        reply,
    })
    .await?
    {
        after = next;
    }
    Ok(())
}

/// `Some(r)` for a positive revision, `None` (latest) otherwise.
fn at_rev(at: Option<Rev>) -> Option<Rev> {
    at.filter(|r| *r > 0)
}

#[async_trait]
impl Store for SqliteStore {
    async fn current_rev(&self) -> StoreResult<Rev> {
        Ok(self.shared.current.load(Ordering::SeqCst))
    }

    async fn compacted_rev(&self) -> StoreResult<Rev> {
        Ok(self.shared.floor.load(Ordering::SeqCst))
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Kv>> {
        let key = key.to_owned();
        self.reads
            .run(move |tx| {
                let latest = schema::latest(tx, &key).map_err(SqliteError::sql("get"))?;
                Ok(latest.filter(|l| !l.deleted).map(|l| l.into_kv(key)))
            })
            .await
    }

    async fn list(
        &self,
        prefix: &str,
        at: Option<Rev>,
        start_after: Option<&str>,
        limit: Option<usize>,
    ) -> StoreResult<ListPage> {
        let range = KeyRange::prefix(prefix);
        let start_after = start_after.unwrap_or("").to_owned();
        let at = at_rev(at);
        let limit = limit.filter(|l| *l > 0);
        self.reads
            .run(move |tx| {
                let current =
                    schema::current_rev(tx).map_err(SqliteError::sql("read current revision"))?;
                let floor =
                    schema::compact_rev(tx).map_err(SqliteError::sql("read compact_rev"))?;
                let rev = match at {
                    None => current,
                    Some(r) if r > current => {
                        return Err(StoreError::FutureRevision {
                            requested: r,
                            current,
                        })
                    }
                    Some(r) if r < floor => {
                        return Err(StoreError::Compacted {
                            requested: r,
                            compacted: floor,
                        })
                    }
                    Some(r) => r,
                };
                let (kvs, more) = schema::list(tx, &range, &start_after, rev, limit)
                    .map_err(SqliteError::sql("list"))?;
                Ok(ListPage { kvs, rev, more })
            })
            .await
    }

    async fn count(&self, prefix: &str) -> StoreResult<u64> {
        let range = KeyRange::prefix(prefix);
        self.reads
            .run(move |tx| {
                schema::count(tx, &range).map_err(|e| SqliteError::sql("count")(e).into())
            })
            .await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> StoreResult<Kv> {
        let ev = self
            .write(Op::Create {
                key: key.to_owned(),
                value,
            })
            .await?;
        Ok(ev.kv.clone())
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Option<Rev>) -> StoreResult<Kv> {
        let ev = self
            .write(Op::Update {
                key: key.to_owned(),
                value,
                expected,
            })
            .await?;
        Ok(ev.kv.clone())
    }

    async fn delete(&self, key: &str, expected: Option<Rev>) -> StoreResult<(Rev, Kv)> {
        let ev = self
            .write(Op::Delete {
                key: key.to_owned(),
                expected,
            })
            .await?;
        let prev = ev
            .prev
            .clone()
            .ok_or_else(|| StoreError::Backend("delete event without previous state".into()))?;
        Ok((ev.kv.mod_rev, prev))
    }

    async fn watch(&self, prefix: &str, after: Rev) -> StoreResult<WatchStream> {
        // Subscribe before anything is read (see the watch module).
        let rx = self.events.subscribe();
        let after = after.max(0);
        let floor = self
            .reads
            .run(|tx| {
                schema::compact_rev(tx).map_err(|e| SqliteError::sql("read compact_rev")(e).into())
            })
            .await?;
        if after < floor {
            return Err(StoreError::Compacted {
                requested: after,
                compacted: floor,
            });
        }
        Ok(watch::Watcher::new(
            prefix,
            after,
            rx,
            Arc::clone(&self.reads),
            self.progress_interval,
        )
        .into_stream())
    }

    async fn compact(&self, rev: Rev) -> StoreResult<()> {
        compact(&self.writer, rev).await
    }
}
