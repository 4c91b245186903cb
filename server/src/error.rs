//! The server crate's error type.

use sluice_engine::EngineError;
use sluice_frontend::error::FrontendError;
use sluice_scheduler::ClusterError;

/// Errors that stop a `sluice` command.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Invalid configuration (flags, environment or config file).
    #[error("configuration error: {0}")]
    Config(String),
    /// An I/O operation failed; `context` says which.
    #[error("{context}: {source}")]
    Io {
        /// What the server was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A `sluice run` script could not run or a statement of it failed:
    /// `FILE:LINE: ERROR SQLSTATE: message`, or what is wrong with the file.
    #[error("{0}")]
    Script(String),
    /// A benchmark ran but some queries failed or returned wrong answers.
    #[error("benchmark failed: {0}")]
    Bench(String),
    /// Starting or talking to the cluster failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// Building sessions or catalogs failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A scheduled job, a script or a client connection failed.
    #[error(transparent)]
    Jobs(#[from] sluice_jobs::error::JobsError),
    /// The frontend could not start or keep its files.
    #[error(transparent)]
    Frontend(#[from] FrontendError),
}

impl ServerError {
    /// Wraps an I/O error with a description of the failed step.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result alias for the server crate.
pub type Result<T, E = ServerError> = std::result::Result<T, E>;
