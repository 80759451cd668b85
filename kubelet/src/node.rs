//! The Node: registration (labels, addresses, capacity from the machine or flags, node info), the
//! Lease heartbeat (`kube-node-lease/<node>`, renewed every `--lease-interval`), and status
//! conditions: `Ready` (False while the pod network is not ready) and the pressure conditions.
//!
//! `NetworkUnavailable` is not ours: as in Kubernetes, the network agent (ferry-agent) owns it.
//! Status is therefore posted as a strategic merge patch, which merges `conditions` by `type`,
//! so the conditions other components set survive every kubelet update.

use crate::status::rfc3339;
use crate::Kubelet;
use anyhow::{Context as _, Result};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// `capacity` from the machine, overridden by flags.
fn capacity(k: &Kubelet) -> Value {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem_kib = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    json!({
        "cpu": k.cfg.cpu.clone().unwrap_or_else(|| cpus.to_string()),
        "memory": k.cfg.memory.clone().unwrap_or_else(|| format!("{mem_kib}Ki")),
        "pods": k.cfg.max_pods.to_string(),
        "ephemeral-storage": "10Gi",
    })
}

fn node_info() -> Value {
    let uts = nix::sys::utsname::uname().ok();
    let os_image = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|s| s.trim_matches('"').to_owned())
        .unwrap_or_else(|| "Linux".into());
    json!({
        "architecture": if cfg!(target_arch = "x86_64") { "amd64" } else if cfg!(target_arch = "aarch64") { "arm64" } else { std::env::consts::ARCH },
        "bootID": read("/proc/sys/kernel/random/boot_id"),
        "containerRuntimeVersion": concat!("ferry://", env!("CARGO_PKG_VERSION")),
        "kernelVersion": uts.as_ref().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default(),
        "kubeProxyVersion": "",
        "kubeletVersion": "v1.33.0-ferry",
        "machineID": read("/etc/machine-id"),
        "operatingSystem": "linux",
        "osImage": os_image,
        "systemUUID": read("/sys/class/dmi/id/product_uuid"),
    })
}

/// Creates the Node (or updates labels of an existing one). Returns its UID.
pub async fn register(k: &Kubelet) -> Result<String> {
    let api: Api<Node> = Api::all(k.client.clone());
    let name = &k.cfg.node_name;
    let labels = json!({
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": node_info()["architecture"],
    });
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {},
    }))?;
    let uid = match api.create(&PostParams::default(), &node).await {
        Ok(n) => n.metadata.uid,
        Err(kube::Error::Api(e)) if e.code == 409 => {
            api.patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": labels}})),
            )
            .await
            .context("updating the existing Node")?
            .metadata
            .uid
        }
        Err(e) => return Err(e).context("registering the Node"),
    };
    tracing::info!("registered node {name}");
    Ok(uid.unwrap_or_default())
}

/// The node's `status` given the network verdict (`None` = ready).
fn status(k: &Kubelet, network: Option<&str>, old: Option<&Node>, now: &str) -> Value {
    let since = |ty: &str, st: &str| -> String {
        old.and_then(|n| n.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == ty && c.status == st))
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| rfc3339(t.0))
            .unwrap_or_else(|| now.to_owned())
    };
    let cond = |ty: &str, ok: bool, reason: &str, msg: &str| {
        let st = if ok { "True" } else { "False" };
        json!({"type": ty, "status": st, "reason": reason, "message": msg,
               "lastHeartbeatTime": now, "lastTransitionTime": since(ty, st)})
    };
    let (ready, ready_reason, ready_msg) = match network {
        None => (
            true,
            "KubeletReady",
            "kubelet is posting ready status".to_owned(),
        ),
        Some(e) => (
            false,
            "KubeletNotReady",
            format!(
                "container runtime network not ready: NetworkReady=false \
                 reason:NetworkPluginNotReady message:Network plugin returns error: {e}"
            ),
        ),
    };
    let conditions = vec![
        cond(
            "MemoryPressure",
            false,
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        cond(
            "DiskPressure",
            false,
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        cond(
            "PIDPressure",
            false,
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        cond("Ready", ready, ready_reason, &ready_msg),
    ];
    let cap = capacity(k);
    json!({
        "addresses": [
            {"type": "InternalIP", "address": k.cfg.node_ip},
            {"type": "Hostname", "address": k.cfg.node_name},
        ],
        "capacity": cap,
        "allocatable": cap,
        "conditions": conditions,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": k.cfg.port}},
        "nodeInfo": node_info(),
    })
}

/// Patches the node status whenever the network verdict changes, and every `status_interval`.
pub async fn status_loop(k: Arc<Kubelet>) {
    let api: Api<Node> = Api::all(k.client.clone());
    let mut network = k.network.subscribe();
    loop {
        let verdict = network.borrow_and_update().clone();
        let old = api.get_opt(&k.cfg.node_name).await.ok().flatten();
        let now = rfc3339(jiff::Timestamp::now());
        let st = status(&k, verdict.as_deref(), old.as_ref(), &now);
        match api
            .patch_status(
                &k.cfg.node_name,
                &PatchParams::default(),
                &Patch::Strategic(json!({"status": st})),
            )
            .await
        {
            Ok(_) => tracing::debug!("node status posted (network: {verdict:?})"),
            Err(e) => tracing::warn!("posting node status: {e}"),
        }
        tokio::select! {
            _ = network.changed() => {}
            () = tokio::time::sleep(Duration::from_secs(k.cfg.status_interval)) => {}
        }
    }
}

/// Checks network readiness (conflist present, CNI STATUS ok) every second; publishes changes.
pub async fn network_loop(k: Arc<Kubelet>) {
    loop {
        let kk = k.clone();
        let verdict = tokio::task::spawn_blocking(move || kk.sandboxes.network_ready())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
            .and_then(|r| r)
            .err()
            .map(|e| format!("{e:#}"));
        k.network.send_if_modified(|v| {
            if *v != verdict {
                match &verdict {
                    None => tracing::info!("pod network is ready"),
                    Some(e) => tracing::warn!("pod network not ready: {e}"),
                }
                *v = verdict;
                true
            } else {
                false
            }
        });
        let period = if k.network.borrow().is_some() {
            250
        } else {
            5000
        };
        tokio::time::sleep(Duration::from_millis(period)).await;
    }
}

/// Renews `kube-node-lease/<node>` every `lease_interval` seconds (creating it when missing,
/// owned by the Node): [`ferry_kube::lease::heartbeat`].
pub async fn lease_loop(k: Arc<Kubelet>, node_uid: String) {
    use ferry_kube::lease::{heartbeat, Heartbeat, NAMESPACE};
    let api: Api<Lease> = Api::namespaced(k.client.clone(), NAMESPACE);
    let name = k.cfg.node_name.clone();
    let hb = Heartbeat {
        name: name.clone(),
        holder: name.clone(),
        duration: Duration::from_secs(40),
        interval: Duration::from_secs(k.cfg.lease_interval),
        node: Some((name, node_uid)),
        labels: Default::default(),
    };
    heartbeat(api, hb, None).await;
}
