//! `sluice.tables`: the relations of the catalog's user schemas, with what
//! each one reads.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, BooleanArray, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::catalog::{CatalogProvider, TableProvider};
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::ViewTable;
use datafusion::error::Result;
use sluice_engine::catalog::{managed_table, PersistentCatalog};
use sluice_engine::system::{SystemTable, SYSTEM_SCHEMA};

/// Schemas the server installs itself; their tables are not listed.
const SERVER_SCHEMAS: [&str; 3] = ["pg_catalog", "information_schema", SYSTEM_SCHEMA];

/// `sluice.tables` over a catalog.
#[derive(Debug)]
pub struct TablesTable {
    catalog: Arc<dyn CatalogProvider>,
    schema: SchemaRef,
}

impl TablesTable {
    /// The table listing `catalog`'s user relations.
    pub fn new(catalog: Arc<dyn CatalogProvider>) -> Self {
        let schema = Arc::new(Schema::new(vec![
            Field::new("schema_name", DataType::Utf8, false),
            Field::new("table_name", DataType::Utf8, false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("format", DataType::Utf8, true),
            Field::new("location", DataType::Utf8, true),
            Field::new("persistent", DataType::Boolean, false),
            // A managed table's committed segments (each write adds one;
            // compaction merges small ones).
            Field::new("segments", DataType::Int64, true),
        ]));
        Self { catalog, schema }
    }
}

/// One row of `sluice.tables`.
struct Row {
    schema: String,
    name: String,
    kind: &'static str,
    format: Option<String>,
    location: Option<String>,
    persistent: bool,
    segments: Option<i64>,
}

/// Kind, format and location of `table`, and whether a persistent catalog
/// records it.
fn describe(
    table: &Arc<dyn TableProvider>,
    recorded: bool,
) -> (&'static str, Option<String>, Option<String>, bool) {
    if let Some(listing) = table.downcast_ref::<ListingTable>() {
        let format = listing
            .options()
            .format
            .get_ext()
            .trim_start_matches('.')
            .to_string();
        let location = listing
            .table_paths()
            .iter()
            .map(|url| url.as_str().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        return ("external table", Some(format), Some(location), recorded);
    }
    if let Some(view) = table.downcast_ref::<ViewTable>() {
        return ("view", None, None, recorded && view.definition().is_some());
    }
    ("memory table", None, None, false)
}

#[async_trait]
impl SystemTable for TablesTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn snapshot(&self, _session: &dyn Session) -> Result<RecordBatch> {
        let recorded = self.catalog.downcast_ref::<PersistentCatalog>().is_some();
        let mut rows = Vec::new();
        let mut schemas = self.catalog.schema_names();
        schemas.retain(|name| !SERVER_SCHEMAS.contains(&name.as_str()));
        schemas.sort();
        for schema_name in schemas {
            let Some(schema) = self.catalog.schema(&schema_name) else {
                continue;
            };
            let mut names = schema.table_names();
            names.sort();
            for name in names {
                let Some(table) = schema.table(&name).await? else {
                    continue;
                };
                let managed = managed_table(&schema, &name);
                let segments = managed.as_ref().map(|m| m.segments.len() as i64);
                let (kind, format, location, persistent) = match managed {
                    Some(managed) => (
                        "managed table",
                        Some("parquet".into()),
                        Some(managed.location),
                        true,
                    ),
                    None => describe(&table, recorded),
                };
                rows.push(Row {
                    schema: schema_name.clone(),
                    name,
                    kind,
                    format,
                    location,
                    persistent,
                    segments,
                });
            }
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| &r.schema),
            )),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.name))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.kind))),
            Arc::new(StringArray::from_iter(
                rows.iter().map(|r| r.format.as_deref()),
            )),
            Arc::new(StringArray::from_iter(
                rows.iter().map(|r| r.location.as_deref()),
            )),
            Arc::new(BooleanArray::from_iter(
                rows.iter().map(|r| Some(r.persistent)),
            )),
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.segments))),
        ];
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}
