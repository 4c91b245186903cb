//! Consecutive `INSERT … VALUES` of one session into one managed table,
//! written and committed together.
//!
//! Row-at-a-time writers (pandas `to_sql`, SQLAlchemy's `executemany`,
//! pgjdbc's `executeBatch`, a script's INSERTs inside `BEGIN … COMMIT`) send
//! one `INSERT … VALUES` per row. Run as a write of its own, each was a
//! cluster job, a Parquet file and a catalog commit: ~50 ms a row. Here an
//! INSERT whose rows are given by value (it reads no table) has them
//! computed in the frontend and added to the session's [`PendingInserts`]: a
//! [`Sink`] streaming them into Parquet files of a new write directory of the
//! table, [`BATCH_ROWS`] rows at a time, so memory stays flat however many
//! come.
//!
//! The frontend decides when the unit of work ends and calls
//! [`PendingInserts::commit`]: at `COMMIT`, at the `Sync` that ends a batch
//! of extended-protocol messages outside a transaction block, at the end of a
//! simple query outside one, and before any other statement that names a
//! table runs (so a read sees the session's own rows; see
//! [`reads_no_table`]). Committing is one catalog update, as any
//! write's: other sessions see all of the rows or none. `ROLLBACK`, an error
//! in the batch and a lost connection drop what is pending; its files are
//! removed.

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, PoisonError};

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::SchemaProvider;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, ParamValues};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{DmlStatement, LogicalPlan, Values, WriteOp};
use datafusion::physical_plan::collect;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::sqlparser::ast::{visit_relations, SetExpr, Statement};

use crate::catalog::managed_table;
use crate::copy_from::BATCH_ROWS;
use crate::insert_values::ValuesTemplate;
use crate::managed_write::schema_of;
use crate::segment_sink::{Sink, WriteSettings};
use crate::sqlstate::PgError;

/// The INSERTs a session has run and not yet committed (a session config
/// extension; a frontend connection's session has one).
#[derive(Default)]
pub struct PendingInserts {
    pending: Mutex<Option<Pending>>,
}

/// Rows pending for one table.
struct Pending {
    /// The table's directory: tells the table apart from a later one of
    /// the same name.
    location: String,
    table: String,
    table_schema: SchemaRef,
    sink: Sink,
    /// Rows not yet handed to the sink.
    unsent: Vec<RecordBatch>,
    unsent_rows: usize,
}

impl Pending {
    /// Hands the unsent rows to the sink as one batch.
    async fn send(&mut self) -> Result<()> {
        if self.unsent_rows == 0 {
            return Ok(());
        }
        let batch = concat_batches(&self.table_schema, &self.unsent)?;
        self.unsent.clear();
        self.unsent_rows = 0;
        self.sink.send(batch).await
    }

    /// Commits every row; returns how many there were.
    async fn commit(mut self) -> Result<u64> {
        self.send().await?;
        self.sink.commit().await
    }
}

/// The managed table an INSERT appends to.
struct Target {
    schema: Arc<dyn SchemaProvider>,
    table: String,
    /// The table's directory.
    location: String,
}

impl Target {
    /// The table `insert` appends to; `None` unless it is a managed table
    /// and `insert` an append.
    fn of(context: &SessionContext, insert: &DmlStatement) -> Option<Self> {
        if insert.op != WriteOp::Insert(InsertOp::Append) {
            return None;
        }
        let (schema, table) = schema_of(context, &insert.table_name)?;
        let location = managed_table(&schema, &table)?.location;
        Some(Self {
            schema,
            table,
            location,
        })
    }
}

/// Where an INSERT's rows come from.
enum Rows<'a> {
    /// Its input plan, parameters bound: computed by DataFusion.
    Planned,
    /// Its VALUES with these parameters.
    Bound(ValuesTemplate, &'a ParamValues),
}

/// Whether `statement` is an `INSERT` whose rows are a `VALUES` list: one
/// [`PendingInserts::insert`] may take (once planned), and that a session
/// runs without committing what it has pending first.
pub fn is_insert_values(statement: &Statement) -> bool {
    let Statement::Insert(insert) = statement else {
        return false;
    };
    insert.returning.is_none()
        && insert
            .source
            .as_ref()
            .is_some_and(|query| matches!(query.body.as_ref(), SetExpr::Values(_)))
}

/// Whether `statement` is a query that names no table, view or table
/// function (`SELECT 1/0`, `SELECT now()`): it cannot read the rows pending,
/// so they stay pending across it, and an error it raises in a block still
/// drops them with the block, as PostgreSQL's transaction would.
pub fn reads_no_table(statement: &Statement) -> bool {
    matches!(statement, Statement::Query(_))
        && visit_relations(statement, |_| ControlFlow::Break(())).is_continue()
}

impl PendingInserts {
    /// The pending inserts of the session configured by `config`, if it
    /// keeps them.
    pub fn of(config: &SessionConfig) -> Option<Arc<Self>> {
        config.get_extension::<Self>()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Pending>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self) -> Option<Pending> {
        self.lock().take()
    }

    /// Whether rows are pending.
    pub fn holds_rows(&self) -> bool {
        self.lock().is_some()
    }

    /// Adds the rows of `insert` (planned, its parameters bound) to what is
    /// pending, committing first what is pending for another table; returns
    /// how many rows it adds. `None` when `insert` is not one this takes: not
    /// an append to a managed table, or its rows read a table. An error drops
    /// everything pending, as it fails the transaction (or batch) it is in.
    pub async fn insert(
        &self,
        context: &SessionContext,
        insert: &DmlStatement,
    ) -> Option<Result<u64>> {
        if reads_tables(&insert.input) {
            return None;
        }
        let target = Target::of(context, insert)?;
        Some(self.add(context, insert, target, Rows::Planned).await)
    }

    /// [`Self::insert`] for `insert` planned with its placeholders and
    /// executed with `params`: its rows are made straight from the
    /// parameters ([`ValuesTemplate`]). `None` when `insert` is not one this
    /// takes, or its VALUES are more than parameters, constants and casts of
    /// them (bind the parameters and call [`Self::insert`] then).
    pub async fn insert_prepared(
        &self,
        context: &SessionContext,
        insert: &DmlStatement,
        params: &ParamValues,
    ) -> Option<Result<u64>> {
        let target = Target::of(context, insert)?;
        let table_schema = match &*self.lock() {
            Some(pending) if pending.location == target.location => {
                Some(Arc::clone(&pending.table_schema))
            }
            _ => None,
        };
        let table_schema = match table_schema {
            Some(schema) => schema,
            None => context
                .table_provider(insert.table_name.clone())
                .await
                .ok()?
                .schema(),
        };
        let template = ValuesTemplate::of(&insert.input, &table_schema)?;
        let rows = Rows::Bound(template, params);
        Some(self.add(context, insert, target, rows).await)
    }

    async fn add(
        &self,
        context: &SessionContext,
        insert: &DmlStatement,
        target: Target,
        rows: Rows<'_>,
    ) -> Result<u64> {
        let Target {
            schema,
            table,
            location,
        } = target;
        let pending = match self.take() {
            Some(pending) if pending.location == location => Some(pending),
            Some(other) => {
                other.commit().await?;
                None
            }
            None => None,
        };
        let mut pending = match pending {
            Some(pending) => pending,
            None => {
                let table_schema = context
                    .table_provider(insert.table_name.clone())
                    .await?
                    .schema();
                let sink = Sink::open(
                    &WriteSettings::of(context),
                    schema,
                    &table,
                    &location,
                    Arc::clone(&table_schema),
                )?;
                Pending {
                    location,
                    table,
                    table_schema,
                    sink,
                    unsent: Vec::new(),
                    unsent_rows: 0,
                }
            }
        };
        let batch = match rows {
            Rows::Planned => {
                rows_of(
                    context,
                    &insert.input,
                    &pending.table,
                    &pending.table_schema,
                )
                .await?
            }
            Rows::Bound(template, params) => {
                template.rows(params, &pending.table, &pending.table_schema)?
            }
        };
        let rows = batch.num_rows();
        pending.unsent.push(batch);
        pending.unsent_rows += rows;
        if pending.unsent_rows >= BATCH_ROWS {
            pending.send().await?;
        }
        *self.lock() = Some(pending);
        Ok(rows as u64)
    }

    /// Commits what is pending in one catalog update; returns the rows
    /// committed. On error nothing is kept.
    pub async fn commit(&self) -> Result<u64> {
        match self.take() {
            Some(pending) => pending.commit().await,
            None => Ok(0),
        }
    }

    /// Drops what is pending; its files are removed.
    pub fn discard(&self) {
        drop(self.take());
    }
}

/// Whether `plan` (or a subquery of it) reads a table.
fn reads_tables(plan: &LogicalPlan) -> bool {
    let mut reads = false;
    let walked = plan.apply_with_subqueries(|node| {
        reads = matches!(node, LogicalPlan::TableScan(_));
        Ok(if reads {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    reads || walked.is_err()
}

/// The rows `input` (an INSERT's input, reading no table) computes, as a
/// batch of `table`'s schema; a NULL in a NOT NULL column is PostgreSQL's
/// 23502.
async fn rows_of(
    context: &SessionContext,
    input: &LogicalPlan,
    table: &str,
    table_schema: &SchemaRef,
) -> Result<RecordBatch> {
    let state = context.state();
    let analyzed = state.analyzer().execute_and_check(
        nullable_values(input.clone())?,
        state.config_options(),
        |_, _| {},
    )?;
    let physical = DefaultPhysicalPlanner::default()
        .create_physical_plan(&analyzed, &state)
        .await?;
    let output = physical.schema();
    let batches = collect(physical, state.task_ctx()).await?;
    let batch = concat_batches(&output, &batches)?;
    if batch.num_columns() != table_schema.fields().len() {
        return Err(DataFusionError::Internal(format!(
            "INSERT into {table} computed {} columns for its {}",
            batch.num_columns(),
            table_schema.fields().len()
        )));
    }
    for (field, column) in table_schema.fields().iter().zip(batch.columns()) {
        if !field.is_nullable() && column.null_count() > 0 {
            return Err(PgError::not_null_violation(field.name(), table).into_datafusion());
        }
    }
    Ok(RecordBatch::try_new(
        Arc::clone(table_schema),
        batch.columns().to_vec(),
    )?)
}

/// `plan` with its `VALUES` lists declared nullable: DataFusion gives them
/// the nullability of the table's columns, and a NULL in one then fails
/// with Arrow's message rather than PostgreSQL's, which [`rows_of`] gives.
fn nullable_values(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up(|node| match node {
        LogicalPlan::Values(values) => {
            let fields = values
                .schema
                .iter()
                .map(|(qualifier, field)| {
                    let field = field.as_ref().clone().with_nullable(true);
                    (qualifier.cloned(), Arc::new(field))
                })
                .collect();
            let schema = DFSchema::new_with_metadata(fields, values.schema.metadata().clone())?;
            Ok(Transformed::yes(LogicalPlan::Values(Values {
                schema: Arc::new(schema),
                values: values.values,
            })))
        }
        other => Ok(Transformed::yes(other.recompute_schema()?)),
    })
    .map(|transformed| transformed.data)
}
