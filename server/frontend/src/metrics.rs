//! Prometheus metrics of the frontend, in the process's default registry
//! (the executors' task metrics are `sluice_scheduler::metrics`): queries by
//! outcome and duration, queries running, client connections, live
//! executors and their task slots. Labels are states only: never query text or user names.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    register_histogram, register_int_counter_vec, register_int_gauge, Histogram, IntCounterVec,
    IntGauge,
};

use sluice_engine::planner::Placement;
use sluice_scheduler::lazy_metric;

static QUERIES: LazyLock<IntCounterVec> = lazy_metric!(
    register_int_counter_vec,
    "sluice_queries_total",
    "Statements that ended, by state (finished, failed, cancelled)",
    &["state"]
);
static QUERIES_RAN_ON: LazyLock<IntCounterVec> = lazy_metric!(
    register_int_counter_vec,
    "sluice_queries_ran_on_total",
    "Statements that ran a plan, by where it ran (frontend: catalog queries and queries \
     reading at most sluice.frontend_max_bytes; cluster: Ballista jobs)",
    &["ran_on"]
);
static QUERY_DURATION: LazyLock<Histogram> = lazy_metric!(
    register_histogram,
    "sluice_query_duration_seconds",
    "Time from a statement's arrival to its last row or error",
    vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]
);
static QUERIES_RUNNING: LazyLock<IntGauge> = lazy_metric!(
    register_int_gauge,
    "sluice_queries_running",
    "Statements running now (planning, executing or sending rows)"
);
static CONNECTIONS: LazyLock<IntGauge> = lazy_metric!(
    register_int_gauge,
    "sluice_connections",
    "Client connections open now"
);
static EXECUTORS: LazyLock<IntGauge> = lazy_metric!(
    register_int_gauge,
    "sluice_executors",
    "Executors registered with the scheduler and alive"
);

/// Counts a statement starting.
pub fn query_started() {
    QUERIES_RUNNING.inc();
}

/// The states a statement ends in, as [`query_ended`] is given them.
pub const ENDED_STATES: [&str; 3] = ["finished", "failed", "cancelled"];

/// Counts a statement that ended in `state` (`finished`, `failed`,
/// `cancelled`) after `elapsed`, having run its plan at `ran_on` (`None`: it
/// ran none, as `SET`). The query log calls it: metrics know nothing of it.
pub fn query_ended(state: &str, elapsed: Duration, ran_on: Option<Placement>) {
    QUERIES_RUNNING.dec();
    QUERIES.with_label_values(&[state]).inc();
    if let Some(placement) = ran_on {
        QUERIES_RAN_ON
            .with_label_values(&[placement.as_str()])
            .inc();
    }
    QUERY_DURATION.observe(elapsed.as_secs_f64());
}

/// An open client connection, counted until dropped.
pub struct OpenConnection(());

impl OpenConnection {
    /// Counts a connection opening.
    pub fn open() -> Self {
        CONNECTIONS.inc();
        Self(())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        CONNECTIONS.dec();
    }
}

static TASK_SLOTS: LazyLock<IntGauge> = lazy_metric!(
    register_int_gauge,
    "sluice_task_slots",
    "Task slots the live executors offer"
);

/// Records the live executors and their task slots (read at each scrape).
pub fn set_executors(live: usize, slots: u64) {
    EXECUTORS.set(live as i64);
    TASK_SLOTS.set(slots as i64);
}

/// Every metric of the process in Prometheus' text format.
pub fn render() -> String {
    // Metrics not touched yet still show, at zero.
    for state in ENDED_STATES {
        QUERIES.with_label_values(&[state]);
    }
    for placement in [Placement::Frontend, Placement::Cluster] {
        QUERIES_RAN_ON.with_label_values(&[placement.as_str()]);
    }
    LazyLock::force(&QUERY_DURATION);
    LazyLock::force(&QUERIES_RUNNING);
    LazyLock::force(&CONNECTIONS);
    sluice_scheduler::metrics::refresh();
    prometheus::TextEncoder::new()
        .encode_to_string(&prometheus::gather())
        .unwrap_or_else(|e| format!("# encoding metrics failed: {e}\n"))
}
