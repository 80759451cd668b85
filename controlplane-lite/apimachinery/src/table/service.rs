//! The Service printer (upstream `printService`): type, cluster IP, external IPs (load-balancer
//! ingress, `<pending>`), ports with node ports, and the wide selector.

use jiff::Timestamp;
use serde_json::Value;

use super::{age_of, i, list, name_of, or_none, s, Printer, AGE, NAME};

/// `kubectl get services`.
#[rustfmt::skip] // one line per column, as upstream lists them
pub(super) const SERVICE: Printer = Printer {
    kind: "Service",
    columns: &[
        NAME,
        ("Type", "string", "", 0, "type determines how the Service is exposed."),
        ("Cluster-IP", "string", "", 0, "clusterIP is the IP address of the service and is usually assigned randomly."),
        ("External-IP", "string", "", 0, "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service."),
        ("Port(s)", "string", "", 0, "The list of ports that are exposed by this service."),
        AGE,
        ("Selector", "string", "", 1, "Route service traffic to pods with label keys and values matching this selector."),
    ],
    cells: |svc, now| (service_cells(svc, now), None),
};

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
