//! The `ferry.udp` device as netlink sees it: once the datapath has attached its queues (which
//! creates the device), [`ensure_device`] brings MTU, state and address into shape each round.

use super::DEVICE;
use crate::netlink::{Netlink, NlError};
use ipnetwork::Ipv4Network;

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
