//! A throwaway etcd server for tests: `/usr/bin/etcd` (Debian `etcd-server`, v3.4) on loopback
//! with random free ports and a temp data dir, killed and removed on drop.
//!
//! Missing etcd: the tests print a visible SKIPPED line and return, except under `CI=true`,
//! where they fail.

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_store::etcd::{EtcdOptions, EtcdStore};
use ferry_tests::ChildGuard;
use tempfile::TempDir;

/// A running etcd. Fields drop in order: the process is killed before its directory is removed.
pub(crate) struct EtcdServer {
    child: ChildGuard,
    dir: TempDir,
    pub(crate) endpoint: String,
}

/// How often etcd sends progress notifications to idle watchers in tests.
const PROGRESS_INTERVAL: &str = "500ms";

/// `$FERRY_ETCD_BIN`, else `/usr/bin/etcd`, else `etcd` on `PATH`; `None` if that file is missing.
fn etcd_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FERRY_ETCD_BIN") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let default = PathBuf::from("/usr/bin/etcd");
    if default.exists() {
        return Some(default);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("etcd"))
            .find(|p| p.is_file())
    })
}

fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

impl EtcdServer {
    /// Starts etcd, or returns `None` (after printing why) when it is not installed and `CI` is
    /// not `true`.
    pub(crate) fn start(test: &str) -> Option<EtcdServer> {
        let Some(bin) = etcd_binary() else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: etcd is not installed (apt-get install etcd-server); CI=true does not skip");
            }
            eprintln!("SKIPPED {test}: etcd is not installed (apt-get install etcd-server)");
            return None;
        };
        let mut last_log = String::new();
        // Ports are picked free but may be taken before etcd binds them: retry.
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("temp dir");
            let (client, peer) = (free_port(), free_port());
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let log_path = dir.path().join("etcd.log");
            let log = File::create(&log_path).expect("etcd log file");
            let child = Command::new(&bin)
                .args(["--name", "ferry-test", "--data-dir"])
                .arg(dir.path().join("data"))
                .args([
                    "--listen-client-urls",
                    &client_url,
                    "--advertise-client-urls",
                    &client_url,
                ])
                .args([
                    "--listen-peer-urls",
                    &peer_url,
                    "--initial-advertise-peer-urls",
                    &peer_url,
                ])
                .args(["--initial-cluster", &format!("ferry-test={peer_url}")])
                .args(["--initial-cluster-state", "new"])
                .args([
                    "--experimental-watch-progress-notify-interval",
                    PROGRESS_INTERVAL,
                ])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
            let mut server = EtcdServer {
                child: ChildGuard(child),
                dir,
                endpoint: client_url,
            };
            if server.wait_listening(client, Duration::from_secs(15)) {
                return Some(server);
            }
            last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
        }
        panic!("etcd did not start; last log:\n{last_log}");
    }

    fn wait_listening(&mut self, port: u16, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.0.try_wait() {
                return false;
            }
            if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Connects a store (retrying while etcd elects itself leader).
    pub(crate) async fn connect(&self, namespace: &str) -> EtcdStore {
        let options = EtcdOptions {
            compaction_interval: None,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            ..EtcdOptions::default()
        };
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            match EtcdStore::connect_with(
                std::slice::from_ref(&self.endpoint),
                namespace,
                options.clone(),
            )
            .await
            {
                Ok(store) => return store,
                Err(e) if Instant::now() < end => {
                    tracing_free_note(&e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!(
                    "etcd at {} not ready: {e:?}; log:\n{}",
                    self.endpoint,
                    std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
                ),
            }
        }
    }
}

/// Keeps retries quiet unless asked (`FERRY_TEST_VERBOSE=1`).
fn tracing_free_note(e: &dyn std::error::Error) {
    if std::env::var_os("FERRY_TEST_VERBOSE").is_some() {
        eprintln!("etcd not ready yet: {e}");
    }
}
