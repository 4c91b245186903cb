//! Collects one output partition of a task: batches of the session's batch
//! size in memory while the budget allows, then an Arrow IPC stream file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::UInt32Array;
use datafusion::arrow::compute::{take_record_batch, BatchCoalescer};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use datafusion::arrow::ipc::CompressionType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};

use super::{HeldOutput, HeldRows, Reservation, ShuffleMemory};

/// Rows, batches and bytes of one finished output partition, as Ballista's
/// writers report them.
#[derive(Debug, Clone, Copy, Default)]
pub struct SinkStats {
    /// Rows written.
    pub num_rows: u64,
    /// Batches written.
    pub num_batches: u64,
    /// Bytes held in memory, or of the spill file.
    pub num_bytes: u64,
}

/// One output partition being written.
pub struct PartitionSink {
    schema: SchemaRef,
    coalescer: BatchCoalescer,
    batches: Vec<RecordBatch>,
    /// Bytes of `batches` counted against the budget.
    reservation: Reservation,
    spill_path: PathBuf,
    spill: Option<StreamWriter<BufWriter<File>>>,
    stats: SinkStats,
}

impl PartitionSink {
    /// A sink for batches of `schema`, spilling to `spill_path` beyond the
    /// budget of `memory`.
    pub fn new(
        memory: Arc<ShuffleMemory>,
        schema: SchemaRef,
        batch_size: usize,
        spill_path: PathBuf,
    ) -> Self {
        Self {
            coalescer: BatchCoalescer::new(Arc::clone(&schema), batch_size.max(1)),
            schema,
            batches: Vec::new(),
            reservation: Reservation::empty(&memory),
            spill_path,
            spill: None,
            stats: SinkStats::default(),
        }
    }

    /// Adds `batch`'s rows.
    pub fn push(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.coalescer.push_batch(batch)?;
        while let Some(batch) = self.coalescer.next_completed_batch() {
            self.store(batch)?;
        }
        Ok(())
    }

    fn store(&mut self, batch: RecordBatch) -> Result<()> {
        self.stats.num_rows += batch.num_rows() as u64;
        self.stats.num_batches += 1;
        if self.spill.is_none() {
            if self
                .reservation
                .try_grow(batch.get_array_memory_size() as u64)
            {
                self.batches.push(batch);
                return Ok(());
            }
            self.start_spill()?;
        }
        let writer = self
            .spill
            .as_mut()
            .ok_or_else(|| DataFusionError::Internal("shuffle spill writer missing".to_string()))?;
        writer.write(&batch)?;
        Ok(())
    }

    /// Moves the batches held so far to the spill file, which takes the rest.
    fn start_spill(&mut self) -> Result<()> {
        let failed = |e: std::io::Error| {
            DataFusionError::Execution(format!(
                "spilling shuffle output to {}: {e}",
                self.spill_path.display()
            ))
        };
        if let Some(dir) = self.spill_path.parent() {
            std::fs::create_dir_all(dir).map_err(failed)?;
        }
        let file = File::create(&self.spill_path).map_err(failed)?;
        let options =
            IpcWriteOptions::default().try_with_compression(Some(CompressionType::LZ4_FRAME))?;
        let mut writer =
            StreamWriter::try_new_with_options(BufWriter::new(file), &self.schema, options)?;
        for batch in self.batches.drain(..) {
            writer.write(&batch)?;
        }
        self.reservation.free();
        self.spill = Some(writer);
        Ok(())
    }

    /// The partition's rows, kept by the caller until its stage directory
    /// `stage_dir` is removed.
    pub fn finish(mut self, stage_dir: PathBuf) -> Result<(HeldOutput, SinkStats)> {
        self.coalescer.finish_buffered_batch()?;
        while let Some(batch) = self.coalescer.next_completed_batch() {
            // The last batch is short, in buffers sized for a full one:
            // copied to fit, a small output holds only its rows.
            let rows = UInt32Array::from_iter_values(0..batch.num_rows() as u32);
            self.store(take_record_batch(&batch, &rows)?)?;
        }
        let mut stats = self.stats;
        let output = match self.spill.take() {
            Some(writer) => {
                writer.into_inner()?.flush().map_err(|e| {
                    DataFusionError::Execution(format!(
                        "spilling shuffle output to {}: {e}",
                        self.spill_path.display()
                    ))
                })?;
                let bytes = std::fs::metadata(&self.spill_path)
                    .map(|m| m.len())
                    .unwrap_or(0);
                ShuffleMemory::count_spill(bytes);
                stats.num_bytes = bytes;
                HeldOutput {
                    rows: HeldRows::Spilled(self.spill_path),
                    reservation: self.reservation,
                    stage_dir,
                }
            }
            None => {
                stats.num_bytes = self.reservation.bytes;
                HeldOutput {
                    rows: HeldRows::Memory {
                        schema: self.schema,
                        batches: self.batches,
                    },
                    reservation: self.reservation,
                    stage_dir,
                }
            }
        };
        Ok((output, stats))
    }
}
