//! `ferry-libcni`: the runtime side of CNI, what a container runtime (our kubelet) links. Upstream
//! draws the same line between `containernetworking/cni` (libcni) and the plugins repository: the
//! runtime executes plugins, it does not contain them.
//!
//! | module | job |
//! |---|---|
//! | [`runtime`] | run a whole conflist (ADD/DEL/CHECK/GC/STATUS) with result caching, as libcni does |
//! | [`exec`] | find and invoke one plugin binary (also inside a network namespace) |
//! | [`types`], [`version`], [`error`] | CNI results, spec versions, error codes and bodies |

#![cfg_attr(not(test), warn(unused_crate_dependencies))]
#![forbid(unsafe_code)]

pub mod error;
pub mod exec;
pub mod runtime;
pub mod types;
pub mod version;
