//! The lab's resources, each behind a guard that removes it on drop (also after an error or
//! Ctrl-C): the bench lock, namespaces of the reference paths ([`Ns`]), processes ([`Proc`]),
//! the client cgroups ([`Cgroup`]), the `ferry up` clusters ([`Cluster`]) and the bench pods and
//! Services ([`Pods`]).

use crate::state::ClusterDir;
use anyhow::{bail, ensure, Context as _, Result};
use ferry_sys::netns::NetnsFd;
use ferry_sys::process::OnExec;
use serde_json::{json, Value};
use std::io::Read as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The port of the bench agent (TCP and UDP) in every server, for the paths that reach it
/// directly.
pub(crate) const AGENT_PORT: u16 = 7000;
/// The bench pods' second port, the `targetPort` of every bench Service (and of the scale
/// sweep's). Paths through a Service and direct paths never share a server port, so their
/// connections never share a 4-tuple at the server: behind iptables DNAT, a client's TCP
/// timestamps are offset per destination address (the ClusterIP, not the pod), and a SYN reusing
/// the 4-tuple of a TIME_WAIT socket left by the other kind of path is dropped by PAWS
/// (`TcpExtPAWSTimewait`) and retransmitted: measured in the lab, 5-10 % of connections stalled
/// 10-15 ms when a ClusterIP run followed a pod-IP run to the same server port.
pub(crate) const SVC_PORT: u16 = 7001;
/// The port of iperf3's server.
pub(crate) const IPERF_PORT: u16 = 5201;

/// `/run/ferry/bench.lock`, held (flock) for the whole run: two runs at once would measure each
/// other. The file stays (removing a lock file races with the next taker).
#[derive(Debug)]
pub(crate) struct BenchLock(#[expect(dead_code, reason = "held for its lock")] std::fs::File);

impl BenchLock {
    /// Takes the lock or says who holds it.
    pub(crate) fn take() -> Result<BenchLock> {
        let dir = Path::new("/run/ferry");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("bench.lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match f.try_lock() {
            Ok(()) => Ok(BenchLock(f)),
            Err(std::fs::TryLockError::WouldBlock) => bail!(
                "another `ferry bench` is running ({} is locked): two runs at once would measure \
                 each other",
                path.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => Err(e).context("locking /run/ferry/bench.lock"),
        }
    }
}

/// Runs a command, failing with its stderr when it exits non-zero.
pub(crate) fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{:?} failed ({}): {}",
        cmd,
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace of a reference path, `/run/netns/<name>`; on drop the processes still in it
/// are killed (by pid) and it is deleted.
#[derive(Debug)]
pub(crate) struct Ns {
    name: String,
    path: PathBuf,
}

impl Ns {
    /// Creates `/run/netns/<name>` with `lo` up.
    pub(crate) fn create(name: &str) -> Result<Ns> {
        let path = PathBuf::from(format!("/run/netns/{name}"));
        ferry_sys::netns::create_bound(&path)
            .with_context(|| format!("creating network namespace {name}"))?;
        let ns = Ns {
            name: name.to_owned(),
            path,
        };
        ns.sh("ip link set lo up")?;
        Ok(ns)
    }

    /// The namespace's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Runs a shell script inside (with `ip netns exec`, so `/sys` matches the namespace).
    pub(crate) fn sh(&self, script: &str) -> Result<String> {
        run_ok(Command::new("ip").args(["netns", "exec", &self.name, "sh", "-ec", script]))
            .with_context(|| format!("in namespace {}", self.name))
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                ferry_sys::process::kill(pid);
            }
        }
        if let Err(e) = ferry_sys::netns::remove_bound(&self.path) {
            eprintln!("ferry bench: removing namespace {}: {e}", self.name);
        }
    }
}

/// Where a process runs: a network namespace and, for clients on a node, a cgroup below the node's
/// cgroup (so the node's socket load balancer applies to it, as to the node's pods); or, on a
/// real cluster (`--kubeconfig`), a container reached with `kubectl exec`.
#[derive(Debug, Clone)]
pub(crate) struct Place {
    /// People's label (`pod a on node-1`).
    pub(crate) label: String,
    /// The namespace's path (`/run/netns/...` or a pod's namespace handle); empty with `exec`.
    pub(crate) netns: PathBuf,
    /// The cgroup to join first.
    pub(crate) cgroup: Option<PathBuf>,
    /// A real cluster's container instead of a namespace of this machine.
    pub(crate) exec: Option<PodExec>,
}

/// A container `kubectl exec` runs the bench's processes in.
#[derive(Debug, Clone)]
pub(crate) struct PodExec {
    /// The cluster's kubeconfig.
    pub(crate) kubeconfig: PathBuf,
    /// The pod's namespace.
    pub(crate) namespace: String,
    /// The pod.
    pub(crate) pod: String,
    /// The container.
    pub(crate) container: String,
    /// `ferry`'s path in the container (this executable's stands for it in `command`).
    pub(crate) ferry: String,
}

impl Place {
    /// A command that joins the cgroup, then enters the namespace, between fork and exec; for an
    /// `exec` place, `kubectl exec` of the program in the container (`ferry` itself becomes the
    /// container's `ferry`, any other program is looked up by name in the container's PATH).
    pub(crate) fn command(&self, program: &Path) -> Result<Command> {
        if let Some(e) = &self.exec {
            let me = std::env::current_exe().ok();
            let prog = if me.as_deref() == Some(program) {
                e.ferry.clone()
            } else {
                program
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
            };
            let mut cmd = Command::new("kubectl");
            cmd.arg("--kubeconfig")
                .arg(&e.kubeconfig)
                .args(["-n", &e.namespace, "exec", &e.pod, "-c", &e.container, "--"])
                .arg(prog)
                .stdin(Stdio::null());
            return Ok(cmd);
        }
        let mut cmd = Command::new(program);
        let ns = NetnsFd::open(&self.netns)
            .with_context(|| format!("opening the namespace of {}", self.label))?;
        let mut on = OnExec::new();
        if let Some(cg) = &self.cgroup {
            let procs = ferry_sys::cgroup::open_procs(cg)
                .with_context(|| format!("opening {}/cgroup.procs", cg.display()))?;
            on = on.join_cgroup(&procs)?;
        }
        on.enter_netns(&ns)?.install(&mut cmd);
        cmd.stdin(Stdio::null());
        Ok(cmd)
    }
}

/// A process of the run, killed (by its pid) and reaped on drop.
#[derive(Debug)]
pub(crate) struct Proc {
    child: Child,
    what: String,
}

impl Proc {
    /// Starts a long-running server; output goes nowhere.
    pub(crate) fn spawn(mut cmd: Command, what: &str) -> Result<Proc> {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        Ok(Proc {
            child,
            what: what.to_owned(),
        })
    }

    /// Fails when it has exited.
    pub(crate) fn check(&mut self) -> Result<()> {
        if let Some(st) = self.child.try_wait()? {
            bail!("{} exited ({st})", self.what);
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A child run to completion with its output captured, killed by pid after `timeout`.
#[derive(Debug)]
pub(crate) struct Captured {
    /// Exit status (None: killed on timeout).
    pub(crate) status: Option<std::process::ExitStatus>,
    /// Standard output.
    pub(crate) stdout: String,
    /// Standard error.
    pub(crate) stderr: String,
}

/// A started client whose output is read on threads while the caller samples CPU and counters.
#[derive(Debug)]
pub(crate) struct Running {
    child: Child,
    out: std::thread::JoinHandle<String>,
    err: std::thread::JoinHandle<String>,
}

impl Running {
    /// Starts `cmd` with its output piped.
    pub(crate) fn start(mut cmd: Command) -> Result<Running> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {:?}", cmd.get_program()))?;
        let mut so = child.stdout.take().context("no stdout pipe")?;
        let mut se = child.stderr.take().context("no stderr pipe")?;
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = so.read_to_string(&mut s);
            s
        });
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = se.read_to_string(&mut s);
            s
        });
        Ok(Running { child, out, err })
    }

    /// The client's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until it exits or `deadline` passes (then kills it by pid).
    pub(crate) fn finish(mut self, deadline: Instant) -> Result<Captured> {
        let status = loop {
            if let Some(st) = self.child.try_wait()? {
                break Some(st);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let stdout = self.out.join().unwrap_or_default();
        let stderr = self.err.join().unwrap_or_default();
        Ok(Captured {
            status,
            stdout,
            stderr,
        })
    }
}

/// A cgroup the bench creates for its clients (below a node's cgroup); removed on drop once empty.
#[derive(Debug)]
pub(crate) struct Cgroup(PathBuf);

impl Cgroup {
    /// Creates `dir`.
    pub(crate) fn create(dir: PathBuf) -> Result<Cgroup> {
        ferry_sys::cgroup::create(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Cgroup(dir))
    }

    /// Its directory.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if !self.0.exists() {
            return;
        }
        for pid in ferry_sys::cgroup::pids(&self.0) {
            ferry_sys::process::kill(pid);
        }
        ferry_sys::cgroup::wait_empty(&self.0, Duration::from_secs(5));
        if let Err(e) = std::fs::remove_dir(&self.0) {
            eprintln!("ferry bench: removing cgroup {}: {e}", self.0.display());
        }
    }
}

/// A `ferry up` cluster: brought up by the bench (removed with `ferry down` on drop) or named with
/// `--name` (left as it was).
#[derive(Debug)]
pub(crate) struct Cluster {
    /// Label in the report: `A`, `B`, `C`.
    pub(crate) label: String,
    /// Cluster name.
    pub(crate) name: String,
    /// `--state-dir`.
    pub(crate) state_dir: PathBuf,
    /// Overlay backend.
    pub(crate) backend: String,
    /// Service proxy mode.
    pub(crate) proxy: String,
    /// The cluster's cgroup (`<mount>/ferry-<name>`).
    pub(crate) cgroup: PathBuf,
    /// The bpffs directory of its socket LB pins (ebpf mode).
    pub(crate) bpffs: Option<PathBuf>,
    /// The agents' pids.
    pub(crate) agents: Vec<i32>,
    owned: Option<(PathBuf, tempfile::TempDir)>,
}

impl Cluster {
    /// `ferry up --nodes 2 --api-port 0` with this backend and proxy mode in a fresh state dir.
    pub(crate) fn up(ferry: &Path, label: &str, backend: &str, proxy: &str) -> Result<Cluster> {
        let name = format!(
            "fb{}{}",
            std::process::id() % 100_000,
            label.to_ascii_lowercase()
        );
        let state = tempfile::Builder::new()
            .prefix("ferry-bench-")
            .tempdir()
            .context("creating a state directory")?;
        let state_dir = state.path().to_owned();
        let out = Command::new(ferry)
            .args(["up", "--nodes", "2", "--api-port", "0", "--timeout", "60"])
            .args([
                "--name",
                &name,
                "--backend",
                backend,
                "--service-proxy",
                proxy,
            ])
            .arg("--state-dir")
            .arg(&state_dir)
            .stdin(Stdio::null())
            .output()
            .context("running ferry up")?;
        // From here on `ferry down` runs on drop, also when `ferry up` failed half-way.
        let mut c = Cluster {
            label: label.to_owned(),
            name,
            state_dir,
            backend: backend.to_owned(),
            proxy: proxy.to_owned(),
            cgroup: PathBuf::new(),
            bpffs: None,
            agents: Vec::new(),
            owned: Some((ferry.to_owned(), state)),
        };
        ensure!(
            out.status.success(),
            "ferry up (cluster {label}: {backend}, {proxy}) failed:\n{}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        c.load()?;
        Ok(c)
    }

    /// An existing cluster (`--name`, `--state-dir`): refused when it is not up.
    pub(crate) fn existing(name: &str, state_dir: &Path) -> Result<Cluster> {
        let dir = ClusterDir::new(state_dir, name);
        let Some(st) = dir.load()? else {
            bail!(
                "no cluster named {name} is up under {} (start one with `ferry up --name {name}`, \
                 or leave out --name to let ferry bench bring up its own)",
                state_dir.display()
            );
        };
        ensure!(
            st.components.iter().all(|c| c.proc.is_running()),
            "cluster {name} is not healthy (a component is not running): see `ferry status --name {name}`"
        );
        ensure!(
            st.nodes >= 2,
            "cluster {name} has {} node(s): the cross-node paths need 2",
            st.nodes
        );
        let mut c = Cluster {
            label: "A".into(),
            name: name.to_owned(),
            state_dir: std::path::absolute(state_dir)?,
            backend: String::new(),
            proxy: st.service_proxy.clone().unwrap_or_else(|| "ebpf".into()),
            cgroup: PathBuf::new(),
            bpffs: None,
            agents: Vec::new(),
            owned: None,
        };
        c.load()?;
        let node = c.kubectl_json(&["get", "node", "node-1"])?;
        c.backend = node["metadata"]["annotations"]["flannel.alpha.coreos.com/backend-type"]
            .as_str()
            .unwrap_or("vxlan")
            .to_owned();
        Ok(c)
    }

    fn load(&mut self) -> Result<()> {
        let st = self
            .dir()
            .load()?
            .with_context(|| format!("cluster {} has no state.json", self.name))?;
        self.cgroup = st.cgroup_root.join(format!("ferry-{}", self.name));
        self.bpffs = st.bpffs.map(|b| {
            if b.join("node-1").exists() {
                b
            } else {
                PathBuf::from(format!("/sys/fs/bpf/ferry-{}", self.name))
            }
        });
        self.agents = st
            .components
            .iter()
            .filter(|c| c.name.ends_with("/agent"))
            .map(|c| c.proc.pid)
            .collect();
        Ok(())
    }

    fn dir(&self) -> ClusterDir {
        ClusterDir::new(&self.state_dir, &self.name)
    }

    /// The kubeconfig for the root namespace.
    pub(crate) fn kubeconfig(&self) -> PathBuf {
        self.dir().kubeconfig()
    }

    /// `/run/netns/<name>-n<i>`.
    pub(crate) fn node_ns(&self, i: u32) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}-n{i}", self.name))
    }

    /// `/run/netns/<name>-ext`.
    pub(crate) fn ext_ns(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}-ext", self.name))
    }

    /// Node i's underlay address.
    pub(crate) fn node_ip(i: u32) -> Ipv4Addr {
        Ipv4Addr::new(10, 99, 0, u8::try_from(10 + i).unwrap_or(255))
    }

    /// The external host's address.
    pub(crate) const EXT_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 254);

    /// A pod's network namespace handle.
    pub(crate) fn pod_ns(&self, node: u32, uid: &str) -> PathBuf {
        self.dir()
            .node(node)
            .join("kubelet")
            .join("netns")
            .join(uid)
    }

    /// The pin directory of node i's socket LB (ebpf mode).
    pub(crate) fn node_bpffs(&self, i: u32) -> Option<PathBuf> {
        self.bpffs.as_ref().map(|b| b.join(format!("node-{i}")))
    }

    /// kubectl against this cluster.
    pub(crate) fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<Output> {
        kubectl_at(&self.kubeconfig(), args, stdin)
    }

    /// `kubectl <args> -o json`, parsed.
    pub(crate) fn kubectl_json(&self, args: &[&str]) -> Result<Value> {
        kubectl_json_at(&self.kubeconfig(), args)
    }
}

/// `kubectl --kubeconfig <kubeconfig> <args>`, `stdin` fed to it (the lab and `--kubeconfig` mode).
pub(crate) fn kubectl_at(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Result<Output> {
    ferry_sys::process::output_with_stdin(
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args),
        stdin,
    )
    .context("running kubectl (is it installed?)")
}

/// `kubectl <args> -o json`, parsed; a failure carries kubectl's message.
pub(crate) fn kubectl_json_at(kubeconfig: &Path, args: &[&str]) -> Result<Value> {
    let out = kubectl_at(kubeconfig, &[args, &["-o", "json"]].concat(), None)?;
    ensure!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("kubectl {}: not JSON", args.join(" ")))
}

/// Deletes this run's pods and Services (label `ferry-bench=<run_id>`) and waits up to `timeout`;
/// a failure is printed, not returned (called from `Drop`).
pub(crate) fn delete_bench_objects(
    kubeconfig: &Path,
    namespace: Option<&str>,
    run_id: &str,
    timeout: &str,
) {
    let sel = format!("ferry-bench={run_id}");
    let mut args = Vec::new();
    if let Some(ns) = namespace {
        args.extend(["-n", ns]);
    }
    args.extend([
        "delete",
        "pods,services",
        "-l",
        &sel,
        "--grace-period",
        "0",
        "--wait=true",
        "--timeout",
        timeout,
    ]);
    match kubectl_at(kubeconfig, &args, None) {
        Ok(o) if o.status.success() => {}
        Ok(o) => eprintln!(
            "ferry bench: deleting the bench objects (-l {sel}): {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => eprintln!("ferry bench: deleting the bench objects (-l {sel}): {e:#}"),
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let Some((ferry, state)) = &self.owned else {
            return;
        };
        let out = Command::new(ferry)
            .args(["down", "--name", &self.name, "--state-dir"])
            .arg(state.path())
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "ferry bench: ferry down --name {} failed: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("ferry bench: running ferry down: {e}"),
        }
    }
}

/// One bench pod.
#[derive(Debug, Clone)]
pub(crate) struct Pod {
    /// Its name.
    pub(crate) name: String,
    /// Node index.
    pub(crate) node: u32,
    /// Pod IP.
    pub(crate) ip: Ipv4Addr,
    /// Its network namespace handle.
    pub(crate) netns: PathBuf,
}

/// The bench pods of a cluster and their Services: `a` and `b` on node-1, `c` on node-2;
/// `svc-local` selects b, `svc-remote` c, `svc-self` a (the client: hairpin). Deleted on drop.
#[derive(Debug)]
pub(crate) struct Pods<'a> {
    cluster: &'a Cluster,
    run_id: String,
    /// a (node-1): the client of the pod paths, and the backend of svc-self.
    pub(crate) a: Pod,
    /// b (node-1).
    pub(crate) b: Pod,
    /// c (node-2).
    pub(crate) c: Pod,
    /// ClusterIPs of svc-local, svc-remote, svc-self.
    pub(crate) svc: [Ipv4Addr; 3],
    /// The TCP NodePort of svc-local.
    pub(crate) node_port: u16,
    /// Its UDP NodePort.
    pub(crate) node_port_udp: u16,
    /// The TCP NodePort of svc-remote (its only backend, c, is on node-2).
    pub(crate) node_port_remote: u16,
    /// Its UDP NodePort.
    pub(crate) node_port_remote_udp: u16,
}

impl<'a> Pods<'a> {
    /// Creates the pods (each running the bench agent and iperf3 from the node's filesystem) and
    /// Services, and waits until the pods are Ready.
    pub(crate) fn deploy(cluster: &'a Cluster, ferry: &Path) -> Result<Pods<'a>> {
        let run_id = format!("fb{}", std::process::id());
        let mut items = Vec::new();
        for (role, node) in [("a", 1), ("b", 1), ("c", 2)] {
            items.push(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("{run_id}-{role}"),
                             "labels": {"ferry-bench": run_id, "role": format!("{run_id}-{role}")}},
                "spec": {
                    "nodeName": format!("node-{node}"),
                    "terminationGracePeriodSeconds": 0,
                    "containers": [
                        {"name": "agent", "image": "ferry",
                         "command": [ferry, "bench-agent", "serve",
                                     "--listen", format!("0.0.0.0:{AGENT_PORT}"),
                                     "--listen", format!("0.0.0.0:{SVC_PORT}")],
                         "readinessProbe": {"tcpSocket": {"port": AGENT_PORT}, "periodSeconds": 1}},
                        {"name": "iperf3", "image": "iperf3",
                         "command": ["iperf3", "-s", "-p", IPERF_PORT.to_string()]}
                    ]
                }
            }));
        }
        for (svc, role, np) in [
            ("local", "b", true),
            ("remote", "c", true),
            ("self", "a", false),
        ] {
            let mut spec = json!({
                "selector": {"role": format!("{run_id}-{role}")},
                "ports": [
                    {"name": "tcp", "port": AGENT_PORT, "targetPort": SVC_PORT, "protocol": "TCP"},
                    {"name": "udp", "port": AGENT_PORT, "targetPort": SVC_PORT, "protocol": "UDP"},
                ]
            });
            if np {
                spec["type"] = json!("NodePort");
            }
            items.push(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": format!("{run_id}-svc-{svc}"), "labels": {"ferry-bench": run_id}},
                "spec": spec
            }));
        }
        let list = json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string();
        let mut pods = Pods {
            cluster,
            run_id: run_id.clone(),
            a: placeholder(),
            b: placeholder(),
            c: placeholder(),
            svc: [Ipv4Addr::UNSPECIFIED; 3],
            node_port: 0,
            node_port_udp: 0,
            node_port_remote: 0,
            node_port_remote_udp: 0,
        };
        let out = cluster.kubectl(&["create", "--validate=false", "-f", "-"], Some(&list))?;
        ensure!(
            out.status.success(),
            "creating the bench pods in cluster {}: {}",
            cluster.name,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            super::super::check_interrupt()?;
            let v =
                cluster.kubectl_json(&["get", "pods", "-l", &format!("ferry-bench={run_id}")])?;
            let items = v["items"].as_array().cloned().unwrap_or_default();
            let ready: Vec<&Value> = items.iter().filter(|p| pod_ready(p)).collect();
            if ready.len() == 3 {
                for p in ready {
                    let name = p["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    let uid = p["metadata"]["uid"].as_str().unwrap_or_default();
                    let node: u32 = p["spec"]["nodeName"]
                        .as_str()
                        .and_then(|n| n.strip_prefix("node-"))
                        .and_then(|n| n.parse().ok())
                        .context("bench pod without a node")?;
                    let ip: Ipv4Addr = p["status"]["podIP"]
                        .as_str()
                        .context("bench pod without an IP")?
                        .parse()?;
                    let pod = Pod {
                        netns: cluster.pod_ns(node, uid),
                        name: name.clone(),
                        node,
                        ip,
                    };
                    match name.rsplit('-').next() {
                        Some("a") => pods.a = pod,
                        Some("b") => pods.b = pod,
                        _ => pods.c = pod,
                    }
                }
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "the bench pods of cluster {} were not Ready within 60 s ({} of 3 ready): is \
                     `ferry bench-agent` in this build?",
                    cluster.name,
                    items.iter().filter(|p| pod_ready(p)).count()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        for (i, svc) in ["local", "remote", "self"].iter().enumerate() {
            let v = cluster.kubectl_json(&["get", "service", &format!("{run_id}-svc-{svc}")])?;
            pods.svc[i] = v["spec"]["clusterIP"]
                .as_str()
                .context("Service without a ClusterIP")?
                .parse()?;
            let port = |i: usize| {
                v["spec"]["ports"][i]["nodePort"]
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .unwrap_or(0)
            };
            if *svc == "local" {
                pods.node_port = port(0);
                pods.node_port_udp = port(1);
            } else if *svc == "remote" {
                pods.node_port_remote = port(0);
                pods.node_port_remote_udp = port(1);
            }
        }
        Ok(pods)
    }
}

fn placeholder() -> Pod {
    Pod {
        name: String::new(),
        node: 0,
        ip: Ipv4Addr::UNSPECIFIED,
        netns: PathBuf::new(),
    }
}

/// Running, with an IP, and Ready.
pub(crate) fn pod_ready(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
        && p["status"]["podIP"].is_string()
        && p["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

impl Drop for Pods<'_> {
    fn drop(&mut self) {
        if self.cluster.owned.is_some() {
            return; // `ferry down` removes them with the cluster
        }
        delete_bench_objects(&self.cluster.kubeconfig(), None, &self.run_id, "60s");
    }
}
