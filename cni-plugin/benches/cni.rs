//! CNI benchmark: `ferry-cni` against Debian's reference `bridge` + `host-local`, side by side in
//! one run, on the same kernel, with the same bridge and subnet settings.
//!
//! Measured per implementation: ADD and DEL latency (p50/p99) over serial pods, and the wall time
//! of concurrent ADDs on a fresh bridge. Each round builds a fresh node namespace and fresh pod
//! namespaces (not timed); rounds alternate the order (A B B A ...) so drift hits both; the report
//! gives the median over rounds and the ratios to the reference from the same run.
//!
//! `cargo bench -p ferry-cni --bench cni -- [--pods N] [--concurrent N] [--rounds N] [--strict]`
//! (root required). `--strict` exits non-zero when a target is missed.

use ferry_tests::{median, percentile, privileged, Netns};
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry-cni");
const DEBIAN: &str = "/usr/lib/cni";

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

    fn binary(self) -> String {
        match self {
            Impl::Ferry => FERRY.to_owned(),
            Impl::Reference => format!("{DEBIAN}/bridge"),
        }
    }

    fn conf(self, bridge: &str, data_dir: &str) -> Vec<u8> {
        let ty = match self {
            Impl::Ferry => serde_json::json!({"subnet": "10.60.0.0/22", "dataDir": data_dir}),
            Impl::Reference => {
                serde_json::json!({"type": "host-local", "subnet": "10.60.0.0/22", "dataDir": data_dir})
            }
        };
        serde_json::to_vec(&serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "bench",
            "type": "bridge",
            "bridge": bridge,
            "isGateway": true,
            "isDefaultGateway": true,
            "hairpinMode": true,
            "mtu": 1500,
            "ipam": ty,
        }))
        .unwrap()
    }
}

struct Round {
    add: Vec<f64>,
    del: Vec<f64>,
    concurrent: f64,
}

fn invoke(node: &Netns, which: Impl, cmd: &str, cid: &str, netns: &str, conf: &[u8]) -> Duration {
    let start = Instant::now();
    let mut child = node
        .command(which.binary())
        .env_clear()
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", DEBIAN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", which.binary()));
    child.stdin.take().unwrap().write_all(conf).unwrap();
    let out = child.wait_with_output().unwrap();
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{} {cmd} {cid} failed: {} {}",
        which.name(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn round(which: Impl, pods: usize, concurrent: usize) -> Round {
    let node = Netns::new("fbn");
    let data = tempfile::tempdir().unwrap();
    let conf = which.conf("cni0", data.path().to_str().unwrap());

    let serial: Vec<Netns> = (0..pods).map(|_| Netns::new("fbp")).collect();
    let mut add = Vec::new();
    for (i, p) in serial.iter().enumerate() {
        add.push(ms(invoke(
            &node,
            which,
            "ADD",
            &format!("s{i}"),
            p.path(),
            &conf,
        )));
    }
    let mut del = Vec::new();
    for (i, p) in serial.iter().enumerate() {
        del.push(ms(invoke(
            &node,
            which,
            "DEL",
            &format!("s{i}"),
            p.path(),
            &conf,
        )));
    }
    drop(serial);

    // Concurrent ADDs on a fresh bridge, in a fresh node.
    let node2 = Netns::new("fbn");
    let data2 = tempfile::tempdir().unwrap();
    let conf2 = which.conf("cni0", data2.path().to_str().unwrap());
    let cpods: Vec<Netns> = (0..concurrent).map(|_| Netns::new("fbp")).collect();
    let barrier = std::sync::Barrier::new(concurrent);
    let start = std::sync::OnceLock::new();
    let ends: Vec<Instant> = std::thread::scope(|s| {
        let handles: Vec<_> = cpods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (node2, conf2, barrier, start) = (&node2, &conf2, &barrier, &start);
                s.spawn(move || {
                    barrier.wait();
                    start.get_or_init(Instant::now);
                    invoke(node2, which, "ADD", &format!("c{i}"), p.path(), conf2);
                    Instant::now()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let first = *start.get().unwrap();
    let concurrent_ms = ends
        .iter()
        .map(|e| ms(e.duration_since(first)))
        .fold(0.0, f64::max);
    for (i, p) in cpods.iter().enumerate() {
        invoke(&node2, which, "DEL", &format!("c{i}"), p.path(), &conf2);
    }
    Round {
        add,
        del,
        concurrent: concurrent_ms,
    }
}

struct Summary {
    add_p50: f64,
    add_p99: f64,
    add_mean: f64,
    del_p50: f64,
    del_p99: f64,
    del_mean: f64,
    concurrent: f64,
}

fn summarize(rounds: &[Round]) -> Summary {
    let stat = |f: &dyn Fn(&Round) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
    let pct = |v: &[f64], p: f64| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        percentile(&s, p)
    };
    #[expect(clippy::cast_precision_loss, reason = "small sample sizes")]
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    Summary {
        add_p50: stat(&|r| pct(&r.add, 50.0)),
        add_p99: stat(&|r| pct(&r.add, 99.0)),
        add_mean: stat(&|r| mean(&r.add)),
        del_p50: stat(&|r| pct(&r.del, 50.0)),
        del_p99: stat(&|r| pct(&r.del, 99.0)),
        del_mean: stat(&|r| mean(&r.del)),
        concurrent: stat(&|r| r.concurrent),
    }
}

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return; // `cargo bench -- --list` / `cargo test --benches` probes
    }
    if !privileged("cni benchmark") {
        return;
    }
    let pods = arg(&args, "--pods", 50);
    let concurrent = arg(&args, "--concurrent", 30);
    let rounds = arg(&args, "--rounds", 5);
    let strict = args.iter().any(|a| a == "--strict");
    println!("CNI benchmark: {pods} serial pods, {concurrent} concurrent ADDs, {rounds} rounds (A B B A order)");
    let mut ferry = Vec::new();
    let mut reference = Vec::new();
    // Warm-up (page cache, binaries): one small untimed round each.
    round(Impl::Ferry, 3, 3);
    round(Impl::Reference, 3, 3);
    for r in 0..rounds {
        let order = if r % 2 == 0 {
            [Impl::Ferry, Impl::Reference]
        } else {
            [Impl::Reference, Impl::Ferry]
        };
        for which in order {
            let res = round(which, pods, concurrent);
            eprintln!(
                "  round {} {:<18} ADD p50 {:6.2} ms  DEL p50 {:6.2} ms  {concurrent} concurrent {:7.1} ms",
                r + 1,
                which.name(),
                percentile(&{ let mut v = res.add.clone(); v.sort_by(f64::total_cmp); v }, 50.0),
                percentile(&{ let mut v = res.del.clone(); v.sort_by(f64::total_cmp); v }, 50.0),
                res.concurrent
            );
            if which == Impl::Ferry {
                ferry.push(res)
            } else {
                reference.push(res)
            }
        }
    }
    let f = summarize(&ferry);
    let b = summarize(&reference);
    println!();
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>14}",
        "median over rounds",
        "ADD p50",
        "ADD p99",
        "ADD mean",
        "DEL p50",
        "DEL p99",
        "DEL mean",
        format!("{concurrent}x ADD wall")
    );
    for (name, s) in [(Impl::Ferry.name(), &f), (Impl::Reference.name(), &b)] {
        println!(
            "{name:<22} {:>8.2}ms {:>8.2}ms {:>8.2}ms {:>8.2}ms {:>8.2}ms {:>8.2}ms {:>12.1}ms",
            s.add_p50, s.add_p99, s.add_mean, s.del_p50, s.del_p99, s.del_mean, s.concurrent
        );
    }
    let add_ratio = f.add_p50 / b.add_p50;
    let del_ratio = f.del_p50 / b.del_p50;
    let conc_ratio = f.concurrent / b.concurrent;
    println!();
    println!("ratios ferry/reference: ADD p50 {add_ratio:.3}  DEL p50 {del_ratio:.3}  {concurrent}x ADD wall {conc_ratio:.3}");
    let checks = [
        ("ADD p50 <= 1/3 of reference", add_ratio <= 1.0 / 3.0),
        ("DEL p50 <= 1/5 of reference", del_ratio <= 1.0 / 5.0),
        (
            "30 concurrent ADDs <= 150 ms",
            concurrent != 30 || f.concurrent <= 150.0,
        ),
    ];
    let mut missed = 0;
    for (what, ok) in checks {
        println!("target {what}: {}", if ok { "met" } else { "MISSED" });
        missed += usize::from(!ok);
    }
    if strict && missed > 0 {
        std::process::exit(1);
    }
}
