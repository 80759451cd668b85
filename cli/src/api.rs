//! The cluster's API as `ferry` sees it from the root namespace: the admin kubeconfig pointed at
//! the loopback listener, a kube-rs client, `/readyz`, and summaries of nodes and pods.

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use std::path::Path;
use std::time::Duration;

/// The server's admin kubeconfig (JSON) with every cluster's server URL replaced by `server`.
pub(crate) fn rewrite_kubeconfig(admin: &[u8], server: &str) -> Result<Vec<u8>> {
    let mut v: serde_json::Value =
        serde_json::from_slice(admin).context("the server's admin.kubeconfig is not JSON")?;
    let clusters = v["clusters"]
        .as_array_mut()
        .context("admin.kubeconfig has no clusters")?;
    for c in clusters {
        c["cluster"]["server"] = server.into();
    }
    Ok(serde_json::to_vec_pretty(&v)?)
}

/// A kube-rs client from a kubeconfig file, with short timeouts (the server is local).
pub(crate) async fn client(kubeconfig: &Path) -> Result<kube::Client> {
    ferry_kube::ClientBuilder::from_kubeconfig_file(kubeconfig)
        .connect_timeout(Duration::from_secs(2))
        .read_timeout(Duration::from_secs(5))
        .write_timeout(Duration::from_secs(5))
        .build()
        .await
        .context("building the API client")
}

/// `GET /readyz`: Ok when the apiserver answers `ok`.
pub(crate) async fn readyz(client: &kube::Client) -> Result<()> {
    let req = http::Request::get("/readyz").body(Vec::new())?;
    let body = tokio::time::timeout(Duration::from_secs(3), client.request_text(req))
        .await
        .context("no answer within 3s")??;
    anyhow::ensure!(body.trim() == "ok", "answered {:?}", body.trim());
    Ok(())
}

/// What `ferry` reports about a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeSummary {
    /// Node name.
    pub(crate) name: String,
    /// The Ready condition's status (`True`, `False`, `Unknown`), `-` if absent.
    pub(crate) ready: String,
    /// The Ready condition's reason or message, if not Ready.
    pub(crate) why: String,
    /// `spec.podCIDR`.
    pub(crate) pod_cidr: String,
    /// The InternalIP address.
    pub(crate) internal_ip: String,
    /// What ferry-agent published in the Node's annotations (`-` where absent).
    pub(crate) overlay: Overlay,
    /// The agent's `NetworkUnavailable` condition: `(status, reason, message)`, if set.
    pub(crate) network: Option<(String, String, String)>,
    /// The agent's `FerryNetworkDegraded` condition: `(status, reason, message)`, if set.
    pub(crate) degraded: Option<(String, String, String)>,
    /// The agent's `FerryPeersUnreachable` condition: `(status, reason, message)`, if set.
    pub(crate) unreachable: Option<(String, String, String)>,
}

/// A node's overlay, from the annotations ferry-agent writes (flannel's format plus `ferry.dev/mtu`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Overlay {
    /// `flannel.alpha.coreos.com/backend-type`: `vxlan`, `host-gw`.
    pub(crate) backend: String,
    /// `flannel.alpha.coreos.com/public-ip`.
    pub(crate) public_ip: String,
    /// `VtepMAC` of `flannel.alpha.coreos.com/backend-data` (vxlan only).
    pub(crate) vtep_mac: String,
    /// `ferry.dev/mtu`.
    pub(crate) mtu: String,
}

fn overlay(node: &Node) -> Overlay {
    let ann = node.metadata.annotations.as_ref();
    let get = |k: &str| {
        ann.and_then(|a| a.get(k))
            .filter(|v| !v.is_empty())
            .cloned()
            .unwrap_or_else(|| "-".to_owned())
    };
    let vtep_mac = ann
        .and_then(|a| a.get("flannel.alpha.coreos.com/backend-data"))
        .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .and_then(|v| v["VtepMAC"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "-".to_owned());
    Overlay {
        backend: get("flannel.alpha.coreos.com/backend-type"),
        public_ip: get("flannel.alpha.coreos.com/public-ip"),
        vtep_mac,
        mtu: get("ferry.dev/mtu"),
    }
}

impl NodeSummary {
    /// True when the node is Ready.
    pub(crate) fn is_ready(&self) -> bool {
        self.ready == "True"
    }
}

fn summarize(node: &Node) -> NodeSummary {
    let status = node.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    NodeSummary {
        name: node.metadata.name.clone().unwrap_or_default(),
        ready: ready.map_or_else(|| "-".to_owned(), |c| c.status.clone()),
        why: ready
            .filter(|c| c.status != "True")
            .and_then(|c| c.message.clone().or_else(|| c.reason.clone()))
            .unwrap_or_default(),
        pod_cidr: node
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.clone())
            .unwrap_or_else(|| "-".to_owned()),
        internal_ip: status
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
            .map_or_else(|| "-".to_owned(), |a| a.address.clone()),
        overlay: overlay(node),
        network: condition(node, "NetworkUnavailable"),
        degraded: condition(node, "FerryNetworkDegraded"),
        unreachable: condition(node, "FerryPeersUnreachable"),
    }
}

/// `(status, reason, message)` of condition `ty`.
fn condition(node: &Node, ty: &str) -> Option<(String, String, String)> {
    let c = node
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == ty)?;
    Some((
        c.status.clone(),
        c.reason.clone().unwrap_or_default(),
        c.message.clone().unwrap_or_default(),
    ))
}

/// Every node, by name.
pub(crate) async fn nodes(client: &kube::Client) -> Result<Vec<NodeSummary>> {
    let list = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing nodes")?;
    let mut v: Vec<NodeSummary> = list.items.iter().map(summarize).collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(v)
}

/// What `ferry status` reports about a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodSummary {
    /// `namespace/name`.
    pub(crate) name: String,
    /// `status.phase`.
    pub(crate) phase: String,
    /// `status.podIP`.
    pub(crate) ip: String,
    /// `spec.nodeName`, `-` while unscheduled.
    pub(crate) node: String,
}

/// Every pod, ordered by node then name.
pub(crate) async fn pods(client: &kube::Client) -> Result<Vec<PodSummary>> {
    let list = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing pods")?;
    let dash = || "-".to_owned();
    let mut v: Vec<PodSummary> = list
        .items
        .iter()
        .map(|p| PodSummary {
            name: format!(
                "{}/{}",
                p.metadata.namespace.as_deref().unwrap_or("default"),
                p.metadata.name.as_deref().unwrap_or_default()
            ),
            phase: p
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_else(dash),
            ip: p
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .unwrap_or_else(dash),
            node: p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_else(dash),
        })
        .collect();
    v.sort_by(|a, b| (&a.node, &a.name).cmp(&(&b.node, &b.name)));
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_points_at_loopback() {
        let admin = br#"{"apiVersion":"v1","kind":"Config","clusters":[{"name":"ferry","cluster":{"server":"https://10.99.0.2:6443","certificate-authority-data":"Q0E="}}],"users":[{"name":"admin","user":{"token":"t"}}],"contexts":[],"current-context":"ferry"}"#;
        let out = rewrite_kubeconfig(admin, "https://127.0.0.1:7443").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:7443"
        );
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority-data"],
            "Q0E="
        );
        assert_eq!(v["users"][0]["user"]["token"], "t");
        assert!(rewrite_kubeconfig(b"{", "x").is_err());
    }

    #[test]
    fn node_summaries() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "node-1"},
            "spec": {"podCIDR": "10.244.1.0/24"},
            "status": {
                "conditions": [{"type": "Ready", "status": "False", "reason": "NetworkNotReady",
                                "message": "no CNI config"}],
                "addresses": [{"type": "InternalIP", "address": "10.99.0.11"}]
            }
        }))
        .unwrap();
        let s = summarize(&node);
        assert!(!s.is_ready());
        assert_eq!(s.why, "no CNI config");
        assert_eq!(
            (s.pod_cidr.as_str(), s.internal_ip.as_str()),
            ("10.244.1.0/24", "10.99.0.11")
        );
        assert_eq!(s.overlay.backend, "-");
        let bare: Node =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "n"}})).unwrap();
        assert_eq!(summarize(&bare).ready, "-");
        let vx: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "node-2", "annotations": {
                "flannel.alpha.coreos.com/backend-type": "vxlan",
                "flannel.alpha.coreos.com/backend-data": "{\"VNI\":1,\"VtepMAC\":\"1a:89:53:49:bd:a6\"}",
                "flannel.alpha.coreos.com/public-ip": "10.99.0.12",
                "ferry.dev/mtu": "1450"}},
            "spec": {"podCIDR": "10.244.2.0/24"}
        }))
        .unwrap();
        assert_eq!(
            summarize(&vx).overlay,
            Overlay {
                backend: "vxlan".into(),
                public_ip: "10.99.0.12".into(),
                vtep_mac: "1a:89:53:49:bd:a6".into(),
                mtu: "1450".into(),
            }
        );
    }
}
