//! The frontend's record of recent queries, behind `sluice.queries`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

/// How many finished queries the log keeps.
const CAPACITY: usize = 1000;

/// Lifecycle of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

    /// Marks the query ended, logs one line and returns nothing if it had
    /// already ended.
    fn finish(&self, state: QueryState, rows: u64, error: Option<String>) {
        let mut progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        if progress.state != QueryState::Running {
            return;
        }
        progress.state = state;
        progress.finished_at = Some(SystemTime::now());
        crate::metrics::query_ended(state, self.started.elapsed());
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
    }
}

/// Recent queries of one frontend, newest last.
#[derive(Debug)]
pub struct QueryLog {
    frontend_id: String,
    next_id: AtomicU64,
    records: Mutex<VecDeque<Arc<QueryRecord>>>,
}

impl QueryLog {
    /// An empty log; `frontend_id` makes job names unique across frontends.
    pub fn new(frontend_id: String) -> Self {
        Self {
            frontend_id,
            next_id: AtomicU64::new(1),
            records: Mutex::new(VecDeque::new()),
        }
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
        while records.len() > CAPACITY {
            records.pop_front();
        }
        Arc::new(QueryTracker {
            record,
            rows: AtomicU64::new(0),
            outcome: Mutex::new(None),
        })
    }

    /// All records, oldest first.
    pub fn records(&self) -> Vec<Arc<QueryRecord>> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.iter().cloned().collect()
    }
}

/// Collects a running query's rows and outcome; ends the record when the last
/// reference (the handler's, then each result stream's) is dropped.
#[derive(Debug)]
pub struct QueryTracker {
    record: Arc<QueryRecord>,
    rows: AtomicU64,
    outcome: Mutex<Option<(QueryState, Option<String>)>>,
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
        self.record
            .finish(state, self.rows.load(Ordering::Relaxed), error);
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
    use super::redact;

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
