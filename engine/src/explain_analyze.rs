//! `EXPLAIN ANALYZE` of a query that runs on the cluster: the query runs as
//! a Ballista job, then the answer is the job's plan stage by stage with the
//! metrics its tasks reported, summed over the executors that ran them.
//!
//! For each stage: the executors that ran its tasks (and how many each),
//! the rows it read and wrote, the compute time of its operators, spilled
//! bytes, and the shuffle bytes it wrote and read; under it every operator
//! with its own summed metrics. The executors and the shuffle bytes written
//! are not among Ballista's task metrics: each executor adds them to the
//! metrics of a task's root operator ([`task_metrics`]).

use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ballista_core::extension::SessionConfigExt;
use ballista_core::serde::protobuf::{
    operator_metric, scheduler_grpc_client::SchedulerGrpcClient, GetJobMetricsParams,
    GetJobMetricsResult, JobStageMetrics, NamedCount, OperatorMetricsSet,
};
use ballista_core::utils::{create_grpc_client_endpoint, GrpcClientConfig};
use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{Count, Metric, MetricValue, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use datafusion::prelude::SessionConfig;
use futures::StreamExt;

use crate::inner_metrics;
use crate::recovery::RecoveringJobExec;

/// Name prefix of the count an executor adds to each task it ran:
/// `sluice_executor=<executor id>`, 1.
pub const EXECUTOR_METRIC_PREFIX: &str = "sluice_executor=";

/// Name of the count of shuffle bytes a task wrote.
pub const SHUFFLE_BYTES_WRITTEN: &str = "shuffle_bytes_written";

/// The metrics an executor adds to those of the root operator of a task it
/// ran: its id, and the bytes of the shuffle files the task wrote.
pub fn task_metrics(executor_id: &str, shuffle_bytes_written: u64) -> Vec<Arc<Metric>> {
    let count = |name: String, value: u64| {
        let count = Count::new();
        count.add(usize::try_from(value).unwrap_or(usize::MAX));
        // Partition 0 of the task: a retried task's new report replaces it.
        Arc::new(Metric::new(
            MetricValue::Count {
                name: name.into(),
                count,
            },
            Some(0),
        ))
    };
    vec![
        count(format!("{EXECUTOR_METRIC_PREFIX}{executor_id}"), 1),
        count(SHUFFLE_BYTES_WRITTEN.into(), shuffle_bytes_written),
    ]
}

/// Runs a query as a job, then answers with its stages and metrics.
pub struct DistributedAnalyzeExec {
    job: Arc<RecoveringJobExec>,
    scheduler_url: String,
    /// `EXPLAIN ANALYZE VERBOSE`: every metric.
    verbose: bool,
    properties: Arc<PlanProperties>,
}

impl DistributedAnalyzeExec {
    /// `EXPLAIN ANALYZE [VERBOSE]` of the query `job` runs on the scheduler
    /// at `scheduler_url`, answering with `schema` (`plan_type`, `plan`).
    pub fn new(
        job: RecoveringJobExec,
        scheduler_url: String,
        schema: SchemaRef,
        verbose: bool,
    ) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Self {
            job: Arc::new(job),
            scheduler_url,
            verbose,
            properties: Arc::new(properties),
        }
    }
}

impl fmt::Debug for DistributedAnalyzeExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DistributedAnalyzeExec")
            .finish_non_exhaustive()
    }
}

impl DisplayAs for DistributedAnalyzeExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "DistributedAnalyzeExec")
    }
}

impl ExecutionPlan for DistributedAnalyzeExec {
    fn name(&self) -> &str {
        "DistributedAnalyzeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let job = Arc::clone(&self.job);
        let scheduler_url = self.scheduler_url.clone();
        let verbose = self.verbose;
        let schema = self.schema();
        let answer_schema = Arc::clone(&schema);
        let answer = futures::stream::once(async move {
            let started = Instant::now();
            let mut rows = 0;
            let mut batches = job.execute(partition, Arc::clone(&context))?;
            while let Some(batch) = batches.next().await {
                rows += batch?.num_rows();
            }
            let elapsed = started.elapsed();
            let job_id = job.last_job_id().ok_or_else(|| {
                DataFusionError::Internal("the analyzed query ran without a job".into())
            })?;
            let metrics =
                fetch_job_metrics(&scheduler_url, &job_id, context.session_config()).await?;
            let report = render(&metrics, &job_id, rows, elapsed, verbose)?;
            Ok(RecordBatch::try_new(
                answer_schema,
                vec![
                    Arc::new(StringArray::from(vec!["Plan with Metrics"])),
                    Arc::new(StringArray::from(vec![report])),
                ],
            )?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, answer)))
    }
}

/// The metrics of job `job_id`'s finished stages, from the scheduler.
async fn fetch_job_metrics(
    scheduler_url: &str,
    job_id: &str,
    config: &SessionConfig,
) -> Result<GetJobMetricsResult> {
    let failed =
        |e: String| DataFusionError::Execution(format!("reading the metrics of job {job_id}: {e}"));
    let ballista = config.ballista_config();
    let grpc = GrpcClientConfig::from(&ballista);
    let mut endpoint = create_grpc_client_endpoint(scheduler_url.to_string(), Some(&grpc))
        .map_err(|e| failed(e.to_string()))?;
    if let Some(customize) = config.ballista_override_create_grpc_client_endpoint() {
        endpoint = customize
            .configure_endpoint(endpoint)
            .map_err(|e| failed(e.to_string()))?;
    }
    let connection = endpoint
        .connect()
        .await
        .map_err(|e| failed(e.to_string()))?;
    let max_message = ballista.grpc_client_max_message_size();
    let mut scheduler = SchedulerGrpcClient::with_interceptor(
        connection,
        config.ballista_grpc_interceptor().as_ref().clone(),
    )
    .max_encoding_message_size(max_message)
    .max_decoding_message_size(max_message);
    scheduler
        .get_job_metrics(GetJobMetricsParams {
            job_id: job_id.to_string(),
        })
        .await
        .map(|response| response.into_inner())
        .map_err(|e| failed(e.message().to_string()))
}

/// The report: a line for the query, then each stage with its operators.
/// With `verbose`, every metric of every operator; otherwise
/// [`SUMMARY_METRICS`].
fn render(
    metrics: &GetJobMetricsResult,
    job_id: &str,
    rows: usize,
    elapsed: Duration,
    verbose: bool,
) -> Result<String> {
    let mut stages = metrics.stages.clone();
    stages.sort_by_key(|stage| stage.stage_id);
    let mut out = format!(
        "Distributed query: {rows} rows in {elapsed:.3?}, job {job_id}, {} stages\n",
        stages.len()
    );
    for stage in &stages {
        render_stage(stage, verbose, &mut out)?;
    }
    Ok(out.trim_end().to_string())
}

/// One operator's metrics, summed over the tasks that ran it.
struct OperatorMetrics {
    depth: usize,
    description: String,
    metrics: MetricsSet,
}

/// The executors that ran the tasks of `stage` and how many each, sorted by
/// id: the counts named [`EXECUTOR_METRIC_PREFIX`] in its metrics.
pub fn stage_executors(stage: &JobStageMetrics) -> Vec<(String, usize)> {
    let mut executors: Vec<(String, usize)> = Vec::new();
    let counts = stage
        .operators
        .iter()
        .flat_map(|operator| &operator.metrics)
        .filter_map(|metric| match &metric.metric {
            Some(operator_metric::Metric::Count(NamedCount { name, value })) => {
                Some((name.strip_prefix(EXECUTOR_METRIC_PREFIX)?, *value as usize))
            }
            _ => None,
        });
    for (executor, tasks) in counts {
        match executors.iter_mut().find(|(id, _)| id == executor) {
            Some((_, total)) => *total += tasks,
            None => executors.push((executor.to_string(), tasks)),
        }
    }
    executors.sort();
    executors
}

/// An operator of a stage and, when it ran a plan of its own (a
/// single-stage task), each operator of that plan under it: its description
/// holds the inner plan a line per operator, in the order
/// [`inner_metrics::split`] numbers them.
fn with_inner_operators(
    depth: usize,
    description: &str,
    metrics: &MetricsSet,
) -> Vec<OperatorMetrics> {
    let (own, inner) = inner_metrics::split(metrics);
    if inner.is_empty() {
        return vec![OperatorMetrics {
            depth,
            description: description.to_string(),
            metrics: own,
        }];
    }
    let mut lines = description.lines();
    let mut operators = vec![OperatorMetrics {
        depth,
        description: lines.next().unwrap_or_default().to_string(),
        metrics: own,
    }];
    for (number, line) in lines.enumerate() {
        let text = line.trim_start();
        // The inner plan is printed four spaces in, two more per level.
        let level = (line.len() - text.len()).saturating_sub(4) / 2;
        let metrics = inner
            .iter()
            .find(|(n, _)| *n == number)
            .map(|(_, set)| set.clone())
            .unwrap_or_default();
        operators.push(OperatorMetrics {
            depth: depth + 1 + level,
            description: text.to_string(),
            metrics,
        });
    }
    operators
}

/// The operator metrics shown without `VERBOSE`: rows, time, memory, bytes
/// read, spilled and shuffled.
const SUMMARY_METRICS: &[&str] = &[
    "output_rows",
    "elapsed_compute",
    "bytes_scanned",
    "build_mem_used",
    "peak_mem_used",
    "spilled_bytes",
    "spill_bytes",
    SHUFFLE_BYTES_WRITTEN,
    "decoded_bytes",
    "write_time",
    "fetch_time",
];

fn render_stage(stage: &JobStageMetrics, verbose: bool, out: &mut String) -> Result<()> {
    let mut operators = Vec::new();
    for operator in &stage.operators {
        let metrics: MetricsSet = OperatorMetricsSet {
            metrics: operator.metrics.clone(),
        }
        .try_into()
        .map_err(|e| DataFusionError::Execution(format!("decoding task metrics: {e}")))?;
        operators.extend(with_inner_operators(
            operator.depth as usize,
            &operator.operator_desc,
            &metrics,
        ));
    }
    let executors = stage_executors(stage);
    let tasks: usize = executors.iter().map(|(_, tasks)| tasks).sum();
    let sum = |name: &str| -> usize {
        operators
            .iter()
            .filter_map(|op| op.metrics.sum_by_name(name))
            .map(|value| value.as_usize())
            .sum()
    };
    let elapsed_compute: usize = operators
        .iter()
        .filter_map(|op| op.metrics.elapsed_compute())
        .sum();
    // Leaves read the stage's input: shuffle readers and scans.
    let input_rows: usize = operators
        .iter()
        .enumerate()
        .filter(|(i, op)| {
            operators
                .get(i + 1)
                .is_none_or(|next| next.depth <= op.depth)
        })
        .filter_map(|(_, op)| op.metrics.output_rows())
        .sum();
    let output_rows = operators
        .first()
        .and_then(|root| root.metrics.output_rows())
        .unwrap_or(0);
    let ran_on = executors
        .iter()
        .map(|(id, tasks)| format!("{id} ({tasks})"))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(
        out,
        "Stage {}: {} partitions, {tasks} tasks on executors {ran_on}",
        stage.stage_id, stage.partitions
    );
    let _ = writeln!(
        out,
        "  input_rows={input_rows}, output_rows={output_rows}, elapsed_compute={:.3?}, \
         spilled_bytes={}, shuffle_bytes_written={}, shuffle_bytes_read={}",
        Duration::from_nanos(elapsed_compute as u64),
        sum("spilled_bytes") + sum("spill_bytes"),
        sum(SHUFFLE_BYTES_WRITTEN),
        sum("decoded_bytes"),
    );
    for op in &operators {
        let mut shown = MetricsSet::new();
        for metric in op.metrics.iter() {
            let name = metric.value().name();
            if !name.starts_with(EXECUTOR_METRIC_PREFIX)
                && (verbose || SUMMARY_METRICS.contains(&name))
            {
                shown.push(Arc::clone(metric));
            }
        }
        let shown = shown
            .aggregate_by_name()
            .sorted_for_display()
            .timestamps_removed();
        let _ = writeln!(
            out,
            "  {}{}, metrics=[{shown}]",
            "  ".repeat(op.depth),
            op.description
        );
    }
    out.push('\n');
    Ok(())
}
