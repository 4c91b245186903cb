//! The jobs file (`sluice serve --jobs jobs.toml`): what each job runs, when,
//! and how it is retried.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use croner::Cron;
use serde::Deserialize;

use crate::error::{JobsError, Result};

/// Delay before the first retry when a job does not set `retry_delay`; each
/// further retry waits twice as long as the one before.
const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobsFile {
    #[serde(default)]
    job: Vec<JobEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobEntry {
    name: String,
    script: PathBuf,
    schedule: String,
    #[serde(default)]
    vars: BTreeMap<String, String>,
    #[serde(default)]
    retries: u32,
    timeout: Option<String>,
    #[serde(default)]
    allow_overlap: bool,
    retry_delay: Option<String>,
}

/// One scheduled job.
#[derive(Debug, Clone)]
pub struct Job {
    /// Unique name (`CALL sluice.run_job('name')`, `sluice.job_runs.job`).
    pub name: String,
    /// The SQL script, resolved against the jobs file's directory.
    pub script: PathBuf,
    /// When it runs: cron, 6 fields with seconds or 5 with minutes.
    pub schedule: Cron,
    /// `${name}` values; `run_date` and `run_ts` are added per run.
    pub vars: BTreeMap<String, String>,
    /// Attempts after the first failed one.
    pub retries: u32,
    /// A run (one attempt) taking longer fails.
    pub timeout: Option<Duration>,
    /// Whether a run may start while the previous one still runs (if not,
    /// that occurrence is skipped).
    pub allow_overlap: bool,
    /// Wait before the first retry; doubled for each further one.
    pub retry_delay: Duration,
}

/// Reads and checks the jobs file at `path`: names unique, scripts present,
/// schedules and durations valid.
pub fn load(path: &Path) -> Result<Vec<Job>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| JobsError::io(format!("reading {}", path.display()), e))?;
    let file: JobsFile =
        toml::from_str(&text).map_err(|e| JobsError::Config(format!("{}: {e}", path.display())))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut jobs: Vec<Job> = Vec::with_capacity(file.job.len());
    for entry in file.job {
        let invalid = |what: String| {
            JobsError::Config(format!("{}: job '{}': {what}", path.display(), entry.name))
        };
        if entry.name.is_empty() || jobs.iter().any(|job| job.name == entry.name) {
            return Err(invalid("names must be present and unique".into()));
        }
        let script = base.join(&entry.script);
        if !script.is_file() {
            return Err(invalid(format!("no script at {}", script.display())));
        }
        let schedule = parse_schedule(&entry.schedule).map_err(invalid)?;
        let duration = |text: &Option<String>, key: &str| {
            text.as_deref()
                .map(|text| {
                    humantime::parse_duration(text)
                        .map_err(|e| invalid(format!("{key} '{text}': {e}")))
                })
                .transpose()
        };
        let timeout = duration(&entry.timeout, "timeout")?;
        let retry_delay = duration(&entry.retry_delay, "retry_delay")?;
        jobs.push(Job {
            script,
            schedule,
            vars: entry.vars.clone(),
            retries: entry.retries,
            timeout,
            allow_overlap: entry.allow_overlap,
            retry_delay: retry_delay.unwrap_or(DEFAULT_RETRY_DELAY),
            name: entry.name,
        });
    }
    Ok(jobs)
}

/// A cron schedule: 6 fields (with seconds) or 5 (minute resolution).
fn parse_schedule(text: &str) -> std::result::Result<Cron, String> {
    let fields = text.split_whitespace().count();
    if fields != 5 && fields != 6 {
        return Err(format!(
            "schedule '{text}' has {fields} fields; cron takes 5 (minute hour day month \
             weekday) or 6 (with seconds first)"
        ));
    }
    Cron::from_str(text).map_err(|e| format!("schedule '{text}': {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, jobs: &str) -> PathBuf {
        std::fs::write(dir.join("etl.sql"), "SELECT 1;").unwrap();
        let path = dir.join("jobs.toml");
        std::fs::write(&path, jobs).unwrap();
        path
    }

    #[test]
    fn reads_the_documented_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            r#"
[[job]]
name = "daily_sales"
script = "etl.sql"
schedule = "0 30 2 * * *"
vars = { region = "EU" }
retries = 2
timeout = "30m"
allow_overlap = false

[[job]]
name = "hourly"
script = "etl.sql"
schedule = "5 * * * *"
"#,
        );
        let jobs = load(&path).unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].vars["region"], "EU");
        assert_eq!(jobs[0].retries, 2);
        assert_eq!(jobs[0].timeout, Some(Duration::from_secs(1800)));
        assert_eq!(jobs[0].script, dir.path().join("etl.sql"));
        assert_eq!(jobs[1].retries, 0);
        assert_eq!(jobs[1].retry_delay, DEFAULT_RETRY_DELAY);
    }

    #[test]
    fn refuses_bad_jobs() {
        let dir = tempfile::tempdir().unwrap();
        for (jobs, expected) in [
            (
                "[[job]]\nname='a'\nscript='etl.sql'\nschedule='* * *'",
                "3 fields",
            ),
            (
                "[[job]]\nname='a'\nscript='missing.sql'\nschedule='* * * * *'",
                "no script",
            ),
            (
                "[[job]]\nname='a'\nscript='etl.sql'\nschedule='* * * * *'\ntimeout='soon'",
                "timeout",
            ),
            (
                "[[job]]\nname='a'\nscript='etl.sql'\nschedule='* * * * *'\nretires=1",
                "unknown field",
            ),
            (
                "[[job]]\nname='a'\nscript='etl.sql'\nschedule='* * * * *'\n\
                 [[job]]\nname='a'\nscript='etl.sql'\nschedule='* * * * *'",
                "unique",
            ),
        ] {
            let error = load(&write(dir.path(), jobs)).unwrap_err().to_string();
            assert!(error.contains(expected), "{jobs}: {error}");
        }
    }
}
