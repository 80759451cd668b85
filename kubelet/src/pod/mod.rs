//! The pod worker: one task per pod bound to this node, owning its whole life.
//!
//! Level-triggered: every wake-up (pod changed, container exited, probe verdict, timer) runs
//! [`Worker::sync`], which brings the sandbox and containers towards the spec and publishes the
//! status when it changed. Start-up: sandbox (waits while the pod network is not ready; the pod
//! stays Pending, it does not fail), then each container through its shim. Restarts follow
//! `restartPolicy` with back-off (first restart at once, then 10 s doubling to 5 min, reset after
//! 10 min of running). Deletion: SIGTERM, the grace period, `cgroup.kill`, CNI DEL, namespace
//! removal, then the pod object is deleted with grace 0.
//!
//! On-disk layout under `<root>/pods/<uid>/`: `pod.json` (sandbox record), and per container
//! attempt `<container>/<attempt>/` with `spec.json`, `run.json` (shim PID and start time),
//! `exit.json` (written by the shim) and `output.log`.
//!
//! | File | What |
//! |---|---|
//! | `mod.rs` | the [`Worker`]: its event loop (pod changes, exits, probe verdicts, timers), sync, status |
//! | `record.rs` | the on-disk records ([`PodRecord`], [`RunRecord`]) and the restore that adopts running containers |
//! | `start.rs` | sandbox set-up, container start (ConfigMap/Secret lookups, env, argv, cgroup, shim), probes |
//! | `stop.rs` | stopping containers, the sandbox release, graceful shutdown, [`destroy_leftovers`] |
//! | `backoff.rs` | the restart back-off (immediate, then doubling to 5 min, reset after 10 min) |

mod backoff;
mod record;
mod start;
mod stop;

pub use record::{attempts, PodRecord, RunRecord};
pub use stop::destroy_leftovers;

use crate::probe::{Kind, Verdict};
use crate::shim::{self, Exit};
use crate::status::{self, rfc3339, ContainerRun, PodFacts, State, Terminated};
use crate::{cgroup, Kubelet};
use backoff::{schedule_restart, BACKOFF_RESET};
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{Api, Patch, PatchParams};
use record::{read_json, terminated_from};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

#[derive(Debug)]
enum Msg {
    Exited { name: String, attempt: u32 },
    Probe(Verdict),
}

#[derive(Debug)]
struct Ctr {
    run: ContainerRun,
    spec: Container,
    pid: Option<i32>,
    started_any: bool,
    next_start: Instant,
    backoff: Duration,
    since: Option<Instant>,
    probes: Vec<AbortHandle>,
    env: Vec<(String, String)>,
    retry_config: Option<Instant>,
}

/// One pod's worker.
#[derive(Debug)]
pub struct Worker {
    k: Arc<Kubelet>,
    uid: String,
    pod: Arc<Pod>,
    rx: watch::Receiver<Option<Arc<Pod>>>,
    tx: mpsc::UnboundedSender<Msg>,
    msgs: mpsc::UnboundedReceiver<Msg>,
    dir: PathBuf,
    record: PodRecord,
    sandbox_up: bool,
    sandbox_retry: Option<Instant>,
    sandbox_backoff: Duration,
    ctrs: Vec<Ctr>,
    last_status: Option<Value>,
    /// When to try again a status patch that failed (the API server unreachable: a replica
    /// behind the balanced address died mid-request); nothing else may wake the worker.
    status_retry: Option<Instant>,
    /// The pause before that retry: doubled after each failure up to [`STATUS_RETRY_MAX`].
    status_backoff: Duration,
    message: Option<String>,
    warned: HashSet<String>,
}

/// Pause before a failed status patch is sent again.
const STATUS_RETRY: Duration = Duration::from_secs(1);
/// The longest pause between two retries of a failed status patch.
const STATUS_RETRY_MAX: Duration = Duration::from_secs(30);

fn now() -> String {
    rfc3339(jiff::Timestamp::now())
}

/// The cgroup of one container attempt.
fn attempt_cgroup(k: &Kubelet, uid: &str, name: &str, attempt: u32) -> PathBuf {
    k.cfg
        .cgroup_root
        .join(uid)
        .join(format!("{name}.{attempt}"))
}

impl Worker {
    /// Runs the worker of pod `uid` until the pod is gone.
    pub async fn start(k: Arc<Kubelet>, uid: String, rx: watch::Receiver<Option<Arc<Pod>>>) {
        let Some(pod) = rx.borrow().clone() else {
            destroy_leftovers(&k, &uid).await;
            return;
        };
        let (tx, msgs) = mpsc::unbounded_channel();
        let dir = k.pod_dir(&uid);
        let host_network = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        let record = read_json::<PodRecord>(&dir.join("pod.json")).unwrap_or_else(|| PodRecord {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: uid.clone(),
            pod_ips: Vec::new(),
            start_time: now(),
            finished: false,
            host_network,
        });
        let mut w = Worker {
            k,
            uid,
            pod,
            rx,
            tx,
            msgs,
            dir,
            record,
            sandbox_up: false,
            sandbox_retry: None,
            sandbox_backoff: Duration::from_millis(500),
            ctrs: Vec::new(),
            last_status: None,
            status_retry: None,
            status_backoff: STATUS_RETRY,
            message: None,
            warned: HashSet::new(),
        };
        w.restore();
        w.run().await;
    }

    async fn run(mut self) {
        loop {
            let latest = self.rx.borrow_and_update().clone();
            let Some(pod) = latest else {
                self.shutdown(Some(0), false).await;
                return;
            };
            self.pod = pod;
            if self.pod.metadata.deletion_timestamp.is_some() {
                let grace = self.pod.metadata.deletion_grace_period_seconds;
                self.shutdown(grace, true).await;
                return;
            }
            self.sync().await;
            let wake = self.next_wake();
            let mut network = self.k.network.subscribe();
            tokio::select! {
                r = self.rx.changed() => {
                    if r.is_err() {
                        self.shutdown(Some(0), false).await;
                        return;
                    }
                }
                Some(m) = self.msgs.recv() => self.handle(m),
                () = sleep_until_opt(wake) => {}
                _ = network.changed(), if !self.sandbox_up => {}
            }
            // Drain what else arrived, so one status patch covers it.
            while let Ok(m) = self.msgs.try_recv() {
                self.handle(m);
            }
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        let mut t: Option<Instant> = match (self.sandbox_retry, self.status_retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        for c in &self.ctrs {
            let when = match &c.run.state {
                State::Waiting { reason, .. } if reason == "CrashLoopBackOff" => Some(c.next_start),
                State::Waiting { reason, .. } if reason == "CreateContainerConfigError" => {
                    c.retry_config
                }
                State::Terminated(_) => Some(c.next_start),
                _ => None,
            };
            if let Some(w) = when {
                t = Some(t.map_or(w, |t| t.min(w)));
            }
        }
        t
    }

    fn warn_once(&mut self, reason: &str, message: &str) {
        if self.warned.insert(format!("{reason}\0{message}")) {
            self.k.event(&self.pod, true, reason, message);
        }
    }

    fn policy(&self) -> String {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into())
    }

    fn will_restart(&self, t: &Terminated) -> bool {
        match self.policy().as_str() {
            "Never" => false,
            "OnFailure" => t.exit_code != 0,
            _ => true,
        }
    }

    async fn sync(&mut self) {
        if !self.record.finished && !self.sandbox_up && !self.ensure_sandbox().await {
            self.publish().await;
            return;
        }
        if !self.record.finished {
            for i in 0..self.ctrs.len() {
                self.maybe_start(i).await;
            }
            let done = self.ctrs.iter().all(|c| match &c.run.state {
                State::Terminated(t) => !self.will_restart(t),
                _ => false,
            });
            if done && !self.ctrs.is_empty() {
                self.finish().await;
            }
        }
        self.publish().await;
    }

    fn handle(&mut self, m: Msg) {
        match m {
            Msg::Exited { name, attempt } => self.on_exit(&name, attempt),
            Msg::Probe(v) => self.on_probe(v),
        }
    }

    fn on_exit(&mut self, name: &str, attempt: u32) {
        let base = self.k.cfg.backoff_base;
        let Some(i) = self.ctrs.iter().position(|c| c.spec.name == name) else {
            return;
        };
        if self.ctrs[i].run.attempt != attempt
            || !matches!(self.ctrs[i].run.state, State::Running { .. })
        {
            return;
        }
        let adir = self.dir.join(name).join(attempt.to_string());
        let run: Option<RunRecord> = read_json(&adir.join("run.json"));
        let exit = read_json::<Exit>(&adir.join(shim::EXIT)).unwrap_or(Exit {
            exit_code: 137,
            signal: None,
            start_error: None,
            finished_at: now(),
        });
        let c = &mut self.ctrs[i];
        for h in c.probes.drain(..) {
            h.abort();
        }
        c.run.state = State::Terminated(terminated_from(&exit, run.map(|r| r.started_at)));
        c.run.ready = false;
        c.run.started = false;
        c.pid = None;
        // Leftover processes the main one forked die with it, like in a PID namespace.
        let cg = attempt_cgroup(&self.k, &self.uid, name, attempt);
        tokio::spawn(async move { cgroup::destroy(&cg, Duration::from_secs(5)).await });
        if c.since.is_some_and(|s| s.elapsed() >= BACKOFF_RESET) {
            c.backoff = Duration::ZERO;
        }
        c.since = None;
        schedule_restart(c, base);
    }

    fn on_probe(&mut self, v: Verdict) {
        let Some(i) = self.ctrs.iter().position(|c| c.spec.name == v.container) else {
            return;
        };
        if self.ctrs[i].run.attempt != v.attempt
            || !matches!(self.ctrs[i].run.state, State::Running { .. })
        {
            return;
        }
        let name = v.container.clone();
        match (v.kind, v.ok) {
            (Kind::Startup, true) => {
                let c = &mut self.ctrs[i];
                c.run.started = true;
                c.run.ready = c.spec.readiness_probe.is_none();
                self.start_probes(i);
            }
            (Kind::Readiness, ok) => {
                if !ok {
                    self.k.event(
                        &self.pod,
                        true,
                        "Unhealthy",
                        &format!("Readiness probe failed: {}", v.message),
                    );
                }
                let c = &mut self.ctrs[i];
                c.run.ready = ok && c.run.started;
            }
            (Kind::Liveness, true) => {}
            (kind, false) => {
                self.k.event(
                    &self.pod,
                    true,
                    "Unhealthy",
                    &format!("{} probe failed: {}", kind.name(), v.message),
                );
                self.k.event(
                    &self.pod,
                    false,
                    "Killing",
                    &format!(
                        "Container {name} failed {} probe, will be restarted",
                        kind.name().to_lowercase()
                    ),
                );
                let grace = self.grace(None);
                self.stop_container(i, grace);
            }
        }
    }

    async fn publish(&mut self) {
        // A pending retry is this call: cleared whatever happens below (else a status that went
        // back to the last one written would leave a past retry time and a busy loop).
        self.status_retry = None;
        let facts = PodFacts {
            sandbox_ready: self.sandbox_up,
            pod_ips: self.record.pod_ips.clone(),
            host_ip: self.k.cfg.node_ip.clone(),
            start_time: self.record.start_time.clone(),
            finished: self.record.finished,
            message: self.message.clone(),
        };
        let runs: Vec<ContainerRun> = self.ctrs.iter().map(|c| c.run.clone()).collect();
        let st = status::pod_status(&self.pod, &facts, &runs, &now());
        // Transition times must not make every sync a change.
        let key = strip_times(&st);
        // Unchanged since our last write, and nobody else (the node lifecycle controller marking
        // the pod NodeLost while this kubelet was away) has changed it since.
        if self.last_status.as_ref() == Some(&key) && conditions_agree(&self.pod, &st) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.k.client.clone(), &self.record.namespace);
        match api
            .patch_status(
                &self.record.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": st})),
            )
            .await
        {
            Ok(_) => {
                self.last_status = Some(key);
                self.status_backoff = STATUS_RETRY;
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {
                self.last_status = Some(key);
                self.status_backoff = STATUS_RETRY;
            }
            // Refused for good (invalid, forbidden): the next change of status tries again.
            Err(kube::Error::Api(e))
                if (400..500).contains(&e.code) && e.code != 409 && e.code != 429 =>
            {
                tracing::warn!("patching status of {}: {e} (not retried)", self.record.name);
            }
            Err(e) => {
                let pause = self.status_backoff;
                tracing::warn!(
                    "patching status of {}: {e} (retrying in {pause:?})",
                    self.record.name
                );
                self.status_retry = Some(Instant::now() + pause);
                self.status_backoff = (pause * 2).min(STATUS_RETRY_MAX);
            }
        }
    }
}

/// Whether every condition of `st` is in the API's copy of the pod with the same status.
fn conditions_agree(pod: &Pod, st: &Value) -> bool {
    let Some(want) = st.get("conditions").and_then(Value::as_array) else {
        return true;
    };
    let have = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    want.iter().all(|c| {
        have.iter().any(|h| {
            c["type"].as_str() == Some(h.type_.as_str())
                && c["status"].as_str() == Some(h.status.as_str())
        })
    })
}

fn strip_times(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(cs) = v.get_mut("conditions").and_then(Value::as_array_mut) {
        for c in cs {
            if let Some(o) = c.as_object_mut() {
                o.remove("lastTransitionTime");
                o.remove("lastProbeTime");
            }
        }
    }
    v
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
