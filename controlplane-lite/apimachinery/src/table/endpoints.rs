//! The Endpoints and EndpointSlice printers (upstream `printEndpoints`, `printEndpointSlice`):
//! at most three `ip:port` pairs, ports or addresses, then ` + N more...`.

use jiff::Timestamp;
use serde_json::Value;

use super::{age_of, i, list, name_of, s, Printer, AGE, NAME};

/// `kubectl get endpoints`.
#[rustfmt::skip] // one line per column, as upstream lists them
pub(super) const ENDPOINTS: Printer = Printer {
    kind: "Endpoints",
    columns: &[
        NAME,
        ("Endpoints", "string", "", 0, "The set of all endpoints is the union of all subsets."),
        AGE,
    ],
    cells: |obj, now| {
        (
            vec![
                name_of(obj),
                Value::from(format_endpoints(obj)),
                age_of(obj, now),
            ],
            None,
        )
    },
};

/// `kubectl get endpointslices`.
#[rustfmt::skip] // one line per column, as upstream lists them
pub(super) const ENDPOINT_SLICE: Printer = Printer {
    kind: "EndpointSlice",
    columns: &[
        NAME,
        ("AddressType", "string", "", 0, "addressType specifies the type of address carried by this EndpointSlice."),
        ("Ports", "string", "", 0, "ports specifies the list of network ports exposed by each endpoint in this slice."),
        ("Endpoints", "string", "", 0, "endpoints is a list of unique endpoints in this slice."),
        AGE,
    ],
    cells: |slice, now| (endpoint_slice_cells(slice, now), None),
};

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
