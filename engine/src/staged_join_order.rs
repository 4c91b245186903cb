//! Sorts kept above joins that Ballista may swap.
//!
//! DataFusion removes a `SortExec` when its input is already in order, and a
//! hash join passes on its probe side's order (inner and right joins), which
//! a Parquet file written in order declares (`sorting_columns`). Ballista then
//! plans each stage again when its inputs are done, with the sizes it
//! measured (`ballista_scheduler::state::execution_stage`), and may swap a
//! join's sides: the former probe side becomes the build side and its order
//! is lost, with no sort left to restore it. `SELECT … FROM b RIGHT JOIN a …
//! ORDER BY a.id` came back unordered from a staged plan.
//!
//! [`HideJoinOrders`] runs before DataFusion's `EnsureRequirements` and puts a
//! [`UnorderedJoinExec`] over each join that passes an order on, so the
//! sorts that order would have satisfied stay; [`UnhideJoinOrders`] removes
//! the markers once DataFusion's rules are done. Single-stage plans are not
//! re-planned and keep DataFusion's rules as they are.

use std::fmt;
use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::joins::{CrossJoinExec, HashJoinExec, NestedLoopJoinExec};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    SendableRecordBatchStream,
};

use crate::single_stage::PhysicalRule;

/// Name of the DataFusion rule that removes sorts an input already satisfies.
const SORTS_ENFORCED_BY: &str = "EnsureRequirements";

/// `rules` with [`HideJoinOrders`] before DataFusion's `EnsureRequirements`
/// and [`UnhideJoinOrders`] at the end: the physical rules of staged plans.
pub fn with_join_orders_hidden(rules: Vec<PhysicalRule>) -> Vec<PhysicalRule> {
    let mut out = Vec::with_capacity(rules.len() + 2);
    for rule in rules {
        if rule.name() == SORTS_ENFORCED_BY {
            out.push(Arc::new(HideJoinOrders) as PhysicalRule);
        }
        out.push(rule);
    }
    out.push(Arc::new(UnhideJoinOrders));
    out
}

/// Puts an [`UnorderedJoinExec`] over every join Ballista may swap whose
/// output is ordered.
#[derive(Debug, Default)]
pub struct HideJoinOrders;

impl PhysicalOptimizerRule for HideJoinOrders {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let swappable = node.downcast_ref::<HashJoinExec>().is_some()
                || node.downcast_ref::<CrossJoinExec>().is_some()
                || node.downcast_ref::<NestedLoopJoinExec>().is_some();
            Ok(if swappable && node.output_ordering().is_some() {
                Transformed::yes(Arc::new(UnorderedJoinExec::new(node)) as _)
            } else {
                Transformed::no(node)
            })
        })
        .map(|transformed| transformed.data)
    }

    fn name(&self) -> &str {
        "sluice_hide_join_orders"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Removes the markers [`HideJoinOrders`] added.
#[derive(Debug, Default)]
pub struct UnhideJoinOrders;

impl PhysicalOptimizerRule for UnhideJoinOrders {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            Ok(match node.downcast_ref::<UnorderedJoinExec>() {
                Some(marker) => Transformed::yes(Arc::clone(&marker.join)),
                None => Transformed::no(node),
            })
        })
        .map(|transformed| transformed.data)
    }

    fn name(&self) -> &str {
        "sluice_unhide_join_orders"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A join's rows, declared in no order; only between the two rules above.
#[derive(Debug)]
pub struct UnorderedJoinExec {
    join: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl UnorderedJoinExec {
    fn new(join: Arc<dyn ExecutionPlan>) -> Self {
        let properties = join.properties();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(join.schema()),
            properties.partitioning.clone(),
            properties.emission_type,
            properties.boundedness,
        );
        Self {
            join,
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for UnorderedJoinExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "UnorderedJoinExec")
    }
}

impl ExecutionPlan for UnorderedJoinExec {
    fn name(&self) -> &str {
        "UnorderedJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.join]
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
        Ok(Arc::new(Self::new(children.swap_remove(0))))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.join.execute(partition, context)
    }
}
