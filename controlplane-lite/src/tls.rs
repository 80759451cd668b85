//! TLS material in the data directory: a cluster CA, a serving certificate signed by it for the
//! configured names and addresses, and the rustls server configuration (HTTP/2 and HTTP/1.1).
//!
//! Created on first start; reused afterwards. The serving certificate is re-issued (by the same
//! CA) when the requested subject alternative names change. Private keys are written mode 0600.

use anyhow::{Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Paths of the TLS files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// CA certificate (PEM), what clients trust.
    pub ca_cert: PathBuf,
    /// CA private key.
    pub ca_key: PathBuf,
    /// Serving certificate.
    pub server_cert: PathBuf,
    /// Serving key.
    pub server_key: PathBuf,
    /// The SANs the serving certificate was issued for.
    pub server_sans: PathBuf,
}

impl TlsFiles {
    /// The files under `dir/pki`.
    pub fn in_dir(dir: &Path) -> TlsFiles {
        let pki = dir.join("pki");
        TlsFiles {
            ca_cert: pki.join("ca.crt"),
            ca_key: pki.join("ca.key"),
            server_cert: pki.join("apiserver.crt"),
            server_key: pki.join("apiserver.key"),
            server_sans: pki.join("apiserver.sans"),
        }
    }
}

fn ca_params() -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, "ferry-ca");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = rcgen::date_time_ymd(2025, 1, 1);
    p.not_after = rcgen::date_time_ymd(2035, 1, 1);
    Ok(p)
}

fn write_private(path: &Path, data: &str) -> Result<()> {
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod {}", path.display()))
}

/// Ensures the CA and a serving certificate for `sans` exist; returns the CA PEM.
pub fn ensure(files: &TlsFiles, sans: &[String]) -> Result<String> {
    if let Some(dir) = files.ca_cert.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let ca_key = if files.ca_key.exists() && files.ca_cert.exists() {
        KeyPair::from_pem(&std::fs::read_to_string(&files.ca_key)?).context("parsing CA key")?
    } else {
        let key = KeyPair::generate().context("generating CA key")?;
        let cert = ca_params()?.self_signed(&key).context("self-signing CA")?;
        write_private(&files.ca_key, &key.serialize_pem())?;
        std::fs::write(&files.ca_cert, cert.pem()).context("writing CA certificate")?;
        key
    };
    let wanted = sans.join(",");
    let current = std::fs::read_to_string(&files.server_sans).unwrap_or_default();
    if current != wanted || !files.server_cert.exists() || !files.server_key.exists() {
        let issuer = Issuer::new(ca_params()?, ca_key);
        let mut p = CertificateParams::new(sans.to_vec()).context("serving certificate names")?;
        p.distinguished_name
            .push(DnType::CommonName, "ferry-apiserver");
        p.not_before = rcgen::date_time_ymd(2025, 1, 1);
        p.not_after = rcgen::date_time_ymd(2035, 1, 1);
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().context("generating serving key")?;
        let cert = p
            .signed_by(&key, &issuer)
            .context("signing serving certificate")?;
        write_private(&files.server_key, &key.serialize_pem())?;
        std::fs::write(&files.server_cert, cert.pem()).context("writing serving certificate")?;
        std::fs::write(&files.server_sans, &wanted)?;
    }
    std::fs::read_to_string(&files.ca_cert).context("reading CA certificate")
}

/// The rustls configuration serving `files`' certificate, offering h2 and http/1.1.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(&files.server_cert).context("opening serving certificate")?,
    ))
    .collect::<Result<_, _>>()
    .context("parsing serving certificate")?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(&files.server_key).context("opening serving key")?,
    ))
    .context("parsing serving key")?
    .context("no private key in the serving key file")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("TLS certificate")?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
