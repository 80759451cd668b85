//! Indexes of the per-CPU `u64` counters in [`names::LB_STATS`](crate::names::LB_STATS).

/// One counter of the socket load balancer.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LbStat {
    /// Times `connect4` ran (every IPv4 `connect(2)` in an attached cgroup).
    Connect4Calls = 0,
    /// Times `connect4` rewrote the destination to a backend.
    Connect4Rewrites = 1,
    /// Times `sendmsg4` ran (every unconnected IPv4 UDP `sendmsg(2)` with an address).
    Sendmsg4Calls = 2,
    /// Times `sendmsg4` rewrote the destination to a backend.
    Sendmsg4Rewrites = 3,
    /// `connect(2)` / `sendmsg(2)` refused with `ECONNREFUSED`: the frontend has no backends.
    Refused = 4,
    /// Replies whose source `recvmsg4` rewrote back to the frontend.
    RevNatRecvmsg = 5,
    /// `getpeername(2)` results rewritten back to the frontend.
    RevNatGetpeername = 6,
    /// Backend choices served from the affinity map (ClientIP affinity).
    AffinityHits = 7,
    /// A backend slot was missing (after one retry of the service entry): left alone.
    ErrNoSlot = 8,
    /// A backend id had no backend: left alone.
    ErrNoBackend = 9,
    /// The reverse-NAT entry could not be written (the reply would show the backend).
    ErrRevNatUpdate = 10,
    /// The affinity entry could not be written.
    ErrAffinityUpdate = 11,
}

impl LbStat {
    /// Number of counters, i.e. `max_entries` of the stats map.
    pub const COUNT: u32 = 12;
    /// Every counter, in index order.
    pub const ALL: [Self; Self::COUNT as usize] = [
        Self::Connect4Calls,
        Self::Connect4Rewrites,
        Self::Sendmsg4Calls,
        Self::Sendmsg4Rewrites,
        Self::Refused,
        Self::RevNatRecvmsg,
        Self::RevNatGetpeername,
        Self::AffinityHits,
        Self::ErrNoSlot,
        Self::ErrNoBackend,
        Self::ErrRevNatUpdate,
        Self::ErrAffinityUpdate,
    ];

    /// Index of this counter in the array map.
    #[inline(always)]
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// The counter's name in snake case, as the inspection command and metrics print it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Connect4Calls => "connect4_calls",
            Self::Connect4Rewrites => "connect4_rewrites",
            Self::Sendmsg4Calls => "sendmsg4_calls",
            Self::Sendmsg4Rewrites => "sendmsg4_rewrites",
            Self::Refused => "refused",
            Self::RevNatRecvmsg => "revnat_recvmsg",
            Self::RevNatGetpeername => "revnat_getpeername",
            Self::AffinityHits => "affinity_hits",
            Self::ErrNoSlot => "err_no_slot",
            Self::ErrNoBackend => "err_no_backend",
            Self::ErrRevNatUpdate => "err_revnat_update",
            Self::ErrAffinityUpdate => "err_affinity_update",
        }
    }
}
