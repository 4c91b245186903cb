//! Session construction: one template per server, one session per connection.
//!
//! The template carries the configuration, the function registry and the
//! catalog. Every connection gets a copy of it whose configuration it may change
//! with `SET` without affecting other connections, while the catalog (the list
//! of schemas and tables) stays shared: a table created on one connection is
//! visible to all.

use std::sync::Arc;

use ballista_core::extension::{SessionConfigExt, SessionStateExt};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::error::{EngineError, Result};
use crate::planner::SluiceQueryPlanner;

/// The catalog (Postgres database) every table lives in.
pub const DEFAULT_CATALOG: &str = "sluice";
/// The schema unqualified names resolve to.
pub const DEFAULT_SCHEMA: &str = "public";

/// Settings that shape every session a frontend creates.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// The Ballista scheduler's gRPC address, `http://host:port`.
    pub scheduler_url: String,
    /// Partitions per stage; best set to the cluster's total task slots.
    pub target_partitions: usize,
}

/// Builds the per-connection sessions of one frontend from a shared template.
#[derive(Clone)]
pub struct SessionFactory {
    template: SessionContext,
}

impl SessionFactory {
    /// Creates the template session: DataFusion's default features, Ballista's
    /// configuration and functions, and the Sluice query planner.
    pub fn new(options: &SessionOptions) -> Result<Self> {
        let config = SessionConfig::new_with_ballista()
            .with_target_partitions(options.target_partitions.max(1))
            .with_information_schema(true)
            .with_default_catalog_and_schema(DEFAULT_CATALOG, DEFAULT_SCHEMA)
            .with_create_default_catalog_and_schema(true)
            // Ballista 55's adaptive planner returns wrong rows for some plans
            // (a NOT IN anti join over shuffled inputs returned every left row
            // and lost the ORDER BY); the static planner gets them right.
            // `SET ballista.planner.adaptive.enabled = true` opts back in.
            .with_ballista_adaptive_query_planner(false);
        let planner =
            SluiceQueryPlanner::new(options.scheduler_url.clone(), config.ballista_config());
        let config = config.with_ballista_query_planner(Arc::new(planner));
        let runtime = RuntimeEnvBuilder::new()
            .build_arc()
            .map_err(|e| EngineError::datafusion("creating the runtime environment", e))?;
        let state = SessionStateBuilder::new()
            .with_default_features()
            .with_config(config)
            .with_runtime_env(runtime)
            .build()
            .upgrade_for_ballista(options.scheduler_url.clone())
            .map_err(|e| EngineError::datafusion("configuring the session for Ballista", e))?;
        Ok(Self {
            template: SessionContext::new_with_state(state),
        })
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
        let config = template
            .config()
            .clone()
            .with_create_default_catalog_and_schema(false);
        let state = SessionStateBuilder::new_from_existing(template)
            .with_config(config)
            .with_session_id(uuid::Uuid::new_v4().to_string())
            .build();
        SessionContext::new_with_state(state)
    }
}
