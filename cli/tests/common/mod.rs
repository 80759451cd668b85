//! Shared by the `ferry up` tests: a test cluster (unique name, temporary state dir, `ferry down`
//! on drop) and the independent checks that nothing of it is left.
#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(
    unreachable_pub,
    reason = "test helper module, pub for the test crates that include it"
)]

pub mod external;

use ferry_tests::unique;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// Checks that the binaries `ferry up` starts were built next to `ferry`.
pub fn binaries(names: &[&str]) {
    for n in names {
        ferry_tests::bin_path(n);
    }
}

pub fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One test cluster: a unique name and state directory; `ferry down` on drop.
pub struct Cluster {
    pub name: String,
    pub state: tempfile::TempDir,
}

impl Cluster {
    pub fn new() -> Cluster {
        Cluster {
            name: unique("fu"),
            state: tempfile::Builder::new()
                .prefix("ferry-up-test")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn command(&self, verb: &str) -> Command {
        let mut cmd = Command::new(FERRY);
        cmd.arg(verb)
            .args(["--name", &self.name, "--state-dir"])
            .arg(self.state.path());
        cmd
    }

    pub fn ferry(&self, verb: &str, extra: &[&str]) -> Output {
        self.command(verb).args(extra).output().unwrap()
    }

    /// `ferry up --api-port 0` (any free port) plus `extra`.
    pub fn up(&self, extra: &[&str]) -> Output {
        self.ferry(
            "up",
            &[&["--api-port", "0", "--timeout", "60"], extra].concat(),
        )
    }

    pub fn dir(&self) -> PathBuf {
        self.state.path().join(&self.name)
    }

    pub fn state(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.dir().join("state.json")).unwrap()).unwrap()
    }

    /// The recorded pid of component `name` (`apiserver-2`, `node-1/agent`).
    pub fn pid_of(&self, name: &str) -> i32 {
        self.state()["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name)
            .and_then(|x| x["proc"]["pid"].as_i64())
            .map(|p| i32::try_from(p).unwrap())
            .unwrap_or_else(|| panic!("no component {name}"))
    }

    pub fn namespaces(&self) -> Vec<String> {
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        String::from_utf8_lossy(&list.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|ns| {
                ns.strip_prefix(&format!("{}-", self.name))
                    .is_some_and(|rest| {
                        rest == "sw"
                            || rest == "cp"
                            || rest == "ext"
                            || rest
                                .strip_prefix('n')
                                .is_some_and(|d| d.bytes().all(|b| b.is_ascii_digit()))
                    })
            })
            .map(str::to_owned)
            .collect()
    }

    pub fn cgroup(&self) -> PathBuf {
        Path::new("/sys/fs/cgroup/unified").join(format!("ferry-{}", self.name))
    }

    /// Live processes whose command line names this cluster's state directory.
    pub fn processes(&self) -> Vec<String> {
        let needle = self.state.path().to_string_lossy().into_owned();
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
            .filter_map(|e| {
                let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                cmdline
                    .contains(&needle)
                    .then(|| format!("{}: {cmdline}", e.file_name().to_string_lossy()))
            })
            .collect()
    }

    /// Nothing of the cluster is left, checked without `ferry`.
    pub fn assert_gone(&self) {
        assert_eq!(self.namespaces(), Vec::<String>::new(), "namespaces left");
        assert!(
            !self.cgroup().exists(),
            "cgroup {} left",
            self.cgroup().display()
        );
        assert!(!self.dir().exists(), "{} left", self.dir().display());
        assert_eq!(self.processes(), Vec::<String>::new(), "processes left");
    }

    /// Recorded component pids.
    pub fn pids(&self) -> Vec<i32> {
        self.state()["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| i32::try_from(c["proc"]["pid"].as_i64().unwrap()).unwrap())
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .command("down")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// SIGKILL to `pid` (one of the cluster's processes, by PID), then waits until it is gone.
pub fn kill9(pid: i32) {
    ferry_sys::process::signal(pid, libc::SIGKILL).unwrap_or_else(|e| panic!("kill {pid}: {e}"));
    assert!(
        ferry_tests::wait_until(std::time::Duration::from_secs(5), || !alive(pid)),
        "{pid} still alive after SIGKILL"
    );
}

pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        let state = s
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().next())
            .unwrap_or("Z");
        state != "Z" && state != "X"
    })
}

pub fn kubectl(kubeconfig: &str, args: &[&str]) -> Output {
    Command::new("kubectl")
        .args(["--kubeconfig", kubeconfig])
        .args(args)
        .output()
        .expect("kubectl installed (scripts/setup.sh)")
}

/// `kubectl --kubeconfig <path>`, with the checks the cluster tests repeat.
pub struct Kubectl(pub String);

impl Kubectl {
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new("kubectl");
        cmd.args(["--kubeconfig", &self.0]).args(args);
        ferry_tests::output_with_stdin(&mut cmd, stdin)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, None);
        assert!(out.status.success(), "kubectl {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn apply(&self, obj: &Value) {
        let out = self.run(&["apply", "-f", "-"], Some(&obj.to_string()));
        assert!(out.status.success(), "apply: {}", text(&out));
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    /// `json`, or `None` when kubectl fails.
    pub fn try_json(&self, args: &[&str]) -> Option<Value> {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let out = self.run(&a, None);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    pub fn wait(&self, args: &[&str], secs: u64, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut last = Value::Null;
        while Instant::now() < deadline {
            let mut a = args.to_vec();
            a.extend(["-o", "json"]);
            let out = self.run(&a, None);
            if out.status.success() {
                last = serde_json::from_slice(&out.stdout).unwrap();
                if f(&last) {
                    return last;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("{what}: not reached in {secs}s; last: {last:#}");
    }
}
