//! The one place where failures become CNI error objects and exit codes.
//!
//! Every module returns its own typed error; they all convert into [`CniError`], which carries the
//! spec's numeric code, a one-line message and optional details. `main` prints it as the CNI error
//! JSON on stdout and exits non-zero.

use ferry_sys::netns::NetnsError;
use serde::Serialize;
use std::fmt;

/// CNI error codes (spec 1.1, section "Error").
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables (CNI_COMMAND, CNI_CONTAINERID, ...).
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content (malformed JSON on stdin, bad prevResult).
    pub const DECODE: u32 = 6;
    /// Invalid network configuration.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later: a transient condition (the node network file is not written yet).
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot serve ADD requests now.
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: cannot serve ADD, and existing pods may have reduced connectivity.
    pub const NOT_AVAILABLE_DEGRADED: u32 = 51;
    /// Ferry: the IP range is exhausted.
    pub const IP_EXHAUSTED: u32 = 100;
    /// Ferry: a link or interface name clashes with something that exists already.
    pub const NAME_CONFLICT: u32 = 101;
    /// Ferry: a netlink operation failed.
    pub const NETLINK: u32 = 102;
    /// Ferry: CHECK found the attachment differs from what ADD set up.
    pub const CHECK_FAILED: u32 = 103;
    /// Ferry: a delegated plugin (external IPAM) failed without a CNI error of its own.
    pub const DELEGATE: u32 = 104;
}

/// A CNI error: printed on stdout as `{"cniVersion","code","msg","details"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CniError {
    /// Spec or plugin-specific error code (see [`code`]).
    pub code: u32,
    /// One-line message.
    pub msg: String,
    /// Longer explanation (the cause chain), may be empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// An error with a code and message and no details.
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// Adds details (usually the underlying cause).
    #[must_use]
    pub fn with_details(mut self, details: impl fmt::Display) -> Self {
        self.details = details.to_string();
        self
    }

    /// Prefixes the message with what was being done.
    #[must_use]
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.msg = format!("{what}: {}", self.msg);
        self
    }

    /// The error object as CNI prints it.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let mut v = serde_json::json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = self.details.clone().into();
        }
        v
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

/// Shorthand result type for plugin operations.
pub type CniResult<T> = Result<T, CniError>;

/// `s` in double quotes with control characters and quotes escaped, for names taken from the
/// user (interface, plugin, network names) in messages. Messages never use `{:?}`: that would also
/// let Rust's `Some(..)`/`None` and struct syntax leak into what users read.
pub fn quoted(s: &str) -> String {
    format!("\"{}\"", s.escape_debug())
}

/// A namespace the runtime named that cannot be used is the caller's error, not an I/O one.
impl From<NetnsError> for CniError {
    fn from(e: NetnsError) -> Self {
        match e {
            NetnsError::NotFound(_) => CniError::new(code::UNKNOWN_CONTAINER, e.to_string()),
            NetnsError::NotNetns(_) => CniError::new(code::INVALID_ENV, e.to_string())
                .with_details("CNI_NETNS must name a network namespace"),
            NetnsError::Io { .. } => CniError::new(code::IO_FAILURE, e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No message of the plugin goes through `Debug` (`{:?}`, `{x:?}`, `{:#?}`): that is how
    /// `Some(10.89.0.1)` reached users. Scans every source file up to its test module.
    #[test]
    fn no_debug_formatting_outside_tests() {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        // Everything that builds a CNI error body: this crate and the plugin beside it.
        let mut sources = Vec::new();
        let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        walk(&here.join("src"), &mut sources);
        walk(&here.join("../cni-plugin/src"), &mut sources);
        assert!(sources.len() > 15, "found only {sources:?}");
        let mut offenders = Vec::new();
        for path in sources {
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or(&text);
            for (n, line) in code.lines().enumerate() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                if [":?}", ":#?}", "{:?", "{:#?"]
                    .iter()
                    .any(|p| line.contains(p))
                {
                    offenders.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "Debug formatting:\n{}",
            offenders.join("\n")
        );
    }

    #[test]
    fn quoted_escapes_like_a_string_literal() {
        assert_eq!(quoted("eth0"), "\"eth0\"");
        assert_eq!(quoted("a\"b\nc"), "\"a\\\"b\\nc\"");
    }
}
