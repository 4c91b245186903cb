//! `COPY (query) TO STDOUT [(FORMAT text|csv|binary, HEADER, DELIMITER 'c',
//! NULL 's')]`: what psql's `\copy (query) TO 'file'` sends. Rows stream to
//! the client as they come from the cluster, one `CopyData` message per row,
//! in PostgreSQL's text, CSV or binary format, each batch encoded a column
//! at a time ([`pg_text::encode`], and for binary the encoders of result
//! rows, [`encode_tuples`]).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::FormatOptions;
use datafusion::common::ParamValues;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{CopyOption, CopySource, CopyTarget, Statement};
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::pgwire::api::results::{CopyResponse, Response};
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::copy::CopyData;
use futures::StreamExt;
use sluice_engine::sqlstate::{PgError, SqlState};

use datafusion_postgres::arrow_pg::datatypes::arrow_schema_to_pg_fields;
use datafusion_postgres::pgwire::api::portal::Format;

use super::data_rows::encode_tuples;
use super::pg_text;
use super::sqlstate::wire_error;

/// The signature, flags and header extension length that open a binary
/// COPY (PostgreSQL's `PGCOPY` format, version 0).
const BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// The output format of a `COPY … TO STDOUT`.
#[derive(Debug, Clone, PartialEq)]
struct CopyFormat {
    csv: bool,
    binary: bool,
    header: bool,
    /// One ASCII byte, as PostgreSQL requires.
    delimiter: u8,
    null: String,
}

impl CopyFormat {
    fn new(options: &[CopyOption]) -> Result<Self, PgError> {
        let unsupported = |message: String| PgError::new(SqlState::FEATURE_NOT_SUPPORTED, message);
        let syntax = |message: &str| PgError::new(SqlState::SYNTAX_ERROR, message);
        let (mut csv, mut binary) = (false, false);
        let (mut header, mut delimiter, mut null) = (false, None, None);
        for option in options {
            match option {
                CopyOption::Format(name) => match name.value.to_ascii_lowercase().as_str() {
                    "text" => (csv, binary) = (false, false),
                    "csv" => (csv, binary) = (true, false),
                    "binary" => (csv, binary) = (false, true),
                    other => {
                        return Err(PgError::new(
                            SqlState::INVALID_PARAMETER_VALUE,
                            format!("COPY format \"{other}\" not recognized"),
                        ))
                    }
                },
                CopyOption::Header(value) => header = *value,
                CopyOption::Delimiter(value) => delimiter = Some(*value),
                CopyOption::Null(value) => null = Some(value.clone()),
                other => return Err(unsupported(format!("COPY option {other} is not supported"))),
            }
        }
        if binary {
            // PostgreSQL's words and codes for each.
            if delimiter.is_some() {
                return Err(syntax("cannot specify DELIMITER in BINARY mode"));
            }
            if null.is_some() {
                return Err(syntax("cannot specify NULL in BINARY mode"));
            }
            if header {
                return Err(unsupported("cannot specify HEADER in BINARY mode".into()));
            }
        }
        if header && !csv {
            return Err(unsupported("COPY HEADER available only in CSV mode".into()));
        }
        let delimiter = delimiter.unwrap_or(if csv { ',' } else { '\t' });
        if !delimiter.is_ascii() {
            return Err(unsupported(
                "COPY delimiter must be a single one-byte character".into(),
            ));
        }
        Ok(Self {
            csv,
            binary,
            header,
            delimiter: delimiter as u8,
            null: null.unwrap_or_else(|| if csv { String::new() } else { "\\N".into() }),
        })
    }

    /// Appends one field, quoted or escaped as the format requires (bytes
    /// of UTF-8 text: a multi-byte character never holds an ASCII byte).
    fn field(&self, out: &mut BytesMut, value: Option<&[u8]>) {
        let Some(value) = value else {
            out.extend_from_slice(self.null.as_bytes());
            return;
        };
        let delimiter = self.delimiter;
        if self.csv {
            let quote = value.is_empty()
                || value == self.null.as_bytes()
                || value
                    .iter()
                    .any(|b| *b == delimiter || matches!(b, b'"' | b'\n' | b'\r'));
            if quote {
                out.put_u8(b'"');
                for &byte in value {
                    if byte == b'"' {
                        out.put_u8(b'"');
                    }
                    out.put_u8(byte);
                }
                out.put_u8(b'"');
            } else {
                out.extend_from_slice(value);
            }
            return;
        }
        for &byte in value {
            match byte {
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                byte if byte == delimiter => {
                    out.put_u8(b'\\');
                    out.put_u8(byte);
                }
                byte => out.put_u8(byte),
            }
        }
    }

    /// Appends one row of `fields` and its line end.
    fn row<'a>(&self, out: &mut BytesMut, fields: impl Iterator<Item = Option<&'a [u8]>>) {
        for (index, value) in fields.enumerate() {
            if index > 0 {
                out.put_u8(self.delimiter);
            }
            self.field(out, value);
        }
        out.put_u8(b'\n');
    }

    fn line<'a>(&self, fields: impl Iterator<Item = Option<&'a str>>) -> Bytes {
        let mut line = BytesMut::new();
        self.row(&mut line, fields.map(|value| value.map(str::as_bytes)));
        line.freeze()
    }
}

/// Values as PostgreSQL's text output shows them.
fn format_options() -> FormatOptions<'static> {
    FormatOptions::new()
        .with_null("")
        .with_date_format(Some("%Y-%m-%d"))
        .with_timestamp_format(Some("%Y-%m-%d %H:%M:%S%.f"))
        .with_timestamp_tz_format(Some("%Y-%m-%d %H:%M:%S%.f%:z"))
        .with_time_format(Some("%H:%M:%S%.f"))
}

/// The rows of `batch`, one `CopyData` each, encoded a column at a time
/// into one buffer.
fn encode(format: &CopyFormat, batch: &RecordBatch) -> PgWireResult<Vec<CopyData>> {
    if format.binary {
        let fields = arrow_schema_to_pg_fields(&batch.schema(), &Format::UnifiedBinary, None)?;
        let tuples = encode_tuples(&fields, batch, true)?;
        return Ok(tuples
            .into_iter()
            .map(|tuple| CopyData::new(tuple.freeze()))
            .collect());
    }
    encode_text(format, batch).map_err(api)
}

/// [`encode`] in the text and CSV formats.
fn encode_text(format: &CopyFormat, batch: &RecordBatch) -> Result<Vec<CopyData>, DataFusionError> {
    let options = format_options();
    let columns = batch
        .columns()
        .iter()
        .map(|column| pg_text::encode(column, &options))
        .collect::<Result<Vec<_>, _>>()?;
    let mut buffer = BytesMut::with_capacity(batch.get_array_memory_size().max(1024));
    let mut rows = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        format.row(&mut buffer, columns.iter().map(|column| column.value(row)));
        rows.push(CopyData::new(buffer.split().freeze()));
    }
    Ok(rows)
}

/// The `SELECT` a `COPY` source stands for.
fn source_query(source: &CopySource) -> String {
    match source {
        CopySource::Query(query) => query.to_string(),
        CopySource::Table {
            table_name,
            columns,
        } if columns.is_empty() => format!("SELECT * FROM {table_name}"),
        CopySource::Table {
            table_name,
            columns,
        } => {
            let columns: Vec<String> = columns.iter().map(ToString::to_string).collect();
            format!("SELECT {} FROM {table_name}", columns.join(", "))
        }
    }
}

fn api(error: DataFusionError) -> PgWireError {
    PgWireError::ApiError(Box::new(error))
}

async fn copy_out(
    context: &SessionContext,
    source: &CopySource,
    options: &[CopyOption],
) -> PgWireResult<Response> {
    let format = CopyFormat::new(options).map_err(wire_error)?;
    let frame = context.sql(&source_query(source)).await.map_err(api)?;
    let columns = frame.schema().fields().len();
    let header = if format.binary {
        Some(Bytes::from_static(BINARY_HEADER))
    } else {
        format.header.then(|| {
            format.line(
                frame
                    .schema()
                    .fields()
                    .iter()
                    .map(|field| Some(field.name().as_str())),
            )
        })
    };
    let batches = frame.execute_stream().await.map_err(api)?;
    let binary = format.binary;
    let format = Arc::new(format);
    let mut header = header;
    let rows = batches.flat_map(move |batch| {
        let rows = batch.map_err(api).and_then(|batch| encode(&format, &batch));
        let mut rows = match rows {
            Ok(rows) => rows.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => vec![Err(e)],
        };
        // The header (or binary signature) travels with the first row:
        // pgwire counts messages for the command tag, and it is not a row.
        if let (Some(text), Some(Ok(first))) = (header.as_ref(), rows.first_mut()) {
            let mut data = BytesMut::from(text.as_ref());
            data.put(first.data.clone());
            first.data = data.freeze();
            header = None;
        }
        futures::stream::iter(rows)
    });
    let format_code = if binary { 1 } else { 0 };
    Ok(Response::CopyOut(CopyResponse::new(
        format_code,
        columns,
        rows,
    )))
}

/// Answers `COPY … TO STDOUT` (simple query protocol, as psql sends it).
#[derive(Debug, Default)]
pub struct CopyToStdoutHook;

#[async_trait]
impl QueryHook for CopyToStdoutHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        context: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let Statement::Copy {
            source,
            to: true,
            target: CopyTarget::Stdout,
            options,
            legacy_options,
            ..
        } = statement
        else {
            return None;
        };
        if !legacy_options.is_empty() {
            return Some(Err(api(DataFusionError::NotImplemented(
                "COPY TO STDOUT takes options in parentheses: (FORMAT csv, HEADER)".into(),
            ))));
        }
        Some(copy_out(context, source, options).await)
    }

    async fn handle_extended_parse_query(
        &self,
        _statement: &Statement,
        _context: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        None
    }

    async fn handle_extended_query(
        &self,
        _statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _context: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_csv_quote_like_postgres() {
        let text = CopyFormat::new(&[]).unwrap();
        assert_eq!(
            text.line([Some("a\tb\\c"), None, Some("")].into_iter()),
            "a\\tb\\\\c\t\\N\t\n"
        );
        let csv =
            CopyFormat::new(&[CopyOption::Format("csv".into()), CopyOption::Header(true)]).unwrap();
        assert_eq!(
            csv.line([Some("x,y"), None, Some(""), Some("say \"hi\"")].into_iter()),
            "\"x,y\",,\"\",\"say \"\"hi\"\"\"\n"
        );
    }
}
