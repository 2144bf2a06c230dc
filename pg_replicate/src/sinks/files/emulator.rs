//! [`LocalS3`]: the `moto` S3 server on 127.0.0.1, for tests and trying the
//! files sink's object store support without a cloud account.

use std::path::Path;
use std::process::Command;

use crate::sinks::local_server::{free_port, venv_binary, LocalServer};
use crate::Result;

/// A running `moto_server` (installed by `scripts/emulators/s3`); stopped,
/// with everything it stored, when dropped. It keeps objects in memory and
/// accepts any credentials.
pub struct LocalS3 {
    server: LocalServer,
    url: String,
}

impl LocalS3 {
    /// Starts the server of the virtual environment `venv` and waits until
    /// its port answers.
    pub fn start(venv: &Path) -> Result<Self> {
        let binary = venv_binary(venv, "moto_server", "scripts/emulators/s3")?;
        let port = free_port()?;
        let dir = LocalServer::scratch_dir("s3", port)?;
        let mut command = Command::new(&binary);
        command
            .args(["-H", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .current_dir(&dir);
        let server = LocalServer::start("moto_server", command, dir, &[port])?;
        Ok(Self {
            server,
            url: format!("http://127.0.0.1:{port}"),
        })
    }

    /// The endpoint, for [`S3Settings::endpoint`](super::S3Settings::endpoint).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's log file.
    pub fn log_file(&self) -> std::path::PathBuf {
        self.server.log_file()
    }
}
