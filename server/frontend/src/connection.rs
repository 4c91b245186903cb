//! The handlers of one client connection.
//!
//! Each connection owns its own DataFusion session (so `SET` stays local to
//! it) built from the frontend's shared template (so the catalog is shared).
//! Queries run here, planned once per text or prepared statement
//! ([`super::simple`], [`super::parsed`], [`super::portal`]); other statements
//! go to datafusion-postgres' `DfSessionService`. Around both, this layer adds
//! what Sluice needs: query records and logging, the job name that ties a
//! query to its Ballista job, SQLSTATE classification, and turning a panic
//! into an error instead of a dropped connection.

mod extended;

use std::fmt::Debug;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::pgwire::api::auth::StartupHandler;
use datafusion_postgres::pgwire::api::cancel::CancelHandler;
use datafusion_postgres::pgwire::api::copy::CopyHandler;
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::results::Response;
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::pgwire::api::{
    ClientInfo, ClientPortalStore, ErrorHandler, PgWireServerHandlers, METADATA_USER,
};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::response::TransactionStatus;
use datafusion_postgres::pgwire::messages::simplequery::Query;
use datafusion_postgres::pgwire::messages::PgWireBackendMessage;
use datafusion_postgres::{DfSessionService, QueryHook};
use futures::{FutureExt, Stream};

use super::access::AccessHook;
use super::call::RunJob;
use super::command_tag::tag_empty_results;
use super::copy::copy_to_file;
use super::copy_in::{CopyInHandler, CopyInHook, CopyInSlot};
use super::copy_out::CopyToStdoutHook;
use super::cursor::DeclareCursorHook;
use super::datafusion_ddl::{self, check_statement_limits, SluiceParser};
use super::hooks::{ActionHook, PlanningHook};
use super::interrupt::{ConnectionSignal, Interruption, StatementWatch};
use super::managed::ManagedTableHook;
use super::off_worker::{off_worker_for, OffWorker};
use super::parsed::ParsedQueries;
use super::pending::{Acknowledgements, PendingInsertsHook};
use super::portal::PreparedPlans;
use super::prepared::{CapsHook, ConnectionCaps};
use super::progress;
use super::rename::RenameTable;
use super::settings::{refuse_storage_set, show_engine_setting, statement_timeout, PgSettingsHook};
use super::simple::SimpleQueries;
use super::slots::ConnectionSlot;
use super::sqlstate::{self, SqlStateErrorHandler};
use super::startup::Startup;
use super::transaction::{restore_failed_block, TransactionHook};
use super::Frontend;
use crate::query_log::QueryTracker;
use sluice_engine::pending_inserts::PendingInserts;
use sluice_engine::pg_cursors::OpenCursors;
use sluice_engine::pg_rewrite::rewrite;
use sluice_engine::planning_interrupt::PlanningInterrupt;
use sluice_engine::sqlstate::SqlState;

/// datafusion-postgres' statement hooks plus Sluice's own, for a connection
/// with `caps`.
fn query_hooks(caps: &Arc<ConnectionCaps>, copies: &Arc<CopyInSlot>) -> Vec<Arc<dyn QueryHook>> {
    vec![
        Arc::new(TransactionHook),
        Arc::new(AccessHook),
        Arc::new(PendingInsertsHook),
        Arc::new(CapsHook {
            caps: Arc::clone(caps),
        }),
        Arc::new(DeclareCursorHook),
        Arc::new(CursorStatementHook),
        Arc::new(PgSettingsHook),
        Arc::new(PlanningHook::new(show_engine_setting)),
        Arc::new(PlanningHook::new(refuse_storage_set)),
        Arc::new(TransactionStatementHook),
        Arc::new(PlanningHook::new(copy_to_file)),
        Arc::new(CopyToStdoutHook),
        Arc::new(CopyInHook {
            slot: Arc::clone(copies),
        }),
        Arc::new(ActionHook(RenameTable)),
        Arc::new(ManagedTableHook),
        Arc::new(ActionHook(RunJob)),
    ]
}

/// Handlers for one connection.
pub struct Connection {
    frontend: Arc<Frontend>,
    session: Arc<SessionHandler>,
    /// The connection's place among the server's connections.
    slot: Arc<ConnectionSlot>,
    /// Its `COPY … FROM STDIN` under way.
    copies: Arc<CopyInSlot>,
}

impl Connection {
    /// Handlers for a new connection with a fresh session.
    pub fn new(
        frontend: Arc<Frontend>,
        signal: Arc<ConnectionSignal>,
        slot: Arc<ConnectionSlot>,
    ) -> Self {
        let context = Arc::new(frontend.sessions.new_session());
        context
            .state_ref()
            .write()
            .config_mut()
            .set_extension(Arc::new(OpenCursors::default()));
        let pending = Arc::new(PendingInserts::default());
        context
            .state_ref()
            .write()
            .config_mut()
            .set_extension(Arc::clone(&pending));
        let caps = Arc::new(ConnectionCaps::default());
        let copies = Arc::new(CopyInSlot::default());
        let hooks = query_hooks(&caps, &copies);
        let inner = DfSessionService::new_with_hooks(context.clone(), hooks.clone());
        let parser = Arc::new(SluiceParser::new(
            inner.query_parser(),
            context.clone(),
            frontend.limits,
        ));
        let session = Arc::new(SessionHandler {
            inner,
            parser,
            context,
            frontend: frontend.clone(),
            signal,
            caps,
            hooks,
            plans: PreparedPlans::default(),
            parsed: ParsedQueries::default(),
            simple: SimpleQueries::default(),
            acks: Acknowledgements::new(pending),
        });
        Self {
            frontend,
            session,
            slot,
            copies,
        }
    }
}

impl PgWireServerHandlers for Connection {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.session.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.session.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(Startup::new(
            self.session.context.clone(),
            self.frontend.cancels.clone(),
            self.session.signal.clone(),
            self.frontend.policy.clone(),
            self.slot.clone(),
        ))
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(SqlStateErrorHandler)
    }

    fn copy_handler(&self) -> Arc<impl CopyHandler> {
        Arc::new(CopyInHandler {
            slot: Arc::clone(&self.copies),
        })
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.frontend.cancels.clone()
    }
}

/// Runs one connection's queries.
pub struct SessionHandler {
    inner: DfSessionService,
    parser: Arc<SluiceParser>,
    context: Arc<SessionContext>,
    frontend: Arc<Frontend>,
    signal: Arc<ConnectionSignal>,
    /// The connection's caps on prepared statements and portals.
    caps: Arc<ConnectionCaps>,
    /// The statement hooks `inner` runs, for the query portals run here.
    hooks: Vec<Arc<dyn QueryHook>>,
    /// What the connection keeps of its prepared queries.
    plans: PreparedPlans,
    /// The queries the connection parsed.
    parsed: ParsedQueries,
    /// The connection's simple-protocol queries.
    simple: SimpleQueries,
    /// INSERTs run and not yet committed, and the replies waiting for them.
    acks: Acknowledgements,
}

impl SessionHandler {
    /// Runs `statement` (the work of SQL `text`) until it ends or is
    /// interrupted (cancel request, `statement_timeout`, disconnect); an
    /// interrupted query is recorded as cancelled and its future dropped.
    async fn interruptible<T>(
        &self,
        watch: &StatementWatch,
        tracker: &QueryTracker,
        text: &str,
        statement: impl Future<Output = PgWireResult<T>>,
    ) -> PgWireResult<T> {
        // Planning computes without yielding: it is told from another
        // thread, and stops at its next optimizer rule.
        let planning = self
            .context
            .state_ref()
            .read()
            .config()
            .options()
            .extensions
            .get::<PlanningInterrupt>()
            .cloned()
            .unwrap_or_default();
        planning.lower();
        let raiser = {
            let (planning, interrupted) = (planning.clone(), watch.interrupted());
            tokio::spawn(async move {
                let interruption = interrupted.await;
                planning.raise();
                interruption
            })
        };
        let result = tokio::select! {
            result = OffWorker::for_statement(text, statement) => result,
            interruption = watch.interrupted() => Err(self.interrupted(watch, tracker, interruption)),
        };
        raiser.abort();
        match result {
            Err(_) if planning.is_raised() => match raiser.await {
                Ok(interruption) => Err(self.interrupted(watch, tracker, interruption)),
                Err(_) => result,
            },
            result => result,
        }
    }

    /// Records `interruption` of the statement `watch` watches and returns
    /// the error its client gets.
    fn interrupted(
        &self,
        watch: &StatementWatch,
        tracker: &QueryTracker,
        interruption: Interruption,
    ) -> PgWireError {
        tracker.cancel();
        watch.reason(&self.signal, interruption).error()
    }

    /// A watch for a statement starting now, under the session's
    /// `statement_timeout`.
    fn watch(&self) -> StatementWatch {
        self.signal.watch(statement_timeout(&self.context))
    }

    /// Records the query, names the Ballista jobs it will submit after it and
    /// lets the planner note where it runs.
    fn begin<C: ClientInfo>(&self, client: &C, text: &str) -> Arc<QueryTracker> {
        let user = client
            .metadata()
            .get(METADATA_USER)
            .map(String::as_str)
            .unwrap_or("");
        let tracker = self.frontend.queries.start(user, text);
        let state = self.context.state_ref();
        let mut state = state.write();
        let options = state.config_mut().options_mut();
        if let Err(e) = options.set("ballista.job.name", &tracker.record().job_name) {
            tracing::warn!("could not set the job name: {e}");
        }
        // The planner notes where the statement runs on the record.
        options.extensions.insert(tracker.record().ran_on.clone());
        tracker
    }
}

/// Awaits a handler future, turning a panic into an internal error and
/// recording failures on the tracker.
async fn guarded<T>(
    tracker: &QueryTracker,
    future: impl Future<Output = PgWireResult<T>>,
) -> PgWireResult<T> {
    let result = match AssertUnwindSafe(future).catch_unwind().await {
        Ok(result) => result.map_err(sqlstate::classify),
        Err(panic) => Err(panic_error(panic)),
    };
    if let Err(error) = &result {
        let (code, message) = sqlstate::describe(error);
        tracker.fail(format!("{code}: {message}"));
    }
    result
}

/// Whether `error` is the Postgres-dialect parser rejecting the text.
fn is_parse_error(error: &PgWireError) -> bool {
    matches!(error, PgWireError::ApiError(source) if source.downcast_ref::<ParserError>().is_some())
}

/// The error a client receives for a panic in its query; the panic is logged.
fn panic_error(panic: Box<dyn std::any::Any + Send>) -> PgWireError {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!("query panicked: {message}");
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        SqlState::INTERNAL_ERROR.to_string(),
        format!("internal error: {message}"),
    )))
}

/// Makes a response's rows feed the tracker and stop when `watch` fires.
fn track(
    response: Response,
    tracker: &Arc<QueryTracker>,
    watch: &StatementWatch,
    signal: &Arc<ConnectionSignal>,
) -> Response {
    match response {
        Response::Query(mut query) => {
            let rows = std::mem::replace(&mut query.data_rows, Box::pin(futures::stream::empty()));
            query.data_rows = Box::pin(TrackedRows::new(rows, tracker, watch, signal));
            Response::Query(query)
        }
        Response::CopyOut(mut copy) => {
            let rows = std::mem::replace(&mut copy.data_stream, Box::pin(futures::stream::empty()));
            copy.data_stream = Box::pin(TrackedRows::new(rows, tracker, watch, signal));
            Response::CopyOut(copy)
        }
        other => other,
    }
}

/// A row stream that counts rows, records errors with their SQLSTATE, ends
/// with `57014` when its statement is interrupted, and marks the query
/// cancelled if dropped before its end.
struct TrackedRows<T> {
    inner: Pin<Box<dyn Stream<Item = PgWireResult<T>> + Send>>,
    tracker: Arc<QueryTracker>,
    interrupted: Pin<Box<dyn Future<Output = Interruption> + Send>>,
    watch: StatementWatch,
    signal: Arc<ConnectionSignal>,
    /// Rows passed on since the last interrupt check.
    unchecked: u32,
    done: bool,
}

/// How many rows pass between two checks for an interrupt.
const ROWS_PER_INTERRUPT_CHECK: u32 = 1024;

impl<T: Send + 'static> TrackedRows<T> {
    /// The error to end the rows with, if the statement was interrupted.
    fn check_interrupt(&mut self, cx: &mut Context<'_>) -> Option<PgWireError> {
        let Poll::Ready(interruption) = self.interrupted.as_mut().poll(cx) else {
            return None;
        };
        let reason = self.watch.reason(&self.signal, interruption);
        self.tracker.cancel();
        self.done = true;
        // Drop the rows now: that cancels the query's job.
        self.inner = Box::pin(futures::stream::empty());
        Some(reason.error())
    }

    fn new(
        inner: Pin<Box<dyn Stream<Item = PgWireResult<T>> + Send>>,
        tracker: &Arc<QueryTracker>,
        watch: &StatementWatch,
        signal: &Arc<ConnectionSignal>,
    ) -> Self {
        Self {
            inner,
            tracker: tracker.clone(),
            interrupted: watch.interrupted(),
            watch: watch.clone(),
            signal: signal.clone(),
            unchecked: ROWS_PER_INTERRUPT_CHECK,
            done: false,
        }
    }
}

impl<T: Send + 'static> Stream for TrackedRows<T> {
    type Item = PgWireResult<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        // The interrupt check costs more than passing a row on: it runs every
        // ROWS_PER_INTERRUPT_CHECK rows, and whenever the rows wait (so its
        // waker is registered while nothing else happens).
        self.unchecked += 1;
        if self.unchecked >= ROWS_PER_INTERRUPT_CHECK {
            self.unchecked = 0;
            if let Some(error) = self.check_interrupt(cx) {
                return Poll::Ready(Some(Err(error)));
            }
        }
        let inner = &mut self.inner;
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll_next(cx)))
            .unwrap_or_else(|panic| Poll::Ready(Some(Err(panic_error(panic)))));
        if polled.is_pending() {
            if let Some(error) = self.check_interrupt(cx) {
                return Poll::Ready(Some(Err(error)));
            }
        }
        match polled {
            Poll::Ready(Some(Ok(row))) => {
                self.tracker.add_row();
                Poll::Ready(Some(Ok(row)))
            }
            Poll::Ready(Some(Err(error))) => {
                let error = sqlstate::classify(error);
                let (code, message) = sqlstate::describe(&error);
                self.tracker.fail(format!("{code}: {message}"));
                self.done = true;
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> Drop for TrackedRows<T> {
    fn drop(&mut self) {
        if !self.done {
            self.tracker.cancel();
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for SessionHandler {
    /// pgwire's, after a `ROLLBACK TO SAVEPOINT` that ends a failed block's
    /// failed state has marked it (see [`restore_failed_block`]).
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures::Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        restore_failed_block(client, &query.query);
        self._on_query(client, query).await
    }

    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures::Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        // Both read the whole text, up to --max-query-size.
        let rewritten = off_worker_for(query, || {
            check_statement_limits(query, &self.frontend.limits).map(|()| rewrite(query))
        })?;
        self.acks.settle(client).await?;
        let tracker = self.begin(client, query);
        let watch = self.watch();
        // Tables other frontends created or changed since the last statement.
        sluice_engine::catalog::refresh(&self.context).await;
        let planned = rewritten.as_deref().unwrap_or(query);
        let responses = guarded(&tracker, async {
            let alone = self
                .simple
                .run_query(&self.context, &self.hooks, client, planned);
            if let Some(response) = alone.await {
                return response.map(|response| vec![response]);
            }
            match SimpleQueryHandler::do_query(&self.inner, client, planned).await {
                Err(error) if is_parse_error(&error) => {
                    match datafusion_ddl::run(&self.context, &*client, query).await {
                        Some(result) => result,
                        None => Err(error),
                    }
                }
                result => result,
            }
        });
        let responses = self.interruptible(&watch, &tracker, query, responses).await;
        let status = match &responses {
            Ok(responses) => status_after(client.transaction_status(), responses),
            Err(_) => client.transaction_status(),
        };
        self.acks
            .after_simple_query(status, responses.is_err())
            .await?;
        let mut responses: Vec<Response> = tag_empty_results(query, responses?)
            .into_iter()
            .map(|r| track(r, &tracker, &watch, &self.signal))
            .collect();
        if let ([response], true) = (responses.as_mut_slice(), progress::wanted(&self.context)) {
            let taken = std::mem::replace(response, Response::EmptyQuery);
            *response =
                progress::report(client, &self.frontend.scheduler, tracker.record(), taken).await?;
        }
        Ok(responses)
    }
}

/// The transaction status after `responses`, from `status` before them.
fn status_after(status: TransactionStatus, responses: &[Response]) -> TransactionStatus {
    responses
        .iter()
        .fold(status, |status, response| match response {
            Response::TransactionStart(_) => status.to_in_transaction_state(),
            Response::TransactionEnd(_) => status.to_idle_state(),
            Response::Error(_) => status.to_error_state(),
            _ => status,
        })
}
