//! Library target of `ferry-ebpf`.
//!
//! The programs are the crate's binaries (one per attach point, e.g. `src/sock_lb.rs`), each linked
//! by `bpf-linker` into one BPF object that `ferry-agent` embeds. This empty `no_std` library exists
//! so that `ferry-agent` can name the crate as a build-dependency (which makes cargo rerun the
//! agent's build script when the programs change), as in aya-template. Helpers shared by several
//! programs belong here.

#![no_std]
