//! The Node conditions the agent owns, computed from what each reconcile round found.
//!
//! | condition | status | meaning |
//! |---|---|---|
//! | `NetworkUnavailable` | `True` | this node cannot serve pods: no podCIDR, unusable podCIDR, underlay interface missing, tunnel port taken, overlay device or node files failing ([`Fault`]) |
//! | `NetworkUnavailable` | `False` (`FerryAgentReady`) | files written, overlay device up, peers programmed |
//! | `FerryNetworkDegraded` | `True` | the node serves, but not everything: peers skipped (garbage or missing annotations, overlapping podCIDRs), kernel entries failing, masquerade rules failing ([`Degradation`]) |
//! | `FerryNetworkDegraded` | `False` (`AllPeersProgrammed`) | every peer programmed, every rule in place |
//! | `FerryPeersUnreachable` | `True` (`TunnelProbeFailed`) | vxlan/udp: peers that do not answer ICMP through the tunnel, each with the diagnosis ([`crate::probe`]) |
//! | `FerryPeersUnreachable` | `False` (`AllPeersAnswer`) | every probed peer answers through the tunnel |
//! | `FerryServiceProxyReady` | `True` (`ServicesProgrammed`) | the Service proxier programmed the last service table ([`service_proxy`]) |
//! | `FerryServiceProxyReady` | `False` (`ProxierUnavailable`, `SyncFailed`, `ServiceProxyOff`) | no proxier could start (e.g. the eBPF verifier's message), or the last sync failed (the previous datapath stays) |
//!
//! `NetworkUnavailable` is the condition Kubernetes network plugins own (Calico and Cilium set
//! it, the kubelet does not), so `kubectl describe node` and the scheduler's
//! `node.kubernetes.io/network-unavailable` taint see it. `FerryNetworkDegraded` is ours, in the
//! style of node-problem-detector's conditions (`True` is the bad state).
//!
//! The agent patches `status.conditions` (a strategic merge keyed by `type`, so the kubelet's
//! conditions are untouched) only when a condition's status, reason or message changes
//! ([`patch`]); `lastTransitionTime` moves only when the status flips.

use k8s_openapi::api::core::v1::NodeCondition;
use serde_json::{json, Value};

/// The standard condition: `True` while this node cannot give pods a working network.
pub const NETWORK_UNAVAILABLE: &str = "NetworkUnavailable";
/// Ferry's condition: `True` while the node serves pods but some peers or rules are missing.
pub const DEGRADED: &str = "FerryNetworkDegraded";
/// Ferry's condition: `True` while programmed peers do not answer through the tunnel.
pub const UNREACHABLE: &str = "FerryPeersUnreachable";
/// Ferry's condition: `True` while the Service proxier has programmed the current table.
pub const SERVICE_PROXY_READY: &str = "FerryServiceProxyReady";
/// At most this many skipped peers are named in a message (the rest are counted).
const NAMED_PEERS: usize = 5;

/// Why this node cannot serve pods this round (`NetworkUnavailable=True`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// `spec.podCIDR` is not set (node IPAM has not assigned one).
    NoPodCidr,
    /// The podCIDR cannot be used (outside the cluster CIDR, overlapping, ...).
    PodCidrUnusable(String),
    /// The underlay interface does not exist.
    InterfaceMissing(String),
    /// The underlay interface has no IPv4 address and the Node no InternalIP.
    NoAddress(String),
    /// Another socket holds the tunnel's UDP port.
    PortInUse {
        /// The overlay device that cannot come up.
        device: &'static str,
        /// The UDP port.
        port: u16,
    },
    /// The overlay device or datapath could not be set up (the message says why).
    Device(String),
    /// The node network file or the CNI conflist could not be written.
    Files(String),
}

impl Fault {
    /// The condition's `reason` (CamelCase, stable: tools may match on it).
    pub fn reason(&self) -> &'static str {
        match self {
            Fault::NoPodCidr => "NoPodCIDR",
            Fault::PodCidrUnusable(_) => "PodCIDRUnusable",
            Fault::InterfaceMissing(_) => "InterfaceMissing",
            Fault::NoAddress(_) => "NoNodeAddress",
            Fault::PortInUse { .. } => "TunnelPortInUse",
            Fault::Device(_) => "OverlayDeviceFailed",
            Fault::Files(_) => "NodeFilesFailed",
        }
    }

    /// The condition's `message` (also logged).
    pub fn message(&self) -> String {
        match self {
            Fault::NoPodCidr => {
                "ferry-agent: spec.podCIDR is not set (node IPAM assigns it); no CNI config written"
                    .to_owned()
            }
            Fault::PodCidrUnusable(why) => format!("ferry-agent: podCIDR unusable: {why}"),
            Fault::InterfaceMissing(iface) => format!(
                "ferry-agent: underlay interface {iface} not found; overlay down until it is back"
            ),
            Fault::NoAddress(iface) => format!(
                "ferry-agent: no IPv4 address on {iface} and no InternalIP on the Node: peers cannot reach this node"
            ),
            Fault::PortInUse { device, port } => format!(
                "ferry-agent: UDP port {port} is held by another socket (see `ss -ulpn sport = :{port}`); {device} cannot come up"
            ),
            Fault::Device(why) => format!("ferry-agent: overlay device: {why}"),
            Fault::Files(why) => format!("ferry-agent: {why}"),
        }
    }
}

/// What is partly broken while the node serves (`FerryNetworkDegraded=True`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Degradation {
    /// Peers with a podCIDR that get no route, and why (sorted by name).
    pub skipped: Vec<(String, String)>,
    /// Kernel operations (routes, neighbours, FDB entries) that failed this round.
    pub failed_entries: usize,
    /// The iptables error, while masquerade rules cannot be reconciled.
    pub masquerade: Option<String>,
}

impl Degradation {
    /// True when nothing is degraded.
    pub fn is_empty(&self) -> bool {
        self.skipped.is_empty() && self.failed_entries == 0 && self.masquerade.is_none()
    }
}

/// One condition as the agent wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// `type`.
    pub type_: &'static str,
    /// `status` (`True` / `False`).
    pub status: bool,
    /// `reason`.
    pub reason: String,
    /// `message`.
    pub message: String,
}

/// Both conditions for a round: `fault` is why the node cannot serve (if so), `backend` the
/// backend's name. Messages name problems but carry no counts of healthy peers, so a node joining
/// a healthy cluster changes no agent's conditions (no status write per node per join).
pub fn desired(backend: &str, fault: Option<&Fault>, degraded: &Degradation) -> [Condition; 2] {
    let unavailable = match fault {
        Some(f) => Condition {
            type_: NETWORK_UNAVAILABLE,
            status: true,
            reason: f.reason().to_owned(),
            message: f.message(),
        },
        None => Condition {
            type_: NETWORK_UNAVAILABLE,
            status: false,
            reason: "FerryAgentReady".to_owned(),
            message: format!("ferry-agent is up ({backend} backend)"),
        },
    };
    let mut problems = Vec::new();
    let mut reason = "AllPeersProgrammed";
    if !degraded.skipped.is_empty() {
        reason = "PeersSkipped";
        let named: Vec<String> = degraded
            .skipped
            .iter()
            .take(NAMED_PEERS)
            .map(|(peer, why)| format!("{peer}: {why}"))
            .collect();
        let more = degraded.skipped.len().saturating_sub(NAMED_PEERS);
        let tail = if more > 0 {
            format!("; and {more} more")
        } else {
            String::new()
        };
        problems.push(format!(
            "{} peer(s) skipped: {}{tail}",
            degraded.skipped.len(),
            named.join("; ")
        ));
    }
    if degraded.failed_entries > 0 {
        if problems.is_empty() {
            reason = "KernelEntriesFailing";
        }
        problems.push(format!(
            "{} route/neighbour/FDB operation(s) failed (retried every round; see the agent log)",
            degraded.failed_entries
        ));
    }
    if let Some(e) = &degraded.masquerade {
        if problems.is_empty() {
            reason = "MasqueradeFailing";
        }
        problems.push(format!("iptables masquerade rules failing: {e}"));
    }
    let degraded = Condition {
        type_: DEGRADED,
        status: !problems.is_empty(),
        reason: reason.to_owned(),
        message: if problems.is_empty() {
            "every peer is programmed".to_owned()
        } else {
            problems.join(". ")
        },
    };
    [unavailable, degraded]
}

fn status_str(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

/// The strategic merge patch of `status` that makes `current` (the Node's conditions) hold
/// `want`, or `None` when every wanted condition already has that status, reason and message.
/// Only differing conditions are sent; `lastTransitionTime` is kept unless the status flips.
pub fn patch(current: &[NodeCondition], want: &[Condition], now: &str) -> Option<Value> {
    let changed: Vec<Value> = want
        .iter()
        .filter_map(|w| {
            let have = current.iter().find(|c| c.type_ == w.type_);
            let same_status = have.is_some_and(|c| c.status == status_str(w.status));
            let same = same_status
                && have.is_some_and(|c| {
                    c.reason.as_deref() == Some(w.reason.as_str())
                        && c.message.as_deref() == Some(w.message.as_str())
                });
            if same {
                return None;
            }
            let since = have
                .filter(|_| same_status)
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0.to_string())
                .unwrap_or_else(|| now.to_owned());
            Some(json!({
                "type": w.type_,
                "status": status_str(w.status),
                "reason": w.reason,
                "message": w.message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": since,
            }))
        })
        .collect();
    (!changed.is_empty()).then(|| json!({"status": {"conditions": changed}}))
}

/// What the tunnel probes found, for the `FerryPeersUnreachable` condition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reachability {
    /// Peers that did not answer through the tunnel, and the diagnosis (sorted by name).
    pub unreachable: Vec<(String, String)>,
    /// The tunnel device whose TX checksum offload the prober turned off, if it did.
    pub checksum_off: Option<&'static str>,
}

/// The `FerryPeersUnreachable` condition for `r`.
pub fn reachability(r: &Reachability) -> Condition {
    let note = r
        .checksum_off
        .map(|dev| {
            format!("; TX checksum offload disabled on {dev} (the tunnel only worked without it)")
        })
        .unwrap_or_default();
    if r.unreachable.is_empty() {
        return Condition {
            type_: UNREACHABLE,
            status: false,
            reason: "AllPeersAnswer".to_owned(),
            message: format!("every probed peer answers through the tunnel{note}"),
        };
    }
    let named: Vec<String> = r
        .unreachable
        .iter()
        .take(NAMED_PEERS)
        .map(|(peer, why)| format!("{peer}: {why}"))
        .collect();
    let more = r.unreachable.len().saturating_sub(NAMED_PEERS);
    let tail = if more > 0 {
        format!("; and {more} more")
    } else {
        String::new()
    };
    Condition {
        type_: UNREACHABLE,
        status: true,
        reason: "TunnelProbeFailed".to_owned(),
        message: format!(
            "{} peer(s) do not answer through the tunnel: {}{tail}{note}",
            r.unreachable.len(),
            named.join("; ")
        ),
    }
}

/// How the Service proxier stands, for the `FerryServiceProxyReady` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyHealth {
    /// `--service-proxy off`: another proxy routes Services.
    Off,
    /// No proxier could be started (the reason, e.g. the verifier's message).
    Unavailable(String),
    /// The last sync failed (the previous datapath stays in place).
    Failing {
        /// `ebpf` / `iptables`.
        mode: &'static str,
        /// The error.
        error: String,
    },
    /// The last sync succeeded.
    Programmed {
        /// `ebpf` / `iptables`.
        mode: &'static str,
        /// A note, e.g. that the iptables mode runs as the fallback of the eBPF one.
        note: Option<String>,
    },
}

/// The `FerryServiceProxyReady` condition for `h`. Messages carry no counts, so a Service change
/// does not rewrite the Node's status.
pub fn service_proxy(h: &ProxyHealth) -> Condition {
    let (status, reason, message) = match h {
        ProxyHealth::Off => (
            false,
            "ServiceProxyOff",
            "ferry-agent does not route Services (--service-proxy off)".to_owned(),
        ),
        ProxyHealth::Unavailable(why) => (
            false,
            "ProxierUnavailable",
            format!("ferry-agent: no Service proxier: {why}"),
        ),
        ProxyHealth::Failing { mode, error } => (
            false,
            "SyncFailed",
            format!("ferry-agent: programming Services ({mode}) failed, previous datapath kept: {error}"),
        ),
        ProxyHealth::Programmed { mode, note } => (
            true,
            "ServicesProgrammed",
            format!(
                "Services programmed ({mode} mode){}",
                note.as_deref().map(|n| format!("; {n}")).unwrap_or_default()
            ),
        ),
    };
    Condition {
        type_: SERVICE_PROXY_READY,
        status,
        reason: reason.to_owned(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_condition(v: Value) -> NodeCondition {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn healthy_round_reports_ready_and_not_degraded() {
        let [u, d] = desired("vxlan", None, &Degradation::default());
        assert_eq!(
            (u.type_, u.status, u.reason.as_str()),
            (NETWORK_UNAVAILABLE, false, "FerryAgentReady")
        );
        assert_eq!(u.message, "ferry-agent is up (vxlan backend)");
        assert_eq!(
            (d.type_, d.status, d.reason.as_str()),
            (DEGRADED, false, "AllPeersProgrammed")
        );
        assert_eq!(d.message, "every peer is programmed");
    }

    #[test]
    fn faults_and_degradations_have_stable_reasons_and_clear_messages() {
        let f = Fault::PortInUse {
            device: "ferry.1",
            port: 8472,
        };
        let [u, _] = desired("vxlan", Some(&f), &Degradation::default());
        assert!(u.status);
        assert_eq!(u.reason, "TunnelPortInUse");
        assert!(u.message.contains("UDP port 8472"), "{}", u.message);
        assert_eq!(
            Fault::InterfaceMissing("eth0".into()).reason(),
            "InterfaceMissing"
        );
        assert!(Fault::InterfaceMissing("eth0".into())
            .message()
            .contains("eth0"));

        let skipped: Vec<(String, String)> = (0..7)
            .map(|i| (format!("n{i}"), "bad backend-data".to_owned()))
            .collect();
        let deg = Degradation {
            skipped,
            failed_entries: 1,
            masquerade: Some("iptables-restore: exit 4".into()),
        };
        let [_, d] = desired("host-gw", None, &deg);
        assert!(d.status);
        assert_eq!(d.reason, "PeersSkipped");
        assert!(d.message.starts_with("7 peer(s) skipped: n0: bad"));
        assert!(
            d.message.contains("n4: bad backend-data; and 2 more"),
            "{}",
            d.message
        );
        assert!(!d.message.contains("n5"), "{}", d.message);
        assert!(d
            .message
            .contains("1 route/neighbour/FDB operation(s) failed"));
        assert!(d.message.contains("iptables-restore: exit 4"));
        let only_masq = Degradation {
            masquerade: Some("x".into()),
            ..Degradation::default()
        };
        assert_eq!(
            desired("udp", None, &only_masq)[1].reason,
            "MasqueradeFailing"
        );
    }

    #[test]
    fn reachability_names_silent_peers_and_the_checksum_fallback() {
        let ok = reachability(&Reachability::default());
        assert_eq!(
            (ok.type_, ok.status, ok.reason.as_str()),
            (UNREACHABLE, false, "AllPeersAnswer")
        );
        assert_eq!(ok.message, "every probed peer answers through the tunnel");
        let bad = reachability(&Reachability {
            unreachable: vec![("b".into(), "UDP 8472 blocked?".into())],
            checksum_off: Some("ferry.1"),
        });
        assert!(bad.status);
        assert_eq!(bad.reason, "TunnelProbeFailed");
        assert_eq!(
            bad.message,
            "1 peer(s) do not answer through the tunnel: b: UDP 8472 blocked?; \
             TX checksum offload disabled on ferry.1 (the tunnel only worked without it)"
        );
    }

    #[test]
    fn service_proxy_condition() {
        let ok = service_proxy(&ProxyHealth::Programmed {
            mode: "iptables",
            note: Some("fallback".into()),
        });
        assert_eq!(
            (ok.type_, ok.status, ok.reason.as_str()),
            (SERVICE_PROXY_READY, true, "ServicesProgrammed")
        );
        assert_eq!(ok.message, "Services programmed (iptables mode); fallback");
        let bad = service_proxy(&ProxyHealth::Unavailable(
            "verifier: R1 invalid mem access".into(),
        ));
        assert!(!bad.status);
        assert_eq!(bad.reason, "ProxierUnavailable");
        assert!(bad.message.contains("R1 invalid mem access"));
        let failing = service_proxy(&ProxyHealth::Failing {
            mode: "iptables",
            error: "exit 4".into(),
        });
        assert_eq!(
            (failing.status, failing.reason.as_str()),
            (false, "SyncFailed")
        );
        assert_eq!(service_proxy(&ProxyHealth::Off).reason, "ServiceProxyOff");
    }

    #[test]
    fn patch_only_what_changed_and_keep_transition_times() {
        let want = desired("vxlan", None, &Degradation::default());
        let now = "2026-11-22T10:00:00Z";
        // Nothing there: both sent, transition now.
        let p = patch(&[], &want, now).unwrap();
        let sent = p["status"]["conditions"].as_array().unwrap();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0]["type"], NETWORK_UNAVAILABLE);
        assert_eq!(sent[0]["status"], "False");
        assert_eq!(sent[0]["lastTransitionTime"], now);
        // The kubelet's conditions and an up-to-date one: only the differing one is sent.
        let current = vec![
            node_condition(json!({"type": "Ready", "status": "True"})),
            node_condition(json!({"type": NETWORK_UNAVAILABLE, "status": "False",
                "reason": "FerryAgentReady", "message": "ferry-agent is up (vxlan backend)",
                "lastTransitionTime": "2026-11-22T09:00:00Z"})),
            node_condition(json!({"type": DEGRADED, "status": "False",
                "reason": "AllPeersProgrammed", "message": "an older message",
                "lastTransitionTime": "2026-11-22T09:30:00Z"})),
        ];
        let p = patch(&current, &want, now).unwrap();
        let sent = p["status"]["conditions"].as_array().unwrap();
        assert_eq!(sent.len(), 1, "{p}");
        assert_eq!(sent[0]["type"], DEGRADED);
        assert_eq!(sent[0]["message"], "every peer is programmed");
        // Same status: the transition time stays.
        assert_eq!(sent[0]["lastTransitionTime"], "2026-11-22T09:30:00Z");
        // Status flips: transition now.
        let fault = Fault::NoPodCidr;
        let want = desired("vxlan", Some(&fault), &Degradation::default());
        let p = patch(&current, &want, now).unwrap();
        let sent = p["status"]["conditions"].as_array().unwrap();
        assert_eq!(sent[0]["status"], "True");
        assert_eq!(sent[0]["reason"], "NoPodCIDR");
        assert_eq!(sent[0]["lastTransitionTime"], now);
        // Up to date: no patch.
        let mut up_to_date = current.clone();
        up_to_date[2].message = Some("every peer is programmed".into());
        let want = desired("vxlan", None, &Degradation::default());
        assert_eq!(patch(&up_to_date, &want, now), None);
    }
}
