//! `kubectl port-forward` on this node: the `portforward.k8s.io` protocol over SPDY/3.1
//! ([`super::spdy`]), carried either in WebSocket binary messages or on the raw upgraded
//! connection.
//!
//! For each local connection kubectl opens two streams with the same `requestID` header: an error
//! stream and a data stream (`streamType`), both naming the `port`. Once both are there the
//! kubelet connects to `localhost:<port>` inside the pod's network namespace (a socket made on a
//! short-lived thread that entered it, so no runtime thread ever changes namespace) and copies
//! bytes both ways. A connection that fails is reported on the error stream, which kubectl
//! prints before it ends the session; when a copy ends the streams are half-closed (`FLAG_FIN`).
//! When the session ends, every forwarded connection is closed with it.

use super::spdy::{self, Decoder, Encoder, Frame};
use bytes::{Bytes, BytesMut};
use futures::{SinkExt as _, StreamExt as _};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The pod whose ports are forwarded.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Its network namespace (`None`: the node's, for `hostNetwork` pods).
    pub(crate) netns: Option<PathBuf>,
    /// `namespace/name`, for messages.
    pub(crate) pod: String,
    /// UID, for messages.
    pub(crate) uid: String,
}

/// Serves SPDY on a raw upgraded connection.
pub(crate) async fn over_io<S>(io: S, target: Target)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut r, mut w) = tokio::io::split(io);
    let (in_tx, in_rx) = mpsc::channel::<Bytes>(16);
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(64);
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = r.read(&mut buf).await {
            if n == 0 || in_tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                break;
            }
        }
    });
    let writer = tokio::spawn(async move {
        while let Some(b) = out_rx.recv().await {
            if w.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = w.shutdown().await;
    });
    session(in_rx, out_tx, target).await;
    reader.abort();
    let _ = writer.await;
}

/// Serves SPDY tunneled in a WebSocket's binary messages.
pub(crate) async fn over_websocket<S>(ws: WebSocketStream<S>, target: Target)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let (in_tx, in_rx) = mpsc::channel::<Bytes>(16);
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(64);
    let reader = tokio::spawn(async move {
        while let Some(Ok(m)) = stream.next().await {
            let data = match m {
                Message::Binary(b) => b,
                Message::Close(_) => break,
                _ => continue,
            };
            if in_tx.send(data).await.is_err() {
                break;
            }
        }
    });
    let writer = tokio::spawn(async move {
        while let Some(b) = out_rx.recv().await {
            if sink.send(Message::Binary(b)).await.is_err() {
                break;
            }
        }
        let _ = sink.send(super::normal_close()).await;
    });
    session(in_rx, out_tx, target).await;
    reader.abort();
    let _ = writer.await;
}

/// The two streams of one forwarded connection, as they arrive.
#[derive(Debug, Default)]
struct Pair {
    port: u16,
    error: Option<u32>,
    data: Option<u32>,
}

/// Client data for a connection's socket: `Some` bytes, `None` for the client's FIN. A dropped
/// sender without `None` is an abort (RST_STREAM or the session's end).
type ToPod = mpsc::Sender<Option<Bytes>>;

async fn session(mut input: mpsc::Receiver<Bytes>, out: mpsc::Sender<Bytes>, target: Target) {
    let mut dec = Decoder::new();
    let mut enc = match Encoder::new() {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!("port-forward: {e}");
            return;
        }
    };
    let mut buf = BytesMut::new();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut to_pod: HashMap<u32, ToPod> = HashMap::new();
    let mut tasks = JoinSet::new();
    'session: while let Some(chunk) = input.recv().await {
        buf.extend_from_slice(&chunk);
        loop {
            let frame = match dec.decode(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!("port-forward to {}: {e}", target.pod);
                    break 'session;
                }
            };
            let mut wire = BytesMut::new();
            match frame {
                Frame::SynStream {
                    stream_id, headers, ..
                } => {
                    let h = |n: &str| {
                        headers
                            .iter()
                            .find(|(k, _)| k == n)
                            .map(|(_, v)| v.as_str())
                    };
                    let port = h("port")
                        .and_then(|p| p.parse::<u16>().ok())
                        .filter(|p| *p > 0);
                    let (Some(kind), Some(port), Some(id)) =
                        (h("streamtype"), port, h("requestid"))
                    else {
                        let _ = spdy::rst_stream(&mut wire, stream_id, spdy::PROTOCOL_ERROR);
                        let _ = out.send(wire.freeze()).await;
                        continue;
                    };
                    if enc.syn_reply(&mut wire, stream_id, &[]).is_err() {
                        break 'session;
                    }
                    let pair = pairs.entry(id.to_owned()).or_insert_with(|| Pair {
                        port,
                        ..Pair::default()
                    });
                    match kind {
                        "error" => pair.error = Some(stream_id),
                        "data" => pair.data = Some(stream_id),
                        _ => {
                            let _ = spdy::rst_stream(&mut wire, stream_id, spdy::REFUSED_STREAM);
                        }
                    }
                    if let Pair {
                        port,
                        error: Some(e),
                        data: Some(d),
                    } = *pair
                    {
                        pairs.remove(id);
                        let (tx, rx) = mpsc::channel(16);
                        to_pod.insert(d, tx);
                        tasks.spawn(forward(target.clone(), port, e, d, rx, out.clone()));
                    }
                }
                Frame::Data {
                    stream_id,
                    fin,
                    data,
                } => {
                    if let Some(tx) = to_pod.get(&stream_id) {
                        let gone = (!data.is_empty() && tx.send(Some(data)).await.is_err())
                            || (fin && tx.send(None).await.is_err());
                        if fin || gone {
                            to_pod.remove(&stream_id);
                        }
                    }
                }
                Frame::RstStream { stream_id } => {
                    to_pod.remove(&stream_id);
                }
                Frame::Ping(id) => {
                    let _ = spdy::ping(&mut wire, id);
                }
                Frame::GoAway => break 'session,
                Frame::Ignored => {}
            }
            if !wire.is_empty() && out.send(wire.freeze()).await.is_err() {
                break 'session;
            }
        }
        // Reap finished connections.
        while tasks.try_join_next().is_some() {}
    }
    // Dropping the tasks closes every forwarded connection.
    tasks.shutdown().await;
}

fn frame(stream_id: u32, fin: bool, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(data.len() + 8);
    // Chunks are at most 64 KiB, far below the 24-bit limit.
    let _ = spdy::data(&mut b, stream_id, fin, data);
    b.freeze()
}

/// Connects to `localhost:port` in `netns` (IPv4, then IPv6).
async fn connect(netns: Option<PathBuf>, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let dial = move || -> std::io::Result<std::net::TcpStream> {
        let mut last = None;
        for ip in [
            std::net::IpAddr::from([127, 0, 0, 1]),
            std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ] {
            match std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::new(ip, port),
                Duration::from_secs(5),
            ) {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no address")))
    };
    let std_stream = tokio::task::spawn_blocking(move || match netns {
        Some(path) => {
            let ns = ferry_sys::netns::NetnsFd::open(&path).map_err(std::io::Error::other)?;
            ns.run_on_thread(dial).map_err(std::io::Error::other)?
        }
        None => dial(),
    })
    .await
    .map_err(std::io::Error::other)??;
    std_stream.set_nonblocking(true)?;
    let _ = std_stream.set_nodelay(true);
    tokio::net::TcpStream::from_std(std_stream)
}

/// One forwarded connection.
async fn forward(
    t: Target,
    port: u16,
    error_stream: u32,
    data_stream: u32,
    mut from_client: mpsc::Receiver<Option<Bytes>>,
    out: mpsc::Sender<Bytes>,
) {
    let tcp = match connect(t.netns.clone(), port).await {
        Ok(s) => s,
        Err(e) => {
            let msg = format!(
                "error forwarding port {port} to pod {}, uid {}: failed to connect to localhost:{port} inside the pod's network namespace: {e}",
                t.pod, t.uid
            );
            tracing::info!("{msg}");
            let _ = out.send(frame(error_stream, true, msg.as_bytes())).await;
            let _ = out.send(frame(data_stream, true, &[])).await;
            return;
        }
    };
    let (mut rd, mut wr) = tcp.into_split();
    let up = async move {
        loop {
            match from_client.recv().await {
                Some(Some(b)) => {
                    if wr.write_all(&b).await.is_err() {
                        return false;
                    }
                }
                // The client's FIN: half-close towards the pod.
                Some(None) => {
                    let _ = wr.shutdown().await;
                    return true;
                }
                // Reset or session end.
                None => return false,
            }
        }
    };
    let down_out = out.clone();
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = down_out.send(frame(data_stream, true, &[])).await;
                    return;
                }
                Ok(n) => {
                    if down_out
                        .send(frame(data_stream, false, &buf[..n]))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    tokio::pin!(up, down);
    // Both directions to their end; an aborted upload ends the connection at once.
    tokio::select! {
        clean = &mut up => if clean { down.await },
        () = &mut down => { let _ = up.await; }
    }
    let _ = out.send(frame(error_stream, true, &[])).await;
}
