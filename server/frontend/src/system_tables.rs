//! The rows behind `sluice.executors` and `sluice.queries`.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use datafusion::catalog::Session;

use crate::auth::{Principal, Role};
use datafusion::arrow::array::{
    ArrayRef, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use sluice_engine::system::SystemTable;
use sluice_scheduler::{ClusterError, ClusterView, JobSummary};

use crate::query_log::{QueryLog, QueryProgress, QueryRecord, QueryState};

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn micros(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn cluster_error(e: ClusterError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// `sluice.executors`: the executors registered with the scheduler.
#[derive(Debug)]
pub struct ExecutorsTable {
    cluster: Arc<dyn ClusterView>,
    schema: SchemaRef,
}

impl ExecutorsTable {
    /// The table over `cluster`'s executors.
    pub fn new(cluster: Arc<dyn ClusterView>) -> Self {
        let schema = Arc::new(Schema::new(vec![
            Field::new("executor_id", DataType::Utf8, false),
            Field::new("host", DataType::Utf8, false),
            Field::new("flight_port", DataType::Int32, false),
            Field::new("task_slots", DataType::Int32, false),
            Field::new("tasks_completed", DataType::Int64, true),
            Field::new("tasks_running", DataType::Int64, true),
            Field::new("last_seen", timestamp(), true),
        ]));
        Self { cluster, schema }
    }
}

#[async_trait]
impl SystemTable for ExecutorsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn snapshot(&self, _session: &dyn Session) -> Result<RecordBatch> {
        let mut executors = self.cluster.executors().await.map_err(cluster_error)?;
        executors.sort_by(|a, b| a.executor_id.cmp(&b.executor_id));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                executors.iter().map(|e| &e.executor_id),
            )),
            Arc::new(StringArray::from_iter_values(
                executors.iter().map(|e| &e.host),
            )),
            Arc::new(Int32Array::from_iter_values(
                executors.iter().map(|e| i32::from(e.flight_port)),
            )),
            Arc::new(Int32Array::from_iter_values(
                executors.iter().map(|e| e.task_slots as i32),
            )),
            Arc::new(Int64Array::from_iter(
                executors
                    .iter()
                    .map(|e| e.tasks_completed.map(|n| n as i64)),
            )),
            Arc::new(Int64Array::from_iter(
                executors.iter().map(|e| e.tasks_running.map(|n| n as i64)),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter(
                    executors.iter().map(|e| e.last_seen.map(micros)),
                )
                .with_timezone("UTC"),
            ),
        ];
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

/// A query with its progress and the last Ballista job it submitted, as
/// `sluice.queries` and the web UI show it.
#[derive(Debug, Clone)]
pub struct QueryActivity {
    /// The query.
    pub record: Arc<QueryRecord>,
    /// Its progress, with the stage count of its jobs once the scheduler
    /// told it (0 for a query that ended without a job).
    pub progress: QueryProgress,
    /// The last job it submitted, while the scheduler remembers it.
    pub job: Option<JobSummary>,
}

/// `records` with their progress and jobs, from `cluster`.
pub async fn query_activity(
    records: Vec<Arc<QueryRecord>>,
    cluster: &dyn ClusterView,
) -> std::result::Result<Vec<QueryActivity>, ClusterError> {
    // Stage counts come from the scheduler; once found they are kept on the
    // record, since the scheduler forgets finished jobs after a while. A
    // query's jobs (one per attempt) share its name; the last one's status
    // is shown.
    let mut jobs: HashMap<String, (u64, JobSummary)> = HashMap::new();
    for job in cluster.jobs().await? {
        let stages = job.stages as u64;
        match jobs.entry(job.job_name.clone()) {
            Entry::Occupied(mut entry) => {
                let (total, last) = entry.get_mut();
                *total += stages;
                if job.job_id > last.job_id {
                    *last = job;
                }
            }
            Entry::Vacant(entry) => {
                entry.insert((stages, job));
            }
        }
    }
    Ok(records
        .into_iter()
        .map(|record| {
            let job = jobs.get(&record.job_name);
            if let Some((stages, _)) = job {
                record.set_stages(*stages);
            }
            let mut progress = record.progress();
            if progress.stages.is_none() && progress.state != QueryState::Running {
                progress.stages = Some(0);
            }
            QueryActivity {
                job: job.map(|(_, job)| job.clone()),
                progress,
                record,
            }
        })
        .collect())
}

/// `sluice.queries`: this frontend's recent queries.
#[derive(Debug)]
pub struct QueriesTable {
    log: Arc<QueryLog>,
    cluster: Arc<dyn ClusterView>,
    schema: SchemaRef,
}

impl QueriesTable {
    /// The table over `log`, with stage counts from `cluster`'s jobs.
    pub fn new(log: Arc<QueryLog>, cluster: Arc<dyn ClusterView>) -> Self {
        let schema = Arc::new(Schema::new(vec![
            Field::new("query_id", DataType::Int64, false),
            Field::new("user_name", DataType::Utf8, false),
            Field::new("query_text", DataType::Utf8, false),
            Field::new("state", DataType::Utf8, false),
            Field::new("started_at", timestamp(), false),
            Field::new("finished_at", timestamp(), true),
            Field::new("rows", DataType::Int64, false),
            Field::new("stages", DataType::Int64, true),
            Field::new("error", DataType::Utf8, true),
            Field::new("job_status", DataType::Utf8, true),
            Field::new("ran_on", DataType::Utf8, true),
        ]));
        Self {
            log,
            cluster,
            schema,
        }
    }
}

#[async_trait]
impl SystemTable for QueriesTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn snapshot(&self, session: &dyn Session) -> Result<RecordBatch> {
        let mut records = self.log.records();
        // Users see their own queries; admins everyone's.
        if let Some(viewer) = session.config().get_extension::<Principal>() {
            if viewer.role < Role::Admin {
                records.retain(|record| record.user == viewer.user);
            }
        }
        let activity = query_activity(records, self.cluster.as_ref())
            .await
            .map_err(cluster_error)?;
        let records: Vec<_> = activity.iter().map(|a| &a.record).collect();
        let progress: Vec<_> = activity.iter().map(|a| &a.progress).collect();
        let job_status: Vec<Option<String>> = activity
            .iter()
            .map(|a| a.job.as_ref().map(|job| job.status.clone()))
            .collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(
                records.iter().map(|r| r.id as i64),
            )),
            Arc::new(StringArray::from_iter_values(
                records.iter().map(|r| &r.user),
            )),
            Arc::new(StringArray::from_iter_values(
                records.iter().map(|r| &r.text),
            )),
            Arc::new(StringArray::from_iter_values(
                progress.iter().map(|p| p.state.as_str()),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    records.iter().map(|r| micros(r.started_at)),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(
                TimestampMicrosecondArray::from_iter(
                    progress.iter().map(|p| p.finished_at.map(micros)),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(Int64Array::from_iter_values(
                progress.iter().map(|p| p.rows as i64),
            )),
            Arc::new(Int64Array::from_iter(
                progress.iter().map(|p| p.stages.map(|s| s as i64)),
            )),
            Arc::new(StringArray::from_iter(
                progress.iter().map(|p| p.error.clone()),
            )),
            Arc::new(StringArray::from_iter(job_status)),
            Arc::new(StringArray::from_iter(
                records
                    .iter()
                    .map(|r| r.ran_on.get().map(|placement| placement.as_str())),
            )),
        ];
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}
