//! Starting: the pod sandbox (network namespace and CNI, or the host network), and each
//! container attempt (ConfigMap and Secret lookups, environment and argv, cgroup limits from
//! `resources.limits`, the shim that runs it) with its startup, liveness and readiness probes.

use super::backoff::schedule_restart;
use super::record::{prune_attempts, RunRecord};
use super::{attempt_cgroup, now, Msg, Worker};
use crate::cgroup;
use crate::probe::{self, Kind};
use crate::shim::{self, ShimSpec, Started};
use crate::status::{State, Terminated};
use ferry_apimachinery::quantity::{parse_bytes, parse_millis};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::api::Api;
use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;

impl Worker {
    /// Sets the sandbox up; false while it is not (the pod waits).
    pub(super) async fn ensure_sandbox(&mut self) -> bool {
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

    pub(super) async fn maybe_start(&mut self, i: usize) {
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
            stdin: spec.stdin.unwrap_or(false),
            stdin_once: spec.stdin_once.unwrap_or(false),
            tty: spec.tty.unwrap_or(false),
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

    pub(super) fn start_probes(&mut self, i: usize) {
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
