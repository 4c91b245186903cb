//! The rows a declared cursor has not handed out yet: its query's batch
//! stream and the part of a batch the last `FETCH` left. Rows stay Arrow
//! batches until a `FETCH` takes them, so each `FETCH` encodes them in the
//! formats it was asked for (text for the simple protocol, the portal's
//! formats for the extended one).

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{stream, StreamExt};
use tokio::sync::{Mutex, OwnedMutexGuard};

/// A cursor's position in its query's rows.
pub struct CursorRows {
    batches: SendableRecordBatchStream,
    /// The rows of a batch a `FETCH` did not take.
    held: Option<RecordBatch>,
    /// The error the query failed with, repeated to every later `FETCH`.
    failed: Option<String>,
}

impl fmt::Debug for CursorRows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CursorRows")
            .field("schema", &self.batches.schema())
            .field("held", &self.held.as_ref().map(RecordBatch::num_rows))
            .field("failed", &self.failed)
            .finish()
    }
}

impl CursorRows {
    /// A cursor before the first of `batches`' rows.
    pub fn new(batches: SendableRecordBatchStream) -> Self {
        Self {
            batches,
            held: None,
            failed: None,
        }
    }

    /// The schema of the cursor's rows.
    pub fn schema(&self) -> SchemaRef {
        self.batches.schema()
    }

    /// The next batch of at most `limit` rows (any number when `None`);
    /// `None` once the rows are over.
    async fn next(&mut self, limit: Option<usize>) -> Option<Result<RecordBatch>> {
        if let Some(failed) = &self.failed {
            return Some(Err(DataFusionError::Execution(failed.clone())));
        }
        let batch = loop {
            let batch = match self.held.take() {
                Some(batch) => batch,
                None => match self.batches.next().await? {
                    Ok(batch) => batch,
                    Err(e) => {
                        self.failed = Some(e.to_string());
                        return Some(Err(e));
                    }
                },
            };
            if batch.num_rows() > 0 {
                break batch;
            }
        };
        match limit {
            Some(limit) if limit < batch.num_rows() => {
                self.held = Some(batch.slice(limit, batch.num_rows() - limit));
                Some(Ok(batch.slice(0, limit)))
            }
            _ => Some(Ok(batch)),
        }
    }

    /// The next `count` rows of the cursor `rows` (all the rest when
    /// `None`), as a stream that holds the cursor until it ends or is
    /// dropped: a second `FETCH` waits for the first.
    pub fn fetch(
        rows: Arc<Mutex<Self>>,
        schema: SchemaRef,
        count: Option<usize>,
    ) -> SendableRecordBatchStream {
        struct Fetch {
            rows: Arc<Mutex<CursorRows>>,
            cursor: Option<OwnedMutexGuard<CursorRows>>,
            left: Option<usize>,
        }
        let start = Fetch {
            rows,
            cursor: None,
            left: count,
        };
        let batches = stream::unfold(start, |mut fetch| async move {
            if fetch.left == Some(0) {
                return None;
            }
            let cursor = match fetch.cursor.take() {
                Some(cursor) => cursor,
                None => Arc::clone(&fetch.rows).lock_owned().await,
            };
            let mut cursor = cursor;
            let batch = cursor.next(fetch.left).await?;
            fetch.left = match (&batch, fetch.left) {
                (Ok(batch), Some(left)) => Some(left - batch.num_rows()),
                (Ok(_), None) => None,
                (Err(_), _) => Some(0),
            };
            fetch.cursor = Some(cursor);
            Some((batch, fetch))
        });
        Box::pin(RecordBatchStreamAdapter::new(schema, batches))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use futures::TryStreamExt;

    fn cursor(batches: &[std::ops::Range<i64>]) -> (Arc<Mutex<CursorRows>>, SchemaRef) {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batches: Vec<Result<RecordBatch>> = batches
            .iter()
            .map(|range| {
                Ok(RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![Arc::new(Int64Array::from_iter_values(range.clone()))],
                )?)
            })
            .collect();
        let stream = RecordBatchStreamAdapter::new(Arc::clone(&schema), stream::iter(batches));
        (
            Arc::new(Mutex::new(CursorRows::new(Box::pin(stream)))),
            schema,
        )
    }

    async fn fetch(
        rows: &Arc<Mutex<CursorRows>>,
        schema: &SchemaRef,
        n: Option<usize>,
    ) -> Vec<i64> {
        let batches: Vec<RecordBatch> = CursorRows::fetch(Arc::clone(rows), Arc::clone(schema), n)
            .try_collect()
            .await
            .expect("fetch");
        batches
            .iter()
            .flat_map(|batch| {
                let column = batch.column(0).as_any().downcast_ref::<Int64Array>();
                column.expect("int64").values().to_vec()
            })
            .collect()
    }

    #[tokio::test]
    async fn fetches_take_rows_in_order_across_batches() {
        let (rows, schema) = cursor(&[0..3, 3..3, 3..10]);
        assert_eq!(fetch(&rows, &schema, Some(2)).await, vec![0, 1]);
        assert_eq!(fetch(&rows, &schema, Some(4)).await, vec![2, 3, 4, 5]);
        assert_eq!(fetch(&rows, &schema, None).await, vec![6, 7, 8, 9]);
        assert!(fetch(&rows, &schema, Some(5)).await.is_empty());
        assert!(fetch(&rows, &schema, None).await.is_empty());
    }

    #[tokio::test]
    async fn a_failed_query_fails_every_later_fetch() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let failing = stream::iter(vec![Err(DataFusionError::Execution("boom".into()))]);
        let stream = RecordBatchStreamAdapter::new(Arc::clone(&schema), failing);
        let rows = Arc::new(Mutex::new(CursorRows::new(Box::pin(stream))));
        for _ in 0..2 {
            let result: Result<Vec<RecordBatch>> =
                CursorRows::fetch(Arc::clone(&rows), Arc::clone(&schema), Some(1))
                    .try_collect()
                    .await;
            let error = result.expect_err("the query failed").to_string();
            assert!(error.contains("boom"), "{error}");
        }
    }
}
