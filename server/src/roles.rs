//! `sluice scheduler` and `sluice executor`: one cluster role per process.

use std::io::Write;
use std::sync::Arc;

use sluice_scheduler::executor_role::{new_executor_id, run_executor, ExecutorOptions};
use sluice_scheduler::scheduler_role::{nodelay_listener, start_scheduler, SchedulerOptions};
use sluice_scheduler::shuffle_memory::ShuffleMemory;
use sluice_scheduler::task_counts::TaskCounts;

use sluice_scheduler::RemoteScheduler;

use crate::config::{ExecutorConfig, SchedulerConfig};
use crate::error::Result;
use crate::http::serve_http;
use crate::serve::shutdown_signal;
use sluice_engine::single_stage::ExecutorCores;

/// Runs a scheduler until SIGINT or SIGTERM.
pub async fn scheduler(config: SchedulerConfig) -> Result<()> {
    let shutdown = shutdown_signal()?;
    let listener = nodelay_listener(config.listen)?;
    let scheduler = start_scheduler(
        listener,
        &SchedulerOptions {
            external_host: config.external_host.clone(),
            timings: config.timings,
            tls: config.tls.clone(),
            executor_cores: ExecutorCores::Separate,
        },
    )
    .await?;
    println!(
        "sluice scheduler ready on {} (executors and frontends use {}:{}{})",
        scheduler.address,
        config.external_host,
        scheduler.address.port(),
        if config.tls.is_some() {
            ", mutual TLS"
        } else {
            ""
        }
    );
    let _ = std::io::stdout().flush();
    // Its own view of the cluster, through its REST API, as frontends see it.
    let http = match config.http {
        Some(address) => {
            let view = RemoteScheduler::new(
                &config.external_host,
                scheduler.address.port(),
                config.tls.clone(),
            )?;
            let http = serve_http(address, Some(Arc::new(view)), None).await?;
            println!(
                "sluice scheduler metrics at http://{}/metrics",
                http.address
            );
            Some(http)
        }
        None => None,
    };
    let task = scheduler.task;
    tokio::select! {
        _ = shutdown => tracing::info!("scheduler shutting down"),
        _ = task => tracing::error!("scheduler stopped serving"),
    }
    drop(http);
    Ok(())
}

/// Runs an executor until SIGINT or SIGTERM (Ballista's executor handles the
/// signals itself and deregisters from the scheduler).
pub async fn executor(config: ExecutorConfig) -> Result<()> {
    let executor_id = new_executor_id();
    let (work_dir, _temporary) = match &config.work_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let dir = tempfile::Builder::new()
                .prefix(&format!("sluice-executor-{executor_id}-"))
                .tempdir()
                .map_err(|e| crate::error::ServerError::io("creating a work directory", e))?;
            (dir.path().to_path_buf(), Some(dir))
        }
    };
    println!(
        "sluice executor {executor_id} starting: flight {}:{}, {} slots, scheduler {}:{}{}, work dir {}",
        config.external_host,
        config.flight_port,
        config.slots,
        config.scheduler.0,
        config.scheduler.1,
        if config.tls.is_some() {
            " over mutual TLS"
        } else {
            ""
        },
        work_dir.display()
    );
    let _ = std::io::stdout().flush();
    let options = ExecutorOptions {
        executor_id,
        bind_host: config.bind_host,
        external_host: config.external_host,
        flight_port: config.flight_port,
        grpc_port: config.grpc_port,
        scheduler_host: config.scheduler.0,
        scheduler_port: config.scheduler.1,
        slots: config.slots,
        work_dir,
        memory_fraction: 0.7,
        slot_memory: config.query_memory,
        timings: config.timings,
        tls: config.tls,
        shuffle_memory: (config.shuffle_memory > 0)
            .then(|| ShuffleMemory::new(config.shuffle_memory)),
    };
    let _http = match config.http {
        Some(address) => {
            let http = serve_http(address, None, None).await?;
            println!("sluice executor metrics at http://{}/metrics", http.address);
            Some(http)
        }
        None => None,
    };
    run_executor(options, Arc::new(TaskCounts::default())).await?;
    Ok(())
}
