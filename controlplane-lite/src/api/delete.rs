//! Deletes: one object (DeleteOptions: grace period, preconditions, `propagationPolicy`;
//! graceful pod deletion and finalizers leave it [`Deleted::Pending`]), a namespace's contents
//! with it, and deletecollection.

use super::{dry_run, Api};
use crate::admission;
use crate::machinery as mach;
use crate::objects::{self, from_kv, meta_str, to_stored};
use crate::request::{store_err, ApiResult, Req, Target};
use crate::resources::{self, Resource};
use crate::web::{self, ApiError, Body};
use ferry_store::StoreError;
use http::{Response, StatusCode};
use serde_json::{json, Value};

/// The outcome of a delete.
#[derive(Debug)]
pub enum Deleted {
    /// Removed from the store (the last state).
    Gone(Value),
    /// Marked for deletion (graceful pod deletion, finalizers).
    Pending(Value),
}

impl Api {
    pub(super) async fn delete(&self, t: &Target, r: &Req) -> ApiResult<Response<Body>> {
        let ns = Self::ns_of(t);
        let name = t.name.clone().unwrap_or_default();
        // DeleteOptions: JSON, or protobuf from typed clients.
        let opts: Value = if r.body.is_empty() {
            json!({})
        } else {
            self.parse_body(r).map_err(|mut e| {
                let why = e.status["message"].as_str().unwrap_or_default();
                e.status["message"] = format!("invalid DeleteOptions: {why}").into();
                e
            })?
        };
        crate::machinery::check_delete_options(&opts)?;
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
                    admission::release_for(&self.allocator(), res, &gone).await;
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
                            &self.allocator(),
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

    pub(super) async fn delete_collection(&self, t: &Target, r: &Req) -> ApiResult<Response<Body>> {
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
}
