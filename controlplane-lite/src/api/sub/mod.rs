//! Subresource handlers beyond `status` (whose writes go through `write.rs`): `scale` reads
//! (its writes too go through `write.rs`), `log` (proxied to the kubelet), `binding`,
//! `eviction`, and `exec` / `attach` / `portforward` (upgrades relayed to the kubelet).

mod binding;
mod eviction;
mod exec;
mod log;
mod scale;
