//! The rows of a prepared `INSERT … VALUES ($1, $2, …)`, made straight from
//! its parameter values.
//!
//! Drivers send a row-at-a-time load (pandas `to_sql`, SQLAlchemy's and
//! psycopg's `executemany`, pgjdbc's `executeBatch`) as one prepared INSERT
//! executed once per row. Binding each row's parameters into the plan,
//! analyzing it and planning it physically cost about 100 µs a row, most
//! of an INSERT's time. The VALUES such statements hold are parameters,
//! constants and casts of them, so a [`ValuesTemplate`] reduces the plan
//! once to what each column of each row is, and makes the rows of an
//! execution by casting its parameters to the table's column types.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::expr::{Cast, Placeholder};
use datafusion::logical_expr::{Expr, LogicalPlan};

use crate::sqlstate::PgError;

/// How an INSERT's VALUES make each column of each row.
#[derive(Debug)]
pub struct ValuesTemplate {
    /// Per row, per column of the table.
    rows: Vec<Vec<Cell>>,
}

/// How one value of a row is made.
#[derive(Debug)]
enum Cell {
    /// A constant of the statement (NULL for a column it does not list),
    /// of the column's type.
    Constant(ScalarValue),
    /// Parameter `id` (`$1`), cast to each of `casts` in turn; the last is
    /// the column's type.
    Parameter { id: String, casts: Vec<DataType> },
}

impl ValuesTemplate {
    /// The template of `input`, the input of an INSERT into a table of
    /// `table_schema` as planned with its placeholders: `None` unless it is
    /// a projection of a VALUES list whose values are parameters, constants
    /// and casts of them.
    pub fn of(input: &LogicalPlan, table_schema: &Schema) -> Option<Self> {
        let LogicalPlan::Projection(projection) = input else {
            return None;
        };
        let LogicalPlan::Values(values) = projection.input.as_ref() else {
            return None;
        };
        if projection.expr.len() != table_schema.fields().len() {
            return None;
        }
        let rows = values
            .values
            .iter()
            .map(|row| {
                projection
                    .expr
                    .iter()
                    .zip(table_schema.fields())
                    .map(|(expr, field)| {
                        let made = with_row(expr, row, &values.schema)?;
                        Cell::of(made)?.cast(field.data_type())
                    })
                    .collect::<Option<Vec<_>>>()
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self { rows })
    }

    /// The rows made with `params`, as a batch of `table_schema` (the
    /// schema the template was made for); a NULL in a NOT NULL column is
    /// PostgreSQL's 23502.
    pub fn rows(
        &self,
        params: &ParamValues,
        table: &str,
        table_schema: &SchemaRef,
    ) -> Result<RecordBatch> {
        let columns = table_schema
            .fields()
            .iter()
            .enumerate()
            .map(|(column, field)| {
                let values = self
                    .rows
                    .iter()
                    .map(|row| row[column].value(params))
                    .collect::<Result<Vec<_>>>()?;
                if !field.is_nullable() && values.iter().any(ScalarValue::is_null) {
                    return Err(PgError::not_null_violation(field.name(), table).into_datafusion());
                }
                ScalarValue::iter_to_array(values)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(Arc::clone(table_schema), columns)?)
    }
}

/// `expr` (a projection's, over a VALUES list of schema `schema`) with
/// its column references replaced by `row`'s values.
fn with_row(expr: &Expr, row: &[Expr], schema: &datafusion::common::DFSchema) -> Option<Expr> {
    let mut unknown = false;
    let made = expr
        .clone()
        .transform(|e| match e {
            Expr::Column(column) => match schema.index_of_column(&column) {
                Ok(index) => Ok(Transformed::yes(row[index].clone())),
                Err(_) => {
                    unknown = true;
                    Ok(Transformed::no(Expr::Column(column)))
                }
            },
            other => Ok(Transformed::no(other)),
        })
        .ok()?
        .data;
    (!unknown).then_some(made)
}

impl Cell {
    /// How `expr` is made, if it is a parameter, a constant or casts of
    /// them.
    fn of(expr: Expr) -> Option<Self> {
        match expr {
            Expr::Alias(alias) => Self::of(*alias.expr),
            Expr::Literal(value, None) => Some(Self::Constant(value)),
            Expr::Placeholder(Placeholder { id, .. }) => Some(Self::Parameter {
                id,
                casts: Vec::new(),
            }),
            Expr::Cast(Cast { expr, field }) => Self::of(*expr)?.cast(field.data_type()),
            _ => None,
        }
    }

    /// This value cast to `data_type` (a constant is cast now); `None`
    /// when a constant does not cast, which the usual path reports.
    fn cast(self, data_type: &DataType) -> Option<Self> {
        match self {
            Self::Constant(value) if value.data_type() == *data_type => Some(Self::Constant(value)),
            Self::Constant(value) => value.cast_to(data_type).ok().map(Self::Constant),
            Self::Parameter { id, mut casts } => {
                if casts.last() != Some(data_type) {
                    casts.push(data_type.clone());
                }
                Some(Self::Parameter { id, casts })
            }
        }
    }

    /// The value with `params` bound.
    fn value(&self, params: &ParamValues) -> Result<ScalarValue> {
        match self {
            Self::Constant(value) => Ok(value.clone()),
            Self::Parameter { id, casts } => {
                let mut value = params.get_placeholders_with_values(id)?.value;
                for data_type in casts {
                    if value.data_type() != *data_type {
                        value = value.cast_to(data_type)?;
                    }
                }
                Ok(value)
            }
        }
    }
}
