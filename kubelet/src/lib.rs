//! `ferry-kubelet`: runs the pods bound to its node as processes in their own network namespaces.
//!
//! There is no image registry: a container runs its `command`/`args` from the node's filesystem
//! (the image name is only recorded). Everything else is what a kubelet with a CRI runtime does:
//!
//! | module | job |
//! |---|---|
//! | [`node`] | Node registration, Lease heartbeat, node conditions (Ready; `NetworkUnavailable` is the network agent's) |
//! | [`sandbox`] | pod network namespaces and their CNI attachment (libcni semantics) |
//! | [`shim`] | the per-container supervisor process: netns, cgroup, log file, exit status |
//! | [`pod`] | the per-pod worker: start, restart with back-off, probes, termination, status |
//! | [`probe`] | exec / httpGet / tcpSocket probes |
//! | [`env`] | environment and `$(VAR)` expansion |
//! | [`status`] | pod status computation |
//! | [`cgroup`] | per-container cgroups (`cgroup.kill`, `populated`) |
//! | [`logs`] | the kubelet's HTTP endpoint: `/containerLogs` (behind `kubectl logs`), `/healthz` |
//! | `stream` | `/exec` and `/portForward` on that endpoint (behind `kubectl exec`, `cp`, `port-forward`) |
//!
//! State lives on disk under `--root-dir` (`pods/<uid>/...`, `netns/<uid>`, `cni-cache/`), so a
//! kubelet killed with `kill -9` and restarted adopts its running pods (no second CNI ADD, no
//! duplicate processes) and cleans up pods deleted while it was down.
//!
//! Kernel access (namespaces, cgroups, pidfds, fork/exec) goes through `ferry-sys`.

#![forbid(unsafe_code)]

pub mod cgroup;
pub mod env;
pub mod logs;
pub mod node;
pub mod pod;
pub mod probe;
pub mod sandbox;
pub mod shim;
pub mod status;
mod stream;

use anyhow::{bail, Context as _, Result};
use ferry_kube::watch::Reflector;
use k8s_openapi::api::core::v1::{Event, ObjectReference, Pod};
use kube::api::{Api, PostParams};
use kube::runtime::reflector::Store;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// Command-line configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Node name.
    pub node_name: String,
    /// API server URL.
    pub server: String,
    /// Bearer token.
    pub token: String,
    /// CA certificate (PEM) of the API server.
    pub ca_file: PathBuf,
    /// The `ferry-shim` executable.
    pub shim: PathBuf,
    /// CNI conf dir.
    pub cni_conf_dir: PathBuf,
    /// CNI plugin dir.
    pub cni_bin_dir: PathBuf,
    /// State directory.
    pub root_dir: PathBuf,
    /// cgroup (v2) directory under which pods run.
    pub cgroup_root: PathBuf,
    /// The node's IP.
    pub node_ip: String,
    /// Port of the kubelet endpoint.
    pub port: u16,
    /// The endpoint's serving certificate (PEM, from the cluster CA: `ferry-server kubelet-cert`).
    pub tls_cert_file: PathBuf,
    /// Its key.
    pub tls_key_file: PathBuf,
    /// CA that signs the API server's client certificate (usually the cluster CA).
    pub client_ca_file: PathBuf,
    /// `capacity.pods`.
    pub max_pods: u32,
    /// `capacity.cpu` override.
    pub cpu: Option<String>,
    /// `capacity.memory` override.
    pub memory: Option<String>,
    /// Lease renewal period (s).
    pub lease_interval: u64,
    /// Node status refresh period (s).
    pub status_interval: u64,
    /// First restart back-off after the first immediate restart (s); doubles up to 300.
    pub backoff_base: f64,
    /// Bounds of the kubelet endpoint's HTTP server.
    pub http: logs::HttpLimits,
}

/// The running kubelet, shared by its tasks.
pub struct Kubelet {
    /// Configuration.
    pub cfg: Config,
    /// API client (bearer token of this node).
    pub client: kube::Client,
    /// Sandboxes.
    pub sandboxes: sandbox::Sandboxes,
    /// `None` when the pod network is ready, else why not.
    pub network: watch::Sender<Option<String>>,
    /// The pods bound to this node.
    pub pods: Store<Pod>,
    workers: Mutex<HashMap<String, watch::Sender<Option<Arc<Pod>>>>>,
}

/// A kube client for `server` trusting `ca_file`, authenticating with `token`.
pub async fn client(server: &str, ca_file: &Path, token: &str) -> Result<kube::Client> {
    // The CA is read now (a missing file fails here, not on the first request).
    let ca = ferry_kube::client::read_ca(ca_file)?;
    Ok(ferry_kube::ClientBuilder::new(server)
        .ca(ca)
        .token(token)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .await?)
}

impl std::fmt::Debug for Kubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubelet")
            .field("node", &self.cfg.node_name)
            .finish_non_exhaustive()
    }
}

impl Kubelet {
    /// Directory of pod `uid`'s state.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.cfg.root_dir.join("pods").join(uid)
    }

    /// Records an Event about `pod` (in the background; failures are logged).
    pub fn event(&self, pod: &Pod, warning: bool, reason: &str, message: &str) {
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = pod.metadata.name.clone().unwrap_or_default();
        if warning {
            tracing::warn!("{ns}/{name}: {reason}: {message}");
        } else {
            tracing::info!("{ns}/{name}: {reason}: {message}");
        }
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
        let ev = Event {
            metadata: kube::api::ObjectMeta {
                name: Some(format!("{name}.{:x}", rand_suffix())),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(name),
                namespace: Some(ns.clone()),
                uid: pod.metadata.uid.clone(),
                resource_version: pod.metadata.resource_version.clone(),
                ..Default::default()
            },
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some(if warning { "Warning" } else { "Normal" }.into()),
            source: Some(k8s_openapi::api::core::v1::EventSource {
                component: Some("kubelet".into()),
                host: Some(self.cfg.node_name.clone()),
            }),
            reporting_component: Some("kubelet".into()),
            reporting_instance: Some(self.cfg.node_name.clone()),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        tokio::spawn(async move {
            if let Err(e) = api.create(&PostParams::default(), &ev).await {
                tracing::debug!("recording an event: {e}");
            }
        });
    }

    fn forget_worker(&self, uid: &str) {
        self.workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid);
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// Opens a pidfd for `pid` (`None` if the process is gone).
pub fn pidfd(pid: i32) -> Option<OwnedFd> {
    ferry_sys::process::Pidfd::open(pid).ok().map(OwnedFd::from)
}

/// Waits until process `pid` has exited (reaping it if it is our child).
pub async fn wait_pid(pid: i32) {
    if let Ok(fd) = ferry_sys::process::Pidfd::open(pid) {
        let _ = fd.exited().await;
    }
    let _ = nix::sys::wait::waitpid(
        nix::unistd::Pid::from_raw(pid),
        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
    );
}

/// The start time (clock ticks since boot) of `pid`, to tell a PID from a reused one.
pub fn start_ticks(pid: i32) -> Option<u64> {
    ferry_sys::process::start_ticks(pid)
}

/// Runs the kubelet until the process is stopped.
pub async fn run(cfg: Config) -> Result<()> {
    if cfg.node_name.is_empty() {
        bail!("--node-name must not be empty");
    }
    for d in [&cfg.root_dir, &cfg.cni_conf_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    if !cfg.cni_bin_dir.is_dir() {
        bail!(
            "--cni-bin-dir {} is not a directory",
            cfg.cni_bin_dir.display()
        );
    }
    cgroup::create(&cfg.cgroup_root)
        .with_context(|| format!("creating cgroup {}", cfg.cgroup_root.display()))?;
    if !cfg.cgroup_root.join("cgroup.procs").exists() {
        bail!(
            "--cgroup-root {} is not a cgroup v2 directory",
            cfg.cgroup_root.display()
        );
    }
    let client = client(&cfg.server, &cfg.ca_file, &cfg.token).await?;
    let sandboxes = sandbox::Sandboxes::new(&cfg.root_dir, &cfg.cni_conf_dir, &cfg.cni_bin_dir);
    let (network, _) = watch::channel(Some("not checked yet".to_owned()));
    let wake = Arc::new(Notify::new());
    // The pods bound to this node; every change (and every watch error) wakes the dispatcher.
    let pods = Reflector::new(Api::<Pod>::all(client.clone()))
        .fields(&format!("spec.nodeName={}", cfg.node_name))
        .name("pod watch")
        .wake(wake.clone())
        .spawn();
    let k = Arc::new(Kubelet {
        cfg,
        client,
        sandboxes,
        network,
        pods,
        workers: Mutex::new(HashMap::new()),
    });
    let node_uid = node::register(&k).await?;
    tokio::spawn(node::lease_loop(k.clone(), node_uid));
    tokio::spawn(node::network_loop(k.clone()));
    tokio::spawn(node::status_loop(k.clone()));
    let server = logs::serve(k.clone()).await?;
    tokio::spawn(server);
    ferry_kube::watch::ready(&k.pods)
        .await
        .context("waiting for the first pod list")?;
    cleanup_orphans(&k).await;
    tracing::info!("kubelet {} running", k.cfg.node_name);
    let mut lp = ferry_kube::Loop::on_wake_only(wake);
    loop {
        dispatch(&k);
        lp.after(()).await;
    }
}

/// Starts a worker for every new pod, forwards updates, tells workers of vanished pods.
fn dispatch(k: &Arc<Kubelet>) {
    let current: HashMap<String, Arc<Pod>> = k
        .pods
        .state()
        .into_iter()
        .filter_map(|p| Some((p.metadata.uid.clone()?, p)))
        .collect();
    let mut workers = k.workers.lock().unwrap_or_else(|p| p.into_inner());
    for (uid, pod) in &current {
        match workers.get(uid) {
            Some(tx) => {
                tx.send_if_modified(|old| {
                    let changed = old.as_ref().map(|o| &o.metadata.resource_version)
                        != Some(&pod.metadata.resource_version);
                    if changed {
                        *old = Some(pod.clone());
                    }
                    changed
                });
            }
            None => {
                let (tx, rx) = watch::channel(Some(pod.clone()));
                workers.insert(uid.clone(), tx);
                let k = k.clone();
                let uid = uid.clone();
                tokio::spawn(async move {
                    pod::Worker::start(k.clone(), uid.clone(), rx).await;
                    k.forget_worker(&uid);
                });
            }
        }
    }
    for (uid, tx) in workers.iter() {
        if !current.contains_key(uid) {
            tx.send_if_modified(|old| old.take().is_some());
        }
    }
}

/// Pods on disk (or namespaces, or cgroups) that the API no longer has: deleted while the kubelet
/// was down. Kill, detach, remove.
async fn cleanup_orphans(k: &Arc<Kubelet>) {
    let live: std::collections::HashSet<String> = k
        .pods
        .state()
        .iter()
        .filter_map(|p| p.metadata.uid.clone())
        .collect();
    let mut uids: std::collections::BTreeSet<String> =
        std::fs::read_dir(k.cfg.root_dir.join("pods"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
    uids.extend(k.sandboxes.existing());
    if let Ok(d) = std::fs::read_dir(&k.cfg.cgroup_root) {
        uids.extend(
            d.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned()),
        );
    }
    for uid in uids.into_iter().filter(|u| !live.contains(u)) {
        tracing::info!("cleaning up pod {uid}, deleted while the kubelet was away");
        pod::destroy_leftovers(k, &uid).await;
    }
}
