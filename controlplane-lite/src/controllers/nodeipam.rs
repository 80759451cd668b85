//! Node IPAM: gives every Node a `spec.podCIDR` (and `podCIDRs`) from the cluster CIDR.
//!
//! Level-triggered: on every node change (and every few seconds) it computes the subnets in use
//! from the current Node objects and assigns the lowest free one to each node without one. A
//! subnet is never handed out twice while its node exists, and becomes free again when the node
//! is deleted. `spec.podCIDR` is immutable once set, so a node keeps its subnet for its lifetime.
//! The assignment is a merge patch guarded by the node's resourceVersion: two instances racing for
//! one node cannot both win.

use ferry_kube::watch::{self, Reflector};
use ferry_kube::{Expectations, Loop};
use ipnetwork::Ipv4Network;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::ResourceExt;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Settings.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Cluster pod CIDR (`10.244.0.0/16`).
    pub cluster_cidr: Ipv4Network,
    /// Prefix length of each node's subnet (24).
    pub node_mask: u8,
}

/// The `index`-th subnet of `cfg`, if the cluster CIDR has that many.
pub fn subnet(cfg: &Config, index: u32) -> Option<Ipv4Network> {
    let bits = u32::from(cfg.node_mask.checked_sub(cfg.cluster_cidr.prefix())?);
    if bits >= 32 || index >= (1u32 << bits) {
        return None;
    }
    let size = 1u32.checked_shl(32 - u32::from(cfg.node_mask))?;
    let base = u32::from(cfg.cluster_cidr.network());
    Ipv4Network::new(Ipv4Addr::from(base + index * size), cfg.node_mask).ok()
}

/// The lowest subnet of `cfg` not in `used`.
pub fn first_free(cfg: &Config, used: &BTreeSet<Ipv4Network>) -> Option<Ipv4Network> {
    (0..)
        .map_while(|i| subnet(cfg, i))
        .find(|s| !used.iter().any(|u| u.overlaps(*s)))
}

/// Runs the controller.
pub async fn run(client: kube::Client, cfg: Config) -> anyhow::Result<()> {
    if cfg.node_mask < cfg.cluster_cidr.prefix() || cfg.node_mask > 30 {
        anyhow::bail!(
            "node CIDR mask /{} does not fit the cluster CIDR {}",
            cfg.node_mask,
            cfg.cluster_cidr
        );
    }
    let api: Api<Node> = Api::all(client.clone());
    let wake = Arc::new(Notify::new());
    let store = Reflector::new(api.clone()).wake(wake.clone()).spawn();
    watch::ready(&store).await?;
    // Assignments made but not yet visible in the (asynchronously updated) local store: without
    // them a second round could hand the same subnet to another node. Node uid -> subnet.
    let mut in_flight: Expectations<String, Ipv4Network> = Expectations::new();
    let mut lp = Loop::new(wake, Duration::from_secs(5));
    loop {
        reconcile(&api, &store, &cfg, &mut in_flight).await;
        lp.after(()).await;
    }
}

async fn reconcile(
    api: &Api<Node>,
    store: &Store<Node>,
    cfg: &Config,
    in_flight: &mut Expectations<String, Ipv4Network>,
) {
    let nodes = store.state();
    let cidr_of = |n: &Node| {
        n.spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_deref())
            .filter(|c| !c.is_empty())
            .and_then(|c| c.parse::<Ipv4Network>().ok())
    };
    // Forget in-flight entries the store now shows, or whose node is gone.
    in_flight.settle(|uid, _| {
        !nodes
            .iter()
            .any(|n| n.uid().as_deref() == Some(uid.as_str()) && cidr_of(n).is_none())
    });
    let mut used: BTreeSet<Ipv4Network> = nodes.iter().filter_map(|n| cidr_of(n)).collect();
    used.extend(in_flight.values().copied());
    let mut pending: Vec<_> = nodes
        .iter()
        .filter(|n| cidr_of(n).is_none() && !in_flight.contains(&n.uid().unwrap_or_default()))
        .collect();
    pending.sort_by_key(|n| n.name_any());
    for node in pending {
        let Some(cidr) = first_free(cfg, &used) else {
            tracing::warn!(
                "node IPAM: cluster CIDR {} is exhausted; node {} gets no podCIDR",
                cfg.cluster_cidr,
                node.name_any()
            );
            return;
        };
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": node.resource_version()},
            "spec": {"podCIDR": cidr.to_string(), "podCIDRs": [cidr.to_string()]},
        });
        match api
            .patch(
                &node.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
        {
            Ok(_) => {
                tracing::info!("node IPAM: {} gets {cidr}", node.name_any());
                used.insert(cidr);
                in_flight.expect(node.uid().unwrap_or_default(), cidr);
            }
            Err(e) => tracing::info!(
                "node IPAM: assigning {cidr} to {}: {e} (retrying)",
                node.name_any()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_and_first_free() {
        let cfg = Config {
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            node_mask: 24,
        };
        assert_eq!(subnet(&cfg, 0).unwrap().to_string(), "10.244.0.0/24");
        assert_eq!(subnet(&cfg, 255).unwrap().to_string(), "10.244.255.0/24");
        assert!(subnet(&cfg, 256).is_none());
        let used: BTreeSet<Ipv4Network> = [
            "10.244.0.0/24".parse().unwrap(),
            "10.244.1.0/24".parse().unwrap(),
        ]
        .into();
        assert_eq!(
            first_free(&cfg, &used).unwrap().to_string(),
            "10.244.2.0/24"
        );
        let tiny = Config {
            cluster_cidr: "10.0.0.0/23".parse().unwrap(),
            node_mask: 24,
        };
        let full: BTreeSet<Ipv4Network> = [
            "10.0.0.0/24".parse().unwrap(),
            "10.0.1.0/24".parse().unwrap(),
        ]
        .into();
        assert!(first_free(&tiny, &full).is_none());
    }
}
