//! The metrics of the operators inside a [`SingleStageExec`], carried as the
//! metrics of that one node.
//!
//! To Ballista a single-stage task is a leaf: it collects a task's metrics by
//! walking the stage plan's children, and the scheduler pairs each metrics
//! set with a node of its own copy of the plan. The operators the leaf runs
//! are not children, so without this their metrics (rows, bytes scanned,
//! spills) were lost: `/metrics` counted no scanned bytes and EXPLAIN ANALYZE
//! showed no operator metrics for queries that ran as one stage.
//!
//! So the leaf reports its inner operators' metrics under its own node, each
//! summed over the operator's partitions and named `<n>/<metric>`, `n` being
//! the operator's place in the inner plan's pre-order (the order EXPLAIN
//! prints it in). Only named counts, gauges and times cross Ballista's wire
//! unchanged, so every kind is sent as one of those and [`split`] turns the
//! names back into DataFusion's kinds.
//!
//! [`SingleStageExec`]: crate::single_stage::SingleStageExec

use std::borrow::Cow;
use std::sync::Arc;

use datafusion::physical_plan::metrics::{Count, Gauge, Metric, MetricValue, MetricsSet, Time};
use datafusion::physical_plan::ExecutionPlan;

use crate::yielding::is_yielding;

/// Separates an inner operator's number from a metric's name.
const SEPARATOR: char = '/';

/// The metrics of every operator of `plan`, in pre-order, each summed over
/// its partitions and named `<n>/<metric>` ([`crate::yielding`]'s wrappers
/// are not counted).
pub(crate) fn encode(plan: &Arc<dyn ExecutionPlan>) -> MetricsSet {
    let mut encoded = MetricsSet::new();
    let mut pending = vec![Arc::clone(plan)];
    let mut number = 0usize;
    while let Some(node) = pending.pop() {
        // Put in to run the plan, not in the planned one the numbers
        // refer to.
        if is_yielding(node.as_ref()) {
            pending.extend(node.children().into_iter().cloned());
            continue;
        }
        if let Some(metrics) = node.metrics() {
            for metric in metrics.aggregate_by_name().iter() {
                if let Some(value) = named(number, metric.value()) {
                    // Partition 0 of the task's one output partition: a
                    // retried task's report replaces it.
                    encoded.push(Arc::new(Metric::new(value, Some(0))));
                }
            }
        }
        pending.extend(node.children().into_iter().rev().cloned());
        number += 1;
    }
    encoded
}

/// `value` as a named count, gauge or time called `<number>/<its name>`;
/// `None` for timestamps and custom metrics, which Ballista does not carry.
fn named(number: usize, value: &MetricValue) -> Option<MetricValue> {
    let name: Cow<'static, str> = format!("{number}{SEPARATOR}{}", value.name()).into();
    let count = |count: &Count| {
        Some(MetricValue::Count {
            name: name.clone(),
            count: count.clone(),
        })
    };
    let gauge = |gauge: &Gauge| {
        Some(MetricValue::Gauge {
            name: name.clone(),
            gauge: gauge.clone(),
        })
    };
    match value {
        MetricValue::OutputRows(c)
        | MetricValue::SpillCount(c)
        | MetricValue::SpilledBytes(c)
        | MetricValue::OutputBytes(c)
        | MetricValue::OutputBatches(c)
        | MetricValue::SpilledRows(c)
        | MetricValue::Count { count: c, .. } => count(c),
        MetricValue::CurrentMemoryUsage(g)
        | MetricValue::Gauge { gauge: g, .. }
        | MetricValue::PeakMemoryUsage { gauge: g, .. } => gauge(g),
        MetricValue::ElapsedCompute(time) | MetricValue::Time { time, .. } => {
            Some(MetricValue::Time {
                name,
                time: time.clone(),
            })
        }
        MetricValue::PruningMetrics { .. }
        | MetricValue::Ratio { .. }
        | MetricValue::StartTimestamp(_)
        | MetricValue::EndTimestamp(_)
        | MetricValue::Custom { .. } => None,
    }
}

/// Splits a node's metrics into its own and those [`encode`] gave each
/// inner operator, by operator number, in DataFusion's kinds again. A node
/// that runs no inner operators gets its metrics back and no inner sets.
pub fn split(metrics: &MetricsSet) -> (MetricsSet, Vec<(usize, MetricsSet)>) {
    let mut own = MetricsSet::new();
    let mut inner: Vec<(usize, MetricsSet)> = Vec::new();
    for metric in metrics.iter() {
        let decoded = metric
            .value()
            .name()
            .split_once(SEPARATOR)
            .and_then(|(number, name)| {
                Some((number.parse::<usize>().ok()?, unnamed(name, metric.value())))
            });
        let Some((number, value)) = decoded else {
            own.push(Arc::clone(metric));
            continue;
        };
        let value = Arc::new(Metric::new(value, metric.partition()));
        match inner.iter_mut().find(|(n, _)| *n == number) {
            Some((_, set)) => set.push(value),
            None => {
                let mut set = MetricsSet::new();
                set.push(value);
                inner.push((number, set));
            }
        }
    }
    inner.sort_by_key(|(number, _)| *number);
    (own, inner)
}

/// Every set of `operators` with the inner operators [`encode`] folded into
/// one node split out as sets of their own.
pub fn flatten(operators: &[MetricsSet]) -> Vec<MetricsSet> {
    operators
        .iter()
        .flat_map(|set| {
            let (own, inner) = split(set);
            std::iter::once(own).chain(inner.into_iter().map(|(_, set)| set))
        })
        .collect()
}

/// The metric `encoded` (a named count, gauge or time) under the plain
/// `name`, in the kind DataFusion gives that name.
fn unnamed(name: &str, encoded: &MetricValue) -> MetricValue {
    let count = || match encoded {
        MetricValue::Count { count, .. } => count.clone(),
        other => {
            let count = Count::new();
            count.add(other.as_usize());
            count
        }
    };
    let name_it = || -> Cow<'static, str> { name.to_string().into() };
    match name {
        "output_rows" => MetricValue::OutputRows(count()),
        "spill_count" => MetricValue::SpillCount(count()),
        "spilled_bytes" => MetricValue::SpilledBytes(count()),
        "output_bytes" => MetricValue::OutputBytes(count()),
        "output_batches" => MetricValue::OutputBatches(count()),
        "spilled_rows" => MetricValue::SpilledRows(count()),
        "elapsed_compute" => MetricValue::ElapsedCompute(time(encoded)),
        _ => match encoded {
            MetricValue::Time { time, .. } => MetricValue::Time {
                name: name_it(),
                time: time.clone(),
            },
            MetricValue::Gauge { gauge, .. } => MetricValue::Gauge {
                name: name_it(),
                gauge: gauge.clone(),
            },
            _ => MetricValue::Count {
                name: name_it(),
                count: count(),
            },
        },
    }
}

/// The time `encoded` holds.
fn time(encoded: &MetricValue) -> Time {
    match encoded {
        MetricValue::Time { time, .. } => time.clone(),
        other => {
            let time = Time::new();
            time.add_duration(std::time::Duration::from_nanos(other.as_usize() as u64));
            time
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::physical_plan::metrics::MetricBuilder;

    #[test]
    fn inner_metrics_come_back_in_their_kinds_by_operator() {
        let scan = datafusion::physical_plan::metrics::ExecutionPlanMetricsSet::new();
        MetricBuilder::new(&scan).output_rows(0).add(10);
        MetricBuilder::new(&scan).output_rows(1).add(5);
        MetricBuilder::new(&scan)
            .counter("bytes_scanned", 0)
            .add(1000);
        MetricBuilder::new(&scan).spilled_bytes(0).add(7);
        let mut encoded = MetricsSet::new();
        for metric in scan.clone_inner().aggregate_by_name().iter() {
            if let Some(value) = named(2, metric.value()) {
                encoded.push(Arc::new(Metric::new(value, Some(0))));
            }
        }
        let mut own_metric = MetricsSet::new();
        own_metric.push(Arc::new(Metric::new(
            MetricValue::OutputRows({
                let count = Count::new();
                count.add(15);
                count
            }),
            Some(0),
        )));
        for metric in encoded.iter() {
            own_metric.push(Arc::clone(metric));
        }
        let (own, inner) = split(&own_metric);
        assert_eq!(own.output_rows(), Some(15));
        assert_eq!(inner.len(), 1);
        let (number, set) = &inner[0];
        assert_eq!(*number, 2);
        assert_eq!(set.output_rows(), Some(15));
        assert_eq!(set.spilled_bytes(), Some(7));
        assert_eq!(
            set.sum_by_name("bytes_scanned").map(|v| v.as_usize()),
            Some(1000)
        );
        assert_eq!(flatten(&[own_metric]).len(), 2);
    }
}
