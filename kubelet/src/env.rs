//! A container's environment and command line, resolved like the kubelet does it:
//! `envFrom` (ConfigMaps, Secrets, with `prefix`), then `env` in order (`value` with `$(VAR)`
//! expansion against what is defined so far, `valueFrom.fieldRef`, `configMapKeyRef`,
//! `secretKeyRef`, `optional` honoured), then `$(VAR)` in `command` and `args`.
//!
//! Lookups of ConfigMaps and Secrets are passed in, so this module is pure and unit-tested.

use k8s_openapi::api::core::v1::{Container, Pod};
use std::collections::BTreeMap;

/// Default `PATH` when the container sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Reads a key of a ConfigMap or Secret: `Ok(None)` when the object or key does not exist.
pub trait Lookup {
    /// `data[key]` of ConfigMap `name`; `Err` only for failures other than "not found".
    fn config_map(&self, name: &str) -> Result<Option<BTreeMap<String, String>>, String>;
    /// `data[key]` (decoded) of Secret `name`.
    fn secret(&self, name: &str) -> Result<Option<BTreeMap<String, String>>, String>;
}

/// Expands `$(NAME)` references in `s` (`$$` is a literal `$`); unknown names stay as written.
pub fn expand(s: &str, vars: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'(' {
                if let Some(end) = s[i + 2..].find(')') {
                    let name = &s[i + 2..i + 2 + end];
                    match vars(name) {
                        Some(v) => out.push_str(&v),
                        None => out.push_str(&s[i..i + 3 + end]),
                    }
                    i += 3 + end;
                    continue;
                }
            }
        }
        let ch = s[i..].chars().next().unwrap_or('\0');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// A pod field for `fieldRef` (the paths the downward API supports).
pub fn field(pod: &Pod, path: &str) -> Result<String, String> {
    let m = &pod.metadata;
    let spec = pod.spec.as_ref();
    let st = pod.status.as_ref();
    let sel = |map: Option<&BTreeMap<String, String>>, rest: &str| -> Option<String> {
        let key = rest.strip_prefix("['")?.strip_suffix("']")?;
        Some(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    let v = match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.hostIP" => st.and_then(|s| s.host_ip.clone()).unwrap_or_default(),
        "status.podIP" => st.and_then(|s| s.pod_ip.clone()).unwrap_or_default(),
        "status.podIPs" => st
            .and_then(|s| s.pod_ips.as_ref())
            .map(|ips| {
                ips.iter()
                    .map(|i| i.ip.clone())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default(),
        p => {
            if let Some(rest) = p.strip_prefix("metadata.labels") {
                sel(m.labels.as_ref(), rest).ok_or_else(|| format!("unsupported fieldRef {p:?}"))?
            } else if let Some(rest) = p.strip_prefix("metadata.annotations") {
                sel(m.annotations.as_ref(), rest)
                    .ok_or_else(|| format!("unsupported fieldRef {p:?}"))?
            } else {
                return Err(format!("unsupported fieldRef {p:?}"));
            }
        }
    };
    Ok(v)
}

/// `key` of a ConfigMap's or Secret's `data`, honouring `optional`.
fn key_of(
    pod: &Pod,
    data: Option<BTreeMap<String, String>>,
    kind: &str,
    name: &str,
    key: &str,
    optional: bool,
) -> Result<Option<String>, String> {
    match (data, optional) {
        (Some(d), _) => match d.get(key) {
            Some(v) => Ok(Some(v.clone())),
            None if optional => Ok(None),
            None => Err(format!(
                "couldn't find key {key} in {kind} {}/{name}",
                pod.metadata.namespace.as_deref().unwrap_or("default"),
            )),
        },
        (None, true) => Ok(None),
        (None, false) => Err(format!("{} {name:?} not found", kind.to_lowercase())),
    }
}

/// The resolved environment of `c` in `pod` (in definition order, later duplicates win), or the
/// reason it cannot be built (`CreateContainerConfigError`).
pub fn environment(
    pod: &Pod,
    c: &Container,
    lookup: &dyn Lookup,
) -> Result<Vec<(String, String)>, String> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let set = |vars: &mut Vec<(String, String)>, k: String, v: String| {
        vars.retain(|(n, _)| *n != k);
        vars.push((k, v));
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (data, what, name, optional) = if let Some(r) = &from.config_map_ref {
            let name = r.name.clone();
            (
                lookup.config_map(&name)?,
                "configmap",
                name,
                r.optional == Some(true),
            )
        } else if let Some(r) = &from.secret_ref {
            let name = r.name.clone();
            (
                lookup.secret(&name)?,
                "secret",
                name,
                r.optional == Some(true),
            )
        } else {
            continue;
        };
        match data {
            Some(d) => {
                for (k, v) in d {
                    set(&mut vars, format!("{prefix}{k}"), v);
                }
            }
            None if optional => {}
            None => return Err(format!("{what} {name:?} not found")),
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(src) = &e.value_from {
            if let Some(f) = &src.field_ref {
                Some(field(pod, &f.field_path)?)
            } else if let Some(r) = &src.config_map_key_ref {
                let data = lookup.config_map(&r.name)?;
                key_of(
                    pod,
                    data,
                    "ConfigMap",
                    &r.name,
                    &r.key,
                    r.optional == Some(true),
                )?
            } else if let Some(r) = &src.secret_key_ref {
                let data = lookup.secret(&r.name)?;
                key_of(
                    pod,
                    data,
                    "Secret",
                    &r.name,
                    &r.key,
                    r.optional == Some(true),
                )?
            } else if src.resource_field_ref.is_some() {
                return Err(format!(
                    "env {}: resourceFieldRef is not supported by ferry-kubelet",
                    e.name
                ));
            } else {
                return Err(format!("env {}: empty valueFrom", e.name));
            }
        } else {
            let known = vars.clone();
            let lookup_var =
                move |n: &str| known.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
            Some(expand(e.value.as_deref().unwrap_or(""), &lookup_var))
        };
        if let Some(v) = value {
            set(&mut vars, e.name.clone(), v);
        }
    }
    let mut full: Vec<(String, String)> = Vec::new();
    if !vars.iter().any(|(k, _)| k == "PATH") {
        full.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    full.push((
        "HOSTNAME".into(),
        pod.metadata.name.clone().unwrap_or_default(),
    ));
    full.retain(|(k, _)| !vars.iter().any(|(n, _)| n == k));
    full.extend(vars);
    Ok(full)
}

/// `command` + `args` with `$(VAR)` expanded; an error when there is nothing to run. Images are
/// not pulled, so none has an entrypoint: `args` alone are the whole command line, as for an
/// image without `ENTRYPOINT` (busybox's; what `kubectl run NAME --image=X -- sh` relies on).
pub fn argv(c: &Container, env: &[(String, String)]) -> Result<Vec<String>, String> {
    let lookup = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let argv: Vec<String> = c
        .command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .map(|s| expand(s, &lookup))
        .collect();
    if argv.is_empty() {
        return Err(format!(
            "container {:?} has no command: ferry-kubelet does not pull images (image {:?} is only \
             recorded), so set spec.containers[].command (or args) to a program on the node",
            c.name,
            c.image.as_deref().unwrap_or("")
        ));
    }
    Ok(argv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Fake;
    impl Lookup for Fake {
        fn config_map(&self, name: &str) -> Result<Option<BTreeMap<String, String>>, String> {
            Ok((name == "cm").then(|| [("k".to_owned(), "v".to_owned())].into()))
        }
        fn secret(&self, name: &str) -> Result<Option<BTreeMap<String, String>>, String> {
            Ok((name == "s").then(|| [("pw".to_owned(), "hunter2".to_owned())].into()))
        }
    }

    fn pod(container: serde_json::Value) -> (Pod, Container) {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [container]},
            "status": {"podIP": "10.244.1.5"}
        }))
        .unwrap();
        let c = p.spec.as_ref().unwrap().containers[0].clone();
        (p, c)
    }

    #[test]
    fn expansion() {
        let v = |n: &str| (n == "A").then(|| "x".to_owned());
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &v), "x-$(B)-$(A)-$");
        assert_eq!(expand("$(A", &v), "$(A");
        assert_eq!(expand("héllo $(A)", &v), "héllo x");
    }

    #[test]
    fn env_resolution_in_order() {
        let (p, c) = pod(
            json!({"name": "c", "command": ["sh"], "args": ["-c", "echo $(GREETING)"],
            "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
            "env": [
                {"name": "NAME", "value": "world"},
                {"name": "GREETING", "value": "hello $(NAME)"},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
                {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k", "optional": true}}}
            ]}),
        );
        let env = environment(&p, &c, &Fake).unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("GREETING"), Some("hello world"));
        assert_eq!(get("CM_k"), Some("v"));
        assert_eq!(get("POD"), Some("p"));
        assert_eq!(get("IP"), Some("10.244.1.5"));
        assert_eq!(get("APP"), Some("web"));
        assert_eq!(get("PW"), Some("hunter2"));
        assert_eq!(get("OPT"), None);
        assert_eq!(get("PATH"), Some(DEFAULT_PATH));
        assert_eq!(
            argv(&c, &env).unwrap(),
            vec!["sh", "-c", "echo hello world"]
        );
    }

    #[test]
    fn bad_env_refs_are_config_errors() {
        let (p, c) = pod(json!({"name": "c", "command": ["true"], "env": [
            {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "missing", "key": "k"}}}]}));
        assert!(environment(&p, &c, &Fake)
            .unwrap_err()
            .contains("not found"));
        let (p, c) = pod(json!({"name": "c", "command": ["true"], "env": [
            {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "nokey"}}}]}));
        assert!(environment(&p, &c, &Fake)
            .unwrap_err()
            .contains("couldn't find key nokey"));
        let (p, c) = pod(json!({"name": "c", "command": ["true"], "env": [
            {"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}]}));
        assert!(environment(&p, &c, &Fake)
            .unwrap_err()
            .contains("unsupported fieldRef"));
        let (_, c) = pod(json!({"name": "c", "image": "nginx"}));
        assert!(argv(&c, &[]).unwrap_err().contains("no command"));
        let (_, c) = pod(json!({"name": "c", "image": "nginx", "command": [], "args": []}));
        assert!(argv(&c, &[]).unwrap_err().contains("no command"));
        // No entrypoint: args alone run (kubectl run's `-- sh -c ...`).
        let (_, c) = pod(json!({"name": "c", "image": "busybox", "args": ["sh", "-c", "true"]}));
        assert_eq!(argv(&c, &[]).unwrap(), vec!["sh", "-c", "true"]);
    }
}
