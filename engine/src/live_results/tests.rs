//! The hand-over rules: every row read once, across queue and file; a
//! partition opened again after rows were read fails the query; a broken
//! stream holds rows back until the job ends; syncs follow what came before.

use std::time::Duration;

use datafusion::arrow::array::{Array, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use super::*;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]))
}

fn batch(range: std::ops::Range<i64>) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![Arc::new(Int64Array::from_iter_values(range))],
    )
    .expect("batch")
}

fn values(batch: &RecordBatch) -> Vec<i64> {
    let column = batch.column(0).as_any().downcast_ref::<Int64Array>();
    column.expect("int64").values().to_vec()
}

/// A reader of a new result and a directory for its spill files.
fn new_reader() -> (LiveReader, String, tempfile::TempDir) {
    let key = new_result_key();
    (
        LiveReader::new(&key),
        key,
        tempfile::tempdir().expect("dir"),
    )
}

fn spill(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

#[tokio::test]
async fn every_row_is_read_once_from_the_queue_and_then_the_file() {
    let (mut reader, key, dir) = new_reader();
    assert!(read_here(&key));
    let job = job(&key);
    let mut first = job.open_partition(0, schema(), spill(&dir, "p0"));
    let mut second = job.open_partition(1, schema(), spill(&dir, "p1"));
    // 64 batches of 64k rows are far more than a queue holds: most go to the
    // file, which the reader follows.
    for n in 0..64 {
        first
            .push(batch(n * 65_536..(n + 1) * 65_536))
            .expect("push");
    }
    second.push(batch(-3..0)).expect("push");
    assert!(spill(&dir, "p0").exists(), "the full queue spilled");
    first.finish().expect("finish");
    second.finish().expect("finish");
    let mut seen = Vec::new();
    while let Some(batch) = reader.next_after_end().await.expect("read") {
        seen.extend(values(&batch));
    }
    seen.sort_unstable();
    assert_eq!(seen, (-3..64 * 65_536).collect::<Vec<_>>());
    drop(job);
    drop(reader);
    assert!(!read_here(&key), "the reader's registration goes with it");
    assert!(!spill(&dir, "p0").exists(), "the file goes once read");
}

#[tokio::test]
async fn a_partition_opened_again_after_rows_were_read_fails_the_query() {
    let (mut reader, key, dir) = new_reader();
    let job = job(&key);
    let mut attempt = job.open_partition(0, schema(), spill(&dir, "a"));
    attempt.push(batch(0..10)).expect("push");
    assert_eq!(
        values(&reader.next_batch().await.expect("rows")),
        (0..10).collect::<Vec<_>>()
    );
    // The task runs again (its executor was lost): its rows would come twice.
    let _again = job.open_partition(0, schema(), spill(&dir, "b"));
    let error = reader
        .next_batch()
        .await
        .expect_err("restarted")
        .to_string();
    assert!(error.contains(ROWS_ALREADY_SENT), "{error}");
}

#[tokio::test]
async fn an_attempt_that_failed_before_its_rows_were_read_is_replaced() {
    let (mut reader, key, dir) = new_reader();
    let job = job(&key);
    let mut failed = job.open_partition(0, schema(), spill(&dir, "a"));
    failed.push(batch(0..5)).expect("push");
    drop(failed);
    let mut again = job.open_partition(0, schema(), spill(&dir, "b"));
    again.push(batch(100..103)).expect("push");
    again.finish().expect("finish");
    let mut seen = Vec::new();
    while let Some(batch) = reader.next_after_end().await.expect("read") {
        seen.extend(values(&batch));
    }
    assert_eq!(seen, vec![100, 101, 102], "only the attempt that finished");
}

#[tokio::test]
async fn a_lost_partition_no_attempt_replaced_fails_at_the_end() {
    let (mut reader, key, dir) = new_reader();
    let job = job(&key);
    let mut failed = job.open_partition(0, schema(), spill(&dir, "a"));
    failed.push(batch(0..5)).expect("push");
    drop(failed);
    let error = reader.next_after_end().await.expect_err("lost");
    assert!(error.to_string().contains("lost"), "{error}");
}

#[tokio::test]
async fn a_broken_stream_holds_rows_back_until_rows_have_left() {
    let (mut reader, key, dir) = new_reader();
    let job = job(&key);
    let mut writer = job.open_partition(0, schema(), spill(&dir, "a"));
    writer.push(batch(0..3)).expect("push");
    job.break_off("executor gone");
    assert!(reader.broken().is_some());
    let held = tokio::time::timeout(Duration::from_millis(200), reader.next_batch()).await;
    assert!(held.is_err(), "no row leaves a job that lost an executor");
    assert!(!reader.rows_read(), "so the job can start over");

    // Once rows have left, the same break fails the query.
    let (mut reader, key, dir) = new_reader();
    let job = super::job(&key);
    let mut writer = job.open_partition(0, schema(), spill(&dir, "a"));
    writer.push(batch(0..3)).expect("push");
    writer.push(batch(3..6)).expect("push");
    reader.next_batch().await.expect("first rows");
    job.break_off("executor gone");
    let error = reader.next_batch().await.expect_err("broken").to_string();
    assert!(error.contains("executor gone"), "{error}");
}

#[tokio::test]
async fn a_sync_comes_after_everything_handed_over_before_it() {
    let (mut reader, key, dir) = new_reader();
    let job = job(&key);
    let mut writer = job.open_partition(2, schema(), spill(&dir, "a"));
    writer.push(batch(0..4)).expect("push");
    writer.finish().expect("finish");
    assert_eq!(request_sync(&key), Some(1));
    let mut items = Vec::new();
    loop {
        let item = reader.next_item().await.expect("item");
        let synced = matches!(item, LiveItem::Synced(1));
        items.push(item);
        if synced {
            break;
        }
    }
    assert!(matches!(
        &items[..],
        [
            LiveItem::Batch { partition: 2, .. },
            LiveItem::Finished { partition: 2, .. },
            LiveItem::Synced(1)
        ]
    ));
    assert_eq!(request_sync("nobody/reads-this"), None);
    // One reader per result in a process.
    assert!(LiveReader::first(&key, QUEUE_BYTES).is_none());
}
