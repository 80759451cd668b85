//! `ferry-kube`: the Kubernetes client plumbing every Ferry component shares.
//!
//! | module | job |
//! |---|---|
//! | [`client`] | one kube-rs client builder: server URL + CA + bearer token / token file / client certificate, or a kubeconfig file; timeouts |
//! | [`watch`] | a reflector (watch -> local store, with backoff) that pokes a [`tokio::sync::Notify`] on the changes its owner cares about |
//! | [`mod@reconcile`] | the [`Loop`] around a reconcile round: resync period, retry after a failed round, debounce |
//! | [`expectations`] | [`Expectations`]: writes made but not yet seen in the (asynchronously updated) local store |
//! | [`lease`] | heartbeat Leases in `kube-node-lease`: renewing one's own, judging others' on one's own clock |
//!
//! The usual shape of a controller:
//!
//! ```no_run
//! # async fn doc(client: kube::Client) -> Result<(), ferry_kube::watch::WatchError> {
//! use ferry_kube::{watch::Reflector, Loop, Outcome};
//! use k8s_openapi::api::core::v1::Pod;
//! use std::sync::Arc;
//! use std::time::Duration;
//! let wake = Arc::new(tokio::sync::Notify::new());
//! let pods = Reflector::new(kube::Api::<Pod>::all(client)).wake(wake.clone()).spawn();
//! ferry_kube::watch::ready(&pods).await?;
//! let mut lp = Loop::new(wake, Duration::from_secs(2));
//! loop {
//!     let _n = pods.state().len(); // the round: reconcile what the store shows
//!     lp.after(Outcome::Done).await;
//! }
//! # }
//! ```

#![forbid(unsafe_code)]
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

// kube needs one k8s-openapi version feature in the graph; this crate's users pick v1_33 through it.
use k8s_openapi as _;

pub mod client;
pub mod expectations;
pub mod lease;
pub mod reconcile;
pub mod watch;

pub use client::{ClientBuilder, ClientError};
pub use expectations::Expectations;
pub use reconcile::{Loop, Outcome};
