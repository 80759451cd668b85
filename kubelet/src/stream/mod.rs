//! The kubelet's streaming endpoints, behind `kubectl exec`, `kubectl cp` and `kubectl
//! port-forward`. The API server checks the request, then relays the upgraded connection here
//! byte for byte, so the protocols are the ones kubectl speaks:
//!
//! - `GET /exec/<ns>/<pod>/<container>?command=..&stdin=..&stdout=..&stderr=..&tty=..`: a
//!   WebSocket, subprotocol `v5.channel.k8s.io` or `v4.channel.k8s.io` ([`exec`]);
//! - `GET /attach/<ns>/<pod>/<container>?stdin=..&stdout=..&stderr=..&tty=..`: the same
//!   protocol, joined to the running container's own streams ([`attach`]);
//! - `GET|POST /portForward/<ns>/<pod>`: SPDY/3.1 `portforward.k8s.io`, tunneled in a WebSocket
//!   (`SPDY/3.1+portforward.k8s.io`, what kubectl >= 1.31 asks first) or on a plain
//!   `Upgrade: SPDY/3.1` connection (its fallback) ([`portforward`], [`spdy`]).
//!
//! Errors found before the upgrade (no such pod on this node, container not running, bad
//! parameters) are plain HTTP answers with a one-line message, which the API server turns into a
//! `Status`.

pub(crate) mod attach;
pub(crate) mod exec;
pub(crate) mod portforward;
pub(crate) mod spdy;

use crate::logs::{text, Body};
use crate::Kubelet;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use std::sync::Arc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

/// Exec subprotocols, best first.
const EXEC_PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
/// The port-forward protocol tunneled in a WebSocket.
const PORTFORWARD_WS: &str = "SPDY/3.1+portforward.k8s.io";
/// The port-forward protocol on a plain SPDY upgrade.
const PORTFORWARD: &str = "portforward.k8s.io";

/// Whether `path` is one of the streaming endpoints.
pub(crate) fn is_stream_path(path: &str) -> bool {
    ["/exec/", "/attach/", "/portForward/"]
        .iter()
        .any(|p| path.starts_with(p))
}

/// Serves a streaming request (after authorization).
pub(crate) async fn handle(k: &Arc<Kubelet>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["exec", ns, pod, container] => exec(k, req, ns, pod, container),
        ["portForward", ns, pod] => port_forward(k, req, ns, pod),
        ["attach", ns, pod, container] => attach(k, req, ns, pod, container),
        _ => text(
            StatusCode::NOT_FOUND,
            "want /exec/<ns>/<pod>/<container>, /attach/<ns>/<pod>/<container> or /portForward/<ns>/<pod>",
        ),
    }
}

fn find_pod(k: &Kubelet, ns: &str, name: &str) -> Result<Arc<Pod>, Box<Response<Body>>> {
    k.pods
        .state()
        .into_iter()
        .find(|p| {
            p.metadata.namespace.as_deref() == Some(ns) && p.metadata.name.as_deref() == Some(name)
        })
        .ok_or_else(|| {
            Box::new(text(
                StatusCode::NOT_FOUND,
                format!("pod {ns}/{name} is not on this node"),
            ))
        })
}

/// How the running attempt of `container` runs (its shim spec), or why there is none.
fn running_container(
    k: &Kubelet,
    pod: &Pod,
    container: &str,
) -> Result<exec::ProcessContext, Box<Response<Body>>> {
    let (_, spec) = running_attempt(k, pod, container)?;
    Ok(exec::ProcessContext {
        env: spec.env,
        working_dir: spec.working_dir,
        netns: spec.netns,
        cgroup: spec.cgroup,
    })
}

/// The directory and shim spec of `container`'s running attempt, or why there is none.
fn running_attempt(
    k: &Kubelet,
    pod: &Pod,
    container: &str,
) -> Result<(std::path::PathBuf, crate::shim::ShimSpec), Box<Response<Body>>> {
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let known = pod
        .spec
        .as_ref()
        .is_some_and(|s| s.containers.iter().any(|c| c.name == container));
    if !known {
        return Err(Box::new(text(
            StatusCode::BAD_REQUEST,
            format!("container {container} is not valid for pod {name}"),
        )));
    }
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let cdir = k.pod_dir(&uid).join(container);
    let not_running = || {
        Box::new(text(
            StatusCode::BAD_REQUEST,
            format!("container {container} in pod {name} is not running"),
        ))
    };
    let attempt = crate::pod::attempts(&cdir)
        .last()
        .copied()
        .ok_or_else(not_running)?;
    let adir = cdir.join(attempt.to_string());
    if adir.join(crate::shim::EXIT).exists() {
        return Err(not_running());
    }
    let spec: crate::shim::ShimSpec = std::fs::read(adir.join(crate::shim::SPEC))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(not_running)?;
    Ok((adir, spec))
}

/// The values of the subprotocols the client offers, in its order.
fn offered_protocols(h: &HeaderMap) -> Vec<String> {
    h.get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

fn header_has(h: &HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// A WebSocket upgrade answer choosing the first of `ours` the client offers, or an error answer.
fn websocket_accept(h: &HeaderMap, ours: &[&str]) -> Result<(String, Response<Body>), String> {
    if !header_has(h, http::header::UPGRADE, "websocket") {
        return Err("a WebSocket upgrade is required".into());
    }
    let key = h
        .get(http::header::SEC_WEBSOCKET_KEY)
        .ok_or("no Sec-WebSocket-Key")?;
    let offered = offered_protocols(h);
    let protocol = ours
        .iter()
        .find(|p| offered.iter().any(|o| o == *p))
        .ok_or_else(|| {
            format!(
                "none of the offered subprotocols {offered:?} is supported (want one of {ours:?})"
            )
        })?;
    let resp = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "websocket")
        .header(
            http::header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()),
        )
        .header(http::header::SEC_WEBSOCKET_PROTOCOL, *protocol)
        .body(empty())
        .map_err(|e| e.to_string())?;
    Ok(((*protocol).to_owned(), resp))
}

/// A close frame with code 1000: client-go reads the end of a session as EOF only with it (any
/// other code, 1005 "no status" included, is an error on every stream).
pub(crate) fn normal_close() -> tokio_tungstenite::tungstenite::Message {
    use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
    tokio_tungstenite::tungstenite::Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

fn query_pairs(req: &Request<Incoming>) -> Vec<(String, String)> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn flag(q: &[(String, String)], name: &str) -> bool {
    q.iter()
        .any(|(k, v)| k == name && matches!(v.as_str(), "1" | "true" | "True"))
}

/// Runs `session` on the connection once hyper hands it over.
fn on_upgrade<F, Fut>(req: Request<Incoming>, session: F)
where
    F: FnOnce(TokioIo<hyper::upgrade::Upgraded>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    // The session counts against --max-connections until it ends.
    let slot = req
        .extensions()
        .get::<crate::logs::ConnectionSlot>()
        .cloned();
    tokio::spawn(async move {
        let _slot = slot;
        match hyper::upgrade::on(req).await {
            Ok(up) => session(TokioIo::new(up)).await,
            Err(e) => tracing::debug!("stream upgrade failed: {e}"),
        }
    });
}

/// The streams a request asks for (`stdin`, `stdout`, `stderr`, `tty`), with exec's `command`s.
fn stream_request(q: &[(String, String)]) -> exec::Request {
    exec::Request {
        command: q
            .iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v.clone())
            .collect(),
        stdin: flag(q, "stdin"),
        stdout: flag(q, "stdout"),
        stderr: flag(q, "stderr"),
        tty: flag(q, "tty"),
    }
}

fn attach(
    k: &Arc<Kubelet>,
    req: Request<Incoming>,
    ns: &str,
    pod: &str,
    container: &str,
) -> Response<Body> {
    let r = stream_request(&query_pairs(&req));
    if !(r.stdin || r.stdout || r.stderr) {
        return text(
            StatusCode::BAD_REQUEST,
            "you must specify at least one of stdin, stdout, stderr",
        );
    }
    let p = match find_pod(k, ns, pod) {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    let (adir, spec) = match running_attempt(k, &p, container) {
        Ok(x) => x,
        Err(resp) => return *resp,
    };
    if r.tty && !spec.tty {
        return text(
            StatusCode::BAD_REQUEST,
            format!("container {container} in pod {pod} was not started with tty: true"),
        );
    }
    let (_, resp) = match websocket_accept(req.headers(), &EXEC_PROTOCOLS) {
        Ok(x) => x,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    // Output from now on: what the container writes after this answer is the client's.
    let offset = std::fs::metadata(adir.join("output.log")).map_or(0, |m| m.len());
    let target = attach::Target {
        adir,
        offset,
        stdin: spec.stdin,
        attachable: spec.attachable(),
    };
    on_upgrade(req, move |io| async move {
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        attach::session(ws, target, r).await;
    });
    resp
}

fn exec(
    k: &Arc<Kubelet>,
    req: Request<Incoming>,
    ns: &str,
    pod: &str,
    container: &str,
) -> Response<Body> {
    let r = stream_request(&query_pairs(&req));
    if r.command.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "you must specify at least one command for the container",
        );
    }
    if !(r.stdin || r.stdout || r.stderr) {
        return text(
            StatusCode::BAD_REQUEST,
            "you must specify at least one of stdin, stdout, stderr",
        );
    }
    let p = match find_pod(k, ns, pod) {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    let ctx = match running_container(k, &p, container) {
        Ok(c) => c,
        Err(resp) => return *resp,
    };
    let (_, resp) = match websocket_accept(req.headers(), &EXEC_PROTOCOLS) {
        Ok(x) => x,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    on_upgrade(req, move |io| async move {
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        exec::session(ws, ctx, r).await;
    });
    resp
}

fn port_forward(k: &Arc<Kubelet>, req: Request<Incoming>, ns: &str, pod: &str) -> Response<Body> {
    let p = match find_pod(k, ns, pod) {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    let uid = p.metadata.uid.clone().unwrap_or_default();
    let host_network = p
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let target = portforward::Target {
        netns: (!host_network).then(|| k.sandboxes.netns_path(&uid)),
        pod: format!("{ns}/{pod}"),
        uid,
    };
    let h = req.headers();
    if header_has(h, http::header::UPGRADE, "websocket") {
        let (_, resp) = match websocket_accept(h, &[PORTFORWARD_WS]) {
            Ok(x) => x,
            Err(e) => return text(StatusCode::BAD_REQUEST, e),
        };
        on_upgrade(req, move |io| async move {
            let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
            portforward::over_websocket(ws, target).await;
        });
        return resp;
    }
    if !header_has(h, http::header::UPGRADE, "SPDY/3.1") {
        return text(
            StatusCode::BAD_REQUEST,
            "port-forward needs a WebSocket or SPDY/3.1 upgrade",
        );
    }
    let wants = h
        .get_all("X-Stream-Protocol-Version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|p| p.trim() == PORTFORWARD));
    if !wants {
        return text(
            StatusCode::FORBIDDEN,
            format!("the client does not offer the {PORTFORWARD} protocol"),
        );
    }
    let resp = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", PORTFORWARD)
        .body(empty());
    let Ok(resp) = resp else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "building the upgrade");
    };
    on_upgrade(req, move |io| portforward::over_io(io, target));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_best_offered_subprotocol_is_chosen() {
        let base = [
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        let with = |protocols: &[&str]| {
            let mut h = headers(&base);
            for p in protocols {
                h.append(http::header::SEC_WEBSOCKET_PROTOCOL, p.parse().unwrap());
            }
            websocket_accept(&h, &EXEC_PROTOCOLS)
        };
        // kubectl 1.30+ offers v5 first; older clients only v4 (and below).
        let (p, resp) = with(&["v5.channel.k8s.io,v4.channel.k8s.io"]).unwrap();
        assert_eq!(p, "v5.channel.k8s.io");
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        // RFC 6455's example key and accept value.
        assert_eq!(
            resp.headers()[http::header::SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(
            with(&["v4.channel.k8s.io", "v3.channel.k8s.io"]).unwrap().0,
            "v4.channel.k8s.io"
        );
        let err = with(&["channel.k8s.io"]).unwrap_err();
        assert!(err.contains("channel.k8s.io"), "{err}");
        assert!(with(&[]).is_err());
        let no_upgrade = headers(&[("sec-websocket-key", "x")]);
        assert!(websocket_accept(&no_upgrade, &EXEC_PROTOCOLS).is_err());
    }

    #[test]
    fn stream_paths() {
        assert!(is_stream_path("/exec/default/web/c"));
        assert!(is_stream_path("/portForward/default/web"));
        assert!(is_stream_path("/attach/default/web/c"));
        assert!(!is_stream_path("/containerLogs/default/web/c"));
        assert!(!is_stream_path("/healthz"));
    }
}
