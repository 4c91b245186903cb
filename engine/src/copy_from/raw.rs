//! Rows of `COPY … FROM` data as the text and CSV formats give them: each
//! field's bytes, or NULL, column by column, ready to become string arrays.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};

use crate::sqlstate::{PgError, SqlState};

/// One column's fields.
#[derive(Debug, Default)]
struct RawColumn {
    bytes: Vec<u8>,
    /// Where each field ends in `bytes`, after a leading 0.
    offsets: Vec<i32>,
    /// Whether each field is present (not NULL).
    valid: Vec<bool>,
}

/// Rows being collected: the fields of each column.
#[derive(Debug)]
pub struct RawRows {
    columns: Vec<RawColumn>,
    rows: usize,
    /// Fields of the row being added so far.
    fields_in_row: usize,
}

impl RawRows {
    /// No rows of `columns` columns.
    pub fn new(columns: usize) -> Self {
        let mut rows = Self {
            columns: (0..columns).map(|_| RawColumn::default()).collect(),
            rows: 0,
            fields_in_row: 0,
        };
        rows.clear();
        rows
    }

    /// The number of complete rows.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// The number of columns each row has.
    pub fn width(&self) -> usize {
        self.columns.len()
    }

    /// How many fields the row being added has.
    pub fn fields_in_row(&self) -> usize {
        self.fields_in_row
    }

    /// Forgets every row.
    pub fn clear(&mut self) {
        for column in &mut self.columns {
            column.bytes.clear();
            column.offsets.clear();
            column.offsets.push(0);
            column.valid.clear();
        }
        self.rows = 0;
        self.fields_in_row = 0;
    }

    /// Adds the next field of the row being added; `false` when the row has
    /// all its columns already (the caller reports the extra data).
    pub fn push_field(&mut self, value: Option<&[u8]>) -> bool {
        let Some(column) = self.columns.get_mut(self.fields_in_row) else {
            return false;
        };
        if let Some(value) = value {
            column.bytes.extend_from_slice(value);
        }
        column.offsets.push(column.bytes.len() as i32);
        column.valid.push(value.is_some());
        self.fields_in_row += 1;
        true
    }

    /// The bytes of the field being built in the current column: appended
    /// to by [`Self::extend_field`], closed by [`Self::end_field`].
    pub fn extend_field(&mut self, bytes: &[u8]) -> bool {
        match self.columns.get_mut(self.fields_in_row) {
            Some(column) => {
                column.bytes.extend_from_slice(bytes);
                true
            }
            None => false,
        }
    }

    /// Closes the field [`Self::extend_field`] built; NULL when `null`.
    pub fn end_field(&mut self, null: bool) -> bool {
        let Some(column) = self.columns.get_mut(self.fields_in_row) else {
            return false;
        };
        if null {
            let start = column.offsets.last().copied().unwrap_or(0) as usize;
            column.bytes.truncate(start);
        }
        column.offsets.push(column.bytes.len() as i32);
        column.valid.push(!null);
        self.fields_in_row += 1;
        true
    }

    /// The bytes the current column's open field holds so far.
    pub fn open_field(&self) -> &[u8] {
        match self.columns.get(self.fields_in_row) {
            Some(column) => {
                let start = column.offsets.last().copied().unwrap_or(0) as usize;
                &column.bytes[start..]
            }
            None => &[],
        }
    }

    /// Completes the row being added, which must have every column.
    pub fn end_row(&mut self) {
        debug_assert_eq!(self.fields_in_row, self.columns.len());
        self.rows += 1;
        self.fields_in_row = 0;
    }

    /// Drops the fields of the row being added (an incomplete row).
    pub fn abandon_row(&mut self) {
        let rows = self.rows;
        for column in &mut self.columns {
            column.offsets.truncate(rows + 1);
            column.valid.truncate(rows);
            let end = column.offsets.last().copied().unwrap_or(0) as usize;
            column.bytes.truncate(end);
        }
        self.fields_in_row = 0;
    }

    /// Column `index` as a string array, or the row (from 0) of its first
    /// value that is not UTF-8.
    pub fn strings(&self, index: usize) -> Result<ArrayRef, usize> {
        let column = &self.columns[index];
        let values = Buffer::from(column.bytes.as_slice());
        let offsets = OffsetBuffer::new(ScalarBuffer::from(column.offsets.clone()));
        let nulls = NullBuffer::from(column.valid.clone());
        match StringArray::try_new(offsets, values, Some(nulls)) {
            Ok(array) => Ok(Arc::new(array)),
            Err(_) => Err((0..self.rows)
                .find(|&row| {
                    let (start, end) = (column.offsets[row], column.offsets[row + 1]);
                    std::str::from_utf8(&column.bytes[start as usize..end as usize]).is_err()
                })
                .unwrap_or(0)),
        }
    }

    /// The text of row `row` of column `index`, for error messages.
    pub fn text(&self, index: usize, row: usize) -> String {
        let column = &self.columns[index];
        let (start, end) = (column.offsets[row], column.offsets[row + 1]);
        String::from_utf8_lossy(&column.bytes[start as usize..end as usize]).into_owned()
    }
}

/// The longest row a COPY waits for the end of: a client that sends more
/// without ending a row gets 54000 instead of growing the server.
pub const MAX_ROW_BYTES: usize = 64 * 1024 * 1024;

/// 54000 when `pending` (the bytes of a row not yet complete) is over
/// [`MAX_ROW_BYTES`].
pub fn check_row_size(pending: &[u8]) -> Result<(), PgError> {
    if pending.len() > MAX_ROW_BYTES {
        return Err(PgError::new(
            SqlState::PROGRAM_LIMIT_EXCEEDED,
            format!(
                "COPY row is longer than {} MiB",
                MAX_ROW_BYTES / (1024 * 1024)
            ),
        ));
    }
    Ok(())
}

/// PostgreSQL's 22P04 for COPY data that breaks its format.
pub fn bad_format(message: impl Into<String>) -> PgError {
    PgError::new(SqlState::BAD_COPY_FILE_FORMAT, message)
}
