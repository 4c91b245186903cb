//! Shuffle output held in the executors' memory instead of Ballista's files.
//!
//! Ballista writes every stage's output to Arrow IPC files in the producing
//! executor's work dir; the next stage reads them back from the page cache
//! (same executor) or over Arrow Flight. Here a stage's output stays in
//! memory as Arrow batches:
//!
//! - [`stage::MemoryStage`] runs a stage whose root is Ballista's
//!   passthrough or hash (sort-shuffle) writer and keeps each output
//!   partition's batches in the process's [`ShuffleMemory`], within its byte
//!   budget. An output that does not fit is spilled to a plain Arrow IPC
//!   stream file under the stage's directory ([`sink`]).
//! - [`reader::MemoryShuffleReaderExec`] replaces Ballista's shuffle reader
//!   in the consuming stage: partitions held in this process are read
//!   without Flight or decoding; the others go to Ballista's reader.
//! - [`serve`] answers Ballista's partition fetches (the shuffle reader of
//!   another executor, the frontend's result fetch) from the store.
//!
//! **Lifecycle.** An output lives exactly as long as Ballista's files would:
//! the stage's directory in the work dir is created as Ballista's writer
//! would, and Ballista removes it when the job's data is released
//! (intermediate stages when the job succeeds, the result when the frontend
//! has read it, everything when the job fails or is cancelled, and the
//! executor's sweeper after the result retention time). A sweeper drops the
//! outputs whose stage directory is gone. Output is kept until then, so a
//! lost executor's partitions are recomputed from its inputs as with files
//! (and `sluice_engine::recovery` resubmits the job when they cannot be).
//!
//! `sluice_shuffle_memory_bytes` (held now) and
//! `sluice_shuffle_spilled_bytes_total` are in `/metrics`.

pub mod reader;
pub mod serve;
pub mod sink;
pub mod stage;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use prometheus::{register_int_counter, register_int_gauge, IntCounter, IntGauge};

use crate::lazy_metric;

/// How often the sweeper looks for outputs whose stage directory is gone.
const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

static HELD_BYTES: LazyLock<IntGauge> = lazy_metric!(
    register_int_gauge,
    "sluice_shuffle_memory_bytes",
    "Bytes of shuffle and result partitions held in executor memory now"
);
static SPILLED_BYTES: LazyLock<IntCounter> = lazy_metric!(
    register_int_counter,
    "sluice_shuffle_spilled_bytes_total",
    "Bytes of shuffle and result partitions written to disk because the shuffle memory budget was full"
);

static LIVE_ROWS: LazyLock<IntCounter> = lazy_metric!(
    register_int_counter,
    "sluice_live_result_rows_total",
    "Result rows final-stage tasks handed to the frontend of their process as they made them"
);
static LIVE_SPILLED_BYTES: LazyLock<IntCounter> = lazy_metric!(
    register_int_counter,
    "sluice_live_result_spilled_bytes_total",
    "Bytes of result rows written to disk because the frontend read them slower than they came"
);

/// Counts a result partition handed over as it was made: its rows, and the
/// bytes that waited on disk for the reader.
pub(crate) fn count_live_result(rows: u64, spilled_bytes: u64) {
    LIVE_ROWS.inc_by(rows);
    LIVE_SPILLED_BYTES.inc_by(spilled_bytes);
}

/// Names one output partition of one task, as a partition location does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OutputKey {
    /// The executor that produced it.
    pub executor_id: String,
    /// Its job.
    pub job_id: String,
    /// Its stage.
    pub stage_id: usize,
    /// The output partition.
    pub partition: usize,
    /// The producing task (Ballista's `file_id`).
    pub file_id: Option<u64>,
}

/// One output partition's rows.
#[derive(Debug)]
pub enum HeldRows {
    /// Batches in memory, counted against the budget.
    Memory {
        /// Their schema (the batches may be none).
        schema: SchemaRef,
        /// The rows.
        batches: Vec<RecordBatch>,
    },
    /// An Arrow IPC stream file under the stage's directory.
    Spilled(PathBuf),
}

/// Bytes counted against a store's budget, given back when dropped.
#[derive(Debug)]
struct Reservation {
    memory: Weak<ShuffleMemory>,
    bytes: u64,
}

impl Reservation {
    /// Nothing reserved yet in `memory`.
    fn empty(memory: &Arc<ShuffleMemory>) -> Self {
        Self {
            memory: Arc::downgrade(memory),
            bytes: 0,
        }
    }

    /// Adds `bytes` if the budget has room for them.
    fn try_grow(&mut self, bytes: u64) -> bool {
        let grown = self
            .memory
            .upgrade()
            .is_some_and(|memory| memory.try_reserve(bytes));
        if grown {
            self.bytes += bytes;
        }
        grown
    }

    /// Gives every byte back.
    fn free(&mut self) {
        if let Some(memory) = self.memory.upgrade() {
            memory.release(self.bytes);
        }
        self.bytes = 0;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.free();
        }
    }
}

/// An output partition held by [`ShuffleMemory`]; its bytes are given back
/// when the last reader is done with it after it was dropped from the store.
#[derive(Debug)]
pub struct HeldOutput {
    /// The rows.
    pub rows: HeldRows,
    /// Bytes counted against the budget (none when spilled).
    reservation: Reservation,
    /// The stage's directory in the producer's work dir: the output is
    /// dropped once it is gone.
    stage_dir: PathBuf,
}

impl HeldOutput {
    /// Bytes it holds against the budget (0 when spilled).
    pub fn bytes(&self) -> u64 {
        self.reservation.bytes
    }
}

/// The shuffle outputs held by the executors of one process, within one
/// byte budget.
#[derive(Debug)]
pub struct ShuffleMemory {
    budget: u64,
    held: AtomicU64,
    outputs: Mutex<HashMap<OutputKey, Arc<HeldOutput>>>,
    sweeping: AtomicBool,
}

impl ShuffleMemory {
    /// A store holding up to `budget` bytes (0: every output is spilled).
    pub fn new(budget: u64) -> Arc<Self> {
        // Served from the start, at zero.
        LazyLock::force(&HELD_BYTES);
        LazyLock::force(&SPILLED_BYTES);
        LazyLock::force(&LIVE_ROWS);
        LazyLock::force(&LIVE_SPILLED_BYTES);
        Arc::new(Self {
            budget,
            held: AtomicU64::new(0),
            outputs: Mutex::new(HashMap::new()),
            sweeping: AtomicBool::new(false),
        })
    }

    /// The default budget: an eighth of the host's memory (the executors'
    /// memory pools take 70%, the frontend's a tenth).
    pub fn default_budget() -> u64 {
        let mut system = sysinfo::System::new();
        system.refresh_memory();
        system.total_memory() / 8
    }

    /// Counts `bytes` against the budget if they fit.
    fn try_reserve(&self, bytes: u64) -> bool {
        let reserved = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                let total = held.checked_add(bytes)?;
                (total <= self.budget).then_some(total)
            })
            .is_ok();
        if reserved {
            HELD_BYTES.add(bytes as i64);
        }
        reserved
    }

    /// Gives back `bytes` counted by [`Self::try_reserve`].
    fn release(&self, bytes: u64) {
        self.held.fetch_sub(bytes, Ordering::AcqRel);
        HELD_BYTES.sub(bytes as i64);
    }

    /// Records that `bytes` were spilled to disk.
    fn count_spill(bytes: u64) {
        SPILLED_BYTES.inc_by(bytes);
    }

    /// Keeps `output` under `key` (replacing the output of an earlier run
    /// of the same task, if any).
    fn insert(&self, key: OutputKey, output: HeldOutput) {
        let replaced = self.lock().insert(key, Arc::new(output));
        drop(replaced);
    }

    /// The output held under `key`, if any.
    pub fn get(&self, key: &OutputKey) -> Option<Arc<HeldOutput>> {
        self.lock().get(key).cloned()
    }

    /// Drops the outputs whose stage directory no longer exists.
    pub fn sweep(&self) {
        let mut gone: HashMap<PathBuf, bool> = HashMap::new();
        let mut dropped = Vec::new();
        self.lock().retain(|_, output| {
            let removed = *gone
                .entry(output.stage_dir.clone())
                .or_insert_with(|| !output.stage_dir.exists());
            if removed {
                dropped.push(Arc::clone(output));
            }
            !removed
        });
        // Their bytes are given back here, outside the lock (or by the last
        // reader still streaming one).
        drop(dropped);
    }

    /// Starts the sweeper (once per store; it stops when the store is
    /// dropped). Needs a tokio runtime.
    pub fn start_sweeper(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let store: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(SWEEP_INTERVAL);
            loop {
                ticks.tick().await;
                match store.upgrade() {
                    Some(store) => store.sweep(),
                    None => return,
                }
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<OutputKey, Arc<HeldOutput>>> {
        self.outputs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for ShuffleMemory {
    fn drop(&mut self) {
        HELD_BYTES.sub(*self.held.get_mut() as i64);
    }
}
