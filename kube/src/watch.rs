//! The one watch helper: a reflector (list + watch -> local [`Store`], with kube-rs's default
//! backoff on errors) running in the background, poking a [`Notify`] so its owner reconciles.
//!
//! By default every object event (applied, deleted, listed) and every watch error wakes the
//! owner, and a (re)list's start and end do not (kube-rs's `touched_objects`). The owner can
//! narrow that with [`Reflector::wake_if`] (the agent wakes only when what it reads from a Node
//! changed), narrow the watch with a label or field selector ([`Reflector::labels`],
//! [`Reflector::fields`]: the kubelet watches only its node's pods), log errors under a name,
//! and share one `Notify` between several reflectors. [`ready`] waits for the first complete list.
//!
//! A reflector that wakes its owner only when what it reads from a Node changed, and logs watch
//! errors without waking it (the agent's):
//!
//! ```no_run
//! # async fn doc(client: kube::Client) -> Result<(), ferry_kube::watch::WatchError> {
//! use ferry_kube::watch::{self, Reflector};
//! use k8s_openapi::api::core::v1::Node;
//! use kube::runtime::watcher::Event;
//! use std::collections::HashMap;
//! let mut seen: HashMap<String, Option<String>> = HashMap::new(); // name -> podCIDR
//! let nodes = Reflector::new(kube::Api::<Node>::all(client))
//!     .name("Node watch failed (retrying with backoff)")
//!     .wake_on_error(false)
//!     .wake_if(move |event| match event {
//!         Event::Apply(n) | Event::InitApply(n) => {
//!             let name = n.metadata.name.clone().unwrap_or_default();
//!             let cidr = n.spec.as_ref().and_then(|s| s.pod_cidr.clone());
//!             seen.insert(name, cidr.clone()) != Some(cidr)
//!         }
//!         Event::Delete(n) => {
//!             seen.remove(n.metadata.name.as_deref().unwrap_or_default());
//!             true
//!         }
//!         Event::Init | Event::InitDone => true,
//!     })
//!     .spawn();
//! watch::ready(&nodes).await?;
//! # Ok(())
//! # }
//! ```

use futures::StreamExt as _;
use kube::runtime::reflector::{self, store::Writer, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use tokio::sync::Notify;

/// The store never became ready: its reflector's writer was dropped (the task ended).
#[derive(Debug, thiserror::Error)]
#[error("the watch ended before its first complete list: {0}")]
pub struct WatchError(#[source] reflector::store::WriterDropped);

/// Waits until `store` holds a complete first list.
pub async fn ready<K>(store: &Store<K>) -> Result<(), WatchError>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    store.wait_until_ready().await.map_err(WatchError)
}

/// Decides whether a watch event wakes the owner.
type WakeIf<K> = Box<dyn FnMut(&watcher::Event<K>) -> bool + Send>;

/// A reflector to start; see the module documentation.
pub struct Reflector<K: Resource> {
    api: Api<K>,
    dyntype: K::DynamicType,
    config: watcher::Config,
    wake: Arc<Notify>,
    wake_if: WakeIf<K>,
    wake_on_error: bool,
    name: Option<String>,
}

impl<K: Resource> Debug for Reflector<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reflector")
            .field("config", &self.config)
            .field("wake_on_error", &self.wake_on_error)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The default wake-up policy: every object applied, deleted or listed (not the list markers).
pub fn touched<K>(event: &watcher::Event<K>) -> bool {
    matches!(
        event,
        watcher::Event::Apply(_) | watcher::Event::InitApply(_) | watcher::Event::Delete(_)
    )
}

impl<K> Reflector<K>
where
    K: Resource<DynamicType = ()> + 'static,
{
    /// A reflector of `api` (a statically typed resource).
    pub fn new(api: Api<K>) -> Self {
        Self::with_dyntype(api, ())
    }
}

impl<K: Resource + 'static> Reflector<K> {
    /// A reflector of `api` whose type is known at run time (`DynamicObject` of `dyntype`).
    pub fn with_dyntype(api: Api<K>, dyntype: K::DynamicType) -> Self {
        Self {
            api,
            dyntype,
            config: watcher::Config::default(),
            wake: Arc::new(Notify::new()),
            wake_if: Box::new(touched::<K>),
            wake_on_error: true,
            name: None,
        }
    }

    /// Pokes `wake` (shared with other reflectors) instead of a fresh `Notify`.
    pub fn wake(mut self, wake: Arc<Notify>) -> Self {
        self.wake = wake;
        self
    }

    /// The `Notify` this reflector pokes.
    pub fn notify(&self) -> &Arc<Notify> {
        &self.wake
    }

    /// Watches with `config` (selectors, page size, ...).
    pub fn config(mut self, config: watcher::Config) -> Self {
        self.config = config;
        self
    }

    /// Watches only the objects matching label selector `selector`.
    pub fn labels(mut self, selector: &str) -> Self {
        self.config = self.config.labels(selector);
        self
    }

    /// Watches only the objects matching field selector `selector` (`spec.nodeName=n1`).
    pub fn fields(mut self, selector: &str) -> Self {
        self.config = self.config.fields(selector);
        self
    }

    /// Wakes the owner only for the events `f` accepts (instead of [`touched`]). `f` sees every
    /// event in order, so it may keep state (what it last saw of each object).
    pub fn wake_if(mut self, f: impl FnMut(&watcher::Event<K>) -> bool + Send + 'static) -> Self {
        self.wake_if = Box::new(f);
        self
    }

    /// Whether a watch error wakes the owner (it does by default).
    pub fn wake_on_error(mut self, yes: bool) -> Self {
        self.wake_on_error = yes;
        self
    }

    /// Logs watch errors (at `warn`) as `"{name}: {error}"`; unnamed reflectors do not log.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

impl<K> Reflector<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    /// Starts the reflector in the background (a tokio task that runs for as long as the
    /// runtime); returns its store.
    pub fn spawn(self) -> Store<K> {
        let Self {
            api,
            dyntype,
            config,
            wake,
            mut wake_if,
            wake_on_error,
            name,
        } = self;
        let writer = Writer::new(dyntype);
        let store = writer.as_reader();
        tokio::spawn(async move {
            let mut events = reflector::reflector(writer, watcher(api, config))
                .default_backoff()
                .boxed();
            while let Some(event) = events.next().await {
                let poke = match &event {
                    Ok(e) => wake_if(e),
                    Err(e) => {
                        if let Some(name) = &name {
                            tracing::warn!("{name}: {e}");
                        }
                        wake_on_error
                    }
                };
                if poke {
                    wake.notify_one();
                }
            }
        });
        store
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    #[test]
    fn touched_ignores_list_markers() {
        assert!(touched(&watcher::Event::Apply(Pod::default())));
        assert!(touched(&watcher::Event::InitApply(Pod::default())));
        assert!(touched(&watcher::Event::Delete(Pod::default())));
        assert!(!touched::<Pod>(&watcher::Event::Init));
        assert!(!touched::<Pod>(&watcher::Event::InitDone));
    }
}
