//! [`Expectations`]: writes a controller made that its (asynchronously updated) local store does
//! not show yet. Without them a round right after a write decides on stale state and writes
//! twice: creates a second pod, hands a subnet out twice, scales a ReplicaSet twice.
//!
//! An expectation is a key (the created pod's uid, the node given a subnet, the Deployment whose
//! ReplicaSets were written) with a value (what was written) and the time it was made. Each round
//! first [`settles`](Expectations::settle) them against the store (the caller says what "seen"
//! means: the pod is there, the node shows a podCIDR, the ReplicaSets reached the generation
//! written), then the ones still pending count as done. An expectation older than the optional
//! time-to-live is forgotten, so a write whose effect never shows (its event lost, the object
//! changed by someone else) cannot block forever. Per-owner expectations (the ReplicaSet
//! controller's creations per ReplicaSet) are a map of these.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;
use tokio::time::Instant;

/// Writes made but not yet observed; see the module documentation.
#[derive(Debug, Clone)]
pub struct Expectations<K, V = ()> {
    pending: HashMap<K, (V, Instant)>,
    ttl: Option<Duration>,
}

impl<K, V> Default for Expectations<K, V> {
    fn default() -> Self {
        Self {
            pending: HashMap::new(),
            ttl: None,
        }
    }
}

impl<K: Eq + Hash, V> Expectations<K, V> {
    /// Expectations that hold until seen.
    pub fn new() -> Self {
        Self::default()
    }

    /// Expectations forgotten `ttl` after they were made even if never seen.
    pub fn with_ttl(ttl: Duration) -> Self {
        Self {
            pending: HashMap::new(),
            ttl: Some(ttl),
        }
    }

    /// Records a write of `value` under `key`, made now (replacing an earlier one of `key`).
    pub fn expect(&mut self, key: K, value: V) {
        self.pending.insert(key, (value, Instant::now()));
    }

    /// Forgets the expectations `seen` says the store now shows (or that no longer matter), and
    /// those older than the time-to-live.
    pub fn settle(&mut self, mut seen: impl FnMut(&K, &V) -> bool) {
        let ttl = self.ttl;
        self.pending
            .retain(|k, (v, at)| !seen(k, v) && ttl.is_none_or(|ttl| at.elapsed() < ttl));
    }

    /// Whether a write under `key` is pending.
    pub fn contains(&self, key: &K) -> bool {
        self.pending.contains_key(key)
    }

    /// The pending write under `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.pending.get(key).map(|(v, _)| v)
    }

    /// Forgets the write under `key`.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.pending.remove(key).map(|(v, _)| v)
    }

    /// How many writes are pending.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether no write is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The pending writes.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.pending.iter().map(|(k, (v, _))| (k, v))
    }

    /// The values of the pending writes.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.pending.values().map(|(v, _)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settle_forgets_what_is_seen() {
        let mut e: Expectations<&str, u32> = Expectations::new();
        e.expect("a", 1);
        e.expect("b", 2);
        assert_eq!((e.len(), e.get(&"a")), (2, Some(&1)));
        e.settle(|k, _| *k == "a");
        assert!(!e.contains(&"a") && e.contains(&"b"));
        assert_eq!(e.values().copied().collect::<Vec<_>>(), [2]);
        e.expect("b", 3);
        assert_eq!(e.get(&"b"), Some(&3), "a new write replaces the old one");
        assert_eq!(e.remove(&"b"), Some(3));
        assert!(e.is_empty());
    }

    #[test]
    fn without_ttl_nothing_expires() {
        let mut e: Expectations<u8> = Expectations::new();
        e.expect(1, ());
        std::thread::sleep(Duration::from_millis(5));
        e.settle(|_, _| false);
        assert!(e.contains(&1));
    }

    #[test]
    fn ttl_forgets_old_expectations() {
        let mut e: Expectations<u8> = Expectations::with_ttl(Duration::from_millis(30));
        e.expect(1, ());
        e.settle(|_, _| false);
        assert!(e.contains(&1), "young: kept");
        std::thread::sleep(Duration::from_millis(40));
        e.expect(2, ());
        e.settle(|_, _| false);
        assert!(!e.contains(&1), "expired");
        assert!(e.contains(&2));
    }
}
