//! TLS for `wss://` and `https://` on the gateway's listener (rustls).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Where the certificate chain and private key are.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM file with the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the certificate and key.
    #[error("the certificate and key do not form a valid TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

fn file_error(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

impl TlsFiles {
    /// Loads the files into an acceptor that speaks HTTP/1.1.
    pub fn acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .map_err(|e| file_error(&self.cert, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| file_error(&self.cert, e))?;
        if certs.is_empty() {
            return Err(file_error(&self.cert, "no certificate found"));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| file_error(&self.key, e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// A certificate authority of this machine, kept in the data directory, that issues a
/// certificate for whatever name a TLS client asks for (SNI). Function processes trust it
/// (`NODE_EXTRA_CA_CERTS`, `AWS_CA_BUNDLE`, ...), so handlers that build
/// `https://{domainName}/{stage}` or `https://{apiId}.execute-api.{region}.amazonaws.com/{stage}`
/// reach the listener over TLS without a change.
pub(crate) struct LocalCa {
    ca: rcgen::Certificate,
    key: rcgen::KeyPair,
    cert_path: PathBuf,
    bundle_path: PathBuf,
    /// Certificates issued so far, by name (bounded: see [`LocalCa::MAX_NAMES`]).
    issued: std::sync::Mutex<std::collections::HashMap<String, Arc<rustls::sign::CertifiedKey>>>,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

/// System CA bundles, the first found is extended with the local CA.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

impl LocalCa {
    /// Names whose certificates are kept; beyond, the cache starts over (a client asking for
    /// endless names costs a key generation each, not memory).
    pub(crate) const MAX_NAMES: usize = 256;

    /// Opens the authority in `dir` (`ca.key`, `ca.pem`, `bundle.pem`), creating it the first
    /// time.
    pub(crate) fn open(dir: &Path) -> Result<LocalCa, TlsError> {
        std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
        let key_path = dir.join("ca.key");
        let cert_path = dir.join("ca.pem");
        let bundle_path = dir.join("bundle.pem");
        let key = match std::fs::read_to_string(&key_path) {
            Ok(pem) => rcgen::KeyPair::from_pem(&pem).map_err(|e| file_error(&key_path, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = rcgen::KeyPair::generate().map_err(|e| file_error(&key_path, e))?;
                write_private(&key_path, &key.serialize_pem())?;
                // A new key: any certificate left from an old one is useless.
                let _ = std::fs::remove_file(&cert_path);
                key
            }
            Err(e) => return Err(file_error(&key_path, e)),
        };
        // Issuing needs only the authority's name and key: the same parameters signed again
        // with the same key stand for the certificate written the first time.
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "switchboard local CA");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "switchboard");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2049, 1, 1);
        let ca = params
            .self_signed(&key)
            .map_err(|e| file_error(&cert_path, e))?;
        if !cert_path.is_file() {
            std::fs::write(&cert_path, ca.pem()).map_err(|e| file_error(&cert_path, e))?;
        }
        let ca_pem = std::fs::read_to_string(&cert_path).map_err(|e| file_error(&cert_path, e))?;
        let system = SYSTEM_BUNDLES
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        std::fs::write(&bundle_path, format!("{system}\n{ca_pem}"))
            .map_err(|e| file_error(&bundle_path, e))?;
        Ok(LocalCa {
            ca,
            key,
            cert_path,
            bundle_path,
            issued: Default::default(),
        })
    }

    /// The system's CA bundle with the authority's certificate added (PEM).
    pub(crate) fn bundle_path(&self) -> &Path {
        &self.bundle_path
    }

    /// An acceptor that answers every name with a certificate of this authority.
    pub(crate) fn acceptor(self: Arc<Self>) -> Result<TlsAcceptor, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// The certificate for `name` (a host name or an IP address), issued on first use.
    pub(crate) fn certificate(
        &self,
        name: &str,
    ) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
        let mut issued = self.issued.lock().expect("local CA lock");
        if let Some(found) = issued.get(name) {
            return Ok(found.clone());
        }
        let failed = |e: &dyn std::fmt::Display| TlsError::File {
            path: self.cert_path.clone(),
            reason: format!("cannot issue a certificate for {name}: {e}"),
        };
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let mut sans = vec![
            rcgen::SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
            rcgen::SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()),
        ];
        match name.parse::<std::net::IpAddr>() {
            Ok(ip) if !ip.is_loopback() => sans.push(rcgen::SanType::IpAddress(ip)),
            Ok(_) => {}
            Err(_) => {
                let dns = name.try_into().map_err(|e| failed(&e))?;
                sans.push(rcgen::SanType::DnsName(dns));
            }
        }
        if name != "localhost" {
            sans.push(rcgen::SanType::DnsName(
                "localhost".try_into().map_err(|e| failed(&e))?,
            ));
        }
        params.subject_alt_names = sans;
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2049, 1, 1);
        let leaf_key = rcgen::KeyPair::generate().map_err(|e| failed(&e))?;
        let leaf = params
            .signed_by(&leaf_key, &self.ca, &self.key)
            .map_err(|e| failed(&e))?;
        let der = PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let signing = rustls::crypto::ring::sign::any_supported_type(&der)?;
        let chain = vec![leaf.der().clone(), self.ca.der().clone()];
        let certified = Arc::new(rustls::sign::CertifiedKey::new(chain, signing));
        if issued.len() >= Self::MAX_NAMES {
            issued.clear();
        }
        issued.insert(name.to_owned(), certified.clone());
        Ok(certified)
    }
}

impl rustls::server::ResolvesServerCert for LocalCa {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let name = hello
            .server_name()
            .unwrap_or("localhost")
            .to_ascii_lowercase();
        match self.certificate(&name) {
            Ok(key) => Some(key),
            Err(error) => {
                tracing::warn!(%error, "TLS handshake without a certificate");
                None
            }
        }
    }
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, text: &str) -> Result<(), TlsError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| file_error(path, e))?;
    file.write_all(text.as_bytes())
        .map_err(|e| file_error(path, e))
}

/// Whether the first byte of a connection starts a TLS handshake (a ClientHello record) rather
/// than an HTTP request.
pub(crate) fn is_tls_start(first: u8) -> bool {
    first == 0x16
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;

    #[test]
    fn the_local_ca_issues_certificates_that_chain_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::open(dir.path()).unwrap();
        let pem = std::fs::read_to_string(&ca.cert_path).unwrap();
        let cert = ca
            .certificate("abc.execute-api.us-east-1.amazonaws.com")
            .unwrap();
        assert_eq!(cert.cert.len(), 2, "leaf and authority");
        assert!(Arc::ptr_eq(
            &cert,
            &ca.certificate("abc.execute-api.us-east-1.amazonaws.com")
                .unwrap()
        ));
        ca.certificate("127.0.0.1").unwrap();
        // Opened again: the same authority, and the leaf verifies against the stored one.
        let again = LocalCa::open(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&again.cert_path).unwrap(), pem);
        let leaf = again.certificate("localhost").unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(pem.as_bytes()).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        verifier
            .verify_server_cert(
                &leaf.cert[0],
                &leaf.cert[1..],
                &name,
                &[],
                rustls_pki_types::UnixTime::now(),
            )
            .unwrap();
        assert!(
            std::fs::read_to_string(again.bundle_path())
                .unwrap()
                .ends_with(&pem)
        );
        assert!(is_tls_start(0x16));
        assert!(!is_tls_start(b'G'));
    }
}
