//! The agent's eBPF side: the embedded objects and typed wrappers around their programs and maps.
//!
//! The objects come from `ferry-ebpf` (one per binary there), built by this crate's `build.rs`
//! and embedded with [`aya::include_bytes_aligned!`]. Map key and value types are shared with the
//! programs through `ferry-common`, whose layouts are asserted at compile time on both sides.
//!
//! - [`SockRedirect`]: the `sock-lb` object's `cgroup/connect4` program and its maps.
//! - [`embedded_objects`] / [`describe`]: what is embedded, read from the ELF without the kernel.

mod error;
mod object;
mod sock_redirect;

pub use error::BpfError;
pub use object::{describe, embedded_objects, EmbeddedObject, ObjectSummary, ProgramSummary};
pub use sock_redirect::{CgroupAttachment, L4Proto, RedirectStats, SockRedirect};
