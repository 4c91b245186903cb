//! Where the rows of a `COPY … FROM` go: Parquet files in a new write
//! directory of a managed table, written straight to the warehouse by a task
//! of their own while the next rows are read, and committed to the catalog
//! in one update once every row is written. Until then readers see none of
//! them; a COPY that fails or is abandoned leaves only files that are
//! removed.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::SchemaProvider;
use datafusion::common::file_options::parquet_writer::ParquetWriterOptions;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::error::{DataFusionError, Result};
use datafusion::parquet::arrow::arrow_writer::ArrowWriterOptions;
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::prelude::SessionContext;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::ObjectStore;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::catalog::managed::{segment_url, unique_id};
use crate::catalog::{commit_write, discard_write, SegmentChange};
use crate::parallel_write::COMMITTED_WRITE_PREFIX;

/// Rows per Parquet file: a new file is started after this many.
const ROWS_PER_FILE: usize = 2 * 1024 * 1024;

/// Batches waiting for the writer: the reader stays at most this far ahead.
const QUEUED_BATCHES: usize = 4;

/// A managed table's new write directory, being filled.
pub struct Sink {
    batches: Option<mpsc::Sender<RecordBatch>>,
    /// The writing task, until it is waited for.
    writer: Option<JoinHandle<Result<u64>>>,
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
        context: &SessionContext,
        schema: Arc<dyn SchemaProvider>,
        table: &str,
        location: &str,
        table_schema: SchemaRef,
    ) -> Result<Self> {
        let write = format!("{COMMITTED_WRITE_PREFIX}write-{}", unique_id());
        let url = ListingTableUrl::parse(segment_url(location, &write))?;
        let store = context.runtime_env().object_store(url.object_store())?;
        let state = context.state();
        // The session's Parquet settings, the Arrow schema in the file's
        // metadata as DataFusion's own writes put it.
        let mut options = state.table_options().parquet.clone();
        options.arrow_schema(&table_schema);
        let properties = ParquetWriterOptions::try_from(&options)?
            .writer_options()
            .clone();
        let (sender, receiver) = mpsc::channel(QUEUED_BATCHES);
        let writer = tokio::spawn(write_files(
            store,
            url.prefix().clone(),
            table_schema,
            properties,
            receiver,
        ));
        Ok(Self {
            batches: Some(sender),
            writer: Some(writer),
            schema,
            table: table.to_string(),
            location: location.to_string(),
            write,
            committed: false,
        })
    }

    /// Hands `batch` to the writer (waiting while it is busy).
    pub async fn send(&mut self, batch: RecordBatch) -> Result<()> {
        let Some(batches) = &self.batches else {
            return Err(DataFusionError::Internal(
                "the COPY writer is closed".into(),
            ));
        };
        if batches.send(batch).await.is_err() {
            // The writer stopped: its error says why.
            self.batches = None;
            return Err(match self.written().await {
                Err(e) => e,
                Ok(_) => DataFusionError::Internal("the COPY writer stopped early".into()),
            });
        }
        Ok(())
    }

    /// What the writing task returned (once, after the queue is closed).
    async fn written(&mut self) -> Result<u64> {
        match self.writer.take() {
            Some(writer) => writer
                .await
                .unwrap_or_else(|e| Err(DataFusionError::External(Box::new(e)))),
            None => Err(DataFusionError::Internal("the COPY writer is gone".into())),
        }
    }

    /// Waits for every file to be written and commits them to the table;
    /// returns the rows written. On error nothing is committed and the files
    /// are removed.
    pub async fn commit(mut self) -> Result<u64> {
        self.batches = None;
        let rows = self.written().await?;
        if rows > 0 {
            let change = SegmentChange::Append(vec![self.write.clone()]);
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
/// COPY, a lost connection) stops writing and removes its files.
impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            writer.abort();
        }
        if !self.committed {
            discard_write(&self.schema, &segment_url(&self.location, &self.write));
        }
    }
}
