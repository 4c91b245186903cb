//! Runs a query sent alone over the simple protocol (psql, psycopg2,
//! pgbench's default), parsed once, and planned once per text
//! ([`SimpleQueries`]).
//!
//! datafusion-postgres parses a simple query, prints each statement back
//! to text and has DataFusion parse that text again before planning it; its
//! `DataFrame` then copies the session state once more to plan it
//! physically. A text holding one query is parsed here once, planned from
//! its syntax tree, optimized and planned physically in one copy of the
//! state. Texts holding several statements, or anything but a query, keep
//! datafusion-postgres' path.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use datafusion::common::ParamValues;
use datafusion::execution::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::arrow_pg::datatypes::arrow_schema_to_pg_fields;
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::pgwire::api::portal::Format;
use datafusion_postgres::pgwire::api::results::Response;
use datafusion_postgres::pgwire::error::PgWireResult;
use datafusion_postgres::pgwire::types::format::FormatOptions;
use sluice_engine::current_tables::{with_current_tables, UnknownNames};
use sluice_engine::kept_plan::KeptPhysical;
use sluice_engine::session_view::SessionView;

use super::parsed::MadeUnder;
use super::portal::{keeps_optimized, only_reads};
use super::responses::{answer, api, respond};

/// Most query texts one connection keeps the plans of.
pub const KEPT_PER_CONNECTION: usize = 64;

/// A query text's statement, its optimized plan and its physical plan.
struct Kept {
    text: String,
    made_under: MadeUnder,
    statement: Statement,
    optimized: LogicalPlan,
    physical: Arc<KeptPhysical>,
}

/// One connection's simple-protocol queries: the parser, and the plans of
/// its last [`KEPT_PER_CONNECTION`] query texts. Dashboards and tools that
/// put their values into the text (psycopg2, pgbench's default) send the
/// same texts again and again; each one is parsed, planned and optimized
/// once, and from its second run a query that runs in the frontend keeps its
/// physical plan too ([`KeptPhysical`]). Each run reads the tables through
/// the catalog's providers of the moment and lists their files again
/// ([`with_current_tables`]), and a kept physical plan that no longer reads
/// them is made again; a table whose columns changed has its query planned
/// afresh. Plans calling functions that are not immutable (`now()`) are not
/// kept.
pub struct SimpleQueries {
    parser: PostgresCompatibilityParser,
    kept: Mutex<VecDeque<Kept>>,
}

impl Default for SimpleQueries {
    fn default() -> Self {
        Self {
            parser: PostgresCompatibilityParser::new(),
            kept: Mutex::default(),
        }
    }
}

impl SimpleQueries {
    /// Runs `text` when it holds exactly one query: `None` leaves it (and
    /// texts that do not parse) to datafusion-postgres. The connection's
    /// `hooks` see the statement first, as they do on datafusion-postgres'
    /// path.
    pub async fn run_query<C>(
        &self,
        context: &SessionContext,
        hooks: &[Arc<dyn QueryHook>],
        client: &mut C,
        text: &str,
    ) -> Option<PgWireResult<Response>>
    where
        C: HookClient,
    {
        let session = SessionView::of(context);
        let made_under = MadeUnder::of(session.options());
        let kept = self.kept(text, &made_under);
        let statement = match &kept {
            Some((statement, _, _)) => statement.clone(),
            None => {
                let mut statements = self.parser.parse(text).ok()?;
                match statements.pop() {
                    Some(statement) if statements.is_empty() && only_reads(&statement) => statement,
                    _ => return None,
                }
            }
        };
        for hook in hooks {
            if let Some(result) = hook.handle_simple_query(&statement, context, client).await {
                return Some(result);
            }
        }
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let planned = async {
            if let Some((_, optimized, physical)) = &kept {
                let current = |state: SessionState| async move {
                    let current =
                        with_current_tables(optimized.clone(), &state, UnknownNames::Fail).await?;
                    Ok((state, Some(current)))
                };
                let taken = physical
                    .take(&session, &ParamValues::List(Vec::new()), current)
                    .await;
                if let Ok(Some(taken)) = taken {
                    let fields = arrow_schema_to_pg_fields(
                        taken.schema(),
                        &Format::UnifiedText,
                        Some(options),
                    )?;
                    return respond(taken.plan(), session.task_context(), fields, taken);
                }
            }
            let state = session.state();
            let current = match kept {
                Some((_, optimized, _)) => {
                    with_current_tables(optimized, &state, UnknownNames::Fail)
                        .await
                        .ok()
                }
                None => None,
            };
            let optimized = match current {
                Some(optimized) => optimized,
                None => {
                    let plan = state
                        .statement_to_plan(DFStatement::Statement(Box::new(statement.clone())))
                        .await
                        .map_err(api)?;
                    let optimized = state.optimize(&plan).map_err(api)?;
                    if keeps_optimized(&plan) {
                        self.keep(text, made_under, statement, &optimized);
                    }
                    optimized
                }
            };
            answer(&state, &optimized, &Format::UnifiedText, options).await
        };
        Some(planned.await)
    }

    /// The statement, optimized plan and physical plan kept for `text`
    /// made under `made_under`.
    fn kept(
        &self,
        text: &str,
        made_under: &MadeUnder,
    ) -> Option<(Statement, LogicalPlan, Arc<KeptPhysical>)> {
        let kept = self.lock();
        let found = kept
            .iter()
            .rev()
            .find(|kept| kept.text == text && kept.made_under == *made_under)?;
        Some((
            found.statement.clone(),
            found.optimized.clone(),
            Arc::clone(&found.physical),
        ))
    }

    fn keep(
        &self,
        text: &str,
        made_under: MadeUnder,
        statement: Statement,
        optimized: &LogicalPlan,
    ) {
        let mut kept = self.lock();
        kept.retain(|kept| kept.text != text);
        if kept.len() >= KEPT_PER_CONNECTION {
            kept.pop_front();
        }
        kept.push_back(Kept {
            text: text.to_string(),
            made_under,
            statement,
            optimized: optimized.clone(),
            physical: Arc::default(),
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Kept>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }
}
