//! `information_schema.columns` as PostgreSQL defines it: SQL type names in
//! `data_type`, PostgreSQL's in `udt_name`, precision and scale where the SQL
//! standard has them. DataFusion's own table names Arrow types (`Int64`,
//! `Utf8`), which tools that build queries from it (Grafana's query builder,
//! dbt, hand-written catalog scripts) do not understand.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Int32Builder, RecordBatch, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{CatalogProviderList, Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;

/// How PostgreSQL describes a column's type in `information_schema.columns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgColumnType {
    /// SQL name (`bigint`, `character varying`, `ARRAY`, …).
    pub data_type: &'static str,
    /// PostgreSQL's type name (`int8`, `varchar`, `_int8`, …).
    pub udt_name: String,
    /// Digits (binary for integers and floats, decimal for numeric).
    pub numeric_precision: Option<i32>,
    /// 2 or 10, with `numeric_precision`.
    pub numeric_precision_radix: Option<i32>,
    /// Fractional digits of exact numeric types.
    pub numeric_scale: Option<i32>,
    /// Fractional second digits of date and time types.
    pub datetime_precision: Option<i32>,
}

impl PgColumnType {
    fn named(data_type: &'static str, udt_name: &str) -> Self {
        Self {
            data_type,
            udt_name: udt_name.to_string(),
            numeric_precision: None,
            numeric_precision_radix: None,
            numeric_scale: None,
            datetime_precision: None,
        }
    }

    fn numeric(mut self, precision: i32, radix: i32, scale: Option<i32>) -> Self {
        self.numeric_precision = Some(precision);
        self.numeric_precision_radix = Some(radix);
        self.numeric_scale = scale;
        self
    }

    fn datetime(mut self, precision: i32) -> Self {
        self.datetime_precision = Some(precision);
        self
    }
}

fn fractional_digits(unit: &TimeUnit) -> i32 {
    match unit {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 3,
        // PostgreSQL keeps microseconds at most.
        TimeUnit::Microsecond | TimeUnit::Nanosecond => 6,
    }
}

/// The PostgreSQL description of an Arrow type, matching the type the wire
/// protocol reports for it.
pub fn pg_column_type(data_type: &DataType) -> PgColumnType {
    let named = PgColumnType::named;
    match data_type {
        DataType::Boolean => named("boolean", "bool"),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => {
            named("smallint", "int2").numeric(16, 2, Some(0))
        }
        DataType::Int32 | DataType::UInt16 => named("integer", "int4").numeric(32, 2, Some(0)),
        DataType::Int64 | DataType::UInt32 => named("bigint", "int8").numeric(64, 2, Some(0)),
        DataType::UInt64 => named("numeric", "numeric").numeric(20, 10, Some(0)),
        DataType::Float16 | DataType::Float32 => named("real", "float4").numeric(24, 2, None),
        DataType::Float64 => named("double precision", "float8").numeric(53, 2, None),
        DataType::Decimal32(precision, scale)
        | DataType::Decimal64(precision, scale)
        | DataType::Decimal128(precision, scale)
        | DataType::Decimal256(precision, scale) => {
            named("numeric", "numeric").numeric(*precision as i32, 10, Some(*scale as i32))
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => named("text", "text"),
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => named("bytea", "bytea"),
        DataType::Date32 | DataType::Date64 => named("date", "date").datetime(0),
        DataType::Timestamp(unit, None) => {
            named("timestamp without time zone", "timestamp").datetime(fractional_digits(unit))
        }
        DataType::Timestamp(unit, Some(_)) => {
            named("timestamp with time zone", "timestamptz").datetime(fractional_digits(unit))
        }
        DataType::Time32(unit) | DataType::Time64(unit) => {
            named("time without time zone", "time").datetime(fractional_digits(unit))
        }
        DataType::Interval(_) | DataType::Duration(_) => named("interval", "interval").datetime(6),
        DataType::List(element)
        | DataType::LargeList(element)
        | DataType::ListView(element)
        | DataType::LargeListView(element)
        | DataType::FixedSizeList(element, _) => {
            let element = pg_column_type(element.data_type());
            named("ARRAY", &format!("_{}", element.udt_name))
        }
        DataType::Null => named("text", "text"),
        DataType::Dictionary(_, values) => pg_column_type(values),
        other => named("USER-DEFINED", &other.to_string().to_ascii_lowercase()),
    }
}

/// `information_schema.columns` over every table of every catalog.
#[derive(Debug)]
pub struct ColumnsTable {
    catalogs: Arc<dyn CatalogProviderList>,
    schema: SchemaRef,
}

const KEY_COLUMNS: [&str; 4] = ["table_catalog", "table_schema", "table_name", "column_name"];

impl ColumnsTable {
    /// The table over `catalogs`.
    pub fn new(catalogs: Arc<dyn CatalogProviderList>) -> Self {
        let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
        let number = |name: &str| Field::new(name, DataType::Int32, true);
        let mut fields: Vec<Field> = KEY_COLUMNS.iter().map(|name| text(name, false)).collect();
        fields.extend([
            Field::new("ordinal_position", DataType::Int32, false),
            text("column_default", true),
            text("is_nullable", false),
            text("data_type", false),
            number("character_maximum_length"),
            number("character_octet_length"),
            number("numeric_precision"),
            number("numeric_precision_radix"),
            number("numeric_scale"),
            number("datetime_precision"),
            text("interval_type", true),
            text("collation_name", true),
            text("udt_catalog", false),
            text("udt_schema", false),
            text("udt_name", false),
            text("is_identity", false),
            text("is_generated", false),
            text("is_updatable", false),
        ]);
        Self {
            catalogs,
            schema: Arc::new(Schema::new(fields)),
        }
    }

    async fn batch(&self) -> Result<RecordBatch> {
        let mut text: Vec<StringBuilder> = (0..4).map(|_| StringBuilder::new()).collect();
        let mut position = Int32Builder::new();
        let mut nullable = StringBuilder::new();
        let mut data_type = StringBuilder::new();
        let mut numbers: Vec<Int32Builder> = (0..6).map(|_| Int32Builder::new()).collect();
        let mut udt_catalog = StringBuilder::new();
        let mut udt_name = StringBuilder::new();
        let mut rows = 0;
        for catalog_name in self.catalogs.catalog_names() {
            let Some(catalog) = self.catalogs.catalog(&catalog_name) else {
                continue;
            };
            for schema_name in catalog.schema_names() {
                let Some(schema) = catalog.schema(&schema_name) else {
                    continue;
                };
                for table_name in schema.table_names() {
                    let Some(table) = schema.table(&table_name).await? else {
                        continue;
                    };
                    for (index, field) in table.schema().fields().iter().enumerate() {
                        let pg = pg_column_type(field.data_type());
                        for (builder, value) in text.iter_mut().zip([
                            &catalog_name,
                            &schema_name,
                            &table_name,
                            field.name(),
                        ]) {
                            builder.append_value(value);
                        }
                        position.append_value(index as i32 + 1);
                        nullable.append_value(if field.is_nullable() { "YES" } else { "NO" });
                        data_type.append_value(pg.data_type);
                        for (builder, value) in numbers.iter_mut().zip([
                            None,
                            None,
                            pg.numeric_precision,
                            pg.numeric_precision_radix,
                            pg.numeric_scale,
                            pg.datetime_precision,
                        ]) {
                            builder.append_option(value);
                        }
                        udt_catalog.append_value(&catalog_name);
                        udt_name.append_value(&pg.udt_name);
                        rows += 1;
                    }
                }
            }
        }
        let constant = |value: Option<&str>| -> ArrayRef {
            Arc::new(
                std::iter::repeat_n(value, rows).collect::<datafusion::arrow::array::StringArray>(),
            )
        };
        let mut columns: Vec<ArrayRef> = text
            .iter_mut()
            .map(|builder| Arc::new(builder.finish()) as ArrayRef)
            .collect();
        columns.push(Arc::new(position.finish()));
        columns.push(constant(None)); // column_default
        columns.push(Arc::new(nullable.finish()));
        columns.push(Arc::new(data_type.finish()));
        columns.extend(
            numbers
                .iter_mut()
                .map(|builder| Arc::new(builder.finish()) as ArrayRef),
        );
        columns.push(constant(None)); // interval_type
        columns.push(constant(None)); // collation_name
        columns.push(Arc::new(udt_catalog.finish()));
        columns.push(constant(Some("pg_catalog"))); // udt_schema
        columns.push(Arc::new(udt_name.finish()));
        columns.push(constant(Some("NO"))); // is_identity
        columns.push(constant(Some("NEVER"))); // is_generated
        columns.push(constant(Some("NO"))); // is_updatable: tables are read-only
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

#[async_trait]
impl TableProvider for ColumnsTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batch = self.batch().await?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema(),
            projection.cloned(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrow_types_get_postgres_names() {
        let decimal = pg_column_type(&DataType::Decimal128(15, 2));
        assert_eq!(
            (decimal.data_type, decimal.udt_name.as_str()),
            ("numeric", "numeric")
        );
        assert_eq!(
            (decimal.numeric_precision, decimal.numeric_scale),
            (Some(15), Some(2))
        );
        assert_eq!(pg_column_type(&DataType::Int64).udt_name, "int8");
        assert_eq!(pg_column_type(&DataType::Utf8View).data_type, "text");
        let list = DataType::List(Arc::new(Field::new("item", DataType::Int32, true)));
        assert_eq!(pg_column_type(&list).udt_name, "_int4");
    }
}
