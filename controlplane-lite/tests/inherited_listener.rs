//! `ferry-server --inherited-listener-fd N`: the server also serves on a listening TCP socket its
//! parent bound (as `ferry up` does with 127.0.0.1:PORT in the root namespace), and refuses an fd
//! that is not one, with a message naming the problem.

mod common;

use common::{free_port, SERVER};
use ferry_tests::ChildGuard;
use std::os::fd::{AsFd, BorrowedFd};
use std::process::{Command, Stdio};
use std::time::Duration;

/// `ferry-server` with `fd` duplicated onto fd 3 and `--inherited-listener-fd 3`.
fn server_with_fd3(dir: &std::path::Path, fd: BorrowedFd<'_>, port: u16) -> Command {
    let mut cmd = Command::new(SERVER);
    cmd.arg("--data-dir")
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--inherited-listener-fd", "3", "--controllers", "false"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    ferry_sys::process::OnExec::new()
        .fd3(fd)
        .unwrap()
        .install(&mut cmd);
    cmd
}

fn readyz(kubeconfig: &std::path::Path, server: &str) -> bool {
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--server", server, "get", "--raw", "/readyz"])
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "ok")
}

#[test]
fn serves_on_an_inherited_listener_too() {
    let dir = tempfile::tempdir().unwrap();
    let inherited = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let inherited_port = inherited.local_addr().unwrap().port();
    let port = free_port();
    let child = server_with_fd3(dir.path(), inherited.as_fd(), port)
        .stderr(std::fs::File::create(dir.path().join("server.log")).unwrap())
        .spawn()
        .unwrap();
    let _guard = ChildGuard(child);
    // Only the child serves on it from now on.
    drop(inherited);
    let kubeconfig = dir.path().join("admin.kubeconfig");
    let log = || std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
    let up = ferry_tests::wait_until(Duration::from_secs(20), || {
        kubeconfig.exists() && readyz(&kubeconfig, &format!("https://127.0.0.1:{port}"))
    });
    assert!(up, "ferry-server did not come up: {}", log());
    assert!(
        readyz(&kubeconfig, &format!("https://127.0.0.1:{inherited_port}")),
        "the inherited listener does not serve the API: {}",
        log()
    );
    assert!(log().contains(&format!(
        "also serving on https://127.0.0.1:{inherited_port}"
    )));
}

#[test]
fn refuses_an_fd_that_is_not_a_listening_tcp_socket() {
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::open("/dev/null").unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    // Connected but not listening.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stream = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    for (fd, want) in [
        (file.as_fd(), "is not a socket"),
        (udp.as_fd(), "is not a TCP socket"),
        (stream.as_fd(), "is not listening"),
    ] {
        let out = server_with_fd3(dir.path(), fd, free_port())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted a bad fd ({want})");
        assert!(
            stderr.contains("--inherited-listener-fd 3") && stderr.contains(want),
            "expected '{want}': {stderr}"
        );
    }
    // No fd 3 at all in the child (a file descriptor the parent forgot to pass).
    let out = Command::new(SERVER)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--inherited-listener-fd", "900"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("not open"), "{stderr}");
}
