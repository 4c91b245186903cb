//! Session construction: one template per server, one session per connection.
//!
//! The template carries the configuration, the function registry and the
//! catalog. Every connection gets a copy of it whose configuration it may change
//! with `SET` without affecting other connections, while the catalog (the list
//! of schemas and tables) stays shared: a table created on one connection is
//! visible to all.

use std::sync::Arc;

use ballista_core::extension::{EndpointOverrideFn, SessionConfigExt, SessionStateExt};
use datafusion::execution::{FunctionRegistry, SessionState, SessionStateBuilder};
use datafusion::prelude::SessionContext;

use crate::atomic_copy::{CopyJournal, StagedCopies};
use crate::catalog::{CatalogOptions, PersistentCatalog};
use crate::error::{EngineError, Result};
use crate::information_schema::{MaskedInformationSchema, INFORMATION_SCHEMA};
use crate::options::SluiceOptions;
use crate::planner::SluiceQueryPlanner;
use crate::planning_interrupt::{interruptible_optimizer_rules, CheckInterrupt, PlanningInterrupt};
use crate::recovery::JobControl;
use crate::roles::base_config;
use crate::sandbox::{LocationSandbox, SandboxedTableFactory, SessionSandbox};
use crate::storage::{runtime_env_with, StorageOptions};
use crate::value_limits::RegexOperatorsCapped;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use std::path::PathBuf;

/// The catalog (Postgres database) every table lives in.
pub const DEFAULT_CATALOG: &str = "sluice";
/// The schema unqualified names resolve to.
pub const DEFAULT_SCHEMA: &str = "public";

/// Settings that shape every session a frontend creates.
#[derive(Clone)]
pub struct SessionOptions {
    /// The Ballista scheduler's gRPC address, `http://host:port`.
    pub scheduler_url: String,
    /// Partitions per stage; best set to the cluster's total task slots.
    pub target_partitions: usize,
    /// Object storage options every session starts with; they travel with
    /// each job to the scheduler and executors.
    pub storage: StorageOptions,
    /// Sluice's planner settings every session starts with.
    pub planner: SluiceOptions,
    /// The scheduler's record of jobs, to rerun jobs that lost work on a dead
    /// executor; `None` trusts Ballista's recovery.
    pub job_control: Option<Arc<dyn JobControl>>,
    /// Where schemas, tables and views are recorded and managed tables
    /// written (see [`crate::catalog`]); `None` keeps the catalog in memory
    /// only, and `CREATE TABLE` makes in-memory tables.
    pub catalog: Option<CatalogOptions>,
    /// The directory where `COPY`s into directories are recorded while they
    /// run, so that the next start can finish or undo them (see
    /// [`crate::atomic_copy`]); `None` stages them without a record.
    pub copy_journal: Option<PathBuf>,
    /// With users configured: the only locations statements may read and
    /// write (see [`crate::sandbox`]); `None` allows any.
    pub allowed_locations: Option<Vec<String>>,
    /// The server's own state (catalog, COPY journal, histories, work
    /// directories): locations no statement may read or write, whatever
    /// `allowed_locations` says.
    pub reserved_locations: Vec<String>,
    /// In a cluster secured by mutual TLS: Ballista's hook that puts TLS on
    /// every connection to the scheduler and the executors; `None` connects
    /// in plaintext.
    pub cluster_tls: Option<EndpointOverrideFn>,
}

/// The warehouse's URL as staged `COPY`s compare it (ending in `/`).
fn warehouse_url(options: &SessionOptions) -> Result<Option<String>> {
    let Some(warehouse) = options
        .catalog
        .as_ref()
        .and_then(|c| c.warehouse.as_deref())
    else {
        return Ok(None);
    };
    let url = ListingTableUrl::parse(format!("{}/", warehouse.trim_end_matches('/')))
        .map_err(|e| EngineError::datafusion("parsing the warehouse URL", e))?;
    Ok(Some(url.as_str().to_string()))
}

/// The frontend's memory pool: a tenth of the host's memory (the embedded
/// executors' pools share 70%), at least 256 MiB.
fn frontend_memory() -> u64 {
    let mut system = sysinfo::System::new();
    system.refresh_memory();
    (system.total_memory() / 10).max(256 * 1024 * 1024)
}

/// Builds the per-connection sessions of one frontend from a shared template.
#[derive(Clone)]
pub struct SessionFactory {
    template: SessionContext,
    catalog: Option<Arc<PersistentCatalog>>,
    copies: Option<Arc<CopyJournal>>,
}

impl SessionFactory {
    /// Creates the template session: DataFusion's default features, Ballista's
    /// configuration and functions, and the Sluice query planner.
    pub fn new(options: &SessionOptions) -> Result<Self> {
        let sandbox = Arc::new(LocationSandbox::new(
            options.allowed_locations.as_deref(),
            &options.reserved_locations,
        )?);
        let copies = options
            .copy_journal
            .as_deref()
            .map(|dir| Arc::new(CopyJournal::new(dir)));
        let mut config = base_config()
            .with_target_partitions(options.target_partitions.max(1))
            // DataFusion's own information_schema would show secrets in
            // `SHOW ALL`; the masked one is registered in the catalog below.
            .with_information_schema(false)
            .with_default_catalog_and_schema(DEFAULT_CATALOG, DEFAULT_SCHEMA)
            .with_create_default_catalog_and_schema(true)
            // Ballista 55's adaptive planner returns wrong rows for some plans
            // (a NOT IN anti join over shuffled inputs returned every left row
            // and lost the ORDER BY); the static planner gets them right.
            // `SET ballista.planner.adaptive.enabled = true` opts back in.
            .with_ballista_adaptive_query_planner(false)
            // Hash joins, as DataFusion plans them, rather than Ballista's
            // sort-merge joins: TPC-H SF 1 split into stages ran in 5.7 s
            // instead of 13.6 s. A hash join's build side does not spill; over
            // the memory budget the query fails (53200) instead, and
            // `SET datafusion.optimizer.prefer_hash_join = false` brings back
            // the spilling sort-merge join.
            .set_bool("datafusion.optimizer.prefer_hash_join", true)
            // Fail fast when the scheduler is down (Ballista waits 20 s), and
            // notice a scheduler that stopped answering mid-query within
            // seconds rather than Ballista's 5 minutes.
            .set_u64("ballista.client.grpc_connect_timeout_seconds", 5)
            .set_u64("ballista.client.grpc_http2_keepalive_interval_seconds", 5)
            // Batches queued between a task's plan and its shuffle file writer
            // (Ballista: 8). Each lineitem batch pins ~1 MB of decoded Parquet
            // pages; two keep the writer busy at a quarter of the memory.
            .set_u64("ballista.shuffle.writer_channel_capacity", 2);
        if let Some(endpoint_override) = &options.cluster_tls {
            config = config
                .with_ballista_use_tls(true)
                .with_ballista_override_create_grpc_client_endpoint(endpoint_override.clone());
        }
        let planner = SluiceQueryPlanner::new(
            options.scheduler_url.clone(),
            config.ballista_config(),
            options.job_control.clone(),
        )
        .with_atomic_copies(warehouse_url(options)?, copies.clone())
        .with_sandbox(Arc::clone(&sandbox));
        *config
            .options_mut()
            .extensions
            .get_mut::<StorageOptions>()
            .expect("base_config registers the storage options") = options.storage.clone();
        *config
            .options_mut()
            .extensions
            .get_mut::<SluiceOptions>()
            .expect("base_config registers the Sluice options") = options.planner.clone();
        let config = config.with_ballista_query_planner(Arc::new(planner));
        let storage = config
            .options()
            .extensions
            .get::<StorageOptions>()
            .cloned()
            .unwrap_or_default();
        // The plans the frontend runs itself (catalog and system tables,
        // table functions, constants) share one memory pool: over it a
        // query fails with "resources exhausted" (53200).
        let runtime = runtime_env_with(storage, None, Some(frontend_memory() as usize))
            .map_err(|e| EngineError::datafusion("creating the runtime environment", e))?;
        let config = config
            .with_option_extension(PlanningInterrupt::default())
            .with_option_extension(SessionSandbox(Arc::clone(&sandbox)))
            .with_option_extension(StagedCopies {
                warehouse: warehouse_url(options)?,
                journal: copies.clone(),
            });
        let physical_rules = std::iter::once(Arc::new(CheckInterrupt) as _)
            .chain(PhysicalOptimizer::new().rules)
            .collect();
        let state = SessionStateBuilder::new()
            .with_default_features()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_optimizer_rules(interruptible_optimizer_rules())
            .with_physical_optimizer_rules(physical_rules)
            .build()
            .upgrade_for_ballista(options.scheduler_url.clone())
            .map_err(|e| EngineError::datafusion("configuring the session for Ballista", e))?;
        let mut state = state;
        for factory in state.table_factories_mut().values_mut() {
            *factory = Arc::new(SandboxedTableFactory::new(
                Arc::clone(factory),
                Arc::clone(&sandbox),
            ));
        }
        let mut template = SessionContext::new_with_state(state);
        // Before any plan is built or folded, the amplifying functions
        // are capped, and the regex operators made calls of the capped
        // `regexp_like` (see [`crate::value_limits`]).
        let capped: Vec<_> = template
            .state()
            .scalar_functions()
            .values()
            .filter_map(crate::value_limits::capped)
            .collect();
        for function in capped {
            if function.name() == "regexp_like" {
                template
                    .register_function_rewrite(Arc::new(RegexOperatorsCapped::new(Arc::clone(
                        &function,
                    ))))
                    .map_err(|e| EngineError::datafusion("capping the regex operators", e))?;
            }
            template.register_udf(function.as_ref().clone());
        }
        let catalog = match &options.catalog {
            Some(options) => {
                let catalog = Arc::new(PersistentCatalog::new(options)?);
                template.register_catalog(DEFAULT_CATALOG, catalog.clone());
                Some(catalog)
            }
            None => None,
        };
        let information_schema =
            MaskedInformationSchema::new(template.state().catalog_list().clone());
        template
            .catalog(DEFAULT_CATALOG)
            .expect("the default catalog is created with the session")
            .register_schema(INFORMATION_SCHEMA, Arc::new(information_schema))
            .map_err(|e| EngineError::datafusion("registering information_schema", e))?;
        Ok(Self {
            template,
            catalog,
            copies,
        })
    }

    /// Finishes or undoes the `COPY`s a stopped server left, then recreates
    /// the recorded schemas, tables and views. Call it once the template has
    /// every function and system schema a view may use.
    pub async fn restore_catalog(&self) -> Result<()> {
        if let Some(copies) = &self.copies {
            copies.recover(&self.template.runtime_env()).await?;
        }
        match &self.catalog {
            Some(catalog) => catalog.restore(&self.template).await,
            None => Ok(()),
        }
    }

    /// The template session. Register shared catalogs, schemas and functions on
    /// it before creating connection sessions.
    pub fn template(&self) -> &SessionContext {
        &self.template
    }

    /// A new session for one connection: its own id and configuration, the
    /// template's functions and the shared catalog.
    pub fn new_session(&self) -> SessionContext {
        let template: SessionState = self.template.state();
        // A flag of its own, not the template's.
        let config = template
            .config()
            .clone()
            .with_create_default_catalog_and_schema(false)
            .with_option_extension(PlanningInterrupt::default());
        let state = SessionStateBuilder::new_from_existing(template)
            .with_config(config)
            .with_session_id(uuid::Uuid::new_v4().to_string())
            .build();
        SessionContext::new_with_state(state)
    }
}
