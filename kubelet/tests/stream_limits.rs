//! An upgraded session (exec, attach, port-forward) keeps its connection's place under the
//! kubelet's `--max-connections` until it ends: with a cap of 1, a second `kubectl exec` is
//! refused while a first one runs, and served once it has ended. (Before, hyper released the
//! connection at the upgrade, so sessions were never counted.)

mod common;

use common::{pod, running, text, Fixture, NODE};
use ferry_tests::{privileged, unique, wait_until, ChildGuard};
use serde_json::json;
use std::io::Read as _;
use std::process::Stdio;
use std::time::Duration;

#[test]
fn exec_sessions_count_against_the_kubelet_connection_cap() {
    if !privileged("kubelet_stream_limits") {
        return;
    }
    let mut f = Fixture::new(&unique("kl"));
    f.kill_kubelet();
    f.start_kubelet_with(&["--max-connections", "1"]);
    let spec = json!({"nodeName": NODE, "containers": [{"name": "c", "image": "busybox",
        "command": ["sleep", "3600"]}]});
    let out = f.kubectl(&["create", "-f", "-"], Some(&pod("p", spec).to_string()));
    assert!(out.status.success(), "{:?}", text(&out));
    f.wait("pod/p", 30, running);
    let marker = f.path("first-exec-running");
    // The first session: holds the kubelet's only connection slot for a few seconds.
    let mut first = ChildGuard(
        f.kubectl_cmd(&[
            "exec",
            "p",
            "--",
            "sh",
            "-c",
            &format!("touch {}; sleep 4; echo first-done", marker.display()),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    assert!(
        wait_until(Duration::from_secs(20), || marker.exists()),
        "the first exec never ran"
    );
    let second = f.kubectl(&["exec", "p", "--", "echo", "second"], None);
    assert!(
        !second.status.success(),
        "a second session was served beside the first under --max-connections 1: {:?}",
        text(&second)
    );
    let status = first.0.wait().unwrap();
    let mut stdout = String::new();
    first
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(status.success(), "the first exec failed: {stdout}");
    assert_eq!(stdout, "first-done\n");
    // The slot is free again once the first session has ended.
    let mut served = false;
    wait_until(Duration::from_secs(10), || {
        served = f
            .kubectl(&["exec", "p", "--", "echo", "third"], None)
            .status
            .success();
        served
    });
    assert!(served, "the slot was not released after the session ended");
}
