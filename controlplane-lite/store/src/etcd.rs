//! etcd v3 backend (`--store etcd --etcd-endpoints ...`): several `ferry-server` replicas share
//! one etcd cluster, which provides revisions, transactions, history and watches.
//!
//! Mapping (see the control-plane reference, section 12):
//! - create: `Txn(Compare(mod_revision == 0) -> Put)`;
//! - update / delete: `Txn(Compare(mod_revision > 0 [&& mod_revision == R]) -> Put / Delete
//!   (prev_kv) else Range)`, the `Range` telling Conflict (with the current revision) from
//!   NotFound;
//! - list: `Range(revision, limit)`, starting at `start_after + "\0"`; etcd returns ranges in key
//!   order (an explicit sort would make it fetch the whole range before applying the limit);
//! - watch: `Watch(start_revision = after + 1, prev_kv, progress_notify)`; progress responses
//!   become [`WatchItem::Progress`], `compact_revision` becomes [`StoreError::Compacted`];
//! - compaction: `Compact(physical)`, on a timer and through [`Store::compact`].
//!
//! Progress: etcd sends progress notifications to idle, synced watchers every
//! `--experimental-watch-progress-notify-interval` (default 10 minutes; run etcd with `5s` for
//! timely bookmarks). Client-requested progress (`RequestProgress`) is deliberately not used: on
//! etcd 3.4 it can report a revision whose events are still being sent to an unsynced watcher
//! (etcd-io/etcd#15220).
//!
//! All keys live under an optional namespace prefix (several clusters can share one etcd);
//! callers never see it. Connection and server failures are [`StoreError::Backend`].

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType,
    GetOptions, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchOptions,
};
use futures::StreamExt;

use crate::keys::prefix_end_bytes;
use crate::{
    Event, EventKind, Kv, ListPage, Rev, Store, StoreError, StoreResult, WatchItem, WatchStream,
};

/// Options of [`EtcdStore::connect_with`].
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Timeout of establishing a connection. Default 5 s.
    pub connect_timeout: Duration,
    /// Timeout of each unary request. Default 10 s.
    pub request_timeout: Duration,
    /// How often this replica compacts etcd; `None` leaves compaction to etcd's own
    /// `--auto-compaction-*` or to [`Store::compact`]. Default 5 minutes.
    pub compaction_interval: Option<Duration>,
    /// Revisions kept behind the current one by the timer compaction. Default 1000.
    pub retained_revisions: i64,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            compaction_interval: Some(Duration::from_secs(300)),
            retained_revisions: 1000,
        }
    }
}

/// etcd backend failures (reported to callers as [`StoreError::Backend`]).
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The endpoints could not be reached or refused the first request. Retryable.
    #[error("connecting to etcd at {endpoints}")]
    Connect {
        /// The endpoints, comma-separated.
        endpoints: String,
        /// The cause.
        #[source]
        source: Box<EtcdError>,
    },
    /// A request failed (transport or server error). Usually retryable.
    #[error("etcd {op}")]
    Request {
        /// The operation.
        op: &'static str,
        /// The cause.
        #[source]
        source: etcd_client::Error,
    },
    /// A request did not complete in time. Retryable.
    #[error("etcd {op} timed out after {after:?}")]
    Timeout {
        /// The operation.
        op: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// etcd answered something this backend cannot use (a key outside the namespace, non-UTF-8
    /// key, a transaction response of the wrong shape).
    #[error("unexpected etcd response to {op}: {what}")]
    Unexpected {
        /// The operation.
        op: &'static str,
        /// What was wrong.
        what: String,
    },
}

impl From<EtcdError> for StoreError {
    fn from(e: EtcdError) -> Self {
        StoreError::Backend(crate::error_chain(&e))
    }
}

/// etcd's "required revision has been compacted" (gRPC OutOfRange).
fn is_compacted(e: &EtcdError) -> bool {
    matches!(e, EtcdError::Request { source: etcd_client::Error::GRpcStatus(s), .. }
        if s.message().contains("required revision has been compacted"))
}

/// etcd's "required revision is a future revision" (gRPC OutOfRange).
fn is_future(e: &EtcdError) -> bool {
    matches!(e, EtcdError::Request { source: etcd_client::Error::GRpcStatus(s), .. }
        if s.message().contains("required revision is a future revision"))
}

/// The etcd v3 store. Cheap to share behind an `Arc`; several instances (processes) may use one
/// etcd and see each other's writes.
pub struct EtcdStore {
    client: Client,
    namespace: String,
    options: EtcdOptions,
    compactor: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("namespace", &self.namespace)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        if let Some(c) = &self.compactor {
            c.abort();
        }
    }
}

impl EtcdStore {
    /// Connects with default options. `namespace` is prepended to every key (`""` for none,
    /// e.g. `/cluster-a` to share one etcd between clusters).
    pub async fn connect(endpoints: &[String], namespace: &str) -> Result<EtcdStore, EtcdError> {
        EtcdStore::connect_with(endpoints, namespace, EtcdOptions::default()).await
    }

    /// Connects to `endpoints` (`host:port` or `http://host:port`) and checks that etcd answers.
    /// Starts the compaction timer when configured (needs a Tokio runtime).
    pub async fn connect_with(
        endpoints: &[String],
        namespace: &str,
        options: EtcdOptions,
    ) -> Result<EtcdStore, EtcdError> {
        let joined = endpoints.join(",");
        let connect_err = |source: EtcdError| EtcdError::Connect {
            endpoints: joined.clone(),
            source: Box::new(source),
        };
        let connect = ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let client = timed(
            "connect",
            options.connect_timeout,
            Client::connect(endpoints, Some(connect)),
        )
        .await
        .map_err(connect_err)?;
        let mut store = EtcdStore {
            client,
            namespace: namespace.to_owned(),
            options,
            compactor: None,
        };
        // The channel connects lazily: make sure someone answers.
        store.header_rev("connect").await.map_err(connect_err)?;
        if let Some(every) = store.options.compaction_interval {
            let timer = EtcdStore {
                client: store.client.clone(),
                namespace: store.namespace.clone(),
                options: EtcdOptions {
                    compaction_interval: None,
                    ..store.options.clone()
                },
                compactor: None,
            };
            store.compactor = Some(tokio::spawn(async move {
                let mut ticker =
                    tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticker.tick().await;
                    let target = match timer.current_rev().await {
                        Ok(cur) => cur - timer.options.retained_revisions.max(0),
                        Err(e) => {
                            tracing::warn!("etcd compaction: {e}");
                            continue;
                        }
                    };
                    if target > 1 {
                        if let Err(e) = timer.compact(target).await {
                            tracing::warn!("etcd compaction to {target} failed: {e}");
                        }
                    }
                }
            }));
        }
        Ok(store)
    }

    fn full_key(&self, key: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.namespace.len() + key.len());
        k.extend_from_slice(self.namespace.as_bytes());
        k.extend_from_slice(key.as_bytes());
        k
    }

    /// The caller's key of an etcd key.
    fn user_key(&self, op: &'static str, key: &[u8]) -> Result<String, EtcdError> {
        let unexpected = |what: String| EtcdError::Unexpected { op, what };
        let rest = key
            .strip_prefix(self.namespace.as_bytes())
            .ok_or_else(|| unexpected(format!("key {key:?} outside the namespace")))?;
        String::from_utf8(rest.to_vec()).map_err(|_| unexpected(format!("non-UTF-8 key {key:?}")))
    }

    fn kv(&self, op: &'static str, kv: &KeyValue) -> Result<Kv, EtcdError> {
        Ok(Kv {
            key: self.user_key(op, kv.key())?,
            value: kv.value().to_vec(),
            create_rev: kv.create_revision(),
            mod_rev: kv.mod_revision(),
        })
    }

    /// `(key, range_end)` covering every key under the caller's `prefix`.
    fn prefix_range(&self, prefix: &str) -> (Vec<u8>, Vec<u8>) {
        let mut start = self.full_key(prefix);
        let end = prefix_end_bytes(&start);
        if start.is_empty() {
            // etcd rejects an empty key; "\0" with range_end "\0" is "every key".
            start.push(0);
        }
        (start, end)
    }

    /// Runs the request `attempt` makes, within the request timeout. A request that never left
    /// (no connection to the endpoint the balanced channel picked: a dead member) is made again,
    /// so one member down costs the caller nothing; anything else is the answer.
    async fn timed<T, Fut>(
        &self,
        op: &'static str,
        mut attempt: impl FnMut() -> Fut,
    ) -> Result<T, EtcdError>
    where
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let after = self.options.request_timeout;
        let deadline = tokio::time::Instant::now() + after;
        loop {
            match tokio::time::timeout_at(deadline, attempt()).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e))
                    if unsent(&e) && tokio::time::Instant::now() + UNSENT_PAUSE < deadline =>
                {
                    tokio::time::sleep(UNSENT_PAUSE).await;
                }
                Ok(Err(source)) => return Err(EtcdError::Request { op, source }),
                Err(_) => return Err(EtcdError::Timeout { op, after }),
            }
        }
    }

    /// The current revision, from the header of a cheap count-only range.
    async fn header_rev(&self, op: &'static str) -> Result<Rev, EtcdError> {
        let resp = self
            .timed(op, || {
                let mut kv = self.client.kv_client();
                let key = self.probe_key();
                async move { kv.get(key, Some(GetOptions::new().with_count_only())).await }
            })
            .await?;
        header_revision(op, resp.header())
    }

    fn probe_key(&self) -> Vec<u8> {
        self.full_key("\0ferry-probe")
    }

    /// Whether the state at `rev` can still be read (not compacted; a future revision counts as
    /// readable).
    async fn readable(&self, rev: Rev) -> StoreResult<bool> {
        let res = self
            .timed("probe revision", || {
                let mut kv = self.client.kv_client();
                let key = self.probe_key();
                let opts = GetOptions::new().with_count_only().with_revision(rev);
                async move { kv.get(key, Some(opts)).await }
            })
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if is_compacted(&e) => Ok(false),
            Err(e) if is_future(&e) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    async fn txn(&self, op: &'static str, txn: Txn) -> Result<TxnResponse, EtcdError> {
        self.timed(op, || {
            let mut kv = self.client.kv_client();
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await
    }

    /// The `Range` answer of a failed guarded transaction: Conflict or NotFound.
    fn txn_failure(
        &self,
        op: &'static str,
        key: &str,
        expected: Option<Rev>,
        resp: &TxnResponse,
    ) -> StoreError {
        let current = match resp.op_responses().into_iter().next() {
            Some(TxnOpResponse::Get(get)) => get.kvs().first().map_or(0, KeyValue::mod_revision),
            _ => {
                return EtcdError::Unexpected {
                    op,
                    what: "failed transaction without a range response".into(),
                }
                .into()
            }
        };
        match expected {
            Some(e) => StoreError::Conflict {
                key: key.to_owned(),
                expected: e,
                current_rev: current,
            },
            None => StoreError::NotFound {
                key: key.to_owned(),
            },
        }
    }

    /// Guards of an update or delete: the key is live (and at `expected`).
    fn guards(k: &[u8], expected: Option<Rev>) -> Vec<Compare> {
        let mut cmp = vec![Compare::mod_revision(k.to_vec(), CompareOp::Greater, 0)];
        if let Some(e) = expected {
            cmp.push(Compare::mod_revision(k.to_vec(), CompareOp::Equal, e));
        }
        cmp
    }
}

/// Pause before a request that never left is made again.
const UNSENT_PAUSE: Duration = Duration::from_millis(5);

/// True for a request that failed before it was sent: the channel could not connect to the
/// endpoint it picked (tonic's `tcp connect error`). Any other failure may have reached etcd.
fn unsent(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message() == "tcp connect error")
}

async fn timed<T>(
    op: &'static str,
    after: Duration,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, EtcdError> {
    match tokio::time::timeout(after, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(EtcdError::Request { op, source }),
        Err(_) => Err(EtcdError::Timeout { op, after }),
    }
}

fn header_revision(
    op: &'static str,
    header: Option<&etcd_client::ResponseHeader>,
) -> Result<Rev, EtcdError> {
    header
        .map(etcd_client::ResponseHeader::revision)
        .ok_or_else(|| EtcdError::Unexpected {
            op,
            what: "response without header".into(),
        })
}

#[async_trait]
impl Store for EtcdStore {
    async fn current_rev(&self) -> StoreResult<Rev> {
        Ok(self.header_rev("current revision").await?)
    }

    /// etcd does not report its compaction revision; it is found by bisecting with count-only
    /// reads at a revision (about log2(current) requests; callers use it rarely).
    async fn compacted_rev(&self) -> StoreResult<Rev> {
        let current = self.current_rev().await?;
        if current <= 1 || self.readable(1).await? {
            return Ok(0);
        }
        // Invariant: `lo` is compacted, `hi` readable (the current revision always is).
        let (mut lo, mut hi) = (1, current);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.readable(mid).await? {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Ok(hi)
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Kv>> {
        let resp = self
            .timed("get", || {
                let mut kv = self.client.kv_client();
                let key = self.full_key(key);
                async move { kv.get(key, None).await }
            })
            .await?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| self.kv("get", kv))
            .transpose()?)
    }

    async fn list(
        &self,
        prefix: &str,
        at: Option<Rev>,
        start_after: Option<&str>,
        limit: Option<usize>,
    ) -> StoreResult<ListPage> {
        let (prefix_start, end) = self.prefix_range(prefix);
        let start = match start_after {
            Some(after) => {
                let mut k = self.full_key(after);
                k.push(0);
                k.max(prefix_start)
            }
            None => prefix_start,
        };
        let at = at.filter(|r| *r > 0);
        let mut opts = GetOptions::new()
            .with_range(end)
            .with_revision(at.unwrap_or(0));
        if let Some(l) = limit.filter(|l| *l > 0) {
            opts = opts.with_limit(i64::try_from(l).unwrap_or(i64::MAX));
        }
        let resp = match self
            .timed("list", || {
                let mut kv = self.client.kv_client();
                let (start, opts) = (start.clone(), opts.clone());
                async move { kv.get(start, Some(opts)).await }
            })
            .await
        {
            Ok(resp) => resp,
            Err(e) if is_compacted(&e) => {
                let requested = at.unwrap_or(0);
                return Err(StoreError::Compacted {
                    requested,
                    compacted: self.compacted_rev().await?,
                });
            }
            Err(e) if is_future(&e) => {
                return Err(StoreError::FutureRevision {
                    requested: at.unwrap_or(0),
                    current: self.current_rev().await?,
                })
            }
            Err(e) => return Err(e.into()),
        };
        let rev = match at {
            Some(r) => r,
            None => header_revision("list", resp.header())?,
        };
        let kvs = resp
            .kvs()
            .iter()
            .map(|kv| self.kv("list", kv))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ListPage {
            kvs,
            rev,
            more: resp.more(),
        })
    }

    async fn count(&self, prefix: &str) -> StoreResult<u64> {
        let (start, end) = self.prefix_range(prefix);
        let resp = self
            .timed("count", || {
                let mut kv = self.client.kv_client();
                let start = start.clone();
                let opts = GetOptions::new().with_range(end.clone()).with_count_only();
                async move { kv.get(start, Some(opts)).await }
            })
            .await?;
        Ok(u64::try_from(resp.count()).unwrap_or(0))
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> StoreResult<Kv> {
        let k = self.full_key(key);
        let txn = Txn::new()
            .when([Compare::mod_revision(k.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(k, value.clone(), None)]);
        let resp = self.txn("create", txn).await?;
        if !resp.succeeded() {
            return Err(StoreError::AlreadyExists {
                key: key.to_owned(),
            });
        }
        let rev = header_revision("create", resp.header())?;
        Ok(Kv {
            key: key.to_owned(),
            value,
            create_rev: rev,
            mod_rev: rev,
        })
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Option<Rev>) -> StoreResult<Kv> {
        let k = self.full_key(key);
        let txn = Txn::new()
            .when(EtcdStore::guards(&k, expected))
            .and_then([TxnOp::put(
                k.clone(),
                value.clone(),
                Some(PutOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(k, None)]);
        let resp = self.txn("update", txn).await?;
        if !resp.succeeded() {
            return Err(self.txn_failure("update", key, expected, &resp));
        }
        let rev = header_revision("update", resp.header())?;
        let create_rev = match resp.op_responses().into_iter().next() {
            Some(TxnOpResponse::Put(put)) => put.prev_key().map(KeyValue::create_revision),
            _ => None,
        }
        .ok_or_else(|| EtcdError::Unexpected {
            op: "update",
            what: "put response without the previous value".into(),
        })?;
        Ok(Kv {
            key: key.to_owned(),
            value,
            create_rev,
            mod_rev: rev,
        })
    }

    async fn delete(&self, key: &str, expected: Option<Rev>) -> StoreResult<(Rev, Kv)> {
        let k = self.full_key(key);
        let txn = Txn::new()
            .when(EtcdStore::guards(&k, expected))
            .and_then([TxnOp::delete(
                k.clone(),
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(k, None)]);
        let resp = self.txn("delete", txn).await?;
        if !resp.succeeded() {
            return Err(self.txn_failure("delete", key, expected, &resp));
        }
        let rev = header_revision("delete", resp.header())?;
        let prev = match resp.op_responses().into_iter().next() {
            Some(TxnOpResponse::Delete(del)) => {
                del.prev_kvs().first().map(|kv| self.kv("delete", kv))
            }
            _ => None,
        }
        .ok_or_else(|| EtcdError::Unexpected {
            op: "delete",
            what: "delete response without the previous value".into(),
        })??;
        Ok((rev, prev))
    }

    async fn watch(&self, prefix: &str, after: Rev) -> StoreResult<WatchStream> {
        let after = after.max(0);
        // Same rule as list: history after `after` is complete iff the state at `after` is
        // readable (etcd itself would accept one revision less).
        if !self.readable(after.max(1)).await? {
            return Err(StoreError::Compacted {
                requested: after,
                compacted: self.compacted_rev().await?,
            });
        }
        let (start, end) = self.prefix_range(prefix);
        let opts = WatchOptions::new()
            .with_range(end)
            .with_start_revision(after + 1)
            .with_prev_key()
            .with_progress_notify();
        let stream = self
            .timed("watch", || {
                let mut w = self.client.watch_client();
                let (start, opts) = (start.clone(), opts.clone());
                async move { w.watch(start, Some(opts)).await }
            })
            .await?;
        let state = EtcdWatch {
            stream,
            namespace: self.namespace.clone(),
            requested: after,
            queue: VecDeque::new(),
            done: false,
        };
        Ok(futures::stream::unfold(state, |mut w| async move {
            let item = w.next().await?;
            Some((item, w))
        })
        .boxed())
    }

    async fn compact(&self, rev: Rev) -> StoreResult<()> {
        let res = self
            .timed("compact", || {
                let mut kv = self.client.kv_client();
                async move {
                    kv.compact(rev, Some(CompactionOptions::new().with_physical()))
                        .await
                }
            })
            .await;
        match res {
            Ok(_) => Ok(()),
            // Already compacted at or beyond `rev`: nothing to do.
            Err(e) if is_compacted(&e) => Ok(()),
            Err(e) if is_future(&e) => Err(StoreError::FutureRevision {
                requested: rev,
                current: self.current_rev().await?,
            }),
            Err(e) => Err(e.into()),
        }
    }
}

/// One watch's state.
struct EtcdWatch {
    stream: etcd_client::WatchStream,
    namespace: String,
    requested: Rev,
    queue: VecDeque<WatchItem>,
    done: bool,
}

impl EtcdWatch {
    async fn next(&mut self) -> Option<StoreResult<WatchItem>> {
        loop {
            if let Some(item) = self.queue.pop_front() {
                return Some(Ok(item));
            }
            if self.done {
                return None;
            }
            let resp = match self.stream.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => {
                    self.done = true;
                    return Some(Err(StoreError::Backend(
                        "etcd closed the watch stream".into(),
                    )));
                }
                Err(source) => {
                    self.done = true;
                    return Some(Err(EtcdError::Request {
                        op: "watch",
                        source,
                    }
                    .into()));
                }
            };
            if resp.compact_revision() > 0 {
                self.done = true;
                return Some(Err(StoreError::Compacted {
                    requested: self.requested,
                    compacted: resp.compact_revision(),
                }));
            }
            if resp.canceled() {
                self.done = true;
                return Some(Err(StoreError::Backend(format!(
                    "etcd canceled the watch: {}",
                    resp.cancel_reason()
                ))));
            }
            if resp.created() && resp.events().is_empty() {
                continue;
            }
            if resp.events().is_empty() {
                // A progress notification: every event up to this revision was sent.
                match header_revision("watch", resp.header()) {
                    Ok(rev) => return Some(Ok(WatchItem::Progress(rev))),
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e.into()));
                    }
                }
            }
            for ev in resp.events() {
                match self.event(ev) {
                    Ok(ev) => self.queue.push_back(WatchItem::Event(ev)),
                    Err(e) => {
                        self.done = true;
                        self.queue.clear();
                        return Some(Err(e.into()));
                    }
                }
            }
        }
    }

    fn event(&self, ev: &etcd_client::Event) -> Result<Event, EtcdError> {
        let unexpected = |what: String| EtcdError::Unexpected { op: "watch", what };
        let kv = ev
            .kv()
            .ok_or_else(|| unexpected("event without a key-value".into()))?;
        let to_kv = |kv: &KeyValue| -> Result<Kv, EtcdError> {
            let rest = kv
                .key()
                .strip_prefix(self.namespace.as_bytes())
                .ok_or_else(|| unexpected(format!("key {:?} outside the namespace", kv.key())))?;
            Ok(Kv {
                key: String::from_utf8(rest.to_vec())
                    .map_err(|_| unexpected(format!("non-UTF-8 key {:?}", kv.key())))?,
                value: kv.value().to_vec(),
                create_rev: kv.create_revision(),
                mod_rev: kv.mod_revision(),
            })
        };
        // prev_kv is absent for a create, and (rarely) when it was already compacted.
        let prev = ev.prev_kv().map(to_kv).transpose()?;
        Ok(match ev.event_type() {
            EventType::Put => Event {
                kind: EventKind::Put,
                kv: to_kv(kv)?,
                prev,
            },
            EventType::Delete => {
                let key = to_kv(kv)?;
                Event {
                    kind: EventKind::Delete,
                    kv: Kv {
                        key: key.key,
                        value: prev.as_ref().map(|p| p.value.clone()).unwrap_or_default(),
                        create_rev: prev.as_ref().map_or(0, |p| p.create_rev),
                        mod_rev: kv.mod_revision(),
                    },
                    prev,
                }
            }
        })
    }
}
