//! Job run history (`sluice.job_runs`): one record per attempt, appended to
//! `<data-dir>/job_runs.jsonl` (a later line for the same attempt replaces
//! an earlier one) and flushed before the run goes on, so it survives
//! restarts and crashes.

use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use sluice_frontend::json_lines::JsonLines;

/// Attempts kept (older ones are dropped when the file is reopened).
const RETAINED_ATTEMPTS: usize = 10_000;

/// Where an attempt stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Started, not finished.
    Running,
    /// Every statement of the script ran.
    Finished,
    /// A statement failed, the attempt timed out, or the server stopped.
    Failed,
}

impl RunState {
    /// The name `sluice.job_runs.state` shows.
    pub fn name(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Finished => "finished",
            Self::Failed => "failed",
        }
    }
}

/// One attempt of one run of a job. Times are microseconds since the epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRun {
    /// The job's name.
    pub job: String,
    /// The run this attempt belongs to (shared by its retries).
    pub run_id: String,
    /// What started the run: `schedule`, `missed` (a run due while the
    /// server was down) or `manual` (`CALL sluice.run_job`).
    pub trigger: String,
    /// The occurrence of the schedule the run is for (the call's time for
    /// manual runs); the script's `${run_date}` and `${run_ts}`.
    pub scheduled_for: i64,
    /// When this attempt started.
    pub started_at: i64,
    /// When it ended.
    pub finished_at: Option<i64>,
    /// Where it stands.
    pub state: RunState,
    /// 1 for the first attempt, 2 for the first retry, …
    pub attempt: u32,
    /// Rows the script's statements wrote (INSERT, CREATE TABLE AS, COPY).
    pub rows_written: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
}

/// The history and its file.
#[derive(Debug)]
pub struct RunHistory {
    file: JsonLines,
    runs: Mutex<Vec<JobRun>>,
}

impl RunHistory {
    /// Opens the history at `path` (a missing file is an empty history).
    /// Attempts left `running` by a server that stopped are failed.
    pub fn open(path: &Path) -> Result<Self> {
        let file = JsonLines::new(path);
        let mut runs: Vec<JobRun> = Vec::new();
        for run in file.read()? {
            upsert(&mut runs, run);
        }
        for run in runs.iter_mut().filter(|run| run.state == RunState::Running) {
            run.state = RunState::Failed;
            run.error = Some("the server stopped during the run".into());
        }
        let keep_from = runs.len().saturating_sub(RETAINED_ATTEMPTS);
        runs.drain(..keep_from);
        file.rewrite(&runs)?;
        Ok(Self {
            file,
            runs: Mutex::new(runs),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<JobRun>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `run` (a new attempt or a later state of one) and flushes it.
    pub fn record(&self, run: &JobRun) -> Result<()> {
        let mut runs = self.lock();
        self.file.append(run, true)?;
        upsert(&mut runs, run.clone());
        Ok(())
    }

    /// Every retained attempt, oldest first.
    pub fn runs(&self) -> Vec<JobRun> {
        self.lock().clone()
    }

    /// The latest occurrence a run of `job` was made for by its schedule.
    pub fn last_scheduled(&self, job: &str) -> Option<i64> {
        self.lock()
            .iter()
            .filter(|run| run.job == job && run.trigger != "manual")
            .map(|run| run.scheduled_for)
            .max()
    }
}

/// Replaces the record of the same attempt, or appends a new one.
fn upsert(runs: &mut Vec<JobRun>, run: JobRun) {
    match runs
        .iter_mut()
        .find(|r| r.run_id == run.run_id && r.attempt == run.attempt)
    {
        Some(existing) => *existing = run,
        None => runs.push(run),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(state: RunState) -> JobRun {
        JobRun {
            job: "j".into(),
            run_id: "r1".into(),
            trigger: "schedule".into(),
            scheduled_for: 1,
            started_at: 2,
            finished_at: None,
            state,
            attempt: 1,
            rows_written: None,
            error: None,
        }
    }

    #[test]
    fn later_states_replace_earlier_ones_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job_runs.jsonl");
        let history = RunHistory::open(&path).unwrap();
        history.record(&attempt(RunState::Running)).unwrap();
        let mut done = attempt(RunState::Finished);
        done.rows_written = Some(7);
        history.record(&done).unwrap();
        assert_eq!(history.runs(), vec![done.clone()]);
        assert_eq!(RunHistory::open(&path).unwrap().runs(), vec![done]);
        assert_eq!(history.last_scheduled("j"), Some(1));
    }

    #[test]
    fn runs_cut_off_by_a_stop_are_failed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job_runs.jsonl");
        RunHistory::open(&path)
            .unwrap()
            .record(&attempt(RunState::Running))
            .unwrap();
        std::io::Write::write_all(
            &mut std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap(),
            b"{\"job\": \"cut",
        )
        .unwrap();
        let runs = RunHistory::open(&path).unwrap().runs();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].state, RunState::Failed);
    }
}
