//! The Service scale sweep of `ferry bench --svc-scale` (docs/bench.md, "Service scale"): on one
//! cluster in one proxy mode, for each Service count N (ascending, reusing what the previous
//! point created):
//!
//! 1. N dummy selector-less Services (one TCP port) with one EndpointSlice each of `endpoints`
//!    addresses in [`DUMMY_NET`] (unreachable, used by no path), created through the API with
//!    bounded concurrency; then the probed Service, created last (the worst case for an iptables
//!    chain, where frontends are matched in ClusterIP order and the allocator hands out
//!    ascending addresses), whose slice holds the first bench server (the control's pod). A prober in the client pod
//!    ([`ferry_bench::probe`]) waits until that ClusterIP answers: `full_sync_s` is the time from
//!    the point's first create to then; `datapath_entries` is read after it.
//! 2. Per round, in a seeded order: `tcp_cc` and `tcp_crr` to the ClusterIP and, as the control,
//!    to a backend pod IP (on another server port than the Services' targetPort). Every
//!    connection ends with the client's RST (no TIME_WAIT carried from one point to the next).
//!    One [`SvcScalePoint`] per (target, test) with the connect latency p50 / p99 and
//!    connections/s over the rounds, the connect p50's per-round ratio to the N = 0 point in
//!    `connect_p50_us.ratio`.
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
use ferry_bench::model::{MetricSummary, Ratio, SvcProgramming, SvcScalePoint};
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

/// Where the sweep runs: one cluster of the lab with one proxy mode.
pub(crate) struct SweepCtx<'a> {
    /// The cluster's API (ferry-kube ClientBuilder from its kubeconfig).
    pub(crate) kube: kube::Client,
    /// `ebpf` | `iptables`.
    pub(crate) mode: String,
    /// Where to create the Services (the sweep deletes them at the end).
    pub(crate) namespace: String,
    /// Bench server pods (serve TCP on `port` and `target_port`).
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

    /// Creates the Service `name` (selector-less, one unnamed TCP port) and returns its ClusterIP.
    async fn create_service(&self, name: &str) -> Result<Ipv4Addr> {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "labels": self.labels()},
            "spec": {"type": "ClusterIP", "ports": [{"protocol": "TCP", "port": self.port, "targetPort": self.target_port}]},
        }))?;
        let pp = PostParams::default();
        let created = match retry(|| self.services.create(&pp, &svc)).await {
            // An earlier attempt was written but its answer lost.
            Err(kube::Error::Api(s)) if s.code == 409 => retry(|| self.services.get(name)).await,
            r => r,
        }
        .with_context(|| format!("creating Service {name}"))?;
        let ip = created
            .spec
            .and_then(|s| s.cluster_ip)
            .with_context(|| format!("Service {name} got no ClusterIP"))?;
        ip.parse()
            .with_context(|| format!("Service {name}: ClusterIP {ip:?} is not IPv4"))
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
                self.create_service(&name).await?;
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

/// One (target, test) run of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    ClusterIp,
    PodIp,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::ClusterIp => "clusterip",
            Target::PodIp => "pod-ip",
        }
    }
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
        let vip = rt.block_on(async {
            let vip = k.create_service(&name).await?;
            // One backend, the control's: the ClusterIP and the pod IP then reach the same
            // server over the same path, and the difference is the Service's.
            k.create_slice(&name, &backends[..1]).await?;
            anyhow::Ok(vip)
        })?;
        probed = Some(name);
        let target = SocketAddr::new(IpAddr::V4(vip), ctx.port);
        let mut spec = ProbeSpec::new(target, Expect::Reachable);
        spec.started_mono_ns = t0;
        // Seconds to minutes of probing: 10 ms is resolution enough, and leaves fewer conntrack
        // entries of untranslated SYNs behind (see `ferry_bench::probe`).
        spec.interval_ms = 10;
        spec.give_up_ms = 600_000 + u64::from(n) * 20;
        let seen = (ctx.run_probe)(&spec).with_context(|| {
            format!("waiting for the datapath to serve {target} at {n} Services")
        })?;
        let full_sync_s = seen.seen_after_ms / 1000.0;
        let entries = (ctx.datapath_entries)().context("reading the datapath's size")?;
        eprintln!(
            "svc sweep [{}]: {n} Services programmed in {full_sync_s:.2} s, datapath {entries} entries",
            ctx.mode
        );

        let runs = measure_rounds(ctx, n, target)?;
        for ((t, test), by_round) in &runs {
            let p50: BTreeMap<u32, f64> = by_round
                .iter()
                .filter_map(|(r, o)| o.metrics.get("connect_p50_us").map(|v| (*r, *v)))
                .collect();
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
                full_sync_s,
            };
            point.connect_p50_us.ratio = base
                .get(&(*t, test))
                .and_then(|b| ratio(&p50, b, &format!("{} {test} at N={base_n}", t.name())));
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

/// Runs every (target, test) once per round, in a seeded order per round.
fn measure_rounds(ctx: &SweepCtx<'_>, n: u32, vip: SocketAddr) -> Result<RoundMetrics> {
    let mut out: RoundMetrics = BTreeMap::new();
    for round in 0..ctx.rounds {
        let mut order = vec![
            (Target::ClusterIp, Test::TcpCc),
            (Target::ClusterIp, Test::TcpCrr),
            (Target::PodIp, Test::TcpCc),
            (Target::PodIp, Test::TcpCrr),
        ];
        shuffle(&mut order, (u64::from(n) << 32) | u64::from(round));
        for (t, test) in order {
            check_interrupt()?;
            let target = match t {
                Target::ClusterIp => vip,
                Target::PodIp => SocketAddr::new(ctx.backend_ips[0], ctx.port),
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
            match (ctx.run_client)(&spec) {
                Ok(o) => {
                    let errors: u64 = o.errors.values().sum();
                    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
                    let rate = errors as f64 / (o.completed + errors).max(1) as f64;
                    if o.completed == 0 || rate > 0.001 {
                        eprintln!(
                            "svc sweep [{}]: {n} Services, round {round}, {} {}: left out: {} completed, errors {:?}",
                            ctx.mode, t.name(), test_name(test), o.completed, o.errors
                        );
                        continue;
                    }
                    out.entry((t, test_name(test)))
                        .or_default()
                        .insert(round, o);
                }
                Err(e) => eprintln!(
                    "svc sweep [{}]: {n} Services, round {round}, {} {}: failed: {e:#}",
                    ctx.mode,
                    t.name(),
                    test_name(test)
                ),
            }
        }
    }
    ensure!(
        out.contains_key(&(Target::ClusterIp, "tcp_cc")),
        "no tcp_cc run to the ClusterIP {vip} succeeded at {n} Services"
    );
    Ok(out)
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
        let vip = rt.block_on(k.create_service(&name))?;
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

    #[test]
    fn ms_between_clamps_at_zero() {
        assert_eq!(ms_between(2_000_000, 5_500_000), 3.5);
        assert_eq!(ms_between(5_000_000, 1_000_000), 0.0);
    }
}
