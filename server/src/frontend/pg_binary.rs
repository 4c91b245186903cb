//! Values in PostgreSQL's binary format, encoded a column at a time.
//!
//! [`encode_typed`] writes every value of an Arrow column into one
//! [`EncodedColumn`] with a typed loop: integers, floats, booleans, text,
//! dates and timestamps, as the wire types `arrow_pg` gives those columns
//! (`int2`, `int4`, `int8`, `float4`, `float8`, `bool`, `text`, `date`,
//! `timestamp`) take them. Other columns are left to `arrow_pg`.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, PrimitiveArray};
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Date32Type, Field, Float32Type, Float64Type, Int16Type,
    Int32Type, Int64Type, Int8Type,
};

use super::encoded_column::EncodedColumn;
use super::pg_text::{in_common_era, timestamp_micros, MICROS_PER_DAY};

/// Days from 1970-01-01 (Arrow's epoch) to 2000-01-01 (PostgreSQL's).
const EPOCH_DAYS: i64 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
const EPOCH_MICROS: i64 = EPOCH_DAYS * MICROS_PER_DAY;

/// The binary value of every row of `array` (the column `field`) when its
/// type has a typed loop here; `None` otherwise, and for dates or timestamps
/// that PostgreSQL's range or `arrow_pg`'s conversion would treat otherwise.
pub fn encode_typed(array: &ArrayRef, field: &Field) -> Option<EncodedColumn> {
    // `arrow_pg` sends these tagged columns as other types (`"char"`, `oid`).
    if !field.metadata().is_empty() {
        return None;
    }
    let mut column = EncodedColumn::for_array(array.as_ref(), 8);
    match array.data_type() {
        // `int2` on the wire: PostgreSQL has no one-byte integer.
        DataType::Int8 => fixed::<Int8Type, 2>(&mut column, array, |v| i16::from(v).to_be_bytes()),
        DataType::Int16 => fixed::<Int16Type, 2>(&mut column, array, i16::to_be_bytes),
        DataType::Int32 => fixed::<Int32Type, 4>(&mut column, array, i32::to_be_bytes),
        DataType::Int64 => fixed::<Int64Type, 8>(&mut column, array, i64::to_be_bytes),
        DataType::Float32 => fixed::<Float32Type, 4>(&mut column, array, f32::to_be_bytes),
        DataType::Float64 => fixed::<Float64Type, 8>(&mut column, array, f64::to_be_bytes),
        DataType::Boolean => {
            let flags = array.as_boolean();
            column.each(flags.len(), |out, row| out.push(u8::from(flags.value(row))));
        }
        DataType::Utf8 => {
            let strings = array.as_string::<i32>();
            column.each(strings.len(), |out, row| {
                out.extend_from_slice(strings.value(row).as_bytes())
            });
        }
        DataType::LargeUtf8 => {
            let strings = array.as_string::<i64>();
            column.each(strings.len(), |out, row| {
                out.extend_from_slice(strings.value(row).as_bytes())
            });
        }
        DataType::Utf8View => {
            let strings = array.as_string_view();
            column.each(strings.len(), |out, row| {
                out.extend_from_slice(strings.value(row).as_bytes())
            });
        }
        DataType::Date32 => {
            let days = array.as_primitive::<Date32Type>();
            let in_range = (0..days.len())
                .all(|row| column.is_null(row) || in_common_era(i64::from(days.value(row))));
            if !in_range {
                return None;
            }
            column.each(days.len(), |out, row| {
                // In years 1 to 9999 the difference fits an i32.
                let day = i64::from(days.value(row)) - EPOCH_DAYS;
                out.extend_from_slice(&(day as i32).to_be_bytes())
            });
        }
        DataType::Timestamp(unit, None) => {
            let (micros, _) = timestamp_micros(array, unit);
            let in_range = (0..micros.len()).all(|row| {
                column.is_null(row) || in_common_era(micros[row].div_euclid(MICROS_PER_DAY))
            });
            if !in_range {
                return None;
            }
            column.each(micros.len(), |out, row| {
                out.extend_from_slice(&(micros[row] - EPOCH_MICROS).to_be_bytes())
            });
        }
        _ => return None,
    }
    Some(column)
}

/// Writes each value of primitive `array` as the `N` bytes `bytes` makes.
fn fixed<T: ArrowPrimitiveType, const N: usize>(
    column: &mut EncodedColumn,
    array: &ArrayRef,
    bytes: impl Fn(T::Native) -> [u8; N],
) {
    let values: &PrimitiveArray<T> = array.as_primitive();
    column.each(values.len(), |out, row| {
        out.extend_from_slice(&bytes(values.value(row)))
    });
}
