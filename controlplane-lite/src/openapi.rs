//! OpenAPI v3, as kube-apiserver serves it: an index (`/openapi/v3`) and one self-contained
//! document per group-version (`/openapi/v3/api/v1`, `/openapi/v3/apis/apps/v1`, ...).
//!
//! Each document carries, in `components.schemas`, the full schema of every kind served in that
//! group-version and of everything those schemas reference (`ObjectMeta`, `PodSpec`, ...), under
//! upstream's names (`io.k8s.api.core.v1.Pod`). The schemas are generated from the k8s-openapi
//! `v1_33` types (their `schemars` implementations, which carry upstream's field descriptions),
//! never written by hand; each kind's schema is marked with `x-kubernetes-group-version-kind`, which
//! is how `kubectl explain` finds it. Lists the server's strategic merge merges by key carry
//! `x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key` from that same table
//! (`ferry_apimachinery::patch::strategy`), so client-side `kubectl apply` computes patches with the
//! keys the server applies them with. `paths` lists one PATCH operation per kind with a
//! `fieldValidation` parameter (kubectl then validates on the server, `fieldValidation=Strict`) and
//! one POST per create-only review kind.
//!
//! Documents are built once, on first use, and served from memory with upstream's caching
//! contract (kube-openapi `handler3`): the index links each document as `?hash=<ETag>`; the ETag is
//! the upper-case hex SHA-512 of the JSON; a request carrying the current hash gets
//! `Cache-Control: public, immutable` and a one-year `Expires`, a stale hash a 301 to the current
//! URL, and a matching `If-None-Match` a 304.

use crate::resources::{group_versions, Resource, RESOURCES, REVIEWS};
use crate::web::{self, ApiError, Body};
use ferry_apimachinery::patch::strategy::{list_strategy, ListStrategy};
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use k8s_openapi::api::{
    apps::v1 as apps, authentication::v1 as authn, authorization::v1 as authz,
    coordination::v1 as coordination, core::v1 as core, discovery::v1 as discovery,
};
use k8s_openapi::Resource as _;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha512};
use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

/// The schema source of one kind: its group-version-kind and the k8s-openapi type behind it.
struct KindSchema {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    /// Adds the type (and everything it references) to the generator; returns its `$ref`.
    add: fn(&mut SchemaGenerator) -> schemars::Schema,
}

macro_rules! kinds {
    ($($t:ty),* $(,)?) => {
        &[$(KindSchema {
            group: <$t>::GROUP,
            version: <$t>::VERSION,
            kind: <$t>::KIND,
            add: |g| g.subschema_for::<$t>(),
        }),*]
    };
}

/// Every kind ferry-server serves (or is about to), by its k8s-openapi type. A served kind missing
/// here fails the `every_served_kind_has_a_schema` test.
static KINDS: &[KindSchema] = kinds![
    core::Namespace,
    core::Node,
    core::Pod,
    core::Service,
    core::Endpoints,
    core::Event,
    core::ConfigMap,
    core::Secret,
    core::ServiceAccount,
    apps::Deployment,
    apps::ReplicaSet,
    discovery::EndpointSlice,
    coordination::Lease,
    authz::SelfSubjectAccessReview,
    authz::SelfSubjectRulesReview,
    authn::SelfSubjectReview,
];

fn kind_schema(r: &Resource) -> Option<&'static KindSchema> {
    KINDS
        .iter()
        .find(|k| k.group == r.group && k.version == r.version && k.kind == r.kind)
}

fn path_key(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// Resources of one group-version: the stored kinds, then the create-only review kinds.
fn resources_of<'a>(
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'static Resource> + 'a {
    RESOURCES
        .iter()
        .chain(REVIEWS)
        .filter(move |r| r.group == group && r.version == version)
}

/// The operation-id stem upstream uses: `CoreV1`, `AppsV1`, `DiscoveryV1`, `AuthorizationV1`.
fn op_stem(group: &str, version: &str) -> String {
    let g = if group.is_empty() {
        "core"
    } else {
        group.split('.').next().unwrap_or(group)
    };
    format!("{}{}", capitalize(g), capitalize(version))
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

fn query_param(name: &str, ty: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": ty, "uniqueItems": true}})
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// The operation kubectl's field-validation check reads: PATCH of one object (for stored kinds),
/// POST of the collection (for the create-only review kinds).
fn operation(r: &Resource, schema_name: &str) -> (String, Value) {
    let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
    let stem = op_stem(r.group, r.version);
    let body = json!({"content": {"application/json": {"schema": schema_ref(schema_name)}}});
    let create_only = REVIEWS.contains(r);
    if create_only {
        let url = format!("{}/{}", r.prefix(), r.plural);
        let op = json!({"post": {
            "x-kubernetes-group-version-kind": gvk,
            "x-kubernetes-action": "post",
            "operationId": format!("create{stem}{}", r.kind),
            "parameters": [
                query_param("dryRun", "string"),
                query_param("fieldManager", "string"),
                query_param("fieldValidation", "string"),
            ],
            "requestBody": body,
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": schema_ref(schema_name)}}},
                "201": {"description": "Created", "content": {"application/json": {"schema": schema_ref(schema_name)}}},
                "401": {"description": "Unauthorized"},
            },
        }});
        return (url, op);
    }
    let url = if r.namespaced {
        format!(
            "{}/namespaces/{{namespace}}/{}/{{name}}",
            r.prefix(),
            r.plural
        )
    } else {
        format!("{}/{}/{{name}}", r.prefix(), r.plural)
    };
    let scope = if r.namespaced { "Namespaced" } else { "" };
    let op = json!({"patch": {
        "x-kubernetes-group-version-kind": gvk,
        "x-kubernetes-action": "patch",
        "operationId": format!("patch{stem}{scope}{}", r.kind),
        "parameters": [
            query_param("dryRun", "string"),
            query_param("fieldManager", "string"),
            query_param("fieldValidation", "string"),
            query_param("force", "boolean"),
        ],
        "requestBody": {"content": {
            "application/apply-patch+yaml": {"schema": schema_ref("io.k8s.apimachinery.pkg.apis.meta.v1.Patch")},
            "application/json-patch+json": {"schema": schema_ref("io.k8s.apimachinery.pkg.apis.meta.v1.Patch")},
            "application/merge-patch+json": {"schema": schema_ref("io.k8s.apimachinery.pkg.apis.meta.v1.Patch")},
            "application/strategic-merge-patch+json": {"schema": schema_ref("io.k8s.apimachinery.pkg.apis.meta.v1.Patch")},
        }},
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": schema_ref(schema_name)}}},
            "201": {"description": "Created", "content": {"application/json": {"schema": schema_ref(schema_name)}}},
            "401": {"description": "Unauthorized"},
        },
    }});
    (url, op)
}

/// Builds the document of one group-version (`api/v1`, `apis/apps/v1`), uncached.
fn build(group: &str, version: &str) -> Result<Value, String> {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let mut paths = Map::new();
    let mut kinds = Vec::new();
    for r in resources_of(group, version) {
        let k = kind_schema(r).ok_or_else(|| {
            format!(
                "no schema for {}/{} {}: add its k8s-openapi type to openapi::KINDS",
                r.group, r.version, r.kind
            )
        })?;
        let reference = (k.add)(&mut generator);
        let name = reference
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|s| s.strip_prefix("#/components/schemas/"))
            .ok_or_else(|| format!("{}: the generator did not return a $ref", r.kind))?
            .to_owned();
        let (url, op) = operation(r, &name);
        paths.insert(url, op);
        kinds.push((name, r));
    }
    let mut schemas = generator.take_definitions(true);
    // The `Patch` body every PATCH operation names, as upstream defines it.
    schemas.insert(
        "io.k8s.apimachinery.pkg.apis.meta.v1.Patch".to_owned(),
        json!({"description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.", "type": "object"}),
    );
    let roots: Vec<(String, &'static str)> = kinds
        .iter()
        .map(|(name, r)| (name.clone(), r.kind))
        .collect();
    mark_patch_strategies(&mut schemas, &roots)?;
    for (name, r) in kinds {
        let schema = schemas
            .get_mut(&name)
            .and_then(Value::as_object_mut)
            .ok_or_else(|| format!("{name}: generated schema missing"))?;
        schema.insert(
            "x-kubernetes-group-version-kind".to_owned(),
            json!([{"group": r.group, "kind": r.kind, "version": r.version}]),
        );
        // k8s-openapi marks `metadata` required on every kind (its Rust field is not optional);
        // upstream does not, and kubectl explain would print it as `-required-`.
        if let Some(Value::Array(req)) = schema.get_mut("required") {
            req.retain(|f| f != "metadata");
            if req.is_empty() {
                schema.remove("required");
            }
        }
    }
    Ok(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": crate::version::GIT_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// The definition a property schema refers to (`$ref`, or `allOf: [{$ref}]` when it carries its
/// own description), if any.
fn ref_of(s: &Value) -> Option<&str> {
    s.get("$ref")
        .or_else(|| {
            s.get("allOf")
                .and_then(|a| a.get(0))
                .and_then(|r| r.get("$ref"))
        })
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
}

/// One list field to mark: (definition, property, strategy).
type PatchMark = (String, String, ListStrategy);

/// Collects the lists under definition `def` (reached at `path` in a `kind`) that strategic merge
/// does not replace wholesale.
fn collect_patch_marks(
    schemas: &Map<String, Value>,
    def: &str,
    kind: &str,
    path: &mut Vec<String>,
    out: &mut Vec<PatchMark>,
) {
    // Kubernetes types are not recursive, but stay safe should one ever be.
    if path.len() > 16 {
        return;
    }
    let Some(props) = schemas
        .get(def)
        .and_then(|d| d.get("properties"))
        .and_then(Value::as_object)
    else {
        return;
    };
    for (name, prop) in props {
        path.push(name.clone());
        let target = if prop.get("type").and_then(Value::as_str) == Some("array") {
            let p: Vec<&str> = path.iter().map(String::as_str).collect();
            let strategy = list_strategy(kind, &p);
            if strategy != ListStrategy::Replace {
                out.push((def.to_owned(), name.clone(), strategy));
            }
            prop.get("items").and_then(ref_of)
        } else {
            ref_of(prop)
        };
        if let Some(t) = target {
            collect_patch_marks(schemas, t, kind, path, out);
        }
        path.pop();
    }
}

/// Marks the lists the server merges by key (or as sets) in a strategic merge patch
/// (`ferry_apimachinery`'s table) with upstream's `x-kubernetes-patch-strategy` and
/// `x-kubernetes-patch-merge-key`. Client-side `kubectl apply` computes its patches from these
/// schemas: without the marks it would treat every list as atomic and resend whole container
/// lists. Errors if two kinds disagree about one shared definition.
fn mark_patch_strategies(
    schemas: &mut Map<String, Value>,
    roots: &[(String, &'static str)],
) -> Result<(), String> {
    let mut marks = Vec::new();
    for (def, kind) in roots {
        collect_patch_marks(schemas, def, kind, &mut Vec::new(), &mut marks);
    }
    for (def, prop, strategy) in marks {
        let Some(p) = schemas
            .get_mut(&def)
            .and_then(|d| d.get_mut("properties"))
            .and_then(|p| p.get_mut(&prop))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        let key = match strategy {
            ListStrategy::MergeByKey(k) => Some(k),
            ListStrategy::MergePrimitive | ListStrategy::Replace => None,
        };
        let existing = p
            .get("x-kubernetes-patch-merge-key")
            .and_then(Value::as_str);
        if p.contains_key("x-kubernetes-patch-strategy") && existing != key {
            return Err(format!(
                "{def}.{prop}: kinds disagree on the merge key ({existing:?} vs {key:?})"
            ));
        }
        p.insert("x-kubernetes-patch-strategy".to_owned(), json!("merge"));
        if let Some(k) = key {
            p.insert("x-kubernetes-patch-merge-key".to_owned(), json!(k));
        }
    }
    Ok(())
}

/// One cached document: its JSON and its ETag (unquoted).
#[derive(Debug)]
struct Cached {
    body: bytes::Bytes,
    etag: String,
}

impl Cached {
    fn new(v: &Value) -> Cached {
        let body = serde_json::to_vec(v).unwrap_or_default();
        let etag = Sha512::digest(&body)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        Cached {
            body: body.into(),
            etag,
        }
    }
}

/// The index and every document, built once.
#[derive(Debug)]
struct Documents {
    index: Cached,
    by_path: BTreeMap<String, Cached>,
}

fn documents() -> &'static Result<Documents, String> {
    static DOCS: OnceLock<Result<Documents, String>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let mut by_path = BTreeMap::new();
        let mut index = Map::new();
        for (g, v) in group_versions() {
            let key = path_key(g, v);
            let doc = Cached::new(&build(g, v)?);
            index.insert(
                key.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={}", doc.etag)}),
            );
            by_path.insert(key, doc);
        }
        Ok(Documents {
            index: Cached::new(&json!({"paths": index})),
            by_path,
        })
    })
}

/// The document of one group-version (`api/v1`, `apis/apps/v1`) as JSON, if served.
pub fn document(path: &str) -> Option<Value> {
    let docs = documents().as_ref().ok()?;
    serde_json::from_slice(&docs.by_path.get(path)?.body).ok()
}

/// `/openapi/v3` as JSON: the index of group-version documents with their hashes.
pub fn index() -> Value {
    match documents() {
        Ok(d) => serde_json::from_slice(&d.index.body).unwrap_or_default(),
        Err(_) => json!({"paths": {}}),
    }
}

fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
        .any(|t| t == etag || t == "*")
}

fn cached_response(doc: &Cached, headers: &HeaderMap, cache_control: &str) -> Response<Body> {
    let mut resp = if if_none_match(headers, &doc.etag) {
        let mut r = Response::new(web::full(bytes::Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(web::full(doc.body.clone()));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(web::JSON));
        r
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", doc.etag)) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(cache_control) {
        h.insert(header::CACHE_CONTROL, v);
    }
    resp
}

fn internal(e: &str) -> Response<Body> {
    ApiError::internal(format!("building the OpenAPI documents: {e}")).response()
}

/// `GET /openapi/v3`.
pub fn serve_index(headers: &HeaderMap) -> Response<Body> {
    match documents() {
        Ok(d) => cached_response(&d.index, headers, "no-cache, private"),
        Err(e) => internal(e),
    }
}

/// `GET /openapi/v3/<path>[?hash=...]`.
pub fn serve_document(
    path: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Response<Body> {
    let docs = match documents() {
        Ok(d) => d,
        Err(e) => return internal(e),
    };
    let Some(doc) = docs.by_path.get(path) else {
        return ApiError::new(
            404,
            "NotFound",
            format!("no OpenAPI document for {path:?}: group-version not served by ferry-server"),
        )
        .response();
    };
    let hash = query.get("hash").filter(|h| !h.is_empty());
    let mut resp = match hash {
        Some(h) if *h != doc.etag => {
            let mut r = Response::new(web::full(bytes::Bytes::new()));
            *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
            if let Ok(v) = HeaderValue::from_str(&format!("/openapi/v3/{path}?hash={}", doc.etag)) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        Some(_) => {
            let mut r = cached_response(doc, headers, "public, immutable");
            let expires = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 365);
            let when = expires.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string();
            if let Ok(v) = HeaderValue::from_str(&when) {
                r.headers_mut().insert(header::EXPIRES, v);
            }
            r
        }
        None => cached_response(doc, headers, "no-cache, private"),
    };
    resp.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_served() -> impl Iterator<Item = &'static Resource> {
        RESOURCES.iter().chain(REVIEWS)
    }

    #[test]
    fn every_served_kind_has_a_schema() {
        for r in all_served() {
            assert!(kind_schema(r).is_some(), "{} has no schema source", r.kind);
        }
        // Building fails on a kind without a schema: the table stays complete.
        assert!(documents().is_ok(), "{:?}", documents().as_ref().err());
    }

    /// Resolves `#/components/schemas/X` refs, also behind `allOf` (how descriptions ride along).
    fn resolve<'a>(doc: &'a Value, mut s: &'a Value) -> &'a Value {
        loop {
            if let Some(r) = s.get("$ref").and_then(Value::as_str) {
                let name = r.strip_prefix("#/components/schemas/").unwrap();
                s = &doc["components"]["schemas"][name];
            } else if let Some(inner) = s.get("allOf").and_then(|a| a.get(0)) {
                s = inner;
            } else if let Some(items) = s.get("items") {
                s = items;
            } else {
                return s;
            }
        }
    }

    fn field<'a>(doc: &'a Value, kind: &str, path: &[&str]) -> &'a Value {
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let mut s = schemas
            .values()
            .find(|s| {
                s["x-kubernetes-group-version-kind"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|g| g["kind"] == kind))
            })
            .unwrap_or_else(|| panic!("no schema marked as {kind}"));
        for p in path {
            s = resolve(doc, &s["properties"][*p]);
            assert!(!s.is_null(), "{kind}.{}: no field {p}", path.join("."));
        }
        s
    }

    #[test]
    fn schemas_resolve_to_any_depth() {
        let core = document("api/v1").unwrap();
        let ports = field(&core, "Pod", &["spec", "containers", "ports"]);
        assert_eq!(ports["properties"]["containerPort"]["type"], "integer");
        assert!(ports["required"]
            .as_array()
            .unwrap()
            .contains(&json!("containerPort")));
        let apps = document("apis/apps/v1").unwrap();
        let c = field(
            &apps,
            "Deployment",
            &["spec", "template", "spec", "containers"],
        );
        assert!(c["description"]
            .as_str()
            .unwrap()
            .contains("single application container"));
        // Every $ref in a document points inside it (the documents are self-contained).
        for doc in [&core, &apps] {
            let text = doc.to_string();
            for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
                let name = &part[..part.find('"').unwrap()];
                assert!(
                    doc["components"]["schemas"].get(name).is_some(),
                    "dangling $ref {name}"
                );
            }
        }
        // Strategic-merge keys, as the server applies them (client-side apply reads them).
        let spec = field(&core, "Pod", &["spec"]);
        assert_eq!(
            spec["properties"]["containers"]["x-kubernetes-patch-merge-key"],
            "name"
        );
        assert_eq!(
            spec["properties"]["containers"]["x-kubernetes-patch-strategy"],
            "merge"
        );
        assert!(spec["properties"]["tolerations"]
            .get("x-kubernetes-patch-strategy")
            .is_none());
        let container = field(&core, "Pod", &["spec", "containers"]);
        assert_eq!(
            container["properties"]["ports"]["x-kubernetes-patch-merge-key"],
            "containerPort"
        );
        let svc = field(&core, "Service", &["spec"]);
        assert_eq!(
            svc["properties"]["ports"]["x-kubernetes-patch-merge-key"],
            "port"
        );
        let meta =
            &core["components"]["schemas"]["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"];
        assert_eq!(
            meta["properties"]["finalizers"]["x-kubernetes-patch-strategy"],
            "merge"
        );
        assert_eq!(
            meta["properties"]["ownerReferences"]["x-kubernetes-patch-merge-key"],
            "uid"
        );
        let tpl = field(&apps, "Deployment", &["spec", "template", "spec"]);
        assert_eq!(
            tpl["properties"]["containers"]["x-kubernetes-patch-merge-key"],
            "name"
        );
        let pod = field(&core, "Pod", &[]);
        assert!(pod.get("required").is_none(), "metadata is not required");
        assert_eq!(
            pod["x-kubernetes-group-version-kind"],
            json!([{"group": "", "kind": "Pod", "version": "v1"}])
        );
    }

    #[test]
    fn every_kind_has_a_validation_operation() {
        for r in all_served() {
            let doc = document(&path_key(r.group, r.version)).unwrap();
            let found = doc["paths"].as_object().unwrap().values().any(|p| {
                ["patch", "post"].iter().any(|m| {
                    p[*m]["x-kubernetes-group-version-kind"]["kind"] == r.kind
                        && p[*m]["parameters"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|q| q["name"] == "fieldValidation")
                })
            });
            assert!(found, "{}", r.kind);
        }
        assert!(document("apis/nope/v1").is_none());
    }

    #[test]
    fn caching_follows_kube_openapi() {
        let idx = index();
        let url = idx["paths"]["api/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap()
            .to_owned();
        let hash = url.split_once("?hash=").unwrap().1.to_owned();
        assert_eq!(hash.len(), 128, "SHA-512, upper-case hex");
        let mut q = HashMap::new();
        q.insert("hash".to_owned(), hash.clone());
        let none = HeaderMap::new();
        let r = serve_document("api/v1", &q, &none);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[header::CACHE_CONTROL], "public, immutable");
        assert_eq!(r.headers()[header::ETAG], format!("\"{hash}\"").as_str());
        assert!(r.headers().contains_key(header::EXPIRES));
        q.insert("hash".to_owned(), "0123".to_owned());
        let r = serve_document("api/v1", &q, &none);
        assert_eq!(r.status(), 301);
        assert_eq!(r.headers()[header::LOCATION], url.as_str());
        let mut inm = HeaderMap::new();
        inm.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"{hash}\"")).unwrap(),
        );
        let r = serve_document("api/v1", &HashMap::new(), &inm);
        assert_eq!(r.status(), 304);
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache, private");
        assert_eq!(
            serve_document("apis/nope/v1", &HashMap::new(), &none).status(),
            404
        );
        let i = serve_index(&none);
        assert_eq!(i.status(), 200);
        assert!(i.headers().contains_key(header::ETAG));
    }
}
