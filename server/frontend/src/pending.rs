//! A connection's pending INSERTs on the wire
//! ([`sluice_engine::pending_inserts`] holds the rows).
//!
//! [`PendingInsertsHook`] ends what is pending where a statement needs it:
//! `COMMIT` commits it, `ROLLBACK` drops it, and any statement other than
//! another `INSERT … VALUES` or a query naming no table commits it before it
//! runs, so reads see the session's own rows.
//!
//! Outside a transaction block an INSERT is acknowledged only once its rows
//! are committed: in an extended-protocol batch (psycopg's `executemany`,
//! pgjdbc's `executeBatch`) its `CommandComplete`, and every reply after it,
//! waits in [`Acknowledgements`] until the batch's `Sync` commits the rows, as
//! PostgreSQL commits such a batch as one implicit transaction. An error in
//! the batch drops its rows; the replies before it are sent, then the error.

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::pgwire::api::results::{Response, Tag};
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::response::TransactionStatus;
use datafusion_postgres::pgwire::messages::PgWireBackendMessage;
use futures::{Sink, SinkExt};
use sluice_engine::pending_inserts::{is_insert_values, reads_no_table, PendingInserts};

use super::responses::api;
use super::sqlstate::classify;

/// A connection's pending INSERTs and the replies waiting for their commit.
pub struct Acknowledgements {
    pending: Arc<PendingInserts>,
    /// Replies held back, in order; while any are, every later one waits
    /// behind them.
    held: Mutex<Vec<PgWireBackendMessage>>,
}

/// Replies held before the rows pending are committed anyway, to bound
/// the memory a long batch holds (three replies a row at most).
const MAX_HELD_REPLIES: usize = 100_000;

impl Acknowledgements {
    /// Acknowledgements of the INSERTs `pending` holds.
    pub fn new(pending: Arc<PendingInserts>) -> Self {
        Self {
            pending,
            held: Mutex::default(),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Vec<PgWireBackendMessage>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `message` after those held, or holds it too while any are.
    pub async fn reply<C>(&self, client: &mut C, message: PgWireBackendMessage) -> PgWireResult<()>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        PgWireError: From<C::Error>,
    {
        {
            let mut held = self.held();
            if !held.is_empty() {
                held.push(message);
                return Ok(());
            }
        }
        client.feed(message).await?;
        Ok(())
    }

    /// Acknowledges an INSERT run in an extended-protocol batch with `tag`:
    /// held while its rows are pending outside a transaction block.
    pub async fn inserted<C>(&self, client: &mut C, tag: Tag) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        PgWireError: From<C::Error>,
    {
        let complete = PgWireBackendMessage::CommandComplete(tag.into());
        if client.transaction_status() != TransactionStatus::Idle || !self.pending.holds_rows() {
            return self.reply(client, complete).await;
        }
        let held = {
            let mut held = self.held();
            held.push(complete);
            held.len()
        };
        if held >= MAX_HELD_REPLIES {
            self.settle(client).await?;
        }
        Ok(())
    }

    /// Sends every held reply, in order.
    async fn release<C>(&self, client: &mut C) -> PgWireResult<()>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        PgWireError: From<C::Error>,
    {
        let held = std::mem::take(&mut *self.held());
        for message in held {
            client.feed(message).await?;
        }
        Ok(())
    }

    /// Commits the rows the held replies acknowledge and sends the replies:
    /// before anything answered elsewhere is sent. A failed commit keeps
    /// nothing; the replies are sent, then its error.
    pub async fn settle<C>(&self, client: &mut C) -> PgWireResult<()>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        PgWireError: From<C::Error>,
    {
        if self.held().is_empty() {
            return Ok(());
        }
        let committed = self.pending.commit().await;
        self.release(client).await?;
        committed.map(drop).map_err(api)
    }

    /// After an error in a batch holding replies: its rows are dropped and
    /// the replies before the error sent. A transaction block keeps its rows
    /// until its ROLLBACK.
    pub async fn abandon<C>(&self, client: &mut C) -> PgWireResult<()>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        PgWireError: From<C::Error>,
    {
        if !self.held().is_empty() {
            self.pending.discard();
            self.release(client).await?;
        }
        Ok(())
    }

    /// `result` of handling a message, the batch abandoned if it failed.
    pub async fn on_error<C, T>(&self, client: &mut C, result: PgWireResult<T>) -> PgWireResult<T>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        PgWireError: From<C::Error>,
    {
        if result.is_err() {
            self.abandon(client).await?;
        }
        result
    }

    /// At a `Sync`: outside a transaction block the batch ends, its rows are
    /// committed (dropped when it `failed`) and every reply sent; a failed
    /// commit is reported before the `ReadyForQuery`.
    pub async fn at_sync<C>(&self, client: &mut C, failed: bool) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        PgWireError: From<C::Error>,
    {
        let committed = if client.transaction_status() != TransactionStatus::Idle {
            Ok(0)
        } else if failed {
            self.pending.discard();
            Ok(0)
        } else {
            self.pending.commit().await
        };
        self.release(client).await?;
        if let Err(e) = committed {
            let error = classify(api(e));
            client
                .feed(PgWireBackendMessage::ErrorResponse(
                    ErrorInfo::from(error).into(),
                ))
                .await?;
        }
        Ok(())
    }

    /// At the end of a simple query whose statements leave the session in
    /// `status`: outside a transaction block its rows are committed, or
    /// dropped when it `failed`.
    pub async fn after_simple_query(
        &self,
        status: TransactionStatus,
        failed: bool,
    ) -> PgWireResult<()> {
        if status != TransactionStatus::Idle {
            return Ok(());
        }
        if failed {
            self.pending.discard();
            return Ok(());
        }
        self.pending.commit().await.map(drop).map_err(api)
    }
}

/// The pending INSERTs of `context`'s session.
pub fn pending_of(context: &SessionContext) -> Option<Arc<PendingInserts>> {
    PendingInserts::of(context.state_ref().read().config())
}

/// Commits or drops a connection's pending INSERTs before the statements
/// that end them.
pub struct PendingInsertsHook;

impl PendingInsertsHook {
    async fn before(
        statement: &Statement,
        context: &SessionContext,
        status: TransactionStatus,
    ) -> Option<PgWireResult<Response>> {
        let pending = pending_of(context)?;
        if !pending.holds_rows() {
            return None;
        }
        let failed = status == TransactionStatus::Error;
        match statement {
            // A failed transaction block's COMMIT rolls it back.
            Statement::Commit { .. } if !failed => {}
            Statement::Commit { .. } | Statement::Rollback { .. } => {
                pending.discard();
                return None;
            }
            // Refused until the failed block ends.
            _ if failed => return None,
            statement if is_insert_values(statement) || reads_no_table(statement) => return None,
            _ => {}
        }
        match pending.commit().await {
            Ok(_) => None,
            Err(e) => Some(Err(api(e))),
        }
    }
}

#[async_trait]
impl QueryHook for PendingInsertsHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        Self::before(statement, context, client.transaction_status()).await
    }

    async fn handle_extended_parse_query(
        &self,
        _statement: &Statement,
        _context: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        None
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        Self::before(statement, context, client.transaction_status()).await
    }
}
