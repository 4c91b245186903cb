//! What running a kept plan reads of its session — settings, catalogs,
//! runtime — taken under the session's lock without copying the rest of its
//! state.
//!
//! [`SessionContext::state`] copies the whole `SessionState`: DataFusion's
//! function registries, planners and table factories, a few hundred map
//! entries. Copying and then dropping it cost a ninth of the CPU of a
//! prepared small query whose plan was kept, which needs none of it.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::catalog::{CatalogProviderList, TableProvider};
use datafusion::common::config::ConfigOptions;
use datafusion::common::TableReference;
use datafusion::error::Result;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::{SessionState, TaskContext};
use datafusion::prelude::{SessionConfig, SessionContext};

/// A session's settings, catalogs and runtime at one moment.
pub struct SessionView<'a> {
    context: &'a SessionContext,
    config: SessionConfig,
    catalogs: Arc<dyn CatalogProviderList>,
    runtime: Arc<RuntimeEnv>,
}

impl<'a> SessionView<'a> {
    /// `context`'s session now.
    pub fn of(context: &'a SessionContext) -> Self {
        let state = context.state_ref();
        let state = state.read();
        Self {
            context,
            config: state.config().clone(),
            catalogs: Arc::clone(state.catalog_list()),
            runtime: Arc::clone(state.runtime_env()),
        }
    }

    /// The session's settings.
    pub fn options(&self) -> &ConfigOptions {
        self.config.options()
    }

    /// The session's catalogs.
    pub fn catalogs(&self) -> &dyn CatalogProviderList {
        self.catalogs.as_ref()
    }

    /// The session's runtime: memory pool, object stores, disk manager.
    pub fn runtime(&self) -> &Arc<RuntimeEnv> {
        &self.runtime
    }

    /// A copy of the session's whole state, to plan with.
    pub fn state(&self) -> SessionState {
        self.context.state()
    }

    /// The provider the catalog holds for table `name` now (an unqualified
    /// name resolved in the session's default catalog and schema), if any.
    pub async fn table(&self, name: &TableReference) -> Result<Option<Arc<dyn TableProvider>>> {
        let defaults = &self.options().catalog;
        let name = name
            .clone()
            .resolve(&defaults.default_catalog, &defaults.default_schema);
        let schema = self
            .catalogs
            .catalog(&name.catalog)
            .and_then(|catalog| catalog.schema(&name.schema));
        match schema {
            Some(schema) => schema.table(&name.table).await,
            None => Ok(None),
        }
    }

    /// A context to execute a physical plan in: the session's settings and
    /// runtime. It carries no function registry: the plan's operators hold
    /// their functions (copying DataFusion's few hundred functions into each
    /// task context cost a twentieth of a small query's CPU).
    pub fn task_context(&self) -> Arc<TaskContext> {
        Arc::new(TaskContext::new(
            None,
            self.context.session_id(),
            self.config.clone(),
            HashMap::new(),
            HashMap::new(),
            HashMap::new(),
            HashMap::new(),
            Arc::clone(&self.runtime),
        ))
    }
}
