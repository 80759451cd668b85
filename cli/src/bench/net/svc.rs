//! The Service scale sweep of `ferry bench --svc-scale` (docs/bench.md, "Service scale"): on one
//! cluster in one proxy mode, for each Service count N (ascending, reusing what the previous
//! point created):
//!
//! 1. N dummy selector-less Services (one TCP port) with one EndpointSlice each of `endpoints`
//!    addresses in [`DUMMY_NET`] (unreachable, used by no path), created through the API with
//!    bounded concurrency; then the probed Service, created last (the worst case for an iptables
//!    chain, where frontends are matched in ClusterIP order and the allocator hands out
//!    ascending addresses). The probed Service is `type: NodePort` (it keeps its ClusterIP) and
//!    its slice holds the first bench server (the control's pod, on node-1). A prober in the
//!    client pod ([`ferry_bench::probe`]) waits until that ClusterIP answers and, with
//!    [`SvcFrom::external`], another in the external host until the NodePort on node-1 answers,
//!    both at once: `full_sync_s` is the time from the point's first create to then (per
//!    prober); `datapath_entries` is read after it.
//! 2. Per round, in a seeded order, `tcp_cc` and `tcp_crr` to every target of [`SvcFrom`]:
//!    from the client pod, the ClusterIP and, as the control, the backend's pod IP (on another
//!    server port than the Services' targetPort); from the external host, the NodePort (node-1's
//!    address) and, as the control, the same backend's pod IP over the host route via node-1 (the
//!    lab's X1 path). Around every NodePort run a node-1 counter that only NodePort traffic moves
//!    is read ([`ExternalCtx::nodeport_counter`]); a run that did not move it is left out. Every
//!    connection ends with the client's RST (no TIME_WAIT carried from one point to the next).
//!    One [`SvcScalePoint`] per (target, test) with the connect latency p50 / p99 and
//!    connections/s over the rounds. `connect_p50_us.ratio` is per round: for `nodeport`, against
//!    `pod-ip-external` of the same round at the same N (issue #14's "NodePort against direct";
//!    `connect_p99_us.ratio` too); for the other targets, against the same target at the first
//!    N.
//! 3. Programming latency, `changes` times: (a) a new Service is created, a prober is started on
//!    its ClusterIP, and its EndpointSlice with one real backend is written: the time from that
//!    write's response to the prober's first completed connect; (b) the slice's endpoint is
//!    removed: the time from the write's response to the first `ECONNREFUSED`. The prober runs
//!    before the write and reports `CLOCK_MONOTONIC` instants, so the figure does not include its
//!    start-up. One [`SvcProgramming`] per N (p50, p99, max over both kinds of change).
//!
//! Everything the sweep creates carries the label [`RUN_LABEL`] with this run's id and is deleted
//! at the end, on every exit path (an error, Ctrl-C between steps), checked by listing the label.
//!
//! API calls run on the caller's tokio runtime when called inside one (multi-thread:
//! `block_in_place`), else on a current-thread runtime of the sweep's own; the `kube::Client` must
//! have been built on a runtime that is still running.

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use ferry_bench::loadgen::{Close, Outcome, Spec, Test};
use ferry_bench::model::{MetricSummary, Ratio, SvcCounter, SvcProgramming, SvcScalePoint};
use ferry_bench::probe::{Expect, ProbeOutcome, ProbeSpec};
use ferry_bench::stats;
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// The label on every object the sweep creates; its value is the run id.
pub(crate) const RUN_LABEL: &str = "bench.ferry.dev/svc-sweep";

/// The dummy endpoints' addresses: 10.248.0.0/13 (524,288 addresses, one per endpoint; no lab
/// network uses it, and nothing answers there).
pub(crate) const DUMMY_NET: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 248, 0, 0), 13);

/// Services (or deletes) in flight at once.
const CONCURRENCY: usize = 16;

/// Where the sweep's clients connect from (`--svc-from pod,external`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SvcFrom {
    /// The client pod on node-1: targets `clusterip` and `pod-ip`.
    pub(crate) pod: bool,
    /// The lab's external host: targets `nodeport` and `pod-ip-external`.
    pub(crate) external: bool,
}

impl SvcFrom {
    /// Both (the default).
    pub(crate) const BOTH: SvcFrom = SvcFrom {
        pod: true,
        external: true,
    };

    /// `--svc-from`'s values (split at commas): `pod`, `external`, in any order; absent: both.
    pub(crate) fn parse(values: Option<&[String]>) -> Result<SvcFrom> {
        let Some(values) = values else {
            return Ok(SvcFrom::BOTH);
        };
        let mut from = SvcFrom {
            pod: false,
            external: false,
        };
        for v in values.iter().map(|v| v.trim()).filter(|v| !v.is_empty()) {
            match v {
                "pod" => from.pod = true,
                "external" => from.external = true,
                other => bail!("--svc-from: unknown value {other:?} (pod, external)"),
            }
        }
        ensure!(
            from.pod || from.external,
            "--svc-from: empty list (pod, external, or both: pod,external)"
        );
        Ok(from)
    }
}

/// The external host's side of the sweep ([`SvcFrom::external`]).
pub(crate) struct ExternalCtx<'a> {
    /// node-1's underlay address: where the NodePort is reached. The first backend
    /// (`SweepCtx::backend_ips[0]`) must be a pod on node-1, reachable from the external host by
    /// a host route via this address (the caller adds it).
    pub(crate) node_ip: IpAddr,
    /// Runs one loadgen Spec as a client in the external host's namespace.
    pub(crate) run_client: &'a (dyn Fn(&Spec) -> Result<Outcome> + Sync),
    /// Spawns `ferry bench-agent probe --spec JSON` in the external host's namespace.
    pub(crate) run_probe: &'a (dyn Fn(&ProbeSpec) -> Result<ProbeOutcome> + Sync),
    /// A node-1 counter that every new connection to the NodePort given moves and traffic to
    /// other destinations does not: the tc datapath's `new_flows` + `ct_original` (ebpf), the
    /// packets of the nat rules matching `--dport <nodePort>` (iptables,
    /// [`nodeport_rule_packets`]).
    pub(crate) nodeport_counter: &'a (dyn Fn(u16) -> Result<u64> + Sync),
    /// How the report names that counter (the point's nodePort is appended).
    pub(crate) counter_name: String,
}

/// Where the sweep runs: one cluster of the lab with one proxy mode.
pub(crate) struct SweepCtx<'a> {
    /// The cluster's API (ferry-kube ClientBuilder from its kubeconfig).
    pub(crate) kube: kube::Client,
    /// `ebpf` | `iptables`.
    pub(crate) mode: String,
    /// Where to create the Services (the sweep deletes them at the end).
    pub(crate) namespace: String,
    /// Bench server pods (serve TCP on `port` and `target_port`); the first is the probed
    /// Service's backend and the controls' server, on node-1 (the client pod's node).
    pub(crate) backend_ips: Vec<IpAddr>,
    /// The Services' port and the servers' port for the pod-IP control (7000).
    pub(crate) port: u16,
    /// The servers' port behind the Services (`targetPort`, 7001): never the control's, so the
    /// two kinds of connection never share a 4-tuple at the server (`lab::SVC_PORT`).
    pub(crate) target_port: u16,
    /// Runs one loadgen Spec as a client in the client pod (netns + cgroup), returns its Outcome.
    pub(crate) run_client: &'a (dyn Fn(&Spec) -> Result<Outcome> + Sync),
    /// Spawns `ferry bench-agent probe --spec JSON` in the client pod, returns its outcome.
    pub(crate) run_probe: &'a (dyn Fn(&ProbeSpec) -> Result<ProbeOutcome> + Sync),
    /// Datapath size on the client's node: map entries (ebpf) or rules (iptables).
    pub(crate) datapath_entries: &'a (dyn Fn() -> Result<u64> + Sync),
    /// Service counts (sorted ascending and deduplicated by the sweep).
    pub(crate) counts: Vec<u32>,
    /// Endpoints per dummy Service.
    pub(crate) endpoints: u32,
    /// Rounds per point.
    pub(crate) rounds: u32,
    /// Measured window per run, seconds.
    pub(crate) duration_s: f64,
    /// Warm-up per run, seconds.
    pub(crate) warmup_s: f64,
    /// Programming-latency samples per point (>= 20 for a p99 worth the name; the sweep takes any
    /// number >= 1).
    pub(crate) changes: u32,
    /// Which clients measure.
    pub(crate) from: SvcFrom,
    /// The external host's clients: needed when `from.external`.
    pub(crate) external: Option<ExternalCtx<'a>>,
}

impl std::fmt::Debug for SweepCtx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SweepCtx")
            .field("mode", &self.mode)
            .field("namespace", &self.namespace)
            .field("backend_ips", &self.backend_ips)
            .field("port", &self.port)
            .field("target_port", &self.target_port)
            .field("counts", &self.counts)
            .field("endpoints", &self.endpoints)
            .field("rounds", &self.rounds)
            .field("changes", &self.changes)
            .field("from", &self.from)
            .field("external", &self.external.as_ref().map(|e| e.node_ip))
            .finish_non_exhaustive()
    }
}

/// `ferry bench-agent probe` flags.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ProbeArgs {
    /// The probe as JSON (`ferry_bench::probe::ProbeSpec`).
    #[arg(long)]
    pub(crate) spec: String,
}

/// `ferry bench-agent probe`: runs the prober in this process (its namespace and cgroup) and
/// prints its outcome as one line of JSON.
pub(crate) fn run_probe_cmd(args: &ProbeArgs) -> Result<()> {
    let spec: ProbeSpec = serde_json::from_str(&args.spec)
        .with_context(|| format!("--spec is not a probe spec: {}", args.spec))?;
    let out = ferry_bench::probe::run(&spec)?;
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

/// Runs the sweep (see the module docs); deletes what it created on every exit path.
pub(crate) fn sweep(ctx: &SweepCtx<'_>) -> Result<(Vec<SvcScalePoint>, Vec<SvcProgramming>)> {
    let counts = validate(ctx)?;
    let rt = Rt::new()?;
    let k = Objects {
        services: Api::namespaced(ctx.kube.clone(), &ctx.namespace),
        slices: Api::namespaced(ctx.kube.clone(), &ctx.namespace),
        run: run_id(),
        port: ctx.port,
        target_port: ctx.target_port,
    };
    let result = run_sweep(ctx, &counts, &rt, &k);
    let cleanup = rt.block_on(k.delete_all());
    match (result, cleanup) {
        (Ok(r), Ok(())) => Ok(r),
        (Ok(_), Err(e)) => Err(e.context("removing the sweep's Services")),
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(c)) => Err(e.context(format!(
            "and removing the sweep's Services failed too: {c:#}"
        ))),
    }
}

fn validate(ctx: &SweepCtx<'_>) -> Result<Vec<u32>> {
    ensure!(
        ctx.mode == "ebpf" || ctx.mode == "iptables",
        "unknown proxy mode {:?} (ebpf or iptables)",
        ctx.mode
    );
    ensure!(
        !ctx.backend_ips.is_empty(),
        "no backend pod IP to probe through the Service"
    );
    ensure!(ctx.endpoints >= 1, "endpoints per Service must be >= 1");
    ensure!(
        ctx.from.pod || ctx.from.external,
        "no client to measure from (pod, external)"
    );
    ensure!(
        !ctx.from.external || ctx.external.is_some(),
        "measuring from the external host needs its clients"
    );
    ensure!(
        ctx.rounds >= 1 && ctx.changes >= 1,
        "rounds and changes must be >= 1"
    );
    ensure!(
        ctx.duration_s > 0.0 && ctx.warmup_s >= 0.0,
        "duration must be > 0 and warm-up >= 0"
    );
    let mut counts = ctx.counts.clone();
    counts.sort_unstable();
    counts.dedup();
    ensure!(!counts.is_empty(), "no Service count to sweep");
    let max = counts[counts.len() - 1];
    let room = 1u64 << (32 - u32::from(DUMMY_NET.1));
    ensure!(
        u64::from(max) * u64::from(ctx.endpoints) < room,
        "{max} Services x {} endpoints do not fit in the dummy range {}/{} ({room} addresses)",
        ctx.endpoints,
        DUMMY_NET.0,
        DUMMY_NET.1
    );
    Ok(counts)
}

/// A short id for the run's objects: the pid and the clock, base 36.
fn run_id() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let mut n = (t << 20) ^ u128::from(std::process::id());
    let mut s = String::new();
    while n > 0 && s.len() < 8 {
        let d = u32::try_from(n % 36).unwrap_or(0);
        s.push(char::from_digit(d, 36).unwrap_or('0'));
        n /= 36;
    }
    s
}

/// Fails once SIGINT/SIGTERM/SIGHUP arrived, so the sweep stops between steps and cleans up.
fn check_interrupt() -> Result<()> {
    if ferry_sys::process::interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Where the API calls run (see the module docs).
struct Rt(Option<tokio::runtime::Runtime>);

impl Rt {
    fn new() -> Result<Rt> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Ok(Rt(None));
        }
        Ok(Rt(Some(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?,
        )))
    }

    fn block_on<F: Future>(&self, f: F) -> F::Output {
        match &self.0 {
            Some(rt) => rt.block_on(f),
            None => {
                let h = tokio::runtime::Handle::current();
                tokio::task::block_in_place(|| h.block_on(f))
            }
        }
    }
}

/// Runs an API call again after a transient failure (no connection or answer, HTTP 429 or 5xx:
/// a server busy with thousands of creates) for up to [`RETRY_FOR`], with a growing pause.
async fn retry<T, F, Fut>(mut call: F) -> kube::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = kube::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + RETRY_FOR;
    let mut pause = Duration::from_millis(100);
    loop {
        match call().await {
            Err(e) if transient(&e) && tokio::time::Instant::now() + pause < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            r => return r,
        }
    }
}

/// How long [`retry`] keeps trying.
const RETRY_FOR: Duration = Duration::from_secs(60);

/// Whether an API error may pass by itself.
fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 429 || s.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// The sweep's objects in the API.
struct Objects {
    services: Api<Service>,
    slices: Api<EndpointSlice>,
    run: String,
    /// The Services' port.
    port: u16,
    /// Their targetPort (the EndpointSlices' port).
    target_port: u16,
}

/// The address of endpoint `j` of dummy Service `i` (`e` endpoints each).
fn dummy_addr(i: u32, j: u32, e: u32) -> IpAddr {
    // In range: `validate` checked that N x e fits in DUMMY_NET.
    let offset = i.saturating_mul(e).saturating_add(j);
    IpAddr::V4(Ipv4Addr::from(
        u32::from(DUMMY_NET.0).saturating_add(offset),
    ))
}

impl Objects {
    fn labels(&self) -> serde_json::Value {
        serde_json::json!({ RUN_LABEL: self.run })
    }

    /// Creates the Service `name` (selector-less, one unnamed TCP port; `type: NodePort` when
    /// `node_port`, else `ClusterIP`) and returns its ClusterIP and nodePort.
    async fn create_service(&self, name: &str, node_port: bool) -> Result<(Ipv4Addr, Option<u16>)> {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "labels": self.labels()},
            "spec": {"type": if node_port { "NodePort" } else { "ClusterIP" },
                     "ports": [{"protocol": "TCP", "port": self.port, "targetPort": self.target_port}]},
        }))?;
        let pp = PostParams::default();
        let created = match retry(|| self.services.create(&pp, &svc)).await {
            // An earlier attempt was written but its answer lost.
            Err(kube::Error::Api(s)) if s.code == 409 => retry(|| self.services.get(name)).await,
            r => r,
        }
        .with_context(|| format!("creating Service {name}"))?;
        let spec = created.spec.unwrap_or_default();
        let np = spec
            .ports
            .iter()
            .flatten()
            .find_map(|p| p.node_port)
            .and_then(|p| u16::try_from(p).ok());
        ensure!(!node_port || np.is_some(), "Service {name} got no nodePort");
        let ip = spec
            .cluster_ip
            .with_context(|| format!("Service {name} got no ClusterIP"))?;
        let ip = ip
            .parse()
            .with_context(|| format!("Service {name}: ClusterIP {ip:?} is not IPv4"))?;
        Ok((ip, np))
    }

    fn slice(&self, name: &str, addrs: &[IpAddr]) -> Result<EndpointSlice> {
        let endpoints: Vec<serde_json::Value> = addrs
            .iter()
            .map(|a| serde_json::json!({"addresses": [a.to_string()], "conditions": {"ready": true}}))
            .collect();
        let mut labels = self.labels();
        labels["kubernetes.io/service-name"] = name.into();
        labels["endpointslice.kubernetes.io/managed-by"] = "ferry-bench".into();
        Ok(serde_json::from_value(serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "labels": labels},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [{"name": "", "protocol": "TCP", "port": self.target_port}],
        }))?)
    }

    /// Creates the EndpointSlice of Service `name` with `addrs`.
    async fn create_slice(&self, name: &str, addrs: &[IpAddr]) -> Result<()> {
        let slice = self.slice(name, addrs)?;
        let pp = PostParams::default();
        match retry(|| self.slices.create(&pp, &slice)).await {
            Ok(_) => Ok(()),
            // An earlier attempt was written but its answer lost.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e).with_context(|| format!("creating EndpointSlice {name}")),
        }
    }

    /// Replaces the endpoints of Service `name`'s slice with `addrs`.
    async fn set_endpoints(&self, name: &str, addrs: &[IpAddr]) -> Result<()> {
        let patch = serde_json::json!({"endpoints": addrs.iter().map(|a| serde_json::json!({"addresses": [a.to_string()], "conditions": {"ready": true}})).collect::<Vec<_>>()});
        let (pp, patch) = (PatchParams::default(), Patch::Merge(&patch));
        retry(|| self.slices.patch(name, &pp, &patch))
            .await
            .with_context(|| format!("updating EndpointSlice {name}"))?;
        Ok(())
    }

    /// Dummy Services `from..to` (`e` unreachable endpoints each), `CONCURRENCY` at a time.
    async fn create_dummies(&self, from: u32, to: u32, e: u32) -> Result<()> {
        futures::stream::iter(from..to)
            .map(|i| async move {
                check_interrupt()?;
                let name = format!("fb-{}-d{i}", self.run);
                self.create_service(&name, false).await?;
                let addrs: Vec<IpAddr> = (0..e).map(|j| dummy_addr(i, j, e)).collect();
                self.create_slice(&name, &addrs).await
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<()>()
            .await
    }

    /// Deletes one Service and its slice (absent is fine).
    async fn delete(&self, name: &str) -> Result<()> {
        let dp = DeleteParams::default();
        for r in [
            retry(|| self.slices.delete(name, &dp)).await.map(|_| ()),
            retry(|| self.services.delete(name, &dp)).await.map(|_| ()),
        ] {
            match r {
                Ok(()) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e).with_context(|| format!("deleting {name}")),
            }
        }
        Ok(())
    }

    /// Deletes everything carrying this run's label, then checks that nothing is left.
    async fn delete_all(&self) -> Result<()> {
        let lp = ListParams::default().labels(&format!("{RUN_LABEL}={}", self.run));
        let mut names: Vec<String> = Vec::new();
        for s in retry(|| self.services.list_metadata(&lp))
            .await
            .context("listing the sweep's Services")?
        {
            names.extend(s.metadata.name);
        }
        for s in retry(|| self.slices.list_metadata(&lp))
            .await
            .context("listing the sweep's EndpointSlices")?
        {
            names.extend(s.metadata.name);
        }
        names.sort_unstable();
        names.dedup();
        futures::stream::iter(names.iter())
            .map(|n| self.delete(n))
            .buffer_unordered(CONCURRENCY)
            .try_collect::<()>()
            .await?;
        let left = retry(|| self.services.list_metadata(&lp))
            .await?
            .items
            .len()
            + retry(|| self.slices.list_metadata(&lp)).await?.items.len();
        ensure!(
            left == 0,
            "{left} Service(s)/EndpointSlice(s) of the sweep are left"
        );
        Ok(())
    }
}

/// What a run connects to (the model's `SvcScalePoint::target`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    /// The probed Service's ClusterIP, from the client pod.
    ClusterIp,
    /// Its backend's pod IP, from the client pod (control).
    PodIp,
    /// node-1's address and the probed Service's nodePort, from the external host.
    NodePort,
    /// The backend's pod IP from the external host, routed by node-1 (control of `NodePort`).
    PodIpExternal,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::ClusterIp => "clusterip",
            Target::PodIp => "pod-ip",
            Target::NodePort => "nodeport",
            Target::PodIpExternal => "pod-ip-external",
        }
    }

    fn external(self) -> bool {
        matches!(self, Target::NodePort | Target::PodIpExternal)
    }

    /// The target whose figures of the same round and Service count are this one's
    /// denominators; `None`: the same target at the sweep's first count.
    fn control(self) -> Option<Target> {
        match self {
            Target::NodePort => Some(Target::PodIpExternal),
            _ => None,
        }
    }
}

/// Every (target, test) a round runs, in a fixed order before the round's shuffle.
fn jobs(from: SvcFrom) -> Vec<(Target, Test)> {
    let mut targets = Vec::new();
    if from.pod {
        targets.extend([Target::ClusterIp, Target::PodIp]);
    }
    if from.external {
        targets.extend([Target::NodePort, Target::PodIpExternal]);
    }
    targets
        .into_iter()
        .flat_map(|t| [(t, Test::TcpCc), (t, Test::TcpCrr)])
        .collect()
}

/// Sums the packet counters (`[pkts:bytes]` of `iptables-save -c`) of the `-A` rules that match
/// destination port `port` (`--dport <port>`): in the proxier's chains, the NodePort's rules on
/// the node's addresses and in its NodePort chain (no ClusterIP Service of the sweep uses a port
/// of the NodePort range). The nat table sees the first packet of each connection only.
pub(crate) fn nodeport_rule_packets(save: &str, port: u16) -> u64 {
    let port = port.to_string();
    save.lines()
        .filter(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words.get(1) == Some(&"-A")
                && words.windows(2).any(|w| w[0] == "--dport" && w[1] == port)
        })
        .filter_map(|l| {
            let c = l.strip_prefix('[')?.split(']').next()?;
            c.split(':').next()?.parse::<u64>().ok()
        })
        .sum()
}

fn test_name(t: Test) -> &'static str {
    match t {
        Test::TcpCc => "tcp_cc",
        _ => "tcp_crr",
    }
}

/// A seeded permutation (splitmix64 + Fisher–Yates): the same seed, the same order.
fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut s = seed;
    let mut next = || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for i in (1..items.len()).rev() {
        let j = usize::try_from(next() % (i as u64 + 1)).unwrap_or(0);
        items.swap(i, j);
    }
}

/// Per (target, test): per round, the run's metrics (absent when the run failed).
type RoundMetrics = BTreeMap<(Target, &'static str), BTreeMap<u32, Outcome>>;

/// One point's runs.
#[derive(Debug, Default)]
struct Measured {
    runs: RoundMetrics,
    /// Per (target, test): the NodePort counter's growth over the kept runs.
    deltas: BTreeMap<(Target, &'static str), u64>,
}

/// One metric per round.
fn per_round(by_round: &BTreeMap<u32, Outcome>, metric: &str) -> BTreeMap<u32, f64> {
    by_round
        .iter()
        .filter_map(|(r, o)| o.metrics.get(metric).map(|v| (*r, *v)))
        .collect()
}

fn run_sweep(
    ctx: &SweepCtx<'_>,
    counts: &[u32],
    rt: &Rt,
    k: &Objects,
) -> Result<(Vec<SvcScalePoint>, Vec<SvcProgramming>)> {
    let mut points = Vec::new();
    let mut programming = Vec::new();
    let mut created = 0u32;
    let mut probed: Option<String> = None;
    // connect_p50_us per (target, test) and round at N = the first count: the ratio's baseline.
    let mut base: BTreeMap<(Target, &'static str), BTreeMap<u32, f64>> = BTreeMap::new();
    let base_n = counts[0];
    let backends: Vec<IpAddr> = ctx.backend_ips.clone();
    let ext = ctx.external.as_ref().filter(|_| ctx.from.external);
    for (pi, &n) in counts.iter().enumerate() {
        check_interrupt()?;
        eprintln!(
            "svc sweep [{}]: {n} Services ({} to create)...",
            ctx.mode,
            n.saturating_sub(created)
        );
        let t0 = ferry_sys::clock::monotonic_ns();
        if let Some(old) = probed.take() {
            rt.block_on(k.delete(&old))?;
        }
        rt.block_on(k.create_dummies(created, n, ctx.endpoints))?;
        created = created.max(n);
        check_interrupt()?;
        let name = format!("fb-{}-p{pi}", k.run);
        let (vip, node_port) = rt.block_on(async {
            let created = k.create_service(&name, true).await?;
            // One backend, the control's: the ClusterIP and the pod IP then reach the same
            // server over the same path, and the difference is the Service's.
            k.create_slice(&name, &backends[..1]).await?;
            anyhow::Ok(created)
        })?;
        probed = Some(name);
        let node_port = node_port.context("the probed Service has no nodePort")?;
        let target = SocketAddr::new(IpAddr::V4(vip), ctx.port);
        let sync_spec = |to: SocketAddr| {
            let mut spec = ProbeSpec::new(to, Expect::Reachable);
            spec.started_mono_ns = t0;
            // Seconds to minutes of probing: 10 ms is resolution enough, and leaves fewer
            // conntrack entries of untranslated SYNs behind (see `ferry_bench::probe`).
            spec.interval_ms = 10;
            spec.give_up_ms = 600_000 + u64::from(n) * 20;
            spec
        };
        let spec = sync_spec(target);
        let np_target = ext.map(|e| SocketAddr::new(e.node_ip, node_port));
        let np_spec = np_target.map(sync_spec);
        // Both probers at once, so each sees its frontend as soon as it is served.
        let (seen, np_seen) = std::thread::scope(|s| {
            let np = ext
                .zip(np_spec.as_ref())
                .map(|(e, spec)| s.spawn(move || (e.run_probe)(spec)));
            let seen = (ctx.run_probe)(&spec);
            let np_seen = np.map(|h| {
                h.join()
                    .map_err(|_| anyhow!("the external prober thread panicked"))
                    .and_then(|r| r)
            });
            (seen, np_seen)
        });
        let seen = seen.with_context(|| {
            format!("waiting for the datapath to serve {target} at {n} Services")
        })?;
        let full_sync_s = seen.seen_after_ms / 1000.0;
        let np_sync_s = match (np_seen, np_target) {
            (Some(r), Some(to)) => {
                let r = r.with_context(|| {
                    format!("waiting for the datapath to serve the NodePort {to} from the external host at {n} Services")
                })?;
                r.seen_after_ms / 1000.0
            }
            _ => full_sync_s,
        };
        let entries = (ctx.datapath_entries)().context("reading the datapath's size")?;
        eprintln!(
            "svc sweep [{}]: {n} Services programmed in {full_sync_s:.2} s{}, datapath {entries} entries",
            ctx.mode,
            if ext.is_some() {
                format!(" (NodePort {node_port} from outside: {np_sync_s:.2} s)")
            } else {
                String::new()
            }
        );

        let m = measure_rounds(ctx, n, target, node_port)?;
        for ((t, test), by_round) in &m.runs {
            let p50 = per_round(by_round, "connect_p50_us");
            if n == base_n {
                base.insert((*t, test), p50.clone());
            }
            let mut point = SvcScalePoint {
                mode: ctx.mode.clone(),
                target: t.name().into(),
                test: (*test).into(),
                services: n,
                connect_p50_us: summary(by_round, "connect_p50_us", None),
                connect_p99_us: summary(by_round, "connect_p99_us", Some(0.99)),
                cps: summary(by_round, "cps", None),
                datapath_entries: entries,
                full_sync_s: if t.external() { np_sync_s } else { full_sync_s },
                connections: by_round.values().map(|o| o.completed).sum(),
                verified: ext.zip(m.deltas.get(&(*t, test))).map(|(e, d)| SvcCounter {
                    counter: format!("{} (nodePort {node_port})", e.counter_name),
                    delta: *d,
                }),
            };
            (point.connect_p50_us.ratio, point.connect_p99_us.ratio) =
                ratios(*t, test, (n, base_n), &m.runs, &base);
            points.push(point);
        }

        check_interrupt()?;
        let lat = programming_latency(ctx, rt, k, pi, &backends)?;
        programming.push(SvcProgramming {
            mode: ctx.mode.clone(),
            services: n,
            changes: u32::try_from(lat.len()).unwrap_or(u32::MAX),
            p50_ms: stats::median(&lat).unwrap_or_default(),
            p99_ms: if lat.len() >= 100 {
                stats::quantile(&lat, 0.99).unwrap_or_default()
            } else {
                stats::min_max(&lat).map(|m| m.1).unwrap_or_default()
            },
            max_ms: stats::min_max(&lat).map(|m| m.1).unwrap_or_default(),
        });
        let p = &programming[programming.len() - 1];
        eprintln!(
            "svc sweep [{}]: {n} Services: programming latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} changes)",
            ctx.mode, p.p50_ms, p.p99_ms, p.max_ms, p.changes
        );
    }
    Ok((points, programming))
}

/// Runs every (target, test) of `ctx.from` once per round, in a seeded order per round.
fn measure_rounds(ctx: &SweepCtx<'_>, n: u32, vip: SocketAddr, node_port: u16) -> Result<Measured> {
    let mut out = Measured::default();
    let ext = ctx.external.as_ref().filter(|_| ctx.from.external);
    for round in 0..ctx.rounds {
        let mut order = jobs(ctx.from);
        shuffle(&mut order, (u64::from(n) << 32) | u64::from(round));
        for (t, test) in order {
            check_interrupt()?;
            let (target, client) = match (t, ext) {
                (Target::ClusterIp, _) => (vip, ctx.run_client),
                (Target::PodIp, _) => (
                    SocketAddr::new(ctx.backend_ips[0], ctx.port),
                    ctx.run_client,
                ),
                (Target::NodePort, Some(e)) => {
                    (SocketAddr::new(e.node_ip, node_port), e.run_client)
                }
                (Target::PodIpExternal, Some(e)) => {
                    (SocketAddr::new(ctx.backend_ips[0], ctx.port), e.run_client)
                }
                (_, None) => bail!("no external host clients for {}", t.name()),
            };
            let spec = Spec {
                test,
                target,
                flows: 1,
                size: 1,
                warmup_s: ctx.warmup_s,
                duration_s: ctx.duration_s,
                cooldown_s: 0.2,
                // Every connection of the sweep ends with the client's RST, so none leaves a
                // TIME_WAIT socket behind: each point's probed Service has a new ClusterIP and,
                // behind iptables DNAT, TCP timestamps are offset per destination address, so a
                // later point's SYN reusing a 4-tuple still in TIME_WAIT at the server would be
                // dropped by PAWS and retransmitted (10-15 ms stalls in 5-10 % of connects,
                // measured), which is not the cost of the Service lookup. Connect latency is timed
                // around connect() alone either way.
                close: Close::Rst,
                rate_pps: 0,
                // Above the 1 s SYN retransmission: a lost SYN shows as a 1 s connect in the
                // p99 and max instead of failing the run.
                timeout_ms: 3000,
            };
            let label = format!(
                "svc sweep [{}]: {n} Services, round {round}, {} {}",
                ctx.mode,
                t.name(),
                test_name(test)
            );
            // The NodePort counter around the run: it must grow, or the connections went
            // elsewhere.
            let counter = |when: &str| -> Result<Option<u64>> {
                match (t, ext) {
                    (Target::NodePort, Some(e)) => (e.nodeport_counter)(node_port)
                        .map(Some)
                        .with_context(|| format!("reading {} {when} the run", e.counter_name)),
                    _ => Ok(None),
                }
            };
            let before = match counter("before") {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{label}: left out: {e:#}");
                    continue;
                }
            };
            let o = match client(&spec) {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("{label}: failed: {e:#}");
                    continue;
                }
            };
            let delta = match (before, counter("after")) {
                (Some(b), Ok(Some(a))) if a > b => Some(a - b),
                (Some(_), Ok(_)) => {
                    eprintln!(
                        "{label}: left out: wrong path: {} (nodePort {node_port}) did not move",
                        ext.map_or("", |e| e.counter_name.as_str())
                    );
                    continue;
                }
                (Some(_), Err(e)) => {
                    eprintln!("{label}: left out: {e:#}");
                    continue;
                }
                (None, _) => None,
            };
            let errors: u64 = o.errors.values().sum();
            #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
            let rate = errors as f64 / (o.completed + errors).max(1) as f64;
            if o.completed == 0 || rate > 0.001 {
                eprintln!(
                    "{label}: left out: {} completed, errors {:?}",
                    o.completed, o.errors
                );
                continue;
            }
            if let Some(d) = delta {
                *out.deltas.entry((t, test_name(test))).or_default() += d;
            }
            out.runs
                .entry((t, test_name(test)))
                .or_default()
                .insert(round, o);
        }
    }
    ensure!(
        out.runs.contains_key(&(Target::ClusterIp, "tcp_cc"))
            || out.runs.contains_key(&(Target::NodePort, "tcp_cc")),
        "no tcp_cc run to the probed Service ({vip}{}) succeeded at {n} Services",
        if ext.is_some() {
            format!(", NodePort {node_port}")
        } else {
            String::new()
        }
    );
    Ok(out)
}

/// The connect p50 and p99 ratios of `(t, test)` at `counts.0` Services, per round: a target
/// with a control ([`Target::control`], the NodePort) against that control in the same rounds of
/// the same point (p50 and p99); any other against its own p50 at the sweep's first count
/// `counts.1` (`base`, filled at that point; no p99 ratio).
fn ratios(
    t: Target,
    test: &'static str,
    counts: (u32, u32),
    runs: &RoundMetrics,
    base: &BTreeMap<(Target, &'static str), BTreeMap<u32, f64>>,
) -> (Option<Ratio>, Option<Ratio>) {
    let (n, base_n) = counts;
    let Some(by_round) = runs.get(&(t, test)) else {
        return (None, None);
    };
    match t.control() {
        Some(c) => {
            let of = |metric: &str| {
                runs.get(&(c, test)).and_then(|cr| {
                    ratio(
                        &per_round(by_round, metric),
                        &per_round(cr, metric),
                        &format!("{} {test} at N={n}", c.name()),
                    )
                })
            };
            (of("connect_p50_us"), of("connect_p99_us"))
        }
        None => (
            base.get(&(t, test)).and_then(|b| {
                ratio(
                    &per_round(by_round, "connect_p50_us"),
                    b,
                    &format!("{} {test} at N={base_n}", t.name()),
                )
            }),
            None,
        ),
    }
}

/// A metric over the rounds; `q` marks a percentile whose runs need enough samples.
fn summary(by_round: &BTreeMap<u32, Outcome>, metric: &str, q: Option<f64>) -> MetricSummary {
    let values: Vec<f64> = by_round
        .values()
        .filter_map(|o| o.metrics.get(metric).copied())
        .collect();
    let mut s = stats::summarise_values(&values);
    let (unit, higher) = ferry_bench::model::unit_of(metric);
    s.unit = unit.into();
    s.higher_is_better = higher;
    if let Some(q) = q {
        s.enough_samples = by_round
            .values()
            .all(|o| stats::enough_samples(o.completed, q));
    }
    s
}

/// The per-round ratio of `values` to `base` (rounds present in both), summarised.
fn ratio(values: &BTreeMap<u32, f64>, base: &BTreeMap<u32, f64>, baseline: &str) -> Option<Ratio> {
    let r: Vec<f64> = values
        .iter()
        .filter_map(|(round, v)| base.get(round).filter(|b| **b > 0.0).map(|b| v / b))
        .collect();
    let (min, max) = stats::min_max(&r)?;
    Some(Ratio {
        baseline: baseline.into(),
        median: stats::median(&r)?,
        min,
        max,
    })
}

/// Milliseconds from `write_done` to `seen` (both `CLOCK_MONOTONIC` ns; 0 when seen before the
/// write's response arrived).
fn ms_between(write_done: u64, seen: u64) -> f64 {
    #[expect(
        clippy::cast_precision_loss,
        reason = "nanosecond differences far below 2^52"
    )]
    let ms = seen.saturating_sub(write_done) as f64 / 1e6;
    ms
}

/// How long to let a prober start before the write: twice the slowest start-up seen so far
/// (fork, exec, joining the pod's namespace and cgroup), at least 100 ms, at most 5 s.
#[derive(Debug)]
struct StartupWait {
    slowest_ns: u64,
}

impl StartupWait {
    fn wait(&self) -> Duration {
        Duration::from_nanos(self.slowest_ns.saturating_mul(2))
            .clamp(Duration::from_millis(100), Duration::from_secs(5))
    }

    fn saw(&mut self, ns: u64) {
        self.slowest_ns = self.slowest_ns.max(ns);
    }
}

/// Runs the prober on another thread while `write` runs here; the latency from the write's
/// response to the prober's verdict, or `None` when the prober started only after the write (its
/// figure would include its own start-up; the caller measures another change).
fn timed_change(
    ctx: &SweepCtx<'_>,
    spec: &ProbeSpec,
    startup: &mut StartupWait,
    write: impl FnOnce() -> Result<()>,
) -> Result<Option<f64>> {
    let spawned = ferry_sys::clock::monotonic_ns();
    let (written, done, seen) = std::thread::scope(|s| {
        let prober = s.spawn(|| (ctx.run_probe)(spec));
        std::thread::sleep(startup.wait());
        let written = write();
        let done = ferry_sys::clock::monotonic_ns();
        (written, done, prober.join())
    });
    let seen = seen.map_err(|_| anyhow!("the prober thread panicked"))?;
    written?;
    let seen = seen?;
    startup.saw(seen.first_attempt_mono_ns.saturating_sub(spawned));
    if seen.first_attempt_mono_ns > done {
        eprintln!(
            "svc sweep [{}]: the prober started {:.1} ms after the write: change not counted, \
             waiting {:?} from now on",
            ctx.mode,
            ms_between(done, seen.first_attempt_mono_ns),
            startup.wait()
        );
        return Ok(None);
    }
    Ok(Some(ms_between(done, seen.seen_mono_ns)))
}

/// `ctx.changes` samples of each kind of change (see the module docs), in milliseconds. A change
/// the prober was too late for is repeated (at most `ctx.changes` repeats in all).
fn programming_latency(
    ctx: &SweepCtx<'_>,
    rt: &Rt,
    k: &Objects,
    point: usize,
    backends: &[IpAddr],
) -> Result<Vec<f64>> {
    let mut startup = StartupWait { slowest_ns: 0 };
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    let mut c = 0u32;
    let limit = ctx.changes.saturating_mul(2);
    while (added.len() < ctx.changes as usize || removed.len() < ctx.changes as usize) && c < limit
    {
        check_interrupt()?;
        let name = format!("fb-{}-c{point}x{c}", k.run);
        let (vip, _) = rt.block_on(k.create_service(&name, false))?;
        let target = SocketAddr::new(IpAddr::V4(vip), ctx.port);
        let backend = [backends[c as usize % backends.len()]];
        let mut spec = ProbeSpec::new(target, Expect::Reachable);
        spec.give_up_ms = 120_000;
        let a = timed_change(ctx, &spec, &mut startup, || {
            rt.block_on(k.create_slice(&name, &backend))
        })
        .with_context(|| {
            format!("change {c}: the new Service {name} ({target}) becoming reachable")
        })?;
        spec.expect = Expect::Refused;
        let r = timed_change(ctx, &spec, &mut startup, || {
            rt.block_on(k.set_endpoints(&name, &[]))
        })
        .with_context(|| {
            format!("change {c}: Service {name} ({target}) refusing without endpoints")
        })?;
        added.extend(a.filter(|_| added.len() < ctx.changes as usize));
        removed.extend(r.filter(|_| removed.len() < ctx.changes as usize));
        rt.block_on(k.delete(&name))?;
        c += 1;
    }
    ensure!(
        added.len() == ctx.changes as usize && removed.len() == ctx.changes as usize,
        "{} of {} additions and {} removals measured in {c} changes: the prober starts too late",
        added.len(),
        ctx.changes,
        removed.len()
    );
    added.extend(removed);
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dummy_addresses_are_distinct_and_in_range() {
        let e = 4;
        let a = dummy_addr(0, 0, e);
        let b = dummy_addr(29_999, 3, e);
        assert_eq!(a, "10.248.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(b, "10.249.212.191".parse::<IpAddr>().unwrap());
        assert_ne!(dummy_addr(1, 0, e), dummy_addr(0, 3, e));
    }

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let mut a: Vec<u32> = (0..10).collect();
        let mut b = a.clone();
        shuffle(&mut a, 7);
        shuffle(&mut b, 7);
        assert_eq!(a, b);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        let mut c: Vec<u32> = (0..10).collect();
        shuffle(&mut c, 8);
        assert_ne!(a, c, "another seed, another order");
    }

    #[test]
    fn ratio_pairs_rounds() {
        let v = BTreeMap::from([(0, 20.0), (1, 30.0), (2, 50.0)]);
        let b = BTreeMap::from([(0, 10.0), (1, 10.0)]);
        let r = ratio(&v, &b, "x").unwrap();
        assert_eq!((r.min, r.median, r.max), (2.0, 2.5, 3.0));
        assert!(ratio(&v, &BTreeMap::new(), "x").is_none());
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn svc_from_parses_both_either_and_refuses_the_rest() {
        assert_eq!(SvcFrom::parse(None).unwrap(), SvcFrom::BOTH);
        let p = |v: &[&str]| SvcFrom::parse(Some(&strings(v)));
        assert_eq!(p(&["external", "pod"]).unwrap(), SvcFrom::BOTH);
        assert_eq!(
            p(&["pod"]).unwrap(),
            SvcFrom {
                pod: true,
                external: false
            }
        );
        assert_eq!(
            p(&[" external", ""]).unwrap(),
            SvcFrom {
                pod: false,
                external: true
            }
        );
        let e = p(&["pod", "outside"]).unwrap_err().to_string();
        assert!(e.contains("unknown value \"outside\""), "{e}");
        assert!(e.contains("pod, external"), "{e}");
        for empty in [&[""][..], &["", " "], &[]] {
            let e = p(empty).unwrap_err().to_string();
            assert!(e.contains("--svc-from: empty list"), "{empty:?}: {e}");
        }
    }

    #[test]
    fn jobs_follow_svc_from_and_nodeport_is_paired_with_its_control() {
        let names = |from| {
            jobs(from)
                .into_iter()
                .map(|(t, test)| format!("{} {}", t.name(), test_name(test)))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(SvcFrom {
                pod: true,
                external: false
            }),
            [
                "clusterip tcp_cc",
                "clusterip tcp_crr",
                "pod-ip tcp_cc",
                "pod-ip tcp_crr"
            ]
        );
        assert_eq!(
            names(SvcFrom {
                pod: false,
                external: true
            }),
            [
                "nodeport tcp_cc",
                "nodeport tcp_crr",
                "pod-ip-external tcp_cc",
                "pod-ip-external tcp_crr"
            ]
        );
        assert_eq!(jobs(SvcFrom::BOTH).len(), 8);
        assert_eq!(Target::NodePort.control(), Some(Target::PodIpExternal));
        for t in [Target::ClusterIp, Target::PodIp, Target::PodIpExternal] {
            assert_eq!(t.control(), None, "{}", t.name());
        }
        assert!(Target::NodePort.external() && Target::PodIpExternal.external());
        assert!(!Target::ClusterIp.external() && !Target::PodIp.external());
    }

    /// Runs of one (target, test): round -> (connect p50, p99).
    fn runs_of(v: &[(u32, f64, f64)]) -> BTreeMap<u32, Outcome> {
        v.iter()
            .map(|(r, p50, p99)| {
                let mut o = Outcome::default();
                o.metrics.insert("connect_p50_us".into(), *p50);
                o.metrics.insert("connect_p99_us".into(), *p99);
                (*r, o)
            })
            .collect()
    }

    #[test]
    fn nodeport_ratio_pairs_the_external_control_of_the_same_round_and_count() {
        let mut runs: RoundMetrics = BTreeMap::new();
        // Round 1 of the control failed: the NodePort's round 1 has no denominator.
        runs.insert(
            (Target::NodePort, "tcp_cc"),
            runs_of(&[(0, 44.0, 100.0), (1, 90.0, 900.0), (2, 60.0, 150.0)]),
        );
        runs.insert(
            (Target::PodIpExternal, "tcp_cc"),
            runs_of(&[(0, 40.0, 50.0), (2, 50.0, 100.0)]),
        );
        // The pod IP from the pod, much faster: never the NodePort's denominator.
        runs.insert(
            (Target::PodIp, "tcp_cc"),
            runs_of(&[(0, 10.0, 20.0), (1, 10.0, 20.0), (2, 10.0, 20.0)]),
        );
        runs.insert(
            (Target::ClusterIp, "tcp_cc"),
            runs_of(&[(0, 30.0, 60.0), (1, 36.0, 60.0)]),
        );
        // The first count's p50 per round, and a stale NodePort entry that must not be used.
        let base = BTreeMap::from([
            (
                (Target::ClusterIp, "tcp_cc"),
                BTreeMap::from([(0, 15.0), (1, 12.0)]),
            ),
            (
                (Target::NodePort, "tcp_cc"),
                BTreeMap::from([(0, 1.0), (1, 1.0), (2, 1.0)]),
            ),
        ]);
        let (p50, p99) = ratios(Target::NodePort, "tcp_cc", (50, 0), &runs, &base);
        let (p50, p99) = (p50.unwrap(), p99.unwrap());
        assert_eq!(p50.baseline, "pod-ip-external tcp_cc at N=50");
        assert!(
            (p50.min - 1.1).abs() < 1e-9 && (p50.max - 1.2).abs() < 1e-9,
            "{p50:?}"
        );
        assert!((p50.median - 1.15).abs() < 1e-9, "{p50:?}");
        assert!(
            (p99.min - 1.5).abs() < 1e-9 && (p99.max - 2.0).abs() < 1e-9,
            "{p99:?}"
        );
        // Without its control at this point: no ratio rather than another baseline.
        let mut alone = runs.clone();
        alone.remove(&(Target::PodIpExternal, "tcp_cc"));
        assert_eq!(
            ratios(Target::NodePort, "tcp_cc", (50, 0), &alone, &base),
            (None, None)
        );
        // A pod target: against itself at the first count, p50 only.
        let (p50, p99) = ratios(Target::ClusterIp, "tcp_cc", (50, 0), &runs, &base);
        let p50 = p50.unwrap();
        assert_eq!(p50.baseline, "clusterip tcp_cc at N=0");
        assert_eq!((p50.min, p50.max), (2.0, 3.0));
        assert!(p99.is_none());
        assert_eq!(
            ratios(Target::PodIpExternal, "tcp_crr", (50, 0), &runs, &base),
            (None, None)
        );
    }

    #[test]
    fn nodeport_rule_packets_counts_only_rules_of_that_port() {
        let save = "*nat\n\
            :FERRY-SERVICES - [0:0]\n\
            [0:0] -A FERRY-SERVICES -d 10.96.0.20/32 -p tcp -m tcp --dport 7000 -j FERRY-SVC-A\n\
            [120:7200] -A FERRY-SERVICES -d 10.99.0.11/32 -p tcp -m tcp --dport 31234 -j FERRY-SVC-B\n\
            [0:0] -A FERRY-SERVICES -d 10.99.0.12/32 -p tcp -m tcp --dport 31234 -j FERRY-SVC-B\n\
            [9:540] -A FERRY-SERVICES -d 10.99.0.11/32 -p tcp -m tcp --dport 312345 -j FERRY-SVC-C\n\
            [3:180] -A FERRY-NODEPORTS -p tcp -m tcp --dport 31234 -j FERRY-SVC-B\n\
            [50:3000] -A FERRY-SEP-X -p tcp -m tcp -j DNAT --to-destination 10.244.1.3:31234\n\
            [7:420] -A FERRY-SERVICES -m addrtype --dst-type LOCAL -j FERRY-NODEPORTS\n\
            COMMIT\n";
        assert_eq!(nodeport_rule_packets(save, 31234), 123);
        assert_eq!(nodeport_rule_packets(save, 30000), 0);
    }

    #[test]
    fn ms_between_clamps_at_zero() {
        assert_eq!(ms_between(2_000_000, 5_500_000), 3.5);
        assert_eq!(ms_between(5_000_000, 1_000_000), 0.0);
    }
}
