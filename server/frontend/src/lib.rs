//! The Postgres-wire frontend: accepts connections and runs each with its own
//! session over the shared catalog. Besides the wire (the modules below
//! [`Frontend`]), it holds what a session needs around it: logins and roles
//! ([`auth`]), the query log behind `sluice.queries` ([`query_log`]), the
//! frontend's Prometheus metrics ([`metrics`]) and the `sluice` system
//! tables it serves ([`system_tables`]). It knows nothing of the `sluice`
//! binary's commands, configuration or scheduled jobs: `CALL
//! sluice.run_job` reaches the jobs through [`call::JobRunner`].

pub mod auth;
pub mod catalog_table;
pub mod error;
pub mod json_lines;
pub mod metrics;
pub mod query_log;
pub mod system_tables;

mod access;
pub mod call;
mod command_tag;
mod connection;
mod copy;
mod copy_in;
mod copy_out;
mod cursor;
pub mod data_rows;
mod datafusion_ddl;
mod encoded_column;
mod hooks;
mod interrupt;
mod managed;
mod off_worker;
mod parsed;
mod pending;
mod pg_binary;
mod pg_text;
mod portal;
mod prepared;
mod progress;
mod rename;
mod responses;
pub mod settings;
mod simple;
pub mod slots;
pub mod sqlstate;
mod startup;
pub mod tls;
mod transaction;

use std::future::Future;
use std::sync::{Arc, LazyLock};

use datafusion_postgres::pgwire::tokio::process_socket;
use datafusion_postgres::pgwire::tokio::tokio_rustls::TlsAcceptor;
use sluice_engine::SessionFactory;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::task::{JoinHandle, JoinSet};

use connection::Connection;
use interrupt::{watch_disconnect, CancelRegistry, ConnectionSignal};
pub use startup::{LoginPolicy, DATABASE};

use crate::query_log::QueryLog;
use sluice_scheduler::RemoteScheduler;

/// State shared by all connections of one frontend.
pub struct Frontend {
    /// Builds each connection's session.
    pub sessions: SessionFactory,
    /// Recent queries (`sluice.queries`).
    pub queries: Arc<QueryLog>,
    /// Live connections by backend key, for cancel requests.
    pub cancels: Arc<CancelRegistry>,
    /// Who may log in.
    pub policy: Arc<LoginPolicy>,
    /// TLS for clients that ask for it.
    pub tls: Option<TlsAcceptor>,
    /// Connection and statement limits.
    pub limits: Limits,
    /// The connections' places, within `limits.max_connections`.
    pub slots: Arc<slots::ConnectionSlots>,
    /// The scheduler's API, where `sluice.progress` notices read a job's
    /// stages.
    pub scheduler: Arc<RemoteScheduler>,
}

/// What one client may ask of the frontend.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most connections at once; more are turned away with 53300.
    pub max_connections: usize,
    /// Longest statement text, in bytes; longer ones get 54000.
    pub max_query_size: usize,
    /// Deepest statement nesting (see [`sluice_engine::complexity`]); deeper
    /// ones get 54001.
    pub max_statement_depth: usize,
}

impl Frontend {
    /// A frontend building sessions with `sessions`, recording into
    /// `queries`, letting in whom `policy` says, reading job progress from
    /// `scheduler`.
    pub fn new(
        sessions: SessionFactory,
        queries: Arc<QueryLog>,
        policy: LoginPolicy,
        tls: Option<TlsAcceptor>,
        limits: Limits,
        scheduler: Arc<RemoteScheduler>,
    ) -> Self {
        Self {
            sessions,
            queries,
            cancels: Arc::default(),
            policy: Arc::new(policy),
            tls,
            slots: Arc::new(slots::ConnectionSlots::new(limits.max_connections)),
            limits,
            scheduler,
        }
    }
}

/// Stack of the threads that serve connections. Parsing, planning and
/// optimizing recurse once per level of a statement's nesting (bounded by
/// [`Limits::max_statement_depth`]), several kilobytes a level in places;
/// only the pages a deep statement touches are ever used.
const CONNECTION_STACK_BYTES: usize = 256 * 1024 * 1024;

/// The threads connections run on, apart from the runtime of the embedded
/// cluster: a statement that plans for long (constant folding, a deep plan)
/// holds one of these, never the threads that run tasks and send the
/// executors' heartbeats. More threads than cores, so that a few such
/// statements leave others served.
static CONNECTIONS: LazyLock<Runtime> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads((2 * cores).max(4))
        .thread_stack_size(CONNECTION_STACK_BYTES)
        .thread_name("sluice-connection")
        .enable_all()
        .build()
        .expect("the connection runtime starts")
});

/// Serves connections on `listener` on the connection threads until
/// `shutdown` completes (see [`serve`]).
pub fn spawn(
    listener: TcpListener,
    frontend: Arc<Frontend>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    // Registered again with the connection runtime's reactor, so that its
    // sockets are driven there too.
    let listener = listener.into_std()?;
    Ok(CONNECTIONS.spawn(async move {
        match TcpListener::from_std(listener) {
            Ok(listener) => serve(listener, frontend, shutdown).await,
            Err(e) => tracing::error!("cannot serve connections: {e}"),
        }
    }))
}

/// Accepts connections on `listener` until `shutdown` completes, then closes
/// every open connection.
async fn serve(listener: TcpListener, frontend: Arc<Frontend>, shutdown: impl Future<Output = ()>) {
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let Some(slot) = frontend.slots.accept() else {
                        tracing::warn!(
                            "closing the connection from {peer}: too many connections are \
                             logging in"
                        );
                        continue;
                    };
                    let _ = socket.set_nodelay(true);
                    let signal = Arc::new(ConnectionSignal::default());
                    let watcher = match second_handle(&socket) {
                        Ok(handle) => Some(tokio::spawn(watch_disconnect(handle, signal.clone()))),
                        Err(e) => {
                            tracing::warn!("cannot watch {peer} for disconnects: {e}");
                            None
                        }
                    };
                    // Over the limit, the client still gets an answer at
                    // login: 53300.
                    let handlers = Connection::new(frontend.clone(), signal, slot.clone());
                    let tls = frontend.tls.clone();
                    connections.spawn(async move {
                        let _open = metrics::OpenConnection::open();
                        tokio::select! {
                            ended = process_socket(socket, tls, handlers) => {
                                if let Err(e) = ended {
                                    tracing::debug!("connection from {peer} ended: {e}");
                                }
                            }
                            () = slot.authentication_expired() => tracing::info!(
                                "closing the connection from {peer}: not logged in within {:?}",
                                slots::AUTHENTICATION_TIMEOUT
                            ),
                        }
                        if let Some(watcher) = watcher {
                            watcher.abort();
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

/// A second handle on a client socket, for [`watch_disconnect`].
fn second_handle(socket: &tokio::net::TcpStream) -> std::io::Result<tokio::net::TcpStream> {
    use std::os::fd::{AsFd, OwnedFd};
    let duplicate: OwnedFd = socket.as_fd().try_clone_to_owned()?;
    let duplicate = std::net::TcpStream::from(duplicate);
    duplicate.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(duplicate)
}
