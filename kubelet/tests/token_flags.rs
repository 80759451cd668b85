//! `--token` still works but warns on stderr (the token is in every local user's `ps`);
//! `--token-file` does not warn. Runs the real binary with a `--node-ip` that is refused right
//! after the token is read, so nothing starts and nothing connects.

use std::process::Command;

fn stderr_of(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry-kubelet"))
        .args([
            "--node-name",
            "n1",
            "--server",
            "https://127.0.0.1:1",
            "--certificate-authority",
            "/nonexistent/ca.crt",
            "--cgroup-root",
            "/nonexistent/cgroup",
            "--node-ip",
            "not-an-ip",
            "--tls-cert-file",
            "/nonexistent/k.crt",
            "--tls-private-key-file",
            "/nonexistent/k.key",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn token_on_the_command_line_warns() {
    let err = stderr_of(&["--token", "0123456789abcdef"]);
    assert!(
        err.contains("warning: --token") && err.contains("--token-file"),
        "{err}"
    );
    assert!(err.contains("not-an-ip"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "0123456789abcdef").unwrap();
    let err = stderr_of(&["--token-file", file.to_str().unwrap()]);
    assert!(!err.contains("warning: --token"), "{err}");
    assert!(err.contains("not-an-ip"), "{err}");
}
