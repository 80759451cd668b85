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
//! programs copy them without conversion. The user-space constructors ([`Lb4Key::new`],
//! [`Lb4Backend::new`]) and accessors do the conversion.
//!
//! These types are the seed of the socket-level Service load balancer (ClusterIP on the cgroup
//! `connect4` / `sendmsg4` / `recvmsg4` hooks): today a frontend maps straight to one backend;
//! the load-balancing issue adds the backend slot and the service/backend maps.

#![no_std]

use core::net::{Ipv4Addr, SocketAddrV4};

/// Names of the maps and programs inside the `sock-lb` eBPF object.
///
/// The eBPF side has to spell these as literals in `#[map(name = ...)]` attributes and function
/// names; the agent looks them up through these constants. Kernel object names are truncated to
/// 15 bytes (`BPF_OBJ_NAME_LEN - 1`), so every name stays within that.
pub mod names {
    /// `HashMap<Lb4Key, Lb4Backend>`: frontend (what the socket asked for) -> backend.
    pub const LB4_SERVICES: &str = "FERRY_LB4_SVC";
    /// `PerCpuArray<u64>` indexed by [`LbStat`](crate::LbStat).
    pub const LB_STATS: &str = "FERRY_LB_STATS";
    /// The `cgroup/connect4` program.
    pub const CONNECT4: &str = "ferry_connect4";
}

/// Capacity of the [`names::LB4_SERVICES`] map.
pub const LB4_SERVICES_MAX_ENTRIES: u32 = 16_384;

/// IANA protocol number of TCP, as found in `bpf_sock_addr.protocol`.
pub const IPPROTO_TCP: u8 = 6;
/// IANA protocol number of UDP, as found in `bpf_sock_addr.protocol`.
pub const IPPROTO_UDP: u8 = 17;

/// An IPv4 frontend: the destination a socket asked for (a ClusterIP and port, later).
///
/// Key of [`names::LB4_SERVICES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Lb4Key {
    /// IPv4 address, network byte order (`bpf_sock_addr.user_ip4`).
    pub addr: u32,
    /// Port, network byte order (the low 16 bits of `bpf_sock_addr.user_port`).
    pub port: u16,
    /// L4 protocol ([`IPPROTO_TCP`] or [`IPPROTO_UDP`]).
    pub proto: u8,
    /// Explicit padding; always zero so that equal keys hash equally.
    pub pad: u8,
}

const _: () = assert!(core::mem::size_of::<Lb4Key>() == 8);
const _: () = assert!(core::mem::align_of::<Lb4Key>() == 4);

impl Lb4Key {
    /// Builds a key from values exactly as the kernel presents them (network byte order).
    #[inline(always)]
    pub const fn from_wire(addr_be: u32, port_be: u16, proto: u8) -> Self {
        Self {
            addr: addr_be,
            port: port_be,
            proto,
            pad: 0,
        }
    }

    /// Builds a key from a host-side socket address and protocol.
    pub const fn new(addr: SocketAddrV4, proto: u8) -> Self {
        Self::from_wire(
            u32::from_ne_bytes(addr.ip().octets()),
            addr.port().to_be(),
            proto,
        )
    }

    /// The socket address this key matches.
    pub const fn socket_addr(&self) -> SocketAddrV4 {
        let [a, b, c, d] = self.addr.to_ne_bytes();
        SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), u16::from_be(self.port))
    }
}

/// An IPv4 backend: where a matching socket is sent instead.
///
/// Value of [`names::LB4_SERVICES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Lb4Backend {
    /// IPv4 address, network byte order.
    pub addr: u32,
    /// Port, network byte order.
    pub port: u16,
    /// Explicit padding; always zero.
    pub pad: [u8; 2],
}

const _: () = assert!(core::mem::size_of::<Lb4Backend>() == 8);
const _: () = assert!(core::mem::align_of::<Lb4Backend>() == 4);

impl Lb4Backend {
    /// Builds a backend from values in network byte order.
    #[inline(always)]
    pub const fn from_wire(addr_be: u32, port_be: u16) -> Self {
        Self {
            addr: addr_be,
            port: port_be,
            pad: [0; 2],
        }
    }

    /// Builds a backend from a host-side socket address.
    pub const fn new(addr: SocketAddrV4) -> Self {
        Self::from_wire(u32::from_ne_bytes(addr.ip().octets()), addr.port().to_be())
    }

    /// The socket address of this backend.
    pub const fn socket_addr(&self) -> SocketAddrV4 {
        let [a, b, c, d] = self.addr.to_ne_bytes();
        SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), u16::from_be(self.port))
    }
}

/// Indexes of the per-CPU `u64` counters in [`names::LB_STATS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LbStat {
    /// Times the `connect4` program ran.
    Connect4Calls = 0,
    /// Times the `connect4` program rewrote the destination.
    Connect4Rewrites = 1,
}

impl LbStat {
    /// Number of counters, i.e. `max_entries` of [`names::LB_STATS`].
    pub const COUNT: u32 = 2;
    /// Every counter, in index order.
    pub const ALL: [Self; Self::COUNT as usize] = [Self::Connect4Calls, Self::Connect4Rewrites];

    /// Index of this counter in the array map.
    #[inline(always)]
    pub const fn index(self) -> u32 {
        self as u32
    }
}

#[cfg(feature = "user")]
#[allow(
    unsafe_code,
    reason = "aya::Pod is an unsafe trait: the impl asserts the types are plain bytes (the map ABI)"
)]
mod user {
    use super::{Lb4Backend, Lb4Key};

    // SAFETY: `Lb4Key` is `#[repr(C)]`, `Copy`, made only of integers with explicit padding
    // fields (size asserted above), so every byte pattern is a valid value and there are no
    // uninitialised padding bytes.
    unsafe impl aya::Pod for Lb4Key {}

    // SAFETY: as for `Lb4Key`: `#[repr(C)]`, integers only, explicit padding, size asserted.
    unsafe impl aya::Pod for Lb4Backend {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_stores_network_byte_order() {
        let key = Lb4Key::new(
            SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 1), 443),
            IPPROTO_TCP,
        );
        // In memory the address and port bytes appear in wire order, as in `bpf_sock_addr`.
        assert_eq!(key.addr.to_ne_bytes(), [10, 96, 0, 1]);
        assert_eq!(key.port.to_ne_bytes(), [0x01, 0xbb]);
        assert_eq!(key.proto, IPPROTO_TCP);
        assert_eq!(key.pad, 0);
        assert_eq!(
            key.socket_addr(),
            SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 1), 443)
        );
    }

    #[test]
    fn backend_round_trips() {
        let addr = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 7), 8080);
        let backend = Lb4Backend::new(addr);
        assert_eq!(backend.socket_addr(), addr);
        assert_eq!(backend.pad, [0; 2]);
    }

    #[test]
    fn stat_indexes_are_dense() {
        for (i, stat) in LbStat::ALL.iter().enumerate() {
            assert_eq!(stat.index() as usize, i);
        }
    }

    #[test]
    fn names_fit_kernel_object_names() {
        for name in [names::LB4_SERVICES, names::LB_STATS, names::CONNECT4] {
            assert!(
                name.len() <= 15,
                "{name} is longer than BPF_OBJ_NAME_LEN - 1"
            );
        }
    }
}
