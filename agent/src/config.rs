//! The node agent's settings: command-line flags ([`RunArgs`]) validated into a [`Config`].
//!
//! `ferry up` starts one agent per node, inside that node's network namespace:
//!
//! ```text
//! ferry-agent --node-name N --server https://IP:PORT --token-file F --certificate-authority CA.crt \
//!     --cni-conf-dir D --run-dir R [--iface eth0] [--backend vxlan|host-gw|udp] [--direct-routing] \
//!     [--resync-seconds 10] [--cluster-cidr 10.244.0.0/16] [--ip-masq true|false] \
//!     [--no-masquerade-cidrs CIDR,...] [--metrics-address 127.0.0.1:9465|off] \
//!     [--service-proxy ebpf|iptables|off] [--proxy-cgroup DIR] [--bpffs-dir DIR] [--proxy-fallback] \
//!     [--service-cidr 10.96.0.0/12] [--pod-netfilter-bypass true|false] [--pod-fast-path true|false] \
//!     [--external-datapath true|false] [--external-xdp true|false] [--maglev-table-size 16381] \
//!     [--maglev-seed N]
//! ```

use ipnetwork::Ipv4Network;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Parent of the default `--bpffs-dir` (`<this>/<node-name>`).
pub const DEFAULT_BPFFS_ROOT: &str = "/sys/fs/bpf/ferry";

/// Default of `--metrics-address`.
pub const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1:9465";

/// How Services are implemented on this node (`--service-proxy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProxyMode {
    /// Cgroup socket hooks (`connect4`, `sendmsg4`, `recvmsg4`, `getpeername4`): connections go
    /// straight to a backend, no per-packet NAT, no conntrack entry.
    Ebpf,
    /// kube-proxy-style iptables rules in ferry's own chains (DNAT with random `statistic`
    /// matching per endpoint).
    Iptables,
    /// Services are not routed by ferry (another proxy does it).
    Off,
}

impl ProxyMode {
    /// `ebpf` / `iptables` / `off`, as the flag, metrics and `ferry status` spell it.
    pub const fn name(self) -> &'static str {
        match self {
            ProxyMode::Ebpf => "ebpf",
            ProxyMode::Iptables => "iptables",
            ProxyMode::Off => "off",
        }
    }
}

/// The overlay backend that carries pod traffic between nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// Kernel VXLAN device `ferry.1` (VNI 1, UDP 8472), flannel-compatible: one onlink route,
    /// one neighbour and one FDB entry per peer. Works across L3 boundaries.
    Vxlan,
    /// One route per peer node: `<peer podCIDR> via <peer IP> dev <iface>` (needs L2 adjacency
    /// between nodes; no encapsulation, so pods get the full interface MTU).
    HostGw,
    /// Userspace encapsulation (flannel's `udp` wire format, UDP 8285): TUN device
    /// `ferry.udp`, one route per peer, multi-threaded batched datapath in the agent. For
    /// underlays that block VXLAN.
    Udp,
}

impl Backend {
    /// The name published in `flannel.alpha.coreos.com/backend-type`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Vxlan => "vxlan",
            Backend::HostGw => "host-gw",
            Backend::Udp => "udp",
        }
    }
}

/// Printed on stderr when `--token` is used.
pub const TOKEN_FLAG_WARNING: &str = "warning: --token puts the bearer token on the command line, \
     where every local user can read it (ps, /proc/PID/cmdline); use --token-file";

/// Flags of the agent's main mode. They are `Option`s only so that `ferry-agent programs` can
/// run without them; [`RunArgs::into_config`] insists on the required ones.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// This node's name (its Node object).
    #[arg(long, required = true)]
    pub node_name: Option<String>,
    /// API server URL (`https://IP:PORT`).
    #[arg(long, required = true)]
    pub server: Option<String>,
    /// Bearer token (the node's token: `ferry-server node-token --node N`). Kept for
    /// compatibility only: any local user reads it in `ps`, so using it prints a warning; use
    /// `--token-file`.
    #[arg(
        long,
        required_unless_present = "token_file",
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// File holding the bearer token (re-read by the client, so the token can be rotated).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// CA certificate (PEM) the API server's certificate must chain to.
    #[arg(long, required = true)]
    pub certificate_authority: Option<PathBuf>,
    /// Directory the CNI conflist `10-ferry.conflist` is written to.
    #[arg(long, required = true)]
    pub cni_conf_dir: Option<PathBuf>,
    /// Directory of the node network file `subnet.env` and the IPAM state `ipam/`.
    #[arg(long, required = true)]
    pub run_dir: Option<PathBuf>,
    /// Underlay interface: peer routes go out of it, its MTU is the pods' MTU.
    #[arg(long, default_value = "eth0")]
    pub iface: String,
    /// Overlay backend.
    #[arg(long, value_enum, default_value = "vxlan")]
    pub backend: Backend,
    /// VXLAN backend: peers whose public IP is on one of the underlay interface's subnets get a
    /// plain route (host-gw style) instead of the tunnel.
    #[arg(long)]
    pub direct_routing: bool,
    /// Masquerade pod traffic leaving the cluster network to the node's address (iptables).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub ip_masq: bool,
    /// Destinations (comma separated CIDRs) pod traffic to which is never masqueraded, in
    /// addition to the cluster network.
    #[arg(long, value_delimiter = ',')]
    pub no_masquerade_cidrs: Vec<Ipv4Network>,
    /// Seconds between full reconciliations (routes are also reconciled on every Node change).
    #[arg(long, default_value_t = 10)]
    pub resync_seconds: u64,
    /// Cluster pod network (`FERRY_NETWORK`); every node's podCIDR must lie inside it.
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: Ipv4Network,
    /// Prometheus metrics endpoint `IP:PORT` (`GET /metrics`, `GET /healthz`), in the node's
    /// network namespace; `off` (or empty) disables it.
    #[arg(long, default_value = DEFAULT_METRICS_ADDRESS)]
    pub metrics_address: String,
    /// vxlan/udp: seconds between ICMP probes of every peer through the tunnel (peers are also
    /// probed whenever they change); 0 disables the probes.
    #[arg(long, default_value_t = 10)]
    pub probe_seconds: u64,
    /// How Services are routed on this node: `ebpf` (cgroup socket hooks), `iptables`
    /// (kube-proxy-style rules in ferry's chains) or `off` (another proxy does it).
    #[arg(long, value_enum, default_value = "ebpf")]
    pub service_proxy: ProxyMode,
    /// ebpf: the cgroup v2 directory the socket hooks attach to (the node's cgroup holding its
    /// pods and host processes). Required by the eBPF proxier.
    #[arg(long)]
    pub proxy_cgroup: Option<PathBuf>,
    /// ebpf: the bpffs directory the maps and links are pinned in (default
    /// `/sys/fs/bpf/ferry/<node-name>`).
    #[arg(long)]
    pub bpffs_dir: Option<PathBuf>,
    /// If the eBPF datapath cannot load or attach and nothing was programmed yet, route Services
    /// with the iptables proxier instead (reported on the Node and in the log).
    #[arg(long)]
    pub proxy_fallback: bool,
    /// ebpf: while the eBPF socket LB is this node's Service datapath, pod-to-pod traffic skips
    /// netfilter (`bridge-nf-call-iptables=0` in the node's namespace, raw `NOTRACK` for
    /// forwarded pod-to-pod packets); `false` keeps both, for rules of others that must see
    /// bridged pod traffic. Never applied in iptables mode, which needs both.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub pod_netfilter_bypass: bool,
    /// ebpf: while the pod netfilter bypass is applied, hand packets for this node's pods
    /// straight to the pod with tc programs (`bpf_redirect_peer`) instead of through the bridge;
    /// `false` detaches them (see docs/agent.md, "The pod fast path").
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub pod_fast_path: bool,
    /// ebpf: translate traffic from outside the node to NodePorts, externalIPs and LoadBalancer
    /// IPs with tc programs on the underlay, bridge and overlay device (`false`: only the socket
    /// LB, which serves the node's own processes and pods).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub external_datapath: bool,
    /// ebpf, with the external datapath: also attach the XDP program (native mode) to the
    /// underlay, which sends tracked external flows that leave by the underlay again straight
    /// back out (`XDP_TX`). Off by default: on a veth underlay it strips GSO from the peer, and
    /// the peer needs an XDP program of its own (see docs/services.md, "XDP").
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub external_xdp: bool,
    /// ebpf: size of the Maglev lookup tables for external traffic (prime, 251..=131071).
    #[arg(long, default_value_t = crate::service::maglev::DEFAULT_TABLE_SIZE)]
    pub maglev_table_size: u32,
    /// ebpf: the cluster-wide Maglev and flow hash seed; every node must use the same value (the
    /// default is the same everywhere).
    #[arg(long, default_value_t = DEFAULT_MAGLEV_SEED)]
    pub maglev_seed: u64,
    /// The Service network (the API server's `--service-cluster-ip-range`).
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cidr: Ipv4Network,
    /// Seconds the other agents keep counting on this node's L2 announcer after its last
    /// renewal of its Lease (`kube-node-lease/ferry-l2-<node>`, renewed five times as often):
    /// an agent that dies while its Node stays Ready loses its LoadBalancer addresses to other
    /// nodes this long after its last renewal (2..=300).
    #[arg(long, default_value_t = 10)]
    pub l2_lease_seconds: u64,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's name.
    pub node_name: String,
    /// API server URL.
    pub server: String,
    /// How the agent authenticates.
    pub credentials: Credentials,
    /// CA certificate file.
    pub certificate_authority: PathBuf,
    /// CNI configuration directory.
    pub cni_conf_dir: PathBuf,
    /// Run directory (`subnet.env`, `ipam/`).
    pub run_dir: PathBuf,
    /// Underlay interface.
    pub iface: String,
    /// Overlay backend.
    pub backend: Backend,
    /// VXLAN: plain routes to peers on the same L2 subnet.
    pub direct_routing: bool,
    /// Masquerade pod egress.
    pub ip_masq: bool,
    /// Extra non-masquerade destinations.
    pub no_masquerade_cidrs: Vec<Ipv4Network>,
    /// Full-reconciliation period.
    pub resync: Duration,
    /// Cluster pod network.
    pub cluster_cidr: Ipv4Network,
    /// Metrics endpoint (`None`: disabled).
    pub metrics_address: Option<SocketAddr>,
    /// Tunnel probe period (`None`: no probes).
    pub probe: Option<Duration>,
    /// `--service-proxy`.
    pub service_proxy: ProxyMode,
    /// `--proxy-cgroup`.
    pub proxy_cgroup: Option<PathBuf>,
    /// `--bpffs-dir` (defaulted).
    pub bpffs_dir: PathBuf,
    /// `--proxy-fallback`.
    pub proxy_fallback: bool,
    /// `--pod-netfilter-bypass`.
    pub pod_netfilter_bypass: bool,
    /// `--pod-fast-path`.
    pub pod_fast_path: bool,
    /// `--external-datapath`.
    pub external_datapath: bool,
    /// `--external-xdp`.
    pub external_xdp: bool,
    /// `--maglev-table-size` (checked prime).
    pub maglev_table_size: u32,
    /// `--maglev-seed`.
    pub maglev_seed: u64,
    /// `--service-cidr`.
    pub service_cidr: Ipv4Network,
    /// `--l2-lease-seconds`.
    pub l2_lease: Duration,
}

/// Default `--maglev-seed` (any fixed value works as long as every node uses the same).
pub const DEFAULT_MAGLEV_SEED: u64 = 0x6665_7272_795f_6d67;

/// The agent's bearer token: given on the command line, or in a file.
#[derive(Clone)]
pub enum Credentials {
    /// `--token`.
    Token(String),
    /// `--token-file`.
    TokenFile(PathBuf),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Token(_) => f.write_str("Token(<redacted>)"),
            Credentials::TokenFile(p) => f.debug_tuple("TokenFile").field(p).finish(),
        }
    }
}

/// A missing or invalid flag.
#[derive(Debug, thiserror::Error)]
#[error("--{flag}: {problem}")]
pub struct ConfigError {
    /// The flag.
    pub flag: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

fn required<T>(v: Option<T>, flag: &'static str) -> Result<T, ConfigError> {
    v.ok_or(ConfigError {
        flag,
        problem: "is required".into(),
    })
}

/// `--token` or `--token-file` (clap already rejects both); a token file must hold a token.
fn credentials(
    token: Option<String>,
    token_file: Option<PathBuf>,
) -> Result<Credentials, ConfigError> {
    match (token, token_file) {
        (Some(t), _) if t.trim().is_empty() => Err(ConfigError {
            flag: "token",
            problem: "is empty".into(),
        }),
        (Some(t), _) => Ok(Credentials::Token(t)),
        (None, Some(path)) => match std::fs::read_to_string(&path) {
            Ok(t) if t.trim().is_empty() => Err(ConfigError {
                flag: "token-file",
                problem: format!("{} is empty", path.display()),
            }),
            // Absolute: kube-rs resolves a relative tokenFile against a kubeconfig directory.
            Ok(_) => Ok(Credentials::TokenFile(
                std::path::absolute(&path).unwrap_or(path),
            )),
            Err(e) => Err(ConfigError {
                flag: "token-file",
                problem: format!("reading {}: {e}", path.display()),
            }),
        },
        (None, None) => Err(ConfigError {
            flag: "token",
            problem: "--token or --token-file is required".into(),
        }),
    }
}

impl RunArgs {
    /// Checks the flags.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let server = required(self.server, "server")?;
        if !server.starts_with("https://") {
            return Err(ConfigError {
                flag: "server",
                problem: format!("{server:?} is not an https:// URL"),
            });
        }
        let node_name = required(self.node_name, "node-name")?;
        if node_name.is_empty() {
            return Err(ConfigError {
                flag: "node-name",
                problem: "is empty".into(),
            });
        }
        if self.resync_seconds == 0 {
            return Err(ConfigError {
                flag: "resync-seconds",
                problem: "must be at least 1".into(),
            });
        }
        if self.external_xdp && !(self.external_datapath && self.service_proxy == ProxyMode::Ebpf) {
            return Err(ConfigError {
                flag: "external-xdp",
                problem: "needs --service-proxy ebpf and --external-datapath true (the XDP \
                          program only accelerates flows the tc datapath tracks)"
                    .into(),
            });
        }
        if !(2..=300).contains(&self.l2_lease_seconds) {
            return Err(ConfigError {
                flag: "l2-lease-seconds",
                problem: format!("{} is not within 2..=300", self.l2_lease_seconds),
            });
        }
        crate::service::maglev::check_size(self.maglev_table_size).map_err(|e| ConfigError {
            flag: "maglev-table-size",
            problem: e.to_string(),
        })?;
        let metrics_address = match self.metrics_address.trim() {
            "" | "off" => None,
            a => Some(a.parse().map_err(|e| ConfigError {
                flag: "metrics-address",
                problem: format!("{a:?} is not IP:PORT or off: {e}"),
            })?),
        };
        Ok(Config {
            server,
            credentials: credentials(self.token, self.token_file)?,
            certificate_authority: required(self.certificate_authority, "certificate-authority")?,
            cni_conf_dir: required(self.cni_conf_dir, "cni-conf-dir")?,
            run_dir: required(self.run_dir, "run-dir")?,
            iface: self.iface,
            backend: self.backend,
            direct_routing: self.direct_routing,
            ip_masq: self.ip_masq,
            no_masquerade_cidrs: self.no_masquerade_cidrs,
            resync: Duration::from_secs(self.resync_seconds),
            cluster_cidr: self.cluster_cidr,
            metrics_address,
            probe: (self.probe_seconds > 0).then(|| Duration::from_secs(self.probe_seconds)),
            service_proxy: self.service_proxy,
            proxy_cgroup: self.proxy_cgroup,
            bpffs_dir: self
                .bpffs_dir
                .unwrap_or_else(|| Path::new(DEFAULT_BPFFS_ROOT).join(&node_name)),
            proxy_fallback: self.proxy_fallback,
            pod_netfilter_bypass: self.pod_netfilter_bypass,
            pod_fast_path: self.pod_fast_path,
            external_datapath: self.external_datapath,
            external_xdp: self.external_xdp,
            maglev_table_size: self.maglev_table_size,
            maglev_seed: self.maglev_seed,
            service_cidr: self.service_cidr,
            l2_lease: Duration::from_secs(self.l2_lease_seconds),
            node_name,
        })
    }
}

impl Config {
    /// The pod fast path's settings: the conflist's network, bridge and IPAM directory, and the
    /// interfaces other nodes' pod packets arrive on (`ferry.1` for vxlan, plus the underlay
    /// with direct routing; the underlay for host-gw; none for udp, whose TUN device carries no
    /// Ethernet header).
    pub fn fast_path_settings(&self) -> crate::fastpath::Settings {
        let node_devices = match self.backend {
            Backend::Vxlan if self.direct_routing => {
                vec![crate::overlay::vxlan::DEVICE.to_owned(), self.iface.clone()]
            }
            Backend::Vxlan => vec![crate::overlay::vxlan::DEVICE.to_owned()],
            Backend::HostGw => vec![self.iface.clone()],
            Backend::Udp => Vec::new(),
        };
        crate::fastpath::Settings {
            bpffs_dir: self.bpffs_dir.clone(),
            ipam_dir: self.ipam_dir(),
            network: crate::subnet::NETWORK_NAME.to_owned(),
            bridge: crate::subnet::BRIDGE.to_owned(),
            cluster: self.cluster_cidr,
            node_devices,
        }
    }

    /// The node network file: `<run-dir>/subnet.env`.
    pub fn subnet_file(&self) -> PathBuf {
        self.run_dir.join("subnet.env")
    }

    /// The built-in IPAM's reservation directory: `<run-dir>/ipam`.
    pub fn ipam_dir(&self) -> PathBuf {
        self.run_dir.join("ipam")
    }

    /// The CNI conflist: `<cni-conf-dir>/10-ferry.conflist`.
    pub fn conflist_file(&self) -> PathBuf {
        self.cni_conf_dir.join(crate::subnet::CONFLIST_NAME)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(extra: &[&str]) -> Result<Config, String> {
        let mut args = vec![
            "ferry-agent",
            "--node-name",
            "n1",
            "--server",
            "https://10.0.0.1:6443",
            "--certificate-authority",
            "/ca.crt",
            "--cni-conf-dir",
            "/etc/cni/net.d",
            "--run-dir",
            "/run/ferry",
        ];
        args.extend_from_slice(extra);
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        cli.run.into_config().map_err(|e| e.to_string())
    }

    #[test]
    fn token_or_token_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "secret\n").unwrap();
        let cfg = parse(&["--token-file", file.to_str().unwrap()]).unwrap();
        assert!(matches!(&cfg.credentials, Credentials::TokenFile(p) if *p == file));
        assert!(!format!("{cfg:?}").contains("secret"));
        let cfg = parse(&["--token", "secret"]).unwrap();
        assert!(matches!(&cfg.credentials, Credentials::Token(t) if t == "secret"));
        assert!(
            !format!("{cfg:?}").contains("secret"),
            "token redacted in Debug"
        );

        let both = parse(&["--token", "t", "--token-file", file.to_str().unwrap()]);
        assert!(both.unwrap_err().contains("cannot be used with"));
        assert!(parse(&[]).unwrap_err().contains("--token"));
        std::fs::write(&file, " \n").unwrap();
        let empty = parse(&["--token-file", file.to_str().unwrap()]).unwrap_err();
        assert!(
            empty.contains("--token-file") && empty.contains("is empty"),
            "{empty}"
        );
        let missing = parse(&["--token-file", "/nonexistent/token"]).unwrap_err();
        assert!(missing.contains("reading /nonexistent/token"), "{missing}");
        assert!(parse(&["--token", ""]).unwrap_err().contains("is empty"));
    }

    #[test]
    fn service_proxy_flags() {
        let cfg = parse(&["--token", "t"]).unwrap();
        assert_eq!(cfg.service_proxy, ProxyMode::Ebpf);
        assert_eq!(cfg.bpffs_dir, Path::new("/sys/fs/bpf/ferry/n1"));
        assert_eq!(cfg.proxy_cgroup, None);
        assert!(!cfg.proxy_fallback);
        assert!(cfg.pod_netfilter_bypass);
        assert!(cfg.pod_fast_path);
        assert_eq!(
            cfg.service_cidr,
            "10.96.0.0/12".parse::<Ipv4Network>().unwrap()
        );
        let cfg = parse(&[
            "--token",
            "t",
            "--service-proxy",
            "iptables",
            "--proxy-cgroup",
            "/sys/fs/cgroup/n1",
            "--bpffs-dir",
            "/sys/fs/bpf/x",
            "--proxy-fallback",
            "--service-cidr",
            "10.100.0.0/16",
            "--pod-netfilter-bypass",
            "false",
        ])
        .unwrap();
        assert_eq!(cfg.service_proxy, ProxyMode::Iptables);
        assert!(!cfg.pod_netfilter_bypass);
        assert_eq!(
            cfg.proxy_cgroup.as_deref(),
            Some(Path::new("/sys/fs/cgroup/n1"))
        );
        assert_eq!(cfg.bpffs_dir, Path::new("/sys/fs/bpf/x"));
        assert!(cfg.proxy_fallback);
        assert_eq!(cfg.service_cidr.to_string(), "10.100.0.0/16");
        assert!(parse(&["--token", "t", "--service-proxy", "ipvs"]).is_err());
    }

    #[test]
    fn metrics_address_flag() {
        let addr = |extra: &[&str]| {
            let mut args = vec!["--token", "t"];
            args.extend_from_slice(extra);
            parse(&args).map(|c| c.metrics_address)
        };
        assert_eq!(
            addr(&[]),
            Ok(Some(DEFAULT_METRICS_ADDRESS.parse().unwrap()))
        );
        assert_eq!(addr(&["--metrics-address", "off"]), Ok(None));
        assert_eq!(addr(&["--metrics-address", ""]), Ok(None));
        assert_eq!(
            addr(&["--metrics-address", "0.0.0.0:9000"]),
            Ok(Some("0.0.0.0:9000".parse().unwrap()))
        );
        let e = addr(&["--metrics-address", "localhost"]).unwrap_err();
        assert!(e.starts_with("--metrics-address: "), "{e}");
    }

    #[test]
    fn external_datapath_flags() {
        let cfg = parse(&["--token", "t"]).unwrap();
        assert!(cfg.external_datapath);
        assert_eq!(cfg.maglev_table_size, 16_381);
        assert_eq!(cfg.maglev_seed, DEFAULT_MAGLEV_SEED);
        let cfg = parse(&[
            "--token",
            "t",
            "--external-datapath",
            "false",
            "--maglev-table-size",
            "251",
            "--maglev-seed",
            "42",
        ])
        .unwrap();
        assert!(!cfg.external_datapath);
        assert!(!cfg.external_xdp, "XDP is opt-in");
        assert_eq!((cfg.maglev_table_size, cfg.maglev_seed), (251, 42));
        assert!(
            parse(&["--token", "t", "--external-xdp", "true"])
                .unwrap()
                .external_xdp
        );
        for bad in [
            &["--external-datapath", "false"][..],
            &["--service-proxy", "iptables"][..],
        ] {
            let args: Vec<&str> = ["--token", "t", "--external-xdp", "true"]
                .into_iter()
                .chain(bad.iter().copied())
                .collect();
            let e = parse(&args).unwrap_err();
            assert!(e.starts_with("--external-xdp: "), "{bad:?}: {e}");
        }
        for bad in ["16380", "7", "200003"] {
            let e = parse(&["--token", "t", "--maglev-table-size", bad]).unwrap_err();
            assert!(e.starts_with("--maglev-table-size: "), "{bad}: {e}");
        }
    }

    #[test]
    fn the_l2_lease_is_ten_seconds_by_default_and_bounded() {
        assert_eq!(
            parse(&["--token", "t"]).unwrap().l2_lease,
            Duration::from_secs(10)
        );
        assert_eq!(
            parse(&["--token", "t", "--l2-lease-seconds", "3"])
                .unwrap()
                .l2_lease,
            Duration::from_secs(3)
        );
        for bad in ["0", "1", "301"] {
            let e = parse(&["--token", "t", "--l2-lease-seconds", bad]).unwrap_err();
            assert!(e.starts_with("--l2-lease-seconds: "), "{bad}: {e}");
        }
        assert!(parse(&["--token", "t", "--l2-lease-seconds", "x"]).is_err());
    }
}
