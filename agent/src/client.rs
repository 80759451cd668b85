//! The agent's kube-rs client: built from the API server URL, the CA file and the node's bearer
//! token (no kubeconfig file on disk). The CA file is read by kube-rs when the client is built.

use crate::config::{Config, Credentials};

/// The client could not be built (bad URL or unreadable / invalid CA). Not retryable.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The in-memory kubeconfig was rejected.
    #[error("building the kubeconfig: {0}")]
    Kubeconfig(#[source] serde_json::Error),
    /// kube-rs refused the configuration (CA file, URL).
    #[error("loading the client configuration for {server}: {source}")]
    Config {
        /// `--server`.
        server: String,
        /// The cause.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The HTTPS client could not be created.
    #[error("creating the client: {0}")]
    Client(#[source] kube::Error),
}

/// A kube-rs client for `cfg.server`, trusting `cfg.certificate_authority`, authenticating with
/// `cfg.credentials` (a token file is re-read by kube-rs, so a rotated token is picked up).
pub async fn client(cfg: &Config) -> Result<kube::Client, ClientError> {
    let user = match &cfg.credentials {
        Credentials::Token(t) => serde_json::json!({"token": t}),
        Credentials::TokenFile(p) => serde_json::json!({"tokenFile": p}),
    };
    let kc: kube::config::Kubeconfig = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "ferry", "cluster": {
            "server": cfg.server,
            "certificate-authority": cfg.certificate_authority,
        }}],
        "users": [{"name": "node", "user": user}],
        "contexts": [{"name": "ferry", "context": {"cluster": "ferry", "user": "node"}}],
        "current-context": "ferry",
    }))
    .map_err(ClientError::Kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|source| ClientError::Config {
                server: cfg.server.clone(),
                source,
            })?;
    kube::Client::try_from(config).map_err(ClientError::Client)
}
