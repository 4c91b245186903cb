//! `COPY table [(column, …)] FROM STDIN`: rows a client streams in
//! PostgreSQL's text, CSV or binary format, read as they arrive and written to the
//! table as Parquet while the next ones come, committed all at once at the
//! end.
//!
//! `COPY table FROM 'location'` reads a file the server can reach (a local
//! path or an object-store URL) the same way, inside the location sandbox
//! ([`copy_from_file`]).
//!
//! Memory stays flat whatever the size: the frontend hands each `CopyData`
//! piece to [`CopyIn::write`], which reads the complete rows in it, turns
//! every [`BATCH_ROWS`] of them into a batch of the table's types and queues
//! it for the [`crate::segment_sink`] (waiting while the writer is behind). A row that does
//! not read or convert fails the COPY with PostgreSQL's message and
//! `CONTEXT: COPY t, line N`, and nothing of it is kept.

mod binary;
mod convert;
mod delimited;
mod file;
pub mod format;
mod raw;

use datafusion::catalog::SchemaProvider;
use datafusion::common::TableReference;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{CopySource, CopyTarget, Ident, ObjectName, Statement};
use std::sync::Arc;

use crate::catalog::managed_table;
use crate::directory_sink::DirectorySink;
use crate::managed_write::schema_of;
use crate::sandbox::SessionSandbox;
use crate::segment_sink::{Sink, WriteSettings};
use crate::sqlstate::{pg_error, PgError, SqlState};
use binary::BinaryReader;
use convert::{assemble, to_batch, Target};
use datafusion::arrow::record_batch::RecordBatch;
use delimited::DelimitedReader;
pub use format::CopyFormat;
use futures::StreamExt;
use raw::RawRows;

/// Rows converted and written together.
pub const BATCH_ROWS: usize = 8192;

/// How the rows are read.
enum Reader {
    /// Text or CSV, into fields of text.
    Delimited(DelimitedReader, RawRows),
    /// `PGCOPY`, into typed columns.
    Binary(BinaryReader),
}

impl Reader {
    /// The line (or tuple) number of the row being read.
    fn line(&self) -> u64 {
        match self {
            Self::Delimited(reader, _) => reader.line(),
            Self::Binary(reader) => reader.line(),
        }
    }

    /// Rows read and not yet written.
    fn rows(&self) -> usize {
        match self {
            Self::Delimited(_, rows) => rows.len(),
            Self::Binary(reader) => reader.len(),
        }
    }
}

/// Where the rows are written.
enum Destination {
    /// A new write directory of a managed table.
    Segments(Box<Sink>),
    /// New files of an external table over a directory.
    Directory(DirectorySink),
}

impl Destination {
    async fn send(&mut self, batch: RecordBatch) -> datafusion::error::Result<()> {
        match self {
            Self::Segments(sink) => sink.send(batch).await,
            Self::Directory(sink) => sink.send(batch).await,
        }
    }

    async fn commit(self) -> datafusion::error::Result<u64> {
        match self {
            Self::Segments(sink) => sink.commit().await,
            Self::Directory(sink) => sink.commit().await,
        }
    }
}

/// A `COPY … FROM` under way.
pub struct CopyIn {
    reader: Reader,
    target: Target,
    sink: Destination,
    format: CopyFormat,
}

/// Where a `COPY … FROM` reads its rows.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// The client, in `CopyData` messages.
    Stdin,
    /// A file the server reads.
    File(&'a str),
}

/// What a `COPY … FROM` statement names.
struct CopyStatement<'a> {
    table: &'a ObjectName,
    columns: &'a [Ident],
    format: CopyFormat,
}

impl<'a> CopyStatement<'a> {
    /// The `COPY … FROM` `statement` is, with where it reads; `None` when it
    /// is no such statement.
    fn of(statement: &'a Statement) -> Option<(Source<'a>, Result<Self, PgError>)> {
        let Statement::Copy {
            source:
                CopySource::Table {
                    table_name,
                    columns,
                },
            to: false,
            target,
            options,
            legacy_options,
            ..
        } = statement
        else {
            return None;
        };
        let source = match target {
            CopyTarget::Stdin => Source::Stdin,
            CopyTarget::File { filename } => Source::File(filename),
            _ => return None,
        };
        let copy = CopyFormat::new(options, legacy_options).map(|format| Self {
            table: table_name,
            columns,
            format,
        });
        Some((source, copy))
    }
}

/// Whether `statement` is a `COPY … FROM STDIN`.
pub fn is_copy_from_stdin(statement: &Statement) -> bool {
    matches!(CopyStatement::of(statement), Some((Source::Stdin, _)))
}

/// Whether `statement` is a `COPY … FROM 'location'`.
pub fn is_copy_from_file(statement: &Statement) -> bool {
    matches!(CopyStatement::of(statement), Some((Source::File(_), _)))
}

/// Runs `statement` when it is a `COPY table FROM 'location'`: the server
/// reads the file (a local path or an object-store URL, inside the session's
/// location sandbox, never the server's own state) as it reads a client's
/// rows, all or nothing; returns the rows loaded.
pub async fn copy_from_file(
    context: &SessionContext,
    statement: &Statement,
) -> Option<Result<u64, PgError>> {
    let (Source::File(location), copy) = CopyStatement::of(statement)? else {
        return None;
    };
    Some(
        async {
            let mut rows = CopyIn::open(context, copy?).await?;
            let sandbox = context
                .state_ref()
                .read()
                .config_options()
                .extensions
                .get::<SessionSandbox>()
                .cloned();
            let runtime = context.runtime_env();
            let mut contents =
                file::open(location, sandbox.as_ref().map(|s| s.0.as_ref()), &runtime).await?;
            while let Some(piece) = contents.next().await {
                rows.write(&piece?).await?;
            }
            rows.finish().await
        }
        .await,
    )
}

/// The name DataFusion resolves `ident` to: unquoted ones in lower case.
fn normalized(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

fn raised(error: DataFusionError) -> PgError {
    pg_error(&error)
}

impl CopyIn {
    /// Starts the `COPY … FROM STDIN` of `statement` in `context`; `None`
    /// when it is not one.
    pub async fn start(
        context: &SessionContext,
        statement: &Statement,
    ) -> Option<Result<Self, PgError>> {
        let copy = match CopyStatement::of(statement)? {
            (Source::Stdin, Ok(copy)) => copy,
            (Source::Stdin, Err(e)) => return Some(Err(e)),
            (Source::File(_), _) => return None,
        };
        Some(Self::open(context, copy).await)
    }

    async fn open(context: &SessionContext, copy: CopyStatement<'_>) -> Result<Self, PgError> {
        let parts: Vec<String> = copy
            .table
            .0
            .iter()
            .filter_map(|part| part.as_ident())
            .map(normalized)
            .collect();
        let reference = match parts.as_slice() {
            [table] => TableReference::bare(table.as_str()),
            [schema, table] => TableReference::partial(schema.as_str(), table.as_str()),
            [catalog, schema, table] => {
                TableReference::full(catalog.as_str(), schema.as_str(), table.as_str())
            }
            _ => return Err(PgError::undefined_table(copy.table)),
        };
        let missing = || PgError::undefined_table(copy.table);
        let (schema, name): (Arc<dyn SchemaProvider>, String) =
            schema_of(context, &reference).ok_or_else(missing)?;
        let provider = schema
            .table(&name)
            .await
            .map_err(raised)?
            .ok_or_else(missing)?;
        let table_schema = provider.schema();
        let inputs = if copy.columns.is_empty() {
            (0..table_schema.fields().len()).collect()
        } else {
            copy.columns
                .iter()
                .map(|column| {
                    let column = normalized(column);
                    table_schema.index_of(&column).map_err(|_| {
                        PgError::new(
                            SqlState::UNDEFINED_COLUMN,
                            format!("column \"{column}\" of relation \"{name}\" does not exist"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        let target = Target {
            table: name.clone(),
            schema: Arc::clone(&table_schema),
            inputs,
        };
        let reader = match &copy.format {
            CopyFormat::Text(format) | CopyFormat::Csv(format) => {
                let csv = matches!(copy.format, CopyFormat::Csv(_));
                Reader::Delimited(
                    DelimitedReader::new(format.clone(), csv, target.input_names()),
                    RawRows::new(target.inputs.len()),
                )
            }
            CopyFormat::Binary => Reader::Binary(BinaryReader::new(&table_schema, &target.inputs)?),
        };
        let sink = match managed_table(&schema, &name) {
            Some(managed) => Destination::Segments(Box::new(
                Sink::open(
                    &WriteSettings::of(context),
                    schema,
                    &name,
                    &managed.location,
                    table_schema,
                )
                .map_err(raised)?,
            )),
            None => match DirectorySink::open(context, reference, provider)
                .await
                .map_err(raised)?
            {
                Some(sink) => Destination::Directory(sink),
                None => {
                    return Err(PgError::new(
                        SqlState::FEATURE_NOT_SUPPORTED,
                        format!(
                            "COPY FROM into \"{name}\": only tables made by CREATE TABLE and \
                         external tables over a directory take rows from COPY"
                        ),
                    ))
                }
            },
        };
        Ok(Self {
            reader,
            target,
            sink,
            format: copy.format,
        })
    }

    /// The format the client sends the rows in.
    pub fn format(&self) -> &CopyFormat {
        &self.format
    }

    /// The number of columns each row has.
    pub fn columns(&self) -> usize {
        self.target.inputs.len()
    }

    /// `error` at the row being read.
    fn at_current_row(&self, error: PgError) -> PgError {
        error.with_context(self.target.context(self.reader.line(), None))
    }

    /// Reads the rows `data` completes, writing every full batch.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), PgError> {
        let read = match &mut self.reader {
            Reader::Delimited(reader, rows) => reader.push(data, rows),
            Reader::Binary(reader) => reader.push(data),
        };
        read.map_err(|e| self.at_current_row(e))?;
        if self.reader.rows() >= BATCH_ROWS {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), PgError> {
        let rows = self.reader.rows();
        if rows == 0 {
            return Ok(());
        }
        let first_line = self.reader.line() - rows as u64;
        let batch = match &mut self.reader {
            Reader::Delimited(_, raw) => {
                let batch = to_batch(raw, &self.target, first_line);
                raw.clear();
                batch?
            }
            Reader::Binary(reader) => {
                let last_line = first_line + rows as u64 - 1;
                let arrays = reader.take().map_err(|e| {
                    let table = &self.target.table;
                    e.with_context(format!("COPY {table}, lines {first_line} to {last_line}"))
                })?;
                assemble(&self.target, arrays, first_line)?
            }
        };
        self.sink.send(batch).await.map_err(raised)
    }

    /// Reads the end of the data, writes what is left and commits every row;
    /// returns how many there were.
    pub async fn finish(mut self) -> Result<u64, PgError> {
        let read = match &mut self.reader {
            Reader::Delimited(reader, rows) => reader.finish(rows),
            Reader::Binary(reader) => reader.finish(),
        };
        read.map_err(|e| self.at_current_row(e))?;
        self.flush().await?;
        self.sink.commit().await.map_err(raised)
    }
}
