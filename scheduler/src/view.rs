//! What the frontend shows about the cluster (`sluice.executors`, the stage
//! counts in `sluice.queries`), whether the cluster runs in the same process
//! ([`crate::EmbeddedCluster`]) or elsewhere ([`crate::RemoteScheduler`]).

use std::time::SystemTime;

use async_trait::async_trait;

use crate::error::Result;

/// One executor as the scheduler sees it, plus its completed-task count.
#[derive(Debug, Clone)]
pub struct ExecutorInfo {
    /// Ballista executor id.
    pub executor_id: String,
    /// Host the executor's Flight service listens on.
    pub host: String,
    /// Port of the executor's Arrow Flight service (shuffle and results).
    pub flight_port: u16,
    /// Task slots (vcores) the executor offers.
    pub task_slots: u32,
    /// Tasks the executor has completed successfully; `None` when the
    /// executor did not answer.
    pub tasks_completed: Option<u64>,
    /// Tasks it is running now; `None` when it did not answer.
    pub tasks_running: Option<u64>,
    /// Time of the executor's last heartbeat.
    pub last_seen: Option<SystemTime>,
}

/// A Ballista job as the scheduler knows it.
#[derive(Debug, Clone)]
pub struct JobSummary {
    /// Ballista job id.
    pub job_id: String,
    /// Job name (Sluice sets it to the query id).
    pub job_name: String,
    /// Number of stages the job was split into.
    pub stages: usize,
    /// `Queued`, `Running`, `Completed`, `Failed` or `Cancelled`.
    pub status: String,
}

/// One stage of a job as far as it has run: what the web UI shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageProgress {
    /// Stage id within the job.
    pub stage_id: usize,
    /// `UnResolved`, `Resolved`, `Running`, `Successful` or `Failed`.
    pub status: String,
    /// Tasks launched so far (all of them once the stage finished).
    pub tasks: usize,
    /// Tasks that finished successfully.
    pub tasks_done: usize,
    /// Tasks running now.
    pub tasks_running: usize,
    /// Rows the stage read (its scans' and shuffle readers' output).
    pub input_rows: u64,
    /// Rows the stage wrote.
    pub output_rows: u64,
    /// Compute time across its tasks, as the scheduler formats it.
    pub elapsed_compute: Option<String>,
    /// Stages whose output this stage reads.
    pub inputs: Vec<usize>,
    /// Executors that ran its tasks, with how many each (known once the
    /// stage has finished).
    pub executors: Vec<(String, usize)>,
    /// The stage's plan, once it started.
    pub plan: Option<String>,
}

impl StageProgress {
    /// Whether every task of the stage finished.
    pub fn is_done(&self) -> bool {
        self.status == "Successful"
    }
}

/// The [`JobSummary::status`] of a job whose Ballista status is `status` and,
/// if it failed, whose error is `error` (Ballista fails cancelled jobs with
/// the error `Cancelled`).
pub fn job_status_name(status: &str, error: Option<&str>) -> String {
    match (status, error) {
        ("Failed", Some("Cancelled")) => "Cancelled".into(),
        (status, _) => status.into(),
    }
}

/// Read access to a cluster's live state.
#[async_trait]
pub trait ClusterView: Send + Sync + std::fmt::Debug {
    /// The scheduler's gRPC address, `http://host:port`.
    fn scheduler_url(&self) -> &str;
    /// The executors registered with the scheduler (dead ones drop out once
    /// their heartbeat times out).
    async fn executors(&self) -> Result<Vec<ExecutorInfo>>;
    /// The jobs the scheduler still remembers.
    async fn jobs(&self) -> Result<Vec<JobSummary>>;
}
