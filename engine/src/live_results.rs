//! A job's result rows handed from its final stage to the frontend of the
//! same process while the job runs.
//!
//! Ballista reports a job's result locations only when the whole job has
//! finished, and the frontend then fetches them over Arrow Flight: the first
//! row of `SELECT * FROM lineitem` waited for every row to be scanned and
//! held. When the frontend and the executor running a final-stage task are
//! one process (`sluice serve`), the task instead hands its batches to the
//! frontend through this process-wide registry as it makes them:
//!
//! - The frontend gives each job it submits a [`new_result_key`]
//!   (`sluice.result_key`: this process's mark and the attempt's own id);
//!   the scheduler wraps the job's plan in a
//!   [`crate::live_result::LiveResultExec`] carrying it, which ends up at
//!   the root of the final stage.
//! - An executor of the marked process ([`made_here`]) runs such a task
//!   through a
//!   [`LiveWriter`] per output partition: batches queue in memory up to
//!   [`QUEUE_BYTES`] per partition, and once a slow reader lets the queue
//!   fill, the rest is appended to an Arrow IPC stream file in the stage's
//!   directory. The task never waits for the client, so it ends and frees
//!   its slot as it would have, and memory stays bounded.
//! - The frontend reads with a [`LiveReader`]: queued batches, then the
//!   file as it grows, from whichever partition has rows.
//!
//! **Rows that leave before the job ends.** A job that lost work (an
//! executor died, a task was run again) cannot hand out rows twice: when a
//! result partition is opened again after rows of the job were read, or
//! Ballista reports that the job recomputed lost output, the query fails
//! with [`ROWS_ALREADY_SENT`] (SQLSTATE 40001) instead of restarting. A job
//! whose rows have not started to leave is still submitted again
//! ([`crate::recovery`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Weak};

use crate::sqlstate::{PgError, SqlState};
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamDecoder;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use tokio::sync::watch;

/// Bytes of batches one result partition keeps in memory for its reader;
/// beyond them its task appends batches to a file.
pub const QUEUE_BYTES: usize = 1024 * 1024;

/// Bytes of a partition's file read at a time.
const READ_BYTES: u64 = 1024 * 1024;

/// The start of the error of a query that lost work after rows had left
/// (mapped to SQLSTATE 40001: the client may run it again).
pub const ROWS_ALREADY_SENT: &str = "could not complete the query after sending rows";

/// This process's mark on the jobs its frontend submits.
fn process_mark() -> &'static str {
    static MARK: LazyLock<String> = LazyLock::new(|| uuid::Uuid::new_v4().to_string());
    &MARK
}

/// A key for the result of one job this process's frontend submits: the
/// process's mark, then the job's own id.
pub fn new_result_key() -> String {
    format!("{}/{}", process_mark(), uuid::Uuid::new_v4())
}

/// Whether the frontend of this process made result key `key` (and reads
/// the result it names).
pub fn made_here(key: &str) -> bool {
    key.split_once('/')
        .is_some_and(|(mark, _)| mark == process_mark())
}

/// The result named `key`, for a task to hand its rows over to. Its reader
/// registered it before the job was submitted; when the reader has gone (the
/// client left, the query failed), the task gets a result nobody reads,
/// which drops what it is given.
pub fn job(key: &str) -> Arc<LiveJob> {
    lock(&JOBS)
        .get(key)
        .and_then(Weak::upgrade)
        .unwrap_or_else(|| LiveJob::new(true, 0))
}

/// Whether a reader in this process reads the result named `key` (the
/// frontend that made it, or an executor's Flight service forwarding it to
/// a frontend in another process).
pub fn read_here(key: &str) -> bool {
    lock(&JOBS)
        .get(key)
        .is_some_and(|job| job.strong_count() > 0)
}

/// Asks the reader of the result named `key` in this process to report,
/// once it has passed on everything handed over so far, that it has
/// ([`LiveItem::Synced`]); the number it will report, `None` when nobody
/// reads the result here.
pub fn request_sync(key: &str) -> Option<u64> {
    let job = lock(&JOBS).get(key).and_then(Weak::upgrade)?;
    let requested = {
        let mut state = lock(&job.state);
        state.sync_requested += 1;
        state.sync_requested
    };
    job.changed();
    Some(requested)
}

/// The results being read in this process, by key; each is held by its
/// reader and the tasks writing it.
static JOBS: LazyLock<Mutex<HashMap<String, Weak<LiveJob>>>> = LazyLock::new(Mutex::default);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The error of a query whose rows had started to leave when `reason`.
pub fn rows_already_sent(reason: &str) -> DataFusionError {
    PgError::new(
        SqlState::SERIALIZATION_FAILURE,
        format!("{ROWS_ALREADY_SENT}: {reason}; rows cannot be sent twice, so run the query again"),
    )
    .into_datafusion()
}

/// One job's result partitions.
#[derive(Debug)]
pub struct LiveJob {
    state: Mutex<JobState>,
    /// Bumped at every change, for the reader to wait on.
    changes: watch::Sender<u64>,
    /// Nobody reads it: what tasks hand over is dropped.
    unread: bool,
    /// Bytes of batches each partition queues before its writer spills
    /// (or, from another process, waits).
    queue_bytes: usize,
}

#[derive(Debug, Default)]
struct JobState {
    partitions: BTreeMap<usize, Arc<LivePartition>>,
    /// Partitions opened so far: the next one's attempt number.
    opened: u64,
    /// The reader has taken rows.
    rows_read: bool,
    /// A partition was opened again after rows were read.
    restarted: bool,
    /// Rows handed over in another process could not all be received: why.
    broken: Option<String>,
    /// Syncs asked for ([`request_sync`]).
    sync_requested: u64,
}

impl LiveJob {
    fn new(unread: bool, queue_bytes: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::default(),
            changes: watch::Sender::new(0),
            unread,
            queue_bytes,
        })
    }

    /// A writer for output `partition` of the final stage, spilling to
    /// `spill_path`; it replaces an earlier attempt's partition.
    pub fn open_partition(
        self: &Arc<Self>,
        partition: usize,
        schema: SchemaRef,
        spill_path: PathBuf,
    ) -> LiveWriter {
        let opened = {
            let mut state = lock(&self.state);
            if state.partitions.contains_key(&partition) && state.rows_read {
                state.restarted = true;
            }
            state.opened += 1;
            let opened = Arc::new(LivePartition {
                attempt: state.opened,
                state: Mutex::new(PartitionState {
                    spill_path,
                    ..PartitionState::default()
                }),
                room: tokio::sync::Notify::new(),
            });
            state.partitions.insert(partition, Arc::clone(&opened));
            opened
        };
        self.changed();
        LiveWriter {
            job: Arc::clone(self),
            partition: opened,
            schema,
            spill: None,
            finished: false,
        }
    }

    fn changed(&self) {
        self.changes.send_modify(|version| *version += 1);
    }

    /// Notes that rows handed over in another process for this result could
    /// not all be received (a Flight stream from an executor broke): its
    /// reader fails with [`ROWS_ALREADY_SENT`] when rows had left, else
    /// holds the rest until the job ends, and the job counts as having lost
    /// work (it starts over when no row had left).
    pub fn break_off(&self, reason: &str) {
        lock(&self.state)
            .broken
            .get_or_insert_with(|| reason.to_string());
        self.changed();
    }
}

/// One output partition of the final stage.
#[derive(Debug)]
struct LivePartition {
    /// Which opening of a partition of the job this is (a task run again
    /// opens its partition anew).
    attempt: u64,
    state: Mutex<PartitionState>,
    /// Signalled when the reader takes a batch from the queue.
    room: tokio::sync::Notify,
}

impl Drop for LivePartition {
    /// Written and read: its file goes.
    fn drop(&mut self) {
        let state = lock(&self.state);
        if state.spilled_bytes > 0 {
            let _ = std::fs::remove_file(&state.spill_path);
        }
    }
}

#[derive(Debug, Default)]
struct PartitionState {
    queue: VecDeque<RecordBatch>,
    queued_bytes: usize,
    /// Once set, every later batch goes to the file.
    spilling: bool,
    spill_path: PathBuf,
    /// Bytes of the file that hold whole messages.
    spilled_bytes: u64,
    finished: bool,
    failed: Option<String>,
}

/// Counts the bytes written through it.
struct Counted<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Hands one output partition of a final-stage task to the frontend.
pub struct LiveWriter {
    job: Arc<LiveJob>,
    partition: Arc<LivePartition>,
    schema: SchemaRef,
    spill: Option<StreamWriter<Counted<BufWriter<File>>>>,
    finished: bool,
}

impl LiveWriter {
    /// Hands over `batch`: queued while the queue has room, else appended
    /// to the partition's file. Never waits for the reader.
    pub fn push(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 || self.job.unread {
            return Ok(());
        }
        let bytes = batch.get_array_memory_size();
        {
            let mut state = lock(&self.partition.state);
            let room = state.queue.is_empty() || state.queued_bytes + bytes <= self.job.queue_bytes;
            if !state.spilling && room {
                state.queue.push_back(batch);
                state.queued_bytes += bytes;
                drop(state);
                self.job.changed();
                return Ok(());
            }
            state.spilling = true;
        }
        let spilled = self.append(&batch)?;
        lock(&self.partition.state).spilled_bytes = spilled;
        self.job.changed();
        Ok(())
    }

    /// Hands over `batch` once the queue has room for it, waiting for the
    /// reader: for rows that come from another process, whose sender then
    /// waits in turn (and spills there) instead of this process.
    pub async fn push_when_room(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 || self.job.unread {
            return Ok(());
        }
        let bytes = batch.get_array_memory_size();
        loop {
            let room = self.partition.room.notified();
            {
                let mut state = lock(&self.partition.state);
                if state.queue.is_empty() || state.queued_bytes + bytes <= self.job.queue_bytes {
                    state.queue.push_back(batch);
                    state.queued_bytes += bytes;
                    drop(state);
                    self.job.changed();
                    return Ok(());
                }
            }
            room.await;
        }
    }

    /// Appends `batch` to the file and flushes it: the bytes now readable.
    fn append(&mut self, batch: &RecordBatch) -> Result<u64> {
        if self.spill.is_none() {
            let path = lock(&self.partition.state).spill_path.clone();
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| io_error(&path, e))?;
            }
            let file = File::create(&path).map_err(|e| io_error(&path, e))?;
            let counted = Counted {
                inner: BufWriter::new(file),
                bytes: 0,
            };
            self.spill = Some(StreamWriter::try_new(counted, &self.schema)?);
        }
        let spill = self.spill.as_mut().expect("opened above");
        spill.write(batch)?;
        spill.flush()?;
        Ok(spill.get_ref().bytes)
    }

    /// Marks the partition complete; the bytes it appended to its file.
    pub fn finish(mut self) -> Result<u64> {
        let mut spilled = 0;
        if let Some(spill) = self.spill.as_mut() {
            spill.finish()?;
            spilled = spill.get_ref().bytes;
            lock(&self.partition.state).spilled_bytes = spilled;
        }
        self.finished = true;
        lock(&self.partition.state).finished = true;
        self.job.changed();
        Ok(spilled)
    }
}

impl Drop for LiveWriter {
    fn drop(&mut self) {
        if !self.finished {
            lock(&self.partition.state).failed =
                Some("its task ended before its output was complete".into());
            self.job.changed();
        }
    }
}

fn io_error(path: &std::path::Path, e: std::io::Error) -> DataFusionError {
    DataFusionError::Execution(format!("result spill file {}: {e}", path.display()))
}

/// Reads one job's result partitions as their tasks hand them over. It is
/// registered under the result's key while it lives.
pub struct LiveReader {
    key: String,
    job: Arc<LiveJob>,
    changes: watch::Receiver<u64>,
    cursors: BTreeMap<usize, Cursor>,
    /// The last sync reported.
    synced: u64,
}

/// What a reader finds next in a result.
#[derive(Debug)]
pub enum LiveItem {
    /// Rows of output `partition`, opened as `attempt`.
    Batch {
        /// The final stage's output partition.
        partition: usize,
        /// Which opening of the partition the rows belong to.
        attempt: u64,
        /// The rows.
        batch: RecordBatch,
    },
    /// Every row of `partition`'s `attempt` has been read.
    Finished {
        /// The final stage's output partition.
        partition: usize,
        /// Which opening of the partition ended.
        attempt: u64,
    },
    /// `partition`'s `attempt` ended before its output was complete, and
    /// none of its rows had been read: another attempt replaces it.
    Failed {
        /// The final stage's output partition.
        partition: usize,
        /// Which opening of the partition failed.
        attempt: u64,
        /// Why.
        reason: String,
    },
    /// Everything handed over before sync number `n` was asked for
    /// ([`request_sync`]) has been read.
    Synced(u64),
}

/// What one partition has ready.
enum Found {
    Batch(RecordBatch),
    Finished,
    Failed(String),
    Nothing,
}

/// How far one partition has been read.
struct Cursor {
    partition: Arc<LivePartition>,
    /// Rows of this partition were taken.
    read_rows: bool,
    file: Option<File>,
    offset: u64,
    decoder: StreamDecoder,
    decoded: VecDeque<RecordBatch>,
    /// Its end was reported.
    done: bool,
    /// Its failure was reported.
    failed: bool,
}

impl Cursor {
    fn new(partition: Arc<LivePartition>) -> Self {
        Self {
            partition,
            read_rows: false,
            file: None,
            offset: 0,
            decoder: StreamDecoder::new(),
            decoded: VecDeque::new(),
            done: false,
            failed: false,
        }
    }

    /// What the partition has ready; errors when its task failed after
    /// rows of it were read.
    fn next_ready(&mut self) -> Result<Found> {
        if let Some(batch) = self.decoded.pop_front() {
            return Ok(Found::Batch(batch));
        }
        let (spilled, path, finished) = {
            let mut state = lock(&self.partition.state);
            // Rows of an attempt that failed are never read.
            if let Some(failure) = &state.failed {
                if self.read_rows {
                    return Err(rows_already_sent(&format!(
                        "a result partition was lost ({failure})"
                    )));
                }
                if self.failed {
                    return Ok(Found::Nothing);
                }
                // Another attempt of the task will replace it, or the job
                // fails.
                self.failed = true;
                return Ok(Found::Failed(failure.clone()));
            }
            if let Some(batch) = state.queue.pop_front() {
                state.queued_bytes -= batch.get_array_memory_size();
                self.partition.room.notify_one();
                return Ok(Found::Batch(batch));
            }
            (
                state.spilled_bytes,
                state.spill_path.clone(),
                state.finished,
            )
        };
        if spilled > self.offset {
            self.read_spill(&path, spilled)?;
            if let Some(batch) = self.decoded.pop_front() {
                return Ok(Found::Batch(batch));
            }
        }
        if finished && self.offset == spilled {
            self.done = true;
            return Ok(Found::Finished);
        }
        Ok(Found::Nothing)
    }

    /// Decodes the bytes of the file from where reading stopped, up to
    /// `end` and [`READ_BYTES`] at a time, until a batch is whole.
    fn read_spill(&mut self, path: &std::path::Path, end: u64) -> Result<()> {
        while self.decoded.is_empty() && self.offset < end {
            let chunk_end = end.min(self.offset + READ_BYTES);
            self.read_chunk(path, chunk_end)?;
        }
        Ok(())
    }

    /// Decodes the bytes of the file from where reading stopped to `end`.
    fn read_chunk(&mut self, path: &std::path::Path, end: u64) -> Result<()> {
        if self.file.is_none() {
            self.file = Some(File::open(path).map_err(|e| io_error(path, e))?);
        }
        let file = self.file.as_mut().expect("opened above");
        let mut bytes = vec![0; (end - self.offset) as usize];
        file.seek(SeekFrom::Start(self.offset))
            .and_then(|_| file.read_exact(&mut bytes))
            .map_err(|e| io_error(path, e))?;
        self.offset = end;
        let mut buffer = Buffer::from_vec(bytes);
        while !buffer.is_empty() {
            if let Some(batch) = self.decoder.decode(&mut buffer)? {
                self.decoded.push_back(batch);
            }
        }
        Ok(())
    }
}

impl LiveReader {
    /// The reader of the result named `key`, registered for the tasks that
    /// will hand it over (before its job is submitted).
    pub fn new(key: &str) -> Self {
        let job = LiveJob::new(false, QUEUE_BYTES);
        lock(&JOBS).insert(key.to_string(), Arc::downgrade(&job));
        Self::of(key, job)
    }

    /// Like [`LiveReader::new`], its partitions queueing `queue_bytes`
    /// each, but `None` when the result already has a reader in this
    /// process (each task's rows go to one reader).
    pub fn first(key: &str, queue_bytes: usize) -> Option<Self> {
        let job = LiveJob::new(false, queue_bytes);
        {
            let mut jobs = lock(&JOBS);
            if jobs.get(key).is_some_and(|job| job.strong_count() > 0) {
                return None;
            }
            jobs.insert(key.to_string(), Arc::downgrade(&job));
        }
        Some(Self::of(key, job))
    }

    fn of(key: &str, job: Arc<LiveJob>) -> Self {
        let changes = job.changes.subscribe();
        Self {
            key: key.to_string(),
            job,
            changes,
            cursors: BTreeMap::new(),
            synced: 0,
        }
    }

    /// The result this reader reads, for rows handed over in another
    /// process to be written into.
    pub fn job(&self) -> Arc<LiveJob> {
        Arc::clone(&self.job)
    }

    /// Whether rows of the job have been taken.
    pub fn rows_read(&self) -> bool {
        lock(&self.job.state).rows_read
    }

    /// Whether any task has handed over a partition.
    pub fn any_partition(&self) -> bool {
        !lock(&self.job.state).partitions.is_empty()
    }

    /// Why rows handed over in another process could not all be received,
    /// if they could not ([`LiveJob::break_off`]).
    pub fn broken(&self) -> Option<String> {
        lock(&self.job.state).broken.clone()
    }

    /// The next item ready in any partition, without waiting.
    fn next_ready(&mut self) -> Result<Option<LiveItem>> {
        let (partitions, sync_requested) = {
            let state = lock(&self.job.state);
            if state.restarted {
                return Err(rows_already_sent("a task of its final stage was run again"));
            }
            if let Some(broken) = &state.broken {
                if state.rows_read {
                    return Err(rows_already_sent(broken));
                }
                // The job lost an executor before any row left: its rows
                // are held until it ends, so that it can still start over.
                return Ok(None);
            }
            (state.partitions.clone(), state.sync_requested)
        };
        for (id, partition) in partitions {
            let cursor = self
                .cursors
                .entry(id)
                .or_insert_with(|| Cursor::new(Arc::clone(&partition)));
            if !Arc::ptr_eq(&cursor.partition, &partition) {
                // A new attempt of the task; nothing of the old one was read
                // (else the job is marked restarted).
                *cursor = Cursor::new(partition);
            }
            if cursor.done {
                continue;
            }
            let attempt = cursor.partition.attempt;
            match cursor.next_ready()? {
                Found::Batch(batch) => {
                    cursor.read_rows = true;
                    lock(&self.job.state).rows_read = true;
                    return Ok(Some(LiveItem::Batch {
                        partition: id,
                        attempt,
                        batch,
                    }));
                }
                Found::Finished => {
                    return Ok(Some(LiveItem::Finished {
                        partition: id,
                        attempt,
                    }))
                }
                Found::Failed(reason) => {
                    return Ok(Some(LiveItem::Failed {
                        partition: id,
                        attempt,
                        reason,
                    }))
                }
                Found::Nothing => {}
            }
        }
        if sync_requested > self.synced {
            self.synced = sync_requested;
            return Ok(Some(LiveItem::Synced(sync_requested)));
        }
        Ok(None)
    }

    /// The next item, waiting for a task to hand one over (for ever if none
    /// comes: the caller waits for the job's end beside it).
    pub async fn next_item(&mut self) -> Result<LiveItem> {
        loop {
            self.changes.borrow_and_update();
            if let Some(item) = self.next_ready()? {
                return Ok(item);
            }
            if self.changes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// The next batch, waiting for a task to hand one over (for ever if
    /// none comes: the caller waits for the job's end beside it).
    pub async fn next_batch(&mut self) -> Result<RecordBatch> {
        loop {
            if let LiveItem::Batch { batch, .. } = self.next_item().await? {
                return Ok(batch);
            }
        }
    }

    /// Once the job has finished: the next batch of what is left, `None`
    /// when every partition has been read; an error when a partition's
    /// output was lost and no other attempt replaced it.
    pub async fn next_after_end(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            self.changes.borrow_and_update();
            while let Some(item) = self.next_ready()? {
                if let LiveItem::Batch { batch, .. } = item {
                    return Ok(Some(batch));
                }
            }
            let partitions = lock(&self.job.state).partitions.len();
            if self.cursors.len() == partitions && self.cursors.values().all(|c| c.done || c.failed)
            {
                if self.cursors.values().any(|c| !c.done) {
                    return Err(DataFusionError::Execution(
                        "a result partition was lost and not computed again".into(),
                    ));
                }
                return Ok(None);
            }
            if self.changes.changed().await.is_err() {
                return Ok(None);
            }
        }
    }
}

impl Drop for LiveReader {
    /// Forgets the result (read, or no longer wanted) unless another reader
    /// has registered under its key since.
    fn drop(&mut self) {
        let mut jobs = lock(&JOBS);
        let own = jobs
            .get(&self.key)
            .is_some_and(|job| std::ptr::eq(job.as_ptr(), Arc::as_ptr(&self.job)));
        if own {
            jobs.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests;
