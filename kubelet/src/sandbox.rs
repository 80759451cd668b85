//! Pod sandboxes: the pod's network namespace and its CNI attachment, done the way a container
//! runtime does it (containerd's CRI plugin through libcni):
//!
//! - the namespace is created with `unshare(CLONE_NEWNET)` on a short-lived thread and kept alive
//!   by a bind mount at `<root>/netns/<pod uid>`;
//! - `lo` is brought up by the kubelet itself over netlink in the new namespace (what containerd's
//!   `loopback` plugin run does, without one more process per pod), then the first conflist
//!   of `--cni-conf-dir` runs ADD with `CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=..;
//!   K8S_POD_NAME=..;K8S_POD_INFRA_CONTAINER_ID=..;K8S_POD_UID=..`, results cached (cniCacheV1);
//! - teardown runs DEL with the cached result (and the conflist stored in the cache, so a changed
//!   or missing conf dir still releases the address), then unmounts and removes the namespace.
//!
//! Plugins run in the kubelet's own network namespace: the node's.

use anyhow::{anyhow, Context as _, Result};
use ferry_libcni::runtime::{ConfList, Runtime, RuntimeConf};
use std::path::{Path, PathBuf};

/// Where sandboxes live and how they are networked.
#[derive(Debug)]
pub struct Sandboxes {
    netns_dir: PathBuf,
    conf_dir: PathBuf,
    runtime: Runtime,
}

/// Identity of a pod, for `CNI_ARGS`.
#[derive(Debug, Clone)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID (also the sandbox / CNI container id).
    pub uid: String,
}

impl Sandboxes {
    /// Sandboxes under `root`, networked from `conf_dir` with plugins from `bin_dir`.
    pub fn new(root: &Path, conf_dir: &Path, bin_dir: &Path) -> Sandboxes {
        Sandboxes {
            netns_dir: root.join("netns"),
            conf_dir: conf_dir.to_owned(),
            runtime: Runtime::new(vec![bin_dir.to_owned()], root.join("cni-cache")),
        }
    }

    /// The namespace path of pod `uid`.
    pub fn netns_path(&self, uid: &str) -> PathBuf {
        self.netns_dir.join(uid)
    }

    /// The pod network's conflist, if the conf dir has one.
    pub fn conf(&self) -> Result<Option<ConfList>> {
        ConfList::first_in_dir(&self.conf_dir)
            .map_err(|e| anyhow!("{}", e.msg).context(format!("{}", self.conf_dir.display())))
    }

    /// `Ok` when pods can be networked: a conflist exists and every plugin's STATUS passes.
    pub fn network_ready(&self) -> Result<()> {
        let list = self
            .conf()?
            .ok_or_else(|| anyhow!("no network config found in {}", self.conf_dir.display()))?;
        self.runtime
            .status(&list)
            .map_err(|e| anyhow!("{}", cni_message(&e)))
    }

    fn rt(&self, pod: &PodRef, ifname: &str, netns: &Path) -> RuntimeConf {
        RuntimeConf {
            container_id: pod.uid.clone(),
            netns: netns.display().to_string(),
            ifname: ifname.into(),
            args: vec![
                ("IgnoreUnknown".into(), "1".into()),
                ("K8S_POD_NAMESPACE".into(), pod.namespace.clone()),
                ("K8S_POD_NAME".into(), pod.name.clone()),
                ("K8S_POD_INFRA_CONTAINER_ID".into(), pod.uid.clone()),
                ("K8S_POD_UID".into(), pod.uid.clone()),
            ],
            capability_args: serde_json::Map::new(),
        }
    }

    /// Creates the pod's namespace and attaches it; returns the pod IPs. Blocking.
    ///
    /// An existing attachment (cached result and namespace present) is reused: a restarted
    /// kubelet never runs a second ADD.
    pub fn setup(&self, pod: &PodRef) -> Result<Vec<String>> {
        let list = self
            .conf()?
            .ok_or_else(|| anyhow!("network not ready: no network config"))?;
        let path = self.netns_path(&pod.uid);
        if path.exists() {
            if let Some(result) = self
                .runtime
                .cached_result(&list, &self.rt(pod, "eth0", &path))
            {
                return Ok(ips_of(&result));
            }
        } else {
            create_netns(&path)?;
        }
        let attach = || -> Result<Vec<String>> {
            loopback_up(&path)?;
            let result = self
                .runtime
                .add(&list, &self.rt(pod, "eth0", &path))
                .map_err(|e| anyhow!("{}", cni_message(&e)))?;
            Ok(ips_of(&result))
        };
        match attach() {
            Ok(ips) if !ips.is_empty() => Ok(ips),
            Ok(_) => {
                let _ = self.teardown(pod);
                Err(anyhow!("the network plugin returned no IP address"))
            }
            Err(e) => {
                // Like a runtime: DEL what a failed ADD may have left, drop the namespace.
                let _ = self.teardown(pod);
                Err(e)
            }
        }
    }

    /// DEL on every network the pod was attached to, then removes its namespace. Blocking;
    /// idempotent.
    pub fn teardown(&self, pod: &PodRef) -> Result<()> {
        let path = self.netns_path(&pod.uid);
        let netns = if path.exists() {
            path.clone()
        } else {
            PathBuf::new()
        };
        let mut first_err = None;
        // The conflists this sandbox was attached with, from the result cache (libcni keeps the
        // config there for exactly this), else the current one.
        let mut lists = self.cached_lists(&pod.uid);
        if lists.is_empty() {
            if let Ok(Some(l)) = self.conf() {
                lists.push((l, "eth0".into()));
            }
        }
        for (list, ifname) in &lists {
            if let Err(e) = self.runtime.del(list, &self.rt(pod, ifname, &netns)) {
                if !cni_message(&e).contains("not found") {
                    first_err.get_or_insert(anyhow!("DEL {}: {}", list.name, cni_message(&e)));
                }
            }
        }
        remove_netns(&path)?;
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn cached_lists(&self, uid: &str) -> Vec<(ConfList, String)> {
        let dir = self.runtime.cache_dir.join("results");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.contains(uid) {
                continue;
            }
            let Ok(bytes) = std::fs::read(e.path()) else {
                continue;
            };
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                continue;
            };
            if v["containerId"].as_str() != Some(uid) {
                continue;
            }
            use base64::Engine as _;
            let conf = v["config"]
                .as_str()
                .and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok());
            let ifname = v["ifName"].as_str().unwrap_or("eth0").to_owned();
            if let Some(list) = conf.and_then(|c| ConfList::parse(&c).ok()) {
                out.push((list, ifname));
            }
        }
        // eth0 before lo: DEL in the reverse order of ADD.
        out.sort_by_key(|(_, i)| i == "lo");
        out
    }

    /// The UIDs of every namespace under the netns dir.
    pub fn existing(&self) -> Vec<String> {
        std::fs::read_dir(&self.netns_dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn cni_message(e: &ferry_libcni::error::CniError) -> String {
    if e.details.is_empty() {
        e.msg.clone()
    } else {
        format!("{}: {}", e.msg, e.details)
    }
}

/// The addresses (without prefix) of a CNI result, IPv4 first.
pub fn ips_of(result: &serde_json::Value) -> Vec<String> {
    let mut ips: Vec<String> = result["ips"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|ip| ip["address"].as_str())
                .filter_map(|a| a.split('/').next())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    ips.sort_by_key(|ip| ip.contains(':'));
    ips
}

/// Sets `lo` up in the namespace at `path`.
fn loopback_up(path: &Path) -> Result<()> {
    let ns = ferry_sys::netns::NetnsFd::open(path)
        .map_err(|e| anyhow!("opening {}: {e}", path.display()))?;
    let mut nl = ferry_netlink::Netlink::new_in(&ns)
        .map_err(|e| anyhow!("netlink in the pod namespace: {e}"))?;
    let lo = nl
        .link_by_name("lo")
        .map_err(|e| anyhow!("reading lo: {e}"))?
        .ok_or_else(|| anyhow!("no lo in the pod namespace"))?;
    if !lo.up {
        nl.set_up(lo.index)
            .map_err(|e| anyhow!("setting lo up: {e}"))?;
    }
    Ok(())
}

/// Creates a network namespace bound at `path`.
pub fn create_netns(path: &Path) -> Result<()> {
    ferry_sys::netns::create_bound(path)
        .with_context(|| format!("creating the network namespace at {}", path.display()))
}

/// Unmounts and removes a namespace created by [`create_netns`]; fine if it is already gone.
pub fn remove_netns(path: &Path) -> Result<()> {
    ferry_sys::netns::remove_bound(path)
        .with_context(|| format!("removing the network namespace at {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_of_a_cni_result() {
        let r = serde_json::json!({"ips":[{"address":"fd00::5/64"},{"address":"10.244.1.5/24","gateway":"10.244.1.1"}]});
        assert_eq!(ips_of(&r), vec!["10.244.1.5", "fd00::5"]);
        assert!(ips_of(&serde_json::json!({})).is_empty());
    }
}
