//! `ferry-cni`: a CNI 1.1 plugin that attaches pods to a Linux bridge through a veth pair, with a
//! built-in, leak-proof IPAM.
//!
//! | module | job |
//! |---|---|
//! | [`plugin`] | dispatch of one invocation (the binary's `main` is a thin wrapper) |
//! | [`env`], [`config`] | validated `CNI_*` environment and network configuration |
//! | [`bridge`] | ADD/DEL/CHECK/GC/STATUS of the veth + bridge attachment |
//! | [`ipam`] | built-in file-backed IPAM, or delegation to an IPAM plugin |
//! | [`netlink`] | the kernel boundary: rtnetlink (namespaces come from `ferry-sys`) |
//! | [`masq`] | `ipMasq`: node-level masquerade rules per pod subnet |
//! | [`loopback`] | the `loopback` plugin, same binary |
//! | [`exec`], [`runtime`] | running plugins and whole conflists the way libcni does |
//! | [`fault`] | test-only fault injection into ADD (`FERRY_CNI_FAULT`) |
//! | [`types`], [`version`], [`error`] | CNI results, versions, error codes |

pub mod bridge;
pub mod config;
pub mod env;
pub mod error;
pub mod exec;
pub mod fault;
pub mod ipam;
pub mod loopback;
pub mod masq;
pub mod netlink;
pub mod plugin;
pub mod runtime;
pub mod types;
pub mod version;
