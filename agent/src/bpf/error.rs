//! Errors of the eBPF side.

use std::{io, path::PathBuf};

/// An error loading, attaching or driving one of Ferry's eBPF objects.
///
/// Retry semantics: [`BpfError::NotBuilt`], [`BpfError::MissingProgram`],
/// [`BpfError::MissingMap`] and [`BpfError::Parse`] are build problems and never go away by
/// retrying. The others carry the kernel's answer (`#[source]`); they are retryable only when that
/// cause is (e.g. `EAGAIN`/`ENOMEM` from the verifier or a map update), and permanent for missing
/// privileges (`EPERM`) or an unsupported kernel.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// The build embedded an empty placeholder instead of the object (`AYA_BUILD_SKIP` was set).
    #[error("eBPF object `{object}` was not built into this binary (built with AYA_BUILD_SKIP)")]
    NotBuilt {
        /// The object (a `ferry-ebpf` binary name).
        object: &'static str,
    },
    /// The object could not be parsed or its maps created / programs relocated.
    #[error("loading eBPF object `{object}`")]
    Load {
        /// The object.
        object: &'static str,
        /// What aya reported.
        #[source]
        source: Box<aya::EbpfError>,
    },
    /// The object could not be parsed (without the kernel).
    #[error("parsing eBPF object `{object}`")]
    Parse {
        /// The object.
        object: &'static str,
        /// What the ELF parser reported.
        #[source]
        source: Box<aya_obj::ParseError>,
    },
    /// The object has no program of that name (the eBPF and agent sides disagree).
    #[error("eBPF object `{object}` has no program `{program}`")]
    MissingProgram {
        /// The object.
        object: &'static str,
        /// The program name looked up.
        program: &'static str,
    },
    /// The object has no map of that name (the eBPF and agent sides disagree).
    #[error("eBPF object `{object}` has no map `{map}`")]
    MissingMap {
        /// The object.
        object: &'static str,
        /// The map name looked up.
        map: &'static str,
    },
    /// A program operation (load into the kernel, attach, detach, query) failed.
    #[error("{op} of eBPF program `{program}`")]
    Program {
        /// The operation, e.g. `"load"` or `"attach"`.
        op: &'static str,
        /// The program.
        program: &'static str,
        /// What aya reported (verifier log included for loads).
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// The kernel refused to attach a program to a cgroup (e.g. `EBADF`: not a cgroup v2
    /// directory).
    #[error("attaching eBPF program `{program}` to cgroup {}", path.display())]
    AttachCgroup {
        /// The program.
        program: &'static str,
        /// The `--proxy-cgroup` directory.
        path: std::path::PathBuf,
        /// What aya reported (the kernel's errno).
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A map operation failed.
    #[error("{op} on eBPF map `{map}`")]
    Map {
        /// The operation, e.g. `"insert"` or `"lookup"`.
        op: &'static str,
        /// The map.
        map: &'static str,
        /// What aya reported.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// A pin (bpffs file or directory) could not be created, opened, updated or removed.
    #[error("{op} {}", path.display())]
    Pin {
        /// The operation, e.g. `"open link pin"` or `"BPF_LINK_UPDATE"`.
        op: &'static str,
        /// The bpffs path.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// aya could not pin an object.
    #[error("pinning {}", path.display())]
    PinObject {
        /// The bpffs path.
        path: PathBuf,
        /// What aya reported.
        #[source]
        source: Box<aya::pin::PinError>,
    },
    /// `--external-xdp` on a veth underlay whose peer has no XDP program.
    #[error(
        "not attaching XDP to {iface}: it is a veth whose peer has no XDP program, so every \
         XDP_TX frame would be lost (the kernel delivers them to a veth end with XDP only)"
    )]
    XdpPeer {
        /// The underlay.
        iface: String,
    },
    /// A program's link is not a `bpf_link` (a kernel older than 5.7 attached it the legacy way,
    /// which cannot be pinned).
    #[error("link of eBPF program `{program}` cannot be pinned")]
    Link {
        /// The program.
        program: &'static str,
        /// What aya reported.
        #[source]
        source: Box<aya::programs::links::LinkError>,
    },
    /// The cgroup directory to attach to could not be opened.
    #[error("opening cgroup directory {}", path.display())]
    OpenCgroup {
        /// The directory.
        path: PathBuf,
        /// The error from `open(2)`.
        #[source]
        source: io::Error,
    },
}
