//! SQLSTATE codes and PostgreSQL's wording for errors, typed from where they
//! are raised.
//!
//! Sluice's own errors are [`PgError`]s: a code, PostgreSQL's message and an
//! optional DETAIL and HINT, raised as `DataFusionError::External`. Errors
//! DataFusion, Arrow and Ballista raise are classified by their variants
//! ([`pg_error`]); the few that DataFusion raises only as text (a missing
//! table, an unknown function, an unknown setting) are recognised by
//! DataFusion's own wording, in [`datafusion_text`], and nowhere else.
//!
//! An error raised on an executor reaches the frontend as text inside a
//! failed job's message (Ballista keeps no error types across processes), so
//! the executor classifies it before it leaves ([`tag_task_error`]) and the
//! text carries a tag, `[SQLSTATE 22012 <base64 of the error>]`, that
//! [`PgError::from_text`] reads back: code, message, DETAIL and HINT.

use std::fmt;

use ballista_core::error::BallistaError;
use base64::Engine as _;
use datafusion::arrow::error::ArrowError;
use datafusion::common::SchemaError;
use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::parser::ParserError;
use serde::{Deserialize, Serialize};

mod codes;
mod datafusion_text;
#[cfg(test)]
mod tests;

pub use codes::SqlState;

/// Opens the tag an error carries across processes.
const TAG_START: &str = "[SQLSTATE ";

/// An error as a PostgreSQL client sees it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgError {
    /// The SQLSTATE.
    pub code: SqlState,
    /// The primary message, in PostgreSQL's words where it has them.
    pub message: String,
    /// A DETAIL line: more about what happened.
    pub detail: Option<String>,
    /// A HINT line: what to do about it.
    pub hint: Option<String>,
    /// A CONTEXT line: where it happened (`COPY t, line 3, column id: "x"`).
    #[serde(default)]
    pub context: Option<String>,
}

impl PgError {
    /// An error with `code` and `message`, no DETAIL or HINT.
    pub fn new(code: SqlState, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            detail: None,
            hint: None,
            context: None,
        }
    }

    /// The same error with a DETAIL line.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The same error with a HINT line.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The same error with a CONTEXT line.
    pub fn with_context(mut self, context: impl Into<String>) -> Self {
        self.context = Some(context.into());
        self
    }

    /// PostgreSQL's 42P01 for a table or view `name` that does not exist.
    pub fn undefined_table(name: impl fmt::Display) -> Self {
        Self::new(
            SqlState::UNDEFINED_TABLE,
            format!("relation \"{name}\" does not exist"),
        )
    }

    /// PostgreSQL's 42P07 for a table or view `name` that exists already.
    pub fn duplicate_table(name: impl fmt::Display) -> Self {
        Self::new(
            SqlState::DUPLICATE_TABLE,
            format!("relation \"{name}\" already exists"),
        )
    }

    /// PostgreSQL's 23502 for a NULL in `column` of `table`, declared NOT NULL.
    pub fn not_null_violation(column: impl fmt::Display, table: impl fmt::Display) -> Self {
        Self::new(
            SqlState::NOT_NULL_VIOLATION,
            format!(
                "null value in column \"{column}\" of relation \"{table}\" violates not-null constraint"
            ),
        )
    }

    /// As a DataFusion error (`External`), to return from DataFusion code.
    pub fn into_datafusion(self) -> DataFusionError {
        DataFusionError::External(Box::new(self))
    }

    /// The error tagged into `text` by this type's `Display` (the last tag,
    /// when there are several: the ones before it are quoted values).
    pub fn from_text(text: &str) -> Option<Self> {
        let start = text.rfind(TAG_START)? + TAG_START.len();
        let rest = &text[start..];
        let (code, rest) = rest.split_once(' ')?;
        let code = SqlState::parse(code)?;
        let encoded = &rest[..rest.find(']')?];
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(encoded)
            .ok()?;
        let error: Self = serde_json::from_slice(&bytes).ok()?;
        (error.code == code).then_some(error)
    }

    /// The tag [`Self::from_text`] reads.
    fn tag(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(json);
        format!("{TAG_START}{} {encoded}]", self.code)
    }
}

/// The message, then the tag that carries the error across processes.
impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.message, self.tag())
    }
}

/// As `Display`: Ballista formats a failed task's error with `{:?}`.
impl fmt::Debug for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for PgError {}

/// The [`PgError`] a client sees for `error`: a `PgError` raised anywhere
/// under it, one tagged into its text on an executor, else the
/// classification of DataFusion's, Arrow's and Ballista's own variants.
///
/// Typed errors come first: a tag found in the text of one (a value quoted
/// in a cast error, say) is data, not an error. Only the text of a failed
/// task is read for a tag ([`task_failure_tag`]).
pub fn pg_error(error: &DataFusionError) -> PgError {
    if let Some(raised) = raised(error) {
        return raised;
    }
    let root = error.find_root();
    if let Some(typed) = classify(root) {
        return typed;
    }
    if let Some(tagged) = task_failure_tag(&error.to_string()) {
        return tagged;
    }
    datafusion_text::classify(root)
}

/// Ballista's words before the error of a task that failed running, in a
/// failed job's message.
const TASK_FAILED: &str = "Task failed due to runtime execution error: ";

/// The error an executor tagged ([`tag_task_error`]) in `text`, a failed
/// job's message: the last tag after Ballista's words for a failed task.
/// The executor appends its tag after everything else in the task's error,
/// so a tag-shaped value quoted earlier in it is never the one read.
fn task_failure_tag(text: &str) -> Option<PgError> {
    let (_, task_error) = text.split_once(TASK_FAILED)?;
    PgError::from_text(task_error)
}

/// A [`PgError`] raised as an external error anywhere in `error`'s chain.
fn raised(error: &DataFusionError) -> Option<PgError> {
    let mut current = error;
    loop {
        match current {
            DataFusionError::External(source) => {
                return find_in_source(source.as_ref());
            }
            DataFusionError::ArrowError(arrow, _) => {
                return match arrow.as_ref() {
                    ArrowError::ExternalError(source) => find_in_source(source.as_ref()),
                    _ => None,
                };
            }
            DataFusionError::Context(_, inner) => current = inner,
            DataFusionError::Shared(inner) => current = inner,
            DataFusionError::Diagnostic(_, inner) => current = inner,
            DataFusionError::Collection(errors) => current = errors.first()?,
            _ => return None,
        }
    }
}

/// A [`PgError`] that is `source` or lies under it.
fn find_in_source(source: &(dyn std::error::Error + 'static)) -> Option<PgError> {
    if let Some(pg) = source.downcast_ref::<PgError>() {
        return Some(pg.clone());
    }
    if let Some(df) = source.downcast_ref::<DataFusionError>() {
        return raised(df);
    }
    if let Some(BallistaError::DataFusionError(df)) = source.downcast_ref::<BallistaError>() {
        return raised(df);
    }
    None
}

/// The error for a root cause of a typed variant; `None` for DataFusion's
/// text variants (`Plan`, `Execution`, …) and external errors of unknown
/// types.
fn classify(root: &DataFusionError) -> Option<PgError> {
    Some(match root {
        DataFusionError::SQL(parser_error, _) => syntax_error(parser_error),
        DataFusionError::ArrowError(arrow, _) => arrow_error(arrow),
        DataFusionError::SchemaError(schema_error, _) => schema_error_of(schema_error),
        DataFusionError::NotImplemented(text) => {
            PgError::new(SqlState::FEATURE_NOT_SUPPORTED, text.clone())
        }
        DataFusionError::ResourcesExhausted(text) => {
            PgError::new(SqlState::OUT_OF_MEMORY, text.clone())
        }
        DataFusionError::ObjectStore(store_error) => {
            let code = match store_error.as_ref() {
                object_store::Error::NotFound { .. } => SqlState::UNDEFINED_FILE,
                _ => SqlState::IO_ERROR,
            };
            PgError::new(code, store_error.to_string())
        }
        DataFusionError::IoError(io) => {
            let code = match io.kind() {
                std::io::ErrorKind::NotFound => SqlState::UNDEFINED_FILE,
                _ => SqlState::IO_ERROR,
            };
            PgError::new(code, io.to_string())
        }
        DataFusionError::External(source) => {
            if let Some(ballista) = source.downcast_ref::<BallistaError>() {
                ballista_error(ballista)?
            } else if let Some(status) = source.downcast_ref::<tonic::Status>() {
                status_error(status)
            } else if source.downcast_ref::<tonic::transport::Error>().is_some() {
                unreachable_cluster(source)
            } else {
                return None;
            }
        }
        _ => return None,
    })
}

/// PostgreSQL's `syntax error at or near "…"`, with the parser's own words as
/// DETAIL.
fn syntax_error(error: &ParserError) -> PgError {
    let (code, text) = match error {
        ParserError::RecursionLimitExceeded => {
            return PgError::new(
                SqlState::STATEMENT_TOO_COMPLEX,
                "statement is too deeply nested",
            )
        }
        ParserError::TokenizerError(text) | ParserError::ParserError(text) => {
            (SqlState::SYNTAX_ERROR, text.as_str())
        }
    };
    let found = text
        .split_once(", found: ")
        .map(|(_, found)| found.split(" at Line: ").next().unwrap_or(found));
    let message = match found {
        Some("EOF") => "syntax error at end of input".to_string(),
        Some(token) => format!("syntax error at or near \"{token}\""),
        None => "syntax error".to_string(),
    };
    PgError::new(code, message).with_detail(text)
}

/// Arrow's errors: division by zero, bad casts, overflow, memory.
fn arrow_error(error: &ArrowError) -> PgError {
    match error {
        ArrowError::DivideByZero => PgError::new(SqlState::DIVISION_BY_ZERO, "division by zero"),
        // A number too big for its new type: `Can't cast value 1099511627776
        // to type Int32`, `value of … is out of range`, `Overflowing on …`.
        ArrowError::CastError(text)
            if text.starts_with("Can't cast value")
                || text.contains("out of range")
                || text.contains("verflow") =>
        {
            PgError::new(SqlState::NUMERIC_VALUE_OUT_OF_RANGE, text.clone())
        }
        ArrowError::CastError(text) | ArrowError::ParseError(text) => {
            PgError::new(SqlState::INVALID_TEXT_REPRESENTATION, text.clone())
        }
        ArrowError::ArithmeticOverflow(text) => {
            PgError::new(SqlState::NUMERIC_VALUE_OUT_OF_RANGE, text.clone())
        }
        ArrowError::MemoryError(text) => PgError::new(SqlState::OUT_OF_MEMORY, text.clone()),
        ArrowError::ExternalError(source) => match find_in_source(source.as_ref()) {
            Some(pg) => pg,
            None => PgError::new(SqlState::INTERNAL_ERROR, source.to_string()),
        },
        other => datafusion_text::arrow(other),
    }
}

/// `column "x" does not exist`, with the columns there are as a HINT.
fn schema_error_of(error: &SchemaError) -> PgError {
    match error {
        SchemaError::FieldNotFound {
            field,
            valid_fields,
        } => {
            let name = match &field.relation {
                Some(relation) => format!("{relation}.{}", field.name),
                None => format!("\"{}\"", field.name),
            };
            let error = PgError::new(
                SqlState::UNDEFINED_COLUMN,
                format!("column {name} does not exist"),
            );
            if valid_fields.is_empty() {
                return error;
            }
            let columns: Vec<String> = valid_fields.iter().map(|c| c.flat_name()).collect();
            error.with_hint(format!("The columns in scope are {}.", columns.join(", ")))
        }
        SchemaError::DuplicateQualifiedField { .. }
        | SchemaError::DuplicateUnqualifiedField { .. }
        | SchemaError::AmbiguousReference { .. } => {
            PgError::new(SqlState::AMBIGUOUS_COLUMN, error.to_string())
        }
    }
}

/// Ballista's errors: a cluster role that cannot be reached, or what a task
/// raised; `None` for its text variants.
fn ballista_error(error: &BallistaError) -> Option<PgError> {
    Some(match error {
        BallistaError::TonicError(_)
        | BallistaError::GrpcConnectionError(_)
        | BallistaError::GrpcActionError(_) => unreachable_cluster(error),
        BallistaError::GrpcError(status) => status_error(status),
        BallistaError::ArrowError(arrow) => arrow_error(arrow),
        BallistaError::DataFusionError(df) => pg_error(df),
        BallistaError::SqlError(parser) => syntax_error(parser),
        BallistaError::NotImplemented(text) => {
            PgError::new(SqlState::FEATURE_NOT_SUPPORTED, text.clone())
        }
        BallistaError::IoError(io) => PgError::new(SqlState::IO_ERROR, io.to_string()),
        _ => return None,
    })
}

/// A gRPC call's failure: 08006 when the peer could not be reached or the
/// connection broke under the call (a peer refusing this role's TLS
/// certificate closes it so).
fn status_error(status: &tonic::Status) -> PgError {
    let broken_connection = std::error::Error::source(status)
        .is_some_and(|source| source.downcast_ref::<tonic::transport::Error>().is_some());
    if status.code() == tonic::Code::Unavailable || broken_connection {
        unreachable_cluster(status)
    } else {
        PgError::new(SqlState::INTERNAL_ERROR, status.message().to_string())
    }
}

/// 08006 for a scheduler or executor that cannot be reached.
pub fn unreachable_cluster(error: impl fmt::Display) -> PgError {
    PgError::new(
        SqlState::CONNECTION_FAILURE,
        "the cluster cannot be reached (scheduler or executor down?)",
    )
    .with_detail(error.to_string())
}

/// What an executor returns for a task that failed with `error`: the same
/// error, its text tagged with its SQLSTATE and PostgreSQL's wording so that
/// the frontend reads them out of the failed job's message. Errors Ballista
/// acts on itself (a failed shuffle fetch, to recompute the lost stage; a
/// cancelled task; an I/O error, to retry) are returned as they are.
pub fn tag_task_error(error: DataFusionError) -> DataFusionError {
    if acted_on_by_ballista(&error) {
        return error;
    }
    pg_error(&error).into_datafusion()
}

/// Whether `error` is one Ballista reacts to (fetch failures,
/// cancellations, I/O errors), which must reach it unchanged.
fn acted_on_by_ballista(error: &DataFusionError) -> bool {
    match error.find_root() {
        DataFusionError::IoError(_) => true,
        DataFusionError::External(source) => matches!(
            source.downcast_ref::<BallistaError>(),
            Some(
                BallistaError::FetchFailed(..)
                    | BallistaError::Cancelled
                    | BallistaError::IoError(_)
            )
        ),
        _ => false,
    }
}
