//! The executor role: Ballista's executor with Sluice's configuration, object
//! stores, task counting and failure-detection timings.

use std::path::PathBuf;
use std::sync::Arc;

use ballista_core::utils::GrpcClientConfig;
use ballista_executor::executor_process::{start_executor_process, ExecutorProcessConfig};
use sluice_engine::roles::{
    config_producer, executor_functions, executor_runtime_producer, physical_codec,
};

use crate::error::{ClusterError, Result};
use crate::flight::flight_service_provider;
use crate::scheduler_role::scheduling_policy;
use crate::shuffle_memory::ShuffleMemory;
use crate::task_counts::TaskCounts;
use crate::timings::ClusterTimings;
use crate::tls::ClusterTls;

/// How often an executor looks for job data past the result retention time.
const RESULT_SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Settings of one executor.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// Executor id; must be unique in the cluster.
    pub executor_id: String,
    /// Address the Flight and gRPC services bind to.
    pub bind_host: String,
    /// Host name or address the scheduler, other executors and frontends use
    /// to reach this executor.
    pub external_host: String,
    /// Arrow Flight port (shuffle and result transfer).
    pub flight_port: u16,
    /// gRPC port the scheduler pushes tasks to.
    pub grpc_port: u16,
    /// Scheduler host.
    pub scheduler_host: String,
    /// Scheduler port.
    pub scheduler_port: u16,
    /// Tasks run at once.
    pub slots: usize,
    /// Shuffle files and results (spills go to the system temp dir).
    pub work_dir: PathBuf,
    /// Share of the host's memory for this executor's memory pool, split
    /// evenly across its slots (used without `slot_memory`).
    pub memory_fraction: f64,
    /// Memory each task slot may use: an operator over it spills (sorts,
    /// aggregates) or fails its query with "resources exhausted".
    pub slot_memory: Option<u64>,
    /// Heartbeat interval (the scheduler's timeouts must match).
    pub timings: ClusterTimings,
    /// Mutual TLS for its Flight listener and its clients; it then polls the
    /// scheduler for tasks (see [`crate::tls`]).
    pub tls: Option<ClusterTls>,
    /// Where stage outputs are kept: in this memory (shared by the
    /// executors of a process) or, with `None`, in Ballista's shuffle files.
    pub shuffle_memory: Option<Arc<ShuffleMemory>>,
}

/// A new executor id.
pub fn new_executor_id() -> String {
    ExecutorProcessConfig::default().executor_id
}

/// Ballista's process configuration for `options`, counting completed tasks
/// into `counts`.
fn process_config(options: &ExecutorOptions, counts: &Arc<TaskCounts>) -> ExecutorProcessConfig {
    let id = options.executor_id.clone();
    ExecutorProcessConfig {
        executor_id: id.clone(),
        bind_host: options.bind_host.clone(),
        external_host: Some(options.external_host.clone()),
        port: options.flight_port,
        grpc_port: options.grpc_port,
        scheduler_host: options.scheduler_host.clone(),
        scheduler_port: options.scheduler_port,
        scheduler_connect_timeout_seconds: 10,
        vcores: options.slots.max(1),
        task_scheduling_policy: scheduling_policy(options.tls.is_some()),
        work_dir: Some(options.work_dir.to_string_lossy().into_owned()),
        // Frontends release results once read; the sweeper removes job data
        // nobody released (a frontend that died) after the retention time.
        job_data_ttl_seconds: options.timings.result_retention.as_secs(),
        job_data_clean_up_interval_seconds: RESULT_SWEEP_INTERVAL.as_secs(),
        executor_heartbeat_interval_seconds: options.timings.heartbeat_interval.as_secs(),
        memory_pool_fraction: options.memory_fraction,
        memory_pool_size: options
            .slot_memory
            .map(|bytes| bytes.saturating_mul(options.slots.max(1) as u64)),
        override_config_producer: Some(match &options.tls {
            Some(tls) => tls.config_producer(),
            None => config_producer(),
        }),
        override_create_grpc_client_endpoint: options
            .tls
            .as_ref()
            .map(|tls| tls.endpoint_override(GrpcClientConfig::default())),
        override_physical_codec: Some(physical_codec()),
        override_function_registry: Some(executor_functions()),
        override_runtime_producer: Some(executor_runtime_producer(std::env::temp_dir())),
        override_execution_engine: Some(counts.engine(&id, options.shuffle_memory.clone())),
        override_arrow_flight_service: Some(flight_service_provider(
            id.clone(),
            counts.counter(&id),
            options.shuffle_memory.clone(),
            options.tls.clone(),
        )),
        ..ExecutorProcessConfig::default()
    }
}

/// Runs an executor until it is stopped (SIGINT/SIGTERM, or the scheduler's
/// stop request), counting its completed tasks into `counts`.
pub async fn run_executor(options: ExecutorOptions, counts: Arc<TaskCounts>) -> Result<()> {
    std::fs::create_dir_all(&options.work_dir)
        .map_err(|e| ClusterError::io(format!("creating {}", options.work_dir.display()), e))?;
    if let Some(memory) = &options.shuffle_memory {
        memory.start_sweeper();
    }
    let config = process_config(&options, &counts);
    start_executor_process(Arc::new(config))
        .await
        .map_err(|e| ClusterError::ballista(format!("executor {}", options.executor_id), e))
}
