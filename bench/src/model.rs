//! The report of one `ferry bench` run: what the JSON file (`ferry.bench/v1`) holds and what every
//! output (table, CSV, HTML, Prometheus, `compare`) renders. Plain data with serde; the lab fills
//! it ([`Report`]), [`crate::stats`] summarises it, [`crate::report`] renders it.
//!
//! Vocabulary (see `docs/bench.md`):
//! - a **path** is a way between two endpoints (`L1` raw veth pair, `P2-vxlan` pod to pod across
//!   nodes over VXLAN, `S1-ebpf` pod to a ClusterIP with a local backend in eBPF mode, ...), with the
//!   path it is compared against (its **baseline**);
//! - a **test** is what runs over it (`tcp_stream`, `tcp_rr`, `tcp_crr`, `tcp_cc`, `udp_rr`,
//!   `udp_stream`, `udp_max_rate`) with its parameters (flows, sizes, engine);
//! - a **run** is one execution of (path, test, parameters) in one **round**; every round runs every
//!   selected (path, test) once in a seeded random order;
//! - a **metric** is a named figure of a run (`throughput_gbps`, `tps`, `lat_p99_us`, ...); the
//!   result set summarises each over the valid runs (median, min–max) and as a ratio to the same
//!   metric of the baseline path, computed per round.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The schema identifier written in every report; bumped on an incompatible change.
pub const SCHEMA: &str = "ferry.bench/v1";

/// One `ferry bench` run: everything needed to reproduce, render and compare it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// Where and when it ran.
    pub meta: Meta,
    /// Every tunable of the run.
    pub config: Config,
    /// The paths that were measured (or could not be built: [`PathInfo::unavailable`]).
    pub paths: Vec<PathInfo>,
    /// One entry per (path, test, parameters).
    pub results: Vec<ResultSet>,
    /// The cost ladder: microseconds each layer adds, from request/response latencies.
    pub ladder: Vec<LadderStep>,
    /// The Service scale sweep (`--svc-scale`), one point per (mode, target, Service count).
    pub svc_scale: Vec<SvcScalePoint>,
    /// Service programming latency (`--svc-scale`): a change through the apiserver until a prober
    /// sees it, per (mode, Service count).
    pub svc_programming: Vec<SvcProgramming>,
    /// Anything the reader must know: a busy machine, flagged runs, skipped paths.
    pub warnings: Vec<String>,
    /// True when the run stopped early (Ctrl-C, a fatal error): results so far, marked.
    pub partial: bool,
}

/// Where and when the run happened.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Meta {
    /// `ferry` version (crate version).
    pub ferry_version: String,
    /// Git commit of the build when known.
    pub commit: Option<String>,
    /// Start time, RFC 3339 UTC.
    pub started_at: String,
    /// End time, RFC 3339 UTC.
    pub finished_at: String,
    /// Wall time of the whole run, seconds.
    pub elapsed_s: f64,
    /// The machine.
    pub host: Host,
    /// `lab` (namespaces on this machine) or `cluster` (`--kubeconfig`).
    pub mode: String,
    /// Nodes of each cluster the run used.
    pub nodes: u32,
    /// Overlay backends that were up.
    pub backends: Vec<String>,
    /// Service proxy modes that were measured.
    pub proxy_modes: Vec<String>,
    /// Relevant sysctls (name -> value), read in the namespaces the paths use.
    pub sysctls: BTreeMap<String, String>,
    /// MTU and offloads of the devices on the paths.
    pub devices: Vec<Device>,
    /// CPU time of the machine while idle before the first round (the idle baseline), in CPU
    /// seconds per second of wall time.
    pub idle_cpu: f64,
    /// The built-in generator against sockperf on loopback, when calibrated in this run.
    pub calibration: Option<Calibration>,
}

/// The machine the run happened on (the preflight).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Host {
    /// Hostname.
    pub hostname: String,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// Online CPUs.
    pub cores: u32,
    /// cpufreq governor, or `none` when the machine exposes none (VMs).
    pub governor: String,
    /// SMT active.
    pub smt: bool,
    /// `uname -r`.
    pub kernel: String,
    /// Preemption model (`preempt=` of `uname -v`, or from /sys/kernel/debug when readable).
    pub preempt: String,
    /// 1-minute load average at the start.
    pub loadavg: f64,
    /// Share of the CPU busy during the preflight's quiet check (0..1).
    pub busy_before: f64,
    /// iperf3 version string.
    pub iperf3: String,
}

/// A network device on a measured path.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Device {
    /// Namespace label (`node-1`, `pod-a`, `l1-client`, ...).
    pub netns: String,
    /// Interface name.
    pub name: String,
    /// Link kind (`veth`, `vxlan`, `bridge`, `tun`, ...).
    pub kind: String,
    /// MTU.
    pub mtu: u32,
    /// Offload features (`tcp-segmentation-offload` -> on/off, ...).
    pub offloads: BTreeMap<String, bool>,
}

/// The generator's calibration against sockperf.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Calibration {
    /// Message size, bytes.
    pub size: u32,
    /// sockperf ping-pong round trip p50 (µs, `--full-rtt`).
    pub sockperf_p50_us: f64,
    /// Built-in tcp_rr p50 (µs) at the same size.
    pub builtin_p50_us: f64,
    /// builtin / sockperf.
    pub ratio: f64,
    /// Within the gate (±10 %).
    pub within_gate: bool,
}

/// Every tunable of the run (so the JSON reproduces it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Config {
    /// `--quick`: 3 rounds of short runs, "indicative only".
    pub quick: bool,
    /// `--smoke`: correctness only (CI); figures are not meaningful.
    pub smoke: bool,
    /// Rounds.
    pub rounds: u32,
    /// Warm-up per run, seconds (excluded).
    pub warmup_s: f64,
    /// Measured window per run, seconds.
    pub duration_s: f64,
    /// Cool-down per run, seconds (excluded).
    pub cooldown_s: f64,
    /// Seed of the per-round order.
    pub seed: u64,
    /// Selected path ids.
    pub paths: Vec<String>,
    /// Selected tests.
    pub tests: Vec<String>,
    /// Flow counts for stream tests.
    pub flows: Vec<u32>,
    /// Request = response sizes for request/response tests, bytes.
    pub sizes: Vec<u32>,
    /// Service counts of the scale sweep (empty: no sweep).
    pub svc_scale: Vec<u32>,
    /// Endpoints per Service in the sweep.
    pub endpoints: u32,
    /// Where the sweep's clients ran (`--svc-from`): `pod`, `external` (empty: no sweep).
    #[serde(default)]
    pub svc_from: Vec<String>,
    /// Stream engine: `iperf3` or `builtin`.
    pub engine: String,
    /// The command line as typed.
    pub argv: Vec<String>,
}

/// A path between two endpoints.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PathInfo {
    /// Short id: `L0`, `L1`, `L2`, `H1`, `P1`, `P2-vxlan`, `P2-ref-vxlan`, `S1-ebpf`, ...
    pub id: String,
    /// One line for people: "pod -> pod, across nodes, VXLAN".
    pub description: String,
    /// The path whose figures are this one's denominators (`None` for the roots).
    pub baseline: Option<String>,
    /// Where the client runs (`pod-a on node-1`).
    pub client: String,
    /// Where the server is reached (`10.244.2.5:7000`, `ClusterIP 10.96.0.20:7000`).
    pub server: String,
    /// Counters the path must move, checked around every run (`node-1/flannel.1 tx_bytes`,
    /// `ebpf lb map hit`, ...).
    pub verify: Vec<String>,
    /// Why the path could not be built (then it has no results).
    pub unavailable: Option<String>,
}

/// The runs and summaries of one (path, test, parameters).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ResultSet {
    /// [`PathInfo::id`].
    pub path: String,
    /// `tcp_stream`, `tcp_rr`, `tcp_crr`, `tcp_cc`, `udp_rr`, `udp_stream`, `udp_max_rate`.
    pub test: String,
    /// Parameters (`flows` -> `1`, `size` -> `1`, `engine` -> `iperf3`, ...).
    pub params: BTreeMap<String, String>,
    /// Every run, also the invalid ones (flagged).
    pub runs: Vec<Run>,
    /// Per metric name, its summary over the valid runs.
    pub summary: BTreeMap<String, MetricSummary>,
    /// Flags of the result set as a whole (`few samples for p99.9`, `no valid run`).
    pub flags: Vec<String>,
}

impl ResultSet {
    /// A stable key of (path, test, parameters): `P2-vxlan/tcp_rr/size=1`.
    pub fn key(&self) -> String {
        let mut k = format!("{}/{}", self.path, self.test);
        for (p, v) in &self.params {
            k.push_str(&format!("/{p}={v}"));
        }
        k
    }
}

/// One execution of (path, test, parameters).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Run {
    /// Round, from 0.
    pub round: u32,
    /// Position in the round's order, from 0.
    pub order: u32,
    /// Start, milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// Metric name -> value for this run (units in [`unit_of`]).
    pub metrics: BTreeMap<String, f64>,
    /// Per-second rate samples inside the window (the steady-state check).
    pub per_second: Vec<f64>,
    /// Latency histogram of the run (transaction latency, ns), HdrHistogram V2 serialised and
    /// base64-encoded, when the test has latencies.
    pub histogram: Option<String>,
    /// CPU during the window.
    pub cpu: Option<Cpu>,
    /// Why the run is not valid or is doubtful (`generator-bound`, `not steady`, `errors 0.4%`,
    /// `wrong path: node-1/flannel.1 tx_bytes did not move`, ...).
    pub flags: Vec<String>,
    /// False when a flag makes the run invalid (excluded from the median, still listed).
    pub valid: bool,
    /// The error when the run failed outright.
    pub error: Option<String>,
}

/// CPU used during a run's window, with the idle baseline subtracted.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Cpu {
    /// Machine CPU seconds busy in the window minus the idle baseline.
    pub net_s: f64,
    /// Of which user (incl. nice).
    pub user_s: f64,
    /// Of which system.
    pub system_s: f64,
    /// Of which softirq (+ irq).
    pub softirq_s: f64,
    /// The generator's own CPU seconds (client + server, from rusage).
    pub generator_s: f64,
    /// The ferry-agents' CPU seconds in the window (all nodes).
    pub agent_s: f64,
    /// Highest single-CPU busy share in the window (0..1): >= 0.95 flags `cpu-bound`.
    pub max_cpu_busy: f64,
}

/// The summary of one metric over the valid runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MetricSummary {
    /// Unit (`Gbit/s`, `txn/s`, `conn/s`, `us`, `%`, `CPU s/Gbit`, ...).
    pub unit: String,
    /// Whether larger is better (throughput) or worse (latency, CPU).
    pub higher_is_better: bool,
    /// Valid runs summarised.
    pub n: u32,
    /// Median.
    pub median: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
    /// First quartile.
    pub q1: f64,
    /// Third quartile.
    pub q3: f64,
    /// Coefficient of variation (stddev / mean).
    pub cv: f64,
    /// This path's metric divided by its baseline's, per round, summarised.
    pub ratio: Option<Ratio>,
    /// False when the metric is a percentile without enough samples (greyed, "few samples").
    pub enough_samples: bool,
}

/// A per-round ratio to the baseline path, summarised.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Ratio {
    /// The baseline path id.
    pub baseline: String,
    /// Median of the per-round ratios.
    pub median: f64,
    /// Minimum per-round ratio.
    pub min: f64,
    /// Maximum per-round ratio.
    pub max: f64,
}

/// One rung of the cost ladder.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LadderStep {
    /// The layer (`veth + netns`, `bridge + netfilter`, `VXLAN encapsulation`, `Service LB (ebpf)`,
    /// `SNAT`).
    pub layer: String,
    /// How it is computed (`L1 - L0`).
    pub formula: String,
    /// Microseconds added to the round trip (median over rounds of the per-round difference).
    pub us: f64,
    /// Minimum over rounds.
    pub min_us: f64,
    /// Maximum over rounds.
    pub max_us: f64,
    /// CPU microseconds per transaction added, when measured.
    pub cpu_us: Option<f64>,
}

/// One point of the Service scale sweep.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SvcScalePoint {
    /// `ebpf` or `iptables`.
    pub mode: String,
    /// From the client pod on node-1: `clusterip` (the probed Service's ClusterIP) or `pod-ip`
    /// (its backend's pod IP, the control). From the lab's external host: `nodeport` (node-1's
    /// underlay address and the probed Service's nodePort) or `pod-ip-external` (the same
    /// backend's pod IP over a host route via node-1, the control).
    pub target: String,
    /// `tcp_cc` or `tcp_crr`.
    #[serde(default)]
    pub test: String,
    /// Services programmed.
    pub services: u32,
    /// Connect latency p50 (µs), median over rounds, with min–max.
    pub connect_p50_us: MetricSummary,
    /// Connect latency p99 (µs).
    pub connect_p99_us: MetricSummary,
    /// Connections per second (tcp_cc).
    pub cps: MetricSummary,
    /// Rules (iptables) or map entries (ebpf) at this point.
    pub datapath_entries: u64,
    /// Time to program all Services, seconds, from the first create to the probe seeing the last
    /// (the ClusterIP from the client pod; for the external targets, the NodePort from the
    /// external host).
    pub full_sync_s: f64,
    /// Connections completed in the measured windows of the summarised runs.
    #[serde(default)]
    pub connections: u64,
    /// `nodeport` points: the node-1 counter every run had to move (a run that did not move it
    /// is left out) and how much it moved over the summarised runs, warm-up included (at least
    /// one per connection when the connections went through the NodePort). `None` for the other
    /// targets.
    #[serde(default)]
    pub verified: Option<SvcCounter>,
}

/// A datapath counter read around the runs of a Service scale point.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SvcCounter {
    /// What was read (`node-1 (fb123d) iptables nat rules matching --dport 31234: packets`).
    pub counter: String,
    /// Its growth over the summarised runs.
    pub delta: u64,
}

/// Service programming latency at one Service count.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SvcProgramming {
    /// `ebpf` or `iptables`.
    pub mode: String,
    /// Services programmed.
    pub services: u32,
    /// Changes measured.
    pub changes: u32,
    /// Milliseconds from the API write to the prober seeing the change: p50.
    pub p50_ms: f64,
    /// p99 (max when fewer than 100 changes).
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

/// The unit and direction of a metric by name; unknown names are unitless, higher-better.
pub fn unit_of(metric: &str) -> (&'static str, bool) {
    match metric {
        "throughput_gbps" => ("Gbit/s", true),
        "retrans" => ("segments", false),
        "fairness" => ("Jain index", true),
        "tps" => ("txn/s", true),
        "cps" => ("conn/s", true),
        "pps" | "offered_pps" | "received_pps" | "max_lossless_pps" => ("packets/s", true),
        "max_lossless_gbps" => ("Gbit/s", true),
        "loss_pct" | "error_rate_pct" | "reorder_pct" => ("%", false),
        "errors" => ("count", false),
        "cpu_s_per_gbit" => ("CPU s/Gbit", false),
        "cpu_us_per_txn" => ("CPU µs/txn", false),
        "cpu_us_per_conn" => ("CPU µs/conn", false),
        "agent_cpu_s" => ("CPU s", false),
        m if m.ends_with("_us") => ("µs", false),
        m if m.ends_with("_ms") => ("ms", false),
        _ => ("", true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_lists_parameters_in_order() {
        let mut r = ResultSet {
            path: "P1".into(),
            test: "tcp_rr".into(),
            ..Default::default()
        };
        r.params.insert("size".into(), "1".into());
        r.params.insert("flows".into(), "1".into());
        assert_eq!(r.key(), "P1/tcp_rr/flows=1/size=1");
    }

    #[test]
    fn units() {
        assert_eq!(unit_of("lat_p99_us"), ("µs", false));
        assert_eq!(unit_of("throughput_gbps"), ("Gbit/s", true));
        assert_eq!(unit_of("connect_p50_us").0, "µs");
    }

    #[test]
    fn report_round_trips_through_json() {
        let r = Report {
            schema: SCHEMA.into(),
            results: vec![ResultSet {
                path: "L0".into(),
                test: "tcp_rr".into(),
                runs: vec![Run {
                    valid: true,
                    metrics: [("tps".to_string(), 1.0)].into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Report>(&s).unwrap(), r);
    }
}
