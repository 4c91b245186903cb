//! TLS on the Postgres listener (rustls, through pgwire's re-export).

use std::path::Path;
use std::sync::Arc;

use datafusion_postgres::pgwire::tokio::tokio_rustls::rustls::pki_types::pem::PemObject;
use datafusion_postgres::pgwire::tokio::tokio_rustls::rustls::pki_types::{
    CertificateDer, PrivateKeyDer,
};
use datafusion_postgres::pgwire::tokio::tokio_rustls::rustls::{self, ServerConfig};
use datafusion_postgres::pgwire::tokio::tokio_rustls::TlsAcceptor;

use crate::error::{FrontendError, Result};

/// The acceptor for the PEM certificate chain at `cert` and its key at
/// `key`; an unreadable or mismatched pair is an error (the server must not
/// fall back to plaintext).
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    let invalid = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        FrontendError::Config(format!("TLS {what} {}: {e}", path.display()))
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| invalid("certificate", cert, &e))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| invalid("certificate", cert, &e))?;
    if chain.is_empty() {
        return Err(invalid("certificate", cert, &"no certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| invalid("key", key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("setup for", cert, &e))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| invalid("certificate and key", cert, &e))?;
    // PostgreSQL 17 clients' direct TLS negotiation asks for this protocol.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
