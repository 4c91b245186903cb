//! `SHOW <engine setting>`: answered from the session's DataFusion/Ballista
//! configuration.
//!
//! datafusion-postgres' SET/SHOW hook knows the Postgres session variables and
//! answers any other name with an empty value; dotted names (`datafusion.…`,
//! `ballista.…`) are engine settings, so they go to DataFusion, which returns
//! the connection's current value or an error for an unknown name.

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::arrow_pg::datatypes::df::encode_dataframe;
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::pgwire::api::portal::Format;
use datafusion_postgres::pgwire::api::results::Response;
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};

/// Answers `SHOW name` for dotted engine setting names.
#[derive(Debug, Default)]
pub struct ShowSettingHook;

fn is_engine_setting(statement: &Statement) -> bool {
    // The parser splits `datafusion.execution.batch_size` into three idents.
    matches!(statement, Statement::ShowVariable { variable }
        if variable.len() > 1 || variable.iter().any(|part| part.value.contains('.')))
}

async fn plan(context: &SessionContext, statement: &Statement) -> PgWireResult<LogicalPlan> {
    context
        .state()
        .statement_to_plan(DFStatement::Statement(Box::new(statement.clone())))
        .await
        .map_err(|e| PgWireError::ApiError(Box::new(e)))
}

async fn run(context: &SessionContext, plan: LogicalPlan) -> PgWireResult<Response> {
    let frame = context
        .execute_logical_plan(plan)
        .await
        .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    Ok(Response::Query(
        encode_dataframe(frame, &Format::UnifiedText, None).await?,
    ))
}

#[async_trait]
impl QueryHook for ShowSettingHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        context: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if !is_engine_setting(statement) {
            return None;
        }
        Some(match plan(context, statement).await {
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
        if !is_engine_setting(statement) {
            return None;
        }
        Some(plan(context, statement).await)
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        plan: &LogicalPlan,
        _params: &ParamValues,
        context: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if !is_engine_setting(statement) {
            return None;
        }
        Some(run(context, plan.clone()).await)
    }
}
