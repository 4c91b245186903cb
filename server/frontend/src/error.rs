//! The frontend crate's error type.

/// Errors that stop the frontend from starting or from keeping its files.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    /// Invalid configuration (a certificate that cannot be used, a bad
    /// history file).
    #[error("configuration error: {0}")]
    Config(String),
    /// An I/O operation failed; `context` says which.
    #[error("{context}: {source}")]
    Io {
        /// What the frontend was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl FrontendError {
    /// Wraps an I/O error with a description of the failed step.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result alias for the frontend crate.
pub type Result<T, E = FrontendError> = std::result::Result<T, E>;
