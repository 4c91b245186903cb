//! Scheduled jobs: `sluice serve --jobs jobs.toml` runs each job's SQL script
//! on its cron schedule, over a Postgres connection to the server itself (a
//! job's statements are queries like any client's: they show in
//! `sluice.queries`, run on the cluster, write atomically). Failed attempts
//! are retried with exponential backoff; every attempt is recorded in
//! `sluice.job_runs` ([`history`]). A run that fell due while the server
//! was down is started once when it comes back. `CALL sluice.run_job('name')`
//! runs a job now.
//!
//! The script runner they share with `sluice run` is [`script`]; both talk
//! to the server as clients ([`connection`]). Nothing here knows how the
//! server is configured or started: this crate sits between the frontend
//! library and the `sluice` binary.

pub mod cli_progress;
pub mod connection;
pub mod error;
pub mod history;
pub mod script;
pub mod spec;
mod table;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sluice_frontend::call::{JobCallError, JobRunner};

use crate::connection::{connect, ServerAddress};
use crate::error::{JobsError, Result};
use crate::script::{prepare, run_statements};
use history::{JobRun, RunHistory, RunState};
pub use spec::Job;
pub use table::JobRunsTable;

/// The jobs of one server.
#[derive(Debug)]
pub struct Jobs {
    jobs: Vec<Arc<Job>>,
    history: Arc<RunHistory>,
    /// The server's own Postgres listener and the login job scripts
    /// connect with.
    server: ServerAddress,
    /// Runs in progress per job (for `allow_overlap = false`).
    running: Mutex<HashMap<String, usize>>,
}

/// `CALL sluice.run_job` in the frontend runs the server's jobs.
#[async_trait::async_trait]
impl JobRunner for Jobs {
    async fn run_now(&self, name: &str) -> std::result::Result<(), JobCallError> {
        let run = Jobs::run_now(self, name)
            .await
            .map_err(|e| JobCallError::Unknown(e.to_string()))?;
        if run.state == RunState::Failed {
            return Err(JobCallError::Failed {
                run_id: run.run_id,
                attempt: run.attempt,
                error: run.error.unwrap_or_default(),
            });
        }
        Ok(())
    }
}

fn micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

impl Jobs {
    /// `jobs` running against the server listening at `server`, recording
    /// into `history`.
    pub fn new(jobs: Vec<Job>, history: RunHistory, server: ServerAddress) -> Self {
        Self {
            jobs: jobs.into_iter().map(Arc::new).collect(),
            history: Arc::new(history),
            server,
            running: Mutex::default(),
        }
    }

    /// Every recorded attempt.
    pub fn runs(&self) -> Vec<JobRun> {
        self.history.runs()
    }

    /// Starts each job's schedule, and the runs missed while the server was
    /// down; they run until the returned tasks are aborted.
    pub fn start(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        for job in &self.jobs {
            if let Some(missed) = self.missed_run(job) {
                let (jobs, job) = (Arc::clone(self), Arc::clone(job));
                tasks.push(tokio::spawn(async move {
                    jobs.run(&job, missed, "missed").await;
                }));
            }
            let (jobs, job) = (Arc::clone(self), Arc::clone(job));
            tasks.push(tokio::spawn(async move { jobs.follow_schedule(job).await }));
        }
        tasks
    }

    /// The latest occurrence that fell due while the server was down: only
    /// for a job that ran before (a new job starts with its next occurrence).
    fn missed_run(&self, job: &Job) -> Option<DateTime<Utc>> {
        let last = self.history.last_scheduled(&job.name)?;
        let previous = job.schedule.find_previous_occurrence(&now(), false).ok()?;
        (micros(previous) > last).then_some(previous)
    }

    async fn follow_schedule(self: Arc<Self>, job: Arc<Job>) {
        let mut after = now();
        loop {
            let next = match job.schedule.find_next_occurrence(&after, false) {
                Ok(next) => next,
                Err(e) => {
                    tracing::error!("job {}: no next occurrence: {e}", job.name);
                    return;
                }
            };
            let wait = (next - now()).to_std().unwrap_or(Duration::ZERO);
            tokio::time::sleep(wait).await;
            after = next;
            if !job.allow_overlap && self.is_running(&job.name) {
                tracing::warn!(
                    "job {}: the run for {next} is skipped, the previous run is still going \
                     (allow_overlap = false)",
                    job.name
                );
                continue;
            }
            let jobs = Arc::clone(&self);
            let job = Arc::clone(&job);
            tokio::spawn(async move { jobs.run(&job, next, "schedule").await });
        }
    }

    fn is_running(&self, name: &str) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .is_some_and(|n| *n > 0)
    }

    fn count_running(&self, name: &str, change: isize) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let count = running.entry(name.to_string()).or_default();
        *count = count.saturating_add_signed(change);
    }

    /// `CALL sluice.run_job(name)`: runs the job now and returns its last
    /// attempt.
    pub async fn run_now(&self, name: &str) -> Result<JobRun> {
        let job = self
            .jobs
            .iter()
            .find(|job| job.name == name)
            .ok_or_else(|| JobsError::Config(format!("no job named '{name}'")))?;
        if !job.allow_overlap && self.is_running(name) {
            return Err(JobsError::Config(format!(
                "job '{name}' is running and does not allow overlapping runs"
            )));
        }
        Ok(self.run(job, now(), "manual").await)
    }

    /// One run of `job` for `scheduled_for`: attempts until one succeeds or
    /// the retries are spent. Returns the last attempt.
    async fn run(&self, job: &Job, scheduled_for: DateTime<Utc>, trigger: &str) -> JobRun {
        self.count_running(&job.name, 1);
        let run_id = sluice_engine::catalog::managed::unique_id();
        let mut attempt = 1;
        let last = loop {
            let mut run = JobRun {
                job: job.name.clone(),
                run_id: run_id.clone(),
                trigger: trigger.to_string(),
                scheduled_for: micros(scheduled_for),
                started_at: micros(now()),
                finished_at: None,
                state: RunState::Running,
                attempt,
                rows_written: None,
                error: None,
            };
            self.record(&run);
            let outcome = match job.timeout {
                Some(limit) => tokio::time::timeout(limit, self.attempt(job, scheduled_for))
                    .await
                    .unwrap_or_else(|_| {
                        Err(JobsError::Script(format!(
                            "timed out after {}",
                            humantime::format_duration(limit)
                        )))
                    }),
                None => self.attempt(job, scheduled_for).await,
            };
            run.finished_at = Some(micros(now()));
            match outcome {
                Ok(rows) => {
                    run.state = RunState::Finished;
                    run.rows_written = Some(rows);
                }
                Err(e) => {
                    run.state = RunState::Failed;
                    run.error = Some(e.to_string());
                }
            }
            self.record(&run);
            if run.state == RunState::Finished || attempt > job.retries {
                break run;
            }
            let backoff = job.retry_delay * 2u32.saturating_pow(attempt - 1);
            tracing::warn!(
                "job {} attempt {attempt} failed ({}); retrying in {}",
                job.name,
                run.error.as_deref().unwrap_or_default(),
                humantime::format_duration(backoff)
            );
            tokio::time::sleep(backoff).await;
            attempt += 1;
        };
        self.count_running(&job.name, -1);
        last
    }

    fn record(&self, run: &JobRun) {
        if let Err(e) = self.history.record(run) {
            tracing::error!("cannot record job run {} of {}: {e}", run.run_id, run.job);
        }
    }

    /// One attempt: the script with the job's variables and the run's date,
    /// over a new connection to this server. Returns the rows written.
    async fn attempt(&self, job: &Job, scheduled_for: DateTime<Utc>) -> Result<u64> {
        let name = job.script.display().to_string();
        let text = std::fs::read_to_string(&job.script)
            .map_err(|e| JobsError::io(format!("reading {name}"), e))?;
        let mut vars: BTreeMap<String, String> = job.vars.clone();
        vars.insert(
            "run_date".into(),
            scheduled_for.format("%Y-%m-%d").to_string(),
        );
        vars.insert(
            "run_ts".into(),
            scheduled_for.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        );
        let statements = prepare(&name, &text, &vars)?;
        let client = connect(&self.server).await?;
        let job_name = job.name.clone();
        let log = move |line: String| tracing::info!("job {job_name}: {line}");
        run_statements(&client, &name, &statements, &log, None).await
    }
}
