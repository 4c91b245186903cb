//! DataFusion's own statements that the Postgres-dialect parser rejects:
//! `CREATE EXTERNAL TABLE … STORED AS CSV|JSON|… [OPTIONS (…)]` and
//! `COPY … TO … STORED AS …`. When the Postgres parser fails, the text is
//! parsed again with DataFusion's parser; if every statement in it is one of
//! these, they run. [`SluiceParser`] does the same for the extended protocol.

use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser;
use datafusion::sql::sqlparser::ast::helpers::stmt_create_table::CreateTableBuilder;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion_postgres::pgwire::api::portal::Format;
use datafusion_postgres::pgwire::api::results::{FieldInfo, Response, Tag};
use datafusion_postgres::pgwire::api::stmt::QueryParser;
use datafusion_postgres::pgwire::api::{ClientInfo, Type};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::Parser;

use super::sqlstate::user_error;
use super::Limits;
use crate::auth::access::{check, needed_role_datafusion};
use sluice_engine::complexity::check_depth;
use sluice_engine::parallel_write::WriteAnswer;
use sluice_engine::pg_rewrite::rewrite;
use sluice_engine::sqlstate::SqlState;

/// Runs `query` if DataFusion's parser reads it as DataFusion-only statements;
/// `None` when it does not (the caller reports its original error).
pub async fn run(
    context: &SessionContext,
    client: &(impl ClientInfo + ?Sized),
    query: &str,
) -> Option<PgWireResult<Vec<Response>>> {
    let translated = super::copy::partitioned_copy(query);
    let query = translated.as_deref().unwrap_or(query);
    let statements = DFParser::parse_sql_with_dialect(query, &PostgreSqlDialect {}).ok()?;
    if statements.is_empty()
        || !statements
            .iter()
            .all(|s| matches!(s, Statement::CreateExternalTable(_) | Statement::CopyTo(_)))
    {
        return None;
    }
    for statement in &statements {
        let (needed, what) = needed_role_datafusion(statement);
        if let Err(e) = check(client, needed, what) {
            return Some(Err(e));
        }
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
    Ok(WriteAnswer::read(&batches).rows)
}

/// A statement prepared through the extended protocol, as datafusion-postgres
/// stores it: the text, and the sqlparser statement with its logical plan.
pub type PreparedStatement = (String, Option<(sqlparser::ast::Statement, LogicalPlan)>);

/// datafusion-postgres' parser, falling back to DataFusion's for `CREATE
/// EXTERNAL TABLE` statements the Postgres dialect cannot parse.
pub struct SluiceParser {
    inner: Arc<Parser>,
    context: Arc<SessionContext>,
    limits: Limits,
}

impl SluiceParser {
    /// Wraps `inner`, planning fallback statements in `context`, refusing
    /// statements over `limits`.
    pub fn new(inner: Arc<Parser>, context: Arc<SessionContext>, limits: Limits) -> Self {
        Self {
            inner,
            context,
            limits,
        }
    }

    /// The plan of `sql` when DataFusion reads it as one `CREATE EXTERNAL
    /// TABLE`. Its sqlparser form (which cannot express every file format) is
    /// a bare `CREATE EXTERNAL TABLE name`: enough for the command tag, while
    /// the plan carries the statement.
    async fn external_table(
        &self,
        client: &(impl ClientInfo + ?Sized),
        sql: &str,
    ) -> Option<PgWireResult<PreparedStatement>> {
        let mut statements = DFParser::parse_sql_with_dialect(sql, &PostgreSqlDialect {}).ok()?;
        if statements.len() != 1 {
            return None;
        }
        let statement = statements.pop_front()?;
        let Statement::CreateExternalTable(create) = &statement else {
            return None;
        };
        let (needed, what) = needed_role_datafusion(&statement);
        if let Err(e) = check(client, needed, what) {
            return Some(Err(e));
        }
        let placeholder = sqlparser::ast::Statement::CreateTable(
            CreateTableBuilder::new(create.name.clone())
                .external(true)
                .build(),
        );
        let plan = self.context.state().statement_to_plan(statement).await;
        Some(
            plan.map(|plan| (sql.to_string(), Some((placeholder, plan))))
                .map_err(|e| PgWireError::ApiError(Box::new(e))),
        )
    }
}

/// `54000` (program_limit_exceeded) when `sql` is longer than the limit,
/// `54001` (statement_too_complex) when it nests deeper than the limit (see
/// [`sluice_engine::complexity`]): checked before anything parses it.
pub fn check_statement_limits(sql: &str, limits: &Limits) -> PgWireResult<()> {
    let max = limits.max_query_size;
    if sql.len() > max {
        return Err(user_error(
            SqlState::PROGRAM_LIMIT_EXCEEDED,
            format!(
                "statement too long: {} bytes, and this server takes at most {max} \
                 (--max-query-size)",
                sql.len()
            ),
        ));
    }
    check_depth(sql, limits.max_statement_depth)
        .map_err(|e| user_error(SqlState::STATEMENT_TOO_COMPLEX, e.to_string()))
}

/// Whether `sql` begins with `words` (any case, any whitespace between).
fn starts_with_words(sql: &str, words: &[&str]) -> bool {
    let mut tokens = sql.split_whitespace();
    words.iter().all(|word| {
        tokens
            .next()
            .is_some_and(|token| token.eq_ignore_ascii_case(word))
    })
}

#[async_trait]
impl QueryParser for SluiceParser {
    type Statement = PreparedStatement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        check_statement_limits(sql, &self.limits)?;
        // Planned over the catalog as other frontends left it.
        sluice_engine::catalog::refresh(&self.context).await;
        // The Postgres dialect reads some `CREATE EXTERNAL TABLE` statements
        // as Hive's, which DataFusion's planner then refuses: DataFusion's
        // parser goes first for those.
        if starts_with_words(sql, &["create", "external", "table"]) {
            if let Some(prepared) = self.external_table(client, sql).await {
                return prepared.map(Some);
            }
        }
        let original = sql;
        let rewritten = rewrite(sql);
        let sql = rewritten.as_deref().unwrap_or(sql);
        let prepared = match self.inner.parse_sql(client, sql, types).await {
            Err(PgWireError::ApiError(error)) if error.downcast_ref::<ParserError>().is_some() => {
                match self.external_table(client, sql).await {
                    Some(prepared) => prepared.map(Some),
                    None => Err(PgWireError::ApiError(error)),
                }
            }
            result => result,
        };
        // The text is only shown (`sluice.queries`, the web UI, logs): the
        // client's, not the statement as re-printed after parsing.
        prepared.map(|prepared| prepared.map(|(_, statement)| (original.to_string(), statement)))
    }

    fn get_parameter_types(&self, statement: &Self::Statement) -> PgWireResult<Vec<Type>> {
        self.inner.get_parameter_types(statement)
    }

    fn get_result_schema(
        &self,
        statement: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        // A `FETCH` answers its cursor's columns (none when it is not open,
        // as PostgreSQL describes it).
        if let (_, Some((sqlparser::ast::Statement::Fetch { name, .. }, _))) = statement {
            let format = column_format.unwrap_or(&Format::UnifiedText);
            return super::cursor::described(&self.context, &name.value, format)
                .unwrap_or(Ok(vec![]));
        }
        self.inner.get_result_schema(statement, column_format)
    }
}
