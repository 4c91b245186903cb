//! The extended protocol of one connection: pgwire's handlers, with every
//! reply fed (sent with the next Sync or Flush), SELECT portals streamed,
//! and the replies to `INSERT … VALUES` held until their rows are committed
//! ([`super::super::pending`]).

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion_postgres::pgwire::api::portal::{Format, Portal, PortalExecutionState};
use datafusion_postgres::pgwire::api::query::{send_query_response, ExtendedQueryHandler};
use datafusion_postgres::pgwire::api::results::{DescribeResponse, Response};
use datafusion_postgres::pgwire::api::stmt::{QueryParser, StoredStatement};
use datafusion_postgres::pgwire::api::store::{Entry, PortalStore};
use datafusion_postgres::pgwire::api::{
    ClientInfo, ClientPortalStore, PgWireConnectionState, DEFAULT_NAME,
};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::data::{NoData, ParameterDescription, RowDescription};
use datafusion_postgres::pgwire::messages::extendedquery::{
    Bind, BindComplete, Close, CloseComplete, Describe, Execute, Flush, Parse, ParseComplete,
    Sync as PgSync, TARGET_TYPE_BYTE_PORTAL, TARGET_TYPE_BYTE_STATEMENT,
};
use datafusion_postgres::pgwire::messages::response::ReadyForQuery;
use datafusion_postgres::pgwire::messages::PgWireBackendMessage;
use datafusion_postgres::pgwire::types::format::FormatOptions;
use datafusion_postgres::DfSessionService;
use futures::SinkExt;
use sluice_engine::pending_inserts::is_insert_values;

use super::super::command_tag::tag_if_empty;
use super::super::cursor;
use super::super::datafusion_ddl::SluiceParser;
use super::super::off_worker::OffWorker;
use super::super::portal;
use super::super::transaction::restore_failed_block_for;
use super::{guarded, track, SessionHandler};

#[async_trait]
impl ExtendedQueryHandler for SessionHandler {
    type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;
    type QueryParser = SluiceParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    /// pgwire's own `Parse`, within the connection's cap on prepared
    /// statements.
    async fn on_parse<C>(&self, client: &mut C, message: Parse) -> PgWireResult<()>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures::Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        let parsed = async {
            self.caps
                .statements
                .admit(message.name.as_deref(), |name| {
                    client.portal_store().get_statement(name).is_some()
                })?;
            let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
            // Parse plans the statement: off the worker, as every statement.
            let parsed = OffWorker::for_statement(&message.query, async {
                if let Some(statement) = self.parsed.get(&self.context, &message).await {
                    return Ok(Some(statement));
                }
                let parsed = StoredStatement::parse(client, &message, self.query_parser()).await?;
                Ok::<_, PgWireError>(parsed.map(|statement| {
                    let statement = Arc::new(statement);
                    self.parsed.keep(&self.context, &message, &statement);
                    statement
                }))
            })
            .await?;
            match parsed {
                Some(statement) => client.portal_store().put_statement(statement),
                None => client.portal_store().put_empty_statement(name),
            }
            Ok(())
        }
        .await;
        self.acks.on_error(client, parsed).await?;
        // Sent with the next Sync or Flush, as PostgreSQL does: one write per
        // round trip rather than one per message.
        let complete = PgWireBackendMessage::ParseComplete(ParseComplete::new());
        self.acks.reply(client, complete).await
    }

    /// pgwire's own `Bind`, within the connection's cap on portals, its
    /// `BindComplete` sent with the next Sync or Flush.
    async fn on_bind<C>(&self, client: &mut C, message: Bind) -> PgWireResult<()>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures::Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        let bound = async {
            self.caps
                .portals
                .admit(message.portal_name.as_deref(), |name| {
                    client.portal_store().get_portal(name).is_some()
                })?;
            let statement = message.statement_name.as_deref().unwrap_or(DEFAULT_NAME);
            match client.portal_store().get_statement(statement) {
                Some(Entry::Value(statement)) => {
                    let portal = Portal::try_new(&message, statement)?;
                    client.portal_store().put_portal(Arc::new(portal));
                    Ok(true)
                }
                _ => Ok(false),
            }
        }
        .await;
        if !self.acks.on_error(client, bound).await? {
            // An empty statement, one that does not exist, parameters for
            // neither: pgwire's own answers.
            self.acks.settle(client).await?;
            return self.inner.on_bind(client, message).await;
        }
        let complete = PgWireBackendMessage::BindComplete(BindComplete::new());
        self.acks.reply(client, complete).await
    }

    /// pgwire's own `Describe`, its replies sent with the next Sync or Flush
    /// (a portal's description is what libpq sends before each `Execute`),
    /// in order with what is held back. A statement or portal without rows
    /// is described by `NoData`, as PostgreSQL does (pgwire sends an empty
    /// `RowDescription`, which pgjdbc takes for a query: its batches then
    /// count 0 rows).
    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures::Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let described = if message.target_type == TARGET_TYPE_BYTE_PORTAL {
            // A cursor opened by DECLARE is a portal too: its rows are
            // described as the query it was declared for answers them, in
            // text (what psycopg's named cursors read before their first
            // FETCH).
            match cursor::described(&self.context, name, &Format::UnifiedText) {
                Some(fields) => Some(fields.map(|fields| (None, fields))),
                None => match client.portal_store().get_portal(name) {
                    Some(Entry::Value(portal)) => Some(
                        self.do_describe_portal(client, &portal)
                            .await
                            .map(|described| (None, described.fields().to_vec())),
                    ),
                    _ => None,
                },
            }
        } else {
            match client.portal_store().get_statement(name) {
                Some(Entry::Value(statement)) => Some(
                    self.do_describe_statement(client, &statement)
                        .await
                        .map(|described| {
                            let parameters = described.parameters().map(|types| {
                                ParameterDescription::new(types.iter().map(|t| t.oid()).collect())
                            });
                            (parameters, described.fields().to_vec())
                        }),
                ),
                _ => None,
            }
        };
        let Some(described) = described else {
            // Empty or unknown: pgwire's answers.
            self.acks.settle(client).await?;
            return self._on_describe(client, message).await;
        };
        let (parameters, fields) = self.acks.on_error(client, described).await?;
        if let Some(parameters) = parameters {
            let parameters = PgWireBackendMessage::ParameterDescription(parameters);
            self.acks.reply(client, parameters).await?;
        }
        let description = if fields.is_empty() {
            PgWireBackendMessage::NoData(NoData::new())
        } else {
            let fields = fields.iter().map(Into::into).collect();
            PgWireBackendMessage::RowDescription(RowDescription::new(fields))
        };
        self.acks.reply(client, description).await
    }

    /// pgwire 0.41 answers an `Execute` without a row limit by collecting
    /// every row of the portal into memory before sending the first (2 GB
    /// for SF 1 lineitem). A `SELECT` portal executed in full is streamed
    /// here instead, row by row with the socket's backpressure; everything
    /// else (row limits, suspended portals, other statements) is pgwire's.
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures::Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let portal = match client.portal_store().get_portal(name) {
            Some(Entry::Value(portal)) => portal,
            _ => {
                self.acks.settle(client).await?;
                return self._on_execute(client, message).await;
            }
        };
        let statement = portal.statement.statement.1.as_ref().map(|(s, _)| s);
        if let Some(statement) = statement {
            restore_failed_block_for(client, statement);
        }
        let unstarted = matches!(*portal.state().lock().await, PortalExecutionState::Initial);
        let ready = matches!(client.state(), PgWireConnectionState::ReadyForQuery);
        if statement.is_some_and(is_insert_values) && unstarted && ready {
            let inserted = self.execute_insert(client, &portal).await;
            return self.acks.on_error(client, inserted).await;
        }
        self.acks.settle(client).await?;
        let is_select = statement.is_some_and(portal::only_reads);
        if message.max_rows != 0 || !is_select || !unstarted || !ready {
            return self._on_execute(client, message).await;
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        // Errors leave the connection state to pgwire, as its own path does.
        let response = ExtendedQueryHandler::do_query(self, client, &portal, 0).await?;
        let Response::Query(results) = response else {
            return Err(PgWireError::ApiError(
                "a SELECT portal answered with a non-query response".into(),
            ));
        };
        *portal.state().lock().await = PortalExecutionState::Finished;
        send_query_response(client, results, false).await?;
        client.set_state(PgWireConnectionState::ReadyForQuery);
        Ok(())
    }

    /// A `Flush` sends what is held back too, once its rows are committed.
    async fn on_flush<C>(&self, client: &mut C, _message: Flush) -> PgWireResult<()>
    where
        C: ClientInfo + futures::Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        self.acks.settle(client).await?;
        client.flush().await?;
        Ok(())
    }

    /// A `Sync` ends the batch: outside a transaction block its INSERTs are
    /// committed (dropped after an error) before their replies are sent.
    async fn on_sync<C>(&self, client: &mut C, _message: PgSync) -> PgWireResult<()>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures::Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        let failed = matches!(client.state(), PgWireConnectionState::AwaitingSync);
        self.acks.at_sync(client, failed).await?;
        client.portal_store().rm_portal(DEFAULT_NAME);
        let ready = ReadyForQuery::new(client.transaction_status());
        client
            .send(PgWireBackendMessage::ReadyForQuery(ready))
            .await?;
        Ok(())
    }

    /// pgwire's own `Close`, its `CloseComplete` sent in order with what is
    /// held back.
    async fn on_close<C>(&self, client: &mut C, message: Close) -> PgWireResult<()>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures::Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => client.portal_store().rm_statement(name),
            TARGET_TYPE_BYTE_PORTAL => client.portal_store().rm_portal(name),
            _ => {}
        }
        let complete = PgWireBackendMessage::CloseComplete(CloseComplete::new());
        self.acks.reply(client, complete).await
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures::Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        let tracker = self.begin(client, &portal.statement.statement.0);
        let watch = self.watch();
        let response = guarded(&tracker, async {
            // A FETCH encodes its cursor's rows in the portal's formats.
            if let Some((statement, _)) = &portal.statement.statement.1 {
                let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
                let format = &portal.result_column_format;
                if let Some(rows) = cursor::fetch(statement, &self.context, format, options).await {
                    return rows;
                }
            }
            let wire_types = |statement: &_| self.parser.get_parameter_types(statement);
            let query = portal::run_query(
                &self.context,
                &self.hooks,
                &self.plans,
                wire_types,
                client,
                portal,
            );
            match query.await {
                Some(response) => response,
                None => ExtendedQueryHandler::do_query(&self.inner, client, portal, max_rows).await,
            }
        });
        let response = self
            .interruptible(&watch, &tracker, &portal.statement.statement.0, response)
            .await?;
        let statement = portal.statement.statement.1.as_ref().map(|(s, _)| s);
        Ok(track(
            tag_if_empty(response, statement),
            &tracker,
            &watch,
            &self.signal,
        ))
    }
}

impl SessionHandler {
    /// Executes an `INSERT … VALUES` portal: its rows join the pending
    /// inserts (or are written, when they cannot), and its `CommandComplete`
    /// waits for their commit outside a transaction block.
    async fn execute_insert<C>(
        &self,
        client: &mut C,
        portal: &Portal<<Self as ExtendedQueryHandler>::Statement>,
    ) -> PgWireResult<()>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures::Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore<Statement = <Self as ExtendedQueryHandler>::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        client.set_state(PgWireConnectionState::QueryInProgress);
        // Errors leave the connection state to pgwire, as its own path does.
        let response = ExtendedQueryHandler::do_query(self, client, portal, 0).await?;
        *portal.state().lock().await = PortalExecutionState::Finished;
        let Response::Execution(tag) = response else {
            return Err(PgWireError::ApiError(
                "an INSERT portal answered with rows".into(),
            ));
        };
        self.acks.inserted(client, tag).await?;
        client.set_state(PgWireConnectionState::ReadyForQuery);
        Ok(())
    }
}
