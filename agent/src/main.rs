//! `ferry-agent`: Ferry's node agent.
//!
//! For now it only reports what it carries: `--version`, and (with no arguments) the eBPF programs
//! and maps embedded in the binary, read from the ELF objects without touching the kernel. The
//! agent's real work (watching the apiserver, programming the overlay and the eBPF dataplane)
//! lands with the overlay issue; until then nothing is loaded or attached by this binary.

use anyhow::Context as _;
use clap::Parser;
use ferry_agent::bpf::{self, BpfError};

/// Ferry's node agent (currently: reports its version and embedded eBPF programs).
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let Cli {} = Cli::parse();
    println!("ferry-agent {}", env!("CARGO_PKG_VERSION"));
    println!("embedded eBPF objects:");
    for object in bpf::embedded_objects() {
        match bpf::describe(object) {
            Ok(summary) => print!("{summary}"),
            Err(BpfError::NotBuilt { object }) => {
                println!("{object} (not built: the build set AYA_BUILD_SKIP)");
            }
            Err(err) => {
                return Err(err).with_context(|| format!("reading embedded object {}", object.name))
            }
        }
    }
    println!(
        "ferry-agent does not run a dataplane yet: the node agent loop lands with the overlay \
         issue, so nothing was loaded or attached."
    );
    Ok(())
}
