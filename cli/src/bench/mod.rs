//! `ferry bench`: benchmarks that run from the release binaries, so the main job builds the
//! workspace once (no `cargo bench` rebuild in another profile).
//!
//! - `ferry bench cni`: ferry-cni against Debian's reference `bridge` + `host-local`, side by side
//!   in one run ([`cni`]).
//! - `ferry bench startup`: pod startup through a whole `ferry up` cluster ([`startup`]).
//!
//! Every figure is reported as the median over rounds with its min–max (`ferry_tests::Spread`); a single run is
//! not a figure on a shared 2-core machine.
//! The statistics and the namespaces with guaranteed cleanup come from `ferry-tests`, the support
//! library the privileged tests use. Both need root (they create network namespaces) and
//! remove everything they created, also on an error or Ctrl-C.

mod cni;
mod startup;

use anyhow::{bail, Result};

/// `ferry bench` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum BenchCmd {
    /// ferry-cni against the reference bridge + host-local plugins: ADD/DEL latency and
    /// concurrent ADDs, rounds alternating A B B A.
    Cni(cni::CniArgs),
    /// Pod startup through a `ferry up` cluster: create -> Running + Ready with an IP.
    Startup(startup::StartupArgs),
}

/// Runs a `ferry bench` subcommand.
pub(crate) fn run(cmd: &BenchCmd) -> Result<()> {
    if !crate::sys::is_root() {
        bail!("needs root: it creates network namespaces (run it as root, or with sudo)");
    }
    crate::sys::catch_interrupts();
    match cmd {
        BenchCmd::Cni(a) => cni::run(a),
        BenchCmd::Startup(a) => startup::run(a),
    }
}

/// Fails once SIGINT/SIGTERM/SIGHUP arrived, so a benchmark stops between steps and its guards
/// remove what it created.
fn check_interrupt() -> Result<()> {
    if crate::sys::interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// The directory of the running `ferry` executable, where the workspace's other binaries are built.
fn bin_dir() -> Result<std::path::PathBuf> {
    use anyhow::Context as _;
    Ok(std::env::current_exe()
        .context("locating the ferry executable")?
        .parent()
        .context("the ferry executable has no directory")?
        .to_owned())
}
