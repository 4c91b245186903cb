//! sqllogictest's database interface over a tokio-postgres connection.

use std::time::Duration;

use sqllogictest::{AsyncDB, DBOutput};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::column_type::SltColumnType;

/// A failed statement: SQLSTATE and server message when the server sent an
/// ErrorResponse, the client error otherwise.
#[derive(Debug)]
pub struct DbError(tokio_postgres::Error);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_db_error() {
            Some(db) => write!(f, "{}: {}", db.code().code(), db.message()),
            None => write!(f, "{}", self.0),
        }
    }
}

impl std::error::Error for DbError {}

/// Connects as user `sluice` to database `sluice` on 127.0.0.1:`port`; the
/// connection runs on a spawned task until the client is dropped.
pub async fn connect(port: u16) -> Result<Client, tokio_postgres::Error> {
    let config = format!("host=127.0.0.1 port={port} user=sluice dbname=sluice");
    let (client, connection) = tokio_postgres::connect(&config, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Writes 100,000 rows `(id, bucket = id % 10)` as Parquet files into the
/// directory `data` (a `COPY` the executors run) and registers them as table
/// `numbers`; the session's later queries run on the cluster and are split
/// into stages even though the table is small (`sluice.frontend_max_bytes =
/// 0`, `sluice.single_stage_max_bytes = 0`).
pub async fn create_numbers_table(
    client: &Client,
    data: &std::path::Path,
) -> Result<(), tokio_postgres::Error> {
    let data = data.display();
    client
        .batch_execute(&format!(
            "SET sluice.frontend_max_bytes = 0; SET sluice.single_stage_max_bytes = 0; \
             COPY (SELECT i AS id, i % 10 AS bucket FROM generate_series(1, 100000) AS t(i)) \
             TO '{data}/' (FORMAT parquet); \
             CREATE EXTERNAL TABLE numbers STORED AS PARQUET LOCATION '{data}/'"
        ))
        .await
}

/// A multi-stage join over the table [`create_numbers_table`] makes: ten
/// rows, one per bucket, from tasks on every executor.
pub const NUMBERS_JOIN: &str = "SELECT a.bucket, count(*) FROM numbers a JOIN numbers b \
                                ON a.id = b.id GROUP BY a.bucket";

/// The ids of the executors `sluice.executors` lists, sorted.
pub async fn executor_ids(client: &Client) -> Result<Vec<String>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT executor_id FROM sluice.executors ORDER BY executor_id",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// One Postgres-protocol connection to a Sluice server.
pub struct PostgresDb {
    client: Client,
}

impl PostgresDb {
    /// The types of the `width` columns `sql` answers with, as the server
    /// describes them when the statement is prepared (the simple protocol
    /// sends no types); `?` for each when it cannot be prepared on its own
    /// (several statements in one string).
    async fn column_types(&self, sql: &str, width: usize) -> Vec<SltColumnType> {
        match self.client.prepare(sql).await {
            Ok(statement) if statement.columns().len() == width => statement
                .columns()
                .iter()
                .map(|column| SltColumnType::of(column.type_()))
                .collect(),
            _ => vec![SltColumnType::Other; width],
        }
    }

    /// Connects as user `sluice` to database `sluice` on 127.0.0.1:`port`
    /// and runs `setup`, if any.
    pub async fn connect(port: u16, setup: Option<&str>) -> Result<Self, DbError> {
        let client = connect(port).await.map_err(DbError)?;
        if let Some(setup) = setup {
            client.batch_execute(setup).await.map_err(DbError)?;
        }
        Ok(Self { client })
    }
}

#[async_trait::async_trait]
impl AsyncDB for PostgresDb {
    type Error = DbError;
    type ColumnType = SltColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        let messages = self.client.simple_query(sql).await.map_err(DbError)?;
        let mut columns = None;
        let mut rows = Vec::new();
        let mut affected = 0;
        for message in messages {
            match message {
                SimpleQueryMessage::RowDescription(description) => {
                    columns = Some(description.len())
                }
                SimpleQueryMessage::Row(row) => {
                    columns.get_or_insert(row.len());
                    rows.push(
                        (0..row.len())
                            .map(|i| match row.get(i) {
                                None => "NULL".to_string(),
                                Some("") => "(empty)".to_string(),
                                Some(value) => value.to_string(),
                            })
                            .collect(),
                    );
                }
                SimpleQueryMessage::CommandComplete(count) => affected = count,
                _ => {}
            }
        }
        Ok(match columns {
            Some(width) => DBOutput::Rows {
                types: self.column_types(sql, width).await,
                rows,
            },
            None => DBOutput::StatementComplete(affected),
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "sluice"
    }

    async fn sleep(duration: Duration) {
        tokio::time::sleep(duration).await;
    }

    fn error_sql_state(error: &Self::Error) -> Option<String> {
        error.0.code().map(|code| code.code().to_string())
    }
}
