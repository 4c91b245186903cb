//! `COPY table FROM STDIN` on the wire: what psql's `\copy … from`,
//! psycopg's `cursor.copy()` and pgjdbc's `CopyManager` send. The hook
//! starts a [`CopyIn`] and answers `CopyInResponse`; the connection's copy
//! handler then feeds it each `CopyData` message, and at `CopyDone` commits
//! the rows and answers `COPY n`. An error, a `CopyFail` or a lost
//! connection drops the `CopyIn`, which removes what it wrote.
//!
//! `COPY table FROM 'location'` is run by the hook at once: the server reads
//! the file ([`copy_from_file`]) and answers `COPY n`.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::pgwire::api::copy::CopyHandler;
use datafusion_postgres::pgwire::api::results::{CopyResponse, Response, Tag};
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use datafusion_postgres::pgwire::messages::PgWireBackendMessage;
use futures::{Sink, SinkExt};
use sluice_engine::copy_from::{
    copy_from_file, is_copy_from_file, is_copy_from_stdin, CopyFormat, CopyIn,
};
use sluice_engine::sqlstate::SqlState;
use tokio::sync::Mutex;

use super::hooks::no_rows_plan;
use super::sqlstate::{user_error, wire_error};

/// The `COPY … FROM STDIN` a connection has under way, if any.
#[derive(Default)]
pub struct CopyInSlot {
    copy: Mutex<Option<CopyIn>>,
}

/// Starts `COPY … FROM STDIN` statements.
pub struct CopyInHook {
    /// Where the connection keeps its copy under way.
    pub slot: Arc<CopyInSlot>,
}

impl CopyInHook {
    async fn start(
        &self,
        statement: &Statement,
        context: &SessionContext,
    ) -> Option<PgWireResult<Response>> {
        if let Some(loaded) = copy_from_file(context, statement).await {
            return Some(
                loaded
                    .map(|rows| Response::Execution(Tag::new("COPY").with_rows(rows as usize)))
                    .map_err(wire_error),
            );
        }
        let copy = match CopyIn::start(context, statement).await? {
            Ok(copy) => copy,
            Err(e) => return Some(Err(wire_error(e))),
        };
        let format = match copy.format() {
            CopyFormat::Binary => 1,
            CopyFormat::Text(_) | CopyFormat::Csv(_) => 0,
        };
        let columns = copy.columns();
        *self.slot.copy.lock().await = Some(copy);
        Some(Ok(Response::CopyIn(CopyResponse::new(
            format,
            columns,
            futures::stream::empty(),
        ))))
    }
}

#[async_trait]
impl QueryHook for CopyInHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        context: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.start(statement, context).await
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _context: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        (is_copy_from_stdin(statement) || is_copy_from_file(statement)).then(|| Ok(no_rows_plan()))
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        context: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.start(statement, context).await
    }
}

/// The connection's copy sub-protocol handler.
pub struct CopyInHandler {
    /// Shared with the connection's [`CopyInHook`].
    pub slot: Arc<CopyInSlot>,
}

fn no_copy() -> PgWireError {
    user_error(
        SqlState::PROTOCOL_VIOLATION,
        "COPY data received with no COPY FROM STDIN under way",
    )
}

#[async_trait]
impl CopyHandler for CopyInHandler {
    async fn on_copy_data<C>(&self, _client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut slot = self.slot.copy.lock().await;
        let copy = slot.as_mut().ok_or_else(no_copy)?;
        if let Err(e) = copy.write(&copy_data.data).await {
            // Dropping the copy removes what it wrote.
            *slot = None;
            return Err(wire_error(e));
        }
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let copy = self.slot.copy.lock().await.take().ok_or_else(no_copy)?;
        let rows = copy.finish().await.map_err(wire_error)?;
        let tag = Tag::new("COPY").with_rows(rows as usize);
        client
            .send(PgWireBackendMessage::CommandComplete(tag.into()))
            .await?;
        Ok(())
    }

    async fn on_copy_fail<C>(&self, _client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        *self.slot.copy.lock().await = None;
        user_error(
            SqlState::QUERY_CANCELED,
            format!("COPY from stdin failed: {}", fail.message),
        )
    }
}
