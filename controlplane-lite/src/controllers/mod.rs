//! Controllers that run inside `ferry-server`. Each talks to the API with kube-rs only
//! (watch -> local store -> reconcile), so it works against any Kubernetes API server.

pub mod endpointslice;
pub mod nodeipam;
pub mod nodelifecycle;
