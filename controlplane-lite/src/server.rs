//! The HTTPS listeners: TLS (rustls), HTTP/2 and HTTP/1.1 on each port, one task per connection,
//! graceful shutdown.

use crate::api::Api;
use anyhow::{Context, Result};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Serves `api` on every listener in `listeners` (at least one) until `shutdown` resolves.
pub async fn serve(
    api: Arc<Api>,
    listeners: Vec<TcpListener>,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    anyhow::ensure!(!listeners.is_empty(), "no listener to serve on");
    let acceptor = TlsAcceptor::from(tls);
    tokio::pin!(shutdown);
    loop {
        // `accept` is cancel-safe: the accepts that lose the race lose no connection.
        let accept_any =
            futures::future::select_all(listeners.iter().map(|l| Box::pin(l.accept())));
        let (tcp, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            (accepted, _, _) = accept_any => accepted.context("accepting a connection")?,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let api = api.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                acceptor.accept(tcp),
            )
            .await
            {
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
            let svc = service_fn(move |req| {
                let api = api.clone();
                async move { Ok::<_, std::convert::Infallible>(handle_caught(api, req).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!("connection from {peer} ended: {e}");
            }
        });
    }
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
