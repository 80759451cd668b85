//! Sockets and interface ioctls: `socket(2)` returning an [`OwnedFd`], `setsockopt` for the
//! option types Ferry uses, `bind` / `recv` / `sendto` on IPv4, `AF_PACKET` sockets (capture,
//! and whole frames of one ethertype with the interface's MAC: ARP announcements), the one
//! `struct ifreq` layout (with its size checked against libc's at compile time) and the
//! `SIOCETHTOOL` TX checksum switch (`ethtool -K <dev> tx on|off`).
//!
//! Every function takes a [`BorrowedFd`] (the caller keeps ownership) and returns
//! [`io::Error`]s straight from `errno`, so callers map them into their own typed errors and can
//! still branch on [`io::Error::raw_os_error`]. Raw descriptors become [`OwnedFd`] right after
//! the result check. The hot loops of a datapath (`recvmmsg` / `sendmmsg` batches) are not here:
//! they stay next to their buffers.

use std::io;
use std::mem::{align_of, size_of};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd};
use std::time::Duration;

/// `SOL_RAW` (`linux/socket.h`): the option level of raw sockets.
pub const SOL_RAW: libc::c_int = 255;
/// `ICMP_FILTER` (`linux/icmp.h`, level [`SOL_RAW`]): a bit mask of ICMP types a raw ICMP
/// socket does not receive.
pub const ICMP_FILTER: libc::c_int = 1;
/// `ETHTOOL_GTXCSUM` (`linux/ethtool.h`): get TX checksum offload.
const ETHTOOL_GTXCSUM: u32 = 0x16;
/// `ETHTOOL_STXCSUM` (`linux/ethtool.h`): set TX checksum offload.
const ETHTOOL_STXCSUM: u32 = 0x17;

/// `AF_INET` as the `sa_family_t` of a `sockaddr_in`.
#[expect(
    clippy::cast_possible_truncation,
    reason = "AF_INET is 2, well within u16"
)]
const AF_INET_FAMILY: libc::sa_family_t = libc::AF_INET as libc::sa_family_t;
/// `AF_PACKET` as the `c_ushort` family of a `sockaddr_ll`.
#[expect(
    clippy::cast_possible_truncation,
    reason = "AF_PACKET is 17, well within u16"
)]
const AF_PACKET_FAMILY: libc::c_ushort = libc::AF_PACKET as libc::c_ushort;
/// `ETH_P_ALL` as the 16-bit ethertype of a `sockaddr_ll` / `AF_PACKET` protocol.
#[expect(
    clippy::cast_possible_truncation,
    reason = "ETH_P_ALL is 0x0003, an ethertype (16 bits)"
)]
const ETH_P_ALL: u16 = libc::ETH_P_ALL as u16;

/// `size_of::<T>()` as a `socklen_t` (the length argument of `bind`, `sendto`, `setsockopt`,
/// `getsockopt`); the bound is checked at compile time for each `T` it is used with.
pub(crate) const fn socklen_of<T>() -> libc::socklen_t {
    const { assert!(size_of::<T>() <= libc::socklen_t::MAX as usize) };
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the const assertion above proves size_of::<T>() fits in socklen_t"
    )]
    let len = size_of::<T>() as libc::socklen_t;
    len
}

/// `-1` -> the thread's `errno`, anything else passes.
pub(crate) fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `-1` -> `errno`, otherwise the byte count of a `ssize_t`-returning call.
fn cvt_size(rc: libc::ssize_t) -> io::Result<usize> {
    usize::try_from(rc).map_err(|_| io::Error::last_os_error())
}

/// `socket(domain, ty | SOCK_CLOEXEC, protocol)` as an owned descriptor. `ty` may carry
/// `SOCK_NONBLOCK`; `SOCK_CLOEXEC` is always added (no descriptor leaks into children).
pub fn socket(domain: libc::c_int, ty: libc::c_int, protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; the result is checked before use.
    let fd = cvt(unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, protocol) })?;
    // SAFETY: fd is a fresh, valid descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `setsockopt` with a value of plain data type `T` (an integer or a `#[repr(C)]` struct of
/// integers), passed by pointer with `size_of::<T>()`.
fn setsockopt<T: Copy>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: value points to a live T of size_of::<T>() bytes for the whole call; the kernel
    // only reads it. fd is open (borrowed).
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(value).cast(),
            socklen_of::<T>(),
        )
    };
    cvt(rc).map(drop)
}

/// `setsockopt(level, name)` with an `int` value (`SO_REUSEPORT`, `UDP_GRO`, `SO_RCVBUFFORCE`...).
pub fn set_int_opt(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    setsockopt(fd, level, name, &value)
}

/// `getsockopt(IPPROTO_TCP, TCP_INFO)` of a TCP socket: the kernel's view of the connection
/// (`tcpi_total_retrans`, `tcpi_bytes_acked`, RTT, cwnd...). Older kernels fill a prefix of the
/// struct and leave the rest zeroed.
pub fn tcp_info(fd: BorrowedFd<'_>) -> io::Result<libc::tcp_info> {
    // SAFETY: tcp_info is plain integers, so all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = socklen_of::<libc::tcp_info>();
    // SAFETY: info is a live, writable tcp_info of `len` bytes for the whole call and len is
    // in/out as getsockopt(2) requires; fd is open (borrowed).
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            std::ptr::from_mut(&mut info).cast(),
            &mut len,
        )
    };
    cvt(rc).map(|_| info)
}

/// `SO_RCVTIMEO`: a blocking receive returns `EAGAIN` after `timeout` (zero: wait forever).
pub fn set_recv_timeout(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
    };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)
}

/// `ICMP_FILTER` on a raw ICMP socket: bit `t` of `blocked` set = ICMP type `t` is not received.
pub fn set_icmp_filter(fd: BorrowedFd<'_>, blocked: u32) -> io::Result<()> {
    setsockopt(fd, SOL_RAW, ICMP_FILTER, &blocked)
}

/// A `sockaddr_in` for `ip:port` (network byte order, zeroed padding).
#[inline]
pub fn sockaddr_in(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: AF_INET_FAMILY,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// `bind` an IPv4 socket to `ip:port`.
pub fn bind_v4(fd: BorrowedFd<'_>, ip: Ipv4Addr, port: u16) -> io::Result<()> {
    let sa = sockaddr_in(ip, port);
    // SAFETY: sa is a valid sockaddr_in of the given size, live for the call; fd is open.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::from_ref(&sa).cast(),
            socklen_of::<libc::sockaddr_in>(),
        )
    };
    cvt(rc).map(drop)
}

/// The index of interface `name` in the calling thread's network namespace.
pub fn if_index(name: &str) -> io::Result<u32> {
    let c =
        std::ffi::CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: c is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(index)
}

/// A raw `AF_PACKET` socket receiving every frame (`ETH_P_ALL`) of interface `name`, the way
/// `tcpdump -i <name>` sees them (for capture in tests).
pub fn packet_socket(name: &str) -> io::Result<OwnedFd> {
    packet_socket_for(name, ETH_P_ALL)
}

/// A raw `AF_PACKET` socket (whole Ethernet frames) bound to interface `name` and ethertype
/// `ethertype` (host order, e.g. `0x0806` for ARP): it receives that interface's frames of that
/// type, and [`send`] on it transmits a complete frame on that interface. The namespace is the
/// calling thread's at creation.
pub fn packet_socket_for(name: &str, ethertype: u16) -> io::Result<OwnedFd> {
    let proto = ethertype.to_be();
    let index = if_index(name)?;
    let fd = socket(libc::AF_PACKET, libc::SOCK_RAW, libc::c_int::from(proto))?;
    let sll = libc::sockaddr_ll {
        sll_family: AF_PACKET_FAMILY,
        sll_protocol: proto,
        sll_ifindex: libc::c_int::try_from(index)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    };
    // SAFETY: sll is a valid sockaddr_ll of the given size, live for the call; fd is open.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::from_ref(&sll).cast(),
            socklen_of::<libc::sockaddr_ll>(),
        )
    };
    cvt(rc)?;
    Ok(fd)
}

/// The hardware (MAC) address of the interface an `AF_PACKET` socket is bound to (from
/// `getsockname`, so it needs no `/sys` of the socket's namespace). `InvalidData` if the
/// interface's address is not 6 bytes long.
pub fn packet_hw_addr(fd: BorrowedFd<'_>) -> io::Result<[u8; 6]> {
    // SAFETY: sockaddr_ll is plain integers, so all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut len = socklen_of::<libc::sockaddr_ll>();
    // SAFETY: sll is a live, writable sockaddr_ll of `len` bytes for the call and len is in/out
    // as getsockname(2) requires; fd is open (borrowed).
    let rc = unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            std::ptr::from_mut(&mut sll).cast(),
            &mut len,
        )
    };
    cvt(rc)?;
    if sll.sll_halen != 6 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("hardware address of {} bytes", sll.sll_halen),
        ));
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&sll.sll_addr[..6]);
    Ok(mac)
}

/// `send(fd, buf, flags)` on a connected or bound socket (an `AF_PACKET` socket sends `buf` as a
/// whole frame on its interface): the number of bytes sent.
pub fn send(fd: BorrowedFd<'_>, buf: &[u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: buf is valid for buf.len() bytes and live for the call; fd is open.
    let n = unsafe { libc::send(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), flags) };
    cvt_size(n)
}

/// `recv(fd, buf, flags)`: the number of bytes received into `buf`.
pub fn recv(fd: BorrowedFd<'_>, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: buf is a valid writable buffer of buf.len() bytes for the call; fd is open.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
    cvt_size(n)
}

/// `sendto(fd, buf, flags, ip:port)`: the number of bytes sent.
pub fn send_to_v4(
    fd: BorrowedFd<'_>,
    buf: &[u8],
    flags: libc::c_int,
    ip: Ipv4Addr,
    port: u16,
) -> io::Result<usize> {
    let addr = sockaddr_in(ip, port);
    // SAFETY: buf and addr are valid for the lengths given and live for the call; fd is open.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            flags,
            std::ptr::from_ref(&addr).cast(),
            socklen_of::<libc::sockaddr_in>(),
        )
    };
    cvt_size(n)
}

/// The members of `struct ifreq`'s union that Ferry uses, padded to the union's 24 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) union IfReqUnion {
    /// `ifr_flags` (`TUNSETIFF`).
    pub(crate) flags: libc::c_short,
    /// `ifr_data` (`SIOCETHTOOL`: a pointer to the ethtool command struct).
    pub(crate) data: *mut libc::c_void,
    /// The size of the largest member (`struct ifmap`).
    _size: [u8; 24],
}

/// `struct ifreq`: an interface name and one member of the union. The one hand-written copy of
/// the layout in the workspace; its size and alignment are checked against libc's below.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct IfReq {
    /// `ifr_name`: NUL-terminated, at most `IFNAMSIZ - 1` bytes.
    name: [u8; libc::IFNAMSIZ],
    /// `ifr_ifru`.
    pub(crate) ifru: IfReqUnion,
}

const _: () = assert!(size_of::<IfReq>() == size_of::<libc::ifreq>());
const _: () = assert!(align_of::<IfReq>() == align_of::<libc::ifreq>());

impl std::fmt::Debug for IfReq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let end = self
            .name
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(self.name.len());
        f.debug_struct("IfReq")
            .field("name", &String::from_utf8_lossy(&self.name[..end]))
            .finish_non_exhaustive()
    }
}

impl IfReq {
    /// A zeroed request for interface `name` (`InvalidInput` if it does not fit in
    /// `IFNAMSIZ - 1` bytes or contains a NUL).
    pub(crate) fn new(name: &str) -> io::Result<IfReq> {
        let bytes = name.as_bytes();
        if bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("interface name {name:?} is not a valid IFNAMSIZ name"),
            ));
        }
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            ifru: IfReqUnion { _size: [0; 24] },
        };
        req.name[..bytes.len()].copy_from_slice(bytes);
        Ok(req)
    }
}

/// `struct ethtool_value`: the argument of the get/set commands that carry one `u32`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// The `SIOCETHTOOL` commands that take a [`EthtoolValue`] (any other command would make the
/// kernel read or write a larger struct, so the command set is closed).
#[derive(Debug, Clone, Copy)]
enum EthtoolValueCmd {
    GetTxCsum,
    SetTxCsum,
}

/// Runs one `SIOCETHTOOL` value command on `dev` through a throwaway `AF_INET` datagram socket;
/// returns the value the kernel left in `data`.
fn ethtool_value(dev: &str, cmd: EthtoolValueCmd, data: u32) -> io::Result<u32> {
    let mut value = EthtoolValue {
        cmd: match cmd {
            EthtoolValueCmd::GetTxCsum => ETHTOOL_GTXCSUM,
            EthtoolValueCmd::SetTxCsum => ETHTOOL_STXCSUM,
        },
        data,
    };
    let mut ifr = IfReq::new(dev)?;
    ifr.ifru.data = std::ptr::from_mut(&mut value).cast();
    let fd = socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    // SAFETY: ifr is a valid ifreq (size checked above) whose data points to a live
    // ethtool_value for the call, the struct these two commands read and write; fd is open.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::SIOCETHTOOL,
            std::ptr::from_mut(&mut ifr),
        )
    };
    cvt(rc)?;
    Ok(value.data)
}

/// Whether TX checksum offload is on for `dev` (`ETHTOOL_GTXCSUM`).
pub fn tx_checksum(dev: &str) -> io::Result<bool> {
    ethtool_value(dev, EthtoolValueCmd::GetTxCsum, 0).map(|v| v != 0)
}

/// Turns TX checksum offload of `dev` on or off (`ETHTOOL_STXCSUM`, `ethtool -K dev tx on|off`).
pub fn set_tx_checksum(dev: &str, on: bool) -> io::Result<()> {
    ethtool_value(dev, EthtoolValueCmd::SetTxCsum, u32::from(on)).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd as _;

    #[test]
    fn ifreq_names_are_checked() {
        assert!(IfReq::new("ferry.udp").is_ok());
        assert!(IfReq::new("fifteen-chars-x").is_ok());
        let long = IfReq::new("sixteen-chars-xx").unwrap_err();
        assert_eq!(long.kind(), io::ErrorKind::InvalidInput);
        assert!(IfReq::new("a\0b").is_err());
        let r = IfReq::new("lo").unwrap();
        assert_eq!(&r.name[..3], b"lo\0");
        // SAFETY: reading the flags member of a zero-initialised union.
        assert_eq!(unsafe { r.ifru.flags }, 0);
    }

    #[test]
    fn sockaddr_is_network_order() {
        let sa = sockaddr_in(Ipv4Addr::new(10, 0, 0, 1), 8285);
        assert_eq!(libc::c_int::from(sa.sin_family), libc::AF_INET);
        assert_eq!(u16::from_be(sa.sin_port), 8285);
        assert_eq!(sa.sin_addr.s_addr.to_ne_bytes(), [10, 0, 0, 1]);
    }

    #[test]
    fn udp_socket_options_bind_and_loopback() -> io::Result<()> {
        let rx = socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
        set_int_opt(rx.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
        set_recv_timeout(rx.as_fd(), Duration::from_millis(500))?;
        bind_v4(rx.as_fd(), Ipv4Addr::LOCALHOST, 0)?;
        let port = std::net::UdpSocket::from(rx.try_clone()?)
            .local_addr()?
            .port();
        let tx = socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
        assert_eq!(
            send_to_v4(tx.as_fd(), b"ping", 0, Ipv4Addr::LOCALHOST, port)?,
            4
        );
        let mut buf = [0u8; 16];
        let n = recv(rx.as_fd(), &mut buf, 0)?;
        assert_eq!(&buf[..n], b"ping");
        // Nothing more: the timeout fires.
        let e = recv(rx.as_fd(), &mut buf, 0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        let e = set_int_opt(rx.as_fd(), libc::SOL_SOCKET, 0x7fff, 1).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOPROTOOPT));
        Ok(())
    }

    #[test]
    fn ethtool_rejects_bad_names_and_missing_devices() {
        let e = tx_checksum("sixteen-chars-xx").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = tx_checksum("ferry-no-such").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENODEV));
    }
}
