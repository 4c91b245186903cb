//! Plans whose every operator yields to the runtime now and then, so that
//! aborting the task driving them takes effect.
//!
//! A tokio task stops when aborted only at its next `.await` that returns
//! `Pending`. DataFusion makes only a plan's leaves cooperative (they consume
//! tokio's task budget per batch), but one input batch can make an operator
//! produce thousands of batches: a hash join on a key of few values, or a
//! nested loop join. An aggregate above it then polls it for minutes without
//! ever yielding, and a cancelled query ran on to its end, holding the
//! cores: `SELECT count(*) FROM t a JOIN t b ON a.bucket = b.bucket` over a
//! million rows kept two cores busy for a quarter of an hour after its
//! cancel was acknowledged. [`yielding_operators`] puts a [`YieldingExec`]
//! above every operator, so the budget is spent by every batch any operator
//! produces and the task yields (and can be aborted) every 128 of them.
//!
//! Plans run this way: those on the frontend's compute threads
//! ([`crate::frontend_compute`]) and the plan inside a single-stage task
//! ([`crate::single_stage`]).

use std::fmt;
use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::coop::make_cooperative;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};

use crate::frontend_compute::wrap_operator_inputs;

/// `plan` with a [`YieldingExec`] above each operator below its root.
pub fn yielding_operators(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    wrap_operator_inputs(plan, &|input, _| Arc::new(YieldingExec { input }))
}

/// Whether `plan` is a [`YieldingExec`], which only passes batches on (the
/// metrics of a single-stage task number the operators without them).
pub fn is_yielding(plan: &dyn ExecutionPlan) -> bool {
    plan.downcast_ref::<YieldingExec>().is_some()
}

/// Passes its input's batches on, each consuming a unit of tokio's task
/// budget (DataFusion's [`make_cooperative`]). Unlike DataFusion's own
/// `CooperativeExec`, which its optimizer puts above leaves, it is never in
/// a plan as planned: only in one being run, so it can be told apart.
#[derive(Debug)]
pub struct YieldingExec {
    input: Arc<dyn ExecutionPlan>,
}

impl DisplayAs for YieldingExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "YieldingExec")
    }
}

impl ExecutionPlan for YieldingExec {
    fn name(&self) -> &str {
        "YieldingExec"
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
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        Ok(make_cooperative(self.input.execute(partition, context)?))
    }
}
