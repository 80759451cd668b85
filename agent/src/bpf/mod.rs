//! The agent's eBPF side (mechanism only: the one module that imports `aya`): the embedded
//! objects and typed wrappers around their programs and maps.
//!
//! The objects come from `ferry-ebpf` (one per binary there), built by this crate's `build.rs`
//! and embedded with [`aya::include_bytes_aligned!`]. Map key and value types are shared with the
//! programs through `ferry-common`, whose layouts are asserted at compile time on both sides.
//!
//! - [`SockLb`]: the `sock-lb` object's four cgroup socket programs, loaded with their maps
//!   pinned under a per-node bpffs directory and attached through pinned links, so they keep
//!   serving while the agent is down and a new agent adopts them ([`SockLb::load`],
//!   [`SockLb::attach`]); [`unpin`] detaches and removes everything.
//! - [`NodePortTc`] / [`NpMaps`]: the `nodeport` object's tc programs (pinned TCX links on the
//!   node's interfaces) and maps, for traffic from outside the node (`crate::service::nodeport`).
//! - [`LbMaps`]: typed handles on the pinned maps (also opened read-only from the pins alone by
//!   `ferry-agent services`).
//! - [`PodFastPath`]: the `pod-fastpath` object's tc programs (TCX links held by the agent,
//!   never pinned) and pinned maps: `bpf_redirect_peer` into this node's pods
//!   (`crate::fastpath`).
//! - [`embedded_objects`] / [`describe`]: what is embedded, read from the ELF without the kernel.
//!
//! The policy (which frontends go where) lives in `crate::service::ebpf`.

mod error;
mod fastpath;
mod maps;
mod nodeport;
mod object;
mod sock_lb;
mod util;

pub use error::BpfError;
pub use fastpath::{pinned_stats, unpin as unpin_fastpath, Hook, PodFastPath};
pub use maps::LbMaps;
pub use nodeport::{
    attached_interfaces, detach_xdp, unpin as unpin_nodeport, xdp_interfaces, NodePortTc, NpMaps,
    TcHook,
};
pub use object::{describe, embedded_objects, EmbeddedObject, ObjectSummary, ProgramSummary};
pub use sock_lb::{attached, unpin, AttachOutcome, SockLb};
