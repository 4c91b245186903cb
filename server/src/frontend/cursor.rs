//! `DECLARE … CURSOR` and `CLOSE`: the declared query planned and encoded as
//! every other query of the connection is (Sluice's planner and placement,
//! its row encoder, the session's output settings), its rows kept in a
//! portal that datafusion-postgres' `FETCH` reads; the connection's
//! [`OpenCursors`] (what `pg_catalog.pg_cursors` shows) follow both.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{CloseCursor, Declare, DeclareType, Statement};
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::pgwire::api::portal::{Format, Portal};
use datafusion_postgres::pgwire::api::results::{Response, Tag};
use datafusion_postgres::pgwire::api::stmt::StoredStatement;
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::types::format::FormatOptions;

use sluice_engine::pg_cursors::OpenCursors;

use super::portal::{answer, api};

/// Opens the cursors of `DECLARE name CURSOR FOR query` and closes them;
/// other `DECLARE`s (and the errors of malformed ones) are
/// datafusion-postgres'.
pub struct DeclareCursorHook;

/// The connection's open cursors, kept in its session.
fn open_cursors(context: &SessionContext) -> Option<Arc<OpenCursors>> {
    OpenCursors::of(context.state_ref().read().config())
}

/// `CLOSE name` or `CLOSE ALL`: the cursors' portals dropped.
fn close(
    cursor: &CloseCursor,
    context: &SessionContext,
    client: &mut dyn HookClient,
) -> PgWireResult<Response> {
    let store = client.portal_store();
    let open = open_cursors(context);
    match cursor {
        CloseCursor::All => {
            for name in open.map(|open| open.close_all()).unwrap_or_default() {
                store.rm_portal(&name);
            }
        }
        CloseCursor::Specific { name } => {
            if store.get_portal(&name.value).is_none() {
                return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                    "ERROR".to_string(),
                    "34000".to_string(),
                    format!("cursor \"{}\" does not exist", name.value),
                ))));
            }
            store.rm_portal(&name.value);
            if let Some(open) = open {
                open.closed(&name.value);
            }
        }
    }
    Ok(Response::Execution(Tag::new("CLOSE CURSOR")))
}

/// Runs `statement` when it is a cursor statement this hook answers.
async fn run(
    statement: &Statement,
    context: &SessionContext,
    client: &mut dyn HookClient,
) -> Option<PgWireResult<Response>> {
    if let Statement::Close { cursor } = statement {
        return Some(close(cursor, context, client));
    }
    let cursors = declared_cursors(statement)?;
    Some(declare(cursors, context, client).await)
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
        let text = query.to_string();
        let statement = StoredStatement::new(name.value.clone(), (text.clone(), None), vec![]);
        let portal = Portal::new_cursor(name.value.clone(), Arc::new(statement));
        portal.start(rows).await;
        client.portal_store().put_portal(Arc::new(portal));
        if let Some(open) = open_cursors(context) {
            open.declared(
                &name.value,
                &format!("DECLARE {} CURSOR FOR {text}", name.value),
            );
        }
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
