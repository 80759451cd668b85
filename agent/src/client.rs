//! The agent's kube-rs client: built from the API server URL, the CA file and the node's bearer
//! token (no kubeconfig file on disk) by [`ferry_kube::ClientBuilder`]. The CA file is read by
//! kube-rs when the client is built.

use crate::config::{Config, Credentials};
use ferry_kube::ClientBuilder;

/// The client could not be built (bad URL or unreadable / invalid CA). Not retryable.
pub use ferry_kube::ClientError;

/// A kube-rs client for `cfg.server`, trusting `cfg.certificate_authority`, authenticating with
/// `cfg.credentials` (a token file is re-read by kube-rs, so a rotated token is picked up).
pub async fn client(cfg: &Config) -> Result<kube::Client, ClientError> {
    let builder = ClientBuilder::new(cfg.server.clone()).ca_file(&cfg.certificate_authority);
    let builder = match &cfg.credentials {
        Credentials::Token(t) => builder.token(t.clone()),
        Credentials::TokenFile(p) => builder.token_file(p),
    };
    builder.build().await
}
