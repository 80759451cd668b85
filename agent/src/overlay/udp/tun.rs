//! The queues of the TUN device [`DEVICE`]: one per worker, opened through
//! [`ferry_sys::tun::Tun`] (multi-queue, no packet info; with offloads, `IFF_VNET_HDR` and
//! checksum + TSO4, see [`super::offload`]), and the device made persistent so it survives the
//! agent (see the restart notes in [`super`]).

use super::{UdpError, DEVICE};
use ferry_sys::tun::{Tun, TunError};

impl From<TunError> for UdpError {
    fn from(e: TunError) -> UdpError {
        match e {
            TunError::Open(e) => UdpError::OpenTun(e),
            // A name error (never for [`DEVICE`]) carries no errno, so `is_mismatch` is false.
            TunError::SetIff(e) | TunError::Name(e) => UdpError::Attach(e),
            TunError::SetOffload(e) => UdpError::Offload(e),
            TunError::SetPersist(e) => UdpError::Persist(e),
        }
    }
}

/// Opens one queue of the multi-queue TUN device [`DEVICE`] (creating it if it does not exist);
/// with `offload`, with `IFF_VNET_HDR` and checksum + TSO4 offload (see [`super::offload`]).
pub(super) fn open_queue(offload: bool) -> Result<Tun, UdpError> {
    let tun = Tun::open_queue(DEVICE, offload)?;
    if offload {
        tun.set_offload(libc::TUN_F_CSUM | libc::TUN_F_TSO4)?;
    }
    Ok(tun)
}

/// Makes the device of queue `q` persistent (`TUNSETPERSIST`): it, its address and the routes
/// through it outlive the agent process.
pub(super) fn set_persist(q: &Tun) -> Result<(), UdpError> {
    Ok(q.set_persist(true)?)
}
