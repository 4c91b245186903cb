//! `COPY (query) TO 'location' (FORMAT parquet|csv|json [, HEADER])` in
//! PostgreSQL's syntax, run as DataFusion's `COPY … STORED AS …`.

use async_trait::async_trait;
use datafusion::arrow::array::{Array, UInt64Array};
use datafusion::common::ParamValues;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{CopyOption, CopySource, CopyTarget, Statement};
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::pgwire::api::results::{Response, Tag};
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};

/// Runs `COPY … TO 'location'` statements.
#[derive(Debug, Default)]
pub struct CopyToHook;

/// The DataFusion statement for a PostgreSQL `COPY … TO 'location'`, or `None`
/// when `statement` is not one.
fn datafusion_copy(statement: &Statement) -> Option<Result<String, DataFusionError>> {
    let Statement::Copy {
        source,
        to: true,
        target: CopyTarget::File { filename },
        options,
        ..
    } = statement
    else {
        return None;
    };
    let source = match source {
        CopySource::Query(query) => format!("({query})"),
        CopySource::Table {
            table_name,
            columns,
        } if columns.is_empty() => table_name.to_string(),
        CopySource::Table {
            table_name,
            columns,
        } => {
            let columns: Vec<String> = columns.iter().map(ToString::to_string).collect();
            format!("(SELECT {} FROM {table_name})", columns.join(", "))
        }
    };
    let mut format = None;
    let mut header = None;
    for option in options {
        match option {
            CopyOption::Format(name) => format = Some(name.value.to_lowercase()),
            CopyOption::Header(value) => header = Some(*value),
            other => {
                return Some(Err(DataFusionError::NotImplemented(format!(
                    "COPY option {other} is not supported"
                ))))
            }
        }
    }
    let format = format.unwrap_or_else(|| "csv".to_string());
    if !["parquet", "csv", "json"].contains(&format.as_str()) {
        return Some(Err(DataFusionError::NotImplemented(format!(
            "COPY format {format} is not supported (use parquet, csv or json)"
        ))));
    }
    let location = filename.replace('\'', "''");
    let mut sql = format!("COPY {source} TO '{location}' STORED AS {format}");
    if let Some(header) = header {
        sql.push_str(&format!(" OPTIONS ('format.has_header' '{header}')"));
    }
    Some(Ok(sql))
}

async fn run_copy(context: &SessionContext, sql: &str) -> PgWireResult<Response> {
    let api = |e: DataFusionError| PgWireError::ApiError(Box::new(e));
    let batches = context
        .sql(sql)
        .await
        .map_err(api)?
        .collect()
        .await
        .map_err(api)?;
    let rows: u64 = batches
        .iter()
        .filter_map(|batch| batch.column_by_name("count"))
        .filter_map(|column| column.as_any().downcast_ref::<UInt64Array>())
        .filter(|counts| !counts.is_empty())
        .map(|counts| counts.value(0))
        .sum();
    Ok(Response::Execution(
        Tag::new("COPY").with_rows(rows as usize),
    ))
}

#[async_trait]
impl QueryHook for CopyToHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        context: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let sql = datafusion_copy(statement)?;
        Some(match sql {
            Ok(sql) => run_copy(context, &sql).await,
            Err(e) => Err(PgWireError::ApiError(Box::new(e))),
        })
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        context: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        let sql = datafusion_copy(statement)?;
        Some(match sql {
            Ok(sql) => context
                .state()
                .create_logical_plan(&sql)
                .await
                .map_err(|e| PgWireError::ApiError(Box::new(e))),
            Err(e) => Err(PgWireError::ApiError(Box::new(e))),
        })
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        context: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let sql = datafusion_copy(statement)?;
        Some(match sql {
            Ok(sql) => run_copy(context, &sql).await,
            Err(e) => Err(PgWireError::ApiError(Box::new(e))),
        })
    }
}
