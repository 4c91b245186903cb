//! Stopping a running statement: cancel requests, `statement_timeout` and
//! clients that go away.
//!
//! pgwire watches for a cancel request only while a handler plans a query, not
//! while its rows stream, and datafusion-postgres' timeout covers planning
//! only. Sluice watches all three events for the whole statement, planning and
//! streaming alike: each connection has a [`ConnectionSignal`], each statement a
//! [`StatementWatch`] over it. When a watch fires, the statement's future or
//! row stream is dropped, which cancels its Ballista job
//! (`sluice_engine::recovery`).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use datafusion_postgres::pgwire::api::cancel::CancelHandler;
use datafusion_postgres::pgwire::error::PgWireError;
use datafusion_postgres::pgwire::messages::cancel::CancelRequest;
use sluice_engine::sqlstate::SqlState;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::sqlstate::user_error;

/// Why a statement stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interruption {
    /// The client sent a CancelRequest.
    Cancelled,
    /// `statement_timeout` expired.
    TimedOut,
    /// The client closed its connection.
    Disconnected,
}

impl Interruption {
    /// The error the client receives (PostgreSQL's wording).
    pub fn error(self) -> PgWireError {
        let message = match self {
            Self::Cancelled => "canceling statement due to user request",
            Self::TimedOut => "canceling statement due to statement timeout",
            Self::Disconnected => "canceling statement: the client closed the connection",
        };
        user_error(SqlState::QUERY_CANCELED, message)
    }
}

/// One connection's interrupt line: bumped by each cancel request and when
/// the client disconnects.
#[derive(Debug)]
pub struct ConnectionSignal {
    interrupts: watch::Sender<u64>,
    disconnected: AtomicBool,
}

impl Default for ConnectionSignal {
    fn default() -> Self {
        Self {
            interrupts: watch::Sender::new(0),
            disconnected: AtomicBool::new(false),
        }
    }
}

impl ConnectionSignal {
    /// Interrupts the statement running now (none: no effect on later ones).
    pub fn cancel(&self) {
        self.interrupts.send_modify(|count| *count += 1);
    }

    fn disconnect(&self) {
        self.disconnected.store(true, Ordering::SeqCst);
        self.cancel();
    }

    /// A watch for a statement starting now, limited to `timeout`.
    pub fn watch(&self, timeout: Option<Duration>) -> StatementWatch {
        let receiver = self.interrupts.subscribe();
        let seen = *receiver.borrow();
        StatementWatch {
            receiver,
            seen,
            deadline: timeout.map(|timeout| Instant::now() + timeout),
            disconnected: self.disconnected.load(Ordering::SeqCst),
        }
    }

    /// Whether the client has gone.
    pub fn is_disconnected(&self) -> bool {
        self.disconnected.load(Ordering::SeqCst)
    }
}

/// What can stop one statement.
#[derive(Debug, Clone)]
pub struct StatementWatch {
    receiver: watch::Receiver<u64>,
    seen: u64,
    deadline: Option<Instant>,
    disconnected: bool,
}

impl StatementWatch {
    /// Resolves when the statement must stop, with the reason.
    pub fn interrupted(&self) -> Pin<Box<dyn Future<Output = Interruption> + Send>> {
        let mut receiver = self.receiver.clone();
        let (seen, deadline) = (self.seen, self.deadline);
        Box::pin(async move {
            let signalled = async {
                let signalled = receiver.wait_for(|count| *count != seen).await.is_ok();
                if !signalled {
                    // The connection's signal is gone: only the timeout is left.
                    std::future::pending::<()>().await;
                }
            };
            let expired = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = signalled => Interruption::Cancelled,
                _ = expired => Interruption::TimedOut,
            }
        })
    }

    /// Refines [`Interruption::Cancelled`] into `Disconnected` when the client
    /// went away.
    pub fn reason(&self, signal: &ConnectionSignal, interruption: Interruption) -> Interruption {
        if interruption == Interruption::Cancelled && !self.disconnected && signal.is_disconnected()
        {
            Interruption::Disconnected
        } else {
            interruption
        }
    }
}

/// The (process id, secret key) a connection's cancel requests carry.
type BackendKey = (i32, Vec<u8>);

/// Connections by their backend key, for cancel requests.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    connections: Mutex<HashMap<BackendKey, Weak<ConnectionSignal>>>,
}

impl CancelRegistry {
    /// Registers a connection's signal under its backend key.
    pub fn register(&self, pid: i32, secret: Vec<u8>, signal: &Arc<ConnectionSignal>) {
        let mut connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        connections.retain(|_, signal| signal.strong_count() > 0);
        connections.insert((pid, secret), Arc::downgrade(signal));
    }
}

#[async_trait]
impl CancelHandler for CancelRegistry {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let key = (request.pid, request.secret_key.to_bytes().to_vec());
        let signal = self
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .and_then(Weak::upgrade);
        match signal {
            Some(signal) => signal.cancel(),
            None => tracing::debug!("cancel request for unknown backend {}", request.pid),
        }
    }
}

/// Watches `socket` (a second handle on a client connection) and signals
/// `signal` once the client has closed its end. Runs until then; abort it
/// when the connection ends, or the second handle keeps the socket open.
pub async fn watch_disconnect(socket: TcpStream, signal: Arc<ConnectionSignal>) {
    loop {
        match socket.ready(Interest::READABLE).await {
            Ok(ready) if ready.is_read_closed() => break,
            Ok(_) => {
                // Readable with data the protocol handler has not read yet:
                // look again shortly instead of spinning on it.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(_) => break,
        }
    }
    signal.disconnect();
}
