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
                async move { Ok::<_, std::convert::Infallible>(api.handle(req).await) }
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
