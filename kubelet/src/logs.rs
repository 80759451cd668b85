//! The kubelet's HTTP endpoint on `<node IP>:<port>` (the port is published in the Node's
//! `status.daemonEndpoints`): `GET /healthz` and
//! `GET /containerLogs/<namespace>/<pod>/<container>` with `follow`, `previous`, `tailLines`,
//! `limitBytes` — what the API server calls for `kubectl logs` (`pods/log`).
//!
//! It is HTTPS only, with a serving certificate from the cluster CA for the node's IP, and admits
//! only the API server, by its client certificate (verified against the CA, common name
//! [`API_SERVER_CLIENT_CN`]); `/healthz` needs no certificate. The streaming paths (`/exec`,
//! `/portForward`) are the `stream` module's.

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

/// The common name of the only client admitted (the API server's kubelet client certificate).
pub const API_SERVER_CLIENT_CN: &str = "ferry-apiserver-kubelet-client";

/// The endpoint's TLS configuration: its serving certificate, and client certificates verified
/// against `client_ca_file` (optional at the TLS level so that `/healthz` needs none; every
/// other path requires the API server's).
fn tls_config(cfg: &crate::Config) -> Result<Arc<rustls::ServerConfig>> {
    let pem_file = |p: &Path| {
        std::fs::File::open(p)
            .map(std::io::BufReader::new)
            .with_context(|| format!("opening {}", p.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pem_file(&cfg.client_ca_file)?) {
        roots
            .add(c.with_context(|| format!("parsing {}", cfg.client_ca_file.display()))?)
            .with_context(|| format!("trusting {}", cfg.client_ca_file.display()))?;
    }
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem_file(&cfg.tls_cert_file)?)
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", cfg.tls_cert_file.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "no certificate in {}",
        cfg.tls_cert_file.display()
    );
    let key = rustls_pemfile::private_key(&mut pem_file(&cfg.tls_key_file)?)
        .with_context(|| format!("parsing {}", cfg.tls_key_file.display()))?
        .with_context(|| format!("no private key in {}", cfg.tls_key_file.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .context("client certificate verifier")?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .context("the serving certificate and key")?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

/// The subject common name of a verified client certificate.
fn client_cn(certs: Option<&[rustls::pki_types::CertificateDer<'_>]>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(certs?.first()?).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// Binds the endpoint (HTTPS); the returned future serves it.
pub async fn serve(k: Arc<Kubelet>) -> Result<impl std::future::Future<Output = ()>> {
    let tls = tokio_rustls::TlsAcceptor::from(tls_config(&k.cfg)?);
    let addr = format!("{}:{}", k.cfg.node_ip, k.cfg.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding the kubelet endpoint {addr}"))?;
    tracing::info!("kubelet endpoint on https://{addr}");
    Ok(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let k = k.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let stream =
                    match tokio::time::timeout(Duration::from_secs(10), tls.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!("TLS handshake with {peer} failed: {e}");
                            return;
                        }
                        Err(_) => return,
                    };
                let cn = client_cn(stream.get_ref().1.peer_certificates());
                let svc = hyper::service::service_fn(move |req| {
                    let k = k.clone();
                    let cn = cn.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(handle(&k, cn.as_deref(), req).await)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    })
}

async fn handle(k: &Arc<Kubelet>, client: Option<&str>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    if path == "/healthz" {
        return text(StatusCode::OK, "ok");
    }
    // The TLS layer verified the chain; the subject says who it is.
    match client {
        Some(API_SERVER_CLIENT_CN) => {}
        Some(other) => {
            return text(
                StatusCode::FORBIDDEN,
                format!("client certificate {other:?} is not allowed to use the kubelet endpoint"),
            )
        }
        None => {
            return text(
                StatusCode::UNAUTHORIZED,
                "Unauthorized: a client certificate from the cluster CA is required",
            )
        }
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
