//! The `udp` backend: userspace encapsulation for underlays that block VXLAN, wire-compatible
//! with flannel's `udp` backend (UDP port 8285, the payload is the bare inner IPv4 packet, no
//! extra header), but multi-threaded and batched.
//!
//! ```text
//! pod ─► ferry0 ─► route <peer podCIDR> dev ferry.udp proto 78 ─► TUN queue k ─► worker k
//!     worker k: read() up to 64 packets, inner dst ─► peer public IP (snapshot table),
//!               one sendmmsg() from <node ip>:8285 ─► peer:8285
//! peer:8285 ─► SO_REUSEPORT socket k ─► worker k: one recvmmsg() for up to 64 datagrams,
//!               drop unless the sender is a known peer, the inner source lies in that peer's
//!               podCIDR and the inner destination in ours; write() into TUN queue k
//! ```
//!
//! The device `ferry.udp` is a TUN device (`IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE`) with one
//! queue and one `SO_REUSEPORT` UDP socket per worker thread (`min(available_parallelism, 4)`
//! workers), so the kernel spreads flows over the workers in both directions and no lock is
//! taken per packet: each batch reads the peer table through one `RwLock` read of an `Arc`
//! snapshot that reconciliation replaces as a whole. The device carries the node podCIDR's
//! network address as a /32 (like flannel's `flannel0`) and MTU = underlay MTU - 28 (IPv4 20 +
//! UDP 8); every peer gets one route `<peer podCIDR> dev ferry.udp proto 78`, reconciled like the
//! host-gw routes (level-triggered, stale routes of our protocol deleted).
//!
//! **Parsing.** Headers are read through `pnet_packet`'s zero-copy views (`Ipv4Packet` for the
//! inner addresses here, `Ipv4Packet` / `TcpPacket` in [`offload`]: bounds-checked getters over
//! the packet buffer, no copy, no allocation). What the datapath writes (TSO segmentation, GRO
//! coalescing, checksums) stays hand-written in [`offload`].
//!
//! **Restart.** The device is made persistent (`TUNSETPERSIST`), so it, its address and the
//! routes through it survive the agent process; a restarted agent re-attaches its queues to the
//! same device (same ifindex, nothing rewritten). While no agent is attached (after `kill -9`,
//! before the new agent's first round), the kernel drops what is routed into `ferry.udp`
//! (counted as the device's TX drops), packets that were queued on the TUN queues or in the UDP
//! sockets' receive buffers die with the process, and datagrams arriving at port 8285 are
//! answered with ICMP port unreachable. TCP retransmits across the gap; UDP datagrams sent in it
//! are lost. `ferry-agent uninstall` deletes the device.

mod offload;

use crate::hostgw::{self, PeerRoute, Skip};
use crate::netlink::{Netlink, NlError, Route4};
use crate::node::{NodeInfo, ANN_BACKEND_TYPE};
use ipnetwork::Ipv4Network;
use pnet_packet::ipv4::Ipv4Packet;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

/// Name of the TUN device (flannel's is `flannel0`).
pub const DEVICE: &str = "ferry.udp";
/// UDP port of the tunnel (flannel's default for its `udp` backend).
pub const PORT: u16 = 8285;
/// Encapsulation overhead: outer IPv4 20 + UDP 8.
pub const OVERHEAD: u32 = 28;
/// The name published in `flannel.alpha.coreos.com/backend-type`.
pub const BACKEND: &str = "udp";
/// Packets per batch (one `sendmmsg` / `recvmmsg`).
const BATCH: usize = 64;
/// Buffer per packet: enough for a 9000-byte underlay (jumbo frames) and then some.
const BUF: usize = 9216;
/// How often idle workers look at the stop flag.
const POLL_MS: i32 = 200;

/// The worker threads this machine gets: `min(available_parallelism, 4)`.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// What [`desired`] returns: routes keyed by destination, the `(podCIDR, public IP)` of every
/// served peer, and the skipped peers with the reason.
pub type Desired = (
    BTreeMap<Ipv4Network, PeerRoute>,
    Vec<(Ipv4Network, Ipv4Addr)>,
    Vec<(String, Skip)>,
);

/// The routes this node wants (`<peer podCIDR> dev <tun> proto 78`, keyed by destination), the
/// `(podCIDR, public IP)` of every peer for the datapath, and the peers that get nothing. Only
/// peers that published `backend-type: udp` are served: a VXLAN or host-gw peer would not
/// understand the datagrams.
pub fn desired(nodes: &[NodeInfo], own: &str, tun: u32) -> Desired {
    let (peers, skipped) = hostgw::usable_peers(nodes, own, |n| {
        match n.annotations.get(ANN_BACKEND_TYPE).map(String::as_str) {
            Some(BACKEND) => None,
            other => Some(Skip::OtherBackend(other.unwrap_or("").to_owned())),
        }
    });
    let mut routes = BTreeMap::new();
    let mut table = Vec::new();
    for p in peers {
        table.push((p.cidr, p.addr));
        routes.insert(
            p.cidr,
            PeerRoute {
                node: p.node.name.clone(),
                route: Route4 {
                    dst: p.cidr,
                    gw: None,
                    oif: Some(tun),
                    protocol: hostgw::ROUTE_PROTOCOL,
                    priority: 0,
                    onlink: false,
                },
            },
        );
    }
    (routes, table, skipped)
}

/// Why the device could not be brought into shape this round.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// A netlink operation failed.
    #[error(transparent)]
    Netlink(#[from] NlError),
    /// The device is gone although the datapath holds queues of it (deleted by hand: the
    /// datapath is restarted).
    #[error("{DEVICE} not found")]
    Missing,
}

/// Brings the (already attached) device into shape: MTU `mtu`, up, `addr` (the podCIDR's
/// network address /32) as its only IPv4 address. Changes only what differs; returns the index.
pub fn ensure_device(nl: &mut Netlink, mtu: u32, addr: Ipv4Network) -> Result<u32, DeviceError> {
    let l = nl.link_by_name(DEVICE)?.ok_or(DeviceError::Missing)?;
    if l.mtu != mtu || !l.up {
        nl.set_link(l.index, (l.mtu != mtu).then_some(mtu), None, !l.up)?;
        tracing::info!(device = DEVICE, mtu, up = !l.up, "device adjusted");
    }
    let addrs = nl.ipv4_addresses(l.index)?;
    for a in &addrs {
        if *a != addr {
            nl.del_address(l.index, *a)?;
            tracing::info!(device = DEVICE, address = %a, "stale address removed");
        }
    }
    if !addrs.contains(&addr) {
        nl.add_address(l.index, addr)?;
        tracing::info!(device = DEVICE, address = %addr, "address added");
    }
    Ok(l.index)
}

/// The datapath's view of the cluster: where each peer podCIDR lives and which podCIDR each peer
/// may send from. Replaced as a whole by every reconciliation round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    own: Option<Ipv4Network>,
    /// Per prefix length (longest first): network address -> peer public IP.
    by_prefix: Vec<(u8, HashMap<u32, Ipv4Addr>)>,
    /// Peer public IP -> the podCIDRs it owns.
    sources: HashMap<Ipv4Addr, Vec<Ipv4Network>>,
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl Table {
    /// A table for this node's podCIDR `own` and the peers' `(podCIDR, public IP)`.
    pub fn new(own: Option<Ipv4Network>, peers: &[(Ipv4Network, Ipv4Addr)]) -> Table {
        let mut by_prefix: BTreeMap<u8, HashMap<u32, Ipv4Addr>> = BTreeMap::new();
        let mut sources: HashMap<Ipv4Addr, Vec<Ipv4Network>> = HashMap::new();
        for (cidr, addr) in peers {
            by_prefix
                .entry(cidr.prefix())
                .or_default()
                .insert(u32::from(cidr.network()), *addr);
            sources.entry(*addr).or_default().push(*cidr);
        }
        Table {
            own,
            by_prefix: by_prefix.into_iter().rev().collect(),
            sources,
        }
    }

    /// The public IP of the peer owning `dst` (longest prefix).
    pub fn next_hop(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        let d = u32::from(dst);
        self.by_prefix
            .iter()
            .find_map(|(p, m)| m.get(&(d & mask(*p))).copied())
    }

    /// Whether a packet `src -> dst` that arrived from underlay address `from` may enter: the
    /// sender is a known peer, `src` lies in one of its podCIDRs and `dst` in ours.
    pub fn accept(&self, from: Ipv4Addr, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.sender(from).is_some_and(|s| s.admits(src, dst))
    }

    /// The known peer at underlay address `from` (`None` for strangers, or before this node has
    /// a podCIDR): one lookup per datagram, then [`Sender::admits`] per inner packet.
    pub fn sender(&self, from: Ipv4Addr) -> Option<Sender<'_>> {
        Some(Sender {
            own: self.own?,
            cidrs: self.sources.get(&from)?,
        })
    }
}

/// A known peer as seen by the receive path (see [`Table::sender`]).
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    own: Ipv4Network,
    cidrs: &'a [Ipv4Network],
}

impl Sender<'_> {
    /// Whether an inner packet `src -> dst` from this peer may enter: `src` lies in one of its
    /// podCIDRs and `dst` in ours.
    pub fn admits(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.own.contains(dst) && self.cidrs.iter().any(|c| c.contains(src))
    }
}

/// `(source, destination)` of an IPv4 packet, read through a zero-copy [`Ipv4Packet`] view
/// (20-byte header); `None` for anything else (IPv6, truncated, IHL < 5).
pub fn ipv4_addrs(pkt: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let ip = Ipv4Packet::new(pkt)?;
    (ip.get_version() == 4 && ip.get_header_length() >= 5)
        .then(|| (ip.get_source(), ip.get_destination()))
}

/// Packet counters of the datapath (all workers).
#[derive(Debug, Default)]
pub struct Stats {
    /// Packets read from the TUN device and sent to a peer.
    pub tx: AtomicU64,
    /// Their bytes (inner IPv4 packets, after TSO segmentation).
    pub tx_bytes: AtomicU64,
    /// Datagrams received from peers and written to the TUN device.
    pub rx: AtomicU64,
    /// Their bytes (inner IPv4 packets).
    pub rx_bytes: AtomicU64,
    /// TUN packets without a peer for their destination (or not IPv4).
    pub no_route: AtomicU64,
    /// Datagrams from unknown senders, with a foreign inner source or not for our podCIDR.
    pub rejected: AtomicU64,
    /// Send / write failures.
    pub errors: AtomicU64,
}

/// Why the datapath could not start.
#[derive(Debug, thiserror::Error)]
pub enum UdpError {
    /// `/dev/net/tun` could not be opened.
    #[error("opening /dev/net/tun: {0}")]
    OpenTun(#[source] io::Error),
    /// `TUNSETIFF` refused: EINVAL / EBUSY mean a device of that name exists with other flags
    /// (or is not a TUN device).
    #[error("attaching to TUN device {DEVICE} (TUNSETIFF): {0}")]
    Attach(#[source] io::Error),
    /// `TUNSETOFFLOAD` failed (the datapath then runs without offloads).
    #[error("enabling offloads on {DEVICE} (TUNSETOFFLOAD): {0}")]
    Offload(#[source] io::Error),
    /// `TUNSETPERSIST` failed.
    #[error("making {DEVICE} persistent: {0}")]
    Persist(#[source] io::Error),
    /// The UDP socket could not be set up.
    #[error("UDP socket {0}:{PORT}: {1}")]
    Socket(Ipv4Addr, #[source] io::Error),
}

impl UdpError {
    /// True when another socket holds the UDP port (`EADDRINUSE` on bind).
    pub fn is_addr_in_use(&self) -> bool {
        matches!(self, UdpError::Socket(_, e) if e.raw_os_error() == Some(libc::EADDRINUSE))
    }

    /// True when a device of our name exists but cannot be attached (delete and retry).
    pub fn is_mismatch(&self) -> bool {
        matches!(self, UdpError::Attach(e)
            if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::EBUSY) | Some(libc::EPERM)))
    }
}

/// `struct ifreq` with the flags member of the union (40 bytes).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Opens one queue of the multi-queue TUN device [`DEVICE`] (creating it if it does not exist);
/// with `offload`, with `IFF_VNET_HDR` and checksum + TSO4 offload (see [`offload`]).
fn open_queue(offload: bool) -> Result<OwnedFd, UdpError> {
    // SAFETY: the path is a NUL-terminated literal; the result is checked.
    let fd = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    };
    let fd = cvt(fd).map_err(UdpError::OpenTun)?;
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TUN
            | libc::IFF_NO_PI
            | libc::IFF_MULTI_QUEUE
            | if offload { libc::IFF_VNET_HDR } else { 0 }) as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..DEVICE.len()].copy_from_slice(DEVICE.as_bytes());
    // SAFETY: req is a valid, initialised ifreq-sized struct that outlives the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    cvt(rc).map_err(UdpError::Attach)?;
    if offload {
        let features = libc::TUN_F_CSUM | libc::TUN_F_TSO4;
        // SAFETY: TUNSETOFFLOAD takes its argument by value; fd is a valid TUN queue.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETOFFLOAD, features) };
        cvt(rc).map_err(UdpError::Offload)?;
    }
    Ok(fd)
}

fn set_int_opt(fd: RawFd, level: libc::c_int, opt: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: v is a valid c_int that outlives the call, and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            std::ptr::from_ref(&v).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    cvt(rc).map(drop)
}

fn sockaddr(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    // SAFETY: an all-zero sockaddr_in is valid; fields are set below.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = port.to_be();
    sa.sin_addr.s_addr = u32::from(ip).to_be();
    sa
}

/// One worker's UDP socket: `SO_REUSEPORT`, bound to `local:8285`, 4 MiB buffers; with
/// `offload`, `UDP_GRO` (best effort).
fn udp_socket(local: Ipv4Addr, offload: bool) -> Result<OwnedFd, UdpError> {
    let err = |e| UdpError::Socket(local, e);
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    let fd = cvt(fd).map_err(err)?;
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let raw = fd.as_raw_fd();
    set_int_opt(raw, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1).map_err(err)?;
    if offload {
        let _ = set_int_opt(raw, libc::SOL_UDP, libc::UDP_GRO, 1);
    }
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
        // Best effort: without CAP_NET_ADMIN the defaults stay.
        let _ = set_int_opt(raw, libc::SOL_SOCKET, opt, 4 << 20);
    }
    let sa = sockaddr(local, PORT);
    // SAFETY: sa is a valid sockaddr_in of the given size.
    let rc = unsafe {
        libc::bind(
            raw,
            std::ptr::from_ref(&sa).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    cvt(rc).map_err(err)?;
    Ok(fd)
}

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
    /// Attaches `threads` queues to [`DEVICE`] (creating it, persistent), binds one socket per
    /// queue to `local:8285` and starts the workers with an empty peer table.
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
        // SAFETY: TUNSETPERSIST takes its argument by value; the fd is a valid TUN queue.
        let rc = unsafe { libc::ioctl(queues[0].0.as_raw_fd(), libc::TUNSETPERSIST, 1) };
        cvt(rc).map_err(UdpError::Persist)?;
        let table = Arc::new(RwLock::new(Arc::new(Table::default())));
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let workers = queues
            .into_iter()
            .enumerate()
            .map(|(i, (tun, sock))| {
                let w = Worker {
                    tun,
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
    fn new() -> Batch {
        let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; BUF]).collect();
        let mut iov: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        let mut addrs = vec![sockaddr(Ipv4Addr::UNSPECIFIED, 0); BATCH];
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
            b.addrs[count] = sockaddr(peer, PORT);
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
    fn send_gso(&self, peer: Ipv4Addr, data: &[u8], stride: usize) {
        let mut addr = sockaddr(peer, PORT);
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
            let mut addr = sockaddr(Ipv4Addr::UNSPECIFIED, 0);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::ANN_PUBLIC_IP;

    fn net(s: &str) -> Ipv4Network {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn info(name: &str, cidr: &str, addr: &str, backend: Option<&str>) -> NodeInfo {
        let mut annotations = BTreeMap::new();
        if let Some(b) = backend {
            annotations.insert(ANN_BACKEND_TYPE.to_owned(), b.to_owned());
            annotations.insert(ANN_PUBLIC_IP.to_owned(), addr.to_owned());
        }
        NodeInfo {
            name: name.into(),
            pod_cidr: Some(net(cidr)),
            internal_ip: Some(ip(addr)),
            public_ip: None,
            annotations,
        }
    }

    #[test]
    fn desired_serves_udp_peers_only() {
        let nodes = [
            info("me", "10.244.0.0/24", "10.99.0.1", Some("udp")),
            info("b", "10.244.1.0/24", "10.99.0.2", Some("udp")),
            info("c", "10.244.2.0/24", "10.99.0.3", Some("vxlan")),
            info("d", "10.244.3.0/24", "10.99.0.4", None),
        ];
        let (routes, table, skipped) = desired(&nodes, "me", 9);
        assert_eq!(routes.len(), 1);
        let r = routes[&net("10.244.1.0/24")].route;
        assert_eq!((r.gw, r.oif, r.protocol), (None, Some(9), 78));
        assert_eq!(table, vec![(net("10.244.1.0/24"), ip("10.99.0.2"))]);
        assert_eq!(
            skipped,
            vec![
                ("c".to_owned(), Skip::OtherBackend("vxlan".into())),
                ("d".to_owned(), Skip::OtherBackend(String::new())),
            ]
        );
    }

    #[test]
    fn table_routes_by_longest_prefix_and_filters_senders() {
        let t = Table::new(
            Some(net("10.244.0.0/24")),
            &[
                (net("10.244.1.0/24"), ip("10.99.0.2")),
                (net("10.245.0.0/16"), ip("10.99.0.3")),
                (net("10.245.7.0/24"), ip("10.99.0.4")),
            ],
        );
        assert_eq!(t.next_hop(ip("10.244.1.9")), Some(ip("10.99.0.2")));
        assert_eq!(t.next_hop(ip("10.245.7.1")), Some(ip("10.99.0.4")));
        assert_eq!(t.next_hop(ip("10.245.8.1")), Some(ip("10.99.0.3")));
        assert_eq!(t.next_hop(ip("10.244.0.5")), None);
        assert_eq!(t.next_hop(ip("8.8.8.8")), None);
        assert!(t.accept(ip("10.99.0.2"), ip("10.244.1.5"), ip("10.244.0.7")));
        // Unknown sender, spoofed inner source, not for us.
        assert!(!t.accept(ip("10.99.0.9"), ip("10.244.1.5"), ip("10.244.0.7")));
        assert!(!t.accept(ip("10.99.0.2"), ip("10.244.2.5"), ip("10.244.0.7")));
        assert!(!t.accept(ip("10.99.0.2"), ip("10.244.1.5"), ip("10.244.5.7")));
        assert!(!Table::default().accept(ip("10.99.0.2"), ip("10.244.1.5"), ip("10.244.0.7")));
    }

    #[test]
    fn parses_ipv4_headers() {
        let mut p = [0u8; 20];
        p[0] = 0x45;
        p[12..16].copy_from_slice(&[10, 244, 1, 2]);
        p[16..20].copy_from_slice(&[10, 244, 0, 3]);
        assert_eq!(ipv4_addrs(&p), Some((ip("10.244.1.2"), ip("10.244.0.3"))));
        assert_eq!(ipv4_addrs(&p[..19]), None);
        p[0] = 0x60;
        assert_eq!(ipv4_addrs(&p), None, "IPv6");
        p[0] = 0x44;
        assert_eq!(ipv4_addrs(&p), None, "IHL < 5");
    }
}
