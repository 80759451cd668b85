//! Boolean sysctls under `/proc/sys`, such as `net.ipv4.ip_forward`.
//!
//! `/proc/sys/net` shows the network namespace of the thread that opens it, so these act on the
//! caller's current namespace: enter a pod's or node's namespace first (for example with
//! [`crate::netns::NetnsFd::run_on_thread`]) to change it there. A value is read first and written
//! only when it differs, so a sysctl already as wanted costs one read and no privilege.

use std::io;
use std::path::{Path, PathBuf};

/// `net.ipv4.ip_forward`.
pub const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
/// `net.ipv6.conf.all.forwarding`.
pub const IPV6_FORWARDING: &str = "/proc/sys/net/ipv6/conf/all/forwarding";
/// `net.bridge.bridge-nf-call-iptables` (per namespace; present while `br_netfilter` is loaded):
/// whether frames forwarded between the ports of a bridge pass the IPv4 netfilter hooks.
pub const BRIDGE_NF_CALL_IPTABLES: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";

/// A sysctl that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    /// Reading the current value failed (missing sysctl, no `/proc`).
    #[error("reading {path}: {source}")]
    Read {
        /// The `/proc/sys` path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing the new value failed (usually: not privileged in this namespace).
    #[error("writing {path}: {source}")]
    Write {
        /// The `/proc/sys` path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl From<SysctlError> for io::Error {
    fn from(e: SysctlError) -> io::Error {
        let kind = match &e {
            SysctlError::Read { source, .. } | SysctlError::Write { source, .. } => source.kind(),
        };
        io::Error::new(kind, e)
    }
}

/// Sets the boolean sysctl at `path` to 1 unless it already is; returns whether it was written.
pub fn enable(path: impl AsRef<Path>) -> Result<bool, SysctlError> {
    set(path, true)
}

/// Sets the boolean sysctl at `path` to `on` (1 or 0) unless it already is; returns whether it
/// was written.
pub fn set(path: impl AsRef<Path>, on: bool) -> Result<bool, SysctlError> {
    let path = path.as_ref();
    let now = std::fs::read_to_string(path).map_err(|source| SysctlError::Read {
        path: path.to_owned(),
        source,
    })?;
    let want = if on { "1" } else { "0" };
    if now.trim() == want {
        return Ok(false);
    }
    std::fs::write(path, format!("{want}\n")).map_err(|source| SysctlError::Write {
        path: path.to_owned(),
        source,
    })?;
    Ok(true)
}

/// Enables IPv4 forwarding (`net.ipv4.ip_forward`) in the caller's network namespace; returns
/// whether it was off.
pub fn enable_ip_forward() -> Result<bool, SysctlError> {
    enable(IP_FORWARD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_when_off() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ip_forward");
        std::fs::write(&p, "0\n").unwrap();
        assert!(enable(&p).unwrap());
        assert_eq!(std::fs::read_to_string(&p).unwrap().trim(), "1");
        assert!(!enable(&p).unwrap());
        assert!(matches!(
            enable(dir.path().join("missing")),
            Err(SysctlError::Read { .. })
        ));
        assert!(set(&p, false).unwrap());
        assert_eq!(std::fs::read_to_string(&p).unwrap().trim(), "0");
        assert!(!set(&p, false).unwrap());
        assert!(set(&p, true).unwrap());
    }
}
