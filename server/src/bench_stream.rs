//! `sluice bench stream`: how fast a PostgreSQL-protocol server (Sluice or
//! PostgreSQL itself) streams one large result to a client, in text and
//! binary format.

use sluice_benches::streaming::{stream, WireFormat};

use crate::error::{Result, ServerError};
use sluice_jobs::connection::{connect_database, ServerAddress};

/// Flags of `sluice bench stream`.
#[derive(Debug, clap::Args)]
pub struct StreamArgs {
    /// The server to connect to.
    #[command(flatten)]
    pub server: ServerAddress,
    /// Database name.
    #[arg(long, default_value = "sluice")]
    pub dbname: String,
    /// The query whose result is streamed.
    #[arg(long, default_value = "SELECT * FROM lineitem")]
    pub query: String,
    /// Reads per format; the report shows each and the best.
    #[arg(long, default_value_t = 3)]
    pub iterations: usize,
    /// A name for the server in the report.
    #[arg(long, default_value = "server")]
    pub label: String,
}

/// Streams the query's result `iterations` times in each format and prints
/// one line per read and one summary line per format.
pub async fn run(args: StreamArgs) -> Result<()> {
    let client = connect_database(&args.server, &args.dbname).await?;
    for format in [WireFormat::Text, WireFormat::Binary] {
        let mut best: Option<f64> = None;
        let mut rows = 0;
        for iteration in 1..=args.iterations.max(1) {
            let run = stream(&client, &args.query, format)
                .await
                .map_err(|e| ServerError::Config(format!("streaming `{}`: {e}", args.query)))?;
            rows = run.rows;
            println!(
                "{} {} #{iteration}: {} rows in {:.2} s = {:.0} rows/s, first row after {:.3} s",
                args.label,
                format.name(),
                run.rows,
                run.seconds,
                run.rows_per_second(),
                run.first_row_seconds.unwrap_or(f64::NAN)
            );
            best = Some(best.map_or(run.rows_per_second(), |b: f64| b.max(run.rows_per_second())));
        }
        println!(
            "RESULT {} {}: {rows} rows, best {:.0} rows/s",
            args.label,
            format.name(),
            best.unwrap_or_default()
        );
    }
    Ok(())
}
