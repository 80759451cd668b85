//! `kubectl attach` and `kubectl run -i`/`-it --rm` with the real kubectl, through ferry-server
//! to ferry-kubelet (the fixture of `stream.rs`): a container's live output (and not what it
//! wrote before), stdin with `stdinOnce` (closed when the first session ends), a terminal with
//! its size, the container's exit code as kubectl's, the pod deleted by `--rm`, kube's errors
//! for a missing pod, a missing container and a completed pod, and nothing left running.

mod common;

use common::{pod, running, text, Fixture, NODE, NODE_IP};
use ferry_tests::{privileged, unique, wait_until, RootSnapshot};
use serde_json::json;
use std::process::Output;
use std::time::Duration;

impl Fixture {
    /// kubectl with `args`, `stdin` piped, killed after 60 s (a hung session fails the test
    /// instead of hanging it).
    fn kubectl_timed(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let kubeconfig = self.path("server/admin.kubeconfig");
        let mut cmd = self.cp.command("timeout");
        cmd.args(["60", "kubectl", "--kubeconfig"])
            .arg(&kubeconfig)
            .args(args);
        ferry_tests::output_with_stdin(&mut cmd, stdin)
    }

    /// `kubectl run NAME -i|-it --rm --restart=Never --image=busybox -- sh -c SCRIPT`.
    fn run_args<'a>(interactive: &'a str, name: &'a str, script: &'a str) -> Vec<&'a str> {
        vec![
            "run",
            interactive,
            "--rm",
            "--restart=Never",
            "--image=busybox",
            name,
            "--",
            "sh",
            "-c",
            script,
        ]
    }

    fn gone(&self, what: &str) -> bool {
        wait_until(Duration::from_secs(20), || self.get(what).is_none())
    }
}

#[test]
fn attach_and_run_interactive_through_the_apiserver() {
    if !privileged("kubelet_attach") {
        return;
    }
    let root = RootSnapshot::take();
    let mut f = Fixture::new(&unique("ka"));

    // 1. kubectl run -i --rm: stdin piped in, stdinOnce closes it, the output, exit 0, no pod.
    let out = f.kubectl_timed(
        &Fixture::run_args("-i", "t1", "read l; echo got $l"),
        Some("hello\n"),
    );
    let (o, e) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{o:?} {e}\nkubelet log:\n{}",
        f.log("kubelet.log")
    );
    assert!(o.lines().any(|l| l == "got hello"), "{o:?} {e:?}");
    assert!(f.gone("pod/t1"), "kubectl run --rm left pod t1");

    // 2. The container's exit code is kubectl's; without stdin input, `read` sees the end of
    // stdin at once (stdinOnce: the session's end closed it).
    let out = f.kubectl_timed(
        &Fixture::run_args(
            "-i",
            "t2",
            "while read l; do echo \"line $l\"; done; echo stdin-closed; exit 3",
        ),
        Some("a\nb\n"),
    );
    let (o, e) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{o:?} {e:?}");
    assert!(o.contains("line a\nline b\nstdin-closed\n"), "{o:?} {e:?}");
    assert!(f.gone("pod/t2"), "kubectl run --rm left pod t2");

    // 3. kubectl attach to a container without stdin: its output from now on (stdout and
    // stderr), the session ends with the container, exit 0.
    let spec = json!({"nodeName": NODE, "restartPolicy": "Never", "containers": [{
        "name": "c", "image": "busybox",
        "command": ["sh", "-c", "echo early-line; sleep 4; echo late-line; echo late-err >&2"]}]});
    let out = f.kubectl(
        &["create", "-f", "-"],
        Some(&pod("quiet", spec).to_string()),
    );
    assert!(out.status.success(), "{:?}", text(&out));
    let p = f.wait("pod/quiet", 30, running);
    let uid = p["metadata"]["uid"].as_str().unwrap().to_owned();
    let out = f.kubectl_timed(&["attach", "quiet"], None);
    let (o, e) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{o:?} {e:?}");
    assert!(o.contains("late-line\n"), "{o:?} {e:?}");
    assert!(o.contains("late-err\n"), "{o:?} {e:?}");
    assert!(
        !o.contains("early-line"),
        "output from before attaching: {o:?}"
    );
    f.wait("pod/quiet", 20, |p| p["status"]["phase"] == "Succeeded");
    // A completed pod: kube's message.
    let out = f.kubectl_timed(&["attach", "quiet"], None);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("completed pod"), "{:?}", text(&out));
    assert!(f.pod_pids(&uid).is_empty(), "{:?}", f.pod_pids(&uid));

    // 4. Errors: no such pod, no such container.
    let out = f.kubectl_timed(&["attach", "nosuch"], None);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("not found"), "{:?}", text(&out));
    let spec = json!({"nodeName": NODE, "containers": [{"name": "c", "image": "busybox",
        "stdin": true, "command": ["sh", "-c", "while read l; do echo \"echo $l\"; echo \"err $l\" >&2; done; sleep 1000"]}]});
    let out = f.kubectl(&["create", "-f", "-"], Some(&pod("open", spec).to_string()));
    assert!(out.status.success(), "{:?}", text(&out));
    let p = f.wait("pod/open", 30, running);
    let uid = p["metadata"]["uid"].as_str().unwrap().to_owned();
    let out = f.kubectl_timed(&["attach", "open", "-c", "nosuch"], None);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("nosuch"), "{:?}", text(&out));

    // 5. Without stdinOnce, stdin stays open across sessions: two clients in turn both reach
    // the container (each ends when its kubectl is killed; the container keeps running), and
    // get its stdout and stderr apart.
    let main_pids = f.pod_pids(&uid);
    assert_eq!(main_pids.len(), 1, "{main_pids:?}");
    let attach_with = |f: &Fixture, word: &str| {
        let sh = format!(
            "(echo {word}; sleep 3) | timeout 2 kubectl --kubeconfig {} attach -i open; true",
            f.path("server/admin.kubeconfig").display()
        );
        let out = f.cp.command("sh").args(["-c", &sh]).output().unwrap();
        let (o, e) = text(&out);
        assert!(o.contains(&format!("echo {word}\n")), "{word}: {o:?} {e:?}");
        // stdout and stderr on their own channels, as kubectl shows them.
        assert!(e.contains(&format!("err {word}\n")), "{word}: {o:?} {e:?}");
        assert!(!o.contains("err "), "{word}: {o:?} {e:?}");
    };
    attach_with(&f, "first");
    attach_with(&f, "second");
    // The shim outlives a kubelet killed with SIGKILL: the restarted kubelet attaches to the
    // same container, its stdin still open.
    f.kill_kubelet();
    f.start_kubelet();
    assert!(
        wait_until(Duration::from_secs(30), || f
            .node
            .command("curl")
            .args(["-sfk", &format!("https://{NODE_IP}:10250/healthz")])
            .output()
            .is_ok_and(|o| o.status.success())),
        "the kubelet did not come back"
    );
    attach_with(&f, "third");
    assert_eq!(
        f.pod_pids(&uid),
        main_pids,
        "the container or a stray process"
    );
    f.ok(&["delete", "pod", "open", "--grace-period=1"]);

    // 6. kubectl run -it on a terminal (script(1)): the terminal's size reaches the container,
    // typed input, the shell's exit code, the pod deleted.
    let run_it = f.path("run-it.sh");
    std::fs::write(
        &run_it,
        format!(
            "stty rows 37 cols 101\nkubectl --kubeconfig {} run -it --rm --restart=Never \
             --image=busybox t3 -- sh\necho rc=$?\n",
            f.path("server/admin.kubeconfig").display()
        ),
    )
    .unwrap();
    // script(1) gives kubectl a terminal; its input comes from the pipe, kept open long enough
    // for the session to end first.
    let sh = format!(
        "(sleep 3; printf 'stty size; echo typed-$((6*7))\\r'; sleep 1; printf 'exit 5\\r'; \
         sleep 8) | script -qec 'sh {}' /dev/null",
        run_it.display()
    );
    let out =
        f.cp.command("timeout")
            .args(["60", "sh", "-c", &sh])
            .output()
            .unwrap();
    let (o, e) = text(&out);
    assert!(o.contains("37 101"), "{o:?} {e:?}");
    assert!(o.contains("typed-42"), "{o:?} {e:?}");
    assert!(o.contains("rc=5"), "{o:?} {e:?}");
    assert!(f.gone("pod/t3"), "kubectl run -it --rm left pod t3");

    // Nothing left in the pods' cgroups, no kubectl running.
    assert!(
        wait_until(Duration::from_secs(20), || {
            let mut pids = Vec::new();
            common::collect_pids(&f.cgroup, &mut pids);
            pids.is_empty()
        }),
        "processes left in the pods' cgroups"
    );
    drop(f);
    root.assert_unchanged();
}
