//! `GET pods/{name}/log`: proxied to the kubelet of the pod's node, and streamed back as it
//! comes; with the kubelet connection (and container choice) the streaming subresources share.

use crate::api::Api;
use crate::request::{ApiResult, Req, Target};
use crate::resources;
use crate::web::{ApiError, Body};
use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use serde_json::Value;

impl Api {
    /// `GET pods/{name}/log`: proxied to the kubelet of the pod's node
    /// (`/containerLogs/...` on its endpoint, see [`Api::kubelet`]), streamed back as it comes
    /// (`follow=true` streams until the container ends).
    pub(in crate::api) async fn pod_log(&self, t: &Target, r: &Req) -> ApiResult<Response<Body>> {
        let ns = Self::ns_of(t);
        let name = t.name.clone().unwrap_or_default();
        let (pod, _) = self.get_obj(t.res, &ns, &name).await?;
        let container = pick_container(&pod, &name, r.query.get("container"))?;
        let node = node_of(&pod, &name)?;
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
        let (mut send, req) = self.kubelet(&node).await?;
        let req = req
            .method(http::Method::GET)
            .uri(path)
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let resp = tokio::time::timeout(KUBELET_ANSWER_TIMEOUT, send.send_request(req))
            .await
            .map_err(|_| kubelet_unreachable(&node, &"no answer in time"))?
            .map_err(|e| kubelet_unreachable(&node, &e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(kubelet_error(resp).await);
        }
        let body = resp.into_body().map_err(std::io::Error::other).boxed();
        let mut out = Response::new(body);
        out.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain"),
        );
        Ok(out)
    }

    /// A TLS connection to the kubelet of `node` (its InternalIP and
    /// `status.daemonEndpoints.kubeletEndpoint.Port`; the kubelet's certificate is checked
    /// against the cluster CA for that IP, and this server presents its kubelet client
    /// certificate), and a request builder for it. Upgrades on the connection are served (exec,
    /// port-forward).
    pub(in crate::api) async fn kubelet(
        &self,
        node: &str,
    ) -> ApiResult<(
        hyper::client::conn::http1::SendRequest<http_body_util::Empty<Bytes>>,
        http::request::Builder,
    )> {
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
        let port = kubelet_port(&n, node)?;
        let addr: std::net::IpAddr = ip.parse().map_err(|_| {
            ApiError::new(
                503,
                "ServiceUnavailable",
                format!("node {node} has an invalid InternalIP {ip:?}"),
            )
        })?;
        let tls = self.cfg.kubelet_tls.clone().ok_or_else(|| {
            ApiError::new(
                503,
                "ServiceUnavailable",
                "this API server has no client certificate for kubelets",
            )
        })?;
        let unreachable = |e: &dyn std::fmt::Display| {
            ApiError::new(
                503,
                "ServiceUnavailable",
                format!("error dialing the kubelet of node {node} ({ip}:{port}): {e}"),
            )
        };
        // TLS both ways: the kubelet's serving certificate must be the cluster CA's for this IP,
        // and the kubelet admits this server by its client certificate.
        let tls_stream = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            let tcp = tokio::net::TcpStream::connect((addr, port)).await?;
            let _ = tcp.set_nodelay(true);
            tokio_rustls::TlsConnector::from(tls)
                .connect(rustls::pki_types::ServerName::IpAddress(addr.into()), tcp)
                .await
        })
        .await
        .map_err(|_| unreachable(&"timeout"))?
        .map_err(|e| unreachable(&e))?;
        let (send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls_stream))
                .await
                .map_err(|e| unreachable(&e))?;
        tokio::spawn(conn.with_upgrades());
        let req = http::Request::builder().header(http::header::HOST, format!("{ip}:{port}"));
        Ok((send, req))
    }
}

/// The node a pod is bound to.
pub(super) fn node_of(pod: &Value, name: &str) -> ApiResult<String> {
    match pod.pointer("/spec/nodeName").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => Ok(n.to_owned()),
        _ => Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        ))),
    }
}

/// The container a request means: the one asked for (which must exist), else the only one, else
/// the `kubectl.kubernetes.io/default-container` annotation's.
pub(super) fn pick_container(
    pod: &Value,
    name: &str,
    requested: Option<&String>,
) -> ApiResult<String> {
    let containers: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    if let Some(c) = requested.filter(|c| !c.is_empty()) {
        if !containers.contains(&c.as_str()) {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )));
        }
        return Ok(c.clone());
    }
    match containers.as_slice() {
        [one] => Ok((*one).to_owned()),
        many => {
            let default = pod
                .pointer("/metadata/annotations/kubectl.kubernetes.io~1default-container")
                .and_then(Value::as_str);
            match default.filter(|d| many.contains(d)) {
                Some(d) => Ok(d.to_owned()),
                None => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    many.join(" ")
                ))),
            }
        }
    }
}

/// The error for a kubelet that could not be reached (or dropped the request).
pub(super) fn kubelet_unreachable(node: &str, e: &dyn std::fmt::Display) -> ApiError {
    ApiError::new(
        503,
        "ServiceUnavailable",
        format!("error talking to the kubelet of node {node}: {e}"),
    )
}

/// The time a kubelet gets to answer a request's head, and then to send an error body.
pub(super) const KUBELET_ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The largest kubelet error body read (a kubelet's errors are one line of text).
const KUBELET_ERROR_BYTES: usize = 16 * 1024;

/// A kubelet's error answer (a one-line text) as a Status with its code; its body is read up to
/// [`KUBELET_ERROR_BYTES`] and for at most [`KUBELET_ANSWER_TIMEOUT`].
pub(super) async fn kubelet_error(resp: Response<hyper::body::Incoming>) -> ApiError {
    let code = resp.status().as_u16();
    let read = http_body_util::Limited::new(resp.into_body(), KUBELET_ERROR_BYTES).collect();
    let body = match tokio::time::timeout(KUBELET_ANSWER_TIMEOUT, read).await {
        Ok(Ok(b)) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        Ok(Err(_)) => format!("(the kubelet's error was over {KUBELET_ERROR_BYTES} bytes)"),
        Err(_) => "(the kubelet's error did not arrive in time)".to_owned(),
    };
    let reason = match code {
        404 => "NotFound",
        401 => "Unauthorized",
        403 => "Forbidden",
        500.. => "InternalError",
        _ => "BadRequest",
    };
    ApiError::new(code, reason, body.trim().to_owned())
}

/// The kubelet port of Node object `n` (`status.daemonEndpoints.kubeletEndpoint.Port`, 10250
/// when unset). The Node is written by clients, so a value that is not a TCP port is refused
/// rather than cut to 16 bits (which would dial some other port).
fn kubelet_port(n: &Value, node: &str) -> Result<u16, ApiError> {
    let Some(port) = n
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
    else {
        return Ok(10250);
    };
    u16::try_from(port).map_err(|_| {
        ApiError::new(
            503,
            "ServiceUnavailable",
            format!("node {node} has an invalid kubelet port {port}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::kubelet_port;
    use serde_json::{json, Value};

    fn node(port: Value) -> Value {
        json!({"status": {"daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}})
    }

    #[test]
    fn kubelet_port_defaults_and_is_checked() {
        assert_eq!(kubelet_port(&json!({}), "n1").unwrap(), 10250);
        assert_eq!(kubelet_port(&node(json!(10255)), "n1").unwrap(), 10255);
        assert_eq!(kubelet_port(&node(json!(65535)), "n1").unwrap(), 65535);
        // 75786 = 65536 + 10250: an `as u16` cast would have dialed 10250.
        let err = kubelet_port(&node(json!(75786)), "n1").unwrap_err();
        assert_eq!(err.code, 503);
        assert!(
            err.status["message"].as_str().unwrap().contains("75786"),
            "{}",
            err.status
        );
    }
}
