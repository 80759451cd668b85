//! Names of the maps and programs inside the `sock-lb` eBPF object.
//!
//! The eBPF side has to spell these as literals in `#[map(name = ...)]` attributes and function
//! names; the agent looks them up through these constants. Kernel object names are truncated to
//! 15 bytes (`BPF_OBJ_NAME_LEN - 1`), so every name stays within that. Maps are pinned by these
//! names under the per-node bpffs directory; the cgroup links under [`LINK_PREFIX`]`<program>`.

/// `HashMap<Lb4SvcKey, Lb4Svc>`: frontend slot 0 = service entry, slots 1..=count = backend ids.
pub const LB4_SERVICES: &str = "FERRY_LB4_SVC";
/// `HashMap<u32, Lb4Backend>`: backend id -> backend address.
pub const LB4_BACKENDS: &str = "FERRY_LB4_BE";
/// `LruHashMap<Lb4RevNatKey, Lb4RevNat>`: (socket cookie, backend) -> frontend, for replies.
pub const LB4_REVNAT: &str = "FERRY_LB4_RNAT";
/// `LruHashMap<Lb4AffinityKey, Lb4Affinity>`: (netns cookie, frontend) -> backend, last use.
pub const LB4_AFFINITY: &str = "FERRY_LB4_AFF";
/// `PerCpuArray<u64>` indexed by [`LbStat`](crate::LbStat).
pub const LB_STATS: &str = "FERRY_LB_STATS";

/// The `cgroup/connect4` program.
pub const CONNECT4: &str = "ferry_connect4";
/// The `cgroup/sendmsg4` program.
pub const SENDMSG4: &str = "ferry_sendmsg4";
/// The `cgroup/recvmsg4` program.
pub const RECVMSG4: &str = "ferry_recvmsg4";
/// The `cgroup/getpeername4` program.
pub const GETPEERNAME4: &str = "ferry_getpeer4";

/// Every map of the `sock-lb` object, sorted.
pub const MAPS: [&str; 5] = [
    LB4_AFFINITY,
    LB4_BACKENDS,
    LB4_REVNAT,
    LB4_SERVICES,
    LB_STATS,
];
/// Every program of the `sock-lb` object, sorted.
pub const PROGRAMS: [&str; 4] = [CONNECT4, GETPEERNAME4, RECVMSG4, SENDMSG4];

/// Pin name prefix of the cgroup links (`link_ferry_connect4`, ...).
pub const LINK_PREFIX: &str = "link_";
