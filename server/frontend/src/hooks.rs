//! Statement hooks: statements Sluice plans itself instead of leaving them to
//! datafusion-postgres (PostgreSQL-syntax `COPY … TO 'file'`, `SHOW` of engine
//! settings). Each hook is one function recognising a statement and saying how
//! to plan it; planning and running are shared.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::{DFSchema, ParamValues};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::arrow_pg::datatypes::arrow_schema_to_pg_fields;
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::pgwire::api::portal::Format;
use datafusion_postgres::pgwire::api::results::{QueryResponse, Response, Tag};
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use sluice_engine::parallel_write::WriteAnswer;

use super::data_rows::row_stream;

/// How a recognised statement is planned.
pub enum PlanSource {
    /// Plan this DataFusion-dialect SQL text instead of the statement.
    Sql(String),
    /// Plan the statement itself with DataFusion's SQL planner.
    Statement,
    /// The statement is recognised but not supported as written.
    Unsupported(String),
}

/// A hook for the statements `recognise` accepts.
pub struct PlanningHook {
    recognise: fn(&Statement) -> Option<PlanSource>,
}

impl PlanningHook {
    /// A hook handling the statements for which `recognise` returns a source.
    pub const fn new(recognise: fn(&Statement) -> Option<PlanSource>) -> Self {
        Self { recognise }
    }
}

fn api(error: DataFusionError) -> PgWireError {
    PgWireError::ApiError(Box::new(error))
}

async fn plan(
    context: &SessionContext,
    statement: &Statement,
    source: PlanSource,
) -> PgWireResult<LogicalPlan> {
    let state = context.state();
    match source {
        PlanSource::Sql(sql) => state.create_logical_plan(&sql).await.map_err(api),
        PlanSource::Statement => state
            .statement_to_plan(DFStatement::Statement(Box::new(statement.clone())))
            .await
            .map_err(api),
        PlanSource::Unsupported(message) => Err(api(DataFusionError::NotImplemented(message))),
    }
}

/// Runs `plan`: a COPY answers with its command tag, anything else with rows.
async fn run(context: &SessionContext, plan: LogicalPlan) -> PgWireResult<Response> {
    let is_copy = matches!(plan, LogicalPlan::Copy(_));
    let frame = context.execute_logical_plan(plan).await.map_err(api)?;
    if is_copy {
        let batches = frame.collect().await.map_err(api)?;
        let rows = WriteAnswer::read(&batches).rows as usize;
        return Ok(Response::Execution(Tag::new("COPY").with_rows(rows)));
    }
    let fields = arrow_schema_to_pg_fields(frame.schema().as_arrow(), &Format::UnifiedText, None)?;
    let fields = Arc::new(fields);
    let batches = frame.execute_stream().await.map_err(api)?;
    let rows = row_stream(Arc::clone(&fields), batches, ());
    Ok(Response::Query(QueryResponse::new(fields, rows)))
}

#[async_trait]
impl QueryHook for PlanningHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        context: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let source = (self.recognise)(statement)?;
        Some(match plan(context, statement, source).await {
            Ok(plan) => run(context, plan).await,
            Err(e) => Err(e),
        })
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        context: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        let source = (self.recognise)(statement)?;
        Some(plan(context, statement, source).await)
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        plan: &LogicalPlan,
        _params: &ParamValues,
        context: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        (self.recognise)(statement)?;
        Some(run(context, plan.clone()).await)
    }
}

/// A statement with nothing to plan, which does its work when it executes
/// (`ALTER TABLE … RENAME TO`, `CALL sluice.run_job(…)`).
#[async_trait]
pub trait Action: Send + Sync {
    /// Whether `statement` is this action (malformed ones included: `run`
    /// reports them).
    fn matches(&self, statement: &Statement) -> bool;

    /// Does the work of `statement`, which `matches` accepted.
    async fn run(&self, statement: &Statement, context: &SessionContext) -> PgWireResult<Response>;
}

/// Runs an [`Action`] over the simple and the extended protocol (where Parse
/// plans nothing and Execute does the work).
pub struct ActionHook<A>(pub A);

#[async_trait]
impl<A: Action> QueryHook for ActionHook<A> {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        context: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if !self.0.matches(statement) {
            return None;
        }
        Some(self.0.run(statement, context).await)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _context: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        if !self.0.matches(statement) {
            return None;
        }
        Some(Ok(no_rows_plan()))
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        context: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if !self.0.matches(statement) {
            return None;
        }
        Some(self.0.run(statement, context).await)
    }
}

/// The plan a statement that returns no rows is described with at `Parse`.
pub fn no_rows_plan() -> LogicalPlan {
    LogicalPlan::EmptyRelation(EmptyRelation {
        produce_one_row: false,
        schema: Arc::new(DFSchema::empty()),
    })
}
