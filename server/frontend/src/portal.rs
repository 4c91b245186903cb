//! Executes a bound query portal of the extended protocol: one parameter
//! decode, one logical optimization, one copy of the session state.
//!
//! datafusion-postgres' `do_query` decodes a portal's parameters twice,
//! optimizes its plan twice (once itself, once more inside
//! `DataFrame::create_physical_plan`) and copies the session state (with its
//! function registries) for each step: a fifth of the CPU of a small
//! prepared query. Here a prepared statement is optimized once, with its
//! placeholders, the first time it runs ([`PreparedPlans`]). A query that
//! runs in the frontend also keeps its physical plan, its parameters read
//! from slots ([`KeptPhysical`]): each execution checks that the plan still
//! reads the tables and files planning afresh would, and runs it. Otherwise
//! each execution substitutes its parameters into the optimized plan and
//! goes straight to physical planning, reading the tables as they are then
//! ([`with_current_tables`]). Statements other than queries keep
//! datafusion-postgres' path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use datafusion::arrow::datatypes::DataType;
use datafusion::common::config::OptimizerOptions;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::ParamValues;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{SetExpr, Statement};
use datafusion_postgres::arrow_pg::datatypes::arrow_schema_to_pg_fields;
use datafusion_postgres::arrow_pg::datatypes::df::deserialize_parameters_with_server_types;
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::pgwire::api::portal::Portal;
use datafusion_postgres::pgwire::api::results::Response;
use datafusion_postgres::pgwire::api::stmt::StoredStatement;
use datafusion_postgres::pgwire::api::Type;
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::types::format::FormatOptions;

use sluice_engine::current_tables::{with_current_tables, UnknownNames};
use sluice_engine::kept_plan::{KeptPhysical, TakenPlan};
use sluice_engine::pending_inserts::is_insert_values;
use sluice_engine::session_view::SessionView;

use super::datafusion_ddl::PreparedStatement;
use super::responses::{answer, api, respond};

/// The types of a plan's parameters in order (`$1`, `$2`, …), as
/// datafusion-postgres infers them: DataFusion's, or for a parameter
/// DataFusion leaves untyped, the type it is cast to (`$1::int`).
fn parameter_types(plan: &LogicalPlan) -> PgWireResult<Vec<Option<DataType>>> {
    let mut types = plan.get_parameter_types().map_err(api)?;
    if types.values().any(Option::is_none) {
        plan.apply_with_subqueries(|node| {
            node.apply_expressions(|expr| {
                expr.apply(|e| {
                    if let Expr::Cast(cast) = e {
                        if let Expr::Placeholder(placeholder) = cast.expr.as_ref() {
                            if let Some(untyped @ None) = types.get_mut(&placeholder.id) {
                                *untyped = Some(cast.field.data_type().clone());
                            }
                        }
                    }
                    Ok(TreeNodeRecursion::Continue)
                })
            })
        })
        .map_err(api)?;
    }
    let mut entries: Vec<_> = types.into_iter().collect();
    entries.sort_by_key(|(id, _)| {
        id.trim_start_matches('$')
            .parse::<u32>()
            .unwrap_or(u32::MAX)
    });
    Ok(entries
        .into_iter()
        .map(|(_, data_type)| data_type)
        .collect())
}

/// Whether `statement` is a query that only reads (`SELECT … INTO` creates
/// a table).
pub fn only_reads(statement: &Statement) -> bool {
    match statement {
        Statement::Query(query) => {
            !matches!(query.body.as_ref(), SetExpr::Select(select) if select.into.is_some())
        }
        _ => false,
    }
}

/// Runs `portal` when it holds a query, or an `INSERT … VALUES` one of the
/// connection's `hooks` answers: `None` leaves any other statement to
/// datafusion-postgres. The hooks see the statement first, as they do on
/// datafusion-postgres' path, with the parameters decoded by the types kept
/// for the statement; `wire_types` gives the parameter types its
/// `ParameterDescription` announced.
pub async fn run_query<C>(
    context: &SessionContext,
    hooks: &[Arc<dyn QueryHook>],
    plans: &PreparedPlans,
    wire_types: impl FnOnce(&PreparedStatement) -> PgWireResult<Vec<Type>>,
    client: &mut C,
    portal: &Portal<PreparedStatement>,
) -> Option<PgWireResult<Response>>
where
    C: HookClient,
{
    let (_, Some((statement, plan))) = &portal.statement.statement else {
        return None;
    };
    let reads = only_reads(statement);
    if !reads && !is_insert_values(statement) {
        return None;
    }
    let prepared = match plans.get(&portal.statement, wire_types) {
        Ok(prepared) => prepared,
        Err(e) => return Some(Err(e)),
    };
    let params = match prepared.parameters(portal) {
        Ok(params) => params,
        Err(e) => return Some(Err(e)),
    };
    for hook in hooks {
        if let Some(result) = hook
            .handle_extended_query(statement, plan, &params, context, client)
            .await
        {
            return Some(result);
        }
    }
    if !reads {
        return None;
    }
    let format = FormatOptions::from_client_metadata(client.metadata());
    Some(run(context, &prepared, plan, portal, params, Arc::new(format)).await)
}

/// Plans `portal`'s query `plan` with `params` and answers with its rows.
async fn run(
    context: &SessionContext,
    prepared: &Prepared,
    plan: &LogicalPlan,
    portal: &Portal<PreparedStatement>,
    params: ParamValues,
    format: Arc<FormatOptions>,
) -> PgWireResult<Response> {
    let session = SessionView::of(context);
    if let Some(taken) = prepared.take_kept(&session, plan, &params).await? {
        let fields =
            arrow_schema_to_pg_fields(taken.schema(), &portal.result_column_format, Some(format))?;
        return respond(taken.plan(), session.task_context(), fields, taken);
    }
    let state = session.state();
    let optimized = prepared.optimized(&state, plan, &params)?;
    let optimized = with_current_tables(optimized, &state, UnknownNames::KeepScan)
        .await
        .map_err(api)?;
    answer(&state, &optimized, &portal.result_column_format, format).await
}

/// Whether `plan`'s optimized form may serve every execution: not when it
/// shows its optimization (EXPLAIN), nor when it calls a function that is
/// not immutable, which the optimizer may fold into a constant of the moment
/// it runs (`now()`, `current_date`).
pub fn keeps_optimized(plan: &LogicalPlan) -> bool {
    if matches!(plan, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_)) {
        return false;
    }
    let mut immutable = true;
    let walked = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::ScalarFunction(call) = e {
                    if call.func.signature().volatility != Volatility::Immutable {
                        immutable = false;
                        return Ok(TreeNodeRecursion::Stop);
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    walked.is_ok() && immutable
}

/// What one prepared query keeps between its executions.
pub struct Prepared {
    /// The statement it was made from; held weakly, so the address it is
    /// keyed by stays unique while the entry lives.
    statement: Weak<StoredStatement<PreparedStatement>>,
    /// Its parameters' types, in order.
    parameter_types: Vec<Option<DataType>>,
    /// The wire types its `ParameterDescription` announced, in order.
    wire_types: Vec<Type>,
    /// Its plan after the logical optimizer, with its placeholders, and the
    /// optimizer settings it was made under (a `SET` of one makes it again).
    /// `None` as the plan when it does not optimize with placeholders (an
    /// untyped one, say) or may not be kept ([`keeps_optimized`]): then
    /// each execution optimizes it with its parameters in place.
    optimized: Mutex<Option<(OptimizerOptions, Option<LogicalPlan>)>>,
    /// Its physical plan, when it runs in the frontend.
    physical: KeptPhysical,
}

impl Prepared {
    /// The parameter values bound to `portal`.
    fn parameters(&self, portal: &Portal<PreparedStatement>) -> PgWireResult<ParamValues> {
        let data_types: Vec<Option<&DataType>> =
            self.parameter_types.iter().map(Option::as_ref).collect();
        let wire_types: Vec<Option<&Type>> = self.wire_types.iter().map(Some).collect();
        deserialize_parameters_with_server_types(portal, &data_types, &wire_types)
    }

    /// `plan` (this statement's) optimized with its placeholders, kept for
    /// the optimizer settings of `state`; `None` when it may not be kept
    /// (see [`Self::optimized`]).
    fn kept_optimized(&self, state: &SessionState, plan: &LogicalPlan) -> Option<LogicalPlan> {
        let options = &state.config_options().optimizer;
        let mut optimized = self.optimized.lock().unwrap_or_else(|e| e.into_inner());
        match &*optimized {
            Some((made_under, kept)) if made_under == options => kept.clone(),
            _ => {
                let kept = keeps_optimized(plan)
                    .then(|| state.optimize(plan).ok())
                    .flatten();
                optimized.insert((options.clone(), kept)).1.clone()
            }
        }
    }

    /// `plan` (this statement's), optimized, with `params` in place.
    fn optimized(
        &self,
        state: &SessionState,
        plan: &LogicalPlan,
        params: &ParamValues,
    ) -> PgWireResult<LogicalPlan> {
        match self.kept_optimized(state, plan) {
            Some(kept) => kept.replace_params_with_values(params).map_err(api),
            None => {
                let plan = plan
                    .clone()
                    .replace_params_with_values(params)
                    .map_err(api)?;
                state.optimize(&plan).map_err(api)
            }
        }
    }

    /// This statement's kept physical plan (`plan` is its logical plan),
    /// ready to run with `params`; `None` when it is planned as usual this
    /// time.
    async fn take_kept(
        &self,
        session: &SessionView<'_>,
        plan: &LogicalPlan,
        params: &ParamValues,
    ) -> PgWireResult<Option<TakenPlan>> {
        let optimized = |state: SessionState| async move {
            let optimized = match self.kept_optimized(&state, plan) {
                Some(optimized) => {
                    Some(with_current_tables(optimized, &state, UnknownNames::KeepScan).await?)
                }
                None => None,
            };
            Ok((state, optimized))
        };
        self.physical
            .take(session, params, optimized)
            .await
            .map_err(api)
    }
}

/// What one connection keeps of its prepared queries.
///
/// Each execution reads the tables through the catalog's providers of the
/// moment and lists their files again, so new data is always seen (a kept
/// physical plan that no longer matches them is made again).
#[derive(Default)]
pub struct PreparedPlans {
    plans: Mutex<HashMap<usize, Arc<Prepared>>>,
}

impl PreparedPlans {
    /// What is kept of `statement`, made now if it is new; `wire_types`
    /// gives the parameter types its `ParameterDescription` announced.
    fn get(
        &self,
        statement: &Arc<StoredStatement<PreparedStatement>>,
        wire_types: impl FnOnce(&PreparedStatement) -> PgWireResult<Vec<Type>>,
    ) -> PgWireResult<Arc<Prepared>> {
        let key = Arc::as_ptr(statement) as usize;
        if let Some(prepared) = self.lock().get(&key) {
            return Ok(Arc::clone(prepared));
        }
        let (_, Some((_, plan))) = &statement.statement else {
            return Err(PgWireError::ApiError("the statement has no plan".into()));
        };
        let prepared = Arc::new(Prepared {
            statement: Arc::downgrade(statement),
            parameter_types: parameter_types(plan)?,
            wire_types: wire_types(&statement.statement)?,
            optimized: Mutex::default(),
            physical: KeptPhysical::default(),
        });
        let mut plans = self.lock();
        // Closed statements are forgotten as new ones come.
        plans.retain(|_, kept| kept.statement.strong_count() > 0);
        plans.insert(key, Arc::clone(&prepared));
        Ok(prepared)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<usize, Arc<Prepared>>> {
        self.plans.lock().unwrap_or_else(|e| e.into_inner())
    }
}
