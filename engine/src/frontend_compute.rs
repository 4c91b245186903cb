//! Plans that run in the frontend (catalog and system tables, table
//! functions, no table at all, small queries over files) run on threads of
//! their own.
//!
//! The frontend's runtime serves every connection. A plan computing for long
//! stretches without yielding — a cross join of two `generate_series` does
//! billions of comparisons in a single poll — would hold one of its threads
//! for as long, and a few such queries would stall every session; nor could
//! `statement_timeout` or a cancel request, which race the statement on the
//! connection's task, answer before the poll returned. So the planner puts a
//! [`FrontendComputeExec`] at the root of each such plan: it drives the plan on
//! a dedicated runtime ([DataFusion's advice] for CPU-bound work) and hands the
//! batches over a channel. The connection's task only waits on the channel,
//! so interrupts are answered at once; dropping the stream aborts the work
//! at its next yield.
//!
//! [DataFusion's advice]: https://docs.rs/datafusion/latest/datafusion/#thread-scheduling-cpu--io-thread-pools-and-tokio-runtimes

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{RecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use futures::{Stream, StreamExt};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::yielding::yielding_operators;

/// Batches computed ahead of the connection reading them.
const CHANNEL_CAPACITY: usize = 2;

/// Stack of the compute threads: evaluating an expression recurses once per
/// level of its nesting (bounded by the frontend before planning).
const COMPUTE_STACK_BYTES: usize = 64 * 1024 * 1024;

/// The frontend's compute threads: one per core, apart from the runtime
/// serving connections.
static COMPUTE: LazyLock<Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
        .thread_stack_size(COMPUTE_STACK_BYTES)
        .thread_name("sluice-compute")
        .enable_all()
        .build()
        .expect("the frontend compute runtime starts")
});

/// `plan` running on the frontend's compute threads, every operator's
/// output yielding (see [`crate::yielding`]).
pub fn on_compute_threads(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(Arc::new(FrontendComputeExec {
        input: yielding_operators(plan)?,
        input_bytes: None,
    }))
}

/// A query over files, `plan`, that reads `input_bytes` of them, running on
/// the frontend's compute threads (see [`crate::small_queries`]).
pub fn on_compute_threads_reading(
    plan: Arc<dyn ExecutionPlan>,
    input_bytes: u64,
) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(Arc::new(FrontendComputeExec {
        input: yielding_operators(plan)?,
        input_bytes: Some(input_bytes),
    }))
}

/// `plan` with the output of every operator below its root passed through
/// `wrap` (told whether the operator is an input of the root), for wrappers
/// that keep their input's properties: yielding operators
/// ([`crate::yielding`]), cancellable ones on the executors.
pub fn wrap_operator_inputs(
    plan: Arc<dyn ExecutionPlan>,
    wrap: &dyn Fn(Arc<dyn ExecutionPlan>, bool) -> Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    fn wrap_inputs(
        plan: Arc<dyn ExecutionPlan>,
        wrap: &dyn Fn(Arc<dyn ExecutionPlan>, bool) -> Arc<dyn ExecutionPlan>,
        root: bool,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if plan.children().is_empty() {
            return Ok(plan);
        }
        let children = plan
            .children()
            .into_iter()
            .map(|child| Ok(wrap(wrap_inputs(Arc::clone(child), wrap, false)?, root)))
            .collect::<Result<Vec<_>>>()?;
        plan.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep),
        )
    }
    wrap_inputs(plan, wrap, true)
}

/// Runs its input on the frontend's compute threads and passes the batches
/// on.
#[derive(Debug)]
pub struct FrontendComputeExec {
    input: Arc<dyn ExecutionPlan>,
    /// Bytes of the files the plan reads, for a query over files (shown by
    /// EXPLAIN).
    input_bytes: Option<u64>,
}

impl FrontendComputeExec {
    /// The bytes of files `plan` reads in the frontend, when it is a small
    /// query over files ([`on_compute_threads_reading`]).
    pub fn input_bytes_of(plan: &dyn ExecutionPlan) -> Option<u64> {
        plan.downcast_ref::<Self>()
            .and_then(|compute| compute.input_bytes)
    }
}

impl DisplayAs for FrontendComputeExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "FrontendComputeExec")?;
        match self.input_bytes {
            Some(bytes) => write!(f, ": input_bytes={bytes}"),
            None => Ok(()),
        }
    }
}

impl ExecutionPlan for FrontendComputeExec {
    fn name(&self) -> &str {
        "FrontendComputeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self {
            input: children.swap_remove(0),
            input_bytes: self.input_bytes,
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        let input = Arc::clone(&self.input);
        // The input's stream is created on the compute threads too: operators
        // spawn their helper tasks where their stream is created.
        let task = COMPUTE.spawn(async move {
            let mut batches = match input.execute(partition, context) {
                Ok(batches) => batches,
                Err(e) => {
                    let _ = sender.send(Err(e)).await;
                    return;
                }
            };
            while let Some(batch) = batches.next().await {
                if sender.send(batch).await.is_err() {
                    return;
                }
            }
        });
        Ok(Box::pin(ComputedBatches {
            schema: self.input.schema(),
            receiver,
            task: Some(task),
        }))
    }
}

/// The batches of a plan running on the compute threads; dropping it aborts
/// the plan.
struct ComputedBatches {
    schema: SchemaRef,
    receiver: mpsc::Receiver<Result<RecordBatch>>,
    /// `None` once it ended.
    task: Option<JoinHandle<()>>,
}

impl Stream for ComputedBatches {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.receiver.poll_recv(cx) {
            Poll::Ready(None) => {
                // The plan is done sending: see how its task ended.
                let Some(task) = self.task.as_mut() else {
                    return Poll::Ready(None);
                };
                let ended = std::task::ready!(Pin::new(task).poll(cx));
                self.task = None;
                match ended {
                    // A panic in the plan is an error of this query only.
                    Err(e) if e.is_panic() => Poll::Ready(Some(Err(DataFusionError::Execution(
                        format!("the query panicked: {e}"),
                    )))),
                    _ => Poll::Ready(None),
                }
            }
            other => other,
        }
    }
}

impl RecordBatchStream for ComputedBatches {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

impl Drop for ComputedBatches {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
