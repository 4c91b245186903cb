//! Compact string and binary views before a batch leaves its task.
//!
//! A `Utf8View`/`BinaryView` column refers to its strings in shared data
//! buffers. Operators that pick a few rows out of many (a join, a filter, a
//! TopK sort) keep those buffers whole, and Arrow IPC writes every buffer a
//! column refers to. TPC-H q10's 20 result rows carried most of `customer`'s
//! comment and address bytes into the result file the frontend fetches, so the
//! job finished in 0.17 s and its 20 rows took another 0.2-0.6 s to arrive.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, GenericByteViewArray, RecordBatch};
use datafusion::arrow::datatypes::{BinaryViewType, ByteViewType, DataType, StringViewType};
use datafusion::error::Result;

/// Data buffer bytes a view column may hold beyond twice what its rows use
/// before it is copied into tight buffers.
const SLACK_BYTES: usize = 64 * 1024;

/// `batch` with every view column whose data buffers are mostly unused copied
/// into buffers holding only its own strings; other columns are shared.
pub fn compact_views(batch: RecordBatch) -> Result<RecordBatch> {
    let mut columns: Option<Vec<ArrayRef>> = None;
    for (i, column) in batch.columns().iter().enumerate() {
        if let Some(tight) = compact_column(column) {
            columns.get_or_insert_with(|| batch.columns().to_vec())[i] = tight;
        }
    }
    match columns {
        Some(columns) => Ok(RecordBatch::try_new(batch.schema(), columns)?),
        None => Ok(batch),
    }
}

/// A tight copy of `column` when it is a view column with mostly unused data
/// buffers.
fn compact_column(column: &ArrayRef) -> Option<ArrayRef> {
    match column.data_type() {
        DataType::Utf8View => compact::<StringViewType>(column),
        DataType::BinaryView => compact::<BinaryViewType>(column),
        _ => None,
    }
}

fn compact<T: ByteViewType + ?Sized>(column: &ArrayRef) -> Option<ArrayRef> {
    let views = column.as_any().downcast_ref::<GenericByteViewArray<T>>()?;
    let held: usize = views.data_buffers().iter().map(|buffer| buffer.len()).sum();
    let used = views.total_buffer_bytes_used();
    (held > used.saturating_mul(2).saturating_add(SLACK_BYTES))
        .then(|| Arc::new(views.gc()) as ArrayRef)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, StringViewArray};
    use datafusion::arrow::compute::take;
    use datafusion::arrow::datatypes::{Field, Schema};

    fn held(batch: &RecordBatch, column: usize) -> usize {
        batch
            .column(column)
            .as_any()
            .downcast_ref::<StringViewArray>()
            .unwrap()
            .data_buffers()
            .iter()
            .map(|b| b.len())
            .sum()
    }

    #[test]
    fn few_rows_of_many_get_their_own_buffers() {
        let long: Vec<String> = (0..10_000)
            .map(|i| format!("a comment long enough to live in a data buffer, row {i}"))
            .collect();
        let strings = StringViewArray::from_iter_values(long.iter());
        let picked = take(&strings, &Int32Array::from(vec![3, 9_999]), None).unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new(
            "c",
            DataType::Utf8View,
            false,
        )]));
        let batch = RecordBatch::try_new(schema, vec![picked]).unwrap();
        assert!(held(&batch, 0) > 500_000);

        let tight = compact_views(batch.clone()).unwrap();
        assert!(held(&tight, 0) < 200, "{}", held(&tight, 0));
        assert_eq!(tight, batch);
    }

    #[test]
    fn dense_columns_are_shared() {
        let strings = StringViewArray::from_iter_values(
            (0..1000).map(|i| format!("a string longer than twelve bytes {i}")),
        );
        let schema = Arc::new(Schema::new(vec![Field::new(
            "c",
            DataType::Utf8View,
            false,
        )]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(strings) as ArrayRef]).unwrap();
        let same = compact_views(batch.clone()).unwrap();
        assert!(Arc::ptr_eq(batch.column(0), same.column(0)));
    }
}
