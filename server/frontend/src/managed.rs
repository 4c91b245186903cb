//! Writes to managed tables on the wire: [`sluice_engine::managed_write`]
//! writes and commits; this hook takes the statements it handles off the
//! usual path and answers with PostgreSQL's command tags.

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

/// Runs writes to managed tables.
pub struct ManagedTableHook;

fn api(error: datafusion::error::DataFusionError) -> PgWireError {
    PgWireError::ApiError(Box::new(error))
}

/// Runs `write` and answers with its command tag.
async fn run(context: &SessionContext, write: ManagedWrite) -> PgWireResult<Response> {
    let tag = match write.run(context).await.map_err(api)? {
        Written::Created => Tag::new("CREATE TABLE"),
        Written::CreatedAs { rows } => Tag::new("SELECT").with_rows(rows as usize),
        Written::Inserted { rows } => Tag::new("INSERT").with_oid(0).with_rows(rows as usize),
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
        let write = ManagedWrite::of(context, &plan)?;
        Some(run(context, write).await)
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
        let plan = match plan.clone().with_param_values(params.clone()) {
            Ok(plan) => plan,
            Err(e) => return Some(Err(api(e))),
        };
        let write = ManagedWrite::of(context, &plan)?;
        Some(run(context, write).await)
    }
}
