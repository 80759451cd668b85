//! Privileged smoke test of the eBPF pipeline end to end: the object built by `build.rs`, loaded
//! through `ferry_agent::bpf::SockRedirect`, attached to a cgroup, redirecting a real `connect(2)`.
//!
//! Everything happens inside things this test creates and removes:
//! - a fresh network namespace, made by `unshare(CLONE_NEWNET)` on a dedicated thread and kept
//!   alive only by an fd and the listener socket (never bind-mounted, so it cannot outlive the
//!   test, and `ip netns list` never shows it);
//! - a fresh cgroup under the cgroup2 mount (found in `/proc/self/mountinfo`), never the root
//!   cgroup; only the test's own child processes are moved into it, and it is removed at the end.
//!
//! The child processes are `bash` connecting through `/dev/tcp`: each joins the test cgroup and
//! then the test netns between fork and exec, so only those children are affected by the program.
//! `bpftool` independently checks that the program is loaded and attached to the test cgroup.
//!
//! Needs root, a cgroup2 mount, `bpftool`, `ip` and `bash`. With `CI=true` a missing prerequisite
//! fails the test; outside CI a non-root run prints a visible `SKIPPED` line and returns.
//!
//! The kernel calls (namespace, cgroup discovery, joining between fork and exec) go through
//! `ferry-sys`, as in the agent itself.

#![forbid(unsafe_code)]

use std::{
    fs::{self, OpenOptions},
    io::{self, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener},
    path::{Path, PathBuf},
    process::{self, Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use ferry_agent::bpf::{L4Proto, SockRedirect};
use ferry_common::names;
use ferry_sys::netns::NetnsFd;
use ferry_sys::process::OnExec;

/// How long a child connect or an expected accept may take on loopback before the test fails.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The frontend port nothing listens on in the fresh netns; the redirect sends it to the listener.
const FRONTEND_PORT: u16 = 80;

#[test]
fn connect4_redirects_in_test_cgroup_and_stops_after_detach() {
    let Some(cgroup2_root) = preflight() else {
        return;
    };

    // Declaration order is drop order reversed: children and the attachment go first, the
    // cgroup last (it can only be removed once its processes are gone).
    let cgroup = TestCgroup::create(&cgroup2_root);
    assert_ne!(
        cgroup.path(),
        cgroup2_root,
        "never attach to the root cgroup"
    );
    let (netns, listener) = TestNetns::create_with_listener();
    let backend = match listener.local_addr().expect("listener address") {
        SocketAddr::V4(addr) => addr,
        SocketAddr::V6(addr) => panic!("listener bound to {addr}, expected IPv4"),
    };
    assert_ne!(backend.port(), FRONTEND_PORT);
    let frontend = SocketAddrV4::new(Ipv4Addr::LOCALHOST, FRONTEND_PORT);

    let mut redirect = SockRedirect::load().expect("loading the sock-lb object");
    let program_id = redirect.program_id().expect("program id");
    redirect
        .insert_redirect(L4Proto::Tcp, frontend, backend)
        .expect("inserting the redirect");
    assert_eq!(
        redirect
            .redirect(L4Proto::Tcp, frontend)
            .expect("reading the redirect"),
        Some(backend)
    );
    let attachment = redirect
        .attach(cgroup.path())
        .expect("attaching to the test cgroup");
    assert_eq!(attachment.cgroup(), cgroup.path());

    // Independent view: the kernel lists the program, attached to exactly our cgroup.
    let prog = bpftool_prog(program_id).expect("bpftool must list the loaded program");
    assert_eq!(prog["name"], names::CONNECT4, "bpftool prog show: {prog}");
    assert_eq!(
        prog["type"], "cgroup_sock_addr",
        "bpftool prog show: {prog}"
    );
    assert!(
        bpftool_cgroup_prog_ids(cgroup.path()).contains(&program_id),
        "bpftool cgroup show {} does not list program {program_id}",
        cgroup.path().display()
    );

    // A process in the cgroup connecting to the frontend reaches the listener.
    let attempt = connect_from(&cgroup, &netns, frontend);
    assert!(
        attempt.status.success(),
        "connect to {frontend} through the redirect failed: {attempt:?}"
    );
    let accepted = accept_within(&listener, TIMEOUT)
        .expect("the listener accepted no connection: the redirect did not happen");
    assert_eq!(
        accepted.local_addr().expect("accepted address"),
        SocketAddr::V4(backend)
    );
    drop(accepted);
    let stats = redirect.stats().expect("reading counters");
    assert!(stats.connect4_calls >= 1, "{stats:?}");
    assert!(stats.connect4_rewrites >= 1, "{stats:?}");

    // After detaching, the same connect goes to the real frontend port, where nothing listens.
    attachment.detach().expect("detaching");
    assert!(
        !bpftool_cgroup_prog_ids(cgroup.path()).contains(&program_id),
        "program {program_id} still attached to {} after detach",
        cgroup.path().display()
    );
    let attempt = connect_from(&cgroup, &netns, frontend);
    assert!(
        !attempt.status.success() && attempt.stderr.contains("Connection refused"),
        "connect to {frontend} after detach should be refused: {attempt:?}"
    );
    assert!(
        accept_within(&listener, Duration::ZERO).is_none(),
        "the listener got a connection after detach"
    );
    assert_eq!(
        redirect.stats().expect("reading counters").connect4_calls,
        stats.connect4_calls,
        "the program ran after detach"
    );

    // Unloading leaves nothing behind: the kernel frees the program (asynchronously).
    drop(redirect);
    wait_for(|| bpftool_prog(program_id).is_none(), TIMEOUT)
        .unwrap_or_else(|()| panic!("program {program_id} still loaded after unload"));
    drop(listener);
    drop(netns);
    cgroup.remove().expect("removing the test cgroup");
    println!(
        "bpf_smoke: program {program_id} ({}) redirected {frontend} -> {backend} with {stats:?}; \
         after detach the connect was refused; unloaded; cgroup and netns removed",
        names::CONNECT4
    );
}

/// Checks root and tools; returns the cgroup2 mount point, or `None` after printing a visible
/// skip (non-root, outside CI only).
fn preflight() -> Option<PathBuf> {
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let root = ferry_sys::process::is_root();
    if !root {
        assert!(!in_ci, "CI=true: this privileged test must run as root");
        // Written to the real stderr (not the test harness's capture) so the skip is visible.
        let _ignored = writeln!(
            io::stderr().lock(),
            "SKIPPED bpf_smoke: needs root (cgroups, network namespaces, BPF); run as root or \
             in CI (CI=true makes this a failure)"
        );
        return None;
    }
    for (tool, args) in [("bpftool", "version"), ("ip", "-V"), ("bash", "--version")] {
        let ok = Command::new(tool)
            .arg(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "`{tool}` is missing or broken (scripts/setup.sh installs it)"
        );
    }
    Some(cgroup2_mount().expect("no cgroup2 mount in /proc/self/mountinfo"))
}

/// The first cgroup2 mount point in `/proc/self/mountinfo` (e.g. `/sys/fs/cgroup` on pure v2
/// hosts, `/sys/fs/cgroup/unified` on hybrid ones).
fn cgroup2_mount() -> Option<PathBuf> {
    ferry_sys::cgroup::mount()
}

/// A cgroup made for this test; removed by [`TestCgroup::remove`], or on drop (also when
/// unwinding) after killing any process still in it (only this test's children can be).
#[derive(Debug)]
struct TestCgroup {
    path: PathBuf,
    removed: bool,
}

impl TestCgroup {
    fn create(cgroup2_root: &Path) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = cgroup2_root.join(format!("ferry-smoke-{}-{nanos}", process::id()));
        fs::create_dir(&path)
            .unwrap_or_else(|err| panic!("creating cgroup {}: {err}", path.display()));
        Self {
            path,
            removed: false,
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn remove(mut self) -> io::Result<()> {
        self.removed = true;
        self.kill_and_remove()
    }

    fn kill_and_remove(&self) -> io::Result<()> {
        let procs = fs::read_to_string(self.path.join("cgroup.procs"))?;
        if !procs.trim().is_empty() {
            // cgroup.kill (Linux 5.14+) kills exactly this cgroup's processes.
            if fs::write(self.path.join("cgroup.kill"), "1").is_err() {
                // Each pid is a process in our own test cgroup, which only ever holds this
                // test's children.
                for pid in procs
                    .lines()
                    .filter_map(|l| l.trim().parse::<libc::pid_t>().ok())
                {
                    ferry_sys::process::kill(pid);
                }
            }
        }
        // Processes leave the cgroup asynchronously after exiting: retry for a while.
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match fs::remove_dir(&self.path) {
                Ok(()) => return Ok(()),
                Err(err)
                    if err.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                {
                    thread::sleep(Duration::from_millis(20));
                }
                Err(err) => return Err(err),
            }
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if !self.removed {
            if let Err(err) = self.kill_and_remove() {
                let _ignored = writeln!(
                    io::stderr().lock(),
                    "bpf_smoke: could not remove cgroup {}: {err}",
                    self.path.display()
                );
            }
        }
    }
}

/// A fresh network namespace with `lo` up. It exists as long as this fd (or a socket created in
/// it) is open; nothing else refers to it, so it disappears with the test, whatever happens.
#[derive(Debug)]
struct TestNetns {
    fd: NetnsFd,
}

impl TestNetns {
    /// Creates the namespace on a dedicated thread (namespaces belong to threads; the thread
    /// ends right after, so no test thread ever changes namespace) and binds a TCP listener on
    /// `127.0.0.1:0` inside it.
    fn create_with_listener() -> (Self, TcpListener) {
        let (fd, listener) = NetnsFd::new_anonymous(|| -> io::Result<TcpListener> {
            // Children inherit the namespace of the thread that spawns them.
            let status = Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status()?;
            if !status.success() {
                return Err(io::Error::other(format!("ip link set lo up: {status}")));
            }
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        })
        .expect("creating the test network namespace");
        let listener = listener.expect("setting up the test network namespace");
        (Self { fd }, listener)
    }
}

/// What a child connect attempt did.
#[derive(Debug)]
struct Attempt {
    status: ExitStatus,
    stderr: String,
}

/// Runs `bash` connecting to `to` from inside the test cgroup and netns, and waits for it.
fn connect_from(cgroup: &TestCgroup, netns: &TestNetns, to: SocketAddrV4) -> Attempt {
    let procs = OpenOptions::new()
        .write(true)
        .open(cgroup.path().join("cgroup.procs"))
        .expect("opening cgroup.procs");
    let mut command = Command::new("bash");
    command
        .args(["-c", r#"exec 3<>"/dev/tcp/$1/$2""#, "connect"])
        .args([to.ip().to_string(), to.port().to_string()])
        // The refused case is recognised by bash's (strerror) message: keep it in English.
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // Between fork and exec: join the test cgroup first, then the netns.
    OnExec::new()
        .join_cgroup(&procs)
        .and_then(|o| o.enter_netns(&netns.fd))
        .expect("duplicating the cgroup and netns fds")
        .install(&mut command);
    let mut child = ChildGuard(Some(command.spawn().expect("spawning bash")));
    let status = child.wait_within(TIMEOUT);
    let mut stderr = String::new();
    if let Some(mut pipe) = child.0.as_mut().and_then(|c| c.stderr.take()) {
        let _bytes = pipe
            .read_to_string(&mut stderr)
            .expect("reading bash's stderr");
    }
    drop(procs);
    Attempt { status, stderr }
}

/// Kills and reaps the child on drop, so no path (timeout, panic) leaves one behind.
#[derive(Debug)]
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn wait_within(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.0.as_mut().expect("child present");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("waiting for child") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "child {} still running after {timeout:?}",
                child.id()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ignored = child.kill();
            }
            let _ignored = child.wait();
        }
    }
}

/// Accepts one pending connection, waiting up to `timeout` (zero: only what is already there).
fn accept_within(listener: &TcpListener, timeout: Duration) -> Option<std::net::TcpStream> {
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((stream, _peer)) => return Some(stream),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return None;
                }
                thread::sleep(Duration::from_millis(10));
            }
            Err(err) => panic!("accept: {err}"),
        }
    }
}

/// `bpftool -j prog show id ID`, or `None` if the kernel has no such program.
fn bpftool_prog(id: u32) -> Option<serde_json::Value> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show", "id", &id.to_string()])
        .output()
        .expect("running bpftool");
    if !out.status.success() {
        return None;
    }
    Some(serde_json::from_slice(&out.stdout).expect("bpftool prog show JSON"))
}

/// Ids of the programs `bpftool cgroup show` lists as attached to `cgroup`.
fn bpftool_cgroup_prog_ids(cgroup: &Path) -> Vec<u32> {
    let out = Command::new("bpftool")
        .args(["-j", "cgroup", "show"])
        .arg(cgroup)
        .output()
        .expect("running bpftool");
    assert!(
        out.status.success(),
        "bpftool cgroup show {}: {}",
        cgroup.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Vec::new();
    }
    let attached: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("bpftool cgroup show JSON");
    attached
        .as_array()
        .expect("bpftool cgroup show: a JSON array")
        .iter()
        .filter_map(|entry| entry["id"].as_u64())
        .filter_map(|id| u32::try_from(id).ok())
        .collect()
}

/// Polls `done` every 50 ms until it holds or `timeout` passes.
fn wait_for(mut done: impl FnMut() -> bool, timeout: Duration) -> Result<(), ()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() >= deadline {
            return Err(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
