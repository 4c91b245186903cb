//! `COPY … TO 'directory/'` that leaves the directory unchanged unless it
//! succeeds.
//!
//! DataFusion writes a directory `COPY` file by file straight into its
//! target, so a reader (an external table over the directory) sees files
//! appear one at a time and a failed or killed `COPY` leaves some behind.
//! Here the files are written to a staging directory inside the target,
//! `<target>/_sluice-copy-<id>/`, which readers do not list (DataFusion
//! ignores subdirectories that are not `key=value` partitions), and moved
//! into the target once every file is written. A failed or cancelled `COPY`
//! removes its staging directory.
//!
//! The [`CopyJournal`] (a file per `COPY` in the data directory) makes this
//! hold across a crash: at the next start a `COPY` that was still writing has
//! its staging directory removed, and one that was moving its files has the
//! move finished. Moving is one rename per file (a server-side copy on
//! object stores): readers can see part of the new files only while it runs.
//!
//! `INSERT INTO` a table over a directory is run as such a `COPY`
//! ([`insert_as_copy`]).
//!
//! Single-file targets need none of this (object stores make a file visible
//! when it is complete), nor do writes under the warehouse, which managed
//! tables commit through the catalog.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::file_format::csv::{CsvFormat, CsvFormatFactory};
use datafusion::datasource::file_format::json::{JsonFormat, JsonFormatFactory};
use datafusion::datasource::file_format::parquet::{ParquetFormat, ParquetFormatFactory};
use datafusion::datasource::file_format::{format_as_file_type, FileFormatFactory};
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::datasource::source_as_provider;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::dml::{CopyTo, InsertOp};
use datafusion::logical_expr::{DmlStatement, LogicalPlan, WriteOp};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};

use crate::catalog::managed::{remove_prefix, unique_id};
use crate::parallel_write::WriteAnswer;

/// The staging directories' name prefix (a committed write's, so that the
/// cluster writes them in parallel: see [`crate::parallel_write`]).
const STAGING_PREFIX: &str = "_sluice-copy-";

/// What staging a directory `COPY` takes, carried in a session's
/// configuration for writes planned outside the query planner
/// ([`crate::directory_sink`]). It has no settable entries.
#[derive(Debug, Clone, Default)]
pub struct StagedCopies {
    /// The warehouse's URL: writes under it are not staged.
    pub warehouse: Option<String>,
    /// The journal that finishes or undoes them after a crash.
    pub journal: Option<Arc<CopyJournal>>,
}

crate::options::carried_extension!(StagedCopies, "sluice_staged_copies");

/// Where a directory `COPY` writes and where it publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CopyTarget {
    /// The directory the user named, ending in `/`.
    target: String,
    /// The staging directory inside it, ending in `/`.
    staging: String,
}

/// The `COPY` plan to run in place of `plan` and the target it stages, when
/// `plan` is a `COPY` into a directory outside `warehouse`.
pub fn stage_copy(
    plan: &LogicalPlan,
    warehouse: Option<&str>,
) -> Result<Option<(LogicalPlan, CopyTargetHandle)>> {
    let LogicalPlan::Copy(copy) = plan else {
        return Ok(None);
    };
    let url = ListingTableUrl::parse(&copy.output_url)?;
    let single_file = match copy.options.get("single_file_output").map(|v| v.trim()) {
        Some("true") => true,
        Some(_) => false,
        None => !url.is_collection() && url.file_extension().is_some(),
    };
    if single_file && copy.partition_by.is_empty() {
        return Ok(None);
    }
    let target = format!("{}/", url.as_str().trim_end_matches('/'));
    if warehouse.is_some_and(|warehouse| target.starts_with(warehouse)) {
        return Ok(None);
    }
    let staging = format!("{target}{STAGING_PREFIX}{}/", unique_id());
    let staged = LogicalPlan::Copy(CopyTo {
        output_url: staging.clone(),
        ..copy.clone()
    });
    Ok(Some((
        staged,
        CopyTargetHandle(CopyTarget { target, staging }),
    )))
}

/// `INSERT INTO` a table over a directory of files, as the `COPY` of its rows
/// into that directory that [`stage_copy`] then makes atomic (DataFusion's
/// own insert writes the files straight into the directory). `None` for any
/// other plan, and for tables whose files are sorted or not in a directory
/// (DataFusion's insert handles those).
pub fn insert_as_copy(plan: &LogicalPlan) -> Option<LogicalPlan> {
    let LogicalPlan::Dml(DmlStatement {
        target,
        op: WriteOp::Insert(InsertOp::Append),
        input,
        ..
    }) = plan
    else {
        return None;
    };
    let provider = source_as_provider(target).ok()?;
    let table = provider.downcast_ref::<ListingTable>()?;
    let options = table.options();
    let [directory] = table.table_paths().as_slice() else {
        return None;
    };
    if !directory.is_collection() || !options.file_sort_order.is_empty() {
        return None;
    }
    let format = options.format.as_ref();
    let factory: Arc<dyn FileFormatFactory> =
        if let Some(parquet) = format.downcast_ref::<ParquetFormat>() {
            Arc::new(ParquetFormatFactory::new_with_options(
                parquet.options().clone(),
            ))
        } else if let Some(csv) = format.downcast_ref::<CsvFormat>() {
            Arc::new(CsvFormatFactory::new_with_options(csv.options().clone()))
        } else if let Some(json) = format.downcast_ref::<JsonFormat>() {
            Arc::new(JsonFormatFactory::new_with_options(json.options().clone()))
        } else {
            return None;
        };
    Some(LogicalPlan::Copy(CopyTo::new(
        Arc::clone(input),
        directory.as_str().to_string(),
        options
            .table_partition_cols
            .iter()
            .map(|(name, _)| name.clone())
            .collect(),
        format_as_file_type(factory),
        HashMap::new(),
    )))
}

/// A staged `COPY`'s directories (see [`stage_copy`]).
#[derive(Debug, Clone)]
pub struct CopyTargetHandle(CopyTarget);

/// Records the directory `COPY`s in progress, one small file each, so that
/// the next start can finish or undo them.
#[derive(Debug)]
pub struct CopyJournal {
    dir: PathBuf,
}

/// A journal entry.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    #[serde(flatten)]
    copy: CopyTarget,
    /// Every file is written and they are being moved into the target.
    publishing: bool,
    /// When publishing a parallel write: the directories its tasks reported
    /// (anything else under the staging directory is not part of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    directories: Option<Vec<String>>,
}

impl Entry {
    /// Whether the entry has the shape [`stage_copy`] gives its records: the
    /// staging directory one `_sluice-copy-<id>/` level inside the target,
    /// and every reported directory inside the staging directory.
    fn is_consistent(&self) -> bool {
        let CopyTarget { target, staging } = &self.copy;
        let staged_inside = staging
            .strip_prefix(target.as_str())
            .and_then(|rest| rest.strip_prefix(STAGING_PREFIX))
            .and_then(|rest| rest.strip_suffix('/'))
            .is_some_and(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()));
        let directories_inside = self.directories.iter().flatten().all(|dir| {
            dir.strip_prefix(staging.as_str())
                .is_some_and(|rest| !rest.split('/').any(|part| part == ".." || part == "."))
        });
        target.ends_with('/') && staged_inside && directories_inside
    }
}

impl CopyJournal {
    /// The journal in directory `dir` (created when first written).
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    fn entry_path(&self, copy: &CopyTarget) -> PathBuf {
        let id = copy
            .staging
            .trim_end_matches('/')
            .rsplit(STAGING_PREFIX)
            .next()
            .unwrap_or_default();
        self.dir.join(format!("{id}.json"))
    }

    /// Writes the entry of `copy` (replacing an earlier one) and flushes it.
    fn record(
        &self,
        copy: &CopyTarget,
        publishing: bool,
        directories: Option<&[String]>,
    ) -> Result<()> {
        use std::io::Write;
        let entry = Entry {
            copy: copy.clone(),
            publishing,
            directories: directories.map(<[String]>::to_vec),
        };
        let path = self.entry_path(copy);
        let staging = path.with_extension("tmp");
        let written = std::fs::create_dir_all(&self.dir)
            .and_then(|()| std::fs::File::create(&staging))
            .and_then(|mut file| {
                file.write_all(&serde_json::to_vec(&entry).map_err(std::io::Error::other)?)?;
                file.sync_all()
            })
            .and_then(|()| std::fs::rename(&staging, &path));
        written.map_err(|e| {
            DataFusionError::Execution(format!("recording the COPY in {}: {e}", path.display()))
        })
    }

    fn forget(&self, copy: &CopyTarget) {
        let _ = std::fs::remove_file(self.entry_path(copy));
    }

    /// Finishes or undoes the `COPY`s a stopped server left: one that was
    /// moving its files into the target finishes the move, one that was
    /// still writing has its staging directory removed.
    pub async fn recover(&self, runtime: &RuntimeEnv) -> crate::Result<()> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(crate::EngineError::Catalog(format!(
                    "reading {}: {e}",
                    self.dir.display()
                )))
            }
        };
        for path in entries.flatten().map(|entry| entry.path()) {
            let entry = std::fs::read(&path)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Entry>(&bytes).ok());
            let Some(entry) = entry else {
                // A journal entry cut short: its COPY had not started writing.
                let _ = std::fs::remove_file(&path);
                continue;
            };
            if !entry.is_consistent() {
                // Not an entry this server wrote: it would remove or move
                // files that no COPY staged. Left alone, and reported.
                tracing::warn!(
                    "ignoring {}: not a record of a COPY (its staging directory is not a \
                     `{STAGING_PREFIX}` directory inside its target)",
                    path.display()
                );
                continue;
            }
            let finished = async {
                let store = runtime.object_store(ListingTableUrl::parse(&entry.copy.target)?)?;
                if entry.publishing {
                    publish(&store, &entry.copy, entry.directories.as_deref()).await?;
                    tracing::info!(
                        "finished moving an interrupted COPY into {}",
                        entry.copy.target
                    );
                } else {
                    remove_prefix(&store, &entry.copy.staging).await?;
                    tracing::info!(
                        "removed the files of an interrupted COPY to {}",
                        entry.copy.target
                    );
                }
                Ok::<_, DataFusionError>(())
            };
            match finished.await {
                Ok(()) => self.forget(&entry.copy),
                Err(e) => tracing::warn!(
                    "cannot clean up the interrupted COPY to {} (retried at the next start): {e}",
                    entry.copy.target
                ),
            }
        }
        Ok(())
    }
}

/// Moves the written files to the same place under the target, then
/// removes the staging directory. The written files are those under the
/// staging directory, or for a parallel write those under the `directories`
/// its tasks reported (inside the staging directory).
async fn publish(
    store: &Arc<dyn ObjectStore>,
    copy: &CopyTarget,
    directories: Option<&[String]>,
) -> Result<()> {
    let target = ListingTableUrl::parse(&copy.target)?;
    let staging = [copy.staging.clone()];
    for dir in directories.unwrap_or(&staging) {
        let dir = ListingTableUrl::parse(dir)?;
        let files: Vec<ObjectPath> = store
            .list(Some(dir.prefix()))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await?;
        for file in files {
            let Some(relative) = file.prefix_match(dir.prefix()) else {
                continue;
            };
            let to = relative.fold(target.prefix().clone(), |path, part| path.join(part));
            store.rename(&file, &to).await?;
        }
    }
    remove_prefix(store, &copy.staging).await
}

/// Runs a staged `COPY` (its plan writes to the staging directory) and
/// publishes its files when it has written them all.
pub struct AtomicCopyExec {
    input: Arc<dyn ExecutionPlan>,
    copy: CopyTarget,
    journal: Option<Arc<CopyJournal>>,
}

impl AtomicCopyExec {
    /// Wraps `input`, the physical plan of the staged `COPY`.
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        copy: CopyTargetHandle,
        journal: Option<Arc<CopyJournal>>,
    ) -> Self {
        Self {
            input,
            copy: copy.0,
            journal,
        }
    }
}

impl fmt::Debug for AtomicCopyExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AtomicCopyExec")
            .field("target", &self.copy.target)
            .finish_non_exhaustive()
    }
}

impl DisplayAs for AtomicCopyExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "AtomicCopyExec: target={}", self.copy.target)
    }
}

impl ExecutionPlan for AtomicCopyExec {
    fn name(&self) -> &str {
        "AtomicCopyExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] = <[_; 1]>::try_from(children)
            .map_err(|_| DataFusionError::Internal("AtomicCopyExec has one child".into()))?;
        Ok(Arc::new(Self {
            input,
            copy: self.copy.clone(),
            journal: self.journal.clone(),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0
            || self
                .input
                .properties()
                .output_partitioning()
                .partition_count()
                != 1
        {
            return Err(DataFusionError::Internal(format!(
                "a COPY reports its row count in one partition, not partition {partition}"
            )));
        }
        let store = context
            .runtime_env()
            .object_store(ListingTableUrl::parse(&self.copy.target)?)?;
        if let Some(journal) = &self.journal {
            journal.record(&self.copy, false, None)?;
        }
        let mut running = Running {
            store,
            copy: self.copy.clone(),
            journal: self.journal.clone(),
            done: false,
        };
        let input = self.input.execute(0, context)?;
        let schema = input.schema();
        let answer = futures::stream::once(async move {
            let written = input.try_collect::<Vec<_>>().await;
            running
                .finish(written.map(|batches| WriteAnswer::read(&batches)))
                .await?
                .count_batch()
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, answer)))
    }
}

/// A staged `COPY` being written: undone when it fails or is dropped
/// unfinished (cancelled).
struct Running {
    store: Arc<dyn ObjectStore>,
    copy: CopyTarget,
    journal: Option<Arc<CopyJournal>>,
    done: bool,
}

impl Running {
    /// Publishes the files of a `COPY` that wrote them all, or removes
    /// them. A move that fails half-way stays in the journal: the next start
    /// finishes it.
    async fn finish(&mut self, written: Result<WriteAnswer>) -> Result<WriteAnswer> {
        self.done = true;
        match written {
            Ok(answer) => {
                let directories = answer.directories.as_deref();
                if let Some(journal) = &self.journal {
                    journal.record(&self.copy, true, directories)?;
                }
                publish(&self.store, &self.copy, directories)
                    .await
                    .map_err(|e| {
                        DataFusionError::Execution(format!(
                            "moving the written files into {} failed (the move is finished at the \
                         next start): {e}",
                            self.copy.target
                        ))
                    })?;
                self.forget();
                Ok(answer)
            }
            Err(e) => {
                match remove_prefix(&self.store, &self.copy.staging).await {
                    Ok(()) => self.forget(),
                    Err(cleanup) => {
                        tracing::warn!("cannot remove {}: {cleanup}", self.copy.staging)
                    }
                }
                Err(e)
            }
        }
    }

    fn forget(&self) {
        if let Some(journal) = &self.journal {
            journal.forget(&self.copy);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (store, copy, journal) = (
            Arc::clone(&self.store),
            self.copy.clone(),
            self.journal.clone(),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                match remove_prefix(&store, &copy.staging).await {
                    Ok(()) => {
                        if let Some(journal) = journal {
                            journal.forget(&copy);
                        }
                    }
                    Err(e) => tracing::warn!("cannot remove {}: {e}", copy.staging),
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    async fn staged(sql: &str, warehouse: Option<&str>) -> Option<CopyTarget> {
        let plan = SessionContext::new()
            .state()
            .create_logical_plan(sql)
            .await
            .unwrap();
        let (plan, copy) = stage_copy(&plan, warehouse).unwrap()?;
        let LogicalPlan::Copy(staged) = plan else {
            panic!("a COPY stays a COPY");
        };
        assert_eq!(staged.output_url, copy.0.staging);
        Some(copy.0)
    }

    #[tokio::test]
    async fn the_journal_acts_only_on_entries_shaped_like_its_own() {
        let copy = staged(
            "COPY (SELECT 1 AS a) TO '/out/dir/' STORED AS parquet",
            None,
        )
        .await
        .unwrap();
        let entry = |copy: CopyTarget, directories: Option<Vec<String>>| Entry {
            copy,
            publishing: true,
            directories,
        };
        let task = format!("{}task-1/", copy.staging);
        assert!(entry(copy.clone(), None).is_consistent());
        assert!(entry(copy.clone(), Some(vec![task])).is_consistent());
        let forged = [
            CopyTarget {
                target: "file:///etc/".into(),
                staging: "file:///etc/".into(),
            },
            CopyTarget {
                target: copy.target.clone(),
                staging: "file:///elsewhere/_sluice-copy-1/".into(),
            },
            CopyTarget {
                target: copy.target.clone(),
                staging: format!("{}_sluice-copy-../", copy.target),
            },
        ];
        for forged in forged {
            assert!(!entry(forged.clone(), None).is_consistent(), "{forged:?}");
        }
        let outside = format!("{}../../etc/", copy.staging);
        assert!(!entry(copy, Some(vec![outside])).is_consistent());
    }

    #[test]
    fn staged_copies_are_written_in_parallel() {
        assert!(STAGING_PREFIX.starts_with(crate::parallel_write::COMMITTED_WRITE_PREFIX));
    }

    #[tokio::test]
    async fn directory_copies_outside_the_warehouse_are_staged() {
        let copy = staged(
            "COPY (SELECT 1 AS a) TO '/out/dir/' STORED AS parquet",
            None,
        )
        .await
        .unwrap();
        assert_eq!(copy.target, "file:///out/dir/");
        assert!(copy.staging.starts_with("file:///out/dir/_sluice-copy-"));
        assert!(
            staged("COPY (SELECT 1 AS a) TO '/out/dir' STORED AS csv", None)
                .await
                .is_some()
        );
        assert!(staged(
            "COPY (SELECT 1 AS a) TO '/out/x.parquet' STORED AS parquet PARTITIONED BY (a)",
            None
        )
        .await
        .is_some());
        // A single file appears whole; the warehouse commits through the catalog.
        assert_eq!(
            staged(
                "COPY (SELECT 1 AS a) TO '/out/x.parquet' STORED AS parquet",
                None
            )
            .await,
            None
        );
        assert_eq!(
            staged(
                "COPY (SELECT 1 AS a) TO '/wh/public/t-1/s/' STORED AS parquet",
                Some("file:///wh/")
            )
            .await,
            None
        );
        assert_eq!(staged("SELECT 1", None).await, None);
    }
}
