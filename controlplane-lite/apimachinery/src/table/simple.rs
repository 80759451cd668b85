//! Printers with one or two columns besides `Name` and `Age`: Namespace (status), Lease
//! (holder), ConfigMap (data count), Secret (type, data count), ServiceAccount (secrets count),
//! and the default for every other kind (`Name`, `Age`).

use serde_json::{Map, Value};

use super::{age_of, name_of, s, Printer, AGE, NAME};

/// `kubectl get namespaces`.
#[rustfmt::skip] // one line per column, as upstream lists them
pub(super) const NAMESPACE: Printer = Printer {
    kind: "Namespace",
    columns: &[
        NAME,
        ("Status", "string", "", 0, "The status of the namespace"),
        AGE,
    ],
    cells: |obj, now| {
        (
            vec![
                name_of(obj),
                Value::from(s(obj, "/status/phase")),
                age_of(obj, now),
            ],
            None,
        )
    },
};

/// `kubectl get leases`.
#[rustfmt::skip] // one line per column, as upstream lists them
pub(super) const LEASE: Printer = Printer {
    kind: "Lease",
    columns: &[
        NAME,
        ("Holder", "string", "", 0, "holderIdentity contains the identity of the holder of a current lease."),
        AGE,
    ],
    cells: |obj, now| {
        (
            vec![
                name_of(obj),
                Value::from(s(obj, "/spec/holderIdentity")),
                age_of(obj, now),
            ],
            None,
        )
    },
};

/// `kubectl get configmaps`.
#[rustfmt::skip] // one line per column, as upstream lists them
pub(super) const CONFIG_MAP: Printer = Printer {
    kind: "ConfigMap",
    columns: &[
        NAME,
        ("Data", "string", "", 0, "Data contains the configuration data."),
        AGE,
    ],
    cells: |obj, now| {
        let count = |p: &str| {
            obj.pointer(p)
                .and_then(Value::as_object)
                .map_or(0, Map::len)
        };
        let n = count("/data") + count("/binaryData");
        (vec![name_of(obj), Value::from(n), age_of(obj, now)], None)
    },
};

/// `kubectl get secrets`.
#[rustfmt::skip] // one line per column, as upstream lists them
pub(super) const SECRET: Printer = Printer {
    kind: "Secret",
    columns: &[
        NAME,
        ("Type", "string", "", 0, "The type of the secret"),
        ("Data", "string", "", 0, "The number of entries in the secret"),
        AGE,
    ],
    cells: |obj, now| {
        let n = obj.pointer("/data").and_then(Value::as_object).map_or(0, Map::len);
        (
            vec![name_of(obj), Value::from(s(obj, "/type")), Value::from(n), age_of(obj, now)],
            None,
        )
    },
};

/// `kubectl get serviceaccounts`.
#[rustfmt::skip] // one line per column, as upstream lists them
pub(super) const SERVICE_ACCOUNT: Printer = Printer {
    kind: "ServiceAccount",
    columns: &[
        NAME,
        ("Secrets", "string", "", 0, "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use."),
        AGE,
    ],
    cells: |obj, now| {
        let n = obj.pointer("/secrets").and_then(Value::as_array).map_or(0, Vec::len);
        (vec![name_of(obj), Value::from(n), age_of(obj, now)], None)
    },
};

/// Every kind without a printer of its own: `Name` and `Age`.
#[rustfmt::skip] // one line per column, as upstream lists them
pub(super) const DEFAULT: Printer = Printer {
    kind: "",
    columns: &[NAME, AGE],
    cells: |obj, now| (vec![name_of(obj), age_of(obj, now)], None),
};
