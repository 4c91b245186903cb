//! Plans kept between executions read the tables as they are now.
//!
//! A prepared statement's logical plan holds the table providers it was
//! planned with. A managed table gets a new provider each time a write
//! commits (its file list is part of it), so a plan kept across an `INSERT`
//! would go on reading the old files: a dashboard's prepared query would
//! never see new rows. Before each execution, [`with_current_tables`] puts
//! the catalog's current provider of each scanned table in the plan.

use std::collections::HashMap;
use std::sync::Arc;

use crate::sqlstate::{PgError, SqlState};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
use datafusion::common::TableReference;
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{LogicalPlan, TableScan};
use datafusion::prelude::SessionContext;

/// The message of the error a kept plan ends with when a table it reads
/// changed its columns; the client prepares the statement again.
pub const TABLE_CHANGED: &str = "changed its columns since the statement was prepared";

/// What [`with_current_tables`] does with a scan of a name the catalog
/// does not hold: a table function's, or a table dropped since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownNames {
    /// The scan keeps its provider.
    KeepScan,
    /// The plan fails (its query is to be planned again).
    Fail,
}

/// `plan` reading each table it scans through the provider the session's
/// catalog holds now (after catching up with other frontends' commits).
/// Scans of names the catalog does not hold are handled as `unknown` says.
/// A table whose columns changed fails the plan with [`TABLE_CHANGED`].
pub async fn with_current_tables(
    plan: LogicalPlan,
    state: &SessionState,
    unknown: UnknownNames,
) -> Result<LogicalPlan> {
    let mut scanned: HashMap<TableReference, Option<Arc<dyn TableProvider>>> = HashMap::new();
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            scanned.entry(scan.table_name.clone()).or_default();
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if scanned.is_empty() {
        return Ok(plan);
    }
    crate::catalog::refresh_catalogs(state.catalog_list().as_ref()).await;
    for (name, current) in &mut scanned {
        if let Ok(schema) = state.schema_for_ref(name.clone()) {
            *current = schema.table(name.table()).await?;
        }
        if current.is_none() && unknown == UnknownNames::Fail {
            return Err(DataFusionError::Plan(format!(
                "table \"{name}\" is not in the catalog"
            )));
        }
    }
    plan.transform_up_with_subqueries(|node| match node {
        LogicalPlan::TableScan(scan) => rebind(scan, &scanned),
        other => Ok(Transformed::no(other)),
    })
    .map(|rebound| rebound.data)
}

/// Whether every table `plan` scans is still in the catalog of `context`
/// with the columns the plan reads: then [`with_current_tables`] would
/// succeed (with [`UnknownNames::Fail`]). Cheaper than it: no copy of the
/// session state, no new plan.
pub async fn tables_kept_columns(plan: &LogicalPlan, context: &SessionContext) -> bool {
    let mut scans: Vec<(TableReference, SchemaRef)> = Vec::new();
    let walked = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            if !scans.iter().any(|(name, _)| *name == scan.table_name) {
                scans.push((scan.table_name.clone(), scan.source.schema()));
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if walked.is_err() {
        return false;
    }
    if scans.is_empty() {
        return true;
    }
    let (catalogs, default_catalog, default_schema) = {
        let state = context.state_ref();
        let state = state.read();
        let options = &state.config_options().catalog;
        (
            Arc::clone(state.catalog_list()),
            options.default_catalog.clone(),
            options.default_schema.clone(),
        )
    };
    crate::catalog::refresh_catalogs(catalogs.as_ref()).await;
    for (name, columns) in scans {
        let resolved = name.clone().resolve(&default_catalog, &default_schema);
        let Some(schema) = catalogs
            .catalog(&resolved.catalog)
            .and_then(|catalog| catalog.schema(&resolved.schema))
        else {
            return false;
        };
        match schema.table(&resolved.table).await {
            Ok(Some(current)) if current.schema() == columns => {}
            _ => return false,
        }
    }
    true
}

/// `scan` through the current provider of its table in `current`.
fn rebind(
    mut scan: TableScan,
    current: &HashMap<TableReference, Option<Arc<dyn TableProvider>>>,
) -> Result<Transformed<LogicalPlan>> {
    let Some(Some(provider)) = current.get(&scan.table_name) else {
        return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
    };
    let same = source_as_provider(&scan.source)
        .is_ok_and(|kept| std::ptr::addr_eq(Arc::as_ptr(&kept), Arc::as_ptr(provider)));
    if same {
        return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
    }
    if provider.schema() != scan.source.schema() {
        return Err(PgError::new(
            SqlState::FEATURE_NOT_SUPPORTED,
            format!(
                "table \"{}\" {TABLE_CHANGED}: prepare it again",
                scan.table_name
            ),
        )
        .into_datafusion());
    }
    scan.source = provider_as_source(Arc::clone(provider));
    Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
}
