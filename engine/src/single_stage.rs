//! Jobs as one stage where stages would not pay.
//!
//! Ballista splits every plan into stages at each repartition and writes each
//! stage's output to disk for the next one to fetch. For a job over a few
//! hundred megabytes that costs more than it saves: a TPC-H SF 1 join of six
//! tables ran ~10x slower than single-node DataFusion on the same box, nearly
//! all of it in shuffles between stages. So the scheduler's planner
//! ([`SingleStagePlanner`]) measures the files a job reads and, at or under
//! `sluice.single_stage_max_bytes` per live task slot beyond the first (any
//! size on a single slot), and when the plan has exchanges for
//! Ballista to cut stages at, plans the query as single-node DataFusion would
//! (dynamic filters, round-robin repartitioning, its own thresholds for
//! collected join sides) and wraps the whole plan in a
//! [`SingleStageExec`]. To Ballista that is a leaf: it schedules the job as
//! one stage of one task on one executor, which runs the plan with all its
//! partitions in parallel on a runtime with a thread per core (the executor's
//! own task runtime has a thread per task slot). It is still a Ballista job
//! (queued, placed, cancellable, its result fetched over Flight); EXPLAIN
//! shows the choice. Where the executors share one machine's cores (the
//! embedded cluster, [`ExecutorCores::Shared`]) every job is planned this
//! way whatever its size: its task already uses every core.
//!
//! [`crate::codec::SluicePhysicalCodec`] carries a [`SingleStageExec`] to the
//! executor (the inner plan travels inside the node).

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use ballista_core::extension::SessionConfigExt;
use datafusion::catalog::Session;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::{SessionState, SessionStateBuilder, TaskContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::Distribution;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    displayable, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties,
    PlanProperties, SendableRecordBatchStream,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion::prelude::SessionConfig;
use futures::StreamExt;

use crate::inner_metrics;
use crate::live_result::{returns_rows, LiveResultExec};
use crate::options::{ServerPlannerSettings, SluiceOptions};
use crate::yielding::yielding_operators;

/// How the executors of a cluster share the machines' cores, which decides
/// whether splitting a job into stages can make it faster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExecutorCores {
    /// Each executor has cores of its own (`sluice executor` processes, one
    /// per machine or pinned to their cores): a job split into stages runs
    /// on all of them, so a big job is split, by its size and the live task
    /// slots (see [`SingleStagePlanner`]).
    #[default]
    Separate,
    /// Every executor runs in one process on one machine (the embedded
    /// cluster of `sluice serve`), and a single-stage task already runs its
    /// partitions on all of that machine's cores: stages would only add
    /// shuffles. Every job with exchanges runs as a single stage, unless
    /// `sluice.single_stage_max_bytes` is 0. Measured on TPC-H SF 10 (2
    /// cores, 2 embedded executors): 60 s as single stages against 76 s
    /// split into stages over the files above 1 GiB.
    Shared,
}

/// The task slots of a cluster's live executors, kept current by the
/// scheduler (0 until it has counted them).
#[derive(Debug, Clone, Default)]
pub struct LiveSlots(Arc<AtomicUsize>);

impl LiveSlots {
    /// Records that the live executors have `slots` task slots.
    pub fn set(&self, slots: usize) {
        self.0.store(slots, Ordering::Relaxed);
    }

    /// The live executors' task slots (0: not counted yet).
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// The partitions of each stage of a job a session sends: its
/// `sluice.stage_partitions`, or with 0 one per live task slot (0 while the
/// slots are not counted yet). A session's `target_partitions` was fixed when
/// it began, by the cluster then: a job planned by it alone would leave an
/// executor that joined since without a task.
pub fn stage_partitions(config: &SessionConfig, live_slots: &LiveSlots) -> usize {
    let setting = config
        .options()
        .extensions
        .get::<SluiceOptions>()
        .map_or(0, |options| options.stage_partitions);
    match setting {
        0 => live_slots.get(),
        n => usize::try_from(n).unwrap_or(usize::MAX),
    }
}

/// A physical optimizer rule, as a session holds them.
pub type PhysicalRule = Arc<dyn PhysicalOptimizerRule + Send + Sync>;

/// The scheduler's query planner: Ballista's distributed plan, or for a small
/// job the single-node plan inside a [`SingleStageExec`].
#[derive(Default)]
pub struct SingleStagePlanner {
    planner: DefaultPhysicalPlanner,
    executor_cores: ExecutorCores,
    live_slots: LiveSlots,
    physical_rules: Vec<PhysicalRule>,
    /// `target_partitions` of single-stage plans (0: the session's).
    single_stage_partitions: usize,
}

impl SingleStagePlanner {
    /// The planner for a cluster whose executors share cores as
    /// `executor_cores` says and have `live_slots` task slots, in a session
    /// whose physical optimizer rules are `physical_rules` and whose
    /// `target_partitions` is the stages' partition count
    /// ([`stage_partitions`]). Single-node plans are always optimized by
    /// those rules (Ballista's adaptive planner swaps in rules of its own
    /// that leave the exchanges to its stages), with `single_stage_partitions`
    /// partitions (0: the session's).
    pub fn new(
        executor_cores: ExecutorCores,
        live_slots: LiveSlots,
        physical_rules: Vec<PhysicalRule>,
        single_stage_partitions: usize,
    ) -> Self {
        Self {
            planner: DefaultPhysicalPlanner::default(),
            executor_cores,
            live_slots,
            physical_rules,
            single_stage_partitions,
        }
    }

    /// Whether a job reading `input_bytes` is split into stages, with
    /// `max_bytes` the session's `sluice.single_stage_max_bytes`. On
    /// executors with cores of their own, a job is split when it reads more
    /// than `max_bytes` per live task slot beyond the first (so on N slots
    /// over `max_bytes / (N - 1)`: a job that would keep one slot busy
    /// longest gains most from the others), and never on one slot, where its
    /// stages would run one after another on the cores a single stage uses
    /// at once. A cluster whose slots are not counted yet counts as two.
    fn splits(&self, input_bytes: u64, max_bytes: u64) -> bool {
        if self.executor_cores == ExecutorCores::Shared {
            return false;
        }
        let others = match self.live_slots.get() {
            0 => 1,
            1 => return false,
            slots => slots as u64 - 1,
        };
        input_bytes > max_bytes / others
    }

    /// `state` with DataFusion's single-node defaults where Ballista changes
    /// them for plans that cross stages: its physical optimizer rules (the
    /// adaptive planner's leave out the exchanges: a count over two files
    /// came back as two partial counts), round-robin repartitioning and
    /// dynamic filters (which cannot cross a stage boundary, but never have to
    /// here). A join side is collected into one hash table up to
    /// `collect_bytes` (`sluice.single_stage_collect_bytes`; Ballista's
    /// thresholds are its broadcast budget). The join algorithm stays the
    /// session's (`datafusion.optimizer.prefer_hash_join`, true by default in
    /// Sluice).
    fn single_node_state(&self, state: &SessionState, collect_bytes: u64) -> SessionState {
        let defaults = ConfigOptions::default().optimizer;
        let mut state = if state.config().ballista_adaptive_query_planner_enabled() {
            SessionStateBuilder::new_from_existing(state.clone())
                .with_physical_optimizer_rules(self.physical_rules.clone())
                .build()
        } else {
            state.clone()
        };
        if self.single_stage_partitions > 0 {
            state.config_mut().options_mut().execution.target_partitions =
                self.single_stage_partitions;
        }
        let optimizer = &mut state.config_mut().options_mut().optimizer;
        let collect_bytes = usize::try_from(collect_bytes).unwrap_or(usize::MAX);
        optimizer.hash_join_single_partition_threshold = collect_bytes;
        optimizer.hash_join_single_partition_threshold_rows = collect_bytes / 16;
        optimizer.enable_round_robin_repartition = defaults.enable_round_robin_repartition;
        // Ballista turns dynamic filters off through the umbrella key, which
        // also turns off each kind; all four come back (the join filters let
        // q10's lineitem scan skip rows whose orders were filtered out).
        optimizer.enable_dynamic_filter_pushdown = defaults.enable_dynamic_filter_pushdown;
        optimizer.enable_join_dynamic_filter_pushdown =
            defaults.enable_join_dynamic_filter_pushdown;
        optimizer.enable_topk_dynamic_filter_pushdown =
            defaults.enable_topk_dynamic_filter_pushdown;
        optimizer.enable_aggregate_dynamic_filter_pushdown =
            defaults.enable_aggregate_dynamic_filter_pushdown;
        state
    }
}

impl fmt::Debug for SingleStagePlanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SingleStagePlanner")
    }
}

#[async_trait]
impl QueryPlanner for SingleStagePlanner {
    /// The job's plan; a query's rows marked for the frontend that reads
    /// them as they are made, when it said where it runs
    /// ([`LiveResultExec`]).
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = self.plan_job(logical_plan, session).await?;
        let key = session
            .config_options()
            .extensions
            .get::<SluiceOptions>()
            .map(|options| options.result_key.clone())
            .unwrap_or_default();
        if key.is_empty() || !returns_rows(logical_plan) {
            return Ok(plan);
        }
        Ok(Arc::new(LiveResultExec::new(plan, key)))
    }
}

impl SingleStagePlanner {
    /// The job's plan: one stage where stages would not pay, else the
    /// plan Ballista cuts into stages.
    async fn plan_job(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let options = session
            .config_options()
            .extensions
            .get::<SluiceOptions>()
            .cloned()
            .unwrap_or_else(|| {
                SluiceOptions::new(ServerPlannerSettings {
                    single_stage_max_bytes: 0,
                    ..ServerPlannerSettings::default()
                })
            });
        let max_bytes = options.single_stage_max_bytes;
        let Some(state) = session.as_any().downcast_ref::<SessionState>() else {
            return self
                .planner
                .create_physical_plan(logical_plan, session)
                .await;
        };
        // EXPLAIN shows the plan the statement would run with; EXPLAIN ANALYZE
        // keeps Ballista's handling.
        let (query, explain) = match logical_plan {
            _ if max_bytes == 0 => {
                return self.planner.create_physical_plan(logical_plan, state).await
            }
            LogicalPlan::Explain(explain) => (explain.plan.as_ref(), true),
            LogicalPlan::Analyze(_) => {
                return self.planner.create_physical_plan(logical_plan, state).await
            }
            query => (query, false),
        };
        // Planned as a single stage first: most jobs sent to a small cluster
        // are small, and then this is the only planning.
        let single_node = self.single_node_state(state, options.single_stage_collect_bytes);
        let plan = self
            .planner
            .create_physical_plan(query, &single_node)
            .await?;
        let input_bytes = scanned_bytes(&plan)?;
        // A plan without exchanges is one stage already, with a task per
        // partition (a scan that streams its rows): nothing to gain.
        if self.splits(input_bytes, max_bytes) || !has_exchange(&plan)? {
            return self.planner.create_physical_plan(logical_plan, state).await;
        }
        Ok(if explain {
            self.planner
                .create_physical_plan(logical_plan, &single_node)
                .await?
        } else {
            Arc::new(SingleStageExec::new(plan, input_bytes))
        })
    }
}

/// Bytes of the files `plan` scans (each file's byte range when a scan reads
/// part of a file).
pub(crate) fn scanned_bytes(plan: &Arc<dyn ExecutionPlan>) -> Result<u64> {
    let mut total = 0u64;
    plan.apply(|node| {
        let config = node
            .downcast_ref::<DataSourceExec>()
            .and_then(|scan| scan.data_source().downcast_ref::<FileScanConfig>());
        if let Some(config) = config {
            for file in config.file_groups.iter().flat_map(|group| group.iter()) {
                total += match &file.range {
                    Some(range) => range.end.saturating_sub(range.start).max(0) as u64,
                    None => file.object_meta.size,
                };
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(total)
}

/// Whether `plan` moves rows between partitions somewhere (a repartition, a
/// merge, or an operator that gathers a side into one partition, such as a
/// broadcast hash join): where Ballista would cut it into stages.
fn has_exchange(plan: &Arc<dyn ExecutionPlan>) -> Result<bool> {
    plan.exists(|node| {
        Ok(node.downcast_ref::<RepartitionExec>().is_some()
            || node.downcast_ref::<CoalescePartitionsExec>().is_some()
            || node.downcast_ref::<SortPreservingMergeExec>().is_some()
            || node
                .input_distribution_requirements()
                .per_child_distributions()
                .any(|distribution| matches!(distribution, Distribution::SinglePartition)))
    })
}

/// A whole query plan run as one task: a leaf to Ballista's stage planner,
/// with one output partition.
#[derive(Debug)]
pub struct SingleStageExec {
    /// The plan, its partitions merged into one.
    input: Arc<dyn ExecutionPlan>,
    /// Bytes of the files the plan reads (shown by EXPLAIN).
    input_bytes: u64,
}

impl SingleStageExec {
    /// The plan it runs and the bytes it reads, as encoded in a task plan.
    pub(crate) fn parts(&self) -> (&Arc<dyn ExecutionPlan>, u64) {
        (&self.input, self.input_bytes)
    }

    /// Rebuilt from [`Self::parts`] (the plan's partitions already merged)
    /// to be run: its operators yield now and then
    /// ([`crate::yielding`]), so a cancelled task stops within a few
    /// batches.
    pub(crate) fn from_parts(input: Arc<dyn ExecutionPlan>, input_bytes: u64) -> Result<Self> {
        Ok(Self {
            input: yielding_operators(input)?,
            input_bytes,
        })
    }

    /// Wraps `plan`, merging its output partitions.
    pub fn new(plan: Arc<dyn ExecutionPlan>, input_bytes: u64) -> Self {
        let input = if plan.output_partitioning().partition_count() > 1 {
            Arc::new(CoalescePartitionsExec::new(plan)) as Arc<dyn ExecutionPlan>
        } else {
            plan
        };
        Self { input, input_bytes }
    }
}

impl DisplayAs for SingleStageExec {
    fn fmt_as(&self, format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "SingleStageExec: input_bytes={}", self.input_bytes)?;
        if matches!(format, DisplayFormatType::TreeRender) {
            return Ok(());
        }
        // A leaf to Ballista, so its plan is printed here, under the stage's
        // shuffle writer.
        for line in displayable(self.input.as_ref())
            .indent(true)
            .to_string()
            .lines()
        {
            write!(f, "\n    {line}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for SingleStageExec {
    fn name(&self) -> &str {
        "SingleStageExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    /// The metrics of the operators it runs, which are not its children:
    /// see [`crate::inner_metrics`].
    fn metrics(&self) -> Option<MetricsSet> {
        Some(inner_metrics::encode(&self.input))
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "SingleStageExec is a leaf and takes no children".into(),
            ))
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        // Executed (operators spawn their tasks in `execute`) and driven on
        // the plan runtime; batches come back through a short channel.
        let (sender, receiver) = tokio::sync::mpsc::channel(2);
        let input = Arc::clone(&self.input);
        let driver = plan_runtime().spawn(async move {
            let mut batches = match input.execute(partition, context) {
                Ok(batches) => batches,
                Err(error) => {
                    let _ = sender.send(Err(error)).await;
                    return;
                }
            };
            while let Some(batch) = batches.next().await {
                if sender.send(batch).await.is_err() {
                    return;
                }
            }
        });
        let batches = futures::stream::unfold(
            (receiver, AbortOnDrop(driver)),
            |(mut receiver, driver)| async move {
                let batch = receiver.recv().await?;
                Some((batch, (receiver, driver)))
            },
        );
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            batches,
        )))
    }
}

/// The threads single-stage plans run on, one per core. Ballista runs a task
/// on its executor's task runtime, which has one thread per task slot; a
/// single-stage task is a whole plan whose partitions should run in parallel,
/// as they do in DataFusion.
fn plan_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("sluice-single-stage")
            .enable_all()
            .build()
            .expect("the single-stage runtime starts")
    })
}

/// Stops a plan's driver when its output stream is dropped (the task
/// finished, failed or was cancelled).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
