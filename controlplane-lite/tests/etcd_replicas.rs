//! Two `ferry-server` replicas on one real etcd: a consistent view, and each other's writes
//! delivered to watchers. This is how Ferry scales past one machine.

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
        assert!(!ci, "etcd is not installed (scripts/setup.sh installs etcd-server) and CI=true forbids skipping");
        panic!("etcd is not installed: run scripts/setup.sh");
    };
    let (client, peer) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{client}");
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
            &format!("http://127.0.0.1:{peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
        ])
        .args([
            "--initial-cluster",
            &format!("ferry-test=http://127.0.0.1:{peer}"),
        ])
        .args(["--experimental-watch-progress-notify-interval", "5s"])
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

#[test]
fn two_replicas_share_one_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let (_etcd, url) = etcd(dir.path());
    let prefix = format!("/ferry-{}", std::process::id());
    let a = Server::start_with(&[
        "--store",
        "etcd",
        "--etcd-endpoints",
        &url,
        "--etcd-prefix",
        &prefix,
    ]);
    // Replica B shares A's identity (tokens, CA) as replicas behind one address would.
    let b_dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        a.dir.path().join("tokens.json"),
        b_dir.path().join("tokens.json"),
    )
    .unwrap();
    std::fs::create_dir_all(b_dir.path().join("pki")).unwrap();
    for f in ["ca.crt", "ca.key"] {
        std::fs::copy(
            a.dir.path().join("pki").join(f),
            b_dir.path().join("pki").join(f),
        )
        .unwrap();
    }
    let mut b = Server {
        child: None,
        dir: b_dir,
        port: free_port(),
        extra: a.extra.clone(),
    };
    b.spawn();

    // B watches; A writes.
    let mut watcher = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(b.kubeconfig())
        .args(["get", "configmaps", "-w", "--request-timeout=20s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let cm = |n: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {n}}}\ndata: {{k: v}}\n")
    };
    a.ok_stdin(&["create", "-f", "-"], &cm("from-a"));
    b.ok_stdin(&["create", "-f", "-"], &cm("from-b"));
    std::thread::sleep(Duration::from_millis(800));
    let _ = watcher.kill();
    let seen = String::from_utf8_lossy(&watcher.wait_with_output().unwrap().stdout).into_owned();
    assert!(
        seen.contains("from-a") && seen.contains("from-b"),
        "B's watcher saw both writes: {seen}"
    );
    // Both replicas list the same objects at the same revision.
    let la: serde_json::Value =
        serde_json::from_str(&a.ok(&["get", "configmaps", "-o", "json"])).unwrap();
    let lb: serde_json::Value =
        serde_json::from_str(&b.ok(&["get", "configmaps", "-o", "json"])).unwrap();
    assert_eq!(la["items"], lb["items"]);
    // A write through B conflicts with a stale read through A.
    let stale = a.ok(&["get", "configmap", "from-a", "-o", "json"]);
    b.ok(&["label", "configmap", "from-a", "x=1"]);
    let err = a.fails(&["replace", "-f", "-"], Some(&stale));
    assert!(
        err.contains("modified") || err.contains("Conflict"),
        "{err}"
    );
    // Service IPs come from one allocator: two services on two replicas never share one.
    let svc = |n: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {n}}}\nspec:\n  ports: [{{port: 80}}]\n")
    };
    for i in 0..5 {
        a.ok_stdin(&["create", "-f", "-"], &svc(&format!("sa{i}")));
        b.ok_stdin(&["create", "-f", "-"], &svc(&format!("sb{i}")));
    }
    let list: serde_json::Value =
        serde_json::from_str(&a.ok(&["get", "svc", "-o", "json"])).unwrap();
    let mut ips: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["spec"]["clusterIP"].as_str().unwrap())
        .collect();
    ips.sort_unstable();
    let n = ips.len();
    ips.dedup();
    assert_eq!(ips.len(), n, "duplicate cluster IPs");
}
