//! kubeconfig files for kubectl and kube-rs clients, and the matching in-process client: both
//! come from one [`ferry_kube::ClientBuilder`], so the file and the controllers' client agree.

use ferry_kube::ClientBuilder;

/// The client builder for `server` trusting `ca_pem`, authenticating as `user` with `token`.
pub fn builder(
    cluster: &str,
    server: &str,
    ca_pem: &str,
    user: &str,
    token: &str,
) -> ClientBuilder {
    ClientBuilder::new(server)
        .cluster_name(cluster)
        .ca_pem(ca_pem)
        .user(user)
        .token(token)
}

/// A kubeconfig (JSON is valid YAML, and kubectl reads it) for `server` trusting `ca_pem`,
/// authenticating with `token`.
pub fn render(cluster: &str, server: &str, ca_pem: &str, user: &str, token: &str) -> String {
    let mut v = builder(cluster, server, ca_pem, user, token)
        .kubeconfig()
        .unwrap_or_default();
    v["preferences"] = serde_json::json!({});
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn render_is_the_kubectl_kubeconfig() {
        let ca = base64::engine::general_purpose::STANDARD.encode("CA PEM");
        let want = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "ferry", "cluster": {"server": "https://h:6443", "certificate-authority-data": ca}}],
            "users": [{"name": "admin", "user": {"token": "t"}}],
            "contexts": [{"name": "ferry", "context": {"cluster": "ferry", "user": "admin"}}],
            "current-context": "ferry",
            "preferences": {},
        });
        let got = render("ferry", "https://h:6443", "CA PEM", "admin", "t");
        assert_eq!(got, serde_json::to_string_pretty(&want).unwrap());
    }
}
