//! `sock-lb`: socket-level IPv4 redirection on the cgroup `connect4` hook.
//!
//! When a process in the attached cgroup calls `connect(2)` on an IPv4 socket, the kernel runs
//! [`ferry_connect4`] before the connection is made. It looks the destination (address, port,
//! protocol) up in `FERRY_LB4_SVC` and, if found, rewrites the destination to the stored backend,
//! so the socket connects to the backend directly (no per-packet NAT). Every call is counted in
//! `FERRY_LB_STATS`. This is the seed of the ClusterIP load balancer, which will add backend
//! selection and the `sendmsg4` / `recvmsg4` hooks for UDP.
//!
//! Built for `bpfel-unknown-none` by `ferry-agent`'s build script. On the host this file compiles
//! to an empty `main` so that `cargo clippy --workspace --all-targets` can check it.

#![allow(
    unsafe_code,
    reason = "an eBPF program reads the kernel's context and map memory through raw pointers"
)]
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

use aya_ebpf::{
    macros::{cgroup_sock_addr, map},
    maps::{HashMap, PerCpuArray},
    programs::SockAddrContext,
};
use ferry_common::{Lb4Backend, Lb4Key, LbStat, LB4_SERVICES_MAX_ENTRIES};

/// Return value of a `cgroup/connect4` program that lets the `connect(2)` proceed (0 rejects it
/// with `EPERM`).
const CONNECT_ALLOW: i32 = 1;

/// Frontend -> backend; written by the agent (`ferry_common::names::LB4_SERVICES`).
#[map(name = "FERRY_LB4_SVC")]
static LB4_SERVICES: HashMap<Lb4Key, Lb4Backend> =
    HashMap::with_max_entries(LB4_SERVICES_MAX_ENTRIES, 0);

/// Per-CPU counters indexed by [`LbStat`] (`ferry_common::names::LB_STATS`).
#[map(name = "FERRY_LB_STATS")]
static LB_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(LbStat::COUNT, 0);

/// The `cgroup/connect4` program (`ferry_common::names::CONNECT4`).
#[cgroup_sock_addr(connect4)]
fn ferry_connect4(ctx: SockAddrContext) -> i32 {
    count(LbStat::Connect4Calls);

    // SAFETY: for `cgroup/connect4` programs the kernel passes a valid `struct bpf_sock_addr`
    // that lives for the whole run; the verifier checks every field access below (4-byte reads
    // of `user_ip4`, `user_port` and `protocol`, 4-byte writes of `user_ip4` and `user_port`).
    let sock_addr = unsafe { &mut *ctx.sock_addr };
    // `user_port` holds the network-order port in its low 16 bits; the cast keeps exactly those.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "kernel ABI: bpf_sock_addr.user_port carries the port in its low 16 bits, the \
                  high bits are zero; no extra branch for the verifier"
    )]
    let port_be = sock_addr.user_port as u16;
    #[expect(
        clippy::cast_possible_truncation,
        reason = "kernel ABI: bpf_sock_addr.protocol is an IPPROTO_* number (< 256) in a u32"
    )]
    let key = Lb4Key::from_wire(sock_addr.user_ip4, port_be, sock_addr.protocol as u8);

    // SAFETY: the returned reference points into the map element, valid for this run (RCU); the
    // value is copied out at once and not kept. An update from user space replaces the element
    // rather than writing into it, so the copy is the old or the new backend (only a second
    // update reusing the freed preallocated element during the copy could tear it).
    if let Some(backend) = unsafe { LB4_SERVICES.get(key) } {
        let backend = *backend;
        sock_addr.user_ip4 = backend.addr;
        sock_addr.user_port = u32::from(backend.port);
        count(LbStat::Connect4Rewrites);
    }
    CONNECT_ALLOW
}

/// Adds one to a per-CPU counter.
#[inline(always)]
fn count(stat: LbStat) {
    if let Some(counter) = LB_STATS.get_ptr_mut(stat.index()) {
        // SAFETY: the pointer comes from the map lookup and points at this CPU's slot, valid for
        // the program's run. Only this program writes it (user space reads), and it runs with
        // migration disabled, so a plain increment is enough for a statistic (a preempted run on
        // the same CPU could at worst lose one count).
        unsafe { *counter += 1 };
    }
}

/// The kernel only lets GPL-compatible programs call GPL-only helpers; the declaration follows
/// aya-template (the Rust sources keep the workspace licence).
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier rejects programs that could reach a panic, so this is never executed.
    loop {}
}

/// Host builds exist only for `cargo check` / `cargo clippy`; the real object is built for BPF.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
