//! `DECLARE … CURSOR`, `FETCH` and `CLOSE`: the declared query planned as
//! every other query of the connection is (Sluice's planner and placement),
//! its rows kept as Arrow batches in the connection's [`OpenCursors`] (what
//! `pg_catalog.pg_cursors` shows) and encoded by each `FETCH` in the formats
//! it asks for: text for the simple protocol, the portal's formats for the
//! extended one, whose `Describe` of a `FETCH` answers the cursor's columns
//! as PostgreSQL's does.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    CloseCursor, Declare, DeclareType, FetchDirection, Ident, Statement, Value,
};
use datafusion_postgres::arrow_pg::datatypes::arrow_schema_to_pg_fields;
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::pgwire::api::portal::Format;
use datafusion_postgres::pgwire::api::results::{FieldInfo, Response, Tag};
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::response::TransactionStatus;
use datafusion_postgres::pgwire::types::format::FormatOptions;

use sluice_engine::cursor_rows::CursorRows;
use sluice_engine::pg_cursors::OpenCursors;
use sluice_engine::sqlstate::{PgError, SqlState};

use super::responses::{api, batches, rows_response};
use super::sqlstate::{user_error, wire_error};

/// Opens the cursors of `DECLARE name CURSOR FOR query`, fetches from them
/// and closes them; other `DECLARE`s (and the errors of malformed ones) are
/// datafusion-postgres'.
pub struct DeclareCursorHook;

/// PostgreSQL's error for a cursor name nothing is open under.
fn no_cursor(name: &str) -> PgWireError {
    user_error(
        SqlState::INVALID_CURSOR_NAME,
        format!("cursor \"{name}\" does not exist"),
    )
}

/// The connection's open cursors, kept in its session.
fn open_cursors(context: &SessionContext) -> PgWireResult<Arc<OpenCursors>> {
    OpenCursors::of(context.state_ref().read().config())
        .ok_or_else(|| PgWireError::ApiError("this session keeps no cursors".into()))
}

/// The columns open cursor `name` answers, as a `RowDescription` in
/// `format` shows them; `None` when no such cursor is open.
pub fn described(
    context: &SessionContext,
    name: &str,
    format: &Format,
) -> Option<PgWireResult<Vec<FieldInfo>>> {
    let schema = open_cursors(context).ok()?.schema(name)?;
    Some(arrow_schema_to_pg_fields(&schema, format, None))
}

/// `CLOSE name` or `CLOSE ALL`.
fn close(cursor: &CloseCursor, context: &SessionContext) -> PgWireResult<Response> {
    let open = open_cursors(context)?;
    match cursor {
        CloseCursor::All => open.close_all(),
        CloseCursor::Specific { name } => {
            if !open.close(&name.value) {
                return Err(no_cursor(&name.value));
            }
        }
    }
    Ok(Response::Execution(Tag::new("CLOSE CURSOR")))
}

/// Runs `statement` when it is a cursor statement this hook answers, with
/// `FETCH`ed rows as text.
async fn run(
    statement: &Statement,
    context: &SessionContext,
    client: &mut dyn HookClient,
) -> Option<PgWireResult<Response>> {
    match statement {
        Statement::Close { cursor } => Some(close(cursor, context)),
        Statement::Fetch { .. } => {
            let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
            fetch(statement, context, &Format::UnifiedText, options).await
        }
        _ => {
            let cursors = declared_cursors(statement)?;
            let in_block = client.transaction_status() != TransactionStatus::Idle;
            Some(declare(cursors, context, in_block).await)
        }
    }
}

/// The cursors `statement` declares, when it is a well-formed `DECLARE …
/// CURSOR FOR query` of each.
fn declared_cursors(statement: &Statement) -> Option<&[Declare]> {
    let Statement::Declare { stmts } = statement else {
        return None;
    };
    let well_formed = stmts.iter().all(|declare| {
        declare.declare_type == Some(DeclareType::Cursor)
            && !declare.names.is_empty()
            && declare.for_query.is_some()
    });
    well_formed.then_some(stmts.as_slice())
}

/// Plans each of `cursors`' queries in `context`, starts it and opens a
/// cursor over its rows. Those declared `in_block` without `WITH HOLD` close
/// with the block; PostgreSQL refuses them outside a block, Sluice keeps
/// them until `CLOSE`.
async fn declare(
    cursors: &[Declare],
    context: &SessionContext,
    in_block: bool,
) -> PgWireResult<Response> {
    let open = open_cursors(context)?;
    for declare in cursors {
        let (Some(name), Some(query)) = (declare.names.first(), &declare.for_query) else {
            continue;
        };
        if open.is_open(&name.value) {
            return Err(already_open(name));
        }
        let state = context.state();
        let plan = state
            .statement_to_plan(DFStatement::Statement(Box::new(Statement::Query(
                query.clone(),
            ))))
            .await
            .map_err(api)?;
        let optimized = state.optimize(&plan).map_err(api)?;
        let rows = CursorRows::new(batches(&state, &optimized).await?);
        let statement = format!("DECLARE {} CURSOR FOR {query}", name.value);
        let holdable = declare.hold == Some(true) || !in_block;
        if !open.declare(&name.value, &statement, rows, holdable) {
            return Err(already_open(name));
        }
    }
    Ok(Response::Execution(Tag::new("DECLARE CURSOR")))
}

/// PostgreSQL's error for a `DECLARE` of a name already open.
fn already_open(name: &Ident) -> PgWireError {
    user_error(
        SqlState::DUPLICATE_CURSOR,
        format!("cursor \"{}\" already exists", name.value),
    )
}

/// How many rows `FETCH direction` takes (`None`: all that are left).
/// Cursors only move forward, as PostgreSQL's `NO SCROLL` ones.
fn fetch_count(direction: &FetchDirection) -> PgWireResult<Option<usize>> {
    let count = |limit: &Value| match limit {
        Value::Number(digits, _) => digits.parse::<i64>().map_err(|_| {
            user_error(
                SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
                format!("FETCH count {digits} is out of range"),
            )
        }),
        other => Err(user_error(
            SqlState::SYNTAX_ERROR,
            format!("FETCH count must be a number, not {other}"),
        )),
    };
    let forward = |n: i64| match usize::try_from(n) {
        Ok(0) => Err(user_error(
            SqlState::FEATURE_NOT_SUPPORTED,
            "FETCH 0 re-reads the current row, which Sluice's cursors do not keep",
        )),
        Ok(n) => Ok(Some(n)),
        Err(_) => Err(backward()),
    };
    match direction {
        FetchDirection::Next | FetchDirection::Forward { limit: None } => Ok(Some(1)),
        FetchDirection::Forward { limit: Some(limit) } | FetchDirection::Count { limit } => {
            forward(count(&limit.value)?)
        }
        FetchDirection::All | FetchDirection::ForwardAll => Ok(None),
        FetchDirection::Prior | FetchDirection::Backward { .. } | FetchDirection::BackwardAll => {
            Err(backward())
        }
        FetchDirection::First
        | FetchDirection::Last
        | FetchDirection::Absolute { .. }
        | FetchDirection::Relative { .. } => Err(user_error(
            SqlState::FEATURE_NOT_SUPPORTED,
            format!("FETCH {direction} is not supported: Sluice's cursors only move forward"),
        )),
    }
}

/// PostgreSQL's error for a backward move of a `NO SCROLL` cursor.
fn backward() -> PgWireError {
    wire_error(
        PgError::new(
            SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
            "cursor can only scan forward",
        )
        .with_hint("Sluice's cursors cannot be declared SCROLL."),
    )
}

/// The rows `statement` fetches, when it is a `FETCH`, encoded in `format`
/// with `options`; `FETCH n` takes the next `n` rows, each once.
pub async fn fetch(
    statement: &Statement,
    context: &SessionContext,
    format: &Format,
    options: Arc<FormatOptions>,
) -> Option<PgWireResult<Response>> {
    let Statement::Fetch {
        name,
        direction,
        into,
        ..
    } = statement
    else {
        return None;
    };
    let rows = async {
        if into.is_some() {
            return Err(user_error(
                SqlState::FEATURE_NOT_SUPPORTED,
                "FETCH … INTO is not supported",
            ));
        }
        let count = fetch_count(direction)?;
        let (rows, schema) = open_cursors(context)?
            .rows(&name.value)
            .ok_or_else(|| no_cursor(&name.value))?;
        let fields = arrow_schema_to_pg_fields(&schema, format, Some(options))?;
        let batches = CursorRows::fetch(rows, schema, count);
        let mut response = rows_response(fields, batches, ());
        if let Response::Query(rows) = &mut response {
            rows.set_command_tag("FETCH");
        }
        Ok(response)
    };
    Some(rows.await)
}

#[async_trait]
impl QueryHook for DeclareCursorHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        run(statement, context, client).await
    }

    async fn handle_extended_parse_query(
        &self,
        _statement: &Statement,
        _context: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        // datafusion-postgres' cursor hook gives DECLARE and CLOSE their
        // empty plans.
        None
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        run(statement, context, client).await
    }
}
