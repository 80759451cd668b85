//! The Eviction API (`pods/eviction`) against a real `ferry-server` with the real kubectl:
//! `kubectl drain` evicts (not deletes) the node's pods, and the raw API answers as
//! kube-apiserver's does: 201 Success, a dry run that changes nothing, 404 for a missing pod, 400
//! for a name that is not the URL's or a body that is not an Eviction, 409 for a failed
//! precondition.

mod common;

use common::Server;

fn pod(name: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  containers: [{{name: c, image: busybox}}]\n"
    )
}

fn eviction(name: &str, delete_options: &str) -> String {
    format!(
        r#"{{"apiVersion":"policy/v1","kind":"Eviction","metadata":{{"name":"{name}","namespace":"default"}}{delete_options}}}"#
    )
}

fn exists(s: &Server, name: &str) -> bool {
    s.kubectl(&["get", "pod", name]).status.success()
}

#[test]
fn drain_evicts_and_the_api_answers_like_kube_apiserver() {
    let s = Server::start();
    s.ok_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n",
    );
    // Discovery lists the subresource, so kubectl uses it.
    let res = s.ok(&["get", "--raw", "/api/v1"]);
    let v: serde_json::Value = serde_json::from_str(&res).unwrap();
    let ev = v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pods/eviction")
        .expect("pods/eviction in discovery");
    assert_eq!(ev["kind"], "Eviction");
    assert_eq!(ev["group"], "policy");
    assert_eq!(ev["verbs"], serde_json::json!(["create"]));

    let raw = |name: &str, body: &str| {
        s.kubectl_stdin(
            &[
                "create",
                "--raw",
                &format!("/api/v1/namespaces/default/pods/{name}/eviction"),
                "-f",
                "-",
            ],
            Some(body),
        )
    };
    let stderr = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();

    s.ok_stdin(&["create", "-f", "-"], &pod("a", "n1"));
    // A dry run evicts nothing.
    let o = raw(
        "a",
        &eviction("a", r#","deleteOptions":{"dryRun":["All"]}"#),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(exists(&s, "a"), "a dry-run eviction deleted the pod");
    // Name mismatch, wrong kind, failed precondition, missing pod.
    let o = raw("a", &eviction("b", ""));
    assert!(
        stderr(&o).contains("name in URL does not match name in Eviction object"),
        "{}",
        stderr(&o)
    );
    let o = raw(
        "a",
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"}}"#,
    );
    assert!(
        stderr(&o).contains("must be a policy/v1 Eviction"),
        "{}",
        stderr(&o)
    );
    let o = raw(
        "a",
        &eviction(
            "a",
            r#","deleteOptions":{"preconditions":{"uid":"not-its-uid"}}"#,
        ),
    );
    assert!(stderr(&o).contains("Precondition failed"), "{}", stderr(&o));
    assert!(exists(&s, "a"), "a refused eviction deleted the pod");
    let o = raw("ghost", &eviction("ghost", ""));
    assert!(
        stderr(&o).contains("NotFound") || stderr(&o).contains("not found"),
        "{}",
        stderr(&o)
    );
    // An allowed eviction: 201 Success, the pod deleted.
    let out = String::from_utf8_lossy(
        &raw(
            "a",
            &eviction("a", r#","deleteOptions":{"gracePeriodSeconds":0}"#),
        )
        .stdout,
    )
    .into_owned();
    let st: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    assert_eq!(st["status"], "Success", "{out}");
    assert_eq!(st["code"], 201, "{out}");
    ferry_tests::wait_until(std::time::Duration::from_secs(10), || !exists(&s, "a"));
    assert!(!exists(&s, "a"), "the evicted pod is still there");

    // kubectl drain: cordons the node and evicts its pods through the API.
    s.ok_stdin(&["create", "-f", "-"], &pod("b", "n1"));
    s.ok_stdin(&["create", "-f", "-"], &pod("c", "n1"));
    let out = s.ok(&[
        "drain",
        "n1",
        "--force",
        "--grace-period=0",
        "--timeout=30s",
    ]);
    assert!(out.contains("pod/b evicted"), "{out}");
    assert!(out.contains("pod/c evicted"), "{out}");
    assert!(!exists(&s, "b") && !exists(&s, "c"));
    let node = s.ok(&["get", "node", "n1", "-o", "jsonpath={.spec.unschedulable}"]);
    assert_eq!(node.trim(), "true");
}
