//! The container supervisor ("shim"), one process per running container, like containerd's
//! shim or conmon.
//!
//! The kubelet starts `ferry-shim <attempt dir>`; the shim reads `spec.json` there, leaves
//! the kubelet's session, enters the pod's network namespace, starts the container's command
//! (which joins the container's cgroup before `exec`, with stdout and stderr appended to the log
//! file), prints one JSON line (`{"pid":N}` or `{"error":"..."}`) and then waits for the
//! container. When it exits, the shim writes `exit.json` atomically and exits itself.
//!
//! Because the container's output goes straight to a file and its exit status is recorded by the
//! shim, a kubelet that is killed (even with `kill -9`) loses nothing: the restarted kubelet
//! finds the shim by PID (checked against its start time) and waits for it again.
//!
//! A container with `stdin: true` runs on pipes whose other ends the shim keeps (stdin,
//! stdout, stderr); one with `tty: true` on a pseudo-terminal whose master the shim keeps. The
//! shim copies their output to the log file and listens on [`ATTACH`], a Unix socket in the
//! attempt directory, where the kubelet's `attach` sessions get that output (stdout and stderr
//! apart) and send the client's input and terminal sizes, as [`AttachFrame`]s. With
//! `stdinOnce`, the end of the first session's stdin closes the container's stdin (on a
//! terminal: an end-of-file character, `^D`). Other containers write straight to the log file,
//! so the shim is not in the way of their output.

use serde::{Deserialize, Serialize};
use std::fs::OpenOptions;
use std::io::{Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt as _};
use std::os::unix::net::UnixListener;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

/// What to run, written by the kubelet to `<attempt dir>/spec.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimSpec {
    /// argv (resolved command and args).
    pub argv: Vec<String>,
    /// The complete environment.
    pub env: Vec<(String, String)>,
    /// Working directory (`None`: `/`).
    pub working_dir: Option<String>,
    /// Network namespace to run in; `None` for `hostNetwork` pods (the node's).
    pub netns: Option<PathBuf>,
    /// cgroup directory the container joins.
    pub cgroup: PathBuf,
    /// Log file (stdout and stderr, appended).
    pub log: PathBuf,
    /// The container's stdin is a pipe written through the attach socket (`stdin: true`).
    #[serde(default)]
    pub stdin: bool,
    /// The first attach session's end closes that stdin (`stdinOnce: true`).
    #[serde(default)]
    pub stdin_once: bool,
    /// The container runs on a pseudo-terminal (`tty: true`).
    #[serde(default)]
    pub tty: bool,
}

impl ShimSpec {
    /// Whether the shim serves an attach socket for this container.
    pub fn attachable(&self) -> bool {
        self.stdin || self.tty
    }
}

/// The container's end, written by the shim to `<attempt dir>/exit.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// Exit code (128 + signal for a signal).
    pub exit_code: i32,
    /// The signal that ended it, if any.
    pub signal: Option<i32>,
    /// Set when the command could not be started at all.
    pub start_error: Option<String>,
    /// When it ended (RFC 3339).
    pub finished_at: String,
}

/// The shim's report on stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Started {
    /// The container's PID, when it started.
    pub pid: Option<i32>,
    /// Why it did not start.
    pub error: Option<String>,
}

/// File names inside an attempt directory.
pub const SPEC: &str = "spec.json";
/// See [`SPEC`].
pub const EXIT: &str = "exit.json";
/// See [`SPEC`]: the attach socket (only for [`ShimSpec::attachable`] containers).
pub const ATTACH: &str = "attach.sock";

/// The path through which this process reaches `name` in the directory open as `dir`:
/// `/proc/self/fd/<fd>/<name>`, short whatever the directory's path (a Unix socket's path is
/// limited to 107 bytes; attempt directories under a deep root directory are longer).
pub fn path_in(dir: &std::fs::File, name: &str) -> PathBuf {
    use std::os::fd::AsRawFd as _;
    PathBuf::from(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()))
}

/// One message on the attach socket: a kind byte, a 4-byte big-endian length, the payload.
/// A connection starts with [`AttachFrame::Hello`] from the kubelet; then the kubelet sends
/// input and sizes, and the shim sends the container's output (when asked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachFrame {
    /// kubelet -> shim, first: whether this session sends stdin (its end then counts for
    /// `stdinOnce`) and wants the output.
    Hello {
        /// The session sends stdin.
        stdin: bool,
        /// The session wants the container's output.
        output: bool,
    },
    /// kubelet -> shim: bytes for the container's stdin.
    Stdin(Vec<u8>),
    /// kubelet -> shim: a terminal size (rows, columns).
    Resize(u16, u16),
    /// shim -> kubelet: the container's stdout (or its terminal's output).
    Stdout(Vec<u8>),
    /// shim -> kubelet: the container's stderr.
    Stderr(Vec<u8>),
}

const FRAME_STDIN: u8 = 0;
const FRAME_STDOUT: u8 = 1;
const FRAME_STDERR: u8 = 2;
const FRAME_RESIZE: u8 = 4;
const FRAME_HELLO: u8 = 16;
/// The largest payload accepted in one frame.
const FRAME_MAX: usize = 1 << 20;
/// Bytes before a frame's payload.
pub const FRAME_HEAD: usize = 5;

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

impl AttachFrame {
    /// The frame's bytes on the socket.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload): (u8, &[u8]) = match self {
            AttachFrame::Hello { stdin, output } => {
                return frame_bytes(FRAME_HELLO, &[u8::from(*stdin) | (u8::from(*output) << 1)])
            }
            AttachFrame::Resize(rows, cols) => {
                let [r0, r1] = rows.to_be_bytes();
                let [c0, c1] = cols.to_be_bytes();
                return frame_bytes(FRAME_RESIZE, &[r0, r1, c0, c1]);
            }
            AttachFrame::Stdin(b) => (FRAME_STDIN, b),
            AttachFrame::Stdout(b) => (FRAME_STDOUT, b),
            AttachFrame::Stderr(b) => (FRAME_STDERR, b),
        };
        frame_bytes(kind, payload)
    }

    /// The payload length a frame head announces (an error over the limit).
    pub fn payload_len(head: &[u8; FRAME_HEAD]) -> std::io::Result<usize> {
        let len = usize::try_from(u32::from_be_bytes([head[1], head[2], head[3], head[4]]))
            .unwrap_or(usize::MAX);
        if len > FRAME_MAX {
            return Err(invalid(format!(
                "attach frame of {len} bytes (at most {FRAME_MAX})"
            )));
        }
        Ok(len)
    }

    /// The frame of kind `kind` with `payload`.
    pub fn decode(kind: u8, payload: Vec<u8>) -> std::io::Result<AttachFrame> {
        match (kind, payload.as_slice()) {
            (FRAME_STDIN, _) => Ok(AttachFrame::Stdin(payload)),
            (FRAME_STDOUT, _) => Ok(AttachFrame::Stdout(payload)),
            (FRAME_STDERR, _) => Ok(AttachFrame::Stderr(payload)),
            (FRAME_RESIZE, [r0, r1, c0, c1]) => Ok(AttachFrame::Resize(
                u16::from_be_bytes([*r0, *r1]),
                u16::from_be_bytes([*c0, *c1]),
            )),
            (FRAME_HELLO, [flags]) if *flags < 4 => Ok(AttachFrame::Hello {
                stdin: flags & 1 != 0,
                output: flags & 2 != 0,
            }),
            (kind, _) => Err(invalid(format!(
                "attach frame kind {kind} with {} bytes",
                payload.len()
            ))),
        }
    }

    /// Reads one frame; `Ok(None)` at a clean end of the stream.
    pub fn read(r: &mut impl std::io::Read) -> std::io::Result<Option<AttachFrame>> {
        let mut head = [0u8; FRAME_HEAD];
        match r.read_exact(&mut head[..1]) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        r.read_exact(&mut head[1..])?;
        let mut payload = vec![0u8; AttachFrame::payload_len(&head)?];
        r.read_exact(&mut payload)?;
        AttachFrame::decode(head[0], payload).map(Some)
    }
}

fn frame_bytes(kind: u8, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(payload.len() + FRAME_HEAD);
    out.push(kind);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Writes `bytes` to `path` atomically (temp file created 0600, fsync, rename): `spec.json` holds
/// the container's complete environment, Secret values included, so only root reads it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use ferry_sys::fs::{Durability, WriteOptions};
    let opts = WriteOptions::private().durability(Durability::Data);
    Ok(ferry_sys::fs::write_atomic(path, bytes, opts)?)
}

/// Registers, for `cmd`'s child, joining the cgroup whose `cgroup.procs` is open as `procs` and
/// entering the network namespace open as `netns`, both between fork and exec. Fails only when
/// the fds cannot be duplicated (out of fds).
pub fn enter_before_exec(
    cmd: &mut Command,
    procs: Option<&OwnedFd>,
    netns: Option<&OwnedFd>,
) -> std::io::Result<()> {
    let mut on_exec = ferry_sys::process::OnExec::new();
    if let Some(procs) = procs {
        on_exec = on_exec.join_cgroup(procs)?;
    }
    if let Some(netns) = netns {
        on_exec = on_exec.enter_netns(netns)?;
    }
    on_exec.install(cmd);
    Ok(())
}

/// Opens `<cgroup>/cgroup.procs` for writing.
pub fn open_procs(cgroup: &Path) -> std::io::Result<OwnedFd> {
    Ok(ferry_sys::cgroup::open_procs(cgroup)?.into())
}

fn now() -> String {
    crate::status::rfc3339(jiff::Timestamp::now())
}

/// The shim's `main`: never returns.
pub fn main(dir: &Path) -> ! {
    let code = match run(dir) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "ferry-shim: {e:#}");
            1
        }
    };
    std::process::exit(code)
}

fn report(started: &Started) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{}",
        serde_json::to_string(started).unwrap_or_default()
    );
    let _ = out.flush();
}

fn run(dir: &Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let spec: ShimSpec = serde_json::from_slice(
        &std::fs::read(dir.join(SPEC)).with_context(|| format!("reading {SPEC}"))?,
    )
    .context("parsing the shim spec")?;
    // Out of the kubelet's session and process group: its signals are not ours.
    let _ = nix::unistd::setsid();
    let fail = |msg: String| -> anyhow::Result<()> {
        let exit = Exit {
            exit_code: 128,
            signal: None,
            start_error: Some(msg.clone()),
            finished_at: now(),
        };
        write_atomic(&dir.join(EXIT), &serde_json::to_vec(&exit)?)?;
        report(&Started {
            pid: None,
            error: Some(msg),
        });
        Ok(())
    };
    let log = match OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(&spec.log)
    {
        Ok(f) => f,
        Err(e) => return fail(format!("opening log {}: {e}", spec.log.display())),
    };
    let netns: Option<OwnedFd> = match &spec.netns {
        Some(p) => match std::fs::File::open(p) {
            Ok(f) => Some(f.into()),
            Err(e) => return fail(format!("opening network namespace {}: {e}", p.display())),
        },
        None => None,
    };
    let procs = match open_procs(&spec.cgroup) {
        Ok(fd) => fd,
        Err(e) => return fail(format!("opening cgroup {}: {e}", spec.cgroup.display())),
    };
    let Some((prog, args)) = spec.argv.split_first() else {
        return fail("no command".into());
    };
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(spec.working_dir.as_deref().unwrap_or("/"));
    let io = match ContainerIo::prepare(&spec, dir, &mut cmd, log) {
        Ok(io) => io,
        Err(e) => return fail(format!("preparing the container's stdio: {e}")),
    };
    if let Err(e) = enter_before_exec(&mut cmd, Some(&procs), netns.as_ref()) {
        return fail(format!("preparing exec: {e}"));
    }
    if spec.tty {
        // After the cgroup and namespace steps: a new session with the terminal as its own.
        ferry_sys::pty::controlling_terminal_on_exec(&mut cmd);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let what = if e.kind() == std::io::ErrorKind::NotFound {
                format!("exec: {prog:?}: executable file not found (or working directory missing)")
            } else {
                format!("exec: {prog:?}: {e}")
            };
            return fail(what);
        }
    };
    // The command holds duplicates of both fds (for its pre-exec step) and of the container's
    // side of its stdio (pipe reader, terminal slave): close them all, so the shim keeps no
    // handle on the pod's namespace or cgroup while it waits, and the terminal hangs up when
    // the container's processes are gone.
    drop(cmd);
    drop(procs);
    drop(netns);
    let served = io.serve();
    report(&Started {
        pid: Some(child.id() as i32),
        error: None,
    });
    let status = child.wait().context("waiting for the container")?;
    // The last output reaches the log (and attached clients) before the exit is recorded.
    served.finish();
    let (exit_code, signal) = match (status.code(), status.signal()) {
        (Some(c), _) => (c, None),
        (None, Some(s)) => (128 + s, Some(s)),
        (None, None) => (255, None),
    };
    let exit = Exit {
        exit_code,
        signal,
        start_error: None,
        finished_at: now(),
    };
    write_atomic(&dir.join(EXIT), &serde_json::to_vec(&exit)?)?;
    Ok(())
}

/// The container's standard streams: set up on its command before the spawn, served after.
struct ContainerIo {
    /// The attach socket (attachable containers).
    listener: Option<UnixListener>,
    /// What attached clients' input is written to.
    input: Option<std::fs::File>,
    /// The terminal's master (tty containers).
    master: Option<OwnedFd>,
    /// Output the shim copies to the log and to attached clients: (frame kind, source).
    outputs: Vec<(u8, std::fs::File)>,
    /// The log file, for those outputs.
    log: Option<std::fs::File>,
    stdin_once: bool,
}

impl ContainerIo {
    /// Gives `cmd` its stdio as `spec` asks and binds the attach socket in `dir`, so it exists
    /// as soon as the container is reported started. A container that is not attachable writes
    /// straight to its log; an attachable one writes to pipes (or a terminal) the shim copies.
    fn prepare(
        spec: &ShimSpec,
        dir: &Path,
        cmd: &mut Command,
        log: std::fs::File,
    ) -> std::io::Result<ContainerIo> {
        let mut io = ContainerIo {
            listener: None,
            input: None,
            master: None,
            outputs: Vec::new(),
            log: None,
            stdin_once: spec.stdin_once,
        };
        if !spec.attachable() {
            cmd.stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            return Ok(io);
        }
        if spec.tty {
            let pty = ferry_sys::pty::open(24, 80)?;
            cmd.stdin(pty.slave.try_clone()?)
                .stdout(pty.slave.try_clone()?)
                .stderr(pty.slave);
            // The shim's threads block on the master.
            nix::fcntl::fcntl(
                &pty.master,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
            )?;
            if spec.stdin {
                io.input = Some(pty.master.try_clone()?.into());
            }
            io.outputs
                .push((FRAME_STDOUT, pty.master.try_clone()?.into()));
            io.master = Some(pty.master);
        } else {
            let (reader, writer) = std::io::pipe()?;
            cmd.stdin(reader);
            io.input = Some(OwnedFd::from(writer).into());
            for kind in [FRAME_STDOUT, FRAME_STDERR] {
                let (reader, writer) = std::io::pipe()?;
                if kind == FRAME_STDOUT {
                    cmd.stdout(writer);
                } else {
                    cmd.stderr(writer);
                }
                io.outputs.push((kind, OwnedFd::from(reader).into()));
            }
        }
        io.log = Some(log);
        let dir_fd = std::fs::File::open(dir)?;
        let path = path_in(&dir_fd, ATTACH);
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        io.listener = Some(listener);
        Ok(io)
    }

    /// Starts the threads: each output to the log and the attached clients, the attach socket.
    fn serve(self) -> Served {
        let hub = Arc::new(Hub::default());
        let mut done = Vec::new();
        if let Some(log) = self.log {
            for (kind, mut source) in self.outputs {
                let Ok(mut log) = log.try_clone() else {
                    continue;
                };
                let (tx, rx) = std::sync::mpsc::channel();
                let hub = hub.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 32 * 1024];
                    // EOF (pipes) or EIO (a terminal whose every slave is closed) ends it.
                    loop {
                        match source.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => {
                                let _ = log.write_all(&buf[..n]);
                                hub.broadcast(kind, &buf[..n]);
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(_) => break,
                        }
                    }
                    let _ = tx.send(());
                });
                done.push(rx);
            }
        }
        if let Some(listener) = self.listener {
            let shared = Arc::new(Attached {
                input: Mutex::new(self.input),
                master: self.master,
                stdin_once: self.stdin_once,
                hub: hub.clone(),
            });
            std::thread::spawn(move || {
                for conn in listener.incoming().flatten() {
                    let shared = shared.clone();
                    std::thread::spawn(move || shared.serve(conn));
                }
            });
        }
        Served { done, hub }
    }
}

/// The output threads of a started container.
struct Served {
    done: Vec<std::sync::mpsc::Receiver<()>>,
    hub: Arc<Hub>,
}

impl Served {
    /// After the container's exit: its last output reaches the log and the attached clients
    /// (processes that left with its pipes or terminal get 2 s in all), then the clients'
    /// connections end, which ends their sessions.
    fn finish(self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        for rx in self.done {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let _ = rx.recv_timeout(left);
        }
        self.hub.close();
    }
}

/// The attached clients that want output; `None` once the output has ended.
struct Hub(Mutex<Option<Vec<std::os::unix::net::UnixStream>>>);

impl Default for Hub {
    fn default() -> Hub {
        Hub(Mutex::new(Some(Vec::new())))
    }
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Vec<std::os::unix::net::UnixStream>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn subscribe(&self, conn: std::os::unix::net::UnixStream) {
        // A client that does not read for 5 s is dropped rather than stalling the container.
        let _ = conn.set_write_timeout(Some(std::time::Duration::from_secs(5)));
        let mut subs = self.lock();
        match subs.as_mut() {
            Some(v) => v.push(conn),
            None => {
                let _ = conn.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    fn broadcast(&self, kind: u8, data: &[u8]) {
        let mut subs = self.lock();
        if let Some(v) = subs.as_mut() {
            if !v.is_empty() {
                let bytes = frame_bytes(kind, data);
                v.retain_mut(|c| c.write_all(&bytes).is_ok());
            }
        }
    }

    fn close(&self) {
        if let Some(v) = self.lock().take() {
            for c in v {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

/// What the attach socket's connections share.
struct Attached {
    input: Mutex<Option<std::fs::File>>,
    master: Option<OwnedFd>,
    stdin_once: bool,
    hub: Arc<Hub>,
}

impl Attached {
    /// One attach session: its hello, then its input to the container until it ends.
    fn serve(&self, conn: std::os::unix::net::UnixStream) {
        let (stdin, output) = match conn.try_clone().map(|mut c| AttachFrame::read(&mut c)) {
            Ok(Ok(Some(AttachFrame::Hello { stdin, output }))) => (stdin, output),
            _ => return,
        };
        if output {
            match conn.try_clone() {
                Ok(c) => self.hub.subscribe(c),
                Err(_) => return,
            }
        }
        let mut r = std::io::BufReader::new(conn);
        while let Ok(Some(frame)) = AttachFrame::read(&mut r) {
            match frame {
                AttachFrame::Stdin(b) if stdin => {
                    // Written through a copy of the descriptor, outside the lock: a container
                    // that does not read its stdin blocks this session only, not the others or
                    // the stdinOnce close.
                    let w = {
                        let input = self.input.lock().unwrap_or_else(|p| p.into_inner());
                        input.as_ref().and_then(|f| f.try_clone().ok())
                    };
                    if let Some(mut w) = w {
                        if w.write_all(&b).is_err() {
                            *self.input.lock().unwrap_or_else(|p| p.into_inner()) = None;
                        }
                    }
                }
                AttachFrame::Resize(rows, cols) => {
                    if let Some(m) = &self.master {
                        let _ = ferry_sys::pty::set_window_size(m, rows, cols);
                    }
                }
                _ => {}
            }
        }
        if stdin && self.stdin_once {
            let mut input = self.input.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(mut w) = input.take() {
                if self.master.is_some() {
                    // A terminal is not closed by its input's writer: say end-of-file.
                    let _ = w.write_all(&[4]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_reaches_subscribers_until_the_hub_closes() {
        use std::os::unix::net::UnixStream;
        let hub = Hub::default();
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        hub.subscribe(ours);
        hub.broadcast(FRAME_STDERR, b"err");
        assert_eq!(
            AttachFrame::read(&mut theirs).unwrap(),
            Some(AttachFrame::Stderr(b"err".to_vec()))
        );
        // A subscriber that went away is dropped; the others still get output.
        let (gone, gone_peer) = UnixStream::pair().unwrap();
        hub.subscribe(gone);
        drop(gone_peer);
        hub.broadcast(FRAME_STDOUT, b"out");
        assert_eq!(hub.lock().as_ref().map(Vec::len), Some(1));
        assert_eq!(
            AttachFrame::read(&mut theirs).unwrap(),
            Some(AttachFrame::Stdout(b"out".to_vec()))
        );
        // Closing ends every connection, and a late subscriber's at once.
        hub.close();
        assert_eq!(AttachFrame::read(&mut theirs).unwrap(), None);
        let (late, mut late_peer) = UnixStream::pair().unwrap();
        hub.subscribe(late);
        assert_eq!(AttachFrame::read(&mut late_peer).unwrap(), None);
    }

    #[test]
    fn attach_frames_round_trip_and_bad_ones_are_refused() {
        let all = [
            AttachFrame::Hello {
                stdin: true,
                output: false,
            },
            AttachFrame::Hello {
                stdin: false,
                output: true,
            },
            AttachFrame::Stdout(b"out".to_vec()),
            AttachFrame::Stderr(b"err".to_vec()),
        ];
        let mut bytes: Vec<u8> = all.iter().flat_map(AttachFrame::encode).collect();
        bytes.extend(AttachFrame::Stdin(b"hello\n".to_vec()).encode());
        bytes.extend(AttachFrame::Resize(37, 101).encode());
        bytes.extend(AttachFrame::Stdin(Vec::new()).encode());
        let mut r = std::io::Cursor::new(bytes);
        for f in all {
            assert_eq!(AttachFrame::read(&mut r).unwrap(), Some(f));
        }
        assert_eq!(
            AttachFrame::read(&mut r).unwrap(),
            Some(AttachFrame::Stdin(b"hello\n".to_vec()))
        );
        assert_eq!(
            AttachFrame::read(&mut r).unwrap(),
            Some(AttachFrame::Resize(37, 101))
        );
        assert_eq!(
            AttachFrame::read(&mut r).unwrap(),
            Some(AttachFrame::Stdin(Vec::new()))
        );
        assert_eq!(AttachFrame::read(&mut r).unwrap(), None);
        // A truncated frame, an unknown kind, a resize of the wrong size, an oversized length,
        // a hello with unknown flags.
        for bad in [
            vec![0u8, 0, 0, 0, 5, b'h'],
            vec![9u8, 0, 0, 0, 0],
            vec![4u8, 0, 0, 0, 1, 7],
            vec![0u8, 0xff, 0xff, 0xff, 0xff],
            vec![16u8, 0, 0, 0, 1, 4],
        ] {
            assert!(
                AttachFrame::read(&mut std::io::Cursor::new(&bad)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn attempt_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join(SPEC);
        write_atomic(&spec, br#"{"env": [["PASSWORD", "from a Secret"]]}"#).unwrap();
        let mode = std::fs::metadata(&spec).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "spec.json holds Secret values: {mode:o}");
    }
}
