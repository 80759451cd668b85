//! The built-in load generator: a server that answers every test on one port (TCP and UDP) and a
//! client that runs one test against it for warm-up + window + cool-down and reports what it
//! measured in the window. It runs as `ferry bench-agent serve|run` inside the namespace (and
//! cgroup) of a path's endpoint; the lab reads the client's [`Outcome`] as JSON from its stdout, so
//! control never crosses the path under test.
//!
//! Definitions follow `docs/bench.md` (netperf's TCP_RR / TCP_CRR / TCP_CC semantics: the server
//! closes first in `tcp_crr`; connect latency is reported on its own).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// A test the built-in generator runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Test {
    /// Bulk TCP, client -> server, `flows` connections.
    TcpStream,
    /// Persistent connection per flow; request `size` bytes, response `size` bytes.
    TcpRr,
    /// socket + connect + request + response + server's FIN + close, per transaction.
    TcpCrr,
    /// connect + close, no data.
    TcpCc,
    /// Connected UDP socket per flow; a request with a sequence number, its reply or a timeout.
    UdpRr,
    /// Paced UDP datagrams at `rate_pps` (per flow); loss, reorder, one-way delay at the server.
    UdpStream,
}

/// How a `tcp_crr` transaction ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Close {
    /// The server closes first (netperf; TIME_WAIT on the server). Default.
    #[default]
    Server,
    /// The client closes first.
    Client,
    /// The client aborts with RST (SO_LINGER 0).
    Rst,
}

/// What the client runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// The test.
    pub test: Test,
    /// Server address (a pod IP, a ClusterIP, a node IP...).
    pub target: SocketAddr,
    /// Parallel flows (one thread each).
    pub flows: u32,
    /// Request and response size (rr, crr, udp_rr), write size (tcp_stream), payload (udp_stream).
    pub size: u32,
    /// Warm-up, seconds (not counted).
    pub warmup_s: f64,
    /// Measured window, seconds.
    pub duration_s: f64,
    /// Cool-down, seconds (not counted).
    pub cooldown_s: f64,
    /// `tcp_crr` close order.
    pub close: Close,
    /// `udp_stream`: offered packets per second per flow (0: as fast as possible).
    pub rate_pps: u64,
    /// Give up connecting / waiting for a reply after this long, milliseconds.
    pub timeout_ms: u64,
}

/// What the client measured in the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The spec it ran.
    pub spec: Option<Spec>,
    /// Exact length of the window, seconds.
    pub window_s: f64,
    /// Transactions / connections / datagrams completed in the window.
    pub completed: u64,
    /// Payload bytes received by the far end in the window (stream tests) or moved (rr).
    pub bytes: u64,
    /// Errors by kind (`refused`, `timeout`, `reset`, `addr_not_avail`, `other`).
    pub errors: BTreeMap<String, u64>,
    /// Metric name -> value (the names of `model::unit_of`: `throughput_gbps`, `tps`, `cps`,
    /// `lat_p50_us` .. `lat_p999_us`, `lat_mean_us`, `lat_max_us`, `connect_p50_us`,
    /// `connect_p99_us`, `loss_pct`, `retrans`, `fairness`, ...).
    pub metrics: BTreeMap<String, f64>,
    /// Completions per second inside the window (steady-state check).
    pub per_second: Vec<f64>,
    /// Transaction latency histogram (ns), HdrHistogram V2 serialised, base64.
    pub histogram: Option<String>,
    /// Samples in the latency histogram.
    pub samples: u64,
    /// Client CPU seconds (user + system) over the whole run, from rusage.
    pub client_cpu_s: f64,
    /// Highest share of one client thread's time on CPU (0..1): >= 0.95 means generator-bound.
    pub client_busiest_thread: f64,
}
