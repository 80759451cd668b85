//! Library target of `ferry-ebpf`: helpers shared by several programs.
//!
//! The programs are the crate's binaries (one per attach point, e.g. `src/sock_lb.rs`), each linked
//! by `bpf-linker` into one BPF object that `ferry-agent` embeds. This `no_std` library also lets
//! `ferry-agent` name the crate as a build-dependency (which makes cargo rerun the agent's build
//! script when the programs change), as in aya-template.
//!
//! - [`fib`]: IPv4 FIB lookups and `bpf_redirect_neigh`, used by the NodePort programs (a
//!   translated packet to its new destination) and the pod fast path (a pod's packet to another
//!   node's pod).

#![no_std]
#![allow(
    unsafe_code,
    reason = "eBPF helpers take raw pointers to the program's context and to locals"
)]

pub mod fib {
    //! Routing a packet as the stack would: [`lookup`] asks the FIB for the egress device and
    //! next hop of an IPv4 destination without resolving the neighbour, [`redirect_neigh`]
    //! hands a tc packet to that device, whose neighbour table gives the MAC;
    //! [`lookup_neigh`] also resolves the MAC (XDP rewrites the Ethernet header itself).

    use aya_ebpf::{
        bindings::{bpf_fib_lookup, bpf_redir_neigh},
        helpers::{bpf_fib_lookup as fib_lookup, bpf_redirect_neigh},
        EbpfContext,
    };

    /// `AF_INET`.
    pub const AF_INET: u8 = 2;
    /// `BPF_FIB_LOOKUP_SKIP_NEIGH`: the next hop's address is returned in `ipv4_dst`,
    /// `bpf_redirect_neigh` resolves its MAC.
    const BPF_FIB_LOOKUP_SKIP_NEIGH: u32 = 4;
    /// `BPF_FIB_LKUP_RET_SUCCESS`.
    const BPF_FIB_LKUP_RET_SUCCESS: i64 = 0;

    /// An IPv4 lookup request: everything zero but the family; the caller fills in the
    /// incoming interface, addresses and whatever else the lookup should see.
    #[inline(always)]
    pub fn request() -> bpf_fib_lookup {
        // SAFETY: `bpf_fib_lookup` is plain data (integers and unions of integers): all-zero is
        // a valid value.
        let mut fib: bpf_fib_lookup = unsafe { core::mem::zeroed() };
        fib.family = AF_INET;
        fib
    }

    /// Looks `fib` up (`BPF_FIB_LOOKUP_SKIP_NEIGH`). `true`: forwarded, `fib.ifindex` is the
    /// egress device and `ipv4_dst` the next hop (gateway or destination); `false`: not
    /// forwarded (a local address, unreachable, above the MTU when `tot_len` was given, ...).
    #[inline(always)]
    pub fn lookup(ctx: &impl EbpfContext, fib: &mut bpf_fib_lookup) -> bool {
        lookup_with(ctx, fib, BPF_FIB_LOOKUP_SKIP_NEIGH)
    }

    /// Looks `fib` up with the neighbour resolved (XDP, which has no `bpf_redirect_neigh`):
    /// `true` only when the destination is forwarded and its next hop's MAC is known, left in
    /// `fib.dmac` with the egress device's own in `fib.smac`. A next hop without a neighbour
    /// entry yet is `false` (the stack resolves it).
    #[inline(always)]
    pub fn lookup_neigh(ctx: &impl EbpfContext, fib: &mut bpf_fib_lookup) -> bool {
        lookup_with(ctx, fib, 0)
    }

    #[inline(always)]
    fn lookup_with(ctx: &impl EbpfContext, fib: &mut bpf_fib_lookup, flags: u32) -> bool {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_possible_wrap,
            reason = "the struct is 64 bytes"
        )]
        let size = core::mem::size_of::<bpf_fib_lookup>() as i32;
        // SAFETY: the helper reads and writes `fib`, a live value of `size` bytes.
        let rc = unsafe { fib_lookup(ctx.as_ptr(), core::ptr::from_mut(fib), size, flags) };
        rc == BPF_FIB_LKUP_RET_SUCCESS
    }

    /// Sends the packet out of the device a successful [`lookup`] gave, to its next hop, with
    /// `bpf_redirect_neigh`: the TC action (`TC_ACT_REDIRECT`, or `TC_ACT_SHOT` on a bad
    /// argument).
    #[inline(always)]
    pub fn redirect_neigh(fib: &bpf_fib_lookup) -> i32 {
        // SAFETY: plain data, all-zero valid.
        let mut nh: bpf_redir_neigh = unsafe { core::mem::zeroed() };
        nh.nh_family = u32::from(AF_INET);
        // SAFETY: with SKIP_NEIGH the FIB leaves the next hop in `ipv4_dst`; both union members
        // are plain integers.
        nh.__bindgen_anon_1.ipv4_nh = unsafe { fib.__bindgen_anon_4.ipv4_dst };
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_possible_wrap,
            reason = "the struct is 20 bytes"
        )]
        let nh_size = core::mem::size_of::<bpf_redir_neigh>() as i32;
        // SAFETY: the helper reads `nh`, a live local of `nh_size` bytes.
        let action = unsafe { bpf_redirect_neigh(fib.ifindex, &raw mut nh, nh_size, 0) };
        #[expect(
            clippy::cast_possible_truncation,
            reason = "a TC action code (TC_ACT_REDIRECT or TC_ACT_SHOT)"
        )]
        let action = action as i32;
        action
    }
}
