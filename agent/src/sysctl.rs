//! The one sysctl the agent owns: `net.ipv4.ip_forward` of its own network namespace.
//!
//! `/proc/sys/net` shows the namespace of the process that opens it, so this acts on the namespace
//! the agent was started in (a node's); it is read first and written only when it is off. The
//! mechanism is `ferry_sys::sysctl`.

use std::io;
use std::path::Path;

/// `net.ipv4.ip_forward`.
pub const IP_FORWARD: &str = ferry_sys::sysctl::IP_FORWARD;

/// Sets the boolean sysctl at `path` to 1 unless it already is; returns whether it was written.
pub fn enable(path: &Path) -> io::Result<bool> {
    Ok(ferry_sys::sysctl::enable(path)?)
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
        assert!(enable(&dir.path().join("missing")).is_err());
    }
}
