//! The persistent catalog: schemas, tables over files and views that outlive
//! the server.
//!
//! [`PersistentCatalog`] is the frontend's default catalog. It keeps every
//! schema and relation in memory, as DataFusion's memory catalog does, and
//! records each `CREATE SCHEMA`, `CREATE EXTERNAL TABLE`, `CREATE VIEW` and
//! `DROP` in a [`CatalogFile`] before it takes effect, so a statement that
//! cannot be recorded fails and changes nothing. At start the file is
//! replayed ([`PersistentCatalog::restore`]). Schemas installed by the server
//! itself (`pg_catalog`, `information_schema`, `sluice`) and in-memory tables
//! are not recorded: they are rebuilt, or gone, at every start.

pub mod file;
pub mod managed;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ballista_core::serde::BallistaLogicalExtensionCodec;
use base64::Engine as _;
use datafusion::catalog::{
    CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, SchemaProvider, TableProvider,
};
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::{provider_as_source, source_as_provider, ViewTable};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{DdlStatement, LogicalPlan, LogicalPlanBuilder};
use datafusion::prelude::SessionContext;
use datafusion_proto::bytes::{
    logical_plan_from_bytes_with_extension_codec, logical_plan_to_bytes_with_extension_codec,
};

use crate::error::EngineError;
use datafusion::arrow::datatypes::SchemaRef;
use file::{CatalogFile, Definition, Relation};
pub use managed::Warehouse;

/// The schema every catalog has, which is never recorded.
const DEFAULT_SCHEMA: &str = crate::session::DEFAULT_SCHEMA;

/// A catalog whose user schemas and relations are recorded in a file.
#[derive(Debug)]
pub struct PersistentCatalog {
    inner: MemoryCatalogProvider,
    file: Arc<CatalogFile>,
    /// Where managed tables (`CREATE TABLE`) are written; without one only
    /// in-memory tables can be created.
    warehouse: Option<Arc<Warehouse>>,
    /// Off until [`PersistentCatalog::restore`] has run: schemas the server
    /// installs before then are its own and not recorded.
    recording: AtomicBool,
}

impl PersistentCatalog {
    /// An empty catalog (with its `public` schema) recording into `file`,
    /// its managed tables in `warehouse`.
    pub fn new(file: CatalogFile, warehouse: Option<Warehouse>) -> Self {
        let catalog = Self {
            inner: MemoryCatalogProvider::new(),
            file: Arc::new(file),
            warehouse: warehouse.map(Arc::new),
            recording: AtomicBool::new(false),
        };
        let public = catalog.user_schema(DEFAULT_SCHEMA);
        catalog
            .inner
            .register_schema(DEFAULT_SCHEMA, public)
            .expect("a memory catalog takes schemas");
        catalog
    }

    fn user_schema(&self, name: &str) -> Arc<dyn SchemaProvider> {
        Arc::new(PersistentSchema {
            name: name.to_string(),
            inner: MemorySchemaProvider::new(),
            file: Arc::clone(&self.file),
            warehouse: self.warehouse.clone(),
            ddl: Mutex::new(()),
        })
    }

    /// Recreates what the file holds in `context`, whose default catalog is
    /// this one: schemas, then tables and views in the order they were made.
    /// A relation that cannot be restored (a view over a table dropped since)
    /// is reported and skipped. Then the warehouse is swept of every file no
    /// managed table lists (writes that never committed, dropped tables).
    pub async fn restore(&self, context: &SessionContext) -> crate::Result<()> {
        let contents = self.file.contents();
        if let Some(warehouse) = &self.warehouse {
            warehouse
                .attach(&context.runtime_env())
                .map_err(|e| EngineError::datafusion("opening the warehouse", e))?;
        }
        for schema in &contents.schemas {
            self.inner
                .register_schema(schema, self.user_schema(schema))
                .map_err(|e| EngineError::datafusion(format!("restoring schema {schema}"), e))?;
        }
        for relation in &contents.relations {
            let restored = match self.inner.schema(&relation.schema) {
                Some(schema) => match schema.downcast_ref::<PersistentSchema>() {
                    Some(schema) => restore_relation(schema, relation, context).await,
                    None => Err(DataFusionError::Plan(format!(
                        "{} is not a user schema",
                        relation.schema
                    ))),
                },
                None => Err(DataFusionError::Plan(format!(
                    "no schema {}",
                    relation.schema
                ))),
            };
            if let Err(e) = restored {
                tracing::warn!(
                    "cannot restore {}.{} from the catalog, skipped: {e}",
                    relation.schema,
                    relation.name
                );
            }
        }
        if let Some(warehouse) = &self.warehouse {
            let tables: Vec<_> = contents
                .relations
                .iter()
                .filter_map(|relation| match &relation.definition {
                    Definition::ManagedTable {
                        location, segments, ..
                    } => Some((location.clone(), segments.clone())),
                    _ => None,
                })
                .collect();
            managed::sweep(warehouse, &tables).await.map_err(|e| {
                EngineError::datafusion(format!("sweeping the warehouse {}", warehouse.url()), e)
            })?;
        }
        self.recording.store(true, Ordering::SeqCst);
        Ok(())
    }
}

impl CatalogProvider for PersistentCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.inner.schema_names()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        self.inner.schema(name)
    }

    /// Once the catalog is restored, `CREATE SCHEMA` registers an empty
    /// memory schema: that one is recorded (and made persistent). Schemas
    /// installed before, or of another kind, are the server's own.
    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> Result<Option<Arc<dyn SchemaProvider>>> {
        let created = schema.downcast_ref::<MemorySchemaProvider>().is_some()
            && schema.table_names().is_empty();
        if !self.recording.load(Ordering::SeqCst) || !created {
            return self.inner.register_schema(name, schema);
        }
        self.file
            .update(|contents| {
                if !contents.schemas.iter().any(|s| s == name) {
                    contents.schemas.push(name.to_string());
                }
            })
            .map_err(external)?;
        self.inner.register_schema(name, self.user_schema(name))
    }

    fn deregister_schema(
        &self,
        name: &str,
        cascade: bool,
    ) -> Result<Option<Arc<dyn SchemaProvider>>> {
        let Some(schema) = self.inner.schema(name) else {
            return Ok(None);
        };
        if schema.downcast_ref::<PersistentSchema>().is_some() {
            if !cascade && !schema.table_names().is_empty() {
                return Err(DataFusionError::Execution(format!(
                    "cannot drop schema {name}: it holds tables (use CASCADE)"
                )));
            }
            let mut dropped = Vec::new();
            self.file
                .update(|contents| {
                    contents.schemas.retain(|s| s != name);
                    dropped =
                        managed_locations(contents.relations.iter().filter(|r| r.schema == name));
                    contents.relations.retain(|r| r.schema != name);
                })
                .map_err(external)?;
            if let Some(warehouse) = &self.warehouse {
                warehouse.remove_later(dropped);
            }
        }
        self.inner.deregister_schema(name, cascade)
    }
}

/// A user schema: its tables over files and views are recorded.
#[derive(Debug)]
struct PersistentSchema {
    name: String,
    inner: MemorySchemaProvider,
    file: Arc<CatalogFile>,
    warehouse: Option<Arc<Warehouse>>,
    /// Held from the existence check to the registration, so that two
    /// connections creating one name cannot record one table and register
    /// the other.
    ddl: Mutex<()>,
}

#[async_trait::async_trait]
impl SchemaProvider for PersistentSchema {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        self.inner.table(name).await
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        let _ddl = self.ddl.lock().unwrap_or_else(|e| e.into_inner());
        if self.inner.table_exist(&name) {
            return Err(DataFusionError::Plan(format!(
                "table {name} already exists"
            )));
        }
        if let Some(definition) = definition(&name, &table)? {
            let relation = Relation {
                schema: self.name.clone(),
                name: name.clone(),
                definition,
            };
            self.file
                .update(|contents| {
                    let same =
                        |r: &Relation| r.schema == relation.schema && r.name == relation.name;
                    match contents.relations.iter_mut().find(|r| same(r)) {
                        Some(recorded) => *recorded = relation,
                        None => contents.relations.push(relation),
                    }
                })
                .map_err(external)?;
        }
        self.inner.register_table(name, table)
    }

    fn deregister_table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let _ddl = self.ddl.lock().unwrap_or_else(|e| e.into_inner());
        let mut dropped = Vec::new();
        self.file
            .update(|contents| {
                let this = |r: &Relation| r.schema == self.name && r.name == name;
                dropped = managed_locations(contents.relations.iter().filter(|r| this(r)));
                contents.relations.retain(|r| !this(r))
            })
            .map_err(external)?;
        if let Some(warehouse) = &self.warehouse {
            warehouse.remove_later(dropped);
        }
        self.inner.deregister_table(name)
    }
}

/// The locations of the managed tables among `relations`.
fn managed_locations<'a>(relations: impl Iterator<Item = &'a Relation>) -> Vec<String> {
    relations
        .filter_map(|relation| match &relation.definition {
            Definition::ManagedTable { location, .. } => Some(location.clone()),
            _ => None,
        })
        .collect()
}

fn persistent(schema: &Arc<dyn SchemaProvider>) -> Result<&PersistentSchema> {
    schema.downcast_ref::<PersistentSchema>().ok_or_else(|| {
        DataFusionError::NotImplemented(
            "the server's own schemas hold no tables created by users".into(),
        )
    })
}

/// A managed table's directory and committed segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedTable {
    /// The table's directory URL, ending in `/`.
    pub location: String,
    /// Committed segments, oldest first.
    pub segments: Vec<String>,
}

/// The managed table `name` of `schema`, if it is one.
pub fn managed_table(schema: &Arc<dyn SchemaProvider>, name: &str) -> Option<ManagedTable> {
    let schema = schema.downcast_ref::<PersistentSchema>()?;
    schema
        .file
        .contents()
        .relations
        .into_iter()
        .find(|r| r.schema == schema.name && r.name == name)
        .and_then(|relation| match relation.definition {
            Definition::ManagedTable {
                location, segments, ..
            } => Some(ManagedTable { location, segments }),
            _ => None,
        })
}

/// A new directory for managed table `name` of `schema`; `None` when the
/// catalog has no warehouse (tables are then created in memory).
pub fn new_table_location(schema: &Arc<dyn SchemaProvider>, name: &str) -> Option<String> {
    let schema = schema.downcast_ref::<PersistentSchema>()?;
    let warehouse = schema.warehouse.as_ref()?;
    Some(warehouse.new_table_location(&schema.name, name))
}

/// Removes, in the background, what a write that failed left under `url`
/// (its segment, or the directory of a table that was never created). What
/// a stopped server cannot remove is swept at the next start.
pub fn discard_write(schema: &Arc<dyn SchemaProvider>, url: &str) {
    if let Some(warehouse) = schema
        .downcast_ref::<PersistentSchema>()
        .and_then(|schema| schema.warehouse.as_ref())
    {
        warehouse.remove_later(vec![url.to_string()]);
    }
}

/// What a committed write does to a managed table's segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentChange {
    /// `INSERT`: the segment is added.
    Append(String),
    /// `INSERT OVERWRITE` (a segment) and `TRUNCATE` (none): the table
    /// becomes this.
    Replace(Option<String>),
}

/// Records and registers the managed table `name` at `location` holding
/// `segments`. With `replace`, an existing table of that name is replaced
/// (its files are removed); otherwise an existing name is an error.
pub fn create_managed_table(
    schema: &Arc<dyn SchemaProvider>,
    name: &str,
    location: &str,
    table_schema: SchemaRef,
    segments: Vec<String>,
    replace: bool,
) -> Result<()> {
    let schema = persistent(schema)?;
    let table = managed::listing_table(location, &segments, table_schema)?;
    let relation = Relation {
        schema: schema.name.clone(),
        name: name.to_string(),
        definition: Definition::ManagedTable {
            location: location.to_string(),
            segments,
            scan: encode_scan(name, &table)?,
        },
    };
    let _ddl = schema.ddl.lock().unwrap_or_else(|e| e.into_inner());
    if schema.inner.table_exist(name) && !replace {
        return Err(DataFusionError::Plan(format!(
            "table {name} already exists"
        )));
    }
    let mut replaced = Vec::new();
    schema
        .file
        .update(|contents| {
            let same = |r: &Relation| r.schema == relation.schema && r.name == relation.name;
            replaced = managed_locations(contents.relations.iter().filter(|r| same(r)));
            contents.relations.retain(|r| !same(r));
            contents.relations.push(relation);
        })
        .map_err(external)?;
    if let Some(warehouse) = &schema.warehouse {
        warehouse.remove_later(replaced);
    }
    schema.inner.deregister_table(name)?;
    schema.inner.register_table(name.to_string(), table)?;
    Ok(())
}

/// Commits a write to the managed table `name` whose directory is
/// `location`: one catalog update makes `change` visible to every reader.
/// Fails, changing nothing, when the table was dropped or replaced while
/// the write ran. Segments the change replaces are removed.
pub async fn commit_write(
    schema: &Arc<dyn SchemaProvider>,
    name: &str,
    location: &str,
    change: SegmentChange,
) -> Result<()> {
    let schema = persistent(schema)?;
    let gone = || {
        DataFusionError::Execution(format!(
            "table {name} was dropped or replaced while the write ran; nothing was written"
        ))
    };
    let current = schema.inner.table(name).await?.ok_or_else(gone)?;
    let _ddl = schema.ddl.lock().unwrap_or_else(|e| e.into_inner());
    let contents = schema.file.contents();
    let Some(Relation {
        definition: Definition::ManagedTable { segments, .. },
        ..
    }) = contents.relations.iter().find(|r| {
        r.schema == schema.name
            && r.name == name
            && matches!(&r.definition, Definition::ManagedTable { location: l, .. } if l == location)
    })
    else {
        return Err(gone());
    };
    let (segments, removed) = match change {
        SegmentChange::Append(segment) => {
            let mut segments = segments.clone();
            segments.push(segment);
            (segments, Vec::new())
        }
        SegmentChange::Replace(segment) => (segment.into_iter().collect(), segments.clone()),
    };
    let table = managed::listing_table(location, &segments, current.schema())?;
    let scan = encode_scan(name, &table)?;
    schema
        .file
        .update(|contents| {
            for relation in &mut contents.relations {
                if relation.schema == schema.name && relation.name == name {
                    relation.definition = Definition::ManagedTable {
                        location: location.to_string(),
                        segments: segments.clone(),
                        scan: scan.clone(),
                    };
                }
            }
        })
        .map_err(external)?;
    schema.inner.deregister_table(name)?;
    schema.inner.register_table(name.to_string(), table)?;
    if let Some(warehouse) = &schema.warehouse {
        warehouse.remove_later(
            removed
                .iter()
                .map(|segment| managed::segment_url(location, segment))
                .collect(),
        );
    }
    Ok(())
}

/// `ALTER TABLE from RENAME TO to` in `schema`: the table or view keeps its
/// definition under the new name, recorded in one catalog update.
pub async fn rename_table(schema: &Arc<dyn SchemaProvider>, from: &str, to: &str) -> Result<()> {
    let schema = schema.downcast_ref::<PersistentSchema>().ok_or_else(|| {
        DataFusionError::NotImplemented("renaming the server's own tables".into())
    })?;
    let table = schema
        .inner
        .table(from)
        .await?
        .ok_or_else(|| DataFusionError::Plan(format!("table {from} not found")))?;
    let _ddl = schema.ddl.lock().unwrap_or_else(|e| e.into_inner());
    if schema.inner.table_exist(to) {
        return Err(DataFusionError::Plan(format!("table {to} already exists")));
    }
    if !schema.inner.table_exist(from) {
        return Err(DataFusionError::Plan(format!("table {from} not found")));
    }
    schema
        .file
        .update(|contents| {
            for relation in &mut contents.relations {
                if relation.schema == schema.name && relation.name == from {
                    relation.name = to.to_string();
                }
            }
        })
        .map_err(external)?;
    schema.inner.deregister_table(from)?;
    schema.inner.register_table(to.to_string(), table)?;
    Ok(())
}

/// Registers the recorded `relation` in `schema` (without recording it again).
async fn restore_relation(
    schema: &PersistentSchema,
    relation: &Relation,
    context: &SessionContext,
) -> Result<()> {
    let table: Arc<dyn TableProvider> = match &relation.definition {
        Definition::ExternalTable { scan } | Definition::ManagedTable { scan, .. } => {
            decode_table(scan, context)?
        }
        Definition::View { sql } => match context.state().create_logical_plan(sql).await? {
            LogicalPlan::Ddl(DdlStatement::CreateView(view)) => Arc::new(ViewTable::new(
                view.input.as_ref().clone(),
                view.definition.clone(),
            )),
            other => {
                return Err(DataFusionError::Plan(format!(
                    "a view definition plans as {}",
                    other.display()
                )))
            }
        },
    };
    schema.inner.register_table(relation.name.clone(), table)?;
    Ok(())
}

/// How `table` is recorded: tables over files and views are, in-memory
/// tables are not.
fn definition(name: &str, table: &Arc<dyn TableProvider>) -> Result<Option<Definition>> {
    if table.downcast_ref::<ListingTable>().is_some() {
        let scan = encode_scan(name, table)?;
        return Ok(Some(Definition::ExternalTable { scan }));
    }
    if let Some(view) = table.downcast_ref::<ViewTable>() {
        return Ok(view
            .definition()
            .map(|sql| Definition::View { sql: sql.clone() }));
    }
    Ok(None)
}

/// A scan of the table over files `table`, encoded with DataFusion's proto
/// format (location, format, options, schema, partition columns), base64.
fn encode_scan(name: &str, table: &Arc<dyn TableProvider>) -> Result<String> {
    let scan =
        LogicalPlanBuilder::scan(name, provider_as_source(Arc::clone(table)), None)?.build()?;
    let bytes = logical_plan_to_bytes_with_extension_codec(
        &scan,
        &BallistaLogicalExtensionCodec::default(),
    )?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The table a recorded scan reads.
fn decode_table(scan: &str, context: &SessionContext) -> Result<Arc<dyn TableProvider>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(scan)
        .map_err(|e| DataFusionError::Plan(format!("corrupt table definition: {e}")))?;
    let plan = logical_plan_from_bytes_with_extension_codec(
        &bytes,
        &context.task_ctx(),
        &BallistaLogicalExtensionCodec::default(),
    )?;
    match plan {
        LogicalPlan::TableScan(scan) => source_as_provider(&scan.source),
        other => Err(DataFusionError::Plan(format!(
            "a table definition holds a {} plan",
            other.display()
        ))),
    }
}

fn external(error: EngineError) -> DataFusionError {
    DataFusionError::External(Box::new(error))
}
