//! `COPY (query) TO STDOUT [(FORMAT text|csv, HEADER, DELIMITER 'c', NULL 's')]`:
//! what psql's `\copy (query) TO 'file'` sends. Rows stream to the client as
//! they come from the cluster, one `CopyData` message per row, in PostgreSQL's
//! text or CSV format.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use datafusion::arrow::array::{Array, BooleanArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
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

/// The output format of a `COPY … TO STDOUT`.
#[derive(Debug, Clone, PartialEq)]
struct CopyFormat {
    csv: bool,
    header: bool,
    delimiter: char,
    null: String,
}

impl CopyFormat {
    fn new(options: &[CopyOption]) -> Result<Self, String> {
        let mut csv = false;
        let (mut header, mut delimiter, mut null) = (false, None, None);
        for option in options {
            match option {
                CopyOption::Format(name) => match name.value.to_ascii_lowercase().as_str() {
                    "text" => csv = false,
                    "csv" => csv = true,
                    other => {
                        return Err(format!(
                            "COPY TO STDOUT format {other} is not supported (use text or csv)"
                        ))
                    }
                },
                CopyOption::Header(value) => header = *value,
                CopyOption::Delimiter(value) => delimiter = Some(*value),
                CopyOption::Null(value) => null = Some(value.clone()),
                other => return Err(format!("COPY option {other} is not supported")),
            }
        }
        if header && !csv {
            return Err("COPY HEADER available only in CSV mode".into());
        }
        Ok(Self {
            csv,
            header,
            delimiter: delimiter.unwrap_or(if csv { ',' } else { '\t' }),
            null: null.unwrap_or_else(|| if csv { String::new() } else { "\\N".into() }),
        })
    }

    /// Appends one field, quoted or escaped as the format requires.
    fn field(&self, out: &mut String, value: Option<&str>) {
        let Some(value) = value else {
            out.push_str(&self.null);
            return;
        };
        if self.csv {
            let quote = value.is_empty()
                || value == self.null
                || value
                    .chars()
                    .any(|c| c == self.delimiter || c == '"' || c == '\n' || c == '\r');
            if quote {
                out.push('"');
                out.push_str(&value.replace('"', "\"\""));
                out.push('"');
            } else {
                out.push_str(value);
            }
            return;
        }
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c == self.delimiter => {
                    out.push('\\');
                    out.push(c);
                }
                c => out.push(c),
            }
        }
    }

    fn line<'a>(&self, fields: impl Iterator<Item = Option<&'a str>>) -> String {
        let mut line = String::new();
        for (index, value) in fields.enumerate() {
            if index > 0 {
                line.push(self.delimiter);
            }
            self.field(&mut line, value);
        }
        line.push('\n');
        line
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

/// The rows of `batch`, one `CopyData` each.
fn encode(format: &CopyFormat, batch: &RecordBatch) -> Result<Vec<CopyData>, DataFusionError> {
    let options = format_options();
    let columns: Vec<(ArrayFormatter, &dyn Array)> = batch
        .columns()
        .iter()
        .map(|column| {
            Ok((
                ArrayFormatter::try_new(column.as_ref(), &options)?,
                column.as_ref(),
            ))
        })
        .collect::<Result<_, DataFusionError>>()?;
    let mut rows = Vec::with_capacity(batch.num_rows());
    let mut values: Vec<Option<String>> = Vec::with_capacity(columns.len());
    for row in 0..batch.num_rows() {
        values.clear();
        for (formatter, array) in &columns {
            values.push(if array.is_null(row) {
                None
            } else if array.data_type() == &DataType::Boolean {
                let flags = array.as_any().downcast_ref::<BooleanArray>();
                Some(
                    if flags.is_some_and(|f| f.value(row)) {
                        "t"
                    } else {
                        "f"
                    }
                    .into(),
                )
            } else {
                Some(formatter.value(row).to_string())
            });
        }
        let line = format.line(values.iter().map(Option::as_deref));
        rows.push(CopyData::new(Bytes::from(line)));
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
    let format = CopyFormat::new(options).map_err(|e| api(DataFusionError::NotImplemented(e)))?;
    let frame = context.sql(&source_query(source)).await.map_err(api)?;
    let columns = frame.schema().fields().len();
    let header = format.header.then(|| {
        format.line(
            frame
                .schema()
                .fields()
                .iter()
                .map(|field| Some(field.name().as_str())),
        )
    });
    let batches = frame.execute_stream().await.map_err(api)?;
    let format = Arc::new(format);
    let mut header = header;
    let rows = batches.flat_map(move |batch| {
        let rows = batch.and_then(|batch| encode(&format, &batch));
        let mut rows = match rows {
            Ok(rows) => rows.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => vec![Err(api(e))],
        };
        // The header travels with the first row: pgwire counts messages for
        // the command tag, and the header is not a row.
        if let (Some(text), Some(Ok(first))) = (header.as_ref(), rows.first_mut()) {
            let mut data = BytesMut::from(text.as_bytes());
            data.put(first.data.clone());
            first.data = data.freeze();
            header = None;
        }
        futures::stream::iter(rows)
    });
    Ok(Response::CopyOut(CopyResponse::new(0, columns, rows)))
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
