//! `ALTER TABLE name RENAME TO new_name`, which DataFusion does not plan: the
//! table or view keeps its definition under the new name in the same schema,
//! and the persistent catalog records the change in one update.

use async_trait::async_trait;
use datafusion::common::TableReference;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    AlterTable, AlterTableOperation, ObjectName, RenameTableNameKind, Statement,
};
use datafusion_postgres::pgwire::api::results::{Response, Tag};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use sluice_engine::catalog::rename_table;
use sluice_engine::sqlstate::PgError;

use super::hooks::Action;

/// `ALTER TABLE … RENAME TO …` (run by an [`super::hooks::ActionHook`]).
pub struct RenameTable;

/// The names in a rename statement.
struct Rename<'a> {
    table: &'a ObjectName,
    new_name: &'a ObjectName,
    if_exists: bool,
}

fn recognise(statement: &Statement) -> Option<Rename<'_>> {
    let Statement::AlterTable(AlterTable {
        name,
        if_exists,
        operations,
        ..
    }) = statement
    else {
        return None;
    };
    match operations.as_slice() {
        [AlterTableOperation::RenameTable {
            table_name: RenameTableNameKind::To(new_name) | RenameTableNameKind::As(new_name),
        }] => Some(Rename {
            table: name,
            new_name,
            if_exists: *if_exists,
        }),
        _ => None,
    }
}

fn api(error: DataFusionError) -> PgWireError {
    PgWireError::ApiError(Box::new(error))
}

async fn run(rename: Rename<'_>, context: &SessionContext) -> PgWireResult<Response> {
    let state = context.state();
    let defaults = &state.config_options().catalog;
    let table = TableReference::from(rename.table.to_string())
        .resolve(&defaults.default_catalog, &defaults.default_schema);
    let new_name = TableReference::from(rename.new_name.to_string());
    if new_name.schema().is_some() {
        return Err(api(DataFusionError::NotImplemented(
            "RENAME TO takes a name without a schema: a table stays in its schema".into(),
        )));
    }
    let schema = context
        .catalog(&table.catalog)
        .and_then(|catalog| catalog.schema(&table.schema));
    let renamed = match schema {
        Some(schema) if schema.table_exist(&table.table) || !rename.if_exists => {
            rename_table(&schema, &table.table, new_name.table()).await
        }
        Some(_) => return Ok(Response::Execution(Tag::new("ALTER TABLE"))),
        None if rename.if_exists => return Ok(Response::Execution(Tag::new("ALTER TABLE"))),
        None => Err(PgError::undefined_table(rename.table).into_datafusion()),
    };
    renamed.map_err(api)?;
    Ok(Response::Execution(Tag::new("ALTER TABLE")))
}

#[async_trait]
impl Action for RenameTable {
    fn matches(&self, statement: &Statement) -> bool {
        recognise(statement).is_some()
    }

    async fn run(&self, statement: &Statement, context: &SessionContext) -> PgWireResult<Response> {
        match recognise(statement) {
            Some(rename) => run(rename, context).await,
            None => Err(api(DataFusionError::Internal(
                "not a rename statement".into(),
            ))),
        }
    }
}
