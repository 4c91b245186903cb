//! Where the rows of a `COPY … FROM` and of buffered INSERTs go
//! ([`crate::copy_from`], [`crate::pending_inserts`]): Parquet files in a new
//! write directory of a managed table, written straight to the warehouse by a
//! task of their own while the next rows are read, and committed to the
//! catalog in one update once every row is written. Until then readers see
//! none of them; a write that fails or is abandoned leaves only files that
//! are removed.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::SchemaProvider;
use datafusion::common::config::TableParquetOptions;
use datafusion::common::file_options::parquet_writer::ParquetWriterOptions;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::error::Result;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::parquet::arrow::arrow_writer::ArrowWriterOptions;
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::prelude::SessionContext;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::ObjectStore;
use tokio::sync::mpsc;

use crate::catalog::managed::{segment_url, unique_id};
use crate::catalog::{commit_write, discard_write, SegmentChange};
use crate::parallel_write::COMMITTED_WRITE_PREFIX;
use crate::queued_writer::QueuedWriter;
use crate::segment_compaction::compact_later;

/// Rows per Parquet file: a new file is started after this many.
const ROWS_PER_FILE: usize = 2 * 1024 * 1024;

/// What writing a segment takes from the session that writes: its object
/// stores and its Parquet settings (not the session itself, which a
/// session's pending inserts would then keep alive).
#[derive(Clone)]
pub struct WriteSettings {
    runtime: Arc<RuntimeEnv>,
    parquet: TableParquetOptions,
}

impl WriteSettings {
    /// The settings `context` writes with.
    pub fn of(context: &SessionContext) -> Self {
        let parquet = context.state_ref().read().table_options().parquet.clone();
        Self {
            runtime: context.runtime_env(),
            parquet,
        }
    }

    /// The object stores.
    pub fn runtime(&self) -> &Arc<RuntimeEnv> {
        &self.runtime
    }
}

/// A managed table's new write directory, being filled.
pub struct Sink {
    /// For the compaction its commit may start.
    settings: WriteSettings,
    /// The task writing the files.
    writer: QueuedWriter,
    schema: Arc<dyn SchemaProvider>,
    table: String,
    location: String,
    /// The write directory's name (the segment committed).
    write: String,
    /// Whether the catalog lists the write directory.
    committed: bool,
}

impl Sink {
    /// Starts writing rows of `table_schema` into a new write directory of
    /// the table `table` at `location` in `schema`.
    pub fn open(
        settings: &WriteSettings,
        schema: Arc<dyn SchemaProvider>,
        table: &str,
        location: &str,
        table_schema: SchemaRef,
    ) -> Result<Self> {
        let write = format!("{COMMITTED_WRITE_PREFIX}write-{}", unique_id());
        let url = ListingTableUrl::parse(segment_url(location, &write))?;
        let store = settings.runtime.object_store(url.object_store())?;
        // The session's Parquet settings, the Arrow schema in the file's
        // metadata as DataFusion's own writes put it.
        let mut options = settings.parquet.clone();
        options.arrow_schema(&table_schema);
        let properties = ParquetWriterOptions::try_from(&options)?
            .writer_options()
            .clone();
        let writer = QueuedWriter::spawn(|batches| {
            write_files(
                store,
                url.prefix().clone(),
                table_schema,
                properties,
                batches,
            )
        });
        Ok(Self {
            settings: settings.clone(),
            writer,
            schema,
            table: table.to_string(),
            location: location.to_string(),
            write,
            committed: false,
        })
    }

    /// Hands `batch` to the writer (waiting while it is busy).
    pub async fn send(&mut self, batch: RecordBatch) -> Result<()> {
        self.writer.send(batch).await
    }

    /// Waits for every file to be written and commits them to the table;
    /// returns the rows written. On error nothing is committed and the files
    /// are removed. Then starts compacting the table's small segments when
    /// it holds many ([`crate::segment_compaction`]).
    pub async fn commit(self) -> Result<u64> {
        let (settings, schema, table) = (
            self.settings.clone(),
            Arc::clone(&self.schema),
            self.table.clone(),
        );
        let rows = self
            .commit_as(|write| SegmentChange::Append(vec![write]))
            .await?;
        compact_later(&settings, &schema, &table);
        Ok(rows)
    }

    /// Like [`Self::commit`], the new segment (the write directory's name)
    /// committed as `change` makes it.
    pub async fn commit_as(mut self, change: impl FnOnce(String) -> SegmentChange) -> Result<u64> {
        let rows = self.writer.finish().await?;
        if rows > 0 {
            let change = change(self.write.clone());
            commit_write(&self.schema, &self.table, &self.location, change).await?;
            self.committed = true;
        }
        Ok(rows)
    }
}

/// Writes the batches of `batches` as Parquet files under `directory`;
/// returns the rows written.
async fn write_files(
    store: Arc<dyn ObjectStore>,
    directory: Path,
    schema: SchemaRef,
    properties: WriterProperties,
    mut batches: mpsc::Receiver<RecordBatch>,
) -> Result<u64> {
    let mut rows = 0u64;
    let mut files = 0usize;
    let mut current: Option<(AsyncArrowWriter<BufWriter>, usize)> = None;
    while let Some(batch) = batches.recv().await {
        if batch.num_rows() == 0 {
            continue;
        }
        let (writer, in_file) = match &mut current {
            Some(open) => open,
            None => {
                let path = directory.clone().join(format!("part-{files}.parquet"));
                files += 1;
                let options = ArrowWriterOptions::new()
                    .with_properties(properties.clone())
                    .with_skip_arrow_metadata(true);
                let writer = AsyncArrowWriter::try_new_with_options(
                    BufWriter::new(Arc::clone(&store), path),
                    Arc::clone(&schema),
                    options,
                )?;
                current.insert((writer, 0))
            }
        };
        writer.write(&batch).await?;
        *in_file += batch.num_rows();
        rows += batch.num_rows() as u64;
        if *in_file >= ROWS_PER_FILE {
            if let Some((writer, _)) = current.take() {
                writer.close().await?;
            }
        }
    }
    if let Some((writer, _)) = current.take() {
        writer.close().await?;
    }
    Ok(rows)
}

/// A sink dropped before its rows were committed (a failed or abandoned
/// write, a lost connection) stops writing and removes its files.
impl Drop for Sink {
    fn drop(&mut self) {
        self.writer.abort();
        if !self.committed {
            discard_write(&self.schema, &segment_url(&self.location, &self.write));
        }
    }
}
