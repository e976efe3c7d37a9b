//! TLS: rustls with TLS 1.2 and 1.3 only, HTTP/2 and HTTP/1.1 offered by ALPN, and a serving
//! certificate that can be replaced while the server runs.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{Error, Result};

/// Installs the process-wide crypto provider (ring). Safe to call more than once.
pub fn install_crypto_provider() {
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
}

/// Parses a PEM certificate chain and private key into a key rustls can serve, checking that
/// the key belongs to the certificate.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8], cert_path: &Path, key_path: &Path) -> Result<CertifiedKey> {
    let bad = |path: &Path, message: String| Error::Config { path: path.to_owned(), message };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad(cert_path, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(bad(cert_path, "holds no certificate".into()));
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| bad(key_path, format!("not a PEM private key: {e}")))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => bad(
            key_path,
            format!(
                "this private key does not belong to the certificate {}: their public keys differ",
                cert_path.display()
            ),
        ),
        other => bad(key_path, format!("cannot serve this key with {}: {other}", cert_path.display())),
    })?;
    Ok(certified)
}

/// Reads and parses the certificate and key files.
pub fn load(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey> {
    let read = |p: &Path| std::fs::read(p).map_err(|error| Error::Read { path: p.to_owned(), error });
    certified_key(&read(cert_path)?, &read(key_path)?, cert_path, key_path)
}

/// The certificate being served; [`CertStore::replace`] swaps it for new handshakes.
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
}

impl CertStore {
    pub fn new(key: CertifiedKey) -> Arc<Self> {
        Arc::new(CertStore { current: ArcSwap::from_pointee(key) })
    }

    pub fn replace(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CertStore")
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The server's TLS configuration: TLS 1.2 and 1.3, ALPN h2 then http/1.1.
pub fn server_config(certs: Arc<CertStore>) -> Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Input { source_name: "TLS".into(), message: e.to_string() })?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
