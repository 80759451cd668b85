//! The HTTPS listeners: TLS (rustls), HTTP/2 and HTTP/1.1 on each port, one task per
//! connection, graceful shutdown, and the bounds every connection lives under ([`HttpLimits`]):
//! a TLS handshake deadline, a header read timeout (HTTP/1.1: a client that dribbles its request
//! head is cut off), an idle timeout (no request in flight), a largest request head, a connection
//! cap per server (the connections over it get a 503 with `Retry-After`, a few at a time, and
//! the rest are closed), and a caught panic per request (a 500 Status). The body size and body
//! read time are enforced where the body is read ([`crate::api::Api::handle`]).

use crate::api::Api;
use anyhow::Result;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

/// The time a client gets to complete its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections over `--max-connections` that are answered 503 at once (more are closed
/// unanswered), and the time each of them gets.
const OVERFLOW_ANSWERED: usize = 32;
const OVERFLOW_DEADLINE: Duration = Duration::from_secs(5);

/// How the HTTP servers bound their clients (flags of `ferry-server`).
#[derive(Debug, Clone, clap::Args)]
pub struct HttpLimits {
    /// Time a client gets to send a request's head (request line and headers) once the server
    /// waits for it; an HTTP/1.1 connection between two requests waits at most this long too.
    #[arg(long = "http-header-timeout", value_name = "DURATION", default_value = "32s", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/2 included).
    #[arg(long = "http-idle-timeout", value_name = "DURATION", default_value = "90s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Time a client gets to send a request's body (408 after it).
    #[arg(long = "http-body-timeout", value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub body_timeout: Duration,
    /// Largest request head in bytes (HTTP/1.1: 431; HTTP/2: the header list size).
    #[arg(long = "max-header-bytes", value_name = "BYTES", default_value_t = 1 << 20,
          value_parser = clap::value_parser!(u32).range(8192..))]
    pub max_header_bytes: u32,
    /// Connections served at once per server; those over it get 503 with Retry-After.
    #[arg(long = "max-connections", value_name = "N", default_value_t = 2048,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(32),
            idle_timeout: Duration::from_secs(90),
            body_timeout: Duration::from_secs(60),
            max_header_bytes: 1 << 20,
            max_connections: 2048,
        }
    }
}

/// A positive duration such as `32s`, `500ms` or `2m` (the one parser of the servers' flags).
pub use ferry_apimachinery::duration::parse_positive as parse_duration;

/// Serves `api` on every listener in `listeners` (at least one) until `shutdown` resolves, under
/// the limits of `api.cfg.http`.
pub async fn serve(
    api: Arc<Api>,
    listeners: Vec<TcpListener>,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    anyhow::ensure!(!listeners.is_empty(), "no listener to serve on");
    let acceptor = TlsAcceptor::from(tls);
    let limits = api.cfg.http.clone();
    let slots = Arc::new(Semaphore::new(
        usize::try_from(limits.max_connections).unwrap_or(Semaphore::MAX_PERMITS),
    ));
    let overflow = Arc::new(Semaphore::new(OVERFLOW_ANSWERED));
    tokio::pin!(shutdown);
    loop {
        // `accept` is cancel-safe: the accepts that lose the race lose no connection.
        let accept_any =
            futures::future::select_all(listeners.iter().map(|l| Box::pin(l.accept())));
        let accepted = tokio::select! {
            () = &mut shutdown => return Ok(()),
            (accepted, _, _) = accept_any => accepted,
        };
        let (tcp, peer): (tokio::net::TcpStream, SocketAddr) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning or exiting.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Over the cap: a few are told to come back; the rest are closed at once.
            if let Ok(permit) = overflow.clone().try_acquire_owned() {
                tracing::debug!("{peer}: over --max-connections, answering 503");
                let limits = limits.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(OVERFLOW_DEADLINE, refuse(acceptor, tcp, &limits))
                        .await;
                    drop(permit);
                });
            } else {
                tracing::debug!("{peer}: over --max-connections, closed");
            }
            continue;
        };
        let api = api.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            // Held by the connection and by every session upgraded from it.
            serve_connection(
                api,
                acceptor,
                tcp,
                peer,
                &limits,
                ConnectionSlot(Arc::new(permit)),
            )
            .await;
        });
    }
}

/// The hyper connection builder with the limits: header timeout and size.
fn builder(limits: &HttpLimits) -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(usize::try_from(limits.max_header_bytes.max(8192)).unwrap_or(8192));
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes);
    b
}

/// Requests in flight on one connection and when that count last changed: what the idle timer
/// reads.
struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    last_change_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_change_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once the connection has had no request in flight for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = Duration::from_millis(self.last_change_ms.load(Ordering::Relaxed));
            let quiet = self.start.elapsed().saturating_sub(last);
            if self.in_flight.load(Ordering::Relaxed) == 0 && quiet >= idle {
                return;
            }
            let wait = if quiet >= idle { idle } else { idle - quiet };
            tokio::time::sleep(wait.max(Duration::from_millis(50))).await;
        }
    }
}

/// A request in flight: counted from the handler's start to the end (or drop) of its response
/// body, so a watch streaming for minutes is not idle.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(a: &Arc<Activity>) -> InFlight {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        a.touch();
        InFlight(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's place under `--max-connections`: released when the connection and every
/// session upgraded from it (exec, attach, port-forward) have ended. Each request carries a clone
/// in its extensions.
#[derive(Clone, Debug)]
pub struct ConnectionSlot(
    #[allow(dead_code, reason = "held, never read")] Arc<OwnedSemaphorePermit>,
);

/// One admitted connection: TLS, then HTTP under the limits until it ends, upgrades or idles out.
async fn serve_connection(
    api: Arc<Api>,
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    limits: &HttpLimits,
    slot: ConnectionSlot,
) {
    let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!("TLS handshake with {peer} failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!("TLS handshake with {peer} timed out");
            return;
        }
    };
    let activity = Arc::new(Activity {
        start: Instant::now(),
        in_flight: AtomicUsize::new(0),
        last_change_ms: AtomicU64::new(0),
    });
    let svc = {
        let activity = activity.clone();
        service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(slot.clone());
            let api = api.clone();
            let guard = InFlight::new(&activity);
            async move {
                use http_body_util::BodyExt as _;
                let resp = handle_caught(api, req).await;
                // The guard lives as long as the response body.
                let resp = resp.map(move |b| {
                    b.map_frame(move |f| {
                        let _keep = &guard;
                        f
                    })
                    .boxed()
                });
                Ok::<_, std::convert::Infallible>(resp)
            }
        })
    };
    let builder = builder(limits);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!("connection from {peer} ended: {e}");
            }
            return;
        }
        () = activity.idle_for(limits.idle_timeout) => {
            tracing::debug!("connection from {peer} idle for {:?}: closed", limits.idle_timeout);
        }
    }
    // HTTP/2 clients get a GOAWAY (they open a new connection for their next request); a
    // client that does not let the connection end at once is cut off.
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
}

/// A connection over the cap: TLS, then every request on it is answered 503 ServiceUnavailable
/// with `Retry-After`, and the connection closes.
async fn refuse(acceptor: TlsAcceptor, tcp: tokio::net::TcpStream, limits: &HttpLimits) {
    let Ok(stream) = acceptor.accept(tcp).await else {
        return;
    };
    let svc = service_fn(|_req| async {
        let mut resp = crate::web::ApiError::new(
            503,
            "ServiceUnavailable",
            "the server is serving its maximum number of connections; retry later",
        )
        .response();
        resp.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
        resp.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
        Ok::<_, std::convert::Infallible>(resp)
    });
    let mut b = builder(limits);
    b.http1().keep_alive(false);
    let _ = b.serve_connection(TokioIo::new(stream), svc).await;
}

/// [`Api::handle`] with any panic of the handler caught ([`caught`]).
async fn handle_caught(
    api: Arc<Api>,
    req: http::Request<hyper::body::Incoming>,
) -> http::Response<crate::web::Body> {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    caught(&method, &path, api.handle(req)).await
}

/// Runs a request's handler `fut`, turning a panic into a 500 InternalError Status and one error
/// log line (method, path, the panic's message), so that a bug answers the request instead of
/// dropping the connection.
async fn caught(
    method: &http::Method,
    path: &str,
    fut: impl std::future::Future<Output = http::Response<crate::web::Body>>,
) -> http::Response<crate::web::Body> {
    use futures::FutureExt as _;
    match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
        Ok(resp) => resp,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".to_owned());
            tracing::error!(%method, path, panic = %msg, "request handler panicked; answered 500");
            crate::web::ApiError::internal(format!(
                "an internal error occurred while handling {method} {path}"
            ))
            .response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_status() {
        let resp = caught(&http::Method::POST, "/api/v1/x", async {
            let v: Vec<u8> = Vec::new();
            if v.is_empty() {
                panic!("handler bug");
            }
            crate::web::text(http::StatusCode::OK, "unreachable")
        })
        .await;
        assert_eq!(resp.status(), 500);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["reason"], "InternalError");
        assert_eq!(status["code"], 500);
        let ok = caught(&http::Method::GET, "/healthz", async {
            crate::web::text(http::StatusCode::OK, "ok")
        })
        .await;
        assert_eq!(ok.status(), 200);
    }
}
