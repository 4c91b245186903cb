//! The query history file, `<data-dir>/queries.jsonl`: each ended query is
//! appended by a writer thread of its own, so that a query's end costs its
//! connection no file I/O, and the file is rewritten with the newest records
//! once it holds twice the log's capacity.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::{QueryRecord, StoredQuery};
use crate::error::{FrontendError, Result};
use crate::json_lines::{self, JsonLines};

/// How long the writer waits after each batch: a query's record reaches the
/// file within about this long, and at thousands of queries a second the
/// writer wakes a few hundred times rather than once per query (which cost
/// 5% of a small query's CPU).
const BATCH_PAUSE: Duration = Duration::from_millis(2);

/// What the writer thread is sent.
enum Message {
    /// A query that ended, to append.
    Ended(Arc<QueryRecord>),
    /// Answer once everything sent before is written.
    Flush(Sender<()>),
}

/// The history file of one frontend. Dropping it writes what was sent and
/// stops the writer.
#[derive(Debug)]
pub(super) struct QueryHistory {
    sender: Option<Sender<Message>>,
    writer: Option<JoinHandle<()>>,
}

impl QueryHistory {
    /// Opens the history in `file`, keeping its newest `capacity` records,
    /// which it returns, oldest first.
    pub(super) fn open(file: JsonLines, capacity: usize) -> Result<(Self, Vec<StoredQuery>)> {
        let mut queries: Vec<StoredQuery> = file.read()?;
        queries.drain(..queries.len().saturating_sub(capacity));
        let newest: VecDeque<String> = queries.iter().map(json_lines::encode).collect();
        file.rewrite_lines(newest.iter())?;
        let writer = Writer {
            lines: newest.len(),
            file,
            newest,
            capacity,
            appending: None,
        };
        let (sender, receiver) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("sluice-query-history".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| FrontendError::io("starting the query history's writer", e))?;
        let history = Self {
            sender: Some(sender),
            writer: Some(writer),
        };
        Ok((history, queries))
    }

    /// Appends `record`, an ended query, soon (not synced: a crash may lose
    /// the last few).
    pub(super) fn append(&self, record: Arc<QueryRecord>) {
        if let Some(sender) = &self.sender {
            // Fails only once the writer has stopped, which it does when
            // this is dropped.
            let _ = sender.send(Message::Ended(record));
        }
    }

    /// Waits until every query appended before is written to the file.
    pub(super) fn flush(&self) {
        let (done, written) = mpsc::channel();
        if let Some(sender) = &self.sender {
            if sender.send(Message::Flush(done)).is_ok() {
                let _ = written.recv();
            }
        }
    }
}

impl Drop for QueryHistory {
    fn drop(&mut self) {
        drop(self.sender.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The writer thread's state.
struct Writer {
    file: JsonLines,
    /// The newest `capacity` records, encoded: what a rewrite keeps.
    newest: VecDeque<String>,
    /// Records in the file; past twice the capacity it is rewritten.
    lines: usize,
    capacity: usize,
    /// The file, open for appending since it was last rewritten.
    appending: Option<std::fs::File>,
}

impl Writer {
    /// Writes what comes, a batch at a time, until every sender is gone.
    fn run(mut self, receiver: Receiver<Message>) {
        while let Ok(first) = receiver.recv() {
            let mut batch = String::new();
            let mut flushed = Vec::new();
            for message in std::iter::once(first).chain(receiver.try_iter()) {
                match message {
                    Message::Ended(record) => {
                        let line = json_lines::encode(&record.stored());
                        batch.push_str(&line);
                        batch.push('\n');
                        self.keep(line);
                    }
                    Message::Flush(done) => flushed.push(done),
                }
            }
            self.write(&batch);
            for done in flushed {
                let _ = done.send(());
            }
            // Queries that end meanwhile wait in the channel for the next
            // batch, without waking this thread one by one.
            std::thread::sleep(BATCH_PAUSE);
        }
    }

    fn keep(&mut self, line: String) {
        self.newest.push_back(line);
        while self.newest.len() > self.capacity {
            self.newest.pop_front();
        }
        self.lines += 1;
    }

    /// Appends `batch` (whole lines), then rewrites the file if it grew past
    /// twice the capacity.
    fn write(&mut self, batch: &str) {
        if !batch.is_empty() {
            if let Err(e) = self.append(batch) {
                tracing::warn!("cannot record queries in the history: {e}");
            }
        }
        if self.lines > 2 * self.capacity.max(1) {
            self.appending = None;
            match self.file.rewrite_lines(self.newest.iter()) {
                Ok(()) => self.lines = self.newest.len(),
                Err(e) => tracing::warn!("cannot compact the query history: {e}"),
            }
        }
    }

    fn append(&mut self, batch: &str) -> Result<()> {
        let mut file = match self.appending.take() {
            Some(file) => file,
            None => self.file.open_to_append()?,
        };
        file.write_all(batch.as_bytes())
            .map_err(|e| FrontendError::io(format!("writing {}", self.file.path().display()), e))?;
        // Kept open only while it takes writes.
        self.appending = Some(file);
        Ok(())
    }
}
