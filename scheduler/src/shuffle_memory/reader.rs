//! The consuming side: Ballista's shuffle reader, with the partitions held
//! in this process's [`ShuffleMemory`] read straight from it.

use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::sync::Arc;

use ballista_core::execution_plans::ShuffleReaderExec;
use ballista_core::serde::scheduler::PartitionLocation;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use futures::stream::{self, StreamExt};

use super::{HeldOutput, HeldRows, OutputKey, ShuffleMemory};

/// Ballista's [`ShuffleReaderExec`] reading held partitions from memory.
#[derive(Debug)]
pub struct MemoryShuffleReaderExec {
    /// Ballista's reader (its work dir set), for the other partitions.
    ballista: ShuffleReaderExec,
    memory: Arc<ShuffleMemory>,
    /// `decoded_bytes` (as Ballista's reader names what it read) and
    /// `memory_partitions` of the partitions read from memory.
    metrics: ExecutionPlanMetricsSet,
}

impl MemoryShuffleReaderExec {
    /// `ballista` reading from `memory` what it holds.
    pub fn new(ballista: ShuffleReaderExec, memory: Arc<ShuffleMemory>) -> Self {
        Self {
            ballista,
            memory,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

/// The key of the output `location` names.
pub fn location_key(location: &PartitionLocation) -> OutputKey {
    OutputKey {
        executor_id: location.executor_meta.id.clone(),
        job_id: location.partition_id.job_id.as_str().to_string(),
        stage_id: location.partition_id.stage_id,
        partition: location.partition_id.partition_id,
        file_id: location.file_id,
    }
}

/// The batches of a held output, in order.
pub fn held_batches(output: Arc<HeldOutput>) -> SendableRecordBatchStream {
    match &output.rows {
        HeldRows::Memory { schema, batches } => {
            let batches = batches.clone();
            Box::pin(RecordBatchStreamAdapter::new(
                Arc::clone(schema),
                stream::iter(batches.into_iter().map(Ok)),
            ))
        }
        HeldRows::Spilled(path) => spilled_batches(path.clone()),
    }
}

/// Reads a spill file on a blocking thread, a batch at a time.
fn spilled_batches(path: std::path::PathBuf) -> SendableRecordBatchStream {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(2);
    let opened = File::open(&path)
        .map_err(|e| DataFusionError::Execution(format!("reading {}: {e}", path.display())))
        .and_then(|file| Ok(StreamReader::try_new(BufReader::new(file), None)?));
    let schema: SchemaRef = match &opened {
        Ok(reader) => reader.schema(),
        Err(_) => Arc::new(datafusion::arrow::datatypes::Schema::empty()),
    };
    tokio::task::spawn_blocking(move || match opened {
        Ok(reader) => {
            for batch in reader {
                if sender.blocking_send(batch.map_err(Into::into)).is_err() {
                    return;
                }
            }
        }
        Err(e) => {
            let _ = sender.blocking_send(Err(e));
        }
    });
    Box::pin(RecordBatchStreamAdapter::new(
        schema,
        tokio_stream_of(receiver),
    ))
}

fn tokio_stream_of<T: Send + 'static>(
    mut receiver: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

impl DisplayAs for MemoryShuffleReaderExec {
    fn fmt_as(&self, format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        self.ballista.fmt_as(format, f)
    }
}

impl ExecutionPlan for MemoryShuffleReaderExec {
    fn name(&self) -> &str {
        "MemoryShuffleReaderExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.ballista.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let index = if self.ballista.broadcast {
            0
        } else {
            partition
        };
        let locations = self.ballista.partition.get(index).ok_or_else(|| {
            DataFusionError::Internal(format!("shuffle reader has no partition {partition}"))
        })?;
        let mut held = Vec::new();
        let mut elsewhere = Vec::new();
        for location in locations {
            match self.memory.get(&location_key(location)) {
                Some(output) => held.push(output),
                None => elsewhere.push(location.clone()),
            }
        }
        let schema = self.ballista.schema();
        MetricBuilder::new(&self.metrics)
            .counter("memory_partitions", partition)
            .add(held.len());
        let read_bytes = MetricBuilder::new(&self.metrics).counter("decoded_bytes", partition);
        let from_memory = stream::iter(held)
            .flat_map(held_batches)
            .inspect(move |batch| {
                if let Ok(batch) = batch {
                    read_bytes.add(batch.get_array_memory_size());
                }
            });
        if elsewhere.is_empty() {
            return Ok(Box::pin(RecordBatchStreamAdapter::new(schema, from_memory)));
        }
        let mut ballista = self.ballista.clone();
        ballista.partition[index] = elsewhere;
        let from_ballista = ballista.execute(partition, context)?;
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            from_memory.chain(from_ballista),
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        let mut metrics = self.metrics.clone_inner();
        for metric in self.ballista.metrics().iter().flat_map(|set| set.iter()) {
            metrics.push(Arc::clone(metric));
        }
        Some(metrics)
    }
}
