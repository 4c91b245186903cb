//! The HTTP endpoint of every role (`--http HOST:PORT`): `/metrics` in
//! Prometheus' text format (see [`sluice_frontend::metrics`] and
//! `sluice_scheduler::metrics`), `/healthz` (the process is serving) and
//! `/readyz` (it can do its work: where it sees the cluster, at least one
//! executor is alive); on a frontend also the web UI ([`crate::web_ui`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use sluice_scheduler::ClusterView;
use tokio::task::JoinHandle;

use crate::error::{Result, ServerError};
use crate::web_ui::WebUi;

/// Prometheus' text exposition format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A role's HTTP endpoint, serving in the background.
pub struct HttpEndpoint {
    /// The address it listens on.
    pub address: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for HttpEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the endpoint reads: the cluster, for roles that see it.
#[derive(Clone)]
struct Sources {
    cluster: Option<Arc<dyn ClusterView>>,
}

/// Serves the endpoint on `address` (port 0 picks a free one). `cluster`
/// gives the live executors to roles that see the cluster (frontends,
/// schedulers); executors pass `None`. A frontend passes its `web_ui`.
pub async fn serve_http(
    address: SocketAddr,
    cluster: Option<Arc<dyn ClusterView>>,
    web_ui: Option<Arc<WebUi>>,
) -> Result<HttpEndpoint> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| ServerError::io(format!("listening for HTTP on {address}"), e))?;
    let address = listener
        .local_addr()
        .map_err(|e| ServerError::io("reading the HTTP address", e))?;
    let mut router = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Sources { cluster });
    if let Some(web_ui) = web_ui {
        router = router.merge(web_ui.router());
    }
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!("the HTTP endpoint stopped: {e}");
        }
    });
    Ok(HttpEndpoint { address, task })
}

/// Live executors and their task slots, when this role sees the cluster;
/// `Err` when the scheduler does not answer.
async fn live_executors(sources: &Sources) -> Option<Result<(usize, u64), String>> {
    let cluster = sources.cluster.as_ref()?;
    Some(
        cluster
            .executors()
            .await
            .map(|executors| {
                let slots = executors.iter().map(|e| u64::from(e.task_slots)).sum();
                (executors.len(), slots)
            })
            .map_err(|e| e.to_string()),
    )
}

async fn metrics(State(sources): State<Sources>) -> impl IntoResponse {
    if let Some(live) = live_executors(&sources).await {
        let (executors, slots) = live.unwrap_or((0, 0));
        sluice_frontend::metrics::set_executors(executors, slots);
    }
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        sluice_frontend::metrics::render(),
    )
}

async fn ready(State(sources): State<Sources>) -> impl IntoResponse {
    match live_executors(&sources).await {
        None | Some(Ok((1.., _))) => (StatusCode::OK, "ready\n".to_string()),
        Some(Ok(_)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no executor is alive\n".to_string(),
        ),
        Some(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the scheduler does not answer: {e}\n"),
        ),
    }
}
