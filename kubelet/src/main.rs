//! `ferry-kubelet`: Ferry's kubelet (see the library docs). Containers run under `ferry-shim`,
//! found next to this executable unless `--shim` says otherwise.

#![forbid(unsafe_code)]

use anyhow::{Context as _, Result};
use clap::Parser;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "ferry-kubelet",
    version,
    about = "Ferry's kubelet: runs the pods bound to this node"
)]
struct Cli {
    /// Name of this node.
    #[arg(long)]
    node_name: String,
    /// API server URL (https://HOST:PORT).
    #[arg(long)]
    server: String,
    /// Bearer token of this node (see `ferry-server node-token`). Kept for compatibility only:
    /// every local user reads it in `ps`, so using it prints a warning; use --token-file.
    #[arg(long)]
    token: Option<String>,
    /// File holding the bearer token of this node (0600).
    #[arg(long, conflicts_with = "token")]
    token_file: Option<PathBuf>,
    /// CA certificate (PEM) of the API server.
    #[arg(long)]
    certificate_authority: PathBuf,
    /// Directory with the CNI network configuration (the first *.conflist / *.conf is used).
    #[arg(long, default_value = "/etc/cni/net.d")]
    cni_conf_dir: PathBuf,
    /// Directory with the CNI plugin binaries.
    #[arg(long, default_value = "/opt/cni/bin")]
    cni_bin_dir: PathBuf,
    /// State directory (pods, network namespaces, CNI cache, logs).
    #[arg(long, default_value = "/var/lib/ferry/kubelet")]
    root_dir: PathBuf,
    /// cgroup v2 directory for the pods (default: <cgroup2 mount>/ferry-kubelet-<node>).
    #[arg(long)]
    cgroup_root: Option<PathBuf>,
    /// This node's IP (InternalIP, and where the kubelet endpoint listens).
    #[arg(long)]
    node_ip: String,
    /// The container supervisor executable (default: `ferry-shim` next to this executable).
    #[arg(long)]
    shim: Option<PathBuf>,
    /// Port of the kubelet endpoint (logs, exec, port-forward, healthz), served over TLS.
    #[arg(long, default_value_t = 10250)]
    port: u16,
    /// Serving certificate of the endpoint (PEM, signed by the cluster CA for this node's IP:
    /// `ferry-server kubelet-cert`).
    #[arg(long)]
    tls_cert_file: PathBuf,
    /// Key of the serving certificate.
    #[arg(long)]
    tls_private_key_file: PathBuf,
    /// CA of the client certificates the endpoint admits (default: --certificate-authority);
    /// only the API server's (CN ferry-apiserver-kubelet-client) is authorized.
    #[arg(long)]
    client_ca_file: Option<PathBuf>,
    /// Pod capacity.
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// CPU capacity to report (default: the machine's).
    #[arg(long)]
    cpu: Option<String>,
    /// Memory capacity to report (default: the machine's).
    #[arg(long)]
    memory: Option<String>,
    /// Lease renewal period in seconds.
    #[arg(long, default_value_t = 10)]
    lease_interval: u64,
    /// Node status refresh period in seconds (changes are posted at once).
    #[arg(long, default_value_t = 60)]
    status_interval: u64,
    /// Restart back-off after the first (immediate) restart, in seconds; doubles up to 300.
    #[arg(long, default_value_t = 10.0)]
    backoff_base: f64,
    #[command(flatten)]
    http: ferry_kubelet::logs::HttpLimits,
}

/// Printed on stderr when `--token` is used.
const TOKEN_FLAG_WARNING: &str = "warning: --token puts the bearer token on the command line, \
     where every local user can read it (ps, /proc/PID/cmdline); use --token-file";

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let node_name = cli.node_name;
    let token = match (&cli.token, &cli.token_file) {
        (Some(t), _) => {
            eprintln!("{TOKEN_FLAG_WARNING}");
            t.clone()
        }
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("reading {}", f.display()))?
            .trim()
            .to_owned(),
        (None, None) => anyhow::bail!("one of --token or --token-file is required"),
    };
    if token.is_empty() {
        anyhow::bail!("the bearer token is empty (--token / --token-file)");
    }
    let cgroup_root = match cli.cgroup_root {
        Some(c) => c,
        None => ferry_kubelet::cgroup::cgroup2_mount()
            .context("no cgroup2 mount found; pass --cgroup-root")?
            .join(format!("ferry-kubelet-{node_name}")),
    };
    let node_ip = cli.node_ip;
    node_ip
        .parse::<std::net::IpAddr>()
        .with_context(|| format!("--node-ip {node_ip:?} is not an IP address"))?;
    let shim = match cli.shim {
        Some(s) => s,
        None => std::env::current_exe()
            .context("locating the ferry-kubelet executable")?
            .with_file_name("ferry-shim"),
    };
    anyhow::ensure!(
        shim.is_file(),
        "the container supervisor {} does not exist (build it with the kubelet, or pass --shim)",
        shim.display()
    );
    let cfg = ferry_kubelet::Config {
        node_name,
        server: cli.server,
        token,
        client_ca_file: cli
            .client_ca_file
            .unwrap_or_else(|| cli.certificate_authority.clone()),
        ca_file: cli.certificate_authority,
        tls_cert_file: cli.tls_cert_file,
        tls_key_file: cli.tls_private_key_file,
        shim,
        cni_conf_dir: cli.cni_conf_dir,
        cni_bin_dir: cli.cni_bin_dir,
        root_dir: cli.root_dir,
        cgroup_root,
        node_ip,
        port: cli.port,
        max_pods: cli.max_pods,
        cpu: cli.cpu,
        memory: cli.memory,
        lease_interval: cli.lease_interval.max(1),
        status_interval: cli.status_interval.max(1),
        backoff_base: cli.backoff_base.max(0.0),
        http: cli.http,
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(ferry_kubelet::run(cfg))
}
