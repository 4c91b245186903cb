//! A `sluice serve` child process on a free loopback port.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long a server may take to print its ready line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);

/// A running `sluice serve` process; killed when dropped.
pub struct SluiceServer {
    child: Option<Child>,
    port: u16,
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
        let mut child = Command::new(binary)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            // Keep test output readable: warnings only, unless the caller asked.
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (lines_tx, lines_rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut server = Self {
            child: Some(child),
            port: 0,
            data_dir: data_dir.to_path_buf(),
            _owned_data_dir: None,
        };
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let line = lines_rx
                .recv_timeout(remaining)
                .map_err(|_| "sluice serve did not print a ready line in time".to_string())?;
            if let Some(port) = ready_port(&line) {
                server.port = port;
                return Ok(server);
            }
        }
    }

    /// The port the Postgres listener is bound to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn stop(mut self) -> Result<ExitStatus, String> {
        let mut child = self.child.take().ok_or("already stopped")?;
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .map_err(|e| format!("sending SIGTERM: {e}"))?;
        if !status.success() {
            return Err("kill -TERM failed".into());
        }
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("sluice serve did not exit within 15 s of SIGTERM".into());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SluiceServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
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
