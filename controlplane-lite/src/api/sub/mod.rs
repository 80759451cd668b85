//! Subresource handlers beyond `status` (whose writes go through `write.rs`): `scale` reads
//! (its writes too go through `write.rs`), `log` (proxied to the kubelet) and `binding`.

mod binding;
mod log;
mod scale;
