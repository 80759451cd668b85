//! Processes: identity (a pid plus its start time names one process), signals, pidfds, and what a
//! child does between `fork` and `exec` (join a cgroup, enter a network namespace, start a session,
//! receive a socket as fd 3).
//!
//! A pid alone is not an identity: pids are recycled. Every Ferry component that remembers a
//! process across restarts stores its start time too ([`start_ticks`]) and compares both.

use std::io;
use std::os::fd::{AsFd, AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

/// True when running as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// This process's pid.
pub fn own_pid() -> i32 {
    #[expect(
        clippy::cast_possible_wrap,
        reason = "pids fit in i32 (pid_max <= 2^22)"
    )]
    let pid = std::process::id() as i32;
    pid
}

/// The fields of `/proc/<pid>/stat` that Ferry reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Field 3: `R`, `S`, `D`, `Z` (zombie), `X` (dead), ...
    pub state: char,
    /// Field 22: the start time in clock ticks after boot.
    pub start_ticks: u64,
}

impl Stat {
    /// True for a zombie or dead process (it has exited; only its pid is left).
    pub fn exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// Parses the text of `/proc/<pid>/stat`.
pub fn parse_stat(stat: &str) -> Option<Stat> {
    // `pid (comm) state ...`: comm may hold spaces and parentheses, so split after the last ')'.
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?; // field 3
    let start_ticks = fields.nth(18)?.parse().ok()?; // field 22
    Some(Stat { state, start_ticks })
}

/// `/proc/<pid>/stat` of `pid`, or `None` when there is no such process.
pub fn stat(pid: i32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The start time of `pid` (clock ticks after boot), also of a zombie; `None` when there is no
/// such process.
pub fn start_ticks(pid: i32) -> Option<u64> {
    stat(pid).map(|s| s.start_ticks)
}

/// The start time of `pid` while it runs: `None` when it is gone or a zombie.
pub fn running_start_ticks(pid: i32) -> Option<u64> {
    stat(pid).filter(|s| !s.exited()).map(|s| s.start_ticks)
}

/// True while the process `pid` that started at `start` runs (not a zombie, not a recycled pid).
pub fn is_running(pid: i32, start: u64) -> bool {
    running_start_ticks(pid) == Some(start)
}

/// The command name of `pid` (`/proc/<pid>/comm`), `?` if unknown.
pub fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".to_owned())
}

/// Sends `signal` to the one process `pid` (`pid <= 0`, which would name a group or every
/// process, is refused).
pub fn signal(pid: i32, signal: libc::c_int) -> io::Result<()> {
    if pid <= 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal pid {pid}"),
        ));
    }
    // SAFETY: kill has no memory-safety preconditions; pid > 0 names one process.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sends SIGKILL to `pid`; false if it was already gone (or `pid <= 0`).
pub fn kill(pid: i32) -> bool {
    signal(pid, libc::SIGKILL).is_ok()
}

/// Clock ticks per second (`_SC_CLK_TCK`), the unit of `/proc/<pid>/stat` times.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).unwrap_or(100)
}

/// A pidfd: a handle on one process that cannot be confused with a later owner of its pid, and
/// that becomes readable when the process exits.
#[derive(Debug)]
pub struct Pidfd(OwnedFd);

impl Pidfd {
    /// Opens a pidfd for `pid` (`ESRCH` if there is no such process).
    pub fn open(pid: i32) -> io::Result<Pidfd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is shared.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = i32::try_from(fd).map_err(io::Error::other)?;
        // SAFETY: the kernel just returned this fd to us and nothing else owns it.
        Ok(Pidfd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Waits (without a thread) until the process has exited. It is not reaped: a child of ours
    /// still needs a `waitpid`.
    #[cfg(feature = "tokio")]
    pub async fn exited(self) -> io::Result<()> {
        // SAFETY: the AsyncFd owns the OwnedFd, which stays open and unchanged until it drops.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(self.0, tokio::io::Interest::READABLE)
        }
        .map_err(|e| e.into_parts().1)?;
        fd.readable().await.map(drop)
    }
}

impl AsFd for Pidfd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl From<Pidfd> for OwnedFd {
    fn from(p: Pidfd) -> OwnedFd {
        p.0
    }
}

/// What a child does between `fork` and `exec`, in this order: join a cgroup, enter a network
/// namespace, start its own session, receive a socket as fd 3.
///
/// The fds are duplicated when they are added, and the duplicates live in the `Command` (until it
/// is dropped), so they are open whenever it spawns; the child needs no path lookups and makes
/// only async-signal-safe syscalls. All the duplicates are close-on-exec.
#[derive(Debug, Default)]
pub struct OnExec {
    cgroup_procs: Option<OwnedFd>,
    netns: Option<OwnedFd>,
    new_session: bool,
    fd3: Option<OwnedFd>,
}

impl OnExec {
    /// Nothing to do yet.
    pub fn new() -> OnExec {
        OnExec::default()
    }

    /// Join the cgroup whose `cgroup.procs` is open (for writing) as `procs` (see
    /// [`crate::cgroup::open_procs`]).
    pub fn join_cgroup(mut self, procs: impl AsFd) -> io::Result<OnExec> {
        self.cgroup_procs = Some(procs.as_fd().try_clone_to_owned()?);
        Ok(self)
    }

    /// Enter the network namespace open as `netns` (a [`crate::netns::NetnsFd`] or any fd of a
    /// network namespace; unlike `ip netns exec`, nothing is remounted).
    pub fn enter_netns(mut self, netns: impl AsFd) -> io::Result<OnExec> {
        self.netns = Some(netns.as_fd().try_clone_to_owned()?);
        Ok(self)
    }

    /// Start a new session (`setsid`): the child leaves our session and process group.
    #[must_use]
    pub fn new_session(mut self) -> OnExec {
        self.new_session = true;
        self
    }

    /// Hand `fd` to the child as its fd 3 (not close-on-exec there).
    pub fn fd3(mut self, fd: impl AsFd) -> io::Result<OnExec> {
        self.fd3 = Some(fd.as_fd().try_clone_to_owned()?);
        Ok(self)
    }

    /// Registers all of it on `cmd`.
    pub fn install(self, cmd: &mut Command) {
        let OnExec {
            cgroup_procs,
            netns,
            new_session,
            fd3,
        } = self;
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe syscalls (write, setns, setsid, fcntl, dup2) on fds it owns (so they
        // are open for as long as `cmd` can spawn); it allocates nothing (`last_os_error` builds
        // an error from errno).
        unsafe {
            cmd.pre_exec(move || {
                if let Some(procs) = &cgroup_procs {
                    // Join the cgroup first: "0" moves the writing process.
                    if libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                if let Some(ns) = &netns {
                    crate::netns::setns_raw(ns.as_raw_fd())?;
                }
                if new_session && libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                // Last, since fd 3 may be one of the fds used above (all close-on-exec).
                if let Some(fd) = &fd3 {
                    let fd = fd.as_raw_fd();
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
    }
}

/// Makes `cmd`'s child enter the network namespace open as `netns` before it execs.
pub fn enter_netns_on_exec(cmd: &mut Command, netns: impl AsFd) -> io::Result<()> {
    OnExec::new().enter_netns(netns)?.install(cmd);
    Ok(())
}

/// The number of threads of this process (`Threads:` in `/proc/self/status`).
pub fn thread_count() -> io::Result<usize> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| io::Error::other("no Threads: line in /proc/self/status"))
}

/// Sets an environment variable of this process, which is only sound while no other thread can
/// read the environment: it refuses (`WouldBlock`) once the process has a second thread. Meant for
/// the top of `main`; everywhere else, give children their environment with `Command::env`.
pub fn set_env_while_single_threaded(
    key: impl AsRef<std::ffi::OsStr>,
    value: impl AsRef<std::ffi::OsStr>,
) -> io::Result<()> {
    let threads = thread_count()?;
    if threads != 1 {
        return Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!("refusing to change the environment of a process with {threads} threads"),
        ));
    }
    #[expect(
        clippy::disallowed_methods,
        reason = "the one set_var of the workspace, guarded by the single-thread check above"
    )]
    std::env::set_var(key, value);
    Ok(())
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// From now on SIGINT, SIGTERM and SIGHUP only set a flag ([`interrupted`]), so a long operation
/// can stop at its next step and undo what it did. (Children get default handlers back at exec.)
pub fn catch_interrupts() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// True once SIGINT, SIGTERM or SIGHUP arrived (after [`catch_interrupts`]).
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Runs `cmd` to completion with `stdin` written to it (or `/dev/null`), capturing stdout and
/// stderr: the one way Ferry feeds a tool its input (`iptables-restore`, `ip -batch`,
/// `kubectl apply -f -`).
pub fn output_with_stdin(
    cmd: &mut Command,
    stdin: Option<&str>,
) -> io::Result<std::process::Output> {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())?;
    }
    child.wait_with_output()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_a_stat_line() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                state: 'S',
                start_ticks: 987_654
            })
        );
        let zombie = "42 (x) Z 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert!(parse_stat(zombie).unwrap().exited());
        assert_eq!(parse_stat("42 (x) S 1 2"), None);
        let me = start_ticks(own_pid()).unwrap();
        assert_eq!(running_start_ticks(own_pid()), Some(me));
        assert!(is_running(own_pid(), me));
        assert!(!is_running(own_pid(), me + 1));
        assert!(clock_ticks_per_second() > 0);
    }

    #[test]
    fn the_environment_is_only_changed_single_threaded() {
        // The test harness runs tests on threads of their own.
        assert!(thread_count().unwrap() > 1);
        let e = set_env_while_single_threaded("FERRY_SYS_TEST", "1").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert!(std::env::var_os("FERRY_SYS_TEST").is_none());
    }

    #[test]
    fn signals_refuse_groups() {
        assert!(signal(0, 0).is_err());
        assert!(signal(-1, 0).is_err());
        assert!(signal(own_pid(), 0).is_ok());
    }

    #[test]
    fn a_zombie_is_not_running() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let pidfd = Pidfd::open(pid).unwrap();
        // Exited but not reaped: a zombie keeps its start time, but it does not run.
        let mut fds = [libc::pollfd {
            fd: pidfd.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: `fds` is a valid array of one pollfd for the duration of the call.
        assert_eq!(unsafe { libc::poll(fds.as_mut_ptr(), 1, 10_000) }, 1);
        assert!(start_ticks(pid).is_some());
        assert_eq!(running_start_ticks(pid), None);
        child.wait().unwrap();
        assert!(Pidfd::open(pid).is_err());
    }

    #[test]
    fn children_get_fd3_and_a_session() {
        let file = tempfile::tempfile().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo hi >&3"]);
        OnExec::new()
            .new_session()
            .fd3(&file)
            .unwrap()
            .install(&mut cmd);
        let out = cmd.output().unwrap();
        assert!(out.status.success());
        let mut read = String::new();
        use std::io::{Read as _, Seek as _};
        let mut f = file;
        f.rewind().unwrap();
        f.read_to_string(&mut read).unwrap();
        assert_eq!(read, "hi\n");
    }
}
