//! The single writer: one OS thread owning the only writing connection.
//!
//! Requests arrive on a bounded channel. The thread blocks for one, then drains whatever else is
//! already queued (up to `max_batch`) and runs them all in one `BEGIN IMMEDIATE` transaction:
//! group commit, one WAL sync for the whole batch. Each write still gets its own revision and its
//! own answer, sent only after the COMMIT returned. Revisions are assigned here (`current + 1`,
//! explicit `id`), advance only on a successful commit, and so are gap-free; the watch code relies
//! on that to tell a harmless broadcast lag from a lost event.
//!
//! After a commit the thread publishes the batch's events on the broadcast channel, in revision
//! order, then answers the callers. If any statement of a batch fails (I/O, disk full), the whole
//! batch is rolled back and every caller gets `Backend`: nothing of it was acknowledged.
//!
//! Compaction also runs here, as small separate transactions between write batches, so it never
//! races a write and never holds the write lock for long.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::schema::{self, NewRow, RowKind};
use super::{Shared, SqliteError};
use crate::{Event, Rev, StoreError, StoreResult};

/// A change to apply.
#[derive(Debug)]
pub(super) enum Op {
    Create {
        key: String,
        value: Vec<u8>,
    },
    Update {
        key: String,
        value: Vec<u8>,
        expected: Option<Rev>,
    },
    Delete {
        key: String,
        expected: Option<Rev>,
    },
}

/// A request to the writer thread.
#[derive(Debug)]
pub(super) enum Request {
    /// A change; answered with the event it produced.
    Write {
        op: Op,
        reply: oneshot::Sender<StoreResult<Arc<Event>>>,
    },
    /// Raise the compaction floor to `rev` (no-op when not above it). Answers the range still to
    /// delete physically, `(done, floor)`, if any.
    CompactStart {
        rev: Rev,
        reply: oneshot::Sender<StoreResult<Option<(Rev, Rev)>>>,
    },
    /// Delete one batch of obsolete rows after `after` up to `floor`. Answers where the next
    /// batch starts, or `None` when done.
    CompactBatch {
        after: Rev,
        floor: Rev,
        reply: oneshot::Sender<StoreResult<Option<Rev>>>,
    },
}

/// Writer thread state.
pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) current: Rev,
    pub(super) shared: Arc<Shared>,
    pub(super) events: broadcast::Sender<Arc<Event>>,
    pub(super) max_batch: usize,
    pub(super) compact_batch: usize,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("current", &self.current)
            .field("max_batch", &self.max_batch)
            .finish_non_exhaustive()
    }
}

type Reply = oneshot::Sender<StoreResult<Arc<Event>>>;

impl Writer {
    /// Serves requests until every sender is gone.
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut stash: Option<Request> = None;
        loop {
            let first = match stash.take() {
                Some(req) => req,
                None => match rx.blocking_recv() {
                    Some(req) => req,
                    None => break,
                },
            };
            match first {
                Request::Write { op, reply } => {
                    let mut ops = vec![op];
                    let mut replies = vec![reply];
                    while ops.len() < self.max_batch {
                        match rx.try_recv() {
                            Ok(Request::Write { op, reply }) => {
                                ops.push(op);
                                replies.push(reply);
                            }
                            Ok(other) => {
                                stash = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.write_batch(ops, replies);
                }
                Request::CompactStart { rev, reply } => {
                    let res = self.compact_start(rev);
                    let _ = reply.send(res);
                }
                Request::CompactBatch {
                    after,
                    floor,
                    reply,
                } => {
                    let res = self.compact_batch(after, floor).map_err(StoreError::from);
                    let _ = reply.send(res);
                }
            }
        }
        tracing::debug!("store writer thread exiting at revision {}", self.current);
    }

    fn write_batch(&mut self, ops: Vec<Op>, replies: Vec<Reply>) {
        match self.apply_batch(ops) {
            Ok(results) => {
                self.shared.current.store(self.current, Ordering::SeqCst);
                for ev in results.iter().flatten() {
                    // No receivers is fine.
                    let _ = self.events.send(Arc::clone(ev));
                }
                for (res, reply) in results.into_iter().zip(replies) {
                    let _ = reply.send(res);
                }
            }
            Err(e) => {
                tracing::warn!("store write batch failed and was rolled back: {e}");
                // The in-memory revision never moved; re-read it anyway in case SQLite did.
                if let Ok(rev) = schema::current_rev(&self.conn) {
                    self.current = rev;
                }
                let msg = StoreError::from(e).to_string();
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Backend(msg.clone())));
                }
            }
        }
    }

    /// Applies all ops in one transaction; an `Err` means nothing was committed.
    fn apply_batch(&mut self, ops: Vec<Op>) -> Result<Vec<StoreResult<Arc<Event>>>, SqliteError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(SqliteError::sql("begin write transaction"))?;
        let mut next = self.current + 1;
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            let res = apply(&tx, next, op).map_err(SqliteError::sql("write"))?;
            if res.is_ok() {
                next += 1;
            }
            results.push(res);
        }
        tx.commit().map_err(SqliteError::sql("commit"))?;
        self.current = next - 1;
        Ok(results)
    }

    fn compact_start(&mut self, rev: Rev) -> StoreResult<Option<(Rev, Rev)>> {
        if rev > self.current {
            return Err(StoreError::FutureRevision {
                requested: rev,
                current: self.current,
            });
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(SqliteError::sql("begin compaction"))?;
        let mut floor = schema::compact_rev(&tx).map_err(SqliteError::sql("read compact_rev"))?;
        if rev > floor {
            schema::set_meta(&tx, "compact_rev", rev)
                .map_err(SqliteError::sql("write compact_rev"))?;
            floor = rev;
        }
        let done = schema::compact_done(&tx).map_err(SqliteError::sql("read compact_done"))?;
        tx.commit()
            .map_err(SqliteError::sql("commit compaction floor"))?;
        self.shared.floor.store(floor, Ordering::SeqCst);
        Ok((done < floor).then_some((done, floor)))
    }

    fn compact_batch(&mut self, after: Rev, floor: Rev) -> Result<Option<Rev>, SqliteError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(SqliteError::sql("begin compaction batch"))?;
        let end = schema::compact_batch_end(&tx, after, floor, self.compact_batch)
            .map_err(SqliteError::sql("find compaction batch"))?;
        let (done, next) = match end {
            Some(hi) => {
                let n = schema::compact_range(&tx, after, hi)
                    .map_err(SqliteError::sql("delete compacted rows"))?;
                tracing::trace!("compaction deleted {n} rows in ({after}, {hi}]");
                (hi, Some(hi))
            }
            None => (floor, None),
        };
        schema::set_meta(&tx, "compact_done", done)
            .map_err(SqliteError::sql("write compact_done"))?;
        tx.commit()
            .map_err(SqliteError::sql("commit compaction batch"))?;
        Ok(next)
    }
}

/// The live row an update or delete applies to, or the logical failure.
fn check(
    key: &str,
    latest: Option<schema::Latest>,
    expected: Option<Rev>,
) -> StoreResult<schema::Latest> {
    match (latest, expected) {
        (Some(l), Some(e)) if !l.deleted && l.id != e => Err(StoreError::Conflict {
            key: key.to_owned(),
            expected: e,
            current_rev: l.id,
        }),
        (Some(l), _) if !l.deleted => Ok(l),
        (_, Some(e)) => Err(StoreError::Conflict {
            key: key.to_owned(),
            expected: e,
            current_rev: 0,
        }),
        (_, None) => Err(StoreError::NotFound {
            key: key.to_owned(),
        }),
    }
}

/// Applies one op at revision `rev`. The outer error is SQL (aborts the batch), the inner one
/// logical (AlreadyExists, NotFound, Conflict: nothing written, no revision used).
fn apply(conn: &Connection, rev: Rev, op: Op) -> rusqlite::Result<StoreResult<Arc<Event>>> {
    let ev = match op {
        Op::Create { key, value } => {
            let prev_revision = match schema::latest(conn, &key)? {
                Some(l) if !l.deleted => return Ok(Err(StoreError::AlreadyExists { key })),
                Some(l) => l.id,
                None => 0,
            };
            schema::insert(
                conn,
                &NewRow {
                    id: rev,
                    name: &key,
                    created: true,
                    deleted: false,
                    create_revision: rev,
                    prev_revision,
                    value: &value,
                    old_value: None,
                },
            )?;
            schema::event(key, RowKind::Create, rev, rev, prev_revision, value, None)
        }
        Op::Update {
            key,
            value,
            expected,
        } => {
            let cur = match check(&key, schema::latest(conn, &key)?, expected) {
                Ok(cur) => cur,
                Err(e) => return Ok(Err(e)),
            };
            schema::insert(
                conn,
                &NewRow {
                    id: rev,
                    name: &key,
                    created: false,
                    deleted: false,
                    create_revision: cur.create_revision,
                    prev_revision: cur.id,
                    value: &value,
                    old_value: Some(&cur.value),
                },
            )?;
            schema::event(
                key,
                RowKind::Update,
                rev,
                cur.create_revision,
                cur.id,
                value,
                Some(cur.value),
            )
        }
        Op::Delete { key, expected } => {
            let cur = match check(&key, schema::latest(conn, &key)?, expected) {
                Ok(cur) => cur,
                Err(e) => return Ok(Err(e)),
            };
            schema::insert(
                conn,
                &NewRow {
                    id: rev,
                    name: &key,
                    created: false,
                    deleted: true,
                    create_revision: cur.create_revision,
                    prev_revision: cur.id,
                    value: &cur.value,
                    old_value: None,
                },
            )?;
            schema::event(
                key,
                RowKind::Delete,
                rev,
                cur.create_revision,
                cur.id,
                cur.value,
                None,
            )
        }
    };
    Ok(Ok(Arc::new(ev)))
}
