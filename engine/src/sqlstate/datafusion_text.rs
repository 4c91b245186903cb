//! Errors DataFusion, Arrow and the network stack raise only as text, known
//! by their own wording. Sluice's own errors never land here: they are
//! [`PgError`]s from where they are raised.

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;

use super::{PgError, SqlState};

/// Words of tonic, hyper and rustls for a peer that cannot be reached.
const UNREACHABLE: &[&str] = &[
    "tcp connect error",
    "connection refused",
    "transport error",
    "broken pipe",
    "connection reset",
    "h2 protocol error",
    "invalid peer certificate",
    // A gRPC status printed with `{:?}` whose connection closed under the
    // call: among others, a cluster role refusing this role's certificate.
    "tonic::transport::error(transport",
];

/// The error for one of DataFusion's text variants (`Plan`, `Execution`,
/// `Configuration`, …).
pub(super) fn classify(root: &DataFusionError) -> PgError {
    match root {
        DataFusionError::Plan(text) => plan(text),
        DataFusionError::Configuration(text) => configuration(text),
        DataFusionError::Execution(text) | DataFusionError::Internal(text) => execution(text, root),
        other => execution(&other.to_string(), other),
    }
}

/// Planning errors: a missing table or function, a name taken.
fn plan(text: &str) -> PgError {
    // DataFusion's SessionContextProvider: "table 'catalog.schema.name' not found".
    if let Some(name) = text
        .strip_prefix("table '")
        .and_then(|rest| rest.strip_suffix("' not found"))
    {
        return PgError::undefined_table(name.rsplit('.').next().unwrap_or(name));
    }
    let lower = text.to_lowercase();
    let code = if lower.starts_with("invalid function") || lower.contains("no function matches") {
        SqlState::UNDEFINED_FUNCTION
    } else if lower.contains("already exists") {
        SqlState::DUPLICATE_TABLE
    } else if lower.contains("doesn't exist") {
        SqlState::UNDEFINED_TABLE
    } else if lower.contains("schema") && lower.contains("not found") {
        SqlState::INVALID_SCHEMA_NAME
    } else {
        SqlState::SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION
    };
    PgError::new(code, text)
}

/// `SET` of an unknown setting, or of a value a setting cannot take.
fn configuration(text: &str) -> PgError {
    let lower = text.to_lowercase();
    let code = if lower.contains("invalid value for") || lower.contains("error setting config") {
        SqlState::INVALID_PARAMETER_VALUE
    } else {
        SqlState::UNDEFINED_OBJECT
    };
    PgError::new(code, text)
}

/// Errors raised while running: an unreachable peer, a name taken, limits
/// of Arrow's arrays and of the regex engine.
fn execution(text: &str, error: &DataFusionError) -> PgError {
    // SessionContext's EXECUTE and DEALLOCATE of a name never prepared.
    if let Some(name) = text
        .strip_prefix("Prepared statement '")
        .and_then(|rest| rest.strip_suffix("' does not exist"))
    {
        return PgError::new(
            SqlState::INVALID_SQL_STATEMENT_NAME,
            format!("prepared statement \"{name}\" does not exist"),
        );
    }
    let lower = text.to_lowercase();
    if UNREACHABLE.iter().any(|words| lower.contains(words)) {
        return super::unreachable_cluster(error);
    }
    if lower.contains("already exists") {
        return PgError::new(SqlState::DUPLICATE_TABLE, text);
    }
    if lower.contains("doesn't exist") {
        return PgError::new(SqlState::UNDEFINED_TABLE, text);
    }
    let code = limit(&lower).unwrap_or(SqlState::INTERNAL_ERROR);
    PgError::new(code, text)
}

/// Arrow's other errors, by their wording.
pub(super) fn arrow(error: &ArrowError) -> PgError {
    let text = error.to_string();
    let code = limit(&text.to_lowercase()).unwrap_or(SqlState::INTERNAL_ERROR);
    PgError::new(code, text)
}

/// A value over Arrow's 2 GiB per array (`string_agg` of large values) or a
/// regular expression over the regex engine's size limit.
fn limit(lower: &str) -> Option<SqlState> {
    if lower.contains("offset overflow")
        || lower.contains("compiled regex exceeds size limit")
        || lower.contains("compiledtoobig")
    {
        Some(SqlState::PROGRAM_LIMIT_EXCEEDED)
    } else if lower.contains("overflow") {
        Some(SqlState::NUMERIC_VALUE_OUT_OF_RANGE)
    } else {
        None
    }
}
