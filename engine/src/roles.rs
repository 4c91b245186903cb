//! What the scheduler and executors need to plan and run the plans a frontend
//! sends: the same configuration extensions (so no session setting is dropped
//! on the way) and the same object stores.

use std::path::PathBuf;
use std::sync::Arc;

use ballista_core::extension::{
    ballista_aggregate_functions, ballista_scalar_functions, ballista_window_functions,
    SessionConfigExt,
};
use ballista_core::{ConfigProducer, RuntimeProducer};
use datafusion::error::Result;
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::prelude::SessionConfig;
use datafusion_proto::physical_plan::PhysicalExtensionCodec;

use crate::codec::SluicePhysicalCodec;
use crate::optimizer_rules::with_sluice_rules;
use crate::options::SluiceOptions;
use crate::parallel_write::ParallelWrites;
use crate::pg_settings::PgSettings;
use crate::single_stage::{
    stage_partitions, ExecutorCores, LiveSlots, PhysicalRule, SingleStagePlanner,
};
use crate::staged_join_order::with_join_orders_hidden;
use crate::storage::{runtime_env, StorageOptions};
use crate::value_limits::{cap_all, capped};
use ballista_core::registry::BallistaFunctionRegistry;

/// The configuration every role starts from: Ballista's defaults and
/// restrictions plus Sluice's extensions. Executors and the scheduler rebuild a
/// job's configuration from this and the job's settings; a key whose extension
/// is not registered here would be dropped without a word.
pub fn base_config() -> SessionConfig {
    SessionConfig::new_with_ballista()
        .with_option_extension(StorageOptions::default())
        .with_option_extension(PgSettings::default())
        .with_option_extension(SluiceOptions::default())
}

/// The codec the scheduler encodes task plans with and executors decode them
/// with: Ballista's, plus Sluice's single-stage plans.
pub fn physical_codec() -> Arc<dyn PhysicalExtensionCodec> {
    Arc::new(SluicePhysicalCodec::default())
}

/// [`base_config`] as the producer Ballista's roles take.
pub fn config_producer() -> ConfigProducer {
    Arc::new(base_config)
}

/// The scheduler's session builder for a cluster whose executors share cores
/// as `executor_cores` says and have `live_slots`: [`scheduler_session`] for
/// each job.
pub fn scheduler_session_builder(
    executor_cores: ExecutorCores,
    live_slots: LiveSlots,
) -> Arc<dyn Fn(SessionConfig) -> Result<SessionState> + Send + Sync> {
    Arc::new(move |config| scheduler_session(config, executor_cores, live_slots.clone()))
}

/// The scheduler's session for a job: its configuration, Ballista's optimizer
/// rules and functions, object stores from the job's storage options (the
/// scheduler lists a table's files while planning), the planner that runs
/// jobs as a single stage where stages would not pay, and writes by every
/// executor ([`ParallelWrites`]).
pub fn scheduler_session(
    config: SessionConfig,
    executor_cores: ExecutorCores,
    live_slots: LiveSlots,
) -> Result<SessionState> {
    // A job's stages are planned, and then cut apart by Ballista, with the
    // session's `target_partitions`: Ballista regroups the files of a scan
    // under a filter to that many tasks, so a job sent by a frontend that
    // counted one slot scanned on one executor. Single stages keep the
    // frontend's count.
    let single_stage_partitions = config.target_partitions();
    let config = match stage_partitions(&config, &live_slots) {
        0 => config,
        partitions => config.with_target_partitions(partitions),
    };
    let runtime = runtime_env(&config, None)?;
    let physical_rules: Vec<PhysicalRule> = PhysicalOptimizer::new()
        .rules
        .into_iter()
        .chain([Arc::new(ParallelWrites) as PhysicalRule])
        .collect();
    Ok(SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_query_planner(Arc::new(SingleStagePlanner::new(
            executor_cores,
            live_slots,
            physical_rules.clone(),
            single_stage_partitions,
        )))
        .with_optimizer_rules(with_sluice_rules(
            ballista_core::optimizer::ballista_default_optimizer_rules(),
        ))
        .with_physical_optimizer_rules(with_join_orders_hidden(physical_rules))
        .with_scalar_functions(cap_all(ballista_scalar_functions()))
        .with_aggregate_functions(ballista_aggregate_functions())
        .with_window_functions(ballista_window_functions())
        .build())
}

/// The functions executors decode task plans with: Ballista's, with the
/// amplifying ones capped ([`crate::value_limits`]).
pub fn executor_functions() -> Arc<BallistaFunctionRegistry> {
    let mut registry = BallistaFunctionRegistry::default();
    for function in registry.scalar_functions.values_mut() {
        if let Some(capped) = capped(function) {
            *function = capped;
        }
    }
    Arc::new(registry)
}

/// An executor's runtime for a session: object stores from the session's
/// storage options, spill files in `spill_dir` (not the work directory, whose
/// every subdirectory Ballista treats as a job's and sweeps).
pub fn executor_runtime_producer(spill_dir: PathBuf) -> RuntimeProducer {
    Arc::new(move |config: &SessionConfig| runtime_env(config, Some(&spill_dir)))
}
