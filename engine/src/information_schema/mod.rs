//! `information_schema` as DataFusion builds it, except that `df_settings`
//! (what `SHOW` and `SHOW ALL` read) masks secret settings such as object
//! storage keys, and `columns` describes types as PostgreSQL does. The secrets
//! stay in the session configuration, which Ballista ships to the scheduler
//! and executors; only what users see is masked.

mod columns;

pub use columns::{pg_column_type, ColumnsTable, PgColumnType};

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::StringBuilder;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::information_schema::InformationSchemaProvider;
use datafusion::catalog::{CatalogProviderList, SchemaProvider, Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;

use crate::storage::displayed_value;

/// The schema's name.
pub const INFORMATION_SCHEMA: &str = "information_schema";
const DF_SETTINGS: &str = "df_settings";
const COLUMNS: &str = "columns";

/// DataFusion's information schema with secret settings masked.
#[derive(Debug)]
pub struct MaskedInformationSchema {
    inner: InformationSchemaProvider,
    catalogs: Arc<dyn CatalogProviderList>,
}

impl MaskedInformationSchema {
    /// The information schema over every catalog in `catalogs`.
    pub fn new(catalogs: Arc<dyn CatalogProviderList>) -> Self {
        Self {
            inner: InformationSchemaProvider::new(Arc::clone(&catalogs)),
            catalogs,
        }
    }
}

#[async_trait]
impl SchemaProvider for MaskedInformationSchema {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if name.eq_ignore_ascii_case(DF_SETTINGS) {
            return Ok(Some(Arc::new(MaskedSettings::default())));
        }
        if name.eq_ignore_ascii_case(COLUMNS) {
            return Ok(Some(Arc::new(ColumnsTable::new(Arc::clone(
                &self.catalogs,
            )))));
        }
        self.inner.table(name).await
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// `df_settings(name, value, description)` of the querying session.
#[derive(Debug)]
struct MaskedSettings {
    schema: SchemaRef,
}

impl Default for MaskedSettings {
    fn default() -> Self {
        Self {
            schema: Arc::new(Schema::new(vec![
                Field::new("name", DataType::Utf8, false),
                Field::new("value", DataType::Utf8, true),
                Field::new("description", DataType::Utf8, true),
            ])),
        }
    }
}

#[async_trait]
impl TableProvider for MaskedSettings {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
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
        let mut names = StringBuilder::new();
        let mut values = StringBuilder::new();
        let mut descriptions = StringBuilder::new();
        let entries = state
            .config_options()
            .entries()
            .into_iter()
            .chain(state.runtime_env().config_entries());
        for entry in entries {
            let value = entry
                .value
                .as_deref()
                .map(|value| displayed_value(&entry.key, value));
            names.append_value(&entry.key);
            values.append_option(value);
            descriptions.append_value(entry.description);
        }
        let batch = RecordBatch::try_new(
            self.schema(),
            vec![
                Arc::new(names.finish()),
                Arc::new(values.finish()),
                Arc::new(descriptions.finish()),
            ],
        )?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema(),
            projection.cloned(),
        )?)
    }
}
