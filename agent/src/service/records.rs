//! The service reconciler's local copies of the Services and EndpointSlices: a watch per kind
//! kept as compact records ([`super::table::ServiceRecord`], [`super::table::SliceRecord`]) of
//! only what the service table reads, instead of a kube-rs reflector store of the full API
//! objects (which at 30,000 Services held most of the agent's memory: `managedFields`,
//! annotations, timestamps and every unset field of each object).
//!
//! ```text
//! watcher (list + watch, kube-rs default backoff) --event--> Mirror::apply
//!     convert(object) -> record (None: not served, dropped) -> map (namespace, name) -> Arc<record>
//!     a relist is buffered and swapped in at its end, as kube-rs's reflector does
//!     changed records (not every event) call on_change and wake the owner
//! ```
//!
//! An update that leaves the record as it was (a status write, a new resourceVersion, a label
//! the table does not read) wakes nobody.

use futures::StreamExt as _;
use k8s_openapi::serde::de::DeserializeOwned;
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Resource, ResourceExt as _};
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{watch, Notify};

/// An object's `(namespace, name)`.
type Key = (String, String);

fn key<K: Resource>(o: &K) -> Key {
    (o.namespace().unwrap_or_default(), o.name_any())
}

/// The records of one watch, applied event by event (pure: the watch task drives it).
#[derive(Debug)]
pub(crate) struct Mirror<R> {
    map: HashMap<Key, Arc<R>>,
    /// A relist in progress: what it has delivered so far.
    relist: Option<HashMap<Key, Arc<R>>>,
}

impl<R> Default for Mirror<R> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            relist: None,
        }
    }
}

/// What one event did to a [`Mirror`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Applied {
    /// The records changed (the table may change).
    pub(crate) changed: bool,
    /// A (re)list just completed.
    pub(crate) listed: bool,
}

impl<R: PartialEq> Mirror<R> {
    /// Applies one watch event; `convert` makes an object's record (`None`: not served).
    pub(crate) fn apply<K: Resource>(
        &mut self,
        event: watcher::Event<K>,
        convert: &impl Fn(&K) -> Option<R>,
    ) -> Applied {
        let mut out = Applied {
            changed: false,
            listed: false,
        };
        match event {
            watcher::Event::Apply(o) => {
                let k = key(&o);
                out.changed = match convert(&o) {
                    Some(r) => match self.map.get(&k) {
                        Some(old) if **old == r => false,
                        _ => {
                            self.map.insert(k, Arc::new(r));
                            true
                        }
                    },
                    None => self.map.remove(&k).is_some(),
                };
            }
            watcher::Event::Delete(o) => out.changed = self.map.remove(&key(&o)).is_some(),
            watcher::Event::Init => self.relist = Some(HashMap::new()),
            watcher::Event::InitApply(o) => {
                let k = key(&o);
                if let (Some(r), Some(buf)) = (convert(&o), self.relist.as_mut()) {
                    // An unchanged object keeps its record: a relist does not double the memory.
                    let r = match self.map.get(&k) {
                        Some(old) if **old == r => old.clone(),
                        _ => Arc::new(r),
                    };
                    buf.insert(k, r);
                }
            }
            watcher::Event::InitDone => {
                let fresh = self.relist.take().unwrap_or_default();
                out.changed = fresh != self.map;
                self.map = fresh;
                out.listed = true;
            }
        }
        out
    }

    /// Every record (in no particular order).
    pub(crate) fn records(&self) -> Vec<Arc<R>> {
        self.map.values().cloned().collect()
    }
}

/// The watch ended before its first complete list (its task is gone).
#[derive(Debug, thiserror::Error)]
#[error("the watch ended before its first complete list")]
pub(crate) struct WatchEnded;

/// The records of a running watch ([`spawn`]).
#[derive(Debug, Clone)]
pub(crate) struct Records<R> {
    mirror: Arc<Mutex<Mirror<R>>>,
    listed: watch::Receiver<bool>,
}

impl<R: PartialEq> Records<R> {
    /// Every record now (cheap: the records are shared, not copied).
    pub(crate) fn snapshot(&self) -> Vec<Arc<R>> {
        self.mirror
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .records()
    }

    /// Waits for the first complete list.
    pub(crate) async fn ready(&self) -> Result<(), WatchEnded> {
        let mut rx = self.listed.clone();
        rx.wait_for(|l| *l)
            .await
            .map(|_| ())
            .map_err(|_| WatchEnded)
    }
}

/// What [`spawn`] needs besides the API.
pub(crate) struct Watch<F, C> {
    /// Prefix of the logged watch errors.
    pub(crate) name: &'static str,
    /// Poked when the records changed and when a (re)list completed.
    pub(crate) wake: Arc<Notify>,
    /// Called when the records changed (before the wake).
    pub(crate) on_change: C,
    /// Object -> record (`None`: not served).
    pub(crate) convert: F,
}

/// Watches `api` in the background (a tokio task, kube-rs's default backoff on errors; errors are
/// logged at `warn` and wake nobody) and keeps its records.
pub(crate) fn spawn<K, R, F, C>(api: Api<K>, w: Watch<F, C>) -> Records<R>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    R: PartialEq + Send + Sync + 'static,
    F: Fn(&K) -> Option<R> + Send + 'static,
    C: FnMut() + Send + 'static,
{
    let mirror: Arc<Mutex<Mirror<R>>> = Arc::default();
    let (tx, listed) = watch::channel(false);
    let records = Records {
        mirror: mirror.clone(),
        listed,
    };
    let Watch {
        name,
        wake,
        mut on_change,
        convert,
    } = w;
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!("{name}: {e}");
                    continue;
                }
            };
            let applied = mirror
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .apply(event, &convert);
            if applied.changed {
                on_change();
            }
            if applied.listed {
                tx.send_replace(true);
            }
            if applied.changed || applied.listed {
                wake.notify_one();
            }
        }
    });
    records
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use std::collections::BTreeMap;
    use watcher::Event;

    /// A ConfigMap `ns/name` whose record is its `v` entry (no `v`: not served).
    fn cm(name: &str, v: Option<&str>, rv: &str) -> ConfigMap {
        let mut c = ConfigMap::default();
        c.metadata.namespace = Some("ns".into());
        c.metadata.name = Some(name.into());
        c.metadata.resource_version = Some(rv.into());
        c.data = v.map(|v| BTreeMap::from([("v".to_owned(), v.to_owned())]));
        c
    }

    fn convert(c: &ConfigMap) -> Option<String> {
        c.data.as_ref()?.get("v").cloned()
    }

    fn values(m: &Mirror<String>) -> Vec<String> {
        let mut v: Vec<String> = m.records().iter().map(|r| (**r).clone()).collect();
        v.sort();
        v
    }

    const CHANGED: Applied = Applied {
        changed: true,
        listed: false,
    };
    const SAME: Applied = Applied {
        changed: false,
        listed: false,
    };

    #[test]
    fn records_follow_the_events_and_only_changes_count() {
        let mut m = Mirror::default();
        assert_eq!(
            m.apply(Event::Apply(cm("a", Some("1"), "1")), &convert),
            CHANGED
        );
        // A new resourceVersion with the same record: nothing changed.
        assert_eq!(
            m.apply(Event::Apply(cm("a", Some("1"), "2")), &convert),
            SAME
        );
        assert_eq!(
            m.apply(Event::Apply(cm("a", Some("2"), "3")), &convert),
            CHANGED
        );
        assert_eq!(
            m.apply(Event::Apply(cm("b", Some("9"), "4")), &convert),
            CHANGED
        );
        assert_eq!(values(&m), ["2", "9"]);
        // An object that stops being served is dropped; one never served changes nothing.
        assert_eq!(m.apply(Event::Apply(cm("a", None, "5")), &convert), CHANGED);
        assert_eq!(m.apply(Event::Apply(cm("c", None, "6")), &convert), SAME);
        assert_eq!(m.apply(Event::Delete(cm("c", None, "7")), &convert), SAME);
        assert_eq!(values(&m), ["9"]);
        assert_eq!(
            m.apply(Event::Delete(cm("b", Some("9"), "8")), &convert),
            CHANGED
        );
        assert!(values(&m).is_empty());
    }

    #[test]
    fn a_relist_is_swapped_in_at_its_end_and_reuses_unchanged_records() {
        let mut m = Mirror::default();
        m.apply(Event::Apply(cm("a", Some("1"), "1")), &convert);
        m.apply(Event::Apply(cm("b", Some("2"), "2")), &convert);
        let a_before = m.map[&("ns".to_owned(), "a".to_owned())].clone();
        assert_eq!(m.apply(Event::<ConfigMap>::Init, &convert), SAME);
        assert_eq!(
            m.apply(Event::InitApply(cm("a", Some("1"), "3")), &convert),
            SAME
        );
        assert_eq!(
            m.apply(Event::InitApply(cm("c", Some("3"), "4")), &convert),
            SAME
        );
        // Until the list is complete the old records serve.
        assert_eq!(values(&m), ["1", "2"]);
        let done = m.apply(Event::<ConfigMap>::InitDone, &convert);
        assert_eq!(
            done,
            Applied {
                changed: true,
                listed: true
            }
        );
        assert_eq!(values(&m), ["1", "3"], "b was deleted while not watched");
        assert!(Arc::ptr_eq(
            &a_before,
            &m.map[&("ns".to_owned(), "a".to_owned())]
        ));
        // The same list again: complete, nothing changed.
        m.apply(Event::<ConfigMap>::Init, &convert);
        m.apply(Event::InitApply(cm("a", Some("1"), "5")), &convert);
        m.apply(Event::InitApply(cm("c", Some("3"), "6")), &convert);
        assert_eq!(
            m.apply(Event::<ConfigMap>::InitDone, &convert),
            Applied {
                changed: false,
                listed: true
            }
        );
    }
}
