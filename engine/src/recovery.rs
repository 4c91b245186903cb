//! Correct answers when an executor dies during a job.
//!
//! Ballista 55 recomputes the shuffle output a dead executor held, but a stage
//! that was running at that moment is rolled back and re-run in full while the
//! output its already-finished tasks had published stays registered with the
//! next stage, which then reads it twice (seen: a `count(*)` over a join 1.65x
//! too high after `kill -9` of one of three executors). The same happens when a
//! task cannot fetch its input and its stage is rolled back.
//!
//! Results reach the frontend only after the whole job has finished, so Sluice
//! can check the job before any row leaves: when the scheduler reports that one
//! of the job's tasks failed and was run again, the job is submitted afresh on
//! the surviving executors. The client sees a slower query, never a wrong one.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use ballista_core::config::{BallistaConfig, BALLISTA_JOB_NAME};
use ballista_core::execution_plans::DistributedQueryExec;
use ballista_core::extension::SessionConfigExt;
use ballista_core::serde::BallistaLogicalExtensionCodec;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use datafusion_proto::protobuf::LogicalPlanNode;
use futures::{StreamExt, TryStreamExt};

/// Attempts of one query before Sluice gives up with an error.
pub const MAX_JOB_ATTEMPTS: usize = 3;

/// What the frontend asks the scheduler about its finished jobs.
#[async_trait]
pub trait JobControl: Send + Sync + fmt::Debug {
    /// Whether job `job_id` lost task output and recomputed it (a lost
    /// executor, a failed shuffle fetch).
    async fn job_retried_tasks(&self, job_id: &str) -> Result<bool>;
    /// Lets the executors delete the job's results: the client has read them
    /// (or gone away). Unreleased results are deleted after the cluster's
    /// result retention time.
    async fn release_job(&self, job_id: &str) -> Result<()>;
    /// Stops the job with id `job_id` (when known) and any running job named
    /// `job_name`: their tasks end on the executors (the client cancelled its
    /// query, timed out or went away).
    async fn cancel_job(&self, job_id: Option<&str>, job_name: &str) -> Result<()>;
}

/// Cancels a job whose stream is dropped before the job has finished
/// (Ballista 55 lets such a job run to its end).
struct CancelUnlessFinished {
    job: Arc<DistributedQueryExec<LogicalPlanNode>>,
    job_name: String,
    control: Arc<dyn JobControl>,
    finished: bool,
}

impl Drop for CancelUnlessFinished {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let job_id = self.job.job_id().map(|id| id.to_string());
        let job_name = std::mem::take(&mut self.job_name);
        let control = Arc::clone(&self.control);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = control.cancel_job(job_id.as_deref(), &job_name).await {
                    tracing::warn!("cancelling the job of query {job_name}: {e}");
                }
            });
        }
    }
}

/// Releases a job's results when the stream reading them is dropped.
struct ReleaseOnDrop {
    job_id: String,
    control: Arc<dyn JobControl>,
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        let (job_id, control) = (std::mem::take(&mut self.job_id), Arc::clone(&self.control));
        if job_id.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = control.release_job(&job_id).await {
                    tracing::debug!("releasing job {job_id}: {e}");
                }
            });
        }
    }
}

/// A Ballista job that is submitted again when its run needed recovery.
pub struct RecoveringJobExec {
    scheduler_url: String,
    config: BallistaConfig,
    plan: LogicalPlan,
    session_id: String,
    /// What EXPLAIN shows and the plan properties; every execution submits
    /// jobs of its own (a job records its id once).
    job: Arc<DistributedQueryExec<LogicalPlanNode>>,
    control: Arc<dyn JobControl>,
    /// The id of the job whose rows the last execution returned.
    last_job_id: Arc<std::sync::Mutex<Option<String>>>,
}

impl RecoveringJobExec {
    /// Runs `plan` as a Ballista job on the scheduler at `scheduler_url`.
    pub fn new(
        scheduler_url: String,
        config: BallistaConfig,
        plan: LogicalPlan,
        session_id: String,
        control: Arc<dyn JobControl>,
    ) -> Self {
        let job = Arc::new(new_job(&scheduler_url, &config, &plan, &session_id));
        Self {
            scheduler_url,
            config,
            plan,
            session_id,
            job,
            control,
            last_job_id: Arc::default(),
        }
    }

    /// The Ballista job whose rows the last execution returned, once it
    /// finished on the cluster.
    pub fn last_job_id(&self) -> Option<String> {
        self.last_job_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A job for one attempt (each attempt needs its own: the job id it records
/// is set once).
fn new_job(
    scheduler_url: &str,
    config: &BallistaConfig,
    plan: &LogicalPlan,
    session_id: &str,
) -> DistributedQueryExec<LogicalPlanNode> {
    DistributedQueryExec::with_extension(
        scheduler_url.to_string(),
        config.clone(),
        plan.clone(),
        Arc::new(BallistaLogicalExtensionCodec::default()),
        session_id.to_string(),
    )
}

impl fmt::Debug for RecoveringJobExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecoveringJobExec").finish_non_exhaustive()
    }
}

impl DisplayAs for RecoveringJobExec {
    fn fmt_as(&self, format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        self.job.fmt_as(format, f)
    }
}

impl ExecutionPlan for RecoveringJobExec {
    fn name(&self) -> &str {
        "RecoveringJobExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.job.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let new_attempt = {
            let (url, config, plan, session) = (
                self.scheduler_url.clone(),
                self.config.clone(),
                self.plan.clone(),
                self.session_id.clone(),
            );
            move || Arc::new(new_job(&url, &config, &plan, &session))
        };
        let control = Arc::clone(&self.control);
        let last_job_id = Arc::clone(&self.last_job_id);
        let schema = self.job.schema();
        let results = futures::stream::once(async move {
            let mut attempt = 1;
            let mut job = new_attempt();
            loop {
                let mut stream = job.execute(partition, Arc::clone(&context))?;
                let mut running = CancelUnlessFinished {
                    job: Arc::clone(&job),
                    job_name: context
                        .session_config()
                        .ballista_config()
                        .settings()
                        .get(BALLISTA_JOB_NAME)
                        .cloned()
                        .unwrap_or_default(),
                    control: Arc::clone(&control),
                    finished: false,
                };
                // The first batch (or the end, or an error) arrives once the
                // job has finished on the cluster.
                let first = stream.next().await;
                running.finished = true;
                let job_id = job.job_id().map(|id| id.to_string()).unwrap_or_default();
                // A failed job reports its own error; only a job that
                // succeeded can carry output read twice.
                let succeeded = !matches!(first, Some(Err(_)));
                let retried = succeeded
                    && !job_id.is_empty()
                    && control
                        .job_retried_tasks(&job_id)
                        .await
                        .unwrap_or_else(|e| {
                            tracing::warn!("cannot check job {job_id} for lost work: {e}");
                            false
                        });
                let release = ReleaseOnDrop {
                    job_id: job_id.clone(),
                    control: Arc::clone(&control),
                };
                if !retried {
                    *last_job_id.lock().unwrap_or_else(|e| e.into_inner()) = Some(job_id);
                    return Ok(futures::stream::iter(first)
                        .chain(stream)
                        .map(move |batch| {
                            let _keep_until_read = &release;
                            batch
                        }));
                }
                drop(release);
                if attempt == MAX_JOB_ATTEMPTS {
                    return Err(DataFusionError::Execution(format!(
                        "job {job_id} lost work on failed executors in each of \
                         {MAX_JOB_ATTEMPTS} attempts; the cluster is unstable"
                    )));
                }
                attempt += 1;
                job = new_attempt();
                tracing::warn!(
                    "job {job_id} recovered from a lost executor or shuffle fetch; Ballista \
                     may have read some output twice, so the query runs again \
                     (attempt {attempt} of {MAX_JOB_ATTEMPTS})"
                );
            }
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, results)))
    }
}
