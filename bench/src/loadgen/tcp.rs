//! The TCP client flows: `tcp_rr` (persistent connection), `tcp_crr` and `tcp_cc` (a connection
//! per transaction) and `tcp_stream` (bulk writes, bytes acknowledged by the server from
//! `TCP_INFO`). Each runs on its own thread, blocking sockets, buffers allocated once per flow.
//! A connection that breaks mid-run is counted as an error and replaced, so a flaky server gives
//! error counts rather than a dead run.

use super::window::{thread_cpu, ErrorKind, FlowStats, Slot, Window};
use super::wire::{Mode, TcpHeader, HDR};
use super::{Close, Spec, Test};
use socket2::{Domain, SockAddr, SockRef, Socket, Type};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// Pause before reconnecting a persistent flow after a failed connect.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(10);

/// A blocking `connect` bounded by `timeout` (`SO_SNDTIMEO`; Linux returns `EINPROGRESS` when it
/// expires), with `TCP_NODELAY` on, then read/write timeouts of `timeout` on the stream.
pub(crate) fn connect(
    target: SocketAddr,
    timeout: Duration,
    nodelay: bool,
) -> io::Result<TcpStream> {
    let s = socket(target, timeout, nodelay)?;
    connect_within(&s, target, timeout)?;
    let s = TcpStream::from(s);
    s.set_read_timeout(Some(timeout))?;
    Ok(s)
}

/// `connect()` on a socket whose `SO_SNDTIMEO` is `timeout`: Linux reports an expired timeout as
/// `EINPROGRESS` ("Operation now in progress"), which says nothing to a reader; it becomes
/// `ETIMEDOUT` with the timeout in the message (still classified as a timeout).
fn connect_within(s: &Socket, target: SocketAddr, timeout: Duration) -> io::Result<()> {
    s.connect(&SockAddr::from(target)).map_err(|e| {
        if e.raw_os_error() == Some(libc::EINPROGRESS) {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "connect to {target} timed out after {} ms",
                    timeout.as_millis()
                ),
            )
        } else {
            e
        }
    })
}

/// An unconnected TCP socket for `target`'s family with `SO_SNDTIMEO` (bounds connect and
/// writes) and optionally `TCP_NODELAY`.
fn socket(target: SocketAddr, timeout: Duration, nodelay: bool) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
    s.set_write_timeout(Some(timeout))?;
    if nodelay {
        s.set_tcp_nodelay(true)?;
    }
    Ok(s)
}

/// The header of a connection for `spec`.
fn header(spec: &Spec, mode: Mode) -> [u8; HDR] {
    TcpHeader {
        mode,
        close: if mode == Mode::Crr {
            spec.close
        } else {
            Close::Server
        },
        req: spec.size,
        resp: if mode == Mode::Stream { 0 } else { spec.size },
    }
    .encode()
}

/// Runs one TCP flow of `spec` over the window; `conn` is the flow's connection made before the
/// barrier (`tcp_rr`, `tcp_stream`), `None` for the per-transaction tests.
pub(crate) fn flow(spec: &Spec, w: &Window, conn: Option<TcpStream>) -> FlowStats {
    let cpu0 = thread_cpu();
    let mut stats = FlowStats::new(w.seconds);
    match spec.test {
        Test::TcpRr => rr(spec, w, conn, &mut stats),
        Test::TcpCrr => crr(spec, w, &mut stats),
        Test::TcpCc => cc(spec, w, &mut stats),
        Test::TcpStream => stream(spec, w, conn, &mut stats),
        Test::UdpRr | Test::UdpStream | Test::UdpMaxRate => {
            unreachable!("UDP tests run in loadgen::udp")
        }
    }
    let wall = w.start.elapsed().as_secs_f64();
    if wall > 0.0 {
        stats.busy = (thread_cpu().saturating_sub(cpu0).as_secs_f64() / wall).min(1.0);
    }
    stats
}

/// Connects again after a broken connection, counting failed attempts, until it works or the
/// run ends (`None`).
fn reconnect(spec: &Spec, w: &Window, stats: &mut FlowStats, nodelay: bool) -> Option<TcpStream> {
    let timeout = Duration::from_millis(spec.timeout_ms);
    loop {
        if Instant::now() >= w.end {
            return None;
        }
        match connect(spec.target, timeout, nodelay) {
            Ok(s) => return Some(s),
            Err(e) => {
                stats.error(w, Instant::now(), ErrorKind::of(&e));
                std::thread::sleep(RECONNECT_BACKOFF);
            }
        }
    }
}

/// `tcp_rr`: write `size` bytes, read exactly `size` bytes, on one connection, back to back.
fn rr(spec: &Spec, w: &Window, conn: Option<TcpStream>, stats: &mut FlowStats) {
    let size = spec.size as usize;
    // The header travels in the same write as a connection's first request.
    let mut req = vec![0x52u8; HDR + size];
    req[..HDR].copy_from_slice(&header(spec, Mode::Rr));
    let mut resp = vec![0u8; size];
    let moved = 2 * u64::from(spec.size);
    let mut conn = conn;
    let mut first = true;
    let mut now = Instant::now();
    while now < w.end {
        let Some(s) = conn.as_mut() else {
            conn = reconnect(spec, w, stats, true);
            first = true;
            now = Instant::now();
            continue;
        };
        let out = if first { &req[..] } else { &req[HDR..] };
        let r = s.write_all(out).and_then(|()| s.read_exact(&mut resp));
        let done = Instant::now();
        match r {
            Ok(()) => {
                stats.complete(w, done, done - now, moved);
                first = false;
            }
            Err(e) => {
                stats.error(w, done, ErrorKind::of(&e));
                conn = None;
            }
        }
        now = done;
    }
}

/// The loop of the per-connection tests (`tcp_crr`, `tcp_cc`): runs `one` (a whole connection,
/// returning its connect latency) until the window ends, each timed from its start to its end and
/// counted with `moved` payload bytes, or counted as an error by kind.
fn connections(
    w: &Window,
    stats: &mut FlowStats,
    moved: u64,
    mut one: impl FnMut() -> io::Result<Duration>,
) {
    let mut now = Instant::now();
    while now < w.end {
        let r = one();
        let done = Instant::now();
        match r {
            Ok(connect) => {
                if stats.complete(w, done, done - now, moved) {
                    stats.connected(w, done, connect);
                }
            }
            Err(e) => stats.error(w, done, ErrorKind::of(&e)),
        }
        now = done;
    }
}

/// `tcp_crr`: `socket()` + `connect()` + request + response + the close order of the spec;
/// latency from before `socket()` to the end of the close, connect latency on its own.
fn crr(spec: &Spec, w: &Window, stats: &mut FlowStats) {
    let size = spec.size as usize;
    let timeout = Duration::from_millis(spec.timeout_ms);
    let mut req = vec![0x43u8; HDR + size];
    req[..HDR].copy_from_slice(&header(spec, Mode::Crr));
    let mut resp = vec![0u8; size];
    let moved = 2 * u64::from(spec.size);
    connections(w, stats, moved, || {
        let s = socket(spec.target, timeout, true)?;
        let tc = Instant::now();
        connect_within(&s, spec.target, timeout)?;
        let connect = tc.elapsed();
        s.set_read_timeout(Some(timeout))?;
        let mut s = TcpStream::from(s);
        s.write_all(&req)?;
        s.read_exact(&mut resp)?;
        match spec.close {
            Close::Server => {
                // The server closes first: wait for its FIN, then close.
                let mut b = [0u8; 1];
                if s.read(&mut b)? != 0 {
                    return Err(io::Error::other("server sent more than the response"));
                }
            }
            Close::Client => {}
            Close::Rst => SockRef::from(&s).set_linger(Some(Duration::ZERO))?,
        }
        drop(s);
        Ok(connect)
    });
}

/// `tcp_cc`: `socket()` + `connect()` + close, no payload. By default (`Close::Server`) the client
/// sends a 16-byte hello (a `Crr` header with no request and no response) and the server closes
/// first, as in `tcp_crr`, so TIME_WAIT lands on the server: with the client closing first, every
/// connection left a TIME_WAIT socket in the client's namespace, its ephemeral ports ran out within
/// a few runs and `connect()` itself slowed to 2-4 ms searching for a free port (measured in the
/// lab), which is not the path's cost. `Close::Client` is the bare connect + close; `Close::Rst`
/// aborts (SO_LINGER 0), leaving no TIME_WAIT anywhere. Connect latency is timed around `connect()`
/// only in every mode.
fn cc(spec: &Spec, w: &Window, stats: &mut FlowStats) {
    let timeout = Duration::from_millis(spec.timeout_ms);
    let hello = TcpHeader {
        mode: Mode::Crr,
        close: Close::Server,
        req: 0,
        resp: 0,
    }
    .encode();
    connections(w, stats, 0, || {
        let s = socket(spec.target, timeout, true)?;
        let tc = Instant::now();
        connect_within(&s, spec.target, timeout)?;
        let connect = tc.elapsed();
        match spec.close {
            Close::Server => {
                s.set_read_timeout(Some(timeout))?;
                let mut s = TcpStream::from(s);
                s.write_all(&hello)?;
                let mut b = [0u8; 1];
                if s.read(&mut b)? != 0 {
                    return Err(io::Error::other("server sent data on a tcp_cc connection"));
                }
            }
            Close::Client => drop(s),
            Close::Rst => s.set_linger(Some(Duration::ZERO))?,
        }
        Ok(connect)
    });
}

/// `(tcpi_bytes_acked, tcpi_total_retrans)` of a connection (zeros if the call fails).
fn acked(s: &TcpStream) -> (u64, u64) {
    ferry_sys::net::tcp_info(s.as_fd())
        .map(|i| (i.tcpi_bytes_acked, u64::from(i.tcpi_total_retrans)))
        .unwrap_or((0, 0))
}

/// Per-connection bookkeeping of `tcp_stream`: what `TCP_INFO` said at the last sample.
#[derive(Debug, Default)]
struct StreamConn {
    /// Bytes acknowledged and retransmits at the last sample that counted.
    base: Option<(u64, u64)>,
    /// Bytes acknowledged at the last per-second sample.
    last_second: u64,
}

/// `tcp_stream`: writes of `size` bytes in a loop; the figure is the bytes the server's kernel
/// acknowledged in the window (`tcpi_bytes_acked` at the window's edges), retransmits from
/// `tcpi_total_retrans`. At the end the client shuts down its side and reads the server's count of
/// bytes read, so the caller can check that every written byte arrived.
fn stream(spec: &Spec, w: &Window, conn: Option<TcpStream>, stats: &mut FlowStats) {
    let size = spec.size as usize;
    let mut first_buf = vec![0x53u8; HDR + size];
    first_buf[..HDR].copy_from_slice(&header(spec, Mode::Stream));
    let buf = vec![0x53u8; size];
    let mut conn = conn;
    let mut first = true;
    let mut st = StreamConn::default();
    let mut next_second = w.warm_end + Duration::from_secs(1);
    let last_second = w.warm_end + Duration::from_secs(w.seconds as u64);
    let mut in_window = false;
    loop {
        let now = Instant::now();
        if !in_window && now >= w.warm_end && now < w.win_end {
            in_window = true;
            if let Some(s) = &conn {
                let a = acked(s);
                st.base = Some(a);
                st.last_second = a.0;
            }
        }
        if now >= w.end {
            break;
        }
        let Some(s) = conn.as_mut() else {
            conn = reconnect(spec, w, stats, false);
            first = true;
            if let Some(s) = &conn {
                let a = acked(s);
                st = StreamConn {
                    base: (in_window && Instant::now() < w.win_end).then_some(a),
                    last_second: a.0,
                };
            }
            continue;
        };
        let out = if first { &first_buf[..] } else { &buf[..] };
        let r = s.write_all(out);
        let done = Instant::now();
        match r {
            Ok(()) => {
                stats.extra.written += out.len() as u64;
                first = false;
                if matches!(w.slot(done), Slot::In(_)) {
                    stats.completed += 1;
                }
                // Per-second buckets: bytes acknowledged since the previous boundary (a write
                // that blocked across several boundaries credits its bytes to the first).
                while done >= next_second && next_second <= last_second {
                    let (a, _) = acked(s);
                    let just_before = next_second - Duration::from_nanos(1);
                    stats.add_to_second(w, just_before, a.saturating_sub(st.last_second));
                    st.last_second = a;
                    next_second += Duration::from_secs(1);
                }
                if in_window && done >= w.win_end {
                    in_window = false;
                    close_window(s, &mut st, stats);
                }
            }
            Err(e) => {
                stats.error(w, done, ErrorKind::of(&e));
                if in_window {
                    close_window(s, &mut st, stats);
                    if done >= w.win_end {
                        in_window = false;
                    }
                }
                conn = None;
            }
        }
    }
    if let Some(mut s) = conn {
        if in_window {
            close_window(&s, &mut st, stats);
        }
        // Tell the server we are done and read how much it read.
        let mut total = [0u8; 8];
        let r = s
            .shutdown(Shutdown::Write)
            .and_then(|()| s.read_exact(&mut total));
        match r {
            Ok(()) => stats.extra.server_read += u64::from_be_bytes(total),
            Err(e) => stats.error(w, Instant::now(), ErrorKind::of(&e)),
        }
    }
}

/// Adds the bytes acknowledged and retransmits since the window started (or since this
/// connection joined it) to the flow's totals.
fn close_window(s: &TcpStream, st: &mut StreamConn, stats: &mut FlowStats) {
    if let Some((bytes0, retrans0)) = st.base.take() {
        let (bytes1, retrans1) = acked(s);
        stats.bytes += bytes1.saturating_sub(bytes0);
        stats.retrans += retrans1.saturating_sub(retrans0);
    }
}
