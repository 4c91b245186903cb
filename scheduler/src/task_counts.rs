//! The executors' execution engine: Ballista's, counting completed tasks and
//! making every task cancellable.
//!
//! Ballista's scheduler does not record which executor ran a task once the task
//! is done, so each executor's execution engine is wrapped: every query stage
//! task that finishes successfully increments the executor's counter.
//!
//! Stage outputs are kept in memory when the executor has a
//! [`ShuffleMemory`] ([`crate::shuffle_memory`]).
//!
//! Each task's plan is made cancellable ([`crate::cancellable`]): Ballista's
//! own abort does not stop a running stage.
//!
//! The metrics a task reports to the scheduler gain two of Sluice's, on the
//! stage's root operator: which executor ran it and the shuffle bytes it
//! wrote ([`sluice_engine::explain_analyze::task_metrics`]), which
//! `EXPLAIN ANALYZE` shows per stage.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ballista_core::serde::protobuf::{
    RuntimeStatsReport, ShuffleWritePartition, TaskColumnStats, WindowStateReport,
};
use ballista_core::JobId;

use crate::cancellable::{cancellable, CancelFlag};
use crate::metrics::RunningTask;
use crate::shuffle_memory::reader::MemoryShuffleReaderExec;
use crate::shuffle_memory::stage::{result_key_here, MemoryStage, TaskOutput};
use crate::shuffle_memory::ShuffleMemory;
use ballista_core::execution_plans::{RangeShuffleReaderExec, ShuffleReaderExec};
use ballista_executor::execution_engine::{
    DefaultExecutionEngine, ExecutionEngine, QueryStageExecutor,
};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::execution::context::TaskContext;
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionConfig;
use sluice_engine::explain_analyze::task_metrics;

/// Completed-task counters, one per executor id.
#[derive(Debug, Default)]
pub struct TaskCounts {
    counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

impl TaskCounts {
    /// The counter of `executor_id`, created at zero on first use.
    pub fn counter(&self, executor_id: &str) -> Arc<AtomicU64> {
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        counters.entry(executor_id.to_string()).or_default().clone()
    }

    /// Tasks `executor_id` has completed so far.
    pub fn completed(&self, executor_id: &str) -> u64 {
        self.counter(executor_id).load(Ordering::Relaxed)
    }

    /// An execution engine for `executor_id` that counts into these counters
    /// (and into the tasks' Prometheus metrics, [`crate::metrics`]), keeping
    /// stage outputs in `shuffle_memory` when given (else in Ballista's
    /// files).
    pub fn engine(
        self: &Arc<Self>,
        executor_id: &str,
        shuffle_memory: Option<Arc<ShuffleMemory>>,
    ) -> Arc<dyn ExecutionEngine> {
        Arc::new(CountingEngine {
            inner: DefaultExecutionEngine::new(),
            executor_id: executor_id.to_string(),
            completed: self.counter(executor_id),
            shuffle_memory,
        })
    }
}

/// Ballista's default engine, counting the tasks that succeed.
struct CountingEngine {
    inner: DefaultExecutionEngine,
    executor_id: String,
    completed: Arc<AtomicU64>,
    shuffle_memory: Option<Arc<ShuffleMemory>>,
}

impl ExecutionEngine for CountingEngine {
    fn create_query_stage_exec(
        &self,
        job_id: JobId,
        stage_id: usize,
        task_id: usize,
        global_output_partition_ids: Vec<usize>,
        plan: Arc<dyn ExecutionPlan>,
        work_dir: &str,
        config: &SessionConfig,
    ) -> Result<Arc<dyn QueryStageExecutor>> {
        let cancel = CancelFlag::default();
        let live = result_key_here(&plan);
        let mut plan = cancellable(plan, &cancel)?;
        if let Some(memory) = &self.shuffle_memory {
            plan = read_held_partitions(plan, work_dir, memory)?;
        }
        let mut inner = self.inner.create_query_stage_exec(
            job_id.clone(),
            stage_id,
            task_id,
            global_output_partition_ids.clone(),
            Arc::clone(&plan),
            work_dir,
            config,
        )?;
        if let Some(memory) = &self.shuffle_memory {
            let output = TaskOutput {
                executor_id: self.executor_id.clone(),
                work_dir: work_dir.to_string(),
                job_id,
                stage_id,
                task_id,
                global_output_partition_ids,
            };
            if let Some(stage) =
                MemoryStage::try_new(&plan, live, Arc::clone(&inner), output, Arc::clone(memory))
            {
                inner = Arc::new(stage);
            }
        }
        Ok(Arc::new(CountingStage {
            inner,
            executor_id: self.executor_id.clone(),
            completed: self.completed.clone(),
            cancel,
            shuffle_bytes_written: AtomicU64::new(0),
        }))
    }
}

/// `plan` with its shuffle readers reading held partitions from `memory`,
/// and the range readers of Ballista's adaptive planner given the work dir
/// (Ballista's engine gives it to the plan it runs, and a [`MemoryStage`]
/// runs this one).
fn read_held_partitions(
    plan: Arc<dyn ExecutionPlan>,
    work_dir: &str,
    memory: &Arc<ShuffleMemory>,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        if let Some(reader) = node.downcast_ref::<RangeShuffleReaderExec>() {
            return Ok(Transformed::yes(
                Arc::new(reader.with_work_dir(work_dir.to_string())) as Arc<dyn ExecutionPlan>,
            ));
        }
        Ok(match node.downcast_ref::<ShuffleReaderExec>() {
            Some(reader) => Transformed::yes(Arc::new(MemoryShuffleReaderExec::new(
                reader.with_work_dir(work_dir.to_string()),
                Arc::clone(memory),
            )) as Arc<dyn ExecutionPlan>),
            None => Transformed::no(node),
        })
    })
    .map(|transformed| transformed.data)
}

/// One query stage task; bumps the counter when it succeeds.
#[derive(Debug)]
struct CountingStage {
    inner: Arc<dyn QueryStageExecutor>,
    executor_id: String,
    completed: Arc<AtomicU64>,
    /// Raised when the task's future ends, aborted or not.
    cancel: CancelFlag,
    /// Bytes of the shuffle files the task wrote, once it succeeded.
    shuffle_bytes_written: AtomicU64,
}

impl fmt::Display for CountingStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

#[async_trait::async_trait]
impl QueryStageExecutor for CountingStage {
    async fn execute_query_stage(
        &self,
        task_id: usize,
        context: Arc<TaskContext>,
    ) -> Result<Vec<ShuffleWritePartition>> {
        let _stop_when_dropped = self.cancel.raise_on_drop();
        let running = RunningTask::start(
            &self.executor_id,
            Arc::clone(&context.runtime_env().memory_pool),
        );
        match self.inner.execute_query_stage(task_id, context).await {
            Ok(partitions) => {
                self.completed.fetch_add(1, Ordering::Relaxed);
                self.shuffle_bytes_written.store(
                    partitions.iter().map(|p| p.num_bytes).sum(),
                    Ordering::Relaxed,
                );
                running.finished(&self.inner.collect_plan_metrics(), &partitions);
                Ok(partitions)
            }
            Err(e) => {
                running.failed();
                // Its SQLSTATE and wording cross to the frontend in the text.
                Err(sluice_engine::sqlstate::tag_task_error(e))
            }
        }
    }

    fn collect_plan_metrics(&self) -> Vec<MetricsSet> {
        let mut metrics = self.inner.collect_plan_metrics();
        if let Some(root) = metrics.first_mut() {
            for metric in task_metrics(
                &self.executor_id,
                self.shuffle_bytes_written.load(Ordering::Relaxed),
            ) {
                root.push(metric);
            }
        }
        metrics
    }

    fn collect_runtime_stats_reports(&self) -> Vec<RuntimeStatsReport> {
        self.inner.collect_runtime_stats_reports()
    }

    fn collect_window_state_reports(&self) -> Result<Vec<WindowStateReport>> {
        self.inner.collect_window_state_reports()
    }

    fn collect_column_stats(&self) -> Vec<TaskColumnStats> {
        self.inner.collect_column_stats()
    }
}
