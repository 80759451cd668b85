//! `ferry-agent`: Ferry's node agent.
//!
//! `ferry-agent --node-name N --server https://IP:PORT --token-file F --certificate-authority CA.crt
//! --cni-conf-dir D --run-dir R [--iface eth0] [--backend vxlan|host-gw|udp] [--direct-routing]
//! [--resync-seconds 10] [--cluster-cidr 10.244.0.0/16] [--ip-masq true|false]
//! [--no-masquerade-cidrs CIDR,...] [--metrics-address 127.0.0.1:9465|off]
//! [--service-proxy ebpf|iptables|off] [--proxy-cgroup DIR] [--bpffs-dir DIR] [--proxy-fallback]
//! [--service-cidr 10.96.0.0/12]` runs the node agent (see `docs/agent.md`; Services:
//! `docs/services.md`); it must be started inside the node's network namespace, which it
//! programs. It serves Prometheus metrics on `--metrics-address`.
//!
//! `ferry-agent uninstall` removes the agent's iptables chains (masquerade and Services), VXLAN
//! device and routes from the current network namespace (and the udp backend's persistent TUN
//! device).
//!
//! `ferry-agent services --bpffs-dir DIR [-o json]` prints the Service table as the eBPF socket
//! LB's pinned maps hold it (frontends, backends, affinity, counters), also while the agent is
//! down; `ferry-agent uninstall --bpffs-dir DIR` also detaches the socket LB and removes its pins.
//!
//! `ferry-agent programs` lists the eBPF programs and maps embedded in the binary, read from the
//! ELF objects without touching the kernel.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ferry_agent::bpf::{self, BpfError};
use ferry_agent::config::RunArgs;

/// mimalloc (as ferry-server): the watches allocate and free many small objects on several
/// threads, and glibc's per-thread arenas kept the freed memory (RSS) after they were dropped.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Ferry's node agent: node subnet files, flannel-compatible Node annotations, the VXLAN or
/// host-gw overlay between nodes and pod egress masquerade.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    long_about = None,
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the eBPF programs and maps embedded in this binary (loads nothing).
    Programs,
    /// Remove the agent's iptables chains, VXLAN device and routes from this network namespace
    /// (and, with `--bpffs-dir`, detach the socket LB and remove its pins).
    Uninstall {
        /// The per-node bpffs directory of the eBPF socket LB (`/sys/fs/bpf/ferry/<node>`).
        #[arg(long)]
        bpffs_dir: Option<std::path::PathBuf>,
    },
    /// Print the Service table as the eBPF datapath sees it, read from the pinned maps only
    /// (works while the agent is down), like `cilium service list`.
    Services {
        /// The per-node bpffs directory (`/sys/fs/bpf/ferry/<node>`).
        #[arg(long)]
        bpffs_dir: std::path::PathBuf,
        /// `text` or `json`.
        #[arg(short = 'o', long, default_value = "text", value_parser = ["text", "json"])]
        output: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Programs) => programs(),
        Some(Command::Services { bpffs_dir, output }) => {
            let view = ferry_agent::service::ebpf::inspect(&bpffs_dir).with_context(|| {
                format!("reading the pinned maps under {}", bpffs_dir.display())
            })?;
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&view.to_json())?);
            } else {
                print!("{view}");
            }
            Ok(())
        }
        Some(Command::Uninstall { bpffs_dir }) => {
            let mut r = ferry_agent::uninstall::uninstall();
            if let Some(dir) = &bpffs_dir {
                match ferry_agent::uninstall::uninstall_bpf(dir) {
                    Ok(n) => println!("removed: {n} eBPF pin(s) under {}", dir.display()),
                    Err(e) => r.errors.push(e),
                }
            }
            println!(
                "removed: iptables chains, devices {} / {}: {}, routes: {}",
                ferry_agent::overlay::vxlan::DEVICE,
                ferry_agent::overlay::udp::DEVICE,
                if r.device { "deleted" } else { "absent" },
                r.routes
            );
            for e in &r.errors {
                eprintln!("error: {e}");
            }
            if r.errors.is_empty() {
                Ok(())
            } else {
                anyhow::bail!("{} step(s) failed", r.errors.len())
            }
        }
        None => {
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .init();
            if cli.run.token.is_some() {
                eprintln!("{}", ferry_agent::config::TOKEN_FLAG_WARNING);
            }
            let cfg = cli.run.into_config()?;
            tokio::runtime::Runtime::new()
                .context("starting the async runtime")?
                .block_on(ferry_agent::agent::run(cfg))?;
            Ok(())
        }
    }
}

fn programs() -> anyhow::Result<()> {
    println!("ferry-agent {}", env!("CARGO_PKG_VERSION"));
    println!("embedded eBPF objects:");
    for object in bpf::embedded_objects() {
        match bpf::describe(object) {
            Ok(summary) => print!("{summary}"),
            Err(BpfError::NotBuilt { object }) => {
                println!("{object} (not built: the build set AYA_BUILD_SKIP)");
            }
            Err(err) => {
                return Err(err).with_context(|| format!("reading embedded object {}", object.name))
            }
        }
    }
    Ok(())
}
