//! The reconcile [`Loop`]: run a round, then wait for a wake-up or the resync period, forever.
//!
//! Every Ferry controller, the scheduler, the agent and the kubelet's dispatcher are
//! level-triggered: a round reads the local stores and converges the world, and the loop around
//! it decides when the next round runs:
//! - on a wake-up ([`Notify`], poked by the reflectors in [`crate::watch`] or by the owner), after
//!   an optional debounce (so a burst of events costs one round);
//! - else after the resync period (level-triggered: a missed event costs at most that);
//! - after a failed round ([`Outcome::Retry`]), after the retry period instead, when one is set
//!   (never later than the resync), doubling on every further failure up to a cap when backoff is
//!   set.
//!
//! The agent's loop (a faulty round retries sooner; a burst of Node events costs one round):
//!
//! ```no_run
//! # async fn reconcile() -> bool { false }
//! # async fn doc(wake: std::sync::Arc<tokio::sync::Notify>) {
//! use std::time::Duration;
//! let mut lp = ferry_kube::Loop::new(wake, Duration::from_secs(30))
//!     .retry(Duration::from_secs(2))
//!     .debounce(Duration::from_millis(100));
//! loop {
//!     let faulty = reconcile().await;
//!     lp.after(faulty).await;
//! }
//! # }
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// How a round went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Outcome {
    /// Done (or failed in a way only a later event or the resync fixes).
    #[default]
    Done,
    /// Failed, or a fault holds: run again after the retry period.
    Retry,
}

impl From<()> for Outcome {
    fn from((): ()) -> Self {
        Self::Done
    }
}

impl From<bool> for Outcome {
    /// `true`: a fault holds (retry).
    fn from(faulty: bool) -> Self {
        if faulty {
            Self::Retry
        } else {
            Self::Done
        }
    }
}

impl<T, E> From<Result<T, E>> for Outcome {
    fn from(r: Result<T, E>) -> Self {
        if r.is_ok() {
            Self::Done
        } else {
            Self::Retry
        }
    }
}

/// What ended a wait between rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// The `Notify` was poked.
    Notified,
    /// The period passed.
    Timeout,
}

/// The loop around a reconcile round; see the module documentation.
#[derive(Debug, Clone)]
pub struct Loop {
    wake: Arc<Notify>,
    resync: Duration,
    retry: Option<Duration>,
    max_retry: Option<Duration>,
    debounce: Option<Duration>,
    /// Consecutive failed rounds.
    failures: u32,
}

impl Loop {
    /// A loop woken by `wake`, resyncing every `resync`.
    pub fn new(wake: Arc<Notify>, resync: Duration) -> Self {
        Self {
            wake,
            resync,
            retry: None,
            max_retry: None,
            debounce: None,
            failures: 0,
        }
    }

    /// A loop woken only by `wake` (no resync: the kubelet's dispatcher, whose pod workers resync
    /// themselves).
    pub fn on_wake_only(wake: Arc<Notify>) -> Self {
        Self::new(wake, Duration::MAX)
    }

    /// After a failed round, runs the next one after `d` (capped at the resync period).
    pub fn retry(mut self, d: Duration) -> Self {
        self.retry = Some(d);
        self
    }

    /// After consecutive failed rounds, doubles the retry period up to `max` (capped at the
    /// resync period). Needs [`Loop::retry`].
    pub fn backoff(mut self, max: Duration) -> Self {
        self.max_retry = Some(max);
        self
    }

    /// After a wake-up, waits `d` more before the round, so a burst of events costs one round.
    pub fn debounce(mut self, d: Duration) -> Self {
        self.debounce = Some(d);
        self
    }

    /// The `Notify` that wakes this loop.
    pub fn notify(&self) -> &Arc<Notify> {
        &self.wake
    }

    /// How long to wait for a wake-up after a round that ended with `outcome` (and records it).
    pub fn period(&mut self, outcome: Outcome) -> Duration {
        match (outcome, self.retry) {
            (Outcome::Done, _) | (Outcome::Retry, None) => {
                self.failures = 0;
                self.resync
            }
            (Outcome::Retry, Some(first)) => {
                let d = match self.max_retry {
                    Some(max) => {
                        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
                        first.saturating_mul(factor).min(max.max(first))
                    }
                    None => first,
                };
                self.failures = self.failures.saturating_add(1);
                d.min(self.resync)
            }
        }
    }

    /// Waits for the next round after one that ended with `outcome`: a wake-up (then the
    /// debounce) or the period.
    pub async fn after(&mut self, outcome: impl Into<Outcome>) -> Woken {
        let period = self.period(outcome.into());
        if tokio::time::timeout(period, self.wake.notified())
            .await
            .is_ok()
        {
            if let Some(d) = self.debounce {
                tokio::time::sleep(d).await;
            }
            Woken::Notified
        } else {
            Woken::Timeout
        }
    }

    /// Runs `round` forever: once now, then after every wait ([`Loop::after`]).
    pub async fn run<F, Fut>(mut self, mut round: F) -> !
    where
        F: FnMut() -> Fut,
        Fut: Future,
        Fut::Output: Into<Outcome>,
    {
        loop {
            let outcome = round().await;
            self.after(outcome).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Instant;

    fn lp() -> Loop {
        Loop::new(Arc::new(Notify::new()), Duration::from_secs(10))
    }

    #[test]
    fn period_resync_retry_and_backoff() {
        let s = Duration::from_secs;
        let mut l = lp();
        assert_eq!(l.period(Outcome::Done), s(10));
        assert_eq!(l.period(Outcome::Retry), s(10), "no retry period: resync");
        let mut l = lp().retry(s(1));
        assert_eq!(l.period(Outcome::Retry), s(1));
        assert_eq!(l.period(Outcome::Retry), s(1), "no backoff: fixed");
        let mut l = lp().retry(s(1)).backoff(s(4));
        let got: Vec<_> = (0..5).map(|_| l.period(Outcome::Retry)).collect();
        assert_eq!(got, [s(1), s(2), s(4), s(4), s(4)]);
        assert_eq!(l.period(Outcome::Done), s(10));
        assert_eq!(
            l.period(Outcome::Retry),
            s(1),
            "a good round resets the backoff"
        );
        let mut l = Loop::on_wake_only(Arc::new(Notify::new()));
        assert_eq!(l.period(Outcome::Done), Duration::MAX);
        let mut l = lp().retry(s(30));
        assert_eq!(
            l.period(Outcome::Retry),
            s(10),
            "never later than the resync"
        );
        let mut l = lp().retry(s(1)).backoff(s(1000));
        for _ in 0..40 {
            assert!(l.period(Outcome::Retry) <= s(10));
        }
    }

    #[test]
    fn outcomes() {
        assert_eq!(Outcome::from(()), Outcome::Done);
        assert_eq!(Outcome::from(true), Outcome::Retry);
        assert_eq!(Outcome::from(Ok::<_, ()>(1)), Outcome::Done);
        assert_eq!(Outcome::from(Err::<(), _>("x")), Outcome::Retry);
    }

    #[tokio::test]
    async fn wakes_on_notify_after_debounce_or_on_timeout() {
        let wake = Arc::new(Notify::new());
        let mut l =
            Loop::new(wake.clone(), Duration::from_millis(50)).debounce(Duration::from_millis(30));
        let t = Instant::now();
        assert_eq!(l.after(()).await, Woken::Timeout);
        assert!(t.elapsed() >= Duration::from_millis(50));
        wake.notify_one(); // stored: the next wait returns at once, then debounces
        let t = Instant::now();
        assert_eq!(l.after(()).await, Woken::Notified);
        assert!(t.elapsed() >= Duration::from_millis(30));
    }

    #[tokio::test]
    async fn run_calls_round_again_on_wake_and_resync() {
        let wake = Arc::new(Notify::new());
        let rounds = Arc::new(AtomicU32::new(0));
        let l = Loop::new(wake.clone(), Duration::from_millis(20));
        let r = rounds.clone();
        let task = tokio::spawn(l.run(move || {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
            }
        }));
        tokio::time::sleep(Duration::from_millis(110)).await;
        let n = rounds.load(Ordering::SeqCst);
        assert!(n >= 3, "{n} rounds in 110 ms at a 20 ms resync");
        task.abort();
        // A long resync: only wake-ups run rounds.
        let rounds = Arc::new(AtomicU32::new(0));
        let l = Loop::new(wake.clone(), Duration::from_secs(3600));
        let r = rounds.clone();
        let task = tokio::spawn(l.run(move || {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
            }
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(rounds.load(Ordering::SeqCst), 1);
        wake.notify_one();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(rounds.load(Ordering::SeqCst), 2);
        task.abort();
    }

    #[tokio::test]
    async fn retry_runs_sooner_than_resync() {
        let wake = Arc::new(Notify::new());
        let mut l = Loop::new(wake, Duration::from_secs(3600)).retry(Duration::from_millis(10));
        let t = Instant::now();
        assert_eq!(l.after(Outcome::Retry).await, Woken::Timeout);
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
