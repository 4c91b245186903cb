//! A query stage task whose output partitions go to [`ShuffleMemory`]
//! instead of Ballista's shuffle files.
//!
//! Two of Ballista's writers are replaced: the passthrough writer
//! (`ShuffleWriterExec`: input partition `i` is output partition
//! `global_output_partition_ids[i]`) and the hash writer
//! (`SortShuffleWriterExec`: rows hash-partitioned with DataFusion's
//! `BatchPartitioner`, which Ballista's writer matches row for row, so a
//! stage may mix both). Range shuffles stay Ballista's. Ballista's own
//! stage for the same plan is kept for what it collects from the operators
//! after the run (metrics, runtime statistics, window state): the operators
//! are the same ones.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ballista_core::execution_plans::{
    create_shuffle_path, ShuffleWriterExec, SortShuffleWriterExec,
};
use ballista_core::serde::protobuf::{
    RuntimeStatsReport, ShuffleWritePartition, TaskColumnStats, WindowStateReport,
};
use ballista_core::JobId;
use ballista_executor::execution_engine::QueryStageExecutor;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::metrics::{Count, Metric, MetricValue, MetricsSet, Time};
use datafusion::physical_plan::repartition::BatchPartitioner;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, Partitioning};
use futures::StreamExt;
use tokio::task::JoinSet;

use sluice_engine::live_result::LiveResultExec;
use sluice_engine::live_results::{self, made_here, read_here};

use super::sink::{PartitionSink, SinkStats};
use super::{count_live_result, HeldOutput, OutputKey, ShuffleMemory};

/// How a stage's rows become output partitions.
#[derive(Debug)]
enum StageOutput {
    /// Each input partition is one output partition (these global ids).
    Passthrough { global_ids: Vec<usize> },
    /// The job's final stage, whose frontend is in this process: each input
    /// partition is handed to it under the result key as it is made
    /// ([`live_results`]), and an empty output stands for it in the store.
    Live { key: String, global_ids: Vec<usize> },
    /// Rows are hash-partitioned on `exprs` into `partitions`.
    Hash {
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        partitions: usize,
    },
}

/// Where one task's output goes.
#[derive(Debug, Clone)]
pub struct TaskOutput {
    /// The executor running the task.
    pub executor_id: String,
    /// Its work dir.
    pub work_dir: String,
    /// The task's job.
    pub job_id: JobId,
    /// Its stage.
    pub stage_id: usize,
    /// Its id (Ballista's `file_id` of its output).
    pub task_id: usize,
    /// Global ids of its output partitions (passthrough writers).
    pub global_output_partition_ids: Vec<usize>,
}

impl TaskOutput {
    fn stage_dir(&self) -> PathBuf {
        PathBuf::from(&self.work_dir)
            .join(self.job_id.as_str())
            .join(self.stage_id.to_string())
    }

    fn key(&self, partition: usize) -> OutputKey {
        OutputKey {
            executor_id: self.executor_id.clone(),
            job_id: self.job_id.as_str().to_string(),
            stage_id: self.stage_id,
            partition,
            file_id: Some(self.task_id as u64),
        }
    }
}

/// The result key under which the stage `plan` (as the scheduler sent it)
/// hands its rows over as they are made: when its shuffle writer stands
/// over a [`LiveResultExec`] (the stage is the job's last) whose result is
/// read in this process, by the frontend that made the key or by the
/// Flight service forwarding it to a frontend in another process
/// ([`crate::live_follow`]).
pub fn result_key_here(plan: &Arc<dyn ExecutionPlan>) -> Option<String> {
    plan.downcast_ref::<ShuffleWriterExec>()?;
    let live = plan.children().first()?.downcast_ref::<LiveResultExec>()?;
    let key = live.key();
    (made_here(key) || read_here(key)).then(|| key.to_string())
}

/// A query stage task writing its output to [`ShuffleMemory`].
#[derive(Debug)]
pub struct MemoryStage {
    ballista: Arc<dyn QueryStageExecutor>,
    input: Arc<dyn ExecutionPlan>,
    output: StageOutput,
    task: TaskOutput,
    memory: Arc<ShuffleMemory>,
    /// Rows written, shown as the writer's `output_rows` (Ballista's writer,
    /// which counts them in its own metrics, does not run).
    rows_written: AtomicUsize,
}

impl MemoryStage {
    /// The task running `plan` (whose root is a shuffle writer) into
    /// `memory`, keeping `ballista` (Ballista's task for the same plan) for
    /// what it collects; `None` when the writer is not one this replaces.
    /// `live`: the result key, when the stage is a job's last and hands its
    /// rows over as they are made ([`result_key_here`]).
    pub fn try_new(
        plan: &Arc<dyn ExecutionPlan>,
        live: Option<String>,
        ballista: Arc<dyn QueryStageExecutor>,
        task: TaskOutput,
        memory: Arc<ShuffleMemory>,
    ) -> Option<Self> {
        let output = if plan.downcast_ref::<ShuffleWriterExec>().is_some() {
            let global_ids = task.global_output_partition_ids.clone();
            if let Some(key) = live {
                StageOutput::Live { key, global_ids }
            } else {
                StageOutput::Passthrough { global_ids }
            }
        } else if let Some(writer) = plan.downcast_ref::<SortShuffleWriterExec>() {
            match writer.shuffle_output_partitioning() {
                Partitioning::Hash(exprs, partitions) => StageOutput::Hash {
                    exprs: exprs.clone(),
                    partitions: *partitions,
                },
                _ => return None,
            }
        } else {
            return None;
        };
        let input = Arc::clone(plan.children().first()?);
        Some(Self {
            ballista,
            input,
            output,
            task,
            memory,
            rows_written: AtomicUsize::new(0),
        })
    }

    /// Passthrough: each input partition drained into its own sink.
    async fn write_passthrough(
        &self,
        global_ids: &[usize],
        context: Arc<TaskContext>,
    ) -> Result<Vec<(usize, HeldOutput, SinkStats)>> {
        let batch_size = context.session_config().batch_size();
        let mut drains = JoinSet::new();
        for local in 0..self.input.output_partitioning().partition_count() {
            let partition = global_ids.get(local).copied().unwrap_or(local);
            let spill_path = create_shuffle_path(
                &self.task.work_dir,
                &self.task.job_id,
                self.task.stage_id,
                partition,
                Some(self.task.task_id as u64),
                false,
            )?;
            let mut sink = PartitionSink::new(
                Arc::clone(&self.memory),
                self.input.schema(),
                batch_size,
                spill_path,
            );
            let mut stream = self.input.execute(local, Arc::clone(&context))?;
            let stage_dir = self.task.stage_dir();
            drains.spawn(async move {
                while let Some(batch) = stream.next().await {
                    sink.push(batch?)?;
                }
                let (output, stats) = sink.finish(stage_dir)?;
                Ok::<_, DataFusionError>((partition, output, stats))
            });
        }
        join_all(drains).await
    }

    /// Live: each input partition handed to the result's reader in this process under
    /// result key `key`; the store keeps an empty output for each (what
    /// Ballista's result fetch then reads).
    async fn write_live(
        &self,
        key: &str,
        global_ids: &[usize],
        context: Arc<TaskContext>,
    ) -> Result<Vec<(usize, HeldOutput, SinkStats)>> {
        let job = live_results::job(key);
        let mut drains = JoinSet::new();
        for local in 0..self.input.output_partitioning().partition_count() {
            let partition = global_ids.get(local).copied().unwrap_or(local);
            let spill_path = self.task.stage_dir().join(format!(
                "sluice-live-{partition}-{}.arrow",
                self.task.task_id
            ));
            let mut writer = job.open_partition(partition, self.input.schema(), spill_path);
            let mut stream = self.input.execute(local, Arc::clone(&context))?;
            let placeholder = PartitionSink::new(
                Arc::clone(&self.memory),
                self.input.schema(),
                1,
                PathBuf::new(),
            );
            let stage_dir = self.task.stage_dir();
            drains.spawn(async move {
                let mut stats = SinkStats::default();
                while let Some(batch) = stream.next().await {
                    let batch = batch?;
                    stats.num_rows += batch.num_rows() as u64;
                    stats.num_batches += 1;
                    stats.num_bytes += batch.get_array_memory_size() as u64;
                    writer.push(batch)?;
                }
                let spilled = writer.finish()?;
                count_live_result(stats.num_rows, spilled);
                let (output, _) = placeholder.finish(stage_dir)?;
                Ok::<_, DataFusionError>((partition, output, stats))
            });
        }
        join_all(drains).await
    }

    /// Hash: every input partition's rows spread over shared sinks.
    async fn write_hash(
        &self,
        exprs: &[Arc<dyn PhysicalExpr>],
        partitions: usize,
        context: Arc<TaskContext>,
    ) -> Result<Vec<(usize, HeldOutput, SinkStats)>> {
        let batch_size = context.session_config().batch_size();
        let task_dir = self.task.stage_dir().join(self.task.task_id.to_string());
        let sinks: Arc<Vec<Mutex<PartitionSink>>> = Arc::new(
            (0..partitions)
                .map(|partition| {
                    Mutex::new(PartitionSink::new(
                        Arc::clone(&self.memory),
                        self.input.schema(),
                        batch_size,
                        task_dir.join(format!("sluice-spill-{partition}.arrow")),
                    ))
                })
                .collect(),
        );
        let mut drains = JoinSet::new();
        for input_partition in 0..self.input.output_partitioning().partition_count() {
            let mut partitioner =
                BatchPartitioner::new_hash_partitioner(exprs.to_vec(), partitions, Time::new())?;
            let mut stream = self.input.execute(input_partition, Arc::clone(&context))?;
            let sinks = Arc::clone(&sinks);
            drains.spawn(async move {
                while let Some(batch) = stream.next().await {
                    for part in partitioner.partition_iter(batch?)? {
                        let (partition, rows) = part?;
                        sinks[partition]
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(rows)?;
                    }
                }
                Ok::<_, DataFusionError>(())
            });
        }
        while let Some(drained) = drains.join_next().await {
            drained.map_err(join_error)??;
        }
        let sinks = Arc::into_inner(sinks).ok_or_else(|| {
            DataFusionError::Internal("shuffle sinks still shared after the drains".into())
        })?;
        let stage_dir = self.task.stage_dir();
        sinks
            .into_iter()
            .enumerate()
            .map(|(partition, sink)| {
                let sink = sink.into_inner().unwrap_or_else(|e| e.into_inner());
                let (output, stats) = sink.finish(stage_dir.clone())?;
                Ok((partition, output, stats))
            })
            .collect()
    }
}

async fn join_all<T: 'static>(mut drains: JoinSet<Result<T>>) -> Result<Vec<T>> {
    let mut results = Vec::with_capacity(drains.len());
    while let Some(drained) = drains.join_next().await {
        results.push(drained.map_err(join_error)??);
    }
    Ok(results)
}

fn join_error(e: tokio::task::JoinError) -> DataFusionError {
    DataFusionError::Execution(format!("shuffle write task failed: {e}"))
}

impl std::fmt::Display for MemoryStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemoryStage over {}", self.ballista)
    }
}

#[async_trait::async_trait]
impl QueryStageExecutor for MemoryStage {
    async fn execute_query_stage(
        &self,
        _task_id: usize,
        context: Arc<TaskContext>,
    ) -> Result<Vec<ShuffleWritePartition>> {
        // The stage's directory stands for its output: Ballista removes it
        // when the output must go, and the sweeper then drops the output.
        let stage_dir = self.task.stage_dir();
        std::fs::create_dir_all(&stage_dir).map_err(|e| {
            DataFusionError::Execution(format!("creating {}: {e}", stage_dir.display()))
        })?;
        let (written, is_sort_shuffle) = match &self.output {
            StageOutput::Passthrough { global_ids } => {
                (self.write_passthrough(global_ids, context).await?, false)
            }
            StageOutput::Live { key, global_ids } => {
                (self.write_live(key, global_ids, context).await?, false)
            }
            StageOutput::Hash { exprs, partitions } => {
                (self.write_hash(exprs, *partitions, context).await?, true)
            }
        };
        let mut partitions = Vec::with_capacity(written.len());
        for (partition, output, stats) in written {
            // Ballista's hash writer reports only partitions with rows.
            if is_sort_shuffle && stats.num_rows == 0 {
                continue;
            }
            self.memory.insert(self.task.key(partition), output);
            partitions.push(ShuffleWritePartition {
                partition_id: partition as u64,
                num_batches: stats.num_batches,
                num_rows: stats.num_rows,
                num_bytes: stats.num_bytes,
                file_id: Some(self.task.task_id as u64),
                is_sort_shuffle,
            });
        }
        partitions.sort_by_key(|p| p.partition_id);
        let rows: u64 = partitions.iter().map(|p| p.num_rows).sum();
        self.rows_written.store(rows as usize, Ordering::Relaxed);
        Ok(partitions)
    }

    fn collect_plan_metrics(&self) -> Vec<MetricsSet> {
        let mut metrics = self.ballista.collect_plan_metrics();
        if let Some(writer) = metrics.first_mut() {
            let rows = Count::new();
            rows.add(self.rows_written.load(Ordering::Relaxed));
            writer.push(Arc::new(Metric::new(MetricValue::OutputRows(rows), None)));
        }
        metrics
    }

    fn collect_runtime_stats_reports(&self) -> Vec<RuntimeStatsReport> {
        self.ballista.collect_runtime_stats_reports()
    }

    fn collect_window_state_reports(&self) -> Result<Vec<WindowStateReport>> {
        self.ballista.collect_window_state_reports()
    }

    fn collect_column_stats(&self) -> Vec<TaskColumnStats> {
        self.ballista.collect_column_stats()
    }
}
