//! The jobs crate's error type.

/// Errors of scheduled jobs, scripts and client connections.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    /// Invalid configuration: a jobs file, a variable, a server that cannot
    /// be reached.
    #[error("configuration error: {0}")]
    Config(String),
    /// An I/O operation failed; `context` says which.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A script could not run or a statement of it failed: `FILE:LINE:
    /// ERROR SQLSTATE: message`, or what is wrong with the file.
    #[error("{0}")]
    Script(String),
    /// The run history could not be read or written.
    #[error(transparent)]
    Frontend(#[from] sluice_frontend::error::FrontendError),
}

impl JobsError {
    /// Wraps an I/O error with a description of the failed step.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result alias for the jobs crate.
pub type Result<T, E = JobsError> = std::result::Result<T, E>;
