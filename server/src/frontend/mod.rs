//! The Postgres-wire frontend: accepts connections and runs each with its own
//! session over the shared catalog.

mod command_tag;
mod connection;
mod copy;
mod datafusion_ddl;
mod hooks;
mod settings;
pub mod sqlstate;

use std::future::Future;
use std::sync::Arc;

use datafusion_postgres::pgwire::api::cancel::DefaultCancelHandler;
use datafusion_postgres::pgwire::api::ConnectionManager;
use datafusion_postgres::pgwire::tokio::process_socket;
use sluice_engine::SessionFactory;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use connection::Connection;
pub use connection::DATABASE;

use crate::query_log::QueryLog;

/// State shared by all connections of one frontend.
pub struct Frontend {
    /// Builds each connection's session.
    pub sessions: SessionFactory,
    /// Recent queries (`sluice.queries`).
    pub queries: Arc<QueryLog>,
    /// Live connections, for cancel requests.
    pub connections: Arc<ConnectionManager>,
    /// Answers CancelRequest messages.
    pub cancel: Arc<DefaultCancelHandler>,
}

impl Frontend {
    /// A frontend building sessions with `sessions` and recording into `queries`.
    pub fn new(sessions: SessionFactory, queries: Arc<QueryLog>) -> Self {
        let connections = Arc::new(ConnectionManager::new());
        Self {
            sessions,
            queries,
            cancel: Arc::new(DefaultCancelHandler::new(connections.clone())),
            connections,
        }
    }
}

/// Accepts connections on `listener` until `shutdown` completes, then closes
/// every open connection.
pub async fn serve(
    listener: TcpListener,
    frontend: Arc<Frontend>,
    shutdown: impl Future<Output = ()>,
) {
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    let handlers = Connection::new(frontend.clone());
                    connections.spawn(async move {
                        if let Err(e) = process_socket(socket, None, handlers).await {
                            tracing::debug!("connection from {peer} ended: {e}");
                        }
                    });
                }
                Err(e) => tracing::warn!("accepting a connection failed: {e}"),
            },
            _ = &mut shutdown => break,
        }
        while connections.try_join_next().is_some() {}
    }
    connections.shutdown().await;
}
