//! `sluice scheduler` and `sluice executor` settings.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sluice_scheduler::shuffle_memory::ShuffleMemory;
use sluice_scheduler::{ClusterTimings, ClusterTls};

use super::layered::{layered, Size};
use super::{
    absolute, advertised_host, cores, http_address, parse_host_port, parse_socket_addr,
    ClusterTlsArgs, FileConfig, DEFAULT_SCHEDULER_HTTP,
};
use crate::error::{Result, ServerError};

/// Default scheduler listener: every interface, Ballista's usual port.
pub const DEFAULT_SCHEDULER_LISTEN: &str = "0.0.0.0:50050";
/// Default executor Flight listener; its task gRPC service takes the next port.
pub const DEFAULT_EXECUTOR_LISTEN: &str = "0.0.0.0:50051";

/// Flags of `sluice scheduler`, and the config file's `[scheduler]`
/// section: each setting declared once (see [`super::layered`]).
#[derive(Debug, Default, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SchedulerArgs {
    /// Address of the scheduler's gRPC and REST listener [default: 0.0.0.0:50050].
    #[arg(long, env = "SLUICE_SCHEDULER_LISTEN", value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Host name executors and frontends use to reach this scheduler
    /// [default: the listen address, or this machine's host name].
    #[arg(long, env = "SLUICE_SCHEDULER_EXTERNAL_HOST", value_name = "HOST")]
    pub external_host: Option<String>,
    /// TOML file shared by all roles; `scheduler` reads `[scheduler]`
    /// (listen, external-host) and `[cluster]`.
    #[arg(long, env = "SLUICE_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Mutual TLS with executors and frontends; in the file, in `[cluster]`.
    #[command(flatten)]
    #[serde(skip)]
    pub tls: ClusterTlsArgs,
    /// HTTP endpoint for `/metrics`, `/healthz` and `/readyz`; `off` turns
    /// it off [default: 127.0.0.1:9050].
    #[arg(long, env = "SLUICE_SCHEDULER_HTTP", value_name = "HOST:PORT")]
    pub http: Option<String>,
}

/// Resolved settings of `sluice scheduler`.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// gRPC and REST listener.
    pub listen: SocketAddr,
    /// Name other hosts reach it by.
    pub external_host: String,
    /// Failure detection and result retention.
    pub timings: ClusterTimings,
    /// Mutual TLS on its listener; executors then poll for tasks.
    pub tls: Option<ClusterTls>,
    /// The HTTP endpoint (metrics, health), if on.
    pub http: Option<SocketAddr>,
}

impl SchedulerArgs {
    /// Puts flags and environment over the config file and the defaults.
    pub fn resolve(self) -> Result<SchedulerConfig> {
        let file = FileConfig::load(self.config.as_deref())?;
        let tls = self.tls.clone().resolve(&file)?;
        let settings = layered(&self, &file.scheduler)?;
        let listen = parse_socket_addr(
            "listen",
            settings
                .listen
                .as_deref()
                .unwrap_or(DEFAULT_SCHEDULER_LISTEN),
        )?;
        Ok(SchedulerConfig {
            listen,
            external_host: settings
                .external_host
                .unwrap_or_else(|| advertised_host(&listen)),
            timings: file.timings()?,
            tls,
            http: http_address(settings.http, DEFAULT_SCHEDULER_HTTP)?,
        })
    }
}

/// Flags of `sluice executor`, and the config file's `[executor]` section:
/// each setting declared once (see [`super::layered`]).
#[derive(Debug, Default, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExecutorArgs {
    /// The scheduler to register with, HOST:PORT.
    #[arg(long, env = "SLUICE_SCHEDULER", value_name = "HOST:PORT")]
    pub scheduler: Option<String>,
    /// Address of the executor's Arrow Flight listener; the task gRPC service
    /// listens on the next port. Port 0 picks free ports
    /// [default: 0.0.0.0:50051].
    #[arg(long, env = "SLUICE_EXECUTOR_LISTEN", value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Host name the scheduler, executors and frontends use to reach this
    /// executor [default: the listen address, or this machine's host name].
    #[arg(long, env = "SLUICE_EXECUTOR_EXTERNAL_HOST", value_name = "HOST")]
    pub external_host: Option<String>,
    /// Tasks run at once [default: number of cores].
    #[arg(long, env = "SLUICE_SLOTS", value_name = "N")]
    pub slots: Option<usize>,
    /// Directory for shuffle files, results and spills [default: a new
    /// directory under the system temp dir, removed at exit].
    #[arg(long, env = "SLUICE_WORK_DIR", value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Memory each task slot may use; a task needing more spills or fails
    /// its query with 53200 [default: 70% of RAM split across the slots].
    #[arg(long, env = "SLUICE_QUERY_MEMORY", value_name = "SIZE")]
    pub query_memory: Option<Size>,
    /// Memory this executor keeps stage outputs in (shuffle data and
    /// results), beyond which it spills to the work dir; 0 writes every
    /// output to files [default: an eighth of RAM].
    #[arg(long, env = "SLUICE_SHUFFLE_MEMORY", value_name = "SIZE")]
    pub shuffle_memory: Option<Size>,
    /// TOML file shared by all roles; `executor` reads `[executor]`
    /// (scheduler, listen, external-host, slots, work-dir, query-memory,
    /// shuffle-memory) and `[cluster]`.
    #[arg(long, env = "SLUICE_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Mutual TLS with the scheduler, other executors and frontends; in the
    /// file, in `[cluster]`.
    #[command(flatten)]
    #[serde(skip)]
    pub tls: ClusterTlsArgs,
    /// HTTP endpoint for `/metrics`, `/healthz` and `/readyz`; `off` turns
    /// it off [default: 127.0.0.1, two ports after the Flight port (50053);
    /// a free port with `--listen` port 0].
    #[arg(long, env = "SLUICE_EXECUTOR_HTTP", value_name = "HOST:PORT")]
    pub http: Option<String>,
}

/// Resolved settings of `sluice executor`.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// Scheduler host and port.
    pub scheduler: (String, u16),
    /// Interface the services bind to.
    pub bind_host: String,
    /// Arrow Flight port.
    pub flight_port: u16,
    /// Task gRPC port.
    pub grpc_port: u16,
    /// Name other hosts reach it by.
    pub external_host: String,
    /// Tasks run at once.
    pub slots: usize,
    /// Work directory, or `None` for a temporary one.
    pub work_dir: Option<PathBuf>,
    /// Heartbeat interval and the rest of the cluster timings.
    pub timings: ClusterTimings,
    /// Memory each task slot may use.
    pub query_memory: Option<u64>,
    /// Memory for stage outputs (0: files).
    pub shuffle_memory: u64,
    /// Mutual TLS on its Flight listener and to the other roles.
    pub tls: Option<ClusterTls>,
    /// The HTTP endpoint (metrics, health), if on.
    pub http: Option<SocketAddr>,
}

impl ExecutorArgs {
    /// Puts flags and environment over the config file and the defaults.
    pub fn resolve(self) -> Result<ExecutorConfig> {
        let file = FileConfig::load(self.config.as_deref())?;
        let tls = self.tls.clone().resolve(&file)?;
        let settings = layered(&self, &file.executor)?;
        let scheduler = settings.scheduler.ok_or_else(|| {
            ServerError::Config(
                "an executor needs --scheduler HOST:PORT (or scheduler in [executor])".into(),
            )
        })?;
        let scheduler = parse_host_port("scheduler", &scheduler)?;
        let listen = parse_socket_addr(
            "listen",
            settings
                .listen
                .as_deref()
                .unwrap_or(DEFAULT_EXECUTOR_LISTEN),
        )?;
        let (flight_port, grpc_port) = if listen.port() == 0 {
            (free_port(listen)?, free_port(listen)?)
        } else {
            let grpc = listen.port().checked_add(1).ok_or_else(|| {
                ServerError::Config("--listen port must leave room for the next port".into())
            })?;
            (listen.port(), grpc)
        };
        let slots = settings.slots.unwrap_or_else(cores);
        if slots == 0 {
            return Err(ServerError::Config("slots must be at least 1".into()));
        }
        Ok(ExecutorConfig {
            query_memory: settings.query_memory.map(|size| size.0),
            shuffle_memory: settings
                .shuffle_memory
                .map_or_else(ShuffleMemory::default_budget, |size| size.0),
            scheduler,
            bind_host: listen.ip().to_string(),
            flight_port,
            grpc_port,
            external_host: settings
                .external_host
                .unwrap_or_else(|| advertised_host(&listen)),
            slots,
            work_dir: settings.work_dir.map(absolute).transpose()?,
            timings: file.timings()?,
            tls,
            http: http_address(
                settings.http,
                &default_executor_http(listen.port(), flight_port),
            )?,
        })
    }
}

/// The HTTP endpoint of an executor not given `--http`: on loopback, two
/// ports after its Flight port (the task gRPC service has the one between),
/// so that executors started side by side on one host with their own
/// `--listen` ports do not collide; a free port when the Flight port was
/// picked free (`--listen` port 0).
fn default_executor_http(listen_port: u16, flight_port: u16) -> String {
    let port = match listen_port {
        0 => 0,
        _ => flight_port.saturating_add(2),
    };
    format!("127.0.0.1:{port}")
}

/// A free port on `listen`'s interface.
fn free_port(listen: SocketAddr) -> Result<u16> {
    sluice_scheduler::ports::free_port(listen.ip())
        .map_err(|e| ServerError::io(format!("finding a free port on {}", listen.ip()), e))
}
