//! Queries a connection parses again and again.
//!
//! Clients of the extended protocol that do not name their statements
//! (pgbench `-M extended`, psycopg, node-postgres, pgjdbc before its
//! `prepareThreshold`) send the same text in a `Parse` before each
//! execution. Parsing, planning and optimizing it each time cost a quarter
//! of a small query's CPU. A connection keeps its last
//! [`PARSED_PER_CONNECTION`] parsed queries: the same text, parameter types
//! and name, under the same SQL settings, gets the same stored statement
//! back, and with it the optimized plan [`super::portal`] keeps for it.
//! Each execution still reads the tables as they are then; a table whose
//! columns changed makes the text be parsed again.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use datafusion::common::config::{ConfigOptions, OptimizerOptions, SqlParserOptions};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::pgwire::api::stmt::StoredStatement;
use datafusion_postgres::pgwire::api::{Type, DEFAULT_NAME};
use datafusion_postgres::pgwire::messages::extendedquery::Parse;
use sluice_engine::current_tables::tables_kept_columns;

use super::datafusion_ddl::PreparedStatement;

/// Most parsed queries one connection keeps.
pub const PARSED_PER_CONNECTION: usize = 64;

/// One parsed query and what it was parsed under.
struct Parsed {
    name: String,
    text: String,
    parameter_types: Vec<Option<Type>>,
    made_under: MadeUnder,
    statement: Arc<StoredStatement<PreparedStatement>>,
}

/// What a connection keeps of the queries it parsed, newest last.
#[derive(Default)]
pub struct ParsedQueries {
    parsed: Mutex<VecDeque<Parsed>>,
}

/// What a query was planned under: the same text means the same query only
/// under the same settings.
#[derive(PartialEq)]
pub struct MadeUnder {
    /// The catalog and schema unqualified names resolve in.
    defaults: (String, String),
    sql_parser: SqlParserOptions,
    optimizer: OptimizerOptions,
}

impl MadeUnder {
    /// The settings in `options` a plan depends on.
    pub fn of(options: &ConfigOptions) -> Self {
        Self {
            defaults: (
                options.catalog.default_catalog.clone(),
                options.catalog.default_schema.clone(),
            ),
            sql_parser: options.sql_parser.clone(),
            optimizer: options.optimizer.clone(),
        }
    }

    /// The settings of `context`'s session a plan depends on.
    fn now(context: &SessionContext) -> Self {
        Self::of(context.state_ref().read().config_options())
    }
}

impl ParsedQueries {
    /// The statement this connection parsed from `parse` before, when it is
    /// a query whose tables kept their columns since.
    pub async fn get(
        &self,
        context: &SessionContext,
        parse: &Parse,
    ) -> Option<Arc<StoredStatement<PreparedStatement>>> {
        let name = parse.name.as_deref().unwrap_or(DEFAULT_NAME);
        let made_under = MadeUnder::now(context);
        let types: Vec<Option<Type>> = parse
            .type_oids
            .iter()
            .map(|oid| Type::from_oid(*oid))
            .collect();
        let statement = {
            let parsed = self.lock();
            let found = parsed.iter().rev().find(|parsed| {
                parsed.text == parse.query
                    && parsed.name == name
                    && parsed.made_under == made_under
                    && parsed.parameter_types == types
            })?;
            Arc::clone(&found.statement)
        };
        let (_, Some((_, plan))) = &statement.statement else {
            return None;
        };
        tables_kept_columns(plan, context)
            .await
            .then_some(statement)
    }

    /// Keeps `statement`, parsed from `parse`, when it is a query.
    pub fn keep(
        &self,
        context: &SessionContext,
        parse: &Parse,
        statement: &Arc<StoredStatement<PreparedStatement>>,
    ) {
        if !matches!(&statement.statement, (_, Some((Statement::Query(_), _)))) {
            return;
        }
        let made_under = MadeUnder::now(context);
        let mut parsed = self.lock();
        parsed.retain(|parsed| !(parsed.text == parse.query && parsed.name == statement.id));
        if parsed.len() >= PARSED_PER_CONNECTION {
            parsed.pop_front();
        }
        parsed.push_back(Parsed {
            name: statement.id.clone(),
            text: parse.query.clone(),
            parameter_types: statement.parameter_types.clone(),
            made_under,
            statement: Arc::clone(statement),
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Parsed>> {
        self.parsed.lock().unwrap_or_else(|e| e.into_inner())
    }
}
