//! A frontend's copy of the stored catalog: the schemas and relations of the
//! newest snapshot it knows, registered as DataFusion tables and views.
//!
//! Data flows one way: a change is committed to the [`CatalogStore`] first,
//! then the replica is brought to the committed snapshot by [`Replica::apply`],
//! which registers, replaces and removes providers. Changes committed by other
//! frontends arrive the same way, through [`Replica::refresh`].

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use ballista_core::serde::BallistaLogicalExtensionCodec;
use base64::Engine as _;
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, SchemaProvider, TableProvider};
use datafusion::datasource::{source_as_provider, ViewTable};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion_proto::bytes::logical_plan_from_bytes_with_extension_codec;
use parking_lot::RwLock;

use super::managed::{self, Warehouse};
use super::store::{
    read_legacy_file, CatalogContents, CatalogStore, Definition, Relation, Snapshot,
};
use super::PersistentSchema;
use crate::error::EngineError;

/// How many times a change is applied again over a newer snapshot when other
/// frontends keep committing first.
const COMMIT_ATTEMPTS: usize = 32;

/// How old a file in a shared warehouse must be before the start-up sweep
/// removes it: a younger one may be another frontend's write in progress.
const SHARED_SWEEP_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// The catalog as one frontend holds it.
#[derive(Debug)]
pub(super) struct Replica {
    /// This replica, for the schemas it registers.
    me: Weak<Replica>,
    /// The registered schemas (user schemas are [`PersistentSchema`]s).
    pub(super) schemas: MemoryCatalogProvider,
    pub(super) store: CatalogStore,
    /// A single-file catalog of an earlier version, imported once.
    legacy_file: Option<PathBuf>,
    pub(super) warehouse: Option<Arc<Warehouse>>,
    /// Whether other frontends use the same catalog and warehouse.
    shared: bool,
    /// The snapshot the registered schemas and relations reflect.
    known: Mutex<Snapshot>,
    /// Held while a snapshot is committed or applied, so that this
    /// frontend's changes and refreshes apply in order.
    changes: tokio::sync::Mutex<()>,
    /// The template session's state, in which views are planned and scans
    /// decoded (weak: that state holds this catalog).
    template: OnceLock<Weak<RwLock<SessionState>>>,
    /// Off until [`Replica::restore`] has run: schemas the server installs
    /// before then are its own and not recorded.
    pub(super) recording: AtomicBool,
}

impl Replica {
    pub(super) fn new(
        store: CatalogStore,
        legacy_file: Option<PathBuf>,
        warehouse: Option<Warehouse>,
        shared: bool,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            schemas: MemoryCatalogProvider::new(),
            store,
            legacy_file,
            warehouse: warehouse.map(Arc::new),
            shared,
            known: Mutex::default(),
            changes: tokio::sync::Mutex::new(()),
            template: OnceLock::new(),
            recording: AtomicBool::new(false),
        })
    }

    /// A new, empty user schema `name` of this catalog.
    pub(super) fn new_schema(&self, name: &str) -> Arc<dyn SchemaProvider> {
        Arc::new(PersistentSchema::new(name, self.me.clone()))
    }

    /// What `read` makes of the contents of the snapshot this frontend
    /// knows, without copying them.
    pub(super) fn read_contents<T>(&self, read: impl FnOnce(&CatalogContents) -> T) -> T {
        read(
            &self
                .known
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contents,
        )
    }

    /// The contents of the snapshot this frontend knows.
    pub(super) fn contents(&self) -> CatalogContents {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contents
            .clone()
    }

    fn known(&self) -> Snapshot {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_known(&self, snapshot: Snapshot) {
        *self.known.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
    }

    /// Opens the store and the warehouse, imports an earlier version's
    /// catalog file, registers what the newest snapshot holds, then sweeps
    /// the warehouse of files no managed table lists.
    pub(super) async fn restore(self: &Arc<Self>, context: &SessionContext) -> crate::Result<()> {
        let _ = self.template.set(Arc::downgrade(&context.state_ref()));
        let runtime = context.runtime_env();
        self.store.attach(&runtime)?;
        if let Some(warehouse) = &self.warehouse {
            warehouse
                .attach(&runtime)
                .map_err(|e| EngineError::datafusion("opening the warehouse", e))?;
        }
        let _changes = self.changes.lock().await;
        let mut latest = self.store.latest().await?;
        if latest.number == 0 {
            if let Some(legacy) = self.legacy_file.as_deref() {
                if let Some(contents) = read_legacy_file(legacy)? {
                    self.store.commit(0, &contents).await?;
                    tracing::info!(
                        "imported the catalog of {} into {}",
                        legacy.display(),
                        self.store.url()
                    );
                    latest = self.store.latest().await?;
                }
            }
        }
        self.apply(&CatalogContents::default(), &latest.contents)
            .await;
        if let Err(e) = self.store.prune(latest.number).await {
            tracing::warn!("{e}");
        }
        if let Some(warehouse) = &self.warehouse {
            let tables: Vec<_> = latest
                .contents
                .relations
                .iter()
                .filter_map(|relation| match &relation.definition {
                    Definition::ManagedTable {
                        location, segments, ..
                    } => Some((location.clone(), segments.clone())),
                    _ => None,
                })
                .collect();
            let min_age = self.shared.then_some(SHARED_SWEEP_AGE);
            managed::sweep(warehouse, &tables, min_age)
                .await
                .map_err(|e| {
                    EngineError::datafusion(
                        format!("sweeping the warehouse {}", warehouse.url()),
                        e,
                    )
                })?;
        }
        self.set_known(latest);
        self.recording.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Brings this frontend to the newest committed snapshot (changes made
    /// by other frontends since it last looked). A catalog that is not
    /// shared has no other writers: nothing to look for.
    pub(super) async fn refresh(&self) -> crate::Result<()> {
        if !self.shared || !self.recording.load(Ordering::SeqCst) {
            return Ok(());
        }
        let _changes = self.changes.lock().await;
        let known = self.known();
        if let Some(newer) = self.store.newer_than(known.number).await? {
            self.apply(&known.contents, &newer.contents).await;
            self.set_known(newer);
        }
        Ok(())
    }

    /// Commits what `change` makes of the newest snapshot and applies it.
    /// When another frontend commits first, `change` runs again over its
    /// snapshot; an error from `change` (a name taken meanwhile) ends the
    /// update with nothing committed. Returns `change`'s value of the
    /// attempt that was committed.
    pub(super) async fn update<T>(
        &self,
        mut change: impl FnMut(&mut CatalogContents) -> Result<T>,
    ) -> Result<T> {
        let _changes = self.changes.lock().await;
        let mut known = self.known();
        for _ in 0..COMMIT_ATTEMPTS {
            let mut next = known.contents.clone();
            let value = change(&mut next)?;
            if next == known.contents {
                return Ok(value);
            }
            if self
                .store
                .commit(known.number, &next)
                .await
                .map_err(external)?
            {
                self.apply(&known.contents, &next).await;
                self.set_known(Snapshot {
                    number: known.number + 1,
                    contents: next,
                });
                return Ok(value);
            }
            tracing::debug!(
                "catalog snapshot {} was committed by another frontend first; applying the \
                 change again over it",
                known.number + 1
            );
            let newer = self
                .store
                .newer_than(known.number)
                .await
                .map_err(external)?
                .unwrap_or_else(|| known.clone());
            self.apply(&known.contents, &newer.contents).await;
            self.set_known(newer.clone());
            known = newer;
        }
        Err(external(EngineError::Catalog(format!(
            "the catalog at {} is changed by other frontends too often to commit; try again",
            self.store.url()
        ))))
    }

    /// Registers, replaces and removes schemas and relations so that what
    /// `from` describes becomes what `to` does. Views are planned again
    /// whenever anything changed, so that they read the current tables. A
    /// relation that cannot be registered (a view over a table dropped
    /// since) is reported and skipped.
    async fn apply(&self, from: &CatalogContents, to: &CatalogContents) {
        for name in &to.schemas {
            if self.schemas.schema(name).is_none() {
                if let Err(e) = self.schemas.register_schema(name, self.new_schema(name)) {
                    tracing::warn!("cannot register schema {name}: {e}");
                }
            }
        }
        let key = |r: &Relation| (r.schema.clone(), r.name.clone());
        let before: HashMap<_, &Relation> = from.relations.iter().map(|r| (key(r), r)).collect();
        let after: HashSet<_> = to.relations.iter().map(key).collect();
        for relation in &from.relations {
            if !after.contains(&key(relation)) {
                let schema = self.user_schema(&relation.schema);
                if let Some(schema) = schema
                    .as_ref()
                    .and_then(|s| s.downcast_ref::<PersistentSchema>())
                {
                    let _ = schema.inner.deregister_table(&relation.name);
                }
            }
        }
        let changed = from.relations != to.relations;
        for relation in &to.relations {
            let is_view = matches!(relation.definition, Definition::View { .. });
            let same = before.get(&key(relation)) == Some(&relation);
            if same && !(is_view && changed) {
                continue;
            }
            match self.register(relation).await {
                Ok(()) => {}
                // A view whose table was dropped keeps its last plan.
                Err(e) if same => tracing::debug!(
                    "cannot plan view {}.{} again: {e}",
                    relation.schema,
                    relation.name
                ),
                Err(e) => tracing::warn!(
                    "cannot restore {}.{} from the catalog, skipped: {e}",
                    relation.schema,
                    relation.name
                ),
            }
        }
        for name in &from.schemas {
            if !to.schemas.contains(name) {
                let _ = self.schemas.deregister_schema(name, true);
            }
        }
    }

    /// The user schema `name`, if it is registered.
    pub(super) fn user_schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        self.schemas
            .schema(name)
            .filter(|schema| schema.downcast_ref::<PersistentSchema>().is_some())
    }

    /// Registers `relation` in its schema (without recording it), in place
    /// of what has its name.
    async fn register(&self, relation: &Relation) -> Result<()> {
        let schema = self
            .user_schema(&relation.schema)
            .ok_or_else(|| DataFusionError::Plan(format!("no schema {}", relation.schema)))?;
        let schema = schema
            .downcast_ref::<PersistentSchema>()
            .expect("user_schema returns persistent schemas");
        let context = self.template_context()?;
        let table: Arc<dyn TableProvider> = match &relation.definition {
            Definition::ExternalTable { scan } | Definition::ManagedTable { scan, .. } => {
                decode_table(scan, &context)?
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
        schema.inner.deregister_table(&relation.name)?;
        schema.inner.register_table(relation.name.clone(), table)?;
        Ok(())
    }

    /// A session over the template's current state.
    fn template_context(&self) -> Result<SessionContext> {
        let state = self
            .template
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| DataFusionError::Internal("the catalog's session is gone".into()))?;
        let state = state.read().clone();
        Ok(SessionContext::new_with_state(state))
    }
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

/// Runs a catalog update from a synchronous DataFusion callback
/// (`register_table` and friends): on the server's multi-threaded runtime
/// the worker blocks in place; elsewhere the update runs on a thread of its
/// own.
pub(super) fn wait<T: Send>(future: impl std::future::Future<Output = T> + Send) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| handle.block_on(future))
        }
        _ => std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a runtime for a catalog update")
                        .block_on(future)
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        }),
    }
}

pub(super) fn external(error: EngineError) -> DataFusionError {
    DataFusionError::External(Box::new(error))
}
