//! Errors as the wire carries them: the engine's [`PgError`] (SQLSTATE,
//! PostgreSQL's message, DETAIL, HINT) as pgwire's `ErrorResponse` fields.
//!
//! datafusion-postgres reports every DataFusion error as `XX000`; the error
//! handler here replaces each with what [`sluice_engine::sqlstate::pg_error`]
//! makes of it. This module knows the wire, not the codes: those come from
//! where an error is raised.

use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion_postgres::pgwire::api::{ClientInfo, ErrorHandler};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError};
use sluice_engine::sqlstate::{pg_error, PgError, SqlState};

/// An `ERROR` with `code` and `message`, for errors the frontend raises.
pub fn user_error(code: SqlState, message: impl Into<String>) -> PgWireError {
    wire_error(PgError::new(code, message))
}

/// `error` as the fields of an `ErrorResponse`.
pub fn wire_error(error: PgError) -> PgWireError {
    let mut info = ErrorInfo::new("ERROR".into(), error.code.to_string(), error.message);
    info.detail = error.detail;
    info.hint = error.hint;
    info.where_context = error.context;
    PgWireError::UserError(Box::new(info))
}

/// Converts an error from the query path into what the client receives:
/// engine errors get their SQLSTATE and wording; protocol errors keep
/// pgwire's own.
pub fn classify(error: PgWireError) -> PgWireError {
    match error {
        PgWireError::ApiError(source) => wire_error(api_error(source.as_ref())),
        other => other,
    }
}

/// The SQLSTATE and message a client sees for `error`.
pub fn describe(error: &PgWireError) -> (String, String) {
    match error {
        PgWireError::UserError(info) => (info.code.clone(), info.message.clone()),
        PgWireError::ApiError(source) => {
            let error = api_error(source.as_ref());
            (error.code.to_string(), error.message)
        }
        other => (SqlState::INTERNAL_ERROR.to_string(), other.to_string()),
    }
}

/// The error for one raised by the query engine or the parser.
fn api_error(error: &(dyn std::error::Error + Send + Sync + 'static)) -> PgError {
    if let Some(df) = error.downcast_ref::<DataFusionError>() {
        pg_error(df)
    } else if let Some(parser) = error.downcast_ref::<ParserError>() {
        pg_error(&DataFusionError::SQL(Box::new(parser.clone()), None))
    } else if let Some(pg) = error.downcast_ref::<PgError>() {
        pg.clone()
    } else {
        PgError::new(SqlState::INTERNAL_ERROR, error.to_string())
    }
}

/// Rewrites every error sent to a client into one carrying the right SQLSTATE.
#[derive(Debug, Default)]
pub struct SqlStateErrorHandler;

impl ErrorHandler for SqlStateErrorHandler {
    fn on_error<C>(&self, _client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        if matches!(error, PgWireError::ApiError(_)) {
            let taken = std::mem::replace(error, PgWireError::InvalidCancelRequest);
            *error = classify(taken);
        }
    }
}
