//! The engine crate's error type.

use datafusion::error::DataFusionError;

/// Errors raised while building sessions or catalogs.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A DataFusion call failed; `context` says what the engine was doing.
    #[error("{context}: {source}")]
    DataFusion {
        /// What the engine was doing when the error happened.
        context: String,
        /// The underlying error.
        #[source]
        source: DataFusionError,
    },
    /// The persistent catalog could not be read or written.
    #[error("catalog: {0}")]
    Catalog(String),
}

impl EngineError {
    /// Wraps a DataFusion error with a description of the failed step.
    pub fn datafusion(context: impl Into<String>, source: DataFusionError) -> Self {
        Self::DataFusion {
            context: context.into(),
            source,
        }
    }
}

/// Result alias for the engine crate.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
