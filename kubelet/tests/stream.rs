//! `kubectl exec` (with and without a TTY), `kubectl cp` both ways and `kubectl port-forward`
//! with the real kubectl, through ferry-server to ferry-kubelet: a control-plane namespace runs
//! ferry-server and kubectl, a node namespace runs the kubelet, pods run in their own
//! namespaces. Results are checked independently (the pod's namespace and cgroup from /proc,
//! files on disk, curl through the forwarded port), and so is what is left afterwards (no stray
//! processes in the pod's cgroup, no kubectl left running).

mod common;

use common::{pod, running, text, Fixture, NODE, NODE_IP};
use ferry_tests::{privileged, unique, wait_until, ChildGuard, Netns, RootSnapshot};
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn exec_tty_cp_and_port_forward_through_the_apiserver() {
    if !privileged("kubelet_stream") {
        return;
    }
    let root = RootSnapshot::take();
    let f = Fixture::new(&unique("ks"));
    // A web server on 127.0.0.1:8080 inside the pod's namespace (the node's filesystem: no
    // images), serving a directory of the test.
    let www = f.path("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "forwarded-ok\n").unwrap();
    let spec = json!({"nodeName": NODE, "containers": [{"name": "c", "image": "python",
        "command": ["/usr/bin/python3", "-m", "http.server", "8080", "--bind", "0.0.0.0",
                    "--directory", www.to_str().unwrap()],
        "env": [{"name": "GREETING", "value": "hi-from-env"}],
        "workingDir": www.to_str().unwrap()}]});
    let out = f.kubectl(&["create", "-f", "-"], Some(&pod("web", spec).to_string()));
    assert!(out.status.success(), "{:?}", text(&out));
    let p = f.wait("pod/web", 30, running);
    let uid = p["metadata"]["uid"].as_str().unwrap().to_owned();
    let ip = p["status"]["podIP"].as_str().unwrap().to_owned();
    let main_pids = f.pod_pids(&uid);
    assert_eq!(main_pids.len(), 1, "{main_pids:?}");
    // Open connections: to the kubelet endpoint (node side), to the pod's server (pod side).
    let pod_netns = f.path("kubelet/netns").join(&uid);
    let open = || {
        let kubelet = f
            .node
            .sh("ss -Htn state established '( sport = :10250 )' | wc -l");
        let pod = Command::new("nsenter")
            .arg(format!("--net={}", pod_netns.display()))
            .args(["ss", "-Htn", "state", "established", "( sport = :8080 )"])
            .output()
            .unwrap();
        (kubelet.trim().to_owned(), text(&pod).0)
    };

    // 1. exec without a TTY: stdout, stderr, exit codes, the container's env, cwd, netns, cgroup.
    assert_eq!(
        f.ok(&["exec", "web", "--", "echo", "hello", "world"]),
        "hello world\n"
    );
    let out = f.kubectl(
        &["exec", "web", "--", "sh", "-c", "echo out; echo err >&2"],
        None,
    );
    assert_eq!(text(&out).0, "out\n");
    assert!(text(&out).1.contains("err"), "{:?}", text(&out));
    let out = f.kubectl(&["exec", "web", "--", "false"], None);
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    let out = f.kubectl(&["exec", "web", "--", "sh", "-c", "exit 3"], None);
    assert_eq!(out.status.code(), Some(3), "{:?}", text(&out));
    let out = f.kubectl(&["exec", "web", "--", "no-such-command-xyz"], None);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("no-such-command-xyz"),
        "{:?}",
        text(&out)
    );
    let env = f.ok(&["exec", "web", "--", "sh", "-c", "echo $GREETING; pwd"]);
    assert_eq!(env, format!("hi-from-env\n{}\n", www.display()));
    let ns = f.ok(&["exec", "web", "--", "readlink", "/proc/self/ns/net"]);
    let main_ns = std::fs::read_link(format!("/proc/{}/ns/net", main_pids[0])).unwrap();
    assert_eq!(ns.trim(), main_ns.to_string_lossy());
    let addrs = f.ok(&["exec", "web", "--", "ip", "-o", "addr"]);
    assert!(addrs.contains(&ip), "{addrs}");
    let cg = f.ok(&["exec", "web", "--", "cat", "/proc/self/cgroup"]);
    let main_cg = std::fs::read_to_string(format!("/proc/{}/cgroup", main_pids[0])).unwrap();
    assert_eq!(cg, main_cg);
    // A quiet command outlives kubectl's heartbeat deadline (pings every 5 s, 6 s for a pong).
    assert_eq!(
        f.ok(&["exec", "web", "--", "sh", "-c", "sleep 8; echo awake"]),
        "awake\n"
    );
    // stdin, closed at its end (v5.channel.k8s.io).
    let out = f.kubectl(
        &["exec", "-i", "web", "--", "sh", "-c", "cat; echo done"],
        Some("from-stdin\n"),
    );
    assert_eq!(text(&out).0, "from-stdin\ndone\n", "{:?}", text(&out));
    // A background child does not outlive its exec.
    f.ok(&["exec", "web", "--", "sh", "-c", "sleep 1000 & echo started"]);
    assert!(
        wait_until(Duration::from_secs(5), || f.pod_pids(&uid) == main_pids),
        "stray processes after exec: {:?} (container: {main_pids:?})",
        f.pod_pids(&uid)
    );
    // A client that goes away ends its command.
    let mut gone = f
        .kubectl_cmd(&["exec", "web", "--", "sleep", "1000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || f
        .pod_pids(&uid)
        .len()
        == 2));
    gone.kill().unwrap();
    gone.wait().unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || f.pod_pids(&uid) == main_pids),
        "exec outlived its client: {:?}",
        f.pod_pids(&uid)
    );

    // 2. exec with a TTY: kubectl on a terminal (script(1)), sizes sent on the resize channel.
    let kubeconfig = f.path("server/admin.kubeconfig");
    let kc = kubeconfig.display();
    let in_script = |input: &str, cmd: &str| {
        // script(1) gives kubectl a terminal; its input comes from the pipe, kept open long
        // enough for the session to end first.
        let sh = format!("({input}; sleep 5) | script -qec \"{cmd}\" /dev/null");
        let out = f.cp.command("sh").args(["-c", &sh]).output().unwrap();
        text(&out)
    };
    let (o, e) = in_script(
        "true",
        &format!(
            "stty rows 37 cols 101; kubectl --kubeconfig {kc} exec -it web -- \
             sh -c 'tty; stty size; exit 7'; echo rc=\\$?"
        ),
    );
    assert!(o.contains("/dev/pts/"), "{o:?} {e:?}");
    assert!(o.contains("37 101"), "{o:?} {e:?}");
    assert!(o.contains("rc=7"), "{o:?} {e:?}");
    // Input typed into an interactive shell on the terminal.
    let (o, e) = in_script(
        "sleep 2; printf 'echo typed-$((6*7))\\r'; sleep 1; printf 'exit 0\\r'",
        &format!("kubectl --kubeconfig {kc} exec -it web -- sh; echo rc=\\$?"),
    );
    assert!(o.contains("typed-42"), "{o:?} {e:?}");
    assert!(o.contains("rc=0"), "{o:?} {e:?}");

    // 3. port-forward: an HTTP request through the forwarded port; a closed port ends the session.
    let mut pf = ChildGuard(
        f.kubectl_cmd(&["port-forward", "pod/web", "18080:8080"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let fetch = |port: u16| {
        f.cp.command("curl")
            .args([
                "-sS",
                "--max-time",
                "5",
                &format!("http://127.0.0.1:{port}/index.html"),
            ])
            .output()
            .unwrap()
    };
    assert!(
        wait_until(Duration::from_secs(10), || fetch(18080).status.success()),
        "port-forward never served: {:?}",
        text(&fetch(18080))
    );
    for _ in 0..3 {
        assert_eq!(text(&fetch(18080)).0, "forwarded-ok\n");
    }
    // Throughput: 256 MiB through the forwarded port, and straight to the pod IP from the node
    // as the baseline (the same server either way).
    let big = std::fs::File::create(www.join("big")).unwrap();
    big.set_len(256 << 20).unwrap();
    let rate = |ns: &Netns, url: &str| {
        let o = ns
            .command("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{size_download} %{speed_download}",
                url,
            ])
            .output()
            .unwrap();
        let out = text(&o).0;
        let (size, speed) = out.split_once(' ').unwrap_or_else(|| panic!("{o:?}"));
        assert_eq!(size, (256u64 << 20).to_string(), "{o:?}");
        speed.parse::<f64>().unwrap() * 8.0 / 1e9
    };
    let forwarded = rate(&f.cp, "http://127.0.0.1:18080/big");
    let direct = rate(&f.node, &format!("http://{ip}:8080/big"));
    eprintln!("port-forward: {forwarded:.2} Gbit/s; direct to the pod IP: {direct:.2} Gbit/s");
    let live = open();
    assert_ne!(live.0, "0", "the live session is seen: {live:?}");
    let _ = pf.0.kill();
    let _ = pf.0.wait();
    // kubectl's fallback, plain SPDY/3.1 on the upgraded connection (no WebSocket).
    let mut spdy = ChildGuard(
        f.kubectl_cmd(&["port-forward", "pod/web", "18083:8080"])
            .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(
        wait_until(Duration::from_secs(10), || fetch(18083).status.success()),
        "port-forward over SPDY never served: {:?}",
        text(&fetch(18083))
    );
    assert_eq!(text(&fetch(18083)).0, "forwarded-ok\n");
    let _ = spdy.0.kill();
    let _ = spdy.0.wait();
    let mut closed = f
        .kubectl_cmd(&["port-forward", "pod/web", "18081:9"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        let o = fetch(18081);
        !o.status.success() && !text(&o).1.contains("Failed to connect")
    }));
    let ended = wait_until(Duration::from_secs(10), || {
        closed.try_wait().unwrap().is_some()
    });
    if !ended {
        let _ = closed.kill();
    }
    let out = closed.wait_with_output().unwrap();
    let (_, e) = text(&out);
    assert!(
        ended,
        "kubectl port-forward to a closed port kept running: {e}"
    );
    assert!(e.contains("error forwarding port 9"), "{e}");
    assert!(
        e.contains("connection refused") || e.contains("Connection refused"),
        "{e}"
    );

    // 4. cp both ways (exec + tar).
    let src = f.path("upload.txt");
    std::fs::write(&src, "copied-in\n").unwrap();
    let dest = f.path("www/uploaded.txt");
    f.ok(&[
        "cp",
        src.to_str().unwrap(),
        &format!("default/web:{}", dest.display()),
    ]);
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "copied-in\n");
    let back = f.path("downloaded.txt");
    f.ok(&[
        "cp",
        &format!("default/web:{}", www.join("index.html").display()),
        back.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "forwarded-ok\n");

    // The kubelet endpoint is TLS with a certificate from the cluster CA for the node's IP, and
    // admits only the API server's client certificate.
    let endpoint = format!("https://{NODE_IP}:10250");
    let logs = format!("{endpoint}/containerLogs/default/web/c");
    let pki = |n: &str| {
        f.path(&format!("server/pki/{n}"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    let curl = |args: &[&str]| {
        let o =
            f.cp.command("curl")
                .args(["-sS", "--max-time", "5", "--cacert", &pki("ca.crt")])
                .args(args)
                .output()
                .unwrap();
        (o.status.success(), text(&o).0, text(&o).1)
    };
    assert_eq!(curl(&[&format!("{endpoint}/healthz")]).1, "ok");
    let (_, body, _) = curl(&["-o", "/dev/null", "-w", "%{http_code}", &logs]);
    assert_eq!(body, "401", "no client certificate");
    let own = [f.path("kubelet.crt"), f.path("kubelet.key")];
    let (ok, _, err) = curl(&[
        "--cert",
        own[0].to_str().unwrap(),
        "--key",
        own[1].to_str().unwrap(),
        &logs,
    ]);
    assert!(
        !ok,
        "a server-only certificate is no client certificate: {err}"
    );
    let (ok, _, err) = curl(&[
        "--cert",
        &pki("apiserver-kubelet-client.crt"),
        "--key",
        &pki("apiserver-kubelet-client.key"),
        "-f",
        &logs,
    ]);
    assert!(ok, "the API server's client certificate is admitted: {err}");
    assert!(f
        .log("kubelet.log")
        .contains(&format!("kubelet endpoint on {endpoint}")));
    // kubectl logs goes the same way.
    assert!(f.ok(&["logs", "web"]).contains("GET /index.html"));

    // Bad input: a pod that does not exist, a pod that has exited.
    let out = f.kubectl(&["exec", "nope", "--", "true"], None);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("pods \"nope\" not found"),
        "{:?}",
        text(&out)
    );
    let done = json!({"nodeName": NODE, "restartPolicy": "Never",
        "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]});
    let out = f.kubectl(&["create", "-f", "-"], Some(&pod("done", done).to_string()));
    assert!(out.status.success(), "{:?}", text(&out));
    f.wait("pod/done", 30, |p| p["status"]["phase"] == "Succeeded");
    let out = f.kubectl(&["exec", "done", "--", "true"], None);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("completed pod"), "{:?}", text(&out));
    let out = f.kubectl(&["port-forward", "pod/done", "18082:80"], None);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("not running"), "{:?}", text(&out));
    assert_eq!(
        f.pod_pids(&uid),
        main_pids,
        "nothing left in the pod's cgroup"
    );
    // Every session is over: no connection to the kubelet endpoint is left open, and no
    // forwarded connection to the pod's server.
    assert!(
        wait_until(Duration::from_secs(10), || open()
            == ("0".to_owned(), String::new())),
        "streams left open: {:?}",
        open()
    );

    // A node identity may read pods but not exec into them.
    // (kubectl reads the node's token from its file through a kubeconfig: not in its argv.)
    let mut kc: Value =
        serde_json::from_slice(&std::fs::read(f.path("server/admin.kubeconfig")).unwrap()).unwrap();
    kc["users"][0]["user"] = json!({ "tokenFile": f.token_file });
    let node_kc = f.path("node.kubeconfig");
    std::fs::write(&node_kc, kc.to_string()).unwrap();
    let out = ferry_tests::output_with_stdin(
        f.cp.command("kubectl")
            .arg("--kubeconfig")
            .arg(&node_kc)
            .args(["exec", "web", "--", "true"]),
        None,
    );
    assert!(!out.status.success());
    assert!(text(&out).1.contains("forbidden"), "{:?}", text(&out));

    // The exec round trip, with `kubectl get` (kubectl's start, its GET of the pod) as the
    // baseline.
    let p50 = |args: &[&str]| {
        let mut times = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            f.ok(args);
            times.push(t.elapsed());
        }
        times.sort();
        (times[times.len() / 2], times[0], times[times.len() - 1])
    };
    let get = p50(&["get", "pod", "web", "-o", "name"]);
    let exec = p50(&["exec", "web", "--", "true"]);
    eprintln!(
        "kubectl exec web -- true: p50 {:?} (min {:?}, max {:?}); kubectl get pod: p50 {:?} (min {:?}, max {:?}); 20 runs each",
        exec.0, exec.1, exec.2, get.0, get.1, get.2
    );
    drop(f);
    root.assert_unchanged();
}
