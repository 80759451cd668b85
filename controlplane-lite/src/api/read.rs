//! Reads: get one object (JSON, or a Table when asked), list (label and field selectors,
//! `limit`/`continue` pagination on one snapshot, `resourceVersion` and
//! `resourceVersionMatch`), and watch (at most `max_watches_per_client` per identity; the stream
//! itself is [`crate::watch`]).

use super::Api;
use crate::machinery as mach;
use crate::objects::{from_kv, meta_str};
use crate::request::{decode_continue, encode_continue, store_err, ApiResult, Req, Target};
use crate::resources::Resource;
use crate::watch;
use crate::web::{self, ApiError, Body};
use ferry_store::{Rev, StoreError};
use http::{Response, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;

/// One of a client's concurrent watches; dropping it (the stream ends) frees the slot.
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

    pub(super) fn respond(
        &self,
        t: &Target,
        r: &Req,
        status: StatusCode,
        obj: &Value,
    ) -> Response<Body> {
        // `/status` answers the whole object: its kind's table (`kubectl get --subresource=status`).
        let whole_object = matches!(t.sub, None | Some(crate::resources::Sub::Status));
        if web::wants_table(&r.headers) && whole_object {
            let rv = meta_str(obj, "resourceVersion").to_owned();
            let table = mach::table(t.res.kind, std::slice::from_ref(obj), &rv, "");
            return web::json_with(status, &table, web::TABLE);
        }
        web::json(status, obj)
    }

    pub(super) async fn get(&self, t: &Target, r: &Req) -> ApiResult<Response<Body>> {
        let name = t.name.clone().unwrap_or_default();
        let (obj, _) = self.get_obj(t.res, &Self::ns_of(t), &name).await?;
        Ok(self.respond(t, r, StatusCode::OK, &obj))
    }

    pub(super) async fn list(&self, t: &Target, r: &Req) -> ApiResult<Response<Body>> {
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

    pub(super) async fn watch(self: Arc<Self>, t: &Target, r: &Req) -> ApiResult<Response<Body>> {
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
}
