//! The scheduler role: Ballista's scheduler serving gRPC (and its REST API) on
//! one port, planning jobs with Sluice's configuration and object stores.

use std::net::SocketAddr;
use std::sync::Arc;

use ballista_core::config::TaskSchedulingPolicy;
use ballista_core::utils::GrpcClientConfig;
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::{SchedulerConfig, TaskDistributionPolicy};
use ballista_scheduler::scheduler_process::{create_scheduler, start_grpc_service_with_listener};
use ballista_scheduler::scheduler_server::SchedulerServer;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use sluice_engine::roles::{config_producer, physical_codec, scheduler_session_builder};
use sluice_engine::single_stage::{ExecutorCores, LiveSlots};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::error::{ClusterError, Result};
use crate::live_slots::track_live_slots;
use crate::slot_healer::heal_lost_slots;
use crate::timings::ClusterTimings;
use crate::tls::{serve_tls, ClusterTls};

/// Ballista's scheduler as Sluice runs it.
pub type Scheduler = SchedulerServer<LogicalPlanNode, PhysicalPlanNode>;

/// Settings of a scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Host name or address executors and frontends use to reach it.
    pub external_host: String,
    /// Failure detection and result retention.
    pub timings: ClusterTimings,
    /// Mutual TLS for its listener and its clients; executors then poll for
    /// tasks (see [`crate::tls`]).
    pub tls: Option<ClusterTls>,
    /// Whether its executors share one process's cores (the embedded
    /// cluster), which decides when a job is split into stages.
    pub executor_cores: ExecutorCores,
}

/// A scheduler serving in the background.
pub struct RunningScheduler {
    /// The scheduler's state, for in-process callers.
    pub server: Scheduler,
    /// The address it listens on.
    pub address: SocketAddr,
    /// The serving task (with the [`crate::slot_healer`] and
    /// [`crate::live_slots`]); ends when aborted
    /// or when serving fails.
    pub task: JoinHandle<()>,
}

/// Starts a scheduler serving on `listener` (see [`nodelay_listener`]).
pub async fn start_scheduler(
    listener: TcpListener,
    options: &SchedulerOptions,
) -> Result<RunningScheduler> {
    let address = listener
        .local_addr()
        .map_err(|e| ClusterError::io("reading the scheduler address", e))?;
    let timings = options.timings;
    let live_slots = LiveSlots::default();
    let config = SchedulerConfig {
        bind_host: address.ip().to_string(),
        external_host: options.external_host.clone(),
        bind_port: address.port(),
        scheduling_policy: scheduling_policy(options.tls.is_some()),
        task_distribution: TaskDistributionPolicy::RoundRobin,
        executor_timeout_seconds: timings.executor_timeout.as_secs(),
        expire_dead_executor_interval_seconds: timings.expiry_check_interval.as_secs(),
        no_executors_grace_period_seconds: timings.executor_timeout.as_secs(),
        // Final results stay until the frontend releases them after its
        // client read them (executors sweep unreleased ones, see
        // `ClusterTimings::result_retention`); intermediate shuffle files go
        // as soon as the job succeeds.
        finished_job_data_clean_up_interval_seconds: 0,
        finished_job_state_clean_up_interval_seconds: timings.job_state_retention.as_secs().max(1),
        override_config_producer: Some(config_producer()),
        override_session_builder: Some(scheduler_session_builder(
            options.executor_cores,
            live_slots.clone(),
        )),
        override_physical_codec: Some(physical_codec()),
        override_create_grpc_client_endpoint: options
            .tls
            .as_ref()
            .map(|tls| tls.endpoint_override(GrpcClientConfig::default())),
        ..SchedulerConfig::default()
    };
    let cluster = BallistaCluster::new_memory(
        config.scheduler_endpoint(),
        scheduler_session_builder(options.executor_cores, live_slots.clone()),
        config_producer(),
    );
    let server = create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, Arc::new(config))
        .await
        .map_err(|e| ClusterError::ballista("creating the scheduler", e))?;
    // With TLS, Ballista serves plaintext on loopback behind a TLS relay on
    // the public listener.
    let (ballista_listener, relay) = match &options.tls {
        Some(tls) => {
            let internal = nodelay_listener(SocketAddr::from(([127, 0, 0, 1], 0)))?;
            let backend = internal
                .local_addr()
                .map_err(|e| ClusterError::io("reading the scheduler's loopback address", e))?;
            (
                internal,
                Some(tokio::spawn(serve_tls(listener, tls.clone(), backend))),
            )
        }
        None => (listener, None),
    };
    let task = {
        let server = server.clone();
        tokio::spawn(async move {
            let _relay = relay.map(AbortOnDrop);
            tokio::select! {
                served = start_grpc_service_with_listener(ballista_listener, server.clone()) => {
                    if let Err(e) = served {
                        tracing::error!("scheduler stopped: {e}");
                    }
                }
                _ = heal_lost_slots(server.clone(), timings.heartbeat_interval) => {}
                _ = track_live_slots(server, live_slots, timings.executor_timeout) => {}
            }
        })
    };
    Ok(RunningScheduler {
        server,
        address,
        task,
    })
}

/// How executors get tasks: pushed by the scheduler, or polled for under
/// TLS, where Ballista's executor offers no way to secure its task service.
pub fn scheduling_policy(tls: bool) -> TaskSchedulingPolicy {
    if tls {
        TaskSchedulingPolicy::PullStaged
    } else {
        TaskSchedulingPolicy::PushStaged
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A listener on `address` whose accepted connections have Nagle's algorithm
/// off. Ballista serves the scheduler through `axum::serve`, which leaves it
/// on; Linux copies TCP_NODELAY from the listening socket to accepted ones, so
/// setting it here removes ~40 ms delayed-ACK stalls on small gRPC replies.
pub fn nodelay_listener(address: SocketAddr) -> Result<TcpListener> {
    let bind = || -> std::io::Result<TcpListener> {
        let socket = if address.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.set_nodelay(true)?;
        socket.bind(address)?;
        socket.listen(1024)
    };
    bind().map_err(|e| ClusterError::io(format!("listening on {address}"), e))
}
