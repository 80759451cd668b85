//! Ferry's minimal control plane: the apiserver (`ferry-server`), scheduler, controllers and
//! kubelet (`ferry-kubelet`).
//!
//! Not built yet: this crate reserves its place in the workspace layout. The apiserver is tracked
//! in its own issue and lands here.
#![forbid(unsafe_code)]
