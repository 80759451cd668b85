//! CNI result types (spec 1.1 "Success" object) and their version-specific encodings.
//!
//! One in-memory shape serves every version we speak: results from 0.3.x/0.4.0 carry an extra
//! `ips[].version` field (which we accept and regenerate), and the per-route `mtu`, `advmss`,
//! `priority`, `table` and `scope` fields exist only from 1.1.0 on, so [`CniOutput::encode`]
//! leaves them out for older versions.

use crate::version::Version;
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// An interface created by the plugin (or a previous plugin in the chain).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// MAC address, `aa:bb:cc:dd:ee:ff`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// MTU, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Netns path for interfaces inside the container; empty for host interfaces.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    /// Socket path (vhost-user and similar).
    #[serde(
        default,
        rename = "socketPath",
        skip_serializing_if = "String::is_empty"
    )]
    pub socket_path: String,
    /// PCI id (SR-IOV and similar).
    #[serde(default, rename = "pciID", skip_serializing_if = "String::is_empty")]
    pub pci_id: String,
}

/// An IP address assigned to an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Address with prefix length, e.g. `10.1.0.5/24`.
    pub address: IpNetwork,
    /// Gateway for this subnet, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A route to install in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination network.
    pub dst: IpNetwork,
    /// Next hop; absent means the default gateway of the matching IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// Path MTU for this route (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Advertised MSS for this route (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    /// Route metric (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Routing table (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    /// Route scope (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u32>,
}

impl Route {
    /// A plain route to `dst` via `gw`.
    pub fn new(dst: IpNetwork, gw: Option<IpAddr>) -> Self {
        Route {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

/// DNS settings passed through to the runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Dns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// resolv.conf options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    /// True when nothing is set (the field is then omitted from results).
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_empty()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// A CNI success result (the output of ADD, and `prevResult` on input).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CniOutput {
    /// Interfaces, in the order plugins created them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// Assigned addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    /// Routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// DNS settings.
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

impl CniOutput {
    /// Encodes the result in the wire format of `version`.
    pub fn encode(&self, version: Version) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        v["cniVersion"] = version.to_string().into();
        if version < Version::V1_0_0 {
            if let Some(ips) = v.get_mut("ips").and_then(|i| i.as_array_mut()) {
                for (ip, cfg) in ips.iter_mut().zip(&self.ips) {
                    let fam = if cfg.address.is_ipv4() { "4" } else { "6" };
                    ip["version"] = fam.into();
                }
            }
        }
        if version < Version::V1_1_0 {
            if let Some(routes) = v.get_mut("routes").and_then(|r| r.as_array_mut()) {
                for r in routes {
                    if let Some(obj) = r.as_object_mut() {
                        for k in ["mtu", "advmss", "priority", "table", "scope"] {
                            obj.remove(k);
                        }
                    }
                }
            }
        }
        v
    }

    /// Index of the interface named `name` inside `sandbox` (any sandbox if `sandbox` is empty).
    pub fn sandbox_interface(&self, name: &str, sandbox: &str) -> Option<usize> {
        self.interfaces.iter().position(|i| {
            i.name == name && !i.sandbox.is_empty() && (sandbox.is_empty() || i.sandbox == sandbox)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniOutput {
        let mut route = Route::new(
            "0.0.0.0/0".parse().unwrap(),
            Some("10.1.0.1".parse().unwrap()),
        );
        route.mtu = Some(1450);
        CniOutput {
            interfaces: vec![Interface {
                name: "eth0".into(),
                sandbox: "/x".into(),
                ..Default::default()
            }],
            ips: vec![IpConfig {
                address: "10.1.0.5/24".parse().unwrap(),
                gateway: Some("10.1.0.1".parse().unwrap()),
                interface: Some(0),
            }],
            routes: vec![route],
            dns: Dns::default(),
        }
    }

    #[test]
    fn old_versions_get_ip_version_and_lose_route_extras() {
        let v = sample().encode(Version::parse_supported("0.3.1").unwrap());
        assert_eq!(v["cniVersion"], "0.3.1");
        assert_eq!(v["ips"][0]["version"], "4");
        assert!(v["routes"][0].get("mtu").is_none());
        assert!(v.get("dns").is_none());
    }

    #[test]
    fn v110_keeps_route_mtu_and_drops_ip_version() {
        let v = sample().encode(Version::V1_1_0);
        assert!(v["ips"][0].get("version").is_none());
        assert_eq!(v["routes"][0]["mtu"], 1450);
        assert_eq!(v["ips"][0]["address"], "10.1.0.5/24");
    }

    #[test]
    fn parses_old_results_with_version_field() {
        let r: CniOutput = serde_json::from_str(
            r#"{"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.1.0.5/24"}]}"#,
        )
        .unwrap();
        assert_eq!(r.ips[0].address.to_string(), "10.1.0.5/24");
    }
}
