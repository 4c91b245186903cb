//! Runs a query sent alone over the simple protocol (psql, psycopg2,
//! pgbench's default), parsed once.
//!
//! datafusion-postgres parses a simple query, prints each statement back
//! to text and has DataFusion parse that text again before planning it; its
//! `DataFrame` then copies the session state once more to plan it
//! physically. A text holding one query is parsed here once, planned from
//! its syntax tree, optimized and planned physically in one copy of the
//! state. Texts holding several statements, or anything but a query, keep
//! datafusion-postgres' path.

use std::sync::Arc;

use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::pgwire::api::portal::Format;
use datafusion_postgres::pgwire::api::results::Response;
use datafusion_postgres::pgwire::error::PgWireResult;
use datafusion_postgres::pgwire::types::format::FormatOptions;

use super::portal::{answer, api, only_reads};

/// Runs `text` when it holds exactly one query: `None` leaves it (and
/// texts that do not parse) to datafusion-postgres. The connection's
/// `hooks` see the statement first, as they do on datafusion-postgres'
/// path.
pub async fn run_query<C>(
    context: &SessionContext,
    hooks: &[Arc<dyn QueryHook>],
    parser: &PostgresCompatibilityParser,
    client: &mut C,
    text: &str,
) -> Option<PgWireResult<Response>>
where
    C: HookClient,
{
    let mut statements = parser.parse(text).ok()?;
    let statement = match statements.pop() {
        Some(statement) if statements.is_empty() && only_reads(&statement) => statement,
        _ => return None,
    };
    for hook in hooks {
        if let Some(result) = hook.handle_simple_query(&statement, context, client).await {
            return Some(result);
        }
    }
    let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
    let state = context.state();
    let planned = async {
        let plan = state
            .statement_to_plan(DFStatement::Statement(Box::new(statement)))
            .await
            .map_err(api)?;
        let optimized = state.optimize(&plan).map_err(api)?;
        answer(&state, &optimized, &Format::UnifiedText, options).await
    };
    Some(planned.await)
}
