//! Writes to managed tables on the wire: [`sluice_engine::managed_write`]
//! writes and commits; this hook takes the statements it handles off the
//! usual path and answers with PostgreSQL's command tags. An `INSERT …
//! VALUES` joins the connection's pending inserts
//! ([`sluice_engine::pending_inserts`], committed as [`super::pending`]
//! says); any other write commits them first.

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::pgwire::api::results::{Response, Tag};
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use sluice_engine::managed_write::{may_write, plan, ManagedWrite, Written};
use sluice_engine::pending_inserts::is_insert_values;

use super::pending::pending_of;

/// Runs writes to managed tables.
pub struct ManagedTableHook;

fn api(error: datafusion::error::DataFusionError) -> PgWireError {
    PgWireError::ApiError(Box::new(error))
}

/// Answers `statement`, planned as `plan` (its parameters bound), when
/// it writes a managed table; any other statement takes the usual path once
/// the connection's pending inserts are committed.
async fn answer(
    context: &SessionContext,
    statement: &Statement,
    plan: &LogicalPlan,
) -> Option<PgWireResult<Response>> {
    let write = ManagedWrite::of(context, plan);
    if let Some(pending) = pending_of(context) {
        if let (Some(ManagedWrite::Change(insert)), true) = (&write, is_insert_values(statement)) {
            if let Some(added) = pending.insert(context, insert).await {
                return Some(added.map_err(api).map(inserted));
            }
        }
        if let Err(e) = pending.commit().await {
            return Some(Err(api(e)));
        }
    }
    Some(run(context, write?).await)
}

/// Adds the rows of `statement`, a prepared `INSERT … VALUES` into a managed
/// table planned as `plan` (with its placeholders), to the connection's
/// pending inserts, made straight from `params`; `None` when it takes the
/// usual path.
async fn insert_prepared(
    context: &SessionContext,
    statement: &Statement,
    plan: &LogicalPlan,
    params: &ParamValues,
) -> Option<datafusion::error::Result<u64>> {
    let LogicalPlan::Dml(insert) = plan else {
        return None;
    };
    if !is_insert_values(statement) {
        return None;
    }
    pending_of(context)?
        .insert_prepared(context, insert, params)
        .await
}

/// The reply to an INSERT of `rows`.
fn inserted(rows: u64) -> Response {
    Response::Execution(Tag::new("INSERT").with_oid(0).with_rows(rows as usize))
}

/// Runs `write` and answers with its command tag.
async fn run(context: &SessionContext, write: ManagedWrite) -> PgWireResult<Response> {
    let tag = match write.run(context).await.map_err(api)? {
        Written::Created => Tag::new("CREATE TABLE"),
        Written::CreatedAs { rows } => Tag::new("SELECT").with_rows(rows as usize),
        Written::Inserted { rows } => return Ok(inserted(rows)),
        Written::Truncated => Tag::new("TRUNCATE TABLE"),
    };
    Ok(Response::Execution(tag))
}

#[async_trait]
impl QueryHook for ManagedTableHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        context: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if !may_write(statement) {
            return None;
        }
        // A statement that does not plan here (`CREATE EXTERNAL TABLE`,
        // which only DataFusion's own parser plans) takes the usual path,
        // which reports any error.
        let plan = plan(context, statement).await.ok()?;
        answer(context, statement, &plan).await
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        context: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        if !may_write(statement) {
            return None;
        }
        let plan = plan(context, statement).await.ok()?;
        ManagedWrite::of(context, &plan)?;
        Some(Ok(plan))
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        plan: &LogicalPlan,
        params: &ParamValues,
        context: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if !may_write(statement) {
            return None;
        }
        if let Some(added) = insert_prepared(context, statement, plan, params).await {
            return Some(added.map_err(api).map(inserted));
        }
        let plan = match plan.clone().with_param_values(params.clone()) {
            Ok(plan) => plan,
            Err(e) => return Some(Err(api(e))),
        };
        answer(context, statement, &plan).await
    }
}
