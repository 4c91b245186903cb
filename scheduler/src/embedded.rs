//! A whole Ballista cluster in one process: one scheduler and N executors, each
//! with its own Flight endpoint and work directory, all on 127.0.0.1.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use tokio::task::JoinHandle;

use crate::error::{ClusterError, Result};
use crate::executor_role::{new_executor_id, run_executor, ExecutorOptions};
use crate::scheduler_role::{nodelay_listener, start_scheduler, Scheduler, SchedulerOptions};
use crate::shuffle_memory::ShuffleMemory;
use crate::task_counts::TaskCounts;
use crate::timings::ClusterTimings;
use crate::view::{job_status_name, ClusterView, ExecutorInfo, JobSummary};
use ballista_core::serde::protobuf::job_status;
use ballista_executor::executor_server::TERMINATING;
use sluice_engine::single_stage::ExecutorCores;

/// How long [`EmbeddedCluster::start`] waits for every executor to register.
const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`EmbeddedCluster::shutdown`] waits for an executor to stop on its
/// own before asking it through the scheduler.
const SIGNAL_GRACE: Duration = Duration::from_millis(500);
/// How long [`EmbeddedCluster::shutdown`] waits for a stopping executor.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a stopped embedded executor waits before it starts again.
const RESTART_PAUSE: Duration = Duration::from_secs(1);
/// Fraction of host memory shared by all embedded executors' memory pools.
const MEMORY_FRACTION: f64 = 0.7;

/// Shape of an embedded cluster.
#[derive(Debug, Clone)]
pub struct EmbeddedClusterOptions {
    /// Number of executors.
    pub executors: usize,
    /// Task slots (vcores) each executor offers.
    pub slots_per_executor: usize,
    /// Parent of the executors' work directories; removed at shutdown.
    pub work_dir: PathBuf,
    /// Failure detection and result retention.
    pub timings: ClusterTimings,
    /// Memory each task slot may use; `None` splits 70% of the host's
    /// memory across all slots.
    pub slot_memory: Option<u64>,
    /// Memory all executors keep stage outputs in (0: Ballista's files),
    /// see [`crate::shuffle_memory`].
    pub shuffle_memory: u64,
}

/// An embedded executor's id, which changes when it is restarted.
type CurrentId = Arc<Mutex<String>>;

/// A running in-process cluster.
pub struct EmbeddedCluster {
    scheduler_url: String,
    scheduler: Scheduler,
    scheduler_port: u16,
    scheduler_task: Mutex<Option<JoinHandle<()>>>,
    /// Each executor's current id (a restarted one has a new id) and task.
    executor_tasks: Mutex<Vec<(CurrentId, JoinHandle<()>)>>,
    task_counts: Arc<TaskCounts>,
    slots: usize,
    work_dir: PathBuf,
    /// Set once shutting down: executors that stop are not started again.
    stopping: Arc<AtomicBool>,
}

impl std::fmt::Debug for EmbeddedCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedCluster")
            .field("scheduler_url", &self.scheduler_url)
            .field("slots", &self.slots)
            .field("work_dir", &self.work_dir)
            .finish_non_exhaustive()
    }
}

impl EmbeddedCluster {
    /// Starts the scheduler and executors and waits until every executor has
    /// registered.
    pub async fn start(options: EmbeddedClusterOptions) -> Result<Self> {
        let executors = options.executors.max(1);
        let slots_per_executor = options.slots_per_executor.max(1);
        // Nothing in the work directory outlives a run: clear what a crash left.
        remove_dir(&options.work_dir);
        std::fs::create_dir_all(&options.work_dir)
            .map_err(|e| ClusterError::io(format!("creating {}", options.work_dir.display()), e))?;

        let localhost: SocketAddr = "127.0.0.1:0".parse().expect("valid address");
        let scheduler = start_scheduler(
            nodelay_listener(localhost)?,
            &SchedulerOptions {
                external_host: "127.0.0.1".into(),
                timings: options.timings,
                tls: None,
                // Every executor runs in this process, on this machine's cores.
                executor_cores: ExecutorCores::Shared,
            },
        )
        .await?;
        let scheduler_port = scheduler.address.port();

        let task_counts = Arc::new(TaskCounts::default());
        let shuffle_memory =
            (options.shuffle_memory > 0).then(|| ShuffleMemory::new(options.shuffle_memory));
        let stopping = Arc::new(AtomicBool::new(false));
        let mut executor_tasks = Vec::with_capacity(executors);
        for index in 0..executors {
            let executor = ExecutorOptions {
                executor_id: new_executor_id(),
                bind_host: "127.0.0.1".into(),
                external_host: "127.0.0.1".into(),
                flight_port: free_port()?,
                grpc_port: free_port()?,
                scheduler_host: "127.0.0.1".into(),
                scheduler_port,
                slots: slots_per_executor,
                work_dir: options.work_dir.join(format!("executor-{index}")),
                memory_fraction: MEMORY_FRACTION / executors as f64,
                slot_memory: options.slot_memory,
                timings: options.timings,
                tls: None,
                shuffle_memory: shuffle_memory.clone(),
            };
            let executor_id = Arc::new(Mutex::new(executor.executor_id.clone()));
            let task = tokio::spawn(supervise_executor(
                executor,
                Arc::clone(&executor_id),
                task_counts.clone(),
                Arc::clone(&stopping),
            ));
            executor_tasks.push((executor_id, task));
        }

        let cluster = Self {
            scheduler_url: format!("http://127.0.0.1:{scheduler_port}"),
            scheduler: scheduler.server,
            scheduler_port,
            scheduler_task: Mutex::new(Some(scheduler.task)),
            executor_tasks: Mutex::new(executor_tasks),
            task_counts,
            slots: executors * slots_per_executor,
            work_dir: options.work_dir,
            stopping,
        };
        cluster.wait_for_executors(executors).await?;
        Ok(cluster)
    }

    async fn wait_for_executors(&self, expected: usize) -> Result<()> {
        let deadline = Instant::now() + REGISTRATION_TIMEOUT;
        loop {
            let registered = self.executors().await?.len();
            if registered >= expected {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(ClusterError::NotReady(format!(
                    "only {registered} of {expected} executors registered with the scheduler \
                     within {REGISTRATION_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Total task slots over all executors.
    pub fn total_slots(&self) -> usize {
        self.slots
    }

    /// The port the scheduler listens on (127.0.0.1).
    pub fn scheduler_port(&self) -> u16 {
        self.scheduler_port
    }

    /// Stops the executors (any still running after a grace period are
    /// aborted), then the scheduler, and removes the work directories.
    pub async fn shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let executors = std::mem::take(&mut *lock(&self.executor_tasks));
        for (executor_id, mut task) in executors {
            // Executors stop by themselves on SIGINT/SIGTERM once their signal
            // listeners are installed. One that is still running (no signal,
            // or one that came before its listener) is asked to stop through
            // the scheduler, then aborted if it does not.
            if tokio::time::timeout(SIGNAL_GRACE, &mut task).await.is_ok() {
                continue;
            }
            let executor_id = lock(&executor_id).clone();
            self.scheduler
                .state
                .executor_manager
                .stop_executor(&executor_id, "sluice is shutting down".into())
                .await;
            if tokio::time::timeout(SHUTDOWN_TIMEOUT, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
        let scheduler = lock(&self.scheduler_task).take();
        if let Some(task) = scheduler {
            task.abort();
            let _ = task.await;
        }
        remove_dir(&self.work_dir);
    }
}

/// Runs an embedded executor, and runs it again whenever it stops before the
/// cluster shuts down: when the scheduler declares it dead (it missed its
/// heartbeats) it asks it to stop, and an embedded cluster must not be left
/// without executors until the server restarts. The new one has a new id and
/// ports, and registers like a new executor; its lost work is the scheduler's
/// to recompute.
async fn supervise_executor(
    mut options: ExecutorOptions,
    current_id: CurrentId,
    counts: Arc<TaskCounts>,
    stopping: Arc<AtomicBool>,
) {
    loop {
        let executor_id = options.executor_id.clone();
        let ended = run_executor(options.clone(), Arc::clone(&counts)).await;
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = ended {
            tracing::error!("executor {executor_id} stopped: {e}");
        }
        // A shutdown (a signal stops executors before `shutdown` runs) sets
        // `stopping` within this pause.
        tokio::time::sleep(RESTART_PAUSE).await;
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        // Ballista marks the whole process as terminating when one executor
        // stops (a global flag), and every executor of the process then
        // heartbeats as terminating: the scheduler would never offer them
        // tasks again. The process is not terminating; its executors are
        // back in service.
        TERMINATING.store(false, Ordering::Release);
        options.executor_id = new_executor_id();
        match (free_port(), free_port()) {
            (Ok(flight), Ok(grpc)) => {
                options.flight_port = flight;
                options.grpc_port = grpc;
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!("cannot restart executor {executor_id}: {e}");
                continue;
            }
        }
        tracing::warn!(
            "restarting embedded executor {executor_id} as {}",
            options.executor_id
        );
        *lock(&current_id) = options.executor_id.clone();
    }
}

#[async_trait]
impl ClusterView for EmbeddedCluster {
    fn scheduler_url(&self) -> &str {
        &self.scheduler_url
    }

    async fn executors(&self) -> Result<Vec<ExecutorInfo>> {
        let states = self
            .scheduler
            .state
            .executor_manager
            .get_executors_state()
            .await
            .map_err(|e| ClusterError::ballista("listing executors", e))?;
        Ok(states
            .into_iter()
            .map(|(meta, heartbeat, _)| ExecutorInfo {
                tasks_completed: Some(self.task_counts.completed(&meta.id)),
                tasks_running: Some(crate::metrics::tasks_running(&meta.id).max(0) as u64),
                executor_id: meta.id,
                host: meta.host,
                flight_port: meta.port,
                task_slots: meta.specification.vcores,
                last_seen: heartbeat.map(|since_epoch| SystemTime::UNIX_EPOCH + since_epoch),
            })
            .collect())
    }

    async fn jobs(&self) -> Result<Vec<JobSummary>> {
        let jobs = self
            .scheduler
            .state
            .task_manager
            .get_all_jobs()
            .await
            .map_err(|e| ClusterError::ballista("listing jobs", e))?;
        Ok(jobs
            .into_iter()
            .map(|job| JobSummary {
                job_id: job.job_id.to_string(),
                status: overview_status(&job.status.status),
                job_name: job.job_name,
                stages: job.num_stages,
            })
            .collect())
    }
}

/// [`JobSummary::status`] of a job in the scheduler's own state.
fn overview_status(status: &Option<job_status::Status>) -> String {
    match status {
        Some(job_status::Status::Queued(_)) => job_status_name("Queued", None),
        Some(job_status::Status::Running(_)) => job_status_name("Running", None),
        Some(job_status::Status::Successful(_)) => job_status_name("Completed", None),
        Some(job_status::Status::Failed(failed)) => job_status_name("Failed", Some(&failed.error)),
        None => "Unknown".into(),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A port on 127.0.0.1 that is free right now.
fn free_port() -> Result<u16> {
    crate::ports::free_port([127, 0, 0, 1].into())
        .map_err(|e| ClusterError::io("finding a free port", e))
}

fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("could not remove {}: {e}", dir.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An executor the scheduler declared dead (it asks it to stop) comes back
    /// as a new executor: the cluster is whole again without a restart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_executor_declared_dead_is_started_again() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = EmbeddedCluster::start(EmbeddedClusterOptions {
            executors: 2,
            slots_per_executor: 1,
            work_dir: dir.path().join("work"),
            timings: ClusterTimings::default(),
            slot_memory: Some(64 * 1024 * 1024),
            shuffle_memory: 64 * 1024 * 1024,
        })
        .await
        .unwrap();
        let ids = |executors: Vec<ExecutorInfo>| -> Vec<String> {
            executors.into_iter().map(|e| e.executor_id).collect()
        };
        let before = ids(cluster.executors().await.unwrap());
        let stopped = before[0].clone();
        cluster
            .scheduler
            .state
            .executor_manager
            .stop_executor(&stopped, "declared dead by a test".into())
            .await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = ids(cluster.executors().await.unwrap());
            if now.len() == 2 && !now.contains(&stopped) {
                assert!(now.contains(&before[1]), "{now:?}");
                break;
            }
            assert!(Instant::now() < deadline, "not back: {now:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        cluster.shutdown().await;
    }
}
