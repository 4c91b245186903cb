//! DataFusion's own statements that the Postgres-dialect parser rejects:
//! `CREATE EXTERNAL TABLE … STORED AS CSV|JSON|… [OPTIONS (…)]` and
//! `COPY … TO … STORED AS …`. When the Postgres parser fails, the text is
//! parsed again with DataFusion's parser; if every statement in it is one of
//! these, they run.

use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion_postgres::pgwire::api::results::{Response, Tag};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};

use super::hooks::rows_reported;

/// Runs `query` if DataFusion's parser reads it as DataFusion-only statements;
/// `None` when it does not (the caller reports its original error).
pub async fn run(context: &SessionContext, query: &str) -> Option<PgWireResult<Vec<Response>>> {
    let statements = DFParser::parse_sql_with_dialect(query, &PostgreSqlDialect {}).ok()?;
    if statements.is_empty()
        || !statements
            .iter()
            .all(|s| matches!(s, Statement::CreateExternalTable(_) | Statement::CopyTo(_)))
    {
        return None;
    }
    let mut responses = Vec::with_capacity(statements.len());
    for statement in statements {
        let tag = match &statement {
            Statement::CopyTo(_) => "COPY",
            _ => "CREATE TABLE",
        };
        match execute(context, statement).await {
            Ok(rows) if tag == "COPY" => {
                responses.push(Response::Execution(Tag::new(tag).with_rows(rows as usize)))
            }
            Ok(_) => responses.push(Response::Execution(Tag::new(tag))),
            Err(e) => return Some(Err(PgWireError::ApiError(Box::new(e)))),
        }
    }
    Some(Ok(responses))
}

/// Plans and runs one statement; returns the row count it reports.
async fn execute(context: &SessionContext, statement: Statement) -> Result<u64, DataFusionError> {
    let plan = context.state().statement_to_plan(statement).await?;
    let batches = context.execute_logical_plan(plan).await?.collect().await?;
    Ok(rows_reported(&batches))
}
