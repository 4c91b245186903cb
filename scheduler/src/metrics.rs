//! Prometheus metrics of the executors' tasks, in the process's default
//! registry (served at `/metrics` by whichever role runs the executor).
//!
//! Each query stage task is counted when it ends, by executor and state, and
//! its operators' metrics are added up: bytes and rows its Parquet scans
//! read, bytes its shuffle reads decoded and its shuffle writes produced,
//! bytes spilled. The memory running tasks reserve is read at each scrape.
//! Labels are executor ids and states only: never query text or other user
//! input.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use ballista_core::serde::protobuf::ShuffleWritePartition;
use datafusion::execution::memory_pool::MemoryPool;
use datafusion::physical_plan::metrics::MetricsSet;
use prometheus::{
    register_int_counter, register_int_counter_vec, register_int_gauge, register_int_gauge_vec,
    IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
};
use sluice_engine::inner_metrics;

/// A metric registered in the default registry on first use, with one of
/// prometheus' `register_*!` macros (in scope where this is used); names are
/// constants, so a failure is a programming error. The frontend's metrics
/// use it too.
#[macro_export]
macro_rules! lazy_metric {
    ($register:ident, $($args:expr),+) => {
        ::std::sync::LazyLock::new(|| {
            $register!($($args),+).expect("metric names are unique and valid")
        })
    };
}

static TASKS: LazyLock<IntCounterVec> = lazy_metric!(
    register_int_counter_vec,
    "sluice_tasks_total",
    "Query stage tasks that ended, by executor and state (finished, failed)",
    &["executor", "state"]
);
static TASKS_RUNNING: LazyLock<IntGaugeVec> = lazy_metric!(
    register_int_gauge_vec,
    "sluice_tasks_running",
    "Query stage tasks running now, by executor",
    &["executor"]
);
static SCAN_BYTES: LazyLock<IntCounter> = lazy_metric!(
    register_int_counter,
    "sluice_scan_bytes_total",
    "Bytes read from Parquet files by finished tasks"
);
static SCAN_ROWS: LazyLock<IntCounter> = lazy_metric!(
    register_int_counter,
    "sluice_scan_rows_total",
    "Rows produced by the Parquet scans of finished tasks"
);
static SHUFFLE_WRITTEN: LazyLock<IntCounter> = lazy_metric!(
    register_int_counter,
    "sluice_shuffle_bytes_written_total",
    "Bytes of shuffle and result files written by finished tasks"
);
static SHUFFLE_READ: LazyLock<IntCounter> = lazy_metric!(
    register_int_counter,
    "sluice_shuffle_bytes_read_total",
    "Bytes of shuffle data read (decoded) by finished tasks"
);
static SPILL_BYTES: LazyLock<IntCounter> = lazy_metric!(
    register_int_counter,
    "sluice_spill_bytes_total",
    "Bytes spilled to disk by the operators of finished tasks"
);

static MEMORY_RESERVED: LazyLock<IntGauge> = lazy_metric!(
    register_int_gauge,
    "sluice_memory_reserved_bytes",
    "Memory reserved now by the operators of running tasks (hash tables, sort buffers)"
);

/// The memory pools of the running tasks, by task number.
static RUNNING_POOLS: LazyLock<Mutex<HashMap<u64, Arc<dyn MemoryPool>>>> =
    LazyLock::new(Mutex::default);
/// Numbers the running tasks.
static NEXT_TASK: AtomicU64 = AtomicU64::new(0);

/// Brings the metrics up to date for a scrape: registers the task metrics
/// (so that they show, at zero, before the first task) and reads the memory
/// the running tasks hold.
pub fn refresh() {
    let reserved: usize = RUNNING_POOLS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .map(|pool| pool.reserved())
        .sum();
    MEMORY_RESERVED.set(reserved as i64);
    LazyLock::force(&TASKS);
    LazyLock::force(&TASKS_RUNNING);
    LazyLock::force(&SCAN_BYTES);
    LazyLock::force(&SCAN_ROWS);
    LazyLock::force(&SHUFFLE_WRITTEN);
    LazyLock::force(&SHUFFLE_READ);
    LazyLock::force(&SPILL_BYTES);
}

/// Tasks running now on `executor`, when that executor runs in this process.
pub fn tasks_running(executor: &str) -> i64 {
    TASKS_RUNNING.with_label_values(&[executor]).get()
}

/// A running task, counted in `sluice_tasks_running` (and its memory pool
/// in `sluice_memory_reserved_bytes`) until it is dropped.
pub struct RunningTask {
    executor: String,
    number: u64,
}

impl RunningTask {
    /// Counts a task starting on `executor` whose operators reserve memory
    /// from `pool`.
    pub fn start(executor: &str, pool: Arc<dyn MemoryPool>) -> Self {
        TASKS_RUNNING.with_label_values(&[executor]).inc();
        let number = NEXT_TASK.fetch_add(1, Ordering::Relaxed);
        RUNNING_POOLS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(number, pool);
        Self {
            executor: executor.to_string(),
            number,
        }
    }

    /// Counts the task as finished, with its operators' `metrics` and the
    /// `partitions` it wrote.
    pub fn finished(self, metrics: &[MetricsSet], partitions: &[ShuffleWritePartition]) {
        TASKS.with_label_values(&[&self.executor, "finished"]).inc();
        let written: u64 = partitions.iter().map(|p| p.num_bytes).sum();
        SHUFFLE_WRITTEN.inc_by(written);
        let totals = OperatorTotals::of(metrics);
        SCAN_BYTES.inc_by(totals.scan_bytes);
        SCAN_ROWS.inc_by(totals.scan_rows);
        SHUFFLE_READ.inc_by(totals.shuffle_read_bytes);
        SPILL_BYTES.inc_by(totals.spill_bytes);
    }

    /// Counts the task as failed (or cancelled).
    pub fn failed(self) {
        TASKS.with_label_values(&[&self.executor, "failed"]).inc();
    }
}

impl Drop for RunningTask {
    fn drop(&mut self) {
        TASKS_RUNNING.with_label_values(&[&self.executor]).dec();
        RUNNING_POOLS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.number);
    }
}

/// What a task's operators did, summed.
#[derive(Debug, Default, PartialEq, Eq)]
struct OperatorTotals {
    scan_bytes: u64,
    scan_rows: u64,
    shuffle_read_bytes: u64,
    spill_bytes: u64,
}

impl OperatorTotals {
    /// Sums the metrics of each operator of a task (one set per operator).
    fn of(operators: &[MetricsSet]) -> Self {
        let mut totals = Self::default();
        // A single-stage task's operators report under its one node.
        for operator in &inner_metrics::flatten(operators) {
            let count = |name: &str| -> u64 {
                operator
                    .sum_by_name(name)
                    .map_or(0, |value| value.as_usize() as u64)
            };
            // Parquet scans are the operators that count bytes_scanned.
            let scanned = count("bytes_scanned");
            if scanned > 0 {
                totals.scan_bytes += scanned;
                totals.scan_rows += operator.output_rows().unwrap_or(0) as u64;
            }
            totals.shuffle_read_bytes += count("decoded_bytes");
            // DataFusion's operators and Ballista's sort shuffle name it apart.
            totals.spill_bytes += operator.spilled_bytes().unwrap_or(0) as u64;
            totals.spill_bytes += count("spill_bytes");
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder};

    #[test]
    fn operator_metrics_are_summed_by_kind() {
        let scan = ExecutionPlanMetricsSet::new();
        MetricBuilder::new(&scan)
            .counter("bytes_scanned", 0)
            .add(1000);
        MetricBuilder::new(&scan).output_rows(0).add(10);
        let reader = ExecutionPlanMetricsSet::new();
        MetricBuilder::new(&reader)
            .counter("decoded_bytes", 0)
            .add(300);
        MetricBuilder::new(&reader).output_rows(0).add(99);
        let sort = ExecutionPlanMetricsSet::new();
        let spilled = MetricBuilder::new(&sort).spilled_bytes(0);
        spilled.add(70);
        let totals =
            OperatorTotals::of(&[scan.clone_inner(), reader.clone_inner(), sort.clone_inner()]);
        assert_eq!(
            totals,
            OperatorTotals {
                scan_bytes: 1000,
                scan_rows: 10,
                shuffle_read_bytes: 300,
                spill_bytes: 70,
            }
        );
    }
}
