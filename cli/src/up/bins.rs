//! The executables `ferry up` starts, found next to `ferry` (or in `--bin-dir`), and what the
//! agent found there supports.

use super::{ServiceProxy, Store, UpArgs};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The executables `ferry up` starts.
#[derive(Debug)]
pub(super) struct Bins {
    pub(super) server: PathBuf,
    pub(super) kubelet: Option<PathBuf>,
    pub(super) agent: Option<PathBuf>,
    pub(super) cni: PathBuf,
    pub(super) etcd: Option<PathBuf>,
    /// The agent has the Services flags (`--service-proxy`, `--proxy-cgroup`, `--bpffs-dir`).
    pub(super) agent_services: bool,
}

/// Whether `agent --help` lists `--service-proxy` (an agent built before Services has none).
fn agent_has_services(agent: &Path) -> bool {
    Command::new(agent)
        .arg("--help")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--service-proxy"))
}

pub(super) fn find_bins(args: &UpArgs) -> Result<Bins> {
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
