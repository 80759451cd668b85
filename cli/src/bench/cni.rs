//! `ferry bench cni`: `ferry-cni` against Debian's reference `bridge` + `host-local`, side by side
//! in one run, on the same kernel, with the same bridge and subnet settings.
//!
//! Measured per implementation: ADD and DEL latency (p50/p99/mean) over serial pods, and the wall
//! time of concurrent ADDs on a fresh bridge. Each round builds a fresh node namespace and fresh
//! pod namespaces (not timed) and invokes the binaries the way a runtime does (environment +
//! config on stdin, process started inside the node namespace). Rounds alternate the order
//! (A B B A ...) so drift hits both; every figure is the median over rounds with its min–max, and
//! the ratios to the reference are computed per round.

use super::{bin_dir, check_interrupt};
use anyhow::{bail, Context as _, Result};
use ferry_tests::stats::{mean, percentile_of};
use ferry_tests::{Netns, Spread};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Where Debian's containernetworking-plugins package installs the reference plugins.
const REFERENCE_DIR: &str = "/usr/lib/cni";

/// `ferry bench cni` flags.
#[derive(Debug, clap::Args)]
pub(crate) struct CniArgs {
    /// Serial pods per round (ADD each, then DEL each).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pods: u32,
    /// Concurrent ADDs on a fresh bridge per round.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=250))]
    concurrent: u32,
    /// Measured rounds per implementation (after one small warm-up round each).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    /// Exit non-zero when a target is missed.
    #[arg(long)]
    strict: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Impl {
    Ferry,
    Reference,
}

impl Impl {
    fn name(self) -> &'static str {
        match self {
            Impl::Ferry => "ferry-cni",
            Impl::Reference => "bridge+host-local",
        }
    }

    fn conf(self, data_dir: &str) -> Vec<u8> {
        let ipam = match self {
            Impl::Ferry => serde_json::json!({"subnet": "10.60.0.0/22", "dataDir": data_dir}),
            Impl::Reference => serde_json::json!({
                "type": "host-local", "subnet": "10.60.0.0/22", "dataDir": data_dir
            }),
        };
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "bench",
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": true,
            "isDefaultGateway": true,
            "hairpinMode": true,
            "mtu": 1500,
            "ipam": ipam,
        })
        .to_string()
        .into_bytes()
    }
}

/// The plugin binaries, checked once before anything is created.
#[derive(Debug)]
struct Plugins {
    ferry: PathBuf,
    reference: PathBuf,
}

impl Plugins {
    fn find() -> Result<Plugins> {
        let ferry = bin_dir()?.join("ferry-cni");
        if !ferry.is_file() {
            bail!(
                "{} not found: build the workspace binaries (`cargo build --release --bins`)",
                ferry.display()
            );
        }
        let reference = PathBuf::from(REFERENCE_DIR).join("bridge");
        for p in [&reference, &PathBuf::from(REFERENCE_DIR).join("host-local")] {
            if !p.is_file() {
                bail!(
                    "{} not found: the reference plugins come with Debian's \
                     containernetworking-plugins (scripts/setup.sh installs it)",
                    p.display()
                );
            }
        }
        Ok(Plugins { ferry, reference })
    }

    fn binary(&self, which: Impl) -> &PathBuf {
        match which {
            Impl::Ferry => &self.ferry,
            Impl::Reference => &self.reference,
        }
    }
}

/// One invocation as a runtime makes it; its wall time, process start included.
fn invoke(
    plugins: &Plugins,
    node: &Netns,
    which: Impl,
    cmd: &str,
    cid: &str,
    pod: &Netns,
    conf: &[u8],
) -> Result<Duration> {
    let start = Instant::now();
    let mut child = node
        .command(plugins.binary(which))
        .env_clear()
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", pod.path())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", REFERENCE_DIR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", plugins.binary(which).display()))?;
    child
        .stdin
        .take()
        .context("plugin stdin")?
        .write_all(conf)
        .context("writing the network configuration")?;
    let out = child.wait_with_output().context("waiting for the plugin")?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!(
            "{} {cmd} {cid} failed ({}): {}{}",
            which.name(),
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(took)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[derive(Debug)]
struct Round {
    add: Vec<f64>,
    del: Vec<f64>,
    concurrent: f64,
}

fn round(plugins: &Plugins, which: Impl, pods: u32, concurrent: u32) -> Result<Round> {
    let node = Netns::new("fbn");
    let data = tempfile::tempdir().context("creating the IPAM data dir")?;
    let conf = which.conf(&data.path().to_string_lossy());

    let serial = (0..pods).map(|_| Netns::new("fbp")).collect::<Vec<_>>();
    let mut add = Vec::new();
    for (i, p) in serial.iter().enumerate() {
        check_interrupt()?;
        add.push(ms(invoke(
            plugins,
            &node,
            which,
            "ADD",
            &format!("s{i}"),
            p,
            &conf,
        )?));
    }
    let mut del = Vec::new();
    for (i, p) in serial.iter().enumerate() {
        check_interrupt()?;
        del.push(ms(invoke(
            plugins,
            &node,
            which,
            "DEL",
            &format!("s{i}"),
            p,
            &conf,
        )?));
    }
    drop(serial);

    // Concurrent ADDs on a fresh bridge, in a fresh node.
    let node = Netns::new("fbn");
    let data = tempfile::tempdir().context("creating the IPAM data dir")?;
    let conf = which.conf(&data.path().to_string_lossy());
    let cpods = (0..concurrent)
        .map(|_| Netns::new("fbp"))
        .collect::<Vec<_>>();
    let barrier = std::sync::Barrier::new(cpods.len());
    let start = std::sync::OnceLock::new();
    let ends = std::thread::scope(|s| {
        let handles: Vec<_> = cpods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (node, conf, barrier, start) = (&node, &conf, &barrier, &start);
                s.spawn(move || {
                    barrier.wait();
                    start.get_or_init(Instant::now);
                    invoke(plugins, node, which, "ADD", &format!("c{i}"), p, conf)
                        .map(|_| Instant::now())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail!("an ADD thread panicked")))
            .collect::<Result<Vec<Instant>>>()
    })?;
    let first = *start.get().context("no concurrent ADD started")?;
    let concurrent_ms = ends
        .iter()
        .map(|e| ms(e.duration_since(first)))
        .fold(0.0, f64::max);
    for (i, p) in cpods.iter().enumerate() {
        invoke(plugins, &node, which, "DEL", &format!("c{i}"), p, &conf)?;
    }
    Ok(Round {
        add,
        del,
        concurrent: concurrent_ms,
    })
}

/// Runs the benchmark and prints its table.
pub(crate) fn run(args: &CniArgs) -> Result<()> {
    let plugins = Plugins::find()?;
    let (pods, concurrent, rounds) = (args.pods, args.concurrent, args.rounds);
    println!(
        "CNI benchmark: {pods} serial pods, {concurrent} concurrent ADDs, {rounds} rounds \
         (A B B A order); figures are medians over rounds [min-max]"
    );
    // Warm-up (page cache, binaries): one small untimed round each.
    round(&plugins, Impl::Ferry, 3, 3)?;
    round(&plugins, Impl::Reference, 3, 3)?;
    let mut ferry = Vec::new();
    let mut reference = Vec::new();
    for r in 0..rounds {
        let order = if r % 2 == 0 {
            [Impl::Ferry, Impl::Reference]
        } else {
            [Impl::Reference, Impl::Ferry]
        };
        for which in order {
            check_interrupt()?;
            let res = round(&plugins, which, pods, concurrent)?;
            eprintln!(
                "  round {} {:<18} ADD p50 {:6.2} ms  DEL p50 {:6.2} ms  {concurrent} concurrent {:7.1} ms",
                r + 1,
                which.name(),
                percentile_of(&res.add, 50.0),
                percentile_of(&res.del, 50.0),
                res.concurrent
            );
            match which {
                Impl::Ferry => ferry.push(res),
                Impl::Reference => reference.push(res),
            }
        }
    }

    println!();
    println!(
        "{:<18} {:>22} {:>22} {:>22} {:>22} {:>22}",
        "",
        "ADD p50 ms",
        "ADD p99 ms",
        "DEL p50 ms",
        "DEL p99 ms",
        format!("{concurrent}x ADD wall ms")
    );
    // The table's columns, in order: ADD p50, ADD p99, DEL p50, DEL p99, concurrent wall time.
    let columns: [fn(&Round) -> f64; 5] = [
        |r| percentile_of(&r.add, 50.0),
        |r| percentile_of(&r.add, 99.0),
        |r| percentile_of(&r.del, 50.0),
        |r| percentile_of(&r.del, 99.0),
        |r| r.concurrent,
    ];
    for (which, rs) in [(Impl::Ferry, &ferry), (Impl::Reference, &reference)] {
        print!("{:<18}", which.name());
        for f in &columns {
            print!(" {:>22}", format!("{:.2}", Spread::over(rs, f)));
        }
        println!();
    }
    let ratio = |f: fn(&Round) -> f64| {
        Spread::of(
            &ferry
                .iter()
                .zip(&reference)
                .map(|(a, b)| f(a) / f(b))
                .collect::<Vec<_>>(),
        )
    };
    print!("{:<18}", "ratio (per round)");
    for f in &columns {
        print!(" {:>22}", format!("{:.3}", ratio(*f)));
    }
    println!();
    println!(
        "means: ferry-cni ADD {:.2} / DEL {:.2} ms, reference ADD {:.2} / DEL {:.2} ms (medians over rounds)",
        Spread::over(&ferry, |r| mean(&r.add)).median,
        Spread::over(&ferry, |r| mean(&r.del)).median,
        Spread::over(&reference, |r| mean(&r.add)).median,
        Spread::over(&reference, |r| mean(&r.del)).median,
    );

    let add = ratio(columns[0]).median;
    let del = ratio(columns[2]).median;
    let wall = Spread::over(&ferry, |r| r.concurrent).median;
    let checks = [
        ("ADD p50 <= 1/3 of the reference", add <= 1.0 / 3.0),
        ("DEL p50 <= 1/5 of the reference", del <= 1.0 / 5.0),
        (
            "30 concurrent ADDs <= 150 ms",
            concurrent != 30 || wall <= 150.0,
        ),
    ];
    let mut missed = 0;
    for (what, ok) in checks {
        println!("target {what}: {}", if ok { "met" } else { "MISSED" });
        missed += usize::from(!ok);
    }
    if args.strict && missed > 0 {
        bail!("{missed} target(s) missed");
    }
    Ok(())
}
