//! The web UI on the frontend's HTTP endpoint: `/` shows the executors with
//! their slots and load, the running queries with their progress (stages and
//! tasks done, rows read) and the recent queries; `/query/{id}` shows one
//! query with its job's stage graph and each stage's metrics. The pages
//! refresh themselves every two seconds.
//!
//! It reads what the system tables read: the query log behind
//! `sluice.queries` ([`query_activity`]), the executors behind
//! `sluice.executors`, and the scheduler's stages of each query's job.
//! Anyone who reaches `--http` sees every user's statements (with secrets
//! masked, as in the query log): keep it on loopback or a private network.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use maud::{html, Markup, DOCTYPE};
use sluice_scheduler::{ClusterView, ExecutorInfo, RemoteScheduler, StageProgress};

use sluice_frontend::query_log::{QueryLog, QueryState};
use sluice_frontend::system_tables::{query_activity, QueryActivity};

/// How many ended queries the overview lists.
const RECENT_QUERIES: usize = 100;

/// Where the pages read from.
pub struct WebUi {
    /// The frontend's queries.
    pub log: Arc<QueryLog>,
    /// The cluster's executors and jobs.
    pub cluster: Arc<dyn ClusterView>,
    /// The scheduler's API, for the stages of a job.
    pub scheduler: Arc<RemoteScheduler>,
}

impl WebUi {
    /// The UI's routes.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/", get(overview))
            .route("/query/{id}", get(query_page))
            .with_state(self)
    }

    /// The stages of the last job of `query`, if the scheduler still has it.
    async fn stages(&self, query: &QueryActivity) -> Vec<StageProgress> {
        let Some(job) = &query.job else {
            return Vec::new();
        };
        self.scheduler
            .job_stages(&job.job_id)
            .await
            .inspect_err(|e| tracing::debug!("stages of job {}: {e}", job.job_id))
            .unwrap_or_default()
    }

    async fn activity(&self) -> Result<Vec<QueryActivity>, String> {
        query_activity(self.log.records(), self.cluster.as_ref())
            .await
            .map_err(|e| e.to_string())
    }
}

/// A page with Sluice's header and style, refreshing every two seconds.
fn page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content="2";
                title { (title) }
                style { (STYLE) }
            }
            body {
                header { a href="/" { "Sluice" } " · " (title) }
                (body)
            }
        }
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
    header{font-size:1.3em;margin-bottom:1em}header a{color:#225;text-decoration:none;font-weight:bold}\
    table{border-collapse:collapse;margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:.3em .6em;\
    text-align:left;vertical-align:top;white-space:nowrap}th{background:#f2f2f2}td.num{text-align:right}\
    pre{margin:0;white-space:pre-wrap;max-width:60em}.failed{color:#a00}.error{color:#a00}\
    .bar{display:inline-block;width:8em;height:.8em;background:#eee;margin-right:.4em}\
    .bar span{display:block;height:100%;background:#4a7}";

async fn overview(State(ui): State<Arc<WebUi>>) -> Markup {
    let executors = ui.cluster.executors().await.map_err(|e| e.to_string());
    let activity = ui.activity().await;
    let (mut running, mut ended): (Vec<QueryActivity>, Vec<QueryActivity>) = activity
        .clone()
        .unwrap_or_default()
        .into_iter()
        .partition(|query| query.progress.state == QueryState::Running);
    running.reverse();
    ended.reverse();
    ended.truncate(RECENT_QUERIES);
    let mut progress = HashMap::new();
    for query in &running {
        progress.insert(query.record.id, ui.stages(query).await);
    }
    page(
        "cluster",
        html! {
            h2 { "Executors" }
            @match &executors {
                Ok(executors) => (executor_table(executors)),
                Err(e) => p.error { "The scheduler does not answer: " (e) },
            }
            h2 { "Running queries" }
            @if let Err(e) = &activity { p.error { "The scheduler does not answer: " (e) } }
            @if running.is_empty() {
                p { "None." }
            } @else {
                table {
                    tr { th { "id" } th { "user" } th { "running for" } th { "stages" }
                         th { "tasks" } th { "rows read" } th { "rows sent" } th { "query" } }
                    @for query in &running {
                        @let stages = &progress[&query.record.id];
                        @let done = stages.iter().filter(|s| s.is_done()).count();
                        @let tasks: usize = stages.iter().map(|s| s.tasks).sum();
                        @let tasks_done: usize = stages.iter().map(|s| s.tasks_done).sum();
                        @let rows_read: u64 = stages.iter().map(|s| s.input_rows).sum();
                        tr {
                            td { a href={ "/query/" (query.record.id) } { (query.record.id) } }
                            td { (query.record.user) }
                            td.num { (seconds(since(query.record.started_at))) }
                            td { (bar(done, stages.len())) (done) " / " (stages.len()) }
                            td { (bar(tasks_done, tasks)) (tasks_done) " / " (tasks) }
                            td.num { (rows_read) }
                            td.num { (query.progress.rows) }
                            td { pre { (query.record.text) } }
                        }
                    }
                }
            }
            h2 { "Recent queries" }
            @if ended.is_empty() {
                p { "None yet." }
            } @else {
                table {
                    tr { th { "id" } th { "user" } th { "state" } th { "started" } th { "duration" }
                         th { "rows" } th { "stages" } th { "error" } th { "query" } }
                    @for query in &ended {
                        tr {
                            td { a href={ "/query/" (query.record.id) } { (query.record.id) } }
                            td { (query.record.user) }
                            td class=(query.progress.state.as_str()) { (query.progress.state.as_str()) }
                            td { (clock(query.record.started_at)) }
                            td.num { (seconds(duration(query))) }
                            td.num { (query.progress.rows) }
                            td.num { (query.progress.stages.unwrap_or(0)) }
                            td.error { (query.progress.error.as_deref().unwrap_or("")) }
                            td { pre { (query.record.text) } }
                        }
                    }
                }
            }
        },
    )
}

fn executor_table(executors: &[ExecutorInfo]) -> Markup {
    html! {
        @if executors.is_empty() {
            p.error { "No executor is alive." }
        } @else {
            table {
                tr { th { "executor" } th { "address" } th { "task slots" } th { "running tasks" }
                     th { "load" } th { "tasks completed" } th { "last heartbeat" } }
                @for executor in executors {
                    @let running = executor.tasks_running.map(|running| running as usize);
                    tr {
                        td { (executor.executor_id) }
                        td { (executor.host) ":" (executor.flight_port) }
                        td.num { (executor.task_slots) }
                        td.num { @if let Some(running) = running { (running) } @else { "–" } }
                        td { @if let Some(running) = running {
                            (bar(running, executor.task_slots as usize))
                            (running * 100 / (executor.task_slots as usize).max(1)) "%"
                        } @else { "–" } }
                        td.num { @if let Some(done) = executor.tasks_completed { (done) } @else { "–" } }
                        td { @if let Some(seen) = executor.last_seen { (seconds(since(seen))) " ago" } @else { "–" } }
                    }
                }
            }
        }
    }
}

async fn query_page(
    State(ui): State<Arc<WebUi>>,
    Path(id): Path<u64>,
) -> Result<Markup, (StatusCode, Markup)> {
    let activity = ui.activity().await.unwrap_or_default();
    let Some(query) = activity.into_iter().find(|query| query.record.id == id) else {
        return Err((
            StatusCode::NOT_FOUND,
            page(
                "no such query",
                html! { p { "This frontend has no query " (id) "." } },
            ),
        ));
    };
    let stages = ui.stages(&query).await;
    Ok(page(
        &format!("query {id}"),
        html! {
            table {
                tr { th { "user" } td { (query.record.user) } }
                tr { th { "state" } td class=(query.progress.state.as_str()) { (query.progress.state.as_str()) } }
                tr { th { "started" } td { (clock(query.record.started_at)) } }
                tr { th { "duration" } td { (seconds(duration(&query))) } }
                tr { th { "rows sent" } td { (query.progress.rows) } }
                @if let Some(job) = &query.job {
                    tr { th { "job" } td { (job.job_id) " (" (job.status) ")" } }
                }
                @if let Some(error) = &query.progress.error {
                    tr { th { "error" } td.error { (error) } }
                }
                tr { th { "query" } td { pre { (query.record.text) } } }
            }
            @if stages.is_empty() {
                p { @if query.job.is_some() {
                    "The scheduler no longer holds this query's stages."
                } @else {
                    "This query ran in the frontend, without a job on the cluster."
                } }
            } @else {
                h2 { "Stages" }
                (stage_graph(&stages))
                table {
                    tr { th { "stage" } th { "status" } th { "reads stages" } th { "tasks done" }
                         th { "running" } th { "input rows" } th { "output rows" }
                         th { "compute" } th { "executors" } th { "plan" } }
                    @for stage in &stages {
                        tr {
                            td.num { (stage.stage_id) }
                            td { (stage.status) }
                            td { (list(stage.inputs.iter())) }
                            td { (bar(stage.tasks_done, stage.tasks)) (stage.tasks_done) " / " (stage.tasks) }
                            td.num { (stage.tasks_running) }
                            td.num { (stage.input_rows) }
                            td.num { (stage.output_rows) }
                            td { (stage.elapsed_compute.as_deref().unwrap_or("–")) }
                            td { @for (executor, tasks) in &stage.executors {
                                (executor) " (" (tasks) ")" br;
                            } }
                            td { @if let Some(plan) = &stage.plan {
                                details { summary { "plan" } pre { (plan) } }
                            } }
                        }
                    }
                }
            }
        },
    ))
}

/// The stages as boxes in columns by depth (a stage right of the stages it
/// reads), with an arrow along each shuffle.
fn stage_graph(stages: &[StageProgress]) -> Markup {
    const WIDTH: usize = 220;
    const HEIGHT: usize = 62;
    const GAP_X: usize = 60;
    const GAP_Y: usize = 24;
    let depth = stage_depths(stages);
    let mut columns: Vec<Vec<&StageProgress>> = Vec::new();
    for stage in stages {
        let column = depth[&stage.stage_id];
        if columns.len() <= column {
            columns.resize(column + 1, Vec::new());
        }
        columns[column].push(stage);
    }
    let mut position = HashMap::new();
    for (x, column) in columns.iter().enumerate() {
        for (y, stage) in column.iter().enumerate() {
            position.insert(
                stage.stage_id,
                (10 + x * (WIDTH + GAP_X), 10 + y * (HEIGHT + GAP_Y)),
            );
        }
    }
    let width = 20 + columns.len() * (WIDTH + GAP_X);
    let height = 20 + columns.iter().map(Vec::len).max().unwrap_or(1) * (HEIGHT + GAP_Y);
    html! {
        svg xmlns="http://www.w3.org/2000/svg" width=(width) height=(height) class="stages" {
            defs {
                marker id="arrow" markerWidth="10" markerHeight="8" refX="10" refY="4" orient="auto" {
                    path d="M0,0 L10,4 L0,8 z" fill="#555" {}
                }
            }
            @for stage in stages {
                @for input in &stage.inputs {
                    @if let (Some((x1, y1)), Some((x2, y2))) = (position.get(input), position.get(&stage.stage_id)) {
                        line x1=(x1 + WIDTH) y1=(y1 + HEIGHT / 2) x2=(x2) y2=(y2 + HEIGHT / 2)
                            stroke="#555" marker-end="url(#arrow)" {}
                    }
                }
            }
            @for stage in stages {
                @let (x, y) = position[&stage.stage_id];
                g {
                    rect x=(x) y=(y) width=(WIDTH) height=(HEIGHT) rx="6" fill=(status_colour(&stage.status)) stroke="#777" {}
                    text x=(x + 8) y=(y + 18) font-weight="bold" {
                        "Stage " (stage.stage_id) " · " (stage.status)
                    }
                    text x=(x + 8) y=(y + 36) { "tasks " (stage.tasks_done) " / " (stage.tasks) }
                    text x=(x + 8) y=(y + 53) { "rows " (stage.input_rows) " → " (stage.output_rows) }
                }
            }
        }
    }
}

/// Each stage's column: 0 for stages reading no stage, else one more than
/// the deepest stage it reads.
fn stage_depths(stages: &[StageProgress]) -> HashMap<usize, usize> {
    let inputs: HashMap<usize, &[usize]> = stages
        .iter()
        .map(|stage| (stage.stage_id, stage.inputs.as_slice()))
        .collect();
    fn depth(
        stage: usize,
        inputs: &HashMap<usize, &[usize]>,
        seen: &mut HashMap<usize, usize>,
        limit: usize,
    ) -> usize {
        if let Some(depth) = seen.get(&stage) {
            return *depth;
        }
        let found = match inputs.get(&stage) {
            Some(reads) if limit > 0 => reads
                .iter()
                .filter(|input| inputs.contains_key(input))
                .map(|input| depth(*input, inputs, seen, limit - 1) + 1)
                .max()
                .unwrap_or(0),
            _ => 0,
        };
        seen.insert(stage, found);
        found
    }
    let mut seen = HashMap::new();
    for stage in stages {
        depth(stage.stage_id, &inputs, &mut seen, stages.len());
    }
    seen
}

fn status_colour(status: &str) -> &'static str {
    match status {
        "Successful" => "#d8f0dc",
        "Running" => "#fff1c2",
        "Failed" => "#f6d3d6",
        _ => "#e6e6e6",
    }
}

/// A small progress bar, `done` of `total`.
fn bar(done: usize, total: usize) -> Markup {
    let percent = (done.min(total) * 100).checked_div(total).unwrap_or(0);
    html! { span.bar { span style={ "width:" (percent) "%" } {} } }
}

fn list<'a>(items: impl Iterator<Item = &'a usize>) -> String {
    items.map(usize::to_string).collect::<Vec<_>>().join(", ")
}

fn since(time: SystemTime) -> Duration {
    SystemTime::now().duration_since(time).unwrap_or_default()
}

/// How long `query` ran (or has been running).
fn duration(query: &QueryActivity) -> Duration {
    let end = query.progress.finished_at.unwrap_or_else(SystemTime::now);
    end.duration_since(query.record.started_at)
        .unwrap_or_default()
}

fn seconds(duration: Duration) -> String {
    format!("{:.2} s", duration.as_secs_f64())
}

fn clock(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}
