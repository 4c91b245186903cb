//! Connecting to a running Sluice server as a Postgres client, for the
//! commands that talk to one (`sluice run`, `sluice tpch register`,
//! `sluice bench`).

use tokio_postgres::{Client, NoTls};

use crate::error::{Result, ServerError};
use crate::frontend::DATABASE;

/// Where a running server listens.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerAddress {
    /// Server host.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Server port.
    #[arg(long, default_value_t = 5433)]
    pub port: u16,
    /// User name.
    #[arg(long, default_value = "sluice")]
    pub user: String,
}

/// Connects to the server at `server` (plain TCP) and drives the connection
/// in the background.
pub async fn connect(server: &ServerAddress) -> Result<Client> {
    let config = format!(
        "host={} port={} user={} dbname={DATABASE}",
        server.host, server.port, server.user
    );
    let (client, connection) = tokio_postgres::connect(&config, NoTls).await.map_err(|e| {
        ServerError::Config(format!(
            "connecting to {}:{}: {e}",
            server.host, server.port
        ))
    })?;
    tokio::spawn(connection);
    Ok(client)
}
