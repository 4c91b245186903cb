//! `sluice.job_runs`: every recorded attempt of every job, oldest first.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::error::Result;
use sluice_engine::system::SystemTable;

use super::Jobs;

/// `sluice.job_runs` over the server's jobs (empty without `--jobs`).
#[derive(Debug)]
pub struct JobRunsTable {
    jobs: Arc<OnceLock<Arc<Jobs>>>,
    schema: SchemaRef,
}

impl JobRunsTable {
    /// The table over the jobs `jobs` will hold.
    pub fn new(jobs: Arc<OnceLock<Arc<Jobs>>>) -> Self {
        let timestamp = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let schema = Arc::new(Schema::new(vec![
            Field::new("job", DataType::Utf8, false),
            Field::new("run_id", DataType::Utf8, false),
            Field::new("scheduled_for", timestamp(), false),
            Field::new("started_at", timestamp(), false),
            Field::new("finished_at", timestamp(), true),
            Field::new("state", DataType::Utf8, false),
            Field::new("attempt", DataType::Int32, false),
            Field::new("rows_written", DataType::Int64, true),
            Field::new("error", DataType::Utf8, true),
            Field::new("trigger", DataType::Utf8, false),
        ]));
        Self { jobs, schema }
    }
}

#[async_trait]
impl SystemTable for JobRunsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn snapshot(&self, _session: &dyn Session) -> Result<RecordBatch> {
        let runs = self.jobs.get().map(|jobs| jobs.runs()).unwrap_or_default();
        let time = |values: Vec<Option<i64>>| {
            Arc::new(TimestampMicrosecondArray::from(values).with_timezone("UTC")) as ArrayRef
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(runs.iter().map(|r| &r.job))),
            Arc::new(StringArray::from_iter_values(
                runs.iter().map(|r| &r.run_id),
            )),
            time(runs.iter().map(|r| Some(r.scheduled_for)).collect()),
            time(runs.iter().map(|r| Some(r.started_at)).collect()),
            time(runs.iter().map(|r| r.finished_at).collect()),
            Arc::new(StringArray::from_iter_values(
                runs.iter().map(|r| r.state.name()),
            )),
            Arc::new(Int32Array::from_iter_values(
                runs.iter().map(|r| r.attempt as i32),
            )),
            Arc::new(Int64Array::from_iter(
                runs.iter().map(|r| r.rows_written.map(|n| n as i64)),
            )),
            Arc::new(StringArray::from_iter(
                runs.iter().map(|r| r.error.as_deref()),
            )),
            Arc::new(StringArray::from_iter_values(
                runs.iter().map(|r| &r.trigger),
            )),
        ];
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}
