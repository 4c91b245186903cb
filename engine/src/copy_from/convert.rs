//! Rows of text fields into a batch of the table's column types, with
//! PostgreSQL's errors for values that are not of their column's type.

use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, Array, ArrayRef, AsArray, BinaryBuilder};
use datafusion::arrow::compute::{cast_with_options, CastOptions};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use super::raw::RawRows;
use crate::sqlstate::{PgError, SqlState};

/// Where the input columns of a `COPY … FROM` go.
#[derive(Debug, Clone)]
pub struct Target {
    /// The table's name, for errors.
    pub table: String,
    /// The table's columns.
    pub schema: SchemaRef,
    /// For each input column, the index of the table column it fills.
    pub inputs: Vec<usize>,
}

impl Target {
    /// The names of the input columns.
    pub fn input_names(&self) -> Vec<String> {
        self.inputs
            .iter()
            .map(|&index| self.schema.field(index).name().clone())
            .collect()
    }

    /// `CONTEXT` of an error at `line`, in column `column` holding `value`.
    pub fn context(&self, line: u64, column: Option<(&str, &str)>) -> String {
        match column {
            Some((name, value)) => format!(
                "COPY {}, line {line}, column {name}: \"{value}\"",
                self.table
            ),
            None => format!("COPY {}, line {line}", self.table),
        }
    }
}

/// PostgreSQL's name of the type of `data_type`, for errors.
fn pg_type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Int16 => "smallint".into(),
        DataType::Int32 => "integer".into(),
        DataType::Int64 => "bigint".into(),
        DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Decimal128(..) | DataType::Decimal256(..) => "numeric".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Timestamp(_, None) => "timestamp without time zone".into(),
        DataType::Timestamp(_, Some(_)) => "timestamp with time zone".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea".into(),
        other => other.to_string(),
    }
}

/// `rows` as a batch of `target`'s table; the first row is on line
/// `first_line` of the data.
pub fn to_batch(rows: &RawRows, target: &Target, first_line: u64) -> Result<RecordBatch, PgError> {
    let line = |row: usize| first_line + row as u64;
    let mut arrays = Vec::with_capacity(target.inputs.len());
    for (input, &index) in target.inputs.iter().enumerate() {
        let field = target.schema.field(index);
        let strings = rows.strings(input).map_err(|row| {
            PgError::new(
                SqlState::CHARACTER_NOT_IN_REPERTOIRE,
                "invalid byte sequence for encoding \"UTF8\"",
            )
            .with_context(target.context(line(row), None))
        })?;
        arrays.push(typed(&strings, field.data_type()).map_err(|row| {
            let value = rows.text(input, row);
            value_error(field.data_type(), &value)
                .with_context(target.context(line(row), Some((field.name(), &value))))
        })?);
    }
    assemble(target, arrays, first_line)
}

/// The table's batch of `arrays` (one per input column, of its column's
/// type): the other columns NULL, which must be nullable.
pub fn assemble(
    target: &Target,
    arrays: Vec<ArrayRef>,
    first_line: u64,
) -> Result<RecordBatch, PgError> {
    let schema = &target.schema;
    let rows = arrays.first().map_or(0, |array| array.len());
    let mut columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|field| new_null_array(field.data_type(), rows))
        .collect();
    for (array, &index) in arrays.into_iter().zip(&target.inputs) {
        columns[index] = array;
    }
    for (field, column) in schema.fields().iter().zip(&columns) {
        if !field.is_nullable() && column.null_count() > 0 {
            let row = (0..column.len())
                .find(|&row| column.is_null(row))
                .unwrap_or(0);
            return Err(PgError::not_null_violation(field.name(), &target.table)
                .with_context(target.context(first_line + row as u64, None)));
        }
    }
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    RecordBatch::try_new_with_options(Arc::clone(schema), columns, &options)
        .map_err(|e| PgError::new(SqlState::INTERNAL_ERROR, e.to_string()))
}

/// The error for `value`, which is not a `data_type`.
fn value_error(data_type: &DataType, value: &str) -> PgError {
    let name = pg_type_name(data_type);
    let out_of_range = match data_type {
        DataType::Int16 | DataType::Int32 | DataType::Int64 => value.trim().parse::<i128>().is_ok(),
        DataType::Decimal128(..) | DataType::Decimal256(..) => {
            value.trim().parse::<f64>().is_ok_and(f64::is_finite)
        }
        _ => false,
    };
    if out_of_range {
        PgError::new(
            SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
            format!("value \"{value}\" is out of range for type {name}"),
        )
    } else {
        PgError::new(
            SqlState::INVALID_TEXT_REPRESENTATION,
            format!("invalid input syntax for type {name}: \"{value}\""),
        )
    }
}

/// `strings` as `data_type`; `Err` with the first row whose text is not one.
fn typed(strings: &ArrayRef, data_type: &DataType) -> Result<ArrayRef, usize> {
    match data_type {
        DataType::Utf8 => return Ok(Arc::clone(strings)),
        DataType::Binary => return Ok(bytea(strings)),
        _ => {}
    }
    let options = CastOptions {
        safe: true,
        ..Default::default()
    };
    let typed = cast_with_options(strings, data_type, &options).map_err(|_| 0usize)?;
    if typed.null_count() == strings.null_count() {
        return Ok(typed);
    }
    Err((0..strings.len())
        .find(|&row| strings.is_valid(row) && typed.is_null(row))
        .unwrap_or(0))
}

/// bytea text (`\x` and hex digits, or the bytes themselves) as binary.
fn bytea(strings: &ArrayRef) -> ArrayRef {
    let strings = strings.as_string::<i32>();
    let mut builder = BinaryBuilder::with_capacity(strings.len(), strings.value_data().len());
    for value in strings {
        match value {
            Some(text) => match text.strip_prefix("\\x") {
                Some(hex) => builder.append_value(from_hex(hex)),
                None => builder.append_value(text.as_bytes()),
            },
            None => builder.append_null(),
        }
    }
    Arc::new(builder.finish())
}

fn from_hex(hex: &str) -> Vec<u8> {
    hex.as_bytes()
        .chunks(2)
        .filter_map(|pair| {
            let text = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(text, 16).ok()
        })
        .collect()
}
