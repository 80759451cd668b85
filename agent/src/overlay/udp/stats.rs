//! The datapath's packet counters: relaxed atomics that every worker adds to once per batch,
//! read by the metrics endpoint.

use std::sync::atomic::AtomicU64;

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
