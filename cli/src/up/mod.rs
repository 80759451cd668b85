//! `ferry up`: a complete cluster on this machine, every piece inside network namespaces.
//!
//! Checks come first and create nothing: root, the binaries, no cluster of that name (nor its
//! leftovers), and the apiserver port, bound right away on 127.0.0.1 in the root namespace. Then,
//! recording each resource in the state file before creating it: the namespaces and the underlay
//! (a bridge in the switch namespace, one veth per member, an external host on it), the cgroups,
//! the node directories with ferry-cni installed, the node tokens, ferry-server (in the
//! control-plane namespace, also serving on the inherited loopback listener; with `--servers N`,
//! N replicas on a three-member etcd behind `ferry apiserver-lb`, see [`crate::ha`]), then each
//! node's ferry-agent and ferry-kubelet. It returns once every node is Ready. Any failure after
//! the first resource exists runs `ferry down`'s teardown, so the machine is left clean.

mod bins;
mod components;
mod network;

use crate::down::{self, Target};
use crate::state::{ClusterDir, Phase, ProcId, State};
use crate::sys::{self};
use crate::topology::{self, Topology};
use crate::{cgroup, status};
use anyhow::{anyhow, bail, Context, Result};
use bins::{find_bins, Bins};
use std::ffi::OsString;
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// The apiserver's storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Store {
    /// The embedded SQLite store.
    Sqlite,
    /// An etcd started in the control-plane namespace.
    Etcd,
}

impl Store {
    fn name(self) -> &'static str {
        match self {
            Store::Sqlite => "sqlite",
            Store::Etcd => "etcd",
        }
    }
}

/// How the node agents implement Services (`ferry-agent --service-proxy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ServiceProxy {
    /// eBPF socket-level load balancing on the node's cgroup.
    Ebpf,
    /// kube-proxy-style iptables rules.
    Iptables,
    /// No Service routing.
    Off,
}

impl ServiceProxy {
    fn name(self) -> &'static str {
        match self {
            ServiceProxy::Ebpf => "ebpf",
            ServiceProxy::Iptables => "iptables",
            ServiceProxy::Off => "off",
        }
    }
}

/// `ferry up` flags.
#[derive(Debug, clap::Args)]
pub(crate) struct UpArgs {
    #[command(flatten)]
    pub(crate) target: Target,
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub(crate) nodes: u32,
    /// The apiserver's storage: the embedded SQLite store, or an etcd run in the control-plane
    /// namespace.
    #[arg(long, value_enum, default_value = "sqlite")]
    pub(crate) store: Store,
    /// ferry-server replicas (1-5; more than 1 needs `--store etcd`): they then run on a
    /// three-member etcd, behind a TCP balancer on the apiserver's addresses, one of them
    /// running the scheduler and controllers (leader election).
    #[arg(long, default_value_t = 1)]
    pub(crate) servers: u32,
    /// The apiserver's port on 127.0.0.1 in the root namespace (0: any free port).
    #[arg(long, default_value_t = 6443)]
    pub(crate) api_port: u16,
    /// Overlay backend of the node agents.
    #[arg(long, default_value = "vxlan", value_parser = ["vxlan", "host-gw", "udp"])]
    pub(crate) backend: String,
    /// How the node agents route Services: eBPF socket LB on each node's cgroup (maps pinned
    /// under /sys/fs/bpf/ferry-<name>/<node>), kube-proxy-style iptables rules, or not at all.
    #[arg(long, value_enum, default_value = "ebpf")]
    pub(crate) service_proxy: ServiceProxy,
    /// eBPF mode: the agents' pod fast path (tc `bpf_redirect_peer` into pods, `ferry-agent
    /// --pod-fast-path`); `false` keeps pod traffic on the bridge path (to compare the two).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) pod_fast_path: bool,
    /// ClusterIP range, given to the apiserver and the agents alike. A /16, not upstream's
    /// 10.96.0.0/12: that one spans 10.96-10.111 and so holds the underlay (10.99.0.0/24).
    #[arg(long, default_value = "10.96.0.0/16")]
    pub(crate) service_cidr: String,
    /// Addresses for LoadBalancer Services (the apiserver's `--loadbalancer-pool`, comma-separated
    /// CIDRs); the default is a /27 of the underlay that no lab member uses.
    #[arg(long, default_value = topology::LB_POOL)]
    pub(crate) loadbalancer_pool: String,
    /// Directory holding ferry-server, ferry-kubelet, ferry-agent and ferry-cni (default: the
    /// directory of this `ferry` executable, where cargo builds them all).
    #[arg(long)]
    pub(crate) bin_dir: Option<PathBuf>,
    /// Seconds `ferry up` may take in all before it gives up.
    #[arg(long, default_value_t = 60)]
    pub(crate) timeout: u64,
    /// Seconds without a Lease renewal before a node is marked NotReady (the apiserver's
    /// `--node-monitor-grace-period`); kubelets renew every quarter of it (10 s for the default).
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u64).range(4..=3600))]
    pub(crate) node_grace: u64,
    /// Leave everything in place when `ferry up` fails (to debug it; `ferry down` removes it).
    #[arg(long)]
    pub(crate) keep_on_failure: bool,
    /// Do not start ferry-agent (nodes then stay NotReady: nothing writes their CNI config).
    #[arg(long, hide = true)]
    pub(crate) no_agent: bool,
    /// Do not start ferry-kubelet (no node registers; `ferry up` waits for the apiserver only).
    #[arg(long, hide = true)]
    pub(crate) no_kubelet: bool,
}

/// `ferry down --name N [--state-dir D]`, as a hint in messages.
pub(crate) fn down_hint(t: &Target) -> String {
    let mut s = format!("ferry down --name {}", t.name);
    if t.state_dir != Path::new(crate::state::DEFAULT_STATE_DIR) {
        s.push_str(&format!(" --state-dir {}", t.state_dir.display()));
    }
    s
}

fn check_not_up(t: &Target, dir: &ClusterDir) -> Result<()> {
    let name = &t.name;
    let hint = down_hint(t);
    match dir.load() {
        Ok(Some(s)) => {
            let alive = s.components.iter().any(|c| c.proc.is_running())
                || s.up.is_some_and(ProcId::is_running);
            if alive {
                bail!("cluster {name} is already up ({hint} first)");
            }
            bail!(
                "cluster {name} is not running, but its state is still in {} (left by a \
                 crashed ferry up?): run {hint} first",
                dir.path().display()
            );
        }
        Err(e) => bail!("cluster {name} left unreadable state ({e:#}): run {hint} first"),
        Ok(None) => {}
    }
    let left = down::leftovers(name, dir);
    if !left.is_empty() {
        bail!(
            "leftovers of a cluster named {name} exist ({}): run {hint} first",
            left.join(", ")
        );
    }
    Ok(())
}

fn bind_api(port: u16) -> Result<TcpListener> {
    match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            bail!("port {port} on 127.0.0.1 is in use (choose another with --api-port)")
        }
        Err(e) => Err(e).with_context(|| format!("binding 127.0.0.1:{port} for the apiserver")),
    }
}

/// `ferry up`.
pub(crate) fn run(args: &UpArgs) -> Result<()> {
    let name = &args.target.name;
    topology::validate_name(name).map_err(|e| anyhow!(e))?;
    if !(1..=topology::MAX_NODES).contains(&args.nodes) {
        bail!("--nodes must be between 1 and {}", topology::MAX_NODES);
    }
    if args.backend.is_empty()
        || !args
            .backend
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'-')
    {
        bail!("invalid --backend {:?}", args.backend);
    }
    validate_servers(args.servers, args.store)?;
    if !sys::is_root() {
        bail!("ferry up needs root: it creates network namespaces");
    }
    validate_service_cidr(&args.service_cidr)?;
    validate_loadbalancer_pool(&args.loadbalancer_pool, &args.service_cidr)?;
    let bins = find_bins(args)?;
    let cgroup_root = cgroup::root()?;
    let dir = ClusterDir::new(&args.target.state_dir, name);
    check_not_up(&args.target, &dir)?;
    let listener = bind_api(args.api_port)?;
    let port = listener.local_addr()?.port();
    sys::catch_interrupts();
    match dir.create() {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!(
                "cluster {name} is already up ({} first)",
                down_hint(&args.target)
            )
        }
        Err(e) => {
            return Err(e).with_context(|| format!("creating {}", dir.path().display()));
        }
    }
    let up_proc = sys::start_time(sys::own_pid()).map(|start_time| ProcId {
        pid: sys::own_pid(),
        start_time,
    });
    let state = State {
        name: name.clone(),
        phase: Phase::Creating,
        up: up_proc,
        nodes: args.nodes,
        store: args.store.name().to_owned(),
        api_port: port,
        cgroup_root,
        namespaces: Vec::new(),
        links: Vec::new(),
        cgroups: Vec::new(),
        components: Vec::new(),
        kubeconfig: None,
        bpffs: None,
        service_proxy: bins
            .agent_services
            .then(|| args.service_proxy.name().to_owned()),
    };
    let mut up = Up {
        args,
        topo: Topology {
            name: name.clone(),
            nodes: args.nodes,
        },
        dir,
        state,
        bins,
        port,
        started: Instant::now(),
        deadline: Instant::now() + Duration::from_secs(args.timeout),
        children: Vec::new(),
        tokens: Vec::new(),
    };
    println!(
        "ferry up: cluster {name}, {} node(s), store {}, apiserver on 127.0.0.1:{port}",
        args.nodes,
        args.store.name()
    );
    match up.bring_up(listener) {
        Ok(ready_in) => {
            up.summary(ready_in);
            Ok(())
        }
        Err(e) => {
            let e = if sys::interrupted() {
                anyhow!("interrupted")
            } else {
                e
            };
            up.fail(e)
        }
    }
}

/// A component process to start.
#[derive(Debug)]
struct Launch {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    netns: String,
    cgroup: PathBuf,
    address: String,
    /// A socket handed over as fd 3.
    fd3: Option<OwnedFd>,
}

/// One run of `ferry up`.
struct Up<'a> {
    args: &'a UpArgs,
    topo: Topology,
    dir: ClusterDir,
    state: State,
    bins: Bins,
    port: u16,
    started: Instant,
    deadline: Instant,
    /// Started components, to notice one that exits.
    children: Vec<(String, Child)>,
    /// Node tokens, by node index - 1.
    tokens: Vec<String>,
}

impl std::fmt::Debug for Up<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Up").field("name", &self.topo.name).finish()
    }
}

impl Up<'_> {
    fn save(&self) -> Result<()> {
        self.dir.save(&self.state)
    }

    fn step(&self, msg: impl std::fmt::Display) {
        println!("[{:5.2}s] {msg}", self.started.elapsed().as_secs_f64());
    }

    /// Fails when interrupted, out of time, or when a started component exited.
    fn check(&mut self, waiting_for: &str) -> Result<()> {
        if sys::interrupted() {
            bail!("interrupted");
        }
        for (name, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                let log = self
                    .state
                    .components
                    .iter()
                    .find(|c| &c.name == name)
                    .map(|c| c.log.clone())
                    .unwrap_or_default();
                bail!(
                    "{name} exited ({status}) while waiting for {waiting_for}; last lines of {}:\n{}",
                    log.display(),
                    tail(&log, 20)
                );
            }
        }
        if Instant::now() >= self.deadline {
            bail!(
                "timed out after {}s waiting for {waiting_for} (--timeout); logs are in {}",
                self.args.timeout,
                self.dir.logs().display()
            );
        }
        Ok(())
    }

    /// Everything, in order; returns the time it took until every node was Ready.
    fn bring_up(&mut self, listener: TcpListener) -> Result<Duration> {
        self.save()?;
        self.create_network()?;
        self.create_cgroups()?;
        self.create_bpffs()?;
        self.prepare_files()?;
        if self.args.store == Store::Etcd {
            self.start_etcd()?;
        }
        self.node_tokens()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        self.start_server(&listener)?;
        // The server holds the listener now; ours would keep the port bound after a failure.
        drop(listener);
        let client = self.wait_apiserver(&rt)?;
        self.start_more_servers()?;
        self.start_nodes()?;
        self.wait_nodes(&rt, &client)?;
        let ready_in = self.started.elapsed();
        self.state.phase = Phase::Up;
        self.state.up = None;
        self.save()?;
        Ok(ready_in)
    }

    fn summary(&self, ready_in: Duration) {
        let what = if self.bins.kubelet.is_none() {
            "control plane up, no nodes started (--no-kubelet)".to_owned()
        } else if self.bins.agent.is_none() {
            format!(
                "{n}/{n} nodes registered (NotReady without ferry-agent: --no-agent)",
                n = self.topo.nodes
            )
        } else {
            format!("{n}/{n} nodes Ready", n = self.topo.nodes)
        };
        println!(
            "\ncluster {} is up: {what} in {:.1}s\n",
            self.topo.name,
            ready_in.as_secs_f64()
        );
        let kc = self.dir.kubeconfig();
        println!("kubeconfig: {}", kc.display());
        println!("  export KUBECONFIG={}\n", kc.display());
        status::print_components(&self.state.components, false);
        println!("\nlogs: {}", self.dir.logs().display());
        let mut status = format!("ferry status --name {}", self.topo.name);
        if self.args.target.state_dir != Path::new(crate::state::DEFAULT_STATE_DIR) {
            status.push_str(&format!(
                " --state-dir {}",
                self.args.target.state_dir.display()
            ));
        }
        println!("health: {status}");
        println!("remove: {}", down_hint(&self.args.target));
    }

    /// After a failure: tear down (or keep with `--keep-on-failure`) and return the cause.
    fn fail(mut self, cause: anyhow::Error) -> Result<()> {
        use std::io::Write;
        let mut err = std::io::stderr().lock();
        let name = self.topo.name.clone();
        if self.args.keep_on_failure {
            self.state.phase = Phase::Failed;
            self.state.up = None;
            let _ = self.save();
            let _ = writeln!(
                err,
                "ferry up failed; --keep-on-failure left cluster {name} in place (logs in {}); \
                 {} removes it",
                self.dir.logs().display(),
                down_hint(&self.args.target)
            );
            return Err(cause);
        }
        let _ = writeln!(err, "ferry up failed; removing what it created:");
        let removed = down::teardown(&name, &self.dir, Some(&self.state));
        // Reap our own children (killed above).
        for (_, child) in &mut self.children {
            let _ = child.wait();
        }
        removed.print(&mut err, "  ");
        if !removed.errors.is_empty() {
            let _ = writeln!(
                err,
                "  cleanup incomplete: run {}",
                down_hint(&self.args.target)
            );
        }
        Err(cause)
    }
}

/// Checks `--servers`: 1..=[`crate::ha::MAX_SERVERS`], more than one only on etcd (SQLite is one
/// process's file).
fn validate_servers(servers: u32, store: Store) -> Result<()> {
    if !(1..=crate::ha::MAX_SERVERS).contains(&servers) {
        bail!(
            "--servers must be between 1 and {} (got {servers})",
            crate::ha::MAX_SERVERS
        );
    }
    if servers > 1 && store != Store::Etcd {
        bail!(
            "--servers {servers} needs --store etcd: replicas share their state through etcd \
             (the SQLite store belongs to one process)"
        );
    }
    Ok(())
}

/// Checks `--service-cidr`: an IPv4 `a.b.c.d/len` with len 8..=30 and no host bits.
fn validate_service_cidr(cidr: &str) -> Result<()> {
    let bad =
        || anyhow!("invalid --service-cidr {cidr:?}: expected an IPv4 network like 10.96.0.0/12");
    let (ip, len) = cidr.split_once('/').ok_or_else(bad)?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let len: u32 = len.parse().map_err(|_| bad())?;
    if !(8..=30).contains(&len) || u32::from(ip) & (u32::MAX >> len) != 0 {
        return Err(bad());
    }
    Ok(())
}

/// `a.b.c.d/len` as (first, last) address, if it is a network (no host bits).
fn cidr_span(cidr: &str) -> Option<(u32, u32)> {
    let (ip, len) = cidr.split_once('/')?;
    let ip = u32::from(ip.parse::<Ipv4Addr>().ok()?);
    let len: u32 = len.parse().ok().filter(|l| *l <= 32)?;
    let host = u32::MAX.checked_shr(len).unwrap_or(0);
    (ip & host == 0).then_some((ip, ip | host))
}

/// Checks `--loadbalancer-pool`: IPv4 CIDRs that hold no lab member's underlay address (control
/// plane and replicas .2-.7, nodes from .11, the external host) and do not overlap the service
/// CIDR (the apiserver checks that too, after the lab is built).
fn validate_loadbalancer_pool(pool: &str, service_cidr: &str) -> Result<()> {
    if pool.split(',').all(str::is_empty) {
        bail!("--loadbalancer-pool must name at least one CIDR");
    }
    let svc = cidr_span(service_cidr);
    let members = [
        (
            u32::from(topology::CP_IP),
            u32::from(crate::ha::server_ip(crate::ha::MAX_SERVERS)),
        ),
        (
            u32::from(topology::node_ip(1)),
            u32::from(topology::node_ip(topology::MAX_NODES)),
        ),
        (u32::from(topology::EXT_IP), u32::from(topology::EXT_IP)),
    ];
    for cidr in pool.split(',').filter(|c| !c.is_empty()) {
        let (lo, hi) = cidr_span(cidr).ok_or_else(|| {
            anyhow!(
                "invalid --loadbalancer-pool {cidr:?}: expected an IPv4 network like {}",
                topology::LB_POOL
            )
        })?;
        if let Some((a, b)) = svc.filter(|(a, b)| lo <= *b && *a <= hi) {
            bail!(
                "--loadbalancer-pool {cidr} overlaps --service-cidr {service_cidr} ({}-{})",
                Ipv4Addr::from(a),
                Ipv4Addr::from(b)
            );
        }
        if let Some((a, _)) = members.iter().find(|(a, b)| lo <= *b && *a <= hi) {
            bail!(
                "--loadbalancer-pool {cidr} holds lab member addresses (from {})",
                Ipv4Addr::from(*a)
            );
        }
    }
    Ok(())
}

/// The last `n` lines of a log file, indented.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadbalancer_pool_avoids_members_and_service_cidr() {
        assert!(validate_loadbalancer_pool(topology::LB_POOL, "10.96.0.0/16").is_ok());
        assert!(
            validate_loadbalancer_pool("10.99.0.100/30,10.99.0.240/29", "10.96.0.0/16").is_ok()
        );
        let e = |pool: &str, svc: &str| {
            validate_loadbalancer_pool(pool, svc)
                .unwrap_err()
                .to_string()
        };
        assert!(e(topology::LB_POOL, "10.96.0.0/12").contains("overlaps --service-cidr"));
        assert!(e("10.99.0.0/28", "10.96.0.0/16").contains("from 10.99.0.2"));
        assert!(e("10.99.0.64/27", "10.96.0.0/16").contains("from 10.99.0.11"));
        assert!(e("10.99.0.254/32", "10.96.0.0/16").contains("from 10.99.0.254"));
        assert!(e("10.99.0.193/27", "10.96.0.0/16").contains("invalid --loadbalancer-pool"));
        assert!(e("nope", "10.96.0.0/16").contains("invalid --loadbalancer-pool"));
        assert!(e("", "10.96.0.0/16").contains("at least one CIDR"));
        assert_eq!(
            cidr_span("10.99.0.192/27"),
            Some((0x0a63_00c0, 0x0a63_00df))
        );
        assert_eq!(cidr_span("0.0.0.0/0"), Some((0, u32::MAX)));
    }

    #[test]
    fn servers_flag_is_bounded_and_needs_etcd_for_replicas() {
        assert!(validate_servers(1, Store::Sqlite).is_ok());
        assert!(validate_servers(3, Store::Etcd).is_ok());
        assert!(validate_servers(5, Store::Etcd).is_ok());
        let e = validate_servers(3, Store::Sqlite).unwrap_err().to_string();
        assert!(e.contains("needs --store etcd"), "{e}");
        for bad in [0, 6, 100] {
            let e = validate_servers(bad, Store::Etcd).unwrap_err().to_string();
            assert!(e.contains("between 1 and 5"), "{e}");
        }
    }
}
