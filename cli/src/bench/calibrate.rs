//! `ferry bench calibrate`: the built-in load generator against the tools people trust, on the
//! loopback of a fresh network namespace, so its figures can be believed (docs/bench.md, the
//! calibration gate).
//!
//! - request/response: `sockperf ping-pong --tcp --full-rtt -m SIZE` (p50 of the round trip)
//!   against the built-in `tcp_rr` p50 at the same size (sockperf's minimum is 14 B);
//! - stream: `iperf3 -c` single stream (goodput received, first second omitted) against the
//!   built-in `tcp_stream` with 128 KiB writes (iperf3's default TCP write size).
//!
//! The tools take turns within each round (A B, then B A), for `--rounds` rounds; each figure is
//! the median over rounds with its min–max, and the ratio is the median of the per-round ratios.
//! Neither side is pinned to a CPU (the same scheduling for both). The gate: every ratio within
//! ±`--gate-pct` (exit status 1 otherwise, unless `--no-gate`).

use anyhow::{bail, ensure, Context as _, Result};
use ferry_bench::loadgen::{self, Close, Outcome, Server, Spec, Test};
use ferry_bench::model::Calibration;
use ferry_tests::{Netns, Spread};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output};
use std::time::Duration;

/// sockperf's port in the namespace.
const SOCKPERF_PORT: u16 = 11111;
/// iperf3's port in the namespace.
const IPERF_PORT: u16 = 5201;
/// The built-in server's port in the namespace.
const AGENT_PORT: u16 = 7000;
/// Write size of both stream engines.
const STREAM_WRITE: u32 = 128 << 10;

/// `ferry bench calibrate` flags.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CalibrateArgs {
    /// Rounds; in each, every tool runs once, the order alternating between rounds.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Seconds per measurement (whole seconds: sockperf and iperf3 take no fractions).
    #[arg(long, default_value_t = 3)]
    duration: u32,
    /// Request = response size of the request/response row, bytes (sockperf needs >= 14).
    #[arg(long, default_value_t = 14)]
    size: u32,
    /// Allowed distance of each ratio from 1, percent.
    #[arg(long, default_value_t = 10.0)]
    gate_pct: f64,
    /// Print the figures without failing outside the gate.
    #[arg(long)]
    no_gate: bool,
    /// Skip the stream row (iperf3).
    #[arg(long)]
    no_stream: bool,
}

/// Per-round figures of both rows.
#[derive(Debug, Default)]
struct Figures {
    /// sockperf round-trip p50, µs.
    sockperf: Vec<f64>,
    /// Built-in tcp_rr p50, µs.
    builtin_rr: Vec<f64>,
    /// iperf3 single stream, Gbit/s.
    iperf3: Vec<f64>,
    /// Built-in tcp_stream, Gbit/s.
    builtin_stream: Vec<f64>,
}

impl Figures {
    /// Per-round built-in / reference ratios.
    fn ratios(builtin: &[f64], reference: &[f64]) -> Vec<f64> {
        builtin.iter().zip(reference).map(|(b, r)| b / r).collect()
    }
}

/// Measures the request/response row (and the stream row unless `--no-stream`) and returns the
/// request/response figures, for a report's `meta.calibration`.
pub(crate) fn measure(args: &CalibrateArgs) -> Result<Calibration> {
    let f = measure_all(args)?;
    Ok(calibration(args, &f))
}

/// The model's summary of the request/response row.
fn calibration(args: &CalibrateArgs, f: &Figures) -> Calibration {
    let ratio = Spread::of(&Figures::ratios(&f.builtin_rr, &f.sockperf)).median;
    Calibration {
        size: args.size,
        sockperf_p50_us: Spread::of(&f.sockperf).median,
        builtin_p50_us: Spread::of(&f.builtin_rr).median,
        ratio,
        within_gate: within(ratio, args.gate_pct),
    }
}

/// Whether a ratio is within ±`pct` % of 1.
fn within(ratio: f64, pct: f64) -> bool {
    ratio.is_finite() && (ratio - 1.0).abs() * 100.0 <= pct
}

/// Runs `ferry bench calibrate`: measures, prints the table, applies the gate.
pub(crate) fn run(args: &CalibrateArgs) -> Result<()> {
    let f = measure_all(args)?;
    let cal = calibration(args, &f);
    let rr = Figures::ratios(&f.builtin_rr, &f.sockperf);
    let st = Figures::ratios(&f.builtin_stream, &f.iperf3);
    println!(
        "ferry bench calibrate: loopback of a fresh network namespace, {} rounds x {} s, tools \
         interleaved, no pinning; median [min-max] over rounds",
        args.rounds, args.duration
    );
    let row = |name: &str, v: &[f64], unit: &str| {
        let s = Spread::of(v);
        println!(
            "  {name:<44} {:>9.2} {unit:<7} [{:.2}-{:.2}]",
            s.median, s.min, s.max
        );
    };
    let verdict = |name: &str, r: &[f64]| -> bool {
        let s = Spread::of(r);
        let ok = within(s.median, args.gate_pct);
        println!(
            "  {name:<44} {:>9.3} x       [{:.3}-{:.3}]  {} (gate ±{}%)",
            s.median,
            s.min,
            s.max,
            if ok { "within" } else { "OUTSIDE" },
            args.gate_pct
        );
        ok
    };
    println!(
        "tcp_rr, {} B request = response, round-trip p50:",
        args.size
    );
    row(
        &format!("sockperf pp --tcp --full-rtt -m {}", args.size),
        &f.sockperf,
        "us",
    );
    row("built-in tcp_rr (1 flow)", &f.builtin_rr, "us");
    let mut ok = verdict("ratio built-in / sockperf", &rr);
    debug_assert_eq!(ok, cal.within_gate);
    if !args.no_stream {
        println!("tcp_stream, 1 flow, 128 KiB writes, goodput:");
        row("iperf3 -c (first second omitted)", &f.iperf3, "Gbit/s");
        row("built-in tcp_stream", &f.builtin_stream, "Gbit/s");
        ok &= verdict("ratio built-in / iperf3", &st);
    }
    if !ok && !args.no_gate {
        bail!(
            "the built-in generator is outside the ±{}% calibration gate (--no-gate to report only)",
            args.gate_pct
        );
    }
    Ok(())
}

/// Checks the flags.
fn validate(args: &CalibrateArgs) -> Result<()> {
    ensure!((1..=100).contains(&args.rounds), "--rounds must be 1..=100");
    ensure!(
        (1..=600).contains(&args.duration),
        "--duration must be 1..=600 seconds"
    );
    ensure!(
        (14..=65_000).contains(&args.size),
        "--size must be 14..=65000 bytes (sockperf's minimum message is 14 B)"
    );
    ensure!(
        args.gate_pct.is_finite() && args.gate_pct > 0.0,
        "--gate-pct must be a positive number"
    );
    Ok(())
}

/// Fails with an install hint when `tool` cannot be started.
fn require(tool: &str, package: &str) -> Result<()> {
    Command::new(tool)
        .arg("--version")
        .output()
        .with_context(|| format!("{tool} is needed for the calibration: apt-get install {package}"))
        .map(drop)
}

/// Every round of both rows.
fn measure_all(args: &CalibrateArgs) -> Result<Figures> {
    validate(args)?;
    if !crate::sys::is_root() {
        bail!("needs root: it creates a network namespace (run it as root, or with sudo)");
    }
    require("sockperf", "sockperf")?;
    if !args.no_stream {
        require("iperf3", "iperf3")?;
    }
    let ns = Netns::new("fbcal");
    let lo = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let _sockperf = ns.spawn(
        "sockperf",
        &[
            "sr",
            "--tcp",
            "-i",
            "127.0.0.1",
            "-p",
            &SOCKPERF_PORT.to_string(),
        ],
    );
    let _iperf =
        (!args.no_stream).then(|| ns.spawn("iperf3", &["-s", "-p", &IPERF_PORT.to_string()]));
    // Sockets keep the namespace they were made in: bind there, serve from any thread.
    let server = ns
        .run(|| Server::bind(lo(AGENT_PORT)))
        .context("binding the built-in server in the namespace")?
        .spawn()
        .context("starting the built-in server")?;
    let mut wait_for = vec![SOCKPERF_PORT];
    if !args.no_stream {
        wait_for.push(IPERF_PORT);
    }
    for port in wait_for {
        let up = ferry_tests::wait_until(Duration::from_secs(5), || {
            ns.run(|| TcpStream::connect(lo(port)).is_ok())
        });
        ensure!(
            up,
            "nothing listens on 127.0.0.1:{port} in the namespace after 5 s"
        );
    }

    let secs = args.duration.to_string();
    let size = args.size.to_string();
    let spec = |test, size| Spec {
        test,
        target: server.local_addr(),
        flows: 1,
        size,
        warmup_s: 0.5,
        duration_s: f64::from(args.duration),
        cooldown_s: 0.1,
        close: Close::Server,
        rate_pps: 0,
        timeout_ms: 2000,
    };
    let builtin = |s: &Spec| -> Result<Outcome> {
        ns.run(|| loadgen::run(s))
            .with_context(|| format!("built-in {}", s.test))
    };
    let metric = |o: &Outcome, m: &str| -> Result<f64> {
        o.metrics
            .get(m)
            .copied()
            .with_context(|| format!("the built-in outcome has no {m}"))
    };
    let mut f = Figures::default();
    for round in 0..args.rounds {
        for builtin_first in [round % 2 == 1, round % 2 == 0] {
            super::check_interrupt()?;
            if builtin_first {
                let o = builtin(&spec(Test::TcpRr, args.size))?;
                f.builtin_rr.push(metric(&o, "lat_p50_us")?);
            } else {
                let out = output(ns.command("sockperf").args([
                    "pp",
                    "--tcp",
                    "--full-rtt",
                    "-m",
                    &size,
                    "-i",
                    "127.0.0.1",
                    "-p",
                    &SOCKPERF_PORT.to_string(),
                    "-t",
                    &secs,
                ]))?;
                f.sockperf.push(sockperf_p50(&out)?);
            }
        }
        if args.no_stream {
            continue;
        }
        for builtin_first in [round % 2 == 1, round % 2 == 0] {
            super::check_interrupt()?;
            if builtin_first {
                let o = builtin(&spec(Test::TcpStream, STREAM_WRITE))?;
                f.builtin_stream.push(metric(&o, "throughput_gbps")?);
            } else {
                // -O 1 omits the first second (slow start), like the built-in warm-up.
                let t = (args.duration + 1).to_string();
                let out = output(ns.command("iperf3").args([
                    "-c",
                    "127.0.0.1",
                    "-p",
                    &IPERF_PORT.to_string(),
                    "-t",
                    &t,
                    "-O",
                    "1",
                    "-J",
                ]))?;
                f.iperf3.push(iperf3_gbps(&out)?);
            }
        }
    }
    drop(server);
    Ok(f)
}

/// Runs a tool to completion; its stdout, or an error with its stderr.
fn output(cmd: &mut Command) -> Result<String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().with_context(|| format!("running {program}"))?;
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    ensure!(
        status.success(),
        "{program} failed ({status}): {}{}",
        String::from_utf8_lossy(&stderr).trim(),
        stdout.trim()
    );
    Ok(stdout)
}

/// The `percentile 50.000 = X` line of sockperf's summary (µs; a full round trip with
/// `--full-rtt`). sockperf colours some lines with ANSI escapes; the number is what follows `=`.
fn sockperf_p50(out: &str) -> Result<f64> {
    out.lines()
        .find(|l| l.contains("percentile 50.000"))
        .and_then(|l| l.rsplit('=').next())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("no `percentile 50.000` in sockperf's output:\n{out}"))
}

/// `end.sum_received.bits_per_second` of `iperf3 -J`, in Gbit/s.
fn iperf3_gbps(json: &str) -> Result<f64> {
    let v: serde_json::Value =
        serde_json::from_str(json).context("iperf3 -J output is not JSON")?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        bail!("iperf3: {e}");
    }
    v.pointer("/end/sum_received/bits_per_second")
        .and_then(serde_json::Value::as_f64)
        .map(|b| b / 1e9)
        .context("iperf3 -J output has no end.sum_received.bits_per_second")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sockperf_summary() {
        let out = "sockperf: ---> percentile 90.000 =   14.661\n\
                   sockperf: ---> percentile 50.000 =   13.780\n\
                   sockperf: ---> <MIN> observation =   12.508\n";
        assert!((sockperf_p50(out).unwrap() - 13.780).abs() < 1e-9);
        assert!(sockperf_p50("sockperf: Test ended").is_err());
    }

    #[test]
    fn parses_iperf3_json() {
        let j = r#"{"end":{"sum_received":{"bits_per_second":2.5e10}}}"#;
        assert!((iperf3_gbps(j).unwrap() - 25.0).abs() < 1e-9);
        let err = iperf3_gbps(r#"{"error":"unable to connect to server"}"#).unwrap_err();
        assert!(err.to_string().contains("unable to connect"));
    }

    #[test]
    fn gate_and_ratios() {
        assert!(within(1.09, 10.0));
        assert!(within(0.91, 10.0));
        assert!(!within(1.11, 10.0));
        assert!(!within(f64::NAN, 10.0));
        assert_eq!(
            Figures::ratios(&[11.0, 12.0], &[10.0, 10.0]),
            vec![1.1, 1.2]
        );
    }
}
