//! One column's values encoded for the wire, in one buffer.
//!
//! The encoders of [`super::pg_text`] and [`super::pg_binary`] fill an
//! [`EncodedColumn`] a column at a time; COPY and DataRow messages then take
//! each row's value from it by position.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::DataType;

/// The encoded values of one column, one after another in one buffer.
#[derive(Debug, Default)]
pub struct EncodedColumn {
    bytes: Vec<u8>,
    /// Where each row's value ends in `bytes` (a null's value is empty).
    ends: Vec<usize>,
    nulls: Vec<bool>,
}

impl EncodedColumn {
    /// An empty column for the values of `array`, its nulls noted, with room
    /// for about `bytes_per_value` bytes of each.
    pub fn for_array(array: &dyn Array, bytes_per_value: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(array.len() * bytes_per_value),
            ends: Vec::with_capacity(array.len()),
            nulls: (0..array.len()).map(|row| array.is_null(row)).collect(),
        }
    }

    /// The encoded value of row `row`; `None` for a null.
    pub fn value(&self, row: usize) -> Option<&[u8]> {
        if self.nulls[row] {
            return None;
        }
        let start = if row == 0 { 0 } else { self.ends[row - 1] };
        Some(&self.bytes[start..self.ends[row]])
    }

    /// Bytes of all the values together.
    pub fn value_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Whether row `row` is null.
    pub fn is_null(&self, row: usize) -> bool {
        self.nulls[row]
    }

    /// Writes each non-null row of the `rows` with `write`.
    pub fn each(&mut self, rows: usize, mut write: impl FnMut(&mut Vec<u8>, usize)) {
        for row in 0..rows {
            if !self.nulls[row] {
                write(&mut self.bytes, row);
            }
            self.ends.push(self.bytes.len());
        }
    }

    /// Writes each string of `array` as its UTF-8 bytes (PostgreSQL's text
    /// and binary forms of `text` alike); `false` when `array` holds no
    /// strings.
    pub fn strings(&mut self, array: &dyn Array) -> bool {
        match array.data_type() {
            DataType::Utf8 => {
                let strings = array.as_string::<i32>();
                self.each(strings.len(), |out, row| {
                    out.extend_from_slice(strings.value(row).as_bytes())
                });
            }
            DataType::LargeUtf8 => {
                let strings = array.as_string::<i64>();
                self.each(strings.len(), |out, row| {
                    out.extend_from_slice(strings.value(row).as_bytes())
                });
            }
            DataType::Utf8View => {
                let strings = array.as_string_view();
                self.each(strings.len(), |out, row| {
                    out.extend_from_slice(strings.value(row).as_bytes())
                });
            }
            _ => return false,
        }
        true
    }

    /// Appends the next row's value (`None`: a null).
    pub fn push(&mut self, value: Option<&[u8]>) {
        match value {
            Some(value) => self.bytes.extend_from_slice(value),
            None => self.nulls[self.ends.len()] = true,
        }
        self.ends.push(self.bytes.len());
    }
}
