//! A scheduler in another process, as a frontend started with
//! `sluice serve --scheduler HOST:PORT` sees it: executors and jobs from the
//! scheduler's REST API (served on its gRPC port), completed-task counts from
//! each executor's Flight service.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_core::serde::protobuf::{CancelJobParams, CleanJobDataParams, GetJobMetricsParams};
use datafusion::error::DataFusionError;
use serde::Deserialize;
use sluice_engine::explain_analyze::stage_executors;
use sluice_engine::live_results::LiveJob;
use sluice_engine::recovery::{JobControl, ResultFollower};
use tonic::transport::{Channel, Endpoint};

use crate::error::{ClusterError, Result};
use crate::flight::fetch_task_counts;
use crate::live_follow::{self, ExecutorFlight};
use crate::tls::ClusterTls;
use crate::view::{job_status_name, ClusterView, ExecutorInfo, JobSummary, StageProgress};

/// Task failure reasons (as the REST API names them) that mean output was
/// lost and recomputed: the cases where Ballista may read output twice.
const LOST_WORK_REASONS: &[&str] = &["ExecutorLost", "ResultLost", "FetchPartitionError"];

/// How often, and how far apart, a job to cancel is looked for by name.
const CANCEL_LOOKUPS: usize = 10;
const CANCEL_LOOKUP_INTERVAL: Duration = Duration::from_millis(300);

/// Bytes of a result stream from an executor in flight before the frontend
/// has read them.
const FLIGHT_STREAM_WINDOW: u32 = 8 * 1024 * 1024;

/// How long a REST call to the scheduler may take.
const REST_TIMEOUT: Duration = Duration::from_secs(5);

/// A scheduler reached over the network.
#[derive(Debug, Clone)]
pub struct RemoteScheduler {
    scheduler_url: String,
    http: reqwest::Client,
    /// Connects on first use, reconnects after failures.
    grpc: Channel,
    /// Mutual TLS to the scheduler and the executors, when the cluster uses it.
    tls: Option<ClusterTls>,
    /// Channels to the executors' Flight ports, by address.
    flight_channels: Arc<Mutex<HashMap<(String, u16), Channel>>>,
    /// Whether the frontend follows results on the executors while jobs run
    /// ([`live_follow`]): when they are in other processes.
    follows_results: bool,
}

#[derive(Deserialize)]
struct ExecutorResponse {
    id: String,
    host: String,
    port: u16,
    last_seen: Option<u64>,
    specification: Specification,
}

#[derive(Deserialize)]
struct Specification {
    vcores: u32,
}

#[derive(Deserialize)]
struct JobResponse {
    job_id: String,
    job_name: String,
    num_stages: usize,
    /// `Queued`, `Running`, `Completed` or `Failed`.
    status: String,
    /// `Failed: <error>` for failed jobs.
    job_status: String,
}

#[derive(Deserialize)]
struct StagesResponse {
    stages: Vec<StageResponse>,
}

#[derive(Deserialize)]
struct StageResponse {
    #[serde(default)]
    stage_id: String,
    #[serde(default)]
    stage_status: String,
    #[serde(default)]
    input_rows: u64,
    #[serde(default)]
    output_rows: u64,
    #[serde(default)]
    elapsed_compute: Option<String>,
    #[serde(default)]
    stage_plan: Option<String>,
    tasks: Vec<Option<TaskResponse>>,
}

impl StageResponse {
    /// How many of its tasks have `status` (`"Running"`, `"Successful"`).
    fn tasks_in(&self, status: &str) -> usize {
        self.tasks
            .iter()
            .flatten()
            .filter(|task| task.status.as_str() == Some(status))
            .count()
    }
}

/// The stages a stage plan reads from: its shuffle readers' upstream stages
/// (`ShuffleReaderExec: upstream_stage: 2, …`).
fn upstream_stages(plan: &str) -> Vec<usize> {
    let mut stages: Vec<usize> = plan
        .match_indices("upstream_stage: ")
        .filter_map(|(at, marker)| {
            let digits: String = plan[at + marker.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .collect();
    stages.sort_unstable();
    stages.dedup();
    stages
}

#[derive(Deserialize)]
struct TaskResponse {
    /// `"Running"`, `"Successful"` or `{"Failed": {…}}`.
    status: serde_json::Value,
}

impl RemoteScheduler {
    /// Cancels job `job_id`: the scheduler stops its tasks on the executors.
    async fn cancel(&self, job_id: &str) -> datafusion::error::Result<()> {
        SchedulerGrpcClient::new(self.grpc.clone())
            .cancel_job(CancelJobParams {
                job_id: job_id.to_string(),
            })
            .await
            .map_err(|e| DataFusionError::Execution(format!("cancelling job {job_id}: {e}")))?;
        tracing::info!("cancelled job {job_id}");
        Ok(())
    }

    /// The scheduler at `host:port`, reached over mutual TLS when `tls` is
    /// given.
    pub fn new(host: &str, port: u16, tls: Option<ClusterTls>) -> Result<Self> {
        let mut http = reqwest::Client::builder()
            .timeout(REST_TIMEOUT)
            .connect_timeout(Duration::from_secs(2));
        if let Some(tls) = &tls {
            http = tls.http_client(http)?;
        }
        let http = http
            .build()
            .map_err(|e| ClusterError::Unreachable(format!("building an HTTP client: {e}")))?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let scheduler_url = format!("{scheme}://{host}:{port}");
        let mut grpc = Endpoint::from_shared(scheduler_url.clone()).map_err(|e| {
            ClusterError::Unreachable(format!("scheduler address {host}:{port}: {e}"))
        })?;
        if let Some(tls) = &tls {
            grpc = tls.endpoint(grpc)?;
        }
        let grpc = grpc
            .connect_timeout(Duration::from_secs(2))
            .timeout(REST_TIMEOUT)
            .connect_lazy();
        Ok(Self {
            scheduler_url,
            http,
            grpc,
            tls,
            flight_channels: Arc::default(),
            follows_results: false,
        })
    }

    /// The same scheduler, its jobs' results followed on executors in other
    /// processes while they run ([`JobControl::follow_result`]).
    pub fn following_results(self) -> Self {
        Self {
            follows_results: true,
            ..self
        }
    }

    /// The Flight services of the executors the scheduler knows.
    async fn executor_flights(&self) -> Result<Vec<ExecutorFlight>> {
        let executors: Vec<ExecutorResponse> = self.get("/api/executors").await?;
        executors
            .into_iter()
            .map(|executor| {
                Ok(ExecutorFlight {
                    address: format!("{}:{}", executor.host, executor.port),
                    channel: self.flight_channel(&executor.host, executor.port)?,
                })
            })
            .collect()
    }

    /// A channel to the Flight port `host:port`, connected on first use and
    /// kept.
    fn flight_channel(&self, host: &str, port: u16) -> Result<Channel> {
        let mut channels = self
            .flight_channels
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get(&(host.to_string(), port)) {
            return Ok(channel.clone());
        }
        let mut endpoint = Endpoint::from_shared(format!("http://{host}:{port}"))
            .map_err(|e| ClusterError::Unreachable(format!("executor {host}:{port}: {e}")))?;
        if let Some(tls) = &self.tls {
            endpoint = tls.endpoint(endpoint)?;
        }
        // Result streams carry batches of a megabyte or two: windows of a
        // few batches keep them flowing instead of waiting for a window
        // update after each (h2's default stream window is 64 KiB).
        let channel = endpoint
            .connect_timeout(Duration::from_secs(2))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(20))
            .initial_stream_window_size(Some(FLIGHT_STREAM_WINDOW))
            .initial_connection_window_size(Some(4 * FLIGHT_STREAM_WINDOW))
            .connect_lazy();
        channels.insert((host.to_string(), port), channel.clone());
        Ok(channel)
    }

    /// The stages of job `job_id` as the scheduler knows them (it forgets
    /// a job a while after it ended), with the executors that ran each
    /// finished stage from the job's task metrics.
    pub async fn job_stages(&self, job_id: &str) -> Result<Vec<StageProgress>> {
        let response: StagesResponse = self.get(&format!("/api/job/{job_id}/stages")).await?;
        let metrics = SchedulerGrpcClient::new(self.grpc.clone())
            .get_job_metrics(GetJobMetricsParams {
                job_id: job_id.to_string(),
            })
            .await
            .map(|response| response.into_inner().stages)
            .unwrap_or_default();
        let mut stages: Vec<StageProgress> = response
            .stages
            .iter()
            .map(|stage| {
                let stage_id = stage.stage_id.parse().unwrap_or_default();
                StageProgress {
                    stage_id,
                    status: stage.stage_status.clone(),
                    tasks: stage.tasks.iter().flatten().count(),
                    tasks_done: stage.tasks_in("Successful"),
                    tasks_running: stage.tasks_in("Running"),
                    input_rows: stage.input_rows,
                    output_rows: stage.output_rows,
                    elapsed_compute: stage.elapsed_compute.clone(),
                    inputs: stage
                        .stage_plan
                        .as_deref()
                        .map(upstream_stages)
                        .unwrap_or_default(),
                    executors: metrics
                        .iter()
                        .find(|m| m.stage_id as usize == stage_id)
                        .map(stage_executors)
                        .unwrap_or_default(),
                    plan: stage.stage_plan.clone(),
                }
            })
            .collect();
        stages.sort_by_key(|stage| stage.stage_id);
        Ok(stages)
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let url = format!("{}{path}", self.scheduler_url);
        let unreachable = |e: &dyn std::fmt::Display| {
            ClusterError::Unreachable(format!("scheduler at {}: {e}", self.scheduler_url))
        };
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| unreachable(&e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| unreachable(&e))?;
        if !status.is_success() {
            return Err(unreachable(&format!("GET {path} answered {status}")));
        }
        serde_json::from_slice(&body).map_err(|e| unreachable(&format!("GET {path}: {e}")))
    }
}

#[async_trait]
impl JobControl for RemoteScheduler {
    async fn follow_result(&self, key: &str, job: Arc<LiveJob>) -> Option<Box<dyn ResultFollower>> {
        if !self.follows_results {
            return None;
        }
        match self.executor_flights().await {
            Ok(executors) => Some(live_follow::follow(executors, key, job).await),
            Err(e) => {
                tracing::warn!("cannot follow result {key} on the executors: {e}");
                None
            }
        }
    }

    async fn job_retried_tasks(&self, job_id: &str) -> datafusion::error::Result<bool> {
        let response: StagesResponse = self
            .get(&format!("/api/job/{job_id}/stages"))
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(response
            .stages
            .iter()
            .flat_map(|stage| stage.tasks.iter().flatten())
            .filter_map(|task| task.status.get("Failed")?.get("reason")?.as_str())
            .any(|reason| LOST_WORK_REASONS.contains(&reason)))
    }

    async fn release_job(&self, job_id: &str) -> datafusion::error::Result<()> {
        let failed = |e: &dyn std::fmt::Display| {
            DataFusionError::Execution(format!("releasing job {job_id}: {e}"))
        };
        SchedulerGrpcClient::new(self.grpc.clone())
            .clean_job_data(CleanJobDataParams {
                job_id: job_id.to_string(),
                remove_stage_ids: vec![],
            })
            .await
            .map_err(|e| failed(&e))?;
        Ok(())
    }

    async fn cancel_job(
        &self,
        job_id: Option<&str>,
        job_name: &str,
    ) -> datafusion::error::Result<()> {
        let mut cancelled = 0;
        if let Some(job_id) = job_id {
            self.cancel(job_id).await?;
            cancelled += 1;
        }
        // A job whose id the client has not learnt yet (Ballista reports it
        // with the job's first status change) is found by its name; one whose
        // submission is still on its way shows up within moments.
        for _ in 0..CANCEL_LOOKUPS {
            let jobs = ClusterView::jobs(self)
                .await
                .map_err(|e| DataFusionError::Execution(e.to_string()))?;
            for job in jobs.iter().filter(|job| {
                job.job_name == job_name
                    && Some(job.job_id.as_str()) != job_id
                    && matches!(job.status.as_str(), "Queued" | "Running")
            }) {
                self.cancel(&job.job_id).await?;
                cancelled += 1;
            }
            if cancelled > 0 {
                break;
            }
            tokio::time::sleep(CANCEL_LOOKUP_INTERVAL).await;
        }
        Ok(())
    }
}

#[async_trait]
impl ClusterView for RemoteScheduler {
    fn scheduler_url(&self) -> &str {
        &self.scheduler_url
    }

    async fn executors(&self) -> Result<Vec<ExecutorInfo>> {
        let executors: Vec<ExecutorResponse> = self.get("/api/executors").await?;
        let counts =
            futures::future::join_all(executors.iter().map(|executor| {
                fetch_task_counts(&executor.host, executor.port, self.tls.as_ref())
            }))
            .await;
        Ok(executors
            .into_iter()
            .zip(counts)
            .map(|(executor, counts)| {
                let counts = counts
                    .inspect_err(|e| {
                        tracing::debug!("task counts of executor {}: {e}", executor.id)
                    })
                    .ok();
                (executor, counts)
            })
            .map(|(executor, counts)| ExecutorInfo {
                tasks_completed: counts.map(|counts| counts.completed),
                tasks_running: counts.map(|counts| counts.running),
                executor_id: executor.id,
                host: executor.host,
                flight_port: executor.port,
                task_slots: executor.specification.vcores,
                last_seen: executor
                    .last_seen
                    .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms)),
            })
            .collect())
    }

    async fn jobs(&self) -> Result<Vec<JobSummary>> {
        let jobs: Vec<JobResponse> = self.get("/api/jobs").await?;
        Ok(jobs
            .into_iter()
            .map(|job| JobSummary {
                job_id: job.job_id,
                job_name: job.job_name,
                stages: job.num_stages,
                status: job_status_name(&job.status, job.job_status.strip_prefix("Failed: ")),
            })
            .collect())
    }
}
