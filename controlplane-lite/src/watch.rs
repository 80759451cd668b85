//! Watch streams: newline-delimited JSON events over a chunked (HTTP/1.1) or streamed (HTTP/2)
//! 200 response, flushed per event.
//!
//! - From an unset or `0` resourceVersion: synthetic ADDED events for the current state, then
//!   changes. `sendInitialEvents=true` ends the initial burst with a BOOKMARK annotated
//!   `k8s.io/initial-events-end`.
//! - From revision N: every change after N, in order. N below the compaction floor: an in-stream
//!   ERROR event with code 410 (never an HTTP 410: clients relist only on the in-stream form).
//! - Selectors apply to the new state: an object that stops matching is DELETED for this
//!   watcher, one that starts matching is ADDED.
//! - Bookmarks (`allowWatchBookmarks=true`) from the store's progress notifications, at most one
//!   per bookmark interval, and one just before the server ends the watch at its timeout.

use crate::machinery::{self as mach, Selectors};
use crate::objects::from_kv;
use crate::request::{store_err, Config, Target};
use crate::web::{ApiError, Body};
use bytes::Bytes;
use ferry_store::{EventKind, Rev, Store, StoreError, WatchItem};
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Watch parameters from the query.
#[derive(Debug, Clone)]
pub struct Options {
    /// Start revision; `None` for "current state first".
    pub from: Option<Rev>,
    /// `sendInitialEvents=true`.
    pub send_initial: bool,
    /// `allowWatchBookmarks=true`.
    pub bookmarks: bool,
    /// When the server ends the watch.
    pub timeout: Duration,
    /// Minimum spacing of progress bookmarks.
    pub bookmark_interval: Duration,
}

impl Options {
    /// Parses the watch parameters.
    pub fn from_query(q: &HashMap<String, String>, cfg: &Config) -> Result<Options, String> {
        let rv = q.get("resourceVersion").map(String::as_str).unwrap_or("");
        let from = match rv {
            "" | "0" => None,
            v => Some(
                v.parse::<Rev>()
                    .map_err(|_| format!("invalid resourceVersion {v:?}"))?,
            ),
        };
        let send_initial = q.get("sendInitialEvents").is_some_and(|v| v == "true");
        if send_initial
            && q.get("resourceVersionMatch")
                .is_some_and(|m| m != "NotOlderThan")
        {
            return Err("sendInitialEvents requires resourceVersionMatch=NotOlderThan".into());
        }
        let cap = cfg.max_watch_seconds;
        let timeout = match q.get("timeoutSeconds").filter(|t| !t.is_empty()) {
            Some(t) => t
                .parse::<u64>()
                .map_err(|_| format!("invalid timeoutSeconds {t:?}"))?
                .min(cap),
            // Jitter the default so watchers do not reconnect in lockstep.
            None => cap / 2 + rand::random::<u64>() % (cap / 2).max(1),
        };
        Ok(Options {
            from,
            send_initial,
            bookmarks: q.get("allowWatchBookmarks").is_some_and(|v| v == "true"),
            timeout: Duration::from_secs(timeout.max(1)),
            bookmark_interval: cfg.bookmark_interval,
        })
    }
}

struct Emitter {
    tx: tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
    res: &'static crate::resources::Resource,
    table: bool,
}

impl Emitter {
    async fn send(&self, ty: &str, obj: Value) -> bool {
        let object = if self.table && matches!(ty, "ADDED" | "MODIFIED" | "DELETED") {
            let rv = obj["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            mach::table(self.res.kind, &[obj], &rv, "")
        } else {
            obj
        };
        let mut line =
            serde_json::to_vec(&json!({"type": ty, "object": object})).unwrap_or_default();
        line.push(b'\n');
        self.tx
            .send(Ok(Frame::data(Bytes::from(line))))
            .await
            .is_ok()
    }

    async fn bookmark(&self, rev: Rev, initial_end: bool) -> bool {
        let mut meta = json!({"resourceVersion": rev.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj =
            json!({"kind": self.res.kind, "apiVersion": self.res.api_version(), "metadata": meta});
        let mut line =
            serde_json::to_vec(&json!({"type": "BOOKMARK", "object": obj})).unwrap_or_default();
        line.push(b'\n');
        self.tx
            .send(Ok(Frame::data(Bytes::from(line))))
            .await
            .is_ok()
    }

    async fn expired(&self, msg: String) {
        let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": msg, "reason": "Expired", "code": 410});
        let mut line =
            serde_json::to_vec(&json!({"type": "ERROR", "object": status})).unwrap_or_default();
        line.push(b'\n');
        let _ = self.tx.send(Ok(Frame::data(Bytes::from(line)))).await;
    }
}

/// Starts a watch; the returned body streams until the timeout, the client leaves, or the store
/// ends the stream. `guard` is dropped when the watch ends (it releases the client's slot).
pub async fn start(
    store: Arc<dyn Store>,
    t: Target,
    sel: Selectors,
    opts: Options,
    table: bool,
    guard: Box<dyn Send + 'static>,
) -> Result<Body, ApiError> {
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let prefix = t.res.key_prefix(t.namespace.as_deref());
    let res = t.res;
    // Initial state (when asked for), read before the response starts so errors are HTTP errors.
    let mut initial = Vec::new();
    let after = match opts.from {
        Some(rv) if !opts.send_initial => rv,
        _ => {
            let mut start: Option<String> = None;
            let mut at = None;
            loop {
                let page = store
                    .list(&prefix, at, start.as_deref(), Some(500))
                    .await
                    .map_err(|e| store_err(res, "", e))?;
                at = Some(page.rev);
                for kv in &page.kvs {
                    let obj = from_kv(kv, res.kind, &res.api_version());
                    if sel.matches(&obj) {
                        initial.push(obj);
                    }
                }
                if !page.more {
                    break;
                }
                start = page.kvs.last().map(|k| k.key.clone());
            }
            at.unwrap_or(0)
        }
    };
    let stream = store.watch(&prefix, after).await;
    tokio::spawn(async move {
        let _guard = guard;
        let em = Emitter { tx, res, table };
        let mut stream = match stream {
            Ok(s) => s,
            Err(StoreError::Compacted {
                requested,
                compacted,
            }) => {
                em.expired(format!(
                    "too old resource version: {requested} ({compacted})"
                ))
                .await;
                return;
            }
            Err(e) => {
                em.expired(format!("watch failed: {e}")).await;
                return;
            }
        };
        for obj in initial {
            if !em.send("ADDED", obj).await {
                return;
            }
        }
        if opts.send_initial && !em.bookmark(after, true).await {
            return;
        }
        let deadline = tokio::time::sleep(opts.timeout);
        tokio::pin!(deadline);
        let mut last_rev = after;
        let mut last_bookmark = Instant::now();
        loop {
            tokio::select! {
                () = &mut deadline => {
                    if opts.bookmarks {
                        em.bookmark(last_rev, false).await;
                    }
                    return;
                }
                () = em.tx.closed() => return,
                item = stream.next() => {
                    let Some(item) = item else { return };
                    match item {
                        Ok(WatchItem::Progress(rev)) => {
                            last_rev = last_rev.max(rev);
                            if opts.bookmarks && last_bookmark.elapsed() >= opts.bookmark_interval {
                                last_bookmark = Instant::now();
                                if !em.bookmark(last_rev, false).await {
                                    return;
                                }
                            }
                        }
                        Ok(WatchItem::Event(ev)) => {
                            last_rev = ev.kv.mod_rev;
                            let new = from_kv(&ev.kv, res.kind, &res.api_version());
                            let old_matched = ev.prev.as_ref().is_some_and(|p| sel.matches(&from_kv(p, res.kind, &res.api_version())));
                            let sent = match ev.kind {
                                // A delete carries the last state: judge the selector on it.
                                EventKind::Delete => !sel.matches(&new) || em.send("DELETED", new).await,
                                EventKind::Put => match (old_matched, sel.matches(&new)) {
                                    (true, true) => em.send("MODIFIED", new).await,
                                    (false, true) => em.send("ADDED", new).await,
                                    (true, false) => em.send("DELETED", new).await,
                                    (false, false) => true,
                                },
                            };
                            if !sent {
                                return;
                            }
                        }
                        Err(StoreError::Compacted { requested, compacted }) => {
                            em.expired(format!("too old resource version: {requested} ({compacted})")).await;
                            return;
                        }
                        Err(StoreError::Lagged) => {
                            em.expired("watcher fell behind; relist".to_owned()).await;
                            return;
                        }
                        Err(e) => {
                            tracing::warn!("watch on {prefix} ended: {e}");
                            return;
                        }
                    }
                }
            }
        }
    });
    Ok(BodyExt::boxed(StreamBody::new(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    )))
}
