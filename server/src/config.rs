//! `sluice serve` settings: command-line flags, `SLUICE_*` environment
//! variables and an optional TOML file, in that order of precedence.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Result, ServerError};

/// Default Postgres listener address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5433";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./sluice-data";
/// Default number of embedded executors.
pub const DEFAULT_EXECUTORS: usize = 2;

/// Flags of `sluice serve`. Each may also come from the environment or the
/// config file; unset ones take the documented default.
#[derive(Debug, Default, clap::Args)]
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
    /// Task slots per executor [default: cores / executors, at least 1].
    #[arg(long, env = "SLUICE_SLOTS", value_name = "N")]
    pub slots: Option<usize>,
    /// TOML file with any of the settings above (keys: listen, data-dir,
    /// executors, slots).
    #[arg(long, env = "SLUICE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The settings file format.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    executors: Option<usize>,
    slots: Option<usize>,
}

/// Resolved settings of `sluice serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Postgres-protocol listener address.
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Number of embedded executors.
    pub executors: usize,
    /// Task slots per executor.
    pub slots: usize,
}

impl ServeArgs {
    /// Merges flags and environment (already in `self`) over the config file
    /// and the defaults, and validates the result.
    pub fn resolve(self) -> Result<ServeConfig> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let listen = self
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen = parse_listen(&listen)?;
        let executors = self
            .executors
            .or(file.executors)
            .unwrap_or(DEFAULT_EXECUTORS);
        if executors == 0 {
            return Err(ServerError::Config("executors must be at least 1".into()));
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let slots = self
            .slots
            .or(file.slots)
            .unwrap_or_else(|| (cores / executors).max(1));
        if slots == 0 {
            return Err(ServerError::Config("slots must be at least 1".into()));
        }
        Ok(ServeConfig {
            listen,
            data_dir: self
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            executors,
            slots,
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ServerError::io(format!("reading config file {}", path.display()), e))?;
    toml::from_str(&text).map_err(|e| ServerError::Config(format!("{}: {e}", path.display())))
}

fn parse_listen(listen: &str) -> Result<SocketAddr> {
    listen
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            ServerError::Config(format!("--listen {listen:?} is not a HOST:PORT address"))
        })
}
