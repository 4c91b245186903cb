//! Executor-side cancellation of query stage tasks.
//!
//! Ballista 55 cancels a task by aborting its future, but the shuffle writer
//! does its work in a task of its own (`tokio::spawn`), which the abort does
//! not reach: a cancelled join ran on for minutes, holding its task slot and
//! a core. So each operator of a stage is wrapped in a [`CancellableExec`]
//! that ends its stream with an error once the task's [`CancelFlag`] is
//! raised, at once even while it waits for its input (a single-stage task's
//! plan sends nothing until its aggregate is done), and yields to the
//! runtime every tokio budget's worth of batches (a stage reading local
//! shuffle files never waits otherwise, so the abort would only be seen at
//! the end). The flag is raised when the task's future is dropped: aborted,
//! or finished. The wrappers under the stage's shuffle writer also compact
//! its output's string views (see [`sluice_engine::compact`]).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{RecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::coop::make_cooperative;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use futures::{Stream, StreamExt};
use sluice_engine::compact::compact_views;
use sluice_engine::frontend_compute::wrap_operator_inputs;
use tokio_util::sync::{CancellationToken, DropGuard, WaitForCancellationFutureOwned};

/// Raised when a task must stop.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(CancellationToken);

impl CancelFlag {
    /// A guard that raises the flag when dropped.
    pub fn raise_on_drop(&self) -> DropGuard {
        self.0.clone().drop_guard()
    }
}

/// `plan` with a [`CancellableExec`] above each operator below its root (the
/// root is the shuffle writer, which Ballista's engine expects as it is). The
/// ones right under the root also compact the stage's output batches
/// ([`compact_views`]) before the writer stores them.
pub fn cancellable(
    plan: Arc<dyn ExecutionPlan>,
    flag: &CancelFlag,
) -> Result<Arc<dyn ExecutionPlan>> {
    wrap_operator_inputs(plan, &|input, stage_output| {
        Arc::new(CancellableExec {
            input,
            flag: flag.clone(),
            stage_output,
        })
    })
}

/// Passes its input's batches through until the task is cancelled.
#[derive(Debug)]
pub struct CancellableExec {
    input: Arc<dyn ExecutionPlan>,
    flag: CancelFlag,
    /// Whether its batches are the stage's output, compacted before they
    /// are written.
    stage_output: bool,
}

impl DisplayAs for CancellableExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "CancellableExec")
    }
}

impl ExecutionPlan for CancellableExec {
    fn name(&self) -> &str {
        "CancellableExec"
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
            flag: self.flag.clone(),
            stage_output: self.stage_output,
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = make_cooperative(self.input.execute(partition, context)?);
        Ok(Box::pin(UntilCancelled {
            schema: input.schema(),
            input,
            cancelled: Box::pin(self.flag.0.clone().cancelled_owned()),
            stage_output: self.stage_output,
            ended: false,
        }))
    }
}

/// A task operator's batches until its task is cancelled, then one error.
struct UntilCancelled {
    schema: SchemaRef,
    input: SendableRecordBatchStream,
    /// Ready once the task's [`CancelFlag`] is raised.
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Whether its batches are the stage's output, compacted before they
    /// are written.
    stage_output: bool,
    /// Whether it gave its error or its input ended.
    ended: bool,
}

impl Stream for UntilCancelled {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if self.cancelled.as_mut().poll(cx).is_ready() {
            self.ended = true;
            return Poll::Ready(Some(Err(DataFusionError::Execution(
                "task cancelled".into(),
            ))));
        }
        let batch = std::task::ready!(self.input.poll_next_unpin(cx));
        self.ended = batch.is_none();
        Poll::Ready(match batch {
            Some(batch) if self.stage_output => Some(batch.and_then(compact_views)),
            other => other,
        })
    }
}

impl RecordBatchStream for UntilCancelled {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}
