//! The state of a cluster on disk: `<state-dir>/<name>/state.json`.
//!
//! `ferry up` records every namespace, link and cgroup before creating it and every process right
//! after starting it (processes started in between are caught by their cgroup), rewriting the file
//! atomically each time. `ferry down` undoes what the file lists, so it also cleans up after a
//! `ferry up` that crashed or was killed at any point.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Default parent of the state directories.
pub(crate) const DEFAULT_STATE_DIR: &str = "/run/ferry/up";

/// Where a cluster is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Phase {
    /// `ferry up` is creating it (or crashed while doing so).
    Creating,
    /// Every node was Ready when `ferry up` returned.
    Up,
    /// `ferry up` failed and left it in place (`--keep-on-failure`).
    Failed,
}

/// One process: pid plus start time (see [`crate::sys::start_time`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProcId {
    /// Process id.
    pub(crate) pid: i32,
    /// Start time, clock ticks after boot.
    pub(crate) start_time: u64,
}

impl ProcId {
    /// True while this very process runs.
    pub(crate) fn is_running(self) -> bool {
        crate::sys::is_running(self.pid, self.start_time)
    }
}

/// A component process started by `ferry up`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Component {
    /// `apiserver`, `etcd`, `node-1/kubelet`, `node-1/agent`, ...
    pub(crate) name: String,
    /// Its process.
    pub(crate) proc: ProcId,
    /// The network namespace it runs in.
    pub(crate) netns: String,
    /// The cgroup it runs in.
    pub(crate) cgroup: PathBuf,
    /// Its log file.
    pub(crate) log: PathBuf,
    /// Where it serves (for status lines).
    pub(crate) address: String,
}

/// A veth pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Link {
    /// Namespace of the first end.
    pub(crate) netns: String,
    /// Name of the first end.
    pub(crate) name: String,
    /// Namespace of the peer.
    pub(crate) peer_netns: String,
    /// Name of the peer.
    pub(crate) peer: String,
}

/// Everything `ferry up` created for a cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct State {
    /// Cluster name.
    pub(crate) name: String,
    /// Life phase.
    pub(crate) phase: Phase,
    /// The `ferry up` process while it runs (`ferry down` stops it first).
    pub(crate) up: Option<ProcId>,
    /// Node count.
    pub(crate) nodes: u32,
    /// `sqlite` or `etcd`.
    pub(crate) store: String,
    /// The apiserver's port on 127.0.0.1 in the root namespace.
    pub(crate) api_port: u16,
    /// The cgroup v2 mount the cluster's cgroups live under.
    pub(crate) cgroup_root: PathBuf,
    /// Network namespaces, in creation order.
    pub(crate) namespaces: Vec<String>,
    /// veth pairs.
    pub(crate) links: Vec<Link>,
    /// cgroups, parents before children.
    pub(crate) cgroups: Vec<PathBuf>,
    /// Component processes.
    pub(crate) components: Vec<Component>,
    /// The admin kubeconfig for the root namespace, once written.
    pub(crate) kubeconfig: Option<PathBuf>,
    /// The directory the agents pin their eBPF objects under (`--service-proxy ebpf`), removed
    /// by `ferry down`.
    #[serde(default)]
    pub(crate) bpffs: Option<PathBuf>,
    /// The agents' `--service-proxy` mode (absent in states of older `ferry` builds).
    #[serde(default)]
    pub(crate) service_proxy: Option<String>,
}

/// The directory of one cluster: `<state-dir>/<name>`.
#[derive(Debug, Clone)]
pub(crate) struct ClusterDir(pub(crate) PathBuf);

impl ClusterDir {
    /// `<state_dir>/<name>`, made absolute (it is recorded and handed to other processes).
    pub(crate) fn new(state_dir: &Path, name: &str) -> ClusterDir {
        let state_dir = std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_owned());
        ClusterDir(state_dir.join(name))
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    /// `state.json`.
    pub(crate) fn state_file(&self) -> PathBuf {
        self.0.join("state.json")
    }

    /// Logs of every component.
    pub(crate) fn logs(&self) -> PathBuf {
        self.0.join("logs")
    }

    /// ferry-server's data dir.
    pub(crate) fn server(&self) -> PathBuf {
        self.0.join("server")
    }

    /// etcd's data dir (with `--store etcd`).
    pub(crate) fn etcd(&self) -> PathBuf {
        self.0.join("etcd")
    }

    /// Node `i`'s directory.
    pub(crate) fn node(&self, i: u32) -> PathBuf {
        self.0.join("nodes").join(format!("n{i}"))
    }

    /// The mount point of the cluster's own bpffs instance (when `/sys/fs/bpf` is not bpffs).
    pub(crate) fn bpffs(&self) -> PathBuf {
        self.0.join("bpffs")
    }

    /// The kubeconfig for kubectl in the root namespace.
    pub(crate) fn kubeconfig(&self) -> PathBuf {
        self.0.join("kubeconfig")
    }

    /// Creates the directory (its parents with mode 0755, itself 0700: it holds credentials).
    /// Fails with `AlreadyExists` if it exists, so two concurrent `ferry up` cannot share it.
    pub(crate) fn create(&self) -> std::io::Result<()> {
        if let Some(parent) = self.0.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::DirBuilder::new().mode(0o700).create(&self.0)
    }

    /// Loads `state.json`; `Ok(None)` if there is none.
    pub(crate) fn load(&self) -> Result<Option<State>> {
        let path = self.state_file();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("parsing {}", path.display()))
    }

    /// Writes `state.json` atomically (temporary file + rename), readable only by root.
    pub(crate) fn save(&self, state: &State) -> Result<()> {
        let path = self.state_file();
        let bytes = serde_json::to_vec_pretty(state)?;
        ferry_sys::fs::write_atomic(&path, &bytes, ferry_sys::fs::WriteOptions::private())
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// Replaces `path` with `contents` (a token, a kubeconfig): a new file created mode 0600, renamed
/// onto `path`, so it is never readable by others, even when `path` existed with another mode.
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    ferry_sys::fs::write_atomic(path, contents, ferry_sys::fs::WriteOptions::private())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ClusterDir::new(tmp.path(), "c1");
        assert!(dir.load().unwrap().is_none());
        dir.create().unwrap();
        assert_eq!(
            dir.create().unwrap_err().kind(),
            std::io::ErrorKind::AlreadyExists
        );
        let state = State {
            name: "c1".into(),
            phase: Phase::Creating,
            up: Some(ProcId {
                pid: 1,
                start_time: 2,
            }),
            nodes: 2,
            store: "sqlite".into(),
            api_port: 6443,
            cgroup_root: "/sys/fs/cgroup/unified".into(),
            namespaces: vec!["c1-sw".into()],
            links: vec![],
            cgroups: vec![],
            components: vec![],
            kubeconfig: None,
            bpffs: None,
            service_proxy: None,
        };
        dir.save(&state).unwrap();
        let back = dir.load().unwrap().unwrap();
        assert_eq!(back.phase, Phase::Creating);
        assert_eq!(back.namespaces, ["c1-sw"]);
        std::fs::write(dir.state_file(), b"{").unwrap();
        assert!(dir.load().is_err());
    }
}
