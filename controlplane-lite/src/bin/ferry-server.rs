//! `ferry-server`: Ferry's Kubernetes API server.
//!
//! `ferry-server --data-dir DIR` creates, on first start, a CA and serving certificate, an admin
//! token and `DIR/admin.kubeconfig` (usable as is by kubectl), then serves the Kubernetes API over
//! HTTPS on the embedded SQLite store (or on etcd with `--store etcd --etcd-endpoints ...`).
//! DIR is made 0700 and every file in it holding a key or a token is created 0600 (a temporary
//! file opened with that mode, then renamed); a DIR its group or others may write is refused.
//! `ferry-server node-token --data-dir DIR --node NAME` prints (creating if needed) a node's token;
//! `ferry-server kubelet-cert --data-dir DIR --node NAME --ip IP --cert-file F --key-file K` issues
//! the serving certificate the API server expects on that node's kubelet endpoint.
//! `--inherited-listener-fd N` also serves on a listening TCP socket inherited from the parent
//! (`ferry up` binds 127.0.0.1:PORT in the root network namespace and hands it to a server that runs
//! in the control-plane namespace: a socket keeps the namespace it was created in).

#![forbid(unsafe_code)]

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use controlplane_lite::{api, auth, kubeconfig, server, tls};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// mimalloc: the server allocates and frees many small JSON values per request and per watch
/// event, across threads; glibc malloc spent ~20% of the server's CPU in a pod burst.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StoreKind {
    Sqlite,
    Etcd,
}

#[derive(Debug, Parser)]
#[command(
    name = "ferry-server",
    version,
    about = "Ferry's Kubernetes API server"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// State directory (certificates, tokens, kubeconfig, the SQLite store).
    #[arg(long, global = true, default_value = "/var/lib/ferry/server")]
    data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Also serve on this listening TCP socket, inherited from the parent process (fd >= 3).
    #[arg(long, value_name = "FD")]
    inherited_listener_fd: Option<i32>,
    /// Address clients use (written into the kubeconfig and the serving certificate); defaults to
    /// the listen address.
    #[arg(long)]
    advertise_address: Option<String>,
    /// Extra names/IPs for the serving certificate.
    #[arg(long, value_delimiter = ',')]
    tls_san: Vec<String>,
    /// ClusterIP range.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cidr: ipnetwork::Ipv4Network,
    /// NodePort range, `LOW-HIGH`.
    #[arg(long, default_value = "30000-32767")]
    node_port_range: String,
    /// Storage backend.
    #[arg(long, value_enum, default_value = "sqlite")]
    store: StoreKind,
    /// etcd endpoints (with `--store etcd`).
    #[arg(long, value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// etcd key prefix (several clusters can share one etcd).
    #[arg(long, default_value = "")]
    etcd_prefix: String,
    /// How often history older than `--retained-revisions` is compacted (seconds).
    #[arg(long, default_value_t = 300)]
    compaction_interval: u64,
    /// Revisions kept behind the current one by compaction.
    #[arg(long, default_value_t = 1000)]
    retained_revisions: i64,
    /// Smallest spacing of watch bookmarks (seconds).
    #[arg(long, default_value_t = 60)]
    bookmark_interval: u64,
    /// How often an idle watch learns the current revision (seconds; bookmarks need it).
    #[arg(long, default_value_t = 5)]
    progress_interval: u64,
    /// Concurrent watches allowed per client identity.
    #[arg(long, default_value_t = 1000)]
    max_watches_per_client: usize,
    /// Run the scheduler and controllers in this process.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    controllers: bool,
    /// Run the scheduler and controllers only while this replica holds the leader Lease (several
    /// replicas on one etcd: one runs them, another takes over when it dies). Default: on with
    /// `--store etcd`, off with SQLite (one process owns that store: nobody to elect against,
    /// and a restart after a crash would wait a lease duration for its own old Lease).
    #[arg(long, action = clap::ArgAction::Set)]
    leader_elect: Option<bool>,
    /// How long other replicas wait, after they last saw the leader renew, before taking over.
    #[arg(long, default_value = "15s", value_parser = controlplane_lite::leader::parse_duration)]
    leader_elect_lease_duration: Duration,
    /// How long the leader keeps acting after its last successful renewal.
    #[arg(long, default_value = "10s", value_parser = controlplane_lite::leader::parse_duration)]
    leader_elect_renew_deadline: Duration,
    /// How often the leader renews and the others retry.
    #[arg(long, default_value = "2s", value_parser = controlplane_lite::leader::parse_duration)]
    leader_elect_retry_period: Duration,
    /// Namespace of the leader Lease.
    #[arg(long, default_value = controlplane_lite::leader::DEFAULT_NAMESPACE)]
    leader_elect_resource_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = controlplane_lite::leader::DEFAULT_NAME)]
    leader_elect_resource_name: String,
    /// Cluster pod CIDR handed out to nodes by node IPAM.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: ipnetwork::Ipv4Network,
    /// Prefix length of each node's pod CIDR.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// Addresses for `type: LoadBalancer` Services (IPv4 CIDRs, repeatable or comma-separated;
    /// must not overlap the service or cluster CIDR). None: LoadBalancer Services stay pending.
    #[arg(long, value_delimiter = ',', value_name = "CIDR")]
    loadbalancer_pool: Vec<ipnetwork::Ipv4Network>,
    /// Seconds without a node heartbeat before the node is unreachable.
    #[arg(long, default_value_t = 40)]
    node_monitor_grace_period: u64,
    /// Seconds pods stay on an unreachable node before they are evicted.
    #[arg(long, default_value_t = 300)]
    pod_eviction_timeout: u64,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 3 * 1024 * 1024)]
    max_request_bytes: usize,
    #[command(flatten)]
    http: controlplane_lite::server::HttpLimits,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Prints the token of a node (created if absent).
    NodeToken {
        /// Node name.
        #[arg(long)]
        node: String,
    },
    /// Issues a kubelet serving certificate signed by the cluster CA (created if absent), for
    /// the node's name and IPs, and writes it and its key (mode 0600).
    KubeletCert {
        /// Node name.
        #[arg(long)]
        node: String,
        /// The node's IP (where its kubelet listens); repeat for more.
        #[arg(long, required = true)]
        ip: Vec<std::net::IpAddr>,
        /// Where to write the certificate (PEM).
        #[arg(long)]
        cert_file: PathBuf,
        /// Where to write the key (PEM, mode 0600).
        #[arg(long)]
        key_file: PathBuf,
    },
}

fn parse_range(s: &str) -> Result<(u16, u16)> {
    let (a, b) = s
        .split_once('-')
        .context("node port range must be LOW-HIGH")?;
    let (a, b): (u16, u16) = (a.trim().parse()?, b.trim().parse()?);
    if a == 0 || a > b {
        bail!("invalid node port range {s}");
    }
    Ok((a, b))
}

/// Makes the data directory ready: created 0700 if missing (with any missing parents), refused if
/// it exists and its group or others may write it (they could swap the keys or the token file
/// under the server), otherwise narrowed to 0700: it holds the keys, the tokens and the store,
/// whose Secrets are not encrypted.
fn prepare_data_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => bail!("--data-dir {} is not a directory", dir.display()),
        Ok(m) if m.permissions().mode() & 0o022 != 0 => bail!(
            "refusing to use --data-dir {}: its mode {:o} lets group or others write it (it \
             holds the cluster's keys and tokens); make it owner-only (chmod 700) first",
            dir.display(),
            m.permissions().mode() & 0o7777
        ),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    }
    tls::private_dir(dir)?;
    for p in tls::restrict_existing(dir)? {
        tracing::warn!("{} was readable by others: now owner-only", p.display());
    }
    Ok(())
}

/// Takes ownership of `fd`, which must be a listening TCP socket inherited from the parent.
fn inherited_listener(fd: i32) -> Result<std::net::TcpListener> {
    ferry_sys::listener::inherited_tcp_listener(fd)
        .map_err(|e| anyhow::anyhow!("--inherited-listener-fd {fd}: {e}"))
}

/// The scheduler and the controllers that run in one replica at a time.
struct Controllers {
    client: kube::Client,
    life: controlplane_lite::controllers::nodelifecycle::Config,
    ipam: controlplane_lite::controllers::nodeipam::Config,
    /// LoadBalancer IPAM, with `--loadbalancer-pool`.
    lb: Option<controlplane_lite::controllers::lbipam::Config>,
}

impl Controllers {
    /// Starts them; dropping the set aborts them all.
    fn start(&self) -> tokio::task::JoinSet<()> {
        use controlplane_lite::{controllers, scheduler};
        type Run = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;
        let c = &self.client;
        let all: [(&str, Run); 7] = [
            (
                "replicaset controller",
                Box::pin(controllers::replicaset::run(c.clone())),
            ),
            (
                "deployment controller",
                Box::pin(controllers::deployment::run(c.clone())),
            ),
            (
                "garbage collector",
                Box::pin(controllers::gc::run(c.clone())),
            ),
            (
                "endpointslice controller",
                Box::pin(controllers::endpointslice::run(c.clone())),
            ),
            (
                "node lifecycle controller",
                Box::pin(controllers::nodelifecycle::run(c.clone(), self.life)),
            ),
            (
                "scheduler",
                Box::pin(scheduler::run(c.clone(), scheduler::Config::default())),
            ),
            (
                "node IPAM",
                Box::pin(controllers::nodeipam::run(c.clone(), self.ipam)),
            ),
        ];
        let mut all = Vec::from(all);
        if let Some(lb) = &self.lb {
            all.push((
                "LoadBalancer IPAM",
                Box::pin(controllers::lbipam::run(c.clone(), lb.clone())),
            ));
        }
        let mut set = tokio::task::JoinSet::new();
        for (name, run) in all {
            set.spawn(async move {
                if let Err(e) = run.await {
                    tracing::error!("{name} stopped: {e:#}");
                }
            });
        }
        set
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // Checked before anything starts: a bad pool is a usage error.
    let lb_pool = (!cli.loadbalancer_pool.is_empty())
        .then(|| {
            controlplane_lite::controllers::lbipam::Pool::new(
                &cli.loadbalancer_pool,
                cli.service_cidr,
                cli.cluster_cidr,
            )
        })
        .transpose()?;
    // Claimed before this process opens any socket of its own: a listening TCP socket at that fd
    // can only be the inherited one.
    let inherited = cli
        .inherited_listener_fd
        .map(inherited_listener)
        .transpose()?;
    prepare_data_dir(&cli.data_dir)?;
    let tokens = Arc::new(auth::Tokens::load_or_init(&cli.data_dir)?);
    match &cli.cmd {
        Some(Cmd::NodeToken { node }) => {
            println!("{}", tokens.node_token(node)?);
            return Ok(());
        }
        Some(Cmd::KubeletCert {
            node,
            ip,
            cert_file,
            key_file,
        }) => {
            let files = tls::TlsFiles::in_dir(&cli.data_dir);
            let (cert, key) = tls::issue_kubelet_serving(&files, node, ip)?;
            ferry_sys::fs::write_atomic(
                key_file,
                key.as_bytes(),
                ferry_sys::fs::WriteOptions::private(),
            )
            .with_context(|| format!("writing {}", key_file.display()))?;
            std::fs::write(cert_file, cert)
                .with_context(|| format!("writing {}", cert_file.display()))?;
            return Ok(());
        }
        None => {}
    }
    let advertise = cli
        .advertise_address
        .clone()
        .unwrap_or_else(|| cli.listen.to_string());
    let host = advertise
        .rsplit_once(':')
        .map_or(advertise.as_str(), |(h, _)| h)
        .trim_matches(['[', ']'])
        .to_owned();
    let mut sans = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        host.clone(),
        cli.listen.ip().to_string(),
        "kubernetes".to_owned(),
        "kubernetes.default".to_owned(),
    ];
    sans.extend(cli.tls_san.iter().cloned());
    sans.sort();
    sans.dedup();
    let files = tls::TlsFiles::in_dir(&cli.data_dir);
    let ca = tls::ensure(&files, &sans)?;
    let tls_cfg = tls::server_config(&files)?;
    tls::ensure_kubelet_client(&files)?;
    let kubelet_tls = tls::kubelet_client_config(&files)?;
    let kubeconfig = cli.data_dir.join("admin.kubeconfig");
    // Holds the admin token: created 0600 (temporary file + rename), never readable by others.
    tls::write_private(
        &kubeconfig,
        &kubeconfig::render(
            "ferry",
            &format!("https://{advertise}"),
            &ca,
            "admin",
            &tokens.admin(),
        ),
    )?;

    let store: Arc<dyn ferry_store::Store> = match cli.store {
        StoreKind::Sqlite => Arc::new(
            ferry_store::sqlite::SqliteStore::open(
                &cli.data_dir.join("store.db"),
                ferry_store::sqlite::SqliteOptions {
                    compaction_interval: Some(Duration::from_secs(cli.compaction_interval.max(1))),
                    retained_revisions: cli.retained_revisions,
                    progress_interval: Duration::from_secs(cli.progress_interval.max(1)),
                    ..ferry_store::sqlite::SqliteOptions::default()
                },
            )
            .await
            .context("opening the SQLite store")?,
        ),
        StoreKind::Etcd => {
            if cli.etcd_endpoints.is_empty() {
                bail!("--store etcd needs --etcd-endpoints");
            }
            let opts = ferry_store::etcd::EtcdOptions {
                compaction_interval: Some(Duration::from_secs(cli.compaction_interval.max(1))),
                retained_revisions: cli.retained_revisions,
                ..ferry_store::etcd::EtcdOptions::default()
            };
            Arc::new(
                ferry_store::etcd::EtcdStore::connect_with(
                    &cli.etcd_endpoints,
                    &cli.etcd_prefix,
                    opts,
                )
                .await
                .context("connecting to etcd")?,
            )
        }
    };
    let cfg = api::Config {
        service_cidr: cli.service_cidr,
        node_port_range: parse_range(&cli.node_port_range)?,
        advertise: advertise.clone(),
        bookmark_interval: Duration::from_secs(cli.bookmark_interval.max(1)),
        max_watches_per_client: cli.max_watches_per_client,
        max_body: cli.max_request_bytes,
        http: cli.http.clone(),
        kubelet_tls: Some(kubelet_tls),
        ..api::Config::default()
    };
    let tokens_admin = tokens.admin();
    let api = Arc::new(api::Api::new(store, tokens, cfg));
    api.bootstrap().await?;
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("listening on {}", cli.listen))?;
    tracing::info!(
        "serving on https://{} (kubeconfig {})",
        listener.local_addr()?,
        kubeconfig.display()
    );
    let local = listener.local_addr()?;
    let mut listeners = vec![listener];
    if let Some(l) = inherited {
        let l = tokio::net::TcpListener::from_std(l).context("--inherited-listener-fd")?;
        tracing::info!("also serving on https://{} (inherited)", l.local_addr()?);
        listeners.push(l);
    }
    // The scheduler and controllers are ordinary API clients of this server.
    let host = if local.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        local.ip().to_string()
    };
    let client = kubeconfig::builder(
        "ferry",
        &format!("https://{host}:{}", local.port()),
        &ca,
        "admin",
        &tokens_admin,
    )
    .build()
    .await
    .context("in-process client")?;
    // The `kubernetes` Service is the API server's own, also without `--controllers`.
    let k8s_svc = controlplane_lite::controllers::kubernetes_service::Config::new(
        cli.service_cidr,
        &advertise,
    );
    if k8s_svc.endpoint.is_none() {
        tracing::warn!(
            "--advertise-address {advertise} is not an IPv4 address pods can reach: the \
             kubernetes Service gets no endpoint of this server"
        );
    }
    let kc = client.clone();
    tokio::spawn(async move {
        if let Err(e) = controlplane_lite::controllers::kubernetes_service::run(kc, k8s_svc).await {
            tracing::error!("kubernetes service controller stopped: {e:#}");
        }
    });
    // The scheduler and the controllers: in one replica at a time with leader election.
    let election = if cli.controllers {
        let controllers = Controllers {
            client,
            life: controlplane_lite::controllers::nodelifecycle::Config {
                grace: Duration::from_secs(cli.node_monitor_grace_period),
                eviction: Duration::from_secs(cli.pod_eviction_timeout),
            },
            ipam: controlplane_lite::controllers::nodeipam::Config {
                cluster_cidr: cli.cluster_cidr,
                node_mask: cli.node_cidr_mask_size,
            },
            lb: lb_pool.map(|pool| controlplane_lite::controllers::lbipam::Config { pool }),
        };
        if cli
            .leader_elect
            .unwrap_or(matches!(cli.store, StoreKind::Etcd))
        {
            let le = controlplane_lite::leader::Config {
                namespace: cli.leader_elect_resource_namespace.clone(),
                name: cli.leader_elect_resource_name.clone(),
                identity: controlplane_lite::leader::default_identity(),
                lease_duration: cli.leader_elect_lease_duration,
                renew_deadline: cli.leader_elect_renew_deadline,
                retry_period: cli.leader_elect_retry_period,
            };
            le.validate()?;
            let lc = controllers.client.clone();
            Some(controlplane_lite::leader::spawn(lc, le, move || {
                controllers.start()
            }))
        } else {
            // Detached: they run as long as the process.
            controllers.start().detach_all();
            None
        }
    } else {
        None
    };
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        // Still serving: the release goes through this server.
        if let Some(e) = election {
            e.shutdown().await;
        }
    };
    server::serve(api, listeners, tls_cfg, shutdown).await
}
