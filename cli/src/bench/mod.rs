//! `ferry bench`: the pod-network benchmark and the older benchmarks, all run from the release
//! binaries (so the main job builds the workspace once).
//!
//! - `ferry bench [flags]`: every selected path (loopback, raw veth pair, node to node, pod to pod,
//!   Services, NodePort, egress) against its physical limit in one run, on clusters it brings up
//!   in network namespaces, with a JSON/CSV/HTML/Prometheus report ([`net`]; the user guide is
//!   `docs/bench.md`).
//! - `ferry bench compare A.json B.json [--fail-on EXPR]`: two reports side by side.
//! - `ferry bench calibrate`: the built-in load generator against sockperf and iperf3.
//! - `ferry bench cni`: ferry-cni against Debian's reference `bridge` + `host-local`, side by side
//!   in one run ([`cni`]).
//! - `ferry bench startup`: pod startup through a whole `ferry up` cluster ([`startup`]).
//!
//! Every figure is reported as the median over rounds with its min–max; a single run is not a
//! figure on a shared 2-core machine. Everything but `compare` needs root (they create network
//! namespaces) and removes everything it created, also on an error or Ctrl-C.

pub(crate) mod agent;
mod calibrate;
mod cni;
mod net;
mod startup;

use anyhow::{bail, Result};

/// `ferry bench`: the pod-network benchmark ([`net::NetArgs`]) unless a subcommand is named.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct BenchArgs {
    /// A benchmark other than the pod-network one.
    #[command(subcommand)]
    cmd: Option<BenchCmd>,
    /// The pod-network benchmark's flags.
    #[command(flatten)]
    net: Box<net::NetArgs>,
}

/// `ferry bench` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum BenchCmd {
    /// ferry-cni against the reference bridge + host-local plugins: ADD/DEL latency and
    /// concurrent ADDs, rounds alternating A B B A.
    Cni(cni::CniArgs),
    /// Pod startup through a `ferry up` cluster: create -> Running + Ready with an IP.
    Startup(startup::StartupArgs),
    /// Compares two `ferry bench` JSON reports: per metric the ratio of medians and whether the
    /// change is beyond the noise; `--fail-on` exits 1 on a regression (CI).
    Compare(net::CompareArgs),
    /// The built-in load generator against sockperf (tcp_rr p50) and iperf3 (one stream) on
    /// loopback in a fresh namespace; exits 1 outside the ±10 % gate.
    Calibrate(calibrate::CalibrateArgs),
}

/// Runs `ferry bench` (the pod-network benchmark or a subcommand).
pub(crate) fn run(args: &BenchArgs) -> Result<()> {
    if let Some(BenchCmd::Compare(c)) = &args.cmd {
        return net::compare(c);
    }
    if !crate::sys::is_root() {
        bail!("needs root: it creates network namespaces (run it as root, or with sudo)");
    }
    crate::sys::catch_interrupts();
    match &args.cmd {
        Some(BenchCmd::Cni(a)) => cni::run(a),
        Some(BenchCmd::Startup(a)) => startup::run(a),
        Some(BenchCmd::Calibrate(a)) => calibrate::run(a),
        Some(BenchCmd::Compare(_)) => unreachable!("handled above"),
        None => net::run(&args.net),
    }
}

/// Fails once SIGINT/SIGTERM/SIGHUP arrived, so a benchmark stops between steps and its guards
/// remove what it created.
fn check_interrupt() -> Result<()> {
    if crate::sys::interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// The directory of the running `ferry` executable, where the workspace's other binaries are built.
fn bin_dir() -> Result<std::path::PathBuf> {
    use anyhow::Context as _;
    Ok(std::env::current_exe()
        .context("locating the ferry executable")?
        .parent()
        .context("the ferry executable has no directory")?
        .to_owned())
}
