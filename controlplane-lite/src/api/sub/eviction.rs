//! `POST pods/{name}/eviction`: the Eviction API (`policy/v1` and `v1beta1` Eviction), what
//! `kubectl drain` calls for every pod it moves off a node.
//!
//! As kube-apiserver's eviction REST: the body must be an Eviction whose name (if given) is the
//! URL's, its `deleteOptions` are validated and applied (grace period, preconditions, dry run), and
//! an allowed eviction answers `201` with a `Success` Status. PodDisruptionBudgets are not served,
//! so no budget can refuse an eviction: every eviction of an existing pod is a graceful delete.

use crate::api::{Api, Deleted};
use crate::machinery as mach;
use crate::request::{ApiResult, Req, Target};
use crate::web::{self, ApiError, Body};
use http::{Response, StatusCode};
use serde_json::{json, Value};

impl Api {
    pub(in crate::api) async fn eviction(&self, t: &Target, r: &Req) -> ApiResult<Response<Body>> {
        let ns = Self::ns_of(t);
        let name = t.name.clone().unwrap_or_default();
        let body = self.parse_body(r)?;
        let kind = body.get("kind").and_then(Value::as_str).unwrap_or_default();
        let api_version = body
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if kind != "Eviction" || !matches!(api_version, "policy/v1" | "policy/v1beta1") {
            return Err(ApiError::bad_request(format!(
                "the body of pods/eviction must be a policy/v1 Eviction, not {api_version} {kind}"
            )));
        }
        let body_name = body
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(
                "name in URL does not match name in Eviction object",
            ));
        }
        let opts = body.get("deleteOptions").cloned().unwrap_or(json!({}));
        if !opts.is_object() && !opts.is_null() {
            return Err(ApiError::bad_request(
                "deleteOptions of an Eviction must be an object",
            ));
        }
        let opts = if opts.is_null() { json!({}) } else { opts };
        mach::check_delete_options(&opts)?;
        let grace = opts.get("gracePeriodSeconds").and_then(Value::as_i64);
        let dry = opts
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(|v| v == "All"))
            || crate::api::dry_run(r);
        let out = self
            .delete_obj(
                t.res,
                &ns,
                &name,
                grace,
                opts.get("preconditions"),
                dry,
                None,
            )
            .await?;
        match out {
            Deleted::Gone(_) | Deleted::Pending(_) => Ok(web::json(
                StatusCode::CREATED,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            )),
        }
    }
}
