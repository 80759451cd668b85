//! API server benchmark: `cargo bench -p controlplane-lite --bench apiserver -- [--store
//! sqlite|etcd|both] [--controllers on|off|both] [--objects N] [--rounds N]`.
//!
//! Against a real `ferry-server` process (and, for etcd, a real etcd on loopback), through kube-rs,
//! in each configuration (store x controllers: `on` is the default server, which runs the
//! scheduler and controllers with their caches beside the API; `off` is `--controllers false`):
//! - creates/s with 10 concurrent clients;
//! - LIST latency of N pods (paged by 500, as kube-rs and kubectl do), median of 5;
//! - watch delivery latency p50/p99 with 100 watchers (time from sending a write to each watcher
//!   receiving its event: an upper bound, the write's own round trip included);
//! - resident memory of the server holding N pods + N services + N endpointslices.
//!
//! Each round measures every configuration once, in a rotated order, on a fresh server; every
//! figure is the median over rounds with its min–max. Then the scheduler / endpoint programming
//! step (default server, SQLite), also over rounds.
//!
//! Targets (from the issue): >= 2,000 creates/s embedded, watch p99 <= 50 ms, RSS <= 300 MB at
//! 10k of each. Figures are printed with the targets; nothing is asserted.

use ferry_tests::Spread;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SERVER: &str = env!("CARGO_BIN_EXE_ferry-server");

struct Proc(std::process::Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("port {port} never opened");
}

fn start_etcd(dir: &std::path::Path) -> (Proc, String) {
    let (c, p) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{c}");
    let child = Command::new("etcd")
        .args(["--name", "bench", "--data-dir"])
        .arg(dir.join("etcd"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args([
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{p}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{p}"),
        ])
        .args([
            "--initial-cluster",
            &format!("bench=http://127.0.0.1:{p}"),
            "--quota-backend-bytes",
            "4294967296",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd (scripts/setup.sh installs etcd-server)");
    wait_port(c);
    (Proc(child), url)
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "ranks"
    )]
    let i = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize - 1;
    v[i.min(v.len() - 1)]
}

/// Runs `work(i)` for i in 0..n from `clients` concurrent tasks, each taking the next index.
async fn concurrently<F, Fut>(n: usize, clients: usize, work: F)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (next, work) = (next.clone(), work.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                work(i).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// A kube-rs client from a server's data dir.
async fn client_of(dir: &std::path::Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(dir.join("admin.kubeconfig")).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(cfg).unwrap()
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "registry.example/app:1", "ports": [{"containerPort": 8080}]}]}})).unwrap()
}

/// One configuration's figures in one round.
#[derive(Debug)]
struct Figures {
    creates: f64,
    list_ms: f64,
    watch_p50: f64,
    watch_p99: f64,
    rss_mb: f64,
}

async fn run(store: &str, controllers: bool, n: usize) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut args = vec![
        "--data-dir".to_owned(),
        dir.path().to_str().unwrap().to_owned(),
        "--listen".to_owned(),
        format!("127.0.0.1:{port}"),
        "--controllers".to_owned(),
        controllers.to_string(),
    ];
    let _etcd = if store == "etcd" {
        let (p, url) = start_etcd(dir.path());
        args.extend([
            "--store".into(),
            "etcd".into(),
            "--etcd-endpoints".into(),
            url,
        ]);
        Some(p)
    } else {
        None
    };
    let server = Proc(
        Command::new(SERVER)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(port);
    let client = client_of(dir.path()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    // 1. creates/s, 10 concurrent clients.
    let start = Instant::now();
    {
        let pods = pods.clone();
        concurrently(n, 10, move |i| {
            let pods = pods.clone();
            async move {
                pods.create(&PostParams::default(), &pod(&format!("p{i:06}")))
                    .await
                    .unwrap();
            }
        })
        .await;
    }
    #[expect(clippy::cast_precision_loss, reason = "rates")]
    let creates = n as f64 / start.elapsed().as_secs_f64();

    // 2. LIST of n pods (paged), median of 5.
    let mut lists = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let mut lp = ListParams::default().limit(500);
        let mut count = 0;
        loop {
            let page = pods.list(&lp).await.unwrap();
            count += page.items.len();
            match page.metadata.continue_ {
                Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
                _ => break,
            }
        }
        assert_eq!(count, n);
        lists.push(t.elapsed().as_secs_f64() * 1000.0);
    }

    // 3. Watch delivery with 100 watchers.
    let rv = pods
        .list_metadata(&ListParams::default().limit(1))
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap_or_default();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let mut watchers = Vec::new();
    for _ in 0..100 {
        let (pods, tx, rv) = (pods.clone(), tx.clone(), rv.clone());
        watchers.push(tokio::spawn(async move {
            let mut s = pods
                .watch(&WatchParams::default().timeout(120), &rv)
                .await
                .unwrap()
                .boxed();
            while let Some(Ok(ev)) = s.next().await {
                if let WatchEvent::Added(p) = ev {
                    let _ = tx.send((p.metadata.name.unwrap_or_default(), Instant::now()));
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut lat = Vec::new();
    for i in 0..50 {
        let name = format!("w{i:03}");
        // Measured from when the write is sent: an upper bound that includes the create's own
        // round trip (watchers can see the event before the writer sees its response).
        let written = Instant::now();
        pods.create(&PostParams::default(), &pod(&name))
            .await
            .unwrap();
        let mut got = 0;
        while got < 100 {
            let Ok(Some((nm, at))) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await
            else {
                break;
            };
            if nm == name {
                lat.push(at.saturating_duration_since(written).as_secs_f64() * 1000.0);
                got += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for w in watchers {
        w.abort();
    }

    // 4. Memory with n pods + n services + n endpointslices.
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let eps: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    {
        let (svcs, eps) = (svcs.clone(), eps.clone());
        concurrently(n, 10, move |i| {
        let (svcs, eps) = (svcs.clone(), eps.clone());
        async move {
            let svc: Service = serde_json::from_value(serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("s{i:06}")}, "spec": {"selector": {"app": "bench-svc"}, "ports": [{"port": 80, "targetPort": 8080}]}})).unwrap();
            svcs.create(&PostParams::default(), &svc).await.unwrap();
            let ep: EndpointSlice = serde_json::from_value(serde_json::json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": format!("s{i:06}-x"), "labels": {"kubernetes.io/service-name": format!("s{i:06}")}}, "addressType": "IPv4", "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": true}}], "ports": [{"port": 8080, "protocol": "TCP"}]})).unwrap();
            eps.create(&PostParams::default(), &ep).await.unwrap();
        }
    })
    .await;
    }
    let rss = rss_mb(server.0.id());
    let f = Figures {
        creates,
        list_ms: pct(&mut lists, 50.0),
        watch_p50: pct(&mut lat.clone(), 50.0),
        watch_p99: pct(&mut lat, 99.0),
        rss_mb: rss,
    };
    println!(
        "  store={store:<7} controllers={:<3} creates/s={:>6.0}  list {n} pods (paged 500, median of 5)={:>7.1} ms  watch x100 p50={:>6.2} ms p99={:>6.2} ms  RSS with {n} pods+svcs+slices={:>6.1} MB",
        if controllers { "on" } else { "off" },
        f.creates, f.list_ms, f.watch_p50, f.watch_p99, f.rss_mb
    );
    f
}

/// Scheduling throughput (pods bound per second, `pending` pods over 3 nodes) and endpoint
/// programming latency (a pod readiness flip until its EndpointSlice shows it), on SQLite.
async fn controllers(pending: usize) -> (f64, f64, f64) {
    use k8s_openapi::api::core::v1::Node;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = Proc(
        Command::new(SERVER)
            .args([
                "--data-dir",
                dir.path().to_str().unwrap(),
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(port);
    let client = client_of(dir.path()).await;
    let nodes: Api<Node> = Api::all(client.clone());
    for i in 0..3 {
        let n: Node = serde_json::from_value(serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": format!("n{i}")},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "1000"}}})).unwrap();
        nodes.create(&PostParams::default(), &n).await.unwrap();
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let start = Instant::now();
    {
        let pods = pods.clone();
        concurrently(pending, 10, move |i| {
            let pods = pods.clone();
            async move {
                pods.create(&PostParams::default(), &pod(&format!("s{i:05}")))
                    .await
                    .unwrap();
            }
        })
        .await;
    }
    loop {
        let l = pods.list(&ListParams::default()).await.unwrap();
        if l.items
            .iter()
            .all(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "pods never all scheduled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sched = start.elapsed().as_secs_f64();
    // Endpoint programming latency.
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bench"}, "spec": {"selector": {"app": "bench"}, "ports": [{"port": 80, "targetPort": 8080}]}})).unwrap();
    svcs.create(&PostParams::default(), &svc).await.unwrap();
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let mut lat = Vec::new();
    for i in 0..20 {
        let ready = i % 2 == 0;
        let st = serde_json::json!({"status": {"phase": "Running", "podIP": "10.244.0.9", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
        let t = Instant::now();
        pods.patch_status(
            "s00000",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(st),
        )
        .await
        .unwrap();
        loop {
            let l = slices
                .list(&ListParams::default().labels("kubernetes.io/service-name=bench"))
                .await
                .unwrap();
            let seen = l.items.iter().flat_map(|s| s.endpoints.iter()).any(|e| {
                e.addresses[0] == "10.244.0.9"
                    && e.conditions.as_ref().and_then(|c| c.ready) == Some(ready)
            });
            if seen {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "slice never updated");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    drop(server);
    #[expect(clippy::cast_precision_loss, reason = "rates")]
    let rate = pending as f64 / sched;
    let (p50, p99) = (pct(&mut lat.clone(), 50.0), pct(&mut lat, 99.0));
    println!("  scheduler: {pending} pods over 3 nodes bound in {sched:.2} s ({rate:.0} pods/s, creation included); endpoint change -> slice p50={p50:.1} ms p99={p99:.1} ms");
    (sched, p50, p99)
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = arg("--objects")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let rounds: usize = arg("--rounds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let stores = match arg("--store").as_deref().unwrap_or("both") {
        "both" => vec!["sqlite", "etcd"],
        "sqlite" => vec!["sqlite"],
        "etcd" => vec!["etcd"],
        other => panic!("--store {other}: expected sqlite, etcd or both"),
    };
    let modes = match arg("--controllers").as_deref().unwrap_or("both") {
        "both" => vec![true, false],
        "on" => vec![true],
        "off" => vec![false],
        other => panic!("--controllers {other}: expected on, off or both"),
    };
    let configs: Vec<(&str, bool)> = stores
        .iter()
        .flat_map(|s| modes.iter().map(move |c| (*s, *c)))
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut figures: Vec<Vec<Figures>> = configs.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        println!("round {}:", round + 1);
        // Rotate the order so drift of the shared machine hits every configuration alike.
        for k in 0..configs.len() {
            let i = (k + round) % configs.len();
            let (store, ctl) = configs[i];
            figures[i].push(rt.block_on(run(store, ctl, n)));
        }
    }
    println!("\n{n} objects, {rounds} rounds, median [min-max]:");
    println!(
        "{:<26} {:>22} {:>22} {:>20} {:>20} {:>20}",
        "store, controllers",
        "creates/s (10 clients)",
        &format!("LIST {n} pods ms"),
        "watch p50 ms",
        "watch p99 ms",
        "server RSS MB"
    );
    for ((store, ctl), f) in configs.iter().zip(&figures) {
        println!(
            "{:<26} {:>22} {:>22} {:>20} {:>20} {:>20}",
            format!("{store}, {}", if *ctl { "on (default)" } else { "off" }),
            format!("{:.0}", Spread::over(f, |x| x.creates)),
            format!("{:.0}", Spread::over(f, |x| x.list_ms)),
            format!("{:.1}", Spread::over(f, |x| x.watch_p50)),
            format!("{:.1}", Spread::over(f, |x| x.watch_p99)),
            format!("{:.0}", Spread::over(f, |x| x.rss_mb)),
        );
    }
    if let Some(i) = configs.iter().position(|c| *c == ("sqlite", true)) {
        let f = &figures[i];
        let (c, p99, rss) = (
            Spread::over(f, |x| x.creates).median,
            Spread::over(f, |x| x.watch_p99).median,
            Spread::over(f, |x| x.rss_mb).median,
        );
        println!(
            "targets (sqlite, default server, medians): creates/s >= 2000: {}; watch p99 <= 50 ms: {}; RSS <= 300 MB (at 10k): {}",
            if c >= 2000.0 { "met" } else { "MISSED" },
            if p99 <= 50.0 { "met" } else { "MISSED" },
            if rss <= 300.0 { "met" } else { "MISSED" }
        );
    }
    if stores.contains(&"sqlite") {
        println!("\nscheduler and endpoint programming (sqlite, default server):");
        let runs: Vec<(f64, f64, f64)> =
            (0..rounds).map(|_| rt.block_on(controllers(500))).collect();
        println!(
            "500 pods bound in {:.2} s; endpoint change -> slice p50 {:.1} ms, p99 {:.1} ms (target 100 ms); median [min-max] of {rounds}",
            Spread::over(&runs, |r| r.0),
            Spread::over(&runs, |r| r.1),
            Spread::over(&runs, |r| r.2)
        );
    }
}
