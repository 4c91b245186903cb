//! The frontend's record of recent queries, behind `sluice.queries` and the
//! web UI. With a history file ([`QueryLog::open`]) each query is appended
//! to it when it ends, and the log starts from it again after a restart;
//! the log keeps the newest `--query-history` queries.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};
use sluice_engine::planner::{Placement, RanOn};

use crate::error::Result;
use crate::json_lines::JsonLines;
use history::QueryHistory;

mod history;

/// Lifecycle of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryState {
    /// Planning, executing or streaming rows.
    Running,
    /// All rows were sent.
    Finished,
    /// An error ended it.
    Failed,
    /// The client stopped reading before the end.
    Cancelled,
}

impl QueryState {
    /// The name shown in `sluice.queries.state`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Finished => "finished",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// What changes while a query runs.
#[derive(Debug, Clone)]
pub struct QueryProgress {
    /// Current state.
    pub state: QueryState,
    /// When it stopped running.
    pub finished_at: Option<SystemTime>,
    /// Rows sent to the client.
    pub rows: u64,
    /// Stages of its Ballista job, once known (0 for queries run in the frontend).
    pub stages: Option<u64>,
    /// `SQLSTATE: message` of the error that ended it.
    pub error: Option<String>,
}

/// One query submitted by a client.
#[derive(Debug)]
pub struct QueryRecord {
    /// Sequence number within this frontend.
    pub id: u64,
    /// Name of the Ballista job(s) the query submits.
    pub job_name: String,
    /// The connected user.
    pub user: String,
    /// SQL text as received.
    pub text: String,
    /// Wall-clock start.
    pub started_at: SystemTime,
    /// Where it ran (the frontend or the cluster), written by the planner
    /// through the session's configuration.
    pub ran_on: RanOn,
    started: Instant,
    progress: Mutex<QueryProgress>,
}

impl QueryRecord {
    /// A copy of the current progress.
    pub fn progress(&self) -> QueryProgress {
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records the stage count found for the query's job.
    pub fn set_stages(&self, stages: u64) {
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stages = Some(stages);
    }

    /// Marks the query ended and logs one line; `false` if it had already
    /// ended.
    fn finish(&self, state: QueryState, rows: u64, error: Option<String>) -> bool {
        let mut progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        if progress.state != QueryState::Running {
            return false;
        }
        progress.state = state;
        progress.finished_at = Some(SystemTime::now());
        crate::metrics::query_ended(state.as_str(), self.started.elapsed(), self.ran_on.get());
        progress.rows = rows;
        progress.error = error;
        let millis = self.started.elapsed().as_secs_f64() * 1000.0;
        match &progress.error {
            None => tracing::info!(
                query_id = self.id,
                user = %self.user,
                state = state.as_str(),
                rows,
                "query done in {millis:.1} ms"
            ),
            Some(error) => tracing::info!(
                query_id = self.id,
                user = %self.user,
                state = state.as_str(),
                "query failed in {millis:.1} ms: {error}"
            ),
        }
        true
    }

    /// The record as the history file keeps it.
    fn stored(&self) -> StoredQuery {
        let progress = self.progress();
        StoredQuery {
            id: self.id,
            job_name: self.job_name.clone(),
            user: self.user.clone(),
            text: self.text.clone(),
            started_at: self.started_at,
            state: progress.state,
            finished_at: progress.finished_at,
            rows: progress.rows,
            stages: progress.stages,
            error: progress.error,
            ran_on: self
                .ran_on
                .get()
                .map(|placement| placement.as_str().to_string()),
        }
    }

    /// A query of an earlier run, read back from the history file.
    fn restored(stored: StoredQuery) -> Self {
        let ran_on = RanOn::default();
        if let Some(placement) = stored.ran_on.as_deref().and_then(Placement::from_name) {
            ran_on.record(placement);
        }
        Self {
            ran_on,
            id: stored.id,
            job_name: stored.job_name,
            user: stored.user,
            text: stored.text,
            started_at: stored.started_at,
            started: Instant::now(),
            progress: Mutex::new(QueryProgress {
                state: stored.state,
                finished_at: stored.finished_at,
                rows: stored.rows,
                stages: stored.stages,
                error: stored.error,
            }),
        }
    }
}

/// An ended query in the history file.
#[derive(Debug, Serialize, Deserialize)]
struct StoredQuery {
    id: u64,
    job_name: String,
    user: String,
    text: String,
    started_at: SystemTime,
    state: QueryState,
    finished_at: Option<SystemTime>,
    rows: u64,
    stages: Option<u64>,
    error: Option<String>,
    /// Absent in files written before it was recorded.
    #[serde(default)]
    ran_on: Option<String>,
}

/// Recent queries of one frontend, newest last.
#[derive(Debug)]
pub struct QueryLog {
    frontend_id: String,
    next_id: AtomicU64,
    records: Mutex<VecDeque<Arc<QueryRecord>>>,
    capacity: usize,
    history: Arc<QueryHistory>,
}

impl QueryLog {
    /// A log of the newest `capacity` queries kept in the history file at
    /// `path`, starting from the queries the file holds; `frontend_id`
    /// makes job names unique across frontends.
    pub fn open(frontend_id: String, path: &Path, capacity: usize) -> Result<Self> {
        let (history, queries) = QueryHistory::open(JsonLines::new(path), capacity)?;
        let next_id = queries.iter().map(|query| query.id + 1).max().unwrap_or(1);
        let records = queries
            .into_iter()
            .map(|query| Arc::new(QueryRecord::restored(query)))
            .collect();
        Ok(Self {
            frontend_id,
            next_id: AtomicU64::new(next_id),
            records: Mutex::new(records),
            capacity,
            history: Arc::new(history),
        })
    }

    /// Starts recording a query; the returned tracker ends it when dropped.
    /// (Statements naming object storage options, secrets or passwords are
    /// recorded with their string literals masked: they may hold
    /// credentials.)
    pub fn start(&self, user: &str, text: &str) -> Arc<QueryTracker> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let record = Arc::new(QueryRecord {
            id,
            job_name: format!("sluice-{}-{id}", self.frontend_id),
            user: user.to_string(),
            text: redact(text),
            started_at: SystemTime::now(),
            ran_on: RanOn::default(),
            started: Instant::now(),
            progress: Mutex::new(QueryProgress {
                state: QueryState::Running,
                finished_at: None,
                rows: 0,
                stages: None,
                error: None,
            }),
        });
        crate::metrics::query_started();
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.push_back(record.clone());
        while records.len() > self.capacity {
            records.pop_front();
        }
        Arc::new(QueryTracker {
            record,
            rows: AtomicU64::new(0),
            outcome: Mutex::new(None),
            history: Arc::clone(&self.history),
        })
    }

    /// All records, oldest first.
    pub fn records(&self) -> Vec<Arc<QueryRecord>> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.iter().cloned().collect()
    }

    /// Waits until every query that ended is in the history file.
    pub fn flush(&self) {
        self.history.flush();
    }
}

/// Collects a running query's rows and outcome; ends the record when the last
/// reference (the handler's, then each result stream's) is dropped.
#[derive(Debug)]
pub struct QueryTracker {
    record: Arc<QueryRecord>,
    rows: AtomicU64,
    outcome: Mutex<Option<(QueryState, Option<String>)>>,
    /// Where the query is recorded when it ends.
    history: Arc<QueryHistory>,
}

impl QueryTracker {
    /// The record being tracked.
    pub fn record(&self) -> &QueryRecord {
        &self.record
    }

    /// Counts one row sent to the client.
    pub fn add_row(&self) {
        self.rows.fetch_add(1, Ordering::Relaxed);
    }

    /// Ends the query as failed with `error` (the first failure wins).
    pub fn fail(&self, error: String) {
        self.set_outcome(QueryState::Failed, Some(error));
    }

    /// Ends the query as cancelled unless it already failed.
    pub fn cancel(&self) {
        self.set_outcome(QueryState::Cancelled, None);
    }

    fn set_outcome(&self, state: QueryState, error: Option<String>) {
        let mut outcome = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        if outcome.is_none() {
            *outcome = Some((state, error));
        }
    }
}

impl Drop for QueryTracker {
    fn drop(&mut self) {
        let outcome = self
            .outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let (state, error) = outcome.unwrap_or((QueryState::Finished, None));
        let ended = self
            .record
            .finish(state, self.rows.load(Ordering::Relaxed), error);
        if ended {
            self.history.append(Arc::clone(&self.record));
        }
    }
}

/// Words that mark a statement whose literals may hold a credential: object
/// storage settings (`SET storage.s3.aws_secret_access_key = '…'`), table
/// options (`OPTIONS ('aws.secret_access_key' '…')`), passwords.
const SENSITIVE_WORDS: &[&str] = &[
    "storage.",
    "secret",
    "password",
    "token",
    "access_key",
    "account_key",
    "sas_key",
    "credential",
];

/// `text` with every single-quoted literal masked when it mentions one of
/// the [`SENSITIVE_WORDS`].
fn redact(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    if !SENSITIVE_WORDS.iter().any(|word| lower.contains(word)) {
        return text.to_string();
    }
    let mut redacted = String::with_capacity(text.len());
    let mut in_literal = false;
    for c in text.chars() {
        match (c, in_literal) {
            ('\'', false) => {
                in_literal = true;
                redacted.push_str("'********");
            }
            ('\'', true) => {
                // A doubled quote inside a literal ends it and opens the next
                // one, which is masked all the same.
                in_literal = false;
                redacted.push('\'');
            }
            (_, true) => {}
            (c, false) => redacted.push(c),
        }
    }
    redacted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(log: &QueryLog, text: &str) {
        drop(log.start("alice", text));
    }

    #[test]
    fn ended_queries_survive_reopening_up_to_the_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queries.jsonl");
        let log = QueryLog::open("a".into(), &path, 3).unwrap();
        for text in ["q1", "q2", "q3", "q4"] {
            run(&log, text);
        }
        let failed = log.start("bob", "q5");
        failed.fail("22012: division by zero".into());
        drop(failed);
        drop(log);

        let log = QueryLog::open("b".into(), &path, 3).unwrap();
        let records = log.records();
        let texts: Vec<&str> = records.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(texts, ["q3", "q4", "q5"]);
        let last = records[2].progress();
        assert_eq!(last.state, QueryState::Failed);
        assert_eq!(last.error.as_deref(), Some("22012: division by zero"));
        assert_eq!(records[2].user, "bob");
        // Numbering goes on; the file is compacted past twice the capacity.
        run(&log, "q6");
        assert_eq!(log.records().last().unwrap().id, 6);
        for n in 7..=12 {
            run(&log, &format!("q{n}"));
        }
        log.flush();
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines <= 6, "{lines} lines");
    }

    #[test]
    fn storage_literals_are_masked() {
        assert_eq!(
            redact("SET storage.s3.aws_secret_access_key = 'abc''d'"),
            "SET storage.s3.aws_secret_access_key = '********''********'"
        );
        assert_eq!(redact("SELECT 'x' FROM t"), "SELECT 'x' FROM t");
        assert_eq!(
            redact("CREATE EXTERNAL TABLE t STORED AS CSV LOCATION 's3://b/' OPTIONS ('aws.secret_access_key' 'k')"),
            "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '********' OPTIONS ('********' '********')"
        );
    }
}
