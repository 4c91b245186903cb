//! Sluice's logical optimizer rules and where they run among DataFusion's.

use std::sync::Arc;

use datafusion::optimizer::OptimizerRule;

use crate::aggregate_key_filter::AggregateKeyFilter;
use crate::semi_join_pushdown::SemiJoinPushdown;

/// Name of the DataFusion rule Sluice's rules run after: filter pushdown turns
/// the `FROM` list's cross joins into the inner joins they look at.
const RUNS_AFTER: &str = "push_down_filter";

/// `rules` with Sluice's ([`SemiJoinPushdown`], then [`AggregateKeyFilter`])
/// after DataFusion's filter pushdown, or at the end when it is missing.
pub fn with_sluice_rules(
    rules: Vec<Arc<dyn OptimizerRule + Send + Sync>>,
) -> Vec<Arc<dyn OptimizerRule + Send + Sync>> {
    let ours = || -> [Arc<dyn OptimizerRule + Send + Sync>; 2] {
        [Arc::new(SemiJoinPushdown), Arc::new(AggregateKeyFilter)]
    };
    let mut out = Vec::with_capacity(rules.len() + 2);
    let mut placed = false;
    for rule in rules {
        let after = rule.name() == RUNS_AFTER;
        out.push(rule);
        if after && !placed {
            out.extend(ours());
            placed = true;
        }
    }
    if !placed {
        out.extend(ours());
    }
    out
}
