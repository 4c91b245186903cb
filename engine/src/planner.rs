//! The query planner: decides whether a plan runs on the cluster or in the
//! frontend.
//!
//! A plan that reads file-backed tables becomes a Ballista job (the scheduler
//! splits it into stages and the executors run them), unless it is a small
//! query ([`crate::small_queries`]), which the frontend runs itself. Plans that read
//! only tables held in the frontend — `pg_catalog`, `information_schema`, the
//! `sluice` system schema, in-memory tables, table functions — or no table at
//! all run in the frontend: those tables describe or hold the frontend's own
//! state, and Ballista cannot serialise them.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use ballista_core::config::BallistaConfig;
use ballista_core::planner::BallistaQueryPlanner;
use ballista_core::serde::BallistaLogicalExtensionCodec;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::source_as_provider;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::{LogicalPlan, TableScan};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion_proto::protobuf::LogicalPlanNode;

use crate::atomic_copy::{insert_as_copy, stage_copy, AtomicCopyExec, CopyJournal};
use crate::explain_analyze::DistributedAnalyzeExec;
use crate::frontend_compute::on_compute_threads;
use crate::recovery::{JobControl, RecoveringJobExec};
use crate::sandbox::LocationSandbox;
use crate::small_queries::small_query;

/// Where a logical plan runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Placement {
    /// In the frontend process: catalog, system and in-memory tables, table
    /// functions such as `generate_series`, or no table at all.
    Frontend,
    /// As a distributed Ballista job: the plan reads file-backed tables.
    Cluster,
}

impl Placement {
    /// The name `sluice.queries.ran_on` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Frontend => "frontend",
            Self::Cluster => "cluster",
        }
    }

    /// The placement named `name` by [`Self::as_str`].
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Frontend, Self::Cluster]
            .into_iter()
            .find(|placement| placement.as_str() == name)
    }
}

/// Where the statement a session plans ran, written by the planner for the
/// query log to read (a fresh one per statement). Carried in the session's
/// configuration, with no settable entries, so it is never shown or sent.
#[derive(Debug, Clone, Default)]
pub struct RanOn(Arc<AtomicU8>);

impl RanOn {
    const UNKNOWN: u8 = 0;

    /// Records that the statement ran at `placement`.
    pub fn record(&self, placement: Placement) {
        self.0.store(placement as u8 + 1, Ordering::Relaxed);
    }

    /// Where the statement ran; `None` before it was planned (or for a
    /// statement that runs no plan, such as `SET`).
    pub fn get(&self) -> Option<Placement> {
        match self.0.load(Ordering::Relaxed) {
            Self::UNKNOWN => None,
            n if n == Placement::Frontend as u8 + 1 => Some(Placement::Frontend),
            _ => Some(Placement::Cluster),
        }
    }

    /// Records `placement` in the session's note, if it has one.
    fn note(session: &dyn Session, placement: Placement) {
        if let Some(ran_on) = session.config_options().extensions.get::<RanOn>() {
            ran_on.record(placement);
        }
    }
}

crate::options::carried_extension!(RanOn, "sluice_ran_on");

/// Decides where `plan` runs.
///
/// Plans reading file-backed (listing) tables run on the cluster, where every
/// executor can reach the files; every other table lives in the frontend's
/// memory. A plan mixing both kinds is refused: it could run in neither place.
pub fn placement(plan: &LogicalPlan) -> Result<Placement> {
    let mut files = false;
    let mut local: Option<String> = None;
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(TableScan {
            table_name, source, ..
        }) = node
        {
            let file_backed = source_as_provider(source)
                .map(|provider| provider.is::<ListingTable>())
                .unwrap_or(false);
            if file_backed {
                files = true;
            } else {
                local.get_or_insert_with(|| table_name.to_string());
            }
        }
        Ok(if files && local.is_some() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })?;
    match (files, local) {
        (true, Some(table)) => Err(DataFusionError::NotImplemented(format!(
            "a query cannot combine file-backed tables with {table}, which lives in the \
             frontend (catalog, system and in-memory tables, table functions); \
             query them separately"
        ))),
        (true, None) => Ok(Placement::Cluster),
        (false, _) => Ok(Placement::Frontend),
    }
}

/// Plans catalog queries locally and everything else as a Ballista job.
pub struct SluiceQueryPlanner {
    scheduler_url: String,
    config: BallistaConfig,
    cluster: BallistaQueryPlanner<LogicalPlanNode>,
    local: DefaultPhysicalPlanner,
    jobs: Option<Arc<dyn JobControl>>,
    /// The warehouse's URL (ending in `/`): `COPY`s under it are managed
    /// writes, committed through the catalog rather than staged.
    warehouse: Option<String>,
    /// Where staged `COPY`s are recorded until they finish.
    copies: Option<Arc<CopyJournal>>,
    /// The locations plans may read and write.
    sandbox: Option<Arc<LocationSandbox>>,
}

impl SluiceQueryPlanner {
    /// A planner submitting jobs to the scheduler at `scheduler_url`
    /// (`http://host:port`). With `jobs`, jobs that needed recovery
    /// from a lost executor run again (see [`crate::recovery`]).
    pub fn new(
        scheduler_url: String,
        config: BallistaConfig,
        jobs: Option<Arc<dyn JobControl>>,
    ) -> Self {
        Self {
            jobs,
            cluster: BallistaQueryPlanner::with_extension(
                scheduler_url.clone(),
                config.clone(),
                Arc::new(BallistaLogicalExtensionCodec::default()),
            ),
            local: DefaultPhysicalPlanner::default(),
            scheduler_url,
            config,
            warehouse: None,
            copies: None,
            sandbox: None,
        }
    }

    /// Refuses plans that read or write outside `sandbox`.
    pub fn with_sandbox(mut self, sandbox: Arc<LocationSandbox>) -> Self {
        self.sandbox = Some(sandbox);
        self
    }

    /// Stages directory `COPY`s outside `warehouse` (see
    /// [`crate::atomic_copy`]), recording them in `journal`.
    pub fn with_atomic_copies(
        mut self,
        warehouse: Option<String>,
        journal: Option<Arc<CopyJournal>>,
    ) -> Self {
        self.warehouse = warehouse;
        self.copies = journal;
        self
    }

    /// The physical plan of `logical_plan`, in the frontend or as a job.
    async fn plan(
        &self,
        logical_plan: &LogicalPlan,
        session_state: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let placement = placement(logical_plan)?;
        if placement == Placement::Frontend {
            RanOn::note(session_state, Placement::Frontend);
            let plan = self
                .local
                .create_physical_plan(logical_plan, session_state)
                .await?;
            return on_compute_threads(plan);
        }
        if let Some(plan) = small_query(&self.local, logical_plan, session_state).await? {
            RanOn::note(session_state, Placement::Frontend);
            return Ok(plan);
        }
        RanOn::note(session_state, Placement::Cluster);
        match (&self.jobs, logical_plan) {
            (Some(jobs), LogicalPlan::Analyze(analyze)) => {
                Ok(Arc::new(DistributedAnalyzeExec::new(
                    RecoveringJobExec::new(
                        self.scheduler_url.clone(),
                        self.config.clone(),
                        analyze.input.as_ref().clone(),
                        session_state.session_id().to_string(),
                        Arc::clone(jobs),
                    ),
                    self.scheduler_url.clone(),
                    Arc::clone(analyze.schema.inner()),
                    analyze.verbose,
                )))
            }
            // Empty plans keep Ballista's own handling.
            (None, _) | (_, LogicalPlan::EmptyRelation(_)) => {
                self.cluster
                    .create_physical_plan(logical_plan, session_state)
                    .await
            }
            (Some(jobs), plan) => Ok(Arc::new(RecoveringJobExec::new(
                self.scheduler_url.clone(),
                self.config.clone(),
                plan.clone(),
                session_state.session_id().to_string(),
                Arc::clone(jobs),
            ))),
        }
    }
}

impl std::fmt::Debug for SluiceQueryPlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SluiceQueryPlanner")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl QueryPlanner for SluiceQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session_state: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if let Some(sandbox) = &self.sandbox {
            sandbox.check_plan(logical_plan)?;
        }
        let insert = insert_as_copy(logical_plan);
        let logical_plan = insert.as_ref().unwrap_or(logical_plan);
        if let Some((staged, copy)) = stage_copy(logical_plan, self.warehouse.as_deref())? {
            let input = self.plan(&staged, session_state).await?;
            return Ok(Arc::new(AtomicCopyExec::new(
                input,
                copy,
                self.copies.clone(),
            )));
        }
        self.plan(logical_plan, session_state).await
    }
}
