//! The Pod printer (upstream `printPod`): `READY`, `STATUS` (the reason kubectl shows, from
//! init containers, container states and deletion), `RESTARTS` with the time of the last one, and
//! the wide `IP`, `NODE`, `NOMINATED NODE`, `READINESS GATES`. Completed pods' rows carry a
//! `Completed` condition.

use jiff::Timestamp;
use serde_json::{json, Value};

use super::time::{human_duration, parse_time};
use super::{age_of, i, list, name_of, or_none, s, Printer, AGE, NAME};

/// `kubectl get pods`.
#[rustfmt::skip] // one line per column, as upstream lists them
pub(super) const POD: Printer = Printer {
    kind: "Pod",
    columns: &[
        NAME,
        ("Ready", "string", "", 0, "The aggregate readiness state of this pod for accepting traffic."),
        ("Status", "string", "", 0, "The aggregate status of the containers in this pod."),
        ("Restarts", "string", "", 0, "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
        AGE,
        ("IP", "string", "", 1, "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
        ("Node", "string", "", 1, "NodeName indicates in which node this pod is scheduled."),
        ("Nominated Node", "string", "", 1, "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods."),
        ("Readiness Gates", "string", "", 1, "If specified, all readiness gates will be evaluated for pod readiness."),
    ],
    cells: pod_cells,
};

fn has_condition(conditions: &[Value], kind: &str) -> bool {
    conditions
        .iter()
        .any(|c| s(c, "/type") == kind && s(c, "/status") == "True")
}

fn pod_cells(pod: &Value, now: Timestamp) -> (Vec<Value>, Option<Value>) {
    let containers = list(pod, "/spec/containers");
    let init_containers = list(pod, "/spec/initContainers");
    let conditions = list(pod, "/status/conditions");
    let phase = s(pod, "/status/phase");
    let mut reason = if s(pod, "/status/reason").is_empty() {
        phase.to_owned()
    } else {
        s(pod, "/status/reason").to_owned()
    };
    if conditions
        .iter()
        .any(|c| s(c, "/type") == "PodScheduled" && s(c, "/reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".to_owned();
    }
    let row_conditions = match phase {
        "Succeeded" => Some(
            json!([{"type":"Completed","status":"True","reason":"Succeeded","message":"The pod has completed successfully."}]),
        ),
        "Failed" => Some(
            json!([{"type":"Completed","status":"True","reason":"Failed","message":"The pod failed."}]),
        ),
        _ => None,
    };

    let is_restartable_init = |name: &str| {
        init_containers
            .iter()
            .any(|c| s(c, "/name") == name && s(c, "/restartPolicy") == "Always")
    };
    let terminated_at =
        |status: &Value| parse_time(status.pointer("/lastTerminationState/terminated/finishedAt"));

    let mut total = containers.len();
    total += init_containers
        .iter()
        .filter(|c| s(c, "/restartPolicy") == "Always")
        .count();
    let mut ready = 0usize;
    let mut restarts = 0i64;
    let mut restartable_restarts = 0i64;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_restartable_restart: Option<Timestamp> = None;

    let mut initializing = false;
    for (index, status) in list(pod, "/status/initContainerStatuses")
        .iter()
        .enumerate()
    {
        let name = s(status, "/name");
        restarts += i(status, "/restartCount");
        if let Some(t) = terminated_at(status) {
            last_restart = last_restart.max(Some(t));
        }
        let restartable = is_restartable_init(name);
        if restartable {
            restartable_restarts += i(status, "/restartCount");
            if let Some(t) = terminated_at(status) {
                last_restartable_restart = last_restartable_restart.max(Some(t));
            }
        }
        let terminated = status.pointer("/state/terminated");
        let waiting_reason = s(status, "/state/waiting/reason");
        let started = status.pointer("/started").and_then(Value::as_bool) == Some(true);
        if terminated.is_some_and(|t| i(t, "/exitCode") == 0) {
            continue;
        }
        if restartable && started {
            if status.pointer("/ready").and_then(Value::as_bool) == Some(true) {
                ready += 1;
            }
            continue;
        }
        if let Some(t) = terminated {
            reason = if s(t, "/reason").is_empty() {
                if i(t, "/signal") != 0 {
                    format!("Init:Signal:{}", i(t, "/signal"))
                } else {
                    format!("Init:ExitCode:{}", i(t, "/exitCode"))
                }
            } else {
                format!("Init:{}", s(t, "/reason"))
            };
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{index}/{}", init_containers.len());
        }
        initializing = true;
        break;
    }

    if !initializing || has_condition(conditions, "Initialized") {
        restarts = restartable_restarts;
        last_restart = last_restartable_restart;
        let mut has_running = false;
        for status in list(pod, "/status/containerStatuses").iter().rev() {
            restarts += i(status, "/restartCount");
            if let Some(t) = terminated_at(status) {
                last_restart = last_restart.max(Some(t));
            }
            let waiting_reason = s(status, "/state/waiting/reason");
            let terminated = status.pointer("/state/terminated");
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_owned();
            } else if let Some(t) = terminated {
                reason = if !s(t, "/reason").is_empty() {
                    s(t, "/reason").to_owned()
                } else if i(t, "/signal") != 0 {
                    format!("Signal:{}", i(t, "/signal"))
                } else {
                    format!("ExitCode:{}", i(t, "/exitCode"))
                };
            } else if status.pointer("/ready").and_then(Value::as_bool) == Some(true)
                && status.pointer("/state/running").is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if has_condition(conditions, "Ready") {
                "Running".to_owned()
            } else {
                "NotReady".to_owned()
            };
        }
    }

    let deleting = pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null());
    if deleting && s(pod, "/status/reason") == "NodeLost" {
        reason = "Unknown".to_owned();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_owned();
    }

    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => {
            format!("{restarts} ({} ago)", human_duration(now.duration_since(t)))
        }
        _ => restarts.to_string(),
    };

    let pod_ip = list(pod, "/status/podIPs")
        .first()
        .map(|p| s(p, "/ip"))
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| s(pod, "/status/podIP"));
    let gates = list(pod, "/spec/readinessGates");
    let readiness_gates = if gates.is_empty() {
        "<none>".to_owned()
    } else {
        let true_count = gates
            .iter()
            .filter(|g| {
                let gate = s(g, "/conditionType");
                conditions
                    .iter()
                    .find(|c| s(c, "/type") == gate)
                    .is_some_and(|c| s(c, "/status") == "True")
            })
            .count();
        format!("{true_count}/{}", gates.len())
    };

    let cells = vec![
        name_of(pod),
        Value::from(format!("{ready}/{total}")),
        Value::from(reason),
        Value::from(restarts_cell),
        age_of(pod, now),
        Value::from(or_none(pod_ip)),
        Value::from(or_none(s(pod, "/spec/nodeName"))),
        Value::from(or_none(s(pod, "/status/nominatedNodeName"))),
        Value::from(readiness_gates),
    ];
    (cells, row_conditions)
}
