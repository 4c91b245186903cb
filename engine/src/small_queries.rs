//! Small queries run in the frontend, without a cluster job.
//!
//! Dashboards send many small queries at once. As a Ballista job each one is
//! planned twice, submitted, queued behind the task slots, and its result
//! written by an executor and fetched back over Flight: 64 clients of a
//! query over the 25 rows of `nation` got ~250 answers per second. A query
//! whose files total at most `sluice.frontend_max_bytes` (after partition and
//! file pruning) is instead planned by the frontend as single-node DataFusion
//! would and run on the frontend's compute threads
//! ([`crate::frontend_compute`]). It keeps the cluster path's guarantees:
//! the location sandbox and roles were checked before planning, the
//! frontend's memory pool bounds it (over it the query fails with 53200),
//! and `statement_timeout` and cancel requests interrupt it as they do any
//! plan the frontend runs. Writes (`INSERT`, `COPY`, `CREATE TABLE AS`)
//! always go to the cluster's writers.
//!
//! Bytes are counted on the physical plan (after partition and file pruning),
//! so a query over more is planned here once for nothing before it becomes a
//! job: milliseconds, against the seconds such a job runs.
//!
//! EXPLAIN shows the choice at the plan's root (`FrontendComputeExec:
//! input_bytes=…`), and EXPLAIN ANALYZE measures the plan where it ran.
//! Scans of a few small files read them through the frontend's cache of
//! decoded files ([`crate::decoded_files`]); EXPLAIN ANALYZE reads them
//! from the files.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{CatalogProviderList, Session};
use datafusion::common::config::TableOptions;
use datafusion::common::format::ExplainFormat;
use datafusion::common::tree_node::TreeNode;
use datafusion::common::DFSchema;
use datafusion::error::Result;
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::execution_props::ExecutionProps;
use datafusion::logical_expr::registry::ExtensionTypeRegistryRef;
use datafusion::logical_expr::{AggregateUDF, Expr, HigherOrderUDF, ScalarUDF, WindowUDF};
use datafusion::logical_expr::{LogicalPlan, PlanType, StringifiedPlan, ToStringifiedPlan};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::explain::ExplainExec;
use datafusion::physical_plan::operator_statistics::StatisticsRegistry;
use datafusion::physical_plan::{displayable, ExecutionPlan};
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion::prelude::SessionConfig;

use crate::decoded_files::cache_small_scans;
use crate::frontend_compute::on_compute_threads_reading;
use crate::options::SluiceOptions;
use crate::single_stage::scanned_bytes;

/// The physical plan of `plan` running in the frontend, when it is a query
/// (or the EXPLAIN of one) reading at most the session's
/// `sluice.frontend_max_bytes` of files; `None` when it belongs on the
/// cluster.
pub(crate) async fn small_query(
    planner: &DefaultPhysicalPlanner,
    plan: &LogicalPlan,
    session: &dyn Session,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let max_bytes = session
        .config_options()
        .extensions
        .get::<SluiceOptions>()
        .map_or(0, |options| options.frontend_max_bytes);
    if max_bytes == 0 {
        return Ok(None);
    }
    match plan {
        LogicalPlan::Explain(explain)
            if explain.logical_optimization_succeeded
                && explain.explain_format == ExplainFormat::Indent =>
        {
            let Some(physical) = small_read(planner, &explain.plan, session, max_bytes).await?
            else {
                return Ok(None);
            };
            let explain_options = &session.config_options().explain;
            let mut plans = Vec::new();
            if !explain_options.physical_plan_only {
                plans.clone_from(&explain.stringified_plans);
                plans.push(explain.plan.to_stringified(PlanType::FinalLogicalPlan));
            }
            if !explain_options.logical_plan_only {
                plans.push(StringifiedPlan::new(
                    PlanType::FinalPhysicalPlan,
                    displayable(physical.as_ref())
                        .indent(explain.verbose)
                        .to_string(),
                ));
            }
            Ok(Some(Arc::new(ExplainExec::new(
                Arc::clone(explain.schema.inner()),
                plans,
                explain.verbose,
            ))))
        }
        // Other formats (tree, graphviz, JSON) are shown as the cluster
        // would plan the query.
        LogicalPlan::Explain(_) => Ok(None),
        // Planned whole by DataFusion (its analyze options), then its input
        // is put on the compute threads.
        LogicalPlan::Analyze(_) => {
            if writes(plan)? {
                return Ok(None);
            }
            let analyze = planner
                .create_physical_plan(plan, &OnePartition::new(session))
                .await?;
            let [input] = analyze.children()[..] else {
                return Ok(None);
            };
            let input_bytes = scanned_bytes(input)?;
            if input_bytes > max_bytes {
                return Ok(None);
            }
            let input = on_compute_threads_reading(Arc::clone(input), input_bytes)?;
            analyze
                .replace_children(
                    vec![input],
                    ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep),
                )
                .map(Some)
        }
        query => small_read(planner, query, session, max_bytes).await,
    }
}

/// `query` planned to run in the frontend, when it reads at most
/// `max_bytes` of files and writes nothing.
async fn small_read(
    planner: &DefaultPhysicalPlanner,
    query: &LogicalPlan,
    session: &dyn Session,
    max_bytes: u64,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if writes(query)? {
        return Ok(None);
    }
    let session = OnePartition::new(session);
    let physical = planner.create_physical_plan(query, &session).await?;
    let input_bytes = scanned_bytes(&physical)?;
    if input_bytes > max_bytes {
        return Ok(None);
    }
    on_compute_threads_reading(cache_small_scans(physical)?, input_bytes).map(Some)
}

/// Whether `plan` writes or changes anything: those statements go to the
/// cluster (its writers, the catalog's commit) whatever their size.
fn writes(plan: &LogicalPlan) -> Result<bool> {
    plan.exists(|node| {
        Ok(matches!(
            node,
            LogicalPlan::Dml(_)
                | LogicalPlan::Copy(_)
                | LogicalPlan::Ddl(_)
                | LogicalPlan::Statement(_)
                | LogicalPlan::Extension(_)
        ))
    })
}

/// A session planning with one partition: a query over a few megabytes
/// answers sooner on one thread than split, and under many concurrent
/// queries the threads are better spent on the others. Everything but the
/// partition count is the session's.
struct OnePartition<'a> {
    session: &'a dyn Session,
    config: SessionConfig,
    table_options: TableOptions,
}

impl<'a> OnePartition<'a> {
    fn new(session: &'a dyn Session) -> Self {
        Self {
            config: session.config().clone().with_target_partitions(1),
            table_options: session.table_options().clone(),
            session,
        }
    }
}

#[async_trait]
impl Session for OnePartition<'_> {
    fn session_id(&self) -> &str {
        self.session.session_id()
    }

    fn config(&self) -> &SessionConfig {
        &self.config
    }

    fn catalog_list(&self) -> Arc<dyn CatalogProviderList> {
        self.session.catalog_list()
    }

    fn query_planner(&self) -> Arc<dyn QueryPlanner + Send + Sync> {
        self.session.query_planner()
    }

    fn optimize(&self, plan: &LogicalPlan) -> Result<LogicalPlan> {
        self.session.optimize(plan)
    }

    fn physical_optimizers(&self) -> &[Arc<dyn PhysicalOptimizerRule + Send + Sync>] {
        self.session.physical_optimizers()
    }

    fn statistics_registry(&self) -> Option<&StatisticsRegistry> {
        self.session.statistics_registry()
    }

    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.session.create_physical_plan(logical_plan).await
    }

    fn create_physical_expr(
        &self,
        expr: Expr,
        df_schema: &DFSchema,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        self.session.create_physical_expr(expr, df_schema)
    }

    fn scalar_functions(&self) -> &HashMap<String, Arc<ScalarUDF>> {
        self.session.scalar_functions()
    }

    fn higher_order_functions(&self) -> &HashMap<String, Arc<HigherOrderUDF>> {
        self.session.higher_order_functions()
    }

    fn aggregate_functions(&self) -> &HashMap<String, Arc<AggregateUDF>> {
        self.session.aggregate_functions()
    }

    fn window_functions(&self) -> &HashMap<String, Arc<WindowUDF>> {
        self.session.window_functions()
    }

    fn extension_type_registry(&self) -> &ExtensionTypeRegistryRef {
        self.session.extension_type_registry()
    }

    fn runtime_env(&self) -> &Arc<RuntimeEnv> {
        self.session.runtime_env()
    }

    fn execution_props(&self) -> &ExecutionProps {
        self.session.execution_props()
    }

    /// The session underneath (this wrapper borrows it, so it cannot be
    /// `Any` itself).
    fn as_any(&self) -> &dyn Any {
        self.session.as_any()
    }

    fn table_options(&self) -> &TableOptions {
        &self.table_options
    }

    fn table_options_mut(&mut self) -> &mut TableOptions {
        &mut self.table_options
    }

    fn task_ctx(&self) -> Arc<TaskContext> {
        Arc::new(TaskContext::from(self as &dyn Session))
    }
}
