//! Ferry's minimal control plane.
//!
//! `ferry-server` serves the real Kubernetes API (kubectl and kube-rs work against it) over HTTPS
//! on a revisioned store: embedded SQLite by default, etcd v3 when several replicas share one
//! cluster (crate `ferry-store`). The pure API machinery (patches, selectors, Tables,
//! validation) is crate `ferry-apimachinery`.
//!
//! | module | job |
//! |---|---|
//! | [`server`] | TLS listener, HTTP/1.1 + HTTP/2 |
//! | [`request`] | what a request is (config, path target, continue tokens, store errors as Status): the leaf `api` and `watch` share |
//! | [`api`] | authentication, routing, authorization, the REST verbs over the store |
//! | [`admission`] | defaulting, immutability, allocators, graceful deletion, subresources |
//! | [`watch`] | watch streams, bookmarks, in-stream 410 |
//! | [`protobuf`] | Kubernetes protobuf bodies in and out (one generic decoder for every kind) |
//! | [`discovery`], [`openapi`], [`version`] | what clients read before anything else |
//! | [`auth`], [`tls`], [`kubeconfig`] | tokens and authorization, certificates, client config |
//! | [`reviews`] | `kubectl auth can-i` / `whoami`: the create-only access, rules and self reviews |
//! | [`scheduler`], [`controllers`] | in-process scheduler and controllers (kube-rs clients of the API) |
//! | [`leader`] | leader election on a Lease: one replica runs the scheduler and controllers |
#![forbid(unsafe_code)]

pub mod admission;
pub mod api;
pub mod auth;
pub mod controllers;
pub mod discovery;
pub mod kubeconfig;
pub mod leader;
pub mod machinery;
pub mod objects;
pub mod openapi;
pub mod protobuf;
pub mod request;
pub mod resources;
pub mod reviews;
pub mod scheduler;
pub mod server;
pub mod tls;
pub mod version;
pub mod watch;
pub mod web;
