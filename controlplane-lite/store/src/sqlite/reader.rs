//! Read connections: a small pool used from `spawn_blocking`, never from an async worker.
//!
//! Every read runs in its own deferred transaction, so all its statements see one WAL snapshot
//! (the revision checks and the query agree). Readers never block the writer, nor it them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Transaction};
use tokio::sync::Semaphore;

use super::SqliteError;
use crate::{StoreError, StoreResult};

/// Pool of read-only connections to one database file.
pub(super) struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for ReadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadPool")
            .field("path", &self.path)
            .field("available", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl ReadPool {
    pub(super) fn new(path: &Path, size: usize) -> ReadPool {
        ReadPool {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size.max(1))),
        }
    }

    /// Runs `f` in a read transaction on a pooled connection, on the blocking thread pool.
    pub(super) async fn run<T, F>(self: &Arc<Self>, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> StoreResult<T> + Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::from(SqliteError::Closed))?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut conn = match pool.take() {
                Some(conn) => conn,
                None => pool.open()?,
            };
            let res = {
                let tx = conn
                    .transaction()
                    .map_err(SqliteError::sql("begin read transaction"))?;
                f(&tx)
                // The transaction rolls back on drop: nothing to keep from a read.
            };
            // A connection whose read failed at the SQL level is dropped, not reused.
            if !matches!(res, Err(StoreError::Backend(_))) {
                pool.put(conn);
            }
            res
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }

    fn take(&self) -> Option<Connection> {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    fn put(&self, conn: Connection) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
    }

    fn open(&self) -> StoreResult<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(|source| SqliteError::Open {
            path: self.path.clone(),
            source,
        })?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(SqliteError::sql("set busy_timeout"))?;
        conn.pragma_update(None, "query_only", true)
            .map_err(SqliteError::sql("set query_only"))?;
        Ok(conn)
    }
}
