//! The service reconciler: watches Services, EndpointSlices and Nodes, computes the service
//! table ([`super::table::compute`]) and hands it to the proxier, round after round, beside the
//! overlay loop of [`crate::agent`].
//!
//! ```text
//! watches: Services, EndpointSlices (compact records, super::records: changed records only),
//!          Nodes (reflector: InternalIP changes only) ──► wake
//! wait for three complete lists ──► proxier for --service-proxy (ebpf | iptables | off)
//!     ebpf unavailable and --proxy-fallback ──► iptables (reported on the Node and in the log)
//! loop {
//!     table = compute(records, nodes)   (pure)
//!     proxier.sync(table)               (on a blocking thread; only differences are written)
//!     health-check listeners (super::healthcheck: the table's healthCheckNodePorts, 503 after a failed sync)
//!     metrics, "service table programmed" log (when its digest changed), FerryServiceProxyReady
//!     sleep until an event (+5 ms to batch a burst), the resync period, or 1 s after a failure
//! }
//! ```
//!
//! Nothing is synced before all three lists are complete, so a starting agent never mistakes
//! "not listed yet" for "no endpoints" (which would reject working Services). A failed sync
//! leaves the previous datapath in place (`FerryServiceProxyReady=False` with the error) and is
//! retried every second. After the first successful sync, what an earlier run in the other
//! mode left is removed (stale iptables chains under eBPF; the pinned socket LB under an
//! explicit `--service-proxy iptables`). The programming latency is measured from the arrival of the first
//! event not yet in the datapath to the end of the sync that wrote it.

use super::healthcheck::HealthServer;
use super::iptables::{self, IptablesProxier};
use super::records::{self, Records};
use super::table::{self, ServiceRecord, ServiceTable, SliceRecord};
use super::{Proxier, ProxyError, ProxyMode};
use crate::bypass::PodBypass;
use crate::config::Config;
use crate::health::{self, ProxyHealth};
use crate::metrics::Metrics;
use ferry_kube::watch::Reflector;
use ferry_kube::Loop;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use std::collections::{BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// After a wake-up, wait this long so a burst of events makes one round.
const DEBOUNCE: Duration = Duration::from_millis(5);
/// Retry period after a failed round.
const RETRY: Duration = Duration::from_secs(1);

/// When the first event not yet programmed arrived (shared with the reflectors' filters).
type FirstChange = Arc<Mutex<Option<Instant>>>;

fn mark(first: &FirstChange) {
    let mut f = first.lock().unwrap_or_else(|e| e.into_inner());
    f.get_or_insert_with(Instant::now);
}

fn take(first: &FirstChange) -> Option<Instant> {
    first.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// The IPv4 InternalIPs of a Node: all the service table reads from it.
fn internal_ips(n: &Node) -> BTreeSet<String> {
    n.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .map(|a| a.address.clone())
        .collect()
}

/// The eBPF proxier for `cfg`.
fn ebpf_proxier(cfg: &Config) -> Result<Box<dyn Proxier>, ProxyError> {
    let Some(cgroup) = cfg.proxy_cgroup.as_deref() else {
        return Err(ProxyError::Bpf(
            "--proxy-cgroup is not set (the cgroup the socket hooks attach to)".to_owned(),
        ));
    };
    let mut p = super::ebpf::EbpfProxier::new(&cfg.bpffs_dir, cgroup)?;
    // Without the tc datapath (off, or enabling it failed) a previous agent's tc programs are
    // detached rather than left translating with frozen maps.
    p.configure_external(
        cfg.external_datapath
            .then(|| super::ebpf::external_options(cfg)),
    );
    Ok(Box::new(p))
}

/// A proxier, and a note when it is the iptables fallback of an unavailable eBPF datapath.
type Started = (Box<dyn Proxier>, Option<String>);

/// The proxier for `cfg` (`None` for `--service-proxy off`).
fn proxier(cfg: &Config) -> Result<Option<Started>, ProxyError> {
    match cfg.service_proxy {
        ProxyMode::Off => Ok(None),
        ProxyMode::Iptables => Ok(Some((
            Box::new(IptablesProxier::new(Some(cfg.cluster_cidr))),
            None,
        ))),
        ProxyMode::Ebpf => match ebpf_proxier(cfg) {
            Ok(p) => Ok(Some((p, None))),
            Err(e) if cfg.proxy_fallback && !previous_ebpf(cfg) => {
                Ok(Some((fallback(cfg, &e), Some(fallback_note(&e)))))
            }
            Err(e) => Err(e),
        },
    }
}

fn fallback(cfg: &Config, e: &ProxyError) -> Box<dyn Proxier> {
    tracing::warn!(error = %e, "eBPF Service datapath unavailable: falling back to iptables (--proxy-fallback)");
    Box::new(IptablesProxier::new(Some(cfg.cluster_cidr)))
}

/// A socket LB a previous run left attached (its cgroup links pinned under `--bpffs-dir`; they stay
/// while the agent is down). Then something *was* programmed: a new eBPF start that fails leaves
/// that datapath in place (reported on the Node) instead of falling back to iptables, whose rules
/// the still-attached hooks would shadow with translations nobody updates.
fn previous_ebpf(cfg: &Config) -> bool {
    crate::bpf::attached(&cfg.bpffs_dir)
}

fn fallback_note(e: &ProxyError) -> String {
    format!("iptables fallback (--proxy-fallback): {e}")
}

/// Starts the service reconciler in the background (a tokio task). Returns at once.
pub fn spawn(cfg: Config, client: kube::Client, metrics: Arc<Metrics>, bypass: Arc<PodBypass>) {
    // LoadBalancer addresses are announced on the underlay by their owner node (its own watches).
    super::l2::spawn(&cfg, client.clone());
    tokio::spawn(run(cfg, client, metrics, bypass));
}

/// What the reconciler keeps between rounds.
struct State {
    cfg: Config,
    nodes_api: Api<Node>,
    services: Records<ServiceRecord>,
    slices: Records<SliceRecord>,
    nodes: Store<Node>,
    metrics: Arc<Metrics>,
    /// Told which proxier programmed the node (the agent's loop turns the pod-to-pod netfilter
    /// bypass on or off from it).
    bypass: Arc<PodBypass>,
    proxier: Option<Box<dyn Proxier>>,
    /// Set when the running proxier is the iptables fallback.
    note: Option<String>,
    /// A sync has succeeded in this process (no fallback after that).
    programmed: bool,
    /// Frontends the last sync could not program (warned when the number changes).
    failed: usize,
    /// A digest of the last table's entries (for "changed" logs; one table is kept, the
    /// proxier's, not a second copy).
    last: Option<u64>,
    /// Skipped objects last logged.
    skipped: Vec<(String, String)>,
    /// The condition posted last (to log transitions once).
    health: Option<ProxyHealth>,
    /// The `healthCheckNodePort` listeners (on every node address, as kube-proxy's).
    checks: HealthServer,
    first_change: FirstChange,
}

/// A digest of a table's entries: equal tables, equal digests (a collision only skips a log line).
fn digest(t: &ServiceTable) -> u64 {
    let mut h = DefaultHasher::new();
    t.entries.hash(&mut h);
    h.finish()
}

async fn run(cfg: Config, client: kube::Client, metrics: Arc<Metrics>, bypass: Arc<PodBypass>) {
    let wake = Arc::new(Notify::new());
    let first_change: FirstChange = Arc::default();
    // A changed record wakes the loop and stamps the first unprocessed change (for the
    // change-to-datapath latency); so does the end of a (re)list that changed something.
    let fc = first_change.clone();
    let services = records::spawn(
        Api::<Service>::all(client.clone()),
        records::Watch {
            name: "Service watch failed (retrying with backoff)",
            wake: wake.clone(),
            on_change: move || mark(&fc),
            convert: ServiceRecord::new,
        },
    );
    let fc = first_change.clone();
    let node_name = cfg.node_name.clone();
    let slices = records::spawn(
        Api::<EndpointSlice>::all(client.clone()),
        records::Watch {
            name: "EndpointSlice watch failed (retrying with backoff)",
            wake: wake.clone(),
            on_change: move || mark(&fc),
            convert: move |s: &EndpointSlice| SliceRecord::new(s, &node_name),
        },
    );
    let fc = first_change.clone();
    let mut seen: HashMap<String, BTreeSet<String>> = HashMap::new();
    let nodes_api = Api::<Node>::all(client);
    let nodes = Reflector::new(nodes_api.clone())
        .wake(wake.clone())
        .wake_on_error(false)
        .name("Node watch (services) failed (retrying with backoff)")
        .wake_if(move |e| {
            let changed = match e {
                watcher::Event::Apply(n) | watcher::Event::InitApply(n) => {
                    let name = n.metadata.name.clone().unwrap_or_default();
                    let ips = internal_ips(n);
                    seen.insert(name, ips.clone()) != Some(ips)
                }
                watcher::Event::Delete(n) => seen
                    .remove(n.metadata.name.as_deref().unwrap_or_default())
                    .is_some(),
                watcher::Event::Init => false,
                watcher::Event::InitDone => return true,
            };
            if changed {
                mark(&fc);
            }
            changed
        })
        .spawn();
    for (what, ready) in [
        ("Service", services.ready().await.map_err(|e| e.to_string())),
        (
            "EndpointSlice",
            slices.ready().await.map_err(|e| e.to_string()),
        ),
        (
            "Node",
            ferry_kube::watch::ready(&nodes)
                .await
                .map_err(|e| e.to_string()),
        ),
    ] {
        if let Err(e) = ready {
            tracing::error!(error = %e, "{what} watch ended: Services are not routed by this agent");
            return;
        }
    }
    let mut st = State {
        nodes_api,
        services,
        slices,
        nodes,
        metrics,
        bypass,
        proxier: None,
        note: None,
        programmed: false,
        failed: 0,
        last: None,
        skipped: Vec::new(),
        health: None,
        checks: HealthServer::new(std::net::Ipv4Addr::UNSPECIFIED),
        first_change,
        cfg,
    };
    let mut rounds = Loop::new(wake, st.cfg.resync)
        .retry(RETRY)
        .debounce(DEBOUNCE);
    loop {
        let faulty = st.round().await;
        rounds.after(faulty).await;
    }
}

impl State {
    /// One round; true when it failed (retry sooner).
    async fn round(&mut self) -> bool {
        let pending = take(&self.first_change);
        let health = self.sync(pending).await;
        let faulty = !matches!(health, ProxyHealth::Programmed { .. } | ProxyHealth::Off);
        self.post(health).await;
        faulty
    }

    /// Makes sure a proxier exists, computes the table and syncs it.
    async fn sync(&mut self, pending: Option<Instant>) -> ProxyHealth {
        if self.proxier.is_none() {
            match proxier(&self.cfg) {
                Ok(None) => {
                    self.metrics
                        .update_services(|s| s.mode = ProxyMode::Off.name());
                    self.bypass.set_ebpf(false);
                    return ProxyHealth::Off;
                }
                Ok(Some((p, note))) => {
                    tracing::info!(mode = p.mode().name(), "Service proxier started");
                    self.metrics.update_services(|s| s.mode = p.mode().name());
                    self.proxier = Some(p);
                    self.note = note;
                }
                Err(e) => {
                    self.metrics.update_services(|s| s.mode = "none");
                    return ProxyHealth::Unavailable(e.to_string());
                }
            }
        }
        let start = Instant::now();
        let services = self.services.snapshot();
        let slices = self.slices.snapshot();
        let nodes = self.nodes.state();
        let table = table::compute(&services, &slices, &nodes, &table::Options::default());
        drop((services, slices, nodes));
        let Some(mut p) = self.proxier.take() else {
            return ProxyHealth::Unavailable("no proxier".to_owned());
        };
        let (p, table, result) = match tokio::task::spawn_blocking(move || {
            let r = p.sync(&table);
            (p, table, r)
        })
        .await
        {
            Ok(v) => v,
            Err(e) => {
                // The sync panicked: the proxier is gone; a new one is made next round.
                return ProxyHealth::Failing {
                    mode: self.cfg.service_proxy.name(),
                    error: format!("sync panicked: {e}"),
                };
            }
        };
        let mode = p.mode().name();
        let elapsed = start.elapsed().as_secs_f64();
        match result {
            Ok(stats) => {
                if !self.programmed {
                    self.remove_other_datapath(p.mode());
                }
                self.programmed = true;
                self.bypass.set_ebpf(p.mode() == ProxyMode::Ebpf);
                let datapath = p.datapath();
                self.proxier = Some(p);
                self.record(&table, elapsed, false);
                self.metrics.update_services(|s| {
                    s.failed_frontends = stats.failed as u64;
                    s.datapath = datapath;
                });
                if stats.changed + stats.removed > 0 {
                    if let Some(t) = pending {
                        let latency = t.elapsed().as_secs_f64();
                        self.metrics.update_services(|s| s.latency.observe(latency));
                    }
                }
                if stats.failed != self.failed {
                    if stats.failed > 0 {
                        tracing::warn!(
                            failed = stats.failed,
                            "some Service frontends could not be programmed (retried every round)"
                        );
                    } else {
                        tracing::info!("every Service frontend is programmed again");
                    }
                    self.failed = stats.failed;
                }
                self.checks.sync(&table, true);
                self.log_table(table);
                ProxyHealth::Programmed {
                    mode,
                    note: self.note.clone(),
                }
            }
            Err(e @ ProxyError::Bpf(_))
                if !self.programmed && self.cfg.proxy_fallback && !previous_ebpf(&self.cfg) =>
            {
                self.proxier = Some(fallback(&self.cfg, &e));
                self.note = Some(fallback_note(&e));
                self.bypass.set_ebpf(false);
                self.metrics
                    .update_services(|s| s.mode = ProxyMode::Iptables.name());
                self.record(&table, elapsed, true);
                self.checks.sync(&table, false);
                ProxyHealth::Failing {
                    mode,
                    error: e.to_string(),
                }
            }
            Err(e) => {
                self.proxier = Some(p);
                self.record(&table, elapsed, true);
                self.checks.sync(&table, false);
                ProxyHealth::Failing {
                    mode,
                    error: e.to_string(),
                }
            }
        }
    }

    /// After the first successful sync of `mode`: removes what an earlier run in the other mode
    /// left (iptables chains under eBPF; with an explicit `--service-proxy iptables`, the pinned
    /// socket LB, whose hooks would otherwise keep translating connects with stale maps). The
    /// iptables fallback keeps the pins: they are an earlier eBPF datapath's, left in place.
    fn remove_other_datapath(&self, mode: ProxyMode) {
        if mode != ProxyMode::Iptables {
            if let Err(e) = iptables::uninstall() {
                tracing::warn!(error = %e, "removing stale iptables Service chains failed");
            }
        } else if self.cfg.service_proxy == ProxyMode::Iptables && self.cfg.bpffs_dir.exists() {
            match super::ebpf::uninstall(&self.cfg.bpffs_dir) {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    pins = n,
                    dir = %self.cfg.bpffs_dir.display(),
                    "removed the eBPF socket LB of an earlier run (iptables mode now)"
                ),
                Err(e) => tracing::warn!(error = %e, "removing the stale eBPF socket LB failed"),
            }
        }
    }

    fn record(&self, t: &ServiceTable, elapsed: f64, failed: bool) {
        let services: BTreeSet<(&str, &str)> = t
            .entries
            .values()
            .map(|e| (e.service.namespace.as_str(), e.service.name.as_str()))
            .collect();
        let backends: usize = t.entries.values().map(|e| e.backends.len()).sum();
        self.metrics.update_services(|s| {
            s.services = services.len() as u64;
            s.frontends = t.entries.len() as u64;
            s.backends = backends as u64;
            s.skipped = t.skipped.len() as u64;
            s.syncs += 1;
            if failed {
                s.sync_errors += 1;
            }
            s.sync_seconds.observe(elapsed);
        });
    }

    /// Logs the table when it changed, and skipped objects when they changed.
    fn log_table(&mut self, t: ServiceTable) {
        if self.skipped != t.skipped {
            for (id, why) in t.skipped.iter().filter(|s| !self.skipped.contains(s)) {
                tracing::warn!(object = %id, reason = %why, "Service object skipped");
            }
            self.skipped = t.skipped.clone();
        }
        let d = digest(&t);
        if self.last != Some(d) {
            let backends: usize = t.entries.values().map(|e| e.backends.len()).sum();
            let empty = t.entries.values().filter(|e| e.backends.is_empty()).count();
            tracing::info!(
                frontends = t.entries.len(),
                backends,
                without_endpoints = empty,
                "service table programmed"
            );
            self.last = Some(d);
        }
    }

    /// Posts `FerryServiceProxyReady` when it changed; logs transitions.
    async fn post(&mut self, h: ProxyHealth) {
        if self.health.as_ref() != Some(&h) {
            match &h {
                ProxyHealth::Programmed { .. } | ProxyHealth::Off => {}
                ProxyHealth::Unavailable(why) => {
                    tracing::error!(reason = %why, "no Service proxier (retrying every second)")
                }
                ProxyHealth::Failing { error, .. } => {
                    tracing::error!(error = %error, "Service sync failed (previous datapath kept; retrying every second)")
                }
            }
            self.health = Some(h.clone());
        }
        let name = &self.cfg.node_name;
        let Some(me) = self.nodes.get(&ObjectRef::new(name)) else {
            return;
        };
        let current = me
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let want = [health::service_proxy(&h)];
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let Some(patch) = health::patch(&current, &want, &now) else {
            return;
        };
        if let Err(e) = self
            .nodes_api
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            tracing::warn!(error = %e, "posting FerryServiceProxyReady failed (retried next round)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunArgs;
    use clap::Parser as _;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn cfg(extra: &[&str]) -> Config {
        let mut args = vec![
            "ferry-agent",
            "--node-name",
            "n1",
            "--server",
            "https://10.0.0.1:6443",
            "--token",
            "t",
            "--certificate-authority",
            "/ca.crt",
            "--cni-conf-dir",
            "/etc/cni/net.d",
            "--run-dir",
            "/run/ferry",
        ];
        args.extend_from_slice(extra);
        Cli::try_parse_from(args)
            .unwrap()
            .run
            .into_config()
            .unwrap()
    }

    #[test]
    fn proxier_per_mode_and_the_iptables_fallback() {
        assert!(proxier(&cfg(&["--service-proxy", "off"]))
            .unwrap()
            .is_none());
        let (p, note) = proxier(&cfg(&["--service-proxy", "iptables"]))
            .unwrap()
            .unwrap();
        assert_eq!((p.mode(), note), (ProxyMode::Iptables, None));
        // ebpf without a cgroup cannot start: an error (reported on the Node) ...
        let e = proxier(&cfg(&[])).err().unwrap();
        assert!(e.to_string().contains("--proxy-cgroup is not set"), "{e}");
        // ... or, with --proxy-fallback, the iptables proxier with the reason.
        let (p, note) = proxier(&cfg(&["--proxy-fallback"])).unwrap().unwrap();
        assert_eq!(p.mode(), ProxyMode::Iptables);
        let note = note.unwrap();
        assert!(
            note.starts_with("iptables fallback (--proxy-fallback): eBPF datapath: --proxy-cgroup"),
            "{note}"
        );
    }

    #[test]
    fn first_change_is_kept_until_taken() {
        let f: FirstChange = Arc::default();
        assert_eq!(take(&f), None);
        mark(&f);
        let t = *f.lock().unwrap();
        mark(&f);
        assert_eq!(take(&f), t, "the earliest event counts");
        assert_eq!(take(&f), None);
    }
}
