//! `pods/exec`, `pods/attach` and `pods/portforward`: the API server checks the request (who
//! asks, that the pod is bound and running, which container), then relays the client's upgrade
//! (a WebSocket, or SPDY/3.1 for older clients) to the kubelet of the pod's node and copies the
//! upgraded connection both ways, byte for byte. The protocols themselves (`v5.channel.k8s.io`,
//! tunneled `portforward.k8s.io`) are spoken by the kubelet (`ferry-kubelet`'s `stream` module).

use super::log::{kubelet_error, kubelet_unreachable, node_of, pick_container};
use crate::api::Api;
use crate::auth::{authorize, Attributes, Decision};
use crate::request::{ApiResult, Req, Target};
use crate::resources::Sub;
use crate::web::{ApiError, Body};
use bytes::Bytes;
use http::{HeaderName, Response, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// Request headers the kubelet needs to accept the upgrade.
const UPGRADE_REQUEST_HEADERS: [&str; 6] = [
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];
/// Response headers of the kubelet's 101 the client needs.
const UPGRADE_RESPONSE_HEADERS: [&str; 5] = [
    "connection",
    "upgrade",
    "sec-websocket-accept",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];

impl Api {
    /// `GET|POST pods/{name}/exec|attach|portforward`.
    pub(in crate::api) async fn pod_stream(
        &self,
        t: &Target,
        r: &Req,
    ) -> ApiResult<Response<Body>> {
        let sub = t.sub.ok_or_else(|| ApiError::internal("no subresource"))?;
        // A WebSocket upgrade is a GET, but what it does is a create (upstream's RBAC asks for
        // `create` on pods/exec too): ask the authorizer about that, whatever the method.
        let ns = Self::ns_of(t);
        let name = t.name.clone().unwrap_or_default();
        let attrs = Attributes {
            verb: "create",
            resource: "pods",
            subresource: Some(sub.name()),
            namespace: Some(&ns),
            name: Some(&name),
        };
        match authorize(&r.who, &attrs) {
            Decision::Allow => {}
            d => {
                let why = match d {
                    Decision::Deny(why) => why,
                    _ => "only administrators may".to_owned(),
                };
                return Err(ApiError::new(
                    403,
                    "Forbidden",
                    format!(
                        "pods \"{name}\" is forbidden: User \"{}\" cannot create resource \"pods/{}\": {why}",
                        r.who.user(),
                        sub.name()
                    ),
                ));
            }
        }
        let is_upgrade = r
            .headers
            .get(http::header::UPGRADE)
            .is_some_and(|v| !v.is_empty());
        if !is_upgrade {
            return Err(ApiError::bad_request(
                "Upgrade request required (a WebSocket or SPDY/3.1 upgrade)",
            ));
        }
        let (pod, _) = self.get_obj(t.res, &ns, &name).await?;
        let phase = pod
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        if matches!(phase, "Succeeded" | "Failed") {
            return Err(ApiError::bad_request(if sub == Sub::PortForward {
                format!("unable to forward port because pod is not running. Current status={phase}")
            } else {
                format!(
                    "cannot {} into a container in a completed pod; current phase is {phase}",
                    sub.name()
                )
            }));
        }
        let node = node_of(&pod, &name)?;
        let path = match sub {
            Sub::PortForward => format!("/portForward/{ns}/{name}"),
            _ => {
                let container = pick_container(&pod, &name, r.query.get("container"))?;
                format!("/{}/{ns}/{name}/{container}?{}", sub.name(), r.raw_query)
            }
        };
        let client_upgrade = r
            .upgrade
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| {
                ApiError::bad_request("this connection cannot be upgraded (HTTP/1.1 is required)")
            })?;
        let (mut send, mut req) = self.kubelet(&node).await?;
        for h in UPGRADE_REQUEST_HEADERS {
            for v in r.headers.get_all(h) {
                req = req.header(h, v);
            }
        }
        let req = req
            .method(r.method.clone())
            .uri(path)
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|e| ApiError::bad_request(format!("relaying the upgrade: {e}")))?;
        let mut resp =
            tokio::time::timeout(super::log::KUBELET_ANSWER_TIMEOUT, send.send_request(req))
                .await
                .map_err(|_| kubelet_unreachable(&node, &"no answer in time"))?
                .map_err(|e| kubelet_unreachable(&node, &e))?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(kubelet_error(resp).await);
        }
        let kubelet_upgrade = hyper::upgrade::on(&mut resp);
        let mut out = Response::new(
            http_body_util::Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed(),
        );
        *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        for h in UPGRADE_RESPONSE_HEADERS {
            for v in resp.headers().get_all(h) {
                out.headers_mut()
                    .append(HeaderName::from_static(h), v.clone());
            }
        }
        let what = format!("{}/{ns}/{name}", sub.name());
        // The session counts against --max-connections until it ends.
        let slot = r.slot.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let (client, kubelet) = match tokio::try_join!(client_upgrade, kubelet_upgrade) {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!("{what}: upgrade failed: {e}");
                    return;
                }
            };
            let (mut client, mut kubelet) = (TokioIo::new(client), TokioIo::new(kubelet));
            // 64 KiB buffers (tokio's default is 8 KiB): port-forward streams bulk data.
            let copied = tokio::io::copy_bidirectional_with_sizes(
                &mut client,
                &mut kubelet,
                1 << 16,
                1 << 16,
            )
            .await;
            if let Err(e) = copied {
                tracing::debug!("{what}: stream ended: {e}");
            }
        });
        Ok(out)
    }
}
