//! Running the iptables tools: one spawn path for `iptables-save` / `iptables-restore` (and
//! `conntrack`), shared by the masquerade rules ([`crate::masq`]) and the iptables Service proxier
//! ([`crate::service::iptables`]). Both write whole tables atomically with `iptables-restore`
//! instead of one process per rule.

use std::io::Write as _;
use std::process::{Command, Stdio};

/// An iptables command failed.
#[derive(Debug, thiserror::Error)]
#[error("{command}: {problem}")]
pub struct IptablesError {
    /// The command.
    pub command: String,
    /// Exit status and stderr, or the spawn error.
    pub problem: String,
}

/// Runs `cmd args` (`iptables-save`, `iptables-restore`, `conntrack`), feeding `stdin` when given;
/// its stdout, or the exit status and stderr.
pub fn run(cmd: &str, args: &[&str], stdin: Option<&str>) -> Result<String, IptablesError> {
    let err = |problem: String| IptablesError {
        command: format!("{cmd} {}", args.join(" ")),
        problem,
    };
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(e.to_string()))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(|e| err(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        return Err(err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
