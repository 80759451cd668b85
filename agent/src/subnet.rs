//! The files that make a node ready for pods: the node network file `<run-dir>/subnet.env`
//! (read by `ferry-cni`, flannel's `subnet.env` contract) and the CNI conflist
//! `<cni-conf-dir>/10-ferry.conflist` (what the runtime / kubelet loads).
//!
//! ```text
//! FERRY_NETWORK=10.244.0.0/16     # cluster pod network (--cluster-cidr)
//! FERRY_SUBNET=10.244.1.1/24      # first host of the node's podCIDR (the bridge gateway) / prefix
//! FERRY_MTU=1500                  # host-gw: the underlay interface's MTU
//! FERRY_IPMASQ=false              # the agent does not masquerade (yet)
//! ```
//!
//! Both are written atomically (temporary file in the same directory, `fsync`, `rename`, `fsync`
//! of the directory) and only when their content changes; the subnet file always goes first, so a
//! runtime that sees the conflist can always serve an ADD. The temporary name starts with a dot
//! and ends in `.tmp`, which containerd's conf-dir watcher ignores; it reloads on the rename.
//! Nothing is written until the node has a podCIDR: until then `ferry-cni` STATUS and the
//! kubelet report "not ready".

use ipnetwork::Ipv4Network;
use std::io;
use std::net::Ipv4Addr;
use std::path::Path;

/// File name of the conflist (sorts before most other configs, as containerd uses the first).
pub const CONFLIST_NAME: &str = "10-ferry.conflist";
/// The CNI network name.
pub const NETWORK_NAME: &str = "ferry";
/// The node's pod bridge.
pub const BRIDGE: &str = "ferry0";
/// CNI spec version of the conflist.
pub const CNI_VERSION: &str = "1.1.0";

/// Why a podCIDR cannot become this node's subnet (the agent logs it and writes nothing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubnetError {
    /// The podCIDR is not inside the cluster network (a mismatched `--cluster-cidr`).
    #[error("podCIDR {pod_cidr} is not inside the cluster network {cluster}")]
    OutsideCluster {
        /// The node's podCIDR.
        pod_cidr: Ipv4Network,
        /// `--cluster-cidr`.
        cluster: Ipv4Network,
    },
    /// The podCIDR has no room for a gateway and a pod.
    #[error("podCIDR {0} is too small (largest prefix /30)")]
    TooSmall(Ipv4Network),
    /// The MTU is outside 68..=65535.
    #[error("MTU {0} is outside 68..65535")]
    BadMtu(u32),
}

/// The content of the node network file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeNetworkFile {
    /// Cluster pod network.
    pub network: Ipv4Network,
    /// The gateway address with the subnet's prefix (`10.244.1.1/24`).
    pub subnet: Ipv4Network,
    /// Pod MTU.
    pub mtu: u32,
    /// Whether the agent masquerades pod egress.
    pub ipmasq: bool,
}

impl NodeNetworkFile {
    /// The file for a node with `pod_cidr`, in cluster network `cluster`, with pod MTU `mtu`.
    pub fn new(
        cluster: Ipv4Network,
        pod_cidr: Ipv4Network,
        mtu: u32,
    ) -> Result<NodeNetworkFile, SubnetError> {
        let pod_cidr = Ipv4Network::new(pod_cidr.network(), pod_cidr.prefix())
            .map_err(|_| SubnetError::TooSmall(pod_cidr))?;
        if pod_cidr.prefix() < cluster.prefix() || !cluster.contains(pod_cidr.network()) {
            return Err(SubnetError::OutsideCluster { pod_cidr, cluster });
        }
        if pod_cidr.prefix() > 30 {
            return Err(SubnetError::TooSmall(pod_cidr));
        }
        if !(68..=65535).contains(&mtu) {
            return Err(SubnetError::BadMtu(mtu));
        }
        let gateway = Ipv4Addr::from(u32::from(pod_cidr.network()) + 1);
        let subnet = Ipv4Network::new(gateway, pod_cidr.prefix())
            .map_err(|_| SubnetError::TooSmall(pod_cidr))?;
        let network = Ipv4Network::new(cluster.network(), cluster.prefix())
            .map_err(|_| SubnetError::OutsideCluster { pod_cidr, cluster })?;
        Ok(NodeNetworkFile {
            network,
            subnet,
            mtu,
            ipmasq: false,
        })
    }

    /// The file's text.
    pub fn render(&self) -> String {
        format!(
            "FERRY_NETWORK={}\nFERRY_SUBNET={}\nFERRY_MTU={}\nFERRY_IPMASQ={}\n",
            self.network, self.subnet, self.mtu, self.ipmasq
        )
    }
}

/// The conflist: one `ferry-cni` bridge plugin taking its subnet from `subnet_file` and keeping
/// its IPAM reservations in `ipam_dir`.
pub fn conflist(subnet_file: &Path, ipam_dir: &Path) -> String {
    let doc = serde_json::json!({
        "cniVersion": CNI_VERSION,
        "name": NETWORK_NAME,
        "plugins": [{
            "type": "ferry-cni",
            "bridge": BRIDGE,
            "isGateway": true,
            "isDefaultGateway": true,
            "hairpinMode": true,
            "ipMasq": false,
            "subnetFile": subnet_file,
            "ipam": {"dataDir": ipam_dir},
        }],
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

/// Writes `content` to `path` atomically unless the file already holds exactly that; creates the
/// directory if needed. Returns whether the file was (re)written.
pub fn write_if_changed(path: &Path, content: &[u8]) -> io::Result<bool> {
    use ferry_sys::fs::{Durability, WriteOptions};
    let opts = WriteOptions::default()
        .durability(Durability::DataAndRename)
        .create_dir(true);
    Ok(ferry_sys::fs::write_if_changed(path, content, opts)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Network {
        s.parse().unwrap()
    }

    #[test]
    fn file_for_a_pod_cidr() {
        let f = NodeNetworkFile::new(net("10.244.0.0/16"), net("10.244.1.0/24"), 1500).unwrap();
        assert_eq!(
            f.render(),
            "FERRY_NETWORK=10.244.0.0/16\nFERRY_SUBNET=10.244.1.1/24\nFERRY_MTU=1500\nFERRY_IPMASQ=false\n"
        );
        // Host bits in either input do not leak into the file.
        let g = NodeNetworkFile::new(net("10.244.7.7/16"), net("10.244.1.9/24"), 1500).unwrap();
        assert_eq!(g, f);
    }

    #[test]
    fn ferry_cni_reads_what_the_agent_writes() {
        let f = NodeNetworkFile::new(net("10.244.0.0/16"), net("10.244.5.0/24"), 9000).unwrap();
        let n = ferry_cni::config::NodeNetwork::parse(&f.render()).unwrap();
        assert_eq!(n.network, Some("10.244.0.0/16".parse().unwrap()));
        assert_eq!(n.subnet.to_string(), "10.244.5.1/24");
        assert_eq!(n.mtu, Some(9000));
        assert!(!n.ipmasq);
        let r = n.range().unwrap();
        assert_eq!(r.gateway, Some("10.244.5.1".parse().unwrap()));
        assert_eq!(r.start, "10.244.5.2".parse::<std::net::IpAddr>().unwrap());
    }

    #[test]
    fn rejects_bad_subnets() {
        let cluster = net("10.244.0.0/16");
        assert!(matches!(
            NodeNetworkFile::new(cluster, net("10.245.1.0/24"), 1500),
            Err(SubnetError::OutsideCluster { .. })
        ));
        assert!(matches!(
            NodeNetworkFile::new(cluster, net("10.0.0.0/8"), 1500),
            Err(SubnetError::OutsideCluster { .. })
        ));
        assert!(matches!(
            NodeNetworkFile::new(cluster, net("10.244.1.0/31"), 1500),
            Err(SubnetError::TooSmall(_))
        ));
        assert!(matches!(
            NodeNetworkFile::new(cluster, net("10.244.1.0/24"), 0),
            Err(SubnetError::BadMtu(0))
        ));
    }

    #[test]
    fn conflist_is_what_ferry_cni_expects() {
        let text = conflist(
            Path::new("/run/ferry/subnet.env"),
            Path::new("/run/ferry/ipam"),
        );
        let list = ferry_libcni::runtime::ConfList::parse(text.as_bytes()).unwrap();
        assert_eq!(list.name, NETWORK_NAME);
        assert_eq!(list.cni_version, CNI_VERSION);
        assert_eq!(list.plugins.len(), 1);
        let mut plugin = list.plugins[0].clone();
        plugin["name"] = NETWORK_NAME.into();
        plugin["cniVersion"] = CNI_VERSION.into();
        let conf =
            ferry_cni::config::NetConf::parse(&serde_json::to_vec(&plugin).unwrap()).unwrap();
        assert_eq!(conf.bridge, BRIDGE);
        assert!(conf.is_gateway && conf.is_default_gateway && conf.hairpin && !conf.ip_masq);
        assert_eq!(conf.mtu, None, "the MTU comes from the node network file");
        assert_eq!(
            conf.ipam,
            ferry_cni::config::IpamSource::NodeFile("/run/ferry/subnet.env".into())
        );
        assert_eq!(conf.data_dir, Path::new("/run/ferry/ipam"));
    }

    #[test]
    fn writes_atomically_and_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/subnet.env");
        assert!(write_if_changed(&path, b"one\n").unwrap());
        let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let first = ino(&path);
        assert!(!write_if_changed(&path, b"one\n").unwrap());
        assert_eq!(ino(&path), first, "unchanged content is not rewritten");
        assert!(write_if_changed(&path, b"two\n").unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"two\n");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["subnet.env"], "no temporary file left behind");
    }
}
