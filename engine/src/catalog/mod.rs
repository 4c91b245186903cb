//! The persistent catalog: schemas, tables over files, managed tables and
//! views that outlive the server, shared by every frontend that points at
//! the same catalog URL.
//!
//! [`PersistentCatalog`] is the frontend's default catalog. Every `CREATE
//! SCHEMA`, `CREATE EXTERNAL TABLE`, `CREATE VIEW`, managed-table write,
//! rename and `DROP` is committed to the [`CatalogStore`] (numbered snapshots
//! in the data directory, or under an object-store prefix for clusters)
//! before it takes effect, so a statement that cannot be recorded fails and
//! changes nothing, and concurrent changes from several frontends all land.
//! The frontend then registers what the snapshot says (see [`replica`]).
//! Schemas installed by the server itself (`pg_catalog`,
//! `information_schema`, `sluice`) and in-memory tables are not recorded:
//! they are rebuilt, or gone, at every start.

pub mod managed;
mod replica;
pub mod store;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use ballista_core::serde::BallistaLogicalExtensionCodec;
use base64::Engine as _;
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemorySchemaProvider, SchemaProvider, TableProvider,
};
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::{provider_as_source, ViewTable};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::LogicalPlanBuilder;
use datafusion::prelude::SessionContext;
use datafusion_proto::bytes::logical_plan_to_bytes_with_extension_codec;

use datafusion::arrow::datatypes::SchemaRef;
pub use managed::Warehouse;
use replica::{wait, Replica};
pub use store::CatalogStore;
use store::{CatalogContents, Definition, Relation};

use crate::sqlstate::{PgError, SqlState};

/// The schema every catalog has, which is never recorded.
const DEFAULT_SCHEMA: &str = crate::session::DEFAULT_SCHEMA;

/// Where a frontend keeps its catalog and managed tables.
#[derive(Debug, Clone)]
pub struct CatalogOptions {
    /// The catalog's directory or object-store prefix.
    pub url: String,
    /// A single-file catalog written by an earlier Sluice, imported when
    /// the catalog at `url` is empty.
    pub legacy_file: Option<PathBuf>,
    /// Where managed tables (`CREATE TABLE`) are written; without one only
    /// in-memory tables can be created.
    pub warehouse: Option<String>,
    /// Whether other frontends may use the same catalog and warehouse: each
    /// statement then first looks for their changes, and the start-up sweep
    /// leaves files younger than a day, which may be another frontend's
    /// write in progress.
    pub shared: bool,
}

/// A catalog whose user schemas and relations are recorded in a
/// [`CatalogStore`].
#[derive(Debug)]
pub struct PersistentCatalog {
    replica: Arc<Replica>,
}

impl PersistentCatalog {
    /// An empty catalog (with its `public` schema) recording as `options`
    /// say. Nothing is read until [`PersistentCatalog::restore`].
    pub fn new(options: &CatalogOptions) -> crate::Result<Self> {
        let warehouse = options
            .warehouse
            .as_deref()
            .map(Warehouse::new)
            .transpose()
            .map_err(|e| crate::EngineError::datafusion("parsing the warehouse URL", e))?;
        let replica = Replica::new(
            CatalogStore::new(&options.url)?,
            options.legacy_file.clone(),
            warehouse,
            options.shared,
        );
        replica
            .schemas
            .register_schema(DEFAULT_SCHEMA, replica.new_schema(DEFAULT_SCHEMA))
            .expect("a memory catalog takes schemas");
        Ok(Self { replica })
    }

    /// Recreates what the store holds in `context`, whose default catalog
    /// is this one: schemas, then tables and views in the order they were
    /// made. A relation that cannot be restored (a view over a table dropped
    /// since) is reported and skipped. Then the warehouse is swept of files
    /// no managed table lists (writes that never committed, dropped tables).
    pub async fn restore(&self, context: &SessionContext) -> crate::Result<()> {
        self.replica.restore(context).await
    }

    /// Catches up with changes other frontends committed. Call it before
    /// planning a statement.
    pub async fn refresh(&self) -> crate::Result<()> {
        self.replica.refresh().await
    }
}

/// Refreshes the persistent catalog of `context`, if it has one (see
/// [`PersistentCatalog::refresh`]); a store that cannot be read is
/// reported, and the statement runs over the catalog as last read.
pub async fn refresh(context: &SessionContext) {
    let catalogs = Arc::clone(context.state_ref().read().catalog_list());
    refresh_catalogs(catalogs.as_ref()).await
}

/// [`refresh`] for the persistent catalog among `catalogs`.
pub async fn refresh_catalogs(catalogs: &dyn CatalogProviderList) {
    let Some(catalog) = catalogs.catalog(crate::DEFAULT_CATALOG) else {
        return;
    };
    if let Some(catalog) = catalog.downcast_ref::<PersistentCatalog>() {
        if let Err(e) = catalog.refresh().await {
            tracing::warn!("{e}");
        }
    }
}

impl CatalogProvider for PersistentCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.replica.schemas.schema_names()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        self.replica.schemas.schema(name)
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
        if !self.replica.recording.load(Ordering::SeqCst) || !created {
            return self.replica.schemas.register_schema(name, schema);
        }
        wait(self.replica.update(|contents| {
            if contents.schemas.iter().any(|s| s == name) {
                return Err(PgError::new(
                    SqlState::DUPLICATE_SCHEMA,
                    format!("schema \"{name}\" already exists"),
                )
                .into_datafusion());
            }
            contents.schemas.push(name.to_string());
            Ok(())
        }))?;
        Ok(None)
    }

    fn deregister_schema(
        &self,
        name: &str,
        cascade: bool,
    ) -> Result<Option<Arc<dyn SchemaProvider>>> {
        let Some(schema) = self.replica.user_schema(name) else {
            return self.replica.schemas.deregister_schema(name, cascade);
        };
        if !cascade && !schema.table_names().is_empty() {
            return Err(PgError::new(
                SqlState::DEPENDENT_OBJECTS_STILL_EXIST,
                format!("cannot drop schema {name} because it holds tables"),
            )
            .with_hint("Use DROP SCHEMA ... CASCADE to drop the tables too.")
            .into_datafusion());
        }
        let dropped = wait(self.replica.update(|contents| {
            contents.schemas.retain(|s| s != name);
            let dropped = managed_locations(contents.relations.iter().filter(|r| r.schema == name));
            contents.relations.retain(|r| r.schema != name);
            Ok(dropped)
        }))?;
        if let Some(warehouse) = &self.replica.warehouse {
            warehouse.remove_later(dropped);
        }
        // Gone from the replica with the update; unrecorded tables with it.
        let _ = self.replica.schemas.deregister_schema(name, true);
        Ok(Some(schema))
    }
}

/// A user schema: its tables over files, managed tables and views are
/// recorded.
#[derive(Debug)]
struct PersistentSchema {
    name: String,
    /// The registered tables and views.
    inner: MemorySchemaProvider,
    replica: Weak<Replica>,
}

impl PersistentSchema {
    fn new(name: &str, replica: Weak<Replica>) -> Self {
        Self {
            name: name.to_string(),
            inner: MemorySchemaProvider::new(),
            replica,
        }
    }

    fn replica(&self) -> Result<Arc<Replica>> {
        self.replica
            .upgrade()
            .ok_or_else(|| DataFusionError::Internal("the catalog is gone".into()))
    }

    /// Whether `relation` is this schema's `name`.
    fn holds(&self, relation: &Relation, name: &str) -> bool {
        relation.schema == self.name && relation.name == name
    }
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
        let exists = || PgError::duplicate_table(&name).into_datafusion();
        if self.inner.table_exist(&name) {
            return Err(exists());
        }
        let Some(definition) = definition(&name, &table)? else {
            return self.inner.register_table(name, table);
        };
        let relation = Relation {
            schema: self.name.clone(),
            name: name.clone(),
            definition,
        };
        wait(self.replica()?.update(|contents| {
            if contents.relations.iter().any(|r| self.holds(r, &name)) {
                return Err(exists());
            }
            contents.relations.push(relation.clone());
            Ok(())
        }))?;
        Ok(None)
    }

    fn deregister_table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let replica = self.replica()?;
        let (table, dropped) = wait(async {
            let table = self.inner.table(name).await?;
            let dropped = replica
                .update(|contents| {
                    let dropped = managed_locations(
                        contents.relations.iter().filter(|r| self.holds(r, name)),
                    );
                    contents.relations.retain(|r| !self.holds(r, name));
                    Ok(dropped)
                })
                .await?;
            Ok::<_, DataFusionError>((table, dropped))
        })?;
        if let Some(warehouse) = &replica.warehouse {
            warehouse.remove_later(dropped);
        }
        // Recorded relations left with the update; in-memory tables here.
        self.inner.deregister_table(name)?;
        Ok(table)
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
    schema.replica.upgrade()?.read_contents(|contents| {
        contents
            .relations
            .iter()
            .find(|r| schema.holds(r, name))
            .and_then(|relation| match &relation.definition {
                Definition::ManagedTable {
                    location, segments, ..
                } => Some(ManagedTable {
                    location: location.clone(),
                    segments: segments.clone(),
                }),
                _ => None,
            })
    })
}

/// The warehouse of the catalog `schema` belongs to.
fn warehouse(schema: &Arc<dyn SchemaProvider>) -> Option<Arc<Warehouse>> {
    let schema = schema.downcast_ref::<PersistentSchema>()?;
    schema.replica.upgrade()?.warehouse.clone()
}

/// A new directory for managed table `name` of `schema`; `None` when the
/// catalog has no warehouse (tables are then created in memory).
pub fn new_table_location(schema: &Arc<dyn SchemaProvider>, name: &str) -> Option<String> {
    let warehouse = warehouse(schema)?;
    let schema = schema.downcast_ref::<PersistentSchema>()?;
    Some(warehouse.new_table_location(&schema.name, name))
}

/// Removes, in the background, what a write that failed left under `url`
/// (its segment, or the directory of a table that was never created). What
/// a stopped server cannot remove is swept at the next start.
pub fn discard_write(schema: &Arc<dyn SchemaProvider>, url: &str) {
    if let Some(warehouse) = warehouse(schema) {
        warehouse.remove_later(vec![url.to_string()]);
    }
}

/// What a committed write does to a managed table's segments (a write
/// makes one segment, or one per task of a parallel write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentChange {
    /// `INSERT`: the segments are added.
    Append(Vec<String>),
    /// `INSERT OVERWRITE` (its segments) and `TRUNCATE` (none): the table
    /// becomes these.
    Replace(Vec<String>),
    /// A compaction: the `merged` segments, all still listed, become the one
    /// segment `into`, where the first of them was
    /// ([`crate::segment_compaction`]).
    Compact {
        /// The segments whose rows `into` holds.
        merged: Vec<String>,
        /// The new segment.
        into: String,
    },
}

/// The provider reading `segments` of the managed table at `location`
/// with the table's `schema`.
pub fn managed_segments_table(
    location: &str,
    segments: &[String],
    schema: SchemaRef,
) -> Result<Arc<dyn TableProvider>> {
    managed::listing_table(location, segments, schema)
}

/// Records and registers the managed table `name` at `location` holding
/// `segments`. With `replace`, an existing table of that name is replaced
/// (its files are removed); otherwise an existing name is an error.
pub async fn create_managed_table(
    schema: &Arc<dyn SchemaProvider>,
    name: &str,
    location: &str,
    table_schema: SchemaRef,
    segments: Vec<String>,
    replace: bool,
) -> Result<()> {
    let schema = persistent(schema)?;
    let replica = schema.replica()?;
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
    let exists = || PgError::duplicate_table(name).into_datafusion();
    let recorded =
        |contents: &CatalogContents| contents.relations.iter().any(|r| schema.holds(r, name));
    if schema.inner.table_exist(name) && !replace && !recorded(&replica.contents()) {
        // An in-memory table of that name.
        return Err(exists());
    }
    let replaced = replica
        .update(|contents| {
            if recorded(contents) && !replace {
                return Err(exists());
            }
            let replaced =
                managed_locations(contents.relations.iter().filter(|r| schema.holds(r, name)));
            contents.relations.retain(|r| !schema.holds(r, name));
            contents.relations.push(relation.clone());
            Ok(replaced)
        })
        .await?;
    if let Some(warehouse) = &replica.warehouse {
        warehouse.remove_later(replaced);
    }
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
    let replica = schema.replica()?;
    let gone = || {
        DataFusionError::Execution(format!(
            "table {name} was dropped or replaced while the write ran; nothing was written"
        ))
    };
    let changed = || {
        DataFusionError::Execution(format!(
            "table {name} changed while its segments were merged"
        ))
    };
    let columns = schema.inner.table(name).await?.ok_or_else(gone)?.schema();
    let removed = replica
        .update(|contents| {
            let relation = contents
                .relations
                .iter_mut()
                .find(|r| schema.holds(r, name))
                .ok_or_else(gone)?;
            let Definition::ManagedTable {
                location: current,
                segments,
                ..
            } = &relation.definition
            else {
                return Err(gone());
            };
            if current != location {
                return Err(gone());
            }
            let (segments, removed) = match &change {
                SegmentChange::Append(added) => {
                    let mut segments = segments.clone();
                    segments.extend(added.iter().cloned());
                    (segments, Vec::new())
                }
                SegmentChange::Replace(new) => (new.clone(), segments.clone()),
                SegmentChange::Compact { merged, into } => (
                    compacted(segments, merged, into).ok_or_else(changed)?,
                    Vec::new(),
                ),
            };
            let table = managed::listing_table(location, &segments, columns.clone())?;
            relation.definition = Definition::ManagedTable {
                location: location.to_string(),
                segments,
                scan: encode_scan(name, &table)?,
            };
            Ok(removed)
        })
        .await?;
    if let Some(warehouse) = &replica.warehouse {
        warehouse.remove_later(managed::write_directories(location, &removed));
        if let SegmentChange::Compact { merged, .. } = change {
            let urls = merged
                .iter()
                .map(|segment| managed::segment_url(location, segment))
                .collect();
            warehouse.remove_after(urls, crate::segment_compaction::REMOVAL_DELAY);
        }
    }
    Ok(())
}

/// `segments` with the `merged` ones replaced by `into` where the first of
/// them was; `None` when one of them is no longer listed.
fn compacted(segments: &[String], merged: &[String], into: &str) -> Option<Vec<String>> {
    let first = segments.iter().position(|s| merged.contains(s))?;
    let kept: Vec<String> = segments
        .iter()
        .filter(|s| !merged.contains(s))
        .cloned()
        .collect();
    if kept.len() + merged.len() != segments.len() {
        return None;
    }
    let mut compacted = kept;
    compacted.insert(first, into.to_string());
    Some(compacted)
}

/// `ALTER TABLE from RENAME TO to` in `schema`: the table or view keeps its
/// definition under the new name, recorded in one catalog update.
pub async fn rename_table(schema: &Arc<dyn SchemaProvider>, from: &str, to: &str) -> Result<()> {
    let schema = schema.downcast_ref::<PersistentSchema>().ok_or_else(|| {
        DataFusionError::NotImplemented("renaming the server's own tables".into())
    })?;
    let replica = schema.replica()?;
    let missing = || PgError::undefined_table(from).into_datafusion();
    let taken = || PgError::duplicate_table(to).into_datafusion();
    if schema.inner.table_exist(to) {
        return Err(taken());
    }
    let recorded = replica
        .update(|contents| {
            if contents.relations.iter().any(|r| schema.holds(r, to)) {
                return Err(taken());
            }
            let relation = contents
                .relations
                .iter_mut()
                .find(|r| schema.holds(r, from));
            Ok(relation
                .map(|relation| relation.name = to.to_string())
                .is_some())
        })
        .await?;
    if !recorded {
        // An in-memory table.
        let table = schema.inner.table(from).await?.ok_or_else(missing)?;
        schema.inner.deregister_table(from)?;
        schema.inner.register_table(to.to_string(), table)?;
    }
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
