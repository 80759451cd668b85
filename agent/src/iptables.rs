//! Running the iptables tools: one spawn path for `iptables-save` / `iptables-restore` (and
//! `conntrack`), shared by the masquerade rules ([`crate::masq`]) and the iptables Service proxier
//! ([`crate::service::iptables`]). Both write whole tables atomically with `iptables-restore`
//! instead of one process per rule.

use std::process::Command;

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
    let out = ferry_sys::process::output_with_stdin(Command::new(cmd).args(args), stdin)
        .map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        return Err(err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
