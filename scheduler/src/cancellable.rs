//! Executor-side cancellation of query stage tasks.
//!
//! Ballista 55 cancels a task by aborting its future, but the shuffle writer
//! does its work in a task of its own (`tokio::spawn`), which the abort does
//! not reach: a cancelled join ran on for minutes, holding its task slot and
//! a core. So each operator of a stage is wrapped in a [`CancellableExec`]
//! that ends its stream with an error once the task's [`CancelFlag`] is
//! raised, and yields to the runtime every tokio budget's worth of batches
//! (a stage reading local shuffle files never waits otherwise, so the abort
//! would only be seen at the end). The flag is raised when the task's future
//! is dropped: aborted, or finished. The wrappers under the stage's shuffle
//! writer also compact its output's string views (see
//! [`sluice_engine::compact`]).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::coop::make_cooperative;

use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;
use sluice_engine::compact::compact_views;
use sluice_engine::frontend_compute::wrap_operator_inputs;

/// Raised when a task must stop.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    /// Whether the task must stop.
    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// A guard that raises the flag when dropped.
    pub fn raise_on_drop(&self) -> RaiseOnDrop {
        RaiseOnDrop(self.clone())
    }
}

/// Raises its [`CancelFlag`] when dropped.
pub struct RaiseOnDrop(CancelFlag);

impl Drop for RaiseOnDrop {
    fn drop(&mut self) {
        self.0 .0.store(true, Ordering::Relaxed);
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
        let schema = input.schema();
        let (flag, stage_output) = (self.flag.clone(), self.stage_output);
        let batches = input.map(move |batch| {
            if flag.is_raised() {
                Err(DataFusionError::Execution("task cancelled".into()))
            } else if stage_output {
                batch.and_then(compact_views)
            } else {
                batch
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }
}
