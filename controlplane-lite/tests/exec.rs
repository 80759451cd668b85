//! ferry-server's side of `pods/exec`, `pods/attach` and `pods/portforward`, without a kubelet:
//! what it refuses before relaying an upgrade (no upgrade, a node identity, an unbound or
//! finished pod, an unknown container, other methods) and how it fails when the kubelet cannot be
//! reached or does not speak TLS with a certificate from the cluster CA. The relay itself, with
//! the real kubelet and kubectl, is `kubelet/tests/stream.rs`.

mod common;

use common::{free_port, Server};
use serde_json::Value;
use std::io::{Read as _, Write as _};
use std::process::Command;

/// `curl` of `path` with `token` and, when `upgrade`, WebSocket upgrade headers as kubectl sends
/// them; returns (HTTP code, body).
fn call(s: &Server, method: &str, path: &str, token: &str, upgrade: bool) -> (u16, Value) {
    // The token reaches curl in a 0600 header file, not on its command line.
    let header = s
        .dir
        .path()
        .join(format!("{}.hdr", ferry_tests::unique("auth")));
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&header)
            .and_then(|mut f| writeln!(f, "Authorization: Bearer {token}"))
            .unwrap();
    }
    let mut cmd = Command::new("curl");
    cmd.args(["-sk", "--http1.1", "--max-time", "10", "-X", method])
        .args(["-w", "\n%{http_code}", "-H"])
        .arg(format!("@{}", header.display()));
    if upgrade {
        for h in [
            "Connection: Upgrade",
            "Upgrade: websocket",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Protocol: v5.channel.k8s.io,v4.channel.k8s.io",
        ] {
            cmd.args(["-H", h]);
        }
    }
    let out = cmd.arg(format!("{}{path}", s.url())).output().unwrap();
    let _ = std::fs::remove_file(&header);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (
        code.parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())),
    )
}

fn pod(name: &str, node: Option<&str>) -> String {
    let node = node.map_or(String::new(), |n| format!("  nodeName: {n}\n"));
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{node}  containers:\n  - name: c\n    image: busybox\n"
    )
}

/// Registers node `name` whose kubelet endpoint is 127.0.0.1:`port`.
fn node(s: &Server, name: &str, port: u16) {
    s.ok_stdin(
        &["create", "-f", "-"],
        &format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n"),
    );
    let status = format!(
        r#"{{"status":{{"addresses":[{{"type":"InternalIP","address":"127.0.0.1"}}],"daemonEndpoints":{{"kubeletEndpoint":{{"Port":{port}}}}}}}}}"#
    );
    s.ok(&[
        "patch",
        "node",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status,
    ]);
}

fn message(v: &Value) -> String {
    v["message"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn streams_are_checked_before_the_kubelet_is_dialed_and_need_its_tls() {
    let s = Server::start();
    let admin = s.admin_token();
    let exec = "/api/v1/namespaces/default/pods/web/exec?command=true&stdout=true";

    // Unknown pod.
    let (code, v) = call(&s, "GET", exec, &admin, true);
    assert_eq!((code, v["reason"].as_str()), (404, Some("NotFound")), "{v}");

    // Not an upgrade.
    s.ok_stdin(&["create", "-f", "-"], &pod("web", None));
    let (code, v) = call(&s, "GET", exec, &admin, false);
    assert_eq!(code, 400, "{v}");
    assert!(message(&v).contains("Upgrade request required"), "{v}");

    // Not bound to a node yet.
    let (code, v) = call(&s, "GET", exec, &admin, true);
    assert_eq!(code, 400, "{v}");
    assert!(message(&v).contains("does not have a host assigned"), "{v}");

    // A node identity may not exec, port-forward or attach, with either method.
    let node_token = s.node_token("n1");
    for (method, path) in [
        ("GET", exec.to_owned()),
        ("POST", exec.to_owned()),
        (
            "GET",
            "/api/v1/namespaces/default/pods/web/portforward".to_owned(),
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods/web/attach?stdout=true".to_owned(),
        ),
    ] {
        let (code, v) = call(&s, method, &path, &node_token, true);
        assert_eq!(
            (code, v["reason"].as_str()),
            (403, Some("Forbidden")),
            "{method} {path}: {v}"
        );
    }
    // Other methods on the subresource.
    let (code, v) = call(&s, "PUT", exec, &admin, true);
    assert_eq!(code, 405, "{v}");

    // Bound to a node whose kubelet is not listening.
    let closed = free_port();
    node(&s, "n1", closed);
    s.ok_stdin(&["create", "-f", "-"], &pod("bound", Some("n1")));
    let bound = "/api/v1/namespaces/default/pods/bound/exec?command=true&stdout=true";
    let (code, v) = call(&s, "GET", bound, &admin, true);
    assert_eq!(code, 503, "{v}");
    assert!(
        message(&v).contains(&format!(
            "error dialing the kubelet of node n1 (127.0.0.1:{closed})"
        )),
        "{v}"
    );
    // An unknown container is refused first.
    let (code, v) = call(&s, "GET", &format!("{bound}&container=nope"), &admin, true);
    assert_eq!(code, 400, "{v}");
    assert!(
        message(&v).contains("container nope is not valid for pod bound"),
        "{v}"
    );

    // A "kubelet" without TLS (plain HTTP, as the log hop once was) is not talked to.
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let plain_port = plain.local_addr().unwrap().port();
    let served = std::thread::spawn(move || {
        let (mut c, _) = plain.accept().unwrap();
        let mut buf = [0u8; 1024];
        let _ = c.read(&mut buf);
        let _ = c.write_all(b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
    });
    node(&s, "n2", plain_port);
    s.ok_stdin(&["create", "-f", "-"], &pod("plain", Some("n2")));
    let (code, v) = call(
        &s,
        "GET",
        "/api/v1/namespaces/default/pods/plain/exec?command=true&stdout=true",
        &admin,
        true,
    );
    assert_eq!(code, 503, "{v}");
    assert!(message(&v).contains("kubelet of node n2"), "{v}");
    served.join().unwrap();
    // kubectl logs takes the same hop.
    let err = s.fails(&["logs", "bound"], None);
    assert!(
        err.contains("error dialing the kubelet of node n1"),
        "{err}"
    );

    // A finished pod.
    s.ok(&[
        "patch",
        "pod",
        "bound",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Succeeded"}}"#,
    ]);
    let (code, v) = call(&s, "GET", bound, &admin, true);
    assert_eq!(code, 400, "{v}");
    assert!(
        message(&v).contains(
            "cannot exec into a container in a completed pod; current phase is Succeeded"
        ),
        "{v}"
    );
    let (code, v) = call(
        &s,
        "GET",
        "/api/v1/namespaces/default/pods/bound/portforward",
        &admin,
        true,
    );
    assert_eq!(code, 400, "{v}");
    assert!(
        message(&v).contains("unable to forward port because pod is not running"),
        "{v}"
    );

    // Discovery lists the subresources as upstream does.
    let d: Value = serde_json::from_str(&s.ok(&["get", "--raw", "/api/v1"])).unwrap();
    for (sub, kind) in [
        ("pods/exec", "PodExecOptions"),
        ("pods/attach", "PodAttachOptions"),
        ("pods/portforward", "PodPortForwardOptions"),
    ] {
        let r = d["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == sub)
            .unwrap_or_else(|| panic!("{sub} not in discovery"));
        assert_eq!(r["kind"], kind);
        assert_eq!(r["verbs"], serde_json::json!(["create", "get"]));
    }
}
