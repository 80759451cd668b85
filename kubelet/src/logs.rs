//! The kubelet's HTTP endpoint on `<node IP>:<port>` (the port is published in the Node's
//! `status.daemonEndpoints`): `GET /healthz` and
//! `GET /containerLogs/<namespace>/<pod>/<container>` with `follow`, `previous`, `tailLines`,
//! `limitBytes` — what the API server calls for `kubectl logs` (`pods/log`).
//!
//! It is HTTPS only, with a serving certificate from the cluster CA for the node's IP, and admits
//! only the API server, by its client certificate (verified against the CA, common name
//! [`API_SERVER_CLIENT_CN`]); `/healthz` needs no certificate. The streaming paths (`/exec`,
//! `/portForward`) are the `stream` module's.
//!
//! Its HTTP server is bounded ([`HttpLimits`], flags of `ferry-kubelet`): a TLS handshake
//! deadline, a header read timeout (also the wait between two requests on a connection), a
//! largest request head (431), a largest declared body (413), and a connection cap (503 with
//! `Retry-After` over it).

use crate::Kubelet;
use anyhow::{Context as _, Result};
use bytes::Bytes;
use futures::StreamExt as _;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use std::collections::HashMap;
use std::io::{Read as _, Seek as _};
use std::path::Path;
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

/// How the endpoint bounds its clients (flags of `ferry-kubelet`).
#[derive(Debug, Clone, clap::Args)]
pub struct HttpLimits {
    /// Time a client gets to send a request's head once the endpoint waits for it; a
    /// connection between two requests waits at most this long too.
    #[arg(long = "http-header-timeout", value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// Largest request head in bytes (431 over it).
    #[arg(long = "max-header-bytes", value_name = "BYTES", default_value_t = 64 * 1024,
          value_parser = clap::value_parser!(u32).range(8192..))]
    pub max_header_bytes: u32,
    /// Largest request body in bytes (413 over it; the endpoint's requests carry none).
    #[arg(long = "max-request-bytes", value_name = "BYTES", default_value_t = 64 * 1024)]
    pub max_request_bytes: u64,
    /// Connections served at once; those over it get 503 with Retry-After.
    #[arg(long = "max-connections", value_name = "N", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            max_request_bytes: 64 * 1024,
            max_connections: 256,
        }
    }
}

/// A positive duration such as `30s` or `500ms` (the one parser of the servers' flags).
pub use ferry_apimachinery::duration::parse_positive as parse_duration;

/// The time a client gets to complete its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections over `--max-connections` answered 503 at once (more are closed unanswered), and
/// the time each gets.
const OVERFLOW_ANSWERED: usize = 16;
const OVERFLOW_DEADLINE: Duration = Duration::from_secs(5);

/// The HTTP/1.1 connection builder under `limits`.
fn http1(limits: &HttpLimits) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(usize::try_from(limits.max_header_bytes.max(8192)).unwrap_or(8192));
    b
}

/// Binds the endpoint (HTTPS); the returned future serves it, at most
/// `cfg.http.max_connections` connections at once.
pub async fn serve(k: Arc<Kubelet>) -> Result<impl std::future::Future<Output = ()>> {
    let tls = tokio_rustls::TlsAcceptor::from(tls_config(&k.cfg)?);
    let addr = format!("{}:{}", k.cfg.node_ip, k.cfg.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding the kubelet endpoint {addr}"))?;
    tracing::info!("kubelet endpoint on https://{addr}");
    let limits = k.cfg.http.clone();
    Ok(serve_on(listener, tls, limits, move |cn, req| {
        let k = k.clone();
        async move { handle(&k, cn.as_deref(), req).await }
    }))
}

/// A connection's place under `--max-connections`: released when the connection and every
/// session upgraded from it have ended. Each request carries a clone in its extensions.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionSlot(
    #[allow(dead_code, reason = "held, never read")] Arc<tokio::sync::OwnedSemaphorePermit>,
);

/// Serves `handler` (given the client certificate's common name and the request) on `listener`
/// under `limits`: TLS handshake deadline, header timeout and size, the body bound (413), the
/// connection cap (503 with `Retry-After` over it).
async fn serve_on<H, F>(
    listener: tokio::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    limits: HttpLimits,
    handler: H,
) where
    H: Fn(Option<String>, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(
        usize::try_from(limits.max_connections).unwrap_or(1),
    ));
    let overflow = Arc::new(tokio::sync::Semaphore::new(OVERFLOW_ANSWERED));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accepting a kubelet endpoint connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let tls = tls.clone();
        let limits = limits.clone();
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            if let Ok(permit) = overflow.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    let _ =
                        tokio::time::timeout(OVERFLOW_DEADLINE, refuse(tls, tcp, &limits)).await;
                    drop(permit);
                });
            }
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!("TLS handshake with {peer} failed: {e}");
                    return;
                }
                Err(_) => return,
            };
            let cn = client_cn(stream.get_ref().1.peer_certificates());
            let max_body = limits.max_request_bytes;
            // Held by the connection and by every session upgraded from it (exec, attach,
            // port-forward), which would otherwise stop counting once hyper lets it go.
            let slot = ConnectionSlot(Arc::new(permit));
            let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(slot.clone());
                let handler = handler.clone();
                let cn = cn.clone();
                async move {
                    use hyper::body::Body as _;
                    // The handlers read no body: a chunked one is never read (hyper closes the
                    // connection after the answer instead), a declared one over the bound is
                    // refused.
                    if req.body().size_hint().lower() > max_body {
                        return Ok::<_, std::convert::Infallible>(text(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            format!("request bodies are limited to {max_body} bytes"),
                        ));
                    }
                    Ok(handler(cn, req).await)
                }
            });
            let _ = http1(&limits)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .with_upgrades()
                .await;
        });
    }
}

/// A connection over the cap: TLS, then a 503 with `Retry-After` and the connection closes.
async fn refuse(tls: tokio_rustls::TlsAcceptor, tcp: tokio::net::TcpStream, limits: &HttpLimits) {
    let Ok(stream) = tls.accept(tcp).await else {
        return;
    };
    let svc = hyper::service::service_fn(|_req| async {
        let mut r = text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the kubelet endpoint is serving its maximum number of connections; retry later",
        );
        r.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
        Ok::<_, std::convert::Infallible>(r)
    });
    let mut b = http1(limits);
    b.keep_alive(false);
    let _ = b
        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
        .await;
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
        if limit.is_some_and(|l| sent >= l) {
            return None;
        }
        let mut chunk = next_chunk(&log, &adir, offset, Duration::from_millis(100)).await?;
        let offset = offset + chunk.len() as u64;
        if let Some(l) = limit {
            chunk.truncate(l.saturating_sub(sent));
        }
        let n = sent + chunk.len();
        Some((Ok(Frame::data(Bytes::from(chunk))), (log, adir, offset, n)))
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

/// The log from byte `offset` on (at most 1 MiB per call).
/// The next bytes of an attempt's log `log` from `offset`, waiting for them (polling every
/// `poll`); `None` once the attempt is over (its exit record written, or its directory gone
/// with the pod) and everything was read. What `kubectl logs -f` and attach's output follow.
pub(crate) async fn next_chunk(
    log: &Path,
    adir: &Path,
    offset: u64,
    poll: Duration,
) -> Option<Vec<u8>> {
    loop {
        let done = adir.join(crate::shim::EXIT).exists() || !adir.exists();
        let chunk = read_from(log, offset).unwrap_or_default();
        if !chunk.is_empty() {
            return Some(chunk);
        }
        if done {
            return None;
        }
        tokio::time::sleep(poll).await;
    }
}

pub(crate) fn read_from(path: &Path, offset: u64) -> std::io::Result<Vec<u8>> {
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

    use std::time::Instant;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio_rustls::client::TlsStream;

    /// The endpoint's serving loop with a self-signed certificate for 127.0.0.1 and a handler
    /// answering 200; returns its port and the client TLS configuration trusting it.
    async fn endpoint(limits: HttpLimits) -> (u16, Arc<rustls::ClientConfig>) {
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let der = cert.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tls = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        tokio::spawn(serve_on(listener, tls, limits, |_cn, _req| async {
            text(StatusCode::OK, "ok")
        }));
        (port, Arc::new(client))
    }

    async fn connect(
        port: u16,
        tls: &Arc<rustls::ClientConfig>,
    ) -> TlsStream<tokio::net::TcpStream> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .unwrap()
    }

    /// Sends `req` and returns the first bytes of the answer.
    async fn ask(c: &mut TlsStream<tokio::net::TcpStream>, req: &[u8]) -> String {
        c.write_all(req).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    const GET: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

    fn limits() -> HttpLimits {
        HttpLimits {
            header_timeout: Duration::from_secs(1),
            max_header_bytes: 8192,
            max_request_bytes: 1024,
            max_connections: 2,
        }
    }

    #[tokio::test]
    async fn a_dribbled_head_is_cut_off_and_oversized_requests_are_refused() {
        let (port, tls) = endpoint(limits()).await;
        let mut c = connect(port, &tls).await;
        let start = Instant::now();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let closed = loop {
            tokio::select! {
                r = c.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break start.elapsed(),
                    Ok(_) => {}
                },
                () = tokio::time::sleep(Duration::from_millis(200)) => {
                    if c.write_all(b"X-Dribble: 1\r\n").await.is_err() {
                        break start.elapsed();
                    }
                    assert!(start.elapsed() < Duration::from_secs(10), "never cut off");
                }
            }
        };
        assert!(
            closed >= Duration::from_millis(700) && closed < Duration::from_secs(5),
            "cut off after {closed:?}, want about 1 s"
        );
        drop(c);
        let mut c = connect(port, &tls).await;
        let big = ask(
            &mut c,
            b"POST /exec/a/b/c HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n",
        )
        .await;
        assert!(big.starts_with("HTTP/1.1 413"), "{big}");
        drop(c);
        let mut c = connect(port, &tls).await;
        let head = format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "y".repeat(10_000)
        );
        let big = ask(&mut c, head.as_bytes()).await;
        assert!(big.starts_with("HTTP/1.1 431"), "{big}");
    }

    #[tokio::test]
    async fn connections_over_the_cap_get_503_and_the_others_are_served() {
        let (port, tls) = endpoint(HttpLimits {
            header_timeout: Duration::from_secs(30),
            ..limits()
        })
        .await;
        let mut held = vec![connect(port, &tls).await, connect(port, &tls).await];
        for c in &mut held {
            assert!(ask(c, GET).await.starts_with("HTTP/1.1 200"));
        }
        let mut over = connect(port, &tls).await;
        let answer = ask(&mut over, GET).await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("retry-after: 1"),
            "{answer}"
        );
        for c in &mut held {
            assert!(ask(c, GET).await.starts_with("HTTP/1.1 200"));
        }
        drop(held.pop());
        let mut answer = String::new();
        for _ in 0..50 {
            let mut c = connect(port, &tls).await;
            answer = ask(&mut c, GET).await;
            if answer.starts_with("HTTP/1.1 200") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}
