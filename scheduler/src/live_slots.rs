//! The task slots of the executors alive now, which the scheduler's planner
//! reads to decide whether a job is split into stages
//! ([`sluice_engine::single_stage::LiveSlots`]).

use std::time::{Duration, SystemTime};

use sluice_engine::single_stage::LiveSlots;

use crate::scheduler_role::Scheduler;

/// How often the count is refreshed.
const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// Keeps `live` at the task slots of `scheduler`'s executors whose last
/// heartbeat is within `fresh`, forever.
pub async fn track_live_slots(scheduler: Scheduler, live: LiveSlots, fresh: Duration) {
    let mut ticks = tokio::time::interval(REFRESH_INTERVAL);
    loop {
        ticks.tick().await;
        let Ok(executors) = scheduler.state.executor_manager.get_executors_state().await else {
            continue;
        };
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let slots = executors
            .iter()
            .filter(|(_, heartbeat, _)| {
                heartbeat.is_some_and(|seen| now.saturating_sub(seen) <= fresh)
            })
            .map(|(metadata, _, _)| metadata.specification.vcores as usize)
            .sum();
        live.set(slots);
    }
}
