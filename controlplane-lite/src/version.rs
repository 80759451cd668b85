//! The version `ferry-server` reports (`/version`): the Kubernetes API level it implements.

use serde_json::{json, Value};

/// Kubernetes minor version of the served API (k8s-openapi feature `v1_33`).
pub const MINOR: &str = "33";
/// `gitVersion`.
pub const GIT_VERSION: &str = "v1.33.0-ferry";

/// The `/version` body.
pub fn info() -> Value {
    json!({
        "major": "1",
        "minor": MINOR,
        "gitVersion": GIT_VERSION,
        "gitCommit": env!("CARGO_PKG_VERSION"),
        "gitTreeState": "clean",
        "buildDate": "2026-11-22T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("linux/{}", if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH }),
    })
}
