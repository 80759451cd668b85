//! Property tests of the protobuf envelope decoder (`application/vnd.kubernetes.protobuf`
//! request bodies, as any client may send them) and of the encoder the answers and watch frames
//! go through: arbitrary bytes, bytes after the magic, well-formed envelopes around arbitrary
//! objects, and valid bodies with bytes flipped are answered with a value or an error, never a
//! panic; a ConfigMap encodes and decodes back to itself. `PROPTEST_CASES` sets the cases per
//! property (default 256).

use controlplane_lite::protobuf::{decode, encode, watch, MAGIC};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// A protobuf length-delimited field (wire type 2).
fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![(number << 3) | 2];
    let mut len = bytes.len();
    loop {
        let b = u8::try_from(len & 0x7f).unwrap();
        len >>= 7;
        if len == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(bytes);
    out
}

/// `k8s\0` + `runtime.Unknown{typeMeta{apiVersion, kind}, raw, contentEncoding, contentType}`.
fn envelope(api_version: &str, kind: &str, raw: &[u8], encoding: &str, ctype: &str) -> Vec<u8> {
    let type_meta = [field(1, api_version.as_bytes()), field(2, kind.as_bytes())].concat();
    let mut out = MAGIC.to_vec();
    out.extend(field(1, &type_meta));
    out.extend(field(2, raw));
    if !encoding.is_empty() {
        out.extend(field(3, encoding.as_bytes()));
    }
    if !ctype.is_empty() {
        out.extend(field(4, ctype.as_bytes()));
    }
    out
}

/// Served kinds (and a few that are not).
fn type_meta() -> impl Strategy<Value = (String, String)> {
    prop::sample::select(vec![
        ("v1", "Pod"),
        ("v1", "ConfigMap"),
        ("v1", "Service"),
        ("v1", "Node"),
        ("v1", "Secret"),
        ("v1", "Event"),
        ("v1", "Namespace"),
        ("apps/v1", "Deployment"),
        ("apps/v1", "ReplicaSet"),
        ("coordination.k8s.io/v1", "Lease"),
        ("discovery.k8s.io/v1", "EndpointSlice"),
        ("meta.k8s.io/v1", "Status"),
        ("v1", "Nope"),
        ("", ""),
    ])
    .prop_map(|(a, k)| (a.to_owned(), k.to_owned()))
}

/// JSON values a few levels deep, keys from the Kubernetes vocabulary.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(Value::from),
        ".{0,10}".prop_map(Value::from),
        Just(Value::from("2026-12-05T00:00:00Z")),
        Just(Value::from("100m")),
    ];
    let key = prop::sample::select(vec![
        "metadata",
        "name",
        "namespace",
        "labels",
        "annotations",
        "spec",
        "containers",
        "image",
        "ports",
        "containerPort",
        "status",
        "conditions",
        "data",
        "binaryData",
        "replicas",
        "selector",
        "matchLabels",
        "template",
        "creationTimestamp",
        "resources",
        "limits",
        "cpu",
        "holderIdentity",
        "leaseDurationSeconds",
        "endpoints",
        "addresses",
        "x",
    ]);
    leaf.prop_recursive(4, 40, 5, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..5).prop_map(|kv| {
                Value::Object(
                    kv.into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&body);
        let mut after_magic = MAGIC.to_vec();
        after_magic.extend(&body);
        let _ = decode(&after_magic);
    }

    #[test]
    fn envelopes_around_arbitrary_objects_never_panic(
        (api_version, kind) in type_meta(),
        raw in prop::collection::vec(any::<u8>(), 0..256),
        encoding in prop::sample::select(vec!["", "gzip"]),
        ctype in prop::sample::select(vec!["", "application/vnd.kubernetes.protobuf", "text/x"]),
    ) {
        let _ = decode(&envelope(&api_version, &kind, &raw, encoding, ctype));
    }

    #[test]
    fn encoding_arbitrary_objects_never_panics(
        (api_version, kind) in type_meta(),
        body in value(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
    ) {
        let mut obj = json!({"apiVersion": api_version, "kind": kind});
        if let Value::Object(m) = body {
            for (k, v) in m {
                obj[k] = v;
            }
        }
        if let Ok(bytes) = encode(&obj) {
            prop_assert!(bytes.starts_with(MAGIC));
            let _ = decode(&bytes);
            // The same body damaged in transit (past the magic).
            let mut damaged = bytes.clone();
            for (i, b) in flips {
                let at = MAGIC.len() + i.index(damaged.len() - MAGIC.len()).min(damaged.len());
                if let Some(x) = damaged.get_mut(at) {
                    *x ^= b;
                }
            }
            let _ = decode(&damaged);
        }
        let line = serde_json::to_vec(&json!({"type": "ADDED", "object": obj})).unwrap();
        let _ = watch::frame(&line);
    }

    #[test]
    fn watch_frames_of_arbitrary_lines_never_panic(line in prop::collection::vec(any::<u8>(), 0..128)) {
        let _ = watch::frame(&line);
    }

    #[test]
    fn a_config_map_round_trips(
        name in "[a-z][a-z0-9-]{0,10}",
        namespace in "[a-z]{1,8}",
        data in prop::collection::btree_map("[a-zA-Z0-9._-]{1,8}", ".{0,16}", 0..5),
        labels in prop::collection::btree_map("[a-z]{1,6}", "[a-z0-9]{0,6}", 0..3),
    ) {
        let mut cm = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
        });
        if !labels.is_empty() {
            cm["metadata"]["labels"] = json!(labels);
        }
        if !data.is_empty() {
            cm["data"] = json!(data);
        }
        let bytes = encode(&cm).expect("a ConfigMap encodes");
        prop_assert_eq!(decode(&bytes).expect("and decodes"), cm);
    }
}
