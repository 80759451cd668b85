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

use serde::{Deserialize, Serialize};
use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
        .current_dir(spec.working_dir.as_deref().unwrap_or("/"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if let Err(e) = enter_before_exec(&mut cmd, Some(&procs), netns.as_ref()) {
        return fail(format!("preparing exec: {e}"));
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
    // The command holds duplicates of both fds (for its pre-exec step): close them all, so the
    // shim keeps no handle on the pod's namespace or cgroup while it waits.
    drop(cmd);
    drop(procs);
    drop(netns);
    report(&Started {
        pid: Some(child.id() as i32),
        error: None,
    });
    // Nobody reads our stdout after the report; keep writes from failing later.
    let status = child.wait().context("waiting for the container")?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
