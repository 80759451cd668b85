//! The built-in load generator: a server that answers every test on one port (TCP and UDP) and a
//! client that runs one test against it for warm-up + window + cool-down and reports what it
//! measured in the window. It runs as `ferry bench-agent serve|run` inside the namespace (and
//! cgroup) of a path's endpoint; the lab reads the client's [`Outcome`] as JSON from its stdout, so
//! control never crosses the path under test.
//!
//! Definitions follow `docs/bench.md` (netperf's TCP_RR / TCP_CRR / TCP_CC semantics: the server
//! closes first in `tcp_crr`; connect latency is reported on its own).
//!
//! # Running a test ([`run`])
//! One thread per flow with a blocking socket; the flows connect, meet at a barrier and share one
//! clock ([`Instant`], `CLOCK_MONOTONIC`): warm-up, window, cool-down. Only events completed inside
//! the window count (see `window.rs`); per-second buckets cover its whole seconds. Buffers are
//! allocated once per flow; latencies go to per-flow HDR histograms (ns, 3 digits) merged at the
//! end. `tcp_stream` throughput is the payload the server's kernel acknowledged in the window
//! (`tcpi_bytes_acked` at the window's edges), retransmits from `tcpi_total_retrans`.
//!
//! # Wire format (big-endian)
//! TCP: the client's first write on a connection starts with a 16-byte header, followed in the
//! same write by its first request:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `FBT1` |
//! | 4 | mode: 1 stream, 2 rr, 3 crr |
//! | 5 | crr close order: 0 server closes first, 1 client closes, 2 client resets |
//! | 6..8 | zero |
//! | 8..12 | request size (stream: the client's write size), 1 B ..= 16 MiB |
//! | 12..16 | response size (stream: 0) |
//!
//! - rr: for every `request` bytes the server reads, it writes `response` bytes; until EOF.
//! - crr: one request and response, then the close order (server first: the client waits for
//!   `read() == 0` before its own close).
//! - stream: the server reads until EOF, then writes the number of bytes it read on the
//!   connection (header included) as a u64 and closes.
//! - cc: no header at all; a connection closed before a byte arrived is simply closed.
//!
//! UDP: every datagram starts with a 16-byte header: magic `FBU1`, kind (1 rr request, 2 stream
//! data, 3 report query, 4 report), 3 zero bytes, a u32 token (random per client flow), a u32
//! sequence. rr requests are echoed unchanged (datagrams are `max(size, 16)` bytes). A query
//! carries the first and one-past-last sequence of the window (u32 each); the report answers with
//! u64 counts for that range: unique received, duplicated, reordered, then every datagram
//! received for the token.
//!
//! A header that does not parse drops the connection (TCP) or the datagram (UDP); the server
//! keeps serving.

mod search;
mod server;
mod tcp;
mod udp;
mod window;
mod wire;

pub use server::{serve, Server, ServerHandle, ACCEPTORS};

use base64::Engine as _;
use hdrhistogram::serialization::Serializer as _;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};
use window::{jain, process_cpu, ErrorKind, FlowStats, Window};

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
    /// The highest rate with at most 0.1 % loss: an unpaced `udp_stream`, then a bisection over
    /// short paced ones (`search`; `rate_pps` is a starting hint, 0 for none). One flow.
    UdpMaxRate,
}

impl Test {
    /// The name used in specs, reports and the CLI (`tcp_rr`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Test::TcpStream => "tcp_stream",
            Test::TcpRr => "tcp_rr",
            Test::TcpCrr => "tcp_crr",
            Test::TcpCc => "tcp_cc",
            Test::UdpRr => "udp_rr",
            Test::UdpStream => "udp_stream",
            Test::UdpMaxRate => "udp_max_rate",
        }
    }
}

impl std::fmt::Display for Test {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
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
    /// Transactions / connections completed in the window; `tcp_stream`: writes of `size` bytes
    /// completed; `udp_stream`: unique datagrams sent in the window that the server received.
    pub completed: u64,
    /// Payload bytes in the window: acknowledged by the server (`tcp_stream`), received by the
    /// server (`udp_stream`), request + response (rr, crr).
    pub bytes: u64,
    /// Errors in the window by kind (`refused`, `timeout`, `reset`, `closed`, `addr_not_avail`,
    /// `other`); kinds that did not occur are absent.
    pub errors: BTreeMap<String, u64>,
    /// Metric name -> value (the names of `model::unit_of`: `throughput_gbps`, `retrans`,
    /// `fairness`, `tps`, `cps`, `lat_p50_us` .. `lat_p999_us`, `lat_mean_us`, `lat_max_us`,
    /// `connect_p50_us`, `connect_p90_us`, `connect_p99_us`, `loss_pct`, `reorder_pct`,
    /// `offered_pps`, `received_pps`, `errors`, `error_rate_pct`).
    pub metrics: BTreeMap<String, f64>,
    /// Per whole second of the window: completions (rr, crr, cc, udp_rr), Gbit/s acknowledged
    /// (`tcp_stream`), datagrams sent (`udp_stream`). The steady-state check.
    pub per_second: Vec<f64>,
    /// Transaction latency histogram (ns), HdrHistogram V2 serialised, base64.
    pub histogram: Option<String>,
    /// Samples in the latency histogram (equals `completed` for rr, crr, cc, udp_rr).
    pub samples: u64,
    /// Client CPU seconds (user + system) over the whole run, from rusage of the process (in
    /// `ferry bench-agent run`, the client alone).
    pub client_cpu_s: f64,
    /// Highest share of one client thread's time on CPU (0..1), from the barrier to the end of
    /// the cool-down: >= 0.95 means generator-bound.
    pub client_busiest_thread: f64,
    /// Connect latency histogram (`tcp_crr`, `tcp_cc`), like [`Outcome::histogram`].
    #[serde(default)]
    pub connect_histogram: Option<String>,
    /// Per flow, the amount the fairness index is computed from: completions, or bytes for
    /// `tcp_stream`, or datagrams received for `udp_stream`.
    #[serde(default)]
    pub per_flow: Vec<f64>,
    /// `udp_rr`: requests of the window whose reply did not come in time.
    #[serde(default)]
    pub lost: u64,
    /// `udp_stream`: the sequence accounting of the window.
    #[serde(default)]
    pub udp: Option<UdpCounts>,
    /// `tcp_stream`: bytes written by the client and read by the server over the whole run, for
    /// a byte-accounting check (equal when no connection broke).
    #[serde(default)]
    pub stream: Option<StreamCounts>,
}

/// `udp_stream` sequence accounting of the window (sums over flows).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UdpCounts {
    /// Datagrams sent in the window.
    pub sent: u64,
    /// Of those, received at least once by the server.
    pub received: u64,
    /// Of those, received more than once.
    pub dup: u64,
    /// Of those, received after a datagram with a higher sequence.
    pub reorder: u64,
}

/// `tcp_stream` byte accounting over the whole run (sums over flows).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamCounts {
    /// Bytes the client wrote (headers included).
    pub written: u64,
    /// Bytes the server reported having read on the connections that ended cleanly.
    pub server_read: u64,
}

/// Why a test could not run. Retrying helps only for [`Error::Connect`] and [`Error::NoReply`]
/// (the server may not be up yet).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec is not runnable; the message names the field.
    #[error("invalid spec: {0}")]
    Spec(String),
    /// A socket to the target could not be set up (refused, unreachable, timed out...).
    #[error("cannot reach the generator server at {target}")]
    Connect {
        /// The target.
        target: SocketAddr,
        /// What connect (or socket) said.
        #[source]
        source: io::Error,
    },
    /// No UDP answer to the preflight.
    #[error(
        "no UDP reply from {target} within {timeout_ms} ms: is `ferry bench-agent serve` running \
         there, and does UDP get through?"
    )]
    NoReply {
        /// The target.
        target: SocketAddr,
        /// How long it waited.
        timeout_ms: u64,
    },
    /// The server did not answer the `udp_stream` report query after the run.
    #[error("the server at {target} did not answer the udp_stream report query")]
    NoReport {
        /// The target.
        target: SocketAddr,
    },
    /// A flow thread panicked (a bug).
    #[error("a flow thread panicked")]
    Panicked,
    /// The latency histogram could not be serialised (a bug).
    #[error("serialising a latency histogram: {0}")]
    Histogram(String),
}

/// Checks that a spec can run; the error names the field.
pub fn validate(spec: &Spec) -> Result<(), Error> {
    let bad = |m: String| Err(Error::Spec(m));
    if !(1..=1024).contains(&spec.flows) {
        return bad(format!("flows must be 1..=1024, not {}", spec.flows));
    }
    if spec.test == Test::UdpMaxRate && spec.flows != 1 {
        return bad(format!("udp_max_rate runs one flow, not {}", spec.flows));
    }
    let max_size = match spec.test {
        Test::UdpRr | Test::UdpStream | Test::UdpMaxRate => 65_507,
        _ => wire::MAX_SIZE,
    };
    if !(1..=max_size).contains(&spec.size) {
        return bad(format!(
            "size must be 1..={max_size} bytes, not {}",
            spec.size
        ));
    }
    for (name, v, min) in [
        ("warmup_s", spec.warmup_s, 0.0),
        ("duration_s", spec.duration_s, f64::MIN_POSITIVE),
        ("cooldown_s", spec.cooldown_s, 0.0),
    ] {
        if !v.is_finite() || v < min || v > 86_400.0 {
            return bad(format!(
                "{name} must be a number of seconds in [{min}, 86400], not {v}"
            ));
        }
    }
    if !(1..=600_000).contains(&spec.timeout_ms) {
        return bad(format!(
            "timeout_ms must be 1..=600000, not {}",
            spec.timeout_ms
        ));
    }
    if spec.rate_pps > 1_000_000_000 {
        return bad(format!(
            "rate_pps must be at most 1e9, not {}",
            spec.rate_pps
        ));
    }
    Ok(())
}

/// Runs `spec` against a generator server and reports what happened in the window. Blocks for
/// warm-up + duration + cool-down (plus connection setup and, for `udp_stream`, the report).
///
/// Setup failures (nothing listening, no UDP answer) are errors; failures during the run are
/// counted in [`Outcome::errors`] and the flow carries on (reconnecting when its connection
/// broke).
pub fn run(spec: &Spec) -> Result<Outcome, Error> {
    validate(spec)?;
    if spec.test == Test::UdpMaxRate {
        return search::max_rate(spec, search::MAX_TRIALS);
    }
    let cpu0 = process_cpu();
    let timeout = Duration::from_millis(spec.timeout_ms);
    let n = spec.flows as usize;
    let connect_err = |source| Error::Connect {
        target: spec.target,
        source,
    };
    // Everything that can fail before the run is set up here, on the caller's thread (flow
    // threads inherit its network namespace).
    let mut tcp_conns = Vec::new();
    let mut udp_socks = Vec::new();
    match spec.test {
        Test::TcpRr | Test::TcpStream => {
            let nodelay = spec.test == Test::TcpRr;
            for _ in 0..n {
                tcp_conns.push(Some(
                    tcp::connect(spec.target, timeout, nodelay).map_err(connect_err)?,
                ));
            }
        }
        Test::TcpCrr | Test::TcpCc => {
            drop(tcp::connect(spec.target, timeout, true).map_err(connect_err)?);
            tcp_conns.resize_with(n, || None);
        }
        Test::UdpRr | Test::UdpStream | Test::UdpMaxRate => {
            udp::preflight(spec)?;
            for _ in 0..n {
                udp_socks.push(udp::socket(spec.target).map_err(connect_err)?);
            }
        }
    }

    let ready = Arc::new(Barrier::new(n + 1));
    let go = Arc::new(Barrier::new(n + 1));
    let clock: Arc<OnceLock<Window>> = Arc::new(OnceLock::new());
    let results: Vec<Result<FlowStats, Error>> = std::thread::scope(|sc| {
        let mut threads = Vec::new();
        let mut udp_socks = udp_socks.into_iter();
        for conn in tcp_conns
            .into_iter()
            .map(Some)
            .chain(std::iter::repeat_with(|| None))
            .take(n)
        {
            let sock = udp_socks.next();
            let (ready, go, clock) = (ready.clone(), go.clone(), clock.clone());
            threads.push(sc.spawn(move || {
                ready.wait();
                go.wait();
                let w = *clock.get().expect("the clock is set between the barriers");
                match sock {
                    Some(s) => udp::flow(spec, &w, &s),
                    None => Ok(tcp::flow(spec, &w, conn.flatten())),
                }
            }));
        }
        ready.wait();
        let w = Window::new(
            Instant::now(),
            Duration::from_secs_f64(spec.warmup_s),
            Duration::from_secs_f64(spec.duration_s),
            Duration::from_secs_f64(spec.cooldown_s),
        );
        let _ = clock.set(w);
        go.wait();
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or(Err(Error::Panicked)))
            .collect()
    });
    let flows = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    let w = *clock.get().expect("set before the flows ran");
    let cpu = process_cpu().saturating_sub(cpu0);
    outcome(spec, &w, &flows, cpu)
}

/// An HDR histogram, V2-serialised and base64-encoded (`None` when empty).
fn encode(h: &hdrhistogram::Histogram<u64>) -> Result<Option<String>, Error> {
    if h.is_empty() {
        return Ok(None);
    }
    let mut buf = Vec::new();
    hdrhistogram::serialization::V2Serializer::new()
        .serialize(h, &mut buf)
        .map_err(|e| Error::Histogram(format!("{e:?}")))?;
    Ok(Some(base64::engine::general_purpose::STANDARD.encode(buf)))
}

/// Microseconds of a nanosecond histogram value.
#[expect(
    clippy::cast_precision_loss,
    reason = "latencies in ns are far below 2^52"
)]
fn us(v: u64) -> f64 {
    v as f64 / 1000.0
}

/// The figures of a run from its flows' counters.
#[expect(
    clippy::cast_precision_loss,
    reason = "counts and bytes of one run are far below 2^52"
)]
fn outcome(spec: &Spec, w: &Window, flows: &[FlowStats], cpu: Duration) -> Result<Outcome, Error> {
    let mut t = FlowStats::new(w.seconds);
    for f in flows {
        t.merge(f);
    }
    let win = w.length_s();
    let rate = t.completed as f64 / win;
    let mut m = BTreeMap::new();
    let lat = |m: &mut BTreeMap<String, f64>,
               prefix: &str,
               h: &hdrhistogram::Histogram<u64>,
               all: bool| {
        if h.is_empty() {
            return;
        }
        let mut qs = vec![("p50", 0.5), ("p90", 0.9), ("p99", 0.99)];
        if all {
            qs.push(("p999", 0.999));
        }
        for (name, q) in qs {
            m.insert(format!("{prefix}_{name}_us"), us(h.value_at_quantile(q)));
        }
        if all {
            m.insert(format!("{prefix}_mean_us"), h.mean() / 1000.0);
            m.insert(format!("{prefix}_max_us"), us(h.max()));
        }
    };
    let per_flow: Vec<f64> = flows
        .iter()
        .map(|f| match spec.test {
            Test::TcpStream => f.bytes as f64,
            _ => f.completed as f64,
        })
        .collect();
    let per_second: Vec<f64> = match spec.test {
        Test::TcpStream => t.per_second.iter().map(|b| *b as f64 * 8.0 / 1e9).collect(),
        _ => t.per_second.iter().map(|c| *c as f64).collect(),
    };
    match spec.test {
        Test::TcpStream => {
            m.insert("throughput_gbps".into(), t.bytes as f64 * 8.0 / win / 1e9);
            m.insert("retrans".into(), t.retrans as f64);
        }
        Test::TcpRr | Test::UdpRr => {
            m.insert("tps".into(), rate);
            lat(&mut m, "lat", &t.latency, true);
        }
        Test::TcpCrr | Test::TcpCc => {
            m.insert("cps".into(), rate);
            lat(&mut m, "lat", &t.latency, true);
            lat(&mut m, "connect", &t.connect, false);
        }
        Test::UdpStream | Test::UdpMaxRate => {
            let x = t.extra;
            m.insert("offered_pps".into(), x.sent as f64 / win);
            m.insert("received_pps".into(), x.received as f64 / win);
            if x.sent > 0 {
                m.insert(
                    "loss_pct".into(),
                    100.0 * (1.0 - x.received.min(x.sent) as f64 / x.sent as f64),
                );
            }
            if x.received > 0 {
                m.insert(
                    "reorder_pct".into(),
                    100.0 * x.reorder as f64 / x.received as f64,
                );
            }
        }
    }
    if spec.test == Test::UdpRr && t.completed + t.lost > 0 {
        m.insert(
            "loss_pct".into(),
            100.0 * t.lost as f64 / (t.completed + t.lost) as f64,
        );
    }
    if let Some(j) = jain(&per_flow) {
        m.insert("fairness".into(), j);
    }
    let errors = t.error_total();
    m.insert("errors".into(), errors as f64);
    let attempts = t.completed + errors;
    m.insert(
        "error_rate_pct".into(),
        if attempts > 0 {
            100.0 * errors as f64 / attempts as f64
        } else {
            0.0
        },
    );
    let latency_test = spec.test != Test::TcpStream && spec.test != Test::UdpStream;
    Ok(Outcome {
        spec: Some(spec.clone()),
        window_s: win,
        completed: t.completed,
        bytes: t.bytes,
        errors: ErrorKind::ALL
            .iter()
            .zip(t.errors)
            .filter(|(_, c)| *c > 0)
            .map(|(k, c)| (k.name().to_string(), c))
            .collect(),
        metrics: m,
        per_second,
        histogram: if latency_test {
            encode(&t.latency)?
        } else {
            None
        },
        samples: if latency_test { t.latency.len() } else { 0 },
        client_cpu_s: cpu.as_secs_f64(),
        client_busiest_thread: t.busy,
        connect_histogram: encode(&t.connect)?,
        per_flow,
        lost: t.lost,
        udp: (spec.test == Test::UdpStream).then_some(UdpCounts {
            sent: t.extra.sent,
            received: t.extra.received,
            dup: t.extra.dup,
            reorder: t.extra.reorder,
        }),
        stream: (spec.test == Test::TcpStream).then_some(StreamCounts {
            written: t.extra.written,
            server_read: t.extra.server_read,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(test: Test) -> Spec {
        Spec {
            test,
            target: "127.0.0.1:7000".parse().unwrap(),
            flows: 2,
            size: 10,
            warmup_s: 1.0,
            duration_s: 2.0,
            cooldown_s: 0.5,
            close: Close::Server,
            rate_pps: 0,
            timeout_ms: 100,
        }
    }

    #[test]
    fn outcome_figures_from_flow_counters() {
        let s = spec(Test::UdpRr);
        let t0 = Instant::now();
        let w = Window::new(
            t0,
            Duration::from_secs(1),
            Duration::from_secs(2),
            Duration::from_millis(500),
        );
        let at = |ms| t0 + Duration::from_millis(ms);
        let (mut a, mut b) = (FlowStats::new(w.seconds), FlowStats::new(w.seconds));
        for ms in [1100, 1200, 2100] {
            a.complete(&w, at(ms), Duration::from_micros(20), 20);
        }
        a.complete(&w, at(500), Duration::from_micros(20), 20); // warm-up: not counted
        b.complete(&w, at(1500), Duration::from_micros(40), 20);
        b.lost(&w, at(1600));
        b.error(&w, at(1700), ErrorKind::Refused);
        let o = outcome(&s, &w, &[a, b], Duration::from_millis(3)).unwrap();
        assert_eq!(o.completed, 4);
        assert_eq!(o.bytes, 80);
        assert!((o.window_s - 2.0).abs() < 1e-9);
        assert_eq!(o.metrics["tps"], 2.0);
        assert_eq!(o.metrics["loss_pct"], 20.0, "1 lost of 5 settled requests");
        assert_eq!(o.metrics["errors"], 1.0);
        assert_eq!(o.metrics["error_rate_pct"], 20.0);
        assert!(
            (o.metrics["fairness"] - 0.8).abs() < 1e-12,
            "Jain of [3, 1]"
        );
        assert_eq!(o.errors, [("refused".to_string(), 1)].into());
        assert_eq!(o.per_second, vec![3.0, 1.0]);
        assert_eq!(o.per_flow, vec![3.0, 1.0]);
        assert_eq!(o.samples, 4);
        assert!(o.metrics["lat_p50_us"] >= 19.9 && o.metrics["lat_max_us"] <= 40.1);
        assert_eq!(o.lost, 1);
        assert!(o.connect_histogram.is_none());
        // The histogram survives the encoding.
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(o.histogram.as_deref().unwrap())
            .unwrap();
        let h: hdrhistogram::Histogram<u64> = hdrhistogram::serialization::Deserializer::new()
            .deserialize(&mut &bytes[..])
            .unwrap();
        assert_eq!(h.len(), 4);
        // And the outcome through JSON.
        let back: Outcome = serde_json::from_str(&serde_json::to_string(&o).unwrap()).unwrap();
        assert_eq!(back, o);
    }

    #[test]
    fn validation_names_the_field() {
        let ok = spec(Test::TcpRr);
        assert!(validate(&ok).is_ok());
        let mut s = spec(Test::UdpRr);
        s.size = 70_000;
        let e = validate(&s).unwrap_err().to_string();
        assert!(e.contains("size must be 1..=65507"), "{e}");
        let mut s = ok.clone();
        s.cooldown_s = -1.0;
        assert!(validate(&s).unwrap_err().to_string().contains("cooldown_s"));
        let mut s = ok;
        s.rate_pps = u64::MAX;
        assert!(validate(&s).unwrap_err().to_string().contains("rate_pps"));
    }
}
