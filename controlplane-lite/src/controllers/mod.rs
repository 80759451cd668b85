//! Controllers that run inside `ferry-server`. Each talks to the API with kube-rs only
//! (watch -> local store -> reconcile), so it works against any Kubernetes API server.

pub mod endpointslice;
pub mod nodeipam;
pub mod nodelifecycle;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use std::sync::Arc;
use tokio::sync::Notify;

/// Starts a reflector of `api` in the background: a local store kept in sync by a watch (with
/// backoff on errors), poking `wake` on every change so the owner reconciles.
pub fn spawn_reflector<K>(api: Api<K>, wake: Arc<Notify>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    tokio::spawn(async move {
        let mut s = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .touched_objects()
            .boxed();
        while s.next().await.is_some() {
            wake.notify_one();
        }
    });
    store
}
