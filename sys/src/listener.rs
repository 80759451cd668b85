//! Listening sockets inherited from the parent process.
//!
//! `ferry up` binds `127.0.0.1:PORT` in the root network namespace and hands the socket, as fd 3,
//! to a `ferry-server` that runs in the control-plane namespace: a socket keeps the namespace it
//! was created in. The receiver claims the fd once, early, after checking that it really is a
//! listening TCP socket, so a wrong fd is refused with a message that names the problem.

use std::io;
use std::net::TcpListener;
use std::os::fd::{FromRawFd as _, RawFd};

/// Why an inherited fd is not a usable listener.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// fds 0-2 are the standard streams.
    #[error("fds 0-2 are stdin, stdout and stderr; pass a listening TCP socket as fd 3 or higher")]
    StandardStream,
    /// Nothing is open at that number.
    #[error("fd {fd} is not open in this process ({source}); the parent must pass it")]
    NotOpen {
        /// The fd.
        fd: RawFd,
        /// The cause (EBADF).
        source: io::Error,
    },
    /// Open, but a file or pipe.
    #[error("fd {0} is not a socket (expected a listening TCP socket)")]
    NotSocket(RawFd),
    /// A socket of another family (unix, netlink, ...).
    #[error("fd {0} is not an IPv4/IPv6 socket (expected a listening TCP socket)")]
    NotInet(RawFd),
    /// An IP socket, but not TCP.
    #[error("fd {0} is not a TCP socket (expected a listening TCP socket)")]
    NotTcp(RawFd),
    /// A TCP socket without `listen`.
    #[error("fd {0} is a TCP socket that is not listening (the parent must call listen)")]
    NotListening(RawFd),
    /// A socket option could not be read.
    #[error("getsockopt({name}): {source}")]
    Getsockopt {
        /// The option number.
        name: i32,
        /// The cause.
        source: io::Error,
    },
    /// `O_NONBLOCK` could not be set.
    #[error("setting O_NONBLOCK: {0}")]
    Nonblocking(io::Error),
}

/// Takes ownership of `fd`, which must be a listening TCP socket inherited from the parent, and
/// returns it non-blocking and close-on-exec (nothing this process spawns inherits it again).
///
/// Call it once per fd, before this process opens fds of its own (so the number cannot name one
/// of ours): the fd is owned by the returned listener from then on.
pub fn inherited_tcp_listener(fd: RawFd) -> Result<TcpListener, ListenerError> {
    if fd < 3 {
        return Err(ListenerError::StandardStream);
    }
    // SAFETY: an all-zero stat is a valid value for the kernel to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat only writes into `st`, which we own; a bad fd is reported as EBADF.
    if unsafe { libc::fstat(fd, &raw mut st) } != 0 {
        return Err(ListenerError::NotOpen {
            fd,
            source: io::Error::last_os_error(),
        });
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(ListenerError::NotSocket(fd));
    }
    let opt = |level: i32, name: i32| -> Result<i32, ListenerError> {
        let mut v: libc::c_int = 0;
        let mut len = crate::net::socklen_of::<libc::c_int>();
        // SAFETY: getsockopt writes at most `len` bytes into `v`, an int we own.
        let rc = unsafe { libc::getsockopt(fd, level, name, (&raw mut v).cast(), &raw mut len) };
        if rc != 0 {
            return Err(ListenerError::Getsockopt {
                name,
                source: io::Error::last_os_error(),
            });
        }
        Ok(v)
    };
    let domain = opt(libc::SOL_SOCKET, libc::SO_DOMAIN)?;
    if domain != libc::AF_INET && domain != libc::AF_INET6 {
        return Err(ListenerError::NotInet(fd));
    }
    if opt(libc::SOL_SOCKET, libc::SO_TYPE)? != libc::SOCK_STREAM
        || opt(libc::SOL_SOCKET, libc::SO_PROTOCOL)? != libc::IPPROTO_TCP
    {
        return Err(ListenerError::NotTcp(fd));
    }
    if opt(libc::SOL_SOCKET, libc::SO_ACCEPTCONN)? != 1 {
        return Err(ListenerError::NotListening(fd));
    }
    // SAFETY: fd is an open listening TCP socket (checked above) that nothing else in this process
    // owns: it was inherited, and is claimed once, before any other fd is handed out to it.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    // SAFETY: fcntl on an fd we own; FD_CLOEXEC keeps it out of anything this process spawns.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    listener
        .set_nonblocking(true)
        .map_err(ListenerError::Nonblocking)?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd as _;

    #[test]
    fn claims_a_listener_and_refuses_the_rest() {
        assert!(matches!(
            inherited_tcp_listener(2),
            Err(ListenerError::StandardStream)
        ));
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let claimed = inherited_tcp_listener(l.into_raw_fd()).unwrap();
        assert_eq!(claimed.local_addr().unwrap(), addr);
        let f = std::fs::File::open("/dev/null").unwrap();
        let raw = std::os::fd::AsRawFd::as_raw_fd(&f);
        assert!(matches!(
            inherited_tcp_listener(raw),
            Err(ListenerError::NotSocket(_))
        ));
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let raw = std::os::fd::AsRawFd::as_raw_fd(&u);
        assert!(matches!(
            inherited_tcp_listener(raw),
            Err(ListenerError::NotTcp(_))
        ));
    }
}
