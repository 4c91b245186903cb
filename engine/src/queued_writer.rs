//! A task that writes the batches handed to it through a short queue, so
//! that the next rows are read while it writes and the reader never gets far
//! ahead: what [`crate::segment_sink`] and [`crate::directory_sink`] write
//! with.

use std::future::Future;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Batches waiting for the writer: the reader stays at most this far ahead.
const QUEUED_BATCHES: usize = 4;

/// The queue into a writing task, and the task (which answers with the rows
/// it wrote).
pub struct QueuedWriter {
    batches: Option<mpsc::Sender<RecordBatch>>,
    writer: Option<JoinHandle<Result<u64>>>,
}

impl QueuedWriter {
    /// Spawns `write`, given the receiving end of the queue.
    pub fn spawn<F>(write: impl FnOnce(mpsc::Receiver<RecordBatch>) -> F) -> Self
    where
        F: Future<Output = Result<u64>> + Send + 'static,
    {
        let (sender, receiver) = mpsc::channel(QUEUED_BATCHES);
        Self {
            batches: Some(sender),
            writer: Some(tokio::spawn(write(receiver))),
        }
    }

    /// Hands `batch` to the writer (waiting while it is busy).
    pub async fn send(&mut self, batch: RecordBatch) -> Result<()> {
        let Some(batches) = &self.batches else {
            return Err(DataFusionError::Internal(
                "the table writer is closed".into(),
            ));
        };
        if batches.send(batch).await.is_err() {
            // The writer stopped: its error says why.
            self.batches = None;
            return Err(match self.finish().await {
                Err(e) => e,
                Ok(_) => DataFusionError::Internal("the table writer stopped early".into()),
            });
        }
        Ok(())
    }

    /// Closes the queue and returns what the writer answered (once).
    pub async fn finish(&mut self) -> Result<u64> {
        self.batches = None;
        match self.writer.take() {
            Some(writer) => writer
                .await
                .unwrap_or_else(|e| Err(DataFusionError::External(Box::new(e)))),
            None => Err(DataFusionError::Internal("the table writer is gone".into())),
        }
    }

    /// Stops the writer where it is.
    pub fn abort(&mut self) {
        if let Some(writer) = self.writer.take() {
            writer.abort();
        }
    }
}
