//! `aya::Pod` for every map key and value type (the `user` feature: the agent's side only).
#![allow(
    unsafe_code,
    reason = "aya::Pod is an unsafe trait: the impl asserts the types are plain bytes (the map ABI)"
)]

use crate::lb::{
    Lb4Affinity, Lb4AffinityKey, Lb4Backend, Lb4RevNat, Lb4RevNatKey, Lb4Svc, Lb4SvcKey,
};

// SAFETY: `Lb4SvcKey` is `#[repr(C)]`, `Copy`, made only of integers with explicit padding
// fields (size asserted in `lb.rs`), so every byte pattern is a valid value and there are no
// uninitialised padding bytes.
unsafe impl aya::Pod for Lb4SvcKey {}
// SAFETY: as for `Lb4SvcKey`: `#[repr(C)]`, integers only, explicit padding, size asserted.
unsafe impl aya::Pod for Lb4Svc {}
// SAFETY: as for `Lb4SvcKey`: `#[repr(C)]`, integers only, explicit padding, size asserted.
unsafe impl aya::Pod for Lb4Backend {}
// SAFETY: as for `Lb4SvcKey`: `#[repr(C)]`, integers only, explicit padding, size asserted.
unsafe impl aya::Pod for Lb4RevNatKey {}
// SAFETY: as for `Lb4SvcKey`: `#[repr(C)]`, integers only, explicit padding, size asserted.
unsafe impl aya::Pod for Lb4RevNat {}
// SAFETY: as for `Lb4SvcKey`: `#[repr(C)]`, integers only, explicit padding, size asserted.
unsafe impl aya::Pod for Lb4AffinityKey {}
// SAFETY: as for `Lb4SvcKey`: `#[repr(C)]`, integers only, explicit padding, size asserted.
unsafe impl aya::Pod for Lb4Affinity {}
// SAFETY: as for `Lb4SvcKey`: `#[repr(C)]`, integers only, explicit padding, size asserted in
// `nat.rs`.
unsafe impl aya::Pod for crate::nat::NpSvcKey {}
// SAFETY: as for `NpSvcKey`.
unsafe impl aya::Pod for crate::nat::NpSvc {}
// SAFETY: as for `NpSvcKey`.
unsafe impl aya::Pod for crate::nat::NpBackendKey {}
// SAFETY: as for `NpSvcKey`.
unsafe impl aya::Pod for crate::nat::NpConfig {}
// SAFETY: as for `NpSvcKey`.
unsafe impl aya::Pod for crate::nat::CtKey {}
// SAFETY: as for `NpSvcKey`.
unsafe impl aya::Pod for crate::nat::CtEntry {}
// SAFETY: `#[repr(C)]`, integers and byte arrays only, explicit padding, size asserted in
// `fastpath.rs`.
unsafe impl aya::Pod for crate::fastpath::PodEndpoint {}
// SAFETY: as for `PodEndpoint`.
unsafe impl aya::Pod for crate::fastpath::FastPathConfig {}
