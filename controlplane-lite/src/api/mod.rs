//! The REST layer: Kubernetes API semantics over the revisioned [`Store`].
//!
//! [`Api::handle`] authenticates, routes, authorizes and dispatches one request. Objects are kept
//! as JSON; the store's revision is their `resourceVersion`. Kind-specific behaviour (defaulting,
//! validation, ClusterIP/NodePort allocation, graceful pod deletion, status/scale/binding
//! subresources) lives in [`crate::admission`] and the subresource handlers in `sub/`.
//!
//! | File | What |
//! |---|---|
//! | `mod.rs` | [`Api`]: authentication, routing, authorization, discovery paths |
//! | [`crate::request`] | the leaf (beside this module): [`Config`], [`Req`], [`Target`], [`parse_path`], [`store_err`], continue tokens |
//! | `read.rs` | get, list (selectors, pagination, Tables), watch (per-client limit) |
//! | `write.rs` | create, update, patch (JSON, merge, strategic, apply), field validation |
//! | `delete.rs` | delete (grace, preconditions, propagation), namespace purge, deletecollection |
//! | `sub/` | subresources: `scale.rs` (read), `log.rs` (proxied to the kubelet), `binding.rs`, `exec.rs` (exec/attach/portforward upgrades relayed to the kubelet) |

mod delete;
mod read;
mod sub;
mod write;

pub use crate::request::{
    decode_continue, encode_continue, parse_path, store_err, Config, Req, Target,
};
pub use delete::Deleted;

use crate::admission;
use crate::auth::{authorize, Attributes, Decision, Identity, Tokens};
use crate::objects::{self, to_stored};
use crate::request::ApiResult;
use crate::resources::{self, Sub};
use crate::web::{self, ApiError, Body};
use ferry_store::{Kv, Store, StoreError};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The API server state.
pub struct Api {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Authentication tokens.
    pub tokens: Arc<Tokens>,
    /// Settings.
    pub cfg: Config,
    watches: Mutex<HashMap<String, usize>>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Api {
    /// Settles an authorizer [`Decision`] for `attrs`: `Ok(Ok(()))` allowed, `Ok(Err(why))`
    /// forbidden. The node conditions are checked here, against the store: the one place both
    /// requests and access reviews (`kubectl auth can-i`) go through. `field_selector` is the
    /// request's (a review has none). A pod named by an [`Decision::IfPodBoundTo`] request that
    /// does not exist is the store's 404.
    pub(crate) async fn decide(
        &self,
        decision: Decision,
        attrs: &Attributes<'_>,
        field_selector: Option<&str>,
    ) -> ApiResult<Result<(), String>> {
        let v = attrs.verb;
        let resource = attrs.resource;
        Ok(match decision {
            Decision::Allow => Ok(()),
            Decision::Deny(why) => Err(why),
            Decision::IfSelectsNode(node) => {
                if crate::auth::selects_node(field_selector, &node) {
                    Ok(())
                } else {
                    Err(format!(
                        "node {node:?} may {v} only its own pods, with fieldSelector \
                         spec.nodeName={node}"
                    ))
                }
            }
            Decision::IfUsedByPodOn(node) => {
                let (Some(ns), Some(name)) = (attrs.namespace, attrs.name) else {
                    return Ok(Err(format!(
                        "node {node:?} may {v} only {resource} its pods use: name one"
                    )));
                };
                let used = crate::auth::used_on_node(&*self.store, &node, resource, ns, name)
                    .await
                    .map_err(|e| ApiError::internal(format!("checking the node's pods: {e}")))?;
                if used {
                    Ok(())
                } else {
                    Err(format!(
                        "no pod bound to node {node:?} uses {} {ns}/{name}",
                        resource.trim_end_matches('s')
                    ))
                }
            }
            Decision::IfPodBoundTo(node) => {
                let (Some(ns), Some(name), Some(pods)) =
                    (attrs.namespace, attrs.name, resources::by_kind("Pod"))
                else {
                    return Ok(Err(format!(
                        "node {node:?} may {v} only pods bound to it: name one to check"
                    )));
                };
                let pod = self.get_obj(pods, ns, name).await?.0;
                if pod.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node.as_str()) {
                    Ok(())
                } else {
                    Err(format!(
                        "node {node:?} may {v} only pods bound to it; {ns}/{name} is not"
                    ))
                }
            }
        })
    }

    /// A server over `store`.
    pub fn new(store: Arc<dyn Store>, tokens: Arc<Tokens>, cfg: Config) -> Api {
        Api {
            store,
            tokens,
            cfg,
            watches: Mutex::new(HashMap::new()),
        }
    }

    /// Creates the namespaces every cluster has (idempotent).
    pub async fn bootstrap(&self) -> anyhow::Result<()> {
        let res = resources::by_kind("Namespace")
            .ok_or_else(|| anyhow::anyhow!("no Namespace resource"))?;
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let mut obj =
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            admission::defaults_on_create(res, &mut obj, "");
            match self.store.create(&res.key("", ns), to_stored(&obj)).await {
                Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => return Err(anyhow::anyhow!("creating namespace {ns}: {e}")),
            }
            self.default_service_account(ns).await;
        }
        Ok(())
    }

    /// Handles one HTTP request.
    pub async fn handle(self: Arc<Self>, req: Request<hyper::body::Incoming>) -> Response<Body> {
        let (mut parts, body) = req.into_parts();
        let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
        let slot = parts.extensions.remove::<crate::server::ConnectionSlot>();
        let path = parts.uri.path().to_owned();
        let query = web::parse_query(parts.uri.query());
        // Unauthenticated, like the public-info-viewer role upstream.
        match path.as_str() {
            "/healthz" | "/readyz" | "/livez" => return web::text(StatusCode::OK, "ok"),
            "/version" => return web::json(StatusCode::OK, &crate::version::info()),
            _ => {}
        }
        let auth = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let Some(who) = self.tokens.authenticate(auth) else {
            return ApiError::new(401, "Unauthorized", "Unauthorized").response();
        };
        if let Some(h) = crate::auth::impersonation(&parts.headers) {
            return ApiError::new(
                403,
                "Forbidden",
                format!(
                    "{h}: impersonation is not supported by ferry-server; \
                     the request would run as {}",
                    who.user()
                ),
            )
            .response();
        }
        if !web::accepts_json(&parts.headers)
            && parts.method == Method::GET
            && !path.starts_with("/openapi/v2")
        {
            return ApiError::new(406, "NotAcceptable", "only application/json is served")
                .response();
        }
        let limit = self.cfg.max_body;
        let read = http_body_util::Limited::new(body, limit).collect();
        let body = match tokio::time::timeout(self.cfg.http.body_timeout, read).await {
            Ok(Ok(b)) => b.to_bytes(),
            Err(_) => {
                return ApiError::new(
                    408,
                    "Timeout",
                    format!(
                        "the request body did not arrive within {:?}",
                        self.cfg.http.body_timeout
                    ),
                )
                .response()
            }
            Ok(Err(_)) => {
                return ApiError::new(
                    413,
                    "RequestEntityTooLarge",
                    format!("request body larger than {limit} bytes"),
                )
                .response()
            }
        };
        let r = Req {
            method: parts.method,
            raw_query: parts.uri.query().unwrap_or("").to_owned(),
            query,
            headers: parts.headers,
            body,
            who,
            upgrade: std::sync::Mutex::new(upgrade),
            slot,
        };
        let accept = web::accept(&r.headers);
        let resp = match self.clone().route(&path, r).await {
            Ok(resp) => resp,
            Err(e) => e.response(),
        };
        // Objects, lists and Status errors in protobuf for clients that list it first.
        crate::protobuf::respond(&accept, resp).await
    }

    async fn route(self: Arc<Self>, path: &str, r: Req) -> ApiResult<Response<Body>> {
        if r.method == Method::GET {
            if let Some(resp) = self.discovery(path, &r) {
                return Ok(resp);
            }
        }
        if let Some(review) = crate::reviews::find(path) {
            return crate::reviews::handle(&self, review, &r).await;
        }
        let Some(t) = parse_path(path)? else {
            return Err(ApiError::no_such_resource());
        };
        let watch = r
            .query
            .get("watch")
            .is_some_and(|v| v == "true" || v == "1");
        let verb = match (&r.method, t.name.is_some()) {
            (&Method::GET, false) if watch => "watch",
            (&Method::GET, false) => "list",
            (&Method::GET, true) => "get",
            (&Method::POST, _) => "create",
            (&Method::PUT, true) => "update",
            (&Method::PATCH, true) => "patch",
            (&Method::DELETE, true) => "delete",
            (&Method::DELETE, false) => "deletecollection",
            _ => {
                return Err(ApiError::new(
                    405,
                    "MethodNotAllowed",
                    format!("{} is not allowed here", r.method),
                ))
            }
        };
        // A create names its object in the body, not the URL. Only node identities are authorized
        // by name, so only their creates pay for reading it here (the handler decodes the body).
        let body_name =
            if verb == "create" && t.name.is_none() && matches!(r.who, Identity::Node(_)) {
                self.parse_body(&r)
                    .ok()
                    .map(|b| objects::name(&b).to_owned())
            } else {
                None
            };
        let attrs = Attributes {
            verb,
            resource: t.res.plural,
            subresource: t.sub.map(Sub::name),
            namespace: t.namespace.as_deref(),
            name: t.name.as_deref().or(body_name.as_deref()),
        };
        let field_selector = r.query.get("fieldSelector").map(String::as_str);
        if let Err(why) = self
            .decide(authorize(&r.who, &attrs), &attrs, field_selector)
            .await?
        {
            // kube-apiserver's wording: `pods "x" is forbidden` for one object, `pods is
            // forbidden` for a collection.
            let object = match t.name.as_deref() {
                Some(name) => format!("{} \"{name}\"", t.res.plural),
                None => t.res.plural.to_owned(),
            };
            return Err(ApiError::new(
                403,
                "Forbidden",
                format!(
                    "{object} is forbidden: User \"{}\" cannot {verb} resource \"{}\": {why}",
                    r.who.user(),
                    t.res.plural
                ),
            ));
        }
        match verb {
            "watch" => self.watch(&t, &r).await,
            "list" => self.list(&t, &r).await,
            "get" => match t.sub {
                Some(Sub::Scale) => self.get_scale(&t).await,
                Some(Sub::Log) => self.pod_log(&t, &r).await,
                Some(Sub::Exec | Sub::Attach | Sub::PortForward) => self.pod_stream(&t, &r).await,
                _ => self.get(&t, &r).await,
            },
            "create" => match (t.sub, t.name.is_some()) {
                (Some(Sub::Binding), true) => self.binding(&t, &r).await,
                (Some(Sub::Eviction), true) => self.eviction(&t, &r).await,
                (Some(Sub::Exec | Sub::Attach | Sub::PortForward), true) => {
                    self.pod_stream(&t, &r).await
                }
                (None, false) => self.create(&t, &r).await,
                _ => Err(ApiError::new(
                    405,
                    "MethodNotAllowed",
                    "POST is only allowed on collections, pods/binding, pods/eviction and the \
                     stream subresources",
                )),
            },
            "update" | "patch"
                if matches!(t.sub, Some(Sub::Exec | Sub::Attach | Sub::PortForward)) =>
            {
                Err(ApiError::new(
                    405,
                    "MethodNotAllowed",
                    format!(
                        "{} is not allowed on pods/{}",
                        r.method,
                        t.sub.map_or("", Sub::name)
                    ),
                ))
            }
            "update" | "patch" => self.write(&t, &r, verb == "patch").await,
            "delete" => self.delete(&t, &r).await,
            "deletecollection" => self.delete_collection(&t, &r).await,
            _ => Err(ApiError::internal("unrouted verb")),
        }
    }

    fn discovery(&self, path: &str, r: &Req) -> Option<Response<Body>> {
        let agg = crate::discovery::wants_aggregated(&web::accept(&r.headers));
        let ok = |v: Value| Some(web::json(StatusCode::OK, &v));
        match path.trim_end_matches('/') {
            "/api" => match agg {
                Some(v) => Some(web::json_with(
                    StatusCode::OK,
                    &crate::discovery::aggregated(true, v),
                    &crate::discovery::aggregated_content_type(v),
                )),
                None => ok(crate::discovery::api_versions(&self.cfg.advertise)),
            },
            "/apis" => match agg {
                Some(v) => Some(web::json_with(
                    StatusCode::OK,
                    &crate::discovery::aggregated(false, v),
                    &crate::discovery::aggregated_content_type(v),
                )),
                None => ok(crate::discovery::api_group_list()),
            },
            "/openapi/v3" => Some(crate::openapi::serve_index(&r.headers)),
            "/openapi/v2" => Some(crate::protobuf::openapi_v2(&web::accept(&r.headers))),
            p => {
                if let Some(doc) = p.strip_prefix("/openapi/v3/") {
                    return Some(crate::openapi::serve_document(doc, &r.query, &r.headers));
                }
                let segs: Vec<&str> = p.trim_matches('/').split('/').collect();
                match segs.as_slice() {
                    ["api", v] => crate::discovery::api_resource_list("", v)
                        .map(|d| web::json(StatusCode::OK, &d)),
                    ["apis", g] => {
                        crate::discovery::api_group(g).map(|d| web::json(StatusCode::OK, &d))
                    }
                    ["apis", g, v] => crate::discovery::api_resource_list(g, v)
                        .map(|d| web::json(StatusCode::OK, &d)),
                    _ => None,
                }
            }
        }
    }

    /// The ClusterIP / NodePort allocators over this server's store and ranges.
    fn allocator(&self) -> admission::Allocator<'_> {
        admission::Allocator {
            store: &*self.store,
            service_cidr: self.cfg.service_cidr,
            node_port_range: self.cfg.node_port_range,
        }
    }

    fn ns_of(t: &Target) -> String {
        if t.res.namespaced {
            t.namespace.clone().unwrap_or_default()
        } else {
            String::new()
        }
    }
}

/// The field manager of a write: `fieldManager`, else the client's user-agent program name.
fn manager(r: &Req) -> String {
    if let Some(m) = r.query.get("fieldManager").filter(|m| !m.is_empty()) {
        return m.clone();
    }
    let ua = r
        .headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown");
    ua.split('/').next().unwrap_or("unknown").to_owned()
}

fn dry_run(r: &Req) -> bool {
    r.query.get("dryRun").is_some_and(|d| d == "All")
}

fn add_warnings(resp: &mut Response<Body>, warnings: &[String]) {
    for w in warnings {
        if let Ok(v) = http::HeaderValue::from_str(&format!("299 - \"{}\"", w.replace('"', "'"))) {
            resp.headers_mut().append("Warning", v);
        }
    }
}

/// The last-state value of a deleted key for watchers (unused helper kept for symmetry).
pub fn kv_value(kv: &Kv) -> &[u8] {
    &kv.value
}
