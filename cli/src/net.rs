//! Network namespaces and links. Namespaces are made and removed by `ferry_sys::netns` at
//! `/run/netns/<name>` (where `ip netns` finds them); links and addresses go through the `ip` tool.
//! Every link is created directly inside the namespaces it belongs to; nothing is configured in
//! the root namespace.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Command;

/// `/run/netns/<name>`, the handle of namespace `name` (the path `ip netns` uses).
pub(crate) fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

fn run_ip(args: &[&str], stdin: Option<&str>) -> Result<String> {
    let out = ferry_sys::process::output_with_stdin(Command::new("ip").args(args), stdin)
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}{} failed: {}",
            args.join(" "),
            stdin.map(|s| format!(" <<< {s:?}")).unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates namespace `name` (as `ip netns add <name>`; an existing name is an error).
pub(crate) fn netns_add(name: &str) -> Result<()> {
    ferry_sys::netns::create_bound(&netns_path(name))
        .with_context(|| format!("creating network namespace {name}"))
}

/// Removes namespace `name` (as `ip netns del <name>`); false if there was no such namespace.
pub(crate) fn netns_del(name: &str) -> Result<bool> {
    let path = netns_path(name);
    if !path.exists() {
        return Ok(false);
    }
    ferry_sys::netns::remove_bound(&path)
        .with_context(|| format!("removing network namespace {name}"))?;
    Ok(true)
}

/// Names of the namespaces `ip netns list` knows.
pub(crate) fn netns_list() -> Vec<String> {
    // Read the directory rather than parse `ip netns list` (same source, no process).
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Pids of the processes inside namespace `name` (`ip netns pids`).
pub(crate) fn netns_pids(name: &str) -> Vec<i32> {
    run_ip(&["netns", "pids", name], None)
        .map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `script` (one `ip` command per line, without the leading `ip`) inside namespace `netns`,
/// stopping at the first failure.
pub(crate) fn batch(netns: &str, script: &str) -> Result<()> {
    run_ip(&["-n", netns, "-batch", "-"], Some(script))
        .map(drop)
        .with_context(|| format!("configuring namespace {netns}"))
}

/// A veth pair: `name` inside `netns`, `peer` inside `peer_netns`, created there directly.
pub(crate) fn veth(netns: &str, name: &str, peer_netns: &str, peer: &str) -> Result<()> {
    run_ip(
        &[
            "link", "add", name, "netns", netns, "type", "veth", "peer", "name", peer, "netns",
            peer_netns,
        ],
        None,
    )
    .map(drop)
}
