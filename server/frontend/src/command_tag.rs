//! Command tags for statements that return no rows.
//!
//! DataFusion answers DDL with an empty result set; Postgres clients expect a
//! command tag (`CREATE TABLE`, `DROP TABLE`, …) instead, as psql prints it.

use datafusion::sql::sqlparser::ast::Statement;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::datafusion_pg_catalog;
use datafusion_postgres::pgwire::api::results::{Response, Tag};

/// The Postgres command tag of `statement`.
pub fn command_tag(statement: &Statement) -> String {
    match statement {
        Statement::CreateTable(_) => "CREATE TABLE".into(),
        Statement::CreateView(_) => "CREATE VIEW".into(),
        Statement::CreateSchema { .. } => "CREATE SCHEMA".into(),
        Statement::CreateDatabase { .. } => "CREATE DATABASE".into(),
        Statement::Drop { object_type, .. } => format!("DROP {object_type}"),
        Statement::AlterTable(_) => "ALTER TABLE".into(),
        Statement::Truncate(_) => "TRUNCATE TABLE".into(),
        other => other
            .to_string()
            .split_whitespace()
            .next()
            .unwrap_or("OK")
            .to_uppercase(),
    }
}

/// Replaces a row-less, column-less result with the statement's command tag.
pub fn tag_if_empty(response: Response, statement: Option<&Statement>) -> Response {
    match (response, statement) {
        (Response::Query(query), Some(statement)) if query.row_schema.is_empty() => {
            Response::Execution(Tag::new(&command_tag(statement)))
        }
        (response, _) => response,
    }
}

/// Applies [`tag_if_empty`] to the responses of a simple query, parsing its
/// text again only when some response needs a tag.
pub fn tag_empty_results(query: &str, responses: Vec<Response>) -> Vec<Response> {
    let needs_tag = responses
        .iter()
        .any(|r| matches!(r, Response::Query(q) if q.row_schema.is_empty()));
    if !needs_tag {
        return responses;
    }
    let Ok(statements) = PostgresCompatibilityParser::new().parse(query) else {
        return responses;
    };
    if statements.len() != responses.len() {
        return responses;
    }
    responses
        .into_iter()
        .zip(&statements)
        .map(|(response, statement)| tag_if_empty(response, Some(statement)))
        .collect()
}
