//! The `kubernetes` Service's endpoints with two `ferry-server` replicas on one real etcd: both
//! advertised addresses are listed (each replica renews its Lease), the replicas agree (the slice
//! does not churn), and a replica that stops leaves the slice once its Lease expires.

mod common;

use common::{free_port, Server};
use ferry_tests::ChildGuard;
use std::process::{Command, Stdio};
use std::time::Duration;

fn etcd(dir: &std::path::Path) -> (ChildGuard, String) {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let bin = ["/usr/bin/etcd", "/usr/local/bin/etcd"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(bin) = bin else {
        assert!(
            !ci,
            "etcd is not installed (scripts/setup.sh installs etcd-server) and CI=true forbids skipping"
        );
        panic!("etcd is not installed: run scripts/setup.sh");
    };
    let (client, peer) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new(bin)
        .args(["--name", "ferry-test", "--data-dir"])
        .arg(dir.join("etcd"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args(["--initial-cluster", &format!("ferry-test={peer_url}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let up = ferry_tests::wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", client)).is_ok()
    });
    assert!(up, "etcd did not start");
    (ChildGuard(child), url)
}

fn slice(s: &Server) -> serde_json::Value {
    serde_json::from_str(&s.ok(&[
        "get",
        "endpointslice",
        "kubernetes",
        "-n",
        "default",
        "-o",
        "json",
    ]))
    .unwrap()
}

fn ips(v: &serde_json::Value) -> Vec<String> {
    v["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["addresses"][0].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn two_replicas_list_both_agree_and_a_stopped_one_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let (_etcd, url) = etcd(dir.path());
    let prefix = format!("/ferry-k8s-svc-{}", std::process::id());
    let store = [
        "--store",
        "etcd",
        "--etcd-endpoints",
        &url,
        "--etcd-prefix",
        &prefix,
    ];
    let a = Server::start_with(&store);
    // B advertises another loopback address on A's port (replicas behind one port, as upstream
    // assumes); it listens on its own port, and kubectl talks to A only.
    let mut extra: Vec<String> = store.iter().map(|s| (*s).to_owned()).collect();
    extra.extend([
        "--advertise-address".to_owned(),
        format!("127.0.0.2:{}", a.port),
        "--controllers".to_owned(),
        "false".to_owned(),
    ]);
    let mut b = Server {
        child: None,
        dir: tempfile::tempdir().unwrap(),
        port: free_port(),
        extra,
    };
    b.spawn();

    let both = ferry_tests::wait_until(Duration::from_secs(20), || {
        ips(&slice(&a)) == ["127.0.0.1", "127.0.0.2"]
    });
    assert!(
        both,
        "slice: {:#}\nA:\n{}\nB:\n{}",
        slice(&a),
        a.log(),
        b.log()
    );
    // The replicas agree: no write for a while (each renews its Lease every 5 s meanwhile).
    let rv = slice(&a)["metadata"]["resourceVersion"].clone();
    std::thread::sleep(Duration::from_secs(6));
    let now = slice(&a);
    assert_eq!(now["metadata"]["resourceVersion"], rv, "churn: {now:#}");

    // B stops: gone from the slice once its Lease (15 s) expires.
    b.kill();
    let gone =
        ferry_tests::wait_until(Duration::from_secs(30), || ips(&slice(&a)) == ["127.0.0.1"]);
    assert!(gone, "slice: {:#}", slice(&a));
}
