//! Running CNI plugins: find a plugin binary on `CNI_PATH`, run it with the CNI environment and a
//! config on stdin, and decode its answer (a result, nothing, or a CNI error).
//!
//! `ferry-cni` uses this to delegate IPAM; [`crate::runtime`] uses it to drive whole conflists the
//! way libcni does (for tests, the benchmark and the kubelet).

use crate::error::{code, quoted, CniError, CniResult};
use ferry_sys::netns::NetnsFd;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Finds `plugin` in `dirs`.
pub fn find_plugin(plugin: &str, dirs: &[PathBuf]) -> CniResult<PathBuf> {
    if plugin.is_empty() || plugin.contains('/') {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            format!("invalid plugin type {}", quoted(plugin)),
        ));
    }
    dirs.iter()
        .map(|d| d.join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            let searched = dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(":");
            CniError::new(
                code::INVALID_CONFIG,
                format!("plugin {} not found", quoted(plugin)),
            )
            .with_details(format!("searched CNI_PATH {}", quoted(&searched)))
        })
}

/// The environment of one plugin invocation.
#[derive(Debug, Clone, Default)]
pub struct Invocation<'a> {
    /// `CNI_COMMAND`.
    pub command: &'a str,
    /// `CNI_CONTAINERID`.
    pub container_id: &'a str,
    /// `CNI_NETNS`.
    pub netns: &'a str,
    /// `CNI_IFNAME`.
    pub ifname: &'a str,
    /// `CNI_ARGS`, already joined.
    pub args: &'a str,
    /// `CNI_PATH` directories.
    pub path: &'a [PathBuf],
    /// Network namespace to start the plugin in (the node's); `None` runs it in the caller's.
    pub run_in: Option<&'a NetnsFd>,
}

/// Runs `binary` and returns its stdout decoded as JSON (`None` when it printed nothing).
/// A non-zero exit becomes the plugin's own CNI error when it printed one.
pub fn invoke(
    binary: &Path,
    inv: &Invocation<'_>,
    stdin: &[u8],
) -> CniResult<Option<serde_json::Value>> {
    let path = std::env::join_paths(inv.path).unwrap_or_default();
    let mut cmd = Command::new(binary);
    if let Some(ns) = inv.run_in {
        ferry_sys::process::enter_netns_on_exec(&mut cmd, ns).map_err(|e| {
            CniError::new(
                code::IO_FAILURE,
                format!("failed to run {}", binary.display()),
            )
            .with_details(e)
        })?;
    }
    let mut child = cmd
        .env("CNI_COMMAND", inv.command)
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_NETNS", inv.netns)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_ARGS", inv.args)
        .env("CNI_PATH", path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            CniError::new(
                code::IO_FAILURE,
                format!("failed to run {}", binary.display()),
            )
            .with_details(e)
        })?;
    if let Some(mut si) = child.stdin.take() {
        // A plugin that exits without reading stdin closes the pipe: that is its business.
        let _ = si.write_all(stdin);
    }
    let out = child.wait_with_output().map_err(|e| {
        CniError::new(
            code::IO_FAILURE,
            format!("waiting for {}", binary.display()),
        )
        .with_details(e)
    })?;
    let name = binary
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let parsed: Option<serde_json::Value> = if stdout.trim().is_empty() {
        None
    } else {
        serde_json::from_str(stdout.trim()).ok()
    };
    if !out.status.success() {
        if let Some(v) = parsed.as_ref().filter(|v| v.get("code").is_some()) {
            let code = v["code"]
                .as_u64()
                .and_then(|c| u32::try_from(c).ok())
                .unwrap_or(code::DELEGATE);
            let msg = v["msg"].as_str().unwrap_or("plugin failed");
            let details = v
                .get("details")
                .and_then(|d| d.as_str())
                .unwrap_or_default();
            return Err(CniError::new(code, format!("{name}: {msg}")).with_details(details));
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(
            CniError::new(code::DELEGATE, format!("{name} failed ({})", out.status))
                .with_details(format!("{} {}", stdout.trim(), stderr.trim())),
        );
    }
    if parsed.is_none() && !stdout.trim().is_empty() {
        return Err(
            CniError::new(code::DECODE, format!("{name} printed invalid JSON"))
                .with_details(stdout.trim().to_owned()),
        );
    }
    Ok(parsed)
}
