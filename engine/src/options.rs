//! Sluice's own settings, `sluice.*` in the session configuration.
//!
//! Like DataFusion's and Ballista's settings they are per connection
//! (`SET sluice.single_stage_max_bytes = 0`), travel with every job to the
//! scheduler and executors, and are listed by `SHOW ALL`. (DataFusion's
//! `extensions_options!` would list them without their `sluice.` prefix, and
//! Ballista ships a job's settings by those listed names, so the scheduler
//! would never see them: hence the hand-written [`ExtensionOptions`].)

use std::any::Any;

use datafusion::common::config::{ConfigEntry, ConfigExtension, ExtensionOptions};
use datafusion::error::{DataFusionError, Result};

/// Makes `$type` (`Clone`, `Debug`) a configuration extension under
/// `$prefix` that carries state with a session rather than settings: it has
/// no entries, so `SHOW ALL` never lists it and no job ships it, and `SET`
/// of any of its keys fails.
macro_rules! carried_extension {
    ($type:ty, $prefix:literal) => {
        impl datafusion::common::config::ExtensionOptions for $type {
            fn as_any(&self) -> &dyn std::any::Any {
                self
            }

            fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
                self
            }

            fn cloned(&self) -> Box<dyn datafusion::common::config::ExtensionOptions> {
                Box::new(self.clone())
            }

            fn set(&mut self, key: &str, _value: &str) -> datafusion::error::Result<()> {
                Err(datafusion::error::DataFusionError::Configuration(format!(
                    "{}.{key} cannot be set",
                    $prefix
                )))
            }

            fn entries(&self) -> Vec<datafusion::common::config::ConfigEntry> {
                Vec::new()
            }
        }

        impl datafusion::common::config::ConfigExtension for $type {
            const PREFIX: &'static str = $prefix;
        }
    };
}
pub(crate) use carried_extension;

/// Default of [`SluiceOptions::single_stage_max_bytes`]: 64 MiB. On two
/// executors pinned to a core each (`benches/scaleout/run.sh`), splitting
/// into stages made every TPC-H SF 1 query reading more than ~100 MB faster
/// than a single stage on one of them (4.8 s against 6.9 s over the 22), and
/// those reading ~50-70 MB (q2, q11, q16, q22) about even; at SF 10 the 22
/// queries went from 65.4 s (at 1 GiB) to 51.1 s.
pub const DEFAULT_SINGLE_STAGE_MAX_BYTES: u64 = 64 * 1024 * 1024;

const SINGLE_STAGE_MAX_BYTES: &str = "single_stage_max_bytes";

/// Default of [`SluiceOptions::single_stage_collect_bytes`]: 64 MiB. On the
/// 2-core reference machine this made single-node DataFusion 9% faster over
/// the 22 TPC-H SF 1 queries than its own 1 MiB default (q7 -35%, q18 -21%):
/// a build side of a few million rows is hashed once, and the large probe
/// side is no longer hash-repartitioned to meet it.
pub const DEFAULT_SINGLE_STAGE_COLLECT_BYTES: u64 = 64 * 1024 * 1024;

const SINGLE_STAGE_COLLECT_BYTES: &str = "single_stage_collect_bytes";

const STAGE_PARTITIONS: &str = "stage_partitions";

/// Default of [`SluiceOptions::frontend_max_bytes`]: 4 MiB, a dimension
/// table or a day of a fact table's partition. A Ballista job costs a few
/// milliseconds of scheduling, a task slot and a Flight fetch of its result
/// whatever its size; a query this small computes in less.
pub const DEFAULT_FRONTEND_MAX_BYTES: u64 = 4 * 1024 * 1024;

const FRONTEND_MAX_BYTES: &str = "frontend_max_bytes";

const PROGRESS: &str = "progress";

const RESULT_KEY: &str = "result_key";

/// Settings of the Sluice planner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SluiceOptions {
    /// `sluice.single_stage_max_bytes`: on separate executors with N live
    /// task slots, a job whose file inputs (after partition pruning) total
    /// at most this many bytes divided by N - 1 runs as a single stage: the
    /// whole DataFusion plan, with its hash joins and in-process
    /// repartitions, in one task on one executor, with no shuffle between
    /// stages (on one slot every job does). Above it, Ballista splits the
    /// plan into stages across the executors. 0 always splits. EXPLAIN
    /// shows the choice (`SingleStageExec`).
    pub single_stage_max_bytes: u64,
    /// `sluice.single_stage_collect_bytes`: in a single-stage plan, a hash
    /// join whose smaller side is estimated at most this many bytes (or,
    /// without a byte estimate, at most this many / 16 rows) builds that
    /// side once, in one hash table every partition probes, instead of
    /// hash-partitioning both sides. The plan runs in one process, so the
    /// table is not copied; larger values trade the parallelism of the
    /// build for the cost of repartitioning the probe side.
    pub single_stage_collect_bytes: u64,
    /// `sluice.stage_partitions`: the partitions (tasks) of each stage of a
    /// job split into stages. 0, the default, gives one per task slot of the
    /// executors alive when the job is planned, so that a cluster that grew
    /// or shrank since the session began is used whole;
    /// `datafusion.execution.target_partitions` then only shapes
    /// single-stage plans.
    pub stage_partitions: u64,
    /// `sluice.frontend_max_bytes`: a query (not a write) whose file inputs,
    /// after partition and file pruning, total at most this many bytes runs
    /// in the frontend on its compute threads, without a Ballista job: the
    /// fast path of dashboards' small queries. 0 sends every query over
    /// files to the cluster. EXPLAIN shows the choice
    /// (`FrontendComputeExec: input_bytes=…`), and `sluice.queries.ran_on`
    /// where each query ran.
    pub frontend_max_bytes: u64,
    /// `sluice.progress`: while a statement's job runs, the client gets a
    /// NOTICE with its stage progress every few seconds (psql prints them).
    pub progress: bool,
    /// `sluice.result_key`: not a user setting. The frontend sets it on
    /// each job it submits (replacing any value a session set) to a new
    /// [`crate::live_results::new_result_key`]; executors of the frontend's
    /// process hand the final stage's rows over under it as they make them.
    /// Empty: the result is fetched once the job has finished.
    pub result_key: String,
    /// What `RESET sluice.single_stage_max_bytes` and `RESET
    /// sluice.frontend_max_bytes` restore: the server's settings (not
    /// shipped with jobs; nothing resets settings there).
    server: ServerPlannerSettings,
}

/// The planner settings a server gives its sessions (`sluice serve` flags
/// and config file), which `RESET` restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerPlannerSettings {
    /// See [`SluiceOptions::single_stage_max_bytes`].
    pub single_stage_max_bytes: u64,
    /// See [`SluiceOptions::frontend_max_bytes`].
    pub frontend_max_bytes: u64,
}

impl Default for ServerPlannerSettings {
    fn default() -> Self {
        Self {
            single_stage_max_bytes: DEFAULT_SINGLE_STAGE_MAX_BYTES,
            frontend_max_bytes: DEFAULT_FRONTEND_MAX_BYTES,
        }
    }
}

impl SluiceOptions {
    /// The settings a server gives its sessions, and restores on `RESET`.
    pub fn new(server: ServerPlannerSettings) -> Self {
        Self {
            single_stage_max_bytes: server.single_stage_max_bytes,
            single_stage_collect_bytes: DEFAULT_SINGLE_STAGE_COLLECT_BYTES,
            stage_partitions: 0,
            frontend_max_bytes: server.frontend_max_bytes,
            progress: false,
            result_key: String::new(),
            server,
        }
    }

    /// `RESET ALL`, `DISCARD ALL`: every setting back to the server's.
    pub fn reset_all(&mut self) {
        *self = Self::new(self.server);
    }

    /// `RESET sluice.<key>`: back to the server's setting.
    pub fn reset(&mut self, key: &str) -> Result<()> {
        match key {
            SINGLE_STAGE_MAX_BYTES => {
                self.single_stage_max_bytes = self.server.single_stage_max_bytes;
                Ok(())
            }
            FRONTEND_MAX_BYTES => {
                self.frontend_max_bytes = self.server.frontend_max_bytes;
                Ok(())
            }
            SINGLE_STAGE_COLLECT_BYTES => {
                self.single_stage_collect_bytes = DEFAULT_SINGLE_STAGE_COLLECT_BYTES;
                Ok(())
            }
            STAGE_PARTITIONS => {
                self.stage_partitions = 0;
                Ok(())
            }
            PROGRESS => {
                self.progress = false;
                Ok(())
            }
            RESULT_KEY => {
                self.result_key.clear();
                Ok(())
            }
            _ => Err(unrecognized(key)),
        }
    }
}

impl Default for SluiceOptions {
    fn default() -> Self {
        Self::new(ServerPlannerSettings::default())
    }
}

/// A boolean as PostgreSQL reads one: `on`, `off`, `true`, `false`, `yes`,
/// `no`, `1`, `0` (any case; `t`, `f`, `y`, `n` too).
fn parse_bool(value: &str) -> Option<bool> {
    match value
        .trim()
        .trim_matches('\'')
        .to_ascii_lowercase()
        .as_str()
    {
        "on" | "true" | "t" | "yes" | "y" | "1" => Some(true),
        "off" | "false" | "f" | "no" | "n" | "0" => Some(false),
        _ => None,
    }
}

fn unrecognized(key: &str) -> DataFusionError {
    DataFusionError::Configuration(format!("unrecognized Sluice setting 'sluice.{key}'"))
}

impl ExtensionOptions for SluiceOptions {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let number = |what: &str| {
            value.trim().parse().map_err(|_| {
                DataFusionError::Configuration(format!(
                    "invalid value for sluice.{key}: '{value}' (expected {what})"
                ))
            })
        };
        let bytes = || number("a number of bytes");
        match key {
            SINGLE_STAGE_MAX_BYTES => self.single_stage_max_bytes = bytes()?,
            SINGLE_STAGE_COLLECT_BYTES => self.single_stage_collect_bytes = bytes()?,
            FRONTEND_MAX_BYTES => self.frontend_max_bytes = bytes()?,
            STAGE_PARTITIONS => {
                self.stage_partitions = number("a number of partitions, 0 for the live task slots")?
            }
            PROGRESS => {
                self.progress = parse_bool(value).ok_or_else(|| {
                    DataFusionError::Configuration(format!(
                        "invalid value for sluice.{key}: '{value}' (expected on or off)"
                    ))
                })?
            }
            RESULT_KEY => self.result_key = value.trim().to_string(),
            _ => return Err(unrecognized(key)),
        }
        Ok(())
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        let mut entries = vec![
            ConfigEntry {
                key: format!("{}.{SINGLE_STAGE_MAX_BYTES}", Self::PREFIX),
                value: Some(self.single_stage_max_bytes.to_string()),
                description: "Jobs reading at most this many bytes of files run as one stage \
                              on one executor; 0 always splits them into stages",
            },
            ConfigEntry {
                key: format!("{}.{SINGLE_STAGE_COLLECT_BYTES}", Self::PREFIX),
                value: Some(self.single_stage_collect_bytes.to_string()),
                description: "In a single-stage plan, a hash join side estimated at most \
                              this many bytes is built once for all partitions",
            },
            ConfigEntry {
                key: format!("{}.{STAGE_PARTITIONS}", Self::PREFIX),
                value: Some(self.stage_partitions.to_string()),
                description: "Partitions of each stage of a job split into stages; 0 gives \
                              one per task slot of the live executors",
            },
            ConfigEntry {
                key: format!("{}.{FRONTEND_MAX_BYTES}", Self::PREFIX),
                value: Some(self.frontend_max_bytes.to_string()),
                description: "Queries reading at most this many bytes of files run in the \
                              frontend, without a cluster job; 0 sends them all to the cluster",
            },
            ConfigEntry {
                key: format!("{}.{PROGRESS}", Self::PREFIX),
                value: Some(if self.progress { "on" } else { "off" }.to_string()),
                description: "Send a NOTICE with the running job's stage progress every \
                              few seconds",
            },
        ];
        // Shipped with the jobs that carry it; sessions do not show it.
        if !self.result_key.is_empty() {
            entries.push(ConfigEntry {
                key: format!("{}.{RESULT_KEY}", Self::PREFIX),
                value: Some(self.result_key.clone()),
                description: "The key the job's result is handed to its frontend under",
            });
        }
        entries
    }
}

impl ConfigExtension for SluiceOptions {
    const PREFIX: &'static str = "sluice";
}
