//! `DECLARE … CURSOR`: the declared query planned and encoded as every other
//! query of the connection is (Sluice's planner and placement, its row
//! encoder, the session's output settings), its rows kept in a portal that
//! datafusion-postgres' `FETCH` and `CLOSE` read and drop.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{Declare, DeclareType, Statement};
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::pgwire::api::portal::{Format, Portal};
use datafusion_postgres::pgwire::api::results::{Response, Tag};
use datafusion_postgres::pgwire::api::stmt::StoredStatement;
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::error::PgWireResult;
use datafusion_postgres::pgwire::types::format::FormatOptions;

use super::portal::{answer, api};

/// Opens the cursors of `DECLARE name CURSOR FOR query`; other `DECLARE`s
/// (and the errors of malformed ones) are datafusion-postgres'.
pub struct DeclareCursorHook;

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

/// Plans each of `cursors`' queries in `context` and keeps its rows, encoded
/// as text with the client's output settings, in a portal named after it.
async fn declare(
    cursors: &[Declare],
    context: &SessionContext,
    client: &mut dyn HookClient,
) -> PgWireResult<Response> {
    let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
    for declare in cursors {
        let (Some(name), Some(query)) = (declare.names.first(), &declare.for_query) else {
            continue;
        };
        let state = context.state();
        let plan = state
            .statement_to_plan(DFStatement::Statement(Box::new(Statement::Query(
                query.clone(),
            ))))
            .await
            .map_err(api)?;
        let optimized = state.optimize(&plan).map_err(api)?;
        let Response::Query(rows) = answer(
            &state,
            &optimized,
            &Format::UnifiedText,
            Arc::clone(&options),
        )
        .await?
        else {
            continue;
        };
        let statement = StoredStatement::new(name.value.clone(), (query.to_string(), None), vec![]);
        let portal = Portal::new_cursor(name.value.clone(), Arc::new(statement));
        portal.start(rows).await;
        client.portal_store().put_portal(Arc::new(portal));
    }
    Ok(Response::Execution(Tag::new("DECLARE CURSOR")))
}

#[async_trait]
impl QueryHook for DeclareCursorHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let cursors = declared_cursors(statement)?;
        Some(declare(cursors, context, client).await)
    }

    async fn handle_extended_parse_query(
        &self,
        _statement: &Statement,
        _context: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        // datafusion-postgres' cursor hook gives DECLARE its empty plan.
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
        let cursors = declared_cursors(statement)?;
        Some(declare(cursors, context, client).await)
    }
}
