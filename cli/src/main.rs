//! `ferry`: a complete Ferry cluster on this machine, every piece inside network namespaces.
//!
//! - `ferry up` creates a switch namespace (the underlay bridge), a control-plane namespace running
//!   `ferry-server` and N node namespaces each running `ferry-kubelet` and `ferry-agent` with
//!   `ferry-cni` installed in the node's own CNI directories, plus an "external" host namespace on
//!   the underlay (for pods' egress), and returns once every node is Ready.
//!   kubectl reaches the apiserver from the root namespace on 127.0.0.1 (a listener bound there and
//!   inherited by the server); nothing routes from the root namespace into the cluster.
//! - `ferry status` shows every component's health, the nodes, their overlay and the pods.
//! - `ferry down` removes everything `ferry up` created, also after a crash of `ferry up`.
//! - `ferry bench` measures the pod network, every path against its physical limit, on its own
//!   lab or an existing `ferry up` cluster; `ferry bench cni|startup|compare|calibrate` are the
//!   other benchmarks and tools ([`bench`]); `ferry bench-agent` (hidden) is the load generator's
//!   ends that `ferry bench` starts inside the paths' namespaces.
//! - `ferry up --store etcd --servers N` runs N ferry-server replicas on a three-member etcd
//!   behind `ferry apiserver-lb` (hidden), a TCP balancer of ours ([`ha`]).
//!
//! Layout: [`topology`] names and addresses, [`state`] the record on disk, [`sys`] the kernel
//! boundary (over `ferry-sys`), [`net`] and [`cgroup`] the resources, [`api`] the Kubernetes
//! client side, one module per subcommand.

#![forbid(unsafe_code)]

mod api;
mod bench;
mod cgroup;
mod down;
mod ha;
mod net;
mod state;
mod status;
mod sys;
mod topology;
mod up;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// A complete Ferry cluster on this machine, in network namespaces.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Brings up a cluster: control plane and N nodes, each in its own network namespace.
    Up(up::UpArgs),
    /// Removes a cluster: processes, namespaces, links, cgroups, files.
    Down(down::Target),
    /// Shows the health of every component, the nodes and the pods.
    Status(down::Target),
    /// Benchmarks from the release binaries: the pod network (every path against its physical
    /// limit; docs/bench.md), the CNI plugin against the reference, pod startup.
    Bench(bench::BenchArgs),
    /// The built-in load generator's ends, started by `ferry bench` inside a path's endpoints.
    #[command(hide = true)]
    BenchAgent(bench::agent::AgentCmd),
    /// The TCP balancer in front of the ferry-server replicas, started by `ferry up --servers N`
    /// in the control-plane namespace.
    #[command(hide = true)]
    ApiserverLb(ha::LbArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (verb, result) = match &cli.cmd {
        Cmd::Up(a) => ("up", up::run(a)),
        Cmd::Down(t) => ("down", down::run(t)),
        Cmd::Status(t) => ("status", status::run(t)),
        Cmd::Bench(b) => ("bench", bench::run(b)),
        Cmd::BenchAgent(a) => ("bench-agent", bench::agent::run(a)),
        Cmd::ApiserverLb(a) => ("apiserver-lb", ha::run_lb(a)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry {verb}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
