//! An executor's Arrow Flight service: Ballista's (shuffle and result
//! transfer), answering fetches of partitions held in memory
//! ([`crate::shuffle_memory`]) itself, plus two actions, [`TASKS_COMPLETED_ACTION`] and
//! [`TASKS_RUNNING_ACTION`], that answer how many tasks the executor has
//! completed and is running, and the streams of results a frontend in
//! another process follows while their jobs run ([`crate::live_follow`]). A frontend in another process reaches
//! every executor's Flight port already (it fetches results there), so asking
//! there needs no extra port or discovery.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest, PollInfo,
    SchemaResult, Ticket,
};
use ballista_core::utils::create_grpc_server;
use ballista_executor::flight_service::BallistaFlightService;
use ballista_executor::ArrowFlightServerProvider;
use futures::stream::{self, BoxStream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::live_follow::{self, LIVE_RESULT_ACTION, LIVE_RESULT_SYNC_ACTION};
use crate::shuffle_memory::{self, HeldOutput, ShuffleMemory};
use crate::tls::ClusterTls;

/// Ballista's action fetching a shuffle partition as Arrow IPC blocks.
const BLOCK_TRANSPORT_ACTION: &str = "IO_BLOCK_TRANSPORT";

/// The Flight action that returns the completed-task count as decimal text.
pub const TASKS_COMPLETED_ACTION: &str = "sluice.tasks_completed";

/// The Flight action that returns the running-task count as decimal text.
pub const TASKS_RUNNING_ACTION: &str = "sluice.tasks_running";

/// Serves Ballista's Flight service plus [`TASKS_COMPLETED_ACTION`] reading
/// `completed` and [`TASKS_RUNNING_ACTION`] for executor `executor_id`, over
/// mutual TLS when `tls` is given.
/// Message size limits are Ballista's executor defaults.
pub fn flight_service_provider(
    executor_id: String,
    completed: Arc<AtomicU64>,
    shuffle_memory: Option<Arc<ShuffleMemory>>,
    tls: Option<ClusterTls>,
) -> Arc<ArrowFlightServerProvider> {
    let defaults = ballista_executor::executor_process::ExecutorProcessConfig::default();
    let max_decoding = defaults.grpc_max_decoding_message_size as usize;
    let max_encoding = defaults.grpc_max_encoding_message_size as usize;
    Arc::new(move |work_dir, address: SocketAddr, mut shutdown, grpc| {
        let service = CountingFlightService {
            inner: BallistaFlightService::new(work_dir),
            executor_id: executor_id.clone(),
            completed: completed.clone(),
            shuffle_memory: shuffle_memory.clone(),
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            let mut server = create_grpc_server(&grpc);
            if let Some(tls) = tls {
                server = server
                    .tls_config(tls.flight_server())
                    .map_err(ballista_core::error::BallistaError::TonicError)?;
            }
            server
                .add_service(
                    FlightServiceServer::new(service)
                        .max_decoding_message_size(max_decoding)
                        .max_encoding_message_size(max_encoding),
                )
                .serve_with_shutdown(address, shutdown.recv())
                .await
                .map_err(ballista_core::error::BallistaError::TonicError)
        })
    })
}

/// How many tasks an executor has completed and is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskCountsAnswer {
    /// Tasks completed successfully.
    pub completed: u64,
    /// Tasks running now.
    pub running: u64,
}

/// Asks the executor whose Flight service listens on `host:port` how many
/// tasks it has completed and is running.
pub async fn fetch_task_counts(
    host: &str,
    port: u16,
    tls: Option<&ClusterTls>,
) -> Result<TaskCountsAnswer, String> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("http://{host}:{port}"))
        .map_err(|e| e.to_string())?;
    if let Some(tls) = tls {
        endpoint = tls.endpoint(endpoint).map_err(|e| e.to_string())?;
    }
    let endpoint = endpoint
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    let mut client = arrow_flight::FlightClient::new(channel);
    Ok(TaskCountsAnswer {
        completed: count(&mut client, TASKS_COMPLETED_ACTION).await?,
        running: count(&mut client, TASKS_RUNNING_ACTION).await?,
    })
}

/// The number `action` answers.
async fn count(client: &mut arrow_flight::FlightClient, action: &str) -> Result<u64, String> {
    let mut results = client
        .do_action(Action::new(action, ""))
        .await
        .map_err(|e| e.to_string())?;
    let body = match results.next().await {
        Some(Ok(body)) => body,
        Some(Err(e)) => return Err(e.to_string()),
        None => return Err("empty answer".into()),
    };
    std::str::from_utf8(&body)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| format!("malformed answer to {action}"))
}

/// The body of `request`'s action as text.
fn action_text(request: &Request<Action>) -> Result<&str, Status> {
    std::str::from_utf8(&request.get_ref().body)
        .map_err(|_| Status::invalid_argument("the action's body is not UTF-8"))
}

struct CountingFlightService {
    inner: BallistaFlightService,
    executor_id: String,
    completed: Arc<AtomicU64>,
    /// Partitions served from memory before Ballista looks for files.
    shuffle_memory: Option<Arc<ShuffleMemory>>,
}

impl CountingFlightService {
    /// The held output a fetch request names.
    fn held(&self, request: &[u8]) -> Option<Arc<HeldOutput>> {
        let memory = self.shuffle_memory.as_ref()?;
        shuffle_memory::serve::requested_output(request, &self.executor_id, memory)
    }
}

type Inner = BallistaFlightService;

#[tonic::async_trait]
impl FlightService for CountingFlightService {
    type DoActionStream = BoxStream<'static, Result<arrow_flight::Result, Status>>;
    type DoExchangeStream = <Inner as FlightService>::DoExchangeStream;
    type DoGetStream = <Inner as FlightService>::DoGetStream;
    type DoPutStream = <Inner as FlightService>::DoPutStream;
    type HandshakeStream = <Inner as FlightService>::HandshakeStream;
    type ListActionsStream = <Inner as FlightService>::ListActionsStream;
    type ListFlightsStream = <Inner as FlightService>::ListFlightsStream;

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let count = match request.get_ref().r#type.as_str() {
            TASKS_COMPLETED_ACTION => Some(self.completed.load(Ordering::Relaxed)),
            TASKS_RUNNING_ACTION => {
                Some(crate::metrics::tasks_running(&self.executor_id).max(0) as u64)
            }
            _ => None,
        };
        if let Some(count) = count {
            let answer = arrow_flight::Result {
                body: count.to_string().into_bytes().into(),
            };
            return Ok(Response::new(stream::once(async { Ok(answer) }).boxed()));
        }
        match request.get_ref().r#type.as_str() {
            LIVE_RESULT_ACTION => {
                let key = action_text(&request)?;
                return Ok(Response::new(live_follow::forward(key)?));
            }
            LIVE_RESULT_SYNC_ACTION => {
                let answer = live_follow::sync(action_text(&request)?)?;
                return Ok(Response::new(stream::once(async { Ok(answer) }).boxed()));
            }
            _ => {}
        }
        if request.get_ref().r#type == BLOCK_TRANSPORT_ACTION {
            if let Some(output) = self.held(&request.get_ref().body) {
                return Ok(Response::new(shuffle_memory::serve::ipc_blocks(output)));
            }
        }
        let inner = self.inner.do_action(request).await?.into_inner();
        Ok(Response::new(inner.boxed()))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        if let Some(output) = self.held(&request.get_ref().ticket) {
            return Ok(Response::new(shuffle_memory::serve::flight_data(output)));
        }
        self.inner.do_get(request).await
    }

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        self.inner.handshake(request).await
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        self.inner.list_flights(request).await
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.inner.get_flight_info(request).await
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        self.inner.poll_flight_info(request).await
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        self.inner.get_schema(request).await
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        self.inner.do_put(request).await
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        self.inner.list_actions(request).await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        self.inner.do_exchange(request).await
    }
}
