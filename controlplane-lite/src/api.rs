//! The REST layer: Kubernetes API semantics over the revisioned [`Store`].
//!
//! [`Api::handle`] authenticates, routes, authorizes and dispatches one request. Objects are kept
//! as JSON; the store's revision is their `resourceVersion`. Kind-specific behaviour (defaulting,
//! validation, ClusterIP/NodePort allocation, graceful pod deletion, status/scale/binding
//! subresources) lives in [`crate::admission`] and the subresource handlers below.

use crate::admission;
use crate::auth::{authorize, Attributes, Decision, Identity, Tokens};
use crate::machinery as mach;
use crate::objects::{self, from_kv, meta_mut, meta_str, to_stored};
use crate::resources::{self, Resource, Sub};
use crate::watch;
use crate::web::{self, ApiError, Body};
use bytes::Bytes;
use ferry_store::{Kv, Rev, Store, StoreError};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
        }
    }
}

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
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body.
    pub body: Bytes,
    /// Who is asking.
    pub who: Identity,
}

type ApiResult<T> = Result<T, ApiError>;

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
    let not_found = || {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    };
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

struct WatchSlot {
    api: Arc<Api>,
    user: String,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut w = self
            .api
            .watches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = w.get_mut(&self.user) {
            *n = n.saturating_sub(1);
        }
    }
}

impl Api {
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
        }
        Ok(())
    }

    /// Handles one HTTP request.
    pub async fn handle(self: Arc<Self>, req: Request<hyper::body::Incoming>) -> Response<Body> {
        let (parts, body) = req.into_parts();
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
        if !web::accepts_json(&parts.headers)
            && parts.method == Method::GET
            && !path.starts_with("/openapi/v2")
        {
            return ApiError::new(406, "NotAcceptable", "only application/json is served")
                .response();
        }
        let limit = self.cfg.max_body;
        let body = match http_body_util::Limited::new(body, limit).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
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
            query,
            headers: parts.headers,
            body,
            who,
        };
        match self.clone().route(&path, r).await {
            Ok(resp) => resp,
            Err(e) => e.response(),
        }
    }

    async fn route(self: Arc<Self>, path: &str, r: Req) -> ApiResult<Response<Body>> {
        if r.method == Method::GET {
            if let Some(resp) = self.discovery(path, &r) {
                return Ok(resp);
            }
        }
        let Some(t) = parse_path(path)? else {
            return Err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ));
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
                serde_json::from_slice::<Value>(&r.body)
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
        let pod_check = match authorize(&r.who, &attrs) {
            Decision::Allow => None,
            Decision::IfPodBoundTo(node) => Some(node),
            Decision::Deny(why) => {
                return Err(ApiError::new(
                    403,
                    "Forbidden",
                    format!(
                        "{} is forbidden: User \"{}\" cannot {verb} resource \"{}\": {why}",
                        t.res.plural,
                        r.who.user(),
                        t.res.plural
                    ),
                ));
            }
        };
        if let Some(node) = pod_check {
            let ns = t.namespace.clone().unwrap_or_default();
            let name = t.name.clone().unwrap_or_default();
            let pod = self.get_obj(t.res, &ns, &name).await?.0;
            if pod.pointer("/spec/nodeName").and_then(Value::as_str) != Some(node.as_str()) {
                return Err(ApiError::new(
                    403,
                    "Forbidden",
                    format!("node {node:?} may only change pods bound to it"),
                ));
            }
        }
        match verb {
            "watch" => self.watch(&t, &r).await,
            "list" => self.list(&t, &r).await,
            "get" => match t.sub {
                Some(Sub::Scale) => self.get_scale(&t).await,
                Some(Sub::Log) => self.pod_log(&t, &r).await,
                _ => self.get(&t, &r).await,
            },
            "create" => match (t.sub, t.name.is_some()) {
                (Some(Sub::Binding), true) => self.binding(&t, &r).await,
                (None, false) => self.create(&t, &r).await,
                _ => Err(ApiError::new(
                    405,
                    "MethodNotAllowed",
                    "POST is only allowed on collections and pods/binding",
                )),
            },
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
            "/openapi/v3" => ok(crate::openapi::index()),
            "/openapi/v2" => {
                Some(ApiError::new(404, "NotFound", "OpenAPI v2 is not served").response())
            }
            p => {
                if let Some(doc) = p.strip_prefix("/openapi/v3/") {
                    return Some(match crate::openapi::document(doc) {
                        Some(d) => web::json(StatusCode::OK, &d),
                        None => {
                            ApiError::new(404, "NotFound", "no such OpenAPI document").response()
                        }
                    });
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

    fn ns_of(t: &Target) -> String {
        if t.res.namespaced {
            t.namespace.clone().unwrap_or_default()
        } else {
            String::new()
        }
    }

    /// Reads one object and its revision.
    pub async fn get_obj(&self, res: &Resource, ns: &str, name: &str) -> ApiResult<(Value, Rev)> {
        match self
            .store
            .get(&res.key(ns, name))
            .await
            .map_err(|e| store_err(res, name, e))?
        {
            Some(kv) => Ok((from_kv(&kv, res.kind, &res.api_version()), kv.mod_rev)),
            None => Err(ApiError::from_pair(mach::not_found(res, name))),
        }
    }

    fn respond(&self, t: &Target, r: &Req, status: StatusCode, obj: &Value) -> Response<Body> {
        if web::wants_table(&r.headers) && t.sub.is_none() {
            let rv = meta_str(obj, "resourceVersion").to_owned();
            let table = mach::table(t.res.kind, std::slice::from_ref(obj), &rv, "");
            return web::json_with(status, &table, web::TABLE);
        }
        web::json(status, obj)
    }

    async fn get(&self, t: &Target, r: &Req) -> ApiResult<Response<Body>> {
        let name = t.name.clone().unwrap_or_default();
        let (obj, _) = self.get_obj(t.res, &Self::ns_of(t), &name).await?;
        Ok(self.respond(t, r, StatusCode::OK, &obj))
    }

    async fn list(&self, t: &Target, r: &Req) -> ApiResult<Response<Body>> {
        let sel =
            mach::Selectors::from_query(t.res.kind, &r.query).map_err(ApiError::bad_request)?;
        let limit: Option<usize> = match r.query.get("limit").map(String::as_str) {
            None | Some("") | Some("0") => None,
            Some(l) => Some(
                l.parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
            ),
        };
        let prefix = t.res.key_prefix(t.namespace.as_deref());
        let (mut at, mut start) = (None, None::<String>);
        if let Some(tok) = r.query.get("continue").filter(|c| !c.is_empty()) {
            let (rev, key) = decode_continue(tok)
                .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
            at = Some(rev);
            start = Some(key);
        } else if let Some(rv) = r
            .query
            .get("resourceVersion")
            .filter(|v| !v.is_empty() && *v != "0")
        {
            let rv: Rev = rv
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?;
            let exact = r
                .query
                .get("resourceVersionMatch")
                .is_some_and(|m| m == "Exact");
            if exact {
                at = Some(rv);
            } else {
                self.wait_for_rev(rv)
                    .await
                    .map_err(|e| store_err(t.res, "", e))?;
            }
        }
        let mut items = Vec::new();
        let mut snapshot = at;
        let mut cont = String::new();
        loop {
            let want = limit.map(|l| l.saturating_sub(items.len()).max(1) + 1);
            let page = self
                .store
                .list(&prefix, snapshot, start.as_deref(), want.map(|w| w.max(64)))
                .await
                .map_err(|e| store_err(t.res, "", e))?;
            snapshot = Some(page.rev);
            let mut last_key = None;
            let mut filled = false;
            for kv in &page.kvs {
                last_key = Some(kv.key.clone());
                let obj = from_kv(kv, t.res.kind, &t.res.api_version());
                if sel.matches(&obj) {
                    items.push(obj);
                    if limit.is_some_and(|l| items.len() >= l) {
                        filled = true;
                        break;
                    }
                }
            }
            let more_after = page.more
                || last_key
                    .as_ref()
                    .is_some_and(|k| page.kvs.last().is_some_and(|l| &l.key != k));
            if filled {
                if more_after {
                    cont = encode_continue(page.rev, last_key.as_deref().unwrap_or(""));
                }
                break;
            }
            if !page.more {
                break;
            }
            start = last_key;
        }
        let rv = snapshot.unwrap_or(0).to_string();
        if web::wants_table(&r.headers) {
            let table = mach::table(t.res.kind, &items, &rv, &cont);
            return Ok(web::json_with(StatusCode::OK, &table, web::TABLE));
        }
        let mut meta = json!({"resourceVersion": rv});
        if !cont.is_empty() {
            meta["continue"] = cont.into();
        }
        Ok(web::json(
            StatusCode::OK,
            &json!({
                "kind": t.res.list_kind(), "apiVersion": t.res.api_version(), "metadata": meta, "items": items,
            }),
        ))
    }

    /// Waits up to 3 s for the store to reach `rev` (a list "not older than" a future revision).
    async fn wait_for_rev(&self, rev: Rev) -> Result<(), StoreError> {
        for _ in 0..30 {
            let cur = self.store.current_rev().await?;
            if cur >= rev {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Err(StoreError::FutureRevision {
            requested: rev,
            current: self.store.current_rev().await?,
        })
    }

    async fn watch(self: Arc<Self>, t: &Target, r: &Req) -> ApiResult<Response<Body>> {
        let user = r.who.user();
        {
            let mut w = self
                .watches
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = w.entry(user.clone()).or_insert(0);
            if *n >= self.cfg.max_watches_per_client {
                let mut e = ApiError::new(
                    429,
                    "TooManyRequests",
                    format!("too many watches for {user}"),
                );
                e.status["details"] = json!({"retryAfterSeconds": 1});
                return Err(e);
            }
            *n += 1;
        }
        let slot = WatchSlot {
            api: self.clone(),
            user,
        };
        let sel =
            mach::Selectors::from_query(t.res.kind, &r.query).map_err(ApiError::bad_request)?;
        let opts =
            watch::Options::from_query(&r.query, &self.cfg).map_err(ApiError::bad_request)?;
        let table = web::wants_table(&r.headers);
        let body = watch::start(
            self.store.clone(),
            t.clone(),
            sel,
            opts,
            table,
            Box::new(slot),
        )
        .await?;
        let ct = if table { web::TABLE } else { web::JSON };
        let mut resp = Response::new(body);
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(ct),
        );
        Ok(resp)
    }

    fn parse_body(&self, r: &Req) -> ApiResult<Value> {
        let ct = r
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json");
        if !(ct.starts_with("application/json") || ct.contains("yaml") || ct.contains("+json")) {
            let hint = if ct.contains("protobuf") {
                " (ferry-server does not decode protobuf bodies yet; use `kubectl create -f` / `apply -f`, which send JSON)"
            } else {
                ""
            };
            return Err(ApiError::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {ct}){hint}")));
        }
        mach::decode_body(&r.body, ct).map_err(ApiError::bad_request)
    }

    fn check_kind(t: &Target, obj: &Value) -> ApiResult<()> {
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        let av = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        if (!kind.is_empty() && kind != t.res.kind) || (!av.is_empty() && av != t.res.api_version())
        {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) and kind ({kind}) do not match the path ({} {})",
                t.res.api_version(),
                t.res.kind
            )));
        }
        Ok(())
    }

    /// Field validation (`fieldValidation=Strict|Warn|Ignore`, default Warn): returns warnings.
    fn field_validation(t: &Target, r: &Req, obj: &Value) -> ApiResult<Vec<String>> {
        let mode = r
            .query
            .get("fieldValidation")
            .map(String::as_str)
            .unwrap_or("Warn");
        if mode == "Ignore" {
            return Ok(Vec::new());
        }
        let unknown = mach::unknown_fields(t.res, obj).map_err(ApiError::bad_request)?;
        if unknown.is_empty() {
            return Ok(Vec::new());
        }
        let msgs: Vec<String> = unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect();
        if mode == "Strict" {
            return Err(ApiError::bad_request(format!(
                "strict decoding error: {}",
                msgs.join(", ")
            )));
        }
        Ok(msgs)
    }

    async fn ensure_namespace(&self, t: &Target, ns: &str) -> ApiResult<()> {
        if !t.res.namespaced {
            return Ok(());
        }
        let nsres =
            resources::by_kind("Namespace").ok_or_else(|| ApiError::internal("no namespaces"))?;
        match self.get_obj(nsres, "", ns).await {
            Ok((o, _)) if !meta_str(&o, "deletionTimestamp").is_empty() && t.res.kind != "Event" => Err(ApiError::new(
                403,
                "Forbidden",
                format!("{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated", t.res.plural, t.name.clone().unwrap_or_default()),
            )),
            Ok(_) => Ok(()),
            Err(_) => Err(ApiError::new(404, "NotFound", format!("namespaces \"{ns}\" not found"))),
        }
    }

    async fn create(&self, t: &Target, r: &Req) -> ApiResult<Response<Body>> {
        let mut obj = self.parse_body(r)?;
        Self::check_kind(t, &obj)?;
        let warnings = Self::field_validation(t, r, &obj)?;
        let ns = Self::ns_of(t);
        if t.res.namespaced {
            let body_ns = meta_str(&obj, "namespace").to_owned();
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
            }
            meta_mut(&mut obj).insert("namespace".into(), ns.clone().into());
        } else {
            meta_mut(&mut obj).remove("namespace");
        }
        if objects::name(&obj).is_empty() {
            let gen = meta_str(&obj, "generateName").to_owned();
            if !gen.is_empty() {
                let n = mach::generate_name(&gen);
                meta_mut(&mut obj).insert("name".into(), n.into());
            }
        }
        self.ensure_namespace(t, &ns).await?;
        let obj = mach::track_update(t.res, None, &obj, &manager(r), None);
        let created = self.create_obj(t.res, &ns, obj, dry_run(r)).await?;
        let mut resp = self.respond(t, r, StatusCode::CREATED, &created);
        add_warnings(&mut resp, &warnings);
        Ok(resp)
    }

    /// Defaults, validates, allocates and stores a new object.
    pub async fn create_obj(
        &self,
        res: &'static Resource,
        ns: &str,
        mut obj: Value,
        dry: bool,
    ) -> ApiResult<Value> {
        obj["kind"] = res.kind.into();
        obj["apiVersion"] = res.api_version().into();
        let name = objects::name(&obj).to_owned();
        admission::defaults_on_create(res, &mut obj, ns);
        let causes = mach::validate(res, &obj);
        if !causes.is_empty() {
            return Err(ApiError::from_pair(mach::invalid(res, &name, causes)));
        }
        let key = res.key(ns, &name);
        if dry {
            if self
                .store
                .get(&key)
                .await
                .map_err(|e| store_err(res, &name, e))?
                .is_some()
            {
                return Err(ApiError::from_pair(mach::already_exists(res, &name)));
            }
            return Ok(obj);
        }
        let allocated = admission::allocate(self, res, &mut obj, None).await?;
        match self.store.create(&key, to_stored(&obj)).await {
            Ok(kv) => Ok(from_kv(&kv, res.kind, &res.api_version())),
            Err(e) => {
                admission::release(self, &allocated).await;
                Err(store_err(res, &name, e))
            }
        }
    }

    /// PUT and PATCH, on the object or its status/scale subresource.
    async fn write(&self, t: &Target, r: &Req, patch: bool) -> ApiResult<Response<Body>> {
        let ns = Self::ns_of(t);
        let name = t.name.clone().unwrap_or_default();
        let key = t.res.key(&ns, &name);
        let ct = r
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_owned();
        let apply = patch && ct.starts_with("application/apply-patch");
        let mut warnings = Vec::new();
        // Optimistic concurrency: a PATCH retries on conflict; a PUT with a resourceVersion does not.
        for _ in 0..16 {
            let current = self
                .store
                .get(&key)
                .await
                .map_err(|e| store_err(t.res, &name, e))?;
            let Some(kv) = current else {
                if apply && t.sub.is_none() {
                    return self.apply_create(t, r, &ns).await;
                }
                return Err(ApiError::from_pair(mach::not_found(t.res, &name)));
            };
            let old = from_kv(&kv, t.res.kind, &t.res.api_version());
            let (new, expected) = match t.sub {
                Some(Sub::Scale) => {
                    let scale = admission::scale_of(t.res, &old);
                    let new_scale = if patch {
                        self.patched(t, r, &scale, &ct)?
                    } else {
                        self.parse_body(r)?
                    };
                    let want_rv = meta_str(&new_scale, "resourceVersion").to_owned();
                    if !patch && !want_rv.is_empty() && want_rv != kv.mod_rev.to_string() {
                        return Err(ApiError::from_pair(mach::conflict(t.res, &name, "the object has been modified; please apply your changes to the latest version and try again")));
                    }
                    let replicas = new_scale
                        .pointer("/spec/replicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    if replicas < 0 {
                        return Err(ApiError::from_pair(mach::invalid(
                            t.res,
                            &name,
                            vec![mach::cause(
                                "spec.replicas",
                                "FieldValueInvalid",
                                "must be greater than or equal to 0",
                            )],
                        )));
                    }
                    let mut new = old.clone();
                    new["spec"]["replicas"] = replicas.into();
                    (new, kv.mod_rev)
                }
                _ => {
                    let incoming = if patch {
                        self.patched(t, r, &old, &ct)?
                    } else {
                        let body = self.parse_body(r)?;
                        Self::check_kind(t, &body)?;
                        warnings = Self::field_validation(t, r, &body)?;
                        body
                    };
                    let want_rv = meta_str(&incoming, "resourceVersion").to_owned();
                    // A patch that names a resourceVersion makes it a precondition (upstream too).
                    if patch && !apply && !want_rv.is_empty() && want_rv != kv.mod_rev.to_string() {
                        return Err(ApiError::from_pair(mach::conflict(t.res, &name, "the object has been modified; please apply your changes to the latest version and try again")));
                    }
                    let expected = if !patch && !want_rv.is_empty() {
                        want_rv.parse::<Rev>().map_err(|_| {
                            ApiError::bad_request(format!("invalid resourceVersion {want_rv:?}"))
                        })?
                    } else {
                        kv.mod_rev
                    };
                    if objects::name(&incoming) != name && !objects::name(&incoming).is_empty() {
                        return Err(ApiError::bad_request(format!("the name of the object ({}) does not match the name on the URL ({name})", objects::name(&incoming))));
                    }
                    let merged = admission::merge_update(t.res, t.sub, &old, incoming);
                    (merged, expected)
                }
            };
            let mut new = if apply {
                new
            } else {
                mach::track_update(t.res, Some(&old), &new, &manager(r), t.sub.map(Sub::name))
            };
            admission::on_update(t.res, &old, &mut new);
            let causes = mach::validate(t.res, &new);
            if !causes.is_empty() {
                return Err(ApiError::from_pair(mach::invalid(t.res, &name, causes)));
            }
            admission::check_immutable(t.res, &old, &new)
                .map_err(|c| ApiError::from_pair(mach::invalid(t.res, &name, c)))?;
            if dry_run(r) {
                return Ok(self.respond(t, r, StatusCode::OK, &new));
            }
            // Finalizers emptied on an object being deleted: the deletion completes.
            if !meta_str(&new, "deletionTimestamp").is_empty()
                && admission::finalizers(&new).is_empty()
                && admission::waits_for_finalizers_only(t.res, &new)
            {
                let (_, last) = match self.store.delete(&key, Some(expected)).await {
                    Ok(x) => x,
                    Err(StoreError::Conflict { .. }) if patch => continue,
                    Err(e) => return Err(store_err(t.res, &name, e)),
                };
                admission::release_for(
                    self,
                    t.res,
                    &from_kv(&last, t.res.kind, &t.res.api_version()),
                )
                .await;
                return Ok(self.respond(t, r, StatusCode::OK, &new));
            }
            if new == old {
                // No change: no write, no event (what kubectl calls "unchanged").
                return Ok(self.sub_response(t, r, &old));
            }
            match self
                .store
                .update(&key, to_stored(&new), Some(expected))
                .await
            {
                Ok(kv) => {
                    let stored = from_kv(&kv, t.res.kind, &t.res.api_version());
                    let mut resp = self.sub_response(t, r, &stored);
                    add_warnings(&mut resp, &warnings);
                    return Ok(resp);
                }
                Err(StoreError::Conflict { .. }) if patch => continue,
                Err(e) => return Err(store_err(t.res, &name, e)),
            }
        }
        Err(ApiError::from_pair(mach::conflict(
            t.res,
            &name,
            "too many concurrent writers; try again",
        )))
    }

    fn sub_response(&self, t: &Target, r: &Req, obj: &Value) -> Response<Body> {
        match t.sub {
            Some(Sub::Scale) => web::json(StatusCode::OK, &admission::scale_of(t.res, obj)),
            _ => self.respond(t, r, StatusCode::OK, obj),
        }
    }

    fn patched(&self, t: &Target, r: &Req, current: &Value, ct: &str) -> ApiResult<Value> {
        let patch = mach::decode_body(&r.body, ct).map_err(ApiError::bad_request)?;
        let kind = if t.sub == Some(Sub::Scale) {
            "Scale"
        } else {
            t.res.kind
        };
        let out = if ct.starts_with("application/json-patch+json") {
            mach::json_patch(current, &patch)?
        } else if ct.starts_with("application/merge-patch+json") {
            mach::merge_patch(current, &patch)?
        } else if ct.starts_with("application/strategic-merge-patch+json") {
            mach::strategic_merge(kind, current, &patch)?
        } else if ct.starts_with("application/apply-patch") {
            let manager = r.query.get("fieldManager").cloned().unwrap_or_default();
            if manager.is_empty() {
                return Err(ApiError::bad_request(
                    "PATCH with apply-patch requires a fieldManager",
                ));
            }
            let force = r.query.get("force").is_some_and(|f| f == "true");
            Self::check_kind(t, &patch)?;
            mach::apply(t.res, Some(current), &patch, &manager, force)?.0
        } else {
            return Err(ApiError::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct})")));
        };
        Ok(out)
    }

    async fn apply_create(&self, t: &Target, r: &Req, ns: &str) -> ApiResult<Response<Body>> {
        let patch = self.parse_body(r)?;
        Self::check_kind(t, &patch)?;
        let manager = r.query.get("fieldManager").cloned().unwrap_or_default();
        if manager.is_empty() {
            return Err(ApiError::bad_request(
                "PATCH with apply-patch requires a fieldManager",
            ));
        }
        let warnings = Self::field_validation(t, r, &patch)?;
        let (mut obj, _) = mach::apply(t.res, None, &patch, &manager, true)?;
        if t.res.namespaced {
            meta_mut(&mut obj).insert("namespace".into(), ns.into());
        }
        meta_mut(&mut obj).insert("name".into(), t.name.clone().unwrap_or_default().into());
        self.ensure_namespace(t, ns).await?;
        let created = self.create_obj(t.res, ns, obj, dry_run(r)).await?;
        let mut resp = self.respond(t, r, StatusCode::CREATED, &created);
        add_warnings(&mut resp, &warnings);
        Ok(resp)
    }

    async fn delete(&self, t: &Target, r: &Req) -> ApiResult<Response<Body>> {
        let ns = Self::ns_of(t);
        let name = t.name.clone().unwrap_or_default();
        let opts: Value = if r.body.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(&r.body)
                .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
        };
        let mut grace = r
            .query
            .get("gracePeriodSeconds")
            .and_then(|g| g.parse::<i64>().ok());
        if let Some(g) = opts.get("gracePeriodSeconds").and_then(Value::as_i64) {
            grace = Some(g);
        }
        let policy = admission::propagation_policy(&opts, r.query.get("propagationPolicy"))
            .map_err(ApiError::bad_request)?;
        let out = self
            .delete_obj(
                t.res,
                &ns,
                &name,
                grace,
                opts.get("preconditions"),
                dry_run(r),
                policy,
            )
            .await?;
        Ok(match out {
            Deleted::Gone(obj) | Deleted::Pending(obj) => self.respond(t, r, StatusCode::OK, &obj),
        })
    }

    /// Deletes (or starts deleting) one object. `policy` is the DeleteOptions
    /// `propagationPolicy`: `Foreground` and `Orphan` keep the object, marked for deletion, with
    /// the `foregroundDeletion` / `orphan` finalizer the garbage collector acts on.
    #[expect(clippy::too_many_arguments, reason = "the DeleteOptions, spelled out")]
    pub async fn delete_obj(
        &self,
        res: &'static Resource,
        ns: &str,
        name: &str,
        grace: Option<i64>,
        pre: Option<&Value>,
        dry: bool,
        policy: Option<admission::Propagation>,
    ) -> ApiResult<Deleted> {
        let key = res.key(ns, name);
        for _ in 0..16 {
            let Some(kv) = self
                .store
                .get(&key)
                .await
                .map_err(|e| store_err(res, name, e))?
            else {
                return Err(ApiError::from_pair(mach::not_found(res, name)));
            };
            let obj = from_kv(&kv, res.kind, &res.api_version());
            if let Some(p) = pre {
                let uid_ok = p
                    .get("uid")
                    .and_then(Value::as_str)
                    .is_none_or(|u| u == meta_str(&obj, "uid"));
                let rv_ok = p
                    .get("resourceVersion")
                    .and_then(Value::as_str)
                    .is_none_or(|v| v == kv.mod_rev.to_string());
                if !uid_ok || !rv_ok {
                    return Err(ApiError::from_pair(mach::conflict(res, name, "Precondition failed: UID or ResourceVersion in precondition does not match")));
                }
            }
            if dry {
                return Ok(Deleted::Gone(obj));
            }
            let mut target = obj.clone();
            // Deleting a Namespace deletes its contents anyway.
            let policy = policy.filter(|_| res.kind != "Namespace");
            if let Some(f) = policy.and_then(admission::Propagation::finalizer) {
                admission::add_finalizer(&mut target, f);
            }
            if let Some(pending) = admission::graceful(res, &target, grace) {
                if pending == obj {
                    return Ok(Deleted::Pending(obj));
                }
                match self
                    .store
                    .update(&key, to_stored(&pending), Some(kv.mod_rev))
                    .await
                {
                    Ok(kv) => {
                        return Ok(Deleted::Pending(from_kv(&kv, res.kind, &res.api_version())))
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(store_err(res, name, e)),
                }
            }
            if res.kind == "Namespace" {
                self.purge_namespace(name).await?;
            }
            match self.store.delete(&key, Some(kv.mod_rev)).await {
                Ok((rev, last)) => {
                    let mut gone = from_kv(&last, res.kind, &res.api_version());
                    objects::stamp(&mut gone, rev, res.kind, &res.api_version());
                    admission::release_for(self, res, &gone).await;
                    return Ok(Deleted::Gone(gone));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_err(res, name, e)),
            }
        }
        Err(ApiError::from_pair(mach::conflict(
            res,
            name,
            "too many concurrent writers; try again",
        )))
    }

    async fn purge_namespace(&self, ns: &str) -> ApiResult<()> {
        for res in resources::RESOURCES.iter().filter(|r| r.namespaced) {
            let page = self
                .store
                .list(&res.key_prefix(Some(ns)), None, None, None)
                .await
                .map_err(|e| store_err(res, "", e))?;
            for kv in page.kvs {
                match self.store.delete(&kv.key, None).await {
                    Ok((_, last)) => {
                        admission::release_for(
                            self,
                            res,
                            &from_kv(&last, res.kind, &res.api_version()),
                        )
                        .await
                    }
                    Err(StoreError::NotFound { .. }) => {}
                    Err(e) => return Err(store_err(res, "", e)),
                }
            }
        }
        Ok(())
    }

    async fn delete_collection(&self, t: &Target, r: &Req) -> ApiResult<Response<Body>> {
        let sel =
            mach::Selectors::from_query(t.res.kind, &r.query).map_err(ApiError::bad_request)?;
        let page = self
            .store
            .list(&t.res.key_prefix(t.namespace.as_deref()), None, None, None)
            .await
            .map_err(|e| store_err(t.res, "", e))?;
        let mut items = Vec::new();
        for kv in page.kvs {
            let obj = from_kv(&kv, t.res.kind, &t.res.api_version());
            if !sel.matches(&obj) {
                continue;
            }
            let ns = meta_str(&obj, "namespace").to_owned();
            match self
                .delete_obj(
                    t.res,
                    &ns,
                    objects::name(&obj),
                    None,
                    None,
                    dry_run(r),
                    None,
                )
                .await
            {
                Ok(Deleted::Gone(o) | Deleted::Pending(o)) => items.push(o),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let rev = self
            .store
            .current_rev()
            .await
            .map_err(|e| store_err(t.res, "", e))?;
        Ok(web::json(
            StatusCode::OK,
            &json!({"kind": t.res.list_kind(), "apiVersion": t.res.api_version(), "metadata": {"resourceVersion": rev.to_string()}, "items": items}),
        ))
    }

    async fn get_scale(&self, t: &Target) -> ApiResult<Response<Body>> {
        let name = t.name.clone().unwrap_or_default();
        let (obj, _) = self.get_obj(t.res, &Self::ns_of(t), &name).await?;
        Ok(web::json(StatusCode::OK, &admission::scale_of(t.res, &obj)))
    }

    /// `GET pods/{name}/log`: proxied to the kubelet of the pod's node
    /// (`http://<InternalIP>:<daemonEndpoints port>/containerLogs/...`, with that node's token),
    /// streamed back as it comes (`follow=true` streams until the container ends).
    async fn pod_log(&self, t: &Target, r: &Req) -> ApiResult<Response<Body>> {
        let ns = Self::ns_of(t);
        let name = t.name.clone().unwrap_or_default();
        let (pod, _) = self.get_obj(t.res, &ns, &name).await?;
        let containers: Vec<&str> = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect())
            .unwrap_or_default();
        let container = match r.query.get("container").filter(|c| !c.is_empty()) {
            Some(c) => {
                if !containers.contains(&c.as_str()) {
                    return Err(ApiError::bad_request(format!(
                        "container {c} is not valid for pod {name}"
                    )));
                }
                c.clone()
            }
            None => match containers.as_slice() {
                [one] => (*one).to_owned(),
                many => {
                    let default = pod
                        .pointer("/metadata/annotations/kubectl.kubernetes.io~1default-container")
                        .and_then(Value::as_str);
                    match default.filter(|d| many.contains(d)) {
                        Some(d) => d.to_owned(),
                        None => {
                            return Err(ApiError::bad_request(format!(
                                "a container name must be specified for pod {name}, choose one of: [{}]",
                                many.join(" ")
                            )))
                        }
                    }
                }
            },
        };
        let node = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if node.is_empty() {
            return Err(ApiError::bad_request(format!(
                "pod {name} does not have a host assigned"
            )));
        }
        let nodes =
            resources::by_kind("Node").ok_or_else(|| ApiError::internal("no Node resource"))?;
        let (n, _) = self.get_obj(nodes, "", node).await?;
        let ip = n
            .pointer("/status/addresses")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|x| x["type"] == "InternalIP"))
            .and_then(|x| x["address"].as_str())
            .ok_or_else(|| {
                ApiError::new(
                    503,
                    "ServiceUnavailable",
                    format!("node {node} has no InternalIP"),
                )
            })?
            .to_owned();
        let port = n
            .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
            .and_then(Value::as_u64)
            .unwrap_or(10250);
        let token = self.tokens.existing_node_token(node).ok_or_else(|| {
            ApiError::new(
                503,
                "ServiceUnavailable",
                format!("node {node} has no credentials"),
            )
        })?;
        let mut query = Vec::new();
        for k in [
            "follow",
            "previous",
            "tailLines",
            "limitBytes",
            "sinceSeconds",
            "timestamps",
        ] {
            // Only plain values (numbers, booleans) are forwarded.
            if let Some(v) = r
                .query
                .get(k)
                .filter(|v| v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
            {
                query.push(format!("{k}={v}"));
            }
        }
        let path = format!("/containerLogs/{ns}/{name}/{container}?{}", query.join("&"));
        let unreachable = |e: &dyn std::fmt::Display| {
            ApiError::new(
                503,
                "ServiceUnavailable",
                format!("error dialing the kubelet of node {node} ({ip}:{port}): {e}"),
            )
        };
        let tcp = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tokio::net::TcpStream::connect((ip.as_str(), port as u16)),
        )
        .await
        .map_err(|_| unreachable(&"timeout"))?
        .map_err(|e| unreachable(&e))?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .map_err(|e| unreachable(&e))?;
        tokio::spawn(conn);
        let req = http::Request::get(path)
            .header(http::header::HOST, format!("{ip}:{port}"))
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let resp = send.send_request(req).await.map_err(|e| unreachable(&e))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                .unwrap_or_default();
            return Err(ApiError::new(
                status.as_u16(),
                "BadRequest",
                body.trim().to_owned(),
            ));
        }
        let body = resp.into_body().map_err(std::io::Error::other).boxed();
        let mut out = Response::new(body);
        out.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain"),
        );
        Ok(out)
    }

    async fn binding(&self, t: &Target, r: &Req) -> ApiResult<Response<Body>> {
        let ns = Self::ns_of(t);
        let name = t.name.clone().unwrap_or_default();
        let body = self.parse_body(r)?;
        let node = body
            .pointer("/target/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if node.is_empty() {
            return Err(ApiError::from_pair(mach::invalid(
                t.res,
                &name,
                vec![mach::cause(
                    "target.name",
                    "FieldValueRequired",
                    "Required value",
                )],
            )));
        }
        let key = t.res.key(&ns, &name);
        for _ in 0..16 {
            let Some(kv) = self
                .store
                .get(&key)
                .await
                .map_err(|e| store_err(t.res, &name, e))?
            else {
                return Err(ApiError::from_pair(mach::not_found(t.res, &name)));
            };
            let mut pod = from_kv(&kv, t.res.kind, &t.res.api_version());
            let want_uid = body
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !want_uid.is_empty() && want_uid != meta_str(&pod, "uid") {
                return Err(ApiError::from_pair(mach::conflict(
                    t.res,
                    &name,
                    "Precondition failed: UID in precondition does not match",
                )));
            }
            if !meta_str(&pod, "deletionTimestamp").is_empty() {
                return Err(ApiError::from_pair(mach::conflict(
                    t.res,
                    &name,
                    "pod is being deleted, cannot be assigned to a host",
                )));
            }
            if pod
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty())
            {
                return Err(ApiError::from_pair(mach::conflict(
                    t.res,
                    &name,
                    &format!(
                        "pod {name} is already assigned to node {:?}",
                        pod["spec"]["nodeName"].as_str().unwrap_or("")
                    ),
                )));
            }
            if pod
                .pointer("/spec/schedulingGates")
                .and_then(Value::as_array)
                .is_some_and(|g| !g.is_empty())
            {
                return Err(ApiError::from_pair(mach::conflict(
                    t.res,
                    &name,
                    "pod has scheduling gates",
                )));
            }
            pod["spec"]["nodeName"] = node.clone().into();
            if let Some(a) = body
                .pointer("/metadata/annotations")
                .and_then(Value::as_object)
            {
                let m = meta_mut(&mut pod);
                let ann = m.entry("annotations").or_insert_with(|| json!({}));
                for (k, v) in a {
                    ann[k] = v.clone();
                }
            }
            admission::set_condition(&mut pod, "PodScheduled", "True", "", "");
            match self
                .store
                .update(&key, to_stored(&pod), Some(kv.mod_rev))
                .await
            {
                Ok(_) => {
                    return Ok(web::json(
                        StatusCode::CREATED,
                        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                    ));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_err(t.res, &name, e)),
            }
        }
        Err(ApiError::from_pair(mach::conflict(
            t.res,
            &name,
            "too many concurrent writers; try again",
        )))
    }
}

/// The outcome of a delete.
#[derive(Debug)]
pub enum Deleted {
    /// Removed from the store (the last state).
    Gone(Value),
    /// Marked for deletion (graceful pod deletion, finalizers).
    Pending(Value),
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

/// The last-state value of a deleted key for watchers (unused helper kept for symmetry).
pub fn kv_value(kv: &Kv) -> &[u8] {
    &kv.value
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
        assert!(parse_path("/api/v1/namespaces/default/pods/web/exec").is_err());
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
