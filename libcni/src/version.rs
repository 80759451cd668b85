//! CNI spec versions this plugin speaks, and version-dependent behaviour.

/// Versions reported by `VERSION` (oldest first).
pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest version we speak; used for errors when the config's version is unknown.
pub const LATEST: &str = "1.1.0";

/// A parsed, supported spec version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(u8, u8, u8);

impl Version {
    /// 0.4.0: CHECK appears.
    pub const V0_4_0: Version = Version(0, 4, 0);
    /// 1.0.0: `ips[].version` disappears.
    pub const V1_0_0: Version = Version(1, 0, 0);
    /// 1.1.0: STATUS, GC, per-route mtu/advmss/priority/table/scope.
    pub const V1_1_0: Version = Version(1, 1, 0);

    /// Parses `s` and accepts it only if it is one of [`SUPPORTED`].
    pub fn parse_supported(s: &str) -> Option<Version> {
        if !SUPPORTED.contains(&s) {
            return None;
        }
        let mut it = s.split('.').map(|p| p.parse::<u8>().ok());
        Some(Version(it.next()??, it.next()??, it.next()??))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// The `VERSION` answer for a request in `cni_version` (or the latest if absent).
pub fn version_info(cni_version: &str) -> serde_json::Value {
    serde_json::json!({ "cniVersion": cni_version, "supportedVersions": SUPPORTED })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_supported_versions() {
        assert_eq!(Version::parse_supported("1.0.0"), Some(Version::V1_0_0));
        assert!(Version::parse_supported("0.3.1").unwrap() < Version::V0_4_0);
        assert_eq!(Version::parse_supported("0.2.0"), None);
        assert_eq!(Version::parse_supported("2.0.0"), None);
        assert_eq!(Version::parse_supported("1.0"), None);
        assert_eq!(
            Version::parse_supported("1.1.0").unwrap().to_string(),
            "1.1.0"
        );
    }
}
