//! The scheduler crate's error type.

use ballista_core::error::BallistaError;

/// Errors raised while starting, querying or stopping cluster roles.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A Ballista call failed; `context` says what the cluster was doing.
    #[error("{context}: {source}")]
    Ballista {
        /// What the cluster was doing when the error happened.
        context: String,
        /// The underlying error.
        #[source]
        source: BallistaError,
    },
    /// An I/O operation (binding a port, creating a directory) failed.
    #[error("{context}: {source}")]
    Io {
        /// What the cluster was doing when the error happened.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The cluster did not become ready in time.
    #[error("{0}")]
    NotReady(String),
    /// A remote role did not answer.
    #[error("{0}")]
    Unreachable(String),
    /// Cluster TLS files are missing or invalid, or a TLS setup failed.
    #[error("{0}")]
    Tls(String),
}

impl ClusterError {
    /// Wraps a Ballista error with a description of the failed step.
    pub fn ballista(context: impl Into<String>, source: BallistaError) -> Self {
        Self::Ballista {
            context: context.into(),
            source,
        }
    }

    /// Wraps an I/O error with a description of the failed step.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result alias for the scheduler crate.
pub type Result<T, E = ClusterError> = std::result::Result<T, E>;
