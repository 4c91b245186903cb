//! `sluice tpch gen`: the eight TPC-H tables as Parquet, generated in parallel
//! and streamed to disk one row group at a time.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression as ParquetCompression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator,
    PartSuppGenerator, RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow,
    RecordBatchIterator, RegionArrow, SupplierArrow,
};

use super::Table;

/// Rows per generated Arrow batch.
const BATCH_ROWS: usize = 8192;

/// Parquet compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Zstandard, level 1.
    Zstd,
    /// Snappy (the default): fast to read and write.
    #[default]
    Snappy,
    /// Uncompressed.
    None,
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name.to_ascii_lowercase().as_str() {
            "zstd" => Ok(Self::Zstd),
            "snappy" => Ok(Self::Snappy),
            "none" | "uncompressed" => Ok(Self::None),
            other => Err(format!(
                "unknown compression {other:?} (use zstd, snappy or none)"
            )),
        }
    }
}

impl Compression {
    fn parquet(self) -> ParquetCompression {
        match self {
            Self::Zstd => ParquetCompression::ZSTD(ZstdLevel::default()),
            Self::Snappy => ParquetCompression::SNAPPY,
            Self::None => ParquetCompression::UNCOMPRESSED,
        }
    }
}

/// What to generate and where.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// TPC-H scale factor (1 ≈ 1 GB of raw data); fractions such as 0.01 work.
    pub scale_factor: f64,
    /// Directory that receives one sub-directory per table.
    pub out: PathBuf,
    /// Files per table (nation and region always have one).
    pub files_per_table: usize,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// Parquet compression.
    pub compression: Compression,
    /// Worker threads.
    pub threads: usize,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct GenerateSummary {
    /// Rows over all tables.
    pub rows: u64,
    /// Bytes over all files.
    pub bytes: u64,
    /// Files written.
    pub files: usize,
    /// Wall-clock time.
    pub elapsed: Duration,
}

/// One file to write: part `part` (1-based) of `parts` of a table.
#[derive(Debug, Clone, Copy)]
struct FileTask {
    table: Table,
    part: usize,
    parts: usize,
}

impl FileTask {
    /// The file's name relative to the output: `lineitem/part-0.parquet`.
    fn name(&self) -> String {
        format!("{}/part-{}.parquet", self.table.name(), self.part - 1)
    }

    fn path(&self, out: &Path) -> PathBuf {
        out.join(self.name())
    }

    fn batches(&self, scale_factor: f64) -> Box<dyn RecordBatchIterator> {
        let (sf, part, parts) = (scale_factor, self.part as i32, self.parts as i32);
        match self.table {
            Table::LineItem => Box::new(
                LineItemArrow::new(LineItemGenerator::new(sf, part, parts))
                    .with_batch_size(BATCH_ROWS),
            ),
            Table::Orders => Box::new(
                OrderArrow::new(OrderGenerator::new(sf, part, parts)).with_batch_size(BATCH_ROWS),
            ),
            Table::PartSupp => Box::new(
                PartSuppArrow::new(PartSuppGenerator::new(sf, part, parts))
                    .with_batch_size(BATCH_ROWS),
            ),
            Table::Part => Box::new(
                PartArrow::new(PartGenerator::new(sf, part, parts)).with_batch_size(BATCH_ROWS),
            ),
            Table::Customer => Box::new(
                CustomerArrow::new(CustomerGenerator::new(sf, part, parts))
                    .with_batch_size(BATCH_ROWS),
            ),
            Table::Supplier => Box::new(
                SupplierArrow::new(SupplierGenerator::new(sf, part, parts))
                    .with_batch_size(BATCH_ROWS),
            ),
            Table::Nation => Box::new(
                NationArrow::new(NationGenerator::new(sf, part, parts)).with_batch_size(BATCH_ROWS),
            ),
            Table::Region => Box::new(
                RegionArrow::new(RegionGenerator::new(sf, part, parts)).with_batch_size(BATCH_ROWS),
            ),
        }
    }
}

/// Called with each finished file's local path and its name relative to the
/// output (`lineitem/part-0.parquet`), from the writing thread; an error stops
/// the generation. Uploading to object storage hooks in here.
pub type FileDone<'a> = &'a (dyn Fn(&Path, &str) -> Result<(), String> + Sync);

/// Generates every table into `options.out`, calling `progress` with the
/// number of rows written so far and `file_done` after each file (both from
/// several threads).
pub fn generate(
    options: &GenerateOptions,
    progress: &(dyn Fn(u64) + Sync),
    file_done: FileDone<'_>,
) -> Result<GenerateSummary, String> {
    if !options.scale_factor.is_finite() || options.scale_factor <= 0.0 {
        return Err(format!(
            "scale factor must be positive, got {}",
            options.scale_factor
        ));
    }
    let started = Instant::now();
    let files = options.files_per_table.max(1);
    let tasks: Vec<FileTask> = Table::ALL
        .iter()
        .flat_map(|&table| {
            let parts = if table.is_fixed_size() { 1 } else { files };
            (1..=parts).map(move |part| FileTask { table, part, parts })
        })
        .collect();
    for table in Table::ALL {
        let dir = options.out.join(table.name());
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let properties = WriterProperties::builder()
        .set_compression(options.compression.parquet())
        .set_max_row_group_row_count(Some(options.row_group_rows.max(1)))
        .build();

    let next = AtomicUsize::new(0);
    let rows = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let failure = Mutex::new(None::<String>);
    std::thread::scope(|scope| {
        for _ in 0..options.threads.max(1) {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(task) = tasks.get(index) else { break };
                if failure.lock().map(|f| f.is_some()).unwrap_or(true) {
                    break;
                }
                let written = write_file(task, options, &properties, &|batch_rows| {
                    progress(rows.fetch_add(batch_rows, Ordering::Relaxed) + batch_rows)
                })
                .and_then(|size| {
                    file_done(&task.path(&options.out), &task.name())?;
                    Ok(size)
                });
                match written {
                    Ok(size) => {
                        bytes.fetch_add(size, Ordering::Relaxed);
                    }
                    Err(e) => {
                        if let Ok(mut failure) = failure.lock() {
                            failure.get_or_insert(e);
                        }
                        break;
                    }
                }
            });
        }
    });
    if let Some(error) = failure.into_inner().ok().flatten() {
        return Err(error);
    }
    Ok(GenerateSummary {
        rows: rows.into_inner(),
        bytes: bytes.into_inner(),
        files: tasks.len(),
        elapsed: started.elapsed(),
    })
}

/// Writes one Parquet file, returning its size in bytes.
fn write_file(
    task: &FileTask,
    options: &GenerateOptions,
    properties: &WriterProperties,
    on_batch: &dyn Fn(u64),
) -> Result<u64, String> {
    let path = task.path(&options.out);
    let context = |e: &dyn std::fmt::Display| format!("writing {}: {e}", path.display());
    let batches = task.batches(options.scale_factor);
    let file = File::create(&path).map_err(|e| context(&e))?;
    let mut writer = ArrowWriter::try_new(file, batches.schema().clone(), Some(properties.clone()))
        .map_err(|e| context(&e))?;
    for batch in batches {
        let batch: RecordBatch = batch;
        writer.write(&batch).map_err(|e| context(&e))?;
        on_batch(batch.num_rows() as u64);
    }
    writer.close().map_err(|e| context(&e))?;
    std::fs::metadata(&path)
        .map(|m| m.len())
        .map_err(|e| context(&e))
}
