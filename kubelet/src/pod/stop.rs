//! Stopping: one container (SIGTERM, then `cgroup.kill` after the grace period), the sandbox
//! once every container ended for good, the whole pod (graceful termination, teardown and, for a
//! deletion, the final delete with grace 0), and [`destroy_leftovers`] of a pod that is gone.

use super::record::{read_json, PodRecord};
use super::{attempt_cgroup, Msg, Worker};
use crate::sandbox::PodRef;
use crate::shim;
use crate::status::State;
use crate::{cgroup, Kubelet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Preconditions};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

impl Worker {
    pub(super) fn grace(&self, deletion: Option<i64>) -> Duration {
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
    pub(super) fn stop_container(&mut self, i: usize, grace: Duration) {
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
    pub(super) async fn finish(&mut self) {
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

    /// Graceful termination, teardown, and (for a deletion) the final delete.
    pub(super) async fn shutdown(&mut self, grace: Option<i64>, delete: bool) {
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
