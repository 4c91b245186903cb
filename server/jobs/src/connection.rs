//! Connecting to a running Sluice server as a Postgres client: scheduled
//! jobs, `sluice run`, `sluice tpch register`, `sluice bench`.

use futures::StreamExt;
use tokio::sync::watch;
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{AsyncMessage, Client, Connection, NoTls, Socket};

use crate::error::{JobsError, Result};
use sluice_frontend::DATABASE;

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
    /// Password; from `$PGPASSWORD` when not set here (never a flag, which
    /// other users could read in the process list).
    #[arg(skip)]
    pub password: Option<String>,
}

/// Connects to Sluice's database on the server at `server` (plain TCP) and
/// drives the connection in the background.
pub async fn connect(server: &ServerAddress) -> Result<Client> {
    connect_database(server, DATABASE).await
}

/// Connects to Sluice's database like [`connect`]; the receiver holds the
/// latest NOTICE the server sent (`sluice.progress` sends the progress of
/// running statements).
pub async fn connect_with_notices(
    server: &ServerAddress,
) -> Result<(Client, watch::Receiver<Option<String>>)> {
    let (client, connection) = open(server, DATABASE).await?;
    let (notices, receiver) = watch::channel(None);
    tokio::spawn(async move {
        let mut connection = connection;
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notice(notice)) => {
                    let _ = notices.send(Some(notice.message().to_string()));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!("connection closed: {e}");
                    break;
                }
            }
        }
    });
    Ok((client, receiver))
}

/// Connects to database `dbname` on the Postgres server at `server` (Sluice,
/// or PostgreSQL itself for a comparison).
pub async fn connect_database(server: &ServerAddress, dbname: &str) -> Result<Client> {
    let (client, connection) = open(server, dbname).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// A connection to database `dbname` at `server`, not yet driven.
async fn open(
    server: &ServerAddress,
    dbname: &str,
) -> Result<(Client, Connection<Socket, NoTlsStream>)> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&server.host)
        .port(server.port)
        .user(&server.user)
        .dbname(dbname);
    if let Some(password) = server
        .password
        .clone()
        .or_else(|| std::env::var("PGPASSWORD").ok())
    {
        config.password(password);
    }
    config.connect(NoTls).await.map_err(|e| {
        JobsError::Config(format!(
            "connecting to {}:{}: {e}",
            server.host, server.port
        ))
    })
}
