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
//!
//! Each kind has one `Printer` holding its columns and its cells together, in its own file;
//! adding a kind is one new printer, listed in `PRINTERS`:
//!
//! | File | Printers |
//! |---|---|
//! | `pod.rs` | Pod |
//! | `service.rs` | Service |
//! | `node.rs` | Node |
//! | `workloads.rs` | Deployment, ReplicaSet |
//! | `endpoints.rs` | Endpoints, EndpointSlice |
//! | `event.rs` | Event |
//! | `simple.rs` | Namespace, Lease, ConfigMap, Secret, ServiceAccount, and the default (`Name`, `Age`) |
//! | `time.rs` | ages: [`human_duration`], [`translate_timestamp_since`] |

mod endpoints;
mod event;
mod node;
mod pod;
mod service;
mod simple;
mod time;
mod workloads;

use jiff::Timestamp;
use serde_json::{json, Map, Value};

pub use time::{human_duration, translate_timestamp_since};

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

/// A row's cells (one per column) and its `conditions` (only finished pods have them).
type Row = (Vec<Value>, Option<Value>);

/// One kind's printer: the `columnDefinitions` and, for one object, the cells in the same order.
struct Printer {
    /// The kind printed (empty for [`simple::DEFAULT`]).
    kind: &'static str,
    /// The columns, in order.
    columns: &'static [Column],
    /// The row of one object.
    cells: fn(&Value, Timestamp) -> Row,
}

/// The printers of the kinds upstream prints with columns of their own.
static PRINTERS: [Printer; 13] = [
    pod::POD,
    service::SERVICE,
    node::NODE,
    workloads::DEPLOYMENT,
    workloads::REPLICA_SET,
    endpoints::ENDPOINTS,
    endpoints::ENDPOINT_SLICE,
    simple::NAMESPACE,
    event::EVENT,
    simple::LEASE,
    simple::CONFIG_MAP,
    simple::SECRET,
    simple::SERVICE_ACCOUNT,
];

/// The printer of `kind`: its own, else [`simple::DEFAULT`].
fn printer(kind: &str) -> &'static Printer {
    PRINTERS
        .iter()
        .find(|p| p.kind == kind)
        .unwrap_or(&simple::DEFAULT)
}

/// The `columnDefinitions` for `kind`.
pub fn column_definitions(kind: &str) -> Vec<Value> {
    printer(kind)
        .columns
        .iter()
        .map(|&(name, kind, format, priority, description)| {
            json!({"name": name, "type": kind, "format": format, "description": description, "priority": priority})
        })
        .collect()
}

/// One row: `{"cells": [...], "object": ...}` (plus `conditions` for completed pods).
pub fn table_row(kind: &str, obj: &Value, now: Timestamp, include: IncludeObject) -> Value {
    let (cells, conditions) = (printer(kind).cells)(obj, now);
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

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::SignedDuration;

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
        let other = json!({"metadata":{"name":"r","creationTimestamp": ago(3 * 86400)}});
        assert_eq!(
            row("ReplicationController", &other),
            vec![json!("r"), json!("3d")]
        );
        let cols = column_definitions("ReplicationController");
        assert_eq!(cols.len(), 2);
        let secret = json!({"metadata":{"name":"s","creationTimestamp": ago(3 * 86400)},
            "type":"Opaque","data":{"a":"YQ==","b":"Yg=="}});
        assert_eq!(
            row("Secret", &secret),
            vec![json!("s"), json!("Opaque"), json!(2), json!("3d")]
        );
        let sa = json!({"metadata":{"name":"default"},"secrets":[{"name":"t"}]});
        assert_eq!(row("ServiceAccount", &sa)[1], 1);
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
