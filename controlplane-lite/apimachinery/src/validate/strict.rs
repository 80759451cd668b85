//! Strict decoding (`fieldValidation=Strict|Warn`): [`strict_unknown_fields`] decodes an object
//! into its k8s-openapi type, re-encodes it, and reports every input path missing from the
//! round trip (`spec.foo`, `spec.containers[0].imagee`); a decode failure (wrong JSON types) is a
//! [`DecodeError`], a 400 whatever the validation mode.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// The object could not be decoded into its type (wrong JSON types, wrong `apiVersion`/`kind`).
/// The apiserver answers 400 BadRequest with this message in every validation mode.
#[derive(Debug, thiserror::Error)]
#[error("{kind} in version {version:?} cannot be handled as a {kind}: {source}")]
pub struct DecodeError {
    /// The kind.
    pub kind: String,
    /// The version part of `apiVersion`.
    pub version: String,
    /// The serde error.
    #[source]
    pub source: serde_json::Error,
}

fn round_trip<T: DeserializeOwned + Serialize>(obj: &Value) -> Result<Value, serde_json::Error> {
    let typed: T = serde_json::from_value(obj.clone())?;
    serde_json::to_value(typed)
}

/// Whether [`strict_unknown_fields`] knows a typed schema for `(kind, api_version)`.
pub fn has_typed_schema(kind: &str, api_version: &str) -> bool {
    typed_round_trip(kind, api_version, &Value::Null).is_some()
}

fn typed_round_trip(
    kind: &str,
    api_version: &str,
    obj: &Value,
) -> Option<Result<Value, serde_json::Error>> {
    use k8s_openapi::api::{apps, autoscaling, coordination, core, discovery};
    let f: fn(&Value) -> Result<Value, serde_json::Error> = match (api_version, kind) {
        ("v1", "Namespace") => round_trip::<core::v1::Namespace>,
        ("v1", "Node") => round_trip::<core::v1::Node>,
        ("v1", "Pod") => round_trip::<core::v1::Pod>,
        ("v1", "Service") => round_trip::<core::v1::Service>,
        ("v1", "Endpoints") => round_trip::<core::v1::Endpoints>,
        ("v1", "Event") => round_trip::<core::v1::Event>,
        ("v1", "ConfigMap") => round_trip::<core::v1::ConfigMap>,
        ("v1", "Secret") => round_trip::<core::v1::Secret>,
        ("v1", "ServiceAccount") => round_trip::<core::v1::ServiceAccount>,
        ("v1", "Binding") => round_trip::<core::v1::Binding>,
        ("discovery.k8s.io/v1", "EndpointSlice") => round_trip::<discovery::v1::EndpointSlice>,
        ("apps/v1", "Deployment") => round_trip::<apps::v1::Deployment>,
        ("apps/v1", "ReplicaSet") => round_trip::<apps::v1::ReplicaSet>,
        ("coordination.k8s.io/v1", "Lease") => round_trip::<coordination::v1::Lease>,
        ("autoscaling/v1", "Scale") => round_trip::<autoscaling::v1::Scale>,
        _ => return None,
    };
    Some(if obj.is_null() {
        Ok(Value::Null)
    } else {
        f(obj)
    })
}

/// Paths present in `obj` but dropped by a round trip through the k8s-openapi type for
/// `(kind, api_version)`: what `fieldValidation=Strict` reports as `unknown field "<path>"`
/// (list positions as `[i]`, e.g. `spec.containers[0].imagee`). Fields whose value is `null`
/// are not reported (the round trip cannot tell a dropped `null` from a known one). Kinds without
/// a typed schema yield no unknown fields.
pub fn strict_unknown_fields(
    kind: &str,
    api_version: &str,
    obj: &Value,
) -> Result<Vec<String>, DecodeError> {
    let Some(result) = typed_round_trip(kind, api_version, obj) else {
        return Ok(Vec::new());
    };
    let round = result.map_err(|source| DecodeError {
        kind: kind.to_owned(),
        version: api_version
            .rsplit('/')
            .next()
            .unwrap_or(api_version)
            .to_owned(),
        source,
    })?;
    let mut unknown = Vec::new();
    diff_unknown(obj, &round, String::new(), &mut unknown);
    Ok(unknown)
}

fn diff_unknown(input: &Value, round: &Value, path: String, out: &mut Vec<String>) {
    match (input, round) {
        (Value::Object(input), Value::Object(round)) => {
            for (key, value) in input {
                if value.is_null() {
                    continue;
                }
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match round.get(key) {
                    None => out.push(child),
                    Some(r) => diff_unknown(value, r, child, out),
                }
            }
        }
        (Value::Array(input), Value::Array(round)) => {
            for (i, (value, r)) in input.iter().zip(round).enumerate() {
                diff_unknown(value, r, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The message of a Strict failure: `strict decoding error: unknown field "a", unknown field "b"`.
pub fn strict_error_message(unknown: &[String]) -> String {
    let parts: Vec<String> = unknown
        .iter()
        .map(|p| format!("unknown field {p:?}"))
        .collect();
    format!("strict decoding error: {}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strict_unknown_fields_reports_paths() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"a": "b"}, "bogus": 1, "creationTimestamp": null},
            "spec": {"foo": true, "containers": [
                {"name": "c", "image": "i", "resources": {"limits": {"cpu": 1, "memory": "1Gi"}}},
                {"name": "d", "imagee": "x", "ports": [{"containerPort": 80, "hostPortt": 1}]}
            ]},
            "status": {}
        });
        let unknown = strict_unknown_fields("Pod", "v1", &pod).expect("decodes");
        assert_eq!(
            unknown,
            vec![
                "metadata.bogus",
                "spec.containers[1].imagee",
                "spec.containers[1].ports[0].hostPortt",
                "spec.foo"
            ]
        );
        assert_eq!(
            strict_error_message(&unknown[..1]),
            "strict decoding error: unknown field \"metadata.bogus\""
        );
    }

    #[test]
    fn strict_unknown_fields_clean_objects_for_every_kind() {
        let cases = [
            (
                "v1",
                "Namespace",
                json!({"metadata":{"name":"n"},"spec":{"finalizers":["kubernetes"]},"status":{"phase":"Active"}}),
            ),
            (
                "v1",
                "Node",
                json!({"metadata":{"name":"n"},"spec":{"podCIDR":"10.0.0.0/24","unschedulable":true},
                "status":{"nodeInfo":{"kubeletVersion":"v1.32.0","machineID":"","systemUUID":"","bootID":"","kernelVersion":"","osImage":"","containerRuntimeVersion":"","kubeProxyVersion":"","operatingSystem":"linux","architecture":"amd64"}}}),
            ),
            (
                "v1",
                "Service",
                json!({"metadata":{"name":"s"},"spec":{"ports":[{"port":80,"targetPort":"http"}],"selector":{"a":"b"}}}),
            ),
            (
                "v1",
                "Endpoints",
                json!({"metadata":{"name":"s"},"subsets":[{"addresses":[{"ip":"10.0.0.1"}],"ports":[{"port":80}]}]}),
            ),
            (
                "discovery.k8s.io/v1",
                "EndpointSlice",
                json!({"metadata":{"name":"s"},"addressType":"IPv4","endpoints":[{"addresses":["10.0.0.1"],"conditions":{"ready":true}}],"ports":[{"port":80}]}),
            ),
            (
                "apps/v1",
                "Deployment",
                json!({"metadata":{"name":"d"},"spec":{"replicas":1,"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"i"}]}}}}),
            ),
            (
                "apps/v1",
                "ReplicaSet",
                json!({"metadata":{"name":"r"},"spec":{"selector":{"matchLabels":{"a":"b"}}}}),
            ),
            (
                "coordination.k8s.io/v1",
                "Lease",
                json!({"metadata":{"name":"l"},"spec":{"holderIdentity":"x","leaseDurationSeconds":15,"renewTime":"2025-01-01T00:00:00.000000Z"}}),
            ),
            (
                "v1",
                "Event",
                json!({"metadata":{"name":"e"},"involvedObject":{"kind":"Pod","name":"p"},"reason":"R","message":"m","type":"Normal","count":1}),
            ),
            (
                "v1",
                "ConfigMap",
                json!({"metadata":{"name":"c"},"data":{"a":"b"},"binaryData":{"x":"AAE="}}),
            ),
            (
                "v1",
                "Binding",
                json!({"metadata":{"name":"p"},"target":{"kind":"Node","name":"n1"}}),
            ),
            (
                "autoscaling/v1",
                "Scale",
                json!({"metadata":{"name":"d"},"spec":{"replicas":3},"status":{"replicas":2,"selector":"a=b"}}),
            ),
        ];
        for (api_version, kind, mut obj) in cases {
            obj["apiVersion"] = json!(api_version);
            obj["kind"] = json!(kind);
            assert!(has_typed_schema(kind, api_version), "{kind}");
            let unknown = strict_unknown_fields(kind, api_version, &obj).expect(kind);
            assert!(unknown.is_empty(), "{kind}: {unknown:?}");
            obj["spec2"] = json!(1);
            assert_eq!(
                strict_unknown_fields(kind, api_version, &obj).expect(kind),
                vec!["spec2"]
            );
        }
        assert!(!has_typed_schema("Widget", "example.com/v1"));
        assert!(
            strict_unknown_fields("Widget", "example.com/v1", &json!({"x":1}))
                .expect("ok")
                .is_empty()
        );
    }

    #[test]
    fn strict_tolerates_nulls_and_missing_required_fields() {
        let pod = json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":null},
            "spec":{"containers":[{"image":"i","resources":null,"env":null}],"volumes":null,"nodeSelector":null}});
        assert_eq!(
            strict_unknown_fields("Pod", "v1", &pod).expect("decodes"),
            Vec::<String>::new()
        );
        let no_kind = json!({"metadata":{"name":"p"},"spec":{"containers":[]}});
        assert!(strict_unknown_fields("Pod", "v1", &no_kind)
            .expect("decodes")
            .is_empty());
    }

    #[test]
    fn strict_decode_errors() {
        let bad = json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"replicas":"three"}});
        let err = strict_unknown_fields("Deployment", "apps/v1", &bad).expect_err("type error");
        assert!(
            err.to_string()
                .starts_with("Deployment in version \"v1\" cannot be handled as a Deployment: "),
            "{err}"
        );
        let wrong_kind = json!({"apiVersion":"v1","kind":"Service","metadata":{"name":"x"}});
        assert!(strict_unknown_fields("Pod", "v1", &wrong_kind).is_err());
    }
}
