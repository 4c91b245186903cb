//! The cursors a connection has open, and `pg_catalog.pg_cursors`, which
//! shows them.
//!
//! psycopg 3 asks it whether a server-side cursor it did not declare itself
//! still exists before closing it (SQLAlchemy's `stream_results`). Each
//! connection's session carries its [`OpenCursors`] (a session config
//! extension the frontend's `DECLARE`, `FETCH` and `CLOSE` use), and the
//! shared `pg_catalog` schema gets a table that shows the asking session's.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use async_trait::async_trait;
use datafusion::arrow::array::{BooleanArray, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionConfig;

use crate::cursor_rows::CursorRows;

/// The table's name in `pg_catalog`.
const PG_CURSORS: &str = "pg_cursors";

/// One open cursor: what `pg_catalog.pg_cursors` shows of it and the rows
/// it has left.
#[derive(Debug, Clone)]
struct OpenCursor {
    name: String,
    statement: String,
    created: SystemTime,
    schema: SchemaRef,
    rows: Arc<tokio::sync::Mutex<CursorRows>>,
    /// Whether it outlives the transaction block it was declared in
    /// (`WITH HOLD`, or declared outside any block).
    holdable: bool,
}

/// The cursors one connection has declared and not closed.
#[derive(Debug, Default)]
pub struct OpenCursors {
    cursors: Mutex<Vec<OpenCursor>>,
}

impl OpenCursors {
    /// The open cursors of the session configured by `config`, if it keeps
    /// them (a frontend connection's does).
    pub fn of(config: &SessionConfig) -> Option<Arc<Self>> {
        config.get_extension::<Self>()
    }

    /// Opens cursor `name`, declared by `statement`, over `rows`, kept past
    /// the end of its transaction block when `holdable`; `false` (and
    /// nothing opened) when the connection has one of that name open
    /// already.
    pub fn declare(&self, name: &str, statement: &str, rows: CursorRows, holdable: bool) -> bool {
        let mut cursors = self.lock();
        if cursors.iter().any(|cursor| cursor.name == name) {
            return false;
        }
        cursors.push(OpenCursor {
            name: name.to_string(),
            statement: statement.to_string(),
            created: SystemTime::now(),
            schema: rows.schema(),
            rows: Arc::new(tokio::sync::Mutex::new(rows)),
            holdable,
        });
        true
    }

    /// Whether cursor `name` is open.
    pub fn is_open(&self, name: &str) -> bool {
        self.lock().iter().any(|cursor| cursor.name == name)
    }

    /// The schema of open cursor `name`'s rows.
    pub fn schema(&self, name: &str) -> Option<SchemaRef> {
        let cursors = self.lock();
        let cursor = cursors.iter().find(|cursor| cursor.name == name)?;
        Some(Arc::clone(&cursor.schema))
    }

    /// The rows open cursor `name` has left (see [`CursorRows::fetch`]) and
    /// their schema.
    pub fn rows(&self, name: &str) -> Option<(Arc<tokio::sync::Mutex<CursorRows>>, SchemaRef)> {
        let cursors = self.lock();
        let cursor = cursors.iter().find(|cursor| cursor.name == name)?;
        Some((Arc::clone(&cursor.rows), Arc::clone(&cursor.schema)))
    }

    /// Closes cursor `name`, dropping its rows (and the query producing
    /// them, unless a `FETCH` still reads them); `false` when no cursor of
    /// that name is open.
    pub fn close(&self, name: &str) -> bool {
        let mut cursors = self.lock();
        let before = cursors.len();
        cursors.retain(|cursor| cursor.name != name);
        cursors.len() != before
    }

    /// Closes every cursor.
    pub fn close_all(&self) {
        self.lock().clear();
    }

    /// Closes the cursors that end with their transaction block (at its
    /// `COMMIT` or `ROLLBACK`, as PostgreSQL does).
    pub fn close_unheld(&self) {
        self.lock().retain(|cursor| cursor.holdable);
    }

    fn lock(&self) -> MutexGuard<'_, Vec<OpenCursor>> {
        self.cursors.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Adds `pg_cursors` to the `pg_catalog` schema of catalog `catalog` in
/// `context` (after datafusion-postgres installed the schema).
pub fn install(context: &SessionContext, catalog: &str) -> Result<()> {
    let catalog = context.catalog(catalog).ok_or_else(|| {
        DataFusionError::Configuration(format!("no catalog {catalog} to add pg_cursors to"))
    })?;
    let inner = catalog.schema("pg_catalog").ok_or_else(|| {
        DataFusionError::Configuration("no pg_catalog schema to add pg_cursors to".into())
    })?;
    catalog.register_schema("pg_catalog", Arc::new(WithPgCursors { inner }))?;
    Ok(())
}

/// A `pg_catalog` schema plus `pg_cursors`.
#[derive(Debug)]
struct WithPgCursors {
    inner: Arc<dyn SchemaProvider>,
}

#[async_trait]
impl SchemaProvider for WithPgCursors {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.inner.table_names();
        names.push(PG_CURSORS.to_string());
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if name.eq_ignore_ascii_case(PG_CURSORS) {
            return Ok(Some(Arc::new(PgCursorsTable::default())));
        }
        self.inner.table(name).await
    }

    fn table_exist(&self, name: &str) -> bool {
        name.eq_ignore_ascii_case(PG_CURSORS) || self.inner.table_exist(name)
    }
}

/// `pg_cursors` for the session that reads it.
#[derive(Debug)]
struct PgCursorsTable {
    schema: SchemaRef,
}

impl Default for PgCursorsTable {
    fn default() -> Self {
        let timestamp = DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()));
        Self {
            schema: Arc::new(Schema::new(vec![
                Field::new("name", DataType::Utf8, false),
                Field::new("statement", DataType::Utf8, false),
                Field::new("is_holdable", DataType::Boolean, false),
                Field::new("is_binary", DataType::Boolean, false),
                Field::new("is_scrollable", DataType::Boolean, false),
                Field::new("creation_time", timestamp, false),
            ])),
        }
    }
}

#[async_trait]
impl TableProvider for PgCursorsTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let cursors = OpenCursors::of(state.config())
            .map(|open| open.lock().clone())
            .unwrap_or_default();
        let micros = |time: SystemTime| {
            time.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |since| since.as_micros() as i64)
        };
        // Cursors are text and forward only.
        let none = || BooleanArray::from(vec![false; cursors.len()]);
        let holdable = BooleanArray::from_iter(cursors.iter().map(|c| Some(c.holdable)));
        let batch = RecordBatch::try_new(
            self.schema(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    cursors.iter().map(|c| &c.name),
                )),
                Arc::new(StringArray::from_iter_values(
                    cursors.iter().map(|c| &c.statement),
                )),
                Arc::new(holdable),
                Arc::new(none()),
                Arc::new(none()),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(
                        cursors.iter().map(|c| micros(c.created)),
                    )
                    .with_timezone("+00:00"),
                ),
            ],
        )?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema(),
            projection.cloned(),
        )?)
    }
}
