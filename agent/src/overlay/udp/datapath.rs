//! The udp datapath: one worker thread per TUN queue + UDP socket pair, and their hot loops
//! (`poll`, `read` / `write` on the TUN queue, `sendmmsg` / `recvmmsg`, and with offloads
//! `sendmsg` with `UDP_SEGMENT` / `recvmsg` with `UDP_GRO`). Setup (opening the queues, the
//! sockets, persistence) goes through `ferry-sys` in [`super::tun`] and [`super::socket`]; what
//! stays here is the per-packet syscalls next to the buffers they point into.

#![allow(
    unsafe_code,
    reason = "the UDP datapath's hot loop: batched syscalls over mmsghdr / msghdr / cmsg arrays \
              that point into this module's own buffers (Batch), kept next to them rather than \
              behind a per-packet wrapper in ferry-sys; every block has its SAFETY line"
)]

use super::offload;
use super::socket::udp_socket;
use super::tun::{open_queue, set_persist};
use super::{ipv4_addrs, Stats, Table, UdpError, PORT};
use ferry_sys::net::sockaddr_in;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

/// Packets per batch (one `sendmmsg` / `recvmmsg`).
const BATCH: usize = 64;
/// Buffer per packet: enough for a 9000-byte underlay (jumbo frames) and then some.
const BUF: usize = 9216;
/// How often idle workers look at the stop flag.
const POLL_MS: i32 = 200;

/// The running datapath: worker threads, each with one TUN queue and one UDP socket. Dropping it
/// stops the workers (within [`POLL_MS`]); the persistent device stays.
#[derive(Debug)]
pub struct Datapath {
    local: Ipv4Addr,
    offload: bool,
    table: Arc<RwLock<Arc<Table>>>,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    /// Packet counters.
    pub stats: Arc<Stats>,
}

impl Datapath {
    /// Attaches `threads` queues to [`DEVICE`](super::DEVICE) (creating it, persistent), binds
    /// one socket per queue to `local:8285` and starts the workers with an empty peer table.
    pub fn start(local: Ipv4Addr, threads: usize) -> Result<Datapath, UdpError> {
        match Self::start_with(local, threads, true) {
            Err(UdpError::Offload(e)) => {
                tracing::warn!(error = %e, "TUN offloads unavailable: one packet per read/write");
                Self::start_with(local, threads, false)
            }
            other => other,
        }
    }

    fn start_with(local: Ipv4Addr, threads: usize, offload: bool) -> Result<Datapath, UdpError> {
        let mut queues = Vec::new();
        for _ in 0..threads.max(1) {
            queues.push((open_queue(offload)?, udp_socket(local, offload)?));
        }
        set_persist(&queues[0].0)?;
        let table = Arc::new(RwLock::new(Arc::new(Table::default())));
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let workers = queues
            .into_iter()
            .enumerate()
            .map(|(i, (tun, sock))| {
                let w = Worker {
                    tun: OwnedFd::from(tun),
                    sock,
                    table: table.clone(),
                    stop: stop.clone(),
                    stats: stats.clone(),
                    offload,
                };
                std::thread::Builder::new()
                    .name(format!("ferry-udp-{i}"))
                    .spawn(move || w.run())
                    .expect("spawning a datapath thread")
            })
            .collect();
        Ok(Datapath {
            local,
            offload,
            table,
            stop,
            workers,
            stats,
        })
    }

    /// The address the sockets are bound to.
    pub fn local(&self) -> Ipv4Addr {
        self.local
    }

    /// Whether the TUN offloads (TSO / GSO / GRO) are on.
    pub fn offload(&self) -> bool {
        self.offload
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    /// Replaces the peer table (workers pick it up with their next batch).
    pub fn set_table(&self, table: Table) {
        let mut t = self.table.write().unwrap_or_else(|e| e.into_inner());
        if **t != table {
            *t = Arc::new(table);
        }
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

struct Worker {
    tun: OwnedFd,
    sock: OwnedFd,
    table: Arc<RwLock<Arc<Table>>>,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    offload: bool,
}

/// Buffers and message headers for one batch; the headers point into `bufs`, `iov` and
/// `addrs`, which are heap allocations that never move or grow after [`Batch::new`].
struct Batch {
    bufs: Vec<Vec<u8>>,
    iov: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_in>,
    msgs: Vec<libc::mmsghdr>,
}

impl Batch {
    #[expect(
        clippy::cast_possible_truncation,
        reason = "size_of::<sockaddr_in>() is 16 bytes: it fits msg_namelen (u32)"
    )]
    fn new() -> Batch {
        let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; BUF]).collect();
        let mut iov: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        let mut addrs = vec![sockaddr_in(Ipv4Addr::UNSPECIFIED, 0); BATCH];
        let msgs = (0..BATCH)
            .map(|i| {
                // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths).
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_name = std::ptr::from_mut(&mut addrs[i]).cast();
                h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
                h.msg_hdr.msg_iov = std::ptr::from_mut(&mut iov[i]);
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        Batch {
            bufs,
            iov,
            addrs,
            msgs,
        }
    }
}

impl Worker {
    /// `poll` entries for the TUN queue (index 0) and the UDP socket (index 1).
    fn pollfds(&self) -> [libc::pollfd; 2] {
        [self.tun.as_raw_fd(), self.sock.as_raw_fd()].map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
    }

    fn run(self) {
        if self.offload {
            return self.run_offload();
        }
        let mut out = Batch::new();
        let mut inb = Batch::new();
        let mut fds = self.pollfds();
        while !self.stop.load(Ordering::Relaxed) {
            // SAFETY: fds is a valid array of two pollfd structs.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, POLL_MS) };
            if n <= 0 {
                continue;
            }
            let table = self.table.read().unwrap_or_else(|e| e.into_inner()).clone();
            if fds[0].revents & libc::POLLIN != 0 {
                self.tun_to_udp(&mut out, &table);
            }
            if fds[1].revents & libc::POLLIN != 0 {
                self.udp_to_tun(&mut inb, &table);
            }
            if fds
                .iter()
                .any(|f| f.revents & (libc::POLLERR | libc::POLLNVAL) != 0)
            {
                std::thread::sleep(Duration::from_millis(u64::from(POLL_MS.unsigned_abs())));
            }
        }
    }

    /// Reads up to [`BATCH`] packets from the TUN queue and sends them with one `sendmmsg`.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "count - sent is at most BATCH (64): it fits the c_uint vlen of sendmmsg"
    )]
    fn tun_to_udp(&self, b: &mut Batch, table: &Table) {
        let mut count = 0;
        let mut dropped = 0;
        for _ in 0..BATCH {
            let buf = &mut b.bufs[count];
            // SAFETY: buf is a valid writable buffer of buf.len() bytes.
            let n = unsafe { libc::read(self.tun.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            let n = n.unsigned_abs();
            let Some(peer) = ipv4_addrs(&buf[..n]).and_then(|(_, dst)| table.next_hop(dst)) else {
                dropped += 1;
                continue;
            };
            b.addrs[count] = sockaddr_in(peer, PORT);
            b.iov[count].iov_len = n;
            count += 1;
        }
        if dropped > 0 {
            self.stats.no_route.fetch_add(dropped, Ordering::Relaxed);
        }
        let mut sent = 0;
        while sent < count {
            // SAFETY: msgs[sent..count] are valid mmsghdrs whose pointers reference live
            // buffers (see Batch); the length passed matches.
            let rc = unsafe {
                libc::sendmmsg(
                    self.sock.as_raw_fd(),
                    b.msgs[sent..].as_mut_ptr(),
                    (count - sent) as libc::c_uint,
                    0,
                )
            };
            if rc > 0 {
                sent += rc.unsigned_abs() as usize;
                continue;
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EAGAIN) {
                // Socket buffer full: wait for room (backpressure instead of dropping).
                let mut p = libc::pollfd {
                    fd: self.sock.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: p is a valid pollfd.
                unsafe { libc::poll(&mut p, 1, 10) };
                continue;
            }
            // Unreachable peer, ICMP error reported on the socket, ...: drop this packet.
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            sent += 1;
        }
        self.stats.tx.fetch_add(count as u64, Ordering::Relaxed);
        let bytes: usize = b.iov[..count].iter().map(|v| v.iov_len).sum();
        self.stats
            .tx_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        for i in 0..count {
            b.iov[i].iov_len = BUF;
        }
    }

    /// Receives up to [`BATCH`] datagrams with one `recvmmsg` and writes the accepted ones to the
    /// TUN queue.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "size_of::<sockaddr_in>() (16) and BATCH (64) fit msg_namelen (u32) and the c_uint vlen"
    )]
    fn udp_to_tun(&self, b: &mut Batch, table: &Table) {
        for m in &mut b.msgs {
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            m.msg_hdr.msg_flags = 0;
        }
        // SAFETY: msgs are valid mmsghdrs pointing at live buffers of iov_len bytes (see Batch).
        let rc = unsafe {
            libc::recvmmsg(
                self.sock.as_raw_fd(),
                b.msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc <= 0 {
            return;
        }
        let (mut rx, mut rx_bytes, mut rejected, mut errors) = (0, 0, 0, 0);
        for i in 0..rc.unsigned_abs() as usize {
            let len = b.msgs[i].msg_len as usize;
            let from = Ipv4Addr::from(u32::from_be(b.addrs[i].sin_addr.s_addr));
            let pkt = &b.bufs[i][..len.min(BUF)];
            let ok = b.msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC == 0
                && ipv4_addrs(pkt).is_some_and(|(src, dst)| table.accept(from, src, dst));
            if !ok {
                rejected += 1;
                continue;
            }
            // SAFETY: pkt is a valid readable buffer of pkt.len() bytes.
            let n = unsafe { libc::write(self.tun.as_raw_fd(), pkt.as_ptr().cast(), pkt.len()) };
            if n < 0 {
                errors += 1;
            } else {
                rx += 1;
                rx_bytes += pkt.len() as u64;
            }
        }
        self.stats.rx.fetch_add(rx, Ordering::Relaxed);
        self.stats.rx_bytes.fetch_add(rx_bytes, Ordering::Relaxed);
        self.stats.rejected.fetch_add(rejected, Ordering::Relaxed);
        self.stats.errors.fetch_add(errors, Ordering::Relaxed);
    }
}

impl Worker {
    /// The offload loop: super-packets from the TUN device, UDP GSO out, UDP GRO in, coalesced
    /// GSO writes into the TUN device (see [`offload`]).
    fn run_offload(self) {
        let mut rbuf = vec![0u8; offload::VNET_HDR_LEN + offload::MAX_PACKET];
        let mut out = offload::GsoQueue::new();
        let mut ibuf = vec![0u8; offload::MAX_PACKET];
        let mut coalescer = offload::Coalescer::new();
        let mut fds = self.pollfds();
        while !self.stop.load(Ordering::Relaxed) {
            // SAFETY: fds is a valid array of two pollfd structs.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, POLL_MS) };
            if n <= 0 {
                continue;
            }
            let table = self.table.read().unwrap_or_else(|e| e.into_inner()).clone();
            if fds[0].revents & libc::POLLIN != 0 {
                self.tun_to_udp_gso(&mut rbuf, &mut out, &table);
            }
            if fds[1].revents & libc::POLLIN != 0 {
                self.udp_to_tun_gro(&mut ibuf, &mut coalescer, &table);
            }
            if fds
                .iter()
                .any(|f| f.revents & (libc::POLLERR | libc::POLLNVAL) != 0)
            {
                std::thread::sleep(Duration::from_millis(u64::from(POLL_MS.unsigned_abs())));
            }
        }
    }

    /// Reads up to [`BATCH`] packets from the TUN queue and sends their wire segments as UDP GSO
    /// batches, grouped across reads by [`offload::GsoQueue`] (one `sendmsg` per 48 segments
    /// instead of two per 64 KiB super-packet). Nothing is kept past the batch.
    fn tun_to_udp_gso(
        &self,
        rbuf: &mut [u8],
        out: &mut offload::GsoQueue<Ipv4Addr>,
        table: &Table,
    ) {
        let mut send =
            |peer: Ipv4Addr, data: &[u8], stride: usize| self.send_gso(peer, data, stride);
        for _ in 0..BATCH {
            // SAFETY: rbuf is a valid writable buffer of rbuf.len() bytes.
            let n =
                unsafe { libc::read(self.tun.as_raw_fd(), rbuf.as_mut_ptr().cast(), rbuf.len()) };
            if n <= 0 {
                break;
            }
            let start = out.buf.len();
            let Some((stride, count)) =
                offload::tx_packets(&mut rbuf[..n.unsigned_abs()], &mut out.buf)
            else {
                out.buf.truncate(start);
                self.stats.no_route.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let Some(peer) = ipv4_addrs(&out.buf[start..]).and_then(|(_, dst)| table.next_hop(dst))
            else {
                out.buf.truncate(start);
                self.stats
                    .no_route
                    .fetch_add(count as u64, Ordering::Relaxed);
                continue;
            };
            self.stats.tx.fetch_add(count as u64, Ordering::Relaxed);
            self.stats
                .tx_bytes
                .fetch_add((out.buf.len() - start) as u64, Ordering::Relaxed);
            out.commit(start, peer, stride, &mut send);
        }
        out.flush(&mut send);
    }

    /// Sends `data` (segments of `stride` bytes, the last maybe shorter) to `peer:8285`, as UDP
    /// GSO when there is more than one segment. Waits for socket buffer room.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "size_of::<sockaddr_in>() is 16; stride is one segment's length, at most MAX_PACKET (65535), so it fits the u16 UDP_SEGMENT payload"
    )]
    fn send_gso(&self, peer: Ipv4Addr, data: &[u8], stride: usize) {
        let mut addr = sockaddr_in(peer, PORT);
        let mut iov = libc::iovec {
            iov_base: data.as_ptr().cast_mut().cast(),
            iov_len: data.len(),
        };
        let mut cmsg_buf = [0u64; 4];
        // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = std::ptr::from_mut(&mut addr).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if data.len() > stride {
            msg.msg_control = cmsg_buf.as_mut_ptr().cast();
            // SAFETY: CMSG_SPACE only computes a size.
            msg.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as usize;
            // SAFETY: msg_control points at cmsg_buf (32 bytes, 8-aligned), large enough for
            // one cmsghdr with a u16 payload (CMSG_SPACE(2) = 24 bytes).
            unsafe {
                let c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = libc::SOL_UDP;
                (*c).cmsg_type = libc::UDP_SEGMENT;
                (*c).cmsg_len = libc::CMSG_LEN(2) as usize;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), stride as u16);
            }
        }
        loop {
            // SAFETY: msg references live buffers (addr, iov -> data, cmsg_buf) for the call.
            let rc = unsafe { libc::sendmsg(self.sock.as_raw_fd(), &msg, 0) };
            if rc >= 0 {
                return;
            }
            if io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN) {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let mut p = libc::pollfd {
                fd: self.sock.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            };
            // SAFETY: p is a valid pollfd.
            unsafe { libc::poll(&mut p, 1, 10) };
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
        }
    }

    #[expect(
        clippy::cast_possible_truncation,
        reason = "size_of::<sockaddr_in>() is 16 bytes: it fits msg_namelen (u32)"
    )]
    fn udp_to_tun_gro(&self, ibuf: &mut [u8], coalescer: &mut offload::Coalescer, table: &Table) {
        let (mut rx, mut rx_bytes, mut rejected, mut errors) = (0u64, 0u64, 0u64, 0u64);
        let tun = self.tun.as_raw_fd();
        let mut write = |b: &[u8]| {
            // SAFETY: b is a valid readable buffer of b.len() bytes.
            if unsafe { libc::write(tun, b.as_ptr().cast(), b.len()) } < 0 {
                errors += 1;
            }
        };
        for _ in 0..BATCH {
            let mut addr = sockaddr_in(Ipv4Addr::UNSPECIFIED, 0);
            let mut iov = libc::iovec {
                iov_base: ibuf.as_mut_ptr().cast(),
                iov_len: ibuf.len(),
            };
            let mut cmsg_buf = [0u64; 8];
            // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths).
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = std::ptr::from_mut(&mut addr).cast();
            msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cmsg_buf.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&cmsg_buf);
            // SAFETY: msg references live buffers (addr, iov -> ibuf, cmsg_buf) for the call.
            let n = unsafe { libc::recvmsg(self.sock.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
            if n <= 0 {
                break;
            }
            let n = n.unsigned_abs();
            let mut seg = n;
            // SAFETY: the kernel filled msg_control / msg_controllen; CMSG_* walk within it.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&msg);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == libc::UDP_GRO {
                        let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                        seg = usize::try_from(v).unwrap_or(n).max(1);
                    }
                    c = libc::CMSG_NXTHDR(&msg, c);
                }
            }
            if msg.msg_flags & libc::MSG_TRUNC != 0 {
                rejected += 1;
                continue;
            }
            let from = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
            let sender = table.sender(from);
            for p in ibuf[..n].chunks(seg) {
                let ok = sender
                    .is_some_and(|s| ipv4_addrs(p).is_some_and(|(src, dst)| s.admits(src, dst)));
                if ok {
                    coalescer.push(p, &mut write);
                    rx += 1;
                    rx_bytes += p.len() as u64;
                } else {
                    rejected += 1;
                }
            }
        }
        coalescer.flush(&mut write);
        self.stats.rx.fetch_add(rx, Ordering::Relaxed);
        self.stats.rx_bytes.fetch_add(rx_bytes, Ordering::Relaxed);
        self.stats.rejected.fetch_add(rejected, Ordering::Relaxed);
        self.stats.errors.fetch_add(errors, Ordering::Relaxed);
    }
}
