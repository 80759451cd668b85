//! The socket load balancer's maps (Cilium's shape: service entry -> backend slots -> backend).
//!
//! - [`names::LB4_SERVICES`](crate::names::LB4_SERVICES): [`Lb4SvcKey`] -> [`Lb4Svc`]. Slot 0 of
//!   a frontend (generation 0) is the *service entry*: backend count, generation, flags,
//!   affinity timeout. Slots `1..=count` of the entry's generation hold backend ids. The agent
//!   writes a new backend set into the *other* generation, flips the service entry (one map
//!   update: count and generation change together), then deletes the old generation's slots, so
//!   a program sees the old set or the new one, never a mix.
//! - [`names::LB4_BACKENDS`](crate::names::LB4_BACKENDS): backend id (`u32`) -> [`Lb4Backend`].
//! - [`names::LB4_REVNAT`](crate::names::LB4_REVNAT) (LRU): [`Lb4RevNatKey`] (socket cookie,
//!   backend) -> [`Lb4RevNat`] (the frontend), written at `connect4` / `sendmsg4`, read by
//!   `recvmsg4` / `getpeername4`.
//! - [`names::LB4_AFFINITY`](crate::names::LB4_AFFINITY) (LRU): [`Lb4AffinityKey`] (netns
//!   cookie, frontend) -> [`Lb4Affinity`] (backend id, last use) for `sessionAffinity: ClientIP`.

use core::net::{Ipv4Addr, SocketAddrV4};

/// Capacity of the service map: 64k frontends plus 448k backend slots (both generations of a
/// frontend exist only during its flip). Created with `BPF_F_NO_PREALLOC`: elements cost memory
/// only when used; the bucket array (16 bytes per rounded-up entry, 8 MiB) is allocated up front.
pub const LB4_SERVICES_MAX_ENTRIES: u32 = 524_288;
/// Capacity of the backend map (256k backends), `BPF_F_NO_PREALLOC` (4 MiB of buckets up front).
pub const LB4_BACKENDS_MAX_ENTRIES: u32 = 262_144;
/// Capacity of the reverse-NAT LRU map (preallocated, as LRU maps must be: about 5 MiB).
pub const LB4_REVNAT_MAX_ENTRIES: u32 = 65_536;
/// Capacity of the affinity LRU map (preallocated: about 5 MiB).
pub const LB4_AFFINITY_MAX_ENTRIES: u32 = 65_536;
/// Most backends one frontend can have (the agent truncates beyond it and reports it).
pub const LB_MAX_BACKENDS_PER_SERVICE: u16 = 16_384;

/// [`Lb4Svc::flags`] bit: the Service has `sessionAffinity: ClientIP`.
pub const SVC_FLAG_AFFINITY: u8 = 1;

/// Converts a host-order address and port into the wire-order pair the maps store.
#[inline(always)]
const fn wire(addr: SocketAddrV4) -> (u32, u16) {
    (u32::from_ne_bytes(addr.ip().octets()), addr.port().to_be())
}

/// Converts a wire-order pair back into a socket address.
#[inline(always)]
const fn host(addr_be: u32, port_be: u16) -> SocketAddrV4 {
    let [a, b, c, d] = addr_be.to_ne_bytes();
    SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), u16::from_be(port_be))
}

/// Key of the service map: a frontend (the destination a socket asked for) and a slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Lb4SvcKey {
    /// IPv4 address, network byte order (`bpf_sock_addr.user_ip4`).
    pub addr: u32,
    /// Port, network byte order (the low 16 bits of `bpf_sock_addr.user_port`).
    pub port: u16,
    /// L4 protocol ([`IPPROTO_TCP`](crate::IPPROTO_TCP) or [`IPPROTO_UDP`](crate::IPPROTO_UDP)).
    pub proto: u8,
    /// Generation of a backend slot (0 or 1); 0 for the service entry.
    pub gen: u8,
    /// 0: the service entry; `1..=count`: a backend slot.
    pub slot: u16,
    /// Explicit padding; always zero so that equal keys hash equally.
    pub pad: [u8; 2],
}

const _: () = assert!(core::mem::size_of::<Lb4SvcKey>() == 12);
const _: () = assert!(core::mem::align_of::<Lb4SvcKey>() == 4);

impl Lb4SvcKey {
    /// The service entry's key, from values exactly as the kernel presents them.
    #[inline(always)]
    pub const fn service_wire(addr_be: u32, port_be: u16, proto: u8) -> Self {
        Self {
            addr: addr_be,
            port: port_be,
            proto,
            gen: 0,
            slot: 0,
            pad: [0; 2],
        }
    }

    /// The service entry's key of a host-side frontend.
    pub const fn service(frontend: SocketAddrV4, proto: u8) -> Self {
        let (addr, port) = wire(frontend);
        Self::service_wire(addr, port, proto)
    }

    /// The key of backend slot `slot` (1-based) of generation `gen` of this frontend.
    #[inline(always)]
    pub const fn with_slot(self, gen: u8, slot: u16) -> Self {
        Self { gen, slot, ..self }
    }

    /// The frontend's socket address.
    pub const fn socket_addr(&self) -> SocketAddrV4 {
        host(self.addr, self.port)
    }
}

/// Value of the service map: the service entry (slot 0) or a backend slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Lb4Svc {
    /// Backend slot: the backend id. Service entry: 0.
    pub backend_id: u32,
    /// Service entry: number of backend slots of generation [`Lb4Svc::gen`] (0: refuse).
    pub count: u16,
    /// Service entry: the generation (0 or 1) whose slots are live.
    pub gen: u8,
    /// Service entry: [`SVC_FLAG_AFFINITY`].
    pub flags: u8,
    /// Service entry: ClientIP affinity timeout in seconds (0 without affinity).
    pub affinity_timeout: u32,
}

const _: () = assert!(core::mem::size_of::<Lb4Svc>() == 12);
const _: () = assert!(core::mem::align_of::<Lb4Svc>() == 4);

impl Lb4Svc {
    /// A service entry.
    pub const fn entry(count: u16, gen: u8, affinity_timeout: Option<u32>) -> Self {
        let (flags, timeout) = match affinity_timeout {
            Some(t) => (SVC_FLAG_AFFINITY, t),
            None => (0, 0),
        };
        Self {
            backend_id: 0,
            count,
            gen,
            flags,
            affinity_timeout: timeout,
        }
    }

    /// A backend slot.
    pub const fn slot(backend_id: u32) -> Self {
        Self {
            backend_id,
            count: 0,
            gen: 0,
            flags: 0,
            affinity_timeout: 0,
        }
    }

    /// The affinity timeout of a service entry, if it has ClientIP affinity.
    pub const fn affinity(&self) -> Option<u32> {
        if self.flags & SVC_FLAG_AFFINITY != 0 {
            Some(self.affinity_timeout)
        } else {
            None
        }
    }
}

/// An IPv4 backend: where a matching socket is sent instead. Value of the backend map.
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
    /// Builds a backend from a host-side socket address.
    pub const fn new(addr: SocketAddrV4) -> Self {
        let (addr, port) = wire(addr);
        Self {
            addr,
            port,
            pad: [0; 2],
        }
    }

    /// The socket address of this backend.
    pub const fn socket_addr(&self) -> SocketAddrV4 {
        host(self.addr, self.port)
    }
}

/// Key of the reverse-NAT map: a socket and the backend it was sent to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Lb4RevNatKey {
    /// `bpf_get_socket_cookie` of the socket.
    pub cookie: u64,
    /// Backend address, network byte order.
    pub addr: u32,
    /// Backend port, network byte order.
    pub port: u16,
    /// Explicit padding; always zero.
    pub pad: [u8; 2],
}

const _: () = assert!(core::mem::size_of::<Lb4RevNatKey>() == 16);
const _: () = assert!(core::mem::align_of::<Lb4RevNatKey>() == 8);

impl Lb4RevNatKey {
    /// Builds a key from a socket cookie and a host-side backend address.
    pub const fn new(cookie: u64, backend: SocketAddrV4) -> Self {
        let (addr, port) = wire(backend);
        Self {
            cookie,
            addr,
            port,
            pad: [0; 2],
        }
    }

    /// The backend's socket address.
    pub const fn backend(&self) -> SocketAddrV4 {
        host(self.addr, self.port)
    }
}

/// Value of the reverse-NAT map: the frontend the socket originally asked for.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Lb4RevNat {
    /// Frontend address, network byte order.
    pub addr: u32,
    /// Frontend port, network byte order.
    pub port: u16,
    /// Explicit padding; always zero.
    pub pad: [u8; 2],
}

const _: () = assert!(core::mem::size_of::<Lb4RevNat>() == 8);
const _: () = assert!(core::mem::align_of::<Lb4RevNat>() == 4);

impl Lb4RevNat {
    /// The frontend's socket address.
    pub const fn socket_addr(&self) -> SocketAddrV4 {
        host(self.addr, self.port)
    }
}

/// Key of the affinity map: a client network namespace and a frontend.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Lb4AffinityKey {
    /// `bpf_get_netns_cookie` of the client socket's network namespace.
    pub netns_cookie: u64,
    /// Frontend address, network byte order.
    pub addr: u32,
    /// Frontend port, network byte order.
    pub port: u16,
    /// Frontend protocol.
    pub proto: u8,
    /// Explicit padding; always zero.
    pub pad: u8,
}

const _: () = assert!(core::mem::size_of::<Lb4AffinityKey>() == 16);
const _: () = assert!(core::mem::align_of::<Lb4AffinityKey>() == 8);

impl Lb4AffinityKey {
    /// The frontend's socket address.
    pub const fn socket_addr(&self) -> SocketAddrV4 {
        host(self.addr, self.port)
    }
}

/// Value of the affinity map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Lb4Affinity {
    /// The backend chosen last.
    pub backend_id: u32,
    /// Explicit padding; always zero.
    pub pad: u32,
    /// `bpf_ktime_get_ns` of the last use.
    pub last_used_ns: u64,
}

const _: () = assert!(core::mem::size_of::<Lb4Affinity>() == 16);
const _: () = assert!(core::mem::align_of::<Lb4Affinity>() == 8);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{names, LbStat, IPPROTO_TCP};

    #[test]
    fn service_key_stores_network_byte_order() {
        let key = Lb4SvcKey::service(
            SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 1), 443),
            IPPROTO_TCP,
        );
        assert_eq!(key.addr.to_ne_bytes(), [10, 96, 0, 1]);
        assert_eq!(key.port.to_ne_bytes(), [0x01, 0xbb]);
        assert_eq!(
            (key.proto, key.gen, key.slot, key.pad),
            (IPPROTO_TCP, 0, 0, [0; 2])
        );
        assert_eq!(
            key.socket_addr(),
            SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 1), 443)
        );
        let slot = key.with_slot(1, 3);
        assert_eq!(
            (slot.addr, slot.port, slot.gen, slot.slot),
            (key.addr, key.port, 1, 3)
        );
    }

    #[test]
    fn backend_and_revnat_round_trip() {
        let addr = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 7), 8080);
        assert_eq!(Lb4Backend::new(addr).socket_addr(), addr);
        assert_eq!(Lb4RevNatKey::new(7, addr).backend(), addr);
    }

    #[test]
    fn entry_flags() {
        assert_eq!(Lb4Svc::entry(3, 1, Some(10)).affinity(), Some(10));
        assert_eq!(Lb4Svc::entry(3, 1, None).affinity(), None);
        assert_eq!(Lb4Svc::slot(9).backend_id, 9);
    }

    #[test]
    fn stat_indexes_are_dense() {
        for (i, stat) in LbStat::ALL.iter().enumerate() {
            assert_eq!(stat.index() as usize, i);
        }
    }

    #[test]
    fn names_fit_kernel_object_names() {
        for name in names::MAPS.iter().chain(names::PROGRAMS.iter()) {
            assert!(
                name.len() <= 15,
                "{name} is longer than BPF_OBJ_NAME_LEN - 1"
            );
        }
        let mut sorted = names::MAPS;
        sorted.sort_unstable();
        assert_eq!(sorted, names::MAPS);
        let mut sorted = names::PROGRAMS;
        sorted.sort_unstable();
        assert_eq!(sorted, names::PROGRAMS);
    }
}
