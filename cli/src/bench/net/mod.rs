//! `ferry bench` (no subcommand): the pod-network benchmark on the netns lab.
//!
//! It brings up the clusters the selected paths need (or uses one named with `--name`), builds the
//! reference paths in its own namespaces (loopback, a raw veth pair, a hand-built kernel VXLAN pod
//! path), deploys a server pod per node, then runs every selected (path, test, parameters) once
//! per round in a seeded random order, with the CPU and the path's counters read around every run,
//! and writes the report (`ferry_bench::model::Report`). The user guide is `docs/bench.md`.
//!
//! Split: [`lab`] clusters, namespaces and processes with Drop guards; [`paths`] the path matrix;
//! [`run`] the rounds; [`cpu`] CPU accounting; [`preflight`] the machine; [`verify`] path counters;
//! [`iperf`] the iperf3 engine.

mod cpu;
mod iperf;
mod lab;
mod paths;
mod preflight;
mod real;
mod run;
pub(crate) mod svc;
mod verify;

use anyhow::{bail, Context as _, Result};
use std::path::PathBuf;

/// Every test `--tests` accepts, by its short name.
pub(crate) const TESTS: &[(&str, &str)] = &[
    ("stream", "tcp_stream"),
    ("rr", "tcp_rr"),
    ("crr", "tcp_crr"),
    ("cc", "tcp_cc"),
    ("udp_rr", "udp_rr"),
    ("udp_stream", "udp_stream"),
    ("udp_max_rate", "udp_max_rate"),
];

/// `ferry bench` flags (the pod-network benchmark).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct NetArgs {
    /// Short run (< 2 min): paths L1, P1, P2-ref-vxlan, P2-vxlan, S1-ebpf, S2-ebpf; tests stream,
    /// rr (1 B), crr; 3 rounds of 0.3 s warm-up + 1.2 s + 0.1 s; cluster A only. Indicative only.
    #[arg(long)]
    pub(crate) quick: bool,
    /// Correctness only (CI): the shortest runs, 2 rounds; figures are not meaningful.
    #[arg(long)]
    pub(crate) smoke: bool,
    /// Paths to measure (ids as in docs/bench.md: L0, L1, L2, H1, P1, P2-vxlan, P2-host-gw,
    /// P2-udp, P2-ref-vxlan, S1-ebpf, S2-iptables, S3-ebpf, E0, E1, X1, X2, N1-ebpf,
    /// N2-iptables, ...; a prefix such as `S1` or `P2` selects every variant).
    #[arg(long, value_delimiter = ',')]
    pub(crate) paths: Vec<String>,
    /// Tests: stream, rr, crr, cc, udp_rr, udp_stream, udp_max_rate (default: all but
    /// udp_stream, whose unpaced run is udp_max_rate's first trial).
    #[arg(long, value_delimiter = ',')]
    pub(crate) tests: Vec<String>,
    /// Rounds (every selected run once per round, in a seeded random order).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub(crate) runs: Option<u32>,
    /// Measured window per run, seconds.
    #[arg(long)]
    pub(crate) duration: Option<f64>,
    /// Warm-up per run (not measured), seconds.
    #[arg(long)]
    pub(crate) warmup: Option<f64>,
    /// Flow counts of the stream test.
    #[arg(long, value_delimiter = ',')]
    pub(crate) flows: Vec<u32>,
    /// Request = response sizes of the request/response test, bytes.
    #[arg(long, value_delimiter = ',')]
    pub(crate) size: Vec<u32>,
    /// Overlay backends to bring up: vxlan (clusters A, D), host-gw (cluster B), udp (cluster C).
    #[arg(long, value_delimiter = ',')]
    pub(crate) backend: Vec<String>,
    /// Service proxy modes: ebpf (clusters A, B, C), iptables (cluster D).
    #[arg(long, value_delimiter = ',')]
    pub(crate) proxy: Vec<String>,
    /// Service scale sweep: Service counts (e.g. 0,1000,10000).
    #[arg(long, value_delimiter = ',')]
    pub(crate) svc_scale: Vec<u32>,
    /// Where the scale sweep's clients connect from: `pod` (the client pod: ClusterIP and pod IP)
    /// and/or `external` (the lab's external host: NodePort on node-1 and the pod IP routed via
    /// node-1). Default: both.
    #[arg(long, value_delimiter = ',', requires = "svc_scale")]
    pub(crate) svc_from: Option<Vec<String>>,
    /// Endpoints per dummy Service of the scale sweep.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub(crate) endpoints: u32,
    /// Seed of the per-round order (default: from the clock; recorded in the report).
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Output directory (default ./ferry-bench-<UTC timestamp>).
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Output formats: table, json, csv, html, prom.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "table,json,csv,html,prom"
    )]
    pub(crate) format: Vec<String>,
    /// Use this existing `ferry up` cluster instead of bringing one up (cluster A; its backend and
    /// proxy mode are read from it).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// State directory of the `--name` cluster.
    #[arg(long, default_value = "/run/ferry/up")]
    pub(crate) state_dir: PathBuf,
    /// A real cluster instead of the lab: the bench pods go there (two nodes, `kubectl exec` for
    /// the clients); paths L2, H1, P1, P2, S1, S2, S3 (docs/bench.md, "A real cluster").
    #[arg(long)]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// --kubeconfig: namespace of the bench pods and Services.
    #[arg(long, default_value = "default", requires = "kubeconfig")]
    pub(crate) namespace: String,
    /// --kubeconfig: the bench pods' image; it must hold `ferry` (at --bench-binary) and `iperf3`
    /// (a `ferry up` cluster runs host binaries and ignores it).
    #[arg(long, default_value = "ferry-bench", requires = "kubeconfig")]
    pub(crate) image: String,
    /// --kubeconfig: `ferry`'s path inside the image (default: this executable's path).
    #[arg(long, requires = "kubeconfig")]
    pub(crate) bench_binary: Option<String>,
    /// --kubeconfig: the two nodes to use (default: the first two Ready, schedulable, untainted).
    #[arg(long, value_delimiter = ',', requires = "kubeconfig")]
    pub(crate) nodes: Vec<String>,
    /// --kubeconfig: the host-network pods' bench agent port (iperf3 on the next one).
    #[arg(long, default_value_t = 7100, requires = "kubeconfig")]
    pub(crate) host_port: u16,
    /// Also calibrate the built-in generator against sockperf on loopback (about 10 s; recorded in
    /// the report's `meta.calibration`).
    #[arg(long)]
    pub(crate) calibrate: bool,
    /// Abort when the machine is busy (> 5 % CPU) before the run instead of warning.
    #[arg(long)]
    pub(crate) strict_quiet: bool,
}

/// `ferry bench compare` flags.
#[derive(Debug, clap::Args)]
pub(crate) struct CompareArgs {
    /// The reference report (JSON).
    a: PathBuf,
    /// The report compared with it (JSON).
    b: PathBuf,
    /// Exit 1 when a condition holds, e.g. `tcp_rr.lat_p99_us>+10%,tcp_stream.throughput_gbps<-5%`.
    #[arg(long)]
    fail_on: Option<String>,
}

/// Runs `ferry bench compare`.
pub(crate) fn compare(args: &CompareArgs) -> Result<()> {
    use ferry_bench::report::{compare, json};
    let rules = match &args.fail_on {
        Some(f) => compare::parse_fail_on(f)?,
        None => Vec::new(),
    };
    let a = json::read(&args.a)?;
    let b = json::read(&args.b)?;
    let c = compare::compare(&a, &b, &compare::Options::default());
    print!("{}", compare::render(&c));
    let broken = compare::evaluate(&c, &rules)?;
    if !broken.is_empty() {
        eprintln!(
            "ferry bench compare: {} --fail-on rule(s) broken:",
            broken.len()
        );
        for v in &broken {
            eprintln!("  {v}");
        }
        std::process::exit(1);
    }
    Ok(())
}

/// Runs the pod-network benchmark.
pub(crate) fn run(args: &NetArgs) -> Result<()> {
    let plan = run::Plan::from_args(args)?;
    if let Some(real) = &plan.real {
        // No namespaces of this machine: no root, no lab lock (run ids keep runs apart).
        return run::execute_real(&plan, real);
    }
    if !crate::sys::is_root() {
        bail!("needs root: it creates network namespaces (run it as root, or with sudo)");
    }
    let _lock = lab::BenchLock::take().context("taking the bench lock")?;
    run::execute(&plan)
}
