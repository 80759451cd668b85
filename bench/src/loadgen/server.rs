//! The generator's server: TCP and UDP on one port, answering every test (wire format in the
//! [`super`] module header).
//!
//! TCP: [`ACCEPTORS`] threads share the listener. An acceptor reads a connection's header (and
//! whatever part of the first request came with it) and serves short connections (`tcp_crr`, and
//! `tcp_cc`, which sends nothing) itself, so no thread is created per short connection; a
//! persistent connection (`tcp_rr`, `tcp_stream`) gets a thread of its own. UDP: one thread
//! echoes `udp_rr` requests and keeps a [`SeqTracker`] per `udp_stream` flow token.
//!
//! A client that dies, stalls or sends a malformed header only ends its own connection (with a
//! line on stderr for a malformed one); the server keeps serving.

use super::udp::SeqTracker;
use super::wire::{be32, Mode, TcpHeader, UdpHeader, UdpKind, HDR, QUERY_LEN, REPORT_LEN};
use super::Close;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Threads accepting TCP connections (and serving the short ones).
pub const ACCEPTORS: usize = 4;
/// How long an acceptor waits for a new connection's header before dropping it.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a persistent connection may stay silent before the server drops it.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the UDP thread looks at the stop flag.
const UDP_POLL: Duration = Duration::from_millis(200);
/// `udp_stream` flows not heard from for this long are forgotten.
const UDP_FLOW_TTL: Duration = Duration::from_secs(120);
/// Accept queue length asked for.
const BACKLOG: i32 = 4096;
/// UDP receive buffer asked for, bytes.
const UDP_RCVBUF: i32 = 4 << 20;
/// Stack of a persistent connection's thread.
const CONN_STACK: usize = 256 << 10;

/// A bound, not yet serving, generator server.
#[derive(Debug)]
pub struct Server {
    tcp: TcpListener,
    udp: UdpSocket,
}

/// State the server's threads share.
#[derive(Debug, Default)]
struct Shared {
    /// Set by [`ServerHandle::stop`].
    stop: AtomicBool,
    /// Persistent connections in service, so a stop can cut them.
    conns: Mutex<HashMap<u64, Arc<TcpStream>>>,
    /// Next key of `conns`.
    next_id: AtomicU64,
}

impl Server {
    /// Binds TCP and UDP on `addr`. With port 0 the kernel picks the TCP port and UDP takes the
    /// same one (retried a few times should that UDP port be taken).
    pub fn bind(addr: SocketAddr) -> io::Result<Server> {
        let mut last = None;
        for _ in 0..16 {
            let tcp = listener(addr)?;
            let port = tcp.local_addr()?.port();
            match UdpSocket::bind(SocketAddr::new(addr.ip(), port)) {
                Ok(udp) => {
                    big_receive_buffer(&udp);
                    return Ok(Server { tcp, udp });
                }
                Err(e) if addr.port() == 0 && e.kind() == io::ErrorKind::AddrInUse => {
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no port free for both TCP and UDP")))
    }

    /// The address it listens on (both protocols).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Starts serving on background threads; the server stops when the handle is stopped or
    /// dropped.
    pub fn spawn(self) -> io::Result<ServerHandle> {
        let addr = self.local_addr()?;
        let shared = Arc::new(Shared::default());
        let mut threads = Vec::new();
        for i in 0..ACCEPTORS {
            let l = self.tcp.try_clone()?;
            let sh = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("bench-accept-{i}"))
                    .spawn(move || accept_loop(&l, &sh))?,
            );
        }
        self.udp.set_read_timeout(Some(UDP_POLL))?;
        let udp = self.udp;
        let sh = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("bench-udp".into())
                .spawn(move || udp_loop(&udp, &sh))?,
        );
        Ok(ServerHandle {
            addr,
            listener: self.tcp,
            shared,
            threads,
        })
    }
}

/// A TCP listener with a deep accept queue ([`BACKLOG`], capped by `net.core.somaxconn`), so
/// connection bursts of `tcp_crr` / `tcp_cc` do not lose SYNs while the acceptors are busy.
fn listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    Ok(s.into())
}

/// Raises the UDP receive buffer to [`UDP_RCVBUF`] (`SO_RCVBUFFORCE` as root, else `SO_RCVBUF`
/// up to `net.core.rmem_max`), so a server thread that is briefly descheduled does not drop a
/// paced stream's datagrams; best effort.
fn big_receive_buffer(u: &UdpSocket) {
    use std::os::fd::AsFd as _;
    if ferry_sys::net::set_int_opt(
        u.as_fd(),
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        UDP_RCVBUF,
    )
    .is_err()
    {
        let _ = socket2::SockRef::from(u).set_recv_buffer_size(UDP_RCVBUF.unsigned_abs() as usize);
    }
}

/// A running server. Dropping it stops it (see [`ServerHandle::stop`]).
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    listener: TcpListener,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl ServerHandle {
    /// The address it serves on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops like a killed server would look to clients: the listener closes (new connections
    /// are refused), persistent connections are shut down (clients read EOF), the UDP socket
    /// closes. Waits for the acceptor and UDP threads.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Blocks while the server runs (for ever, unless another thread stops it).
    pub fn wait(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    fn shutdown(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.shared.stop.store(true, Ordering::SeqCst);
        // shutdown() of a listening socket wakes every thread blocked in accept() (EINVAL) and
        // refuses new connections; unlike connecting to it, this works from any namespace.
        let _ = socket2::SockRef::from(&self.listener).shutdown(Shutdown::Both);
        let conns = self
            .shared
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for c in conns.values() {
            let _ = c.shutdown(Shutdown::Both);
        }
        drop(conns);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Binds every address of `addrs` (one server each: the lab's bench pods answer on a port for the
/// direct paths and another for their Services, see `docs/bench.md`), prints `ready <addr>` on
/// stdout for each (what the lab waits for) and serves until the process ends.
pub fn serve(addrs: &[SocketAddr]) -> io::Result<()> {
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no address to listen on",
        ));
    }
    let mut handles = Vec::with_capacity(addrs.len());
    let mut bound = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let server = Server::bind(*addr)?;
        bound.push(server.local_addr()?);
        handles.push(server.spawn()?);
    }
    let mut out = io::stdout().lock();
    for b in &bound {
        writeln!(out, "ready {b}")?;
    }
    out.flush()?;
    drop(out);
    for h in handles {
        h.wait();
    }
    Ok(())
}

/// One acceptor: accept, read the header, serve or hand over.
fn accept_loop(l: &TcpListener, sh: &Arc<Shared>) {
    loop {
        let accepted = l.accept();
        if sh.stop.load(Ordering::SeqCst) {
            return;
        }
        match accepted {
            Ok((s, peer)) => {
                if let Err(e) = first(s, sh) {
                    if e.kind() == io::ErrorKind::InvalidData {
                        eprintln!("bench-agent: dropped a connection from {peer}: {e}");
                    }
                }
            }
            Err(e) => {
                // EMFILE and friends: do not spin.
                eprintln!("bench-agent: accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Reads a new connection's header and serves it (a malformed header is an `InvalidData` error).
fn first(mut s: TcpStream, sh: &Arc<Shared>) -> io::Result<()> {
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(HEADER_TIMEOUT))?;
    let mut buf = [0u8; HDR + 4096];
    let mut n = 0;
    while n < HDR {
        let r = s.read(&mut buf[n..])?;
        if r == 0 {
            // `tcp_cc` and probes connect and close without a byte; a torn header is dropped.
            return Ok(());
        }
        n += r;
    }
    let mut h = [0u8; HDR];
    h.copy_from_slice(&buf[..HDR]);
    let hdr =
        TcpHeader::decode(&h).map_err(|why| io::Error::new(io::ErrorKind::InvalidData, why))?;
    let early = (n - HDR) as u64;
    match hdr.mode {
        Mode::Crr => crr(s, &hdr, early),
        Mode::Rr | Mode::Stream => {
            let s = Arc::new(s);
            let id = sh.next_id.fetch_add(1, Ordering::Relaxed);
            sh.conns
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id, s.clone());
            let sh2 = sh.clone();
            let spawned = std::thread::Builder::new()
                .name("bench-conn".into())
                .stack_size(CONN_STACK)
                .spawn(move || {
                    let _ = if hdr.mode == Mode::Rr {
                        rr(&s, &hdr, early)
                    } else {
                        stream(&s, early + HDR as u64)
                    };
                    sh2.conns
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&id);
                });
            if let Err(e) = spawned {
                sh.conns
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
                return Err(e);
            }
            Ok(())
        }
    }
}

/// `tcp_rr`: for every `req` bytes read, one `resp`-byte response (so a client may also keep
/// several requests in flight). Ends at EOF.
fn rr(s: &TcpStream, hdr: &TcpHeader, early: u64) -> io::Result<()> {
    let mut s = s;
    s.set_read_timeout(Some(IDLE_TIMEOUT))?;
    let req = u64::from(hdr.req);
    let resp = vec![0x72u8; hdr.resp as usize];
    let mut buf = vec![0u8; (hdr.req as usize).clamp(64, 1 << 16)];
    let mut pending = early;
    loop {
        while pending >= req {
            s.write_all(&resp)?;
            pending -= req;
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        pending += n as u64;
    }
}

/// `tcp_crr`: one request, one response, then the header's close order: the server closes first
/// (`Server`), or waits for the client's close or reset.
fn crr(mut s: TcpStream, hdr: &TcpHeader, early: u64) -> io::Result<()> {
    let req = u64::from(hdr.req);
    let mut pending = early;
    let mut buf = [0u8; 4096];
    while pending < req {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        pending += n as u64;
    }
    let resp = vec![0x63u8; hdr.resp as usize];
    s.write_all(&resp)?;
    match hdr.close {
        Close::Server => Ok(()),
        Close::Client | Close::Rst => {
            while s.read(&mut buf)? != 0 {}
            Ok(())
        }
    }
}

/// `tcp_stream`: read and count until EOF, then write the count (all bytes of the connection,
/// header included) as 8 bytes.
fn stream(s: &TcpStream, already: u64) -> io::Result<()> {
    let mut s = s;
    s.set_read_timeout(Some(IDLE_TIMEOUT))?;
    let mut buf = vec![0u8; 256 << 10];
    let mut total = already;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    s.write_all(&total.to_be_bytes())
}

/// The UDP side: echo `udp_rr`, account `udp_stream`, answer report queries.
fn udp_loop(u: &UdpSocket, sh: &Shared) {
    let mut buf = vec![0u8; 65536];
    let mut flows: HashMap<u32, SeqTracker> = HashMap::new();
    while !sh.stop.load(Ordering::SeqCst) {
        let (n, peer) = match u.recv_from(&mut buf) {
            Ok(r) => r,
            // The poll timeout, or an ICMP error of an earlier reply: keep going.
            Err(_) => continue,
        };
        let Ok(h) = UdpHeader::read(&buf[..n]) else {
            continue;
        };
        let now = Instant::now();
        match h.kind {
            UdpKind::Rr => {
                let _ = u.send_to(&buf[..n], peer);
            }
            UdpKind::Data => {
                if !flows.contains_key(&h.token) && flows.len() >= 256 {
                    flows.retain(|_, f| now.duration_since(f.last) < UDP_FLOW_TTL);
                }
                flows
                    .entry(h.token)
                    .or_insert_with(|| SeqTracker::new(now))
                    .record(h.seq, now);
            }
            UdpKind::Query if n >= QUERY_LEN => {
                let (lo, hi) = (be32(&buf[HDR..]), be32(&buf[HDR + 4..]));
                let (got, dup, reorder, total) = flows.get(&h.token).map_or((0, 0, 0, 0), |f| {
                    let (g, d, r) = f.counts(lo, hi);
                    (g, d, r, f.total)
                });
                let mut out = [0u8; REPORT_LEN];
                UdpHeader {
                    kind: UdpKind::Report,
                    token: h.token,
                    seq: 0,
                }
                .write(&mut out);
                for (i, v) in [got, dup, reorder, total].into_iter().enumerate() {
                    out[HDR + 8 * i..HDR + 8 * i + 8].copy_from_slice(&v.to_be_bytes());
                }
                let _ = u.send_to(&out, peer);
            }
            UdpKind::Query | UdpKind::Report => {}
        }
    }
}
