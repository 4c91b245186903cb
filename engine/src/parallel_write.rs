//! Writes run by every executor at once.
//!
//! DataFusion writes the files of a `COPY` or `INSERT` through one
//! `DataSinkExec`, which takes a single input partition: Ballista gathers
//! every row into one task on one executor and writes them there. The
//! [`ParallelWrites`] rule (in the scheduler's session) gives each input
//! partition its own writer instead, a [`ParallelWriteExec`] task that writes
//! its rows from wherever it runs into a directory of its own under the
//! target, `<target>/task-<id>/`, and answers one row: how many rows it
//! wrote and that directory ([`WRITTEN_COLUMN`]).
//!
//! Only the directories the answer lists belong to the write. A task that
//! failed and was retried, or a job run again after an executor was lost,
//! leaves a directory no answer lists, and the write's committer ignores it.
//! Readers of a directory do not see its subdirectories, so a committer is
//! needed anyway: a managed table lists the written directories as its
//! segments, a staged `COPY` moves their files into its target. That is why
//! the rule only takes sinks whose target is such a write
//! ([`COMMITTED_WRITE_PREFIX`]): any other directory write stays one task.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt64Type};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::config::{ConfigNonZeroUsize, ConfigOptions};
use datafusion::datasource::file_format::csv::CsvSink;
use datafusion::datasource::file_format::json::JsonSink;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::datasource::physical_plan::parquet::ParquetSink;
use datafusion::datasource::physical_plan::{FileOutputMode, FileSink, FileSinkConfig};
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{
    execute_input_stream, Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    SendableRecordBatchStream,
};

use crate::catalog::managed::unique_id;

/// The name prefix of the directories Sluice commits writes from (a staged
/// `COPY`'s staging directory, a managed table's new segment). Only sinks
/// writing into one are made parallel.
pub const COMMITTED_WRITE_PREFIX: &str = "_sluice-";

/// The column of a parallel write's answer naming a directory it wrote
/// (URL ending in `/`), beside `count`.
pub const WRITTEN_COLUMN: &str = "written";

/// Physical optimizer rule: a file sink writing a directory whose name starts
/// with [`COMMITTED_WRITE_PREFIX`] becomes a [`ParallelWriteExec`] over its
/// input's partitions (see the module documentation).
#[derive(Debug, Default)]
pub struct ParallelWrites;

impl PhysicalOptimizerRule for ParallelWrites {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(sink) = node.downcast_ref::<DataSinkExec>() else {
                return Ok(Transformed::no(node));
            };
            // DataFusion's own insert into a table leaves `original_url`
            // empty: only `COPY` plans, which committers write, qualify.
            let copy =
                relocatable(sink.sink()).is_some_and(|config| !config.original_url.is_empty());
            if sink.sort_order().is_some() || !copy {
                return Ok(Transformed::no(node));
            }
            // The rows gathered into one partition for the single sink are
            // written where they are instead.
            let input = match sink.input().downcast_ref::<CoalescePartitionsExec>() {
                Some(coalesce) => Arc::clone(coalesce.input()),
                None => Arc::clone(sink.input()),
            };
            let write = ParallelWriteExec::new(with_input(Arc::clone(&node), input)?)?;
            let partitions = write.properties().output_partitioning().partition_count();
            let write: Arc<dyn ExecutionPlan> = Arc::new(write);
            Ok(Transformed::yes(if partitions > 1 {
                Arc::new(CoalescePartitionsExec::new(write))
            } else {
                write
            }))
        })
        .map(|transformed| transformed.data)
    }

    fn name(&self) -> &str {
        "sluice_parallel_writes"
    }

    /// The answer gains the [`WRITTEN_COLUMN`].
    fn schema_check(&self) -> bool {
        false
    }
}

/// `plan`, a node with one child, over `input` instead.
pub(crate) fn with_input(
    plan: Arc<dyn ExecutionPlan>,
    input: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.replace_children(
        vec![input],
        ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
    )
}

/// The configuration of `sink` when it is a file sink the rule can point at
/// another directory: Parquet, CSV or JSON, writing a committed directory.
fn relocatable(sink: &dyn DataSink) -> Option<&FileSinkConfig> {
    let config = if let Some(parquet) = sink.downcast_ref::<ParquetSink>() {
        parquet.config()
    } else if let Some(csv) = sink.downcast_ref::<CsvSink>() {
        csv.config()
    } else if let Some(json) = sink.downcast_ref::<JsonSink>() {
        json.config()
    } else {
        return None;
    };
    let target = config.table_paths.first()?;
    let committed = target
        .as_str()
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .is_some_and(|name| name.starts_with(COMMITTED_WRITE_PREFIX));
    let directory = !config.file_output_mode.single_file_output(target);
    (committed && directory && config.table_paths.len() == 1).then_some(config)
}

/// `sink` writing into the directory `dir` instead of its target.
fn relocated(sink: &dyn DataSink, dir: &str) -> Result<Arc<dyn DataSink>> {
    let config = relocatable(sink).ok_or_else(|| {
        DataFusionError::Internal("a parallel write's sink is not a file sink".into())
    })?;
    let config = FileSinkConfig {
        original_url: dir.to_string(),
        table_paths: vec![ListingTableUrl::parse(dir)?],
        file_output_mode: FileOutputMode::Directory,
        ..config.clone()
    };
    Ok(if let Some(parquet) = sink.downcast_ref::<ParquetSink>() {
        Arc::new(ParquetSink::new(config, parquet.parquet_options().clone()))
    } else if let Some(csv) = sink.downcast_ref::<CsvSink>() {
        Arc::new(CsvSink::new(config, csv.writer_options().clone()))
    } else if let Some(json) = sink.downcast_ref::<JsonSink>() {
        Arc::new(JsonSink::new(config, json.writer_options().clone()))
    } else {
        unreachable!("relocatable accepts these three sinks")
    })
}

/// The schema of a parallel write's answer: `count` and [`WRITTEN_COLUMN`].
fn answer_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("count", DataType::UInt64, false),
        Field::new(WRITTEN_COLUMN, DataType::Utf8, false),
    ]))
}

/// Writes each partition of its input into a directory of its own (see the
/// module documentation); one answer row per partition.
#[derive(Debug)]
pub struct ParallelWriteExec {
    /// The `DataSinkExec` this replaces, over the input: its sink is copied
    /// for each partition, pointed at the partition's directory.
    sink: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl ParallelWriteExec {
    /// Writes the input of `sink` (a `DataSinkExec` over a relocatable file
    /// sink) a partition at a time.
    pub fn new(sink: Arc<dyn ExecutionPlan>) -> Result<Self> {
        let exec = sink.downcast_ref::<DataSinkExec>().ok_or_else(|| {
            DataFusionError::Internal("a parallel write wraps a DataSinkExec".into())
        })?;
        let partitions = exec.input().output_partitioning().partition_count();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(answer_schema()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Ok(Self {
            sink,
            properties: Arc::new(properties),
        })
    }

    /// The `DataSinkExec` it runs a partition at a time.
    pub fn sink(&self) -> &Arc<dyn ExecutionPlan> {
        &self.sink
    }

    fn data_sink(&self) -> &DataSinkExec {
        self.sink
            .downcast_ref::<DataSinkExec>()
            .expect("checked when built")
    }
}

impl DisplayAs for ParallelWriteExec {
    fn fmt_as(&self, format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ParallelWriteExec: a writer per partition, sink=")?;
        self.data_sink().sink().fmt_as(format, f)
    }
}

impl ExecutionPlan for ParallelWriteExec {
    fn name(&self) -> &str {
        "ParallelWriteExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.data_sink().input()]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] = <[_; 1]>::try_from(children)
            .map_err(|_| DataFusionError::Internal("ParallelWriteExec has one child".into()))?;
        Ok(Arc::new(Self::new(with_input(
            Arc::clone(&self.sink),
            input,
        )?)?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let exec = self.data_sink();
        let target = relocatable(exec.sink())
            .and_then(|config| config.table_paths.first())
            .ok_or_else(|| DataFusionError::Internal("a parallel write has no target".into()))?;
        let dir = format!(
            "{}/task-{}/",
            target.as_str().trim_end_matches('/'),
            unique_id()
        );
        let sink = relocated(exec.sink(), &dir)?;
        let partitions = exec.input().output_partitioning().partition_count();
        let context = writer_context(&context, partitions)?;
        let data = execute_input_stream(
            Arc::clone(exec.input()),
            Arc::clone(sink.schema()),
            partition,
            Arc::clone(&context),
        )?;
        let answer = futures::stream::once(async move {
            let rows = sink.write_all(data, &context).await?;
            Ok(RecordBatch::try_new(
                answer_schema(),
                vec![
                    Arc::new(UInt64Array::from(vec![rows])),
                    Arc::new(StringArray::from(vec![dir])),
                ],
            )?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            answer_schema(),
            answer,
        )))
    }
}

/// `context` for one of `partitions` writers: the files a write keeps open
/// at once (`datafusion.execution.minimum_parallel_output_files`) are split
/// between them, so that a write has as many files, each filling up as
/// fast, as with one writer.
fn writer_context(context: &Arc<TaskContext>, partitions: usize) -> Result<Arc<TaskContext>> {
    let mut config = context.session_config().clone();
    let execution = &mut config.options_mut().execution;
    let files = execution.minimum_parallel_output_files.get();
    execution.minimum_parallel_output_files =
        ConfigNonZeroUsize::try_new(files.div_ceil(partitions.max(1)).max(1))?;
    Ok(Arc::new(TaskContext::new(
        context.task_id(),
        context.session_id(),
        config,
        context.scalar_functions().clone(),
        context.higher_order_functions().clone(),
        context.aggregate_functions().clone(),
        context.window_functions().clone(),
        context.runtime_env(),
    )))
}

/// What a write answered: the rows it wrote and, for a parallel write, the
/// directories that hold them (`None` when the sink wrote its target itself).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteAnswer {
    /// Rows written.
    pub rows: u64,
    /// The directories of a parallel write, URLs ending in `/`.
    pub directories: Option<Vec<String>>,
}

impl WriteAnswer {
    /// Reads the answer batches of a `COPY`'s plan.
    pub fn read(batches: &[RecordBatch]) -> Self {
        let mut answer = Self::default();
        for batch in batches {
            if let Some(counts) = batch
                .column_by_name("count")
                .and_then(|column| column.as_primitive_opt::<UInt64Type>())
            {
                answer.rows += counts.iter().flatten().sum::<u64>();
            }
            if let Some(written) = batch
                .column_by_name(WRITTEN_COLUMN)
                .and_then(|column| column.as_string_opt::<i32>())
            {
                let directories = answer.directories.get_or_insert_with(Vec::new);
                directories.extend(written.iter().flatten().map(str::to_string));
            }
        }
        answer
    }

    /// The answer as DataFusion's sinks give it: one row, `count`.
    pub fn count_batch(&self) -> Result<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "count",
            DataType::UInt64,
            false,
        )]));
        let counts: Arc<dyn Array> = Arc::new(UInt64Array::from(vec![self.rows]));
        Ok(RecordBatch::try_new(schema, vec![counts])?)
    }
}
