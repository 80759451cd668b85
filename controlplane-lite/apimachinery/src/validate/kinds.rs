//! Object validation: [`validate_object`] returns the [`FieldError`]s of a create/update (the
//! `details.causes` of a 422 Invalid): object metadata for every kind, plus per-kind rules from a
//! table ([`kind_validators`]: Pod, Service, Deployment, ReplicaSet, EndpointSlice) that is easy
//! to extend.

use std::collections::BTreeSet;

use serde_json::Value;

use super::field::{go_string_map, BadValue, FieldError};
use super::namespace::is_namespaced;
use crate::names::{
    is_dns1035_label, is_dns1123_label, is_dns1123_subdomain, is_qualified_name,
    is_valid_label_value,
};

/// A per-kind validation rule: appends errors for `obj`.
pub type Validator = fn(obj: &Value, errors: &mut Vec<FieldError>);

/// The per-kind rules run by [`validate_object`] after the metadata checks. Extend here.
pub fn kind_validators(kind: &str) -> &'static [Validator] {
    match kind {
        "Pod" => &[validate_pod],
        "Service" => &[validate_service],
        "Deployment" => &[validate_deployment],
        "ReplicaSet" => &[validate_replica_set],
        "EndpointSlice" => &[validate_endpoint_slice],
        "ConfigMap" => &[super::config::validate_config_map],
        "Secret" => &[super::config::validate_secret],
        _ => &[],
    }
}

/// Which name format `kind` requires.
fn name_validator(kind: &str) -> fn(&str) -> Vec<String> {
    match kind {
        "Namespace" => is_dns1123_label,
        "Service" => is_dns1035_label,
        _ => is_dns1123_subdomain,
    }
}

/// Validation errors of `obj` (a complete object of `kind`, after namespace and generateName
/// resolution). Empty when valid; otherwise answer 422 with `status::invalid`.
pub fn validate_object(kind: &str, obj: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    validate_object_meta(kind, obj, &mut errors);
    for validator in kind_validators(kind) {
        validator(obj, &mut errors);
    }
    errors
}

fn str_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn validate_object_meta(kind: &str, obj: &Value, errors: &mut Vec<FieldError>) {
    let name = str_at(obj, "/metadata/name");
    let generate_name = str_at(obj, "/metadata/generateName");
    let check = name_validator(kind);
    if !generate_name.is_empty() {
        // Upstream masks a trailing '-' of a prefix before checking it.
        let masked = match generate_name.strip_suffix('-') {
            Some(stem) => format!("{stem}a"),
            None => generate_name.to_owned(),
        };
        for msg in check(&masked) {
            errors.push(FieldError::invalid(
                "metadata.generateName",
                generate_name,
                &msg,
            ));
        }
    }
    if name.is_empty() {
        if generate_name.is_empty() {
            errors.push(FieldError::required(
                "metadata.name",
                "name or generateName is required",
            ));
        }
    } else {
        for msg in check(name) {
            errors.push(FieldError::invalid("metadata.name", name, &msg));
        }
    }

    let namespace = str_at(obj, "/metadata/namespace");
    if is_namespaced(kind) {
        if namespace.is_empty() {
            errors.push(FieldError::required("metadata.namespace", ""));
        } else {
            for msg in is_dns1123_label(namespace) {
                errors.push(FieldError::invalid("metadata.namespace", namespace, &msg));
            }
        }
    } else if !namespace.is_empty() {
        errors.push(FieldError::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }

    if let Some(Value::Object(labels)) = obj.pointer("/metadata/labels") {
        for (key, value) in labels {
            for msg in is_qualified_name(key) {
                errors.push(FieldError::invalid("metadata.labels", key.as_str(), &msg));
            }
            let value = value.as_str().unwrap_or_default();
            for msg in is_valid_label_value(value) {
                errors.push(FieldError::invalid("metadata.labels", value, &msg));
            }
        }
    }
    if let Some(Value::Object(annotations)) = obj.pointer("/metadata/annotations") {
        for key in annotations.keys() {
            for msg in is_qualified_name(&key.to_ascii_lowercase()) {
                errors.push(FieldError::invalid(
                    "metadata.annotations",
                    key.as_str(),
                    &msg,
                ));
            }
        }
    }
}

const PORT_RANGE_MSG: &str = "must be between 1 and 65535, inclusive";
const PROTOCOLS: [&str; 3] = ["SCTP", "TCP", "UDP"];

fn validate_containers(
    list: Option<&Value>,
    path: &str,
    required: bool,
    seen: &mut BTreeSet<String>,
    errors: &mut Vec<FieldError>,
) {
    use k8s_openapi::api::core::v1::Container;
    let containers: Vec<Container> = match list {
        None | Some(Value::Null) => Vec::new(),
        // Decoding problems are reported by `strict_unknown_fields` / the decode step.
        Some(v) => serde_json::from_value(v.clone()).unwrap_or_default(),
    };
    if containers.is_empty() {
        if required {
            errors.push(FieldError::required(path, ""));
        }
        return;
    }
    for (i, container) in containers.iter().enumerate() {
        let at = format!("{path}[{i}]");
        if container.name.is_empty() {
            errors.push(FieldError::required(format!("{at}.name"), ""));
        } else {
            for msg in is_dns1123_label(&container.name) {
                errors.push(FieldError::invalid(
                    format!("{at}.name"),
                    container.name.as_str(),
                    &msg,
                ));
            }
            if !seen.insert(container.name.clone()) {
                errors.push(FieldError::duplicate(
                    format!("{at}.name"),
                    container.name.as_str(),
                ));
            }
        }
        if container.image.as_deref().unwrap_or("").trim().is_empty() {
            errors.push(FieldError::required(format!("{at}.image"), ""));
        }
        for (j, port) in container.ports.iter().flatten().enumerate() {
            if !(1..=65535).contains(&port.container_port) {
                errors.push(FieldError::invalid(
                    format!("{at}.ports[{j}].containerPort"),
                    port.container_port,
                    PORT_RANGE_MSG,
                ));
            }
            if let Some(protocol) = &port.protocol {
                if !PROTOCOLS.contains(&protocol.as_str()) {
                    errors.push(FieldError::not_supported(
                        format!("{at}.ports[{j}].protocol"),
                        protocol.as_str(),
                        &PROTOCOLS,
                    ));
                }
            }
        }
    }
}

/// Pod-spec rules shared by Pods and pod templates; `path` is where the spec lives.
fn validate_pod_spec(spec: Option<&Value>, path: &str, errors: &mut Vec<FieldError>) {
    let mut seen = BTreeSet::new();
    let spec = spec.filter(|s| s.is_object());
    validate_containers(
        spec.and_then(|s| s.get("containers")),
        &format!("{path}.containers"),
        true,
        &mut seen,
        errors,
    );
    validate_containers(
        spec.and_then(|s| s.get("initContainers")),
        &format!("{path}.initContainers"),
        false,
        &mut seen,
        errors,
    );
    if let Some(policy) = spec
        .and_then(|s| s.get("restartPolicy"))
        .and_then(Value::as_str)
    {
        const POLICIES: [&str; 3] = ["Always", "OnFailure", "Never"];
        if !POLICIES.contains(&policy) {
            errors.push(FieldError::not_supported(
                format!("{path}.restartPolicy"),
                policy,
                &POLICIES,
            ));
        }
    }
}

fn validate_pod(obj: &Value, errors: &mut Vec<FieldError>) {
    validate_pod_spec(obj.get("spec"), "spec", errors);
}

fn validate_service(obj: &Value, errors: &mut Vec<FieldError>) {
    use k8s_openapi::api::core::v1::ServicePort;
    let spec = obj.get("spec");
    let service_type = spec
        .and_then(|s| s.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    const TYPES: [&str; 4] = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    if !TYPES.contains(&service_type) {
        errors.push(FieldError::not_supported("spec.type", service_type, &TYPES));
    }
    let headless = spec
        .and_then(|s| s.get("clusterIP"))
        .and_then(Value::as_str)
        == Some("None");
    let ports: Vec<ServicePort> = spec
        .and_then(|s| s.get("ports"))
        .filter(|p| !p.is_null())
        .and_then(|p| serde_json::from_value(p.clone()).ok())
        .unwrap_or_default();
    if ports.is_empty() && !headless && service_type != "ExternalName" {
        errors.push(FieldError::required("spec.ports", ""));
    }
    let mut names = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        let name = port.name.as_deref().unwrap_or("");
        if ports.len() > 1 {
            if name.is_empty() {
                errors.push(FieldError::required(format!("{at}.name"), ""));
            } else if !names.insert(name.to_owned()) {
                errors.push(FieldError::duplicate(format!("{at}.name"), name));
            }
        }
        if !name.is_empty() {
            for msg in is_dns1123_label(name) {
                errors.push(FieldError::invalid(format!("{at}.name"), name, &msg));
            }
        }
        if !(1..=65535).contains(&port.port) {
            errors.push(FieldError::invalid(
                format!("{at}.port"),
                port.port,
                PORT_RANGE_MSG,
            ));
        }
        if let Some(protocol) = &port.protocol {
            if !PROTOCOLS.contains(&protocol.as_str()) {
                errors.push(FieldError::not_supported(
                    format!("{at}.protocol"),
                    protocol.as_str(),
                    &PROTOCOLS,
                ));
            }
        }
        if let Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(target)) =
            &port.target_port
        {
            if !(1..=65535).contains(target) {
                errors.push(FieldError::invalid(
                    format!("{at}.targetPort"),
                    *target,
                    PORT_RANGE_MSG,
                ));
            }
        }
    }
}

/// Shared Deployment / ReplicaSet rules (upstream `ValidateDeploymentSpec` /
/// `ValidateReplicaSetSpec`; both say "deployment" in the empty-selector message).
fn validate_replicated(obj: &Value, errors: &mut Vec<FieldError>) {
    let spec = obj.get("spec");
    if let Some(replicas) = spec.and_then(|s| s.get("replicas")).and_then(Value::as_i64) {
        if replicas < 0 {
            errors.push(FieldError::invalid(
                "spec.replicas",
                replicas,
                "must be greater than or equal to 0",
            ));
        }
    }
    let selector_json = spec
        .and_then(|s| s.get("selector"))
        .filter(|s| !s.is_null());
    let template = spec
        .and_then(|s| s.get("template"))
        .filter(|t| !t.is_null());
    let selector = match selector_json {
        None => {
            errors.push(FieldError::required("spec.selector", ""));
            None
        }
        Some(json) => match crate::selector::label_selector_from_json(Some(json)) {
            Ok(selector) => {
                if selector.is_everything() {
                    errors.push(FieldError::invalid(
                        "spec.selector",
                        BadValue::Raw(
                            "&v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}"
                                .to_owned(),
                        ),
                        "empty selector is invalid for deployment",
                    ));
                }
                Some(selector)
            }
            Err(e) => {
                errors.push(FieldError::invalid(
                    "spec.selector",
                    BadValue::Raw(json.to_string()),
                    &e.to_string(),
                ));
                None
            }
        },
    };
    let Some(template) = template else {
        errors.push(FieldError::required("spec.template", ""));
        return;
    };
    let labels = template.pointer("/metadata/labels");
    if let Some(selector) = selector.filter(|s| !s.is_everything()) {
        if !selector.matches_labels_value(labels) {
            errors.push(FieldError::invalid(
                "spec.template.metadata.labels",
                BadValue::Raw(go_string_map(labels)),
                "`selector` does not match template `labels`",
            ));
        }
    }
    validate_pod_spec(template.get("spec"), "spec.template.spec", errors);
    if let Some(policy) = template
        .pointer("/spec/restartPolicy")
        .and_then(Value::as_str)
    {
        if policy != "Always" {
            // validate_pod_spec already flagged unknown values; this is the template rule.
            if ["OnFailure", "Never"].contains(&policy) {
                errors.push(FieldError::not_supported(
                    "spec.template.spec.restartPolicy",
                    policy,
                    &["Always"],
                ));
            }
        }
    }
}

fn validate_deployment(obj: &Value, errors: &mut Vec<FieldError>) {
    validate_replicated(obj, errors);
}

fn validate_replica_set(obj: &Value, errors: &mut Vec<FieldError>) {
    validate_replicated(obj, errors);
}

/// Maximum endpoints per EndpointSlice.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 1000;

fn validate_endpoint_slice(obj: &Value, errors: &mut Vec<FieldError>) {
    const ADDRESS_TYPES: [&str; 3] = ["FQDN", "IPv4", "IPv6"];
    match obj.get("addressType").and_then(Value::as_str) {
        None | Some("") => errors.push(FieldError::required("addressType", "")),
        Some(t) if !ADDRESS_TYPES.contains(&t) => {
            errors.push(FieldError::not_supported("addressType", t, &ADDRESS_TYPES));
        }
        Some(_) => {}
    }
    let endpoints = obj.get("endpoints").and_then(Value::as_array);
    if let Some(endpoints) = endpoints {
        if endpoints.len() > MAX_ENDPOINTS_PER_SLICE {
            errors.push(FieldError::too_many(
                "endpoints",
                endpoints.len(),
                MAX_ENDPOINTS_PER_SLICE,
            ));
        }
        for (i, endpoint) in endpoints.iter().enumerate() {
            let addresses = endpoint.get("addresses").and_then(Value::as_array);
            match addresses.map(Vec::len).unwrap_or(0) {
                0 => errors.push(FieldError::required(
                    format!("endpoints[{i}].addresses"),
                    "must contain at least 1 address",
                )),
                n if n > 100 => errors.push(FieldError::too_many(
                    format!("endpoints[{i}].addresses"),
                    n,
                    100,
                )),
                _ => {}
            }
        }
    }
    if let Some(ports) = obj.get("ports").and_then(Value::as_array) {
        if ports.len() > 100 {
            errors.push(FieldError::too_many("ports", ports.len(), 100));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(containers: Value) -> Value {
        json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"default"},"spec":{"containers":containers}})
    }

    #[test]
    fn pod_validation() {
        assert!(validate_object("Pod", &pod(json!([{"name":"c","image":"i"}]))).is_empty());
        let errors = validate_object("Pod", &pod(json!([])));
        assert_eq!(errors, vec![FieldError::required("spec.containers", "")]);
        assert_eq!(errors[0].reason, "FieldValueRequired");
        assert_eq!(errors[0].to_string(), "spec.containers: Required value");
        assert_eq!(
            errors[0].to_cause(),
            json!({"reason":"FieldValueRequired","message":"Required value","field":"spec.containers"})
        );
        let errors = validate_object(
            "Pod",
            &pod(
                json!([{"name":"c","image":"i"},{"name":"c"},{"image":"x","ports":[{"containerPort":0}]}]),
            ),
        );
        let rendered: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            rendered,
            vec![
                "spec.containers[1].name: Duplicate value: \"c\"",
                "spec.containers[1].image: Required value",
                "spec.containers[2].name: Required value",
                "spec.containers[2].ports[0].containerPort: Invalid value: 0: must be between 1 and 65535, inclusive",
            ]
        );
        assert_eq!(errors[0].reason, "FieldValueDuplicate");
    }

    #[test]
    fn metadata_validation() {
        let obj = json!({"metadata":{"namespace":"default"},"spec":{"containers":[{"name":"c","image":"i"}]}});
        let errors = validate_object("Pod", &obj);
        assert_eq!(
            errors[0].to_string(),
            "metadata.name: Required value: name or generateName is required"
        );
        let obj = json!({"metadata":{"name":"Bad_Name","namespace":"default","labels":{"a b":"c"}},"spec":{"containers":[{"name":"c","image":"i"}]}});
        let errors = validate_object("Pod", &obj);
        assert_eq!(errors.len(), 2);
        assert!(errors[0]
            .message
            .starts_with("Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"));
        assert_eq!(errors[1].field, "metadata.labels");
        let svc =
            json!({"metadata":{"name":"1svc","namespace":"d"},"spec":{"ports":[{"port":80}]}});
        assert!(validate_object("Service", &svc)[0]
            .message
            .contains("DNS-1035"));
        let node = json!({"metadata":{"name":"n1","namespace":"x"}});
        assert_eq!(
            validate_object("Node", &node),
            vec![FieldError::forbidden(
                "metadata.namespace",
                "not allowed on this type"
            )]
        );
        let pod_no_ns =
            json!({"metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"i"}]}});
        assert_eq!(
            validate_object("Pod", &pod_no_ns),
            vec![FieldError::required("metadata.namespace", "")]
        );
        let generated = json!({"metadata":{"generateName":"web-","namespace":"d"},"spec":{"containers":[{"name":"c","image":"i"}]}});
        assert!(validate_object("Pod", &generated).is_empty());
    }

    #[test]
    fn service_validation() {
        let svc =
            |ports: Value| json!({"metadata":{"name":"s","namespace":"d"},"spec":{"ports":ports}});
        assert!(validate_object("Service", &svc(json!([{"port":80}]))).is_empty());
        let rendered: Vec<String> = validate_object(
            "Service",
            &svc(json!([{"port":0,"name":"a"},{"port":70000},{"port":81,"name":"a","protocol":"FOO"}])),
        )
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            rendered,
            vec![
                "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.ports[1].name: Required value",
                "spec.ports[1].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
                "spec.ports[2].name: Duplicate value: \"a\"",
                "spec.ports[2].protocol: Unsupported value: \"FOO\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
            ]
        );
        assert_eq!(
            validate_object("Service", &svc(json!([]))),
            vec![FieldError::required("spec.ports", "")]
        );
        let headless = json!({"metadata":{"name":"s","namespace":"d"},"spec":{"clusterIP":"None"}});
        assert!(validate_object("Service", &headless).is_empty());
    }

    fn deployment(selector: Value, labels: Value, replicas: i64) -> Value {
        json!({"metadata":{"name":"d","namespace":"default"},"spec":{"replicas":replicas,"selector":selector,
            "template":{"metadata":{"labels":labels},"spec":{"containers":[{"name":"c","image":"i"}]}}}})
    }

    #[test]
    fn deployment_and_replicaset_validation() {
        let ok = deployment(
            json!({"matchLabels":{"app":"web"}}),
            json!({"app":"web","x":"y"}),
            2,
        );
        assert!(validate_object("Deployment", &ok).is_empty());
        assert!(validate_object("ReplicaSet", &ok).is_empty());
        let bad = deployment(
            json!({"matchLabels":{"app":"web"}}),
            json!({"app":"api"}),
            -1,
        );
        let rendered: Vec<String> = validate_object("Deployment", &bad)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            rendered,
            vec![
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
                "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"api\"}: `selector` does not match template `labels`",
            ]
        );
        let empty = deployment(json!({}), json!({"app":"web"}), 1);
        assert!(validate_object("ReplicaSet", &empty)[0]
            .message
            .ends_with("empty selector is invalid for deployment"));
        let mut none = ok.clone();
        none["spec"].as_object_mut().map(|s| s.remove("selector"));
        assert_eq!(
            validate_object("Deployment", &none),
            vec![FieldError::required("spec.selector", "")]
        );
        let mut never = ok;
        never["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        assert_eq!(
            validate_object("Deployment", &never)[0].to_string(),
            "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""
        );
    }

    #[test]
    fn endpoint_slice_validation() {
        let slice = |address_type: Value, n: usize| {
            let endpoints: Vec<Value> = (0..n)
                .map(|i| json!({"addresses":[format!("10.0.{}.{}", i / 250, i % 250)]}))
                .collect();
            json!({"metadata":{"name":"s","namespace":"d"},"addressType":address_type,"endpoints":endpoints})
        };
        assert!(validate_object("EndpointSlice", &slice(json!("IPv4"), 3)).is_empty());
        assert_eq!(
            validate_object("EndpointSlice", &slice(json!("IPv5"), 1))[0].to_string(),
            "addressType: Unsupported value: \"IPv5\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""
        );
        assert_eq!(
            validate_object("EndpointSlice", &slice(json!("IPv4"), 1001))[0].to_string(),
            "endpoints: Too many: 1001: must have at most 1000 items"
        );
        assert_eq!(
            validate_object("EndpointSlice", &slice(Value::Null, 0)),
            vec![FieldError::required("addressType", "")]
        );
        let no_addr = json!({"metadata":{"name":"s","namespace":"d"},"addressType":"IPv4","endpoints":[{"addresses":[]}]});
        assert_eq!(
            validate_object("EndpointSlice", &no_addr)[0].field,
            "endpoints[0].addresses"
        );
    }
}
