//! Reading PostgreSQL's binary `COPY` format (`PGCOPY`) as it arrives: the
//! signature and header, then tuples of length-prefixed fields in each
//! column type's binary form (big-endian integers and floats, days and
//! microseconds since 2000-01-01, `numeric` as base-10000 digits). A tuple
//! cut between two pieces waits for the next one.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder,
    Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};

use super::raw::{bad_format, check_row_size};
use crate::sqlstate::{PgError, SqlState};

/// The signature that opens the format.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// Days from 1970-01-01 (Arrow's epoch) to 2000-01-01 (PostgreSQL's).
const EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
const EPOCH_MICROS: i64 = 946_684_800_000_000;

/// One column's values as they are decoded.
enum Column {
    Boolean(BooleanBuilder),
    Integer(Int64Builder),
    Float(Float64Builder),
    Text(StringBuilder),
    Bytes(BinaryBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Numeric(Decimal128Builder, u8, i8),
}

fn invalid_binary(message: impl Into<String>) -> PgError {
    PgError::new(SqlState::INVALID_BINARY_REPRESENTATION, message)
}

fn be<const N: usize>(bytes: &[u8]) -> Result<[u8; N], PgError> {
    bytes
        .try_into()
        .map_err(|_| invalid_binary("incorrect binary data format"))
}

impl Column {
    fn new(data_type: &DataType) -> Result<Self, PgError> {
        Ok(match data_type {
            DataType::Boolean => Self::Boolean(BooleanBuilder::new()),
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
                Self::Integer(Int64Builder::new())
            }
            DataType::Float32 | DataType::Float64 => Self::Float(Float64Builder::new()),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                Self::Text(StringBuilder::new())
            }
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
                Self::Bytes(BinaryBuilder::new())
            }
            DataType::Date32 | DataType::Date64 => Self::Date(Date32Builder::new()),
            DataType::Timestamp(..) => Self::Timestamp(TimestampMicrosecondBuilder::new()),
            DataType::Decimal128(precision, scale) => {
                Self::Numeric(Decimal128Builder::new(), *precision, *scale)
            }
            other => {
                return Err(PgError::new(
                    SqlState::FEATURE_NOT_SUPPORTED,
                    format!("binary COPY FROM into a column of type {other} is not supported"),
                ))
            }
        })
    }

    /// Appends one field: its bytes, or NULL.
    fn append(&mut self, field: Option<&[u8]>) -> Result<(), PgError> {
        let Some(bytes) = field else {
            match self {
                Self::Boolean(b) => b.append_null(),
                Self::Integer(b) => b.append_null(),
                Self::Float(b) => b.append_null(),
                Self::Text(b) => b.append_null(),
                Self::Bytes(b) => b.append_null(),
                Self::Date(b) => b.append_null(),
                Self::Timestamp(b) => b.append_null(),
                Self::Numeric(b, ..) => b.append_null(),
            }
            return Ok(());
        };
        match self {
            Self::Boolean(b) => b.append_value(be::<1>(bytes)?[0] != 0),
            // Any integer width: clients send int2, int4 or int8 by value.
            Self::Integer(b) => b.append_value(match bytes.len() {
                2 => i64::from(i16::from_be_bytes(be(bytes)?)),
                4 => i64::from(i32::from_be_bytes(be(bytes)?)),
                _ => i64::from_be_bytes(be(bytes)?),
            }),
            Self::Float(b) => b.append_value(match bytes.len() {
                4 => f64::from(f32::from_be_bytes(be(bytes)?)),
                _ => f64::from_be_bytes(be(bytes)?),
            }),
            Self::Text(b) => b.append_value(std::str::from_utf8(bytes).map_err(|_| {
                PgError::new(
                    SqlState::CHARACTER_NOT_IN_REPERTOIRE,
                    "invalid byte sequence for encoding \"UTF8\"",
                )
            })?),
            Self::Bytes(b) => b.append_value(bytes),
            Self::Date(b) => b.append_value(
                i32::from_be_bytes(be(bytes)?)
                    .checked_add(EPOCH_DAYS)
                    .ok_or_else(|| invalid_binary("date out of range"))?,
            ),
            Self::Timestamp(b) => b.append_value(
                i64::from_be_bytes(be(bytes)?)
                    .checked_add(EPOCH_MICROS)
                    .ok_or_else(|| invalid_binary("timestamp out of range"))?,
            ),
            Self::Numeric(b, _, scale) => b.append_value(numeric(bytes, *scale)?),
        }
        Ok(())
    }

    /// The values so far as an array of `data_type`, emptying the builder.
    fn finish(&mut self, data_type: &DataType) -> Result<ArrayRef, PgError> {
        let array: ArrayRef = match self {
            Self::Boolean(b) => Arc::new(b.finish()),
            Self::Integer(b) => Arc::new(b.finish()),
            Self::Float(b) => Arc::new(b.finish()),
            Self::Text(b) => Arc::new(b.finish()),
            Self::Bytes(b) => Arc::new(b.finish()),
            Self::Date(b) => Arc::new(b.finish()),
            Self::Timestamp(b) => Arc::new(b.finish()),
            Self::Numeric(b, precision, scale) => Arc::new(
                b.finish()
                    .with_precision_and_scale(*precision, *scale)
                    .map_err(|e| invalid_binary(e.to_string()))?,
            ),
        };
        if array.data_type() == data_type {
            return Ok(array);
        }
        // A narrower integer, a float4, a timestamp of another unit or zone:
        // a value that does not fit is an error, not a NULL.
        cast(&array, data_type)
            .map_err(|e| PgError::new(SqlState::NUMERIC_VALUE_OUT_OF_RANGE, e.to_string()))
    }
}

/// A binary `numeric` as a decimal with `scale` digits after the point.
fn numeric(bytes: &[u8], scale: i8) -> Result<i128, PgError> {
    let word = |at: usize| -> Result<u16, PgError> {
        Ok(u16::from_be_bytes(be(bytes
            .get(at..at + 2)
            .unwrap_or(&[]))?))
    };
    let digits = usize::from(word(0)?);
    let weight = i32::from(word(2)? as i16);
    let sign = word(4)?;
    if sign == 0xC000 {
        return Err(invalid_binary(
            "NaN cannot be stored in a numeric column of fixed scale",
        ));
    }
    let overflow = || {
        PgError::new(
            SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
            "numeric field overflow",
        )
    };
    let mut value: i128 = 0;
    for index in 0..digits {
        let digit = i128::from(word(8 + 2 * index)?);
        value = value
            .checked_mul(10_000)
            .and_then(|v| v.checked_add(digit))
            .ok_or_else(overflow)?;
    }
    // value × 10000^(weight − digits + 1), to `scale` decimal places.
    let exponent = 4 * (weight - digits as i32 + 1) + i32::from(scale);
    if exponent >= 0 {
        let factor = 10i128.checked_pow(exponent as u32).ok_or_else(overflow)?;
        value = value.checked_mul(factor).ok_or_else(overflow)?;
    } else {
        let divisor = 10i128.checked_pow((-exponent) as u32).unwrap_or(i128::MAX);
        let rounded = value.abs() % divisor >= divisor / 2 + divisor % 2;
        value = value / divisor + i128::from(rounded);
    }
    Ok(if sign == 0x4000 { -value } else { value })
}

/// A binary-format reader.
pub struct BinaryReader {
    pending: Vec<u8>,
    header_read: bool,
    ended: bool,
    /// Tuples read: the "line" of the last one, as PostgreSQL counts them.
    tuples: u64,
    columns: Vec<Column>,
    types: Vec<DataType>,
    rows: usize,
}

impl BinaryReader {
    /// A reader of tuples of the `inputs` columns of `schema`.
    pub fn new(schema: &SchemaRef, inputs: &[usize]) -> Result<Self, PgError> {
        let types: Vec<DataType> = inputs
            .iter()
            .map(|&index| schema.field(index).data_type().clone())
            .collect();
        Ok(Self {
            pending: Vec::new(),
            header_read: false,
            ended: false,
            tuples: 0,
            columns: types.iter().map(Column::new).collect::<Result<_, _>>()?,
            types,
            rows: 0,
        })
    }

    /// The "line" (tuple number) of the tuple being read, for errors.
    pub fn line(&self) -> u64 {
        self.tuples + 1
    }

    /// Tuples decoded and not yet taken.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Reads the complete tuples of `pending` + `piece`.
    pub fn push(&mut self, piece: &[u8]) -> Result<(), PgError> {
        self.pending.extend_from_slice(piece);
        let pending = std::mem::take(&mut self.pending);
        let result = self.read(&pending);
        let position = *result.as_ref().unwrap_or(&0);
        self.pending = pending;
        self.pending.drain(..position);
        result?;
        check_row_size(&self.pending)
    }

    /// Checks that the data ended where a tuple or the trailer ends.
    pub fn finish(&mut self) -> Result<(), PgError> {
        if !self.header_read || !self.pending.is_empty() && !self.ended {
            return Err(bad_format("unexpected EOF in COPY data"));
        }
        Ok(())
    }

    /// Reads from `data`; returns how far the complete tuples reach.
    fn read(&mut self, data: &[u8]) -> Result<usize, PgError> {
        let mut at = 0;
        if !self.header_read {
            let Some(header) = data.get(..SIGNATURE.len() + 8) else {
                return Ok(0);
            };
            if &header[..SIGNATURE.len()] != SIGNATURE {
                return Err(bad_format("COPY file signature not recognized"));
            }
            let extension = u32::from_be_bytes(be(&header[SIGNATURE.len() + 4..])?) as usize;
            if data.len() < header.len() + extension {
                return Ok(0);
            }
            at = header.len() + extension;
            self.header_read = true;
        }
        while !self.ended {
            let Some(count) = data.get(at..at + 2) else {
                break;
            };
            let count = i16::from_be_bytes(be(count)?);
            if count == -1 {
                self.ended = true;
                at += 2;
                break;
            }
            if count as usize != self.columns.len() {
                return Err(bad_format(format!(
                    "row field count is {count}, expected {}",
                    self.columns.len()
                )));
            }
            // The whole tuple must be here before any of it is decoded.
            let mut end = at + 2;
            let mut complete = true;
            for _ in 0..count {
                let Some(length) = data.get(end..end + 4) else {
                    complete = false;
                    break;
                };
                let length = i32::from_be_bytes(be(length)?);
                end += 4 + usize::try_from(length).unwrap_or(0);
                if end > data.len() {
                    complete = false;
                    break;
                }
            }
            if !complete {
                break;
            }
            let mut field = at + 2;
            for column in &mut self.columns {
                let length = i32::from_be_bytes(be(&data[field..field + 4])?);
                field += 4;
                match usize::try_from(length) {
                    Ok(length) => {
                        column.append(Some(&data[field..field + length]))?;
                        field += length;
                    }
                    Err(_) => column.append(None)?,
                }
            }
            at = end;
            self.tuples += 1;
            self.rows += 1;
        }
        Ok(at)
    }

    /// The decoded tuples as arrays of their columns' types, emptying the
    /// reader.
    pub fn take(&mut self) -> Result<Vec<ArrayRef>, PgError> {
        self.rows = 0;
        self.columns
            .iter_mut()
            .zip(&self.types)
            .map(|(column, data_type)| column.finish(data_type))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numerics_scale_and_round() {
        // 1234.5678: digits [1234, 5678], weight 0, dscale 4.
        let bytes = [0, 2, 0, 0, 0, 0, 0, 4, 0x04, 0xD2, 0x16, 0x2E];
        assert_eq!(numeric(&bytes, 2).unwrap(), 123_457);
        assert_eq!(numeric(&bytes, 6).unwrap(), 1_234_567_800);
        // -20000: digits [2], weight 1, negative.
        let bytes = [0, 1, 0, 1, 0x40, 0, 0, 0, 0, 2];
        assert_eq!(numeric(&bytes, 2).unwrap(), -2_000_000);
    }
}
