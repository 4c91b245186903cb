//! `sluice serve` settings.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sluice_engine::options::{
    ServerPlannerSettings, DEFAULT_FRONTEND_MAX_BYTES, DEFAULT_SINGLE_STAGE_MAX_BYTES,
};
use sluice_engine::{SluiceOptions, StorageOptions};
use sluice_scheduler::shuffle_memory::ShuffleMemory;
use sluice_scheduler::{ClusterTimings, ClusterTls};

use super::layered::{layered, Size};
use super::{
    absolute, cores, http_address, parse_host_port, parse_socket_addr, ClusterTlsArgs, FileConfig,
    DEFAULT_SERVE_HTTP,
};
use crate::error::{Result, ServerError};
use sluice_frontend::auth::Users;

/// Default Postgres listener address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5433";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./sluice-data";
/// Default number of embedded executors.
pub const DEFAULT_EXECUTORS: usize = 2;

/// Flags of `sluice serve`, and the config file's `[serve]` section: each
/// setting declared once (see [`super::layered`]). Flags and environment
/// win over the file; unset ones take the default their help gives.
#[derive(Debug, Default, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServeArgs {
    /// Address of the Postgres-protocol listener [default: 127.0.0.1:5433].
    #[arg(long, env = "SLUICE_LISTEN", value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Directory for executor work dirs and catalog state [default: ./sluice-data].
    #[arg(long, env = "SLUICE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Number of embedded executors [default: 2].
    #[arg(long, env = "SLUICE_EXECUTORS", value_name = "N")]
    pub executors: Option<usize>,
    /// Task slots per embedded executor [default: cores / executors, at least 1].
    #[arg(long, env = "SLUICE_SLOTS", value_name = "N")]
    pub slots: Option<usize>,
    /// Run only the frontend, sending queries to the scheduler at HOST:PORT
    /// (started with `sluice scheduler`) instead of an embedded cluster.
    #[arg(long, env = "SLUICE_SCHEDULER", value_name = "HOST:PORT")]
    pub scheduler: Option<String>,
    /// Mutual TLS with the scheduler and executors (with `--scheduler`); in
    /// the file, in `[cluster]`.
    #[command(flatten)]
    #[serde(skip)]
    pub cluster_tls: ClusterTlsArgs,
    /// Jobs whose files total at most this many bytes run as a single stage
    /// on one executor, without shuffles, when the executors are separate
    /// processes (`--scheduler`); the embedded cluster, whose executors share
    /// this machine's cores, runs every job as a single stage [default:
    /// 67108864, i.e. 64 MiB; 0 always splits jobs into stages]. A session
    /// may change it with `SET sluice.single_stage_max_bytes = N`.
    #[arg(long, env = "SLUICE_SINGLE_STAGE_MAX_BYTES", value_name = "BYTES")]
    pub single_stage_max_bytes: Option<u64>,
    /// Queries (not writes) whose files total at most this many bytes run in
    /// the frontend, without a cluster job: dashboards' small queries answer
    /// in a millisecond instead of waiting for a task slot [default: 4194304,
    /// i.e. 4 MiB; 0 sends every query over files to the cluster]. A session
    /// may change it with `SET sluice.frontend_max_bytes = N`.
    #[arg(long, env = "SLUICE_FRONTEND_MAX_BYTES", value_name = "BYTES")]
    pub frontend_max_bytes: Option<u64>,
    /// Where `CREATE TABLE` writes managed Parquet tables: a directory or an
    /// object-store URL (s3://bucket/prefix) [default: <data-dir>/warehouse].
    /// Sluice owns it: files no table lists are removed at start.
    #[arg(long, env = "SLUICE_WAREHOUSE", value_name = "URL")]
    pub warehouse: Option<String>,
    /// Where the catalog (schemas, tables, views) is kept: a directory or an
    /// object-store prefix (s3://bucket/sluice/catalog) [default:
    /// <data-dir>/catalog]. Frontends given the same catalog and warehouse
    /// share their tables; changes are committed with conditional writes.
    #[arg(long, env = "SLUICE_CATALOG", value_name = "URL")]
    pub catalog: Option<String>,
    /// Scheduled jobs: a TOML file of `[[job]]` entries (name, script,
    /// schedule, vars, retries, timeout, allow_overlap); see the README.
    #[arg(long, env = "SLUICE_JOBS", value_name = "FILE")]
    pub jobs: Option<PathBuf>,
    /// PEM certificate chain for TLS on the Postgres listener (with
    /// `--tls-key`); a file that cannot be read stops the start.
    #[arg(
        long,
        env = "SLUICE_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(
        long,
        env = "SLUICE_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Refuse clients that do not use TLS.
    #[arg(long, env = "SLUICE_TLS_REQUIRED")]
    pub tls_required: bool,
    /// Let in users whose password is stored as an md5 hash (`sluice user
    /// add --md5`), for clients without SCRAM. Off by default: md5 is weak.
    #[arg(long, env = "SLUICE_ALLOW_MD5")]
    pub allow_md5: bool,
    /// Once users are configured, locations that CREATE EXTERNAL TABLE, COPY
    /// and INSERT may use besides the data dir and the warehouse: a directory
    /// or object-store URL prefix (repeatable).
    #[arg(
        long = "allow-location",
        env = "SLUICE_ALLOW_LOCATIONS",
        value_name = "URL",
        value_delimiter = ','
    )]
    #[serde(alias = "allowed_locations")]
    pub allowed_locations: Vec<String>,
    /// Memory each task slot of the embedded executors may use; a query
    /// needing more in one task spills (sorts, aggregates) or fails with
    /// 53200, leaving other queries alone [default: 70% of RAM split across
    /// all slots]. Sizes like 512MiB or 2GB.
    #[arg(long, env = "SLUICE_QUERY_MEMORY", value_name = "SIZE")]
    pub query_memory: Option<Size>,
    /// Memory the embedded executors keep stage outputs in (shuffle data
    /// and results), beyond which they spill to the work dir; 0 writes every
    /// output to files [default: an eighth of RAM]. Sizes like 2GiB.
    #[arg(long, env = "SLUICE_SHUFFLE_MEMORY", value_name = "SIZE")]
    pub shuffle_memory: Option<Size>,
    /// Most client connections at once; more get 53300 [default: 100].
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Longest statement text accepted; longer ones get 54000 [default: 16MiB].
    #[arg(long, env = "SLUICE_MAX_QUERY_SIZE", value_name = "SIZE")]
    pub max_query_size: Option<Size>,
    /// HTTP endpoint for the web UI (`/`), `/metrics` (Prometheus), `/healthz`
    /// and `/readyz`, covering the embedded cluster too; `off` turns it off
    /// [default: 127.0.0.1:9433].
    #[arg(long, env = "SLUICE_HTTP", value_name = "HOST:PORT")]
    pub http: Option<String>,
    /// Default `statement_timeout` of every session (e.g. 30s, 5min; 0 for
    /// none) [default: 0].
    #[arg(long, env = "SLUICE_STATEMENT_TIMEOUT", value_name = "DURATION")]
    pub statement_timeout: Option<String>,
    /// Queries `sluice.queries` keeps, across restarts (in
    /// `<data-dir>/queries.jsonl`); older ones are dropped [default: 10000].
    #[arg(long, env = "SLUICE_QUERY_HISTORY", value_name = "N")]
    pub query_history: Option<usize>,
    /// TOML file shared by all roles; `serve` reads `[serve]` (listen, data-dir,
    /// executors, slots, scheduler, single-stage-max-bytes, warehouse, catalog,
    /// jobs, query-history, …),
    /// `[cluster]` and `[storage.*]`.
    #[arg(long, env = "SLUICE_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
}

/// Where `sluice serve` sends its queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterMode {
    /// A scheduler and executors inside this process.
    Embedded {
        /// Number of executors.
        executors: usize,
        /// Task slots per executor.
        slots: usize,
    },
    /// A scheduler in another process (`sluice scheduler`).
    Remote {
        /// Scheduler host.
        host: String,
        /// Scheduler port.
        port: u16,
    },
}

/// Resolved settings of `sluice serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Postgres-protocol listener address.
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Embedded cluster or remote scheduler.
    pub cluster: ClusterMode,
    /// Failure detection and result retention (embedded cluster).
    pub timings: ClusterTimings,
    /// Object storage options every session starts with.
    pub storage: StorageOptions,
    /// Sluice planner settings every session starts with.
    pub planner: SluiceOptions,
    /// Where managed tables are written: a URL, or an absolute directory.
    pub warehouse: String,
    /// Where the catalog is kept: a URL, or an absolute directory.
    pub catalog: String,
    /// Whether the catalog was placed explicitly (and may be shared with
    /// other frontends) rather than in the data directory.
    pub shared_catalog: bool,
    /// The scheduled jobs file.
    pub jobs: Option<PathBuf>,
    /// Who may log in; empty trusts every client (loopback listeners only).
    pub users: Users,
    /// TLS on the Postgres listener.
    pub tls: Option<TlsFiles>,
    /// Whether clients must use TLS.
    pub tls_required: bool,
    /// Whether users with md5 passwords may log in.
    pub allow_md5: bool,
    /// With users, the locations besides the data dir and the warehouse that
    /// statements may read and write.
    pub allowed_locations: Vec<String>,
    /// Memory each task slot may use (embedded executors).
    pub query_memory: Option<u64>,
    /// Memory for the embedded executors' stage outputs (0: files).
    pub shuffle_memory: u64,
    /// Most client connections at once.
    pub max_connections: usize,
    /// Longest statement text accepted, in bytes.
    pub max_query_size: usize,
    /// Every session's initial `statement_timeout` (PostgreSQL's syntax).
    pub statement_timeout: Option<String>,
    /// Ended queries `sluice.queries` keeps across restarts.
    pub query_history: usize,
    /// The HTTP endpoint (metrics, health), if on.
    pub http: Option<SocketAddr>,
    /// Mutual TLS with a remote scheduler and its executors.
    pub cluster_tls: Option<ClusterTls>,
}

/// Default of `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 100;
/// Default of `--query-history`.
pub const DEFAULT_QUERY_HISTORY: usize = 10_000;
/// Default of `--max-query-size`.
pub const DEFAULT_MAX_QUERY_SIZE: u64 = 16 << 20;

/// The certificate chain and key of the Postgres listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl ServeArgs {
    /// Puts flags and environment (already in `self`) over the config file
    /// and the defaults, and validates the result.
    pub fn resolve(self) -> Result<ServeConfig> {
        let file = FileConfig::load(self.config.as_deref())?;
        let cluster_tls = self.cluster_tls.clone().resolve(&file)?;
        let settings = layered(&self, &file.serve)?;
        let listen = parse_socket_addr(
            "listen",
            settings.listen.as_deref().unwrap_or(DEFAULT_LISTEN),
        )?;
        let cluster = match settings.scheduler {
            Some(scheduler) => {
                if settings.executors.is_some() || settings.slots.is_some() {
                    return Err(ServerError::Config(
                        "--executors and --slots shape an embedded cluster; with --scheduler \
                         the executors are separate `sluice executor` processes"
                            .into(),
                    ));
                }
                let (host, port) = parse_host_port("scheduler", &scheduler)?;
                ClusterMode::Remote { host, port }
            }
            None => {
                let executors = settings.executors.unwrap_or(DEFAULT_EXECUTORS);
                if executors == 0 {
                    return Err(ServerError::Config("executors must be at least 1".into()));
                }
                let slots = settings
                    .slots
                    .unwrap_or_else(|| (cores() / executors).max(1));
                if slots == 0 {
                    return Err(ServerError::Config("slots must be at least 1".into()));
                }
                ClusterMode::Embedded { executors, slots }
            }
        };
        let data_dir = absolute(
            settings
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
        )?;
        let location = |given: Option<String>, default: &str| -> Result<String> {
            Ok(match given {
                Some(url) if url.contains("://") => url,
                Some(dir) => absolute(PathBuf::from(dir))?.display().to_string(),
                None => data_dir.join(default).display().to_string(),
            })
        };
        let warehouse = location(settings.warehouse, "warehouse")?;
        let shared_catalog = settings.catalog.is_some();
        let catalog = location(settings.catalog, "catalog")?;
        let jobs = settings.jobs.map(absolute).transpose()?;
        let users = crate::users_file::users(&file.user)?;
        let tls = match (settings.tls_cert, settings.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: absolute(cert)?,
                key: absolute(key)?,
            }),
            (None, None) => None,
            _ => {
                return Err(ServerError::Config(
                    "TLS needs both a certificate (tls-cert) and its key (tls-key)".into(),
                ))
            }
        };
        if settings.tls_required && tls.is_none() {
            return Err(ServerError::Config(
                "tls-required needs a certificate and key (tls-cert, tls-key)".into(),
            ));
        }
        let query_memory = settings.query_memory.map(|size| size.0);
        let max_connections = settings.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 || query_memory == Some(0) {
            return Err(ServerError::Config(
                "max-connections and query-memory must be above 0".into(),
            ));
        }
        if cluster_tls.is_some() && matches!(cluster, ClusterMode::Embedded { .. }) {
            return Err(ServerError::Config(
                "cluster TLS secures a frontend's traffic to a remote scheduler (--scheduler); \
                 the embedded cluster talks over loopback inside this process"
                    .into(),
            ));
        }
        Ok(ServeConfig {
            http: http_address(settings.http, DEFAULT_SERVE_HTTP)?,
            allow_md5: settings.allow_md5,
            cluster_tls,
            query_memory,
            shuffle_memory: settings
                .shuffle_memory
                .map_or_else(ShuffleMemory::default_budget, |size| size.0),
            max_connections,
            max_query_size: usize::try_from(
                settings
                    .max_query_size
                    .map_or(DEFAULT_MAX_QUERY_SIZE, |size| size.0),
            )
            .unwrap_or(usize::MAX),
            statement_timeout: settings.statement_timeout,
            query_history: settings.query_history.unwrap_or(DEFAULT_QUERY_HISTORY),
            users,
            tls,
            tls_required: settings.tls_required,
            allowed_locations: settings.allowed_locations,
            listen,
            data_dir,
            warehouse,
            catalog,
            shared_catalog,
            jobs,
            cluster,
            timings: file.timings()?,
            storage: file.storage()?,
            planner: SluiceOptions::new(ServerPlannerSettings {
                single_stage_max_bytes: settings
                    .single_stage_max_bytes
                    .unwrap_or(DEFAULT_SINGLE_STAGE_MAX_BYTES),
                frontend_max_bytes: settings
                    .frontend_max_bytes
                    .unwrap_or(DEFAULT_FRONTEND_MAX_BYTES),
            }),
        })
    }
}
