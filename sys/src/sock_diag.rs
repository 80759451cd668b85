//! `NETLINK_SOCK_DIAG` for UDP over IPv4: list the sockets of the current network namespace and
//! destroy one (`SOCK_DESTROY`, needs `CONFIG_INET_DIAG_DESTROY` and `CAP_NET_ADMIN`). The socket
//! load balancer uses it to close connected UDP sockets still pinned to a removed backend: their
//! next `send`/`recv` fails with `ECONNABORTED`, so the application reconnects (and the
//! `connect4` hook picks a live backend). aya-ebpf 0.2.1 cannot express the `iter/udp` program
//! that `bpf_sock_destroy` needs, hence this path.
//!
//! The socket is namespace-bound: call these on a thread inside the namespace to inspect
//! (`netns::NetnsFd::run_on_thread`).

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd as _, OwnedFd};

/// `NETLINK_SOCK_DIAG`.
const NETLINK_SOCK_DIAG: libc::c_int = 4;
/// `SOCK_DIAG_BY_FAMILY`.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `SOCK_DESTROY`.
const SOCK_DESTROY: u16 = 21;
/// `NLMSG_ERROR`.
const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`.
const NLMSG_DONE: u16 = 3;
/// Every TCP state bit (UDP sockets report `TCP_ESTABLISHED` when connected, `TCP_CLOSE` else).
const ALL_STATES: u32 = 0xffff_ffff;
/// `TCP_ESTABLISHED`: a connected UDP socket.
const TCP_ESTABLISHED: u8 = 1;
/// `NLM_F_REQUEST`.
const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_ACK`.
const NLM_F_ACK: u16 = 0x4;
/// `NLM_F_DUMP` (`NLM_F_ROOT | NLM_F_MATCH`).
const NLM_F_DUMP: u16 = 0x300;

/// `struct nlmsghdr`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct NlMsgHdr {
    len: u32,
    ty: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

const _: () = assert!(std::mem::size_of::<NlMsgHdr>() == 16);

/// `struct inet_diag_sockid`: ports and addresses in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct SockId {
    sport: u16,
    dport: u16,
    src: [u32; 4],
    dst: [u32; 4],
    iface: u32,
    cookie: [u32; 2],
}

const _: () = assert!(std::mem::size_of::<SockId>() == 48);

/// `struct inet_diag_req_v2`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct ReqV2 {
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: SockId,
}

const _: () = assert!(std::mem::size_of::<ReqV2>() == 56);

/// A request: header plus body, as one buffer.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Request {
    hdr: NlMsgHdr,
    req: ReqV2,
}

const _: () = assert!(std::mem::size_of::<Request>() == 72);

/// `struct inet_diag_msg` (the part we read).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct DiagMsg {
    family: u8,
    state: u8,
    timer: u8,
    retrans: u8,
    id: SockId,
    expires: u32,
    rqueue: u32,
    wqueue: u32,
    uid: u32,
    inode: u32,
}

const _: () = assert!(std::mem::size_of::<DiagMsg>() == 72);

/// One IPv4 UDP socket of the namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpSocket4 {
    /// Local address.
    pub local: SocketAddrV4,
    /// Peer address (`0.0.0.0:0` if not connected).
    pub peer: SocketAddrV4,
    /// Connected (`TCP_ESTABLISHED` in diag terms).
    pub connected: bool,
    /// The socket cookie (`bpf_get_socket_cookie`, `SO_COOKIE`).
    pub cookie: u64,
    /// The kernel's identity of the socket, for [`destroy_udp4`].
    pub id: SockId,
}

fn addr(a: u32, port_be: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(a.to_ne_bytes()), u16::from_be(port_be))
}

/// Lists the IPv4 UDP sockets of the calling thread's network namespace.
pub fn udp4_sockets() -> io::Result<Vec<UdpSocket4>> {
    let sock = open()?;
    let mut req = request(NLM_F_REQUEST | NLM_F_DUMP, SOCK_DIAG_BY_FAMILY);
    req.req.states = ALL_STATES;
    send(&sock, &req)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = recv(&sock, &mut buf)?;
        let mut off = 0;
        while off + std::mem::size_of::<NlMsgHdr>() <= n {
            let hdr: NlMsgHdr = read_at(&buf[..n], off)?;
            let len = usize::try_from(hdr.len).map_err(|_| bad())?;
            if len < std::mem::size_of::<NlMsgHdr>() || off + len > n {
                return Err(bad());
            }
            match hdr.ty {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => return Err(nl_error(&buf[..n], off)),
                SOCK_DIAG_BY_FAMILY => {
                    let msg: DiagMsg = read_at(&buf[..n], off + std::mem::size_of::<NlMsgHdr>())?;
                    out.push(UdpSocket4 {
                        local: addr(msg.id.src[0], msg.id.sport),
                        peer: addr(msg.id.dst[0], msg.id.dport),
                        connected: msg.state == TCP_ESTABLISHED,
                        cookie: u64::from(msg.id.cookie[0]) | (u64::from(msg.id.cookie[1]) << 32),
                        id: msg.id,
                    });
                }
                _ => {}
            }
            off += (len + 3) & !3;
        }
    }
}

/// Destroys one UDP socket of the calling thread's namespace (`SOCK_DESTROY`): pending and
/// later calls on it fail with `ECONNABORTED`. `ENOENT`: it is already gone.
pub fn destroy_udp4(socket: &UdpSocket4) -> io::Result<()> {
    let sock = open()?;
    let mut req = request(NLM_F_REQUEST | NLM_F_ACK, SOCK_DESTROY);
    req.req.states = ALL_STATES;
    req.req.id = socket.id;
    send(&sock, &req)?;
    let mut buf = vec![0u8; 4096];
    let n = recv(&sock, &mut buf)?;
    let hdr: NlMsgHdr = read_at(&buf[..n], 0)?;
    if hdr.ty == NLMSG_ERROR {
        let err = nl_error(&buf[..n], 0);
        return if err.raw_os_error() == Some(0) {
            Ok(())
        } else {
            Err(err)
        };
    }
    Ok(())
}

fn request(flags: u16, ty: u16) -> Request {
    Request {
        hdr: NlMsgHdr {
            len: 72,
            ty,
            flags,
            seq: 1,
            pid: 0,
        },
        req: ReqV2 {
            family: u8::try_from(libc::AF_INET).unwrap_or(2),
            protocol: u8::try_from(libc::IPPROTO_UDP).unwrap_or(17),
            ..ReqV2::default()
        },
    }
}

fn bad() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "malformed sock_diag reply")
}

/// The errno of an `NLMSG_ERROR` message at `off` (0 is an ACK).
fn nl_error(buf: &[u8], off: usize) -> io::Error {
    match read_at::<i32>(buf, off + std::mem::size_of::<NlMsgHdr>()) {
        Ok(errno) => io::Error::from_raw_os_error(-errno),
        Err(e) => e,
    }
}

/// Copies a `T` out of `buf` at `off` (any alignment).
fn read_at<T: Copy + Default>(buf: &[u8], off: usize) -> io::Result<T> {
    let size = std::mem::size_of::<T>();
    let bytes = buf.get(off..off + size).ok_or_else(bad)?;
    let mut value = T::default();
    // SAFETY: `bytes` has exactly size_of::<T>() bytes; T is one of this module's `#[repr(C)]`
    // integer-only types (or i32), for which every byte pattern is valid; the copy is unaligned.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), (&raw mut value).cast::<u8>(), size);
    }
    Ok(value)
}

fn open() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn send(sock: &OwnedFd, req: &Request) -> io::Result<()> {
    // SAFETY: `req` is a live `#[repr(C)]` value of the given size; the kernel only reads it
    // (to the kernel's netlink address, the default destination of an unbound netlink socket).
    let rc = unsafe {
        libc::send(
            sock.as_raw_fd(),
            std::ptr::from_ref(req).cast(),
            std::mem::size_of::<Request>(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn recv(sock: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes.
    let rc = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    usize::try_from(rc).map_err(|_| io::Error::last_os_error())
}
