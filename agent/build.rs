//! Build script of `ferry-agent`: compiles the eBPF programs and leaves the objects in `OUT_DIR`.
//!
//! `aya_build::build_ebpf` runs a nested
//! `rustup run nightly cargo build --package ferry-ebpf --bins --release --target bpfel-unknown-none
//! -Z build-std=core` (its own target dir under `OUT_DIR`), during which rustc links every
//! `ferry-ebpf` binary with `bpf-linker`; it then copies each object to `OUT_DIR/<bin name>`, where
//! `src/bpf` embeds it with `aya::include_bytes_aligned!`. So one `cargo build` builds both halves
//! and the agent can never carry programs older than its own copy of `ferry-common`.
//!
//! Needs: the `nightly` toolchain with `rust-src`, and `bpf-linker` on `PATH` (scripts/setup.sh).
//! `AYA_BUILD_SKIP=1` skips the nested build (e.g. on a machine without nightly); the agent then
//! embeds empty objects and every load fails with `BpfError::NotBuilt`.

use std::{env, fs, path::PathBuf};

use anyhow::Context as _;

/// Binaries of `ferry-ebpf`, i.e. the objects `src/bpf` embeds.
const EBPF_BINS: &[&str] = &["sock-lb", "nodeport", "pod-fastpath"];

fn main() -> anyhow::Result<()> {
    let manifest_dir = env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let ebpf_dir = format!("{manifest_dir}/../ebpf");
    // `ferry-ebpf`'s lib depends on `ferry-common`, so cargo already reruns this script when it
    // changes; the explicit line documents (and keeps) that.
    println!("cargo:rerun-if-changed={manifest_dir}/../common");

    aya_build::build_ebpf(
        [aya_build::Package {
            name: "ferry-ebpf",
            root_dir: &ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
    .context("building the eBPF programs (ferry-ebpf) with nightly and bpf-linker")?;

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let skipped =
        env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    for bin in EBPF_BINS {
        let object = out_dir.join(bin);
        if skipped {
            // Overwrite whatever an earlier build left, so a skip never embeds a stale object.
            fs::write(&object, [])
                .with_context(|| format!("writing placeholder {}", object.display()))?;
        } else if !object.is_file() {
            anyhow::bail!("aya-build did not produce {}", object.display());
        }
    }
    Ok(())
}
