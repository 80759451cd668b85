//! ConfigMap and Secret validation (upstream `ValidateConfigMap` / `ValidateSecret`): keys are
//! config keys, the total size is at most 1 MiB, a Secret's `data` values are base64, and the
//! well-known Secret types carry the keys they promise (`tls.crt`/`tls.key`, `.dockerconfigjson`,
//! ...). Immutability (`immutable: true`, a Secret's `type`) is checked on update by the server.

use base64::Engine;
use serde_json::{Map, Value};

use super::field::FieldError;

/// Upstream `MaxSecretSize` (also the ConfigMap limit).
pub const MAX_CONFIG_SIZE: usize = 1024 * 1024;

const KEY_MESSAGE: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

/// Upstream `IsConfigMapKey`: the problems of `key` (empty when valid).
pub fn config_key_errors(key: &str) -> Vec<String> {
    let mut out = Vec::new();
    if key.len() > 253 {
        out.push("must be no more than 253 characters".to_owned());
    }
    if key.is_empty()
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        out.push(KEY_MESSAGE.to_owned());
    }
    if key == "." {
        out.push("must not be '.'".to_owned());
    } else if key == ".." {
        out.push("must not be '..'".to_owned());
    } else if key.starts_with("..") {
        out.push("must not start with '..'".to_owned());
    }
    out
}

fn too_long(field: &str, size: usize) -> FieldError {
    FieldError {
        field: field.to_owned(),
        reason: "FieldValueTooLong".to_owned(),
        message: format!("Too long: may not be more than {MAX_CONFIG_SIZE} bytes (got {size})"),
    }
}

fn keys_of<'a>(obj: &'a Value, field: &str) -> Option<&'a Map<String, Value>> {
    obj.get(field).and_then(Value::as_object)
}

fn check_keys(obj: &Value, field: &str, errors: &mut Vec<FieldError>) {
    for key in keys_of(obj, field).into_iter().flat_map(Map::keys) {
        for msg in config_key_errors(key) {
            errors.push(FieldError::invalid(
                format!("{field}[{key}]"),
                key.as_str(),
                &msg,
            ));
        }
    }
}

/// `kubectl create configmap` / `create -f` of a ConfigMap.
pub(super) fn validate_config_map(obj: &Value, errors: &mut Vec<FieldError>) {
    check_keys(obj, "data", errors);
    check_keys(obj, "binaryData", errors);
    let mut size = 0;
    if let (Some(data), Some(binary)) = (keys_of(obj, "data"), keys_of(obj, "binaryData")) {
        for key in data.keys().filter(|k| binary.contains_key(*k)) {
            errors.push(FieldError::invalid(
                format!("data[{key}]"),
                key.as_str(),
                "duplicate of key present in binaryData",
            ));
        }
    }
    for (k, v) in keys_of(obj, "data").into_iter().flatten() {
        size += k.len() + v.as_str().map_or(0, str::len);
    }
    for (k, v) in keys_of(obj, "binaryData").into_iter().flatten() {
        let decoded = v
            .as_str()
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok());
        match decoded {
            Some(b) => size += k.len() + b.len(),
            None => errors.push(FieldError::invalid(
                format!("binaryData[{k}]"),
                "<value>",
                "must be base64-encoded",
            )),
        }
    }
    if size > MAX_CONFIG_SIZE {
        errors.push(too_long("", size));
    }
}

/// `kubectl create secret ...` / `create -f` of a Secret (after `stringData` was merged into
/// `data` and `type` defaulted).
pub(super) fn validate_secret(obj: &Value, errors: &mut Vec<FieldError>) {
    check_keys(obj, "data", errors);
    let mut size = 0;
    let mut decoded = Map::new();
    for (k, v) in keys_of(obj, "data").into_iter().flatten() {
        match v
            .as_str()
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        {
            Some(b) => {
                size += b.len();
                decoded.insert(k.clone(), Value::String(String::from_utf8_lossy(&b).into()));
            }
            None => errors.push(FieldError::invalid(
                format!("data[{k}]"),
                "<secret contents redacted>",
                "must be base64-encoded",
            )),
        }
    }
    if size > MAX_CONFIG_SIZE {
        errors.push(too_long("data", size));
    }
    let has = |k: &str| decoded.contains_key(k);
    let ty = obj.get("type").and_then(Value::as_str).unwrap_or("Opaque");
    let required: &[&str] = match ty {
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        _ => &[],
    };
    for key in required {
        if !has(key) {
            errors.push(FieldError::required(format!("data[{key}]"), ""));
        }
    }
    for key in [".dockercfg", ".dockerconfigjson"] {
        let json_type = ty.ends_with(key.trim_start_matches('.'));
        let text = decoded.get(key).and_then(Value::as_str);
        if let (true, Some(text)) = (json_type, text) {
            if let Err(e) = serde_json::from_str::<Value>(text) {
                errors.push(FieldError::invalid(
                    format!("data[{key}]"),
                    "<secret contents redacted>",
                    &e.to_string(),
                ));
            }
        }
    }
    if ty == "kubernetes.io/basic-auth" && !has("username") && !has("password") {
        errors.push(FieldError::required(
            "data[username]",
            "either username or password is required",
        ));
    }
    if ty == "kubernetes.io/service-account-token"
        && obj
            .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        errors.push(FieldError::required(
            "metadata.annotations[kubernetes.io/service-account.name]",
            "",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(f: fn(&Value, &mut Vec<FieldError>), obj: &Value) -> Vec<String> {
        let mut e = Vec::new();
        f(obj, &mut e);
        e.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn config_keys() {
        assert!(config_key_errors("a.b_C-9").is_empty());
        assert_eq!(config_key_errors("a/b"), vec![KEY_MESSAGE.to_owned()]);
        assert_eq!(config_key_errors(".."), vec!["must not be '..'".to_owned()]);
        assert_eq!(
            config_key_errors("..a"),
            vec!["must not start with '..'".to_owned()]
        );
        assert!(!config_key_errors("").is_empty());
    }

    #[test]
    fn secrets() {
        let ok = json!({"type": "Opaque", "data": {"a": "Yg=="}});
        assert!(errors(validate_secret, &ok).is_empty());
        let bad = json!({"data": {"a/b": "Yg==", "c": "not base64!"}});
        let e = errors(validate_secret, &bad);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("data[a/b]"));
        assert!(e[1].contains("must be base64-encoded") && !e[1].contains("not base64"));
        let tls = json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "YQ=="}});
        assert_eq!(
            errors(validate_secret, &tls),
            vec!["data[tls.key]: Required value"]
        );
        let docker = json!({"type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": "e30="}});
        assert!(errors(validate_secret, &docker).is_empty());
        let docker_bad = json!({"type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": "bm9wZQ=="}});
        assert_eq!(errors(validate_secret, &docker_bad).len(), 1);
        let big = "A".repeat(MAX_CONFIG_SIZE / 3 * 4 + 8);
        assert!(errors(validate_secret, &json!({"data": {"k": big}}))[0].contains("Too long"));
    }

    #[test]
    fn config_maps() {
        let cm = json!({"data": {"a": "x"}, "binaryData": {"a": "eA==", "b": "???"}});
        let e = errors(validate_config_map, &cm);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("duplicate of key present in binaryData"));
        assert!(e[1].contains("binaryData[b]"));
    }
}
