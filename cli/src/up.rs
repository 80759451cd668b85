//! `ferry up`: a complete cluster on this machine, every piece inside network namespaces.
//!
//! Checks come first and create nothing: root, the binaries, no cluster of that name (nor its
//! leftovers), and the apiserver port, bound right away on 127.0.0.1 in the root namespace. Then,
//! recording each resource in the state file before creating it: the namespaces and the underlay
//! (a bridge in the switch namespace, one veth per member, an external host on it), the cgroups, the node directories with
//! ferry-cni installed, the node tokens, ferry-server (in the control-plane namespace, also serving
//! on the inherited loopback listener), then each node's ferry-agent and ferry-kubelet. It returns
//! once every node is Ready. Any failure after the first resource exists runs `ferry down`'s
//! teardown, so the machine is left clean.

use crate::down::{self, Target};
use crate::state::{ClusterDir, Component, Link, Phase, ProcId, State};
use crate::sys::{self, Spawn};
use crate::topology::{self, node_ip, node_name, Topology, API_PORT, BRIDGE, CP_IP, EXT_IP, IFACE};
use crate::{api, cgroup, net, status};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
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
    /// ClusterIP range, given to the apiserver and the agents alike.
    #[arg(long, default_value = "10.96.0.0/12")]
    pub(crate) service_cidr: String,
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

/// The executables `ferry up` starts.
#[derive(Debug)]
struct Bins {
    server: PathBuf,
    kubelet: Option<PathBuf>,
    agent: Option<PathBuf>,
    cni: PathBuf,
    etcd: Option<PathBuf>,
    /// The agent has the Services flags (`--service-proxy`, `--proxy-cgroup`, `--bpffs-dir`).
    agent_services: bool,
}

/// Whether `agent --help` lists `--service-proxy` (an agent built before Services has none).
fn agent_has_services(agent: &Path) -> bool {
    Command::new(agent)
        .arg("--help")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--service-proxy"))
}

fn find_bins(args: &UpArgs) -> Result<Bins> {
    let dir = match &args.bin_dir {
        Some(d) => std::path::absolute(d).unwrap_or_else(|_| d.clone()),
        None => std::env::current_exe()
            .context("locating the ferry executable")?
            .parent()
            .context("the ferry executable has no directory")?
            .to_owned(),
    };
    let find = |name: &str| -> Result<PathBuf> {
        let p = dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            bail!(
                "{name} not found in {} (build the workspace binaries with `cargo build --bins`, \
                 or point --bin-dir at them)",
                dir.display()
            )
        }
    };
    let etcd = if args.store == Store::Etcd {
        let found = std::env::var_os("PATH")
            .map(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("etcd"))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
            .into_iter()
            .find(|p| p.is_file());
        Some(found.context(
            "--store etcd runs etcd in the control-plane namespace, but no etcd is in PATH \
             (Debian: apt-get install etcd-server)",
        )?)
    } else {
        None
    };
    let agent = (!args.no_agent && !args.no_kubelet)
        .then(|| find("ferry-agent"))
        .transpose()?;
    let agent_services = agent.as_deref().is_some_and(agent_has_services);
    if agent.is_some() && !agent_services && args.service_proxy != ServiceProxy::Off {
        eprintln!(
            "ferry up: warning: --service-proxy {} ignored: this ferry-agent has no \
             --service-proxy flag (an older build); Services are not routed",
            args.service_proxy.name()
        );
    }
    Ok(Bins {
        server: find("ferry-server")?,
        kubelet: (!args.no_kubelet)
            .then(|| find("ferry-kubelet"))
            .transpose()?,
        agent,
        cni: find("ferry-cni")?,
        etcd,
        agent_services,
    })
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
    if !sys::is_root() {
        bail!("ferry up needs root: it creates network namespaces");
    }
    validate_service_cidr(&args.service_cidr)?;
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
        self.start_nodes()?;
        self.wait_nodes(&rt, &client)?;
        let ready_in = self.started.elapsed();
        self.state.phase = Phase::Up;
        self.state.up = None;
        self.save()?;
        Ok(ready_in)
    }

    fn members(&self) -> Vec<(String, String, Ipv4Addr)> {
        let mut m = vec![("cp".to_owned(), self.topo.cp_ns(), CP_IP)];
        m.extend(
            self.topo
                .node_indexes()
                .map(|i| (format!("n{i}"), self.topo.node_ns(i), node_ip(i))),
        );
        // The external host: on the underlay like any member, nothing routed into the cluster.
        m.push(("ext".to_owned(), self.topo.ext_ns(), EXT_IP));
        m
    }

    fn create_network(&mut self) -> Result<()> {
        let namespaces = self.topo.namespaces();
        self.state.namespaces.clone_from(&namespaces);
        self.save()?;
        for ns in &namespaces {
            self.check("the network namespaces")?;
            net::netns_add(ns)?;
        }
        let sw = self.topo.switch_ns();
        net::batch(
            &sw,
            &format!("link set lo up\nlink add {BRIDGE} type bridge\nlink set {BRIDGE} up\n"),
        )?;
        let members = self.members();
        self.state.links = members
            .iter()
            .map(|(port, ns, _)| Link {
                netns: ns.clone(),
                name: IFACE.to_owned(),
                peer_netns: sw.clone(),
                peer: port.clone(),
            })
            .collect();
        self.save()?;
        let mut ports = String::new();
        for (port, ns, _) in &members {
            self.check("the underlay links")?;
            net::veth(ns, IFACE, &sw, port)?;
            ports.push_str(&format!(
                "link set {port} master {BRIDGE}\nlink set {port} up\n"
            ));
        }
        net::batch(&sw, &ports)?;
        for (_, ns, ip) in &members {
            net::batch(
                ns,
                &format!(
                    "link set lo up\naddr add {ip}/{} dev {IFACE}\nlink set {IFACE} up\n",
                    topology::UNDERLAY_PREFIX
                ),
            )?;
        }
        // Nodes route pod traffic (as any Kubernetes node must).
        for i in self.topo.node_indexes() {
            let ns = self.topo.node_ns(i);
            sys::in_netns(&net::netns_path(&ns), ferry_sys::sysctl::enable_ip_forward)
                .and_then(|r| r.map_err(std::io::Error::from))
                .with_context(|| format!("enabling IPv4 forwarding in {ns}"))?;
            // A real node has a default route; these nodes only have the underlay. Without a
            // route, a packet to a ClusterIP that no rule translated (a Service without
            // endpoints) fails its route lookup before FORWARD / OUTPUT, where the iptables
            // proxier's REJECT answers ECONNREFUSED, and the client sees an ICMP net-unreachable,
            // which TCP treats as soft: a timeout. The service range goes out on the underlay.
            net::batch(
                &ns,
                &format!("route add {} dev {IFACE}\n", self.args.service_cidr),
            )?;
        }
        self.step(format!(
            "network: {} namespaces ({}, {}, {}, external host {} {EXT_IP}), underlay {} on \
             bridge {BRIDGE} in {sw}",
            namespaces.len(),
            sw,
            self.topo.cp_ns(),
            if self.topo.nodes == 1 {
                self.topo.node_ns(1)
            } else {
                format!(
                    "{}..{}",
                    self.topo.node_ns(1),
                    self.topo.node_ns(self.topo.nodes)
                )
            },
            self.topo.ext_ns(),
            topology::UNDERLAY,
        ));
        Ok(())
    }

    fn cluster_cgroup(&self) -> PathBuf {
        topology::cluster_cgroup(&self.state.cgroup_root, &self.topo.name)
    }

    fn node_cgroup(&self, i: u32) -> PathBuf {
        self.cluster_cgroup().join(format!("n{i}"))
    }

    fn create_cgroups(&mut self) -> Result<()> {
        let top = self.cluster_cgroup();
        let mut all = vec![top.clone(), top.join("server")];
        if self.args.store == Store::Etcd {
            all.push(top.join("etcd"));
        }
        for i in self.topo.node_indexes() {
            let n = self.node_cgroup(i);
            all.extend([
                n.clone(),
                n.join("kubelet"),
                n.join("agent"),
                n.join("pods"),
            ]);
        }
        self.state.cgroups.clone_from(&all);
        self.save()?;
        for cg in &all {
            cgroup::create(cg)?;
        }
        self.step(format!("cgroups: {} under {}", all.len(), top.display()));
        Ok(())
    }

    /// The eBPF mode's pin directory (each agent pins under `<it>/<node>`): `/sys/fs/bpf/ferry-<name>`
    /// when `/sys/fs/bpf` is a bpf filesystem, else a bpffs instance of the cluster's own mounted
    /// at `<cluster dir>/bpffs` (unmounted by `ferry down` with the other mounts there). Recorded
    /// first, so `ferry down` removes it whatever happens.
    fn create_bpffs(&mut self) -> Result<()> {
        if !self.bins.agent_services || self.args.service_proxy != ServiceProxy::Ebpf {
            return Ok(());
        }
        let dir = if sys::is_bpffs(Path::new(topology::BPFFS)) {
            topology::bpffs_dir(&self.topo.name)
        } else {
            self.dir.bpffs()
        };
        self.state.bpffs = Some(dir.clone());
        self.save()?;
        if !dir.starts_with(topology::BPFFS) {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            sys::mount_bpffs(&dir, &format!("ferry-{}", self.topo.name))?;
        }
        for i in self.topo.node_indexes() {
            let d = dir.join(node_name(i));
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        self.step(format!("bpffs: pins under {}", dir.display()));
        Ok(())
    }

    fn prepare_files(&mut self) -> Result<()> {
        let mkdir = |p: &Path| {
            std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))
        };
        mkdir(&self.dir.logs())?;
        mkdir(&self.dir.server())?;
        for i in self.topo.node_indexes() {
            let node = self.dir.node(i);
            for sub in ["cni/bin", "cni/net.d", "kubelet", "agent"] {
                mkdir(&node.join(sub))?;
            }
            let bin = node.join("cni/bin");
            let plugin = bin.join("ferry-cni");
            if std::fs::hard_link(&self.bins.cni, &plugin).is_err() {
                std::fs::copy(&self.bins.cni, &plugin).with_context(|| {
                    format!(
                        "installing {} as {}",
                        self.bins.cni.display(),
                        plugin.display()
                    )
                })?;
            }
            // ferry-cni answers as the loopback plugin under that name.
            std::os::unix::fs::symlink("ferry-cni", bin.join("loopback"))
                .with_context(|| format!("linking {}/loopback", bin.display()))?;
        }
        Ok(())
    }

    /// Starts a component and records it.
    fn start(&mut self, l: Launch) -> Result<()> {
        self.check(&format!("starting {}", l.name))?;
        let log = self
            .dir
            .logs()
            .join(format!("{}.log", l.name.replace('/', "-")));
        let netns_path = net::netns_path(&l.netns);
        let child = sys::spawn_detached(&Spawn {
            program: &l.program,
            args: l.args,
            netns: &netns_path,
            cgroup: &l.cgroup,
            log: &log,
            fd3: l.fd3.as_ref().map(|fd| fd.as_fd()),
        })
        .with_context(|| format!("starting {} ({})", l.name, l.program.display()))?;
        #[expect(clippy::cast_possible_wrap, reason = "pids fit in i32")]
        let pid = child.id() as i32;
        self.state.components.push(Component {
            name: l.name.clone(),
            proc: ProcId {
                pid,
                start_time: sys::start_time(pid).unwrap_or(0),
            },
            netns: l.netns,
            cgroup: l.cgroup,
            log,
            address: l.address,
        });
        self.children.push((l.name, child));
        self.save()
    }

    fn start_etcd(&mut self) -> Result<()> {
        let Some(etcd) = self.bins.etcd.clone() else {
            bail!("no etcd executable");
        };
        let client = format!("http://127.0.0.1:{}", topology::ETCD_PORT);
        let peer = format!("http://127.0.0.1:{}", topology::ETCD_PORT + 1);
        let args: Vec<OsString> = [
            "--name",
            "ferry",
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &format!("ferry={peer}"),
            "--experimental-watch-progress-notify-interval",
            "5s",
            "--data-dir",
        ]
        .into_iter()
        .map(OsString::from)
        .chain([self.dir.etcd().into_os_string()])
        .collect();
        let t0 = Instant::now();
        let cp = self.topo.cp_ns();
        let cg = self.cluster_cgroup().join("etcd");
        self.start(Launch {
            name: "etcd".into(),
            program: etcd,
            args,
            netns: cp.clone(),
            cgroup: cg,
            address: format!("{client} (control-plane loopback)"),
            fd3: None,
        })?;
        let path = net::netns_path(&cp);
        loop {
            self.check("etcd")?;
            let up = sys::in_netns(&path, || {
                std::net::TcpStream::connect_timeout(
                    &(Ipv4Addr::LOCALHOST, topology::ETCD_PORT).into(),
                    Duration::from_millis(200),
                )
                .is_ok()
            })?;
            if up {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.step(format!("etcd ready in {:.1}s", t0.elapsed().as_secs_f64()));
        Ok(())
    }

    fn node_tokens(&mut self) -> Result<()> {
        for i in self.topo.node_indexes() {
            self.check("node tokens")?;
            let node = node_name(i);
            let out = Command::new(&self.bins.server)
                .arg("--data-dir")
                .arg(self.dir.server())
                .args(["node-token", "--node", &node])
                .output()
                .with_context(|| format!("running {} node-token", self.bins.server.display()))?;
            if !out.status.success() {
                bail!(
                    "ferry-server node-token --node {node} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            self.tokens
                .push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
        }
        Ok(())
    }

    fn api_url() -> String {
        format!("https://{CP_IP}:{API_PORT}")
    }

    fn start_server(&mut self, listener: &TcpListener) -> Result<()> {
        let cp_api = format!("{CP_IP}:{API_PORT}");
        let mut args: Vec<OsString> = vec!["--data-dir".into(), self.dir.server().into()];
        args.extend(
            [
                "--listen",
                &cp_api,
                "--advertise-address",
                &cp_api,
                "--tls-san",
                &format!("127.0.0.1,{CP_IP}"),
                "--inherited-listener-fd",
                "3",
                "--node-monitor-grace-period",
                &self.args.node_grace.to_string(),
                "--service-cidr",
                &self.args.service_cidr,
            ]
            .map(OsString::from),
        );
        if self.args.store == Store::Etcd {
            args.extend(
                [
                    "--store",
                    "etcd",
                    "--etcd-endpoints",
                    &format!("http://127.0.0.1:{}", topology::ETCD_PORT),
                ]
                .map(OsString::from),
            );
        }
        let server = self.bins.server.clone();
        let cp = self.topo.cp_ns();
        let cg = self.cluster_cgroup().join("server");
        let address = format!(
            "{}, https://127.0.0.1:{} from the root namespace",
            Self::api_url(),
            self.port
        );
        self.start(Launch {
            name: "apiserver".into(),
            program: server,
            args,
            netns: cp,
            cgroup: cg,
            address,
            fd3: Some(
                listener
                    .try_clone()
                    .context("duplicating the apiserver's listener")?
                    .into(),
            ),
        })
    }

    /// Waits for the server's kubeconfig, writes ours, then waits for `/readyz`.
    fn wait_apiserver(&mut self, rt: &tokio::runtime::Runtime) -> Result<kube::Client> {
        let t0 = Instant::now();
        let admin = self.dir.server().join("admin.kubeconfig");
        let ours = self.dir.kubeconfig();
        let loopback = format!("https://127.0.0.1:{}", self.port);
        let mut client = None;
        let mut last_err = String::new();
        loop {
            let waiting = if last_err.is_empty() {
                "the apiserver".to_owned()
            } else {
                format!("the apiserver (last error: {last_err})")
            };
            self.check(&waiting)?;
            if self.state.kubeconfig.is_none() {
                let rewritten = std::fs::read(&admin)
                    .ok()
                    .and_then(|b| api::rewrite_kubeconfig(&b, &loopback).ok());
                if let Some(kc) = rewritten {
                    crate::state::write_private(&ours, &kc)?;
                    self.state.kubeconfig = Some(ours.clone());
                    self.save()?;
                }
            }
            if self.state.kubeconfig.is_some() && client.is_none() {
                match rt.block_on(api::client(&ours)) {
                    Ok(c) => client = Some(c),
                    Err(e) => last_err = format!("{e:#}"),
                }
            }
            if let Some(c) = &client {
                match rt.block_on(api::readyz(c)) {
                    Ok(()) => break,
                    Err(e) => last_err = format!("{e:#}"),
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.step(format!(
            "apiserver ready in {:.1}s ({} in {}, https://127.0.0.1:{} from the root namespace)",
            t0.elapsed().as_secs_f64(),
            Self::api_url(),
            self.topo.cp_ns(),
            self.port
        ));
        client.context("no API client")
    }

    fn start_nodes(&mut self) -> Result<()> {
        let (Some(kubelet), agent) = (self.bins.kubelet.clone(), self.bins.agent.clone()) else {
            self.step("nodes: not started (--no-kubelet)");
            return Ok(());
        };
        let ca: OsString = self.dir.server().join("pki/ca.crt").into();
        for i in self.topo.node_indexes() {
            let node = node_name(i);
            let ns = self.topo.node_ns(i);
            let dir = self.dir.node(i);
            let token = self.tokens[(i - 1) as usize].clone();
            // The kubelet and the agent read the token from a file (0600): not in a command line.
            let token_file = dir.join("token");
            crate::state::write_private(&token_file, token.as_bytes())?;
            let common: Vec<OsString> = vec![
                "--node-name".into(),
                node.clone().into(),
                "--server".into(),
                Self::api_url().into(),
                "--certificate-authority".into(),
                ca.clone(),
                "--cni-conf-dir".into(),
                dir.join("cni/net.d").into(),
            ];
            if let Some(agent) = &agent {
                let mut args = common.clone();
                args.extend([
                    "--token-file".into(),
                    token_file.clone().into(),
                    "--run-dir".into(),
                    dir.join("agent").into(),
                    "--iface".into(),
                    IFACE.into(),
                    "--backend".into(),
                    self.args.backend.clone().into(),
                ]);
                if self.bins.agent_services {
                    args.extend(self.service_args(i));
                }
                let address = format!("{} on {IFACE} ({})", node_ip(i), self.args.backend);
                let cg = self.node_cgroup(i).join("agent");
                self.start(Launch {
                    name: format!("{node}/agent"),
                    program: agent.clone(),
                    args,
                    netns: ns.clone(),
                    cgroup: cg,
                    address,
                    fd3: None,
                })?;
            }
            let mut args = common;
            args.extend([
                "--token-file".into(),
                token_file.into(),
                "--cni-bin-dir".into(),
                dir.join("cni/bin").into(),
                "--root-dir".into(),
                dir.join("kubelet").into(),
                "--cgroup-root".into(),
                self.node_cgroup(i).join("pods").into(),
                "--node-ip".into(),
                node_ip(i).to_string().into(),
                "--lease-interval".into(),
                (self.args.node_grace / 4).max(1).to_string().into(),
            ]);
            let address = format!(
                "{}:{} (kubelet endpoint)",
                node_ip(i),
                topology::KUBELET_PORT
            );
            let cg = self.node_cgroup(i).join("kubelet");
            self.start(Launch {
                name: format!("{node}/kubelet"),
                program: kubelet.clone(),
                args,
                netns: ns,
                cgroup: cg,
                address,
                fd3: None,
            })?;
        }
        self.step(format!(
            "nodes: started {} ferry-kubelet{}",
            self.topo.nodes,
            if agent.is_some() {
                " + ferry-agent pairs"
            } else {
                "s (no ferry-agent: --no-agent)"
            }
        ));
        Ok(())
    }

    /// The agent's Services flags for node `i`: the mode, the ClusterIP range, and for eBPF the
    /// node's cgroup (its agent, kubelet and pods all live below it: cgroup v2 hooks apply to
    /// descendants) and its pin directory.
    fn service_args(&self, i: u32) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--service-proxy".into(),
            self.args.service_proxy.name().into(),
            "--service-cidr".into(),
            self.args.service_cidr.clone().into(),
        ];
        if self.args.service_proxy == ServiceProxy::Ebpf {
            args.extend([
                "--proxy-cgroup".into(),
                self.node_cgroup(i).into(),
                "--bpffs-dir".into(),
                self.state
                    .bpffs
                    .clone()
                    .unwrap_or_else(|| topology::bpffs_dir(&self.topo.name))
                    .join(node_name(i))
                    .into(),
            ]);
        }
        args
    }

    /// Waits until every node is Ready (registered only, without agents), reporting each step.
    fn wait_nodes(&mut self, rt: &tokio::runtime::Runtime, client: &kube::Client) -> Result<()> {
        if self.bins.kubelet.is_none() {
            return Ok(());
        }
        let need_ready = self.bins.agent.is_some();
        let expected: Vec<String> = self.topo.node_indexes().map(node_name).collect();
        let mut registered = BTreeSet::new();
        let mut ready = BTreeSet::new();
        let mut last: Vec<api::NodeSummary> = Vec::new();
        let mut last_err = String::new();
        loop {
            let done = if need_ready {
                ready.len() == expected.len()
            } else {
                registered.len() == expected.len()
            };
            if done {
                return Ok(());
            }
            let pending: Vec<String> = expected
                .iter()
                .filter(|n| {
                    if need_ready {
                        !ready.contains(*n)
                    } else {
                        !registered.contains(*n)
                    }
                })
                .map(|n| match last.iter().find(|s| &s.name == n) {
                    None => format!("{n} not registered"),
                    Some(s) if s.why.is_empty() => format!("{n} NotReady"),
                    Some(s) => format!("{n} NotReady: {}", s.why),
                })
                .collect();
            let waiting = if last_err.is_empty() {
                format!("nodes ({})", pending.join("; "))
            } else {
                format!("nodes ({}; last API error: {last_err})", pending.join("; "))
            };
            self.check(&waiting)?;
            match rt.block_on(api::nodes(client)) {
                Ok(nodes) => {
                    last_err.clear();
                    for n in nodes.iter().filter(|n| expected.contains(&n.name)) {
                        if registered.insert(n.name.clone()) {
                            self.step(format!("{} registered", n.name));
                        }
                        if n.is_ready() && ready.insert(n.name.clone()) {
                            self.step(format!(
                                "{} Ready (podCIDR {}, InternalIP {})",
                                n.name, n.pod_cidr, n.internal_ip
                            ));
                        }
                    }
                    last = nodes;
                }
                Err(e) => last_err = format!("{e:#}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
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
