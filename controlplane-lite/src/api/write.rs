//! Writes: create (namespace and `generateName`, defaulting, validation, allocation), update
//! and patch of an object or its status/scale subresource (JSON, merge, strategic merge and
//! server-side apply patches, optimistic concurrency, managedFields), and field validation
//! (`fieldValidation=Strict|Warn|Ignore`). A new namespace gets its `default` ServiceAccount.
//! Bodies are JSON (YAML that is JSON) or Kubernetes
//! protobuf, decoded by [`crate::protobuf`] into the same JSON.

use super::{add_warnings, dry_run, manager, Api};
use crate::admission;
use crate::machinery as mach;
use crate::objects::{self, from_kv, meta_mut, meta_str, to_stored};
use crate::request::{store_err, ApiResult, Req, Target};
use crate::resources::{self, Resource, Sub};
use crate::web::{self, ApiError, Body};
use ferry_store::{Rev, StoreError};
use http::{Response, StatusCode};
use serde_json::Value;

impl Api {
    /// The request body as a JSON object: JSON (and YAML that is JSON), or a Kubernetes protobuf
    /// body decoded into the same JSON ([`crate::protobuf`]); a body that does not decode is a
    /// 400 naming what failed.
    pub(crate) fn parse_body(&self, r: &Req) -> ApiResult<Value> {
        let ct = r
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json");
        if crate::protobuf::is_protobuf(ct) {
            return crate::protobuf::decode(&r.body).map_err(|e| {
                ApiError::bad_request(format!("the protobuf body does not decode: {e}"))
            });
        }
        if !(ct.starts_with("application/json") || ct.contains("yaml") || ct.contains("+json")) {
            return Err(ApiError::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {ct})")));
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

    pub(super) async fn create(&self, t: &Target, r: &Req) -> ApiResult<Response<Body>> {
        let mut obj = self.parse_body(r)?;
        Self::check_kind(t, &obj)?;
        mach::check_object_shape(t.res, &obj)?;
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
        admission::node_restriction(&r.who, t.res, None, &obj)?;
        let obj = mach::track_update(t.res, None, &obj, &manager(r), None);
        let created = self.create_obj(t.res, &ns, obj, dry_run(r)).await?;
        if t.res.kind == "Namespace" && !dry_run(r) {
            self.default_service_account(objects::name(&created)).await;
        }
        let mut resp = self.respond(t, r, StatusCode::CREATED, &created);
        add_warnings(&mut resp, &warnings);
        Ok(resp)
    }

    /// Gives namespace `ns` its `default` ServiceAccount, as kube-controller-manager's
    /// serviceaccounts controller does (an existing one is kept). A failure is logged: the
    /// namespace is usable without it.
    pub(crate) async fn default_service_account(&self, ns: &str) {
        let Some(res) = resources::by_kind("ServiceAccount") else {
            return;
        };
        let sa = serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": ns}});
        match self.create_obj(res, ns, sa, false).await {
            Ok(_) => {}
            Err(e) if e.code == 409 => {}
            Err(e) => {
                tracing::warn!(namespace = ns, status = %e.status, "creating the default ServiceAccount")
            }
        }
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
        let allocated = admission::allocate(&self.allocator(), res, &mut obj, None).await?;
        match self.store.create(&key, to_stored(&obj)).await {
            Ok(kv) => Ok(from_kv(&kv, res.kind, &res.api_version())),
            Err(e) => {
                admission::release(&self.allocator(), &allocated).await;
                Err(store_err(res, &name, e))
            }
        }
    }

    /// PUT and PATCH, on the object or its status/scale subresource.
    pub(super) async fn write(
        &self,
        t: &Target,
        r: &Req,
        patch: bool,
    ) -> ApiResult<Response<Body>> {
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
                        let body = self.parse_body(r)?;
                        mach::check_shape("Scale", "autoscaling/v1", &body)?;
                        body
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
                        mach::check_object_shape(t.res, &body)?;
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
            admission::node_restriction(&r.who, t.res, Some(&old), &new)?;
            let causes = mach::validate_update(t.res, Some(&old), &new);
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
                    &self.allocator(),
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
            // A Service's new node ports / health check node port are claimed before the write,
            // released if it fails; what it gave up is released once it is stored.
            let claimed = if t.sub.is_none() {
                admission::allocate(&self.allocator(), t.res, &mut new, Some(&old)).await?
            } else {
                Vec::new()
            };
            match self
                .store
                .update(&key, to_stored(&new), Some(expected))
                .await
            {
                Ok(kv) => {
                    admission::release(
                        &self.allocator(),
                        &admission::released_by_update(t.res, &old, &new),
                    )
                    .await;
                    let stored = from_kv(&kv, t.res.kind, &t.res.api_version());
                    let mut resp = self.sub_response(t, r, &stored);
                    add_warnings(&mut resp, &warnings);
                    return Ok(resp);
                }
                Err(StoreError::Conflict { .. }) if patch => {
                    admission::release(&self.allocator(), &claimed).await;
                    continue;
                }
                Err(e) => {
                    admission::release(&self.allocator(), &claimed).await;
                    return Err(store_err(t.res, &name, e));
                }
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
            mach::check_object_shape(t.res, &patch)?;
            mach::apply(t.res, Some(current), &patch, &manager, force)?.0
        } else {
            return Err(ApiError::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct})")));
        };
        // The patched object, before admission or validation reads it.
        if kind == "Scale" {
            mach::check_shape(kind, "autoscaling/v1", &out)?;
        } else {
            mach::check_object_shape(t.res, &out)?;
        }
        Ok(out)
    }

    async fn apply_create(&self, t: &Target, r: &Req, ns: &str) -> ApiResult<Response<Body>> {
        let patch = self.parse_body(r)?;
        Self::check_kind(t, &patch)?;
        mach::check_object_shape(t.res, &patch)?;
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
        admission::node_restriction(&r.who, t.res, None, &obj)?;
        let created = self.create_obj(t.res, ns, obj, dry_run(r)).await?;
        let mut resp = self.respond(t, r, StatusCode::CREATED, &created);
        add_warnings(&mut resp, &warnings);
        Ok(resp)
    }
}
