//! `--token` still works but warns on stderr (the token is in every local user's `ps`);
//! `--token-file` does not warn. Runs the real binary with flags that fail validation right after
//! the credentials are read, so nothing connects anywhere.

use std::process::Command;

fn stderr_of(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry-agent"))
        .args([
            "--node-name",
            "n1",
            // Not https: the configuration is refused, after the token flags were looked at.
            "--server",
            "http://127.0.0.1:1",
            "--certificate-authority",
            "/nonexistent/ca.crt",
            "--cni-conf-dir",
            "/nonexistent/net.d",
            "--run-dir",
            "/nonexistent/run",
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
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "0123456789abcdef").unwrap();
    let err = stderr_of(&["--token-file", file.to_str().unwrap()]);
    assert!(!err.contains("warning: --token"), "{err}");
    assert!(err.contains("--server"), "{err}");
}
