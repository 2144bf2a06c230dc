//! A warehouse emulator process for tests, benchmarks and trying a sink
//! without an account: started on free ports of 127.0.0.1 with a scratch
//! directory, and stopped when dropped.
//!
//! A server kept in a `static` is never dropped: like the throwaway
//! Postgres cluster, a tiny watchdog process (`sh`) stops the server and
//! removes its directory once the owning process ends, however it ends.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, ErrorKind, Result};

/// How long a server may take to open its ports.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The watchdog: ignores terminal signals, waits for its stdin to close,
/// then stops the server (`$1`) and removes its directory (`$2`).
const WATCHDOG_SCRIPT: &str = r#"trap '' HUP INT QUIT TERM
cat >/dev/null
kill "$1" 2>/dev/null
sleep 2
kill -9 "$1" 2>/dev/null
rm -rf -- "$2""#;

/// A running emulator process; stopped, and its directory removed, when
/// dropped.
pub(crate) struct LocalServer {
    server: Child,
    watchdog: Option<Child>,
    dir: PathBuf,
}

impl LocalServer {
    /// A fresh scratch directory for a server `name` on `port`.
    pub(crate) fn scratch_dir(name: &str, port: u16) -> Result<PathBuf> {
        let dir = std::env::temp_dir().join(format!("pgr-{name}-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| io_error(&format!("create the {name} emulator's directory"), e))?;
        Ok(dir)
    }

    /// Runs `command` (its output going to `<dir>/server.log`, `dir` removed
    /// when the server stops) and waits until every one of `ports` answers
    /// on 127.0.0.1; `name` names the server in errors.
    pub(crate) fn start(
        name: &str,
        mut command: Command,
        dir: PathBuf,
        ports: &[u16],
    ) -> Result<Self> {
        let log_path = dir.join("server.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| io_error(&format!("create the {name} log"), e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| io_error(&format!("open the {name} log"), e))?;
        let server = command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| io_error(&format!("start {name}"), e))?;
        let mut local = Self {
            server,
            watchdog: None,
            dir,
        };
        local.watchdog = Command::new("sh")
            .args(["-c", WATCHDOG_SCRIPT, "watchdog"])
            .arg(local.server.id().to_string())
            .arg(&local.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        let started = Instant::now();
        while ports
            .iter()
            .any(|&port| TcpStream::connect(("127.0.0.1", port)).is_err())
        {
            let exited = local.server.try_wait().ok().flatten();
            if exited.is_some() || started.elapsed() > START_TIMEOUT {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(Error::new(
                    ErrorKind::Connection,
                    format!(
                        "{name} {} within {} s; its log ends:\n{}",
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
        Ok(local)
    }

    /// The server's log file.
    pub(crate) fn log_file(&self) -> PathBuf {
        self.dir.join("server.log")
    }
}

impl Drop for LocalServer {
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

/// A port of 127.0.0.1 free at the time of asking.
pub(crate) fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|e| io_error("find a free port on 127.0.0.1", e))
}

/// A server binary of a virtual environment, or an error naming the
/// script that installs it.
pub(crate) fn venv_binary(venv: &Path, binary: &str, script: &str) -> Result<PathBuf> {
    let path = venv.join("bin").join(binary);
    if path.exists() {
        return Ok(path);
    }
    Err(Error::new(
        ErrorKind::Config,
        format!(
            "{} does not exist; install the emulator first ({script} prints the environment to pass)",
            path.display()
        ),
    ))
}

fn io_error(what: &str, error: std::io::Error) -> Error {
    Error::with_source(ErrorKind::Io, format!("cannot {what}"), error)
}
