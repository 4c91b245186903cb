//! Writes to managed tables: `CREATE TABLE [AS SELECT]`, `INSERT INTO`,
//! `INSERT OVERWRITE`, `TRUNCATE`.
//!
//! DataFusion plans each statement as usual (column types, casts to the
//! table's schema). Instead of running the plan's in-memory table or its
//! table sink, the rows are written as a `COPY … TO` of the plan's input into
//! a new write directory of the table: a query like any other, so reading
//! files runs on the cluster, and each task of the write's last stage writes
//! its rows where it runs, into a segment of its own
//! ([`crate::parallel_write`]). Once the copy has finished, the catalog
//! records the segments in one update (see [`crate::catalog::managed`]):
//! readers see the table before the write or after it, never part of it, and
//! a write that fails leaves only files that the next start removes.
//!
//! `CREATE TEMPORARY TABLE`, and every table when the server has no
//! warehouse, stay in-memory tables of the frontend.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::catalog::SchemaProvider;
use datafusion::common::TableReference;
use datafusion::datasource::file_format::format_as_file_type;
use datafusion::datasource::file_format::parquet::ParquetFormatFactory;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::dml::{CopyTo, InsertOp};
use datafusion::logical_expr::{
    CreateMemoryTable, DdlStatement, DmlStatement, LogicalPlan, WriteOp,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement;

use crate::catalog::managed::{segment_url, unique_id, write_directories};
use crate::catalog::{
    commit_write, create_managed_table, discard_write, managed_table, new_table_location,
    SegmentChange,
};
use crate::parallel_write::{WriteAnswer, COMMITTED_WRITE_PREFIX};
use crate::segment_compaction::compact_later;
use crate::segment_sink::WriteSettings;
use crate::sqlstate::PgError;

/// Whether `statement` may write a managed table (what it writes is known
/// once it is planned: [`ManagedWrite::of`]).
pub fn may_write(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::CreateTable(_) | Statement::Insert(_) | Statement::Truncate(_)
    )
}

/// What a [`ManagedWrite`] did, for the command tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// `CREATE TABLE` without rows (or `IF NOT EXISTS` of an existing one).
    Created,
    /// `CREATE TABLE … AS SELECT`.
    CreatedAs {
        /// Rows written.
        rows: u64,
    },
    /// `INSERT`, `INSERT OVERWRITE`.
    Inserted {
        /// Rows written.
        rows: u64,
    },
    /// `TRUNCATE`.
    Truncated,
}

/// A planned write to a managed table.
pub enum ManagedWrite {
    /// `CREATE TABLE`, with the rows of `AS SELECT` if any.
    Create(CreateMemoryTable),
    /// `INSERT`, `INSERT OVERWRITE`, `TRUNCATE`.
    Change(DmlStatement),
}

/// The schema provider `table` (as written in the statement) lives in.
pub(crate) fn schema_of(
    context: &SessionContext,
    table: &TableReference,
) -> Option<(Arc<dyn SchemaProvider>, String)> {
    let table = {
        let state = context.state_ref();
        let state = state.read();
        let defaults = &state.config_options().catalog;
        table
            .clone()
            .resolve(&defaults.default_catalog, &defaults.default_schema)
    };
    let schema = context.catalog(&table.catalog)?.schema(&table.schema)?;
    Some((schema, table.table.to_string()))
}

impl ManagedWrite {
    /// What `plan` writes, when it writes a managed table (or creates one).
    pub fn of(context: &SessionContext, plan: &LogicalPlan) -> Option<Self> {
        match plan {
            LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(create)) if !create.temporary => {
                let (schema, name) = schema_of(context, &create.name)?;
                new_table_location(&schema, &name)?;
                Some(Self::Create(create.clone()))
            }
            LogicalPlan::Dml(dml)
                if matches!(
                    dml.op,
                    WriteOp::Insert(InsertOp::Append | InsertOp::Overwrite) | WriteOp::Truncate
                ) =>
            {
                let (schema, name) = schema_of(context, &dml.table_name)?;
                managed_table(&schema, &name)?;
                Some(Self::Change(dml.clone()))
            }
            _ => None,
        }
    }

    /// Writes the rows and commits them to the catalog in one update.
    pub async fn run(self, context: &SessionContext) -> Result<Written> {
        match self {
            Self::Create(create) => {
                let (schema, name) = schema_of(context, &create.name).ok_or_else(|| {
                    DataFusionError::Plan(format!("no schema for {}", create.name))
                })?;
                if schema.table_exist(&name) {
                    if create.if_not_exists {
                        return Ok(Written::Created);
                    }
                    if !create.or_replace {
                        return Err(PgError::duplicate_table(&create.name).into_datafusion());
                    }
                }
                let location = new_table_location(&schema, &name).ok_or_else(|| {
                    DataFusionError::Plan("the server has no warehouse for tables".into())
                })?;
                let table_schema = Arc::clone(create.input.schema().inner());
                let created = async {
                    let (segments, written) = if is_empty(&create.input) {
                        (Vec::new(), Written::Created)
                    } else {
                        let (segments, rows) =
                            write_segments(context, &schema, create.input, &location).await?;
                        (segments, Written::CreatedAs { rows })
                    };
                    create_managed_table(
                        &schema,
                        &name,
                        &location,
                        table_schema,
                        segments,
                        create.or_replace,
                    )
                    .await?;
                    Ok(written)
                };
                created
                    .await
                    .inspect_err(|_| discard_write(&schema, &location))
            }
            Self::Change(dml) => {
                let (schema, name) = schema_of(context, &dml.table_name).ok_or_else(|| {
                    DataFusionError::Plan(format!("no schema for {}", dml.table_name))
                })?;
                let table = managed_table(&schema, &name).ok_or_else(|| {
                    DataFusionError::Plan(format!("table {} not found", dml.table_name))
                })?;
                let (change, written) = match dml.op {
                    WriteOp::Truncate => (SegmentChange::Replace(Vec::new()), Written::Truncated),
                    WriteOp::Insert(op) => {
                        let (segments, rows) = write_segments(
                            context,
                            &schema,
                            Arc::clone(&dml.input),
                            &table.location,
                        )
                        .await?;
                        let change = if op == InsertOp::Overwrite {
                            SegmentChange::Replace(segments)
                        } else {
                            SegmentChange::Append(segments)
                        };
                        (change, Written::Inserted { rows })
                    }
                    _ => unreachable!("ManagedWrite::of accepts inserts and truncates"),
                };
                let directories = match &change {
                    SegmentChange::Append(segments) | SegmentChange::Replace(segments) => {
                        write_directories(&table.location, segments)
                    }
                    SegmentChange::Compact { into, .. } => {
                        write_directories(&table.location, std::slice::from_ref(into))
                    }
                };
                commit_write(&schema, &name, &table.location, change)
                    .await
                    .inspect_err(|_| {
                        for url in &directories {
                            discard_write(&schema, url);
                        }
                    })?;
                compact_later(&WriteSettings::of(context), &schema, &name);
                Ok(written)
            }
        }
    }
}

/// The plan of `statement`, planned as DataFusion plans SQL.
pub async fn plan(context: &SessionContext, statement: &Statement) -> Result<LogicalPlan> {
    context
        .state()
        .statement_to_plan(DFStatement::Statement(Box::new(statement.clone())))
        .await
}

/// Writes the rows of `input` into a new write directory of the table at
/// `location` in `schema`; returns the segments it made and the rows written.
/// What a failed write left is removed.
async fn write_segments(
    context: &SessionContext,
    schema: &Arc<dyn SchemaProvider>,
    input: Arc<LogicalPlan>,
    location: &str,
) -> Result<(Vec<String>, u64)> {
    let write = format!("{COMMITTED_WRITE_PREFIX}write-{}", unique_id());
    let url = segment_url(location, &write);
    let copy = LogicalPlan::Copy(CopyTo::new(
        input,
        url.clone(),
        Vec::new(),
        format_as_file_type(Arc::new(ParquetFormatFactory::new())),
        HashMap::new(),
    ));
    let written = async { context.execute_logical_plan(copy).await?.collect().await };
    match written.await {
        Ok(batches) => {
            let answer = WriteAnswer::read(&batches);
            // A parallel write's tasks each wrote a directory inside the
            // write's; those they reported are the segments.
            let segments = match answer.directories {
                Some(directories) => directories
                    .iter()
                    .filter_map(|dir| dir.trim_end_matches('/').rsplit('/').next())
                    .map(|part| format!("{write}/{part}"))
                    .collect(),
                None => vec![write],
            };
            Ok((segments, answer.rows))
        }
        Err(e) => {
            discard_write(schema, &url);
            Err(e)
        }
    }
}

/// Whether `plan` produces no rows by construction (`CREATE TABLE` without
/// `AS`).
fn is_empty(plan: &LogicalPlan) -> bool {
    matches!(plan, LogicalPlan::EmptyRelation(empty) if !empty.produce_one_row)
}
