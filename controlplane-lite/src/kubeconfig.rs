//! kubeconfig files for kubectl and kube-rs clients.

use base64::Engine;
use serde_json::json;

/// A kubeconfig (JSON is valid YAML, and kubectl reads it) for `server` trusting `ca_pem`,
/// authenticating with `token`.
pub fn render(cluster: &str, server: &str, ca_pem: &str, user: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let v = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
        "current-context": cluster,
        "preferences": {},
    });
    serde_json::to_string_pretty(&v).unwrap_or_default()
}
