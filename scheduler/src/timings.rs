//! How fast the cluster notices a dead executor, and how long unread results
//! are kept. Ballista's defaults (heartbeat every 60 s, dead after 180 s,
//! results deleted 300 s after a job ends, read or not) suit long batch jobs;
//! interactive SQL needs a lost executor detected in seconds, and a slow
//! client must not lose its results.

use std::time::Duration;

/// Failure-detection and retention intervals shared by the scheduler and the
/// executors. Every role of one cluster should use the same values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterTimings {
    /// How often an executor sends the scheduler a heartbeat.
    pub heartbeat_interval: Duration,
    /// How long the scheduler waits for a heartbeat before it declares an
    /// executor dead, reschedules its running tasks and recomputes the shuffle
    /// output that lived on it. Must exceed `heartbeat_interval`.
    pub executor_timeout: Duration,
    /// How often the scheduler looks for executors past `executor_timeout`.
    pub expiry_check_interval: Duration,
    /// How long the results of a finished job stay on the executors when no
    /// frontend releases them. A frontend releases a job's results as soon as
    /// its client has read them (or gone away), so this only bounds the disk
    /// used by results whose frontend died; executors sweep them hourly.
    pub result_retention: Duration,
    /// How long the scheduler keeps a finished job's state (its stage graph
    /// and metrics). Ballista's hour let memory grow by tens of MiB per
    /// thousand queries; Sluice copies what it shows (`sluice.queries`)
    /// before then.
    pub job_state_retention: Duration,
}

impl Default for ClusterTimings {
    /// A dead executor is noticed within about
    /// `executor_timeout + expiry_check_interval` = 7 s.
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(2),
            executor_timeout: Duration::from_secs(6),
            expiry_check_interval: Duration::from_secs(1),
            result_retention: Duration::from_secs(6 * 3600),
            job_state_retention: Duration::from_secs(60),
        }
    }
}

impl ClusterTimings {
    /// Checks that the intervals make sense together.
    pub fn validate(&self) -> Result<(), String> {
        let whole_seconds = [
            ("heartbeat-interval-seconds", self.heartbeat_interval),
            ("executor-timeout-seconds", self.executor_timeout),
            ("expiry-check-interval-seconds", self.expiry_check_interval),
        ];
        for (name, value) in whole_seconds {
            if value.as_secs() == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.executor_timeout <= self.heartbeat_interval {
            return Err(format!(
                "executor-timeout-seconds ({}) must be longer than heartbeat-interval-seconds ({})",
                self.executor_timeout.as_secs(),
                self.heartbeat_interval.as_secs()
            ));
        }
        Ok(())
    }
}
