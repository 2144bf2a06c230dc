//! [`LocalBigQuery`]: a `local-bigquery` emulator (PyPI) started on free
//! ports of 127.0.0.1 with a scratch data directory, for tests, benchmarks
//! and trying the sink without a Google account.
//!
//! The emulator is installed into a Python virtual environment first
//! (`scripts/emulators/bigquery` in the repository does it and prints the
//! environment's path). Its server must run with the `HOME` its DuckDB
//! extensions were installed in, which the script puts in `<venv>/home`.
//!
//! An emulator kept in a `static` is never dropped: like the throwaway
//! Postgres cluster, a tiny watchdog process (`sh`) stops the server and
//! removes its data once the owning process ends, however it ends.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, ErrorKind, Result};

/// How long the server may take to open its ports.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The watchdog: ignores terminal signals, waits for its stdin to close,
/// then stops the server (`$1`) and removes its directory (`$2`).
const WATCHDOG_SCRIPT: &str = r#"trap '' HUP INT QUIT TERM
cat >/dev/null
kill "$1" 2>/dev/null
sleep 2
kill -9 "$1" 2>/dev/null
rm -rf -- "$2""#;

/// A running `local-bigquery` server; stopped when dropped.
pub struct LocalBigQuery {
    server: Child,
    watchdog: Option<Child>,
    dir: PathBuf,
    rest: String,
    grpc: String,
    project: String,
}

impl LocalBigQuery {
    /// Starts the emulator of the virtual environment `venv` for project
    /// `project`, and waits until both its ports answer.
    pub fn start(venv: &Path, project: &str) -> Result<Self> {
        let binary = venv.join("bin/local-bigquery");
        if !binary.exists() {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "{} does not exist; install the emulator first (scripts/emulators/bigquery prints the \
                     environment to pass)",
                    binary.display()
                ),
            ));
        }
        let (port, grpc_port) = (free_port()?, free_port()?);
        let dir = std::env::temp_dir().join(format!("pgr-bigquery-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let data = dir.join("data");
        std::fs::create_dir_all(&data)
            .map_err(|e| io_error("create the emulator's directory", e))?;
        let log_path = dir.join("server.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| io_error("create the emulator's log", e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| io_error("open the emulator's log", e))?;
        let server = Command::new(&binary)
            .args(["serve", "--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .arg("--grpc-port")
            .arg(grpc_port.to_string())
            .args(["--project", project, "--data-dir"])
            .arg(&data)
            .env("HOME", venv.join("home"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| io_error(&format!("start {}", binary.display()), e))?;
        let mut emulator = Self {
            server,
            watchdog: None,
            dir,
            rest: format!("http://127.0.0.1:{port}"),
            grpc: format!("http://127.0.0.1:{grpc_port}"),
            project: project.to_owned(),
        };
        emulator.watchdog = Command::new("sh")
            .args(["-c", WATCHDOG_SCRIPT, "watchdog"])
            .arg(emulator.server.id().to_string())
            .arg(&emulator.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err()
            || TcpStream::connect(("127.0.0.1", grpc_port)).is_err()
        {
            let exited = emulator.server.try_wait().ok().flatten();
            if exited.is_some() || started.elapsed() > START_TIMEOUT {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(Error::new(
                    ErrorKind::Connection,
                    format!(
                        "local-bigquery {} within {} s; its log ends:\n{}",
                        match exited {
                            Some(status) => format!("exited ({status})"),
                            None => "did not open its ports".to_owned(),
                        },
                        START_TIMEOUT.as_secs(),
                        tail.join("\n")
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(emulator)
    }

    /// Base URL of the REST API (`http://127.0.0.1:<port>`), for
    /// [`BigQuerySinkConfig::with_endpoints`](super::BigQuerySinkConfig::with_endpoints).
    pub fn rest_endpoint(&self) -> &str {
        &self.rest
    }

    /// URL of the Storage Write API (plaintext gRPC).
    pub fn storage_endpoint(&self) -> &str {
        &self.grpc
    }

    /// The project the emulator serves.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// The server's log file.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("server.log")
    }
}

impl Drop for LocalBigQuery {
    fn drop(&mut self) {
        // The watchdog goes first, so it never signals a process id that
        // the stopped server has left to another process.
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|e| io_error("find a free port on 127.0.0.1", e))
}

fn io_error(what: &str, error: std::io::Error) -> Error {
    Error::with_source(ErrorKind::Io, format!("cannot {what}"), error)
}
