//! `ferry-sys`: the one Linux boundary every Ferry crate goes through.
//!
//! | module | job |
//! |---|---|
//! | [`netns`] | open, verify and enter network namespaces |
//!
//! Every `unsafe` block of the workspace outside the eBPF programs and the UDP datapath's hot loop
//! lives in this crate, each with its `SAFETY` line; the other crates `forbid(unsafe_code)`.

pub mod netns;
