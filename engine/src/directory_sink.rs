//! Where the rows of a `COPY … FROM` into an external table over a
//! directory go: the files of the table's format, written by DataFusion's
//! own writer into a staging directory and moved into the table's directory
//! once every row is written, as a directory `COPY … TO` is
//! ([`crate::atomic_copy`]). Readers of the table see all of the rows or
//! none; a COPY that fails or is abandoned leaves nothing behind.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::datasource::provider_as_source;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{DmlStatement, LogicalPlan, LogicalPlanBuilder, WriteOp};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::{collect, SendableRecordBatchStream};
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion::prelude::SessionContext;
use tokio::sync::mpsc;

use crate::atomic_copy::{insert_as_copy, stage_copy, AtomicCopyExec, StagedCopies};
use crate::parallel_write::WriteAnswer;
use crate::queued_writer::QueuedWriter;
use crate::sandbox::SessionSandbox;

/// The staged write of a table's new files, being filled. Dropped before
/// [`DirectorySink::commit`], its rows end in an error and the writer
/// removes what it staged.
pub struct DirectorySink {
    /// Set when every row was sent: the rows end; otherwise the writer
    /// fails and removes what it staged.
    complete: Arc<AtomicBool>,
    writer: QueuedWriter,
}

impl DirectorySink {
    /// Starts writing rows into the directory of `provider` (the table
    /// `table`); `None` when it is not a table over a directory of files
    /// that `INSERT` appends to that way.
    pub async fn open(
        context: &SessionContext,
        table: TableReference,
        provider: Arc<dyn TableProvider>,
    ) -> Result<Option<Self>> {
        let schema = provider.schema();
        let complete = Arc::new(AtomicBool::new(false));
        let rows = Arc::new(ChannelRows {
            schema: Arc::clone(&schema),
            receiver: Mutex::new(None),
            complete: Arc::clone(&complete),
        });
        let source = StreamingTable::try_new(schema, vec![Arc::clone(&rows) as _])?;
        let scan =
            LogicalPlanBuilder::scan("copy_rows", provider_as_source(Arc::new(source)), None)?
                .build()?;
        let insert = LogicalPlan::Dml(DmlStatement::new(
            table,
            provider_as_source(provider),
            WriteOp::Insert(InsertOp::Append),
            Arc::new(scan),
        ));
        let Some(copy) = insert_as_copy(&insert) else {
            return Ok(None);
        };
        let state = context.state();
        let options = state.config_options();
        if let Some(sandbox) = SessionSandbox::of(options) {
            sandbox.check_plan(&copy)?;
        }
        let staged_copies = options
            .extensions
            .get::<StagedCopies>()
            .cloned()
            .unwrap_or_default();
        let Some((staged, target)) = stage_copy(&copy, staged_copies.warehouse.as_deref())? else {
            return Ok(None);
        };
        let input = DefaultPhysicalPlanner::default()
            .create_physical_plan(&staged, &state)
            .await?;
        let plan = Arc::new(AtomicCopyExec::new(input, target, staged_copies.journal));
        let task: Arc<TaskContext> = state.task_ctx();
        let writer = QueuedWriter::spawn(|batches| {
            *rows.receiver.lock().unwrap_or_else(PoisonError::into_inner) = Some(batches);
            async move {
                let batches = collect(plan, task).await?;
                Ok(WriteAnswer::read(&batches).rows)
            }
        });
        Ok(Some(Self { complete, writer }))
    }

    /// Hands `batch` to the writer (waiting while it is busy).
    pub async fn send(&mut self, batch: RecordBatch) -> Result<()> {
        self.writer.send(batch).await
    }

    /// Ends the rows and waits for the files to be written and published;
    /// returns how many rows were written.
    pub async fn commit(mut self) -> Result<u64> {
        self.complete.store(true, Ordering::SeqCst);
        self.writer.finish().await
    }
}

/// The rows sent to a [`DirectorySink`], as the one partition of a scan.
#[derive(Debug)]
struct ChannelRows {
    schema: SchemaRef,
    receiver: Mutex<Option<mpsc::Receiver<RecordBatch>>>,
    complete: Arc<AtomicBool>,
}

impl PartitionStream for ChannelRows {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _context: Arc<TaskContext>) -> SendableRecordBatchStream {
        let receiver = self
            .receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let complete = Arc::clone(&self.complete);
        let rows =
            futures::stream::unfold((receiver, complete), |(receiver, complete)| async move {
                let mut receiver = receiver?;
                match receiver.recv().await {
                    Some(batch) => Some((Ok(batch), (Some(receiver), complete))),
                    None if complete.load(Ordering::SeqCst) => None,
                    None => Some((
                        Err(DataFusionError::Execution(
                            "the COPY ended before its last row".into(),
                        )),
                        (None, complete),
                    )),
                }
            });
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            rows,
        ))
    }
}
