//! `POST pods/{name}/binding`: binds a pending pod to a node (what the scheduler calls), with
//! upstream's conflicts (UID precondition, being deleted, already bound, scheduling gates).

use crate::admission;
use crate::api::Api;
use crate::machinery as mach;
use crate::objects::{from_kv, meta_mut, meta_str, to_stored};
use crate::request::{store_err, ApiResult, Req, Target};
use crate::web::{self, ApiError, Body};
use ferry_store::StoreError;
use http::{Response, StatusCode};
use serde_json::{json, Value};

impl Api {
    pub(in crate::api) async fn binding(&self, t: &Target, r: &Req) -> ApiResult<Response<Body>> {
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
