//! `sluice bench tpch`: runs the 22 queries over the Postgres protocol, checks
//! every answer, times each query, and optionally compares with single-node
//! DataFusion over the same files.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::{SessionConfig, SessionContext};
use serde::Serialize;
use tokio_postgres::{Client, SimpleQueryMessage};

use super::answers::{compare, ReferenceAnswer};
use super::queries::query;
use super::register_statements;

/// Outcome of one query.
#[derive(Debug, Clone, Serialize)]
pub struct QueryResult {
    /// Query number, 1 to 22.
    pub query: usize,
    /// Rows returned by the last run.
    pub rows: usize,
    /// `ok`, `wrong: …`, `failed: …`, or `unchecked` (no reference answer).
    pub status: String,
    /// Milliseconds of each successful run.
    pub runs_ms: Vec<f64>,
    /// Milliseconds of each single-node DataFusion run, with `--compare-local`.
    pub local_runs_ms: Vec<f64>,
}

impl QueryResult {
    /// Whether the answer matched (or there was nothing to check it against).
    pub fn passed(&self) -> bool {
        self.status == "ok" || self.status == "unchecked"
    }
}

fn min(values: &[f64]) -> Option<f64> {
    values.iter().copied().reduce(f64::min)
}

fn max(values: &[f64]) -> Option<f64> {
    values.iter().copied().reduce(f64::max)
}

fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied()
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Creates the eight tables over `data` on the server behind `client`.
pub async fn register(client: &Client, data: &str) -> Result<(), String> {
    for statement in register_statements(data) {
        client
            .batch_execute(&statement)
            .await
            .map_err(|e| format!("{statement}: {}", describe(&e)))?;
    }
    Ok(())
}

fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => error.to_string(),
    }
}

/// Runs `sql` and returns its rows as text (`None` for NULL).
async fn fetch(client: &Client, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    let messages = client.simple_query(sql).await.map_err(|e| describe(&e))?;
    Ok(messages
        .into_iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

/// Single-node, in-process DataFusion over the same files, for
/// `--compare-local`.
pub struct LocalDataFusion {
    context: SessionContext,
}

impl LocalDataFusion {
    /// A session with one partition per core and the eight tables over `data`.
    pub async fn new(data: &str, runtime: Arc<RuntimeEnv>) -> Result<Self, String> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let context = SessionContext::new_with_config_rt(
            SessionConfig::new().with_target_partitions(threads),
            runtime,
        );
        for statement in register_statements(data) {
            context
                .sql(&statement)
                .await
                .map_err(|e| e.to_string())?
                .collect()
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(Self { context })
    }

    /// Plans and runs `sql`, returning its milliseconds.
    async fn time(&self, sql: &str) -> Result<f64, String> {
        let started = Instant::now();
        self.context
            .sql(sql)
            .await
            .map_err(|e| e.to_string())?
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(millis(started.elapsed()))
    }
}

/// Runs `queries` `iterations` times each through `client`, checking every
/// run against `answers(query)`. With `local`, each run is followed by the
/// same query on single-node DataFusion, so that both see the machine in the
/// same state (a shared machine's speed drifts over a run).
pub async fn run(
    client: &Client,
    local: Option<&LocalDataFusion>,
    queries: &[usize],
    iterations: usize,
    answers: &dyn Fn(usize) -> Option<ReferenceAnswer>,
    on_result: &dyn Fn(&QueryResult),
) -> Vec<QueryResult> {
    let mut results = Vec::with_capacity(queries.len());
    for &number in queries {
        let mut result = QueryResult {
            query: number,
            rows: 0,
            status: "ok".into(),
            runs_ms: Vec::new(),
            local_runs_ms: Vec::new(),
        };
        let Some(sql) = query(number) else {
            result.status = format!("failed: no TPC-H query {number}");
            results.push(result);
            continue;
        };
        let expected = answers(number);
        for _ in 0..iterations.max(1) {
            let started = Instant::now();
            match fetch(client, sql).await {
                Ok(rows) => {
                    result.runs_ms.push(millis(started.elapsed()));
                    result.rows = rows.len();
                    match &expected {
                        Some(expected) => {
                            if let Err(difference) = compare(expected, &rows) {
                                result.status = format!("wrong: {difference}");
                                break;
                            }
                        }
                        None => result.status = "unchecked".into(),
                    }
                }
                Err(error) => {
                    result.status = format!("failed: {error}");
                    break;
                }
            }
            if let Some(local) = local {
                match local.time(sql).await {
                    Ok(ms) => result.local_runs_ms.push(ms),
                    Err(error) => {
                        result.status = format!("failed: single-node DataFusion: {error}");
                        break;
                    }
                }
            }
        }
        on_result(&result);
        results.push(result);
    }
    results
}

/// The results as a text table with a total line (sum of each query's best run).
pub fn report(results: &[QueryResult]) -> String {
    let local = results.iter().any(|r| !r.local_runs_ms.is_empty());
    let mut out = format!(
        "{:<6}{:>7}  {:<10}{:>10}{:>10}{:>10}",
        "query", "rows", "status", "min ms", "median ms", "max ms"
    );
    if local {
        out.push_str(&format!("{:>12}{:>8}", "local ms", "ratio"));
    }
    out.push('\n');
    let (mut total, mut total_local) = (0.0, 0.0);
    for result in results {
        let status: String = result.status.split(':').next().unwrap_or("").to_string();
        let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        out.push_str(&format!(
            "q{:<5}{:>7}  {:<10}{:>10}{:>10}{:>10}",
            result.query,
            result.rows,
            status,
            cell(min(&result.runs_ms)),
            cell(median(&result.runs_ms)),
            cell(max(&result.runs_ms)),
        ));
        total += min(&result.runs_ms).unwrap_or(0.0);
        if local {
            let best_local = min(&result.local_runs_ms);
            total_local += best_local.unwrap_or(0.0);
            let ratio = match (min(&result.runs_ms), best_local) {
                (Some(ours), Some(theirs)) if theirs > 0.0 => format!("{:.2}x", ours / theirs),
                _ => "-".into(),
            };
            out.push_str(&format!("{:>12}{:>8}", cell(best_local), ratio));
        }
        out.push('\n');
    }
    let passed = results.iter().filter(|r| r.passed()).count();
    out.push_str(&format!(
        "total (best of each): {:.1} ms, {passed}/{} answers correct",
        total,
        results.len()
    ));
    if local && total_local > 0.0 {
        out.push_str(&format!(
            "; single-node DataFusion {total_local:.1} ms, ratio {:.2}x",
            total / total_local
        ));
    }
    out.push('\n');
    for result in results.iter().filter(|r| !r.passed()) {
        out.push_str(&format!("q{}: {}\n", result.query, result.status));
    }
    out
}
