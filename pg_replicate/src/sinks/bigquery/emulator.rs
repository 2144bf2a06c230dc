//! [`LocalBigQuery`]: a `local-bigquery` emulator (PyPI) started on free
//! ports of 127.0.0.1 with a scratch data directory, for tests, benchmarks
//! and trying the sink without a Google account.
//!
//! The emulator is installed into a Python virtual environment first
//! (`scripts/emulators/bigquery` in the repository does it and prints the
//! environment's path). Its server must run with the `HOME` its DuckDB
//! extensions were installed in, which the script puts in `<venv>/home`.
//! The process is a [`LocalServer`]: a watchdog stops it when the owning
//! process ends.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::sinks::local_server::{free_port, venv_binary, LocalServer};
use crate::Result;

/// A running `local-bigquery` server; stopped when dropped.
pub struct LocalBigQuery {
    server: LocalServer,
    rest: String,
    grpc: String,
    project: String,
}

impl LocalBigQuery {
    /// Starts the emulator of the virtual environment `venv` for project
    /// `project`, and waits until both its ports answer.
    pub fn start(venv: &Path, project: &str) -> Result<Self> {
        let binary = venv_binary(venv, "local-bigquery", "scripts/emulators/bigquery")?;
        let (port, grpc_port) = (free_port()?, free_port()?);
        let dir = LocalServer::scratch_dir("bigquery", port)?;
        let data = dir.join("data");
        std::fs::create_dir_all(&data).map_err(|e| {
            crate::Error::with_source(
                crate::ErrorKind::Io,
                "cannot create the emulator's data directory",
                e,
            )
        })?;
        let mut command = Command::new(&binary);
        command
            .args(["serve", "--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .arg("--grpc-port")
            .arg(grpc_port.to_string())
            .args(["--project", project, "--data-dir"])
            .arg(&data)
            .env("HOME", venv.join("home"));
        let server = LocalServer::start("local-bigquery", command, dir, &[port, grpc_port])?;
        Ok(Self {
            server,
            rest: format!("http://127.0.0.1:{port}"),
            grpc: format!("http://127.0.0.1:{grpc_port}"),
            project: project.to_owned(),
        })
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
        self.server.log_file()
    }
}
