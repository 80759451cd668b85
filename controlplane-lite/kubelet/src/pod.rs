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

use crate::probe::{self, Kind, Verdict};
use crate::sandbox::PodRef;
use crate::shim::{self, Exit, ShimSpec, Started};
use crate::status::{self, rfc3339, ContainerRun, PodFacts, State, Terminated};
use crate::{cgroup, Kubelet};
use ferry_apimachinery::quantity::{parse_bytes, parse_millis};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// Maximum restart back-off.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Running this long resets the back-off.
const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// The sandbox record, `pod.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PodRecord {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// Pod IPs once the sandbox is up.
    pub pod_ips: Vec<String>,
    /// First seen (RFC 3339).
    pub start_time: String,
    /// Every container ended for good; the sandbox is torn down.
    pub finished: bool,
    /// `hostNetwork` pod.
    pub host_network: bool,
}

/// A running attempt, `run.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// The shim's PID.
    pub shim_pid: i32,
    /// Its start time in clock ticks (PID reuse check).
    pub shim_start: u64,
    /// The container's PID.
    pub pid: i32,
    /// RFC 3339.
    pub started_at: String,
}

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
    message: Option<String>,
    warned: HashSet<String>,
}

/// The attempt numbers found in a container's directory, ascending.
pub fn attempts(dir: &Path) -> Vec<u32> {
    let mut v: Vec<u32> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn terminated_from(exit: &Exit, started_at: Option<String>) -> Terminated {
    let reason = if exit.start_error.is_some() {
        "StartError"
    } else if exit.exit_code == 0 {
        "Completed"
    } else {
        "Error"
    };
    Terminated {
        exit_code: exit.exit_code,
        signal: exit.signal,
        reason: reason.into(),
        message: exit.start_error.clone(),
        started_at,
        finished_at: exit.finished_at.clone(),
    }
}

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
            message: None,
            warned: HashSet::new(),
        };
        w.restore();
        w.run().await;
    }

    fn pod_ref(&self) -> PodRef {
        PodRef {
            namespace: self.record.namespace.clone(),
            name: self.record.name.clone(),
            uid: self.uid.clone(),
        }
    }

    fn save_record(&self) {
        let _ = std::fs::create_dir_all(&self.dir);
        if let Ok(b) = serde_json::to_vec(&self.record) {
            if let Err(e) = shim::write_atomic(&self.dir.join("pod.json"), &b) {
                tracing::warn!("writing pod record: {e}");
            }
        }
    }

    /// Rebuilds the worker's view from disk (a restarted kubelet adopting its pods).
    fn restore(&mut self) {
        let spec_ctrs = self
            .pod
            .spec
            .as_ref()
            .map(|s| s.containers.clone())
            .unwrap_or_default();
        let netns = self.k.sandboxes.netns_path(&self.uid);
        self.sandbox_up = !self.record.pod_ips.is_empty()
            && !self.record.finished
            && (self.record.host_network || netns.exists());
        let was_ready = |name: &str| {
            self.pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.name == name))
                .is_some_and(|c| c.ready)
        };
        for spec in spec_ctrs {
            let cdir = self.dir.join(&spec.name);
            let tries = attempts(&cdir);
            let mut ctr = Ctr {
                run: ContainerRun {
                    name: spec.name.clone(),
                    image: spec.image.clone().unwrap_or_default(),
                    attempt: 0,
                    restart_count: 0,
                    state: State::Waiting {
                        reason: "ContainerCreating".into(),
                        message: None,
                    },
                    last: None,
                    ready: false,
                    started: false,
                },
                spec: spec.clone(),
                pid: None,
                started_any: false,
                next_start: Instant::now(),
                backoff: Duration::ZERO,
                since: None,
                probes: Vec::new(),
                env: Vec::new(),
                retry_config: None,
            };
            if let Some(&latest) = tries.last() {
                ctr.started_any = true;
                ctr.run.attempt = latest;
                ctr.run.restart_count = latest as i32;
                let adir = cdir.join(latest.to_string());
                let run: Option<RunRecord> = read_json(&adir.join("run.json"));
                if tries.len() > 1 {
                    let pdir = cdir.join(tries[tries.len() - 2].to_string());
                    let prun: Option<RunRecord> = read_json(&pdir.join("run.json"));
                    ctr.run.last = read_json::<Exit>(&pdir.join(shim::EXIT))
                        .map(|e| terminated_from(&e, prun.map(|r| r.started_at)));
                }
                if let Some(exit) = read_json::<Exit>(&adir.join(shim::EXIT)) {
                    ctr.run.state =
                        State::Terminated(terminated_from(&exit, run.map(|r| r.started_at)));
                } else if let Some(r) = run.filter(start_ticks_match) {
                    tracing::info!(
                        "adopting container {}/{} (pid {}, shim {})",
                        self.record.name,
                        spec.name,
                        r.pid,
                        r.shim_pid
                    );
                    ctr.run.state = State::Running {
                        started_at: r.started_at.clone(),
                    };
                    ctr.pid = Some(r.pid);
                    ctr.since = Some(Instant::now());
                    ctr.run.started = spec.startup_probe.is_none() || was_ready(&spec.name);
                    ctr.run.ready = was_ready(&spec.name)
                        || (ctr.run.started && spec.readiness_probe.is_none());
                    let tx = self.tx.clone();
                    let (name, attempt, shim_pid) = (spec.name.clone(), latest, r.shim_pid);
                    tokio::spawn(async move {
                        crate::wait_pid(shim_pid).await;
                        let _ = tx.send(Msg::Exited { name, attempt });
                    });
                } else {
                    // The shim is gone without a word (or the kubelet died mid-start).
                    cgroup::kill(&attempt_cgroup(&self.k, &self.uid, &spec.name, latest));
                    ctr.run.state = State::Terminated(Terminated {
                        exit_code: 137,
                        signal: None,
                        reason: "ContainerStatusUnknown".into(),
                        message: Some(
                            "the container could not be located when the kubelet restarted".into(),
                        ),
                        started_at: None,
                        finished_at: now(),
                    });
                }
            }
            self.ctrs.push(ctr);
        }
        // Probes of adopted containers need the env; start them after the vector is built.
        for i in 0..self.ctrs.len() {
            if matches!(self.ctrs[i].run.state, State::Running { .. }) {
                self.start_probes(i);
            }
        }
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
        let mut t: Option<Instant> = self.sandbox_retry;
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

    /// Sets the sandbox up; false while it is not (the pod waits).
    async fn ensure_sandbox(&mut self) -> bool {
        if self.record.host_network {
            self.record.pod_ips = vec![self.k.cfg.node_ip.clone()];
            self.sandbox_up = true;
            self.save_record();
            return true;
        }
        let network = self.k.network.borrow().clone();
        if let Some(err) = network {
            self.message = Some(format!("network is not ready: {err}"));
            self.warn_once("NetworkNotReady", &format!("network is not ready: {err}"));
            return false;
        }
        if self.sandbox_retry.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        let k = self.k.clone();
        let pr = self.pod_ref();
        self.save_record();
        let res = tokio::task::spawn_blocking(move || k.sandboxes.setup(&pr))
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("sandbox task: {e}")));
        match res {
            Ok(ips) => {
                self.record.pod_ips = ips;
                self.sandbox_up = true;
                self.sandbox_retry = None;
                self.message = None;
                self.save_record();
                true
            }
            Err(e) => {
                let msg = format!("Failed to create pod sandbox: {e:#}");
                self.k
                    .event(&self.pod, true, "FailedCreatePodSandBox", &msg);
                self.message = Some(msg);
                self.sandbox_retry = Some(Instant::now() + self.sandbox_backoff);
                self.sandbox_backoff = (self.sandbox_backoff * 2).min(Duration::from_secs(30));
                false
            }
        }
    }

    /// The pod as containers see it (IPs filled in, for the downward API).
    fn pod_with_ips(&self) -> Pod {
        let mut p = (*self.pod).clone();
        let st = p.status.get_or_insert_with(Default::default);
        st.pod_ip = self.record.pod_ips.first().cloned();
        st.pod_ips = Some(
            self.record
                .pod_ips
                .iter()
                .map(|ip| k8s_openapi::api::core::v1::PodIP { ip: ip.clone() })
                .collect(),
        );
        st.host_ip = Some(self.k.cfg.node_ip.clone());
        p
    }

    async fn lookups(&self, c: &Container) -> Result<Lookups, String> {
        let ns = self.record.namespace.clone();
        let mut cms = BTreeMap::new();
        let mut secrets = BTreeMap::new();
        let mut want_cm: Vec<String> = Vec::new();
        let mut want_secret: Vec<String> = Vec::new();
        for f in c.env_from.iter().flatten() {
            if let Some(r) = &f.config_map_ref {
                want_cm.push(r.name.clone());
            }
            if let Some(r) = &f.secret_ref {
                want_secret.push(r.name.clone());
            }
        }
        for e in c.env.iter().flatten() {
            if let Some(v) = &e.value_from {
                if let Some(r) = &v.config_map_key_ref {
                    want_cm.push(r.name.clone());
                }
                if let Some(r) = &v.secret_key_ref {
                    want_secret.push(r.name.clone());
                }
            }
        }
        let cm_api: Api<ConfigMap> = Api::namespaced(self.k.client.clone(), &ns);
        for n in want_cm {
            let got = cm_api
                .get_opt(&n)
                .await
                .map_err(|e| format!("reading configmap {n:?}: {e}"))?;
            cms.insert(n, got.map(|c| c.data.unwrap_or_default()));
        }
        let s_api: Api<Secret> = Api::namespaced(self.k.client.clone(), &ns);
        for n in want_secret {
            let got = s_api
                .get_opt(&n)
                .await
                .map_err(|e| format!("reading secret {n:?}: {e}"))?;
            secrets.insert(
                n,
                got.map(|s| {
                    let mut m: BTreeMap<String, String> = s
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                        .collect();
                    m.extend(s.string_data.unwrap_or_default());
                    m
                }),
            );
        }
        Ok(Lookups { cms, secrets })
    }

    async fn maybe_start(&mut self, i: usize) {
        let now_i = Instant::now();
        match self.ctrs[i].run.state.clone() {
            State::Running { .. } => return,
            State::Waiting { reason, .. } if reason == "CreateContainerConfigError" => {
                if self.ctrs[i].retry_config.is_some_and(|t| now_i < t) {
                    return;
                }
            }
            State::Terminated(t) => {
                if !self.will_restart(&t) {
                    return;
                }
                if now_i < self.ctrs[i].next_start {
                    let c = &mut self.ctrs[i];
                    c.run.last = Some(t);
                    c.run.state = State::Waiting {
                        reason: "CrashLoopBackOff".into(),
                        message: Some(format!(
                            "back-off {}s restarting failed container={} pod={}_{}({})",
                            c.backoff.as_secs(),
                            c.spec.name,
                            self.record.name,
                            self.record.namespace,
                            self.uid
                        )),
                    };
                    return;
                }
            }
            State::Waiting { reason, .. } if reason == "CrashLoopBackOff" => {
                if now_i < self.ctrs[i].next_start {
                    return;
                }
            }
            State::Waiting { .. } => {}
        }
        let spec = self.ctrs[i].spec.clone();
        let pod = self.pod_with_ips();
        let env = match self.lookups(&spec).await {
            Ok(l) => crate::env::environment(&pod, &spec, &l),
            Err(e) => Err(e),
        };
        let argv = env
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|env| crate::env::argv(&spec, env));
        let (env, argv) = match (env, argv) {
            (Ok(e), Ok(a)) => (e, a),
            (Err(m), _) | (_, Err(m)) => {
                self.warn_once("Failed", &format!("Error: {m}"));
                let c = &mut self.ctrs[i];
                c.run.state = State::Waiting {
                    reason: "CreateContainerConfigError".into(),
                    message: Some(m),
                };
                c.retry_config = Some(Instant::now() + Duration::from_secs(10));
                return;
            }
        };
        for (kind, p) in [
            ("startup", &spec.startup_probe),
            ("liveness", &spec.liveness_probe),
            ("readiness", &spec.readiness_probe),
        ] {
            if let Some(p) = p {
                if let Err(e) = probe::validate(p, &spec) {
                    self.warn_once(
                        "InvalidProbe",
                        &format!("container {:?}: {kind} probe ignored: {e}", spec.name),
                    );
                }
            }
        }
        // A new attempt.
        let c = &mut self.ctrs[i];
        if c.started_any {
            if let State::Terminated(t) = &c.run.state {
                c.run.last = Some(t.clone());
            }
            c.run.attempt += 1;
            c.run.restart_count += 1;
        }
        c.started_any = true;
        c.env = env.clone();
        let attempt = c.run.attempt;
        let adir = self.dir.join(&spec.name).join(attempt.to_string());
        let cg = attempt_cgroup(&self.k, &self.uid, &spec.name, attempt);
        let shim_spec = ShimSpec {
            argv,
            env,
            working_dir: spec.working_dir.clone(),
            netns: (!self.record.host_network).then(|| self.k.sandboxes.netns_path(&self.uid)),
            cgroup: cg.clone(),
            log: adir.join("output.log"),
        };
        let limits = spec
            .resources
            .as_ref()
            .and_then(|r| r.limits.clone())
            .unwrap_or_default();
        let mem = limits.get("memory").and_then(|q| parse_bytes(&q.0));
        let cpu = limits.get("cpu").and_then(|q| parse_millis(&q.0));
        let shim_bin = self.k.cfg.shim.clone();
        let started = tokio::task::spawn_blocking(move || {
            start_attempt(&shim_bin, &adir, &cg, &shim_spec, mem, cpu)
        })
        .await
        .unwrap_or_else(|e| Err(format!("start task: {e}")));
        let c = &mut self.ctrs[i];
        match started {
            Ok(r) => {
                c.pid = Some(r.pid);
                c.since = Some(Instant::now());
                c.run.state = State::Running {
                    started_at: r.started_at.clone(),
                };
                c.run.started = spec.startup_probe.is_none();
                c.run.ready = c.run.started && spec.readiness_probe.is_none();
                let tx = self.tx.clone();
                let name = spec.name.clone();
                tokio::spawn(async move {
                    crate::wait_pid(r.shim_pid).await;
                    let _ = tx.send(Msg::Exited { name, attempt });
                });
                self.k.event(
                    &self.pod,
                    false,
                    "Started",
                    &format!("Started container {}", spec.name),
                );
                self.start_probes(i);
                prune_attempts(&self.dir.join(&spec.name), attempt);
            }
            Err(msg) => {
                self.k.event(
                    &self.pod,
                    true,
                    "Failed",
                    &format!("Error: failed to start container {:?}: {msg}", spec.name),
                );
                c.run.state = State::Terminated(Terminated {
                    exit_code: 128,
                    signal: None,
                    reason: "StartError".into(),
                    message: Some(msg),
                    started_at: None,
                    finished_at: now(),
                });
                c.since = None;
                schedule_restart(c, self.k.cfg.backoff_base);
            }
        }
    }

    fn start_probes(&mut self, i: usize) {
        let ip = self.record.pod_ips.first().cloned().unwrap_or_default();
        let netns = (!self.record.host_network).then(|| self.k.sandboxes.netns_path(&self.uid));
        let c = &mut self.ctrs[i];
        for h in c.probes.drain(..) {
            h.abort();
        }
        let target = probe::Target {
            ip,
            netns,
            cgroup: attempt_cgroup(&self.k, &self.uid, &c.spec.name, c.run.attempt),
            env: c.env.clone(),
        };
        let valid = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
            p.clone().filter(|p| probe::validate(p, &c.spec).is_ok())
        };
        let kinds: Vec<(Kind, k8s_openapi::api::core::v1::Probe)> = if !c.run.started {
            valid(&c.spec.startup_probe)
                .map(|p| vec![(Kind::Startup, p)])
                .unwrap_or_default()
        } else {
            [
                (Kind::Liveness, valid(&c.spec.liveness_probe)),
                (Kind::Readiness, valid(&c.spec.readiness_probe)),
            ]
            .into_iter()
            .filter_map(|(k, p)| Some((k, p?)))
            .collect()
        };
        if !c.run.started && kinds.is_empty() {
            // The startup probe is invalid: treat the container as started.
            c.run.started = true;
            c.run.ready =
                valid(&c.spec.readiness_probe).is_none() && c.spec.readiness_probe.is_none();
            return self.start_probes(i);
        }
        for (kind, p) in kinds {
            let h = tokio::spawn(probe::run(
                kind,
                p,
                c.spec.clone(),
                c.run.attempt,
                target.clone(),
                {
                    let tx = self.tx.clone();
                    move |v| tx.send(Msg::Probe(v)).is_ok()
                },
            ));
            c.probes.push(h.abort_handle());
        }
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

    fn grace(&self, deletion: Option<i64>) -> Duration {
        let secs = deletion
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30)
            .max(0);
        Duration::from_secs(secs as u64)
    }

    /// SIGTERM now, `cgroup.kill` after `grace` if the attempt is still running.
    fn stop_container(&mut self, i: usize, grace: Duration) {
        let c = &mut self.ctrs[i];
        for h in c.probes.drain(..) {
            h.abort();
        }
        let Some(pid) = c.pid else {
            return;
        };
        let attempt = c.run.attempt;
        let cg = attempt_cgroup(&self.k, &self.uid, &c.spec.name, attempt);
        let exit = self
            .dir
            .join(&c.spec.name)
            .join(attempt.to_string())
            .join(shim::EXIT);
        if grace.is_zero() {
            cgroup::kill(&cg);
            return;
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            if !exit.exists() {
                cgroup::kill(&cg);
            }
        });
    }

    /// Every container ended for good: release the sandbox (the pod keeps its status).
    async fn finish(&mut self) {
        self.record.finished = true;
        self.save_record();
        let k = self.k.clone();
        let pr = self.pod_ref();
        let host = self.record.host_network;
        if !host {
            let r = tokio::task::spawn_blocking(move || k.sandboxes.teardown(&pr)).await;
            if let Ok(Err(e)) = r {
                tracing::warn!("tearing down the sandbox of {}: {e:#}", self.record.name);
            }
        }
        self.sandbox_up = false;
        cgroup::destroy(
            &self.k.cfg.cgroup_root.join(&self.uid),
            Duration::from_secs(5),
        )
        .await;
    }

    async fn publish(&mut self) {
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
        if self.last_status.as_ref() == Some(&key) {
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
            Ok(_) => self.last_status = Some(key),
            Err(kube::Error::Api(e)) if e.code == 404 => self.last_status = Some(key),
            Err(e) => tracing::warn!("patching status of {}: {e}", self.record.name),
        }
    }

    /// Graceful termination, teardown, and (for a deletion) the final delete.
    async fn shutdown(&mut self, grace: Option<i64>, delete: bool) {
        let grace = self.grace(grace);
        let running: Vec<usize> = (0..self.ctrs.len())
            .filter(|&i| matches!(self.ctrs[i].run.state, State::Running { .. }))
            .collect();
        if !running.is_empty() {
            for &i in &running {
                let name = self.ctrs[i].spec.name.clone();
                self.k.event(
                    &self.pod,
                    false,
                    "Killing",
                    &format!("Stopping container {name}"),
                );
                self.stop_container(i, grace);
            }
            let deadline = Instant::now() + grace + Duration::from_secs(5);
            while self
                .ctrs
                .iter()
                .any(|c| matches!(c.run.state, State::Running { .. }))
                && Instant::now() < deadline
            {
                tokio::select! {
                    Some(m) = self.msgs.recv() => {
                        if let Msg::Exited { name, attempt } = m {
                            self.on_exit(&name, attempt);
                        }
                    }
                    () = tokio::time::sleep_until(deadline) => {}
                    r = self.rx.changed() => {
                        // Force-deleted meanwhile: stop waiting.
                        if r.is_err() || self.rx.borrow().is_none() {
                            cgroup::kill(&self.k.cfg.cgroup_root.join(&self.uid));
                        }
                    }
                }
            }
        }
        for c in &mut self.ctrs {
            for h in c.probes.drain(..) {
                h.abort();
            }
        }
        if delete {
            // The final status, so watchers see the containers terminated.
            self.publish().await;
        }
        destroy_leftovers(&self.k, &self.uid).await;
        if delete {
            let api: Api<Pod> = Api::namespaced(self.k.client.clone(), &self.record.namespace);
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(self.uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&self.record.name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => tracing::warn!("deleting pod {}: {e}", self.record.name),
            }
        }
    }
}

/// ConfigMaps and Secrets a container refers to, fetched beforehand.
#[derive(Debug)]
struct Lookups {
    cms: BTreeMap<String, Option<BTreeMap<String, String>>>,
    secrets: BTreeMap<String, Option<BTreeMap<String, String>>>,
}

impl crate::env::Lookup for Lookups {
    fn config_map(&self, name: &str) -> Result<Option<BTreeMap<String, String>>, String> {
        Ok(self.cms.get(name).cloned().flatten())
    }
    fn secret(&self, name: &str) -> Result<Option<BTreeMap<String, String>>, String> {
        Ok(self.secrets.get(name).cloned().flatten())
    }
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

fn schedule_restart(c: &mut Ctr, base: f64) {
    c.next_start = Instant::now() + c.backoff;
    c.backoff = if c.backoff.is_zero() {
        Duration::from_secs_f64(base)
    } else {
        (c.backoff * 2).min(MAX_BACKOFF)
    };
}

fn start_ticks_match(r: &RunRecord) -> bool {
    crate::start_ticks(r.shim_pid) == Some(r.shim_start)
}

fn prune_attempts(cdir: &Path, current: u32) {
    for a in attempts(cdir) {
        if a + 1 < current {
            let _ = std::fs::remove_dir_all(cdir.join(a.to_string()));
        }
    }
}

/// Starts one attempt through a shim: returns its run record or the start error. Blocking.
fn start_attempt(
    shim: &Path,
    adir: &Path,
    cg: &Path,
    spec: &ShimSpec,
    mem: Option<i64>,
    cpu: Option<i64>,
) -> Result<RunRecord, String> {
    std::fs::create_dir_all(adir).map_err(|e| format!("creating {}: {e}", adir.display()))?;
    cgroup::create(cg).map_err(|e| format!("creating cgroup {}: {e}", cg.display()))?;
    cgroup::set_limits(cg, mem, cpu);
    let bytes = serde_json::to_vec(spec).map_err(|e| e.to_string())?;
    shim::write_atomic(&adir.join(shim::SPEC), &bytes).map_err(|e| format!("spec: {e}"))?;
    let shim_log = std::fs::File::create(adir.join("shim.log")).map_err(|e| e.to_string())?;
    let mut child = std::process::Command::new(shim)
        .arg(adir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(shim_log)
        .spawn()
        .map_err(|e| format!("starting the shim: {e}"))?;
    let shim_pid = child.id() as i32;
    let shim_start = crate::start_ticks(shim_pid).unwrap_or(0);
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = std::io::BufReader::new(out).read_line(&mut line);
    }
    let started: Started = serde_json::from_str(line.trim()).map_err(|_| {
        let log = std::fs::read_to_string(adir.join("shim.log")).unwrap_or_default();
        format!("the shim failed: {}", log.trim())
    })?;
    // The child is reaped by `wait_pid` (pidfd + waitpid); don't let `Child` do it.
    std::mem::forget(child);
    if let Some(err) = started.error {
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(shim_pid), None);
        return Err(err);
    }
    let pid = started.pid.ok_or("the shim reported no pid")?;
    let rec = RunRecord {
        shim_pid,
        shim_start,
        pid,
        started_at: now(),
    };
    let b = serde_json::to_vec(&rec).map_err(|e| e.to_string())?;
    shim::write_atomic(&adir.join("run.json"), &b).map_err(|e| format!("run record: {e}"))?;
    Ok(rec)
}

/// Kills whatever is left of pod `uid`, detaches it from the network, removes its state.
pub async fn destroy_leftovers(k: &Arc<Kubelet>, uid: &str) {
    cgroup::destroy(&k.cfg.cgroup_root.join(uid), Duration::from_secs(10)).await;
    let dir = k.pod_dir(uid);
    let rec: PodRecord = read_json(&dir.join("pod.json")).unwrap_or_default();
    let pr = PodRef {
        namespace: rec.namespace,
        name: rec.name,
        uid: uid.to_owned(),
    };
    let kk = k.clone();
    let r = tokio::task::spawn_blocking(move || kk.sandboxes.teardown(&pr)).await;
    if let Ok(Err(e)) = r {
        tracing::warn!("tearing down the sandbox of pod {uid}: {e:#}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_immediate_to_the_cap() {
        let mut c = Ctr {
            run: ContainerRun {
                name: "c".into(),
                image: String::new(),
                attempt: 0,
                restart_count: 0,
                state: State::Running {
                    started_at: String::new(),
                },
                last: None,
                ready: false,
                started: false,
            },
            spec: Container::default(),
            pid: None,
            started_any: true,
            next_start: Instant::now(),
            backoff: Duration::ZERO,
            since: None,
            probes: Vec::new(),
            env: Vec::new(),
            retry_config: None,
        };
        let mut waits = Vec::new();
        for _ in 0..8 {
            waits.push(c.backoff.as_secs());
            schedule_restart(&mut c, 10.0);
        }
        assert_eq!(waits, vec![0, 10, 20, 40, 80, 160, 300, 300]);
    }
}
