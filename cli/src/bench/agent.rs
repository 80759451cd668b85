//! `ferry bench-agent`: the two ends of the built-in load generator
//! ([`ferry_bench::loadgen`]) as processes the lab starts inside a path's endpoints (their network
//! namespace and cgroup), plus the Service prober of the scale sweep.
//!
//! - `serve --listen ADDR [--listen ADDR...]`: TCP and UDP on each port; prints `ready <addr>`
//!   per address once listening and serves until killed.
//! - `run --spec JSON`: runs one test ([`ferry_bench::loadgen::Spec`]) and prints its
//!   [`ferry_bench::loadgen::Outcome`] as one line of JSON on stdout; a failure is a message on
//!   stderr and a non-zero exit.
//! - `probe --spec JSON`: the Service programming prober (`net::svc`).

use anyhow::{Context as _, Result};
use ferry_bench::loadgen::{self, Spec};
use std::io::Write as _;
use std::net::SocketAddr;

/// `ferry bench-agent`.
#[derive(Debug, clap::Args)]
pub(crate) struct AgentCmd {
    /// What to run.
    #[command(subcommand)]
    cmd: AgentSub,
}

/// `ferry bench-agent` subcommands.
#[derive(Debug, clap::Subcommand)]
enum AgentSub {
    /// Serves every built-in test (TCP and UDP on each port) until killed; prints `ready <addr>`
    /// per address when listening.
    Serve {
        /// Address to listen on (TCP and UDP); repeat for several ports.
        #[arg(long, default_value = "0.0.0.0:7000", num_args = 1)]
        listen: Vec<SocketAddr>,
    },
    /// Runs one test against a `serve` and prints the outcome as one line of JSON.
    Run {
        /// The test as JSON: {"test":"tcp_rr","target":"10.0.0.2:7000","flows":1,"size":1,
        /// "warmup_s":2,"duration_s":10,"cooldown_s":0.5,"close":"server","rate_pps":0,
        /// "timeout_ms":1000}.
        #[arg(long)]
        spec: String,
    },
    /// The Service programming prober of the scale sweep: prints its outcome as JSON.
    Probe(super::net::svc::ProbeArgs),
}

/// Runs `ferry bench-agent`.
pub(crate) fn run(cmd: &AgentCmd) -> Result<()> {
    match &cmd.cmd {
        AgentSub::Serve { listen } => {
            loadgen::serve(listen).with_context(|| format!("bench-agent serve on {listen:?}"))
        }
        AgentSub::Run { spec } => {
            let spec: Spec = serde_json::from_str(spec)
                .with_context(|| format!("--spec is not a load generator spec: {spec}"))?;
            let out = loadgen::run(&spec)
                .with_context(|| format!("{} against {}", spec.test, spec.target))?;
            let line = serde_json::to_string(&out).context("encoding the outcome")?;
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{line}").context("writing the outcome")?;
            stdout.flush().context("writing the outcome")
        }
        AgentSub::Probe(a) => super::net::svc::run_probe_cmd(a),
    }
}
