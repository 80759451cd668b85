//! The apiserver's HTTP bounds against misbehaving clients, with raw TLS connections: a client
//! that dribbles its request head is cut off after `--http-header-timeout`; an HTTP/2 connection
//! with nothing in flight is closed after `--http-idle-timeout`; a body that does not arrive in
//! `--http-body-timeout` gets a 408; connections over `--max-connections` get a 503 with
//! `Retry-After` while the connected clients are still served.

mod common;

use common::Server;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A TLS connection to the server, trusting the cluster CA from the admin kubeconfig.
async fn connect(s: &Server, alpn: &[u8]) -> TlsStream<TcpStream> {
    use base64::Engine as _;
    let kc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.kubeconfig()).unwrap()).unwrap();
    let ca_b64 = kc["clusters"][0]["cluster"]["certificate-authority-data"]
        .as_str()
        .unwrap();
    let ca = base64::engine::general_purpose::STANDARD
        .decode(ca_b64)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca.as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("TLS handshake")
}

/// Reads until the server closes (EOF or an error); returns what arrived.
async fn read_to_close(conn: &mut TlsStream<TcpStream>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// One HTTP/1.1 request on a fresh connection; returns the response head and body as text.
async fn get(s: &Server, path: &str) -> String {
    let mut c = connect(s, b"http/1.1").await;
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(10), read_to_close(&mut c))
        .await
        .expect("an answer");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_dribbled_request_head_is_cut_off_after_the_header_timeout() {
    let s = Server::start_with(&[
        "--controllers",
        "false",
        "--http-header-timeout",
        "2s",
        "--http-idle-timeout",
        "60s",
    ]);
    let mut c = connect(&s, b"http/1.1").await;
    let start = Instant::now();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // One header line every 300 ms, for up to 20 s: the server must hang up first.
    let mut dribbler = TlsReader(&mut c);
    let (closed_after, _) = tokio::select! {
        out = read_to_close_dribbling(&mut dribbler) => (start.elapsed(), out),
        () = tokio::time::sleep(Duration::from_secs(20)) => panic!("still connected after 20 s"),
    };
    assert!(
        closed_after >= Duration::from_millis(1500) && closed_after < Duration::from_secs(8),
        "cut off after {closed_after:?}, want about 2 s"
    );
    // Others are still served.
    assert!(get(&s, "/healthz").await.starts_with("HTTP/1.1 200"));
}

/// Reads from and dribbles into one connection at once: `read_to_close` on this writes a header
/// line every 300 ms while it waits.
struct TlsReader<'a>(&'a mut TlsStream<TcpStream>);

impl TlsReader<'_> {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            tokio::select! {
                r = self.0.read(buf) => return r,
                () = tokio::time::sleep(Duration::from_millis(300)) => {
                    self.0.write_all(b"X-Dribble: 1\r\n").await?;
                    self.0.flush().await?;
                }
            }
        }
    }
}

async fn read_to_close_dribbling(r: &mut TlsReader<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed() {
    let s = Server::start_with(&["--controllers", "false", "--http-idle-timeout", "2s"]);
    let mut c = connect(&s, b"h2").await;
    assert_eq!(c.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let start = Instant::now();
    // The client preface and an empty SETTINGS frame, then silence.
    c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(20), read_to_close(&mut c))
        .await
        .expect("the server closes an idle HTTP/2 connection");
    let closed_after = start.elapsed();
    assert!(!out.is_empty(), "the server spoke HTTP/2 first");
    assert!(
        closed_after >= Duration::from_millis(1500) && closed_after < Duration::from_secs(8),
        "closed after {closed_after:?}, want about 2 s"
    );
}

#[tokio::test]
async fn a_body_that_does_not_arrive_gets_408() {
    let s = Server::start_with(&["--controllers", "false", "--http-body-timeout", "2s"]);
    let token = s.admin_token();
    let mut c = connect(&s, b"http/1.1").await;
    let head = format!(
        "POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{\"metadata\":"
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let start = Instant::now();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(20), c.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(start.elapsed() >= Duration::from_millis(1500));
}

/// `GET /healthz` on an open keep-alive connection; returns the response's first bytes.
async fn healthz_on(c: &mut TlsStream<TcpStream>) -> String {
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn connections_over_the_cap_get_503_and_the_others_are_served() {
    // The server's own `kubernetes` Service controller holds one connection too.
    let s = Server::start_with(&["--controllers", "false", "--max-connections", "3"]);
    let ready = ferry_tests::wait_until(Duration::from_secs(10), || {
        s.kubectl(&["get", "service", "kubernetes"])
            .status
            .success()
    });
    assert!(ready, "{}", s.log());
    // Fill the slots with keep-alive connections until one is refused.
    let mut held = Vec::new();
    let over = loop {
        let mut c = connect(&s, b"http/1.1").await;
        let answer = healthz_on(&mut c).await;
        if answer.starts_with("HTTP/1.1 200") {
            held.push(c);
            assert!(
                held.len() <= 3,
                "more connections than --max-connections served"
            );
            continue;
        }
        break answer;
    };
    assert!(!held.is_empty(), "no connection served: {over}");
    assert!(over.starts_with("HTTP/1.1 503"), "{over}");
    assert!(
        over.to_ascii_lowercase().contains("retry-after: 1"),
        "{over}"
    );
    assert!(over.contains("\"reason\":\"ServiceUnavailable\""), "{over}");
    // The connected clients are still served.
    for c in &mut held {
        assert!(healthz_on(c).await.starts_with("HTTP/1.1 200"));
    }
    // A closed connection frees its slot.
    drop(held.pop());
    let mut answer = String::new();
    for _ in 0..50 {
        answer = get(&s, "/healthz").await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// A fake kubelet on 127.0.0.1 with a serving certificate from the cluster CA: it answers every
/// request with `answer` and then, when `stall`, keeps the connection open without a byte more.
async fn fake_kubelet(s: &Server, answer: Vec<u8>, stall: bool) -> u16 {
    let cert = s.dir.path().join("kubelet.crt");
    let key = s.dir.path().join("kubelet.key");
    let out = std::process::Command::new(common::SERVER)
        .arg("--data-dir")
        .arg(s.dir.path())
        .args(["kubelet-cert", "--node", "n1", "--ip", "127.0.0.1"])
        .arg("--cert-file")
        .arg(&cert)
        .arg("--key-file")
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let certs: Vec<_> = rustls_pemfile::certs(&mut std::fs::read(&cert).unwrap().as_slice())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut std::fs::read(&key).unwrap().as_slice())
        .unwrap()
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let answer = answer.clone();
            tokio::spawn(async move {
                let Ok(mut c) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf).await;
                let _ = c.write_all(&answer).await;
                let _ = c.flush().await;
                if stall {
                    tokio::time::sleep(Duration::from_secs(120)).await;
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn a_kubelets_error_body_is_read_bounded_in_size_and_time() {
    let s = Server::start_with(&["--controllers", "false"]);
    let client = s.client().await;
    let logs = |pod: &'static str| {
        let client = client.clone();
        async move {
            let start = Instant::now();
            let req = http::Request::get(format!("/api/v1/namespaces/default/pods/{pod}/log"))
                .body(Vec::new())
                .unwrap();
            let err = client.request_text(req).await.expect_err("an error");
            let kube::Error::Api(status) = err else {
                panic!("not a Status: {err}");
            };
            (status.code, status.message, start.elapsed())
        }
    };
    // A kubelet whose error body never ends: the first 16 KiB are read, not more.
    let mut huge =
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 100000000\r\n\r\n".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 1 << 20));
    let port = fake_kubelet(&s, huge, true).await;
    register(&s, "n1", port, "huge");
    let (code, msg, took) = logs("huge").await;
    assert_eq!(code, 500, "{msg}");
    assert!(msg.contains("over 16384 bytes"), "{msg}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    // A kubelet that sends its error head and then nothing: answered after the read deadline.
    let stalled = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 100\r\n\r\nnot all of it".to_vec();
    let port = fake_kubelet(&s, stalled, true).await;
    register(&s, "n2", port, "stalled");
    let (code, msg, took) = logs("stalled").await;
    assert_eq!(code, 403, "{msg}");
    assert!(msg.contains("did not arrive in time"), "{msg}");
    assert!(took < Duration::from_secs(20), "{took:?}");
}

/// Node `node` with its kubelet endpoint at 127.0.0.1:`port`, and pod `pod` bound to it.
fn register(s: &Server, node: &str, port: u16, pod: &str) {
    s.ok_stdin(
        &["create", "-f", "-"],
        &format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {node}\n"),
    );
    let status = format!(
        r#"{{"status":{{"addresses":[{{"type":"InternalIP","address":"127.0.0.1"}}],"daemonEndpoints":{{"kubeletEndpoint":{{"Port":{port}}}}}}}}}"#
    );
    s.ok(&[
        "patch",
        "node",
        node,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status,
    ]);
    s.ok_stdin(
        &["create", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {pod}\nspec:\n  nodeName: {node}\n  containers:\n  - name: c\n    image: busybox\n"
        ),
    );
}
