//! Maps engine errors to Postgres SQLSTATE codes.
//!
//! datafusion-postgres reports every DataFusion error as `XX000`. Clients
//! branch on SQLSTATE (retry, report a typo, show a constraint message), so
//! each error is classified: first by its typed root cause, then — for errors
//! that crossed the cluster as text inside a failed Ballista job — by the
//! message the executor produced.

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion_postgres::pgwire::api::{ClientInfo, ErrorHandler};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError};

/// `syntax_error`
pub const SYNTAX_ERROR: &str = "42601";
/// `undefined_table`
pub const UNDEFINED_TABLE: &str = "42P01";
/// `undefined_column`
pub const UNDEFINED_COLUMN: &str = "42703";
/// `undefined_function`
pub const UNDEFINED_FUNCTION: &str = "42883";
/// `duplicate_table`
pub const DUPLICATE_TABLE: &str = "42P07";
/// `invalid_schema_name`
pub const INVALID_SCHEMA_NAME: &str = "3F000";
/// `syntax_error_or_access_rule_violation`: other planning errors.
pub const PLANNING_ERROR: &str = "42000";
/// `undefined_object`: unknown setting names.
pub const UNDEFINED_OBJECT: &str = "42704";
/// `division_by_zero`
pub const DIVISION_BY_ZERO: &str = "22012";
/// `invalid_text_representation`: a value that does not parse as its type.
pub const INVALID_TEXT_REPRESENTATION: &str = "22P02";
/// `numeric_value_out_of_range`
pub const NUMERIC_OUT_OF_RANGE: &str = "22003";
/// `feature_not_supported`
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
/// `out_of_memory`
pub const OUT_OF_MEMORY: &str = "53200";
/// `undefined_file`: a table location that does not exist.
pub const UNDEFINED_FILE: &str = "58P01";
/// `io_error`
pub const IO_ERROR: &str = "58030";
/// `connection_failure`: the scheduler or an executor cannot be reached.
pub const CONNECTION_FAILURE: &str = "08006";
/// `22023`: a setting was given a value it cannot take.
pub const INVALID_PARAMETER_VALUE: &str = "22023";
/// `insufficient_privilege`
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// `program_limit_exceeded`: a value or statement over the server's limits.
pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
/// `serialization_failure`: the query could not finish and may be run again
/// (rows had already been sent when an executor's work was lost).
pub const SERIALIZATION_FAILURE: &str = "40001";
/// `internal_error`: only for real internal errors.
pub const INTERNAL_ERROR: &str = "XX000";

/// Message fragments that identify an error class when only text is left
/// (errors raised on an executor reach the frontend as a job failure message).
const MESSAGE_PATTERNS: &[(&str, &str)] = &[
    // A query that lost work after its rows had started to leave
    // (sluice_engine::live_results).
    (
        sluice_engine::live_results::ROWS_ALREADY_SENT,
        SERIALIZATION_FAILURE,
    ),
    // The location sandbox (sluice_engine::sandbox).
    (
        sluice_engine::sandbox::PERMISSION_DENIED,
        INSUFFICIENT_PRIVILEGE,
    ),
    // A function call that would build too large a value
    // (sluice_engine::value_limits), and regular expressions too large to
    // compile.
    (
        sluice_engine::value_limits::VALUE_TOO_LARGE,
        PROGRAM_LIMIT_EXCEEDED,
    ),
    ("compiledtoobig", PROGRAM_LIMIT_EXCEEDED),
    // A prepared statement over a table whose columns changed since.
    (
        sluice_engine::current_tables::TABLE_CHANGED,
        FEATURE_NOT_SUPPORTED,
    ),
    // A string or list column over Arrow's 2 GiB per array (`string_agg` of
    // large values).
    ("offset overflow", PROGRAM_LIMIT_EXCEEDED),
    ("compiled regex exceeds size limit", PROGRAM_LIMIT_EXCEEDED),
    ("divide by zero", DIVISION_BY_ZERO),
    ("dividebyzero", DIVISION_BY_ZERO),
    ("division by zero", DIVISION_BY_ZERO),
    ("cannot cast string", INVALID_TEXT_REPRESENTATION),
    ("cannot cast value", INVALID_TEXT_REPRESENTATION),
    ("cast error", INVALID_TEXT_REPRESENTATION),
    ("casterror", INVALID_TEXT_REPRESENTATION),
    ("parser error: error parsing", INVALID_TEXT_REPRESENTATION),
    // `SET` of a DataFusion, Ballista or Sluice setting to a value it cannot take.
    ("error setting config", INVALID_PARAMETER_VALUE),
    ("invalid value for", INVALID_PARAMETER_VALUE),
    ("overflow", NUMERIC_OUT_OF_RANGE),
    ("resources exhausted", OUT_OF_MEMORY),
    // A memory-pool refusal on an executor, as the failed job reports it.
    ("resourcesexhausted", OUT_OF_MEMORY),
    ("failed to allocate additional", OUT_OF_MEMORY),
    ("no field named", UNDEFINED_COLUMN),
    ("invalid function", UNDEFINED_FUNCTION),
    ("no function matches", UNDEFINED_FUNCTION),
    ("already exists", DUPLICATE_TABLE),
    ("doesn't exist", UNDEFINED_TABLE),
    // gRPC transport failures between the frontend, scheduler and executors.
    ("tcp connect error", CONNECTION_FAILURE),
    ("connection refused", CONNECTION_FAILURE),
    ("transport error", CONNECTION_FAILURE),
    ("broken pipe", CONNECTION_FAILURE),
    ("connection reset", CONNECTION_FAILURE),
    ("h2 protocol error", CONNECTION_FAILURE),
    // A connection that closed under a call: among others, a cluster role
    // refusing this frontend's TLS certificate.
    ("tonic::transport::error(transport", CONNECTION_FAILURE),
    ("invalid peer certificate", CONNECTION_FAILURE),
];

/// The SQLSTATE for a DataFusion error.
pub fn sqlstate(error: &DataFusionError) -> &'static str {
    let typed = match error.find_root() {
        DataFusionError::SQL(parser_error, _) => Some(match parser_error.as_ref() {
            ParserError::RecursionLimitExceeded => FEATURE_NOT_SUPPORTED,
            _ => SYNTAX_ERROR,
        }),
        DataFusionError::ArrowError(arrow, _) => arrow_sqlstate(arrow),
        DataFusionError::SchemaError(schema_error, _) => Some(schema_sqlstate(schema_error)),
        DataFusionError::NotImplemented(_) => Some(FEATURE_NOT_SUPPORTED),
        DataFusionError::ResourcesExhausted(_) => Some(OUT_OF_MEMORY),
        DataFusionError::ObjectStore(store_error) => Some(
            if store_error.to_string().to_lowercase().contains("not found") {
                UNDEFINED_FILE
            } else {
                IO_ERROR
            },
        ),
        DataFusionError::IoError(io) => Some(match io.kind() {
            std::io::ErrorKind::NotFound => UNDEFINED_FILE,
            _ => IO_ERROR,
        }),
        _ => None,
    };
    if let Some(code) = typed {
        return code;
    }
    let message = error.to_string().to_lowercase();
    if let Some(code) = message_sqlstate(&message) {
        return code;
    }
    match error.find_root() {
        DataFusionError::Plan(text) => plan_sqlstate(&text.to_lowercase()),
        DataFusionError::Configuration(_) => UNDEFINED_OBJECT,
        _ => INTERNAL_ERROR,
    }
}

fn arrow_sqlstate(error: &ArrowError) -> Option<&'static str> {
    match error {
        ArrowError::DivideByZero => Some(DIVISION_BY_ZERO),
        ArrowError::CastError(_) | ArrowError::ParseError(_) => Some(INVALID_TEXT_REPRESENTATION),
        ArrowError::ArithmeticOverflow(_) => Some(NUMERIC_OUT_OF_RANGE),
        ArrowError::MemoryError(_) => Some(OUT_OF_MEMORY),
        _ => None,
    }
}

fn schema_sqlstate(error: &datafusion::common::SchemaError) -> &'static str {
    use datafusion::common::SchemaError;
    match error {
        SchemaError::FieldNotFound { .. } => UNDEFINED_COLUMN,
        _ => PLANNING_ERROR,
    }
}

fn message_sqlstate(message: &str) -> Option<&'static str> {
    MESSAGE_PATTERNS
        .iter()
        .find(|(pattern, _)| message.contains(pattern))
        .map(|(_, code)| *code)
}

fn plan_sqlstate(message: &str) -> &'static str {
    if message.starts_with("table ") && message.contains("not found") {
        UNDEFINED_TABLE
    } else if message.contains("schema") && message.contains("not found") {
        INVALID_SCHEMA_NAME
    } else {
        PLANNING_ERROR
    }
}

/// Converts an error from the query path into what the client receives.
/// DataFusion errors get their SQLSTATE; a panic message becomes `XX000`;
/// protocol errors keep pgwire's own classification.
pub fn classify(error: PgWireError) -> PgWireError {
    match error {
        PgWireError::ApiError(source) => {
            let (code, message) = describe_api_error(source.as_ref());
            PgWireError::UserError(Box::new(ErrorInfo::new(
                "ERROR".into(),
                code.into(),
                message,
            )))
        }
        other => other,
    }
}

/// The SQLSTATE and message a client sees for `error`.
pub fn describe(error: &PgWireError) -> (String, String) {
    match error {
        PgWireError::UserError(info) => (info.code.clone(), info.message.clone()),
        PgWireError::ApiError(source) => {
            let (code, message) = describe_api_error(source.as_ref());
            (code.to_string(), message)
        }
        other => (INTERNAL_ERROR.to_string(), other.to_string()),
    }
}

/// SQLSTATE and message of an error raised by the query engine or parser.
fn describe_api_error(
    error: &(dyn std::error::Error + Send + Sync + 'static),
) -> (&'static str, String) {
    if let Some(df) = error.downcast_ref::<DataFusionError>() {
        let code = sqlstate(df);
        let message = match df.find_root() {
            _ if code == CONNECTION_FAILURE => {
                format!("the cluster cannot be reached (scheduler or executor down?): {df}")
            }
            // Setting errors read as PostgreSQL's, without DataFusion's prefix.
            DataFusionError::Configuration(text) => text.clone(),
            _ => df.to_string(),
        };
        (code, message)
    } else if error.downcast_ref::<ParserError>().is_some() {
        (SYNTAX_ERROR, format!("syntax error: {error}"))
    } else {
        (INTERNAL_ERROR, error.to_string())
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
