//! Correct answers when an executor dies during a job.
//!
//! Ballista 55 recomputes the shuffle output a dead executor held, but a stage
//! that was running at that moment is rolled back and re-run in full while the
//! output its already-finished tasks had published stays registered with the
//! next stage, which then reads it twice (seen: a `count(*)` over a join 1.65x
//! too high after `kill -9` of one of three executors). The same happens when a
//! task cannot fetch its input and its stage is rolled back.
//!
//! Sluice checks a job when it ends: when the scheduler reports that one of
//! its tasks failed and was run again, a job none of whose rows has reached
//! the client yet is submitted afresh on the surviving executors, and the
//! client sees a slower query, never a wrong one. A job's rows leave while
//! it runs ([`crate::live_results`], and from executors in other processes
//! through a [`ResultFollower`]); once some have, the query cannot restart
//! without sending them twice, so it fails with SQLSTATE 40001 instead. A
//! result stream from another process that breaks counts as lost work.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use ballista_core::config::{BallistaConfig, BALLISTA_JOB_NAME};
use ballista_core::execution_plans::DistributedQueryExec;
use ballista_core::extension::SessionConfigExt;
use ballista_core::serde::BallistaLogicalExtensionCodec;
use datafusion::arrow::record_batch::RecordBatch;
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
use futures::StreamExt;

use crate::live_results::{self, LiveReader};
use crate::options::SluiceOptions;

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
    /// Starts receiving into `job` the rows that executors in other
    /// processes hand over for result `key` while its job runs (an executor
    /// hands a final-stage task's rows over when a reader of the result is
    /// there: [`live_results::read_here`]); called before the job is
    /// submitted. `None` when every executor is in this process. Dropping
    /// the follower stops it.
    async fn follow_result(
        &self,
        _key: &str,
        _job: Arc<live_results::LiveJob>,
    ) -> Option<Box<dyn ResultFollower>> {
        None
    }
}

/// Receives a result's rows from executors in other processes
/// ([`JobControl::follow_result`]).
#[async_trait]
pub trait ResultFollower: Send {
    /// Once the job has ended: waits until every executor followed has
    /// passed on all it was handed of the result, then stops following; an
    /// error (the rows it held lost) when one could not. The result's reader
    /// keeps reading meanwhile: rows from other processes wait for room in
    /// its queues.
    async fn catch_up(self: Box<Self>) -> Result<()>;
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
        let job_name = context
            .session_config()
            .ballista_config()
            .settings()
            .get(BALLISTA_JOB_NAME)
            .cloned()
            .unwrap_or_default();
        let run = JobRun {
            new_attempt: Box::new(new_attempt),
            partition,
            context,
            job_name,
            control: Arc::clone(&self.control),
            last_job_id: Arc::clone(&self.last_job_id),
            attempt: 0,
            phase: Phase::Start,
        };
        let results = futures::stream::unfold(run, |mut run| async move {
            let item = run.next().await?;
            Some((item, run))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.job.schema(),
            results,
        )))
    }
}

/// `context` for a job whose result is handed over under `key`
/// (`sluice.result_key`) by executors in this process as they make it
/// ([`live_results`]).
fn with_result_key(context: &Arc<TaskContext>, key: &str) -> Arc<TaskContext> {
    let mut config = context.session_config().clone();
    if let Some(options) = config.options_mut().extensions.get_mut::<SluiceOptions>() {
        options.result_key = key.to_string();
    }
    Arc::new(TaskContext::new(
        context.task_id(),
        context.session_id(),
        config,
        context.scalar_functions().clone(),
        context.higher_order_functions().clone(),
        context.aggregate_functions().clone(),
        context.window_functions().clone(),
        context.runtime_env(),
    ))
}

/// Where a query's run stands.
enum Phase {
    /// A job is to be submitted.
    Start,
    /// The job runs; rows its final stage hands over go to the client.
    Running(Box<Running>),
    /// The job has finished: the rest of the rows handed over, then those
    /// fetched from the executors.
    Draining(Box<Draining>),
    /// Every row was sent, or an error was.
    Done,
}

/// A running job.
struct Running {
    job: Arc<DistributedQueryExec<LogicalPlanNode>>,
    /// Ballista's result stream: its first item comes once the job ended.
    results: SendableRecordBatchStream,
    guard: CancelUnlessFinished,
    /// Reads what the final stage hands over in this process.
    live: LiveReader,
    /// Receives what executors in other processes hand over.
    follower: Option<Box<dyn ResultFollower>>,
}

/// A finished job's rows still to send.
struct Draining {
    /// Rows have been sent.
    sent: bool,
    live: Option<LiveReader>,
    /// Until every executor followed has passed on all it was handed.
    catching_up: Option<futures::future::BoxFuture<'static, Result<()>>>,
    rest: futures::stream::BoxStream<'static, Result<RecordBatch>>,
    _release: ReleaseOnDrop,
}

/// What woke a running query up.
enum Woken {
    /// A batch the final stage handed over (or why none can be read).
    Batch(Result<RecordBatch>),
    /// The job ended: Ballista's first item.
    Ended(Option<Result<RecordBatch>>),
}

/// One query's jobs: attempts until one runs without lost work.
struct JobRun {
    new_attempt: Box<dyn Fn() -> Arc<DistributedQueryExec<LogicalPlanNode>> + Send>,
    partition: usize,
    context: Arc<TaskContext>,
    job_name: String,
    control: Arc<dyn JobControl>,
    last_job_id: Arc<std::sync::Mutex<Option<String>>>,
    attempt: usize,
    phase: Phase,
}

impl JobRun {
    /// The query's next batch, `None` at its end.
    async fn next(&mut self) -> Option<Result<RecordBatch>> {
        loop {
            match &mut self.phase {
                Phase::Start => match self.submit().await {
                    Ok(running) => self.phase = Phase::Running(Box::new(running)),
                    Err(e) => return self.fail(e),
                },
                Phase::Running(running) => match Self::wake(running).await {
                    Woken::Batch(Ok(batch)) => return Some(Ok(batch)),
                    Woken::Batch(Err(e)) => return self.fail(e),
                    Woken::Ended(first) => {
                        if let Some(item) = self.ended(first).await {
                            return Some(item);
                        }
                    }
                },
                Phase::Draining(draining) => {
                    if let (Some(live), Some(catching_up)) =
                        (&mut draining.live, &mut draining.catching_up)
                    {
                        tokio::select! {
                            batch = live.next_batch() => match batch {
                                Ok(batch) => {
                                    draining.sent = true;
                                    return Some(Ok(batch));
                                }
                                Err(e) => return self.fail(e),
                            },
                            caught_up = catching_up => {
                                draining.catching_up = None;
                                if let Err(e) = caught_up {
                                    tracing::warn!("rows handed over by an executor were lost: {e}");
                                    let sent = draining.sent;
                                    let job_id = self.last_job();
                                    if let Some(item) = self.start_over(&job_id, sent) {
                                        return Some(item);
                                    }
                                }
                            }
                        }
                        continue;
                    }
                    if let Some(live) = &mut draining.live {
                        match live.next_after_end().await {
                            Ok(Some(batch)) => {
                                draining.sent = true;
                                return Some(Ok(batch));
                            }
                            Ok(None) => draining.live = None,
                            Err(e) => return self.fail(e),
                        }
                        continue;
                    }
                    match draining.rest.next().await {
                        Some(Ok(batch)) => {
                            draining.sent |= batch.num_rows() > 0;
                            return Some(Ok(batch));
                        }
                        // The executor holding the rest of the result is
                        // gone (or failing): the rows sent cannot be taken
                        // back, so the query cannot start over.
                        Some(Err(e)) if draining.sent => {
                            return self.fail(live_results::rows_already_sent(&format!(
                                "fetching the rest of the result failed ({e})"
                            )))
                        }
                        Some(Err(e)) => return self.fail(e),
                        None => {
                            self.phase = Phase::Done;
                            return None;
                        }
                    }
                }
                Phase::Done => return None,
            }
        }
    }

    /// Ends the query with `error`.
    fn fail(&mut self, error: DataFusionError) -> Option<Result<RecordBatch>> {
        self.phase = Phase::Done;
        Some(Err(error))
    }

    /// Submits the next attempt's job.
    async fn submit(&mut self) -> Result<Running> {
        self.attempt += 1;
        let job = (self.new_attempt)();
        let key = live_results::new_result_key();
        let live = LiveReader::new(&key);
        let follower = self.control.follow_result(&key, live.job()).await;
        let results = job.execute(self.partition, with_result_key(&self.context, &key))?;
        let guard = CancelUnlessFinished {
            job: Arc::clone(&job),
            job_name: self.job_name.clone(),
            control: Arc::clone(&self.control),
            finished: false,
        };
        Ok(Running {
            job,
            results,
            guard,
            live,
            follower,
        })
    }

    /// Waits for the next thing to happen to a running job.
    async fn wake(running: &mut Running) -> Woken {
        tokio::select! {
            first = running.results.next() => Woken::Ended(first),
            batch = running.live.next_batch() => Woken::Batch(batch),
        }
    }

    /// The job ended with `first` as Ballista's first item: the next phase,
    /// and what to send now, if anything.
    async fn ended(&mut self, first: Option<Result<RecordBatch>>) -> Option<Result<RecordBatch>> {
        let Phase::Running(running) = std::mem::replace(&mut self.phase, Phase::Done) else {
            return None;
        };
        let Running {
            job,
            results,
            mut guard,
            live,
            follower,
        } = *running;
        guard.finished = true;
        let job_id = job.job_id().map(|id| id.to_string()).unwrap_or_default();
        // A failed job reports its own error; only a job that succeeded can
        // carry output read twice, or miss output lost on its way here.
        if matches!(first, Some(Err(_))) {
            return first;
        }
        let lost_on_the_way = live.broken();
        if let Some(reason) = &lost_on_the_way {
            tracing::warn!("job {job_id}: rows handed over by an executor were lost: {reason}");
        }
        let rows_sent = live.rows_read();
        let retried = lost_on_the_way.is_some()
            || (!job_id.is_empty()
                && self
                    .control
                    .job_retried_tasks(&job_id)
                    .await
                    .unwrap_or_else(|e| {
                        tracing::warn!("cannot check job {job_id} for lost work: {e}");
                        false
                    }));
        let release = ReleaseOnDrop {
            job_id: job_id.clone(),
            control: Arc::clone(&self.control),
        };
        if !retried {
            *self.last_job_id.lock().unwrap_or_else(|e| e.into_inner()) = Some(job_id);
            // Rows from other processes may still be on their way.
            let live = Some(live).filter(|live| live.any_partition() || follower.is_some());
            self.phase = Phase::Draining(Box::new(Draining {
                sent: rows_sent,
                live,
                catching_up: follower.map(|follower| follower.catch_up()),
                rest: futures::stream::iter(first).chain(results).boxed(),
                _release: release,
            }));
            return None;
        }
        drop(release);
        self.start_over(&job_id, rows_sent)
    }

    /// The id of the job whose rows are being sent.
    fn last_job(&self) -> String {
        let last = self.last_job_id.lock().unwrap_or_else(|e| e.into_inner());
        last.clone().unwrap_or_default()
    }

    /// After job `job_id` lost work: the query fails when rows were sent,
    /// or when its attempts are spent; else the next attempt is submitted.
    fn start_over(&mut self, job_id: &str, rows_sent: bool) -> Option<Result<RecordBatch>> {
        self.phase = Phase::Done;
        if rows_sent {
            return Some(Err(live_results::rows_already_sent(&format!(
                "job {job_id} lost output on a failed executor"
            ))));
        }
        if self.attempt == MAX_JOB_ATTEMPTS {
            return Some(Err(DataFusionError::Execution(format!(
                "job {job_id} lost work on failed executors in each of \
                 {MAX_JOB_ATTEMPTS} attempts; the cluster is unstable"
            ))));
        }
        tracing::warn!(
            "job {job_id} recovered from a lost executor or shuffle fetch; Ballista \
             may have read some output twice, so the query runs again \
             (attempt {} of {MAX_JOB_ATTEMPTS})",
            self.attempt + 1
        );
        self.phase = Phase::Start;
        None
    }
}
