//! Fixture: a real `ferry-server` process on a free loopback port with a temporary data dir, and
//! the real `kubectl` pointed at it.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses a different subset"
)]

use ferry_tests::ChildGuard;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

pub const SERVER: &str = env!("CARGO_BIN_EXE_ferry-server");

pub struct Server {
    pub child: Option<ChildGuard>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub extra: Vec<String>,
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("ferry-server-test")
            .tempdir()
            .unwrap();
        let mut s = Server {
            child: None,
            dir,
            port: free_port(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        s.spawn();
        s
    }

    pub fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let child = Command::new(SERVER)
            .args([
                "--data-dir",
                self.dir.path().to_str().unwrap(),
                "--listen",
                &format!("127.0.0.1:{}", self.port),
            ])
            .args(&self.extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(ChildGuard(child));
        let ok = ferry_tests::wait_until(Duration::from_secs(20), || {
            self.kubeconfig().exists()
                && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
        assert!(ok, "ferry-server did not come up: {}", self.log());
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.0.kill();
            let _ = c.0.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Runs kubectl against the server.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None)
    }

    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.dir.path().join("kcache"))
            .args(args);
        ferry_tests::output_with_stdin(&mut cmd, stdin)
    }

    /// kubectl that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.succeed(args, None)
    }

    /// kubectl with a manifest on stdin that must succeed.
    pub fn ok_stdin(&self, args: &[&str], manifest: &str) -> String {
        self.succeed(args, Some(manifest))
    }

    fn succeed(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_stdin(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// kubectl that must fail; returns stderr.
    pub fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_stdin(args, stdin);
        assert!(
            !out.status.success(),
            "kubectl {args:?} should have failed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// The admin token.
    pub fn admin_token(&self) -> String {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.dir.path().join("tokens.json")).unwrap())
                .unwrap();
        v["admin"].as_str().unwrap().to_owned()
    }

    /// A node token (created through the CLI, as `ferry up` will).
    pub fn node_token(&self, node: &str) -> String {
        let out = Command::new(SERVER)
            .args([
                "--data-dir",
                self.dir.path().to_str().unwrap(),
                "node-token",
                "--node",
                node,
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A kubeconfig for `token`.
    pub fn kubeconfig_for(&self, name: &str, token: &str) -> PathBuf {
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.kubeconfig()).unwrap()).unwrap();
        v["users"][0]["user"]["token"] = token.into();
        let p = self.dir.path().join(format!("{name}.kubeconfig"));
        std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
        p
    }
}

/// A kube-rs client from a kubeconfig file.
pub async fn client_for(kubeconfig: &std::path::Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(cfg).unwrap()
}

impl Server {
    /// A kube-rs client with the admin identity.
    pub async fn client(&self) -> kube::Client {
        client_for(&self.kubeconfig()).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
