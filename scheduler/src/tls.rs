//! Mutual TLS between the roles of a cluster: the scheduler's gRPC and REST
//! listener, the executors' Arrow Flight listeners, and every client of them
//! (executors, frontends). Each role holds a certificate and key signed by
//! the cluster's CA and presents it both as a server and as a client; a peer
//! without such a certificate cannot open a connection. Task plans carry
//! object-storage credentials and Flight streams carry query data, so both
//! are encrypted once this is on.
//!
//! Ballista's executor only offers hooks for its clients and its Flight
//! server, not for the gRPC server the scheduler pushes tasks to, so a TLS
//! cluster schedules pull-based: executors poll the scheduler for tasks.
//! Ballista's scheduler serves gRPC and REST through `axum::serve`, which
//! takes no TLS settings; [`serve_tls`] terminates TLS in front of it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ballista_core::extension::{EndpointOverrideFn, SessionConfigExt};
use ballista_core::utils::{create_grpc_client_endpoint, GrpcClientConfig};
use ballista_core::ConfigProducer;
use datafusion::prelude::SessionConfig;
use sluice_engine::roles::base_config;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

use crate::error::{ClusterError, Result};

/// How long a peer may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A role's TLS identity within the cluster: the CA every role trusts, and
/// this role's certificate chain and key, all PEM.
#[derive(Clone)]
pub struct ClusterTls {
    ca: String,
    cert: String,
    key: String,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs and debug output.
        f.debug_struct("ClusterTls").finish_non_exhaustive()
    }
}

impl ClusterTls {
    /// Reads and checks the CA certificate, this role's certificate chain
    /// and its private key. A file that is missing, holds no PEM object, or
    /// a key that does not match the certificate is an error: a role never
    /// falls back to plaintext.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Self> {
        let read = |what: &str, path: &Path| {
            std::fs::read_to_string(path).map_err(|e| {
                ClusterError::Tls(format!(
                    "reading cluster TLS {what} {}: {e}",
                    path.display()
                ))
            })
        };
        let (ca_pem, cert_pem, key_pem) = (
            read("CA", ca)?,
            read("certificate", cert)?,
            read("key", key)?,
        );
        let invalid = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
            ClusterError::Tls(format!("cluster TLS {what} {}: {e}", path.display()))
        };
        let certificates = |what: &str, path: &Path, pem: &str| {
            let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| invalid(what, path, &e))?;
            if chain.is_empty() {
                return Err(invalid(what, path, &"no certificate in the file"));
            }
            Ok(chain)
        };
        let mut roots = RootCertStore::empty();
        for certificate in certificates("CA", ca, &ca_pem)? {
            roots.add(certificate).map_err(|e| invalid("CA", ca, &e))?;
        }
        let chain = certificates("certificate", cert, &cert_pem)?;
        let private_key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| invalid("key", key, &e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| invalid("CA", ca, &e))?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("setup for", cert, &e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, private_key)
            .map_err(|e| invalid("certificate and key", cert, &e))?;
        // gRPC needs HTTP/2; the REST API and health checks speak HTTP/1.1.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            ca: ca_pem,
            cert: cert_pem,
            key: key_pem,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The settings of an Arrow Flight server that asks clients for a
    /// certificate signed by the cluster CA.
    pub fn flight_server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert, &self.key))
            .client_ca_root(Certificate::from_pem(&self.ca))
    }

    /// TLS for a gRPC client: trusts only the cluster CA, presents this
    /// role's certificate.
    fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .identity(Identity::from_pem(&self.cert, &self.key))
    }

    /// Ballista's hook for every gRPC client it creates (to the scheduler,
    /// to executors' Flight services). An `http://` endpoint — Ballista's
    /// executor always dials its scheduler so — is rebuilt as `https://`
    /// with `settings`; plaintext is never used.
    pub fn endpoint_override(&self, settings: GrpcClientConfig) -> EndpointOverrideFn {
        let tls = self.client();
        Arc::new(move |endpoint: Endpoint| {
            let endpoint = if endpoint.uri().scheme_str() == Some("https") {
                endpoint
            } else {
                let uri = endpoint.uri();
                let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
                create_grpc_client_endpoint(format!("https://{authority}"), Some(&settings))?
            };
            Ok(endpoint.tls_config(tls.clone())?)
        })
    }

    /// `config` with every gRPC client Ballista creates from it (shuffle and
    /// result fetches, scheduler calls) going over TLS.
    pub fn secure(&self, config: SessionConfig) -> SessionConfig {
        let settings = GrpcClientConfig::from(&config.ballista_config());
        config
            .with_ballista_use_tls(true)
            .with_ballista_override_create_grpc_client_endpoint(self.endpoint_override(settings))
    }

    /// [`base_config`] secured by [`Self::secure`], as the producer
    /// Ballista's roles take.
    pub fn config_producer(&self) -> ConfigProducer {
        let tls = self.clone();
        Arc::new(move || tls.secure(base_config()))
    }

    /// `endpoint` (an `http://` or `https://` URL) connecting over TLS.
    pub fn endpoint(&self, endpoint: Endpoint) -> Result<Endpoint> {
        self.endpoint_override(GrpcClientConfig::default())(endpoint)
            .map_err(|e| ClusterError::Tls(format!("configuring TLS for a cluster client: {e}")))
    }

    /// An HTTPS client for the scheduler's REST API with this role's
    /// certificate, trusting only the cluster CA.
    pub fn http_client(&self, builder: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder> {
        let invalid = |e: reqwest::Error| ClusterError::Tls(format!("cluster TLS for HTTP: {e}"));
        let identity =
            reqwest::Identity::from_pem(format!("{}\n{}", self.cert, self.key).as_bytes())
                .map_err(invalid)?;
        let ca = reqwest::Certificate::from_pem(self.ca.as_bytes()).map_err(invalid)?;
        Ok(builder
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .identity(identity))
    }
}

/// Accepts TLS connections on `listener` from peers holding a certificate of
/// the cluster CA and relays each to `backend` (a loopback listener serving
/// plaintext). Runs until aborted; a failed handshake only drops that peer.
pub async fn serve_tls(listener: TcpListener, tls: ClusterTls, backend: SocketAddr) {
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("accepting a cluster connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = tls.acceptor.clone();
        tokio::spawn(async move {
            match relay(socket, acceptor, backend).await {
                Ok(()) => {}
                Err(Relay::Handshake(e)) => {
                    tracing::warn!("refused cluster connection from {peer}: {e}")
                }
                Err(Relay::Transfer(e)) => {
                    tracing::debug!("cluster connection from {peer} ended: {e}")
                }
            }
        });
    }
}

/// How a relayed connection failed.
enum Relay {
    /// The peer was refused (no or a foreign certificate, plaintext, timeout).
    Handshake(std::io::Error),
    /// The connection broke after the handshake (a peer that went away).
    Transfer(std::io::Error),
}

/// One peer's connection: handshake, then bytes both ways until either side
/// closes.
async fn relay(socket: TcpStream, acceptor: TlsAcceptor, backend: SocketAddr) -> Result<(), Relay> {
    let _ = socket.set_nodelay(true);
    let mut secured = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket))
        .await
        .map_err(|_| {
            Relay::Handshake(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "TLS handshake timed out",
            ))
        })?
        .map_err(Relay::Handshake)?;
    let mut plain = TcpStream::connect(backend).await.map_err(Relay::Transfer)?;
    let _ = plain.set_nodelay(true);
    tokio::io::copy_bidirectional(&mut secured, &mut plain)
        .await
        .map_err(Relay::Transfer)?;
    Ok(())
}
