//! `kubectl attach` (and `kubectl run -i`/`-it`) on this node: a client joins a running
//! container's standard streams, in the same channel protocol as exec ([`super::exec`]).
//!
//! - A container with `stdin: true` or `tty: true` has an attach socket served by its shim
//!   ([`crate::shim::ATTACH`]): the session connects, says whether it sends stdin and wants
//!   output, and from then on gets the container's stdout and stderr (or its terminal's output)
//!   as the shim copies them to the log, and sends the client's stdin and terminal sizes. The
//!   end of the client's stdin (v5 close, or the session's end) half-closes the connection;
//!   with `stdinOnce` the shim then closes the container's stdin. The shim ends the connection
//!   when the container's output has ended.
//! - Any other container writes straight to its log file: the session follows that file from
//!   the moment of attaching, on the stdout channel (the log interleaves stdout and stderr, so
//!   its stderr arrives on stdout too).
//!
//! The session ends with a `Success` status once the container has exited and its last output
//! is sent, or when the client goes away (the container keeps running).

use super::exec::{frame, next_event, ClientEvent, Request, ERROR, STDERR, STDOUT};
use crate::shim::{AttachFrame, ATTACH, FRAME_HEAD};
use futures::{SinkExt as _, StreamExt as _};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// How often the log file is read for new output.
const POLL: Duration = Duration::from_millis(20);

/// The container attempt a session attaches to.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The attempt's directory (log, exit record, attach socket).
    pub(crate) adir: PathBuf,
    /// The log's length when the client asked: output from there on is the session's.
    pub(crate) offset: u64,
    /// The container has a stdin.
    pub(crate) stdin: bool,
    /// Its shim serves an attach socket (`stdin` or `tty` containers).
    pub(crate) attachable: bool,
}

/// The output channel for the request, if it wants output.
fn output_channel(req: &Request) -> Option<u8> {
    if req.stdout || req.tty {
        Some(STDOUT)
    } else if req.stderr {
        Some(STDERR)
    } else {
        None
    }
}

/// Reads one frame from the shim; `Ok(None)` at the end of the connection.
async fn read_frame<R>(r: &mut R) -> std::io::Result<Option<AttachFrame>>
where
    R: tokio::io::AsyncRead + Unpin,
{
    let mut head = [0u8; FRAME_HEAD];
    match r.read_exact(&mut head[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    r.read_exact(&mut head[1..]).await?;
    let mut payload = vec![0u8; AttachFrame::payload_len(&head)?];
    r.read_exact(&mut payload).await?;
    AttachFrame::decode(head[0], payload).map(Some)
}

/// Connects to the shim's attach socket of the attempt in `adir`.
async fn connect(adir: &std::path::Path) -> std::io::Result<tokio::net::UnixStream> {
    let dir = std::fs::File::open(adir)?;
    tokio::net::UnixStream::connect(crate::shim::path_in(&dir, ATTACH)).await
}

/// Runs one attach session on the upgraded connection `ws`.
pub(crate) async fn session<S>(ws: WebSocketStream<S>, target: Target, req: Request)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut incoming) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(16);
    let channel = output_channel(&req);
    let mut input = None;
    let pump = if target.attachable {
        let hello = AttachFrame::Hello {
            stdin: req.stdin && target.stdin,
            output: channel.is_some(),
        };
        let conn = match connect(&target.adir).await {
            Ok(mut c) => c.write_all(&hello.encode()).await.map(|()| c),
            Err(e) => Err(e),
        };
        let (rd, wr) = match conn {
            Ok(c) => c.into_split(),
            Err(e) => {
                let why = format!("attaching to the container: {e}");
                let status = super::exec::exit_status(&[], None, &why);
                let _ = sink.send(frame(ERROR, status.to_string().as_bytes())).await;
                let _ = sink.send(super::normal_close()).await;
                return;
            }
        };
        input = Some(wr);
        let (to_stdout, to_stderr) = (req.stdout || req.tty, req.stderr);
        tokio::spawn(async move {
            // The shim's frames until it ends the connection (the container's output ended).
            let mut rd = tokio::io::BufReader::new(rd);
            while let Ok(Some(f)) = read_frame(&mut rd).await {
                let m = match f {
                    AttachFrame::Stdout(b) if to_stdout => frame(STDOUT, &b),
                    AttachFrame::Stderr(b) if to_stderr => frame(STDERR, &b),
                    _ => continue,
                };
                if out_tx.send(m).await.is_err() {
                    return;
                }
            }
        })
    } else {
        // The log from `offset`, until the attempt has exited and the log is drained.
        tokio::spawn(async move {
            let log = target.adir.join("output.log");
            let mut offset = target.offset;
            while let Some(chunk) = crate::logs::next_chunk(&log, &target.adir, offset, POLL).await
            {
                offset += chunk.len() as u64;
                if let Some(ch) = channel {
                    if out_tx.send(frame(ch, &chunk)).await.is_err() {
                        return;
                    }
                }
            }
        })
    };
    let writer = async move {
        while let Some(m) = out_rx.recv().await {
            if sink.send(m).await.is_err() {
                return;
            }
        }
        let status = super::exec::exit_status(&[], Some(0), "");
        let _ = sink.send(frame(ERROR, status.to_string().as_bytes())).await;
        let _ = sink.send(super::normal_close()).await;
    };
    // Client -> container: stdin and sizes to the shim; dropping the connection's writing half
    // ends this client's stdin there.
    let reader = async move {
        loop {
            let f = match next_event(&mut incoming).await {
                ClientEvent::Stdin(data) => AttachFrame::Stdin(data.to_vec()),
                ClientEvent::Resize(size) => AttachFrame::Resize(size.height, size.width),
                ClientEvent::CloseStdin => {
                    if let Some(mut c) = input.take() {
                        let _ = c.shutdown().await;
                    }
                    continue;
                }
                ClientEvent::Gone => break,
            };
            if let Some(c) = input.as_mut() {
                if c.write_all(&f.encode()).await.is_err() {
                    input = None;
                }
            }
        }
    };
    tokio::select! {
        () = writer => {}
        () = reader => {}
    }
    pump.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(stdout: bool, stderr: bool, tty: bool) -> Request {
        Request {
            command: Vec::new(),
            stdin: false,
            stdout,
            stderr,
            tty,
        }
    }

    #[test]
    fn output_goes_to_the_channel_the_client_asked_for() {
        assert_eq!(output_channel(&req(true, true, false)), Some(STDOUT));
        assert_eq!(output_channel(&req(false, true, false)), Some(STDERR));
        assert_eq!(output_channel(&req(false, false, true)), Some(STDOUT));
        assert_eq!(output_channel(&req(false, false, false)), None);
    }
}
