//! Small files kept decoded in the frontend's memory: its buffer cache.
//!
//! A dashboard's query over a 25-row table spent a quarter of its CPU in
//! the scan: opening the Parquet file, pruning its row groups against the
//! query's filter, decoding the rows. PostgreSQL answers such queries from
//! the pages it keeps in shared memory. Here the scan of a small query
//! reading at most [`MAX_SCAN_FILE_BYTES`] of files ([`cache_small_scans`])
//! takes the files' decoded columns from a process-wide cache when the
//! files are at the version cached (path, size, modification time, ETag:
//! what DataFusion's footer cache checks too); otherwise it reads them
//! whole and keeps what it read. Answers are still computed by every run
//! from the files as they are then: only decoding an unchanged file again
//! is saved.
//!
//! A cached scan returns every row of its files (none is pruned) and leaves
//! the filtering to the `FilterExec` above it, so only scans whose filter is
//! for pruning alone are cached (Parquet `pushdown_filters` off), and only
//! scans projecting plain columns (no expression pushed into the scan may
//! depend on the query's parameters or the time). The cache holds at most
//! [`CACHE_BYTES`] of decoded batches, oldest entries dropped first, outside
//! the frontend's memory pool.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex};

use datafusion::arrow::array::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::ScalarValue;
use datafusion::datasource::physical_plan::{FileScanConfig, FileSource, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::expressions::{Column, Literal};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    displayable, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties,
    SendableRecordBatchStream,
};
use futures::{stream, TryStreamExt};

/// Most bytes of files one scan may read to be cached.
pub const MAX_SCAN_FILE_BYTES: u64 = 1024 * 1024;

/// Most bytes of decoded batches the cache holds.
pub const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// What a cached scan read: its files at their versions, and how it read
/// them (projection, schema).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ScanKey {
    /// `(path, size, modified, ETag)` of each file, in the scan's order.
    files: Vec<(String, u64, i64, Option<String>)>,
    /// The scan pruning nothing, as EXPLAIN shows it, and its output schema.
    layout: String,
}

/// The process's decoded scans, oldest first.
#[derive(Default)]
struct DecodedScans {
    entries: HashMap<Arc<ScanKey>, (Arc<Vec<RecordBatch>>, usize)>,
    order: VecDeque<Arc<ScanKey>>,
    bytes: usize,
}

impl DecodedScans {
    fn get(&self, key: &ScanKey) -> Option<Arc<Vec<RecordBatch>>> {
        self.entries
            .get(key)
            .map(|(batches, _)| Arc::clone(batches))
    }

    fn insert(&mut self, key: Arc<ScanKey>, batches: Arc<Vec<RecordBatch>>) {
        let bytes = batches.iter().map(RecordBatch::get_array_memory_size).sum();
        if bytes > CACHE_BYTES || self.entries.contains_key(&key) {
            return;
        }
        while self.bytes + bytes > CACHE_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some((_, freed)) = self.entries.remove(&oldest) {
                self.bytes -= freed;
            }
        }
        self.bytes += bytes;
        self.order.push_back(Arc::clone(&key));
        self.entries.insert(key, (batches, bytes));
    }
}

static DECODED: LazyLock<Mutex<DecodedScans>> = LazyLock::new(Mutex::default);

fn decoded() -> std::sync::MutexGuard<'static, DecodedScans> {
    DECODED.lock().unwrap_or_else(|e| e.into_inner())
}

/// `plan` (a small query planned for the frontend) with each scan that may
/// be cached reading through the cache (see the module documentation).
pub fn cache_small_scans(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        Ok(match cached_scan(&node)? {
            Some(cached) => Transformed::yes(cached),
            None => Transformed::no(node),
        })
    })
    .map(|transformed| transformed.data)
}

/// `node` reading through the cache, when it is a scan that may.
fn cached_scan(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(scan) = node.downcast_ref::<DataSourceExec>() else {
        return Ok(None);
    };
    let Some(config) = scan.data_source().downcast_ref::<FileScanConfig>() else {
        return Ok(None);
    };
    let Some(parquet) = config.file_source().downcast_ref::<ParquetSource>() else {
        return Ok(None);
    };
    let filter = parquet.filter();
    let files: Vec<_> = config
        .file_groups
        .iter()
        .flat_map(|group| group.iter())
        .collect();
    let file_bytes: u64 = files.iter().map(|file| file.object_meta.size).sum();
    if parquet.table_parquet_options().global.pushdown_filters
        || !config.table_partition_cols().is_empty()
        || config.file_groups.len() != 1
        || node.properties().partitioning.partition_count() != 1
        || file_bytes > MAX_SCAN_FILE_BYTES
        || files.iter().any(|file| file.range.is_some())
        || !projects_columns_only(node, filter.as_ref())?
    {
        return Ok(None);
    }
    let mut unpruned = config.clone();
    unpruned.limit = None;
    if filter.is_some() {
        let everything: Arc<dyn PhysicalExpr> = Arc::new(Literal::new(ScalarValue::from(true)));
        unpruned.file_source = Arc::new(parquet.with_predicate(everything));
    }
    let unpruned: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(unpruned);
    let key = ScanKey {
        files: files
            .iter()
            .map(|file| {
                let meta = &file.object_meta;
                (
                    meta.location.to_string(),
                    meta.size,
                    meta.last_modified.timestamp_nanos_opt().unwrap_or(i64::MAX),
                    meta.e_tag.clone(),
                )
            })
            .collect(),
        layout: format!(
            "{} {:?}",
            displayable(unpruned.as_ref()).one_line(),
            unpruned.schema()
        ),
    };
    Ok(Some(Arc::new(CachedScanExec {
        scan: Arc::clone(node),
        unpruned,
        key: Arc::new(key),
        limit: config.limit,
    })))
}

/// Whether every expression of scan `node` but its `predicate` is a plain
/// column.
fn projects_columns_only(
    node: &Arc<dyn ExecutionPlan>,
    predicate: Option<&Arc<dyn PhysicalExpr>>,
) -> Result<bool> {
    let mut columns_only = true;
    node.apply_expressions(&mut |expr| {
        let is_predicate = predicate.is_some_and(|predicate| Arc::ptr_eq(predicate, expr));
        if !is_predicate && expr.downcast_ref::<Column>().is_none() {
            columns_only = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(columns_only)
}

/// A small scan reading through the cache of decoded files.
#[derive(Debug)]
struct CachedScanExec {
    /// The scan as planned: its properties, and what EXPLAIN shows.
    scan: Arc<dyn ExecutionPlan>,
    /// The same scan pruning nothing and without a limit: what a miss reads.
    unpruned: Arc<dyn ExecutionPlan>,
    key: Arc<ScanKey>,
    /// The planned scan's limit, applied to what the cache returns.
    limit: Option<usize>,
}

impl DisplayAs for CachedScanExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "CachedScanExec: {}",
            displayable(self.scan.as_ref())
                .one_line()
                .to_string()
                .trim_end()
        )
    }
}

impl ExecutionPlan for CachedScanExec {
    fn name(&self) -> &str {
        "CachedScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.scan.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.scan.apply_expressions(f)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let schema = self.schema();
        let limit = self.limit;
        if let Some(batches) = decoded().get(&self.key) {
            return Ok(Box::pin(RecordBatchStreamAdapter::new(
                schema,
                replay(batches, limit),
            )));
        }
        // A fresh copy: a scan's state is for one execution.
        let unpruned = Arc::clone(&self.unpruned).reset_state()?;
        let reading = unpruned.execute(partition, context)?;
        let key = Arc::clone(&self.key);
        let read = stream::once(async move {
            let batches: Arc<Vec<RecordBatch>> = Arc::new(reading.try_collect().await?);
            decoded().insert(key, Arc::clone(&batches));
            Ok::<_, datafusion::error::DataFusionError>(replay(batches, limit))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, read)))
    }
}

/// `batches` as a stream, cut after `limit` rows.
fn replay(
    batches: Arc<Vec<RecordBatch>>,
    limit: Option<usize>,
) -> impl futures::Stream<Item = Result<RecordBatch>> + Send {
    let mut left = limit.unwrap_or(usize::MAX);
    let cut: Vec<RecordBatch> = batches
        .iter()
        .map_while(|batch| {
            if left == 0 {
                return None;
            }
            let rows = batch.num_rows().min(left);
            left -= rows;
            Some(batch.slice(0, rows))
        })
        .collect();
    stream::iter(cut.into_iter().map(Ok))
}
