//! The agent's kernel boundary for routing: the shared `ferry-netlink` client, under the names
//! the agent's modules use.
//!
//! Everything lives in `ferry-netlink` (one socket type, one request loop, one `Link`, one
//! `Mac`): looking links up (with their VXLAN attributes), creating / changing / deleting the
//! VXLAN device, IPv4 addresses, main-table routes, neighbour (ARP) and bridge FDB entries of one
//! device, link counters. What stays here are two spellings of `Mac`'s own conversions that the
//! agent's modules and tests use.
//!
//! The socket acts in the network namespace it was created in (the agent's own: `ferry up` starts
//! the agent inside the node's namespace). Requests are answered by the kernel within
//! microseconds, so the async agent calls them inline instead of moving them to a thread pool.
//! Failures of single route operations are retried by the next reconciliation round.

pub use ferry_netlink::{
    Fdb, Link, LinkStats, Mac, Neigh, Netlink, NlError, Route4, Vxlan, VxlanSpec, MAIN_TABLE,
};

/// Formats a MAC the way `ip` prints it (`0a:1b:...`): [`Mac`]'s `Display`, also for a bare
/// `[u8; 6]` (as read from a packet).
pub fn mac_string<M: Copy + Into<Mac>>(mac: &M) -> String {
    (*mac).into().to_string()
}

/// Parses `0a:1b:2c:3d:4e:5f` ([`Mac`]'s `FromStr`).
pub fn parse_mac(s: &str) -> Option<Mac> {
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_spellings() {
        let m = Mac([0x1a, 0x89, 0x53, 0x49, 0xbd, 0xa6]);
        assert_eq!(mac_string(&m), "1a:89:53:49:bd:a6");
        assert_eq!(mac_string(&m.octets()), "1a:89:53:49:bd:a6");
        assert_eq!(parse_mac("1a:89:53:49:bd:a6"), Some(m));
        assert_eq!(parse_mac("1a:89"), None);
    }
}
