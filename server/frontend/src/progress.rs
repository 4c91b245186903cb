//! `SET sluice.progress = on`: while a query's Ballista job runs, the client
//! gets a NOTICE with the job's stage progress every few seconds, the way
//! psql prints notices as they come:
//!
//! ```text
//! NOTICE:  progress: stage 2 of 3 running; stages done 1/3, tasks done 3/6, 100000 rows read, 4.0 s
//! ```
//!
//! A job's rows reach the frontend once the job has finished on the cluster,
//! so the frontend waits for the first row of the result itself, sending
//! notices meanwhile, and then passes the rows on. Notices go out between
//! protocol messages of the statement, before its row description, as
//! PostgreSQL allows.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use datafusion::prelude::SessionContext;
use datafusion_postgres::pgwire::api::results::Response;
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::response::NoticeResponse;
use datafusion_postgres::pgwire::messages::PgWireBackendMessage;
use futures::{SinkExt, StreamExt};
use sluice_engine::options::SluiceOptions;
use sluice_engine::sqlstate::SqlState;
use sluice_scheduler::{ClusterView, RemoteScheduler, StageProgress};

use crate::query_log::QueryRecord;

/// How often a notice is sent while a job runs.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);

/// Whether the session asked for progress notices.
pub fn wanted(context: &SessionContext) -> bool {
    context
        .state_ref()
        .read()
        .config()
        .options()
        .extensions
        .get::<SluiceOptions>()
        .is_some_and(|options| options.progress)
}

/// Waits for the first row of `response` (a query's result), sending `client`
/// a progress notice for `query`'s job every [`PROGRESS_INTERVAL`]; returns
/// the response with its rows intact.
pub async fn report<C>(
    client: &mut C,
    scheduler: &RemoteScheduler,
    query: &QueryRecord,
    response: Response,
) -> PgWireResult<Response>
where
    C: futures::Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<C::Error>,
{
    let Response::Query(mut result) = response else {
        return Ok(response);
    };
    let started = Instant::now();
    let mut rows = std::mem::replace(&mut result.data_rows, Box::pin(futures::stream::empty()));
    let first = loop {
        // Dropping `next()` loses no row: the stream keeps it.
        if let Ok(first) = tokio::time::timeout(PROGRESS_INTERVAL, rows.next()).await {
            break first;
        }
        if let Some(message) = message(scheduler, query, started.elapsed()).await {
            let notice = ErrorInfo::new(
                "NOTICE".into(),
                SqlState::SUCCESSFUL_COMPLETION.to_string(),
                message,
            );
            client
                .send(PgWireBackendMessage::NoticeResponse(NoticeResponse::from(
                    notice,
                )))
                .await?;
        }
    };
    result.data_rows = Box::pin(futures::stream::iter(first).chain(rows));
    Ok(Response::Query(result))
}

/// The progress line of `query`'s latest job, once the scheduler has it.
async fn message(
    scheduler: &RemoteScheduler,
    query: &QueryRecord,
    elapsed: Duration,
) -> Option<String> {
    let jobs = scheduler.jobs().await.ok()?;
    let job = jobs
        .into_iter()
        .filter(|job| job.job_name == query.job_name)
        .max_by(|a, b| a.job_id.cmp(&b.job_id))?;
    let stages = scheduler.job_stages(&job.job_id).await.ok()?;
    Some(describe(&stages, elapsed))
}

/// `stage 2 of 3 running; stages done 1/3, tasks done 3/6, 100000 rows read, 4.0 s`.
fn describe(stages: &[StageProgress], elapsed: Duration) -> String {
    let done = stages.iter().filter(|stage| stage.is_done()).count();
    let running: Vec<String> = stages
        .iter()
        .filter(|stage| stage.status == "Running")
        .map(|stage| stage.stage_id.to_string())
        .collect();
    let tasks: usize = stages.iter().map(|stage| stage.tasks).sum();
    let tasks_done: usize = stages.iter().map(|stage| stage.tasks_done).sum();
    let rows: u64 = stages.iter().map(|stage| stage.input_rows).sum();
    let now = match running.as_slice() {
        [] => "waiting for executors".to_string(),
        [one] => format!("stage {one} of {} running", stages.len()),
        many => format!("stages {} of {} running", many.join(", "), stages.len()),
    };
    format!(
        "progress: {now}; stages done {done}/{}, tasks done {tasks_done}/{tasks}, {rows} rows \
         read, {:.1} s",
        stages.len(),
        elapsed.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_reads_like_a_sentence() {
        let stage = |id, status: &str, tasks, done, rows| StageProgress {
            stage_id: id,
            status: status.into(),
            tasks,
            tasks_done: done,
            input_rows: rows,
            ..StageProgress::default()
        };
        let stages = [
            stage(1, "Successful", 2, 2, 100_000),
            stage(2, "Running", 4, 1, 50_000),
            stage(3, "UnResolved", 0, 0, 0),
        ];
        assert_eq!(
            describe(&stages, Duration::from_millis(4_040)),
            "progress: stage 2 of 3 running; stages done 1/3, tasks done 3/6, 150000 rows \
             read, 4.0 s"
        );
    }
}
