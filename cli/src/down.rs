//! `ferry down`: removes everything `ferry up` created for a cluster, from its state file plus a
//! sweep of what the file may have missed (a `ferry up` killed between two records). The same
//! teardown runs when `ferry up` fails.
//!
//! Order: stop a `ferry up` still running; kill every process (the cluster cgroup's `cgroup.kill`
//! takes pods and shims along, then each recorded pid, then anything left inside the cluster's
//! namespaces) and wait until the cgroup is empty; remove the agents' eBPF pins (maps, programs,
//! links: the cluster's bpffs directory tree); unmount what was mounted under the cluster
//! directory (pod namespaces, the cluster's own bpffs instance); delete the namespaces (their links go with them); remove the cgroups
//! bottom-up; remove the cluster directory last, so an interrupted `ferry down` can run again.

use crate::state::{ClusterDir, State};
use crate::{cgroup, net, sys, topology};
use anyhow::{bail, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `--name` and `--state-dir`, shared by every subcommand.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Target {
    /// Cluster name.
    #[arg(long, default_value = "ferry")]
    pub(crate) name: String,
    /// Parent directory of the clusters' state directories.
    #[arg(long, default_value = crate::state::DEFAULT_STATE_DIR)]
    pub(crate) state_dir: PathBuf,
}

/// What a teardown did.
#[derive(Debug, Default)]
pub(crate) struct Removed {
    /// Processes sent SIGKILL (component names, or pids for unrecorded ones).
    pub(crate) killed: Vec<String>,
    /// The bpffs pin directory removed (or emptied, when it is the cluster's own mount).
    pub(crate) pins: Option<PathBuf>,
    /// Mounts detached.
    pub(crate) unmounted: usize,
    /// Network namespaces deleted.
    pub(crate) namespaces: Vec<String>,
    /// cgroups removed.
    pub(crate) cgroups: usize,
    /// The cluster directory, if it was removed.
    pub(crate) dir: Option<PathBuf>,
    /// Failures (the teardown keeps going past each one).
    pub(crate) errors: Vec<String>,
}

impl Removed {
    /// True if nothing was there to remove.
    pub(crate) fn is_empty(&self) -> bool {
        self.killed.is_empty()
            && self.pins.is_none()
            && self.unmounted == 0
            && self.namespaces.is_empty()
            && self.cgroups == 0
            && self.dir.is_none()
    }

    /// One line per kind of thing removed, then the failures.
    pub(crate) fn print(&self, out: &mut dyn Write, indent: &str) {
        if !self.killed.is_empty() {
            let _ = writeln!(
                out,
                "{indent}stopped {} process(es): {}",
                self.killed.len(),
                self.killed.join(", ")
            );
        }
        if let Some(p) = &self.pins {
            let _ = writeln!(out, "{indent}removed the eBPF pins under {}", p.display());
        }
        if self.unmounted > 0 {
            let _ = writeln!(
                out,
                "{indent}unmounted {} mount(s) under the cluster directory",
                self.unmounted
            );
        }
        if !self.namespaces.is_empty() {
            let _ = writeln!(
                out,
                "{indent}deleted {} network namespace(s) and their links: {}",
                self.namespaces.len(),
                self.namespaces.join(", ")
            );
        }
        if self.cgroups > 0 {
            let _ = writeln!(out, "{indent}removed {} cgroup(s)", self.cgroups);
        }
        if let Some(dir) = &self.dir {
            let _ = writeln!(out, "{indent}removed {}", dir.display());
        }
        for e in &self.errors {
            let _ = writeln!(out, "{indent}FAILED: {e}");
        }
    }
}

/// True if anything of cluster `name` exists on this machine (directory, namespace, cgroup).
pub(crate) fn leftovers(name: &str, dir: &ClusterDir) -> Vec<String> {
    let mut found = Vec::new();
    if dir.path().exists() {
        found.push(dir.path().display().to_string());
    }
    found.extend(
        net::netns_list()
            .into_iter()
            .filter(|ns| topology::is_cluster_netns(name, ns))
            .map(|ns| format!("namespace {ns}")),
    );
    if let Ok(root) = cgroup::root() {
        let cg = topology::cluster_cgroup(&root, name);
        if cg.exists() {
            found.push(format!("cgroup {}", cg.display()));
        }
    }
    let pins = topology::bpffs_dir(name);
    if pins.exists() {
        found.push(format!("eBPF pins {}", pins.display()));
    }
    found
}

/// Removes the pin tree at `dir` (pinned maps, programs and links are files and directories of
/// bpffs: unlinking the last pin and closing the last fd frees the object, and a freed cgroup
/// link detaches its program). A directory that is a mount point (the cluster's own bpffs
/// instance) is emptied and left for the unmount. Returns whether anything was there.
fn remove_pins(dir: &Path) -> std::io::Result<bool> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let mount_point = sys::is_bpffs(dir);
    for entry in entries {
        let path = entry?.path();
        // The kernel's own iterators at the root of every bpffs instance (bpf_preload): not
        // ours, not removable, gone with the unmount.
        if mount_point
            && path
                .file_name()
                .is_some_and(|n| n == "maps.debug" || n == "progs.debug")
        {
            continue;
        }
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    if !mount_point {
        std::fs::remove_dir(dir)?;
    }
    Ok(true)
}

/// Removes everything of cluster `name`: what `state` lists and what a sweep finds.
pub(crate) fn teardown(name: &str, dir: &ClusterDir, state: Option<&State>) -> Removed {
    let mut r = Removed::default();
    let me = sys::own_pid();

    // 1. A `ferry up` still running would keep creating things.
    if let Some(up) = state.and_then(|s| s.up) {
        if up.pid != me && up.is_running() && sys::kill(up.pid) {
            r.killed.push(format!("ferry up (pid {})", up.pid));
        }
    }

    // 2. Every process: the cgroup subtree, the recorded pids, anything inside our namespaces.
    let mut cgroup_tops: Vec<PathBuf> = Vec::new();
    if let Some(s) = state {
        cgroup_tops.push(topology::cluster_cgroup(&s.cgroup_root, name));
    }
    if let Ok(root) = cgroup::root() {
        let top = topology::cluster_cgroup(&root, name);
        if !cgroup_tops.contains(&top) {
            cgroup_tops.push(top);
        }
    }
    let components = state.map(|s| s.components.as_slice()).unwrap_or_default();
    let mut in_cgroup: Vec<(i32, String)> = Vec::new();
    for top in cgroup_tops.iter().filter(|t| t.exists()) {
        in_cgroup.extend(cgroup::pids(top).into_iter().map(|p| (p, sys::comm(p))));
        if let Err(e) = cgroup::kill_all(top) {
            r.errors.push(format!("{e:#}"));
        }
    }
    for c in components {
        let running = c.proc.is_running();
        if running {
            sys::kill(c.proc.pid);
        }
        if running || in_cgroup.iter().any(|(p, _)| *p == c.proc.pid) {
            r.killed.push(format!("{} (pid {})", c.name, c.proc.pid));
        }
    }
    for (pid, comm) in &in_cgroup {
        if !components.iter().any(|c| c.proc.pid == *pid) {
            r.killed.push(format!("{comm} (pid {pid})"));
        }
    }
    let mut namespaces: Vec<String> = state.map(|s| s.namespaces.clone()).unwrap_or_default();
    for ns in net::netns_list() {
        if topology::is_cluster_netns(name, &ns) && !namespaces.contains(&ns) {
            namespaces.push(ns);
        }
    }
    for ns in &namespaces {
        for pid in net::netns_pids(ns) {
            let comm = sys::comm(pid);
            if pid != me && sys::kill(pid) && !in_cgroup.iter().any(|(p, _)| *p == pid) {
                r.killed.push(format!("{comm} (pid {pid}, in {ns})"));
            }
        }
    }
    for top in cgroup_tops.iter().filter(|t| t.exists()) {
        if !cgroup::wait_empty(top, Duration::from_secs(10)) {
            r.errors.push(format!(
                "processes still in {} after 10s: {:?}",
                top.display(),
                cgroup::pids(top)
            ));
        }
    }
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while components.iter().any(|c| c.proc.is_running()) && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }

    // 3. The agents' eBPF pins (nothing re-pins them now: every agent is dead).
    let mut pin_dirs: Vec<PathBuf> = state.and_then(|s| s.bpffs.clone()).into_iter().collect();
    let default_pins = topology::bpffs_dir(name);
    if !pin_dirs.contains(&default_pins) {
        pin_dirs.push(default_pins);
    }
    for d in &pin_dirs {
        match remove_pins(d) {
            Ok(true) => r.pins = Some(d.clone()),
            Ok(false) => {}
            Err(e) => r
                .errors
                .push(format!("removing the eBPF pins under {}: {e}", d.display())),
        }
    }

    // 4. Mounts under the cluster directory (the kubelet's pod namespace handles, the cluster's
    // own bpffs instance).
    for m in sys::mounts_under(dir.path()) {
        match sys::umount_detach(&m) {
            Ok(()) => r.unmounted += 1,
            Err(e) => r.errors.push(format!("unmounting {}: {e}", m.display())),
        }
    }

    // 5. Namespaces, with their links.
    for ns in &namespaces {
        match net::netns_del(ns) {
            Ok(true) => r.namespaces.push(ns.clone()),
            Ok(false) => {}
            Err(e) => r.errors.push(format!("{e:#}")),
        }
    }

    // 6. cgroups, children first.
    for top in &cgroup_tops {
        match cgroup::remove_tree(top) {
            Ok(n) => r.cgroups += n,
            Err(e) => r.errors.push(format!("{e:#}")),
        }
    }

    // 7. The directory, last.
    if dir.path().exists() {
        if r.errors.is_empty() {
            match std::fs::remove_dir_all(dir.path()) {
                Ok(()) => {
                    r.dir = Some(dir.path().to_owned());
                    // The default parents (/run/ferry/up, /run/ferry) go too once empty; a
                    // --state-dir given by the user is left alone.
                    let default = Path::new(crate::state::DEFAULT_STATE_DIR);
                    if dir.path().parent() == Some(default) && std::fs::remove_dir(default).is_ok()
                    {
                        if let Some(run_ferry) = default.parent() {
                            let _ = std::fs::remove_dir(run_ferry);
                        }
                    }
                }
                Err(e) => r
                    .errors
                    .push(format!("removing {}: {e}", dir.path().display())),
            }
        } else {
            r.errors.push(format!(
                "kept {} (state for another ferry down)",
                dir.path().display()
            ));
        }
    }
    r
}

/// `ferry down`.
pub(crate) fn run(t: &Target) -> Result<()> {
    if let Err(e) = topology::validate_name(&t.name) {
        bail!("{e}");
    }
    if !sys::is_root() {
        bail!("ferry down needs root: it deletes network namespaces and cgroups");
    }
    let dir = ClusterDir::new(&t.state_dir, &t.name);
    let state = match dir.load() {
        Ok(s) => s,
        Err(e) => {
            println!(
                "state of cluster {} unreadable ({e:#}); removing what a sweep finds",
                t.name
            );
            None
        }
    };
    if state.is_none() && leftovers(&t.name, &dir).is_empty() {
        println!("no cluster named {} is up; nothing to remove", t.name);
        return Ok(());
    }
    println!("removing cluster {}", t.name);
    let r = teardown(&t.name, &dir, state.as_ref());
    r.print(&mut std::io::stdout().lock(), "  ");
    if r.is_empty() {
        println!("  nothing was left to remove");
    }
    if !r.errors.is_empty() {
        bail!(
            "cluster {} was not completely removed ({} failure(s) above); run ferry down again",
            t.name,
            r.errors.len()
        );
    }
    println!("cluster {} removed", t.name);
    Ok(())
}
