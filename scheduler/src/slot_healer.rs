//! Gives back task slots that Ballista's scheduler lost track of.
//!
//! Ballista 55 returns an executor's slots when a task reports its status,
//! counting the slots the task held from the job's execution graph. When an
//! executor dies and a running stage is rolled back, the tasks of that stage
//! still running elsewhere are cancelled, and their status reports find no
//! running stage to look the slots up in: the slots are never returned. With
//! one slot per executor the job then waits forever for a slot (seen in CI:
//! a recomputed task pending, both surviving executors idle, nothing running).
//!
//! The healer watches for exactly that state: work waiting in a running stage
//! while an executor runs none of the job's tasks, seen twice in a row. It then
//! drops the executor from the scheduler's registry; the executor's next
//! heartbeat registers it again with all its slots, and registration offers
//! the waiting work. Nothing the executor holds (shuffle output, results) is
//! touched, and no task is reset: the executor runs no task at that moment.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use ballista_scheduler::state::execution_stage::ExecutionStage;

use crate::scheduler_role::Scheduler;

/// How often the healer looks.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Watches `scheduler` for lost slots, forever. Executors whose last
/// heartbeat is older than two `heartbeat_interval`s are left alone: they may
/// be dead, which the scheduler's own expiry handles.
pub async fn heal_lost_slots(scheduler: Scheduler, heartbeat_interval: Duration) {
    let mut suspects = HashSet::new();
    let mut ticks = tokio::time::interval(CHECK_INTERVAL);
    loop {
        ticks.tick().await;
        let idle = idle_executors_while_work_waits(&scheduler, heartbeat_interval * 2).await;
        for executor_id in idle.intersection(&suspects) {
            tracing::warn!(
                "executor {executor_id} runs no task while work waits for a slot: the \
                 scheduler lost its slots (a stage was rolled back after an executor died); \
                 registering it again"
            );
            if let Err(e) = scheduler
                .state
                .executor_manager
                .remove_executor(executor_id, Some("lost task slots".into()))
                .await
            {
                tracing::warn!("could not re-register executor {executor_id}: {e}");
            }
        }
        suspects = idle.difference(&suspects).cloned().collect();
    }
}

/// Live executors (heartbeat within `fresh`) running no task while some
/// running stage has tasks waiting for a slot; empty when no work waits.
async fn idle_executors_while_work_waits(
    scheduler: &Scheduler,
    fresh: Duration,
) -> HashSet<String> {
    let mut busy = HashSet::new();
    let mut waiting = false;
    let jobs = scheduler.state.task_manager.get_running_job_cache();
    for job in jobs.values() {
        let graph = job.execution_graph.read().await;
        for stage in graph.stages().values() {
            if let ExecutionStage::Running(stage) = stage {
                busy.extend(
                    stage
                        .running_tasks()
                        .into_iter()
                        .map(|(_, _, executor)| executor),
                );
                waiting |= !stage.pending.is_empty();
            }
        }
    }
    if !waiting {
        return HashSet::new();
    }
    match scheduler.state.executor_manager.get_executors_state().await {
        Ok(executors) => {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            executors
                .into_iter()
                .filter(|(_, heartbeat, _)| {
                    heartbeat.is_some_and(|seen| now.saturating_sub(seen) <= fresh)
                })
                .map(|(metadata, _, _)| metadata.id)
                .filter(|id| !busy.contains(id))
                .collect()
        }
        Err(e) => {
            tracing::debug!("listing executors: {e}");
            HashSet::new()
        }
    }
}
