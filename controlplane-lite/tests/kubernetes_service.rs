//! The `default/kubernetes` Service on a real `ferry-server`, checked with the real kubectl: its
//! ClusterIP, port and targetPort, its EndpointSlice and Endpoints holding the server's advertised
//! address; recreated when deleted, repaired when edited, left alone by the EndpointSlice
//! controller, following `--advertise-address` across a restart.

mod common;

use common::Server;
use serde_json::Value;
use std::time::Duration;

fn get(s: &Server, what: &[&str]) -> Option<Value> {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend(["-n", "default", "-o", "json"]);
    let out = s.kubectl(&args);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// Waits up to `secs` for `ok` on `get what`; returns the last object seen.
fn wait_for(s: &Server, what: &[&str], secs: u64, ok: impl Fn(&Value) -> bool) -> Value {
    let mut last = None;
    let done = ferry_tests::wait_until(Duration::from_secs(secs), || {
        last = get(s, what);
        last.as_ref().is_some_and(&ok)
    });
    assert!(
        done,
        "{what:?} never became as expected; last: {last:#?}\nserver log:\n{}",
        s.log()
    );
    last.unwrap_or_default()
}

fn slice_ips(v: &Value) -> Vec<String> {
    v["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["addresses"][0].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn kubernetes_service_is_created_kept_and_repaired() {
    let s = Server::start();
    let port = s.port;
    let svc = wait_for(&s, &["svc", "kubernetes"], 20, |_| true);
    assert_eq!(svc["spec"]["clusterIP"], "10.96.0.1", "{svc:#}");
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    let p = &svc["spec"]["ports"][0];
    assert_eq!(
        (&p["name"], &p["port"], &p["protocol"], &p["targetPort"]),
        (
            &Value::from("https"),
            &Value::from(443),
            &Value::from("TCP"),
            &Value::from(port)
        ),
        "{svc:#}"
    );
    assert!(svc["spec"].get("selector").is_none());
    assert_eq!(svc["metadata"]["labels"]["component"], "apiserver");

    let slice = wait_for(&s, &["endpointslice", "kubernetes"], 20, |_| true);
    assert_eq!(slice_ips(&slice), ["127.0.0.1"], "{slice:#}");
    assert_eq!(slice["ports"][0]["port"], port);
    assert_eq!(slice["ports"][0]["name"], "https");
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(
        slice["metadata"]["labels"],
        serde_json::json!({"kubernetes.io/service-name": "kubernetes"})
    );
    assert_eq!(slice["endpoints"][0]["conditions"]["ready"], true);
    let ep = wait_for(&s, &["endpoints", "kubernetes"], 20, |_| true);
    assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "127.0.0.1");
    assert_eq!(
        ep["metadata"]["labels"]["endpointslice.kubernetes.io/skip-mirror"],
        "true"
    );
    let by_label = s.ok(&[
        "get",
        "endpointslices",
        "-n",
        "default",
        "-l",
        "kubernetes.io/service-name=kubernetes",
        "--no-headers",
    ]);
    assert_eq!(by_label.lines().count(), 1, "{by_label}");

    // The EndpointSlice controller (running: default flags) leaves the slice alone.
    let rv = slice["metadata"]["resourceVersion"].clone();
    std::thread::sleep(Duration::from_secs(3));
    let again = get(&s, &["endpointslice", "kubernetes"]).unwrap();
    assert_eq!(
        again["metadata"]["resourceVersion"], rv,
        "the slice churns: {again:#}"
    );

    // Deleted: recreated, with the same ClusterIP.
    let uid = svc["metadata"]["uid"].clone();
    s.ok(&[
        "delete",
        "svc",
        "kubernetes",
        "-n",
        "default",
        "--wait=false",
    ]);
    let back = wait_for(&s, &["svc", "kubernetes"], 20, |v| {
        v["metadata"]["uid"] != uid
    });
    assert_eq!(back["spec"]["clusterIP"], "10.96.0.1");
    s.ok(&["delete", "endpointslice", "kubernetes", "-n", "default"]);
    let slice = wait_for(&s, &["endpointslice", "kubernetes"], 20, |_| true);
    assert_eq!(slice_ips(&slice), ["127.0.0.1"]);
    s.ok(&["delete", "endpoints", "kubernetes", "-n", "default"]);
    wait_for(&s, &["endpoints", "kubernetes"], 20, |_| true);

    // Edited: repaired.
    s.ok(&[
        "patch",
        "svc",
        "kubernetes",
        "-n",
        "default",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/ports/0/port","value":8443},{"op":"add","path":"/spec/selector","value":{"app":"x"}}]"#,
    ]);
    wait_for(&s, &["svc", "kubernetes"], 20, |v| {
        v["spec"]["ports"][0]["port"] == 443 && v["spec"].get("selector").is_none()
    });
    s.ok(&[
        "patch",
        "endpointslice",
        "kubernetes",
        "-n",
        "default",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/endpoints/0/addresses/0","value":"192.0.2.9"}]"#,
    ]);
    wait_for(&s, &["endpointslice", "kubernetes"], 20, |v| {
        slice_ips(v) == ["127.0.0.1"]
    });
    // A second slice claiming the Service goes.
    s.ok_stdin(
        &["create", "-f", "-"],
        r#"{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"kubernetes-extra","namespace":"default","labels":{"kubernetes.io/service-name":"kubernetes"}},"addressType":"IPv4","endpoints":[{"addresses":["192.0.2.1"]}],"ports":[{"name":"https","port":1,"protocol":"TCP"}]}"#,
    );
    let gone = ferry_tests::wait_until(Duration::from_secs(20), || {
        get(&s, &["endpointslice", "kubernetes-extra"]).is_none()
    });
    assert!(gone, "a foreign slice of the kubernetes Service stayed");
}

#[test]
fn kubernetes_endpoint_follows_the_advertise_address() {
    let mut s = Server::start();
    wait_for(&s, &["endpointslice", "kubernetes"], 20, |v| {
        slice_ips(v) == ["127.0.0.1"]
    });
    // Restart advertising another loopback address (the server still listens on 127.0.0.1:
    // kubectl keeps using that, the kubeconfig is pointed back at it).
    s.kill();
    s.extra = vec![
        "--advertise-address".into(),
        format!("127.0.0.2:{}", s.port),
        "--controllers".into(),
        "false".into(),
    ];
    s.spawn();
    let kc = s.kubeconfig();
    let text = std::fs::read_to_string(&kc).unwrap();
    assert!(
        text.contains("127.0.0.2"),
        "kubeconfig follows the advertise address"
    );
    std::fs::write(&kc, text.replace("127.0.0.2", "127.0.0.1")).unwrap();
    // At once the new address; the old one only until its Lease expires (15 s).
    wait_for(&s, &["endpointslice", "kubernetes"], 10, |v| {
        slice_ips(v).contains(&"127.0.0.2".to_owned())
    });
    wait_for(&s, &["endpointslice", "kubernetes"], 30, |v| {
        slice_ips(v) == ["127.0.0.2"]
    });
    wait_for(&s, &["endpoints", "kubernetes"], 10, |v| {
        v["subsets"][0]["addresses"]
            .as_array()
            .is_some_and(|a| a.len() == 1 && a[0]["ip"] == "127.0.0.2")
    });
    let leases = s.ok(&[
        "get",
        "leases",
        "-n",
        "kube-system",
        "-l",
        "ferry.dev/apiserver-endpoint",
        "--no-headers",
    ]);
    assert!(leases.contains("ferry-server-127.0.0.2-"), "{leases}");
}
