//! Transaction blocks as PostgreSQL's clients see them.
//!
//! Sluice has no transactions (README, "Managed tables and writes"), but
//! clients steer by the state of their block, so it follows PostgreSQL's:
//!
//! - after an error in a block, every statement but `COMMIT`, `ROLLBACK` and
//!   `ROLLBACK TO SAVEPOINT` is refused with `25P02` (a `SET`, `SHOW` or
//!   `DECLARE` used to run);
//! - `ROLLBACK TO SAVEPOINT` takes a failed block back to in progress, which
//!   psql's `ON_ERROR_ROLLBACK` and psycopg's nested `transaction()` blocks
//!   rely on (the status pgwire would report, see
//!   [`restore_failed_block`]);
//! - `COMMIT` and `ROLLBACK` close the cursors declared in the block without
//!   `WITH HOLD`.
//!
//! The replies to `BEGIN`, `COMMIT` and `ROLLBACK` are datafusion-postgres'
//! (`TransactionStatementHook`), and what becomes of the block's INSERTs is
//! [`crate::pending`]'s.

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::pgwire::api::results::Response;
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::response::TransactionStatus;
use sluice_engine::pg_cursors::OpenCursors;
use sluice_engine::sqlstate::SqlState;

use super::sqlstate::user_error;

/// Refuses statements in a failed block and closes a block's cursors when
/// it ends; the first of a connection's hooks.
pub struct TransactionHook;

/// Whether `statement` may run in a failed block: it ends the block or
/// rolls back to a savepoint.
fn allowed_in_failed_block(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::Commit { .. } | Statement::Rollback { .. }
    )
}

/// Whether `statement` ends the transaction block (`ROLLBACK TO SAVEPOINT`
/// does not).
fn ends_block(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::Commit { .. }
            | Statement::Rollback {
                savepoint: None,
                ..
            }
    )
}

/// PostgreSQL's error for a statement in a failed block.
fn in_failed_block() -> PgWireError {
    user_error(
        SqlState::IN_FAILED_SQL_TRANSACTION,
        "current transaction is aborted, commands ignored until end of transaction block",
    )
}

/// Before `statement` runs in a block in `status`: its refusal, if any;
/// the block's cursors closed when it ends the block.
fn before(
    statement: &Statement,
    context: &SessionContext,
    status: TransactionStatus,
) -> Option<PgWireError> {
    if status == TransactionStatus::Error && !allowed_in_failed_block(statement) {
        return Some(in_failed_block());
    }
    if ends_block(statement) {
        if let Some(cursors) = OpenCursors::of(context.state_ref().read().config()) {
            cursors.close_unheld();
        }
    }
    None
}

/// Before the text `query` runs in the simple protocol: a failed block
/// that `query`, a lone `ROLLBACK TO SAVEPOINT`, takes back to in progress
/// is marked so already, as pgwire derives the status it reports after a
/// query from the one before it and cannot leave the failed state but for
/// idle. (A `Sync` reports the status as the statements left it.)
pub fn restore_failed_block(client: &mut impl ClientInfo, query: &str) {
    if client.transaction_status() != TransactionStatus::Error {
        return;
    }
    if let Ok(statements) = Parser::parse_sql(&PostgreSqlDialect {}, query) {
        if let [statement] = statements.as_slice() {
            restore_failed_block_for(client, statement);
        }
    }
}

/// Marks a failed block in progress again when `statement` is a
/// `ROLLBACK TO SAVEPOINT` (before pgwire runs it: see
/// [`restore_failed_block`]).
pub fn restore_failed_block_for(client: &mut impl ClientInfo, statement: &Statement) {
    let rolls_back_to_savepoint = matches!(
        statement,
        Statement::Rollback {
            savepoint: Some(_),
            ..
        }
    );
    if rolls_back_to_savepoint && client.transaction_status() == TransactionStatus::Error {
        client.set_transaction_status(TransactionStatus::Transaction);
    }
}

#[async_trait]
impl QueryHook for TransactionHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        before(statement, context, client.transaction_status()).map(Err)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _context: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        let failed = client.transaction_status() == TransactionStatus::Error;
        (failed && !allowed_in_failed_block(statement)).then(|| Err(in_failed_block()))
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        before(statement, context, client.transaction_status()).map(Err)
    }
}
