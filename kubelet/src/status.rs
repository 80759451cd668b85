//! Pod status from what the kubelet knows: phase, conditions, container statuses, IPs, QoS.
//! Pure functions over [`ContainerRun`]s, unit-tested; the pod worker patches the result.

use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

/// RFC 3339 with second precision, as Kubernetes writes `metav1.Time`.
pub fn rfc3339(t: jiff::Timestamp) -> String {
    jiff::fmt::strtime::format("%Y-%m-%dT%H:%M:%SZ", t).unwrap_or_default()
}

/// How a container attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminated {
    /// Exit code.
    pub exit_code: i32,
    /// Signal, if killed by one.
    pub signal: Option<i32>,
    /// `Completed`, `Error`, `StartError`, `ContainerStatusUnknown`.
    pub reason: String,
    /// Details (the start error).
    pub message: Option<String>,
    /// Start time (RFC 3339), if it started.
    pub started_at: Option<String>,
    /// End time (RFC 3339).
    pub finished_at: String,
}

/// A container's current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not running: `ContainerCreating`, `CrashLoopBackOff`, `CreateContainerConfigError`, ...
    Waiting {
        /// Reason.
        reason: String,
        /// Message.
        message: Option<String>,
    },
    /// Running since.
    Running {
        /// RFC 3339.
        started_at: String,
    },
    /// Ended.
    Terminated(Terminated),
}

/// What the kubelet tracks per container.
#[derive(Debug, Clone)]
pub struct ContainerRun {
    /// Container name.
    pub name: String,
    /// Image (recorded, never pulled).
    pub image: String,
    /// Current attempt number (0 for the first start).
    pub attempt: u32,
    /// Restarts so far.
    pub restart_count: i32,
    /// State now.
    pub state: State,
    /// The previous attempt's end (`lastState`).
    pub last: Option<Terminated>,
    /// Readiness (probe or started).
    pub ready: bool,
    /// Startup probe passed (or none).
    pub started: bool,
}

/// Inputs of [`pod_status`] besides the containers.
#[derive(Debug, Clone, Default)]
pub struct PodFacts {
    /// Sandbox (network) ready.
    pub sandbox_ready: bool,
    /// Pod IPs.
    pub pod_ips: Vec<String>,
    /// Node IP.
    pub host_ip: String,
    /// When the kubelet first saw the pod (RFC 3339).
    pub start_time: String,
    /// Every container ended and none will restart (the pod is done).
    pub finished: bool,
    /// A pod-level reason/message (e.g. waiting for the network).
    pub message: Option<String>,
}

fn container_state(s: &State) -> Value {
    match s {
        State::Waiting { reason, message } => {
            let mut w = json!({"reason": reason});
            if let Some(m) = message {
                w["message"] = m.clone().into();
            }
            json!({"waiting": w})
        }
        State::Running { started_at } => json!({"running": {"startedAt": started_at}}),
        State::Terminated(t) => json!({"terminated": terminated(t)}),
    }
}

fn terminated(t: &Terminated) -> Value {
    let mut v = json!({
        "exitCode": t.exit_code,
        "reason": t.reason,
        "finishedAt": t.finished_at,
    });
    if let Some(s) = t.signal {
        v["signal"] = s.into();
    }
    if let Some(m) = &t.message {
        v["message"] = m.clone().into();
    }
    if let Some(s) = &t.started_at {
        v["startedAt"] = s.clone().into();
    }
    v
}

/// The QoS class of a pod (Guaranteed, Burstable, BestEffort).
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = &pod.spec else {
        return "BestEffort";
    };
    let mut any = false;
    let mut guaranteed = true;
    for c in &spec.containers {
        let r = c.resources.clone().unwrap_or_default();
        let req = r.requests.unwrap_or_default();
        let lim = r.limits.unwrap_or_default();
        if !req.is_empty() || !lim.is_empty() {
            any = true;
        }
        for res in ["cpu", "memory"] {
            match lim.get(res) {
                Some(l) => {
                    if req.get(res).is_some_and(|q| q != l) {
                        guaranteed = false;
                    }
                }
                None => guaranteed = false,
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

fn condition(old: &Pod, ty: &str, ok: bool, now: &str, reason: Option<&str>) -> Value {
    let status = if ok { "True" } else { "False" };
    let since = old
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == ty))
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| rfc3339(t.0))
        .unwrap_or_else(|| now.to_owned());
    let mut c =
        json!({"type": ty, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
    if let Some(r) = reason.filter(|_| !ok) {
        c["reason"] = r.into();
    }
    c
}

/// The pod's `status`, given the current object (for conditions the kubelet does not own and
/// transition times) and what the kubelet knows.
pub fn pod_status(pod: &Pod, facts: &PodFacts, containers: &[ContainerRun], now: &str) -> Value {
    let policy = pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_else(|| "Always".into());
    let all_terminated = !containers.is_empty()
        && containers
            .iter()
            .all(|c| matches!(c.state, State::Terminated(_)));
    let any_failed = containers
        .iter()
        .any(|c| matches!(&c.state, State::Terminated(t) if t.exit_code != 0));
    let any_started = containers.iter().any(|c| {
        matches!(c.state, State::Running { .. }) || c.restart_count > 0 || c.last.is_some()
    }) || all_terminated;
    let phase = if facts.finished && all_terminated {
        if any_failed || policy == "Always" {
            "Failed"
        } else {
            "Succeeded"
        }
    } else if facts.sandbox_ready && any_started {
        "Running"
    } else {
        "Pending"
    };
    let all_ready = !containers.is_empty() && containers.iter().all(|c| c.ready);
    let not_ready = containers
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>();
    let not_ready_reason = if phase == "Succeeded" || phase == "Failed" {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let mut conditions = vec![
        condition(
            pod,
            "PodReadyToStartContainers",
            facts.sandbox_ready,
            now,
            None,
        ),
        condition(pod, "Initialized", true, now, None),
        condition(pod, "Ready", all_ready, now, Some(not_ready_reason)),
        condition(
            pod,
            "ContainersReady",
            all_ready,
            now,
            Some(not_ready_reason),
        ),
    ];
    if !all_ready && phase != "Succeeded" && phase != "Failed" {
        for c in conditions.iter_mut().skip(2) {
            c["message"] =
                format!("containers with unready status: [{}]", not_ready.join(" ")).into();
        }
    }
    if let Some(sched) = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
    {
        conditions.push(serde_json::to_value(sched).unwrap_or_default());
    }
    let statuses: Vec<Value> = containers
        .iter()
        .map(|c| {
            let mut v = json!({
                "name": c.name,
                "image": c.image,
                "imageID": "",
                "containerID": format!("ferry://{}/{}/{}", pod.metadata.uid.as_deref().unwrap_or(""), c.name, c.attempt),
                "ready": c.ready,
                "started": c.started && matches!(c.state, State::Running { .. }),
                "restartCount": c.restart_count,
                "state": container_state(&c.state),
                "lastState": {},
            });
            if let Some(l) = &c.last {
                v["lastState"] = json!({"terminated": terminated(l)});
            }
            v
        })
        .collect();
    let mut status = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": facts.host_ip,
        "hostIPs": [{"ip": facts.host_ip}],
        "startTime": facts.start_time,
        "containerStatuses": statuses,
        "qosClass": qos_class(pod),
    });
    if !facts.pod_ips.is_empty() {
        status["podIP"] = facts.pod_ips[0].clone().into();
        status["podIPs"] = facts
            .pod_ips
            .iter()
            .map(|ip| json!({"ip": ip}))
            .collect::<Vec<_>>()
            .into();
    }
    if let Some(m) = &facts.message {
        status["message"] = m.clone().into();
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(policy: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "d", "uid": "u"},
            "spec": {"restartPolicy": policy, "containers": [{"name": "c", "image": "busybox",
                "resources": {"limits": {"cpu": "1", "memory": "64Mi"}}}]},
            "status": {"conditions": [{"type": "PodScheduled", "status": "True"}]}
        }))
        .unwrap()
    }

    fn run(state: State, ready: bool) -> ContainerRun {
        ContainerRun {
            name: "c".into(),
            image: "busybox".into(),
            attempt: 0,
            restart_count: 0,
            state,
            last: None,
            ready,
            started: ready,
        }
    }

    fn done(code: i32) -> State {
        State::Terminated(Terminated {
            exit_code: code,
            signal: None,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
            started_at: Some("2026-01-01T00:00:00Z".into()),
            finished_at: "2026-01-01T00:00:01Z".into(),
        })
    }

    #[test]
    fn phases() {
        let facts = PodFacts {
            sandbox_ready: true,
            pod_ips: vec!["10.244.1.2".into()],
            host_ip: "10.99.0.11".into(),
            start_time: "2026-01-01T00:00:00Z".into(),
            ..PodFacts::default()
        };
        let now = "2026-01-01T00:00:02Z";
        let running = State::Running {
            started_at: "2026-01-01T00:00:00Z".into(),
        };
        let s = pod_status(&pod("Always"), &facts, &[run(running.clone(), true)], now);
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["podIP"], "10.244.1.2");
        assert_eq!(s["qosClass"], "Guaranteed");
        let ready = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "True");
        assert!(s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "PodScheduled"));
        let s = pod_status(&pod("Always"), &facts, &[run(running, false)], now);
        let ready = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["reason"], "ContainersNotReady");

        let fin = PodFacts {
            finished: true,
            ..facts.clone()
        };
        assert_eq!(
            pod_status(&pod("Never"), &fin, &[run(done(0), false)], now)["phase"],
            "Succeeded"
        );
        assert_eq!(
            pod_status(&pod("Never"), &fin, &[run(done(3), false)], now)["phase"],
            "Failed"
        );
        let s = pod_status(&pod("Never"), &fin, &[run(done(3), false)], now);
        assert_eq!(
            s["containerStatuses"][0]["state"]["terminated"]["exitCode"],
            3
        );
        let waiting = State::Waiting {
            reason: "ContainerCreating".into(),
            message: None,
        };
        let pending = PodFacts {
            sandbox_ready: false,
            ..PodFacts::default()
        };
        assert_eq!(
            pod_status(&pod("Always"), &pending, &[run(waiting, false)], now)["phase"],
            "Pending"
        );
    }
}
