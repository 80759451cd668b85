//! The kernel boundary of `ferry`: process identity and signals, starting a detached process inside
//! a cgroup and a network namespace, running a closure inside a namespace, unmounting. Every
//! `unsafe` block of the crate lives here.

use std::ffi::{CString, OsString};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

/// True when running as root (effective uid 0).
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The start time of `pid` (clock ticks after boot, field 22 of `/proc/<pid>/stat`), or `None`
/// when no such process runs (gone, or a zombie). A pid plus its start time names one process:
/// a recycled pid has another start time, so it is never mistaken for ours.
pub(crate) fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

fn parse_start_time(stat: &str) -> Option<u64> {
    // `pid (comm) state ...`: comm may hold spaces and parentheses, so split after the last ')'.
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?; // field 3
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(18)?.parse().ok() // field 22
}

/// True while the process `pid` that started at `start` runs.
pub(crate) fn is_running(pid: i32, start: u64) -> bool {
    start_time(pid) == Some(start)
}

/// The command name of `pid` (`/proc/<pid>/comm`), `?` if unknown.
pub(crate) fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".to_owned())
}

/// Sends SIGKILL to `pid`; false if it was already gone.
pub(crate) fn kill(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill has no memory-safety preconditions; pid > 0 names one process.
    unsafe { libc::kill(pid, libc::SIGKILL) == 0 }
}

/// This process's pid.
pub(crate) fn own_pid() -> i32 {
    #[expect(
        clippy::cast_possible_wrap,
        reason = "pids fit in i32 (pid_max <= 2^22)"
    )]
    let pid = std::process::id() as i32;
    pid
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
    pub(crate) fd3: Option<RawFd>,
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
/// to the log, a clean environment. Between fork and exec the child joins the cgroup (through an fd opened here, so no
/// path is resolved in the child) and then enters the network namespace with `setns` (unlike
/// `ip netns exec`, nothing is remounted). The returned `Child` may be dropped: the process keeps
/// running after `ferry` exits.
pub(crate) fn spawn_detached(s: &Spawn<'_>) -> io::Result<Child> {
    let procs = OpenOptions::new()
        .write(true)
        .open(s.cgroup.join("cgroup.procs"))?;
    let netns = File::open(s.netns)?;
    let log = OpenOptions::new().create(true).append(true).open(s.log)?;
    let log_err = log.try_clone()?;
    let (procs_fd, netns_fd, fd3) = (procs.as_raw_fd(), netns.as_raw_fd(), s.fd3);
    let mut cmd = Command::new(s.program);
    cmd.args(&s.args)
        .env_clear()
        .envs(component_env())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // calls (write, setns, setsid, dup2, fcntl) on fds that stay open in this process until
    // `spawn` returns; it allocates nothing (`last_os_error` builds an error from errno).
    unsafe {
        cmd.pre_exec(move || {
            // Join the cgroup first: "0" moves the writing process.
            if libc::write(procs_fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(io::Error::last_os_error());
            }
            if libc::setns(netns_fd, libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            // Last, since fd 3 may be one of the fds used above (all close-on-exec).
            if let Some(fd) = fd3 {
                let rc = if fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, 3)
                };
                if rc < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn();
    drop((procs, netns));
    child
}

/// Runs `f` on a new thread that has entered the network namespace at `netns` (a dedicated OS
/// thread: the namespace belongs to the thread, which ends with `f`).
pub(crate) fn in_netns<T: Send>(netns: &Path, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    let ns = File::open(netns)?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: setns on a fresh thread of our own with an fd kept open by `ns`.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(f())
            })
            .join()
            .map_err(|_| io::Error::other("thread inside the namespace panicked"))?
    })
}

/// Detaches (lazily unmounts) the mount at `path`.
pub(crate) fn umount_detach(path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Mount points at or below `dir`, deepest first (from `/proc/self/mountinfo`).
pub(crate) fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = |c: &u8| (b'0'..=b'7').contains(c);
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1] <= b'3' && b[i + 1..i + 4].iter().all(octal)
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// From now on SIGINT, SIGTERM and SIGHUP only set a flag ([`interrupted`]), so `ferry up` can
/// stop at its next step and remove what it created. (Children get default handlers back at exec.)
pub(crate) fn catch_interrupts() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// True once SIGINT, SIGTERM or SIGHUP arrived (after [`catch_interrupts`]).
pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_a_stat_line() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(stat), Some(987_654));
        let zombie = "42 (x) Z 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(zombie), None);
        assert!(start_time(own_pid()).is_some());
        assert!(is_running(own_pid(), start_time(own_pid()).unwrap()));
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/run/a\040b\134c"), r"/run/a b\c");
        assert_eq!(unescape_mountinfo(r"/run/x\04"), r"/run/x\04");
    }
}
