//! [`LiveResultExec`]: the mark that a job's final stage hands its rows to
//! the frontend that submitted it as it makes them, when they share a
//! process ([`crate::live_results`]).

use std::fmt;
use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};

/// The root of a job's plan whose result is read as it is made under
/// `key` ([`crate::live_results::new_result_key`]). It passes its input's
/// rows through unchanged; the executor that finds it at the root of a
/// stage's plan knows the stage is the job's last.
#[derive(Debug)]
pub struct LiveResultExec {
    input: Arc<dyn ExecutionPlan>,
    key: String,
}

impl LiveResultExec {
    /// `input`, read as it is made under result key `key`.
    pub fn new(input: Arc<dyn ExecutionPlan>, key: String) -> Self {
        Self { input, key }
    }

    /// The key its rows are handed over under.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// Whether the job planned from `plan` returns rows a client reads (not a
/// write, DDL or EXPLAIN, whose answers are small and read once the job
/// ends).
pub fn returns_rows(plan: &LogicalPlan) -> bool {
    !matches!(
        plan,
        LogicalPlan::Explain(_)
            | LogicalPlan::Analyze(_)
            | LogicalPlan::Dml(_)
            | LogicalPlan::Copy(_)
            | LogicalPlan::Ddl(_)
            | LogicalPlan::Statement(_)
    )
}

impl DisplayAs for LiveResultExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "LiveResultExec")
    }
}

impl ExecutionPlan for LiveResultExec {
    fn name(&self) -> &str {
        "LiveResultExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
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
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] = children
            .try_into()
            .map_err(|_| DataFusionError::Internal("LiveResultExec takes one input".into()))?;
        Ok(Arc::new(Self::new(input, self.key.clone())))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}
