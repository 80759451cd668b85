//! `ferry bench startup`: pod startup through a whole cluster. `ferry up --nodes N` (VXLAN), then
//! pods created through the API with a bounded number of requests in flight, each timed from its
//! create request to Running + Ready with an IP (seen through a watch), split into create -> bound
//! (scheduler) and bound -> ready (kubelet: sandbox, CNI, process, status). Several rounds; each
//! figure is the median over rounds with its min–max. Targets (issue #4): p50 <= 300 ms,
//! p99 <= 1 s on a 2-core machine; 3 nodes Ready in <= 10 s. The upstream SLO is p99 <= 5 s.

use super::{bin_dir, check_interrupt};
use anyhow::{bail, ensure, Context as _, Result};
use ferry_tests::{percentile, Spread};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `ferry bench startup` flags.
#[derive(Debug, clap::Args)]
pub(crate) struct StartupArgs {
    /// Pods per round.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pods: u32,
    /// Rounds (pods of a round are deleted before the next).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    rounds: u32,
    /// Create requests in flight.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=200))]
    concurrency: u32,
    /// Nodes of the cluster it brings up.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    nodes: u32,
}

/// The cluster of this run: `ferry down` on drop, also after an error or Ctrl-C.
#[derive(Debug)]
struct Cluster {
    ferry: PathBuf,
    name: String,
    state: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let out = Command::new(&self.ferry)
            .args(["down", "--name", &self.name, "--state-dir"])
            .arg(self.state.path())
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "ferry bench startup: ferry down --name {} failed: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("ferry bench startup: running ferry down: {e}"),
        }
    }
}

fn ready(p: &Pod) -> bool {
    let Some(st) = &p.status else { return false };
    st.phase.as_deref() == Some("Running")
        && st.pod_ip.is_some()
        && st
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// One round's figures.
#[derive(Debug)]
struct Round {
    p50: f64,
    p99: f64,
    sched_p50: f64,
    kubelet_p50: f64,
    pods_per_s: f64,
}

type Times = Arc<Mutex<HashMap<String, Instant>>>;

fn lock(m: &Times) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn round(pods: &Api<Pod>, args: &StartupArgs, round: u32) -> Result<Round> {
    let n = args.pods as usize;
    let (created, bound, done): (Times, Times, Times) = Default::default();
    let w = {
        let (bound, done, pods) = (bound.clone(), done.clone(), pods.clone());
        tokio::spawn(async move {
            let cfg = watcher::Config::default().labels("bench=startup");
            let mut s = watcher(pods, cfg).boxed();
            while let Ok(Some(ev)) = s.try_next().await {
                let now = Instant::now();
                let (watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = ev else {
                    continue;
                };
                let name = p.metadata.name.clone().unwrap_or_default();
                if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                    lock(&bound).entry(name.clone()).or_insert(now);
                }
                if ready(&p) {
                    lock(&done).entry(name).or_insert(now);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let (pods, created) = (pods.clone(), created.clone());
            async move {
                let name = format!("startup-{round}-{i}");
                let pod: Pod = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name, "labels": {"bench": "startup"}},
                    "spec": {"terminationGracePeriodSeconds": 0, "containers": [
                        {"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}
                }))?;
                lock(&created).insert(name, Instant::now());
                pods.create(&PostParams::default(), &pod).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(args.concurrency as usize)
        .try_collect::<Vec<()>>()
        .await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while lock(&done).len() < n && Instant::now() < deadline {
        check_interrupt()?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.abort();
    let (created, bound, done) = (
        lock(&created).clone(),
        lock(&bound).clone(),
        lock(&done).clone(),
    );
    ensure!(
        done.len() == n,
        "only {} of {n} pods became ready within 120 s",
        done.len()
    );
    let ms = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64() * 1e3;
    let sorted = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v
    };
    let total = sorted(
        created
            .iter()
            .filter_map(|(k, c)| Some(ms(*c, *done.get(k)?)))
            .collect(),
    );
    let sched = sorted(
        created
            .iter()
            .filter_map(|(k, c)| Some(ms(*c, *bound.get(k)?)))
            .collect(),
    );
    let kubelet = sorted(
        done.iter()
            .filter_map(|(k, d)| Some(ms(*bound.get(k)?, *d)))
            .collect(),
    );
    let last = done.values().max().copied().unwrap_or(start);
    #[expect(clippy::cast_precision_loss, reason = "pod counts far below 2^52")]
    let pods_per_s = n as f64 / last.duration_since(start).as_secs_f64();
    let r = Round {
        p50: percentile(&total, 50.0),
        p99: percentile(&total, 99.0),
        sched_p50: percentile(&sched, 50.0),
        kubelet_p50: percentile(&kubelet, 50.0),
        pods_per_s,
    };
    println!(
        "round {}: create->ready p50 {:.0} ms p99 {:.0} ms | create->bound p50 {:.0} ms | \
         bound->ready p50 {:.0} ms p99 {:.0} ms | {:.0} pods/s",
        round + 1,
        r.p50,
        r.p99,
        r.sched_p50,
        r.kubelet_p50,
        percentile(&kubelet, 99.0),
        r.pods_per_s
    );
    pods.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("bench=startup"),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pods
        .list(&ListParams::default().labels("bench=startup"))
        .await?
        .items
        .is_empty()
    {
        check_interrupt()?;
        if Instant::now() >= deadline {
            bail!("the round's pods were not deleted within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(r)
}

/// Runs the benchmark and prints its figures.
pub(crate) fn run(args: &StartupArgs) -> Result<()> {
    let dir = bin_dir()?;
    for b in ["ferry-server", "ferry-kubelet", "ferry-agent", "ferry-cni"] {
        ensure!(
            dir.join(b).is_file(),
            "{} not found: build the workspace binaries (`cargo build --release --bins`)",
            dir.join(b).display()
        );
    }
    let cluster = Cluster {
        ferry: std::env::current_exe().context("locating the ferry executable")?,
        name: format!("fb{}", std::process::id() % 100_000),
        state: tempfile::tempdir().context("creating the state directory")?,
    };
    let t0 = Instant::now();
    let up = Command::new(&cluster.ferry)
        .args([
            "up",
            "--api-port",
            "0",
            "--backend",
            "vxlan",
            "--name",
            &cluster.name,
        ])
        .args(["--nodes", &args.nodes.to_string(), "--state-dir"])
        .arg(cluster.state.path())
        .output()
        .context("running ferry up")?;
    let up_secs = t0.elapsed().as_secs_f64();
    ensure!(
        up.status.success(),
        "ferry up failed:\n{}{}",
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr)
    );
    let kubeconfig = cluster.state.path().join(&cluster.name).join("kubeconfig");
    println!(
        "ferry up --nodes {}: every node Ready in {up_secs:.2} s (one bring-up; target <= 10 s)",
        args.nodes
    );
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let rounds = rt.block_on(async {
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig)?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        let pods: Api<Pod> = Api::namespaced(kube::Client::try_from(cfg)?, "default");
        let mut rounds = Vec::new();
        for r in 0..args.rounds {
            rounds.push(round(&pods, args, r).await?);
        }
        anyhow::Ok(rounds)
    })?;
    println!(
        "pod startup, {} pods over {} nodes, {} concurrent creates, {} rounds, median [min-max]:",
        args.pods, args.nodes, args.concurrency, args.rounds
    );
    println!(
        "  create->ready p50   {:.0} ms (target <= 300)",
        Spread::over(&rounds, |r| r.p50)
    );
    println!(
        "  create->ready p99   {:.0} ms (target <= 1000)",
        Spread::over(&rounds, |r| r.p99)
    );
    println!(
        "  create->bound p50   {:.0} ms",
        Spread::over(&rounds, |r| r.sched_p50)
    );
    println!(
        "  bound->ready p50    {:.0} ms",
        Spread::over(&rounds, |r| r.kubelet_p50)
    );
    println!(
        "  throughput          {:.0} pods/s",
        Spread::over(&rounds, |r| r.pods_per_s)
    );
    Ok(())
}
