//! Mutual TLS between the roles of a cluster (`--cluster-tls-*`, or
//! `tls-ca`, `tls-cert`, `tls-key` in `[cluster]`), shared by `sluice
//! scheduler`, `sluice executor` and `sluice serve --scheduler`.

use std::path::PathBuf;

use sluice_scheduler::ClusterTls;

use super::FileConfig;
use crate::error::{Result, ServerError};

/// Flags that secure a role's cluster traffic.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ClusterTlsArgs {
    /// PEM certificate of the CA that signed every role's cluster
    /// certificate; with `--cluster-tls-cert` and `--cluster-tls-key`, gRPC
    /// and Arrow Flight between the roles use mutual TLS.
    #[arg(long, env = "SLUICE_CLUSTER_TLS_CA", value_name = "FILE")]
    pub cluster_tls_ca: Option<PathBuf>,
    /// PEM certificate chain this role presents to the others, as a server
    /// and as a client (its names must cover the host others reach it by).
    #[arg(long, env = "SLUICE_CLUSTER_TLS_CERT", value_name = "FILE")]
    pub cluster_tls_cert: Option<PathBuf>,
    /// PEM private key of `--cluster-tls-cert`.
    #[arg(long, env = "SLUICE_CLUSTER_TLS_KEY", value_name = "FILE")]
    pub cluster_tls_key: Option<PathBuf>,
}

impl ClusterTlsArgs {
    /// The role's TLS identity from the flags over `[cluster]`, loaded and
    /// checked; `None` when neither sets any of the three files.
    pub(super) fn resolve(self, file: &FileConfig) -> Result<Option<ClusterTls>> {
        let section = &file.cluster;
        let ca = self.cluster_tls_ca.or_else(|| section.tls_ca.clone());
        let cert = self.cluster_tls_cert.or_else(|| section.tls_cert.clone());
        let key = self.cluster_tls_key.or_else(|| section.tls_key.clone());
        match (ca, cert, key) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => Ok(Some(ClusterTls::load(&ca, &cert, &key)?)),
            _ => Err(ServerError::Config(
                "cluster TLS needs a CA, a certificate and its key \
                 (--cluster-tls-ca, --cluster-tls-cert, --cluster-tls-key, or tls-ca, tls-cert, \
                 tls-key in [cluster])"
                    .into(),
            )),
        }
    }
}
