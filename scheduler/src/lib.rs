//! The Sluice cluster roles, built on Ballista's scheduler and executor.
//!
//! [`EmbeddedCluster`] runs a scheduler and N executors inside one process on
//! loopback — the `sluice serve` default. [`task_counts`] wraps the executors'
//! execution engine to count the tasks each one completes.

pub mod embedded;
pub mod error;
pub mod task_counts;

pub use embedded::{EmbeddedCluster, EmbeddedClusterOptions, ExecutorInfo, JobSummary};
pub use error::{ClusterError, Result};
