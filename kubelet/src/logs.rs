//! The kubelet's HTTP endpoint on `<node IP>:<port>` (the port is published in the Node's
//! `status.daemonEndpoints`): `GET /healthz` and
//! `GET /containerLogs/<namespace>/<pod>/<container>` with `follow`, `previous`, `tailLines`,
//! `limitBytes` — what the API server calls for `kubectl logs` (`pods/log`).
//!
//! Callers must present this node's bearer token (the API server knows every node's token), so
//! only the API server reads logs through it.

use crate::Kubelet;
use anyhow::{Context as _, Result};
use bytes::Bytes;
use futures::StreamExt as _;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use std::collections::HashMap;
use std::io::{Read as _, Seek as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Response bodies of the endpoint.
pub(crate) type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// A plain-text answer.
pub(crate) fn text(code: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(msg.into()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = code;
    r
}

/// Binds the endpoint; the returned future serves it.
pub async fn serve(k: Arc<Kubelet>) -> Result<impl std::future::Future<Output = ()>> {
    let addr = format!("{}:{}", k.cfg.node_ip, k.cfg.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding the kubelet endpoint {addr}"))?;
    tracing::info!("kubelet endpoint on {addr}");
    Ok(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let k = k.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let k = k.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(&k, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .with_upgrades()
                    .await;
            });
        }
    })
}

async fn handle(k: &Arc<Kubelet>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    if path == "/healthz" {
        return text(StatusCode::OK, "ok");
    }
    let authorized = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == k.cfg.token);
    if !authorized {
        return text(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    if crate::stream::is_stream_path(&path) {
        return crate::stream::handle(k, req).await;
    }
    let Some(rest) = path.strip_prefix("/containerLogs/") else {
        return text(StatusCode::NOT_FOUND, "not found");
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let [ns, pod, container] = parts.as_slice() else {
        return text(
            StatusCode::NOT_FOUND,
            "want /containerLogs/<ns>/<pod>/<container>",
        );
    };
    let q: HashMap<String, String> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let flag = |n: &str| {
        q.get(n)
            .is_some_and(|v| v == "true" || v == "1" || v.is_empty())
    };
    let num = |n: &str| q.get(n).and_then(|v| v.parse::<usize>().ok());
    let Some(p) = k.pods.state().into_iter().find(|p| {
        p.metadata.namespace.as_deref() == Some(*ns) && p.metadata.name.as_deref() == Some(*pod)
    }) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("pod {ns}/{pod} is not on this node"),
        );
    };
    let names: Vec<String> = p
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    if !names.iter().any(|n| n == container) {
        return text(
            StatusCode::BAD_REQUEST,
            format!("container {container} is not valid for pod {pod}"),
        );
    }
    let uid = p.metadata.uid.clone().unwrap_or_default();
    let cdir = k.pod_dir(&uid).join(container);
    let tries = crate::pod::attempts(&cdir);
    let pick = if flag("previous") {
        tries.iter().rev().nth(1)
    } else {
        tries.last()
    };
    let Some(attempt) = pick else {
        return if flag("previous") {
            text(
                StatusCode::BAD_REQUEST,
                format!("previous terminated container \"{container}\" in pod \"{pod}\" not found"),
            )
        } else {
            text(
                StatusCode::BAD_REQUEST,
                format!("container \"{container}\" in pod \"{pod}\" is waiting to start"),
            )
        };
    };
    let adir = cdir.join(attempt.to_string());
    let log = adir.join("output.log");
    let head = match read_tail(&log, num("tailLines"), num("limitBytes")) {
        Ok(b) => b,
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading logs: {e}"),
            )
        }
    };
    if !flag("follow") || flag("previous") {
        let mut r = Response::new(
            Full::new(Bytes::from(head.0))
                .map_err(|n| match n {})
                .boxed_unsync(),
        );
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            "text/plain".parse().expect("valid"),
        );
        return r;
    }
    let limit = num("limitBytes");
    let first =
        futures::stream::once(
            async move { Ok::<_, std::io::Error>(Frame::data(Bytes::from(head.0))) },
        );
    let state = (log, adir, head.1, head.2);
    let more = futures::stream::unfold(state, move |(log, adir, offset, sent)| async move {
        let mut offset = offset;
        loop {
            if limit.is_some_and(|l| sent >= l) {
                return None;
            }
            let done = adir.join(crate::shim::EXIT).exists();
            let chunk = read_from(&log, offset).unwrap_or_default();
            if !chunk.is_empty() {
                let mut chunk = chunk;
                offset += chunk.len() as u64;
                if let Some(l) = limit {
                    chunk.truncate(l.saturating_sub(sent));
                }
                let n = sent + chunk.len();
                return Some((Ok(Frame::data(Bytes::from(chunk))), (log, adir, offset, n)));
            }
            if done {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut r = Response::new(BodyExt::boxed_unsync(StreamBody::new(
        first.chain(more).boxed(),
    )));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        "text/plain".parse().expect("valid"),
    );
    r
}

fn read_from(path: &PathBuf, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    f.seek(std::io::SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    f.take(1 << 20).read_to_end(&mut buf)?;
    Ok(buf)
}

/// The log's content limited to the last `tail` lines and `limit` bytes; also returns the file
/// offset reached and the bytes returned (for `follow`).
fn read_tail(
    path: &Path,
    tail: Option<usize>,
    limit: Option<usize>,
) -> std::io::Result<(Vec<u8>, u64, usize)> {
    let all = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let end = all.len() as u64;
    let mut out = select_tail(&all, tail).to_vec();
    if let Some(l) = limit {
        out.truncate(l);
    }
    let n = out.len();
    Ok((out, end, n))
}

/// The last `tail` lines of `all` (all of it for `None`).
pub fn select_tail(all: &[u8], tail: Option<usize>) -> &[u8] {
    let Some(n) = tail else {
        return all;
    };
    if n == 0 {
        return &[];
    }
    let body = all.strip_suffix(b"\n").unwrap_or(all);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return &all[i + 1..];
            }
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_lines() {
        let log = b"a\nb\nc\n";
        assert_eq!(select_tail(log, Some(2)), b"b\nc\n");
        assert_eq!(select_tail(log, Some(5)), log);
        assert_eq!(select_tail(log, Some(0)), b"");
        assert_eq!(select_tail(log, None), log);
        assert_eq!(select_tail(b"a\nb", Some(1)), b"b");
    }
}
