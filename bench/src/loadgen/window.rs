//! The accounting every flow shares: the run's clock (warm-up, window, cool-down and the
//! per-second buckets of the window, all on `CLOCK_MONOTONIC` through [`Instant`]), a flow's
//! counters ([`FlowStats`]: completions, bytes, latency histograms, errors by kind, losses), the
//! classification of socket errors, CPU time from `getrusage`, and the merge of the flows into
//! the figures of an [`super::Outcome`].
//!
//! Rule: an event counts when the time it completed lies in `[warm_end, win_end)`; a per-second
//! bucket `k` holds the events completed in `[warm_end + k s, warm_end + (k+1) s)`, and only whole
//! seconds get a bucket (the tail of a fractional window counts in the totals only).

use hdrhistogram::Histogram;
use std::io;
use std::time::{Duration, Instant};

/// Highest latency a histogram records, ns (100 s); longer ones are clamped to it.
const HIST_MAX_NS: u64 = 100_000_000_000;

/// Where a moment falls in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Warm-up: not counted.
    Before,
    /// In the window, with its whole-second bucket (`None` in a fractional tail).
    In(Option<usize>),
    /// Cool-down or later: not counted.
    After,
}

/// The run's clock: every flow gets the same one, set once all flows are connected.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    /// The start (end of the barrier).
    pub(crate) start: Instant,
    /// Start of the window.
    pub(crate) warm_end: Instant,
    /// End of the window (exclusive).
    pub(crate) win_end: Instant,
    /// End of the cool-down: flows stop.
    pub(crate) end: Instant,
    /// Whole seconds in the window (the number of per-second buckets).
    pub(crate) seconds: usize,
}

impl Window {
    /// The clock of a run starting at `start`.
    pub(crate) fn new(
        start: Instant,
        warmup: Duration,
        window: Duration,
        cooldown: Duration,
    ) -> Window {
        let warm_end = start + warmup;
        let win_end = warm_end + window;
        let seconds = usize::try_from(window.as_secs()).unwrap_or(usize::MAX);
        Window {
            start,
            warm_end,
            win_end,
            end: win_end + cooldown,
            seconds,
        }
    }

    /// Where `t` falls.
    pub(crate) fn slot(&self, t: Instant) -> Slot {
        if t < self.warm_end {
            Slot::Before
        } else if t < self.win_end {
            let k = usize::try_from((t - self.warm_end).as_secs()).unwrap_or(usize::MAX);
            Slot::In((k < self.seconds).then_some(k))
        } else {
            Slot::After
        }
    }

    /// The window's length, seconds.
    pub(crate) fn length_s(&self) -> f64 {
        (self.win_end - self.warm_end).as_secs_f64()
    }
}

/// A kind of failure, as counted in [`super::Outcome::errors`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// `ECONNREFUSED`: nothing listens (or an ICMP port unreachable for UDP).
    Refused,
    /// No answer in time: a read/connect timeout (`EAGAIN` from `SO_RCVTIMEO`, `EINPROGRESS`
    /// from a connect with `SO_SNDTIMEO`, `ETIMEDOUT`).
    Timeout,
    /// `ECONNRESET`, `EPIPE`, `ECONNABORTED`: the connection was torn down.
    Reset,
    /// The peer closed the connection in the middle of a transaction (an early EOF).
    Closed,
    /// `EADDRNOTAVAIL`: no local port left (TIME_WAIT exhaustion).
    AddrNotAvail,
    /// Anything else (unreachable network, a protocol violation...).
    Other,
}

impl ErrorKind {
    /// Every kind, in the order of [`FlowStats::errors`].
    pub(crate) const ALL: [ErrorKind; 6] = [
        ErrorKind::Refused,
        ErrorKind::Timeout,
        ErrorKind::Reset,
        ErrorKind::Closed,
        ErrorKind::AddrNotAvail,
        ErrorKind::Other,
    ];

    /// The key in [`super::Outcome::errors`].
    pub(crate) fn name(self) -> &'static str {
        match self {
            ErrorKind::Refused => "refused",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Reset => "reset",
            ErrorKind::Closed => "closed",
            ErrorKind::AddrNotAvail => "addr_not_avail",
            ErrorKind::Other => "other",
        }
    }

    /// The kind of an I/O error.
    pub(crate) fn of(e: &io::Error) -> ErrorKind {
        match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => ErrorKind::Refused,
            Some(libc::EAGAIN | libc::EINPROGRESS | libc::ETIMEDOUT) => ErrorKind::Timeout,
            Some(libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED) => ErrorKind::Reset,
            Some(libc::EADDRNOTAVAIL) => ErrorKind::AddrNotAvail,
            Some(_) => ErrorKind::Other,
            None => match e.kind() {
                io::ErrorKind::UnexpectedEof | io::ErrorKind::WriteZero => ErrorKind::Closed,
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ErrorKind::Timeout,
                _ => ErrorKind::Other,
            },
        }
    }
}

/// A latency histogram in nanoseconds, 3 significant digits, 1 ns .. 100 s.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_NS, 3).expect("static histogram bounds are valid")
}

/// Nanoseconds of a duration, clamped into the histogram's range.
pub(crate) fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos())
        .unwrap_or(u64::MAX)
        .clamp(1, HIST_MAX_NS)
}

/// What one flow counted in the window.
#[derive(Debug)]
pub(crate) struct FlowStats {
    /// Transactions / connections / writes / datagrams completed in the window.
    pub(crate) completed: u64,
    /// Payload bytes in the window (see [`super::Outcome::bytes`]).
    pub(crate) bytes: u64,
    /// Transaction latency of the completions in the window.
    pub(crate) latency: Histogram<u64>,
    /// Connect latency (`tcp_crr`, `tcp_cc`) of the completions in the window.
    pub(crate) connect: Histogram<u64>,
    /// Units per whole second of the window (completions; bytes for `tcp_stream`; datagrams sent
    /// for `udp_stream`).
    pub(crate) per_second: Vec<u64>,
    /// Errors in the window, indexed like [`ErrorKind::ALL`].
    pub(crate) errors: [u64; 6],
    /// `udp_rr`: requests whose reply did not come in time, timed out in the window.
    pub(crate) lost: u64,
    /// `tcp_stream`: retransmitted segments in the window (`tcpi_total_retrans` deltas).
    pub(crate) retrans: u64,
    /// Share of the flow thread's wall time on CPU, from the barrier to its end.
    pub(crate) busy: f64,
    /// Test-specific counters for the outcome (`udp_stream`, `tcp_stream`).
    pub(crate) extra: Extra,
}

/// Test-specific per-flow counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Extra {
    /// `udp_stream`: datagrams sent in the window.
    pub(crate) sent: u64,
    /// `udp_stream`: unique datagrams of the window the server received.
    pub(crate) received: u64,
    /// `udp_stream`: window datagrams received more than once.
    pub(crate) dup: u64,
    /// `udp_stream`: window datagrams that arrived after a later one.
    pub(crate) reorder: u64,
    /// `tcp_stream`: bytes the client wrote over the whole run (all connections).
    pub(crate) written: u64,
    /// `tcp_stream`: bytes the server says it read over the whole run (all connections).
    pub(crate) server_read: u64,
}

impl FlowStats {
    /// Empty counters for a window with `seconds` buckets.
    pub(crate) fn new(seconds: usize) -> FlowStats {
        FlowStats {
            completed: 0,
            bytes: 0,
            latency: new_histogram(),
            connect: new_histogram(),
            per_second: vec![0; seconds],
            errors: [0; 6],
            lost: 0,
            retrans: 0,
            busy: 0.0,
            extra: Extra::default(),
        }
    }

    /// A completion at `t` that took `latency` and moved `bytes`; counted when `t` is in the
    /// window. Returns whether it counted.
    pub(crate) fn complete(
        &mut self,
        w: &Window,
        t: Instant,
        latency: Duration,
        bytes: u64,
    ) -> bool {
        let Slot::In(bucket) = w.slot(t) else {
            return false;
        };
        self.completed += 1;
        self.bytes += bytes;
        self.latency.saturating_record(ns(latency));
        if let Some(k) = bucket {
            self.per_second[k] += 1;
        }
        true
    }

    /// A connect that took `latency`, of a transaction that completed at `t`.
    pub(crate) fn connected(&mut self, w: &Window, t: Instant, latency: Duration) {
        if matches!(w.slot(t), Slot::In(_)) {
            self.connect.saturating_record(ns(latency));
        }
    }

    /// An error at `t`.
    pub(crate) fn error(&mut self, w: &Window, t: Instant, kind: ErrorKind) {
        if matches!(w.slot(t), Slot::In(_)) {
            let i = ErrorKind::ALL.iter().position(|k| *k == kind).unwrap_or(5);
            self.errors[i] += 1;
        }
    }

    /// A request given up as lost at `t`.
    pub(crate) fn lost(&mut self, w: &Window, t: Instant) {
        if matches!(w.slot(t), Slot::In(_)) {
            self.lost += 1;
        }
    }

    /// Adds `units` to the bucket of `t` (without touching the totals).
    pub(crate) fn add_to_second(&mut self, w: &Window, t: Instant, units: u64) {
        if let Slot::In(Some(k)) = w.slot(t) {
            self.per_second[k] += units;
        }
    }

    /// Adds another flow's counters to these.
    pub(crate) fn merge(&mut self, o: &FlowStats) {
        self.completed += o.completed;
        self.bytes += o.bytes;
        self.latency
            .add(&o.latency)
            .expect("histograms with the same bounds add");
        self.connect
            .add(&o.connect)
            .expect("histograms with the same bounds add");
        for (a, b) in self.per_second.iter_mut().zip(&o.per_second) {
            *a += b;
        }
        for (a, b) in self.errors.iter_mut().zip(o.errors) {
            *a += b;
        }
        self.lost += o.lost;
        self.retrans += o.retrans;
        self.busy = self.busy.max(o.busy);
        self.extra.sent += o.extra.sent;
        self.extra.received += o.extra.received;
        self.extra.dup += o.extra.dup;
        self.extra.reorder += o.extra.reorder;
        self.extra.written += o.extra.written;
        self.extra.server_read += o.extra.server_read;
    }

    /// Errors in the window, all kinds.
    pub(crate) fn error_total(&self) -> u64 {
        self.errors.iter().sum()
    }
}

/// Jain's fairness index of per-flow amounts: (Σx)² / (n Σx²), 1 = perfectly fair, 1/n = one flow
/// got everything. `None` for fewer than two flows or nothing moved.
pub(crate) fn jain(xs: &[f64]) -> Option<f64> {
    if xs.len() < 2 {
        return None;
    }
    let sum: f64 = xs.iter().sum();
    let sq: f64 = xs.iter().map(|x| x * x).sum();
    #[expect(clippy::cast_precision_loss, reason = "a flow count is far below 2^52")]
    let n = xs.len() as f64;
    (sq > 0.0).then(|| sum * sum / (n * sq))
}

/// CPU time (user + system) of the calling thread.
pub(crate) fn thread_cpu() -> Duration {
    cpu_of(nix::sys::resource::UsageWho::RUSAGE_THREAD)
}

/// CPU time (user + system) of the whole process.
pub(crate) fn process_cpu() -> Duration {
    cpu_of(nix::sys::resource::UsageWho::RUSAGE_SELF)
}

/// `getrusage(who)` user + system time (zero if the call fails, which it cannot for these).
fn cpu_of(who: nix::sys::resource::UsageWho) -> Duration {
    let Ok(u) = nix::sys::resource::getrusage(who) else {
        return Duration::ZERO;
    };
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(u64::try_from(t.tv_sec()).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec()).unwrap_or(0))
    };
    tv(u.user_time()) + tv(u.system_time())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> (Instant, Window) {
        let t0 = Instant::now();
        let w = Window::new(
            t0,
            Duration::from_secs(1),
            Duration::from_millis(2500),
            Duration::from_millis(500),
        );
        (t0, w)
    }

    #[test]
    fn window_edges_and_buckets() {
        let (t0, w) = window();
        let ms = |m| t0 + Duration::from_millis(m);
        assert_eq!(w.seconds, 2);
        assert_eq!(w.slot(t0), Slot::Before);
        assert_eq!(w.slot(ms(999)), Slot::Before);
        assert_eq!(
            w.slot(ms(1000)),
            Slot::In(Some(0)),
            "the window includes its start"
        );
        assert_eq!(w.slot(ms(1999)), Slot::In(Some(0)));
        assert_eq!(w.slot(ms(2000)), Slot::In(Some(1)));
        assert_eq!(
            w.slot(ms(3000)),
            Slot::In(None),
            "fractional tail: no bucket"
        );
        assert_eq!(w.slot(ms(3499)), Slot::In(None));
        assert_eq!(w.slot(ms(3500)), Slot::After, "the window excludes its end");
        assert_eq!(w.end, ms(4000));
        assert!((w.length_s() - 2.5).abs() < 1e-9);
    }

    #[test]
    fn only_completions_in_the_window_count() {
        let (t0, w) = window();
        let ms = |m| t0 + Duration::from_millis(m);
        let mut s = FlowStats::new(w.seconds);
        let lat = Duration::from_micros(50);
        assert!(!s.complete(&w, ms(500), lat, 10));
        assert!(s.complete(&w, ms(1000), lat, 10));
        assert!(s.complete(&w, ms(1500), lat, 10));
        assert!(s.complete(&w, ms(2100), Duration::from_micros(150), 10));
        assert!(s.complete(&w, ms(3200), lat, 10));
        assert!(!s.complete(&w, ms(3500), lat, 10));
        assert!(!s.complete(&w, ms(3900), lat, 10));
        assert_eq!(s.completed, 4);
        assert_eq!(s.bytes, 40);
        assert_eq!(
            s.latency.len(),
            4,
            "one histogram sample per counted completion"
        );
        assert_eq!(s.per_second, vec![2, 1]);
        assert_eq!(s.latency.max(), s.latency.highest_equivalent(150_000));
        s.connected(&w, ms(900), lat);
        s.connected(&w, ms(1100), lat);
        assert_eq!(s.connect.len(), 1);
    }

    #[test]
    fn errors_are_classified_and_windowed() {
        let e = |n| io::Error::from_raw_os_error(n);
        assert_eq!(ErrorKind::of(&e(libc::ECONNREFUSED)), ErrorKind::Refused);
        assert_eq!(ErrorKind::of(&e(libc::EAGAIN)), ErrorKind::Timeout);
        assert_eq!(ErrorKind::of(&e(libc::EINPROGRESS)), ErrorKind::Timeout);
        assert_eq!(
            ErrorKind::of(&io::Error::new(
                io::ErrorKind::TimedOut,
                "connect timed out"
            )),
            ErrorKind::Timeout
        );
        assert_eq!(ErrorKind::of(&e(libc::ECONNRESET)), ErrorKind::Reset);
        assert_eq!(ErrorKind::of(&e(libc::EPIPE)), ErrorKind::Reset);
        assert_eq!(
            ErrorKind::of(&e(libc::EADDRNOTAVAIL)),
            ErrorKind::AddrNotAvail
        );
        assert_eq!(ErrorKind::of(&e(libc::ENETUNREACH)), ErrorKind::Other);
        let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "eof");
        assert_eq!(ErrorKind::of(&eof), ErrorKind::Closed);

        let (t0, w) = window();
        let mut s = FlowStats::new(w.seconds);
        s.error(&w, t0, ErrorKind::Refused);
        s.error(&w, t0 + Duration::from_millis(1200), ErrorKind::Refused);
        s.error(
            &w,
            t0 + Duration::from_millis(1300),
            ErrorKind::AddrNotAvail,
        );
        s.error(&w, t0 + Duration::from_millis(3600), ErrorKind::Reset);
        assert_eq!(s.errors, [1, 0, 0, 0, 1, 0]);
        assert_eq!(s.error_total(), 2);
        s.lost(&w, t0 + Duration::from_millis(1300));
        s.lost(&w, t0 + Duration::from_millis(3600));
        assert_eq!(s.lost, 1);
    }

    #[test]
    fn merge_adds_everything_and_keeps_the_busiest_thread() {
        let (t0, w) = window();
        let at = t0 + Duration::from_millis(1100);
        let mut a = FlowStats::new(w.seconds);
        let mut b = FlowStats::new(w.seconds);
        a.complete(&w, at, Duration::from_micros(10), 2);
        b.complete(&w, at, Duration::from_micros(20), 2);
        b.complete(
            &w,
            at + Duration::from_secs(1),
            Duration::from_micros(30),
            2,
        );
        b.error(&w, at, ErrorKind::Timeout);
        a.busy = 0.3;
        b.busy = 0.9;
        a.merge(&b);
        assert_eq!(a.completed, 3);
        assert_eq!(a.latency.len(), 3);
        assert_eq!(a.per_second, vec![2, 1]);
        assert_eq!(a.errors[1], 1);
        assert!((a.busy - 0.9).abs() < f64::EPSILON);
    }

    #[test]
    fn jain_index() {
        assert_eq!(jain(&[5.0]), None);
        assert_eq!(jain(&[0.0, 0.0]), None);
        assert!((jain(&[3.0, 3.0, 3.0]).unwrap() - 1.0).abs() < 1e-12);
        assert!((jain(&[1.0, 0.0]).unwrap() - 0.5).abs() < 1e-12);
        assert!((jain(&[1.0, 3.0]).unwrap() - 0.8).abs() < 1e-12);
    }

    #[test]
    fn cpu_time_moves_when_the_thread_works() {
        let before = thread_cpu();
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(thread_cpu() > before);
        assert!(process_cpu() >= thread_cpu());
    }
}
