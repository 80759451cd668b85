//! `ferry-cni`: a CNI 1.1 plugin that attaches pods to a Linux bridge through a veth pair, with a
//! built-in, leak-proof IPAM.
//!
//! | module | job |
//! |---|---|
//! | [`plugin`] | dispatch of one invocation (the binary's `main` is a thin wrapper) |
//! | [`env`], [`config`] | validated `CNI_*` environment and network configuration |
//! | [`bridge`] | ADD/DEL/CHECK/GC/STATUS of the veth + bridge attachment |
//! | [`ipam`] | built-in file-backed IPAM, or delegation to an IPAM plugin |
//! | (`ferry-netlink`) | the kernel boundary: rtnetlink, through the shared crate (namespaces come from `ferry-sys`) |
//! | [`masq`] | `ipMasq`: node-level masquerade rules per pod subnet |
//! | [`loopback`] | the `loopback` plugin, same binary |
//! | [`fault`] | test-only fault injection into ADD (`FERRY_CNI_FAULT`) |
//! | [`types`], [`version`], [`error`], [`exec`] | re-exported from `ferry-libcni`: CNI results, versions, error codes, invoking a delegated plugin |

#![forbid(unsafe_code)]

pub mod bridge;
pub mod config;
pub mod env;
pub mod fault;
pub mod ipam;
pub mod loopback;
pub mod masq;
pub mod plugin;

// The spec types and plugin execution (IPAM delegation) live in the runtime-side crate.
pub use ferry_libcni::{error, exec, types, version};
