//! Result streaming: how fast a server sends a large result to one client,
//! in the text format (simple query protocol) and the binary format
//! (extended protocol, as tokio-postgres asks for binary results). Works
//! against any PostgreSQL-protocol server, so Sluice and PostgreSQL are
//! measured by the same client.

use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use tokio_postgres::{Client, SimpleQueryMessage};

/// The wire format of result values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    /// Text values, simple query protocol.
    Text,
    /// Binary values, extended protocol.
    Binary,
}

impl WireFormat {
    /// The format's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Binary => "binary",
        }
    }
}

/// One timed read of a whole result.
#[derive(Debug, Clone)]
pub struct StreamRun {
    /// Format the rows came in.
    pub format: WireFormat,
    /// Rows received.
    pub rows: u64,
    /// Wall-clock seconds from sending the query to the last row.
    pub seconds: f64,
    /// Wall-clock seconds from sending the query to the first row, if any
    /// came.
    pub first_row_seconds: Option<f64>,
}

impl StreamRun {
    /// Rows per second.
    pub fn rows_per_second(&self) -> f64 {
        self.rows as f64 / self.seconds.max(f64::EPSILON)
    }
}

/// Reads every row `query` returns, in `format`, counting them.
pub async fn stream(
    client: &Client,
    query: &str,
    format: WireFormat,
) -> Result<StreamRun, tokio_postgres::Error> {
    let started = Instant::now();
    let mut rows = 0;
    let mut first_row = None;
    let mut counted = || {
        if rows == 0 {
            first_row = Some(started.elapsed().as_secs_f64());
        }
        rows += 1;
    };
    match format {
        WireFormat::Text => {
            let messages = client.simple_query_raw(query).await?;
            futures::pin_mut!(messages);
            while let Some(message) = messages.next().await {
                if let SimpleQueryMessage::Row(_) = message? {
                    counted();
                }
            }
        }
        WireFormat::Binary => {
            let none: [&(dyn tokio_postgres::types::ToSql + Sync); 0] = [];
            let stream = client.query_raw(query, none).await?;
            futures::pin_mut!(stream);
            while stream.try_next().await?.is_some() {
                counted();
            }
        }
    }
    Ok(StreamRun {
        format,
        rows,
        seconds: started.elapsed().as_secs_f64(),
        first_row_seconds: first_row,
    })
}
