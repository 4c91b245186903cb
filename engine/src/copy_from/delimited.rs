//! Reading PostgreSQL's text and CSV formats as they arrive, in pieces cut
//! anywhere: complete rows go into [`RawRows`], the start of an incomplete
//! one waits for the next piece.
//!
//! As in PostgreSQL, text fields are split at the delimiter and unescaped
//! (`\t`, `\n`, `\\`, octal and `\x` hex), and the NULL string is compared
//! before unescaping; CSV fields may be quoted, a NULL is an unquoted field
//! equal to the NULL string (quoted ones too for `FORCE_NULL` columns), and
//! quoted fields may hold delimiters and line breaks. A line holding only
//! `\.` ends text data.

use memchr::{memchr, memchr2, memchr3};

use super::format::Delimited;
use super::raw::{bad_format, check_row_size, RawRows};
use crate::sqlstate::PgError;

/// A text or CSV reader.
#[derive(Debug)]
pub struct DelimitedReader {
    format: Delimited,
    csv: bool,
    /// Bytes received and not yet read: the start of an incomplete row.
    pending: Vec<u8>,
    /// Lines read, the header included: the line number of the last row.
    lines: u64,
    /// Whether `\.` ended the data.
    ended: bool,
    /// The input columns, for errors.
    columns: Vec<String>,
    /// Per input column, whether it is a `FORCE_NULL` one.
    force_null: Vec<bool>,
    /// Unescaped text of a field.
    scratch: Vec<u8>,
}

/// Why a row could not be read.
enum RowError {
    /// The data ends inside it (only before the last piece).
    Incomplete,
    /// It breaks the format.
    Bad(PgError),
}

impl From<PgError> for RowError {
    fn from(error: PgError) -> Self {
        Self::Bad(error)
    }
}

impl DelimitedReader {
    /// A reader of `format` (CSV when `csv`) into rows of `columns`.
    pub fn new(format: Delimited, csv: bool, columns: Vec<String>) -> Self {
        let force_null = columns
            .iter()
            .map(|name| format.force_null.contains(name))
            .collect();
        Self {
            format,
            csv,
            pending: Vec::new(),
            lines: 0,
            ended: false,
            columns,
            force_null,
            scratch: Vec::new(),
        }
    }

    /// The line number of the row being read (for errors).
    pub fn line(&self) -> u64 {
        self.lines + 1
    }

    /// Reads the complete rows of `pending` + `piece` into `rows`.
    pub fn push(&mut self, piece: &[u8], rows: &mut RawRows) -> Result<(), PgError> {
        self.pending.extend_from_slice(piece);
        self.read(rows, false)?;
        check_row_size(&self.pending)
    }

    /// Reads what is left at the end of the data (a last line without a line
    /// break) into `rows`.
    pub fn finish(&mut self, rows: &mut RawRows) -> Result<(), PgError> {
        self.read(rows, true)
    }

    fn read(&mut self, rows: &mut RawRows, last: bool) -> Result<(), PgError> {
        let pending = std::mem::take(&mut self.pending);
        let mut position = 0;
        let outcome = loop {
            if self.ended || position >= pending.len() {
                break Ok(());
            }
            let read = if self.csv {
                self.csv_row(&pending, position, last, rows)
            } else {
                self.text_row(&pending, position, last, rows)
            };
            match read {
                Ok(next) => position = next,
                Err(RowError::Incomplete) => {
                    rows.abandon_row();
                    break Ok(());
                }
                Err(RowError::Bad(error)) => {
                    rows.abandon_row();
                    break Err(error);
                }
            }
        };
        self.pending = pending;
        self.pending.drain(..position);
        outcome
    }

    /// Whether the row about to be read is the header, which is skipped.
    fn is_header(&self) -> bool {
        self.format.header && self.lines == 0
    }

    fn missing(&self, rows: &RawRows) -> PgError {
        let column = self
            .columns
            .get(rows.fields_in_row())
            .map_or("?", String::as_str);
        bad_format(format!("missing data for column \"{column}\""))
    }

    /// Reads the text-format line at `start`; returns where the next begins.
    fn text_row(
        &mut self,
        data: &[u8],
        start: usize,
        last: bool,
        rows: &mut RawRows,
    ) -> Result<usize, RowError> {
        let (end, next) = match memchr(b'\n', &data[start..]) {
            Some(offset) => (start + offset, start + offset + 1),
            None if last => (data.len(), data.len()),
            None => return Err(RowError::Incomplete),
        };
        let mut line = &data[start..end];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        if line == b"\\." {
            self.ended = true;
            return Ok(next);
        }
        if self.is_header() {
            self.lines += 1;
            return Ok(next);
        }
        let delimiter = self.format.delimiter;
        let mut fields = line.split(|&byte| byte == delimiter);
        for field in &mut fields {
            let value = if field == self.format.null.as_slice() {
                None
            } else if memchr(b'\\', field).is_some() {
                unescape(field, &mut self.scratch);
                Some(self.scratch.as_slice())
            } else {
                Some(field)
            };
            if !rows.push_field(value) {
                return Err(bad_format("extra data after last expected column").into());
            }
        }
        if rows.fields_in_row() < rows.width() {
            return Err(self.missing(rows).into());
        }
        rows.end_row();
        self.lines += 1;
        Ok(next)
    }

    /// Reads the CSV row at `start`; returns where the next begins.
    fn csv_row(
        &mut self,
        data: &[u8],
        start: usize,
        last: bool,
        rows: &mut RawRows,
    ) -> Result<usize, RowError> {
        let Delimited {
            delimiter,
            quote,
            escape,
            ..
        } = self.format;
        let header = self.is_header();
        let mut at = start;
        let mut quoted = false;
        loop {
            // Outside quotes: up to the next delimiter, quote or line end.
            let Some(offset) = memchr3(delimiter, quote, b'\n', &data[at..]) else {
                if !last {
                    return Err(RowError::Incomplete);
                }
                if !header && !rows.extend_field(strip_cr(&data[at..])) {
                    return Err(bad_format("extra data after last expected column").into());
                }
                self.end_csv_field(rows, quoted, header)?;
                return self.end_csv_row(rows, header, data.len());
            };
            let found = at + offset;
            let byte = data[found];
            let piece = if byte == b'\n' {
                strip_cr(&data[at..found])
            } else {
                &data[at..found]
            };
            if !header && !rows.extend_field(piece) {
                return Err(bad_format("extra data after last expected column").into());
            }
            at = found + 1;
            if byte == delimiter {
                self.end_csv_field(rows, quoted, header)?;
                quoted = false;
            } else if byte == b'\n' {
                self.end_csv_field(rows, quoted, header)?;
                return self.end_csv_row(rows, header, at);
            } else {
                // Inside quotes: up to the closing quote.
                quoted = true;
                loop {
                    let Some(offset) = (if escape == quote {
                        memchr(quote, &data[at..])
                    } else {
                        memchr2(quote, escape, &data[at..])
                    }) else {
                        return Err(if last {
                            RowError::Bad(bad_format("unterminated CSV quoted field"))
                        } else {
                            RowError::Incomplete
                        });
                    };
                    let found = at + offset;
                    if !header {
                        rows.extend_field(&data[at..found]);
                    }
                    match data.get(found + 1) {
                        // An escaped quote (a doubled one when the escape is
                        // the quote), or an escaped escape.
                        Some(&next)
                            if data[found] == escape && (next == quote || next == escape) =>
                        {
                            if !header {
                                rows.extend_field(&[next]);
                            }
                            at = found + 2;
                        }
                        None if data[found] == escape && !last => return Err(RowError::Incomplete),
                        _ if data[found] == quote => {
                            at = found + 1;
                            break;
                        }
                        // An escape byte before anything else is data.
                        _ => {
                            if !header {
                                rows.extend_field(&data[found..found + 1]);
                            }
                            at = found + 1;
                        }
                    }
                }
            }
        }
    }

    /// Closes the current CSV field: NULL when it is the NULL string
    /// unquoted (or quoted, in a `FORCE_NULL` column).
    fn end_csv_field(
        &self,
        rows: &mut RawRows,
        quoted: bool,
        header: bool,
    ) -> Result<(), RowError> {
        if header {
            return Ok(());
        }
        let column = rows.fields_in_row();
        let forced = self.force_null.get(column).copied().unwrap_or(false);
        let null = (!quoted || forced) && rows.open_field() == self.format.null.as_slice();
        if !rows.end_field(null) {
            return Err(bad_format("extra data after last expected column").into());
        }
        Ok(())
    }

    fn end_csv_row(
        &mut self,
        rows: &mut RawRows,
        header: bool,
        next: usize,
    ) -> Result<usize, RowError> {
        self.lines += 1;
        if header {
            return Ok(next);
        }
        if rows.fields_in_row() < rows.width() {
            self.lines -= 1;
            return Err(self.missing(rows).into());
        }
        rows.end_row();
        Ok(next)
    }
}

/// `bytes` without a trailing carriage return.
fn strip_cr(bytes: &[u8]) -> &[u8] {
    match bytes {
        [rest @ .., b'\r'] => rest,
        bytes => bytes,
    }
}

/// The text-format escapes of `field` resolved, into `out`.
fn unescape(field: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut bytes = field.iter().copied().peekable();
    while let Some(byte) = bytes.next() {
        if byte != b'\\' {
            out.push(byte);
            continue;
        }
        let Some(next) = bytes.next() else {
            out.push(b'\\');
            break;
        };
        match next {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut value = u32::from(next - b'0');
                for _ in 0..2 {
                    match bytes.peek() {
                        Some(&digit @ b'0'..=b'7') => {
                            value = value * 8 + u32::from(digit - b'0');
                            bytes.next();
                        }
                        _ => break,
                    }
                }
                out.push(value as u8);
            }
            b'x' => {
                let mut value = 0u32;
                let mut digits = 0;
                while digits < 2 {
                    match bytes.peek().and_then(|&b| (b as char).to_digit(16)) {
                        Some(digit) => {
                            value = value * 16 + digit;
                            bytes.next();
                            digits += 1;
                        }
                        None => break,
                    }
                }
                if digits == 0 {
                    out.push(b'x');
                } else {
                    out.push(value as u8);
                }
            }
            other => out.push(other),
        }
    }
}

#[cfg(test)]
mod tests;
