//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several `ferry-server`
//! replicas on one etcd exactly one runs the scheduler and the controllers.
//!
//! The algorithm is client-go's `leaderelection` (what kube-controller-manager and kube-scheduler
//! use), over the same Lease fields:
//!
//! - Every replica is a candidate with a unique identity ([`default_identity`]: hostname, pid and
//!   a random suffix). Every retry period (jittered by up to [`JITTER`]) it reads the Lease.
//! - It takes the Lease when it is absent, released (no `holderIdentity`), or expired. Expired is
//!   judged on the candidate's own monotonic clock: the record (its `resourceVersion`) has not
//!   changed for `leaseDurationSeconds` since this candidate first saw it. The holder's
//!   `renewTime` is written for humans and tools but not trusted across machines, so a skewed
//!   wall clock cannot make two replicas leaders (as in client-go, `observedTime`).
//! - Every write carries the `resourceVersion` it read (a create carries none and fails with 409
//!   if the Lease exists): of two candidates racing for an expired Lease one gets a 409 Conflict.
//! - The leader renews every retry period. It stays leader until `renew deadline` after the start
//!   of its last successful write; past that, or when it reads another holder, it stops the work
//!   at once (the tasks are aborted) and becomes a candidate again. Another replica can take over
//!   only `lease duration` after it last saw that write, i.e. later than the old leader stops: the
//!   difference (5 s by default) is the margin for a request already in flight.
//! - On shutdown the leader stops its work and releases the Lease (empty holder, duration 1 s),
//!   so a successor need not wait out the lease.
//!
//! The decisions are pure ([`Elector::step`], [`Term`], [`next_attempt`]) and tested on a fake
//! clock below; [`spawn`] is the loop that does the I/O through kube-rs.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Namespace of the controllers' Lease (as kube-controller-manager's).
pub const DEFAULT_NAMESPACE: &str = "kube-system";
/// Name of the controllers' Lease.
pub const DEFAULT_NAME: &str = "ferry-controller-manager";
/// A candidate waits `retry period × (1 + r)` between attempts, `r` uniform in `[0, JITTER)`, so
/// candidates started together do not keep colliding.
pub const JITTER: f64 = 0.2;

/// Leader election settings (kube-controller-manager's `--leader-elect-*` flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (`holderIdentity`); unique per process.
    pub identity: String,
    /// How long a candidate waits, after it last saw the Lease change, before it takes it over.
    pub lease_duration: Duration,
    /// How long after its last successful renewal the leader keeps acting.
    pub renew_deadline: Duration,
    /// How often the leader renews and a candidate retries.
    pub retry_period: Duration,
}

/// Settings that cannot work together (see [`Config::validate`]).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The identity is empty.
    #[error("the leader election identity is empty")]
    EmptyIdentity,
    /// The Lease has no name or namespace.
    #[error("the leader election Lease needs a namespace and a name")]
    NoLease,
    /// The retry period is zero.
    #[error("--leader-elect-retry-period must be positive")]
    NoRetry,
    /// The lease duration is not longer than the renew deadline: a new leader could start while
    /// the old one still acts.
    #[error(
        "--leader-elect-lease-duration ({lease:?}) must be longer than \
         --leader-elect-renew-deadline ({renew:?})"
    )]
    LeaseNotLongerThanDeadline {
        /// The lease duration.
        lease: Duration,
        /// The renew deadline.
        renew: Duration,
    },
    /// The renew deadline leaves no room for a retry.
    #[error(
        "--leader-elect-renew-deadline ({renew:?}) must be longer than {JITTER} + 1 times \
         --leader-elect-retry-period ({retry:?})"
    )]
    DeadlineNotLongerThanRetry {
        /// The renew deadline.
        renew: Duration,
        /// The retry period.
        retry: Duration,
    },
    /// The lease duration does not fit the Lease's `leaseDurationSeconds`.
    #[error("--leader-elect-lease-duration is too long")]
    TooLong,
}

impl Config {
    /// kube-controller-manager's defaults (15 s, 10 s, 2 s) on [`DEFAULT_NAMESPACE`]/[`DEFAULT_NAME`].
    pub fn new(identity: String) -> Config {
        Config {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            name: DEFAULT_NAME.to_owned(),
            identity,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// Checks what client-go checks: lease duration > renew deadline > (1 + [`JITTER`]) × retry
    /// period > 0.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.identity.is_empty() {
            return Err(ConfigError::EmptyIdentity);
        }
        if self.namespace.is_empty() || self.name.is_empty() {
            return Err(ConfigError::NoLease);
        }
        if self.retry_period.is_zero() {
            return Err(ConfigError::NoRetry);
        }
        if self.lease_duration <= self.renew_deadline {
            return Err(ConfigError::LeaseNotLongerThanDeadline {
                lease: self.lease_duration,
                renew: self.renew_deadline,
            });
        }
        if self.renew_deadline <= self.retry_period.mul_f64(1.0 + JITTER) {
            return Err(ConfigError::DeadlineNotLongerThanRetry {
                renew: self.renew_deadline,
                retry: self.retry_period,
            });
        }
        if self.lease_seconds().is_none() {
            return Err(ConfigError::TooLong);
        }
        Ok(())
    }

    /// `leaseDurationSeconds`: the lease duration rounded up (a candidate then waits at least as
    /// long as configured).
    fn lease_seconds(&self) -> Option<i32> {
        let secs =
            self.lease_duration.as_secs() + u64::from(self.lease_duration.subsec_nanos() > 0);
        i32::try_from(secs).ok()
    }
}

/// A positive duration such as `15s` (the one parser of the servers' flags).
pub use ferry_apimachinery::duration::parse_positive as parse_duration;

/// `hostname_pid_random`: unique per process even when a replica restarts at once with the same
/// pid (in a fresh PID namespace, say), so a restarted replica never mistakes its predecessor's
/// Lease for its own.
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ferry-server".to_owned());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}_{}_{}", std::process::id(), &random[..8])
}

/// What a candidate last saw of the Lease.
#[derive(Debug, Clone)]
struct Observed {
    lease: Lease,
    /// When (this replica's clock) the record last changed as far as this replica saw.
    at: Instant,
}

/// What to do after reading the Lease.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Create this Lease (it is absent).
    Create(Lease),
    /// Write this Lease (acquire or renew); its `resourceVersion` is the one read.
    Replace(Lease),
    /// Another replica holds the Lease and it has not expired.
    HeldElsewhere {
        /// The holder.
        holder: String,
        /// How long until it expires unless renewed.
        expires_in: Duration,
    },
}

/// The candidate's decisions, free of I/O: fed what was read and when, it says what to write.
#[derive(Debug)]
pub struct Elector {
    cfg: Config,
    observed: Option<Observed>,
}

impl Elector {
    /// A candidate that has seen nothing yet.
    pub fn new(cfg: Config) -> Elector {
        Elector {
            cfg,
            observed: None,
        }
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Records `current` (the Lease as read, `None` when absent) as seen at `now`, and decides;
    /// `wall` is written into `acquireTime`/`renewTime`.
    pub fn step(&mut self, current: Option<&Lease>, now: Instant, wall: jiff::Timestamp) -> Step {
        let Some(lease) = current else {
            self.observed = None;
            return Step::Create(self.record(None, wall));
        };
        let at = match &self.observed {
            Some(o) if o.lease.metadata.resource_version == lease.metadata.resource_version => o.at,
            _ => now,
        };
        self.observed = Some(Observed {
            lease: lease.clone(),
            at,
        });
        let spec = lease.spec.clone().unwrap_or_default();
        if let Some(holder) = spec
            .holder_identity
            .filter(|h| !h.is_empty() && *h != self.cfg.identity)
        {
            let secs = u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0);
            let expires = at + Duration::from_secs(secs);
            if now < expires {
                return Step::HeldElsewhere {
                    holder,
                    expires_in: expires - now,
                };
            }
        }
        Step::Replace(self.record(Some(lease), wall))
    }

    /// Records the Lease as written by this replica at `now` (the server's answer to our write).
    pub fn written(&mut self, lease: Lease, now: Instant) {
        self.observed = Some(Observed { lease, at: now });
    }

    /// The Lease that releases our hold on the last one we wrote (empty holder, duration 1 s, as
    /// client-go's release), or `None` if we do not hold it as far as we know.
    pub fn release(&self, wall: jiff::Timestamp) -> Option<Lease> {
        let o = self.observed.as_ref()?;
        let spec = o.lease.spec.as_ref()?;
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return None;
        }
        let mut lease = o.lease.clone();
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            acquire_time: Some(MicroTime(wall)),
            renew_time: Some(MicroTime(wall)),
            lease_transitions: spec.lease_transitions,
            ..LeaseSpec::default()
        });
        Some(lease)
    }

    /// The Lease held by this replica, built on `prev` (with its `resourceVersion` as the
    /// precondition, its other metadata kept).
    fn record(&self, prev: Option<&Lease>, wall: jiff::Timestamp) -> Lease {
        let prev_spec = prev.and_then(|l| l.spec.clone()).unwrap_or_default();
        let ours = prev_spec.holder_identity.as_deref() == Some(self.cfg.identity.as_str());
        let (acquire_time, transitions) = match prev {
            None => (MicroTime(wall), 0),
            Some(_) if ours => (
                prev_spec.acquire_time.clone().unwrap_or(MicroTime(wall)),
                prev_spec.lease_transitions.unwrap_or(0),
            ),
            Some(_) => (
                MicroTime(wall),
                prev_spec.lease_transitions.unwrap_or(0).saturating_add(1),
            ),
        };
        let metadata = prev.map_or_else(
            || ObjectMeta {
                name: Some(self.cfg.name.clone()),
                namespace: Some(self.cfg.namespace.clone()),
                ..ObjectMeta::default()
            },
            |l| l.metadata.clone(),
        );
        Lease {
            metadata,
            spec: Some(LeaseSpec {
                holder_identity: Some(self.cfg.identity.clone()),
                lease_duration_seconds: self.cfg.lease_seconds(),
                acquire_time: Some(acquire_time),
                renew_time: Some(MicroTime(wall)),
                lease_transitions: Some(transitions),
                ..prev_spec
            }),
        }
    }
}

/// A term of leadership: it lasts until the renew deadline after the start of the last
/// successful write (the start, not the answer: the record may have been visible to others from
/// the moment the request left).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term {
    renewed: Instant,
    renew_deadline: Duration,
}

impl Term {
    /// A term whose last successful write started at `renewed`.
    pub fn new(renewed: Instant, renew_deadline: Duration) -> Term {
        Term {
            renewed,
            renew_deadline,
        }
    }

    /// A successful renewal that started at `at`.
    pub fn renewed(&mut self, at: Instant) {
        self.renewed = self.renewed.max(at);
    }

    /// When the leader must have stopped unless it renews.
    pub fn deadline(&self) -> Instant {
        self.renewed + self.renew_deadline
    }

    /// Whether the term is over at `now`.
    pub fn over(&self, now: Instant) -> bool {
        now >= self.deadline()
    }
}

/// When the next attempt starts, after one that started at `attempt`: a leader retries every
/// retry period but wakes at its deadline if that is sooner; a candidate waits the retry period
/// stretched by `jitter` (in `[0, 1)`, scaled by [`JITTER`]).
pub fn next_attempt(cfg: &Config, attempt: Instant, term: Option<&Term>, jitter: f64) -> Instant {
    match term {
        Some(t) => (attempt + cfg.retry_period).min(t.deadline()),
        None => {
            attempt
                + cfg
                    .retry_period
                    .mul_f64(1.0 + JITTER * jitter.clamp(0.0, 1.0))
        }
    }
}

/// How one attempt ended.
#[derive(Debug)]
enum Attempt {
    /// This replica holds the Lease (created, acquired or renewed).
    Holding,
    /// Another replica holds it.
    HeldElsewhere(String, Duration),
    /// The read or write failed (a 409 Conflict when another replica wrote first); retried.
    Failed(kube::Error),
}

async fn attempt(api: &Api<Lease>, elector: &mut Elector, now: Instant) -> Attempt {
    let name = elector.config().name.clone();
    let current = match api.get_opt(&name).await {
        Ok(l) => l,
        Err(e) => return Attempt::Failed(e),
    };
    let written = match elector.step(current.as_ref(), now, jiff::Timestamp::now()) {
        Step::HeldElsewhere { holder, expires_in } => {
            return Attempt::HeldElsewhere(holder, expires_in)
        }
        Step::Create(l) => api.create(&PostParams::default(), &l).await,
        Step::Replace(l) => api.replace(&name, &PostParams::default(), &l).await,
    };
    match written {
        Ok(l) => {
            elector.written(l, now);
            Attempt::Holding
        }
        Err(e) => Attempt::Failed(e),
    }
}

/// A running election (see [`spawn`]).
#[derive(Debug)]
pub struct LeaderElection {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaderElection {
    /// Stops the work and, if this replica leads, releases the Lease (waiting at most the retry
    /// period for that write).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Runs the election for `cfg` (valid: [`Config::validate`]) with `client`; while this replica
/// leads, the tasks `start` spawned run; they are aborted when the term ends.
pub fn spawn<F>(client: kube::Client, cfg: Config, mut start: F) -> LeaderElection
where
    F: FnMut() -> JoinSet<()> + Send + 'static,
{
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
        let what = format!("Lease {}/{}", cfg.namespace, cfg.name);
        let mut elector = Elector::new(cfg.clone());
        // The work of the current term, aborted when dropped.
        let mut term: Option<(Term, JoinSet<()>)> = None;
        tracing::info!("leader election on {what} as {}", cfg.identity);
        loop {
            let started = Instant::now();
            // A leader's request may take until its deadline; a candidate's, a retry period.
            let budget = term.as_ref().map_or(cfg.renew_deadline, |(t, _)| {
                t.deadline().saturating_duration_since(started)
            });
            let outcome = tokio::select! {
                r = tokio::time::timeout(budget, attempt(&api, &mut elector, started)) => {
                    r.unwrap_or_else(|_| {
                        Attempt::Failed(kube::Error::Service(
                            format!("no answer within {budget:?}").into(),
                        ))
                    })
                }
                // Shutdown does not wait for a slow attempt.
                _ = &mut stop_rx => break,
            };
            match outcome {
                Attempt::Holding => match &mut term {
                    Some((t, _)) => t.renewed(started),
                    None => {
                        tracing::info!("{what}: became leader as {}", cfg.identity);
                        term = Some((Term::new(started, cfg.renew_deadline), start()));
                    }
                },
                Attempt::HeldElsewhere(holder, expires_in) => {
                    if term.take().is_some() {
                        tracing::error!("{what}: lost to {holder}: stopped the controllers");
                    } else {
                        tracing::debug!("{what}: held by {holder} (expires in {expires_in:?})");
                    }
                }
                Attempt::Failed(e) => {
                    tracing::warn!("{what}: {e} (retrying)");
                }
            }
            if term.as_ref().is_some_and(|(t, _)| t.over(Instant::now())) {
                term = None;
                tracing::error!(
                    "{what}: not renewed within {:?}: stopped the controllers",
                    cfg.renew_deadline
                );
            }
            let wake = next_attempt(
                &cfg,
                started,
                term.as_ref().map(|(t, _)| t),
                rand::random::<f64>(),
            );
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                _ = &mut stop_rx => break,
            }
        }
        if let Some((t, work)) = term.take() {
            drop(work);
            let budget = t
                .deadline()
                .saturating_duration_since(Instant::now())
                .min(cfg.retry_period);
            if let Some(lease) = elector.release(jiff::Timestamp::now()) {
                match tokio::time::timeout(
                    budget,
                    api.replace(&cfg.name, &PostParams::default(), &lease),
                )
                .await
                {
                    Ok(Ok(_)) => tracing::info!("{what}: released"),
                    Ok(Err(e)) => tracing::warn!("{what}: release: {e}"),
                    Err(_) => tracing::warn!("{what}: release: no answer within {budget:?}"),
                }
            }
        }
    });
    LeaderElection {
        stop: Some(stop_tx),
        task,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(id: &str) -> Config {
        Config::new(id.to_owned())
    }

    fn wall(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    /// The Lease as the server would return it after `l` was written at revision `rv`.
    fn stored(l: Lease, rv: u32) -> Lease {
        let mut l = l;
        l.metadata.resource_version = Some(rv.to_string());
        l
    }

    fn held_by(holder: &str, secs: i32, renewed: i64, rv: u32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(DEFAULT_NAME.into()),
                namespace: Some(DEFAULT_NAMESPACE.into()),
                resource_version: Some(rv.to_string()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(secs),
                acquire_time: Some(MicroTime(wall(0))),
                renew_time: Some(MicroTime(wall(renewed))),
                lease_transitions: Some(3),
                ..LeaseSpec::default()
            }),
        }
    }

    fn spec(l: &Lease) -> &LeaseSpec {
        l.spec.as_ref().unwrap()
    }

    #[test]
    fn an_absent_lease_is_created_without_a_resource_version() {
        let mut e = Elector::new(cfg("a"));
        let Step::Create(l) = e.step(None, Instant::now(), wall(5)) else {
            panic!("absent lease not created")
        };
        assert_eq!(l.metadata.name.as_deref(), Some(DEFAULT_NAME));
        assert_eq!(l.metadata.namespace.as_deref(), Some(DEFAULT_NAMESPACE));
        assert_eq!(l.metadata.resource_version, None);
        let s = spec(&l);
        assert_eq!(s.holder_identity.as_deref(), Some("a"));
        assert_eq!(s.lease_duration_seconds, Some(15));
        assert_eq!(s.lease_transitions, Some(0));
        assert_eq!(s.renew_time, Some(MicroTime(wall(5))));
        assert_eq!(s.acquire_time, Some(MicroTime(wall(5))));
    }

    #[test]
    fn another_holders_lease_expires_on_the_candidates_own_clock() {
        let t0 = Instant::now();
        let mut e = Elector::new(cfg("b"));
        // renewTime is far in the past by B's wall clock: not trusted (clock skew), B waits a
        // full lease duration from when it first saw this record.
        let other = held_by("a", 15, -3600, 7);
        assert_eq!(
            e.step(Some(&other), t0, wall(0)),
            Step::HeldElsewhere {
                holder: "a".into(),
                expires_in: Duration::from_secs(15)
            }
        );
        assert!(matches!(
            e.step(Some(&other), t0 + Duration::from_millis(14_999), wall(15)),
            Step::HeldElsewhere { .. }
        ));
        let Step::Replace(l) = e.step(Some(&other), t0 + Duration::from_secs(15), wall(15)) else {
            panic!("expired lease not taken over")
        };
        assert_eq!(
            l.metadata.resource_version.as_deref(),
            Some("7"),
            "the takeover is conditional on the record read"
        );
        let s = spec(&l);
        assert_eq!(s.holder_identity.as_deref(), Some("b"));
        assert_eq!(s.lease_transitions, Some(4));
        assert_eq!(s.acquire_time, Some(MicroTime(wall(15))));
        assert_eq!(s.renew_time, Some(MicroTime(wall(15))));
    }

    #[test]
    fn a_renewal_restarts_the_candidates_wait() {
        let t0 = Instant::now();
        let mut e = Elector::new(cfg("b"));
        assert!(matches!(
            e.step(Some(&held_by("a", 15, 0, 7)), t0, wall(0)),
            Step::HeldElsewhere { .. }
        ));
        // A renews (new resourceVersion) at t0+10: B's 15 s start again from there, whatever
        // renewTime says.
        let renewed = held_by("a", 15, 10, 9);
        let t10 = t0 + Duration::from_secs(10);
        assert!(matches!(
            e.step(Some(&renewed), t10, wall(10)),
            Step::HeldElsewhere { .. }
        ));
        assert_eq!(
            e.step(Some(&renewed), t0 + Duration::from_secs(20), wall(20)),
            Step::HeldElsewhere {
                holder: "a".into(),
                expires_in: Duration::from_secs(5)
            }
        );
        assert!(matches!(
            e.step(Some(&renewed), t10 + Duration::from_secs(15), wall(25)),
            Step::Replace(_)
        ));
    }

    #[test]
    fn the_holder_renews_keeping_acquire_time_and_transitions() {
        let t0 = Instant::now();
        let mut e = Elector::new(cfg("a"));
        let Step::Create(l) = e.step(None, t0, wall(0)) else {
            panic!()
        };
        e.written(stored(l, 1), t0);
        let mine = stored(
            {
                let mut l = held_by("a", 15, 0, 1);
                l.spec.as_mut().unwrap().lease_transitions = Some(0);
                l
            },
            1,
        );
        let Step::Replace(r) = e.step(Some(&mine), t0 + Duration::from_secs(2), wall(2)) else {
            panic!("own lease not renewed")
        };
        let s = spec(&r);
        assert_eq!(r.metadata.resource_version.as_deref(), Some("1"));
        assert_eq!(s.acquire_time, Some(MicroTime(wall(0))));
        assert_eq!(s.renew_time, Some(MicroTime(wall(2))));
        assert_eq!(s.lease_transitions, Some(0));
    }

    #[test]
    fn a_released_lease_is_taken_at_once_and_release_needs_the_hold() {
        let t0 = Instant::now();
        let mut a = Elector::new(cfg("a"));
        assert_eq!(a.release(wall(0)), None, "nothing held, nothing to release");
        let Step::Create(l) = a.step(None, t0, wall(0)) else {
            panic!()
        };
        a.written(stored(l, 4), t0);
        let released = a.release(wall(3)).expect("the holder releases");
        assert_eq!(released.metadata.resource_version.as_deref(), Some("4"));
        assert_eq!(spec(&released).holder_identity, None);
        assert_eq!(spec(&released).lease_duration_seconds, Some(1));

        let mut b = Elector::new(cfg("b"));
        let Step::Replace(taken) = b.step(Some(&stored(released, 5)), t0, wall(3)) else {
            panic!("a released lease is free")
        };
        assert_eq!(spec(&taken).holder_identity.as_deref(), Some("b"));
        assert_eq!(spec(&taken).lease_transitions, Some(1));
        // A candidate that never wrote has nothing to release.
        assert_eq!(b.release(wall(4)), None);
    }

    #[test]
    fn a_term_ends_at_the_renew_deadline_after_the_last_write_started() {
        let t0 = Instant::now();
        let mut t = Term::new(t0, Duration::from_secs(10));
        assert!(!t.over(t0 + Duration::from_millis(9_999)));
        assert!(t.over(t0 + Duration::from_secs(10)));
        t.renewed(t0 + Duration::from_secs(2));
        assert_eq!(t.deadline(), t0 + Duration::from_secs(12));
        t.renewed(t0 + Duration::from_secs(1));
        assert_eq!(
            t.deadline(),
            t0 + Duration::from_secs(12),
            "never moves back"
        );
        // Safe with the defaults: a candidate takes over 15 s after it saw the last write,
        // which it cannot see before the write started; the leader stopped 5 s earlier.
        let c = cfg("a");
        assert!(c.lease_duration > c.renew_deadline);
    }

    #[test]
    fn attempts_are_spaced_by_the_retry_period() {
        let c = cfg("a");
        let t0 = Instant::now();
        assert_eq!(next_attempt(&c, t0, None, 0.0), t0 + Duration::from_secs(2));
        assert_eq!(
            next_attempt(&c, t0, None, 1.0),
            t0 + Duration::from_millis(2_400)
        );
        assert_eq!(
            next_attempt(&c, t0, None, 7.0),
            t0 + Duration::from_millis(2_400),
            "jitter is bounded"
        );
        let term = Term::new(t0, c.renew_deadline);
        assert_eq!(
            next_attempt(&c, t0 + Duration::from_secs(1), Some(&term), 0.9),
            t0 + Duration::from_secs(3),
            "a leader renews every retry period, without jitter"
        );
        assert_eq!(
            next_attempt(&c, t0 + Duration::from_secs(9), Some(&term), 0.0),
            t0 + Duration::from_secs(10),
            "a leader wakes at its deadline"
        );
    }

    #[test]
    fn settings_are_validated() {
        assert_eq!(cfg("a").validate(), Ok(()));
        assert_eq!(cfg("").validate(), Err(ConfigError::EmptyIdentity));
        let mut c = cfg("a");
        c.lease_duration = Duration::from_secs(10);
        assert!(matches!(
            c.validate(),
            Err(ConfigError::LeaseNotLongerThanDeadline { .. })
        ));
        let mut c = cfg("a");
        c.retry_period = Duration::from_millis(8_500);
        assert!(matches!(
            c.validate(),
            Err(ConfigError::DeadlineNotLongerThanRetry { .. })
        ));
        let mut c = cfg("a");
        c.retry_period = Duration::ZERO;
        assert_eq!(c.validate(), Err(ConfigError::NoRetry));
        let mut c = cfg("a");
        c.lease_duration = Duration::from_millis(3_500);
        c.renew_deadline = Duration::from_secs(3);
        c.retry_period = Duration::from_secs(1);
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.lease_seconds(), Some(4), "rounded up");
        c.lease_duration = Duration::from_secs(u64::MAX / 2);
        assert_eq!(c.validate(), Err(ConfigError::TooLong));
    }

    #[test]
    fn durations_parse_like_the_upstream_flags() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("-2s").is_err());
        assert!(parse_duration("fifteen").is_err());
    }

    #[test]
    fn identities_are_unique_per_process_start() {
        let (a, b) = (default_identity(), default_identity());
        assert_ne!(a, b);
        assert!(a.contains(&format!("_{}_", std::process::id())), "{a}");
    }
}
