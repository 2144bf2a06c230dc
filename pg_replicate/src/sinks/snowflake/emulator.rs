//! [`LocalSnowflake`]: the `fakesnow` emulator (PyPI) in server mode on a
//! free port of 127.0.0.1, for tests, benchmarks and trying the client
//! without an account. `scripts/emulators/snowflake` in the repository
//! installs it and prints the environment's path. It checks no
//! credentials.

use std::path::Path;
use std::process::Command;

use crate::sinks::local_server::{free_port, venv_binary, LocalServer};
use crate::Result;

/// A running `fakesnow` server; stopped when dropped.
pub struct LocalSnowflake {
    server: LocalServer,
    url: String,
}

impl LocalSnowflake {
    /// Starts the emulator of the virtual environment `venv` and waits
    /// until its port answers.
    pub fn start(venv: &Path) -> Result<Self> {
        let binary = venv_binary(venv, "fakesnow", "scripts/emulators/snowflake")?;
        let port = free_port()?;
        let dir = LocalServer::scratch_dir("snowflake", port)?;
        let mut command = Command::new(&binary);
        command
            .args(["-s", "--host", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .current_dir(&dir)
            // fakesnow keeps its stages under the temporary directory:
            // the scratch directory, removed with the server.
            .env("TMPDIR", &dir);
        let server = LocalServer::start("fakesnow", command, dir, &[port])?;
        Ok(Self {
            server,
            url: format!("http://127.0.0.1:{port}"),
        })
    }

    /// The base URL, for
    /// [`SnowflakeConfig::with_base_url`](super::SnowflakeConfig::with_base_url).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's log file.
    pub fn log_file(&self) -> std::path::PathBuf {
        self.server.log_file()
    }
}
