//! `kubectl exec` on this node: one command run as the container's processes are (its network
//! namespace, cgroup, environment and working directory), its standard streams carried over a
//! WebSocket in the Kubernetes channel protocol (`v5.channel.k8s.io`, `v4.channel.k8s.io`).
//!
//! Every binary message starts with a channel byte: 0 stdin, 1 stdout, 2 stderr, 3 error (one
//! `Status` when the command ends, with its exit code), 4 resize (`{"Width":w,"Height":h}`, TTY
//! only); v5 adds 255 (`[255, 0]`: the client closed stdin). With a TTY the command gets a
//! pseudo-terminal as its controlling terminal and stdout carries the terminal's output.
//!
//! The command leads its own process group (its session); when it exits, or when the client goes
//! away first, the whole group is killed, so an exec leaves nothing behind in the container's
//! cgroup.

use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::json;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Channel bytes of the protocol.
pub(crate) const STDIN: u8 = 0;
/// See [`STDIN`].
pub(crate) const STDOUT: u8 = 1;
/// See [`STDIN`].
pub(crate) const STDERR: u8 = 2;
/// See [`STDIN`].
pub(crate) const ERROR: u8 = 3;
/// See [`STDIN`].
pub(crate) const RESIZE: u8 = 4;
/// See [`STDIN`] (v5 only).
pub(crate) const CLOSE: u8 = 255;

/// What a client sends, decoded: exec and attach sessions read their clients with
/// [`next_event`].
#[derive(Debug)]
pub(crate) enum ClientEvent {
    /// Bytes for stdin.
    Stdin(Bytes),
    /// A new terminal size.
    Resize(Size),
    /// The client closed its stdin (v5).
    CloseStdin,
    /// The connection ended (a close frame, an error or its end).
    Gone,
}

/// The client's next meaningful message.
pub(crate) async fn next_event<I>(incoming: &mut I) -> ClientEvent
where
    I: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    while let Some(msg) = incoming.next().await {
        let mut data = match msg {
            Ok(Message::Binary(b)) => b,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        if data.is_empty() {
            continue;
        }
        let channel = data.split_to(1)[0];
        match channel {
            STDIN => return ClientEvent::Stdin(data),
            RESIZE => {
                if let Ok(size) = serde_json::from_slice::<Size>(&data) {
                    return ClientEvent::Resize(size);
                }
            }
            CLOSE if data.first() == Some(&STDIN) => return ClientEvent::CloseStdin,
            _ => {}
        }
    }
    ClientEvent::Gone
}

/// How a container's processes run (from its attempt's shim spec).
#[derive(Debug, Clone)]
pub(crate) struct ProcessContext {
    /// The complete environment.
    pub(crate) env: Vec<(String, String)>,
    /// Working directory (`None`: `/`).
    pub(crate) working_dir: Option<String>,
    /// Network namespace (`None`: the node's, for `hostNetwork` pods).
    pub(crate) netns: Option<PathBuf>,
    /// The container's cgroup.
    pub(crate) cgroup: PathBuf,
}

/// One exec request: the command and which streams the client asked for.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    /// argv.
    pub(crate) command: Vec<String>,
    /// The client sends stdin.
    pub(crate) stdin: bool,
    /// The client wants stdout.
    pub(crate) stdout: bool,
    /// The client wants stderr (never with a TTY).
    pub(crate) stderr: bool,
    /// Run on a pseudo-terminal.
    pub(crate) tty: bool,
}

/// The started command: its pid (= process group), the streams to pump.
struct Started {
    child: tokio::process::Child,
    pgid: i32,
    input: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    outputs: Vec<(u8, Box<dyn AsyncRead + Send + Unpin>)>,
    pty: Option<OwnedFd>,
}

fn spawn(ctx: &ProcessContext, req: &Request) -> std::io::Result<Started> {
    let (prog, args) = req
        .command
        .split_first()
        .ok_or_else(|| std::io::Error::other("no command"))?;
    let mut cmd = std::process::Command::new(prog);
    cmd.args(args)
        .env_clear()
        .envs(ctx.env.iter().map(|(k, v)| (k, v)))
        .current_dir(ctx.working_dir.as_deref().unwrap_or("/"));
    let procs = crate::shim::open_procs(&ctx.cgroup)?;
    let netns: Option<OwnedFd> = match &ctx.netns {
        Some(p) => Some(std::fs::File::open(p)?.into()),
        None => None,
    };
    let mut on_exec = ferry_sys::process::OnExec::new().join_cgroup(&procs)?;
    if let Some(ns) = &netns {
        on_exec = on_exec.enter_netns(ns)?;
    }
    let mut pty = None;
    if req.tty {
        let p = ferry_sys::pty::open(24, 80)?;
        cmd.stdin(p.slave.try_clone()?)
            .stdout(p.slave.try_clone()?)
            .stderr(p.slave.try_clone()?);
        on_exec.install(&mut cmd);
        ferry_sys::pty::controlling_terminal_on_exec(&mut cmd);
        pty = Some(p.master);
    } else {
        let piped = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
        cmd.stdin(piped(req.stdin))
            .stdout(piped(req.stdout))
            .stderr(piped(req.stderr));
        on_exec.new_session().install(&mut cmd);
    }
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let child = cmd.spawn()?;
    // The command holds duplicates of the slave, the cgroup and the namespace: close them all.
    drop(cmd);
    let pgid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| std::io::Error::other("the command has no pid"))?;
    let mut started = Started {
        child,
        pgid,
        input: None,
        outputs: Vec::new(),
        pty: None,
    };
    if let Some(master) = pty {
        // The master as two async halves (EIO on read, once every slave fd is closed, ends the
        // output) and one more handle for window-size changes.
        if req.stdin {
            let w = tokio::net::unix::pipe::Sender::from_owned_fd_unchecked(master.try_clone()?)?;
            started.input = Some(Box::new(w));
        }
        let r = tokio::net::unix::pipe::Receiver::from_owned_fd_unchecked(master.try_clone()?)?;
        started.outputs.push((STDOUT, Box::new(r)));
        started.pty = Some(master);
    } else {
        if let Some(i) = started.child.stdin.take() {
            started.input = Some(Box::new(i));
        }
        if let Some(o) = started.child.stdout.take() {
            started.outputs.push((STDOUT, Box::new(o)));
        }
        if let Some(e) = started.child.stderr.take() {
            started.outputs.push((STDERR, Box::new(e)));
        }
    }
    Ok(started)
}

/// The `Status` the error channel carries for an exit code (`None`: the command could not be
/// started, `why` says why).
pub(crate) fn exit_status(command: &[String], code: Option<i32>, why: &str) -> serde_json::Value {
    match code {
        Some(0) => json!({"metadata": {}, "status": "Success"}),
        Some(c) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!(
                "command terminated with non-zero exit code: error executing command {command:?}, exit code {c}"
            ),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": c.to_string()}]},
        }),
        None => json!({
            "metadata": {},
            "status": "Failure",
            "message": why,
            "reason": "InternalError",
            "code": 500,
        }),
    }
}

/// One binary message on `channel`.
pub(crate) fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(Bytes::from(v))
}

/// Runs one exec session on the upgraded connection `ws` (protocol `v5` or v4) until the
/// command has ended and its status is sent, or the client has gone away (then the command's
/// process group is killed).
pub(crate) async fn session<S>(ws: WebSocketStream<S>, ctx: ProcessContext, req: Request)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut incoming) = ws.split();
    // fork + exec of a large process takes milliseconds: off the async workers.
    let spawned = {
        let (ctx, req) = (ctx.clone(), req.clone());
        tokio::task::spawn_blocking(move || spawn(&ctx, &req))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    };
    let started = match spawned {
        Ok(s) => s,
        Err(e) => {
            let why = if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "exec: {:?}: executable file not found in $PATH (or the working directory is missing)",
                    req.command.first().map(String::as_str).unwrap_or("")
                )
            } else {
                format!("exec {:?}: {e}", req.command)
            };
            let status = exit_status(&req.command, None, &why);
            let _ = sink.send(frame(ERROR, status.to_string().as_bytes())).await;
            let _ = sink.send(super::normal_close()).await;
            return;
        }
    };
    let Started {
        mut child,
        pgid,
        input,
        outputs,
        pty,
    } = started;
    // Output pumps: one task per stream, into one queue the writer drains in order.
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(16);
    for (channel, mut r) in outputs {
        let tx = out_tx.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(frame(channel, &buf[..n])).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
    drop(out_tx);
    // The command's end: its exit code, then the rest of its group goes too.
    let (exit_tx, exit_rx) = tokio::sync::oneshot::channel::<Option<i32>>();
    let waiter = tokio::spawn(async move {
        let status = child.wait().await;
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        let code = status.ok().map(|s| {
            use std::os::unix::process::ExitStatusExt as _;
            s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
        });
        let _ = exit_tx.send(code);
    });
    // Client -> command: stdin, resize, stdin close (v5).
    let reader = async move {
        let mut input = input;
        loop {
            match next_event(&mut incoming).await {
                ClientEvent::Stdin(data) => {
                    if let Some(w) = input.as_mut() {
                        if w.write_all(&data).await.is_err() {
                            input = None;
                        }
                    }
                }
                ClientEvent::Resize(size) => {
                    if let Some(p) = &pty {
                        let _ = ferry_sys::pty::set_window_size(p, size.height, size.width);
                    }
                }
                ClientEvent::CloseStdin => {
                    if let Some(mut w) = input.take() {
                        let _ = w.shutdown().await;
                    }
                }
                ClientEvent::Gone => break,
            }
        }
    };
    // Command -> client: the output, then the status, then a close.
    let writer = async move {
        // Until every output stream has ended; once the command has exited (and its group was
        // killed), at most 2 s more, in case a process left the group holding a pipe.
        let mut exit_rx = exit_rx;
        let mut code = None;
        let mut exited = false;
        let drain = tokio::time::sleep(std::time::Duration::from_secs(3600));
        tokio::pin!(drain);
        loop {
            tokio::select! {
                m = out_rx.recv() => match m {
                    Some(m) => {
                        if sink.send(m).await.is_err() {
                            return;
                        }
                    }
                    None => break,
                },
                c = &mut exit_rx, if !exited => {
                    exited = true;
                    code = c.ok().flatten();
                    drain.as_mut().reset(tokio::time::Instant::now() + std::time::Duration::from_secs(2));
                }
                () = &mut drain, if exited => break,
            }
        }
        if !exited {
            code = exit_rx.await.ok().flatten();
        }
        let status = exit_status(&req.command, code, "the command's exit status is unknown");
        let _ = sink.send(frame(ERROR, status.to_string().as_bytes())).await;
        let _ = sink.send(super::normal_close()).await;
    };
    tokio::select! {
        () = writer => {}
        () = reader => {
            // The client is gone (or closed the connection early): end the command's group.
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
    let _ = waiter.await;
}

/// A resize message.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Size {
    /// Columns.
    pub(crate) width: u16,
    /// Rows.
    pub(crate) height: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_become_the_status_kubectl_reads() {
        let cmd = vec!["sh".to_owned(), "-c".to_owned(), "exit 3".to_owned()];
        assert_eq!(exit_status(&cmd, Some(0), "")["status"], "Success");
        let s = exit_status(&cmd, Some(3), "");
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        let s = exit_status(&cmd, None, "no such file");
        assert_eq!(s["status"], "Failure");
        assert_eq!(s["message"], "no such file");
    }

    #[test]
    fn resize_messages_parse() {
        let s: Size = serde_json::from_slice(br#"{"Width":120,"Height":40}"#).unwrap();
        assert_eq!((s.width, s.height), (120, 40));
    }
}
