//! The sysctls the agent owns, in its own network namespace (a node's): `net.ipv4.ip_forward`
//! (turned on at start) and `net.bridge.bridge-nf-call-iptables` (off while the eBPF Service
//! datapath runs with `--pod-netfilter-bypass`, on otherwise: see [`crate::bypass`]).
//!
//! `/proc/sys/net` shows the namespace of the process that opens it, so these act on the namespace
//! the agent was started in; each is read first and written only when it differs. The mechanism
//! is `ferry_sys::sysctl`.

use std::io;
use std::path::Path;

/// `net.ipv4.ip_forward`.
pub const IP_FORWARD: &str = ferry_sys::sysctl::IP_FORWARD;
/// `net.bridge.bridge-nf-call-iptables` (absent while `br_netfilter` is not loaded).
pub const BRIDGE_NF_CALL_IPTABLES: &str = ferry_sys::sysctl::BRIDGE_NF_CALL_IPTABLES;

/// Sets the boolean sysctl at `path` to 1 unless it already is; returns whether it was written.
pub fn enable(path: &Path) -> io::Result<bool> {
    Ok(ferry_sys::sysctl::enable(path)?)
}

/// Sets the boolean sysctl at `path` to `on` unless it already is; returns whether it was
/// written.
pub fn set(path: &Path, on: bool) -> io::Result<bool> {
    Ok(ferry_sys::sysctl::set(path, on)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_when_it_differs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ip_forward");
        std::fs::write(&p, "0\n").unwrap();
        assert!(enable(&p).unwrap());
        assert_eq!(std::fs::read_to_string(&p).unwrap().trim(), "1");
        assert!(!enable(&p).unwrap());
        assert!(set(&p, false).unwrap());
        assert!(!set(&p, false).unwrap());
        assert!(enable(&dir.path().join("missing")).is_err());
    }
}
