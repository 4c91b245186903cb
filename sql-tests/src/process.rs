//! Child processes of the tests: `sluice scheduler`, `sluice executor`, an S3
//! server. Each is killed when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long a process may take to print its ready line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A child process, killed (SIGKILL) when dropped.
pub struct ChildProcess {
    child: Child,
    /// The line the process printed when it was ready.
    pub ready_line: String,
}

impl ChildProcess {
    /// Starts `command` and waits for a stdout line starting with `ready`.
    pub fn start(mut command: Command, ready: &str) -> Result<Self, String> {
        let mut child = command
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting {command:?}: {e}"))?;
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
        let mut process = Self {
            child,
            ready_line: String::new(),
        };
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let line = lines_rx
                .recv_timeout(remaining)
                .map_err(|_| format!("{command:?} did not print {ready:?} in time"))?;
            if line.starts_with(ready) {
                process.ready_line = line;
                return Ok(process);
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit (then
    /// kills it and reports the timeout).
    pub fn terminate(mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .map_err(|e| format!("sending SIGTERM: {e}"))?;
        if !status.success() {
            return Err("kill -TERM failed".into());
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the process did not exit within {timeout:?} of SIGTERM"
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process with SIGKILL, as a crash or `kill -9` would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sluice scheduler` on 127.0.0.1:`port` (0 picks a free one).
pub fn start_scheduler(
    binary: &Path,
    port: u16,
    config: Option<&Path>,
) -> Result<(ChildProcess, u16), String> {
    let mut command = Command::new(binary);
    command.args(["scheduler", "--listen", &format!("127.0.0.1:{port}")]);
    command.args(["--http", "127.0.0.1:0"]);
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let process = ChildProcess::start(command, "sluice scheduler ready")?;
    let port = process
        .ready_line
        .split_whitespace()
        .nth(4)
        .and_then(|address| address.rsplit_once(':'))
        .and_then(|(_, port)| port.parse().ok())
        .ok_or_else(|| format!("no port in {:?}", process.ready_line))?;
    Ok((process, port))
}

/// `sluice executor` with `slots` slots registering with the scheduler on
/// 127.0.0.1:`scheduler_port`, working in `work_dir`.
pub fn start_executor(
    binary: &Path,
    scheduler_port: u16,
    slots: usize,
    work_dir: &Path,
    config: Option<&Path>,
) -> Result<ChildProcess, String> {
    start_executor_with_http(
        binary,
        scheduler_port,
        slots,
        work_dir,
        config,
        "127.0.0.1:0",
    )
}

/// [`start_executor`] with its HTTP endpoint (`/metrics`) on `http`.
pub fn start_executor_with_http(
    binary: &Path,
    scheduler_port: u16,
    slots: usize,
    work_dir: &Path,
    config: Option<&Path>,
    http: &str,
) -> Result<ChildProcess, String> {
    let mut command = Command::new(binary);
    command
        .args([
            "executor",
            "--scheduler",
            &format!("127.0.0.1:{scheduler_port}"),
        ])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--http",
            http,
            "--slots",
            &slots.to_string(),
            "--work-dir",
        ])
        .arg(work_dir);
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    ChildProcess::start(command, "sluice executor")
}

/// An S3-compatible server (moto) on a free 127.0.0.1 port, holding buckets in
/// memory.
pub struct S3Server {
    _process: ChildProcess,
    /// Its endpoint, `http://127.0.0.1:PORT`.
    pub endpoint: String,
    port: u16,
}

impl S3Server {
    /// Starts `moto_server` (from `$SLUICE_MOTO_SERVER`, or beside
    /// `$SLUICE_PYTHON` in its venv, or on PATH).
    pub fn start() -> Result<Self, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| format!("finding a free port: {e}"))?;
        let mut command = Command::new(moto_server());
        command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        // moto prints its banner on stderr; wait for the port instead.
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "starting {:?} (install moto[server]; .ci/run does): {e}",
                    moto_server()
                )
            })?;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err("moto_server did not listen in time".into());
            }
            thread::sleep(Duration::from_millis(100));
        }
        let process = ChildProcess {
            child,
            ready_line: String::new(),
        };
        Ok(Self {
            _process: process,
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
        })
    }

    /// Creates bucket `name` (moto accepts unsigned requests).
    pub fn create_bucket(&self, name: &str) -> Result<(), String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        write!(
            stream,
            "PUT /{name} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .map_err(|e| e.to_string())?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .map_err(|e| e.to_string())?;
        if response.starts_with("HTTP/1.1 200") {
            Ok(())
        } else {
            Err(format!(
                "creating bucket {name}: {}",
                response.lines().next().unwrap_or("")
            ))
        }
    }

    /// The `[storage.s3]` section of a Sluice config file pointing at this
    /// server.
    pub fn storage_section(&self) -> String {
        format!(
            "[storage.s3]\nendpoint = \"{}\"\nallow-http = true\nregion = \"us-east-1\"\n\
             access-key-id = \"sluice-test\"\nsecret-access-key = \"sluice-test-secret\"\n",
            self.endpoint
        )
    }

    /// Environment variables that point object_store at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "sluice-test".into()),
            ("AWS_SECRET_ACCESS_KEY", "sluice-test-secret".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }
}

fn moto_server() -> PathBuf {
    if let Some(path) = std::env::var_os("SLUICE_MOTO_SERVER") {
        return PathBuf::from(path);
    }
    if let Some(python) = std::env::var_os("SLUICE_PYTHON") {
        let beside = Path::new(&python).with_file_name("moto_server");
        if beside.exists() {
            return beside;
        }
    }
    PathBuf::from("moto_server")
}
