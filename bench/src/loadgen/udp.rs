//! The UDP client flows and the server's sequence accounting.
//!
//! - `udp_rr`: a connected socket per flow; a request carries a sequence number and the server
//!   echoes it. A reply that does not come within `T_o = clamp(10 × running p99, 10 ms,
//!   timeout_ms)` counts the request as lost and the next one is sent; late replies to older
//!   requests are recognised by their sequence and dropped.
//! - `udp_stream`: datagrams paced at `rate_pps` (catching up after a late wake-up, so the offered
//!   rate is exact on average; 0 = as fast as possible), each with the flow's random token and a
//!   sequence. The window is the range of sequences *sent* in it; after the cool-down the client
//!   asks the server ([`SeqTracker`]) how many of that range arrived, how many twice and how many
//!   after a later one.

use super::window::{new_histogram, ns, thread_cpu, ErrorKind, FlowStats, Slot, Window};
use super::wire::{be64, UdpHeader, UdpKind, HDR, QUERY_LEN, REPORT_LEN};
use super::{Error, Spec, Test};
use std::hash::BuildHasher;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Shortest reply timeout of `udp_rr`.
const MIN_RR_TIMEOUT: Duration = Duration::from_millis(10);
/// Attempts of the preflight echo and of the final report query.
const ATTEMPTS: u32 = 5;
/// Highest sequence the server tracks per token (2^27: 16 MiB of bitmaps per flow at most).
pub(crate) const MAX_TRACKED_SEQ: u32 = 1 << 27;

/// A random token for a flow (std's per-process random hash keys; no RNG crate needed).
fn token() -> u32 {
    let h = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    // The low 32 bits of a random 64-bit hash.
    u32::try_from(h & u64::from(u32::MAX)).unwrap_or(0)
}

/// A UDP socket connected to `target`, bound to an ephemeral port of its family.
pub(crate) fn socket(target: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = UdpSocket::bind(local)?;
    s.connect(target)?;
    Ok(s)
}

/// Sends `out` and waits for a datagram of kind `want` with token `tok` (and, for `udp_rr`,
/// sequence `seq`), retrying [`ATTEMPTS`] times over `timeout`: the preflight echo and the report
/// query. Returns the reply's length in `buf`.
fn ask(
    s: &UdpSocket,
    out: &[u8],
    buf: &mut [u8],
    want: UdpKind,
    tok: u32,
    seq: u32,
    timeout: Duration,
) -> io::Result<Option<usize>> {
    let per_try = (timeout / ATTEMPTS).max(Duration::from_millis(1));
    s.set_read_timeout(Some(per_try))?;
    for _ in 0..ATTEMPTS {
        s.send(out)?;
        let deadline = Instant::now() + per_try;
        while Instant::now() < deadline {
            match s.recv(buf) {
                Ok(n) => match UdpHeader::read(&buf[..n]) {
                    Ok(h)
                        if h.kind == want
                            && h.token == tok
                            && (want != UdpKind::Rr || h.seq == seq) =>
                    {
                        return Ok(Some(n))
                    }
                    _ => {}
                },
                Err(e) if ErrorKind::of(&e) == ErrorKind::Timeout => break,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(None)
}

/// Checks that a generator server answers on `spec.target` over UDP before the run starts.
pub(crate) fn preflight(spec: &Spec) -> Result<(), Error> {
    let timeout = Duration::from_millis(spec.timeout_ms);
    let io_err = |source| Error::Connect {
        target: spec.target,
        source,
    };
    let s = socket(spec.target).map_err(io_err)?;
    let tok = token();
    let mut out = [0u8; QUERY_LEN];
    let (kind, want) = match spec.test {
        Test::UdpRr => (UdpKind::Rr, UdpKind::Rr),
        _ => (UdpKind::Query, UdpKind::Report),
    };
    UdpHeader {
        kind,
        token: tok,
        seq: 0,
    }
    .write(&mut out);
    let mut buf = [0u8; 256];
    match ask(&s, &out, &mut buf, want, tok, 0, timeout).map_err(io_err)? {
        Some(_) => Ok(()),
        None => Err(Error::NoReply {
            target: spec.target,
            timeout_ms: spec.timeout_ms,
        }),
    }
}

/// Runs one UDP flow of `spec` over the window on its connected socket.
pub(crate) fn flow(spec: &Spec, w: &Window, s: &UdpSocket) -> Result<FlowStats, Error> {
    let cpu0 = thread_cpu();
    let mut stats = FlowStats::new(w.seconds);
    match spec.test {
        Test::UdpRr => rr(spec, w, s, &mut stats),
        Test::UdpStream => stream(spec, w, s, &mut stats)?,
        _ => unreachable!("TCP tests run in loadgen::tcp; udp_max_rate in loadgen::search"),
    }
    let wall = w.start.elapsed().as_secs_f64();
    if wall > 0.0 {
        stats.busy = (thread_cpu().saturating_sub(cpu0).as_secs_f64() / wall).min(1.0);
    }
    Ok(stats)
}

/// The datagram length of a UDP test: the size, at least the header.
pub(crate) fn datagram_len(spec: &Spec) -> usize {
    (spec.size as usize).max(HDR)
}

/// `udp_rr` on a connected socket.
fn rr(spec: &Spec, w: &Window, s: &UdpSocket, stats: &mut FlowStats) {
    let len = datagram_len(spec);
    let tok = token();
    let mut out = vec![0x55u8; len];
    let mut buf = vec![0u8; len.max(REPORT_LEN) + 64];
    let cap = Duration::from_millis(spec.timeout_ms).max(MIN_RR_TIMEOUT);
    // The running p99 (warm-up included) that sets the reply timeout.
    let mut running = new_histogram();
    let mut timeout = MIN_RR_TIMEOUT;
    if let Err(e) = s.set_read_timeout(Some(timeout)) {
        stats.error(w, Instant::now(), ErrorKind::of(&e));
    }
    let moved = 2 * len as u64;
    let mut seq: u32 = 0;
    let mut now = Instant::now();
    while now < w.end {
        seq = seq.wrapping_add(1);
        UdpHeader {
            kind: UdpKind::Rr,
            token: tok,
            seq,
        }
        .write(&mut out);
        let t0 = now;
        if let Err(e) = s.send(&out) {
            now = Instant::now();
            stats.error(w, now, ErrorKind::of(&e));
            continue;
        }
        // Wait for this request's reply; older replies are dropped.
        let deadline = t0 + timeout;
        let reply = loop {
            match s.recv(&mut buf) {
                Ok(n) => {
                    let t = Instant::now();
                    if let Ok(h) = UdpHeader::read(&buf[..n]) {
                        if h.kind == UdpKind::Rr && h.token == tok && h.seq == seq {
                            break Reply::At(t);
                        }
                    }
                    if t >= deadline {
                        break Reply::Lost(t);
                    }
                }
                Err(e) => {
                    let t = Instant::now();
                    break match ErrorKind::of(&e) {
                        ErrorKind::Timeout => Reply::Lost(t),
                        // Refused comes from an ICMP error: an error, not a loss.
                        kind => Reply::Failed(t, kind),
                    };
                }
            }
        };
        now = match reply {
            Reply::At(t) => {
                stats.complete(w, t, t - t0, moved);
                running.saturating_record(ns(t - t0));
                if running.len().is_multiple_of(1024) {
                    let p99 = Duration::from_nanos(running.value_at_quantile(0.99));
                    let t_o = (p99 * 10).clamp(MIN_RR_TIMEOUT, cap);
                    if t_o != timeout && s.set_read_timeout(Some(t_o)).is_ok() {
                        timeout = t_o;
                    }
                }
                t
            }
            Reply::Lost(t) => {
                stats.lost(w, t);
                t
            }
            Reply::Failed(t, kind) => {
                stats.error(w, t, kind);
                t
            }
        };
    }
}

/// How a `udp_rr` request ended.
#[derive(Debug, Clone, Copy)]
enum Reply {
    /// Its reply arrived at this time.
    At(Instant),
    /// No reply within the timeout.
    Lost(Instant),
    /// The socket reported an error (an ICMP port unreachable: refused).
    Failed(Instant, ErrorKind),
}

/// `udp_stream`: paced datagrams, then the server's report for the window's sequence range.
fn stream(spec: &Spec, w: &Window, s: &UdpSocket, stats: &mut FlowStats) -> Result<(), Error> {
    let len = datagram_len(spec);
    let tok = token();
    let mut out = vec![0x44u8; len];
    let interval = (spec.rate_pps > 0).then(|| Duration::from_nanos(1_000_000_000 / spec.rate_pps));
    let mut next = w.start;
    let mut seq: u32 = 0;
    // First sequence sent in the window, first sent after it.
    let (mut lo, mut hi) = (None, None);
    loop {
        let now = Instant::now();
        if now >= w.end || seq >= MAX_TRACKED_SEQ {
            break;
        }
        if let Some(iv) = interval {
            if now < next {
                std::thread::sleep(next - now);
                continue;
            }
            next += iv;
        }
        match w.slot(now) {
            Slot::Before => {}
            Slot::In(_) => {
                lo.get_or_insert(seq);
            }
            Slot::After => {
                lo.get_or_insert(seq);
                hi.get_or_insert(seq);
            }
        }
        UdpHeader {
            kind: UdpKind::Data,
            token: tok,
            seq,
        }
        .write(&mut out);
        match s.send(&out) {
            Ok(_) => {
                if matches!(w.slot(now), Slot::In(_)) {
                    stats.extra.sent += 1;
                    stats.add_to_second(w, now, 1);
                }
                seq += 1;
            }
            // ENOBUFS and friends: the datagram was not sent; the sequence is reused.
            Err(e) => stats.error(w, now, ErrorKind::of(&e)),
        }
    }
    let lo = lo.unwrap_or(seq);
    let hi = hi.unwrap_or(seq);
    // The report: how many of [lo, hi) arrived.
    let mut q = [0u8; QUERY_LEN];
    UdpHeader {
        kind: UdpKind::Query,
        token: tok,
        seq: 0,
    }
    .write(&mut q);
    q[HDR..HDR + 4].copy_from_slice(&lo.to_be_bytes());
    q[HDR + 4..HDR + 8].copy_from_slice(&hi.to_be_bytes());
    let mut buf = [0u8; REPORT_LEN + 64];
    let timeout = Duration::from_millis(spec.timeout_ms).max(Duration::from_millis(100));
    let no_report = || Error::NoReport {
        target: spec.target,
    };
    // Datagrams still queued at the server: give them a moment before asking.
    std::thread::sleep(Duration::from_millis(20));
    let n = ask(s, &q, &mut buf, UdpKind::Report, tok, 0, timeout)
        .map_err(|source| Error::Connect {
            target: spec.target,
            source,
        })?
        .ok_or_else(no_report)?;
    if n < REPORT_LEN {
        return Err(no_report());
    }
    stats.extra.received = be64(&buf[HDR..]);
    stats.extra.dup = be64(&buf[HDR + 8..]);
    stats.extra.reorder = be64(&buf[HDR + 16..]);
    stats.completed = stats.extra.received;
    stats.bytes = stats.extra.received * len as u64;
    Ok(())
}

/// The server's record of one `udp_stream` flow: which sequences arrived, which twice, which
/// after a higher one (bitmaps indexed by sequence, grown on demand up to [`MAX_TRACKED_SEQ`]).
#[derive(Debug)]
pub(crate) struct SeqTracker {
    /// Sequences received at least once.
    seen: Vec<u64>,
    /// Sequences received more than once.
    dup: Vec<u64>,
    /// Sequences that arrived after a higher one.
    reordered: Vec<u64>,
    /// Highest sequence so far.
    max: Option<u32>,
    /// Every datagram received (also duplicates and untracked ones).
    pub(crate) total: u64,
    /// Last datagram, for evicting idle flows.
    pub(crate) last: Instant,
}

impl SeqTracker {
    /// An empty record.
    pub(crate) fn new(now: Instant) -> SeqTracker {
        SeqTracker {
            seen: Vec::new(),
            dup: Vec::new(),
            reordered: Vec::new(),
            max: None,
            total: 0,
            last: now,
        }
    }

    /// Records the arrival of `seq`.
    pub(crate) fn record(&mut self, seq: u32, now: Instant) {
        self.total += 1;
        self.last = now;
        if seq >= MAX_TRACKED_SEQ {
            return;
        }
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if word >= self.seen.len() {
            let n = (word + 1).next_power_of_two();
            self.seen.resize(n, 0);
            self.dup.resize(n, 0);
            self.reordered.resize(n, 0);
        }
        if self.seen[word] & bit != 0 {
            self.dup[word] |= bit;
            return;
        }
        self.seen[word] |= bit;
        match self.max {
            Some(m) if seq < m => self.reordered[word] |= bit,
            _ => self.max = Some(seq),
        }
    }

    /// (unique received, duplicated, reordered) among the sequences in `[lo, hi)`.
    pub(crate) fn counts(&self, lo: u32, hi: u32) -> (u64, u64, u64) {
        (
            count_range(&self.seen, lo, hi),
            count_range(&self.dup, lo, hi),
            count_range(&self.reordered, lo, hi),
        )
    }
}

/// Set bits of a bitmap in `[lo, hi)`, a word at a time.
fn count_range(bits: &[u64], lo: u32, hi: u32) -> u64 {
    let (lo, hi) = (lo as usize, hi.min(MAX_TRACKED_SEQ) as usize);
    if lo >= hi {
        return 0;
    }
    let (first, last) = (lo / 64, (hi - 1) / 64);
    let mut n = 0;
    for (i, word) in bits.iter().enumerate().take(last + 1).skip(first) {
        let mut mask = u64::MAX;
        if i == first {
            mask &= u64::MAX << (lo % 64);
        }
        if i == last {
            mask &= u64::MAX >> (63 - (hi - 1) % 64);
        }
        n += u64::from((word & mask).count_ones());
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_accounting_loss_reorder_dup() {
        let now = Instant::now();
        let mut t = SeqTracker::new(now);
        // 0..10 sent; 3 lost, 5 and 6 swapped, 8 duplicated, 70 far ahead (grows the bitmap).
        for s in [0, 1, 2, 4, 6, 5, 7, 8, 8, 9, 70] {
            t.record(s, now);
        }
        assert_eq!(t.total, 11);
        assert_eq!(
            t.counts(0, 10),
            (9, 1, 1),
            "received 9 of 10, 8 twice, 5 late"
        );
        assert_eq!(t.counts(5, 6), (1, 0, 1));
        assert_eq!(t.counts(3, 4), (0, 0, 0));
        assert_eq!(t.counts(10, 70), (0, 0, 0));
        assert_eq!(t.counts(0, 71), (10, 1, 1));
        t.record(MAX_TRACKED_SEQ + 5, now);
        assert_eq!(
            t.total, 12,
            "untracked sequences still count as received datagrams"
        );
        assert_eq!(t.counts(0, 71), (10, 1, 1));
        assert_eq!(t.counts(64, 128), (1, 0, 0), "a whole word");
        assert_eq!(t.counts(70, 71), (1, 0, 0));
        assert_eq!(t.counts(71, 1_000_000), (0, 0, 0), "past the bitmap");
        assert_eq!(t.counts(9, 3), (0, 0, 0), "an empty range");
    }

    #[test]
    fn count_range_matches_a_bit_by_bit_count() {
        let bits = [0xdead_beef_0123_4567u64, u64::MAX, 0, 0x8000_0000_0000_0001];
        for lo in 0..260u32 {
            for hi in lo..260u32 {
                let slow = (lo..hi)
                    .filter(|s| {
                        bits.get((s / 64) as usize)
                            .is_some_and(|w| w & (1 << (s % 64)) != 0)
                    })
                    .count() as u64;
                assert_eq!(count_range(&bits, lo, hi), slow, "[{lo}, {hi})");
            }
        }
    }
}
