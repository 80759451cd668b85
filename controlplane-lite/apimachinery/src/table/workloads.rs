//! The Deployment and ReplicaSet printers (upstream `printDeployment`, `printReplicaSet`):
//! replica counts, and the wide template containers, images and selector.

use jiff::Timestamp;
use serde_json::Value;

use super::{age_of, i, list, name_of, s, Printer, AGE, NAME};
use crate::selector::label_selector_from_json;

/// `kubectl get deployments`.
#[rustfmt::skip] // one line per column, as upstream lists them
pub(super) const DEPLOYMENT: Printer = Printer {
    kind: "Deployment",
    columns: &[
        NAME,
        ("Ready", "string", "", 0, "Number of the pod with ready state"),
        ("Up-to-date", "string", "", 0, "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
        ("Available", "string", "", 0, "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
        AGE,
        ("Containers", "string", "", 1, "Names of each container in the template."),
        ("Images", "string", "", 1, "Images referenced by each container in the template."),
        ("Selector", "string", "", 1, "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment."),
    ],
    cells: |d, now| (deployment_cells(d, now), None),
};

/// `kubectl get replicasets`.
#[rustfmt::skip] // one line per column, as upstream lists them
pub(super) const REPLICA_SET: Printer = Printer {
    kind: "ReplicaSet",
    columns: &[
        NAME,
        ("Desired", "integer", "", 0, "Replicas is the number of desired replicas."),
        ("Current", "integer", "", 0, "Replicas is the most recently observed number of replicas."),
        ("Ready", "integer", "", 0, "readyReplicas is the number of pods targeted by this ReplicaSet with a Ready Condition."),
        AGE,
        ("Containers", "string", "", 1, "Names of each container in the template."),
        ("Images", "string", "", 1, "Images referenced by each container in the template."),
        ("Selector", "string", "", 1, "Selector is a label query over pods that should match the replica count."),
    ],
    cells: |rs, now| (replica_set_cells(rs, now), None),
};

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
