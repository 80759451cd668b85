//! Prometheus metrics: the agent's counters in the text exposition format 0.0.4, served over
//! plain HTTP on `--metrics-address` (default `127.0.0.1:9465`; the agent runs in the node's
//! network namespace, so that is the node's loopback).
//!
//! ```text
//! GET /metrics  ─► 200 text/plain; version=0.0.4   (HEAD: headers only)
//! GET /healthz  ─► 200 ok
//! other path    ─► 404      other method ─► 405      bad or oversized head ─► 400 / 431
//! ```
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `ferry_agent_info` | gauge (1) | `backend`, `node`, `version` |
//! | `ferry_agent_peers` | gauge | `state`: `programmed`, `skipped` |
//! | `ferry_agent_reconcile_total` | counter | |
//! | `ferry_agent_reconcile_errors_total` | counter | |
//! | `ferry_udp_{tx,rx}_{packets,bytes}_total` | counter | |
//! | `ferry_udp_dropped_packets_total` | counter | `reason`: `no_route`, `rejected`, `error` |
//! | `ferry_udp_device_dropped_packets_total` | counter | `direction`: `tx`, `rx` |
//! | `ferry_service_proxy_info` | gauge (1) | `mode`: `ebpf`, `iptables`, `off`, `none` |
//! | `ferry_services` | gauge | Services (namespace/name) in the service table |
//! | `ferry_service_frontends` | gauge | frontends (address, port, protocol) programmed |
//! | `ferry_service_backends` | gauge | backends summed over frontends |
//! | `ferry_service_skipped` | gauge | objects (or parts) left out of the table as unusable |
//! | `ferry_service_frontends_failed` | gauge | frontends the last sync could not program (map full, map error) |
//! | `ferry_service_sync_total`, `ferry_service_sync_errors_total` | counter | proxier syncs, failed ones |
//! | `ferry_service_datapath_events_total` | counter | eBPF: `event`: `connect4_calls`, `connect4_rewrites`, `sendmsg4_calls`, `sendmsg4_rewrites`, `refused`, `revnat_recvmsg`, `revnat_getpeername`, `affinity_hits`; the tc datapath for external traffic (`--external-datapath`): `new_flows`, `ct_original`, `ct_reply`, `redirected`, `fib_pass`, `pass_fragment`, `pass_malformed`, `superseded` and its drops by reason `drop_no_backend`, `drop_ct_full`, `drop_nat_ports`, `drop_no_slot`, `drop_rewrite`, `drop_collision`, and the NAT port choices `nat_port_kept`, `nat_port_node_socket`, `nat_port_in_time_wait`, `superseded_by_node`; the opt-in XDP program (`--external-xdp`): `xdp_tx`, `xdp_pass_partial_csum`, `xdp_pass_route`, `xdp_pass_neigh` |
//! | `ferry_service_datapath_errors_total` | counter | eBPF: `reason`: `no_slot`, `no_backend`, `revnat_update`, `affinity_update` |
//! | `ferry_service_map_entries`, `ferry_service_map_capacity` | gauge | eBPF: `map`: pin name (entries only for the service and backend maps: the LRU maps are not counted); `FERRY_NP4_CT`: conntrack fill as of the last GC) |
//! | `ferry_service_sync_duration_seconds` | histogram | table computation + proxier sync |
//! | `ferry_service_programming_latency_seconds` | histogram | from the first unprocessed Service / EndpointSlice / Node event to the datapath holding it |
//!
//! The eBPF datapath families are read after each Service sync (at least every
//! `--resync-seconds`), not at each scrape: they lag by at most one resync interval.
//!
//! The udp families appear once the udp datapath has started; the device family is the kernel's
//! `IFLA_STATS64` of `ferry.udp`, read over rtnetlink at each scrape (not `/sys`, which shows the
//! root namespace's devices to a process that only `setns`'d into the node). The device outlives
//! the agent, so its drops include those of the window when no agent was attached; the datapath
//! counters restart at 0 with the process (Prometheus handles counter resets).
//!
//! The server is the agent's small bounded HTTP/1.x responder ([`crate::http`]): two fixed
//! `GET`s, a bounded request head, one request per connection.

use crate::http;
use crate::netlink::Netlink;
use crate::overlay::udp::{self, Stats};
use crate::service::DatapathStats;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// Connections served at once (more wait in the listen backlog).
const MAX_CONNECTIONS: usize = 8;
/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The agent's live counters, shared between the reconcile loop (which sets them) and the
/// metrics server (which reads them at each scrape).
#[derive(Debug)]
pub struct Metrics {
    backend: &'static str,
    node: String,
    peers_programmed: AtomicU64,
    peers_skipped: AtomicU64,
    reconcile: AtomicU64,
    reconcile_errors: AtomicU64,
    udp: Mutex<UdpSource>,
    services: Mutex<Option<ServiceStats>>,
    /// The pod fast path's counters (written by its thread), once loaded.
    fast_path: crate::fastpath::SharedStats,
}

/// Upper bounds (seconds) of the service histograms' buckets.
pub const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A Prometheus histogram over [`BUCKETS`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative; the last one is `+Inf`).
    pub counts: [u64; BUCKETS.len() + 1],
    /// Sum of the observations.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// Records `v` seconds.
    pub fn observe(&mut self, v: f64) {
        let i = BUCKETS
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }
}

/// The Service proxy's numbers (present once the service reconciler runs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceStats {
    /// The proxier's mode name (`none` while no proxier runs).
    pub mode: &'static str,
    /// Services in the table.
    pub services: u64,
    /// Frontends in the table.
    pub frontends: u64,
    /// Backends summed over frontends.
    pub backends: u64,
    /// Skipped objects.
    pub skipped: u64,
    /// Syncs run.
    pub syncs: u64,
    /// Syncs failed.
    pub sync_errors: u64,
    /// Duration of each round (compute + sync).
    pub sync_seconds: Histogram,
    /// Event-to-datapath latency.
    pub latency: Histogram,
    /// Frontends the last sync could not program (map full, map error).
    pub failed_frontends: u64,
    /// The datapath's counters and map fill after the last sync (eBPF only).
    pub datapath: Option<DatapathStats>,
}

/// The running datapath's counters, plus the final counts of datapaths this process replaced
/// (so the exported counters only reset with the process).
#[derive(Debug, Default)]
struct UdpSource {
    base: UdpCounters,
    current: Option<Arc<Stats>>,
}

/// Plain values of [`udp::Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpCounters {
    /// Packets read from the TUN device and sent to a peer.
    pub tx_packets: u64,
    /// Their bytes (inner IPv4 packets).
    pub tx_bytes: u64,
    /// Packets received from peers and written to the TUN device.
    pub rx_packets: u64,
    /// Their bytes (inner IPv4 packets).
    pub rx_bytes: u64,
    /// Dropped: no peer for the destination, or not IPv4.
    pub no_route: u64,
    /// Dropped: unknown sender, foreign inner source, or not for our podCIDR.
    pub rejected: u64,
    /// Dropped: send or TUN write failure.
    pub errors: u64,
}

impl UdpCounters {
    /// Reads every counter of `s`.
    pub fn load(s: &Stats) -> UdpCounters {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        UdpCounters {
            tx_packets: l(&s.tx),
            tx_bytes: l(&s.tx_bytes),
            rx_packets: l(&s.rx),
            rx_bytes: l(&s.rx_bytes),
            no_route: l(&s.no_route),
            rejected: l(&s.rejected),
            errors: l(&s.errors),
        }
    }

    fn add(self, o: UdpCounters) -> UdpCounters {
        UdpCounters {
            tx_packets: self.tx_packets + o.tx_packets,
            tx_bytes: self.tx_bytes + o.tx_bytes,
            rx_packets: self.rx_packets + o.rx_packets,
            rx_bytes: self.rx_bytes + o.rx_bytes,
            no_route: self.no_route + o.no_route,
            rejected: self.rejected + o.rejected,
            errors: self.errors + o.errors,
        }
    }
}

/// Kernel drop counters of the TUN device (`IFLA_STATS64`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceDrops {
    /// Routed into the device but not taken by a queue (no agent attached, or a full queue).
    pub tx: u64,
    /// Written by the agent but dropped by the kernel.
    pub rx: u64,
}

/// Everything one scrape renders.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// `--backend`.
    pub backend: String,
    /// `--node-name`.
    pub node: String,
    /// The agent's version.
    pub version: String,
    /// Peers with routes / entries in the desired state.
    pub peers_programmed: u64,
    /// Peers that get nothing.
    pub peers_skipped: u64,
    /// Reconciliation rounds.
    pub reconcile: u64,
    /// Rounds with a failed step.
    pub reconcile_errors: u64,
    /// udp datapath counters, once it started.
    pub udp: Option<UdpCounters>,
    /// Kernel drops of `ferry.udp`, when it could be read.
    pub device: Option<DeviceDrops>,
    /// Service proxy numbers, once the service reconciler runs.
    pub services: Option<ServiceStats>,
    /// The pod fast path's counters ([`ferry_common::fastpath::FastPathStat`] order), once
    /// loaded.
    pub fast_path: Option<[u64; ferry_common::fastpath::FastPathStat::COUNT as usize]>,
}

impl Metrics {
    /// Counters at zero for the agent of `node` running the backend named `backend` (its
    /// `--backend` value, e.g. `vxlan`).
    pub fn new(node: &str, backend: &'static str) -> Arc<Metrics> {
        Arc::new(Metrics {
            backend,
            node: node.to_owned(),
            peers_programmed: AtomicU64::new(0),
            peers_skipped: AtomicU64::new(0),
            reconcile: AtomicU64::new(0),
            reconcile_errors: AtomicU64::new(0),
            udp: Mutex::new(UdpSource::default()),
            services: Mutex::new(None),
            fast_path: Arc::default(),
        })
    }

    /// Updates the Service proxy's numbers (creating them at the first call).
    pub fn update_services(&self, f: impl FnOnce(&mut ServiceStats)) {
        let mut s = self.services.lock().unwrap_or_else(|e| e.into_inner());
        f(s.get_or_insert_with(|| ServiceStats {
            mode: "none",
            ..ServiceStats::default()
        }));
    }

    /// Where the pod fast path's thread leaves its counters.
    pub fn fast_path_stats(&self) -> crate::fastpath::SharedStats {
        self.fast_path.clone()
    }

    /// Records one reconciliation round: its peer counts, and whether a step failed.
    pub fn record_round(&self, programmed: usize, skipped: usize, failed: bool) {
        self.peers_programmed
            .store(programmed as u64, Ordering::Relaxed);
        self.peers_skipped.store(skipped as u64, Ordering::Relaxed);
        self.reconcile.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.reconcile_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The udp datapath's counters (a new datapath: the previous one's final counts are kept).
    pub fn set_udp(&self, stats: Arc<Stats>) {
        let mut u = self.udp.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = u.current.take() {
            if !Arc::ptr_eq(&old, &stats) {
                u.base = u.base.add(UdpCounters::load(&old));
            }
        }
        u.current = Some(stats);
    }

    /// The current values (without the device counters, see [`device_drops`]).
    pub fn snapshot(&self) -> Snapshot {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let u = self.udp.lock().unwrap_or_else(|e| e.into_inner());
        Snapshot {
            backend: self.backend.to_owned(),
            node: self.node.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            peers_programmed: l(&self.peers_programmed),
            peers_skipped: l(&self.peers_skipped),
            reconcile: l(&self.reconcile),
            reconcile_errors: l(&self.reconcile_errors),
            udp: u.current.as_ref().map(|s| u.base.add(UdpCounters::load(s))),
            device: None,
            services: self
                .services
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            fast_path: *self.fast_path.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }
}

/// The kernel's drop counters of [`udp::DEVICE`] in this network namespace (blocking netlink
/// round trip); `None` when the device is absent or netlink fails.
pub fn device_drops() -> Option<DeviceDrops> {
    let stats = Netlink::new().ok()?.link_stats(udp::DEVICE).ok()??;
    Some(DeviceDrops {
        tx: stats.tx_dropped,
        rx: stats.rx_dropped,
    })
}

/// A label value with `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// Renders `s` in the text exposition format 0.0.4.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let plain = |v: u64| [(String::new(), v)];
    let info = format!(
        "{{backend=\"{}\",node=\"{}\",version=\"{}\"}}",
        label(&s.backend),
        label(&s.node),
        label(&s.version)
    );
    family(
        "ferry_agent_info",
        "gauge",
        "The running agent: overlay backend, node name and version (always 1).",
        &[(info, 1)],
    );
    family(
        "ferry_agent_peers",
        "gauge",
        "Peer nodes programmed into the overlay, and skipped ones (no address, podCIDR or matching backend).",
        &[
            ("{state=\"programmed\"}".into(), s.peers_programmed),
            ("{state=\"skipped\"}".into(), s.peers_skipped),
        ],
    );
    family(
        "ferry_agent_reconcile_total",
        "counter",
        "Reconciliation rounds run.",
        &plain(s.reconcile),
    );
    family(
        "ferry_agent_reconcile_errors_total",
        "counter",
        "Reconciliation rounds in which a step failed.",
        &plain(s.reconcile_errors),
    );
    if let Some(u) = &s.udp {
        for (name, help, v) in [
            (
                "ferry_udp_tx_packets_total",
                "Packets read from ferry.udp and sent to a peer.",
                u.tx_packets,
            ),
            (
                "ferry_udp_tx_bytes_total",
                "Bytes (inner IPv4 packets) read from ferry.udp and sent to a peer.",
                u.tx_bytes,
            ),
            (
                "ferry_udp_rx_packets_total",
                "Packets received from peers and written to ferry.udp.",
                u.rx_packets,
            ),
            (
                "ferry_udp_rx_bytes_total",
                "Bytes (inner IPv4 packets) received from peers and written to ferry.udp.",
                u.rx_bytes,
            ),
        ] {
            family(name, "counter", help, &plain(v));
        }
        family(
            "ferry_udp_dropped_packets_total",
            "counter",
            "Packets the udp datapath dropped: no_route (no peer for the destination, or not IPv4), rejected (unknown sender, foreign inner source or not for our podCIDR), error (send or TUN write failure).",
            &[
                ("{reason=\"no_route\"}".into(), u.no_route),
                ("{reason=\"rejected\"}".into(), u.rejected),
                ("{reason=\"error\"}".into(), u.errors),
            ],
        );
    }
    if let Some(d) = &s.device {
        family(
            "ferry_udp_device_dropped_packets_total",
            "counter",
            "Kernel drops on the TUN device ferry.udp: tx (routed into it but taken by no agent queue), rx (written by the agent, dropped by the kernel).",
            &[
                ("{direction=\"tx\"}".into(), d.tx),
                ("{direction=\"rx\"}".into(), d.rx),
            ],
        );
    }
    if let Some(fp) = &s.fast_path {
        let samples: Vec<_> = ferry_common::fastpath::FastPathStat::ALL
            .iter()
            .map(|st| {
                (
                    format!("{{result=\"{}\"}}", st.name()),
                    fp[st.index() as usize],
                )
            })
            .collect();
        family(
            "ferry_pod_fastpath_packets_total",
            "counter",
            "Packets of the pod fast path (tc, bpf_redirect_peer and bpf_redirect_neigh): pod_redirects and node_redirects handed straight to a pod, route_redirects sent straight to another node; pass_ttl, pass_too_big, pass_foreign, route_pass left to the stack.",
            &samples,
        );
    }
    if let Some(svc) = &s.services {
        render_services(&mut out, svc);
    }
    out
}

fn render_histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let mut cumulative = 0;
    for (le, n) in BUCKETS.iter().zip(h.counts) {
        cumulative += n;
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum {}", h.sum);
    let _ = writeln!(out, "{name}_count {}", h.count);
}

fn render_services(out: &mut String, s: &ServiceStats) {
    let _ = writeln!(
        out,
        "# HELP ferry_service_proxy_info The Service proxier running (always 1).\n# TYPE ferry_service_proxy_info gauge\nferry_service_proxy_info{{mode=\"{}\"}} 1",
        label(s.mode)
    );
    for (name, kind, help, v) in [
        (
            "ferry_services",
            "gauge",
            "Services (namespace/name) in the service table.",
            s.services,
        ),
        (
            "ferry_service_frontends",
            "gauge",
            "Service frontends (address, port, protocol) in the service table.",
            s.frontends,
        ),
        (
            "ferry_service_backends",
            "gauge",
            "Backends summed over the service table's frontends.",
            s.backends,
        ),
        (
            "ferry_service_skipped",
            "gauge",
            "Services, EndpointSlices or parts of them left out of the service table as unusable.",
            s.skipped,
        ),
        (
            "ferry_service_frontends_failed",
            "gauge",
            "Service frontends the last sync could not program (e.g. a full map); the others are served.",
            s.failed_frontends,
        ),
        (
            "ferry_service_sync_total",
            "counter",
            "Service proxier syncs run.",
            s.syncs,
        ),
        (
            "ferry_service_sync_errors_total",
            "counter",
            "Service proxier syncs that failed (the previous datapath stays).",
            s.sync_errors,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }
    if let Some(dp) = &s.datapath {
        render_datapath(out, dp);
    }
    render_histogram(
        out,
        "ferry_service_sync_duration_seconds",
        "Duration of a Service round: table computation and proxier sync.",
        &s.sync_seconds,
    );
    render_histogram(
        out,
        "ferry_service_programming_latency_seconds",
        "Time from the first unprocessed Service, EndpointSlice or Node event to the datapath holding the change.",
        &s.latency,
    );
}

/// The eBPF datapath's counters (`err_*` as errors by reason, the rest as events) and map fill.
fn render_datapath(out: &mut String, dp: &DatapathStats) {
    let (errors, events): (Vec<_>, Vec<_>) = dp
        .counters
        .iter()
        .partition(|(name, _)| name.starts_with("err_"));
    let mut family = |name: &str, kind: &str, help: &str, rows: &[(String, u64)]| {
        if rows.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let rows = |v: &[&(&str, u64)], key: &str, strip: &str| -> Vec<(String, u64)> {
        v.iter()
            .map(|(n, c)| {
                let n = n.strip_prefix(strip).unwrap_or(n);
                (format!("{{{key}=\"{}\"}}", label(n)), *c)
            })
            .collect()
    };
    family(
        "ferry_service_datapath_events_total",
        "counter",
        "Socket load balancer events counted by the eBPF programs, summed over CPUs (read after each sync).",
        &rows(&events, "event", ""),
    );
    family(
        "ferry_service_datapath_errors_total",
        "counter",
        "Socket load balancer errors by reason, counted by the eBPF programs, summed over CPUs (read after each sync).",
        &rows(&errors, "reason", "err_"),
    );
    let entries: Vec<(String, u64)> = dp
        .maps
        .iter()
        .filter_map(|m| Some((format!("{{map=\"{}\"}}", label(m.map)), m.entries?)))
        .collect();
    family(
        "ferry_service_map_entries",
        "gauge",
        "Entries the agent wrote into a datapath map (the LRU maps, written by the programs, are not counted).",
        &entries,
    );
    let capacity: Vec<(String, u64)> = dp
        .maps
        .iter()
        .map(|m| (format!("{{map=\"{}\"}}", label(m.map)), m.capacity))
        .collect();
    family(
        "ferry_service_map_capacity",
        "gauge",
        "Maximum entries of a datapath map.",
        &capacity,
    );
}

/// Serves `/metrics` and `/healthz` on `addr` in the background (nothing when `None`) and
/// returns the address listened on. If the address cannot be bound yet (e.g. `EADDRINUSE` while
/// the previous agent's threads are still exiting after a restart), that is logged, `None` is
/// returned and binding is retried every second in the background until it works: the agent never
/// runs for good without metrics. Must be called inside a tokio runtime.
pub fn spawn(addr: Option<SocketAddr>, metrics: Arc<Metrics>) -> Option<SocketAddr> {
    let addr = addr?;
    match bind(addr) {
        Ok(l) => Some(serve(l, metrics)),
        Err(e) => {
            tracing::error!(
                address = %addr, error = %e,
                "cannot listen for metrics (--metrics-address); retrying every second"
            );
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    if let Ok(l) = bind(addr) {
                        serve(l, metrics);
                        return;
                    }
                }
            });
            None
        }
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    TcpListener::from_std(l)
}

/// Starts serving on `l`; returns its address.
fn serve(l: TcpListener, metrics: Arc<Metrics>) -> SocketAddr {
    let local = l
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    tracing::info!(address = %local, "serving metrics on /metrics");
    tokio::spawn(http::serve(l, MAX_CONNECTIONS, "metrics", move |req| {
        let m = metrics.clone();
        async move { respond(&req, &m).await }
    }));
    local
}

/// The response to a request.
async fn respond(req: &http::Request, metrics: &Metrics) -> Vec<u8> {
    let (method, path) = (req.method.as_str(), req.path.as_str());
    let body = method == "GET";
    if !matches!(path, "/metrics" | "/healthz") {
        return reply(404, "text/plain", "not found\n", true);
    }
    if !(body || method == "HEAD") {
        return reply(405, "text/plain", "method not allowed\n", true);
    }
    if path == "/healthz" {
        return reply(200, "text/plain", "ok", body);
    }
    let mut snap = metrics.snapshot();
    if snap.udp.is_some() {
        snap.device = tokio::task::spawn_blocking(device_drops)
            .await
            .ok()
            .flatten();
    }
    reply(200, CONTENT_TYPE, &render(&snap), body)
}

fn reply(code: u16, content_type: &str, body: &str, with_body: bool) -> Vec<u8> {
    http::reply(code, content_type, &[], body, with_body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::tests::request;

    fn snapshot() -> Snapshot {
        Snapshot {
            backend: "udp".into(),
            node: "node-\"a\"".into(),
            version: "0.1.0".into(),
            peers_programmed: 2,
            peers_skipped: 1,
            reconcile: 17,
            reconcile_errors: 3,
            udp: Some(UdpCounters {
                tx_packets: 10,
                tx_bytes: 1000,
                rx_packets: 20,
                rx_bytes: 2000,
                no_route: 4,
                rejected: 5,
                errors: 6,
            }),
            device: Some(DeviceDrops { tx: 7, rx: 8 }),
            services: None,
            fast_path: None,
        }
    }

    #[test]
    fn renders_service_families() {
        let m = Metrics::new("n", "vxlan");
        assert!(!render(&m.snapshot()).contains("ferry_service"));
        m.update_services(|s| {
            s.mode = "iptables";
            s.services = 2;
            s.frontends = 3;
            s.backends = 4;
            s.syncs = 1;
            s.sync_seconds.observe(0.003);
            s.latency.observe(7.0);
        });
        let text = render(&m.snapshot());
        for line in [
            "ferry_service_proxy_info{mode=\"iptables\"} 1\n",
            "ferry_services 2\n",
            "ferry_service_frontends 3\n",
            "ferry_service_backends 4\n",
            "ferry_service_sync_total 1\n",
            "ferry_service_sync_errors_total 0\n",
            "# TYPE ferry_service_sync_duration_seconds histogram\n",
            "ferry_service_sync_duration_seconds_bucket{le=\"0.0025\"} 0\n",
            "ferry_service_sync_duration_seconds_bucket{le=\"0.005\"} 1\n",
            "ferry_service_sync_duration_seconds_count 1\n",
            "ferry_service_programming_latency_seconds_bucket{le=\"5\"} 0\n",
            "ferry_service_programming_latency_seconds_bucket{le=\"+Inf\"} 1\n",
            "ferry_service_programming_latency_seconds_sum 7\n",
            "ferry_service_frontends_failed 0\n",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        assert!(!text.contains("ferry_service_datapath"), "{text}");
        assert!(!text.contains("ferry_service_map_"), "{text}");
    }

    #[test]
    fn renders_datapath_counters_and_map_fill() {
        use crate::service::MapFill;
        let m = Metrics::new("n", "vxlan");
        m.update_services(|s| {
            s.mode = "ebpf";
            s.failed_frontends = 2;
            s.datapath = Some(DatapathStats {
                counters: vec![("connect4_rewrites", 5), ("refused", 1), ("err_no_slot", 3)],
                maps: vec![
                    MapFill {
                        map: "FERRY_LB4_BE",
                        entries: Some(7),
                        capacity: 262_144,
                    },
                    MapFill {
                        map: "FERRY_LB4_RNAT",
                        entries: None,
                        capacity: 65_536,
                    },
                ],
            });
        });
        let text = render(&m.snapshot());
        for line in [
            "ferry_service_frontends_failed 2\n",
            "# TYPE ferry_service_datapath_events_total counter\n",
            "ferry_service_datapath_events_total{event=\"connect4_rewrites\"} 5\n",
            "ferry_service_datapath_events_total{event=\"refused\"} 1\n",
            "# TYPE ferry_service_datapath_errors_total counter\n",
            "ferry_service_datapath_errors_total{reason=\"no_slot\"} 3\n",
            "# TYPE ferry_service_map_entries gauge\n",
            "ferry_service_map_entries{map=\"FERRY_LB4_BE\"} 7\n",
            "ferry_service_map_capacity{map=\"FERRY_LB4_BE\"} 262144\n",
            "ferry_service_map_capacity{map=\"FERRY_LB4_RNAT\"} 65536\n",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        assert!(!text.contains("event=\"err_no_slot\""), "{text}");
        assert!(
            !text.contains("ferry_service_map_entries{map=\"FERRY_LB4_RNAT\"}"),
            "{text}"
        );
        // Each family's HELP/TYPE appears once.
        assert_eq!(text.matches("# TYPE ferry_service_map_capacity").count(), 1);
    }

    #[test]
    fn renders_the_text_format() {
        let want = r#"# HELP ferry_agent_info The running agent: overlay backend, node name and version (always 1).
# TYPE ferry_agent_info gauge
ferry_agent_info{backend="udp",node="node-\"a\"",version="0.1.0"} 1
# HELP ferry_agent_peers Peer nodes programmed into the overlay, and skipped ones (no address, podCIDR or matching backend).
# TYPE ferry_agent_peers gauge
ferry_agent_peers{state="programmed"} 2
ferry_agent_peers{state="skipped"} 1
# HELP ferry_agent_reconcile_total Reconciliation rounds run.
# TYPE ferry_agent_reconcile_total counter
ferry_agent_reconcile_total 17
# HELP ferry_agent_reconcile_errors_total Reconciliation rounds in which a step failed.
# TYPE ferry_agent_reconcile_errors_total counter
ferry_agent_reconcile_errors_total 3
# HELP ferry_udp_tx_packets_total Packets read from ferry.udp and sent to a peer.
# TYPE ferry_udp_tx_packets_total counter
ferry_udp_tx_packets_total 10
# HELP ferry_udp_tx_bytes_total Bytes (inner IPv4 packets) read from ferry.udp and sent to a peer.
# TYPE ferry_udp_tx_bytes_total counter
ferry_udp_tx_bytes_total 1000
# HELP ferry_udp_rx_packets_total Packets received from peers and written to ferry.udp.
# TYPE ferry_udp_rx_packets_total counter
ferry_udp_rx_packets_total 20
# HELP ferry_udp_rx_bytes_total Bytes (inner IPv4 packets) received from peers and written to ferry.udp.
# TYPE ferry_udp_rx_bytes_total counter
ferry_udp_rx_bytes_total 2000
# HELP ferry_udp_dropped_packets_total Packets the udp datapath dropped: no_route (no peer for the destination, or not IPv4), rejected (unknown sender, foreign inner source or not for our podCIDR), error (send or TUN write failure).
# TYPE ferry_udp_dropped_packets_total counter
ferry_udp_dropped_packets_total{reason="no_route"} 4
ferry_udp_dropped_packets_total{reason="rejected"} 5
ferry_udp_dropped_packets_total{reason="error"} 6
# HELP ferry_udp_device_dropped_packets_total Kernel drops on the TUN device ferry.udp: tx (routed into it but taken by no agent queue), rx (written by the agent, dropped by the kernel).
# TYPE ferry_udp_device_dropped_packets_total counter
ferry_udp_device_dropped_packets_total{direction="tx"} 7
ferry_udp_device_dropped_packets_total{direction="rx"} 8
"#;
        assert_eq!(render(&snapshot()), want);
    }

    #[test]
    fn renders_fast_path_counters() {
        let s = Snapshot {
            fast_path: Some([5, 6, 1, 2, 3, 8, 9]),
            ..snapshot()
        };
        let text = render(&s);
        assert!(
            text.contains("ferry_pod_fastpath_packets_total{result=\"pod_redirects\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("ferry_pod_fastpath_packets_total{result=\"pass_foreign\"} 3\n")
                && text.contains("ferry_pod_fastpath_packets_total{result=\"route_pass\"} 9\n"),
            "{text}"
        );
        assert!(!render(&snapshot()).contains("fastpath"));
    }

    #[test]
    fn without_udp_only_agent_families() {
        let s = Snapshot {
            udp: None,
            device: None,
            ..snapshot()
        };
        let text = render(&s);
        assert!(
            text.ends_with("ferry_agent_reconcile_errors_total 3\n"),
            "{text}"
        );
        assert!(!text.contains("ferry_udp"), "{text}");
    }

    #[test]
    fn udp_counters_survive_a_datapath_restart() {
        let m = Metrics::new("n", "udp");
        let first = Arc::new(Stats::default());
        first.tx.store(5, Ordering::Relaxed);
        first.rx_bytes.store(100, Ordering::Relaxed);
        m.set_udp(first.clone());
        m.set_udp(first.clone());
        assert_eq!(m.snapshot().udp.unwrap().tx_packets, 5, "same Arc twice");
        let second = Arc::new(Stats::default());
        second.tx.store(2, Ordering::Relaxed);
        m.set_udp(second);
        let u = m.snapshot().udp.unwrap();
        assert_eq!((u.tx_packets, u.rx_bytes), (7, 100));
        m.record_round(5, 0, true);
        m.record_round(3, 1, false);
        let s = m.snapshot();
        assert_eq!(
            (
                s.peers_programmed,
                s.peers_skipped,
                s.reconcile,
                s.reconcile_errors
            ),
            (3, 1, 2, 1)
        );
        assert_eq!((s.backend.as_str(), s.node.as_str()), ("udp", "n"));
    }

    #[tokio::test]
    async fn binds_once_the_address_is_free() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let m = Metrics::new("node-x", "vxlan");
        assert_eq!(spawn(Some(addr), m), None);
        drop(held);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            if let Ok(mut c) = tokio::net::TcpStream::connect(addr).await {
                use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                c.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").await.unwrap();
                let mut r = String::new();
                c.read_to_string(&mut r).await.unwrap();
                assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never served after the port was freed"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    #[tokio::test]
    async fn serves_metrics_healthz_and_errors_on_loopback() {
        let m = Metrics::new("node-x", "vxlan");
        m.record_round(0, 0, false);
        let addr = spawn(Some("127.0.0.1:0".parse().unwrap()), m.clone()).unwrap();
        // A second server on the same address fails to bind, without panicking (and retries in
        // the background).
        assert_eq!(spawn(Some(addr), m.clone()), None);
        let r = request(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(
            r.contains(&format!("Content-Type: {CONTENT_TYPE}\r\n")),
            "{r}"
        );
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{r}"
        );
        assert!(body.contains("ferry_agent_reconcile_total 1\n"), "{body}");
        assert!(body.contains("backend=\"vxlan\",node=\"node-x\""), "{body}");
        let r = request(addr, b"GET /healthz?verbose HTTP/1.0\r\n\r\n").await;
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\nok"),
            "{r}"
        );
        let r = request(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n").await;
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\n"),
            "{r}"
        );
        let r = request(addr, b"GET /nope HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
        let r = request(
            addr,
            b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        )
        .await;
        assert!(
            r.starts_with("HTTP/1.1 405 ") && r.contains("Allow: GET, HEAD"),
            "{r}"
        );
        let r = request(addr, b"garbage\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
        let mut big = b"GET /metrics HTTP/1.1\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'a', 2 * http::MAX_HEAD));
        let r = request(addr, &big).await;
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
        // A client that sends half a head and closes gets nothing, and the server goes on.
        request(addr, b"GET /met").await;
        let r = request(addr, b"GET /healthz HTTP/1.1\r\n\r\n").await;
        assert!(r.ends_with("ok"), "{r}");
    }
}
