//! `pg_catalog` tables with the columns and column types clients expect.
//!
//! The vector columns of `pg_catalog.pg_index` and `pg_catalog.pg_constraint`
//! are arrays, and columns that datafusion-pg-catalog leaves out and Sluice
//! has no values for (`pg_class.reloptions`) are there, NULL.
//!
//! datafusion-pg-catalog ships both tables as a static dump whose
//! `int2vector`, `oidvector` and array columns (`indkey`, `indoption`,
//! `conkey`, …) are text (`"1 2"`, `"[2, 20, 3]"`). Clients reflect
//! constraints and indexes by unnesting them (SQLAlchemy's inspector:
//! `unnest(pg_index.indkey)`, `enumerate(row["indoption"])`), which needs
//! arrays. The `pg_catalog` schema is wrapped so that those two tables come
//! with the columns parsed into lists: `int2` ones as `smallint[]`, `oid`
//! ones as the catalog's oid type.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, AsArray, ListBuilder, PrimitiveBuilder, RecordBatch};
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Field, Int16Type, Int32Type, Schema, SchemaRef,
};
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_expr::expressions::{Column, Literal};
use datafusion::physical_expr::projection::ProjectionExpr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::ExecutionPlan;
use tokio::sync::OnceCell;

/// The element type of each vector column, by table.
const VECTOR_COLUMNS: &[(&str, &[(&str, Element)])] = &[
    (
        "pg_index",
        &[
            ("indkey", Element::Int2),
            ("indcollation", Element::Oid),
            ("indclass", Element::Oid),
            ("indoption", Element::Int2),
        ],
    ),
    (
        "pg_constraint",
        &[
            ("conkey", Element::Int2),
            ("confkey", Element::Int2),
            ("conpfeqop", Element::Oid),
            ("conppeqop", Element::Oid),
            ("conffeqop", Element::Oid),
            ("confdelsetcols", Element::Int2),
            ("conexclop", Element::Oid),
        ],
    ),
];

/// Columns some tables lack, added NULL: `(table, column)`, all `text[]`.
const NULL_COLUMNS: &[(&str, &str)] = &[("pg_class", "reloptions")];

/// The element type of a vector column.
#[derive(Debug, Clone, Copy)]
enum Element {
    /// `int2vector`, `smallint[]`.
    Int2,
    /// `oidvector`, `oid[]` (the catalog keeps oids as `Int32`).
    Oid,
}

/// Wraps the `pg_catalog` schema of catalog `catalog` in `context` so that
/// `pg_index` and `pg_constraint` have their vector columns as arrays.
pub fn install(context: &SessionContext, catalog: &str) -> Result<()> {
    let catalog = context.catalog(catalog).ok_or_else(|| {
        DataFusionError::Configuration(format!("no catalog {catalog} to type pg_index in"))
    })?;
    let inner = catalog.schema("pg_catalog").ok_or_else(|| {
        DataFusionError::Configuration("no pg_catalog schema to type pg_index in".into())
    })?;
    let typed = VECTOR_COLUMNS
        .iter()
        .map(|(table, _)| (*table, OnceCell::new()))
        .collect();
    catalog.register_schema("pg_catalog", Arc::new(WithTypedVectors { inner, typed }))?;
    Ok(())
}

/// A `pg_catalog` schema whose vector columns are arrays.
#[derive(Debug)]
struct WithTypedVectors {
    inner: Arc<dyn SchemaProvider>,
    /// The converted tables, made on first use.
    typed: HashMap<&'static str, OnceCell<Arc<dyn TableProvider>>>,
}

#[async_trait]
impl SchemaProvider for WithTypedVectors {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let lower = name.to_ascii_lowercase();
        let added: Vec<&str> = NULL_COLUMNS
            .iter()
            .filter(|(table, _)| *table == lower)
            .map(|(_, column)| *column)
            .collect();
        if !added.is_empty() {
            let Some(table) = self.inner.table(name).await? else {
                return Ok(None);
            };
            return Ok(Some(Arc::new(WithNullColumns::new(table, &added))));
        }
        let Some((cell, columns)) = self.typed.get(lower.as_str()).and_then(|cell| {
            let columns = VECTOR_COLUMNS.iter().find(|(table, _)| *table == lower)?.1;
            Some((cell, columns))
        }) else {
            return self.inner.table(name).await;
        };
        let Some(table) = self.inner.table(name).await? else {
            return Ok(None);
        };
        let typed = cell
            .get_or_try_init(|| async { typed_table(table, columns) })
            .await?;
        Ok(Some(Arc::clone(typed)))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// `table` (a static in-memory table) with `columns` parsed into lists; a
/// table of another kind is returned as it is.
fn typed_table(
    table: Arc<dyn TableProvider>,
    columns: &[(&str, Element)],
) -> Result<Arc<dyn TableProvider>> {
    let Some(memory) = table.downcast_ref::<MemTable>() else {
        return Ok(table);
    };
    let schema = table.schema();
    let element_of = |field: &Field| {
        columns
            .iter()
            .find(|(name, _)| *name == field.name() && field.data_type() == &DataType::Utf8)
            .map(|(_, element)| *element)
    };
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|field| match element_of(field) {
            Some(element) => Field::new(field.name(), list_type(element), true),
            None => field.as_ref().clone(),
        })
        .collect();
    let typed_schema: SchemaRef = Arc::new(Schema::new(fields));
    let mut partitions = Vec::with_capacity(memory.batches.len());
    for partition in &memory.batches {
        let batches = partition.try_read().map_err(|_| {
            DataFusionError::Internal("a static pg_catalog table is being written".into())
        })?;
        let typed = batches
            .iter()
            .map(|batch| {
                let arrays = schema
                    .fields()
                    .iter()
                    .zip(batch.columns())
                    .map(|(field, array)| match element_of(field) {
                        Some(element) => parse_vectors(array, element),
                        None => Arc::clone(array),
                    })
                    .collect();
                Ok(RecordBatch::try_new(Arc::clone(&typed_schema), arrays)?)
            })
            .collect::<Result<Vec<_>>>()?;
        partitions.push(typed);
    }
    Ok(Arc::new(MemTable::try_new(typed_schema, partitions)?))
}

fn list_type(element: Element) -> DataType {
    let item = match element {
        Element::Int2 => DataType::Int16,
        Element::Oid => DataType::Int32,
    };
    DataType::List(Arc::new(Field::new_list_field(item, true)))
}

/// The numbers of one vector's text: `1 2` (a vector), `{1,2}` or `[1, 2]`
/// (an array). Anything that is not a number is left out.
fn numbers<T: std::str::FromStr>(text: &str) -> impl Iterator<Item = T> + '_ {
    text.split(|c: char| c == ',' || c.is_whitespace() || "{}[]".contains(c))
        .filter(|part| !part.is_empty())
        .filter_map(|part| part.parse().ok())
}

/// The text column `array` parsed into lists of `element`.
fn parse_vectors(array: &ArrayRef, element: Element) -> ArrayRef {
    match element {
        Element::Int2 => lists_of::<Int16Type>(array),
        Element::Oid => lists_of::<Int32Type>(array),
    }
}

/// The text column `array` parsed into lists of `T`.
fn lists_of<T: ArrowPrimitiveType>(array: &ArrayRef) -> ArrayRef
where
    T::Native: std::str::FromStr,
{
    let mut builder = ListBuilder::new(PrimitiveBuilder::<T>::new());
    for text in array.as_string::<i32>() {
        match text {
            Some(text) => {
                builder
                    .values()
                    .extend(numbers::<T::Native>(text).map(Some));
                builder.append(true);
            }
            None => builder.append_null(),
        }
    }
    Arc::new(builder.finish())
}

/// A table with NULL columns added after its own.
#[derive(Debug)]
struct WithNullColumns {
    inner: Arc<dyn TableProvider>,
    schema: SchemaRef,
}

impl WithNullColumns {
    fn new(inner: Arc<dyn TableProvider>, added: &[&str]) -> Self {
        let own = inner.schema();
        let fields = own
            .fields()
            .iter()
            .map(|field| field.as_ref().clone())
            .chain(
                added
                    .iter()
                    .map(|name| Field::new(*name, text_array(), true)),
            );
        let schema = Arc::new(Schema::new_with_metadata(
            fields.collect::<Vec<_>>(),
            own.metadata().clone(),
        ));
        Self { inner, schema }
    }
}

fn text_array() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

#[async_trait]
impl TableProvider for WithNullColumns {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = self.inner.scan(state, None, &[], limit).await?;
        let own = input.schema().fields().len();
        let all: Vec<usize> = (0..self.schema.fields().len()).collect();
        let columns = projection.unwrap_or(&all);
        let exprs = columns
            .iter()
            .map(|&index| {
                let field = self.schema.field(index);
                let expr: Arc<dyn PhysicalExpr> = if index < own {
                    Arc::new(Column::new(field.name(), index))
                } else {
                    Arc::new(Literal::new(ScalarValue::try_from(field.data_type())?))
                };
                Ok(ProjectionExpr::new(expr, field.name().clone()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(ProjectionExec::try_new(exprs, input)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, StringArray};

    #[test]
    fn vectors_and_arrays_parse_into_lists() {
        let texts: ArrayRef = Arc::new(StringArray::from(vec![
            Some("1 2"),
            Some("[2, 20, 3]"),
            Some("{4,5}"),
            Some(""),
            None,
        ]));
        let lists = parse_vectors(&texts, Element::Int2);
        let lists = lists.as_list::<i32>();
        let values = |row: usize| -> Vec<i16> {
            lists
                .value(row)
                .as_primitive::<Int16Type>()
                .values()
                .to_vec()
        };
        assert_eq!(values(0), vec![1, 2]);
        assert_eq!(values(1), vec![2, 20, 3]);
        assert_eq!(values(2), vec![4, 5]);
        assert!(values(3).is_empty());
        assert!(lists.is_null(4));
    }
}
