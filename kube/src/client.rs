//! One kube-rs client builder for every Ferry component.
//!
//! A client is built from an in-memory kubeconfig (no file on disk): the API server URL, the CA
//! that signed its certificate (a file kube-rs reads, or PEM bytes), and the credentials (a
//! bearer token, a token file kube-rs re-reads so a rotated token is picked up, or a client
//! certificate and key), under a user name (`admin` for the control plane's own clients, `node`
//! for a node's agent). A kubeconfig file (what `ferry` and kubectl use) works too. Connect,
//! read and write timeouts are kube-rs's defaults unless set.

use base64::Engine as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The client could not be built (bad URL or kubeconfig, unreadable / invalid CA). Not retryable.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A file (CA, kubeconfig) could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The in-memory kubeconfig was rejected.
    #[error("building the kubeconfig: {0}")]
    Kubeconfig(#[source] serde_json::Error),
    /// A kubeconfig file did not parse.
    #[error("reading the kubeconfig {path}: {source}")]
    KubeconfigFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// kube-rs refused the configuration (CA, URL, credentials).
    #[error("loading the client configuration for {server}: {source}")]
    Config {
        /// The server URL, or the kubeconfig file it came from.
        server: String,
        /// The cause.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The HTTPS client could not be created.
    #[error("creating the client: {0}")]
    Client(#[source] kube::Error),
}

/// The CA that signed the API server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ca {
    /// A PEM file, read by kube-rs when the client is built.
    File(PathBuf),
    /// PEM bytes.
    Pem(Vec<u8>),
}

/// How the client authenticates.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A bearer token.
    Token(String),
    /// A file holding the bearer token (re-read by kube-rs, so a rotated token is picked up).
    TokenFile(PathBuf),
    /// A client certificate and its key (PEM files).
    ClientCert {
        /// The certificate.
        cert: PathBuf,
        /// The private key.
        key: PathBuf,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Token(_) => f.write_str("Token(<redacted>)"),
            Self::TokenFile(p) => f.debug_tuple("TokenFile").field(p).finish(),
            Self::ClientCert { cert, key } => f
                .debug_struct("ClientCert")
                .field("cert", cert)
                .field("key", key)
                .finish(),
        }
    }
}

/// Where the configuration comes from.
#[derive(Debug, Clone)]
enum Source {
    /// Server URL, CA and credentials given one by one.
    Parts {
        server: String,
        ca: Option<Ca>,
        credentials: Option<Credentials>,
    },
    /// A kubeconfig file (its current context).
    File(PathBuf),
}

/// Builds a [`kube::Client`]; see the module documentation.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    source: Source,
    cluster: String,
    user: String,
    connect_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl ClientBuilder {
    /// A client of the API server at `server` (`https://host:port`); cluster `ferry`, user `node`.
    pub fn new(server: impl Into<String>) -> Self {
        Self::with_source(Source::Parts {
            server: server.into(),
            ca: None,
            credentials: None,
        })
    }

    /// A client configured by the kubeconfig file at `path` (its current context).
    pub fn from_kubeconfig_file(path: impl Into<PathBuf>) -> Self {
        Self::with_source(Source::File(path.into()))
    }

    fn with_source(source: Source) -> Self {
        Self {
            source,
            cluster: "ferry".to_owned(),
            user: "node".to_owned(),
            connect_timeout: None,
            read_timeout: None,
            write_timeout: None,
        }
    }

    /// Trusts the CA in PEM file `path` (read by kube-rs when the client is built).
    pub fn ca_file(self, path: impl Into<PathBuf>) -> Self {
        self.ca(Ca::File(path.into()))
    }

    /// Trusts the CA `pem`.
    pub fn ca_pem(self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca(Ca::Pem(pem.into()))
    }

    /// Trusts `ca` (no effect on a kubeconfig file's client).
    pub fn ca(mut self, ca: Ca) -> Self {
        if let Source::Parts { ca: c, .. } = &mut self.source {
            *c = Some(ca);
        }
        self
    }

    /// Authenticates with bearer token `token`.
    pub fn token(self, token: impl Into<String>) -> Self {
        self.credentials(Credentials::Token(token.into()))
    }

    /// Authenticates with the bearer token in file `path` (re-read when it changes).
    pub fn token_file(self, path: impl Into<PathBuf>) -> Self {
        self.credentials(Credentials::TokenFile(path.into()))
    }

    /// Authenticates with a client certificate and key (PEM files).
    pub fn client_cert(self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.credentials(Credentials::ClientCert {
            cert: cert.into(),
            key: key.into(),
        })
    }

    /// Authenticates with `credentials` (no effect on a kubeconfig file's client).
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        if let Source::Parts { credentials: c, .. } = &mut self.source {
            *c = Some(credentials);
        }
        self
    }

    /// The cluster's name in the kubeconfig (`ferry` by default).
    pub fn cluster_name(mut self, name: impl Into<String>) -> Self {
        self.cluster = name.into();
        self
    }

    /// The user's name in the kubeconfig: `admin` for the control plane, `node` (the default) for
    /// a node's components.
    pub fn user(mut self, name: impl Into<String>) -> Self {
        self.user = name.into();
        self
    }

    /// Gives up connecting after `d`.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = Some(d);
        self
    }

    /// Gives up on a response that sends nothing for `d`.
    pub fn read_timeout(mut self, d: Duration) -> Self {
        self.read_timeout = Some(d);
        self
    }

    /// Gives up on a request that cannot be sent within `d`.
    pub fn write_timeout(mut self, d: Duration) -> Self {
        self.write_timeout = Some(d);
        self
    }

    /// The kubeconfig (as JSON, which is valid YAML and which kubectl reads) of a client given by
    /// parts; `None` for a kubeconfig file's client. A CA file is referred to by path, PEM bytes
    /// are inlined (`certificate-authority-data`).
    pub fn kubeconfig(&self) -> Option<serde_json::Value> {
        let Source::Parts {
            server,
            ca,
            credentials,
        } = &self.source
        else {
            return None;
        };
        let mut cluster = serde_json::json!({ "server": server });
        match ca {
            Some(Ca::File(p)) => cluster["certificate-authority"] = path_value(p),
            Some(Ca::Pem(pem)) => {
                cluster["certificate-authority-data"] =
                    base64::engine::general_purpose::STANDARD.encode(pem).into();
            }
            None => {}
        }
        let user = match credentials {
            Some(Credentials::Token(t)) => serde_json::json!({ "token": t }),
            Some(Credentials::TokenFile(p)) => serde_json::json!({ "tokenFile": path_value(p) }),
            Some(Credentials::ClientCert { cert, key }) => serde_json::json!({
                "client-certificate": path_value(cert),
                "client-key": path_value(key),
            }),
            None => serde_json::json!({}),
        };
        Some(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": self.cluster, "cluster": cluster}],
            "users": [{"name": self.user, "user": user}],
            "contexts": [{"name": self.cluster, "context": {"cluster": self.cluster, "user": self.user}}],
            "current-context": self.cluster,
        }))
    }

    /// The kube-rs configuration (timeouts applied).
    pub async fn config(&self) -> Result<kube::Config, ClientError> {
        let (kc, what) = match &self.source {
            Source::Parts { server, .. } => {
                let v = self.kubeconfig().unwrap_or_default();
                let kc: kube::config::Kubeconfig =
                    serde_json::from_value(v).map_err(ClientError::Kubeconfig)?;
                (kc, server.clone())
            }
            Source::File(path) => {
                let kc = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                    ClientError::KubeconfigFile {
                        path: path.clone(),
                        source,
                    }
                })?;
                (kc, path.display().to_string())
            }
        };
        let mut config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|source| ClientError::Config {
                    server: what,
                    source,
                })?;
        if let Some(d) = self.connect_timeout {
            config.connect_timeout = Some(d);
        }
        if let Some(d) = self.read_timeout {
            config.read_timeout = Some(d);
        }
        if let Some(d) = self.write_timeout {
            config.write_timeout = Some(d);
        }
        Ok(config)
    }

    /// The client.
    pub async fn build(&self) -> Result<kube::Client, ClientError> {
        kube::Client::try_from(self.config().await?).map_err(ClientError::Client)
    }
}

/// A path as a kubeconfig string.
fn path_value(p: &Path) -> serde_json::Value {
    p.to_string_lossy().into_owned().into()
}

/// Reads a CA file into PEM bytes, for a client that must not depend on the file later.
pub fn read_ca(path: &Path) -> Result<Ca, ClientError> {
    std::fs::read(path)
        .map(Ca::Pem)
        .map_err(|source| ClientError::Read {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_of_parts() {
        let kc = ClientBuilder::new("https://10.0.0.1:6443")
            .ca_pem("PEM")
            .token("t")
            .user("admin")
            .kubeconfig()
            .unwrap();
        assert_eq!(
            kc["clusters"][0]["cluster"]["server"],
            "https://10.0.0.1:6443"
        );
        assert_eq!(
            kc["clusters"][0]["cluster"]["certificate-authority-data"],
            "UEVN"
        );
        assert_eq!(kc["users"][0]["name"], "admin");
        assert_eq!(kc["users"][0]["user"]["token"], "t");
        assert_eq!(kc["current-context"], "ferry");
        let kc = ClientBuilder::new("https://h")
            .ca_file("/ca.crt")
            .token_file("/tok")
            .kubeconfig()
            .unwrap();
        assert_eq!(
            kc["clusters"][0]["cluster"]["certificate-authority"],
            "/ca.crt"
        );
        assert_eq!(kc["users"][0]["user"]["tokenFile"], "/tok");
        assert_eq!(kc["users"][0]["name"], "node");
        let kc = ClientBuilder::new("https://h")
            .client_cert("/c", "/k")
            .kubeconfig()
            .unwrap();
        assert_eq!(kc["users"][0]["user"]["client-key"], "/k");
        assert!(ClientBuilder::from_kubeconfig_file("/x")
            .kubeconfig()
            .is_none());
        assert!(!format!("{:?}", Credentials::Token("secret".into())).contains("secret"));
    }

    #[tokio::test]
    async fn config_applies_timeouts() {
        let cfg = ClientBuilder::new("https://127.0.0.1:1")
            .token("t")
            .connect_timeout(Duration::from_secs(2))
            .read_timeout(Duration::from_secs(5))
            .config()
            .await
            .unwrap();
        assert_eq!(cfg.connect_timeout, Some(Duration::from_secs(2)));
        assert_eq!(cfg.read_timeout, Some(Duration::from_secs(5)));
        assert!(matches!(
            ClientBuilder::from_kubeconfig_file("/nonexistent/kubeconfig")
                .build()
                .await,
            Err(ClientError::KubeconfigFile { .. })
        ));
    }
}
