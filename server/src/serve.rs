//! `sluice serve`: the embedded cluster and the Postgres frontend in one
//! process.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog;
use sluice_engine::catalog::CatalogOptions;
use sluice_engine::system::{register_system_schema, SystemTable};
use sluice_engine::{EngineError, SessionFactory, SessionOptions, DEFAULT_CATALOG};
use sluice_scheduler::{ClusterView, EmbeddedCluster, EmbeddedClusterOptions, RemoteScheduler};
use tokio::net::TcpListener;

use crate::config::{ClusterMode, ServeConfig};
use crate::error::{Result, ServerError};
use crate::http::serve_http;
use crate::web_ui::WebUi;
use datafusion_postgres::pgwire::tokio::tokio_rustls::TlsAcceptor;
use sluice_frontend::auth::scram::Verifier;
use sluice_frontend::auth::{Role, StoredPassword, User};
use sluice_frontend::call::JobsSlot;
use sluice_frontend::catalog_table::TablesTable;
use sluice_frontend::query_log::QueryLog;
use sluice_frontend::system_tables::{ExecutorsTable, QueriesTable};
use sluice_frontend::{self, Frontend, Limits, LoginPolicy, DATABASE};
use sluice_jobs::connection::ServerAddress;
use sluice_jobs::history::RunHistory;
use sluice_jobs::{JobRunsTable, Jobs};

/// The single-file catalog of earlier versions in the data directory,
/// imported into the catalog when that is empty.
const LEGACY_CATALOG_FILE: &str = "catalog.json";
/// Where `COPY`s into directories are recorded while they run.
const COPY_JOURNAL_DIR: &str = "copies";
/// The query history (`sluice.queries`) in the data directory.
const QUERY_HISTORY_FILE: &str = "queries.jsonl";
/// Where the server's jobs are found once started: by `CALL sluice.run_job`
/// in the frontend and by `sluice.job_runs`.
#[derive(Default)]
struct ScheduledJobs {
    /// What `CALL sluice.run_job` runs.
    calls: Arc<JobsSlot>,
    /// What `sluice.job_runs` lists.
    table: Arc<OnceLock<Arc<Jobs>>>,
}

impl ScheduledJobs {
    /// Installs the started jobs.
    fn set(&self, jobs: Arc<Jobs>) {
        let _ = self.table.set(Arc::clone(&jobs));
        self.calls.set(jobs);
    }
}

/// The scheduled jobs' run history in the data directory.
const JOB_RUNS_FILE: &str = "job_runs.jsonl";
/// The embedded executors' work directories (shuffle files, results).
const WORK_DIR: &str = "work";

/// Runs the server until SIGINT or SIGTERM, then shuts everything down.
pub async fn run(config: ServeConfig) -> Result<()> {
    let started = Instant::now();
    let shutdown = shutdown_signal()?;
    let server = start(&config).await?;
    let http = match config.http {
        Some(address) => Some(
            serve_http(
                address,
                Some(server.view.clone()),
                Some(Arc::clone(&server.web_ui)),
            )
            .await?,
        ),
        None => None,
    };
    let cluster = match &config.cluster {
        ClusterMode::Embedded { executors, slots } => {
            format!("with {executors} executors x {slots} slots")
        }
        ClusterMode::Remote { host, port } => format!("with the scheduler at {host}:{port}"),
    };
    let metrics = match &http {
        Some(http) => format!(
            "; web UI at http://{0}/, metrics at http://{0}/metrics",
            http.address
        ),
        None => String::new(),
    };
    println!(
        "sluice ready in {:.0?} {cluster}; connect with: psql -h {} -p {} -U sluice -d {DATABASE}{metrics}",
        started.elapsed(),
        server.address.ip(),
        server.address.port(),
    );
    let _ = std::io::stdout().flush();
    tracing::info!(
        "listening on {}; scheduler at {}; data in {}",
        server.address,
        server.view.scheduler_url(),
        config.data_dir.display()
    );
    shutdown.await;
    tracing::info!("shutting down");
    drop(http);
    server.stop().await;
    tracing::info!("stopped");
    Ok(())
}

/// A server started in this process: the frontend, and the embedded cluster
/// unless it uses a remote scheduler.
pub struct RunningServer {
    /// The Postgres listener's address.
    pub address: SocketAddr,
    view: Arc<dyn ClusterView>,
    cluster: Option<Arc<EmbeddedCluster>>,
    /// What the web UI reads.
    web_ui: Arc<WebUi>,
    stop: tokio::sync::oneshot::Sender<()>,
    frontend: tokio::task::JoinHandle<()>,
    /// The scheduled jobs' timers.
    schedules: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningServer {
    /// Closes the listener and every connection, then stops the cluster.
    pub async fn stop(self) {
        for schedule in &self.schedules {
            schedule.abort();
        }
        let _ = self.stop.send(());
        let _ = self.frontend.await;
        let log = Arc::clone(&self.web_ui.log);
        let _ = tokio::task::spawn_blocking(move || log.flush()).await;
        if let Some(cluster) = self.cluster {
            cluster.shutdown().await;
        }
    }
}

/// Binds the listener, starts the embedded cluster (or finds the remote
/// scheduler) and serves connections in the background.
pub async fn start(config: &ServeConfig) -> Result<RunningServer> {
    if !config.listen.ip().is_loopback() && config.users.is_empty() {
        return Err(ServerError::Config(format!(
            "refusing to listen on {} with no users configured: anyone who can reach \
             it could run any statement. Add users (`sluice user add NAME --role admin \
             --config FILE`, then `sluice serve --config FILE`) or listen on 127.0.0.1",
            config.listen
        )));
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| ServerError::io(format!("listening on {}", config.listen), e))?;
    let address = listener
        .local_addr()
        .map_err(|e| ServerError::io("reading the listener address", e))?;
    let tls = config
        .tls
        .as_ref()
        .map(|files| sluice_frontend::tls::acceptor(&files.cert, &files.key))
        .transpose()?;
    let (policy, job_login) = login_policy(config, address);
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        ServerError::io(
            format!("creating data directory {}", config.data_dir.display()),
            e,
        )
    })?;
    if !config.warehouse.contains("://") {
        std::fs::create_dir_all(&config.warehouse).map_err(|e| {
            ServerError::io(format!("creating the warehouse {}", config.warehouse), e)
        })?;
    }
    let (cluster, view, jobs, slots) = match &config.cluster {
        ClusterMode::Embedded { executors, slots } => {
            let cluster = Arc::new(
                EmbeddedCluster::start(EmbeddedClusterOptions {
                    executors: *executors,
                    slots_per_executor: *slots,
                    work_dir: config.data_dir.join(WORK_DIR),
                    timings: config.timings,
                    slot_memory: config.query_memory,
                    shuffle_memory: config.shuffle_memory,
                })
                .await?,
            );
            let slots = cluster.total_slots();
            // The embedded scheduler serves the same REST API on loopback.
            let jobs = Arc::new(RemoteScheduler::new(
                "127.0.0.1",
                cluster.scheduler_port(),
                None,
            )?);
            (
                Some(cluster.clone()),
                cluster as Arc<dyn ClusterView>,
                jobs,
                slots,
            )
        }
        ClusterMode::Remote { host, port } => {
            let scheduler = Arc::new(
                RemoteScheduler::new(host, *port, config.cluster_tls.clone())?.following_results(),
            );
            let slots = remote_slots(scheduler.as_ref()).await;
            (
                None,
                scheduler.clone() as Arc<dyn ClusterView>,
                scheduler,
                slots,
            )
        }
    };
    let scheduled = ScheduledJobs::default();
    let frontend = build_frontend(&view, jobs.clone(), slots, config, &scheduled, policy, tls)?;
    let web_ui = Arc::new(WebUi {
        log: Arc::clone(&frontend.queries),
        cluster: Arc::clone(&view),
        scheduler: jobs,
    });
    frontend.sessions.restore_catalog().await?;
    // Loaded before the listener serves: a bad jobs file stops the start.
    let job_list = match &config.jobs {
        Some(path) => Some(sluice_jobs::spec::load(path)?),
        None => None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let frontend = sluice_frontend::spawn(listener, frontend, async {
        let _ = stopped.await;
    })
    .map_err(|e| ServerError::io("serving connections", e))?;
    let mut schedules = Vec::new();
    if let Some(job_list) = job_list {
        let history = RunHistory::open(&config.data_dir.join(JOB_RUNS_FILE))?;
        let jobs = Arc::new(Jobs::new(job_list, history, job_login));
        schedules = jobs.start();
        scheduled.set(jobs);
    }
    Ok(RunningServer {
        address,
        view,
        cluster,
        web_ui,
        stop,
        frontend,
        schedules,
    })
}

/// Task slots of a remote cluster's live executors, or this machine's cores
/// when the scheduler cannot tell yet (it is down, or no executor joined).
async fn remote_slots(scheduler: &RemoteScheduler) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match scheduler.executors().await {
        Ok(executors) if !executors.is_empty() => {
            executors.iter().map(|e| e.task_slots as usize).sum()
        }
        Ok(_) => cores,
        Err(e) => {
            tracing::warn!("{e}; queries fail until the scheduler answers");
            cores
        }
    }
}

/// The frontend over `cluster`: sessions with pg_catalog and the system schema.
fn build_frontend(
    cluster: &Arc<dyn ClusterView>,
    jobs: Arc<RemoteScheduler>,
    slots: usize,
    config: &ServeConfig,
    scheduled: &ScheduledJobs,
    policy: LoginPolicy,
    tls: Option<TlsAcceptor>,
) -> Result<Arc<Frontend>> {
    let scheduler = Arc::clone(&jobs);
    let sessions = SessionFactory::new(&SessionOptions {
        scheduler_url: cluster.scheduler_url().to_string(),
        target_partitions: slots,
        storage: config.storage.clone(),
        planner: config.planner.clone(),
        job_control: Some(jobs.clone()),
        catalog: Some(CatalogOptions {
            url: config.catalog.clone(),
            legacy_file: Some(config.data_dir.join(LEGACY_CATALOG_FILE)),
            warehouse: Some(config.warehouse.clone()),
            shared: config.shared_catalog,
        }),
        copy_journal: Some(config.data_dir.join(COPY_JOURNAL_DIR)),
        allowed_locations: (!config.users.is_empty()).then(|| {
            let mut allowed = vec![
                config.data_dir.display().to_string(),
                config.warehouse.clone(),
            ];
            allowed.extend(config.allowed_locations.iter().cloned());
            allowed
        }),
        reserved_locations: reserved_locations(config),
        cluster_tls: config
            .cluster_tls
            .as_ref()
            .map(|tls| tls.endpoint_override(Default::default())),
    })?;
    setup_pg_catalog(sessions.template(), DEFAULT_CATALOG, EmptyContextProvider)
        .map_err(|e| EngineError::datafusion("installing pg_catalog", *e))?;
    sluice_engine::pg_cursors::install(sessions.template(), DEFAULT_CATALOG)
        .map_err(|e| EngineError::datafusion("installing pg_catalog.pg_cursors", e))?;
    sluice_engine::pg_catalog_columns::install(sessions.template(), DEFAULT_CATALOG)
        .map_err(|e| EngineError::datafusion("typing pg_catalog's vector columns", e))?;
    sluice_engine::pg_functions::register(sessions.template());
    let frontend_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let queries = Arc::new(QueryLog::open(
        frontend_id,
        &config.data_dir.join(QUERY_HISTORY_FILE),
        config.query_history,
    )?);
    let catalog = sessions
        .template()
        .catalog(DEFAULT_CATALOG)
        .expect("the session template has the default catalog");
    let tables: HashMap<&str, Arc<dyn SystemTable>> = HashMap::from([
        (
            "executors",
            Arc::new(ExecutorsTable::new(cluster.clone())) as Arc<dyn SystemTable>,
        ),
        (
            "queries",
            Arc::new(QueriesTable::new(queries.clone(), cluster.clone())),
        ),
        ("tables", Arc::new(TablesTable::new(catalog))),
        (
            "job_runs",
            Arc::new(JobRunsTable::new(Arc::clone(&scheduled.table))),
        ),
    ]);
    // `CALL sluice.run_job` finds the jobs through the session.
    sessions
        .template()
        .state_ref()
        .write()
        .config_mut()
        .set_extension(Arc::clone(&scheduled.calls));
    register_system_schema(sessions.template(), tables)?;
    if let Some(timeout) = &config.statement_timeout {
        sluice_frontend::settings::with_settings(sessions.template(), |settings| {
            settings.set_server_default("statement_timeout", timeout)
        })
        .map_err(|e| ServerError::Config(format!("statement-timeout: {e}")))?;
    }
    let limits = Limits {
        max_connections: config.max_connections,
        max_query_size: config.max_query_size,
        max_statement_depth: sluice_engine::complexity::DEFAULT_MAX_DEPTH,
    };
    Ok(Arc::new(Frontend::new(
        sessions, queries, policy, tls, limits, scheduler,
    )))
}

/// The server's own state, which no statement may read or write: the
/// catalog, the COPY journal, the histories and the executors' work
/// directories (the data dir itself is an allowed location).
fn reserved_locations(config: &ServeConfig) -> Vec<String> {
    let mut reserved: Vec<String> = [
        LEGACY_CATALOG_FILE,
        COPY_JOURNAL_DIR,
        QUERY_HISTORY_FILE,
        JOB_RUNS_FILE,
        WORK_DIR,
    ]
    .iter()
    .map(|name| config.data_dir.join(name).display().to_string())
    .collect();
    // A directory or object-store prefix, shared or not.
    reserved.push(config.catalog.clone());
    reserved
}

/// The user scheduled jobs log in as when users are configured: an admin
/// (the jobs file is the operator's) with a password made at each start and
/// known only to this process.
const JOBS_USER: &str = "sluice_jobs";

/// Who may log in to the server at `address`, and the login its scheduled
/// jobs use.
fn login_policy(config: &ServeConfig, address: SocketAddr) -> (LoginPolicy, ServerAddress) {
    let mut users = config.users.clone();
    let mut job_login = ServerAddress {
        host: address.ip().to_string(),
        port: address.port(),
        user: "sluice".into(),
        password: None,
    };
    if !users.is_empty() {
        let password = uuid::Uuid::new_v4().simple().to_string();
        users.insert(
            JOBS_USER,
            User {
                role: Role::Admin,
                password: StoredPassword::Scram(Verifier::new(&password)),
            },
        );
        job_login.user = JOBS_USER.into();
        job_login.password = Some(password);
    }
    let md5_users = users.with_md5_passwords();
    if !md5_users.is_empty() && !config.allow_md5 {
        tracing::warn!(
            "users {md5_users:?} have md5 passwords and cannot log in: md5 logins are off \
             (--allow-md5)"
        );
    }
    let policy = LoginPolicy {
        users,
        tls_required: config.tls_required,
        allow_md5: config.allow_md5,
    };
    (policy, job_login)
}

/// Listens for SIGINT and SIGTERM from the moment it is created, so a signal
/// sent right after the ready line is not missed.
pub(crate) fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let listen = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| ServerError::io(format!("listening for {name}"), e))
    };
    let mut interrupt = listen(SignalKind::interrupt(), "SIGINT")?;
    let mut terminate = listen(SignalKind::terminate(), "SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
    })
}
