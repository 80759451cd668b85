//! TLS material in the data directory: a cluster CA, a serving certificate signed by it for the
//! configured names and addresses, and the rustls server configuration (HTTP/2 and HTTP/1.1).
//!
//! Created on first start; reused afterwards. The serving certificate is re-issued (by the same
//! CA) when the requested subject alternative names change. Private keys are created mode 0600
//! (a temporary file opened with that mode, then renamed: never readable by others) and `pki/`
//! 0700.
//!
//! The same CA signs the API server's client certificate for kubelets (CN
//! [`KUBELET_CLIENT_CN`], client-auth only), which kubelets require on their endpoint, and each
//! kubelet's serving certificate (server-auth only, for its node name and IPs), which the API
//! server verifies when it calls a kubelet.

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
    /// The client certificate the API server presents to kubelets (exec, logs, port-forward).
    pub kubelet_client_cert: PathBuf,
    /// Its key.
    pub kubelet_client_key: PathBuf,
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
            kubelet_client_cert: pki.join("apiserver-kubelet-client.crt"),
            kubelet_client_key: pki.join("apiserver-kubelet-client.key"),
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

/// Writes a private key: a temporary file created mode 0600 (never readable by others, not even
/// for an instant), renamed onto `path`.
pub fn write_private(path: &Path, data: &str) -> Result<()> {
    ferry_sys::fs::write_atomic(
        path,
        data.as_bytes(),
        ferry_sys::fs::WriteOptions::private(),
    )
    .with_context(|| format!("writing {}", path.display()))
}

/// Creates `dir` (and missing parents) mode 0700, or narrows an existing one to 0700.
pub fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {} to its owner", dir.display()))?;
    }
    Ok(())
}

/// The files of a data directory that hold a secret: the private keys, `tokens.json` and
/// `admin.kubeconfig`.
pub fn secret_files(data_dir: &Path) -> Vec<PathBuf> {
    let f = TlsFiles::in_dir(data_dir);
    vec![
        f.ca_key,
        f.server_key,
        f.kubelet_client_key,
        data_dir.join("tokens.json"),
        data_dir.join("admin.kubeconfig"),
    ]
}

/// Narrows the secret files of `data_dir` that exist and that others may read (left by an older
/// version, or by hand) to 0600, and `pki/` to 0700; returns the files it changed.
pub fn restrict_existing(data_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut changed = Vec::new();
    let pki = data_dir.join("pki");
    for (path, want) in
        std::iter::once((pki, 0o700)).chain(secret_files(data_dir).into_iter().map(|p| (p, 0o600)))
    {
        let mode = match std::fs::symlink_metadata(&path) {
            Ok(m) => m.permissions().mode() & 0o777,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(want))
                .with_context(|| format!("restricting {} to its owner", path.display()))?;
            changed.push(path);
        }
    }
    Ok(changed)
}

/// Ensures the cluster CA exists (created on first use); returns its key.
pub fn ensure_ca(files: &TlsFiles) -> Result<KeyPair> {
    if let Some(dir) = files.ca_cert.parent() {
        private_dir(dir)?;
    }
    if files.ca_key.exists() && files.ca_cert.exists() {
        return KeyPair::from_pem(&std::fs::read_to_string(&files.ca_key)?)
            .context("parsing CA key");
    }
    let key = KeyPair::generate().context("generating CA key")?;
    let cert = ca_params()?.self_signed(&key).context("self-signing CA")?;
    write_private(&files.ca_key, &key.serialize_pem())?;
    std::fs::write(&files.ca_cert, cert.pem()).context("writing CA certificate")?;
    Ok(key)
}

/// Ensures the CA and a serving certificate for `sans` exist; returns the CA PEM.
pub fn ensure(files: &TlsFiles, sans: &[String]) -> Result<String> {
    let ca_key = ensure_ca(files)?;
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

/// Common name of the API server's client certificate for kubelets; kubelets admit only it.
pub const KUBELET_CLIENT_CN: &str = "ferry-apiserver-kubelet-client";

fn ca_issuer(files: &TlsFiles) -> Result<Issuer<'static, KeyPair>> {
    Ok(Issuer::new(ca_params()?, ensure_ca(files)?))
}

/// Ensures the API server's client certificate for kubelets exists (after [`ensure`]).
pub fn ensure_kubelet_client(files: &TlsFiles) -> Result<()> {
    if files.kubelet_client_cert.exists() && files.kubelet_client_key.exists() {
        return Ok(());
    }
    let issuer = ca_issuer(files)?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name
        .push(DnType::CommonName, KUBELET_CLIENT_CN);
    p.distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    p.not_before = rcgen::date_time_ymd(2025, 1, 1);
    p.not_after = rcgen::date_time_ymd(2035, 1, 1);
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().context("generating the kubelet client key")?;
    let cert = p
        .signed_by(&key, &issuer)
        .context("signing the kubelet client certificate")?;
    write_private(&files.kubelet_client_key, &key.serialize_pem())?;
    std::fs::write(&files.kubelet_client_cert, cert.pem())
        .context("writing the kubelet client certificate")
}

/// A serving certificate and key (PEM) for the kubelet of `node`, valid for its name and `ips`.
pub fn issue_kubelet_serving(
    files: &TlsFiles,
    node: &str,
    ips: &[std::net::IpAddr],
) -> Result<(String, String)> {
    anyhow::ensure!(!node.is_empty(), "the node name is empty");
    anyhow::ensure!(
        !ips.is_empty(),
        "a kubelet serving certificate needs the node's IP"
    );
    let issuer = ca_issuer(files)?;
    let mut sans = vec![node.to_owned()];
    sans.extend(ips.iter().map(ToString::to_string));
    let mut p = CertificateParams::new(sans).context("kubelet certificate names")?;
    p.distinguished_name
        .push(DnType::CommonName, format!("system:node:{node}"));
    p.not_before = rcgen::date_time_ymd(2025, 1, 1);
    p.not_after = rcgen::date_time_ymd(2035, 1, 1);
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().context("generating the kubelet serving key")?;
    let cert = p
        .signed_by(&key, &issuer)
        .context("signing the kubelet serving certificate")?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The rustls client configuration for calls to kubelets: trusts only the cluster CA and
/// presents the API server's kubelet client certificate.
pub fn kubelet_client_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(&files.ca_cert).context("opening the CA certificate")?,
    )) {
        roots
            .add(c.context("parsing the CA certificate")?)
            .context("trusting the CA certificate")?;
    }
    let certs: Vec<_> = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(&files.kubelet_client_cert)
            .context("opening the kubelet client certificate")?,
    ))
    .collect::<Result<_, _>>()
    .context("parsing the kubelet client certificate")?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(&files.kubelet_client_key).context("opening the kubelet client key")?,
    ))
    .context("parsing the kubelet client key")?
    .context("no private key in the kubelet client key file")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .context("the kubelet client certificate")?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn keys_are_owner_only_and_older_files_are_narrowed() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles::in_dir(dir.path());
        ensure(&files, &["localhost".into()]).unwrap();
        // Right after the unit that creates them.
        assert_eq!(mode(&files.ca_key), 0o600);
        assert_eq!(mode(&files.server_key), 0o600);
        assert_eq!(mode(&dir.path().join("pki")), 0o700);
        assert_eq!(
            restrict_existing(dir.path()).unwrap(),
            Vec::<PathBuf>::new()
        );
        // Files an older version left readable by others are narrowed.
        std::fs::set_permissions(&files.ca_key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let pki = dir.path().join("pki");
        std::fs::set_permissions(&pki, std::fs::Permissions::from_mode(0o755)).unwrap();
        let tokens = dir.path().join("tokens.json");
        std::fs::write(&tokens, "{}").unwrap();
        std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(
            restrict_existing(dir.path()).unwrap(),
            vec![pki.clone(), files.ca_key.clone(), tokens.clone()]
        );
        assert_eq!(
            (mode(&pki), mode(&files.ca_key), mode(&tokens)),
            (0o700, 0o600, 0o600)
        );
    }

    #[test]
    fn kubelet_certificates_come_from_the_cluster_ca() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles::in_dir(dir.path());
        let ip: std::net::IpAddr = "10.0.0.7".parse().unwrap();
        // kubelet-cert may run before the server ever started: the CA is created then.
        let (cert, key) = issue_kubelet_serving(&files, "n7", &[ip]).unwrap();
        assert!(files.ca_cert.exists() && cert.contains("BEGIN CERTIFICATE"));
        assert!(key.contains("PRIVATE KEY"));
        let ca = std::fs::read_to_string(&files.ca_cert).unwrap();
        ensure(&files, &["localhost".into()]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&files.ca_cert).unwrap(),
            ca,
            "same CA"
        );
        ensure_kubelet_client(&files).unwrap();
        let mode = std::fs::metadata(&files.kubelet_client_key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        kubelet_client_config(&files).unwrap();
        assert!(issue_kubelet_serving(&files, "n7", &[]).is_err());
        assert!(issue_kubelet_serving(&files, "", &[ip]).is_err());
    }
}
