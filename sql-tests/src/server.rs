//! A `sluice serve` child process on a free loopback port.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use crate::process::ChildProcess;
use crate::SmallQueries;

/// The environment variable of `sluice serve --frontend-max-bytes`.
const FRONTEND_MAX_BYTES_ENV: &str = "SLUICE_FRONTEND_MAX_BYTES";

/// How long a server may take to exit after SIGTERM.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);

/// A running `sluice serve` process; killed when dropped.
///
/// The tests were written for the cluster path, and their tables are small:
/// servers they start send every query over files to the cluster
/// (`SLUICE_FRONTEND_MAX_BYTES=0`, which a `--frontend-max-bytes` argument
/// overrides) unless started with [`SmallQueries::Frontend`].
pub struct SluiceServer {
    process: Option<ChildProcess>,
    port: u16,
    http_port: Option<u16>,
    data_dir: PathBuf,
    _owned_data_dir: Option<tempfile::TempDir>,
}

impl SluiceServer {
    /// Starts `binary serve` with `executors` executors on 127.0.0.1 (port
    /// chosen by the OS) and a fresh data directory, and waits until it
    /// prints that it is ready.
    pub fn start(binary: &Path, executors: usize) -> Result<Self, String> {
        Self::start_with_args(binary, &["--executors", &executors.to_string()])
    }

    /// Like [`Self::start`], with small queries running where `small` says
    /// (in the frontend: the server's own default).
    pub fn start_with_small_queries(
        binary: &Path,
        executors: usize,
        small: SmallQueries,
    ) -> Result<Self, String> {
        let owned = tempfile::tempdir().map_err(|e| format!("creating a data dir: {e}"))?;
        let executors = executors.to_string();
        let mut server =
            Self::start_placing(binary, owned.path(), &["--executors", &executors], small)?;
        server._owned_data_dir = Some(owned);
        Ok(server)
    }

    /// Starts `binary serve` with extra arguments.
    pub fn start_with_args(binary: &Path, args: &[&str]) -> Result<Self, String> {
        let owned = tempfile::tempdir().map_err(|e| format!("creating a data dir: {e}"))?;
        let mut server = Self::start_in(binary, owned.path(), args)?;
        server._owned_data_dir = Some(owned);
        Ok(server)
    }

    /// Starts `binary serve` with extra arguments and the data directory
    /// `data_dir`, which the caller owns (it outlives the server).
    pub fn start_in(binary: &Path, data_dir: &Path, args: &[&str]) -> Result<Self, String> {
        Self::start_placing(binary, data_dir, args, SmallQueries::Cluster)
    }

    fn start_placing(
        binary: &Path,
        data_dir: &Path,
        args: &[&str],
        small: SmallQueries,
    ) -> Result<Self, String> {
        let mut command = Command::new(binary);
        match small {
            SmallQueries::Cluster => command.env(FRONTEND_MAX_BYTES_ENV, "0"),
            SmallQueries::Frontend => command.env_remove(FRONTEND_MAX_BYTES_ENV),
        };
        command
            .arg("serve")
            .args([
                "--listen",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .args(args);
        let process = ChildProcess::start(command, "sluice ready")?;
        let port = ready_port(&process.ready_line)
            .ok_or_else(|| format!("no port in {:?}", process.ready_line))?;
        let http_port = http_port(&process.ready_line);
        Ok(Self {
            process: Some(process),
            port,
            http_port,
            data_dir: data_dir.to_path_buf(),
            _owned_data_dir: None,
        })
    }

    /// The port the Postgres listener is bound to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of the HTTP endpoint (metrics, health), unless the
    /// arguments turned it off.
    pub fn http_port(&self) -> Option<u16> {
        self.http_port
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.process.as_ref().map_or(0, |process| process.pid())
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn stop(mut self) -> Result<ExitStatus, String> {
        let process = self.process.take().ok_or("already stopped")?;
        process.terminate(SHUTDOWN_TIMEOUT)
    }
}

/// The HTTP port in a ready line (`… web UI at http://HOST:PORT/, …`).
fn http_port(line: &str) -> Option<u16> {
    let address = line.split("http://").nth(1)?.split('/').next()?;
    address.rsplit_once(':')?.1.parse().ok()
}

/// The port in a ready line (`… psql -h 127.0.0.1 -p PORT …`).
fn ready_port(line: &str) -> Option<u16> {
    if !line.starts_with("sluice ready") {
        return None;
    }
    let mut words = line.split_whitespace();
    words.find(|word| *word == "-p")?;
    words.next()?.parse().ok()
}
