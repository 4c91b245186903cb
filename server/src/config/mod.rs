//! Settings of every `sluice` role: command-line flags, `SLUICE_*` environment
//! variables and one TOML file that all roles of a cluster can share, in that
//! order of precedence. Each role reads its own section of the file
//! (`[serve]`, `[scheduler]`, `[executor]`) plus the shared ones (`[cluster]`
//! timings, `[storage.<service>]` object storage options).

mod cluster_tls;
mod layered;
#[cfg(test)]
mod readme_table;
mod roles;
mod serve;

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sluice_engine::{StorageOptions, StorageService};
use sluice_scheduler::ClusterTimings;

use crate::error::{Result, ServerError};

pub use cluster_tls::ClusterTlsArgs;
pub use layered::Size;
pub use roles::{ExecutorArgs, ExecutorConfig, SchedulerArgs, SchedulerConfig};
pub use serve::{ClusterMode, ServeArgs, ServeConfig, TlsFiles, DEFAULT_EXECUTORS};

/// The config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    #[serde(default)]
    serve: ServeArgs,
    #[serde(default)]
    scheduler: SchedulerArgs,
    #[serde(default)]
    executor: ExecutorArgs,
    #[serde(default)]
    cluster: ClusterSection,
    /// `[storage.s3]`, `[storage.gcs]`, `[storage.azure]`: object_store options.
    #[serde(default)]
    storage: BTreeMap<String, BTreeMap<String, toml::Value>>,
    /// `[[user]]`: who may log in to `sluice serve`.
    #[serde(default)]
    user: Vec<crate::users_file::UserEntry>,
}

/// `[cluster]`: failure detection, result retention and TLS between the
/// roles, for every role.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ClusterSection {
    heartbeat_interval_seconds: Option<u64>,
    executor_timeout_seconds: Option<u64>,
    expiry_check_interval_seconds: Option<u64>,
    result_retention_seconds: Option<u64>,
    job_state_retention_seconds: Option<u64>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

impl FileConfig {
    /// Reads `path`, or the empty configuration when there is none.
    fn load(path: Option<&Path>) -> Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| ServerError::io(format!("reading config file {}", path.display()), e))?;
        toml::from_str(&text).map_err(|e| ServerError::Config(format!("{}: {e}", path.display())))
    }

    /// The cluster timings: the file's `[cluster]` values over the defaults.
    fn timings(&self) -> Result<ClusterTimings> {
        let defaults = ClusterTimings::default();
        let seconds = |value: Option<u64>, default: Duration| {
            value.map(Duration::from_secs).unwrap_or(default)
        };
        let section = &self.cluster;
        let timings = ClusterTimings {
            heartbeat_interval: seconds(
                section.heartbeat_interval_seconds,
                defaults.heartbeat_interval,
            ),
            executor_timeout: seconds(section.executor_timeout_seconds, defaults.executor_timeout),
            expiry_check_interval: seconds(
                section.expiry_check_interval_seconds,
                defaults.expiry_check_interval,
            ),
            result_retention: seconds(section.result_retention_seconds, defaults.result_retention),
            job_state_retention: seconds(
                section.job_state_retention_seconds,
                defaults.job_state_retention,
            ),
        };
        timings
            .validate()
            .map_err(|e| ServerError::Config(format!("[cluster] {e}")))?;
        Ok(timings)
    }

    /// Object storage options: the file's `[storage.*]` sections, then the
    /// standard environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`) over them.
    fn storage(&self) -> Result<StorageOptions> {
        let mut options = StorageOptions::default();
        for (service_name, values) in &self.storage {
            let service = StorageService::from_name(service_name).ok_or_else(|| {
                ServerError::Config(format!(
                    "unknown section [storage.{service_name}] (expected [storage.s3], \
                     [storage.gcs] or [storage.azure])"
                ))
            })?;
            for (key, value) in values {
                let value = match value {
                    toml::Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                options
                    .set_option(service, key, &value)
                    .map_err(|e| ServerError::Config(format!("[storage.{service_name}] {e}")))?;
            }
        }
        options.merge_env();
        Ok(options)
    }
}

/// Object storage options for a client command: `[storage.*]` of the config
/// file at `path` (if any), then the standard environment variables.
pub fn storage_options(path: Option<&Path>) -> Result<StorageOptions> {
    FileConfig::load(path)?.storage()
}

/// Parses a `HOST:PORT` listen address (`--what` names the flag in errors).
fn parse_socket_addr(what: &str, text: &str) -> Result<SocketAddr> {
    text.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| ServerError::Config(format!("--{what} {text:?} is not a HOST:PORT address")))
}

/// Default HTTP endpoint (`--http`) of `sluice serve`.
pub const DEFAULT_SERVE_HTTP: &str = "127.0.0.1:9433";
/// Default HTTP endpoint of `sluice scheduler`.
pub const DEFAULT_SCHEDULER_HTTP: &str = "127.0.0.1:9050";

/// A role's HTTP endpoint: the setting, else `default`; `off` turns it off.
fn http_address(setting: Option<String>, default: &str) -> Result<Option<SocketAddr>> {
    let text = setting.unwrap_or_else(|| default.to_string());
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    parse_socket_addr("http", &text).map(Some)
}

/// Splits a `HOST:PORT` address of another role (the host is not resolved).
fn parse_host_port(what: &str, text: &str) -> Result<(String, u16)> {
    let invalid = || ServerError::Config(format!("--{what} {text:?} is not a HOST:PORT address"));
    let text = text.trim();
    let text = text.strip_prefix("http://").unwrap_or(text);
    let (host, port) = text.rsplit_once(':').ok_or_else(invalid)?;
    let port = port.parse().map_err(|_| invalid())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(invalid());
    }
    Ok((host.to_string(), port))
}

/// The name other hosts should use for a role listening on `address`: the
/// address itself, or this machine's host name when it listens on all
/// interfaces.
fn advertised_host(address: &SocketAddr) -> String {
    if !address.ip().is_unspecified() {
        return address.ip().to_string();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The number of cores of this machine.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A data or work directory, made absolute.
fn absolute(path: PathBuf) -> Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path);
    }
    Ok(std::env::current_dir()
        .map_err(|e| ServerError::io("reading the current directory", e))?
        .join(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_addresses() {
        assert_eq!(
            parse_host_port("scheduler", "sched:50050").unwrap(),
            ("sched".into(), 50050)
        );
        assert_eq!(
            parse_host_port("scheduler", "http://10.0.0.1:1").unwrap(),
            ("10.0.0.1".into(), 1)
        );
        assert_eq!(
            parse_host_port("scheduler", "[::1]:7").unwrap(),
            ("::1".into(), 7)
        );
        assert!(parse_host_port("scheduler", "sched").is_err());
        assert!(parse_host_port("scheduler", ":80").is_err());
    }

    /// The compose cluster's shared file means what docker/ says it means to
    /// every role.
    #[test]
    fn docker_config_resolves_for_every_role() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/sluice.toml");
        let serve = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(
            serve.cluster,
            ClusterMode::Remote {
                host: "scheduler".into(),
                port: 50050
            }
        );
        assert_eq!(serve.listen.port(), 5433);
        assert_eq!(
            serve
                .storage
                .get(StorageService::S3, "virtual_hosted_style_request"),
            Some("false")
        );
        let scheduler = SchedulerArgs {
            config: Some(path.clone()),
            ..SchedulerArgs::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(scheduler.listen.port(), 50050);
        assert_eq!(scheduler.external_host, "scheduler");
        let executor = ExecutorArgs {
            config: Some(path),
            ..ExecutorArgs::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(executor.scheduler, ("scheduler".to_string(), 50050));
        assert_eq!((executor.flight_port, executor.grpc_port), (50051, 50052));
        assert_eq!(executor.timings.executor_timeout, Duration::from_secs(6));
    }

    #[test]
    fn storage_sections_and_timings_are_validated() {
        let file: FileConfig = toml::from_str(
            "[storage.s3]\nendpoint = \"http://127.0.0.1:9000\"\nallow-http = true\n\
             [cluster]\nexecutor-timeout-seconds = 4\n",
        )
        .unwrap();
        let storage = file.storage().unwrap();
        assert_eq!(storage.get(StorageService::S3, "allow_http"), Some("true"));
        assert_eq!(
            file.timings().unwrap().executor_timeout,
            Duration::from_secs(4)
        );

        let file: FileConfig = toml::from_str("[storage.ftp]\nhost = \"x\"\n").unwrap();
        assert!(file.storage().is_err());
        let file: FileConfig =
            toml::from_str("[cluster]\nheartbeat-interval-seconds = 9\n").unwrap();
        assert!(file.timings().is_err());
    }
}
