//! The agent's small HTTP/1.x responder, shared by the metrics server ([`crate::metrics`]) and
//! the `healthCheckNodePort` listeners ([`crate::service::healthcheck`]).
//!
//! ```text
//! accept (at most max_connections at once; more wait in the backlog)
//!   read the request head: at most MAX_HEAD bytes within READ_TIMEOUT (431 / silence otherwise)
//!   request line "<METHOD> <target> HTTP/1.x" ──► handler(Request) ──► response bytes (400 if bad)
//!   write within WRITE_TIMEOUT, shut down, drain up to 64 KiB of body, close
//! ```
//!
//! Hand-written over tokio's `TcpListener` rather than hyper: the agent answers a few fixed
//! `GET`s, ignores any body and closes every connection. hyper 1 is in the lockfile, but the
//! agent only builds its client half (through kube); enabling its server features would rebuild
//! hyper and the kube stack above it for these endpoints.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head (request line + headers) read.
pub(crate) const MAX_HEAD: usize = 8192;
/// Time a client gets to send its request head.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client gets to take the response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// A parsed request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    /// `GET`, `HEAD`, ...
    pub(crate) method: String,
    /// The target without its query string.
    pub(crate) path: String,
}

/// Serves `listener` until the task is dropped or aborted: each connection gets one request,
/// answered by `handler`, then is closed. `what` names the server in the logs.
pub(crate) async fn serve<H, F>(
    listener: TcpListener,
    max_connections: usize,
    what: &'static str,
    handler: H,
) where
    H: Fn(Request) -> F + Send + Sync + 'static,
    F: Future<Output = Vec<u8>> + Send + 'static,
{
    let handler = Arc::new(handler);
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((s, _)) => {
                let h = handler.clone();
                tokio::spawn(async move {
                    handle(s, &*h).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accepting a {what} connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One connection: one request, one response, close.
async fn handle<H, F>(mut s: TcpStream, handler: &H)
where
    H: Fn(Request) -> F,
    F: Future<Output = Vec<u8>>,
{
    let head = tokio::time::timeout(READ_TIMEOUT, read_head(&mut s)).await;
    let response = match head {
        Ok(Ok(Some(head))) => match parse(&head) {
            Some(req) => handler(req).await,
            None => reply(400, "text/plain", &[], "bad request\n", true),
        },
        Ok(Err(HeadError::TooLarge)) => {
            reply(431, "text/plain", &[], "request head too large\n", true)
        }
        // Timeout, EOF before a complete head, or a socket error: nobody to answer.
        _ => return,
    };
    let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
        s.write_all(&response).await?;
        s.shutdown().await?;
        // Drain what the client still sends (a body) so closing does not reset the connection
        // before it read the response.
        let mut sink = [0u8; 4096];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            let n = s.read(&mut sink).await?;
            if n == 0 {
                break;
            }
            left = left.saturating_sub(n);
        }
        std::io::Result::Ok(())
    })
    .await;
}

#[derive(Debug)]
enum HeadError {
    TooLarge,
    Io,
}

/// Reads up to the blank line ending the request head; `None` on EOF before it.
async fn read_head(s: &mut TcpStream) -> Result<Option<Vec<u8>>, HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk).await.map_err(|_| HeadError::Io)?;
        if n == 0 {
            return Ok(None);
        }
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_head_end(&buf[from..]) {
            buf.truncate(from + end);
            return Ok(Some(buf));
        }
        if buf.len() > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
    }
}

/// Where the head ends (`\r\n\r\n`, or `\n\n` from lenient clients) in `b`.
fn find_head_end(b: &[u8]) -> Option<usize> {
    let crlf = b.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    let lf = b.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    crlf.into_iter().chain(lf).min()
}

/// The request line of `head`, if it is one of HTTP/1.x.
fn parse(head: &[u8]) -> Option<Request> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_ascii_whitespace();
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    Some(Request {
        method: method.to_owned(),
        path: target.split('?').next().unwrap_or_default().to_owned(),
    })
}

/// A complete response: status line, `Content-Type`, `extra` headers, `Content-Length`,
/// `Connection: close`, and `body` when `with_body` (not for `HEAD`). A 405 lists
/// `Allow: GET, HEAD`.
pub(crate) fn reply(
    code: u16,
    content_type: &str,
    extra: &[(&str, &str)],
    body: &str,
    with_body: bool,
) -> Vec<u8> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    };
    let mut head = format!("HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\n");
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if code == 405 {
        head.push_str("Allow: GET, HEAD\r\n");
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut out = head.into_bytes();
    if with_body {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn finds_the_end_of_the_head() {
        assert_eq!(
            find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody"),
            Some(24)
        );
        assert_eq!(find_head_end(b"GET / HTTP/1.0\n\n"), Some(16));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    }

    #[test]
    fn parses_request_lines() {
        assert_eq!(
            parse(b"GET /a?b=c HTTP/1.1\r\n\r\n"),
            Some(Request {
                method: "GET".into(),
                path: "/a".into()
            })
        );
        assert_eq!(parse(b"GET / SPDY/3\r\n\r\n"), None);
        assert_eq!(parse(b"GET\r\n\r\n"), None);
    }

    #[test]
    fn replies_carry_length_extra_headers_and_optionally_the_body() {
        let r = reply(503, "application/json", &[("X-A", "b")], "{}", true);
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nX-A: b\r\n\
             Content-Length: 2\r\nConnection: close\r\n\r\n{}"
        );
        let r = String::from_utf8(reply(405, "text/plain", &[], "no", false)).unwrap();
        assert!(
            r.contains("Allow: GET, HEAD\r\n") && r.ends_with("\r\n\r\n"),
            "{r}"
        );
    }

    /// Sends `req` to `addr`, half-closes, and reads the whole answer.
    pub(crate) async fn request(addr: SocketAddr, req: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(req).await.unwrap();
        s.shutdown().await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Whether connecting to `addr` is refused within 2 s (the listener closed).
    pub(crate) async fn wait_refused(addr: SocketAddr) -> bool {
        for _ in 0..200 {
            if let Err(e) = TcpStream::connect(addr).await {
                if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn serves_one_request_per_connection_and_bounds_the_head() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(serve(l, 2, "test", |req: Request| async move {
            reply(200, "text/plain", &[], &req.path, req.method == "GET")
        }));
        let r = request(addr, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\n/x"),
            "{r}"
        );
        let r = request(addr, b"BREW / HTCPCP/1.0\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 2 * MAX_HEAD));
        let r = request(addr, &big).await;
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
        task.abort();
    }
}
