//! The Sluice cluster roles, built on Ballista's scheduler and executor.
//!
//! [`scheduler_role`] and [`executor_role`] start one scheduler or executor
//! with Sluice's configuration; `sluice scheduler` and `sluice executor` run
//! each in its own process. [`EmbeddedCluster`] runs a scheduler and N
//! executors inside one process on loopback — the `sluice serve` default.
//! [`ClusterView`] is what a frontend reads about either kind of cluster;
//! [`RemoteScheduler`] implements it for a scheduler in another process.

pub mod cancellable;
pub mod embedded;
pub mod error;
pub mod executor_role;
pub mod flight;
pub mod live_follow;
pub mod live_slots;
pub mod metrics;
pub mod ports;
pub mod remote;
pub mod scheduler_role;
pub mod shuffle_memory;
pub mod slot_healer;
pub mod task_counts;
pub mod timings;
pub mod tls;
pub mod view;

pub use embedded::{EmbeddedCluster, EmbeddedClusterOptions};
pub use error::{ClusterError, Result};
pub use remote::RemoteScheduler;
pub use timings::ClusterTimings;
pub use tls::ClusterTls;
pub use view::{ClusterView, ExecutorInfo, JobSummary, StageProgress};
