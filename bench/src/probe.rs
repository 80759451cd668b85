//! The prober of the Service sweep (`ferry bench-agent probe`): from inside a client pod, it
//! connects to one address every `interval_ms` (1 ms by default) until a change made through the
//! apiserver is visible there: the address accepts (`Reachable`: a new Service's backend is
//! programmed) or refuses (`Refused`: its last endpoint is gone).
//!
//! Each attempt is a non-blocking `connect` on its own socket, so a slow or lost attempt (a SYN to a
//! VIP nothing translates yet) never delays the next; attempts still pending after `timeout_ms` are
//! dropped. Each attempt binds a random source port below the kernel's ephemeral range
//! ([`SourcePorts`]: the conntrack entries of untranslated early SYNs never meet the load
//! generator's connections). Pending sockets are checked every 100 µs (`SO_ERROR`, then `getpeername`), so the
//! moment a change is seen is known to about the interval. Times are `CLOCK_MONOTONIC`
//! nanoseconds ([`ferry_sys::clock::monotonic_ns`]), one clock for every namespace of the machine:
//! the parent passes the instant it measures from (its API write) as
//! [`ProbeSpec::started_mono_ns`], and the outcome also carries absolute instants so the parent can
//! measure from a write it made after starting the prober.

use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What the prober waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// A connect completes (the handshake finished).
    Reachable,
    /// A connect fails with `ECONNREFUSED` (an RST or ICMP port unreachable, or the socket LB's
    /// refusal of a Service without endpoints).
    Refused,
}

/// What the prober does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeSpec {
    /// Address to connect to (a ClusterIP and port).
    pub target: SocketAddr,
    /// What ends the probe.
    pub expect: Expect,
    /// A new attempt every this many milliseconds (>= 1).
    pub interval_ms: u64,
    /// One attempt is abandoned when its connect has not completed after this long (>= 1 ms).
    pub timeout_ms: u64,
    /// The instant `seen_after_ms` is measured from: `CLOCK_MONOTONIC` nanoseconds taken by the
    /// caller (0: the prober's own start).
    pub started_mono_ns: u64,
    /// The probe fails when the change is not seen within this many milliseconds of its start.
    pub give_up_ms: u64,
}

impl ProbeSpec {
    /// A spec with the defaults: 1 ms interval, 200 ms per attempt, give up after 60 s, measured
    /// from the prober's own start.
    pub fn new(target: SocketAddr, expect: Expect) -> ProbeSpec {
        ProbeSpec {
            target,
            expect,
            interval_ms: 1,
            timeout_ms: 200,
            started_mono_ns: 0,
            give_up_ms: 60_000,
        }
    }
}

/// When the change was seen.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeOutcome {
    /// Milliseconds from [`ProbeSpec::started_mono_ns`] to the attempt that saw the change
    /// completing (negative when the change was seen before that instant).
    pub seen_after_ms: f64,
    /// Connect attempts started.
    pub attempts: u64,
    /// `CLOCK_MONOTONIC` nanoseconds when the change was seen.
    pub seen_mono_ns: u64,
    /// `CLOCK_MONOTONIC` nanoseconds of the first attempt (a caller measuring from a later write
    /// checks that the prober was already running then).
    pub first_attempt_mono_ns: u64,
}

/// Why the prober failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The spec cannot be run.
    #[error("invalid probe spec: {0}")]
    Spec(String),
    /// A socket could not be created (not retryable: out of descriptors or memory).
    #[error("creating a socket for {target}: {source}")]
    Socket {
        /// The target.
        target: SocketAddr,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The change was not seen in time.
    #[error(
        "{target} was not {} within {after_ms} ms ({attempts} attempts; last: {last})",
        match expect { Expect::Reachable => "reachable", Expect::Refused => "refused" }
    )]
    GaveUp {
        /// The target.
        target: SocketAddr,
        /// What was expected.
        expect: Expect,
        /// How long it tried.
        after_ms: u64,
        /// Attempts started.
        attempts: u64,
        /// What the last finished attempt saw (`connected`, `refused`, an error, `timeout`).
        last: String,
    },
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Connected,
    Refused,
    Other(String),
}

impl Verdict {
    fn of_error(e: &io::Error) -> Verdict {
        if e.kind() == io::ErrorKind::ConnectionRefused {
            Verdict::Refused
        } else {
            Verdict::Other(e.to_string())
        }
    }

    fn describe(&self) -> String {
        match self {
            Verdict::Connected => "connected".into(),
            Verdict::Refused => "refused".into(),
            Verdict::Other(e) => e.clone(),
        }
    }
}

/// An attempt whose connect is in progress.
struct Pending {
    socket: Socket,
    started: Instant,
}

/// Starts one attempt: `Ok(Some(verdict))` when the connect ended at once, `Ok(None)` when it is
/// in progress (then pushed to `pending`).
fn start_attempt(
    target: SocketAddr,
    ports: &mut SourcePorts,
    pending: &mut Vec<Pending>,
) -> Result<Option<Verdict>, ProbeError> {
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )
    .and_then(|s| s.set_nonblocking(true).map(|()| s))
    .map_err(|source| ProbeError::Socket { target, source })?;
    ports.bind(&socket, target);
    match socket.connect(&SockAddr::from(target)) {
        Ok(()) => {
            close_quietly(&socket);
            Ok(Some(Verdict::Connected))
        }
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EINPROGRESS as i32) => {
            pending.push(Pending {
                socket,
                started: Instant::now(),
            });
            Ok(None)
        }
        Err(e) => Ok(Some(Verdict::of_error(&e))),
    }
}

/// Source ports below the kernel's ephemeral range, picked at random for each attempt.
///
/// An attempt made before a VIP is in the datapath leaves a conntrack entry for its untranslated
/// SYN (in the node's namespace, `SYN_SENT`, 120 s) wherever the translation is done by
/// iptables DNAT. A later connection from the same source port to the same VIP matches that
/// entry, is not translated, and hangs. With kernel-chosen ports, the prober's thousand attempts a
/// second would spoil the ports the load generator gets next; with ports of its own it spoils
/// only a few of its own (a random pick, so it soon tries a fresh one).
#[derive(Debug)]
struct SourcePorts {
    /// `[low, high)`, or `None` when the ephemeral range leaves no room below it (the kernel
    /// picks then).
    range: Option<(u16, u16)>,
    state: u64,
}

impl SourcePorts {
    fn new() -> SourcePorts {
        let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
            .unwrap_or(32_768);
        SourcePorts {
            range: (low >= 1024 + 4096).then_some((1024, low)),
            state: ferry_sys::clock::monotonic_ns() | 1,
        }
    }

    /// Binds `socket` to a random port of the range (a few tries; else the kernel picks).
    fn bind(&mut self, socket: &Socket, target: SocketAddr) {
        let Some((low, high)) = self.range else {
            return;
        };
        for _ in 0..8 {
            // xorshift64
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let port = low + u16::try_from(self.state % u64::from(high - low)).unwrap_or(0);
            let local = match target {
                SocketAddr::V4(_) => SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, port)),
                SocketAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)),
            };
            if socket.bind(&SockAddr::from(local)).is_ok() {
                return;
            }
        }
    }
}

/// The state of an attempt in progress: `None` while the handshake is still running.
fn check(p: &Pending) -> Option<Verdict> {
    match p.socket.take_error() {
        Ok(Some(e)) => return Some(Verdict::of_error(&e)),
        Ok(None) => {}
        Err(e) => return Some(Verdict::Other(e.to_string())),
    }
    match p.socket.peer_addr() {
        Ok(_) => {
            close_quietly(&p.socket);
            Some(Verdict::Connected)
        }
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENOTCONN as i32) => None,
        Err(e) => Some(Verdict::Other(e.to_string())),
    }
}

/// A connected probe socket is reset rather than closed: no TIME_WAIT left for each of a thousand
/// attempts a second.
fn close_quietly(s: &Socket) {
    let _ = s.set_linger(Some(Duration::ZERO));
}

/// Connects every `interval_ms` until the expected verdict, and says when it came.
pub fn run(spec: &ProbeSpec) -> Result<ProbeOutcome, ProbeError> {
    if spec.interval_ms == 0 || spec.timeout_ms == 0 || spec.give_up_ms == 0 {
        return Err(ProbeError::Spec(format!(
            "interval_ms ({}), timeout_ms ({}) and give_up_ms ({}) must be at least 1",
            spec.interval_ms, spec.timeout_ms, spec.give_up_ms
        )));
    }
    let want = match spec.expect {
        Expect::Reachable => Verdict::Connected,
        Expect::Refused => Verdict::Refused,
    };
    let interval = Duration::from_millis(spec.interval_ms);
    let timeout = Duration::from_millis(spec.timeout_ms);
    let give_up = Duration::from_millis(spec.give_up_ms);
    let start = Instant::now();
    let first_attempt_mono_ns = ferry_sys::clock::monotonic_ns();
    let reference = if spec.started_mono_ns == 0 {
        first_attempt_mono_ns
    } else {
        spec.started_mono_ns
    };
    let mut pending: Vec<Pending> = Vec::new();
    let mut ports = SourcePorts::new();
    let mut next_attempt = start;
    let mut attempts = 0u64;
    let mut last = String::from("none finished");
    loop {
        let now = Instant::now();
        let mut seen = false;
        if now >= next_attempt {
            attempts += 1;
            next_attempt += interval;
            if next_attempt < now {
                // Fell behind (a descheduled prober): no burst to catch up.
                next_attempt = now + interval;
            }
            if let Some(v) = start_attempt(spec.target, &mut ports, &mut pending)? {
                seen = v == want;
                last = v.describe();
            }
        }
        if !seen {
            let mut i = 0;
            while i < pending.len() {
                match check(&pending[i]) {
                    Some(v) => {
                        seen |= v == want;
                        last = v.describe();
                        pending.swap_remove(i);
                    }
                    None if pending[i].started.elapsed() >= timeout => {
                        last = "timeout".into();
                        pending.swap_remove(i);
                    }
                    None => i += 1,
                }
            }
        }
        if seen {
            let seen_mono_ns = ferry_sys::clock::monotonic_ns();
            #[expect(
                clippy::cast_precision_loss,
                reason = "nanosecond differences far below 2^52"
            )]
            let seen_after_ms = if seen_mono_ns >= reference {
                (seen_mono_ns - reference) as f64 / 1e6
            } else {
                -((reference - seen_mono_ns) as f64 / 1e6)
            };
            return Ok(ProbeOutcome {
                seen_after_ms,
                attempts,
                seen_mono_ns,
                first_attempt_mono_ns,
            });
        }
        if start.elapsed() >= give_up {
            return Err(ProbeError::GaveUp {
                target: spec.target,
                expect: spec.expect,
                after_ms: spec.give_up_ms,
                attempts,
                last,
            });
        }
        let until_next = next_attempt.saturating_duration_since(Instant::now());
        std::thread::sleep(until_next.min(Duration::from_micros(100)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener};

    /// A loopback port nothing listens on (bound once to find it, then released).
    fn free_port() -> SocketAddr {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        l.local_addr().unwrap()
    }

    #[test]
    fn a_listener_that_appears_after_50_ms_is_seen_after_about_50_ms() {
        let addr = free_port();
        let t0 = ferry_sys::clock::monotonic_ns();
        let listener = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let l = TcpListener::bind(addr).unwrap();
            std::thread::sleep(Duration::from_millis(500));
            drop(l);
        });
        let mut spec = ProbeSpec::new(addr, Expect::Reachable);
        spec.started_mono_ns = t0;
        spec.give_up_ms = 5_000;
        let out = run(&spec).unwrap();
        listener.join().unwrap();
        assert!(
            (50.0..80.0).contains(&out.seen_after_ms),
            "seen after {} ms",
            out.seen_after_ms
        );
        // About one attempt per millisecond until then (refused at once on loopback).
        assert!(
            (25..=90).contains(&out.attempts),
            "{} attempts",
            out.attempts
        );
        assert!(out.first_attempt_mono_ns >= t0 && out.seen_mono_ns > out.first_attempt_mono_ns);
    }

    #[test]
    fn attempts_come_from_ports_below_the_ephemeral_range() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = l.local_addr().unwrap();
        let out = run(&ProbeSpec::new(addr, Expect::Reachable)).unwrap();
        assert!(out.seen_after_ms < 50.0, "{} ms", out.seen_after_ms);
        let (_, peer) = l.accept().unwrap();
        let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (1024..low).contains(&peer.port()),
            "source port {} (ephemeral range from {low})",
            peer.port()
        );
    }

    #[test]
    fn a_closed_port_is_refused_at_once() {
        let addr = free_port();
        let out = run(&ProbeSpec::new(addr, Expect::Refused)).unwrap();
        assert_eq!(out.attempts, 1);
        assert!(out.seen_after_ms < 20.0, "{} ms", out.seen_after_ms);
    }

    #[test]
    fn a_listener_that_goes_away_is_refused_after_it_closes() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = l.local_addr().unwrap();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(l);
        });
        let mut spec = ProbeSpec::new(addr, Expect::Refused);
        spec.give_up_ms = 5_000;
        let out = run(&spec).unwrap();
        closer.join().unwrap();
        assert!(
            (45.0..80.0).contains(&out.seen_after_ms),
            "refused after {} ms",
            out.seen_after_ms
        );
    }

    #[test]
    fn gives_up_with_what_it_saw() {
        let addr = free_port();
        let mut spec = ProbeSpec::new(addr, Expect::Reachable);
        spec.give_up_ms = 30;
        match run(&spec) {
            Err(ProbeError::GaveUp { attempts, last, .. }) => {
                assert!(attempts >= 10, "{attempts} attempts");
                assert_eq!(last, "refused");
            }
            other => panic!("expected GaveUp, got {other:?}"),
        }
    }

    #[test]
    fn a_zero_interval_is_refused() {
        let mut spec = ProbeSpec::new(free_port(), Expect::Refused);
        spec.interval_ms = 0;
        assert!(matches!(run(&spec), Err(ProbeError::Spec(_))));
    }

    #[test]
    fn spec_round_trips_through_json() {
        let spec = ProbeSpec::new("10.96.0.10:7000".parse().unwrap(), Expect::Refused);
        let json = serde_json::to_string(&spec).unwrap();
        assert!(json.contains("\"expect\":\"refused\""), "{json}");
        assert_eq!(serde_json::from_str::<ProbeSpec>(&json).unwrap(), spec);
    }
}
