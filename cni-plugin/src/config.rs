//! Network configuration: the JSON on stdin, compatible with the reference `bridge` plugin and an
//! `ipam` section in host-local's shape, plus the node network file written by `ferry-agent`.
//!
//! Parsing happens in two steps: serde reads the raw document ([`RawNetConf`]), then
//! [`NetConf::parse`] validates it into typed settings, so every later step can trust them. Any
//! `ipam.type` other than ours is delegated to that plugin; with `ipam.type` omitted the built-in
//! IPAM serves the ranges from the config or, when the config has none, from the node file.

use crate::env::validate_ifname;
use crate::error::{code, quoted, CniError, CniResult};
use crate::types::{CniOutput, Dns, Route};
use crate::version::{self, Version};
use ipnetwork::IpNetwork;
use serde::Deserialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Default bridge name (the reference plugin's, so configs can switch `type` unchanged).
pub const DEFAULT_BRIDGE: &str = "cni0";
/// Default IPAM state directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/ferry/cni/networks";
/// Default node network file written by `ferry-agent`.
pub const DEFAULT_SUBNET_FILE: &str = "/run/ferry/subnet.env";
/// Default MTU when neither the config nor the node file says.
pub const DEFAULT_MTU: u32 = 1500;

/// The raw `ipam` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawIpam {
    /// Delegate plugin; omitted (or `"ferry"`) for the built-in IPAM.
    #[serde(rename = "type", default)]
    pub plugin: Option<String>,
    /// Single-range shorthand.
    pub subnet: Option<String>,
    /// First address to hand out (with `subnet`).
    pub range_start: Option<String>,
    /// Last address to hand out (with `subnet`).
    pub range_end: Option<String>,
    /// Gateway (with `subnet`).
    pub gateway: Option<String>,
    /// host-local range sets: one address is allocated from each set.
    pub ranges: Option<Vec<Vec<RawRange>>>,
    /// Routes to add in the container.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// Reservation directory.
    pub data_dir: Option<String>,
}

/// One host-local range.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawRange {
    /// Subnet.
    pub subnet: String,
    /// First address to hand out.
    pub range_start: Option<String>,
    /// Last address to hand out.
    pub range_end: Option<String>,
    /// Gateway.
    pub gateway: Option<String>,
}

/// One configured route.
#[derive(Debug, Clone, Deserialize)]
pub struct RawRoute {
    /// Destination.
    pub dst: String,
    /// Next hop.
    pub gw: Option<String>,
}

/// A valid-attachment entry of GC.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Attachment {
    /// Container id.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Interface name.
    pub ifname: String,
}

/// The network configuration as serde reads it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawNetConf {
    /// Spec version of this document.
    pub cni_version: Option<String>,
    /// Network name.
    #[serde(default)]
    pub name: String,
    /// Plugin type.
    #[serde(rename = "type", default)]
    pub plugin: String,
    /// Bridge name.
    pub bridge: Option<String>,
    /// Give the bridge the gateway address.
    pub is_gateway: Option<bool>,
    /// Install a default route via the gateway in the container.
    pub is_default_gateway: Option<bool>,
    /// Accepted for compatibility: the gateway address is always enforced.
    #[serde(default)]
    pub force_address: bool,
    /// Masquerade traffic from the subnet that leaves it.
    #[serde(default)]
    pub ip_masq: bool,
    /// MTU of the veth pair and bridge.
    pub mtu: Option<u64>,
    /// Hairpin mode on the host port (default on).
    pub hairpin_mode: Option<bool>,
    /// Accepted for compatibility: promiscuous bridge (not needed with hairpin).
    #[serde(default)]
    pub promisc_mode: bool,
    /// Unsupported reference-plugin features: rejected with code 2 when set.
    pub vlan: Option<serde_json::Value>,
    /// Unsupported (see `vlan`).
    pub vlan_trunk: Option<serde_json::Value>,
    /// Unsupported (see `vlan`).
    pub macspoofchk: Option<bool>,
    /// IPAM section.
    pub ipam: Option<RawIpam>,
    /// DNS passed through to the result.
    pub dns: Option<Dns>,
    /// Node network file (ferry extension).
    pub subnet_file: Option<String>,
    /// Result of the previous plugin in the chain.
    pub prev_result: Option<serde_json::Value>,
    /// GC: attachments to keep.
    #[serde(rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// One validated address range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// Subnet the addresses belong to.
    pub subnet: IpNetwork,
    /// First address to hand out.
    pub start: IpAddr,
    /// Last address to hand out.
    pub end: IpAddr,
    /// Gateway (never handed out).
    pub gateway: Option<IpAddr>,
}

/// A set of ranges; the allocator hands out one address from the first range with room.
pub type RangeSet = Vec<Range>;

/// Where addresses come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpamSource {
    /// Built-in IPAM with ranges and routes from the config.
    Static {
        /// Range sets.
        ranges: Vec<RangeSet>,
        /// Routes.
        routes: Vec<Route>,
    },
    /// Built-in IPAM with the subnet from the node network file.
    NodeFile(PathBuf),
    /// An external IPAM plugin of this type.
    Delegate(String),
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct NetConf {
    /// The version to answer in.
    pub version: Version,
    /// Network name.
    pub name: String,
    /// Bridge name.
    pub bridge: String,
    /// Bridge carries the gateway address.
    pub is_gateway: bool,
    /// Default route via the gateway in the container.
    pub is_default_gateway: bool,
    /// Masquerade egress from the subnet.
    pub ip_masq: bool,
    /// Configured MTU (the node file may supply one when absent).
    pub mtu: Option<u32>,
    /// Hairpin mode on host ports.
    pub hairpin: bool,
    /// IPAM source.
    pub ipam: IpamSource,
    /// Reservation directory of the built-in IPAM.
    pub data_dir: PathBuf,
    /// DNS settings.
    pub dns: Dns,
    /// Result of the previous plugin.
    pub prev_result: Option<CniOutput>,
    /// GC: attachments to keep.
    pub valid_attachments: Option<Vec<Attachment>>,
    /// The raw document (forwarded to delegates).
    pub raw: serde_json::Value,
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(code::INVALID_CONFIG, msg)
}

fn parse_ip(s: &str, what: &str) -> CniResult<IpAddr> {
    s.parse()
        .map_err(|_| invalid(format!("invalid {what} {}: not an IP address", quoted(s))))
}

fn parse_net(s: &str, what: &str) -> CniResult<IpNetwork> {
    let net: IpNetwork = s
        .parse()
        .map_err(|_| invalid(format!("invalid {what} {}", quoted(s))))?;
    Ok(net)
}

impl NetConf {
    /// Reads the version first (so even a later error answers in the config's version), then
    /// everything else.
    pub fn version_of(doc: &serde_json::Value) -> CniResult<Version> {
        match doc.get("cniVersion").and_then(|v| v.as_str()) {
            None => Err(invalid("cniVersion is missing")),
            Some(s) => Version::parse_supported(s).ok_or_else(|| {
                CniError::new(
                    code::INCOMPATIBLE_VERSION,
                    format!("unsupported cniVersion {}", quoted(s)),
                )
                .with_details(format!("supported: {}", version::SUPPORTED.join(", ")))
            }),
        }
    }

    /// Parses and validates stdin.
    pub fn parse(stdin: &[u8]) -> CniResult<NetConf> {
        let doc: serde_json::Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(code::DECODE, "failed to decode network configuration").with_details(e)
        })?;
        if !doc.is_object() {
            return Err(CniError::new(
                code::DECODE,
                "network configuration is not a JSON object",
            ));
        }
        let version = Self::version_of(&doc)?;
        let raw: RawNetConf = serde_json::from_value(doc.clone()).map_err(|e| {
            CniError::new(code::DECODE, "failed to decode network configuration").with_details(e)
        })?;
        Self::validate(raw, version, doc)
    }

    fn validate(raw: RawNetConf, version: Version, doc: serde_json::Value) -> CniResult<NetConf> {
        if raw.name.is_empty() {
            return Err(invalid("network name is missing"));
        }
        if raw.name.contains('/') || raw.name == "." || raw.name == ".." {
            return Err(invalid(format!(
                "invalid network name {}",
                quoted(&raw.name)
            )));
        }
        for (set, key) in [
            (raw.vlan.is_some(), "vlan"),
            (raw.vlan_trunk.is_some(), "vlanTrunk"),
            (raw.macspoofchk == Some(true), "macspoofchk"),
        ] {
            if set {
                return Err(CniError::new(
                    code::UNSUPPORTED_FIELD,
                    format!("unsupported field {}", quoted(key)),
                ));
            }
        }
        let bridge = raw.bridge.unwrap_or_else(|| DEFAULT_BRIDGE.to_owned());
        validate_ifname(&bridge, "bridge name").map_err(invalid)?;
        let mtu = match raw.mtu {
            None => None,
            Some(m @ 68..=65535) => Some(u32::try_from(m).unwrap_or(DEFAULT_MTU)),
            Some(m) => return Err(invalid(format!("invalid mtu {m}: must be 68..65535"))),
        };
        let ipam_raw = raw.ipam.unwrap_or_default();
        let data_dir = PathBuf::from(
            ipam_raw
                .data_dir
                .clone()
                .unwrap_or_else(|| DEFAULT_DATA_DIR.to_owned()),
        );
        let ipam = match ipam_raw.plugin.as_deref() {
            Some(t) if !t.is_empty() && t != "ferry" => {
                if t.contains('/') {
                    return Err(invalid(format!("invalid ipam type {}", quoted(t))));
                }
                IpamSource::Delegate(t.to_owned())
            }
            _ => {
                if ipam_raw.subnet.is_none() && ipam_raw.ranges.is_none() {
                    IpamSource::NodeFile(PathBuf::from(
                        raw.subnet_file
                            .unwrap_or_else(|| DEFAULT_SUBNET_FILE.to_owned()),
                    ))
                } else {
                    parse_static_ipam(&ipam_raw)?
                }
            }
        };
        let prev_result = match raw.prev_result {
            None => None,
            Some(v) => Some(serde_json::from_value(v).map_err(|e| {
                CniError::new(code::DECODE, "failed to decode prevResult").with_details(e)
            })?),
        };
        Ok(NetConf {
            version,
            name: raw.name,
            bridge,
            is_gateway: raw.is_gateway.unwrap_or(true),
            is_default_gateway: raw.is_default_gateway.unwrap_or(true),
            ip_masq: raw.ip_masq,
            mtu,
            hairpin: raw.hairpin_mode.unwrap_or(true),
            ipam,
            data_dir,
            dns: raw.dns.unwrap_or_default(),
            prev_result,
            valid_attachments: raw.valid_attachments,
            raw: doc,
        })
    }
}

/// Validates one range: gateway and bounds inside the subnet, room for at least one address.
pub fn make_range(
    subnet: IpNetwork,
    start: Option<IpAddr>,
    end: Option<IpAddr>,
    gateway: Option<IpAddr>,
) -> CniResult<Range> {
    let max_prefix = if subnet.is_ipv4() { 30 } else { 126 };
    if subnet.prefix() > max_prefix {
        return Err(invalid(format!(
            "subnet {subnet} is too small (largest prefix /{max_prefix})"
        )));
    }
    let subnet =
        IpNetwork::new(subnet.network(), subnet.prefix()).map_err(|e| invalid(e.to_string()))?;
    let first = next_ip(subnet.network());
    let last = match subnet {
        IpNetwork::V4(n) => IpAddr::V4(prev_v4(n.broadcast())),
        IpNetwork::V6(n) => IpAddr::V6(n.broadcast()),
    };
    let inside = |ip: IpAddr, what: &str| -> CniResult<IpAddr> {
        if !subnet.contains(ip) || ip == subnet.network() || Some(ip) == subnet_broadcast(subnet) {
            Err(invalid(format!(
                "{what} {ip} is not a usable address of subnet {subnet}"
            )))
        } else {
            Ok(ip)
        }
    };
    let gateway = match gateway {
        Some(g) => Some(inside(g, "gateway")?),
        None => Some(first),
    };
    let start = match start {
        Some(s) => inside(s, "rangeStart")?,
        // The default range begins after the gateway when the gateway is the first address.
        None if gateway == Some(first) && first < last => next_ip(first),
        None => first,
    };
    let end = match end {
        Some(e) => inside(e, "rangeEnd")?,
        None => last,
    };
    if start > end {
        return Err(invalid(format!(
            "rangeStart {start} is after rangeEnd {end}"
        )));
    }
    Ok(Range {
        subnet,
        start,
        end,
        gateway,
    })
}

fn subnet_broadcast(net: IpNetwork) -> Option<IpAddr> {
    match net {
        IpNetwork::V4(n) => Some(IpAddr::V4(n.broadcast())),
        IpNetwork::V6(_) => None,
    }
}

fn prev_v4(ip: std::net::Ipv4Addr) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(u32::from(ip).wrapping_sub(1))
}

/// The address after `ip` (wrapping).
pub fn next_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v) => IpAddr::V4(std::net::Ipv4Addr::from(u32::from(v).wrapping_add(1))),
        IpAddr::V6(v) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v).wrapping_add(1))),
    }
}

fn parse_static_ipam(raw: &RawIpam) -> CniResult<IpamSource> {
    let mut sets = Vec::new();
    if let Some(subnet) = &raw.subnet {
        let subnet = parse_net(subnet, "subnet")?;
        let start = raw
            .range_start
            .as_deref()
            .map(|s| parse_ip(s, "rangeStart"))
            .transpose()?;
        let end = raw
            .range_end
            .as_deref()
            .map(|s| parse_ip(s, "rangeEnd"))
            .transpose()?;
        let gw = raw
            .gateway
            .as_deref()
            .map(|s| parse_ip(s, "gateway"))
            .transpose()?;
        sets.push(vec![make_range(subnet, start, end, gw)?]);
    }
    for set in raw.ranges.iter().flatten() {
        if set.is_empty() {
            return Err(invalid("empty range set in ipam.ranges"));
        }
        let mut out = Vec::new();
        for r in set {
            let subnet = parse_net(&r.subnet, "subnet")?;
            let start = r
                .range_start
                .as_deref()
                .map(|s| parse_ip(s, "rangeStart"))
                .transpose()?;
            let end = r
                .range_end
                .as_deref()
                .map(|s| parse_ip(s, "rangeEnd"))
                .transpose()?;
            let gw = r
                .gateway
                .as_deref()
                .map(|s| parse_ip(s, "gateway"))
                .transpose()?;
            let range = make_range(subnet, start, end, gw)?;
            if out
                .first()
                .is_some_and(|f: &Range| f.subnet.is_ipv4() != range.subnet.is_ipv4())
            {
                return Err(invalid("a range set mixes IPv4 and IPv6 ranges"));
            }
            out.push(range);
        }
        sets.push(out);
    }
    let routes = raw
        .routes
        .iter()
        .map(|r| {
            let dst = parse_net(&r.dst, "route dst")?;
            let gw =
                r.gw.as_deref()
                    .map(|g| parse_ip(g, "route gw"))
                    .transpose()?;
            Ok(Route::new(dst, gw))
        })
        .collect::<CniResult<Vec<_>>>()?;
    Ok(IpamSource::Static {
        ranges: sets,
        routes,
    })
}

/// The node network file (flannel's `subnet.env` idea), written by `ferry-agent`.
///
/// ```text
/// FERRY_NETWORK=10.244.0.0/16
/// FERRY_SUBNET=10.244.1.1/24     # gateway address / prefix
/// FERRY_MTU=1450
/// FERRY_IPMASQ=true
/// ```
/// flannel's `FLANNEL_*` spellings are accepted too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNetwork {
    /// Cluster-wide pod network.
    pub network: Option<IpNetwork>,
    /// This node's subnet, with the gateway as the address part.
    pub subnet: IpNetwork,
    /// MTU for pod interfaces.
    pub mtu: Option<u32>,
    /// Whether the agent masquerades egress (informational for the plugin).
    pub ipmasq: bool,
}

impl NodeNetwork {
    /// Reads the file; a missing file is "try again later" (code 11), a broken one is invalid
    /// configuration.
    pub fn load(path: &Path) -> CniResult<NodeNetwork> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CniError::new(
                    code::TRY_AGAIN_LATER,
                    format!("node network file {} does not exist yet", path.display()),
                )
                .with_details("ferry-agent writes it once the node has a pod subnet"))
            }
            Err(e) => {
                return Err(CniError::new(
                    code::IO_FAILURE,
                    format!("reading node network file {}", path.display()),
                )
                .with_details(e))
            }
        };
        Self::parse(&text).map_err(|e| e.context(format!("node network file {}", path.display())))
    }

    /// Parses the file's text.
    pub fn parse(text: &str) -> CniResult<NodeNetwork> {
        let (mut network, mut subnet, mut mtu, mut ipmasq) = (None, None, None, false);
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let Some((k, v)) = line.split_once('=') else {
                return Err(invalid(format!("malformed line {}", quoted(line))));
            };
            let key = k
                .trim()
                .trim_start_matches("FERRY_")
                .trim_start_matches("FLANNEL_");
            let v = v.trim();
            match key {
                "NETWORK" => network = Some(parse_net(v, "NETWORK")?),
                "SUBNET" => subnet = Some(parse_net(v, "SUBNET")?),
                "MTU" => {
                    mtu = Some(
                        v.parse::<u32>()
                            .ok()
                            .filter(|m| (68..=65535).contains(m))
                            .ok_or_else(|| invalid(format!("invalid MTU {}", quoted(v))))?,
                    )
                }
                "IPMASQ" => ipmasq = v == "true",
                _ => {}
            }
        }
        let subnet = subnet.ok_or_else(|| invalid("SUBNET is missing"))?;
        Ok(NodeNetwork {
            network,
            subnet,
            mtu,
            ipmasq,
        })
    }

    /// The single range this file describes: the gateway is the address part of `SUBNET`.
    pub fn range(&self) -> CniResult<Range> {
        let net = IpNetwork::new(self.subnet.network(), self.subnet.prefix())
            .map_err(|e| invalid(e.to_string()))?;
        let gw = (self.subnet.ip() != net.network()).then_some(self.subnet.ip());
        make_range(net, None, None, gw)
    }

    /// Renders the file (used by the agent and tests).
    pub fn render(&self) -> String {
        let mut s = String::new();
        if let Some(n) = self.network {
            s.push_str(&format!("FERRY_NETWORK={n}\n"));
        }
        s.push_str(&format!("FERRY_SUBNET={}\n", self.subnet));
        if let Some(m) = self.mtu {
            s.push_str(&format!("FERRY_MTU={m}\n"));
        }
        s.push_str(&format!("FERRY_IPMASQ={}\n", self.ipmasq));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> CniResult<NetConf> {
        NetConf::parse(s.as_bytes())
    }

    #[test]
    fn reference_bridge_config_parses() {
        let c = parse(
            r#"{"cniVersion":"1.0.0","name":"n","type":"ferry-cni","bridge":"br0","isGateway":true,
            "isDefaultGateway":true,"mtu":1450,"hairpinMode":false,"ipMasq":false,
            "ipam":{"subnet":"10.1.0.0/24","routes":[{"dst":"10.2.0.0/16"}],"dataDir":"/tmp/x"}}"#,
        )
        .unwrap();
        assert_eq!(c.bridge, "br0");
        assert_eq!(c.mtu, Some(1450));
        assert!(!c.hairpin);
        let IpamSource::Static { ranges, routes } = &c.ipam else {
            panic!("{:?}", c.ipam)
        };
        assert_eq!(ranges[0][0].gateway, Some("10.1.0.1".parse().unwrap()));
        assert_eq!(ranges[0][0].start, "10.1.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(ranges[0][0].end, "10.1.0.254".parse::<IpAddr>().unwrap());
        assert_eq!(routes[0].dst.to_string(), "10.2.0.0/16");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn host_local_ranges_and_delegation() {
        let c = parse(
            r#"{"cniVersion":"0.4.0","name":"n","type":"ferry-cni",
            "ipam":{"type":"host-local","ranges":[[{"subnet":"10.1.0.0/24"}]]}}"#,
        )
        .unwrap();
        assert_eq!(c.ipam, IpamSource::Delegate("host-local".into()));
        let c = parse(
            r#"{"cniVersion":"1.1.0","name":"n","type":"ferry-cni",
            "ipam":{"ranges":[[{"subnet":"10.1.0.0/24","rangeStart":"10.1.0.10","rangeEnd":"10.1.0.20","gateway":"10.1.0.254"}],[{"subnet":"fd00::/64"}]]}}"#,
        )
        .unwrap();
        let IpamSource::Static { ranges, .. } = &c.ipam else {
            panic!()
        };
        assert_eq!(ranges.len(), 2);
        assert_eq!(ranges[0][0].gateway, Some("10.1.0.254".parse().unwrap()));
        assert!(ranges[1][0].subnet.is_ipv6());
    }

    #[test]
    fn no_ipam_means_node_file() {
        let c = parse(
            r#"{"cniVersion":"1.0.0","name":"n","type":"ferry-cni","subnetFile":"/x/s.env"}"#,
        )
        .unwrap();
        assert_eq!(c.ipam, IpamSource::NodeFile("/x/s.env".into()));
        assert!(c.is_gateway && c.is_default_gateway && c.hairpin);
    }

    #[test]
    fn bad_input_gets_the_right_code() {
        let cases = [
            ("{not json", code::DECODE),
            ("[1,2]", code::DECODE),
            (
                r#"{"cniVersion":"0.2.0","name":"n","type":"t"}"#,
                code::INCOMPATIBLE_VERSION,
            ),
            (r#"{"name":"n","type":"t"}"#, code::INVALID_CONFIG),
            (r#"{"cniVersion":"1.0.0","type":"t"}"#, code::INVALID_CONFIG),
            (
                r#"{"cniVersion":"1.0.0","name":"n","mtu":10}"#,
                code::INVALID_CONFIG,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","mtu":"big"}"#,
                code::DECODE,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","bridge":"a-very-long-bridge-name"}"#,
                code::INVALID_CONFIG,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.1.0.0/33"}}"#,
                code::INVALID_CONFIG,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"nonsense"}}"#,
                code::INVALID_CONFIG,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.1.0.0/24","gateway":"10.2.0.1"}}"#,
                code::INVALID_CONFIG,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.1.0.0/24","gateway":"10.1.0.255"}}"#,
                code::INVALID_CONFIG,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.1.0.0/31"}}"#,
                code::INVALID_CONFIG,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.1.0.0/24","rangeStart":"10.1.0.9","rangeEnd":"10.1.0.3"}}"#,
                code::INVALID_CONFIG,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","vlan":5}"#,
                code::UNSUPPORTED_FIELD,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","prevResult":{"ips":[{"address":"x"}]}}"#,
                code::DECODE,
            ),
        ];
        for (input, want) in cases {
            let got = parse(input).map(|_| ()).unwrap_err();
            assert_eq!(got.code, want, "{input}: {got}");
        }
    }

    #[test]
    fn node_file_round_trip_and_range() {
        let n = NodeNetwork::parse(
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
        )
        .unwrap();
        assert_eq!(n.mtu, Some(1450));
        let r = n.range().unwrap();
        assert_eq!(r.gateway, Some("10.244.3.1".parse().unwrap()));
        assert_eq!(r.subnet.to_string(), "10.244.3.0/24");
        assert_eq!(NodeNetwork::parse(&n.render()).unwrap(), n);
        assert!(NodeNetwork::parse("FERRY_MTU=1450\n").is_err());
        assert!(NodeNetwork::parse("FERRY_SUBNET=10.0.0.1/24\nFERRY_MTU=9\n").is_err());
        let e = NodeNetwork::load(Path::new("/nonexistent/ferry/subnet.env")).unwrap_err();
        assert_eq!(e.code, code::TRY_AGAIN_LATER);
    }
}
