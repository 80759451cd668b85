//! `ferry-sys`: the one Linux boundary every Ferry crate goes through.
//!
//! | module | job |
//! |---|---|
//! | [`netns`] | open, verify, enter and create network namespaces; run code inside one |
//! | [`process`] | process identity (pid + start time), signals, pidfds, fork/exec into a cgroup and netns |
//! | [`cgroup`] | cgroup v2: mount discovery, create, kill, wait empty, remove, limits |
//! | [`pty`] | pseudo-terminals: open, controlling terminal on exec, window size |
//! | [`clock`] | `CLOCK_MONOTONIC` in nanoseconds (one clock for every namespace) |
//! | [`fs`] | atomic file writes, write-if-changed, mountinfo, unmounting |
//! | [`sysctl`] | boolean sysctls such as `ip_forward` of the current namespace |
//! | [`listener`] | listening sockets inherited from the parent process |
//! | [`net`] | sockets, setsockopt, bind / recv / sendto, `AF_PACKET` frames and MAC, `struct ifreq` (size-checked), ethtool TX checksum |
//! | [`tun`] | TUN queues: open + `TUNSETIFF`, `TUNSETOFFLOAD`, `TUNSETPERSIST` |
//! | [`bpf`] | `BPF_OBJ_GET` of a pin and `BPF_LINK_UPDATE` (what aya 0.14 keeps private) |
//! | [`sock_diag`] | list and destroy IPv4 UDP sockets of a namespace (`SOCK_DESTROY`) |
//!
//! Every `unsafe` block of the workspace outside the eBPF programs and the UDP datapath's hot loop
//! lives in this crate, each with its `SAFETY` line; the other crates `forbid(unsafe_code)`. The
//! raw namespace syscalls (`setns`, `unshare`) are `disallowed-methods` everywhere else
//! (`clippy.toml`); here each has one reasoned `expect`.

#![cfg_attr(not(test), warn(unused_crate_dependencies))]
#![allow(
    unsafe_code,
    reason = "ferry-sys is the kernel boundary: raw syscalls and C layouts, each block with its SAFETY line"
)]

pub mod bpf;
pub mod cgroup;
pub mod clock;
pub mod fs;
pub mod listener;
pub mod net;
pub mod netns;
pub mod process;
pub mod pty;
pub mod sock_diag;
pub mod sysctl;
pub mod tun;
