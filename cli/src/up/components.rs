//! `ferry up`'s processes: etcd (with `--store etcd`; three members with `--servers N` > 1), the
//! node tokens, ferry-server on the inherited listener (or N replicas behind `ferry apiserver-lb`), each node's ferry-agent and ferry-kubelet (with their Services flags), and
//! the waits for the apiserver and for every node to be Ready. Each process is recorded (pid and
//! start time) right after it starts.

use super::{Launch, ServiceProxy, Store, Up};
use crate::state::{Component, ProcId};
use crate::sys::{self, Spawn};
use crate::topology::{self, node_ip, node_name, API_PORT, CP_IP, IFACE};
use crate::{api, ha, net};
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::AsFd as _;
use std::process::Command;
use std::time::{Duration, Instant};

impl Up<'_> {
    /// Starts a component and records it.
    pub(super) fn start(&mut self, l: Launch) -> Result<()> {
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

    pub(super) fn start_etcd(&mut self) -> Result<()> {
        if self.args.servers > 1 {
            return self.start_etcd_cluster();
        }
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

    /// `--servers N` > 1: a three-member etcd cluster on the control plane's loopback (static
    /// bootstrap, each member its own data dir), ready once every member reports healthy.
    fn start_etcd_cluster(&mut self) -> Result<()> {
        let Some(etcd) = self.bins.etcd.clone() else {
            bail!("no etcd executable");
        };
        let members = ha::ETCD_MEMBERS;
        let initial: Vec<String> = (1..=members)
            .map(|k| format!("etcd-{k}={}", ha::etcd_peer_url(k)))
            .collect();
        let initial = initial.join(",");
        let token = format!("ferry-{}", self.topo.name);
        let t0 = Instant::now();
        let cp = self.topo.cp_ns();
        for k in 1..=members {
            let (client, peer) = (ha::etcd_client_url(k), ha::etcd_peer_url(k));
            let name = format!("etcd-{k}");
            let args: Vec<OsString> = [
                "--name",
                &name,
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &initial,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                &token,
                "--experimental-watch-progress-notify-interval",
                "5s",
                "--data-dir",
            ]
            .into_iter()
            .map(OsString::from)
            .chain([self.dir.path().join(&name).into_os_string()])
            .collect();
            let cg = self.cluster_cgroup().join(&name);
            self.start(Launch {
                name,
                program: etcd.clone(),
                args,
                netns: cp.clone(),
                cgroup: cg,
                address: format!("{client} (control-plane loopback), peers {peer}"),
                fd3: None,
            })?;
        }
        let path = net::netns_path(&cp);
        for k in 1..=members {
            loop {
                let why = match ha::etcd_health(&path, ha::etcd_ip(k)) {
                    Ok(()) => break,
                    Err(e) => format!("{e:#}"),
                };
                self.check(&format!("etcd-{k} to be healthy (last: {why})"))?;
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        self.step(format!(
            "etcd: {members} members healthy in {:.1}s ({})",
            t0.elapsed().as_secs_f64(),
            (1..=members)
                .map(ha::etcd_client_url)
                .collect::<Vec<_>>()
                .join(", ")
        ));
        Ok(())
    }

    pub(super) fn node_tokens(&mut self) -> Result<()> {
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

    pub(super) fn api_url() -> String {
        format!("https://{CP_IP}:{API_PORT}")
    }

    /// Replica `k`'s data directory: the first one's is the cluster's `server` directory (the
    /// node tokens and kubelet certificates come from it), the others' `server-<k>`.
    fn server_dir(&self, k: u32) -> std::path::PathBuf {
        if k <= 1 {
            self.dir.server()
        } else {
            self.dir.path().join(format!("server-{k}"))
        }
    }

    /// ferry-server's flags, listening and advertising on `addr`, with its data in `data_dir`.
    fn server_args(
        &self,
        data_dir: &std::path::Path,
        addr: &str,
        inherited: bool,
    ) -> Vec<OsString> {
        let mut sans = vec!["127.0.0.1".to_owned(), CP_IP.to_string()];
        if self.args.servers > 1 {
            sans.extend((1..=self.args.servers).map(|k| ha::server_ip(k).to_string()));
        }
        let mut args: Vec<OsString> = vec!["--data-dir".into(), data_dir.into()];
        args.extend(
            [
                "--listen",
                addr,
                "--advertise-address",
                addr,
                "--tls-san",
                &sans.join(","),
                "--node-monitor-grace-period",
                &self.args.node_grace.to_string(),
                "--service-cidr",
                &self.args.service_cidr,
                "--loadbalancer-pool",
                &self.args.loadbalancer_pool,
            ]
            .map(OsString::from),
        );
        if inherited {
            args.extend(["--inherited-listener-fd", "3"].map(OsString::from));
        }
        if self.args.store == Store::Etcd {
            let endpoints: Vec<String> = if self.args.servers > 1 {
                (1..=ha::ETCD_MEMBERS).map(ha::etcd_client_url).collect()
            } else {
                vec![format!("http://127.0.0.1:{}", topology::ETCD_PORT)]
            };
            args.extend(
                ["--store", "etcd", "--etcd-endpoints", &endpoints.join(",")].map(OsString::from),
            );
        }
        args
    }

    /// ferry-server on the control plane's address and the inherited loopback listener; with
    /// `--servers N` > 1, the balancer there instead and the first replica (the others start
    /// once it has created the cluster's CA and tokens: [`Self::start_more_servers`]).
    pub(super) fn start_server(&mut self, listener: &TcpListener) -> Result<()> {
        let cp_api = format!("{CP_IP}:{API_PORT}");
        let fd3 = Some(
            listener
                .try_clone()
                .context("duplicating the apiserver's listener")?
                .into(),
        );
        let root = format!("https://127.0.0.1:{} from the root namespace", self.port);
        let cp = self.topo.cp_ns();
        if self.args.servers <= 1 {
            let args = self.server_args(&self.dir.server(), &cp_api, true);
            let cg = self.cluster_cgroup().join("server");
            return self.start(Launch {
                name: "apiserver".into(),
                program: self.bins.server.clone(),
                args,
                netns: cp,
                cgroup: cg,
                address: format!("{}, {root}", Self::api_url()),
                fd3,
            });
        }
        let me = std::env::current_exe().context("finding the ferry executable")?;
        let mut args: Vec<OsString> = [
            "apiserver-lb",
            "--listen",
            &cp_api,
            "--inherited-listener-fd",
            "3",
        ]
        .map(OsString::from)
        .to_vec();
        for k in 1..=self.args.servers {
            args.extend([
                "--backend".into(),
                format!("{}:{API_PORT}", ha::server_ip(k)).into(),
            ]);
        }
        let cg = self.cluster_cgroup().join("apiserver-lb");
        self.start(Launch {
            name: "apiserver-lb".into(),
            program: me,
            args,
            netns: cp.clone(),
            cgroup: cg,
            address: format!(
                "{} -> {} replicas, {root}",
                Self::api_url(),
                self.args.servers
            ),
            fd3,
        })?;
        self.start_replica(1)
    }

    fn start_replica(&mut self, k: u32) -> Result<()> {
        let addr = format!("{}:{API_PORT}", ha::server_ip(k));
        let args = self.server_args(&self.server_dir(k), &addr, false);
        let cg = self.cluster_cgroup().join(format!("server-{k}"));
        self.start(Launch {
            name: format!("apiserver-{k}"),
            program: self.bins.server.clone(),
            args,
            netns: self.topo.cp_ns(),
            cgroup: cg,
            address: format!("https://{addr} (replica {k} of {})", self.args.servers),
            fd3: None,
        })
    }

    /// `--servers N` > 1: replicas 2..N, each with a copy of the first one's identity (the CA,
    /// the apiserver->kubelet client certificate, the tokens: replicas behind one address answer
    /// as one server), then waits until each accepts connections.
    pub(super) fn start_more_servers(&mut self) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt as _;
        if self.args.servers <= 1 {
            return Ok(());
        }
        let first = self.dir.server();
        for k in 2..=self.args.servers {
            let dir = self.server_dir(k);
            let pki = dir.join("pki");
            std::fs::DirBuilder::new()
                .mode(0o700)
                .recursive(true)
                .create(&pki)
                .with_context(|| format!("creating {}", pki.display()))?;
            for f in [
                "tokens.json",
                "pki/ca.crt",
                "pki/ca.key",
                "pki/apiserver-kubelet-client.crt",
                "pki/apiserver-kubelet-client.key",
            ] {
                let (from, to) = (first.join(f), dir.join(f));
                if !from.exists() && f.contains("kubelet-client") {
                    // Issued on demand by this server version: each replica issues its own.
                    continue;
                }
                // The sources are 0600 and `copy` keeps the mode: no window where they are
                // readable by others.
                std::fs::copy(&from, &to)
                    .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
            }
            self.start_replica(k)?;
        }
        let t0 = Instant::now();
        let path = net::netns_path(&self.topo.cp_ns());
        for k in 2..=self.args.servers {
            loop {
                self.check(&format!("apiserver-{k} to listen"))?;
                let up = sys::in_netns(&path, || {
                    std::net::TcpStream::connect_timeout(
                        &(ha::server_ip(k), API_PORT).into(),
                        Duration::from_millis(200),
                    )
                    .is_ok()
                })?;
                if up {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.step(format!(
            "apiserver replicas 2..{} listening in {:.1}s (balanced on {} and the loopback port)",
            self.args.servers,
            t0.elapsed().as_secs_f64(),
            Self::api_url()
        ));
        Ok(())
    }

    /// Waits for the server's kubeconfig, writes ours, then waits for `/readyz`.
    pub(super) fn wait_apiserver(&mut self, rt: &tokio::runtime::Runtime) -> Result<kube::Client> {
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

    pub(super) fn start_nodes(&mut self) -> Result<()> {
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
            // The kubelet endpoint's serving certificate, from the cluster CA for the node's IP
            // (the API server checks it, and the kubelet admits only the API server's client
            // certificate).
            let (cert, key) = (dir.join("kubelet.crt"), dir.join("kubelet.key"));
            let out = Command::new(&self.bins.server)
                .arg("--data-dir")
                .arg(self.dir.server())
                .args(["kubelet-cert", "--node", &node])
                .args(["--ip", &node_ip(i).to_string()])
                .arg("--cert-file")
                .arg(&cert)
                .arg("--key-file")
                .arg(&key)
                .output()
                .with_context(|| format!("running {} kubelet-cert", self.bins.server.display()))?;
            if !out.status.success() {
                bail!(
                    "ferry-server kubelet-cert --node {node} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            let mut args = common;
            args.extend([
                "--tls-cert-file".into(),
                cert.into(),
                "--tls-private-key-file".into(),
                key.into(),
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
    pub(super) fn service_args(&self, i: u32) -> Vec<OsString> {
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
            // Only the non-default value is passed: an agent built before the flag keeps working.
            if !self.args.pod_fast_path {
                args.extend(["--pod-fast-path".into(), "false".into()]);
            }
        }
        args
    }

    /// Waits until every node is Ready (registered only, without agents), reporting each step.
    pub(super) fn wait_nodes(
        &mut self,
        rt: &tokio::runtime::Runtime,
        client: &kube::Client,
    ) -> Result<()> {
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
}
