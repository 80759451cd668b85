//! What the agent reads from (and publishes on) Node objects: the pod subnet, the node's
//! addresses and the flannel-compatible annotations.
//!
//! Annotations (flannel's `--kube-subnet-mgr` wire format, so flannel-aware tools understand a
//! ferry node and a ferry node and a flannel node can peer): `flannel.alpha.coreos.com/backend-type`,
//! `.../backend-data` (VXLAN: `{"VNI":1,"VtepMAC":"..."}`), `.../public-ip` (the address peers
//! route to) and `.../kube-subnet-manager: "true"` (the subnet is `spec.podCIDR`). Ferry adds
//! `ferry.dev/mtu`, the largest pod MTU the node's own underlay allows, from which every agent
//! computes the cluster MTU (the minimum). Values outside [`MTU_MIN`]..=[`MTU_MAX`] are neither
//! published nor adopted (ferry-server's admission refuses them too), so one node cannot shrink
//! every pod's MTU to a useless value.

use crate::netlink::{parse_mac, Mac};
use ipnetwork::Ipv4Network;
use k8s_openapi::api::core::v1::Node;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Annotation: the overlay backend of the node (`host-gw`).
pub const ANN_BACKEND_TYPE: &str = "flannel.alpha.coreos.com/backend-type";
/// Annotation: backend parameters; VXLAN: `{"VNI":1,"VtepMAC":"0a:..."}` (flannel's format).
pub const ANN_BACKEND_DATA: &str = "flannel.alpha.coreos.com/backend-data";
/// Annotation (ferry's own): the largest pod MTU this node's underlay allows.
pub const ANN_MTU: &str = "ferry.dev/mtu";
/// Smallest `ferry.dev/mtu` an agent publishes or adopts (IPv6's minimum link MTU; the API
/// server's admission has the same bounds).
pub const MTU_MIN: u32 = 1280;
/// Largest `ferry.dev/mtu` an agent publishes or adopts.
pub const MTU_MAX: u32 = 65535;
/// Annotation: the IPv4 address peers send this node's pod traffic to.
pub const ANN_PUBLIC_IP: &str = "flannel.alpha.coreos.com/public-ip";
/// Annotation: the node's subnet comes from `spec.podCIDR` (always `"true"` for ferry).
pub const ANN_KUBE_SUBNET_MANAGER: &str = "flannel.alpha.coreos.com/kube-subnet-manager";

/// The parts of a Node the agent acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// The IPv4 pod subnet (`spec.podCIDR`, else the first IPv4 entry of `spec.podCIDRs`),
    /// normalised to its network address.
    pub pod_cidr: Option<Ipv4Network>,
    /// The first IPv4 `InternalIP` of `status.addresses`.
    pub internal_ip: Option<Ipv4Addr>,
    /// The `public-ip` annotation, when it is an IPv4 address.
    pub public_ip: Option<Ipv4Addr>,
    /// All annotations (to publish only what differs).
    pub annotations: BTreeMap<String, String>,
}

fn parse_cidr(s: &str) -> Option<Ipv4Network> {
    let net: Ipv4Network = s.trim().parse().ok()?;
    Ipv4Network::new(net.network(), net.prefix()).ok()
}

impl NodeInfo {
    /// Extracts the interesting fields of `node`.
    pub fn from_node(node: &Node) -> NodeInfo {
        let spec = node.spec.as_ref();
        let pod_cidr = spec
            .and_then(|s| s.pod_cidr.as_deref())
            .and_then(parse_cidr)
            .or_else(|| {
                spec.and_then(|s| s.pod_cidrs.as_ref())
                    .and_then(|all| all.iter().find_map(|c| parse_cidr(c)))
            });
        let internal_ip = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|addrs| {
                addrs
                    .iter()
                    .filter(|a| a.type_ == "InternalIP")
                    .find_map(|a| a.address.trim().parse::<Ipv4Addr>().ok())
            });
        let annotations = node.metadata.annotations.clone().unwrap_or_default();
        let public_ip = annotations
            .get(ANN_PUBLIC_IP)
            .and_then(|a| a.trim().parse::<Ipv4Addr>().ok());
        NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            pod_cidr,
            internal_ip,
            public_ip,
            annotations,
        }
    }

    /// The address a peer routes this node's pod subnet to: the `public-ip` its agent published
    /// (the address on its backend interface), else its `InternalIP` (a node whose agent has
    /// not published yet).
    pub fn peer_address(&self) -> Option<Ipv4Addr> {
        self.public_ip.or(self.internal_ip)
    }

    /// The VXLAN identity the node published (`backend-type: vxlan` and `backend-data`
    /// `{"VNI":n,"VtepMAC":"..."}`): `(VNI, VTEP MAC)`.
    pub fn vtep(&self) -> Option<(u32, Mac)> {
        self.vtep_checked().ok().flatten()
    }

    /// Like [`NodeInfo::vtep`], telling "not published" (`Ok(None)`: no vxlan backend-type or
    /// no backend-data) from garbage (`Err`: what is wrong with it).
    pub fn vtep_checked(&self) -> Result<Option<(u32, Mac)>, String> {
        if self.annotations.get(ANN_BACKEND_TYPE).map(String::as_str) != Some("vxlan") {
            return Ok(None);
        }
        let Some(raw) = self.annotations.get(ANN_BACKEND_DATA) else {
            return Ok(None);
        };
        let bad = |what: &str| format!("{ANN_BACKEND_DATA} {}: {what}", quoted(raw));
        let data: serde_json::Value =
            serde_json::from_str(raw).map_err(|e| bad(&format!("not JSON ({e})")))?;
        let vni = data
            .get("VNI")
            .and_then(serde_json::Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
            .filter(|v| *v < 1 << 24)
            .ok_or_else(|| bad("no VNI between 0 and 16777215"))?;
        let mac = data
            .get("VtepMAC")
            .and_then(serde_json::Value::as_str)
            .and_then(parse_mac)
            .filter(|m| m[0] & 1 == 0 && *m != [0; 6])
            .ok_or_else(|| bad("no unicast VtepMAC"))?;
        Ok(Some((vni, mac)))
    }

    /// What is wrong with the node's `public-ip` annotation, if it is set but not an IPv4
    /// address (a peer must not fall back to another address the node did not publish).
    pub fn public_ip_problem(&self) -> Option<String> {
        let raw = self.annotations.get(ANN_PUBLIC_IP)?;
        raw.trim()
            .parse::<Ipv4Addr>()
            .is_err()
            .then(|| format!("{ANN_PUBLIC_IP} {} is not an IPv4 address", quoted(raw)))
    }

    /// The pod MTU the node published (`ferry.dev/mtu`), if any and within
    /// [`MTU_MIN`]..=[`MTU_MAX`] (another value is ignored, as if absent).
    pub fn mtu(&self) -> Option<u32> {
        self.annotations
            .get(ANN_MTU)?
            .trim()
            .parse()
            .ok()
            .filter(|m| (MTU_MIN..=MTU_MAX).contains(m))
    }
}

/// `s` in quotes for a message, cut to 64 characters (annotations can be long garbage).
fn quoted(s: &str) -> String {
    if s.chars().count() > 64 {
        format!("{:?}...", s.chars().take(64).collect::<String>())
    } else {
        format!("{s:?}")
    }
}

/// The annotations the agent publishes on its own Node: `backend_data` is the VXLAN identity
/// (host-gw publishes none), `mtu` the largest pod MTU its underlay allows (left out when outside
/// [`MTU_MIN`]..=[`MTU_MAX`]: the API server would refuse the whole patch).
pub fn desired_annotations(
    backend: &str,
    public_ip: Option<Ipv4Addr>,
    backend_data: Option<&str>,
    mtu: Option<u32>,
) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert(ANN_BACKEND_TYPE.to_owned(), backend.to_owned());
    if let Some(data) = backend_data {
        m.insert(ANN_BACKEND_DATA.to_owned(), data.to_owned());
    }
    if let Some(mtu) = mtu.filter(|m| (MTU_MIN..=MTU_MAX).contains(m)) {
        m.insert(ANN_MTU.to_owned(), mtu.to_string());
    }
    m.insert(ANN_KUBE_SUBNET_MANAGER.to_owned(), "true".to_owned());
    if let Some(ip) = public_ip {
        m.insert(ANN_PUBLIC_IP.to_owned(), ip.to_string());
    }
    m
}

/// The subset of `want` that `have` lacks or holds with another value (what a merge patch must
/// carry); empty when the node is up to date.
pub fn annotation_changes(
    have: &BTreeMap<String, String>,
    want: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    want.iter()
        .filter(|(k, v)| have.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn reads_pod_cidr_addresses_and_annotations() {
        let n = NodeInfo::from_node(&node(serde_json::json!({
            "metadata": {"name": "a", "annotations": {ANN_PUBLIC_IP: "10.99.0.7"}},
            "spec": {"podCIDR": "10.244.3.5/24"},
            "status": {"addresses": [
                {"type": "Hostname", "address": "a"},
                {"type": "InternalIP", "address": "fd00::1"},
                {"type": "InternalIP", "address": "10.99.0.2"},
            ]},
        })));
        assert_eq!(n.name, "a");
        assert_eq!(n.pod_cidr, Some("10.244.3.0/24".parse().unwrap()));
        assert_eq!(n.internal_ip, Some(Ipv4Addr::new(10, 99, 0, 2)));
        assert_eq!(n.public_ip, Some(Ipv4Addr::new(10, 99, 0, 7)));
        assert_eq!(n.peer_address(), Some(Ipv4Addr::new(10, 99, 0, 7)));
    }

    #[test]
    fn pod_cidrs_fallback_and_missing_fields() {
        let n = NodeInfo::from_node(&node(serde_json::json!({
            "metadata": {"name": "b"},
            "spec": {"podCIDRs": ["fd00:1::/64", "10.244.9.0/24"]},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.99.0.3"}]},
        })));
        assert_eq!(n.pod_cidr, Some("10.244.9.0/24".parse().unwrap()));
        assert_eq!(n.peer_address(), Some(Ipv4Addr::new(10, 99, 0, 3)));
        let bare = NodeInfo::from_node(&node(serde_json::json!({"metadata": {"name": "c"}})));
        assert_eq!(bare.pod_cidr, None);
        assert_eq!(bare.peer_address(), None);
    }

    #[test]
    fn only_differing_annotations_are_patched() {
        let want = desired_annotations("host-gw", Some(Ipv4Addr::new(10, 99, 0, 2)), None, None);
        assert_eq!(want.len(), 3);
        assert_eq!(annotation_changes(&BTreeMap::new(), &want), want);
        let mut have = want.clone();
        have.insert("other".into(), "x".into());
        assert!(annotation_changes(&have, &want).is_empty());
        have.insert(ANN_PUBLIC_IP.into(), "10.99.0.9".into());
        let changes = annotation_changes(&have, &want);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[ANN_PUBLIC_IP], "10.99.0.2");
        assert!(!desired_annotations("host-gw", None, None, None).contains_key(ANN_PUBLIC_IP));
    }

    #[test]
    fn mtu_outside_the_accepted_range_is_ignored() {
        let with = |v: &str| {
            NodeInfo::from_node(&node(serde_json::json!({
                "metadata": {"name": "m", "annotations": {ANN_MTU: v}},
            })))
            .mtu()
        };
        for bad in ["68", "1279", "65536", "4294967296", "-1", "x", ""] {
            assert_eq!(with(bad), None, "{bad}");
        }
        assert_eq!(with("1280"), Some(1280));
        assert_eq!(with("65535"), Some(65535));
        // What the API server would refuse is not published (the rest of the patch would fail).
        let low = desired_annotations("vxlan", None, None, Some(1230));
        assert!(!low.contains_key(ANN_MTU));
        assert_eq!(
            desired_annotations("vxlan", None, None, Some(1450))[ANN_MTU],
            "1450"
        );
    }

    #[test]
    fn reads_a_flannel_vtep() {
        let n = NodeInfo::from_node(&node(serde_json::json!({
            "metadata": {"name": "f", "annotations": {
                ANN_BACKEND_TYPE: "vxlan",
                ANN_BACKEND_DATA: "{\"VNI\":1,\"VtepMAC\":\"82:1a:2b:3c:4d:5e\"}",
                ANN_MTU: "1450",
            }},
        })));
        assert_eq!(
            n.vtep(),
            Some((1, Mac([0x82, 0x1a, 0x2b, 0x3c, 0x4d, 0x5e])))
        );
        assert_eq!(n.mtu(), Some(1450));
        let mut hostgw = n.clone();
        hostgw
            .annotations
            .insert(ANN_BACKEND_TYPE.into(), "host-gw".into());
        assert_eq!(hostgw.vtep(), None);
        let mut bad = n;
        for (data, problem) in [
            ("{\"VNI\":1}", "no unicast VtepMAC"),
            ("not json", "not JSON"),
            (
                "{\"VNI\":\"1\",\"VtepMAC\":\"82:1a:2b:3c:4d:5e\"}",
                "no VNI",
            ),
            (
                "{\"VNI\":16777216,\"VtepMAC\":\"82:1a:2b:3c:4d:5e\"}",
                "no VNI",
            ),
            (
                "{\"VNI\":1,\"VtepMAC\":\"zz:1a:2b:3c:4d:5e\"}",
                "no unicast VtepMAC",
            ),
            (
                "{\"VNI\":1,\"VtepMAC\":\"01:00:5e:00:00:01\"}",
                "no unicast VtepMAC",
            ),
        ] {
            bad.annotations.insert(ANN_BACKEND_DATA.into(), data.into());
            assert_eq!(bad.vtep(), None, "{data}");
            let err = bad.vtep_checked().unwrap_err();
            assert!(err.contains(problem), "{data}: {err}");
        }
        bad.annotations.remove(ANN_BACKEND_DATA);
        assert_eq!(bad.vtep_checked(), Ok(None), "not published is not garbage");
    }

    #[test]
    fn garbage_public_ip_is_reported_not_replaced() {
        let mut n = NodeInfo::from_node(&node(serde_json::json!({
            "metadata": {"name": "g", "annotations": {ANN_PUBLIC_IP: "10.99.0.300"}},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.99.0.3"}]},
        })));
        let p = n.public_ip_problem().unwrap();
        assert!(p.contains("\"10.99.0.300\" is not an IPv4 address"), "{p}");
        n.annotations.insert(ANN_PUBLIC_IP.into(), "x".repeat(500));
        assert!(n.public_ip_problem().unwrap().len() < 200);
        n.annotations
            .insert(ANN_PUBLIC_IP.into(), "10.99.0.3".into());
        assert_eq!(n.public_ip_problem(), None);
    }
}
