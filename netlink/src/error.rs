//! [`NlError`]: a failed netlink operation, named by what was being done, with the kernel's errno.

use std::io;

/// A failed netlink operation, with the kernel's errno.
#[derive(Debug, thiserror::Error)]
#[error("netlink {op}: {source}")]
pub struct NlError {
    /// What was being done (`"create veth"`, `"add route"`, ...).
    pub op: String,
    /// The kernel's answer (or a local I/O or decode failure).
    #[source]
    pub source: io::Error,
}

impl NlError {
    /// An error of operation `op`.
    pub fn new(op: impl Into<String>, source: io::Error) -> Self {
        NlError {
            op: op.into(),
            source,
        }
    }

    /// The errno, for callers that branch on EEXIST / ENODEV / ESRCH.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }

    /// True for "already exists".
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }

    /// True for "no such device / entry".
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENODEV | libc::ENOENT | libc::ESRCH)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_classes() {
        let e = |errno| NlError::new("op", io::Error::from_raw_os_error(errno));
        assert!(e(libc::EEXIST).is_exists());
        assert!(!e(libc::EEXIST).is_not_found());
        for errno in [libc::ENODEV, libc::ENOENT, libc::ESRCH] {
            assert!(e(errno).is_not_found());
        }
        assert!(!e(libc::EPERM).is_not_found());
        assert_eq!(e(libc::EPERM).errno(), Some(libc::EPERM));
        let local = NlError::new("decode", io::Error::new(io::ErrorKind::InvalidData, "bad"));
        assert_eq!(local.errno(), None);
        assert!(local.to_string().starts_with("netlink decode: "));
    }
}
