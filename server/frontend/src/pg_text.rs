//! Values in PostgreSQL's text output format, encoded a column at a time.
//!
//! [`encode`] writes every value of an Arrow column into one
//! [`EncodedColumn`], with typed loops for the common types
//! (integers, floats, decimals, text, booleans, dates, timestamps): no
//! formatter object or `String` per value. Values print as PostgreSQL prints
//! them: `15` and `1e+20` for doubles (the shortest digits that read back
//! the same, as `float8out` gives them), `2024-01-02 03:04:05` for a
//! timestamp without fraction, `2024-01-02 03:04:05.25` with one. Other
//! types go through Arrow's display formatter, value by value.

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, PrimitiveArray,
};
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Date32Type, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, Int8Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use super::encoded_column::EncodedColumn;

/// The text of every value of `array`; `options` shows the types
/// [`encode_typed`] has no loop for.
pub fn encode(array: &ArrayRef, options: &FormatOptions<'_>) -> Result<EncodedColumn, ArrowError> {
    match encode_typed(array) {
        Some(column) => Ok(column),
        None => formatted(array, options),
    }
}

/// The text of every value of `array` when its type has a typed loop here
/// (and, for dates and timestamps, every value lies in years 1 to 9999).
pub fn encode_typed(array: &ArrayRef) -> Option<EncodedColumn> {
    let mut column = EncodedColumn::for_array(array.as_ref(), 8);
    match array.data_type() {
        DataType::Int8 => integers::<Int8Type>(&mut column, array),
        DataType::Int16 => integers::<Int16Type>(&mut column, array),
        DataType::Int32 => integers::<Int32Type>(&mut column, array),
        DataType::Int64 => integers::<Int64Type>(&mut column, array),
        DataType::UInt8 => integers::<UInt8Type>(&mut column, array),
        DataType::UInt16 => integers::<UInt16Type>(&mut column, array),
        DataType::UInt32 => integers::<UInt32Type>(&mut column, array),
        DataType::UInt64 => integers::<UInt64Type>(&mut column, array),
        DataType::Float32 => {
            let floats = array.as_primitive::<Float32Type>();
            column.each(floats.len(), |out, row| {
                float_text(out, f64::from(floats.value(row)), true)
            });
        }
        DataType::Float64 => {
            let floats = array.as_primitive::<Float64Type>();
            column.each(floats.len(), |out, row| {
                float_text(out, floats.value(row), false)
            });
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            column.strings(array.as_ref());
        }
        DataType::Boolean => {
            let flags: &BooleanArray = array.as_boolean();
            column.each(flags.len(), |out, row| {
                out.push(if flags.value(row) { b't' } else { b'f' })
            });
        }
        DataType::Decimal128(_, scale) if *scale >= 0 => {
            let decimals: &Decimal128Array = array.as_primitive();
            let scale = *scale as usize;
            column.each(decimals.len(), |out, row| {
                decimal_text(out, decimals.value(row), scale)
            });
        }
        DataType::Date32 => {
            let days = array.as_primitive::<Date32Type>();
            let in_era = (0..days.len())
                .all(|row| column.is_null(row) || in_common_era(i64::from(days.value(row))));
            if !in_era {
                return None;
            }
            column.each(days.len(), |out, row| {
                let (year, month, day) = civil_from_days(i64::from(days.value(row)));
                date_text(out, year, month, day);
            });
        }
        DataType::Timestamp(unit, None) => {
            let (micros, with_fraction) = timestamp_micros(array, unit);
            let in_era = (0..micros.len()).all(|row| {
                column.is_null(row) || in_common_era(micros[row].div_euclid(MICROS_PER_DAY))
            });
            if !in_era {
                return None;
            }
            column.each(micros.len(), |out, row| {
                timestamp_text(out, micros[row], with_fraction)
            });
        }
        _ => return None,
    }
    Some(column)
}

/// Every value of `array` written by Arrow's display formatter.
fn formatted(array: &ArrayRef, options: &FormatOptions<'_>) -> Result<EncodedColumn, ArrowError> {
    use std::fmt::Write;
    let formatter = ArrayFormatter::try_new(array.as_ref(), options)?;
    let mut column = EncodedColumn::for_array(array.as_ref(), 8);
    let mut text = String::new();
    for row in 0..array.len() {
        if column.is_null(row) {
            column.push(None);
            continue;
        }
        text.clear();
        write!(text, "{}", formatter.value(row))
            .map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
        column.push(Some(text.as_bytes()));
    }
    Ok(column)
}

fn integers<T>(column: &mut EncodedColumn, array: &ArrayRef)
where
    T: ArrowPrimitiveType,
    T::Native: itoa::Integer,
{
    let values: &PrimitiveArray<T> = array.as_primitive();
    let mut digits = itoa::Buffer::new();
    column.each(values.len(), |out, row| {
        out.extend_from_slice(digits.format(values.value(row)).as_bytes())
    });
}

/// Microseconds in a day.
pub(super) const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Whether `day` (days since 1970-01-01) lies in years 1 to 9999, which the
/// typed loops print (PostgreSQL writes others with `BC` or more digits;
/// Arrow's formatter shows them).
pub(super) fn in_common_era(day: i64) -> bool {
    const FIRST_DAY: i64 = -719_162; // 0001-01-01
    const LAST_DAY: i64 = 2_932_896; // 9999-12-31
    (FIRST_DAY..=LAST_DAY).contains(&day)
}

/// The microseconds since 1970 of each value of timestamp `array` (nulls as
/// 0; nanoseconds rounded to the nearest microsecond, as PostgreSQL rounds
/// them), and how many fractional digits its unit has at most (0 or 6).
pub(super) fn timestamp_micros(array: &ArrayRef, unit: &TimeUnit) -> (Vec<i64>, bool) {
    fn scaled<T: ArrowPrimitiveType<Native = i64>>(
        array: &ArrayRef,
        scale: impl Fn(i64) -> i64,
    ) -> Vec<i64> {
        array
            .as_primitive::<T>()
            .values()
            .iter()
            .map(|value| scale(*value))
            .collect()
    }
    match unit {
        TimeUnit::Second => (
            scaled::<TimestampSecondType>(array, |s| s.saturating_mul(1_000_000)),
            false,
        ),
        TimeUnit::Millisecond => (
            scaled::<TimestampMillisecondType>(array, |ms| ms.saturating_mul(1_000)),
            true,
        ),
        TimeUnit::Microsecond => (scaled::<TimestampMicrosecondType>(array, |us| us), true),
        // PostgreSQL keeps microseconds: nanoseconds round to them.
        TimeUnit::Nanosecond => (
            scaled::<TimestampNanosecondType>(array, |ns| {
                ns.div_euclid(1_000) + i64::from(ns.rem_euclid(1_000) >= 500)
            }),
            true,
        ),
    }
}

/// `value` (a decimal of `scale` digits after the point) as PostgreSQL's
/// `numeric` prints it: every digit of the scale.
fn decimal_text(out: &mut Vec<u8>, value: i128, scale: usize) {
    let mut digits = itoa::Buffer::new();
    let text = digits.format(value.unsigned_abs());
    if value < 0 {
        out.push(b'-');
    }
    if scale == 0 {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    let text = text.as_bytes();
    if text.len() <= scale {
        out.extend_from_slice(b"0.");
        out.resize(out.len() + scale - text.len(), b'0');
        out.extend_from_slice(text);
    } else {
        let point = text.len() - scale;
        out.extend_from_slice(&text[..point]);
        out.push(b'.');
        out.extend_from_slice(&text[point..]);
    }
}

/// `value` as PostgreSQL's `float8out` (`float4out` when `single`) prints
/// it: the shortest digits that read back the same, in fixed notation when
/// the decimal point falls within -4 < position <= 15 (6 for float4),
/// otherwise as `d.ddde+XX`.
fn float_text(out: &mut Vec<u8>, value: f64, single: bool) {
    if value.is_nan() {
        out.extend_from_slice(b"NaN");
        return;
    }
    if value.is_infinite() {
        out.extend_from_slice(if value > 0.0 {
            b"Infinity"
        } else {
            b"-Infinity"
        });
        return;
    }
    let mut buffer = ryu::Buffer::new();
    let shortest = if single {
        buffer.format_finite(value as f32)
    } else {
        buffer.format_finite(value)
    };
    // Ryu's text, e.g. `-1.5e-7`, `15.0`, `1e20`, read back as digits and
    // the position of the decimal point.
    let (negative, shortest) = match shortest.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, shortest),
    };
    let (mantissa, exponent) = match shortest.split_once('e') {
        Some((mantissa, exponent)) => (mantissa, exponent.parse::<i32>().unwrap_or(0)),
        None => (shortest, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut digits: Vec<u8> = whole.bytes().chain(fraction.bytes()).collect();
    let mut point = whole.len() as i32 + exponent;
    let leading = digits.iter().take_while(|d| **d == b'0').count();
    digits.drain(..leading);
    point -= leading as i32;
    while digits.last() == Some(&b'0') {
        digits.pop();
    }
    if negative {
        out.push(b'-');
    }
    if digits.is_empty() {
        out.push(b'0');
        return;
    }
    let fixed_up_to = if single { 6 } else { 15 };
    if point > -4 && point <= fixed_up_to {
        if point <= 0 {
            out.extend_from_slice(b"0.");
            out.resize(out.len() + (-point) as usize, b'0');
            out.extend_from_slice(&digits);
        } else if (point as usize) < digits.len() {
            out.extend_from_slice(&digits[..point as usize]);
            out.push(b'.');
            out.extend_from_slice(&digits[point as usize..]);
        } else {
            out.extend_from_slice(&digits);
            out.resize(out.len() + point as usize - digits.len(), b'0');
        }
        return;
    }
    out.push(digits[0]);
    if digits.len() > 1 {
        out.push(b'.');
        out.extend_from_slice(&digits[1..]);
    }
    let exponent = point - 1;
    out.push(b'e');
    out.push(if exponent < 0 { b'-' } else { b'+' });
    let magnitude = exponent.unsigned_abs();
    if magnitude < 10 {
        out.push(b'0');
    }
    out.extend_from_slice(itoa::Buffer::new().format(magnitude).as_bytes());
}

/// The proleptic Gregorian (year, month, day) of `days` since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn two_digits(out: &mut Vec<u8>, value: u32) {
    out.push(b'0' + (value / 10) as u8);
    out.push(b'0' + (value % 10) as u8);
}

/// `YYYY-MM-DD` (years 1 to 9999).
fn date_text(out: &mut Vec<u8>, year: i64, month: u32, day: u32) {
    let year = year as u32;
    two_digits(out, year / 100);
    two_digits(out, year % 100);
    out.push(b'-');
    two_digits(out, month);
    out.push(b'-');
    two_digits(out, day);
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]`, the fraction without trailing zeros, as
/// PostgreSQL prints a `timestamp`.
fn timestamp_text(out: &mut Vec<u8>, micros: i64, with_fraction: bool) {
    let days = micros.div_euclid(MICROS_PER_DAY);
    let of_day = micros.rem_euclid(MICROS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    date_text(out, year, month, day);
    out.push(b' ');
    let seconds = (of_day / 1_000_000) as u32;
    two_digits(out, seconds / 3_600);
    out.push(b':');
    two_digits(out, seconds / 60 % 60);
    out.push(b':');
    two_digits(out, seconds % 60);
    let mut fraction = (of_day % 1_000_000) as u32;
    if with_fraction && fraction != 0 {
        out.push(b'.');
        let mut width = 6;
        while fraction.is_multiple_of(10) {
            fraction /= 10;
            width -= 1;
        }
        let digits = itoa::Buffer::new().format(fraction).len();
        out.resize(out.len() + width - digits, b'0');
        out.extend_from_slice(itoa::Buffer::new().format(fraction).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{
        Date32Array, Float32Array, Float64Array, Int64Array, StringArray,
        TimestampMicrosecondArray, TimestampNanosecondArray,
    };

    use super::*;

    fn texts(array: ArrayRef) -> Vec<Option<String>> {
        let column = encode(&array, &FormatOptions::new()).unwrap();
        (0..array.len())
            .map(|row| {
                column
                    .value(row)
                    .map(|v| String::from_utf8(v.to_vec()).unwrap())
            })
            .collect()
    }

    fn all(array: ArrayRef) -> Vec<String> {
        texts(array).into_iter().map(Option::unwrap).collect()
    }

    /// Each expected text is PostgreSQL 15's output for the same value.
    #[test]
    fn doubles_print_as_postgres_prints_them() {
        let values = [
            (0.0, "0"),
            (-0.0, "-0"),
            (15.0, "15"),
            (0.1, "0.1"),
            (1e20, "1e+20"),
            (1.5e-7, "1.5e-07"),
            (123456789012345.0, "123456789012345"),
            (1234567890123456.0, "1.234567890123456e+15"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (1e15, "1e+15"),
            (1e-4, "0.0001"),
            (1e-5, "1e-05"),
            (0.0001234, "0.0001234"),
            (std::f64::consts::PI, "3.141592653589793"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (f64::NAN, "NaN"),
            (-2.5, "-2.5"),
            (100.0, "100"),
            (1e16, "1e+16"),
            (12345.678, "12345.678"),
            (999999999999999.0, "999999999999999"),
            (0.001, "0.001"),
        ];
        let array = Arc::new(Float64Array::from_iter_values(values.iter().map(|v| v.0)));
        let expected: Vec<&str> = values.iter().map(|v| v.1).collect();
        assert_eq!(all(array), expected);
    }

    #[test]
    fn reals_print_as_postgres_prints_them() {
        let values = [
            (0.0f32, "0"),
            (15.0, "15"),
            (0.1, "0.1"),
            (1e20, "1e+20"),
            (1.5e-7, "1.5e-07"),
            (1234567.0, "1.234567e+06"),
            (12345678.0, "1.2345678e+07"),
            (std::f32::consts::PI, "3.1415927"),
            (1e-4, "0.0001"),
            (1e-5, "1e-05"),
        ];
        let array = Arc::new(Float32Array::from_iter_values(values.iter().map(|v| v.0)));
        let expected: Vec<&str> = values.iter().map(|v| v.1).collect();
        assert_eq!(all(array), expected);
    }

    #[test]
    fn decimals_dates_and_timestamps_print_as_postgres_prints_them() {
        let decimals = Decimal128Array::from(vec![150, -50, 5, 0, 123456789])
            .with_precision_and_scale(12, 2)
            .unwrap();
        assert_eq!(
            all(Arc::new(decimals)),
            ["1.50", "-0.50", "0.05", "0.00", "1234567.89"]
        );
        // 2024-01-02, 1970-01-01, 1969-12-31, 0001-01-01, 9999-12-31.
        let dates = Date32Array::from(vec![19_724, 0, -1, -719_162, 2_932_896]);
        assert_eq!(
            all(Arc::new(dates)),
            [
                "2024-01-02",
                "1970-01-01",
                "1969-12-31",
                "0001-01-01",
                "9999-12-31"
            ]
        );
        let second = 1_704_164_645_000_000; // 2024-01-02 03:04:05
        let micros =
            TimestampMicrosecondArray::from(vec![second, second + 250_000, second + 1, -1]);
        assert_eq!(
            all(Arc::new(micros)),
            [
                "2024-01-02 03:04:05",
                "2024-01-02 03:04:05.25",
                "2024-01-02 03:04:05.000001",
                "1969-12-31 23:59:59.999999"
            ]
        );
        let nanos =
            TimestampNanosecondArray::from(vec![second * 1_000 + 1_499, second * 1_000 + 1_500]);
        assert_eq!(
            all(Arc::new(nanos)),
            ["2024-01-02 03:04:05.000001", "2024-01-02 03:04:05.000002"]
        );
    }

    #[test]
    fn dates_outside_years_1_to_9999_go_to_the_formatter() {
        // 10000-01-01, then a null.
        let dates = Date32Array::from(vec![Some(2_932_897), None]);
        let shown = texts(Arc::new(dates));
        assert!(
            shown[0].as_deref().is_some_and(|day| day.contains("10000")),
            "{shown:?}"
        );
        assert_eq!(shown[1], None);
    }

    #[test]
    fn nulls_integers_and_text() {
        let ints = Int64Array::from(vec![Some(-9_223_372_036_854_775_808), None, Some(42)]);
        assert_eq!(
            texts(Arc::new(ints)),
            [Some("-9223372036854775808".into()), None, Some("42".into())]
        );
        let strings = StringArray::from(vec![Some("a\tb"), None, Some("")]);
        assert_eq!(
            texts(Arc::new(strings)),
            [Some("a\tb".into()), None, Some(String::new())]
        );
    }
}
