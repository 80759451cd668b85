//! Test support for Ferry's privileged tests.
//!
//! Every test builds its own world: uniquely named network namespaces ([`Netns`]), links inside
//! them, child processes ([`ChildGuard`]) and temporary directories, each removed by a `Drop` guard,
//! so cleanup also happens when a test panics. Nothing here touches the root network namespace
//! beyond creating the `/run/netns/<name>` handles of the namespaces it owns.
//!
//! Results are meant to be checked with independent tools ([`Netns::ip_json`], `iptables-save`,
//! `bpftool`), not only with Ferry's own reads.
//!
//! Privileged tests start with [`privileged`]: as root it returns true; without root it fails the
//! test under `CI=true` (a privileged test that silently skips in CI is a bug) and otherwise writes
//! a `SKIPPED <test>` line straight to stderr, past libtest's capture, so the skip stays visible
//! next to the test's `ok`.
//!
//! The kernel calls (entering a namespace, signals) go through `ferry-sys`, like everywhere else.

#![cfg_attr(not(test), warn(unused_crate_dependencies))]
#![forbid(unsafe_code)]

pub mod stats;

pub use stats::{median, percentile, Spread};

use ferry_sys::netns::NetnsFd;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// True when privileged tests can run. Panics under `CI=true` when they cannot.
pub fn privileged(test: &str) -> bool {
    if ferry_sys::process::is_root() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{test}: privileged test cannot run without root, and CI=true forbids skipping");
    }
    skip_notice(&format!(
        "SKIPPED {test}: needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN)\n"
    ));
    false
}

/// Writes `line` to the process's standard error past libtest's output capture. libtest captures
/// `print!`/`eprint!` (its output-capture hook) and shows a passing test's output only with
/// `--nocapture`, so an `eprintln!` skip would read as a plain `ok`. A duplicate of fd 2 is a plain
/// file to std, which the hook never sees; one `write_all` of one line keeps it whole among the
/// parallel tests' output.
fn skip_notice(line: &str) {
    use std::io::Write as _;
    let written = io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(File::from)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if written.is_err() {
        // fd 2 closed or out of fds: the captured stream is better than nothing.
        eprint!("{line}");
    }
}

/// A short name unique to this process and call: `<tag><pid base36><counter>`, at most 12
/// characters for tags of up to 4, so derived link names stay within 15.
pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{tag}{}{}", base36(std::process::id()), base36(n))
}

fn base36(mut v: u32) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut s = Vec::new();
    loop {
        s.push(DIGITS[(v % 36) as usize]);
        v /= 36;
        if v == 0 {
            break;
        }
    }
    s.reverse();
    String::from_utf8(s).unwrap_or_default()
}

/// Runs a command and panics with its output if it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A network namespace created for one test at `/run/netns/<name>` (so `ip netns` knows it),
/// deleted on drop together with every process still inside it.
#[derive(Debug)]
pub struct Netns {
    name: String,
    path: String,
    fd: NetnsFd,
}

impl Netns {
    /// Creates `<tag><unique>`.
    pub fn new(tag: &str) -> Netns {
        let name = unique(tag);
        let path = format!("/run/netns/{name}");
        ferry_sys::netns::create_bound(std::path::Path::new(&path))
            .unwrap_or_else(|e| panic!("creating netns {name}: {e}"));
        let fd = NetnsFd::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        let ns = Netns { name, path, fd };
        ns.sh("ip link set lo up");
        ns
    }

    /// The namespace's name (as `ip netns` knows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// A command that runs inside this namespace (entered with `setns` before `exec`; unlike
    /// `ip netns exec` it does not remount `/sys` and costs no extra process).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        ferry_sys::process::enter_netns_on_exec(&mut cmd, &self.fd)
            .unwrap_or_else(|e| panic!("netns {}: {e}", self.name));
        cmd
    }

    /// Runs a shell script inside the namespace with `ip netns exec` (so `/sys` matches) and
    /// panics if it fails.
    pub fn sh(&self, script: &str) -> String {
        let out =
            run_ok(Command::new("ip").args(["netns", "exec", &self.name, "sh", "-c", script]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Like [`Netns::sh`] but returns the output whatever the exit status.
    pub fn try_sh(&self, script: &str) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", script])
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec: {e}"))
    }

    /// `ip -j <args>` inside the namespace, parsed (an independent view of kernel state).
    pub fn ip_json(&self, args: &str) -> serde_json::Value {
        let out = self.sh(&format!("ip -j {args}"));
        if out.trim().is_empty() {
            return serde_json::Value::Array(Vec::new());
        }
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j {args}: {e}: {out}"))
    }

    /// Names of the links in the namespace.
    pub fn link_names(&self) -> Vec<String> {
        self.ip_json("link show")
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Runs `f` on a new thread that has entered this namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.fd.run_on_thread(f).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a long-running process inside the namespace; it is killed when the guard drops.
    pub fn spawn(&self, program: &str, args: &[&str]) -> ChildGuard {
        let child = self
            .command(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        ChildGuard(child)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill whatever still runs inside, then delete the handle (the namespace dies with its
        // last reference, taking its links with it).
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    ferry_sys::process::kill(pid);
                }
            }
        }
        let _ = ferry_sys::netns::remove_bound(std::path::Path::new(&self.path));
    }
}

/// A veth pair `a_name` (in `a`) <-> `b_name` (in `b`), created directly in both namespaces.
pub fn veth(a: &Netns, a_name: &str, b: &Netns, b_name: &str) {
    run_ok(Command::new("ip").args([
        "link",
        "add",
        a_name,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b_name,
        "netns",
        b.name(),
    ]));
}

/// A snapshot of the root network namespace's links, routes and firewall ruleset, taken by
/// [`RootSnapshot::take`] and compared by [`RootSnapshot::assert_unchanged`]: tests that drive
/// code able to act on "the current namespace" use it to prove they stayed inside their own.
#[derive(Debug, PartialEq, Eq)]
pub struct RootSnapshot {
    links: String,
    routes: String,
    ruleset: String,
    forwarding: String,
}

impl RootSnapshot {
    /// Reads the current (root) namespace's state.
    pub fn take() -> RootSnapshot {
        let read = |args: &[&str]| {
            Command::new(args[0])
                .args(&args[1..])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        RootSnapshot {
            links: read(&["ip", "-o", "link", "show"])
                .lines()
                .map(|l| l.split(':').nth(1).unwrap_or_default().trim().to_owned())
                .collect::<Vec<_>>()
                .join(","),
            routes: read(&["ip", "route", "show", "table", "all"]),
            ruleset: read(&["nft", "list", "ruleset"]),
            forwarding: std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
                .unwrap_or_default(),
        }
    }

    /// Panics if the root namespace changed since `self` was taken.
    pub fn assert_unchanged(&self) {
        let now = RootSnapshot::take();
        assert_eq!(&now, self, "the ROOT network namespace was modified");
    }
}

/// A child process killed and reaped on drop.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// The child's pid.
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `f` every 10 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Path of a workspace binary (`ferry-server`, `ferry-kubelet`, `ferry-cni`, ...) built into the
/// same target directory as the running test. `cargo test --workspace` builds every package's
/// binaries before running any test; a run limited with `-p` may not have it, hence the message.
pub fn bin_path(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test binary> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace --bins` (or `cargo test --workspace`) first",
        path.display()
    );
    path
}

/// Runs `cmd` to completion with `stdin` fed to it (or an empty stdin) and its output captured.
pub fn output_with_stdin(cmd: &mut Command, stdin: Option<&str>) -> Output {
    ferry_sys::process::output_with_stdin(cmd, stdin)
        .unwrap_or_else(|e| panic!("running {:?}: {e}", cmd.get_program()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_short_and_distinct() {
        let a = unique("fcni");
        let b = unique("fcni");
        assert_ne!(a, b);
        assert!(a.len() <= 12, "{a}");
    }

    #[test]
    fn netns_lifecycle_and_cleanup() {
        if !privileged("netns_lifecycle_and_cleanup") {
            return;
        }
        let name;
        {
            let a = Netns::new("ftt");
            let b = Netns::new("ftt");
            name = a.name().to_owned();
            veth(&a, "va", &b, "vb");
            assert!(a.link_names().contains(&"va".to_owned()));
            assert!(b.link_names().contains(&"vb".to_owned()));
            let _sleeper = a.spawn("sleep", &["30"]);
            let inside = a.run(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap());
            let outside = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
            assert_ne!(inside, outside);
        }
        let list = String::from_utf8(
            Command::new("ip")
                .args(["netns", "list"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        assert!(!list.contains(&name), "netns {name} left behind");
    }
}
