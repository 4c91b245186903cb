//! Query answers as the wire's responses: plans run and their batches
//! encoded as rows, and DataFusion errors as wire errors. Shared by the
//! simple and extended protocols and by cursors.

use std::sync::Arc;

use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, SessionState, TaskContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::{execute_stream, ExecutionPlan};
use datafusion_postgres::arrow_pg::datatypes::arrow_schema_to_pg_fields;
use datafusion_postgres::pgwire::api::portal::Format;
use datafusion_postgres::pgwire::api::results::{FieldInfo, QueryResponse, Response};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::types::format::FormatOptions;

use crate::data_rows::row_stream;

/// A DataFusion error, as the wire reports it.
pub fn api(error: DataFusionError) -> PgWireError {
    PgWireError::ApiError(Box::new(error))
}

/// The rows of the query `optimized` (a logical plan the optimizer has
/// already seen), planned physically in `state` and encoded in `format`.
pub async fn answer(
    state: &SessionState,
    optimized: &LogicalPlan,
    format: &Format,
    options: Arc<FormatOptions>,
) -> PgWireResult<Response> {
    let fields = arrow_schema_to_pg_fields(optimized.schema().as_arrow(), format, Some(options))?;
    let batches = batches(state, optimized).await?;
    Ok(rows_response(fields, batches, ()))
}

/// The batches of the query `optimized` (a logical plan the optimizer has
/// already seen), planned physically in `state` and running.
pub async fn batches(
    state: &SessionState,
    optimized: &LogicalPlan,
) -> PgWireResult<SendableRecordBatchStream> {
    let physical = state
        .query_planner()
        .create_physical_plan(optimized, state)
        .await
        .map_err(api)?;
    execute_stream(physical, state.task_ctx()).map_err(api)
}

/// The rows of `physical`, executed in `context`, as `fields`; `running` (a
/// taken kept plan, say) lives until the rows end or are dropped.
pub fn respond<R: Send + 'static>(
    physical: Arc<dyn ExecutionPlan>,
    context: Arc<TaskContext>,
    fields: Vec<FieldInfo>,
    running: R,
) -> PgWireResult<Response> {
    let batches = execute_stream(physical, context).map_err(api)?;
    Ok(rows_response(fields, batches, running))
}

/// The response whose rows are `batches`' encoded as `fields`; `running`
/// lives until the rows end or are dropped.
pub fn rows_response<R: Send + 'static>(
    fields: Vec<FieldInfo>,
    batches: SendableRecordBatchStream,
    running: R,
) -> Response {
    let fields = Arc::new(fields);
    let rows = row_stream(Arc::clone(&fields), batches, running);
    Response::Query(QueryResponse::new(fields, rows))
}
