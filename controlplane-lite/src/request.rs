//! What a request is before any handler runs: the server [`Config`] it is served under, the
//! [`Req`] itself and its [`Target`] ([`parse_path`] of `/api/v1/...` and `/apis/{g}/{v}/...`),
//! plus what watches share with the handlers: [`store_err`] (store failures as API Status) and
//! continue tokens ([`encode_continue`], [`decode_continue`]).
//!
//! A leaf of the REST layer, beside [`crate::api`] rather than inside it: both `api` (which serves
//! watches through [`crate::watch`]) and `watch` use it, without an `api` -> `watch` -> `api` cycle.

use crate::auth::Identity;
use crate::machinery as mach;
use crate::resources::{self, Resource, Sub};
use crate::web::ApiError;
use bytes::Bytes;
use ferry_store::{Rev, StoreError};
use http::Method;
use serde_json::{json, Value};
use std::collections::HashMap;

/// Server settings that shape API behaviour.
#[derive(Debug, Clone)]
pub struct Config {
    /// ClusterIP range.
    pub service_cidr: ipnetwork::Ipv4Network,
    /// NodePort range (inclusive).
    pub node_port_range: (u16, u16),
    /// Largest accepted request body.
    pub max_body: usize,
    /// Concurrent watches allowed per client identity.
    pub max_watches_per_client: usize,
    /// `host:port` clients reach the server at (discovery's serverAddressByClientCIDRs).
    pub advertise: String,
    /// Upper bound of a watch's lifetime (seconds).
    pub max_watch_seconds: u64,
    /// Bookmark interval for watches that ask for them.
    pub bookmark_interval: std::time::Duration,
    /// TLS for calls to kubelets (logs, exec, port-forward): the cluster CA and the API server's
    /// kubelet client certificate. `None`: those calls fail with a clear error.
    pub kubelet_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// Connection and request bounds of the HTTP server.
    pub http: crate::server::HttpLimits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            service_cidr: "10.96.0.0/12".parse().expect("valid default CIDR"),
            node_port_range: (30000, 32767),
            max_body: 3 * 1024 * 1024,
            max_watches_per_client: 1000,
            advertise: "127.0.0.1:6443".into(),
            max_watch_seconds: 1800,
            bookmark_interval: std::time::Duration::from_secs(60),
            kubelet_tls: None,
            http: crate::server::HttpLimits::default(),
        }
    }
}

/// A resource request after routing.
#[derive(Debug, Clone)]
pub struct Target {
    /// The resource.
    pub res: &'static Resource,
    /// Namespace from the URL.
    pub namespace: Option<String>,
    /// Object name.
    pub name: Option<String>,
    /// Subresource.
    pub sub: Option<Sub>,
}

/// One parsed request.
#[derive(Debug)]
pub struct Req {
    /// Method.
    pub method: Method,
    /// Query parameters.
    pub query: HashMap<String, String>,
    /// The query string as sent (repeated parameters such as exec's `command` intact).
    pub raw_query: String,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body.
    pub body: Bytes,
    /// Who is asking.
    pub who: Identity,
    /// The connection's upgrade (taken by the streaming subresources: exec, portforward).
    pub upgrade: std::sync::Mutex<Option<hyper::upgrade::OnUpgrade>>,
    /// The connection's place under `--max-connections` (`None` outside [`crate::server`]): an
    /// upgraded session keeps a clone, so it goes on counting after hyper lets the connection go.
    pub slot: Option<crate::server::ConnectionSlot>,
}

pub(super) type ApiResult<T> = Result<T, ApiError>;

/// Maps a store failure to the apiserver's Status.
pub fn store_err(res: &Resource, name: &str, e: StoreError) -> ApiError {
    match e {
        StoreError::AlreadyExists { .. } => ApiError::from_pair(mach::already_exists(res, name)),
        StoreError::NotFound { .. } => ApiError::from_pair(mach::not_found(res, name)),
        StoreError::Conflict { .. } => ApiError::from_pair(mach::conflict(
            res,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )),
        StoreError::Compacted { requested, compacted } => {
            ApiError::new(410, "Expired", format!("too old resource version: {requested} ({compacted})"))
        }
        StoreError::FutureRevision { requested, current } => ApiError::new(
            504,
            "Timeout",
            format!("Too large resource version: {requested}, current: {current}"),
        ),
        StoreError::Lagged => ApiError::new(410, "Expired", "watch fell behind"),
        StoreError::Backend(msg) => ApiError::internal(format!("storage: {msg}")),
    }
}

/// Parses `/api/v1/...` and `/apis/{g}/{v}/...` resource paths.
pub fn parse_path(path: &str) -> ApiResult<Option<Target>> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => ("", *v, rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return Ok(None),
    };
    let not_found = ApiError::no_such_resource;
    let nsd = |plural: &str| resources::find(group, version, plural).filter(|r| r.namespaced);
    let (res, namespace, name, sub) = match rest {
        ["namespaces", ns, plural, more @ ..] if nsd(plural).is_some() => {
            let res = nsd(plural).ok_or_else(not_found)?;
            (res, Some((*ns).to_owned()), more.first(), more.get(1))
        }
        [plural, more @ ..] => {
            let res = resources::find(group, version, plural).ok_or_else(not_found)?;
            if res.namespaced && !more.is_empty() {
                return Err(not_found());
            }
            (res, None, more.first(), more.get(1))
        }
        [] => return Ok(None),
    };
    if rest.len() > if namespace.is_some() { 5 } else { 3 } {
        return Err(not_found());
    }
    let sub = match sub {
        None => None,
        Some(s) => Some(
            res.subresources
                .iter()
                .copied()
                .find(|x| x.name() == *s)
                .ok_or_else(not_found)?,
        ),
    };
    Ok(Some(Target {
        res,
        namespace,
        name: name.map(|n| (*n).to_owned()),
        sub,
    }))
}

/// Encodes a continue token: the snapshot revision and the last key returned.
pub fn encode_continue(rev: Rev, key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"v": "meta.k8s.io/v1", "rv": rev, "start": key}).to_string())
}

/// Decodes a continue token.
pub fn decode_continue(tok: &str) -> Option<(Rev, String)> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(tok.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    Some((v.get("rv")?.as_i64()?, v.get("start")?.as_str()?.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_routing() {
        let t = parse_path("/api/v1/namespaces/default/pods/web/status")
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                t.res.plural,
                t.namespace.as_deref(),
                t.name.as_deref(),
                t.sub
            ),
            ("pods", Some("default"), Some("web"), Some(Sub::Status))
        );
        let t = parse_path("/api/v1/pods").unwrap().unwrap();
        assert_eq!((t.res.plural, t.namespace, t.name), ("pods", None, None));
        let t = parse_path("/api/v1/namespaces/kube-system")
            .unwrap()
            .unwrap();
        assert_eq!(
            (t.res.plural, t.name.as_deref()),
            ("namespaces", Some("kube-system"))
        );
        let t = parse_path("/api/v1/namespaces").unwrap().unwrap();
        assert_eq!(t.res.plural, "namespaces");
        let t = parse_path("/apis/apps/v1/namespaces/x/deployments/d/scale")
            .unwrap()
            .unwrap();
        assert_eq!(t.sub, Some(Sub::Scale));
        let t = parse_path("/api/v1/nodes/n1/status").unwrap().unwrap();
        assert_eq!(
            (t.res.plural, t.name.as_deref(), t.sub),
            ("nodes", Some("n1"), Some(Sub::Status))
        );
        assert!(
            parse_path("/api/v1/pods/web").is_err(),
            "namespaced by name needs a namespace"
        );
        let t = parse_path("/api/v1/namespaces/default/pods/web/exec")
            .unwrap()
            .unwrap();
        assert_eq!(t.sub, Some(Sub::Exec));
        assert!(parse_path("/api/v1/namespaces/default/pods/web/ephemeralcontainers").is_err());
        assert!(parse_path("/api/v1/namespaces/default/services/s/exec").is_err());
        assert!(parse_path("/api/v1/widgets").is_err());
        assert!(parse_path("/api/v1").unwrap().is_none());
        assert!(parse_path("/apis/apps/v1/namespaces/x/deployments/d/scale/extra").is_err());
    }

    #[test]
    fn continue_tokens_round_trip() {
        let tok = encode_continue(42, "/registry/pods/default/web");
        assert_eq!(
            decode_continue(&tok),
            Some((42, "/registry/pods/default/web".to_owned()))
        );
        assert_eq!(decode_continue("garbage!"), None);
    }
}
