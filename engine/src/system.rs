//! The `sluice` system schema: tables computed on demand from live server state
//! (executors, queries). They are answered in the frontend, never shipped to
//! executors.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider, Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;

use crate::error::EngineError;
use crate::session::DEFAULT_CATALOG;

/// The schema system tables are registered in.
pub const SYSTEM_SCHEMA: &str = "sluice";

/// A table whose rows are a snapshot of server state taken at scan time.
#[async_trait]
pub trait SystemTable: Debug + Send + Sync {
    /// The table's columns.
    fn schema(&self) -> SchemaRef;
    /// The current rows, as the session `session` may see them.
    async fn snapshot(&self, session: &dyn Session) -> Result<RecordBatch>;
}

/// Adapts a [`SystemTable`] to DataFusion's [`TableProvider`].
#[derive(Debug)]
struct SystemTableProvider(Arc<dyn SystemTable>);

#[async_trait]
impl TableProvider for SystemTableProvider {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batch = self.0.snapshot(state).await?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema(),
            projection.cloned(),
        )?)
    }
}

/// Registers the `sluice` schema with `tables` in the default catalog of `ctx`.
pub fn register_system_schema(
    ctx: &SessionContext,
    tables: HashMap<&str, Arc<dyn SystemTable>>,
) -> crate::Result<()> {
    let schema = MemorySchemaProvider::new();
    for (name, table) in tables {
        schema
            .register_table(name.to_string(), Arc::new(SystemTableProvider(table)))
            .map_err(|e| EngineError::datafusion(format!("registering sluice.{name}"), e))?;
    }
    let catalog = ctx.catalog(DEFAULT_CATALOG).ok_or_else(|| {
        EngineError::datafusion(
            "registering the sluice schema",
            datafusion::error::DataFusionError::Plan(format!(
                "catalog {DEFAULT_CATALOG} does not exist"
            )),
        )
    })?;
    catalog
        .register_schema(SYSTEM_SCHEMA, Arc::new(schema))
        .map_err(|e| EngineError::datafusion("registering the sluice schema", e))?;
    Ok(())
}
