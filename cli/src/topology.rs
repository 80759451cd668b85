//! Names and addresses of a cluster: its namespaces, links, underlay addresses and cgroups, all
//! derived from the cluster name and node count.
//!
//! ```text
//!   <name>-sw   switch: bridge br0, one port per member (cp, n1, n2, ...)
//!   <name>-cp   control plane: eth0 10.99.0.2/24, ferry-server on 10.99.0.2:6443
//!   <name>-nI   node I: eth0 10.99.0.(10+I)/24, ferry-kubelet and ferry-agent, node name node-I
//!   <name>-ext  an external host: eth0 10.99.0.254/24, nothing else (no route into the cluster),
//!               to test pods' egress (they reach it masqueraded to their node's address)
//! ```

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The underlay network every member of the cluster is attached to.
pub(crate) const UNDERLAY: &str = "10.99.0.0/24";
/// Prefix length of [`UNDERLAY`].
pub(crate) const UNDERLAY_PREFIX: u8 = 24;
/// The control plane's underlay address.
pub(crate) const CP_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
/// The external host's underlay address.
pub(crate) const EXT_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 254);
/// The addresses `ferry up` gives the apiserver for LoadBalancer Services (`--loadbalancer-pool`):
/// .192-.223 of the underlay, above every node (at most .74) and below the external host (.254),
/// so the external host reaches them on its own link, answered by one node (the agent's L2
/// announcement).
pub(crate) const LB_POOL: &str = "10.99.0.192/27";
/// The apiserver's port inside the control-plane namespace.
pub(crate) const API_PORT: u16 = 6443;
/// The kubelet's port on each node.
pub(crate) const KUBELET_PORT: u16 = 10250;
/// ferry-agent's metrics port on each node's loopback (its default `--metrics-address`).
pub(crate) const AGENT_METRICS_PORT: u16 = 9465;
/// etcd's client port on the control plane's loopback (with `--store etcd`).
pub(crate) const ETCD_PORT: u16 = 2379;
/// Largest node count (node addresses must stay inside the /24).
pub(crate) const MAX_NODES: u32 = 64;
/// Longest cluster name: `<name>-n64` stays a short namespace name, and the name fits the
/// 15-character link names some tools derive from it.
pub(crate) const MAX_NAME: usize = 12;
/// The bridge in the switch namespace.
pub(crate) const BRIDGE: &str = "br0";
/// The underlay interface inside the control-plane and node namespaces.
pub(crate) const IFACE: &str = "eth0";

/// Checks a cluster name: 1-12 characters of `[a-z0-9-]`, starting with a letter, not ending
/// with `-`.
pub(crate) fn validate_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let first_letter = name.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
    if name.is_empty() || name.len() > MAX_NAME || !ok_chars || !first_letter || name.ends_with('-')
    {
        return Err(format!(
            "invalid cluster name {name:?}: use 1-{MAX_NAME} characters of a-z, 0-9 and '-', \
             starting with a letter (namespace and link names derive from it)"
        ));
    }
    Ok(())
}

/// A cluster's names and addresses.
#[derive(Debug, Clone)]
pub(crate) struct Topology {
    /// Cluster name.
    pub(crate) name: String,
    /// Number of nodes.
    pub(crate) nodes: u32,
}

impl Topology {
    /// The switch namespace.
    pub(crate) fn switch_ns(&self) -> String {
        format!("{}-sw", self.name)
    }

    /// The control-plane namespace.
    pub(crate) fn cp_ns(&self) -> String {
        format!("{}-cp", self.name)
    }

    /// Node `i`'s namespace (`i` from 1).
    pub(crate) fn node_ns(&self, i: u32) -> String {
        format!("{}-n{i}", self.name)
    }

    /// The external host's namespace.
    pub(crate) fn ext_ns(&self) -> String {
        format!("{}-ext", self.name)
    }

    /// Every namespace, switch first, the external host last.
    pub(crate) fn namespaces(&self) -> Vec<String> {
        let mut v = vec![self.switch_ns(), self.cp_ns()];
        v.extend((1..=self.nodes).map(|i| self.node_ns(i)));
        v.push(self.ext_ns());
        v
    }

    /// Node indexes, from 1.
    pub(crate) fn node_indexes(&self) -> std::ops::RangeInclusive<u32> {
        1..=self.nodes
    }
}

/// Node `i`'s Kubernetes name.
pub(crate) fn node_name(i: u32) -> String {
    format!("node-{i}")
}

/// Node `i`'s underlay address.
pub(crate) fn node_ip(i: u32) -> Ipv4Addr {
    let last = u8::try_from(10 + i).unwrap_or(u8::MAX);
    Ipv4Addr::new(10, 99, 0, last)
}

/// True if `ns` is one of the namespaces `ferry up` creates for cluster `name` (whatever its node
/// count): `<name>-sw`, `<name>-cp`, `<name>-ext`, `<name>-n<digits>`. Exact shapes, so the namespaces of a
/// cluster named `<name>-x` never match.
pub(crate) fn is_cluster_netns(name: &str, ns: &str) -> bool {
    let Some(rest) = ns.strip_prefix(name).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    rest == "sw"
        || rest == "cp"
        || rest == "ext"
        || rest
            .strip_prefix('n')
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// The usual bpf filesystem mount.
pub(crate) const BPFFS: &str = "/sys/fs/bpf";

/// The cluster's pin directory on [`BPFFS`]: `/sys/fs/bpf/ferry-<name>` (node `node-I`'s agent pins
/// in `<it>/node-I`).
pub(crate) fn bpffs_dir(name: &str) -> PathBuf {
    Path::new(BPFFS).join(format!("ferry-{name}"))
}

/// The cluster's cgroup under the cgroup v2 mount `root`.
pub(crate) fn cluster_cgroup(root: &Path, name: &str) -> PathBuf {
    root.join(format!("ferry-{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("ferry").is_ok());
        assert!(validate_name("fu1x9z2a").is_ok());
        assert!(validate_name("a-b-1").is_ok());
        for bad in [
            "",
            "Ferry",
            "1abc",
            "a_b",
            "abc-",
            "a.b",
            "abcdefghijklm",
            "a b",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn netns_shapes() {
        let t = Topology {
            name: "ferry".into(),
            nodes: 3,
        };
        assert_eq!(
            t.namespaces(),
            [
                "ferry-sw",
                "ferry-cp",
                "ferry-n1",
                "ferry-n2",
                "ferry-n3",
                "ferry-ext"
            ]
        );
        for ns in t.namespaces() {
            assert!(is_cluster_netns("ferry", &ns), "{ns}");
        }
        for other in [
            "ferry",
            "ferry-",
            "ferry-n",
            "ferry-nx",
            "ferry-2-sw",
            "ferry-2-n1",
            "ferry-ext-sw",
            "ferry-ex",
            "ferrysw",
            "ferry-n1-sw",
            "xferry-sw",
        ] {
            assert!(!is_cluster_netns("ferry", other), "{other}");
        }
    }

    #[test]
    fn addresses() {
        assert_eq!(node_ip(1), Ipv4Addr::new(10, 99, 0, 11));
        assert_eq!(node_ip(MAX_NODES), Ipv4Addr::new(10, 99, 0, 74));
        assert_eq!(node_name(2), "node-2");
    }
}
