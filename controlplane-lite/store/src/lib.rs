//! `ferry-store`: the storage seam of `ferry-server`: a revisioned key-value store in the kine / etcd v3 model.
//!
//! Every write gets a new, cluster-wide, strictly increasing revision; that revision is the
//! Kubernetes `resourceVersion`. Values are the objects' JSON; the API layer sets
//! `metadata.resourceVersion` from [`Kv::mod_rev`] when it reads them. Two backends implement
//! [`Store`]: embedded SQLite (the default, one machine) and etcd v3 (several `ferry-server`
//! replicas on one etcd cluster).
//!
//! Keys are etcd-style paths: `/registry/<resource>/<namespace>/<name>` for namespaced objects,
//! `/registry/<resource>/<name>` for cluster-scoped ones. A prefix given to [`Store::list`] or
//! [`Store::watch`] ends with `/`.

#![cfg_attr(not(test), warn(unused_crate_dependencies))]
#![forbid(unsafe_code)]

use async_trait::async_trait;
use futures::stream::BoxStream;

pub mod etcd;
mod keys;
pub mod sqlite;

/// A revision (= `resourceVersion`).
pub type Rev = i64;

/// One stored key at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    /// The key.
    pub key: String,
    /// The value (the object's JSON).
    pub value: Vec<u8>,
    /// Revision that created the key (its current incarnation).
    pub create_rev: Rev,
    /// Revision of the last change.
    pub mod_rev: Rev,
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Created or updated (`prev` tells which).
    Put,
    /// Deleted.
    Delete,
}

/// One change, as a watcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The new state; for a delete, the last state before deletion with `mod_rev` set to the
    /// deletion's revision.
    pub kv: Kv,
    /// The state before this change (`None` for a create).
    pub prev: Option<Kv>,
}

/// An item of a watch stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchItem {
    /// A change with revision > the watch's start, delivered in revision order.
    Event(Event),
    /// Progress: every change up to this revision has been delivered (used for bookmarks).
    Progress(Rev),
}

/// A live watch; ends only when the store shuts down, the watcher falls too far behind (then it
/// yields [`StoreError::Compacted`] or [`StoreError::Lagged`] and ends) or the backend fails
/// (etcd connection lost: it yields [`StoreError::Backend`] and ends). The caller re-watches
/// from the last revision it saw.
pub type WatchStream = BoxStream<'static, Result<WatchItem, StoreError>>;

/// A page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    /// Live keys under the prefix at `rev`, in key order.
    pub kvs: Vec<Kv>,
    /// The snapshot revision the page was read at (use it for later pages).
    pub rev: Rev,
    /// More keys follow the last one returned.
    pub more: bool,
}

/// Store failures. The API layer maps them to Kubernetes Status codes.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Create of a key that exists (409 AlreadyExists).
    #[error("key {key} already exists")]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// The key is absent (404).
    #[error("key {key} not found")]
    NotFound {
        /// The key.
        key: String,
    },
    /// The expected revision does not match the current one (409 Conflict); retryable by
    /// re-reading `current`.
    #[error("key {key} was modified (expected revision {expected}, current {current_rev})")]
    Conflict {
        /// The key.
        key: String,
        /// The revision the caller expected.
        expected: Rev,
        /// The current revision of the key (0 if it no longer exists).
        current_rev: Rev,
    },
    /// The requested revision was compacted away (410 Expired: relist).
    #[error("revision {requested} has been compacted (oldest available {compacted})")]
    Compacted {
        /// What was asked for.
        requested: Rev,
        /// The compaction floor.
        compacted: Rev,
    },
    /// The requested revision is newer than the store's (504 "Too large resource version").
    #[error("revision {requested} is newer than the current revision {current}")]
    FutureRevision {
        /// What was asked for.
        requested: Rev,
        /// The current revision.
        current: Rev,
    },
    /// A watcher fell too far behind and was dropped (the client re-watches).
    #[error("watcher fell behind and was dropped")]
    Lagged,
    /// The backend failed (I/O, connection, corruption); retryable at the caller's discretion.
    #[error("store backend: {0}")]
    Backend(String),
}

/// Result alias for store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// `e` and its sources, `": "`-separated (for [`StoreError::Backend`], which carries text).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        msg.push_str(": ");
        msg.push_str(&src.to_string());
        cur = src.source();
    }
    msg
}

/// A revisioned key-value store (see the module docs).
///
/// Common rules of both backends:
/// - the compaction floor ([`Store::compacted_rev`]) is the oldest revision whose state can be
///   read; `list` at a revision below it and `watch` from a revision below it fail with
///   [`StoreError::Compacted`] (a watch may also fail that way in-stream);
/// - `at: Some(r)` with `r <= 0` means the latest revision; `limit: Some(0)` means no limit;
/// - with `expected` set, a missing key is a [`StoreError::Conflict`] with `current_rev` 0
///   (without it, [`StoreError::NotFound`]).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The newest revision.
    async fn current_rev(&self) -> StoreResult<Rev>;

    /// The oldest revision still readable (the compaction floor).
    async fn compacted_rev(&self) -> StoreResult<Rev>;

    /// The latest live value of `key`.
    async fn get(&self, key: &str) -> StoreResult<Option<Kv>>;

    /// Live keys under `prefix` at revision `at` (latest when `None`), in key order, starting
    /// strictly after `start_after`, at most `limit` of them.
    async fn list(
        &self,
        prefix: &str,
        at: Option<Rev>,
        start_after: Option<&str>,
        limit: Option<usize>,
    ) -> StoreResult<ListPage>;

    /// Number of live keys under `prefix` at the latest revision.
    async fn count(&self, prefix: &str) -> StoreResult<u64>;

    /// Creates `key`; fails with `AlreadyExists` when it is live.
    async fn create(&self, key: &str, value: Vec<u8>) -> StoreResult<Kv>;

    /// Replaces the live `key`. With `expected` set, only if its `mod_rev` equals it.
    async fn update(&self, key: &str, value: Vec<u8>, expected: Option<Rev>) -> StoreResult<Kv>;

    /// Deletes the live `key` (with `expected`, only at that `mod_rev`). Returns the deletion
    /// revision and the last state.
    async fn delete(&self, key: &str, expected: Option<Rev>) -> StoreResult<(Rev, Kv)>;

    /// Changes under `prefix` with revision > `after`, in order, then live changes, with
    /// periodic [`WatchItem::Progress`]. `Compacted` when `after` is below the floor.
    async fn watch(&self, prefix: &str, after: Rev) -> StoreResult<WatchStream>;

    /// Drops history below `rev` (superseded values and tombstones).
    async fn compact(&self, rev: Rev) -> StoreResult<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error types can cross threads and be wrapped by `anyhow` (`ferry-server` does).
    #[test]
    fn errors_are_send_sync_static() {
        fn check<E: std::error::Error + Send + Sync + 'static>() {}
        check::<StoreError>();
        check::<sqlite::SqliteError>();
        check::<etcd::EtcdError>();
    }

    /// Stores can be shared as `Arc<dyn Store>`.
    #[test]
    fn backends_are_stores() {
        fn check<S: Store>() {}
        check::<sqlite::SqliteStore>();
        check::<etcd::EtcdStore>();
    }

    #[test]
    fn error_chain_includes_sources() {
        let e = sqlite::SqliteError::Sql {
            op: "commit",
            source: rusqlite::Error::InvalidQuery,
        };
        let msg = StoreError::from(e).to_string();
        assert!(msg.contains("sqlite commit: "), "{msg}");
        assert!(msg.contains("Query is not read-only"), "{msg}");
    }
}
