//! Build script of `ferry-ebpf`.
//!
//! Linking for `bpfel-unknown-none` runs `bpf-linker`, which cargo does not know about. When
//! building for the BPF target this script finds it on `PATH` and tells cargo to rebuild the
//! programs whenever that binary changes (aya-template's approach; cargo artifact dependencies are
//! not usable for this yet). The host build (`cargo clippy --workspace`) needs no linker and does
//! nothing here.

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if env::var("CARGO_CFG_TARGET_ARCH").as_deref() != Ok("bpf") {
        return;
    }
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => panic!(
            "bpf-linker not found on PATH ({err}); scripts/setup.sh installs it \
             (cargo install bpf-linker, built against LLVM 22)"
        ),
    }
}
