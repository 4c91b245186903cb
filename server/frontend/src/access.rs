//! Refuses the statements a connection's role does not allow, before any
//! other hook or the planner sees them (SQLSTATE 42501).

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::pgwire::api::results::Response;
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::error::PgWireResult;

use crate::auth::access::{check, needed_role};

/// The first hook: answers with `42501` when the role falls short, and
/// passes everything else on.
pub struct AccessHook;

#[async_trait]
impl QueryHook for AccessHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let (needed, what) = needed_role(statement);
        check(client, needed, what).err().map(Err)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _context: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        let (needed, what) = needed_role(statement);
        check(client, needed, what).err().map(Err)
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let (needed, what) = needed_role(statement);
        check(client, needed, what).err().map(Err)
    }
}
