//! The Node printer (upstream `printNode`): status (Ready / NotReady / SchedulingDisabled),
//! roles from `node-role.kubernetes.io/*` labels, kubelet version, and the wide addresses and
//! node info.

use jiff::Timestamp;
use serde_json::Value;

use super::{age_of, list, name_of, or_none, s, Printer, AGE, NAME};

/// `kubectl get nodes`.
#[rustfmt::skip] // one line per column, as upstream lists them
pub(super) const NODE: Printer = Printer {
    kind: "Node",
    columns: &[
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
    cells: |node, now| (node_cells(node, now), None),
};

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
