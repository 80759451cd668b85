//! `ferry-apimachinery`: the pure parts of Ferry's Kubernetes API machinery (no I/O): patches,
//! label and field selectors, Table rendering, validation, `Status` bodies (for `ferry-server`)
//! and resource quantities (also for the kubelet).
//!
//! Objects are handled as `serde_json::Value` (the server stores JSON); k8s-openapi types are
//! used where a typed check helps (strict field validation, container and port checks).
//!
//! | Module | What |
//! |---|---|
//! | [`duration`] | durations in flags (`30s`, `500ms`) |
//! | [`names`] | name formats (DNS labels and subdomains, qualified names, label values) |
//! | [`patch`] | JSON merge patch, JSON patch, strategic merge patch, server-side apply + managedFields |
//! | [`quantity`] | resource quantities (`100m`, `128Mi`) as numbers |
//! | [`selector`] | label selectors, field selectors, `metav1.LabelSelector` conversion |
//! | [`table`] | `meta.k8s.io/v1` `Table` output for `kubectl get` |
//! | [`validate`] | `generateName`, namespaces, field errors, strict unknown fields, per-kind validation |
//! | [`status`] | `Status` error and success bodies with upstream codes and reasons |

#![cfg_attr(not(test), warn(unused_crate_dependencies))]
#![forbid(unsafe_code)]

pub mod duration;
pub mod names;
pub mod patch;
pub mod quantity;
pub mod selector;
pub mod status;
pub mod table;
pub mod validate;
