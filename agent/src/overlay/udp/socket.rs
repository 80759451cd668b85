//! The workers' UDP sockets: one per worker, all bound to `<node ip>:8285` with `SO_REUSEPORT`
//! so the kernel spreads the peers' flows over them, opened through [`ferry_sys::net`].

use super::{UdpError, PORT};
use ferry_sys::net;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd as _, OwnedFd};

/// One worker's UDP socket: non-blocking, `SO_REUSEPORT`, bound to `local:8285`, 4 MiB buffers;
/// with `offload`, `UDP_GRO` (best effort).
pub(super) fn udp_socket(local: Ipv4Addr, offload: bool) -> Result<OwnedFd, UdpError> {
    let err = |e| UdpError::Socket(local, e);
    let fd = net::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK, 0).map_err(err)?;
    net::set_int_opt(fd.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT, 1).map_err(err)?;
    if offload {
        let _ = net::set_int_opt(fd.as_fd(), libc::SOL_UDP, libc::UDP_GRO, 1);
    }
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
        // Best effort: without CAP_NET_ADMIN the defaults stay.
        let _ = net::set_int_opt(fd.as_fd(), libc::SOL_SOCKET, opt, 4 << 20);
    }
    net::bind_v4(fd.as_fd(), local, PORT).map_err(err)?;
    Ok(fd)
}
