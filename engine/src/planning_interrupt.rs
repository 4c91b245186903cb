//! Interrupting a statement while it plans.
//!
//! A cancel request or `statement_timeout` stops a running query by dropping
//! its future, which takes effect at its next `await`. Optimizing a large plan
//! computes for seconds without one, so the frontend raises a flag instead
//! ([`PlanningInterrupt`], one per session) from another thread, and a check
//! placed between the optimizer's rules ([`interruptible_optimizer_rules`])
//! and before the physical optimizer's ends planning at the next rule with
//! [`PLANNING_INTERRUPTED`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::LogicalPlan;
use datafusion::optimizer::{Optimizer, OptimizerConfig, OptimizerRule};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;

use crate::optimizer_rules::with_sluice_rules;

/// The message planning stops with when interrupted.
pub const PLANNING_INTERRUPTED: &str = "planning interrupted";

/// A session's flag, raised to stop the statement planning in it. Carried in
/// the session's configuration (so the optimizer sees it) but never shown or
/// sent anywhere: it has no settable entries.
#[derive(Debug, Clone, Default)]
pub struct PlanningInterrupt(Arc<AtomicBool>);

impl PlanningInterrupt {
    /// Raises the flag: planning stops at its next check.
    pub fn raise(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Lowers the flag, for the session's next statement.
    pub fn lower(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    /// Whether the flag is raised.
    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// `Err` when the flag in `options` is raised.
    fn check(options: &ConfigOptions) -> Result<()> {
        match options.extensions.get::<PlanningInterrupt>() {
            Some(flag) if flag.is_raised() => {
                Err(DataFusionError::Execution(PLANNING_INTERRUPTED.into()))
            }
            _ => Ok(()),
        }
    }
}

crate::options::carried_extension!(PlanningInterrupt, "sluice_planning");

/// The frontend's optimizer rules: DataFusion's and Sluice's
/// ([`crate::optimizer_rules`]), with an interrupt check after each.
pub fn interruptible_optimizer_rules() -> Vec<Arc<dyn OptimizerRule + Send + Sync>> {
    with_sluice_rules(Optimizer::new().rules)
        .into_iter()
        .flat_map(|rule| [rule, Arc::new(CheckInterrupt) as _])
        .collect()
}

/// The optimizer rule that ends planning when the session's flag is raised.
#[derive(Debug, Default)]
pub struct CheckInterrupt;

impl OptimizerRule for CheckInterrupt {
    fn name(&self) -> &str {
        "check_interrupt"
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        PlanningInterrupt::check(&config.options())?;
        Ok(Transformed::no(plan))
    }
}

impl PhysicalOptimizerRule for CheckInterrupt {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        PlanningInterrupt::check(config)?;
        Ok(plan)
    }

    fn name(&self) -> &str {
        "check_interrupt"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
