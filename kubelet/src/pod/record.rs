//! What a pod worker keeps on disk under `<root>/pods/<uid>/` ([`PodRecord`] in `pod.json`, a
//! [`RunRecord`] per started attempt, the shim's exit status), and the restore that rebuilds a
//! worker from it: a restarted kubelet adopts the containers still running (PID and start-time
//! checked) and reports the others as ended.

use super::{attempt_cgroup, now, Ctr, Msg, Worker};
use crate::cgroup;
use crate::sandbox::PodRef;
use crate::shim::{self, Exit};
use crate::status::{ContainerRun, State, Terminated};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;

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

pub(super) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

pub(super) fn terminated_from(exit: &Exit, started_at: Option<String>) -> Terminated {
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

impl Worker {
    pub(super) fn pod_ref(&self) -> PodRef {
        PodRef {
            namespace: self.record.namespace.clone(),
            name: self.record.name.clone(),
            uid: self.uid.clone(),
        }
    }

    pub(super) fn save_record(&self) {
        let _ = std::fs::create_dir_all(&self.dir);
        if let Ok(b) = serde_json::to_vec(&self.record) {
            if let Err(e) = shim::write_atomic(&self.dir.join("pod.json"), &b) {
                tracing::warn!("writing pod record: {e}");
            }
        }
    }

    /// Rebuilds the worker's view from disk (a restarted kubelet adopting its pods).
    pub(super) fn restore(&mut self) {
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
}

fn start_ticks_match(r: &RunRecord) -> bool {
    crate::start_ticks(r.shim_pid) == Some(r.shim_start)
}

pub(super) fn prune_attempts(cdir: &Path, current: u32) {
    for a in attempts(cdir) {
        if a + 1 < current {
            let _ = std::fs::remove_dir_all(cdir.join(a.to_string()));
        }
    }
}
