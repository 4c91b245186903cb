//! Grouped subqueries that aggregate only the groups their join can match.
//!
//! DataFusion turns a correlated scalar subquery into a join with an
//! aggregate grouped by the correlation key. TPC-H q17
//! (`l_quantity < (SELECT 0.2 * avg(l_quantity) FROM lineitem WHERE
//! l_partkey = p_partkey)`, with `part` filtered to one brand and container)
//! averaged the quantity of all 2 million parts over all 60 million lineitems
//! at SF 10, then joined the averages to the 2,000 parts that pass the
//! filter: 3.4x DuckDB's time.
//!
//! [`AggregateKeyFilter`] gives such an aggregate's input a semi join with
//! the keys the other side of the join can hold: `X ⋈ γ_k(L)` on `X.a = k`
//! becomes `X ⋈ γ_k(L ⋉ S)` on `L.k = S.a`, where `S` is the filtered scan
//! that `X.a`'s values come from. That is always the same rows: a group of
//! `γ_k` whose key is not among `X.a`'s values matches no row of `X` (equality
//! never matches NULL either), and the semi join removes whole groups, never
//! part of one. It pays when `S`'s filter keeps few keys, and costs a second
//! scan of `S` and a hash probe per input row when it keeps most; the rule
//! only looks for filtered scans, so `S` is read cheaply either way.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, NullEquality, Result, ScalarValue};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{
    Aggregate, Expr, Filter, Join, JoinConstraint, JoinType, LogicalPlan, Projection,
    SubqueryAlias, TableScan,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

use crate::semi_join_pushdown::with_inputs;

/// The optimizer rule; see the module documentation.
#[derive(Debug, Default)]
pub struct AggregateKeyFilter;

/// Alias prefix of the key sets the rule adds; an aggregate whose input holds
/// one already is not filtered again when the optimizer runs another pass.
const KEYS_ALIAS: &str = "__sluice_group_keys";

impl OptimizerRule for AggregateKeyFilter {
    fn name(&self) -> &str {
        "sluice_aggregate_key_filter"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Join(join) = plan else {
            return Ok(Transformed::no(plan));
        };
        match filter_aggregate_side(&join, config)? {
            Some(filtered) => Ok(Transformed::yes(LogicalPlan::Join(filtered))),
            None => Ok(Transformed::no(LogicalPlan::Join(join))),
        }
    }
}

/// Which input of a join may lose rows that match nothing without changing
/// the join's result: one whose unmatched rows the join never outputs.
fn droppable_sides(join: &Join) -> (bool, bool) {
    if join.null_aware || join.null_equality != NullEquality::NullEqualsNothing {
        return (false, false);
    }
    match join.join_type {
        JoinType::Inner => (true, true),
        JoinType::Left | JoinType::LeftSemi | JoinType::LeftAnti => (false, true),
        JoinType::Right | JoinType::RightSemi | JoinType::RightAnti => (true, false),
        // A mark join outputs NULL marks when the other side holds NULLs,
        // and a full join outputs both sides' unmatched rows.
        JoinType::LeftMark | JoinType::RightMark | JoinType::Full => (false, false),
    }
}

/// `join` with an aggregate on one side reading only the keys the other side
/// can match; `None` when no equality key leads to one.
fn filter_aggregate_side(join: &Join, config: &dyn OptimizerConfig) -> Result<Option<Join>> {
    let (left_droppable, right_droppable) = droppable_sides(join);
    for (left_key, right_key) in &join.on {
        let (Expr::Column(left_key), Expr::Column(right_key)) = (left_key, right_key) else {
            continue;
        };
        if may_filter_groups(right_droppable, &join.right, right_key) {
            if let Some((source, key)) = key_source(&join.left, left_key) {
                let keys = key_set(source, &key, config)?;
                if let Some(right) = filter_groups(&join.right, right_key, &keys)? {
                    return Ok(Some(with_inputs(join, Arc::clone(&join.left), right)?));
                }
            }
        }
        if may_filter_groups(left_droppable, &join.left, left_key) {
            if let Some((source, key)) = key_source(&join.right, right_key) {
                let keys = key_set(source, &key, config)?;
                if let Some(left) = filter_groups(&join.left, left_key, &keys)? {
                    return Ok(Some(with_inputs(join, left, Arc::clone(&join.right))?));
                }
            }
        }
    }
    Ok(None)
}

/// Whether `side` may be filtered on `key`: the join drops its unmatched rows
/// and its key is a group key of an aggregate not filtered yet.
fn may_filter_groups(droppable: bool, side: &LogicalPlan, key: &Column) -> bool {
    droppable && group_input_column(side, key).is_some()
}

/// The column of an aggregate's input behind `column` of `plan`, when
/// `column` is a plain group key seen through aliases, projections and
/// filters (a `HAVING`), and the aggregate has no key set from this rule yet.
fn group_input_column(plan: &LogicalPlan, column: &Column) -> Option<Column> {
    match plan {
        LogicalPlan::SubqueryAlias(alias) => {
            group_input_column(&alias.input, &column_below_alias(alias, column)?)
        }
        LogicalPlan::Projection(projection) => group_input_column(
            &projection.input,
            &column_below_projection(projection, column)?,
        ),
        LogicalPlan::Filter(filter) => group_input_column(&filter.input, column),
        LogicalPlan::Aggregate(aggregate) => {
            let is_group_key = aggregate
                .group_expr
                .iter()
                .any(|expr| matches!(expr, Expr::Column(key) if key == column));
            let plain_groups = aggregate
                .group_expr
                .iter()
                .all(|expr| !matches!(expr, Expr::GroupingSet(_)));
            (is_group_key && plain_groups && !holds_key_set(&aggregate.input))
                .then(|| column.clone())
        }
        _ => None,
    }
}

/// `plan` with the aggregate behind `column` reading only rows whose group
/// key is in `keys` (one column); `None` when `column` is not such a key.
fn filter_groups(
    plan: &LogicalPlan,
    column: &Column,
    keys: &LogicalPlan,
) -> Result<Option<Arc<LogicalPlan>>> {
    let rebuilt = match plan {
        LogicalPlan::SubqueryAlias(alias) => {
            let Some(column) = column_below_alias(alias, column) else {
                return Ok(None);
            };
            let Some(input) = filter_groups(&alias.input, &column, keys)? else {
                return Ok(None);
            };
            LogicalPlan::SubqueryAlias(SubqueryAlias::try_new(input, alias.alias.clone())?)
        }
        LogicalPlan::Projection(projection) => {
            let Some(column) = column_below_projection(projection, column) else {
                return Ok(None);
            };
            let Some(input) = filter_groups(&projection.input, &column, keys)? else {
                return Ok(None);
            };
            LogicalPlan::Projection(Projection::try_new_with_schema(
                projection.expr.clone(),
                input,
                Arc::clone(&projection.schema),
            )?)
        }
        LogicalPlan::Filter(filter) => {
            let Some(input) = filter_groups(&filter.input, column, keys)? else {
                return Ok(None);
            };
            LogicalPlan::Filter(Filter::try_new(filter.predicate.clone(), input)?)
        }
        LogicalPlan::Aggregate(aggregate) => {
            if group_input_column(plan, column).is_none() {
                return Ok(None);
            }
            let key = Column::from(keys.schema().qualified_field(0));
            let semi = Join::try_new(
                Arc::clone(&aggregate.input),
                Arc::new(keys.clone()),
                vec![(Expr::Column(column.clone()), Expr::Column(key))],
                None,
                JoinType::LeftSemi,
                JoinConstraint::On,
                NullEquality::NullEqualsNothing,
                false,
            )?;
            LogicalPlan::Aggregate(Aggregate::try_new_with_schema(
                Arc::new(LogicalPlan::Join(semi)),
                aggregate.group_expr.clone(),
                aggregate.aggr_expr.clone(),
                Arc::clone(&aggregate.schema),
            )?)
        }
        _ => return Ok(None),
    };
    Ok(Some(Arc::new(rebuilt)))
}

/// A filtered scan under `plan` whose `column` holds every non-NULL value
/// `column` takes in `plan`, with that column's name there. It descends
/// through joins (onto the side that holds the column, or across an equality
/// key of an inner or semi join) and plain projections.
fn key_source(plan: &LogicalPlan, column: &Column) -> Option<(LogicalPlan, Column)> {
    match plan {
        LogicalPlan::SubqueryAlias(alias) => {
            key_source(&alias.input, &column_below_alias(alias, column)?)
        }
        LogicalPlan::Projection(projection) => key_source(
            &projection.input,
            &column_below_projection(projection, column)?,
        ),
        LogicalPlan::Filter(filter) if is_scan(&filter.input) && selective(&filter.predicate) => {
            Some((plan.clone(), column.clone()))
        }
        LogicalPlan::Filter(filter) => key_source(&filter.input, column),
        LogicalPlan::TableScan(TableScan { filters, fetch, .. })
            if fetch.is_none() && filters.iter().any(selective) =>
        {
            Some((plan.clone(), column.clone()))
        }
        LogicalPlan::Join(join) => {
            let (own, other) = if join.left.schema().has_column(column) {
                (&join.left, &join.right)
            } else {
                (&join.right, &join.left)
            };
            key_source(own, column).or_else(|| {
                let equal = matches!(
                    join.join_type,
                    JoinType::Inner | JoinType::LeftSemi | JoinType::RightSemi
                );
                let paired = join.on.iter().find_map(|pair| match pair {
                    (Expr::Column(l), Expr::Column(r)) if l == column => Some(r),
                    (Expr::Column(l), Expr::Column(r)) if r == column => Some(l),
                    _ => None,
                })?;
                equal.then(|| key_source(other, paired)).flatten()
            })
        }
        _ => None,
    }
}

/// Whether a scan under `predicate` is a key source: the predicate gives the
/// same rows when the scan is read again (no volatile function such as
/// `random()`, no subquery), and it may remove rows other than NULL keys.
/// DataFusion leaves `true` in a scan's filters where a cross join's
/// condition was pushed down (TPC-H q15), and may add `key IS NOT NULL` to
/// join inputs: neither removes a key that can match.
fn selective(predicate: &Expr) -> bool {
    let repeatable = !predicate.is_volatile()
        && !predicate
            .exists(|expr| {
                Ok(matches!(
                    expr,
                    Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
                ))
            })
            .unwrap_or(true);
    repeatable
        && split_conjunction(predicate).iter().any(|conjunct| {
            !matches!(
                conjunct,
                Expr::IsNotNull(_) | Expr::Literal(ScalarValue::Boolean(Some(true)), _)
            )
        })
}

/// A table scan without a row limit (read again, a limited scan may return
/// other rows), possibly under column projections.
fn is_scan(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::TableScan(TableScan { fetch, .. }) => fetch.is_none(),
        LogicalPlan::Projection(projection) => is_scan(&projection.input),
        _ => false,
    }
}

/// The one-column key set read from `source`, under an alias of its own so
/// its column cannot be confused with the same table's elsewhere in the plan.
fn key_set(source: LogicalPlan, key: &Column, config: &dyn OptimizerConfig) -> Result<LogicalPlan> {
    let projected = Projection::try_new(vec![Expr::Column(key.clone())], Arc::new(source))?;
    let alias = config.alias_generator().next(KEYS_ALIAS);
    Ok(LogicalPlan::SubqueryAlias(SubqueryAlias::try_new(
        Arc::new(LogicalPlan::Projection(projected)),
        alias,
    )?))
}

/// Whether `plan` already reads a key set this rule added.
fn holds_key_set(plan: &LogicalPlan) -> bool {
    plan.exists(|node| {
        Ok(matches!(node, LogicalPlan::SubqueryAlias(alias)
            if alias.alias.table().starts_with(KEYS_ALIAS)))
    })
    .unwrap_or(true)
}

/// The input column behind `column` of a subquery alias (same position).
fn column_below_alias(alias: &SubqueryAlias, column: &Column) -> Option<Column> {
    let index = alias.schema.index_of_column(column).ok()?;
    Some(Column::from(alias.input.schema().qualified_field(index)))
}

/// The input column behind `column` of a projection, when it is passed
/// through (possibly renamed) rather than computed.
fn column_below_projection(projection: &Projection, column: &Column) -> Option<Column> {
    let index = projection.schema.index_of_column(column).ok()?;
    match &projection.expr[index] {
        Expr::Column(below) => Some(below.clone()),
        Expr::Alias(alias) => match alias.expr.as_ref() {
            Expr::Column(below) => Some(below.clone()),
            _ => None,
        },
        _ => None,
    }
}
