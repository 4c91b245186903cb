//! Values in PostgreSQL's binary format, encoded a column at a time.
//!
//! [`encode_typed`] writes every value of an Arrow column into one
//! [`EncodedColumn`] with a typed loop: integers, floats, booleans, text,
//! decimals, dates and timestamps, as the wire types `arrow_pg` gives those
//! columns (`int2`, `int4`, `int8`, `float4`, `float8`, `bool`, `text`,
//! `numeric`, `date`, `timestamp`) take them. Other columns are left to
//! `arrow_pg`.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, PrimitiveArray};
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Date32Type, Decimal128Type, Field, Float32Type, Float64Type,
    Int16Type, Int32Type, Int64Type, Int8Type,
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
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            column.strings(array.as_ref());
        }
        DataType::Decimal128(_, scale) if *scale >= 0 => {
            let decimals = array.as_primitive::<Decimal128Type>();
            let scale = *scale as u16;
            let fits = (0..decimals.len()).all(|row| {
                column.is_null(row) || numeric_groups(decimals.value(row), scale).is_some()
            });
            if !fits {
                return None;
            }
            column.each(decimals.len(), |out, row| {
                numeric_binary(out, decimals.value(row), scale)
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

/// The base-10000 digits of decimal `value` with `scale` digits after the
/// point, most significant first, the last group aligned to end a multiple
/// of four digits after the point; `None` when aligning overflows.
fn numeric_groups(value: i128, scale: u16) -> Option<(Vec<i16>, i16)> {
    let fraction_groups = scale.div_ceil(4);
    let mut magnitude = value.unsigned_abs();
    let pad = (4 - scale % 4) % 4;
    magnitude = magnitude.checked_mul(10u128.pow(u32::from(pad)))?;
    let mut groups = Vec::with_capacity(10);
    while magnitude > 0 {
        groups.push((magnitude % 10_000) as i16);
        magnitude /= 10_000;
    }
    groups.reverse();
    let weight = groups.len() as i16 - fraction_groups as i16 - 1;
    // PostgreSQL keeps no trailing zero groups (`strip_var`).
    while groups.last() == Some(&0) {
        groups.pop();
    }
    Some((groups, weight))
}

/// Writes decimal `value` (`scale` digits after the point) as PostgreSQL's
/// `numeric_send` does: the number of base-10000 groups, the weight of the
/// first, the sign, the display scale, then the groups. Zero has no groups
/// and keeps its scale (`0.00`).
fn numeric_binary(out: &mut Vec<u8>, value: i128, scale: u16) {
    let (groups, weight) = numeric_groups(value, scale).unwrap_or_default();
    let (weight, sign) = if groups.is_empty() {
        (0i16, 0u16)
    } else if value < 0 {
        (weight, 0x4000)
    } else {
        (weight, 0)
    };
    out.extend_from_slice(&(groups.len() as u16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&scale.to_be_bytes());
    for group in groups {
        out.extend_from_slice(&group.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(value: i128, scale: u16) -> Vec<u8> {
        let mut out = Vec::new();
        numeric_binary(&mut out, value, scale);
        out
    }

    /// Expected bytes are PostgreSQL 15's `numeric_send` of the same values
    /// (`SELECT numeric_send(1.50::numeric(15,2))`, …).
    #[test]
    fn decimals_are_sent_as_postgres_sends_numeric() {
        // 1.50: one group 1 (weight 0), one 5000, dscale 2.
        assert_eq!(numeric(150, 2), [0, 2, 0, 0, 0, 0, 0, 2, 0, 1, 0x13, 0x88]);
        // -0.05: one group 500 at weight -1, negative.
        assert_eq!(
            numeric(-5, 2),
            [0, 1, 0xff, 0xff, 0x40, 0, 0, 2, 0x01, 0xf4]
        );
        // 0.00: no groups, scale kept.
        assert_eq!(numeric(0, 2), [0, 0, 0, 0, 0, 0, 0, 2]);
        // 10000: group 1 at weight 1, the trailing zero group stripped.
        assert_eq!(numeric(10_000, 0), [0, 1, 0, 1, 0, 0, 0, 0, 0, 1]);
        // 123456789.12345: 1|2345|6789 . 1234|5000
        assert_eq!(
            numeric(12_345_678_912_345, 5),
            [0, 5, 0, 2, 0, 0, 0, 5, 0, 1, 0x09, 0x29, 0x1a, 0x85, 0x04, 0xd2, 0x13, 0x88]
        );
    }
}
