//! The rounds: the plan from the flags ([`Plan`]), the lab it needs, every (path, test,
//! parameters) once per round in a seeded random order, one run at a time with the CPU sampled at
//! the window's edges and the path's counters read around it, then the report.

use super::lab::{self, Cgroup, Cluster, Pods, Running};
use super::paths::{self, Def, LabPath, Need};
use super::{cpu, iperf, preflight, verify, NetArgs, TESTS};
use anyhow::{bail, ensure, Context as _, Result};
use ferry_bench::loadgen::{Close, Outcome, Spec, Test};
use ferry_bench::model::{self, Config, Meta, Report, ResultSet, Run};
use ferry_bench::report::{self, Format};
use rand::seq::SliceRandom as _;
use rand::SeedableRng as _;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Payload of `udp_stream` datagrams: fits the lab pods' 1450-byte MTU.
const UDP_PAYLOAD: u32 = 1400;
/// Write size of `tcp_stream` (builtin engine).
const STREAM_WRITE: u32 = 128 * 1024;

/// What a run will do, from the flags (validated before anything is created).
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    args: NetArgs,
    /// `--kubeconfig`: a real cluster instead of the lab.
    pub(crate) real: Option<super::real::RealArgs>,
    defs: Vec<Def>,
    proxies: Vec<String>,
    tests: Vec<&'static str>,
    rounds: u32,
    warmup_s: f64,
    duration_s: f64,
    cooldown_s: f64,
    flows: Vec<u32>,
    sizes: Vec<u32>,
    seed: u64,
    out: PathBuf,
    formats: Vec<Format>,
    /// `--svc-from`.
    svc_from: super::svc::SvcFrom,
}

fn check_secs(name: &str, v: f64, min: f64) -> Result<f64> {
    ensure!(
        v.is_finite() && v >= min && v <= 3600.0,
        "--{name} {v} is out of range ({min}..3600 s)"
    );
    Ok(v)
}

impl Plan {
    /// Validates the flags.
    pub(crate) fn from_args(a: &NetArgs) -> Result<Plan> {
        let backends = if a.backend.is_empty() {
            if a.quick {
                vec!["vxlan".to_owned()]
            } else {
                vec!["vxlan".to_owned(), "host-gw".to_owned()]
            }
        } else {
            a.backend.clone()
        };
        for b in &backends {
            ensure!(
                ["vxlan", "host-gw", "udp"].contains(&b.as_str()),
                "unknown --backend {b:?} (vxlan, host-gw, udp)"
            );
        }
        let proxies = if a.proxy.is_empty() {
            if a.quick {
                vec!["ebpf".to_owned()]
            } else {
                vec!["ebpf".to_owned(), "iptables".to_owned()]
            }
        } else {
            a.proxy.clone()
        };
        for p in &proxies {
            ensure!(
                ["ebpf", "iptables"].contains(&p.as_str()),
                "unknown --proxy {p:?} (ebpf, iptables)"
            );
        }
        let real = match &a.kubeconfig {
            None => None,
            Some(k) => {
                super::real::check_kubeconfig(k)?;
                ensure!(
                    a.name.is_none(),
                    "--kubeconfig and --name exclude each other (--name is a `ferry up` cluster of \
                     the lab)"
                );
                ensure!(
                    a.svc_scale.is_empty(),
                    "--svc-scale runs on the lab only for now (it reads the node's datapath size): \
                     leave out --kubeconfig"
                );
                ensure!(
                    a.backend.is_empty() && a.proxy.is_empty(),
                    "--backend and --proxy choose lab clusters; a real cluster has its own"
                );
                ensure!(
                    a.host_port > 0 && a.host_port < u16::MAX,
                    "--host-port must leave the next port free for iperf3 (1..65534)"
                );
                Some(super::real::RealArgs {
                    kubeconfig: k.clone(),
                    namespace: a.namespace.clone(),
                    image: a.image.clone(),
                    ferry: match &a.bench_binary {
                        Some(b) => b.clone(),
                        None => super::real::default_ferry()?,
                    },
                    nodes: a.nodes.clone(),
                    host_port: a.host_port,
                })
            }
        };
        let defs = if real.is_some() {
            super::real::select(&a.paths)?
        } else {
            paths::select(&a.paths, a.quick, &backends, &proxies)?
        };
        let tests: Vec<&'static str> = if a.tests.is_empty() {
            if a.quick {
                vec!["tcp_stream", "tcp_rr", "tcp_crr"]
            } else {
                vec![
                    "tcp_stream",
                    "tcp_rr",
                    "tcp_crr",
                    "tcp_cc",
                    "udp_rr",
                    "udp_max_rate",
                ]
            }
        } else {
            a.tests
                .iter()
                .map(|t| {
                    TESTS
                        .iter()
                        .find(|(s, l)| s == t || l == t)
                        .map(|(_, l)| *l)
                        .with_context(|| {
                            format!("unknown test {t:?} (stream, rr, crr, cc, udp_rr, udp_stream, udp_max_rate)")
                        })
                })
                .collect::<Result<_>>()?
        };
        let (rounds, warmup, duration, cooldown) = match (a.smoke, a.quick) {
            (true, _) => (2, 0.2, 0.5, 0.1),
            (false, true) => (3, 0.3, 1.2, 0.1),
            (false, false) => (5, 0.2, 0.7, 0.1),
        };
        let rounds = a.runs.unwrap_or(rounds);
        let warmup_s = check_secs("warmup", a.warmup.unwrap_or(warmup), 0.0)?;
        let duration_s = check_secs("duration", a.duration.unwrap_or(duration), 0.2)?;
        let flows = if a.flows.is_empty() {
            if a.quick {
                vec![1]
            } else {
                vec![1, 2]
            }
        } else {
            a.flows.clone()
        };
        ensure!(
            flows.iter().all(|f| (1..=64).contains(f)),
            "--flows must be within 1..64"
        );
        let sizes = if a.size.is_empty() {
            if a.quick {
                vec![1]
            } else {
                vec![1, 1024]
            }
        } else {
            a.size.clone()
        };
        ensure!(
            sizes.iter().all(|s| (1..=1 << 20).contains(s)),
            "--size must be within 1..1048576 bytes"
        );
        let formats = Format::parse_list(&a.format.join(","))?;
        ensure!(
            a.svc_scale.iter().all(|n| *n <= 100_000),
            "--svc-scale: at most 100000 Services per point"
        );
        let svc_from = super::svc::SvcFrom::parse(a.svc_from.as_deref())?;
        if let Some(name) = &a.name {
            let dir = crate::state::ClusterDir::new(&a.state_dir, name);
            ensure!(
                dir.state_file().is_file(),
                "no cluster named {name} is up under {} (start one with `ferry up --name {name}`, \
                 or leave out --name to let ferry bench bring up its own)",
                a.state_dir.display()
            );
        }
        let seed = a.seed.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs())
        });
        let out = a.out.clone().unwrap_or_else(|| {
            PathBuf::from(format!("ferry-bench-{}", stamp(SystemTime::now(), true)))
        });
        Ok(Plan {
            args: a.clone(),
            real,
            defs,
            proxies,
            tests,
            rounds,
            warmup_s,
            duration_s,
            cooldown_s: cooldown,
            flows,
            sizes,
            seed,
            out,
            formats,
            svc_from,
        })
    }
}

/// UTC time as RFC 3339 (`compact`: `20261204T231300Z` for file names).
pub(crate) fn stamp(t: SystemTime, compact: bool) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (hh, mm, ss) = (rem / 3600, rem % 3600 / 60, rem % 60);
    if compact {
        format!("{y:04}{m:02}{d:02}T{hh:02}{mm:02}{ss:02}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
    }
}

/// One (path, test, parameters) to run every round.
#[derive(Debug, Clone)]
struct Job {
    path: usize,
    test: &'static str,
    flows: u32,
    size: u32,
    engine: &'static str,
    result: usize,
}

fn jobs(plan: &Plan, paths: &[LabPath], results: &mut Vec<ResultSet>) -> Vec<Job> {
    let mut out = Vec::new();
    for (pi, p) in paths.iter().enumerate() {
        if p.info.unavailable.is_some() {
            continue;
        }
        for t in &plan.tests {
            let variants: Vec<(u32, u32, &'static str)> = match *t {
                "tcp_stream" => plan
                    .flows
                    .iter()
                    .map(|f| {
                        (
                            *f,
                            STREAM_WRITE,
                            if *f == 1 && p.iperf.is_some() {
                                "iperf3"
                            } else {
                                "builtin"
                            },
                        )
                    })
                    .collect(),
                "tcp_rr" => plan.sizes.iter().map(|s| (1, *s, "builtin")).collect(),
                "tcp_cc" => vec![(1, 1, "builtin")],
                "udp_stream" | "udp_max_rate" => vec![(1, UDP_PAYLOAD, "builtin")],
                _ => vec![(1, 1, "builtin")],
            };
            for (flows, size, engine) in variants {
                let mut params = BTreeMap::from([("flows".to_owned(), flows.to_string())]);
                params.insert("size".into(), size.to_string());
                if *t == "tcp_stream" {
                    params.insert("engine".into(), engine.into());
                }
                if *t == "tcp_cc" {
                    params.insert("close".into(), "rst".into());
                }
                results.push(ResultSet {
                    path: p.info.id.clone(),
                    test: (*t).to_owned(),
                    params,
                    ..Default::default()
                });
                out.push(Job {
                    path: pi,
                    test: t,
                    flows,
                    size,
                    engine,
                    result: results.len() - 1,
                });
            }
        }
    }
    out
}

fn test_of(name: &str) -> Test {
    match name {
        "tcp_stream" => Test::TcpStream,
        "tcp_rr" => Test::TcpRr,
        "tcp_crr" => Test::TcpCrr,
        "tcp_cc" => Test::TcpCc,
        "udp_rr" => Test::UdpRr,
        "udp_max_rate" => Test::UdpMaxRate,
        _ => Test::UdpStream,
    }
}

/// The executables the run uses.
#[derive(Debug)]
struct Bins {
    ferry: PathBuf,
    agent: PathBuf,
}

/// The bench agent's client for one run of `spec`, started in `path`'s place.
fn start_builtin(bins: &Bins, path: &LabPath, spec: &Spec) -> Result<Running> {
    let mut cmd = path.client.command(&bins.ferry)?;
    cmd.args([
        "bench-agent",
        "run",
        "--spec",
        &serde_json::to_string(spec)?,
    ]);
    Running::start(cmd)
}

#[expect(
    clippy::too_many_arguments,
    reason = "one spec's fields, named at the call"
)]
fn spec(
    job_test: &str,
    target: std::net::SocketAddrV4,
    flows: u32,
    size: u32,
    w: f64,
    d: f64,
    c: f64,
    rate_pps: u64,
) -> Spec {
    Spec {
        test: test_of(job_test),
        target: target.into(),
        flows,
        size,
        warmup_s: w,
        duration_s: d,
        cooldown_s: c,
        // tcp_cc: the client aborts with RST. A normal close leaves a TIME_WAIT socket in the
        // client's namespace per connection (~10k/s); within a few runs they fill the ephemeral
        // port range and connect() itself then spends milliseconds searching for a free port, so
        // every later connection test from that namespace would measure the search. tcp_crr's
        // server closes first (netperf), so its TIME_WAIT is on the server.
        close: if job_test == "tcp_cc" {
            Close::Rst
        } else {
            Close::Server
        },
        // udp_max_rate: the previous round's result as the search's first candidate.
        rate_pps,
        timeout_ms: 1000,
    }
}

/// The bench agent's JSON outcome in its stdout (the last line that parses).
fn parse_outcome(stdout: &str) -> Result<Outcome> {
    stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Outcome>(l.trim()).ok())
        .or_else(|| serde_json::from_str(stdout.trim()).ok())
        .context("the bench agent printed no outcome")
}

/// A short `tcp_cc` through the path until it carries traffic or `patience` runs out.
fn probe(bins: &Bins, path: &LabPath, patience: Duration) -> Result<()> {
    let deadline = Instant::now() + patience;
    loop {
        super::super::check_interrupt()?;
        let s = spec("tcp_cc", path.target, 1, 1, 0.0, 0.3, 0.0, 0);
        let why = match start_builtin(bins, path, &s)?
            .finish(Instant::now() + Duration::from_secs(10))?
        {
            c if c.status.is_some_and(|s| s.success()) => match parse_outcome(&c.stdout) {
                Ok(o) if o.completed > 0 => return Ok(()),
                Ok(o) => format!("no connection completed ({:?})", o.errors),
                Err(e) => format!("{e:#}"),
            },
            c => format!(
                "client failed: {}",
                c.stderr.trim().lines().last().unwrap_or("killed")
            ),
        };
        if Instant::now() >= deadline {
            bail!("{why}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Sleeps until `t`.
fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// The machine's CPU accounting of a lab run: the agents' pids and the idle baseline (CPUs busy).
/// A real cluster has none (its nodes are not this machine).
#[derive(Debug, Clone, Copy)]
struct CpuCtx<'a> {
    agents: &'a [i32],
    idle: f64,
}

/// Runs one job once and returns its run (`hint`: udp_max_rate's first candidate, 0 for none).
fn run_once(
    plan: &Plan,
    bins: &Bins,
    cpu_ctx: Option<CpuCtx<'_>>,
    path: &LabPath,
    job: &Job,
    hint: u64,
) -> Run {
    let mut run = Run {
        started_ms: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        ..Default::default()
    };
    let before = verify::read_all(&path.checks, &bins.agent);
    let total = plan.warmup_s + plan.duration_s + plan.cooldown_s;
    let started = if job.engine == "iperf3" {
        let target = path.iperf.unwrap_or(path.target);
        path.client.command(Path::new("iperf3")).and_then(|mut c| {
            c.args(iperf::args(target, total));
            Running::start(c)
        })
    } else {
        let target = if job.test.starts_with("udp") {
            path.udp_target
        } else {
            path.target
        };
        let s = spec(
            job.test,
            target,
            job.flows,
            job.size,
            plan.warmup_s,
            plan.duration_s,
            plan.cooldown_s,
            hint,
        );
        start_builtin(bins, path, &s)
    };
    let child = match started {
        Ok(c) => c,
        Err(e) => {
            run.error = Some(format!("{e:#}"));
            return run;
        }
    };
    let t0 = Instant::now();
    sleep_until(t0 + Duration::from_secs_f64(plan.warmup_s));
    let sample = || cpu_ctx.map(|c| cpu::sample(c.agents));
    let a = sample();
    let ta = Instant::now();
    sleep_until(t0 + Duration::from_secs_f64(plan.warmup_s + plan.duration_s));
    let b = sample();
    let wall = ta.elapsed().as_secs_f64();
    let deadline = t0 + Duration::from_secs_f64(total.ceil() + 15.0);
    let pid = child.pid();
    let cap = match child.finish(deadline) {
        Ok(c) => c,
        Err(e) => {
            run.error = Some(format!("client {pid}: {e:#}"));
            return run;
        }
    };
    let after = verify::read_all(&path.checks, &bins.agent);
    let outcome = match cap.status {
        None => Err(format!("client {pid} did not finish in time: killed")),
        Some(st) if !st.success() && job.engine != "iperf3" => Err(format!(
            "client exited {st}: {}",
            cap.stderr.trim().lines().last().unwrap_or("")
        )),
        Some(_) if job.engine == "iperf3" => {
            iperf::parse(&cap.stdout, plan.warmup_s, plan.duration_s)
        }
        Some(_) => parse_outcome(&cap.stdout).map_err(|e| format!("{e:#}")),
    };
    let o = match outcome {
        Ok(o) => o,
        Err(e) => {
            run.error = Some(e);
            return run;
        }
    };
    run.metrics = o.metrics.clone();
    let errors: u64 = o.errors.values().sum();
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    let error_rate = if o.completed + errors > 0 {
        errors as f64 * 100.0 / (o.completed + errors) as f64
    } else {
        0.0
    };
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    run.metrics.insert("errors".into(), errors as f64);
    run.metrics.insert("error_rate_pct".into(), error_rate);
    run.per_second = o.per_second.clone();
    run.histogram = o.histogram.clone();
    let mut flags = verify::flags(&path.checks, &before, &after);
    let mut valid = flags.is_empty();
    match (a, b, cpu_ctx) {
        (None, _, _) | (_, None, _) | (_, _, None) => {}
        (Some(Ok(a)), Some(Ok(b)), Some(ctx)) => {
            let c = cpu::window(&a, &b, wall, ctx.idle, o.client_cpu_s);
            let window = if o.window_s > 0.0 { o.window_s } else { wall };
            cpu::add_metrics(job.test, &c, window, o.completed, &mut run.metrics);
            if c.max_cpu_busy >= 0.95 {
                flags.push(format!(
                    "cpu-bound: a CPU was {:.0} % busy",
                    c.max_cpu_busy * 100.0
                ));
            }
            run.cpu = Some(c);
        }
        (Some(Err(e)), _, _) | (_, Some(Err(e)), _) => {
            flags.push(format!("no CPU figures: {e:#}"));
        }
    }
    if o.client_busiest_thread >= 0.95 {
        flags.push(format!(
            "generator-bound: a client thread was {:.0} % on CPU",
            o.client_busiest_thread * 100.0
        ));
    }
    if o.metrics.get("sender_limited").is_some_and(|v| *v > 0.0) {
        flags.push(
            "sender-limited: the unpaced trial lost nothing, so the max lossless rate is the \
             sender's, a lower bound of the path's"
                .into(),
        );
    }
    if error_rate > 0.1 {
        flags.push(format!("errors {error_rate:.2}%"));
        valid = false;
    }
    let moved = o.completed > 0
        || o.bytes > 0
        || o.metrics.get("throughput_gbps").is_some_and(|g| *g > 0.0);
    if !moved {
        flags.push("no traffic in the window".into());
        valid = false;
    }
    run.flags = flags;
    run.valid = valid;
    run
}

fn bin(dir: &Path, name: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    ensure!(
        p.is_file(),
        "{} not found: build the workspace binaries (`cargo build --release --bins`)",
        p.display()
    );
    Ok(p)
}

/// Runs the whole benchmark.
pub(crate) fn execute(plan: &Plan) -> Result<()> {
    let started = SystemTime::now();
    let t_start = Instant::now();
    let dir = super::super::bin_dir()?;
    let bins = Bins {
        ferry: std::env::current_exe().context("locating the ferry executable")?,
        agent: bin(&dir, "ferry-agent")?,
    };
    for b in ["ferry-server", "ferry-kubelet", "ferry-cni"] {
        bin(&dir, b)?;
    }
    ensure!(
        which::which("iperf3").is_ok() && which::which("kubectl").is_ok(),
        "iperf3 and kubectl are needed (scripts/setup.sh installs them)"
    );
    let a = &plan.args;
    // The clusters the selected paths need: A (vxlan, ebpf) or the one named with --name, then
    // B (host-gw, ebpf), C (udp, ebpf) and D (vxlan, iptables) when a path needs them: every
    // backend in the default proxy mode, the iptables mode on the default backend.
    let mut clusters: Vec<Cluster> = Vec::new();
    if let Some(name) = &a.name {
        clusters.push(Cluster::existing(name, &a.state_dir)?);
    }
    let needs: Vec<Need> = plan
        .defs
        .iter()
        .map(|d| d.need)
        .filter(|n| *n != Need::Own)
        .collect();
    let (host, busy_warning) = preflight::host(a.strict_quiet)?;
    println!(
        "ferry bench: {} paths x {} tests, {} rounds of {}+{}+{} s, seed {}{}",
        plan.defs.len(),
        plan.tests.len(),
        plan.rounds,
        plan.warmup_s,
        plan.duration_s,
        plan.cooldown_s,
        plan.seed,
        if a.smoke {
            " (smoke: correctness only)"
        } else if a.quick {
            " (quick: indicative only)"
        } else {
            ""
        }
    );
    for (label, backend, proxy) in [
        ("A", "vxlan", "ebpf"),
        ("B", "host-gw", "ebpf"),
        ("C", "udp", "ebpf"),
        ("D", "vxlan", "iptables"),
    ] {
        let has = |n: &Need| {
            clusters.iter().any(|c| match n {
                Need::Cluster => true,
                Need::Backend(b) => c.backend == *b,
                Need::Proxy(p) => c.proxy == *p,
                Need::Own => true,
            })
        };
        let serves = |n: &Need| match n {
            Need::Cluster => true,
            Need::Backend(b) => *b == backend,
            Need::Proxy(p) => *p == proxy,
            Need::Own => false,
        };
        if needs.iter().any(|n| !has(n) && serves(n)) {
            super::super::check_interrupt()?;
            let t = Instant::now();
            clusters.push(Cluster::up(&bins.ferry, label, backend, proxy)?);
            let c = &clusters[clusters.len() - 1];
            println!(
                "cluster {}: {} up ({backend}, {proxy}, 2 nodes) in {:.1} s",
                c.label,
                c.name,
                t.elapsed().as_secs_f64()
            );
        }
    }
    let mut pods: Vec<Pods<'_>> = Vec::new();
    for c in &clusters {
        pods.push(Pods::deploy(c, &bins.ferry)?);
    }
    let mut cgroups = Vec::new();
    for c in &clusters {
        cgroups.push(Cgroup::create(
            c.cgroup
                .join("n1")
                .join(format!("bench-{}", std::process::id())),
        )?);
    }
    let mut node_procs = Vec::new();
    let mut ext_routes = paths::ExtRoutes::default();
    if let Some(c) = clusters.first() {
        node_procs = paths::node_servers(&plan.defs, c, &bins.ferry)?;
        ext_routes = paths::ExtRoutes::add(&plan.defs, c, &pods[0])?;
    }
    let baselines = paths::Baselines::build(&plan.defs, &bins.ferry)?;
    // Every selected path, in catalogue order; cluster paths probed until they carry traffic.
    let mut lab_paths: Vec<LabPath> = Vec::new();
    let mut warnings: Vec<String> = busy_warning.into_iter().collect();
    for d in &plan.defs {
        if let Some(p) = baselines.paths.iter().find(|p| p.info.id == d.id) {
            lab_paths.push(p.clone());
            continue;
        }
        let ci = clusters.iter().position(|c| match d.need {
            Need::Backend(b) => c.backend == b,
            Need::Proxy(p) => c.proxy == p,
            _ => true,
        });
        let Some(ci) = ci else {
            bail!("path {} cannot be built: no cluster provides it", d.id);
        };
        let cx = paths::ClusterCtx {
            cluster: &clusters[ci],
            pods: &pods[ci],
            client_cg: cgroups[ci].path(),
        };
        let mut p = paths::cluster_path(d, &cx)?;
        let patience = if d.id.starts_with('N') { 3 } else { 15 };
        if let Err(e) = probe(&bins, &p, Duration::from_secs(patience)) {
            let why = format!("carries no traffic: {e:#}");
            warnings.push(format!("{}: unavailable: {why}", d.id));
            p.info.unavailable = Some(why);
        }
        lab_paths.push(p);
    }
    let agents: Vec<i32> = clusters.iter().flat_map(|c| c.agents.clone()).collect();
    let mut report = Report {
        schema: model::SCHEMA.into(),
        meta: Meta {
            ferry_version: env!("CARGO_PKG_VERSION").into(),
            commit: option_env!("FERRY_COMMIT").map(str::to_owned),
            started_at: stamp(started, false),
            host,
            mode: "lab".into(),
            nodes: 2,
            backends: clusters.iter().map(|c| c.backend.clone()).collect(),
            proxy_modes: clusters.iter().map(|c| c.proxy.clone()).collect(),
            ..Default::default()
        },
        config: config(plan),
        paths: lab_paths.iter().map(|p| p.info.clone()).collect(),
        warnings,
        ..Default::default()
    };
    // The machine's sysctls and the paths' devices.
    if let Some(p) = lab_paths
        .iter()
        .find(|p| p.client.cgroup.is_some())
        .or(lab_paths.first())
    {
        report.meta.sysctls = preflight::sysctls(&p.client);
    }
    for p in &lab_paths {
        for c in &p.checks {
            if let verify::Check::Link { place, dev, .. } = c {
                if !report
                    .meta
                    .devices
                    .iter()
                    .any(|d| d.netns == place.label && d.name == *dev)
                {
                    report.meta.devices.extend(preflight::device(place, dev));
                }
            }
        }
    }
    let mut results = Vec::new();
    let jobs = jobs(plan, &lab_paths, &mut results);
    report.results = results;
    // The idle baseline: the machine's busy CPU over a quiet period before round 0.
    let idle_len = plan.duration_s.min(3.0);
    let s0 = cpu::sample(&agents)?;
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(idle_len));
    let idle = cpu::busy_rate(&s0, &cpu::sample(&agents)?, t.elapsed().as_secs_f64());
    report.meta.idle_cpu = idle;
    if idle > 0.5 * f64::from(report.meta.host.cores.max(1)) {
        report.warnings.push(format!(
            "the machine was busy while the idle baseline was measured ({idle:.2} CPUs): the CPU \
             per unit figures (busy minus that baseline) are unreliable in this run"
        ));
    }
    if a.calibrate {
        match calibrate() {
            Ok(c) => {
                if !c.within_gate {
                    report.warnings.push(format!(
                        "calibration: the built-in tcp_rr p50 is {:.2}x sockperf's on loopback (outside ±10 %)",
                        c.ratio
                    ));
                }
                report.meta.calibration = Some(c);
            }
            Err(e) => report.warnings.push(format!("calibration failed: {e:#}")),
        }
    }
    let mut check = || -> Result<()> {
        for p in &mut node_procs {
            p.check()?;
        }
        Ok(())
    };
    rounds(
        plan,
        &bins,
        &lab_paths,
        &jobs,
        &mut report,
        Some(CpuCtx {
            agents: &agents,
            idle,
        }),
        &mut check,
    )?;
    if !a.svc_scale.is_empty() && !report.partial {
        for p in &plan.proxies {
            super::super::check_interrupt()?;
            let Some(ci) = clusters.iter().position(|c| &c.proxy == p) else {
                continue;
            };
            let (points, programming) =
                sweep(plan, &bins, &clusters[ci], &pods[ci], cgroups[ci].path())?;
            report
                .warnings
                .extend(missing_points(p, &a.svc_scale, plan.svc_from, &points));
            report.svc_scale.extend(points);
            report.svc_programming.extend(programming);
        }
        report.config.svc_scale = a.svc_scale.clone();
        report.config.endpoints = a.endpoints;
        report.config.svc_from = [
            ("pod", plan.svc_from.pod),
            ("external", plan.svc_from.external),
        ]
        .into_iter()
        .filter(|(_, on)| *on)
        .map(|(f, _)| f.to_owned())
        .collect();
    }
    finish(plan, &mut report, t_start)?;
    drop(baselines);
    drop(node_procs);
    drop(ext_routes);
    drop(cgroups);
    drop(pods);
    drop(clusters);
    done(plan, &report, t_start, "lab torn down")
}

/// The last line of a run (after its lab or pods are gone); an interrupted run is an error.
fn done(plan: &Plan, report: &Report, t_start: Instant, cleaned: &str) -> Result<()> {
    println!(
        "done in {:.1} s ({cleaned})",
        t_start.elapsed().as_secs_f64()
    );
    if report.partial {
        bail!(
            "interrupted: partial results written to {}",
            plan.out.display()
        );
    }
    Ok(())
}

/// Runs the benchmark on a real cluster (`--kubeconfig`, see `real`): the same jobs, rounds and
/// report as the lab, without the counters and CPU figures only the lab can read.
pub(crate) fn execute_real(plan: &Plan, real: &super::real::RealArgs) -> Result<()> {
    let started = SystemTime::now();
    let t_start = Instant::now();
    let bins = Bins {
        ferry: std::env::current_exe().context("locating the ferry executable")?,
        agent: PathBuf::new(),
    };
    ensure!(
        which::which("kubectl").is_ok(),
        "kubectl is needed (scripts/setup.sh installs it)"
    );
    let (host, _) = preflight::host(false)?;
    println!(
        "ferry bench: real cluster ({}), {} paths x {} tests, {} rounds of {}+{}+{} s, seed {}",
        real.kubeconfig.display(),
        plan.defs.len(),
        plan.tests.len(),
        plan.rounds,
        plan.warmup_s,
        plan.duration_s,
        plan.cooldown_s,
        plan.seed
    );
    let t = Instant::now();
    let lab = super::real::RealLab::deploy(real)?;
    println!(
        "bench pods Ready on {} and {} (server {}) in {:.1} s",
        lab.nodes[0],
        lab.nodes[1],
        lab.server_version,
        t.elapsed().as_secs_f64()
    );
    let mut lab_paths = lab.paths(&plan.defs)?;
    let mut warnings = vec![format!(
        "real cluster (server {}, nodes {} and {}): clients run through `kubectl exec`; the \
             paths' counters are not read and no CPU figures are taken (the nodes are not this \
             machine)",
        lab.server_version, lab.nodes[0], lab.nodes[1]
    )];
    for p in &mut lab_paths {
        if let Err(e) = probe(&bins, p, Duration::from_secs(20)) {
            let why = format!("carries no traffic: {e:#}");
            warnings.push(format!("{}: unavailable: {why}", p.info.id));
            p.info.unavailable = Some(why);
        }
    }
    let mut report = Report {
        schema: model::SCHEMA.into(),
        meta: Meta {
            ferry_version: env!("CARGO_PKG_VERSION").into(),
            commit: option_env!("FERRY_COMMIT").map(str::to_owned),
            started_at: stamp(started, false),
            host,
            mode: "cluster".into(),
            nodes: 2,
            ..Default::default()
        },
        config: config(plan),
        paths: lab_paths.iter().map(|p| p.info.clone()).collect(),
        warnings,
        ..Default::default()
    };
    let mut results = Vec::new();
    let jobs = jobs(plan, &lab_paths, &mut results);
    report.results = results;
    rounds(
        plan,
        &bins,
        &lab_paths,
        &jobs,
        &mut report,
        None,
        &mut || Ok(()),
    )?;
    finish(plan, &mut report, t_start)?;
    drop(lab);
    done(plan, &report, t_start, "bench pods and Services deleted")
}

/// The report's copy of the run's settings.
fn config(plan: &Plan) -> Config {
    let a = &plan.args;
    Config {
        quick: a.quick,
        smoke: a.smoke,
        rounds: plan.rounds,
        warmup_s: plan.warmup_s,
        duration_s: plan.duration_s,
        cooldown_s: plan.cooldown_s,
        seed: plan.seed,
        paths: plan.defs.iter().map(|d| d.id.to_owned()).collect(),
        tests: plan.tests.iter().map(|t| (*t).to_owned()).collect(),
        flows: plan.flows.clone(),
        sizes: plan.sizes.clone(),
        svc_scale: Vec::new(),
        endpoints: 0,
        svc_from: Vec::new(),
        engine: "auto".into(),
        argv: std::env::args().collect(),
    }
}

/// Every job once per round, in a seeded random order per round; `between` runs before each run
/// (checks that the lab's servers still run). Ctrl-C ends the rounds with `report.partial` set.
fn rounds(
    plan: &Plan,
    bins: &Bins,
    lab_paths: &[LabPath],
    jobs: &[Job],
    report: &mut Report,
    cpu_ctx: Option<CpuCtx<'_>>,
    between: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    let total = jobs.len() * plan.rounds as usize;
    let mut done = 0;
    let mut rng = rand::rngs::StdRng::seed_from_u64(plan.seed);
    'rounds: for round in 0..plan.rounds {
        let mut order: Vec<usize> = (0..jobs.len()).collect();
        order.shuffle(&mut rng);
        for (pos, ji) in order.into_iter().enumerate() {
            if crate::sys::interrupted() {
                report.partial = true;
                report.warnings.push("interrupted: partial results".into());
                break 'rounds;
            }
            between()?;
            let job = &jobs[ji];
            let path = &lab_paths[job.path];
            let rs = &report.results[job.result];
            let label = format!("round {}: {}", round + 1, rs.key());
            // udp_max_rate starts its search at the last valid round's result.
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "a packet rate, positive and far below 2^64"
            )]
            let hint = rs
                .runs
                .iter()
                .rev()
                .filter(|r| r.valid)
                .find_map(|r| r.metrics.get("max_lossless_pps"))
                .map_or(0, |p| p.round() as u64);
            let mut run = run_once(plan, bins, cpu_ctx, path, job, hint);
            run.round = round;
            run.order = u32::try_from(pos).unwrap_or(u32::MAX);
            done += 1;
            let status = match (&run.error, run.valid) {
                (Some(e), _) => format!("FAILED: {e}"),
                (None, true) if run.flags.is_empty() => "ok".into(),
                (None, _) => run.flags.join("; "),
            };
            eprintln!("{} {status}", report::table::progress(done, total, &label));
            report.results[job.result].runs.push(run);
        }
    }
    Ok(())
}

/// Summarises the report, prints the table and writes the files.
fn finish(plan: &Plan, report: &mut Report, t_start: Instant) -> Result<()> {
    report.meta.finished_at = stamp(SystemTime::now(), false);
    report.meta.elapsed_s = t_start.elapsed().as_secs_f64();
    ferry_bench::stats::summarise(report);
    if plan.formats.contains(&Format::Table) {
        println!("{}", report::table::render(report));
    }
    let written = report::write_all(report, &plan.out, &plan.formats)
        .with_context(|| format!("writing the report to {}", plan.out.display()))?;
    for w in &written {
        println!("wrote {}", w.display());
    }
    Ok(())
}

/// A client of the sweep in `place`: one `ferry bench-agent run`, its outcome.
fn sweep_client(place: &lab::Place, ferry: &Path, s: &Spec) -> Result<Outcome> {
    let mut cmd = place.command(ferry)?;
    cmd.args(["bench-agent", "run", "--spec", &serde_json::to_string(s)?]);
    let total = s.warmup_s + s.duration_s + s.cooldown_s;
    let cap =
        Running::start(cmd)?.finish(Instant::now() + Duration::from_secs_f64(total + 15.0))?;
    ensure!(
        cap.status.is_some_and(|s| s.success()),
        "bench client in {} failed: {}",
        place.label,
        cap.stderr.trim()
    );
    parse_outcome(&cap.stdout)
}

/// A prober of the sweep in `place`: one `ferry bench-agent probe`, its outcome.
fn sweep_probe(
    place: &lab::Place,
    ferry: &Path,
    s: &ferry_bench::probe::ProbeSpec,
) -> Result<ferry_bench::probe::ProbeOutcome> {
    let mut cmd = place.command(ferry)?;
    cmd.args(["bench-agent", "probe", "--spec", &serde_json::to_string(s)?]);
    #[expect(clippy::cast_precision_loss, reason = "milliseconds, small")]
    let give_up = s.give_up_ms as f64 / 1000.0;
    let cap =
        Running::start(cmd)?.finish(Instant::now() + Duration::from_secs_f64(give_up + 15.0))?;
    ensure!(
        cap.status.is_some_and(|s| s.success()),
        "prober in {} failed: {}",
        place.label,
        cap.stderr.trim()
    );
    cap.stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l.trim()).ok())
        .context("the prober printed no outcome")
}

/// The (target, test) points a sweep of `from` should have produced at every count and are
/// missing (every run of theirs failed or was left out), as report warnings.
fn missing_points(
    mode: &str,
    counts: &[u32],
    from: super::svc::SvcFrom,
    points: &[model::SvcScalePoint],
) -> Vec<String> {
    let mut targets = Vec::new();
    if from.pod {
        targets.extend(["clusterip", "pod-ip"]);
    }
    if from.external {
        targets.extend(["nodeport", "pod-ip-external"]);
    }
    let mut counts = counts.to_vec();
    counts.sort_unstable();
    counts.dedup();
    let mut out = Vec::new();
    for n in &counts {
        for t in &targets {
            for test in ["tcp_cc", "tcp_crr"] {
                if !points
                    .iter()
                    .any(|p| p.mode == mode && p.services == *n && p.target == *t && p.test == test)
                {
                    out.push(format!(
                        "Service scale [{mode}]: no {t} {test} point at {n} Services (every run \
                         failed or was left out; see stderr)"
                    ));
                }
            }
        }
    }
    out
}

/// The Service scale sweep on one cluster (`svc::sweep`): its pod client and prober in pod a,
/// its external ones in the cluster's external host (with a host route to pod b via node-1).
fn sweep(
    plan: &Plan,
    bins: &Bins,
    c: &Cluster,
    pods: &Pods<'_>,
    cg: &Path,
) -> Result<(Vec<model::SvcScalePoint>, Vec<model::SvcProgramming>)> {
    let place = lab::Place {
        label: format!("pod {} on node-1", pods.a.name),
        netns: pods.a.netns.clone(),
        cgroup: Some(cg.to_owned()),
        exec: None,
    };
    let ext_place = lab::Place {
        label: format!("external host ({})", c.name),
        netns: c.ext_ns(),
        cgroup: None,
        exec: None,
    };
    let client = |s: &Spec| sweep_client(&place, &bins.ferry, s);
    let probe = |s: &ferry_bench::probe::ProbeSpec| sweep_probe(&place, &bins.ferry, s);
    let ext_client = |s: &Spec| sweep_client(&ext_place, &bins.ferry, s);
    let ext_probe = |s: &ferry_bench::probe::ProbeSpec| sweep_probe(&ext_place, &bins.ferry, s);
    let node1 = lab::Place {
        label: "node-1".into(),
        netns: c.node_ns(1),
        cgroup: None,
        exec: None,
    };
    let bpffs = c.node_bpffs(1);
    let entries = || -> Result<u64> {
        if let Some(b) = &bpffs {
            if c.proxy == "ebpf" {
                let out = lab::run_ok(
                    std::process::Command::new(&bins.agent)
                        .args(["services", "-o", "json", "--bpffs-dir"])
                        .arg(b),
                )?;
                let v: serde_json::Value = serde_json::from_str(&out)?;
                let frontends = v["frontends"].as_array().map_or(0, Vec::len) as u64;
                return Ok(frontends + v["maps"]["backends"].as_u64().unwrap_or(0));
            }
        }
        let out = lab::run_ok(
            node1
                .command(Path::new("iptables-save"))?
                .args(["-t", "nat"]),
        )?;
        Ok(out.lines().filter(|l| l.starts_with("-A ")).count() as u64)
    };
    // The NodePort's counter on node-1: the tc datapath's translations (ebpf), the packets of
    // the nat rules matching the nodePort (iptables).
    let tc_check = match (&bpffs, c.proxy.as_str()) {
        (Some(b), "ebpf") => Some(verify::Check::NodePortTc {
            bpffs: b.clone(),
            node: format!("node-1 ({})", c.name),
        }),
        (None, "ebpf") => bail!("cluster {} has no eBPF pins", c.name),
        _ => None,
    };
    let counter_name = match &tc_check {
        Some(check) => check.describe(),
        None => format!(
            "node-1 ({}) iptables nat rules matching the nodePort: packets",
            c.name
        ),
    };
    let nodeport_counter = |port: u16| -> Result<u64> {
        if let Some(check) = &tc_check {
            return check.read(&bins.agent);
        }
        let save = lab::run_ok(
            node1
                .command(Path::new("iptables-save"))?
                .args(["-c", "-t", "nat"]),
        )?;
        Ok(super::svc::nodeport_rule_packets(&save, port))
    };
    let _route = if plan.svc_from.external {
        Some(paths::ExtRoute::add(c, pods.b.ip)?)
    } else {
        None
    };
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let kube = rt.block_on(crate::api::client(&c.kubeconfig()))?;
    let ctx = super::svc::SweepCtx {
        kube,
        mode: c.proxy.clone(),
        namespace: "default".into(),
        // b (node-1) first: the probed Service's backend and both controls' server.
        backend_ips: vec![pods.b.ip.into(), pods.c.ip.into()],
        port: lab::AGENT_PORT,
        target_port: lab::SVC_PORT,
        run_client: &client,
        run_probe: &probe,
        datapath_entries: &entries,
        counts: plan.args.svc_scale.clone(),
        endpoints: plan.args.endpoints,
        rounds: plan.rounds,
        duration_s: plan.duration_s,
        warmup_s: plan.warmup_s,
        changes: if plan.args.smoke { 3 } else { 20 },
        from: plan.svc_from,
        external: Some(super::svc::ExternalCtx {
            node_ip: Cluster::node_ip(1).into(),
            run_client: &ext_client,
            run_probe: &ext_probe,
            nodeport_counter: &nodeport_counter,
            counter_name,
        }),
    };
    let r = super::svc::sweep(&ctx);
    drop(rt);
    r
}

/// `ferry bench calibrate`'s request/response row, short: 3 rounds of 1 s, no stream row.
fn calibrate() -> Result<model::Calibration> {
    use super::super::calibrate::{measure, CalibrateArgs};
    use clap::{Args as _, FromArgMatches as _};
    let m = CalibrateArgs::augment_args(clap::Command::new("calibrate")).try_get_matches_from([
        "calibrate",
        "--rounds",
        "3",
        "--duration",
        "1",
        "--no-stream",
    ])?;
    measure(&CalibrateArgs::from_arg_matches(&m)?)
}
