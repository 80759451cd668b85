//! Server-side printing: `meta.k8s.io/v1` `Table` responses for `kubectl get`.
//!
//! [`to_table`] renders the columns and cells of upstream's printers
//! (`pkg/printers/internalversion/printers.go`) for Pod, Service, Node, Deployment, ReplicaSet,
//! Endpoints, EndpointSlice, Namespace, Event (core/v1), Lease and ConfigMap; any other kind gets
//! `Name` and `Age`. As the real apiserver does, the wide (`priority: 1`) columns are always
//! generated; kubectl hides them unless `-o wide`. Every row carries `object`, a
//! `PartialObjectMetadata` with the full `metadata` (`-A`, `--show-labels`, `-L` read it), unless
//! [`IncludeObject`] says otherwise.
//!
//! Column names are upstream's (`Name`, `Ready`, `Nominated Node`, ...); kubectl upper-cases
//! them. Ages are [`human_duration`] strings; a missing timestamp prints `<unknown>`.
//!
//! Small deliberate difference: a Service without `spec.type` prints `ClusterIP` (upstream only
//! ever prints defaulted objects).

use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Map, Value};

use crate::selector::label_selector_from_json;

/// What each row's `object` holds (`includeObject` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No object.
    None,
    /// A `PartialObjectMetadata` (the default).
    #[default]
    Metadata,
    /// The full object.
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query parameter (`None`, `Metadata`, `Object`).
    pub fn from_query(value: &str) -> Option<Self> {
        match value {
            "None" => Some(Self::None),
            "Metadata" | "" => Some(Self::Metadata),
            "Object" => Some(Self::Object),
            _ => None,
        }
    }
}

/// Upstream `duration.HumanDuration`: about two significant units (`5s`, `3m20s`, `5m`,
/// `2d3h`, `3y12d`); `<invalid>` for durations below -1s, `0s` for small negative ones.
pub fn human_duration(d: SignedDuration) -> String {
    let seconds = d.as_secs();
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{days}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn parse_time(ts: Option<&Value>) -> Option<Timestamp> {
    ts.and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .and_then(|s| s.parse().ok())
}

/// Upstream `translateTimestampSince`: the age of an RFC 3339 timestamp, `<unknown>` when
/// absent or unparsable.
pub fn translate_timestamp_since(ts: Option<&Value>, now: Timestamp) -> String {
    match parse_time(ts) {
        Some(t) => human_duration(now.duration_since(t)),
        None => "<unknown>".to_owned(),
    }
}

/// `{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{...}}`.
pub fn partial_object_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// A column: (name, type, format, priority, description).
type Column = (&'static str, &'static str, &'static str, u8, &'static str);

const NAME_DOC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DOC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.";

const NAME: Column = ("Name", "string", "name", 0, NAME_DOC);
const AGE: Column = ("Age", "string", "", 0, AGE_DOC);

fn columns(kind: &str) -> Vec<Column> {
    match kind {
        "Pod" => vec![
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
        "Service" => vec![
            NAME,
            ("Type", "string", "", 0, "type determines how the Service is exposed."),
            ("Cluster-IP", "string", "", 0, "clusterIP is the IP address of the service and is usually assigned randomly."),
            ("External-IP", "string", "", 0, "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service."),
            ("Port(s)", "string", "", 0, "The list of ports that are exposed by this service."),
            AGE,
            ("Selector", "string", "", 1, "Route service traffic to pods with label keys and values matching this selector."),
        ],
        "Node" => vec![
            NAME,
            ("Status", "string", "", 0, "The status of the node"),
            ("Roles", "string", "", 0, "The roles of the node"),
            AGE,
            ("Version", "string", "", 0, "Kubelet Version reported by the node."),
            ("Internal-IP", "string", "", 1, "List of addresses reachable to the node."),
            ("External-IP", "string", "", 1, "List of addresses reachable to the node."),
            ("OS-Image", "string", "", 1, "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
            ("Kernel-Version", "string", "", 1, "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
            ("Container-Runtime", "string", "", 1, "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2)."),
        ],
        "Deployment" => vec![
            NAME,
            ("Ready", "string", "", 0, "Number of the pod with ready state"),
            ("Up-to-date", "string", "", 0, "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
            ("Available", "string", "", 0, "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
            AGE,
            ("Containers", "string", "", 1, "Names of each container in the template."),
            ("Images", "string", "", 1, "Images referenced by each container in the template."),
            ("Selector", "string", "", 1, "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment."),
        ],
        "ReplicaSet" => vec![
            NAME,
            ("Desired", "integer", "", 0, "Replicas is the number of desired replicas."),
            ("Current", "integer", "", 0, "Replicas is the most recently observed number of replicas."),
            ("Ready", "integer", "", 0, "readyReplicas is the number of pods targeted by this ReplicaSet with a Ready Condition."),
            AGE,
            ("Containers", "string", "", 1, "Names of each container in the template."),
            ("Images", "string", "", 1, "Images referenced by each container in the template."),
            ("Selector", "string", "", 1, "Selector is a label query over pods that should match the replica count."),
        ],
        "Endpoints" => vec![
            NAME,
            ("Endpoints", "string", "", 0, "The set of all endpoints is the union of all subsets."),
            AGE,
        ],
        "EndpointSlice" => vec![
            NAME,
            ("AddressType", "string", "", 0, "addressType specifies the type of address carried by this EndpointSlice."),
            ("Ports", "string", "", 0, "ports specifies the list of network ports exposed by each endpoint in this slice."),
            ("Endpoints", "string", "", 0, "endpoints is a list of unique endpoints in this slice."),
            AGE,
        ],
        "Namespace" => vec![
            NAME,
            ("Status", "string", "", 0, "The status of the namespace"),
            AGE,
        ],
        "Event" => vec![
            ("Last Seen", "string", "", 0, "The time at which the most recent occurrence of this event was recorded."),
            ("Type", "string", "", 0, "Type of this event (Normal, Warning), new types could be added in the future"),
            ("Reason", "string", "", 0, "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
            ("Object", "string", "", 0, "The object that this event is about."),
            ("Subobject", "string", "", 1, "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement."),
            ("Source", "string", "", 1, "The component reporting this event. Should be a short machine understandable string."),
            ("Message", "string", "", 0, "A human-readable description of the status of this operation."),
            ("First Seen", "string", "", 1, "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)"),
            ("Count", "string", "", 1, "The number of times this event has occurred."),
            ("Name", "string", "name", 1, NAME_DOC),
        ],
        "Lease" => vec![
            NAME,
            ("Holder", "string", "", 0, "holderIdentity contains the identity of the holder of a current lease."),
            AGE,
        ],
        "ConfigMap" => vec![
            NAME,
            ("Data", "string", "", 0, "Data contains the configuration data."),
            AGE,
        ],
        _ => vec![NAME, AGE],
    }
}

/// The `columnDefinitions` for `kind`.
pub fn column_definitions(kind: &str) -> Vec<Value> {
    columns(kind)
        .into_iter()
        .map(|(name, kind, format, priority, description)| {
            json!({"name": name, "type": kind, "format": format, "description": description, "priority": priority})
        })
        .collect()
}

/// One row: `{"cells": [...], "object": ...}` (plus `conditions` for completed pods).
pub fn table_row(kind: &str, obj: &Value, now: Timestamp, include: IncludeObject) -> Value {
    let (cells, conditions) = cells(kind, obj, now);
    let mut row = Map::new();
    row.insert("cells".to_owned(), Value::Array(cells));
    if let Some(conditions) = conditions {
        row.insert("conditions".to_owned(), conditions);
    }
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => {
            row.insert("object".to_owned(), partial_object_metadata(obj));
        }
        IncludeObject::Object => {
            row.insert("object".to_owned(), obj.clone());
        }
    }
    Value::Object(row)
}

/// A `meta.k8s.io/v1` `Table` of `objects` (all of `kind`), as section 5 of the notes describes,
/// with `metadata.resourceVersion` = `rv` and `metadata.continue` = `continue_token`.
pub fn to_table(
    kind: &str,
    objects: &[Value],
    now: Timestamp,
    rv: &str,
    continue_token: &str,
) -> Value {
    to_table_with(
        kind,
        objects,
        now,
        rv,
        continue_token,
        IncludeObject::Metadata,
    )
}

/// [`to_table`] with an explicit `includeObject`.
pub fn to_table_with(
    kind: &str,
    objects: &[Value],
    now: Timestamp,
    rv: &str,
    continue_token: &str,
    include: IncludeObject,
) -> Value {
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| table_row(kind, obj, now, include))
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv, "continue": continue_token},
        "columnDefinitions": column_definitions(kind),
        "rows": rows,
    })
}

fn s<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn i(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn list<'a>(obj: &'a Value, pointer: &str) -> &'a [Value] {
    obj.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn or_none(value: &str) -> String {
    if value.is_empty() {
        "<none>".to_owned()
    } else {
        value.to_owned()
    }
}

fn name_of(obj: &Value) -> Value {
    Value::from(s(obj, "/metadata/name"))
}

fn age_of(obj: &Value, now: Timestamp) -> Value {
    Value::from(translate_timestamp_since(
        obj.pointer("/metadata/creationTimestamp"),
        now,
    ))
}

fn cells(kind: &str, obj: &Value, now: Timestamp) -> (Vec<Value>, Option<Value>) {
    match kind {
        "Pod" => pod_cells(obj, now),
        "Service" => (service_cells(obj, now), None),
        "Node" => (node_cells(obj, now), None),
        "Deployment" => (deployment_cells(obj, now), None),
        "ReplicaSet" => (replica_set_cells(obj, now), None),
        "Endpoints" => (
            vec![
                name_of(obj),
                Value::from(format_endpoints(obj)),
                age_of(obj, now),
            ],
            None,
        ),
        "EndpointSlice" => (endpoint_slice_cells(obj, now), None),
        "Namespace" => (
            vec![
                name_of(obj),
                Value::from(s(obj, "/status/phase")),
                age_of(obj, now),
            ],
            None,
        ),
        "Event" => (event_cells(obj, now), None),
        "Lease" => (
            vec![
                name_of(obj),
                Value::from(s(obj, "/spec/holderIdentity")),
                age_of(obj, now),
            ],
            None,
        ),
        "ConfigMap" => {
            let count = |p: &str| {
                obj.pointer(p)
                    .and_then(Value::as_object)
                    .map_or(0, Map::len)
            };
            let n = count("/data") + count("/binaryData");
            (vec![name_of(obj), Value::from(n), age_of(obj, now)], None)
        }
        _ => (vec![name_of(obj), age_of(obj, now)], None),
    }
}

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

fn service_cells(svc: &Value, now: Timestamp) -> Vec<Value> {
    let service_type = match s(svc, "/spec/type") {
        "" => "ClusterIP",
        t => t,
    };
    let cluster_ip = list(svc, "/spec/clusterIPs")
        .first()
        .and_then(Value::as_str)
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| s(svc, "/spec/clusterIP"));
    let external_ips: Vec<&str> = list(svc, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let external = match service_type {
        "ClusterIP" | "NodePort" => or_none(&external_ips.join(",")),
        "LoadBalancer" => {
            let mut ips: Vec<&str> = list(svc, "/status/loadBalancer/ingress")
                .iter()
                .filter_map(|ing| {
                    let ip = s(ing, "/ip");
                    let host = s(ing, "/hostname");
                    if !ip.is_empty() {
                        Some(ip)
                    } else if !host.is_empty() {
                        Some(host)
                    } else {
                        None
                    }
                })
                .collect();
            ips.extend(external_ips);
            if ips.is_empty() {
                "<pending>".to_owned()
            } else {
                ips.join(",")
            }
        }
        "ExternalName" => s(svc, "/spec/externalName").to_owned(),
        _ => "<unknown>".to_owned(),
    };
    let ports: Vec<String> = list(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let protocol = match s(p, "/protocol") {
                "" => "TCP",
                proto => proto,
            };
            let node_port = i(p, "/nodePort");
            if node_port > 0 {
                format!("{}:{node_port}/{protocol}", i(p, "/port"))
            } else {
                format!("{}/{protocol}", i(p, "/port"))
            }
        })
        .collect();
    let selector = crate::selector::labels_from_value(svc.pointer("/spec/selector"));
    let selector: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    vec![
        name_of(svc),
        Value::from(service_type),
        Value::from(or_none(cluster_ip)),
        Value::from(external),
        Value::from(or_none(&ports.join(","))),
        age_of(svc, now),
        Value::from(or_none(&selector.join(","))),
    ]
}

fn node_cells(node: &Value, now: Timestamp) -> Vec<Value> {
    let conditions = list(node, "/status/conditions");
    let mut status: Vec<&str> = Vec::new();
    if let Some(ready) = conditions.iter().find(|c| s(c, "/type") == "Ready") {
        status.push(if s(ready, "/status") == "True" {
            "Ready"
        } else {
            "NotReady"
        });
    }
    if status.is_empty() {
        status.push("Unknown");
    }
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled");
    }
    let mut roles: Vec<String> = Vec::new();
    if let Some(labels) = node.pointer("/metadata/labels").and_then(Value::as_object) {
        for (key, value) in labels {
            if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.push(role.to_owned());
                }
            } else if key == "kubernetes.io/role" {
                if let Some(role) = value.as_str().filter(|r| !r.is_empty()) {
                    roles.push(role.to_owned());
                }
            }
        }
    }
    roles.sort();
    roles.dedup();
    let address = |kind: &str| {
        list(node, "/status/addresses")
            .iter()
            .find(|a| s(a, "/type") == kind)
            .map_or_else(|| "<none>".to_owned(), |a| s(a, "/address").to_owned())
    };
    let info = |field: &str| match s(node, &format!("/status/nodeInfo/{field}")) {
        "" => "<unknown>".to_owned(),
        v => v.to_owned(),
    };
    vec![
        name_of(node),
        Value::from(status.join(",")),
        Value::from(or_none(&roles.join(","))),
        age_of(node, now),
        Value::from(s(node, "/status/nodeInfo/kubeletVersion")),
        Value::from(address("InternalIP")),
        Value::from(address("ExternalIP")),
        Value::from(info("osImage")),
        Value::from(info("kernelVersion")),
        Value::from(info("containerRuntimeVersion")),
    ]
}

fn template_containers(obj: &Value) -> (String, String) {
    let containers = list(obj, "/spec/template/spec/containers");
    let names: Vec<&str> = containers.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| s(c, "/image")).collect();
    (names.join(","), images.join(","))
}

fn selector_string(obj: &Value) -> String {
    match label_selector_from_json(obj.pointer("/spec/selector")) {
        Ok(selector) => selector.to_string(),
        Err(_) => "<invalid>".to_owned(),
    }
}

fn desired_replicas(obj: &Value) -> i64 {
    obj.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn deployment_cells(d: &Value, now: Timestamp) -> Vec<Value> {
    let (names, images) = template_containers(d);
    vec![
        name_of(d),
        Value::from(format!(
            "{}/{}",
            i(d, "/status/readyReplicas"),
            desired_replicas(d)
        )),
        Value::from(i(d, "/status/updatedReplicas")),
        Value::from(i(d, "/status/availableReplicas")),
        age_of(d, now),
        Value::from(names),
        Value::from(images),
        Value::from(selector_string(d)),
    ]
}

fn replica_set_cells(rs: &Value, now: Timestamp) -> Vec<Value> {
    let (names, images) = template_containers(rs);
    vec![
        name_of(rs),
        Value::from(desired_replicas(rs)),
        Value::from(i(rs, "/status/replicas")),
        Value::from(i(rs, "/status/readyReplicas")),
        age_of(rs, now),
        Value::from(names),
        Value::from(images),
        Value::from(selector_string(rs)),
    ]
}

const MAX_LISTED: usize = 3;

/// Upstream `listWithMoreString`.
fn list_with_more(items: &[String], count: usize) -> String {
    let shown: Vec<&str> = items.iter().take(MAX_LISTED).map(String::as_str).collect();
    let joined = shown.join(",");
    if count > MAX_LISTED {
        format!("{joined} + {} more...", count - MAX_LISTED)
    } else if joined.is_empty() {
        "<unset>".to_owned()
    } else {
        joined
    }
}

fn endpoint_slice_cells(slice: &Value, now: Timestamp) -> Vec<Value> {
    let ports: Vec<String> = list(slice, "/ports")
        .iter()
        .map(|p| match p.get("port").and_then(Value::as_i64) {
            Some(port) => port.to_string(),
            None => match s(p, "/name") {
                "" => "*".to_owned(),
                name => name.to_owned(),
            },
        })
        .collect();
    let addresses: Vec<String> = list(slice, "/endpoints")
        .iter()
        .flat_map(|e| list(e, "/addresses"))
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    vec![
        name_of(slice),
        Value::from(s(slice, "/addressType")),
        Value::from(list_with_more(&ports, ports.len())),
        Value::from(list_with_more(&addresses, addresses.len())),
        age_of(slice, now),
    ]
}

/// Upstream `formatEndpoints` (the Endpoints `ENDPOINTS` column): `ip:port` pairs, at most three,
/// then ` + N more...`; `<none>` without subsets.
fn format_endpoints(ep: &Value) -> String {
    let subsets = list(ep, "/subsets");
    if subsets.is_empty() {
        return "<none>".to_owned();
    }
    let mut shown: Vec<String> = Vec::new();
    let mut count = 0usize;
    for subset in subsets {
        let addresses = list(subset, "/addresses");
        let ports = list(subset, "/ports");
        let host = |a: &Value| {
            let ip = s(a, "/ip");
            if ip.contains(':') {
                format!("[{ip}]")
            } else {
                ip.to_owned()
            }
        };
        if ports.is_empty() {
            count += addresses.len();
            for a in addresses {
                if shown.len() < MAX_LISTED {
                    shown.push(s(a, "/ip").to_owned());
                }
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for a in addresses {
                if shown.len() < MAX_LISTED {
                    shown.push(format!("{}:{}", host(a), i(port, "/port")));
                }
            }
        }
    }
    let joined = shown.join(",");
    if count > MAX_LISTED {
        format!("{joined} + {} more...", count - MAX_LISTED)
    } else {
        joined
    }
}

fn event_cells(ev: &Value, now: Timestamp) -> Vec<Value> {
    let first = if parse_time(ev.get("firstTimestamp")).is_some() {
        translate_timestamp_since(ev.get("firstTimestamp"), now)
    } else {
        translate_timestamp_since(ev.get("eventTime"), now)
    };
    let mut last = if parse_time(ev.get("lastTimestamp")).is_some() {
        translate_timestamp_since(ev.get("lastTimestamp"), now)
    } else {
        first.clone()
    };
    let mut count = i(ev, "/count");
    if let Some(series) = ev.get("series").filter(|v| v.is_object()) {
        last = translate_timestamp_since(series.get("lastObservedTime"), now);
        count = i(series, "/count");
    } else if count == 0 {
        count = 1;
    }
    let kind = s(ev, "/involvedObject/kind").to_lowercase();
    let target = match s(ev, "/involvedObject/name") {
        "" => kind,
        name => format!("{kind}/{name}"),
    };
    let component = match s(ev, "/source/component") {
        "" => s(ev, "/reportingComponent"),
        c => c,
    };
    let instance = match s(ev, "/source/host") {
        "" => s(ev, "/reportingInstance"),
        h => h,
    };
    let source = if instance.is_empty() {
        component.to_owned()
    } else {
        format!("{component}, {instance}")
    };
    vec![
        Value::from(last),
        Value::from(s(ev, "/type")),
        Value::from(s(ev, "/reason")),
        Value::from(target),
        Value::from(s(ev, "/involvedObject/fieldPath")),
        Value::from(source),
        Value::from(s(ev, "/message").trim()),
        Value::from(first),
        Value::from(count),
        name_of(ev),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2025-01-10T12:00:00Z".parse().expect("timestamp")
    }

    fn ago(seconds: i64) -> String {
        (now() - SignedDuration::from_secs(seconds)).to_string()
    }

    fn row(kind: &str, obj: &Value) -> Vec<Value> {
        let table = to_table(kind, std::slice::from_ref(obj), now(), "7", "");
        let cells = table["rows"][0]["cells"].as_array().expect("cells").clone();
        assert_eq!(
            cells.len(),
            table["columnDefinitions"].as_array().map_or(0, Vec::len),
            "{kind}: one cell per column"
        );
        cells
    }

    #[test]
    fn human_duration_like_upstream() {
        let d = |s: i64| human_duration(SignedDuration::from_secs(s));
        assert_eq!(d(-5), "<invalid>");
        assert_eq!(d(-1), "0s");
        assert_eq!(d(0), "0s");
        assert_eq!(d(5), "5s");
        assert_eq!(d(119), "119s");
        assert_eq!(d(120), "2m");
        assert_eq!(d(200), "3m20s");
        assert_eq!(d(300), "5m");
        assert_eq!(d(599), "9m59s");
        assert_eq!(d(600), "10m");
        assert_eq!(d(179 * 60), "179m");
        assert_eq!(d(3 * 3600), "3h");
        assert_eq!(d(3 * 3600 + 5 * 60), "3h5m");
        assert_eq!(d(8 * 3600), "8h");
        assert_eq!(d(47 * 3600), "47h");
        assert_eq!(d(51 * 3600), "2d3h");
        assert_eq!(d(72 * 3600), "3d");
        assert_eq!(d(8 * 86400), "8d");
        assert_eq!(d(729 * 86400), "729d");
        assert_eq!(d(2 * 365 * 86400 + 10 * 86400), "2y10d");
        assert_eq!(d(9 * 365 * 86400), "9y");
        assert_eq!(translate_timestamp_since(None, now()), "<unknown>");
        assert_eq!(
            translate_timestamp_since(Some(&json!("garbage")), now()),
            "<unknown>"
        );
    }

    #[test]
    fn table_envelope() {
        let pod = json!({"metadata":{"name":"web","namespace":"default","labels":{"app":"web"},
            "creationTimestamp": ago(300)},"spec":{"containers":[{"name":"c"}]}});
        let table = to_table("Pod", &[pod], now(), "101", "tok");
        assert_eq!(table["kind"], "Table");
        assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(
            table["metadata"],
            json!({"resourceVersion":"101","continue":"tok"})
        );
        let cols = table["columnDefinitions"].as_array().expect("cols");
        assert_eq!(cols[0]["name"], "Name");
        assert_eq!(cols[0]["format"], "name");
        let wide: Vec<&str> = cols
            .iter()
            .filter(|c| c["priority"] == 1)
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(
            wide,
            vec!["IP", "Node", "Nominated Node", "Readiness Gates"]
        );
        let object = &table["rows"][0]["object"];
        assert_eq!(object["kind"], "PartialObjectMetadata");
        assert_eq!(object["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(object["metadata"]["labels"]["app"], "web");
        let none = to_table_with("Pod", &[json!({})], now(), "1", "", IncludeObject::None);
        assert!(none["rows"][0].get("object").is_none());
        assert_eq!(
            IncludeObject::from_query("Object"),
            Some(IncludeObject::Object)
        );
        assert_eq!(IncludeObject::from_query("bogus"), None);
    }

    #[test]
    fn pod_running() {
        let pod = json!({"metadata":{"name":"web","creationTimestamp": ago(300)},
            "spec":{"nodeName":"node1","containers":[{"name":"a"},{"name":"b"}]},
            "status":{"phase":"Running","podIP":"10.244.0.5","podIPs":[{"ip":"10.244.0.5"}],
              "conditions":[{"type":"Ready","status":"True"}],
              "containerStatuses":[
                {"name":"a","ready":true,"restartCount":0,"state":{"running":{}}},
                {"name":"b","ready":true,"restartCount":2,"state":{"running":{}},
                 "lastTerminationState":{"terminated":{"exitCode":1,"finishedAt": ago(60)}}}]}});
        assert_eq!(
            row("Pod", &pod),
            vec![
                json!("web"),
                json!("2/2"),
                json!("Running"),
                json!("2 (60s ago)"),
                json!("5m"),
                json!("10.244.0.5"),
                json!("node1"),
                json!("<none>"),
                json!("<none>")
            ]
        );
    }

    #[test]
    fn pod_status_reasons() {
        let base = |status: Value| {
            json!({"metadata":{"name":"p","creationTimestamp": ago(10)},
            "spec":{"containers":[{"name":"a"}]},"status":status})
        };
        let status_of = |pod: &Value| row("Pod", pod)[2].clone();
        assert_eq!(status_of(&base(json!({"phase":"Pending"}))), "Pending");
        assert_eq!(
            status_of(&base(
                json!({"phase":"Pending","containerStatuses":[{"name":"a","ready":false,"restartCount":0,"state":{"waiting":{"reason":"ContainerCreating"}}}]})
            )),
            "ContainerCreating"
        );
        let crash = base(
            json!({"phase":"Running","containerStatuses":[{"name":"a","ready":false,"restartCount":5,
            "state":{"waiting":{"reason":"CrashLoopBackOff"}},"lastTerminationState":{"terminated":{"exitCode":1,"finishedAt": ago(30)}}}]}),
        );
        assert_eq!(status_of(&crash), "CrashLoopBackOff");
        assert_eq!(row("Pod", &crash)[3], "5 (30s ago)");
        assert_eq!(row("Pod", &crash)[1], "0/1");
        let done = base(
            json!({"phase":"Succeeded","containerStatuses":[{"name":"a","ready":false,"restartCount":0,"state":{"terminated":{"exitCode":0,"reason":"Completed"}}}]}),
        );
        assert_eq!(status_of(&done), "Completed");
        let table = to_table("Pod", &[done], now(), "1", "");
        assert_eq!(table["rows"][0]["conditions"][0]["type"], "Completed");
        assert_eq!(
            status_of(&base(
                json!({"phase":"Failed","containerStatuses":[{"name":"a","state":{"terminated":{"exitCode":137}}}]})
            )),
            "ExitCode:137"
        );
        let mut terminating = base(
            json!({"phase":"Running","containerStatuses":[{"name":"a","ready":true,"state":{"running":{}}}]}),
        );
        terminating["metadata"]["deletionTimestamp"] = json!(ago(1));
        assert_eq!(status_of(&terminating), "Terminating");
        let mut lost = terminating.clone();
        lost["status"]["reason"] = json!("NodeLost");
        assert_eq!(status_of(&lost), "Unknown");
        let gated = base(
            json!({"phase":"Pending","conditions":[{"type":"PodScheduled","status":"False","reason":"SchedulingGated"}]}),
        );
        assert_eq!(status_of(&gated), "SchedulingGated");
        let evicted = base(json!({"phase":"Failed","reason":"Evicted"}));
        assert_eq!(status_of(&evicted), "Evicted");
    }

    #[test]
    fn pod_init_containers() {
        let pod = |init_statuses: Value| {
            json!({"metadata":{"name":"p"},
            "spec":{"initContainers":[{"name":"i1"},{"name":"i2"}],"containers":[{"name":"a"}]},
            "status":{"phase":"Pending","initContainerStatuses":init_statuses}})
        };
        let status_of = |p: &Value| row("Pod", p)[2].clone();
        assert_eq!(
            status_of(&pod(
                json!([{"name":"i1","state":{"terminated":{"exitCode":0}}},{"name":"i2","state":{"running":{}}}])
            )),
            "Init:1/2"
        );
        assert_eq!(
            status_of(&pod(
                json!([{"name":"i1","state":{"terminated":{"exitCode":2}}}])
            )),
            "Init:ExitCode:2"
        );
        assert_eq!(
            status_of(&pod(
                json!([{"name":"i1","state":{"waiting":{"reason":"CrashLoopBackOff"}}}])
            )),
            "Init:CrashLoopBackOff"
        );
        // A restartable (sidecar) init container counts towards READY.
        let sidecar = json!({"metadata":{"name":"p"},
            "spec":{"initContainers":[{"name":"s","restartPolicy":"Always"}],"containers":[{"name":"a"}]},
            "status":{"phase":"Running","conditions":[{"type":"Initialized","status":"True"},{"type":"Ready","status":"True"}],
              "initContainerStatuses":[{"name":"s","started":true,"ready":true,"state":{"running":{}}}],
              "containerStatuses":[{"name":"a","ready":true,"state":{"running":{}}}]}});
        let cells = row("Pod", &sidecar);
        assert_eq!(cells[1], "2/2");
        assert_eq!(cells[2], "Running");
    }

    #[test]
    fn pod_readiness_gates_and_nominated() {
        let pod = json!({"metadata":{"name":"p"},
            "spec":{"containers":[{"name":"a"}],"readinessGates":[{"conditionType":"g1"},{"conditionType":"g2"}]},
            "status":{"phase":"Pending","nominatedNodeName":"n2","conditions":[{"type":"g1","status":"True"},{"type":"g2","status":"False"}]}});
        let cells = row("Pod", &pod);
        assert_eq!(cells[4], "<unknown>");
        assert_eq!(cells[5], "<none>");
        assert_eq!(cells[7], "n2");
        assert_eq!(cells[8], "1/2");
    }

    #[test]
    fn service_rows() {
        let svc = json!({"metadata":{"name":"web","creationTimestamp": ago(90)},
            "spec":{"type":"NodePort","clusterIP":"10.96.0.10","clusterIPs":["10.96.0.10"],
              "ports":[{"port":80,"protocol":"TCP"},{"port":443,"nodePort":30443,"protocol":"TCP"}],
              "selector":{"tier":"fe","app":"web"}}});
        assert_eq!(
            row("Service", &svc),
            vec![
                json!("web"),
                json!("NodePort"),
                json!("10.96.0.10"),
                json!("<none>"),
                json!("80/TCP,443:30443/TCP"),
                json!("90s"),
                json!("app=web,tier=fe")
            ]
        );
        let headless =
            json!({"metadata":{"name":"h"},"spec":{"clusterIP":"None","clusterIPs":["None"]}});
        let cells = row("Service", &headless);
        assert_eq!(cells[1], "ClusterIP");
        assert_eq!(cells[2], "None");
        assert_eq!(cells[4], "<none>");
        assert_eq!(cells[6], "<none>");
        let lb =
            json!({"metadata":{"name":"lb"},"spec":{"type":"LoadBalancer","ports":[{"port":80}]}});
        assert_eq!(row("Service", &lb)[3], "<pending>");
        let lb_ready = json!({"metadata":{"name":"lb"},"spec":{"type":"LoadBalancer","externalIPs":["1.2.3.4"]},
            "status":{"loadBalancer":{"ingress":[{"ip":"5.6.7.8"},{"hostname":"lb.example"}]}}});
        assert_eq!(row("Service", &lb_ready)[3], "5.6.7.8,lb.example,1.2.3.4");
        let ext = json!({"metadata":{"name":"e"},"spec":{"type":"ExternalName","externalName":"db.example"}});
        assert_eq!(row("Service", &ext)[3], "db.example");
        let cip = json!({"metadata":{"name":"e"},"spec":{"externalIPs":["1.1.1.1","2.2.2.2"]}});
        assert_eq!(row("Service", &cip)[3], "1.1.1.1,2.2.2.2");
    }

    #[test]
    fn node_rows() {
        let node = json!({"metadata":{"name":"n1","creationTimestamp": ago(51 * 3600),
            "labels":{"node-role.kubernetes.io/control-plane":"","node-role.kubernetes.io/worker":"","kubernetes.io/role":"edge"}},
            "spec":{"unschedulable":true},
            "status":{"conditions":[{"type":"MemoryPressure","status":"False"},{"type":"Ready","status":"True"}],
              "addresses":[{"type":"Hostname","address":"n1"},{"type":"InternalIP","address":"192.168.1.10"}],
              "nodeInfo":{"kubeletVersion":"v1.32.0","osImage":"Debian GNU/Linux 12 (bookworm)","kernelVersion":"6.1.0","containerRuntimeVersion":"containerd://1.7.0"}}});
        assert_eq!(
            row("Node", &node),
            vec![
                json!("n1"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,edge,worker"),
                json!("2d3h"),
                json!("v1.32.0"),
                json!("192.168.1.10"),
                json!("<none>"),
                json!("Debian GNU/Linux 12 (bookworm)"),
                json!("6.1.0"),
                json!("containerd://1.7.0")
            ]
        );
        let bare = json!({"metadata":{"name":"n2"}});
        let cells = row("Node", &bare);
        assert_eq!(cells[1], "Unknown");
        assert_eq!(cells[2], "<none>");
        assert_eq!(cells[7], "<unknown>");
        let not_ready = json!({"metadata":{"name":"n3"},"status":{"conditions":[{"type":"Ready","status":"Unknown"}]}});
        assert_eq!(row("Node", &not_ready)[1], "NotReady");
    }

    #[test]
    fn deployment_and_replica_set_rows() {
        let spec = json!({"replicas":3,"selector":{"matchLabels":{"app":"web"},
            "matchExpressions":[{"key":"tier","operator":"In","values":["fe"]}]},
            "template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1"},{"name":"proxy","image":"envoy:1"}]}}});
        let d = json!({"metadata":{"name":"web","creationTimestamp": ago(600)},"spec":spec,
            "status":{"readyReplicas":2,"updatedReplicas":3,"availableReplicas":2,"replicas":3}});
        assert_eq!(
            row("Deployment", &d),
            vec![
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("10m"),
                json!("nginx,proxy"),
                json!("nginx:1,envoy:1"),
                json!("app=web,tier in (fe)")
            ]
        );
        assert_eq!(
            row("ReplicaSet", &d),
            vec![
                json!("web"),
                json!(3),
                json!(3),
                json!(2),
                json!("10m"),
                json!("nginx,proxy"),
                json!("nginx:1,envoy:1"),
                json!("app=web,tier in (fe)")
            ]
        );
        let fresh = json!({"metadata":{"name":"x"},"spec":{"selector":{"matchLabels":{"a":"b"}}}});
        assert_eq!(row("Deployment", &fresh)[1], "0/1");
    }

    #[test]
    fn endpoint_slice_and_endpoints_rows() {
        let slice = json!({"metadata":{"name":"web-abc"},"addressType":"IPv4",
            "ports":[{"port":80},{"name":"metrics"},{}],
            "endpoints":[{"addresses":["10.0.0.1","10.0.0.2"]},{"addresses":["10.0.0.3"]},{"addresses":["10.0.0.4"]},{"addresses":["10.0.0.5"]}]});
        let cells = row("EndpointSlice", &slice);
        assert_eq!(cells[1], "IPv4");
        assert_eq!(cells[2], "80,metrics,*");
        assert_eq!(cells[3], "10.0.0.1,10.0.0.2,10.0.0.3 + 2 more...");
        let empty = json!({"metadata":{"name":"e"},"addressType":"IPv4"});
        assert_eq!(row("EndpointSlice", &empty)[3], "<unset>");
        assert_eq!(row("EndpointSlice", &empty)[2], "<unset>");

        let ep = json!({"metadata":{"name":"web"},"subsets":[{"addresses":[{"ip":"10.0.0.1"},{"ip":"10.0.0.2"}],"ports":[{"port":80},{"port":443}]}]});
        assert_eq!(
            row("Endpoints", &ep)[1],
            "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more..."
        );
        assert_eq!(
            row("Endpoints", &json!({"metadata":{"name":"x"}}))[1],
            "<none>"
        );
        let v6 = json!({"metadata":{"name":"v6"},"subsets":[{"addresses":[{"ip":"fd00::1"}],"ports":[{"port":80}]}]});
        assert_eq!(row("Endpoints", &v6)[1], "[fd00::1]:80");
    }

    #[test]
    fn namespace_lease_configmap_default_rows() {
        let ns = json!({"metadata":{"name":"default","creationTimestamp": ago(5)},"status":{"phase":"Active"}});
        assert_eq!(
            row("Namespace", &ns),
            vec![json!("default"), json!("Active"), json!("5s")]
        );
        let lease = json!({"metadata":{"name":"node1"},"spec":{"holderIdentity":"node1"}});
        assert_eq!(row("Lease", &lease)[1], "node1");
        let cm =
            json!({"metadata":{"name":"c"},"data":{"a":"1","b":"2"},"binaryData":{"c":"AA=="}});
        assert_eq!(row("ConfigMap", &cm)[1], 3);
        let other = json!({"metadata":{"name":"s","creationTimestamp": ago(3 * 86400)}});
        assert_eq!(row("Secret", &other), vec![json!("s"), json!("3d")]);
        let cols = column_definitions("Secret");
        assert_eq!(cols.len(), 2);
    }

    #[test]
    fn event_rows() {
        let ev = json!({"metadata":{"name":"web.1"},"type":"Normal","reason":"Scheduled",
            "involvedObject":{"kind":"Pod","name":"web","fieldPath":"spec.containers{a}"},
            "message":"Successfully assigned default/web to node1\n","source":{"component":"default-scheduler"},
            "firstTimestamp": ago(120),"lastTimestamp": ago(60),"count":2});
        assert_eq!(
            row("Event", &ev),
            vec![
                json!("60s"),
                json!("Normal"),
                json!("Scheduled"),
                json!("pod/web"),
                json!("spec.containers{a}"),
                json!("default-scheduler"),
                json!("Successfully assigned default/web to node1"),
                json!("2m"),
                json!(2),
                json!("web.1")
            ]
        );
        let new_style = json!({"metadata":{"name":"e2"},"type":"Warning","reason":"Failed",
            "involvedObject":{"kind":"Node"},"eventTime": ago(30),"reportingComponent":"kubelet","reportingInstance":"node1"});
        let cells = row("Event", &new_style);
        assert_eq!(cells[0], "30s");
        assert_eq!(cells[3], "node");
        assert_eq!(cells[5], "kubelet, node1");
        assert_eq!(cells[8], 1);
        let series = json!({"metadata":{"name":"e3"},"eventTime": ago(300),"series":{"count":7,"lastObservedTime": ago(10)}});
        let cells = row("Event", &series);
        assert_eq!(cells[0], "10s");
        assert_eq!(cells[8], 7);
        let cols = column_definitions("Event");
        assert_eq!(
            cols.last().map(|c| c["format"].clone()),
            Some(json!("name"))
        );
    }
}
