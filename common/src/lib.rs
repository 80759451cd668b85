//! Types shared by Ferry's eBPF programs (`ferry-ebpf`) and the user-space agent (`ferry-agent`).
//!
//! Everything here crosses the kernel boundary as raw bytes, so every type is `#[repr(C)]`,
//! `Copy`, has explicit padding fields (no implicit holes, which the kernel would hash as garbage
//! in a map key), contains no `bool`, and sits next to a compile-time size assert. The eBPF side
//! builds this crate without features; the agent enables `user`, which adds the
//! `unsafe impl aya::Pod` needed to use the types as map keys and values in `aya`, so the kernel
//! side never depends on `aya`.
//!
//! Byte order: addresses and ports are stored exactly as the kernel presents them in
//! `struct bpf_sock_addr` (`user_ip4`, `user_port`), i.e. in network byte order, so the eBPF
//! programs copy them without conversion. The user-space constructors (`new`) and accessors
//! (`socket_addr`) do the conversion.
//!
//! | module | what |
//! |---|---|
//! | [`names`] | map, program and pin names both sides spell |
//! | [`csum`] | Internet checksum arithmetic for the XDP program (no checksum helpers there) |
//! | [`lb`] | the socket load balancer's maps: service/slot, backend, reverse NAT, affinity |
//! | [`stats`] | the per-CPU counter indexes ([`LbStat`]) |
//! | [`fastpath`] | the pod fast path's maps: pod endpoints, config, counters |
//! | [`nat`] | the tc NodePort datapath's maps: external frontends, Maglev rows, conntrack |
//!
//! The map layout follows Cilium's socket LB (`lb4_service` -> slots -> `lb4_backend`); see
//! `docs/services.md`.

#![no_std]

pub mod csum;
pub mod fastpath;
pub mod lb;
pub mod names;
pub mod nat;
pub mod stats;

#[cfg(feature = "user")]
mod user;

pub use lb::{
    Lb4Affinity, Lb4AffinityKey, Lb4Backend, Lb4RevNat, Lb4RevNatKey, Lb4Svc, Lb4SvcKey,
    LB4_AFFINITY_MAX_ENTRIES, LB4_BACKENDS_MAX_ENTRIES, LB4_REVNAT_MAX_ENTRIES,
    LB4_SERVICES_MAX_ENTRIES, LB_MAX_BACKENDS_PER_SERVICE, SVC_FLAG_AFFINITY,
};
pub use stats::LbStat;

/// IANA protocol number of TCP, as found in `bpf_sock_addr.protocol`.
pub const IPPROTO_TCP: u8 = 6;
/// IANA protocol number of UDP, as found in `bpf_sock_addr.protocol`.
pub const IPPROTO_UDP: u8 = 17;

/// `BPF_F_NO_PREALLOC`: a hash map allocates elements on insert (and frees them after an RCU
/// grace period) instead of pinning `max_entries` elements of kernel memory up front.
pub const BPF_F_NO_PREALLOC: u32 = 1;
