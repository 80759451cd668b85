//! Watch streams: SQL catch-up, then the in-process broadcast, without gaps or duplicates.
//!
//! The order matters:
//! 1. subscribe to the broadcast (before reading anything), so every commit not yet visible to
//!    the catch-up read will be in the receiver;
//! 2. catch up from SQL in pages (`after < id <= snapshot`), each page one read transaction that
//!    also re-checks the compaction floor;
//! 3. go live: take broadcast events, dropping those with a revision already covered (`<= seen`).
//!
//! `seen` is the revision up to which every change under the prefix has been delivered. It only
//! moves forward: by catch-up pages, to the snapshot revision when catch-up completes, and by
//! every broadcast event (whatever its key). Progress reports `seen`, so a bookmark never claims
//! a revision whose event is still queued.
//!
//! Broadcast lag: revisions are gap-free (see the writer), so after `RecvError::Lagged` the first
//! event received tells whether anything unseen was lost: revision `r` with `r <= seen + 1` means
//! no (typically the lag happened during catch-up and SQL already delivered those events).
//! Otherwise the stream yields `StoreError::Lagged` and ends.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::reader::ReadPool;
use super::schema::{self, KeyRange};
use super::SqliteError;
use crate::{Event, Rev, StoreError, StoreResult, WatchItem, WatchStream};

/// Rows per catch-up read.
const CATCH_UP_PAGE: usize = 500;

/// One watcher's state.
pub(super) struct Watcher {
    range: KeyRange,
    requested: Rev,
    seen: Rev,
    catching_up: bool,
    lagged: bool,
    done: bool,
    queue: VecDeque<Event>,
    rx: broadcast::Receiver<Arc<Event>>,
    reads: Arc<ReadPool>,
    ticker: Interval,
}

impl Watcher {
    /// A watcher of `prefix` from `after`; `rx` must have been subscribed already.
    pub(super) fn new(
        prefix: &str,
        after: Rev,
        rx: broadcast::Receiver<Arc<Event>>,
        reads: Arc<ReadPool>,
        progress: Duration,
    ) -> Watcher {
        let progress = progress.max(Duration::from_millis(1));
        let mut ticker = tokio::time::interval_at(Instant::now() + progress, progress);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Watcher {
            range: KeyRange::prefix(prefix),
            requested: after,
            seen: after,
            catching_up: true,
            lagged: false,
            done: false,
            queue: VecDeque::new(),
            rx,
            reads,
            ticker,
        }
    }

    pub(super) fn into_stream(self) -> WatchStream {
        futures::stream::unfold(self, |mut w| async move {
            let item = w.next().await?;
            Some((item, w))
        })
        .boxed()
    }

    async fn next(&mut self) -> Option<StoreResult<WatchItem>> {
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return Some(Ok(WatchItem::Event(ev)));
            }
            if self.done {
                return None;
            }
            if self.catching_up {
                if let Err(e) = self.catch_up_page().await {
                    self.done = true;
                    return Some(Err(e));
                }
                continue;
            }
            tokio::select! {
                biased;
                msg = self.rx.recv() => match msg {
                    Ok(ev) => {
                        let rev = ev.kv.mod_rev;
                        if std::mem::take(&mut self.lagged) && rev > self.seen + 1 {
                            self.done = true;
                            return Some(Err(StoreError::Lagged));
                        }
                        if rev <= self.seen {
                            continue;
                        }
                        self.seen = rev;
                        if self.range.contains(&ev.kv.key) {
                            return Some(Ok(WatchItem::Event(Event::clone(&ev))));
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        tracing::debug!("watcher of {} lagged by {n} events", self.range.start);
                        self.lagged = true;
                    }
                    // The store is gone.
                    Err(RecvError::Closed) => {
                        self.done = true;
                        return None;
                    }
                },
                _ = self.ticker.tick() => return Some(Ok(WatchItem::Progress(self.seen))),
            }
        }
    }

    async fn catch_up_page(&mut self) -> StoreResult<()> {
        let range = self.range.clone();
        let seen = self.seen;
        let requested = self.requested;
        let (events, snapshot) = self
            .reads
            .run(move |tx| {
                let floor =
                    schema::compact_rev(tx).map_err(SqliteError::sql("read compact_rev"))?;
                if seen < floor {
                    return Err(StoreError::Compacted {
                        requested,
                        compacted: floor,
                    });
                }
                let current =
                    schema::current_rev(tx).map_err(SqliteError::sql("read current revision"))?;
                let events = schema::changes(tx, &range, seen, current, CATCH_UP_PAGE)
                    .map_err(SqliteError::sql("watch catch-up"))?;
                Ok((events, current))
            })
            .await?;
        if events.len() < CATCH_UP_PAGE {
            self.seen = self.seen.max(snapshot);
            self.catching_up = false;
        } else if let Some(last) = events.last() {
            self.seen = last.kv.mod_rev;
        }
        self.queue.extend(events);
        Ok(())
    }
}
