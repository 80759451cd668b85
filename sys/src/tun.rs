//! TUN queues: open `/dev/net/tun`, attach it to a named multi-queue TUN device (creating the
//! device if it does not exist) and set its offloads and persistence, each `ioctl` with its own
//! error variant. The shape is firecracker's `Tap` (`devices/virtio/net/tap.rs`): the type owns
//! the descriptor from the moment it is checked and exposes typed operations only.
//!
//! Reading and writing packets is the caller's business (a datapath's hot loop batches them its
//! own way): [`Tun`] hands out its descriptor through [`AsFd`] / [`AsRawFd`] or
//! `OwnedFd::from`.

use crate::net::{cvt, IfReq};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd as _, OwnedFd, RawFd};

/// Why a TUN queue could not be opened or configured. Every variant keeps the `errno` (callers
/// tell "device exists with other flags" apart by [`io::Error::raw_os_error`]).
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    /// The device name does not fit in `IFNAMSIZ - 1` bytes.
    #[error("TUN device name: {0}")]
    Name(#[source] io::Error),
    /// `/dev/net/tun` could not be opened.
    #[error("opening /dev/net/tun: {0}")]
    Open(#[source] io::Error),
    /// `TUNSETIFF` refused: EINVAL / EBUSY mean a device of that name exists with other flags
    /// (or is not a TUN device).
    #[error("TUNSETIFF: {0}")]
    SetIff(#[source] io::Error),
    /// `TUNSETOFFLOAD` failed.
    #[error("TUNSETOFFLOAD: {0}")]
    SetOffload(#[source] io::Error),
    /// `TUNSETPERSIST` failed.
    #[error("TUNSETPERSIST: {0}")]
    SetPersist(#[source] io::Error),
}

/// One queue of a TUN device (an open `/dev/net/tun` attached with `TUNSETIFF`). Dropping it
/// detaches the queue; a non-persistent device goes away with its last queue.
#[derive(Debug)]
pub struct Tun {
    fd: OwnedFd,
}

impl Tun {
    /// Opens one queue of the multi-queue TUN device `name` (`IFF_TUN | IFF_NO_PI |
    /// IFF_MULTI_QUEUE`, plus `IFF_VNET_HDR` with `vnet_hdr`), creating the device if it does not
    /// exist. The descriptor is non-blocking and close-on-exec.
    pub fn open_queue(name: &str, vnet_hdr: bool) -> Result<Tun, TunError> {
        let mut req = IfReq::new(name).map_err(TunError::Name)?;
        #[expect(
            clippy::cast_possible_truncation,
            reason = "the IFF_* flags are all below 0x8000 (their union is 0x5101): a c_short"
        )]
        let flags = (libc::IFF_TUN
            | libc::IFF_NO_PI
            | libc::IFF_MULTI_QUEUE
            | if vnet_hdr { libc::IFF_VNET_HDR } else { 0 }) as libc::c_short;
        req.ifru.flags = flags;
        // SAFETY: the path is a NUL-terminated literal; the result is checked.
        let fd = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
            )
        };
        let fd = cvt(fd).map_err(TunError::Open)?;
        // SAFETY: fd is a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: req is a valid, initialised ifreq (size checked against libc's) that outlives
        // the call; fd is an open /dev/net/tun.
        let rc = unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                libc::TUNSETIFF,
                std::ptr::from_mut(&mut req),
            )
        };
        cvt(rc).map_err(TunError::SetIff)?;
        Ok(Tun { fd })
    }

    /// `TUNSETOFFLOAD`: the offloads the kernel may hand this queue (`TUN_F_CSUM`,
    /// `TUN_F_TSO4`, ...; needs `IFF_VNET_HDR`).
    pub fn set_offload(&self, flags: libc::c_uint) -> Result<(), TunError> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value; fd is a valid TUN queue.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::TUNSETOFFLOAD, flags) };
        cvt(rc).map(drop).map_err(TunError::SetOffload)
    }

    /// `TUNSETPERSIST`: with `on`, the device outlives its last queue (until deleted).
    pub fn set_persist(&self, on: bool) -> Result<(), TunError> {
        let on = libc::c_int::from(on);
        // SAFETY: TUNSETPERSIST takes its argument by value; fd is a valid TUN queue.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::TUNSETPERSIST, on) };
        cvt(rc).map(drop).map_err(TunError::SetPersist)
    }
}

impl AsFd for Tun {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Tun {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl From<Tun> for OwnedFd {
    fn from(t: Tun) -> OwnedFd {
        t.fd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_opening() {
        let e = Tun::open_queue("sixteen-chars-xx", false).unwrap_err();
        assert!(matches!(&e, TunError::Name(io) if io.kind() == io::ErrorKind::InvalidInput));
    }

    /// The index of `name` in the calling thread's network namespace (0: none).
    fn index(name: &std::ffi::CStr) -> libc::c_uint {
        // SAFETY: name is a NUL-terminated string that outlives the call.
        unsafe { libc::if_nametoindex(name.as_ptr()) }
    }

    /// Queues, offloads, persistence and a name taken by another kind of device, in an anonymous
    /// network namespace ([`crate::netns::NetnsFd::new_anonymous`]: only a thread of its own
    /// enters it; skipped without root).
    #[test]
    fn queues_offload_persist_in_a_private_netns() {
        let made = crate::netns::NetnsFd::new_anonymous(|| {
            let q0 = Tun::open_queue("ferry-t0", true).expect("first queue");
            q0.set_offload(libc::TUN_F_CSUM | libc::TUN_F_TSO4)
                .expect("offloads");
            let q1 = Tun::open_queue("ferry-t0", true).expect("second queue");
            assert_ne!(index(c"ferry-t0"), 0);
            // A device of that name that is not a TUN device.
            let e = Tun::open_queue("lo", false).unwrap_err();
            assert!(
                matches!(&e, TunError::SetIff(io) if io.raw_os_error() == Some(libc::EINVAL)),
                "{e:?}"
            );
            q0.set_persist(true).expect("persist");
            drop((q0, q1));
            assert_ne!(
                index(c"ferry-t0"),
                0,
                "persistent device outlives its queues"
            );
            let q = Tun::open_queue("ferry-t0", true).expect("re-attach");
            q.set_persist(false).expect("not persistent");
            drop(q);
            assert_eq!(index(c"ferry-t0"), 0, "gone with its last queue");
        });
        if let Err(e) = made {
            eprintln!("skipped queues_offload_persist_in_a_private_netns: {e}");
        }
    }
}
