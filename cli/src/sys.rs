//! The kernel boundary of `ferry`: process identity and signals, starting a detached process inside
//! a cgroup and a network namespace, running a closure inside a namespace, unmounting. The
//! mechanism is `ferry-sys` (the workspace's one Linux boundary); this module adds `ferry`'s
//! policy: a component's clean environment, its session and log, and `io::Error`s for `anyhow`.

use ferry_sys::netns::NetnsFd;
use ferry_sys::process::OnExec;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// True when running as root (effective uid 0).
pub(crate) fn is_root() -> bool {
    ferry_sys::process::is_root()
}

/// The start time of `pid` (clock ticks after boot, field 22 of `/proc/<pid>/stat`), or `None`
/// when no such process runs (gone, or a zombie). A pid plus its start time names one process:
/// a recycled pid has another start time, so it is never mistaken for ours.
pub(crate) fn start_time(pid: i32) -> Option<u64> {
    ferry_sys::process::running_start_ticks(pid)
}

/// True while the process `pid` that started at `start` runs.
pub(crate) fn is_running(pid: i32, start: u64) -> bool {
    ferry_sys::process::is_running(pid, start)
}

/// The command name of `pid` (`/proc/<pid>/comm`), `?` if unknown.
pub(crate) fn comm(pid: i32) -> String {
    ferry_sys::process::comm(pid)
}

/// Sends SIGKILL to `pid`; false if it was already gone.
pub(crate) fn kill(pid: i32) -> bool {
    ferry_sys::process::kill(pid)
}

/// This process's pid.
pub(crate) fn own_pid() -> i32 {
    ferry_sys::process::own_pid()
}

/// A long-running process to start with [`spawn_detached`].
#[derive(Debug)]
pub(crate) struct Spawn<'a> {
    /// Executable.
    pub(crate) program: &'a Path,
    /// Arguments.
    pub(crate) args: Vec<OsString>,
    /// Network namespace handle (`/run/netns/<name>`) the process runs in.
    pub(crate) netns: &'a Path,
    /// cgroup v2 directory the process joins.
    pub(crate) cgroup: &'a Path,
    /// Log file (stdout and stderr, appended).
    pub(crate) log: &'a Path,
    /// A socket handed to the process as fd 3.
    pub(crate) fd3: Option<BorrowedFd<'a>>,
}

/// The environment of a component: like a service manager's, only `PATH` and the Rust logging
/// and backtrace settings carry over, so nothing of the caller's shell (`KUBECONFIG`, proxies)
/// changes how a component behaves.
fn component_env() -> Vec<(OsString, OsString)> {
    let mut env = vec![(
        "PATH".into(),
        std::env::var_os("PATH").unwrap_or_else(|| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        }),
    )];
    env.push((
        "RUST_LOG".into(),
        std::env::var_os("RUST_LOG").unwrap_or_else(|| "info".into()),
    ));
    if let Some(v) = std::env::var_os("RUST_BACKTRACE") {
        env.push(("RUST_BACKTRACE".into(), v));
    }
    env
}

/// Starts `s.program` detached from this process: its own session, stdin from /dev/null, output
/// to the log, a clean environment. Between fork and exec the child joins the cgroup (through an
/// fd opened here, so no path is resolved in the child) and then enters the network namespace with
/// `setns` (unlike `ip netns exec`, nothing is remounted). The returned `Child` may be dropped: the
/// process keeps running after `ferry` exits.
pub(crate) fn spawn_detached(s: &Spawn<'_>) -> io::Result<Child> {
    let procs = ferry_sys::cgroup::open_procs(s.cgroup)?;
    let netns = File::open(s.netns)?;
    let log = OpenOptions::new().create(true).append(true).open(s.log)?;
    let log_err = log.try_clone()?;
    let mut cmd = Command::new(s.program);
    cmd.args(&s.args)
        .env_clear()
        .envs(component_env())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    let mut on_exec = OnExec::new()
        .join_cgroup(&procs)?
        .enter_netns(&netns)?
        .new_session();
    if let Some(fd) = s.fd3 {
        on_exec = on_exec.fd3(fd)?;
    }
    on_exec.install(&mut cmd);
    cmd.spawn()
}

/// Runs `f` on a new thread that has entered the network namespace at `netns` (a dedicated OS
/// thread: the namespace belongs to the thread, which ends with `f`).
pub(crate) fn in_netns<T: Send>(netns: &Path, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    let ns = NetnsFd::open(netns).map_err(io::Error::other)?;
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ns.run_on_thread(f)))
        .map_err(|_| io::Error::other("thread inside the namespace panicked"))?
        .map_err(io::Error::other)
}

/// True if `path` is the mount point of a bpf filesystem.
pub(crate) fn is_bpffs(path: &Path) -> bool {
    ferry_sys::fs::mounts()
        .iter()
        .any(|m| m.mount_point == path && m.fstype == "bpf")
}

/// Mounts a new bpf filesystem instance at `path` (`mount -t bpf <source> <path>`): pins in it
/// live as long as the mount (and any open fd).
pub(crate) fn mount_bpffs(path: &Path, source: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let out = std::process::Command::new("mount")
        .args(["-t", "bpf", source])
        .arg(path)
        .output()
        .context("running mount")?;
    anyhow::ensure!(
        out.status.success(),
        "mount -t bpf {source} {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Detaches (lazily unmounts) the mount at `path`.
pub(crate) fn umount_detach(path: &Path) -> io::Result<()> {
    ferry_sys::fs::umount_detach(path)
}

/// Mount points at or below `dir`, deepest first (from `/proc/self/mountinfo`).
pub(crate) fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    ferry_sys::fs::mounts_under(dir)
}

/// From now on SIGINT, SIGTERM and SIGHUP only set a flag ([`interrupted`]), so `ferry up` can
/// stop at its next step and remove what it created. (Children get default handlers back at exec.)
pub(crate) fn catch_interrupts() {
    ferry_sys::process::catch_interrupts();
}

/// True once SIGINT, SIGTERM or SIGHUP arrived (after [`catch_interrupts`]).
pub(crate) fn interrupted() -> bool {
    ferry_sys::process::interrupted()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_running() {
        let start = start_time(own_pid()).unwrap();
        assert!(is_running(own_pid(), start));
        assert!(!is_running(own_pid(), start + 1));
    }
}
